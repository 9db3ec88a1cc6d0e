//! The gRPC APIs of the agency services: `casebus.agency.v1.AgencyService` (the commands
//! every agency has, the inbox, the case view), which every service serves, and one
//! agency-specific service per agency ([`Customs`], [`IpCenter`], [`PublicSecurity`],
//! [`Procuratorate`], [`Court`]), each an [`AgencyApi`] a binary picks.
//!
//! Every command RPC is one line: take the request's `meta` and payload, hand them to
//! [`Kit::execute`](crate::Kit::execute). Hand-off RPCs of one fixed kind (e.g.
//! `ReferToPublicSecurity`) fill in the kind and receiving agency themselves.

mod common;
mod court;
mod customs;
mod ip_center;
mod procuratorate;
mod public_security;

use tonic::Status;
use tonic::service::interceptor::InterceptedService;
use tonic::service::{Interceptor, RoutesBuilder};

use casebus_proto::agency::v1::HandoffDetails;
use casebus_proto::event::v1::payload::Kind;
use casebus_proto::event::v1::{Agency, HandoffKind, HandoffRequested};

use crate::kit::{Kit, required};

pub(crate) use common::{CommonCommand, register_common};

/// Largest gRPC request accepted, in bytes. A signed event is at most about 248 KiB, so
/// anything larger could never be recorded.
pub(crate) const MAX_REQUEST_BYTES: usize = 512 * 1024;

/// One agency's service: its identity and its agency-specific gRPC API.
pub trait AgencyApi: Send + Sync + 'static {
    /// The agency whose offices this service records for.
    const AGENCY: Agency;
    /// Binary and NATS service name, e.g. `casebus-customs`.
    const SERVICE_NAME: &'static str;
    /// One paragraph for `--help`.
    const ABOUT: &'static str;
    /// Fully qualified name of the agency-specific gRPC service.
    const GRPC_SERVICE: &'static str;

    /// Adds the agency-specific gRPC service, authenticated, to `routes`.
    fn register(kit: &Kit, routes: &mut RoutesBuilder);
}

/// The customs service (`casebus-customs`, `casebus.customs.v1.CustomsService`).
#[derive(Debug, Clone, Copy)]
pub struct Customs;

/// The IP center service (`casebus-ip-center`, `casebus.ip_center.v1.IpCenterService`).
#[derive(Debug, Clone, Copy)]
pub struct IpCenter;

/// The public security service (`casebus-public-security`,
/// `casebus.public_security.v1.PublicSecurityService`).
#[derive(Debug, Clone, Copy)]
pub struct PublicSecurity;

/// The procuratorate service (`casebus-procuratorate`,
/// `casebus.procuratorate.v1.ProcuratorateService`).
#[derive(Debug, Clone, Copy)]
pub struct Procuratorate;

/// The court service (`casebus-court`, `casebus.court.v1.CourtService`).
#[derive(Debug, Clone, Copy)]
pub struct Court;

/// Wraps a gRPC service so every call is authenticated first (bearer token or client
/// certificate); the interceptor puts the caller into the request's extensions.
pub(crate) fn authenticated<S>(
    kit: &Kit,
    service: S,
) -> InterceptedService<S, impl Interceptor + Clone + use<S>> {
    InterceptedService::new(service, kit.authenticator().interceptor())
}

/// The payload of a hand-off of `kind` to `to`, from the sender's `details`. The due
/// time is left to the rules.
pub(crate) fn handoff(
    details: Option<HandoffDetails>,
    kind: HandoffKind,
    to: Agency,
) -> Result<Kind, Status> {
    let details = required(details, "handoff")?;
    Ok(Kind::HandoffRequested(HandoffRequested {
        handoff_id: details.handoff_id,
        kind: kind as i32,
        to_agency: to as i32,
        to_office_id: details.to_office_id,
        reason: details.reason,
        due_at: None,
        evidence_ids: details.evidence_ids,
        recorded_dues: Vec::new(),
    }))
}

/// Implements an agency-specific service whose every RPC is a command: each line maps a
/// method and its request type to the payload built from the request `r`.
macro_rules! command_service {
    ($api:ty, $service:path, { $($method:ident($request:ty) => |$r:ident| $payload:expr;)* }) => {
        #[tonic::async_trait]
        impl $service for $api {
            $(
                async fn $method(
                    &self,
                    request: tonic::Request<$request>,
                ) -> Result<tonic::Response<casebus_proto::agency::v1::CommandReply>, tonic::Status> {
                    self.kit
                        .command(request, |$r: $request| Ok(($r.meta, $payload?)))
                        .await
                }
            )*
        }
    };
}
pub(crate) use command_service;
