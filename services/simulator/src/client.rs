//! The agency services as the simulator reaches them: one lazily connected gRPC channel
//! per office, and bearer tokens the simulator signs itself with the issuer key (role
//! `clerk`, one actor per case), attached by an interceptor.

use std::sync::Arc;

use time::OffsetDateTime;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};
use tonic::{Request, Status};

use casebus_integrity::token::{Audience, IssuerKey, Role};
use casebus_proto::OfficeId;
use casebus_proto::event::v1::Agency;

use crate::SimError;
use crate::config::Target;

/// How long a case's tokens stay valid: longer than any case takes at the lowest rate.
const TOKEN_TTL: time::Duration = time::Duration::hours(12);

/// Adds `authorization: Bearer <token>` to every call.
#[derive(Clone)]
pub(crate) struct Bearer(MetadataValue<Ascii>);

impl Interceptor for Bearer {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        request
            .metadata_mut()
            .insert("authorization", self.0.clone());
        Ok(request)
    }
}

/// A channel whose calls carry an office's token.
pub(crate) type Authed = InterceptedService<Channel, Bearer>;

/// One agency service.
#[derive(Debug, Clone)]
pub(crate) struct Office {
    /// The office it records for.
    pub id: OfficeId,
    channel: Channel,
}

impl Office {
    /// The service's channel with `bearer`'s token.
    pub fn authed(&self, bearer: &Bearer) -> Authed {
        InterceptedService::new(self.channel.clone(), bearer.clone())
    }
}

/// Every office, by agency, and the issuer that signs their tokens.
#[derive(Clone)]
pub(crate) struct Offices {
    by_agency: Vec<(Agency, Vec<Office>)>,
    issuer: Arc<IssuerKey>,
}

impl std::fmt::Debug for Offices {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Offices")
            .field("by_agency", &self.by_agency)
            .finish_non_exhaustive()
    }
}

impl Offices {
    /// Channels to every target, connected on first use, so a service that is still
    /// starting is retried rather than failing the run.
    ///
    /// # Errors
    /// [`SimError::Config`] when a target URL is not a valid URI.
    pub fn new(targets: &[Target], issuer: IssuerKey) -> Result<Self, SimError> {
        let mut by_agency: Vec<(Agency, Vec<Office>)> = Vec::new();
        for target in targets {
            let endpoint = Endpoint::from_shared(target.url.clone())
                .map_err(|e| SimError::Config {
                    key: "--target",
                    reason: format!("{}: {e}", target.url),
                })?
                .connect_timeout(std::time::Duration::from_secs(5))
                .tcp_nodelay(true);
            let office = Office {
                id: target.office.clone(),
                channel: endpoint.connect_lazy(),
            };
            let agency = target.office.agency();
            match by_agency.iter_mut().find(|(a, _)| *a == agency) {
                Some((_, list)) => list.push(office),
                None => by_agency.push((agency, vec![office])),
            }
        }
        Ok(Self {
            by_agency,
            issuer: Arc::new(issuer),
        })
    }

    /// The offices of `agency` (empty when none was given).
    pub fn of(&self, agency: Agency) -> &[Office] {
        self.by_agency
            .iter()
            .find(|(a, _)| *a == agency)
            .map(|(_, list)| list.as_slice())
            .unwrap_or_default()
    }

    /// A clerk token of `office` for `actor`.
    ///
    /// # Errors
    /// [`SimError::Token`] when the issuer refuses the claims.
    pub fn bearer(&self, office: &OfficeId, actor: &str) -> Result<Bearer, SimError> {
        let token = self
            .issuer
            .issue(
                Audience::Agency,
                office,
                actor,
                &[Role::Clerk, Role::Reader],
                OffsetDateTime::now_utc(),
                TOKEN_TTL,
            )
            .map_err(SimError::Token)?;
        let value = format!("Bearer {token}")
            .parse()
            .map_err(|_| SimError::Config {
                key: "--issuer-key",
                reason: "the issued token is not ASCII".into(),
            })?;
        Ok(Bearer(value))
    }
}
