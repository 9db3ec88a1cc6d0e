//! `casebus.public_security.v1.PublicSecurityService`: the criminal investigation, from
//! filing (or declining) to its conclusion, and the two hand-offs the police send to the
//! procuratorate (arrest approval, transfer for prosecution).

use tonic::server::NamedService;
use tonic::service::RoutesBuilder;

use casebus_proto::event::v1::payload::Kind;
use casebus_proto::event::v1::{Agency, HandoffKind};
use casebus_proto::public_security::v1::public_security_service_server::{
    PublicSecurityService, PublicSecurityServiceServer,
};
use casebus_proto::public_security::v1::*;

use crate::agencies::{
    AgencyApi, MAX_REQUEST_BYTES, PublicSecurity, authenticated, command_service, handoff,
};
use crate::kit::{Kit, required};

/// The public security API of one service.
#[derive(Debug, Clone)]
pub(crate) struct PublicSecurityApi {
    kit: Kit,
}

impl AgencyApi for PublicSecurity {
    const AGENCY: Agency = Agency::PublicSecurity;
    const SERVICE_NAME: &'static str = "casebus-public-security";
    const ABOUT: &'static str = "casebus public security service: records what a police office does in an IP case \
        (filing or declining an investigation, detaining suspects, concluding, asking for arrest approval, \
        transferring for prosecution) as signed events on the casebus stream, acknowledges hand-offs \
        addressed to the office and keeps its inbox of pending hand-offs";
    const GRPC_SERVICE: &'static str =
        <PublicSecurityServiceServer<PublicSecurityApi> as NamedService>::NAME;

    fn register(kit: &Kit, routes: &mut RoutesBuilder) {
        let service = PublicSecurityServiceServer::new(PublicSecurityApi { kit: kit.clone() })
            .max_decoding_message_size(MAX_REQUEST_BYTES);
        routes.add_service(authenticated(kit, service));
    }
}

command_service!(PublicSecurityApi, PublicSecurityService, {
    file_investigation(FileInvestigationRequest) =>
        |r| required(r.investigation_filed, "investigation_filed").map(Kind::InvestigationFiled);
    decline_investigation(DeclineInvestigationRequest) =>
        |r| required(r.investigation_declined, "investigation_declined").map(Kind::InvestigationDeclined);
    detain_suspect(DetainSuspectRequest) =>
        |r| required(r.suspect_detained, "suspect_detained").map(Kind::SuspectDetained);
    conclude_investigation(ConcludeInvestigationRequest) =>
        |r| required(r.investigation_concluded, "investigation_concluded").map(Kind::InvestigationConcluded);
    request_arrest_approval(RequestArrestApprovalRequest) =>
        |r| handoff(r.handoff, HandoffKind::ArrestApprovalRequest, Agency::Procuratorate);
    transfer_for_prosecution(TransferForProsecutionRequest) =>
        |r| handoff(r.handoff, HandoffKind::ProsecutionTransfer, Agency::Procuratorate);
    explain_non_filing(ExplainNonFilingRequest) =>
        |r| required(r.non_filing_explained, "non_filing_explained").map(Kind::NonFilingExplained);
});
