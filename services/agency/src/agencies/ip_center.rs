//! `casebus.ip_center.v1.IpCenterService`: expert assessments, mediation, the patent
//! pre-examination fast track, and referrals of suspected crimes to the police.

use tonic::server::NamedService;
use tonic::service::RoutesBuilder;

use casebus_proto::event::v1::payload::Kind;
use casebus_proto::event::v1::{Agency, HandoffKind};
use casebus_proto::ip_center::v1::ip_center_service_server::{
    IpCenterService, IpCenterServiceServer,
};
use casebus_proto::ip_center::v1::*;

use crate::agencies::{
    AgencyApi, IpCenter, MAX_REQUEST_BYTES, authenticated, command_service, handoff,
};
use crate::kit::{Kit, required};

/// The IP center API of one service.
#[derive(Debug, Clone)]
pub(crate) struct IpCenterApi {
    kit: Kit,
}

impl AgencyApi for IpCenter {
    const AGENCY: Agency = Agency::IpCenter;
    const SERVICE_NAME: &'static str = "casebus-ip-center";
    const ABOUT: &'static str = "casebus IP center service: records what an IP protection center does in an IP case \
        (cases opened from complaints, expert assessments, mediation, patent pre-examination, referrals to the police) \
        as signed events on the casebus stream, acknowledges hand-offs addressed to the office \
        and keeps its inbox of pending hand-offs";
    const GRPC_SERVICE: &'static str = <IpCenterServiceServer<IpCenterApi> as NamedService>::NAME;

    fn register(kit: &Kit, routes: &mut RoutesBuilder) {
        let service = IpCenterServiceServer::new(IpCenterApi { kit: kit.clone() })
            .max_decoding_message_size(MAX_REQUEST_BYTES);
        routes.add_service(authenticated(kit, service));
    }
}

command_service!(IpCenterApi, IpCenterService, {
    assess_infringement(AssessInfringementRequest) =>
        |r| required(r.infringement_assessed, "infringement_assessed").map(Kind::InfringementAssessed);
    record_mediation(RecordMediationRequest) =>
        |r| required(r.mediation_concluded, "mediation_concluded").map(Kind::MediationConcluded);
    request_pre_examination(RequestPreExaminationRequest) =>
        |r| required(r.pre_examination_requested, "pre_examination_requested").map(Kind::PreExaminationRequested);
    complete_pre_examination(CompletePreExaminationRequest) =>
        |r| required(r.pre_examination_completed, "pre_examination_completed").map(Kind::PreExaminationCompleted);
    refer_to_public_security(ReferToPublicSecurityRequest) =>
        |r| handoff(r.handoff, HandoffKind::SuspectedCrimeReferral, Agency::PublicSecurity);
    request_reconsideration(RequestReconsiderationRequest) =>
        |r| handoff(r.handoff, HandoffKind::ReconsiderationRequest, Agency::PublicSecurity);
});
