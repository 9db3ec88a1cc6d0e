//! `casebus.procuratorate.v1.ProcuratorateService`: arrest approval, prosecution review
//! (indictment, non-prosecution, return for supplementary investigation) and the public
//! prosecution in court. Filing the indictment and prosecuting in court are two commands,
//! because one command records one event.

use tonic::server::NamedService;
use tonic::service::RoutesBuilder;

use casebus_proto::event::v1::payload::Kind;
use casebus_proto::event::v1::{Agency, HandoffKind};
use casebus_proto::procuratorate::v1::procuratorate_service_server::{
    ProcuratorateService, ProcuratorateServiceServer,
};
use casebus_proto::procuratorate::v1::*;

use crate::agencies::{
    AgencyApi, MAX_REQUEST_BYTES, Procuratorate, authenticated, command_service, handoff,
};
use crate::kit::{Kit, required};

/// The procuratorate API of one service.
#[derive(Debug, Clone)]
pub(crate) struct ProcuratorateApi {
    kit: Kit,
}

impl AgencyApi for Procuratorate {
    const AGENCY: Agency = Agency::Procuratorate;
    const SERVICE_NAME: &'static str = "casebus-procuratorate";
    const ABOUT: &'static str = "casebus procuratorate service: records what a procuratorate does in an IP case \
        (arrest approval or denial, prosecution review, indictment, public prosecution in court, \
        non-prosecution) as signed events on the casebus stream, acknowledges hand-offs addressed \
        to the office and keeps its inbox of pending hand-offs";
    const GRPC_SERVICE: &'static str =
        <ProcuratorateServiceServer<ProcuratorateApi> as NamedService>::NAME;

    fn register(kit: &Kit, routes: &mut RoutesBuilder) {
        let service = ProcuratorateServiceServer::new(ProcuratorateApi { kit: kit.clone() })
            .max_decoding_message_size(MAX_REQUEST_BYTES);
        routes.add_service(authenticated(kit, service));
    }
}

command_service!(ProcuratorateApi, ProcuratorateService, {
    approve_arrest(ApproveArrestRequest) =>
        |r| required(r.arrest_approved, "arrest_approved").map(Kind::ArrestApproved);
    deny_arrest(DenyArrestRequest) =>
        |r| required(r.arrest_denied, "arrest_denied").map(Kind::ArrestDenied);
    return_for_supplementary_investigation(ReturnForSupplementaryInvestigationRequest) =>
        |r| handoff(r.handoff, HandoffKind::SupplementaryInvestigation, Agency::PublicSecurity);
    file_indictment(FileIndictmentRequest) =>
        |r| required(r.indictment_filed, "indictment_filed").map(Kind::IndictmentFiled);
    prosecute_in_court(ProsecuteInCourtRequest) =>
        |r| handoff(r.handoff, HandoffKind::PublicProsecution, Agency::Court);
    decide_non_prosecution(DecideNonProsecutionRequest) =>
        |r| required(r.non_prosecution_decided, "non_prosecution_decided").map(Kind::NonProsecutionDecided);
    request_non_filing_explanation(RequestNonFilingExplanationRequest) =>
        |r| handoff(r.handoff, HandoffKind::NonFilingExplanationRequest, Agency::PublicSecurity);
    notify_to_file(NotifyToFileRequest) =>
        |r| handoff(r.handoff, HandoffKind::FilingNotice, Agency::PublicSecurity);
});
