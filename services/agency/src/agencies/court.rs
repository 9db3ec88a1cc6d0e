//! `casebus.court.v1.CourtService`: docketing, preliminary injunctions, hearings,
//! judgment, appeal, effectiveness, and notice of the judgment to another agency.

use tonic::Status;
use tonic::server::NamedService;
use tonic::service::RoutesBuilder;

use casebus_proto::court::v1::court_service_server::{CourtService, CourtServiceServer};
use casebus_proto::court::v1::*;
use casebus_proto::event::v1::payload::Kind;
use casebus_proto::event::v1::{Agency, HandoffKind};

use crate::agencies::{
    AgencyApi, Court, MAX_REQUEST_BYTES, authenticated, command_service, handoff,
};
use crate::kit::{Kit, required};
use crate::status;

/// The court API of one service.
#[derive(Debug, Clone)]
pub(crate) struct CourtApi {
    kit: Kit,
}

impl AgencyApi for Court {
    const AGENCY: Agency = Agency::Court;
    const SERVICE_NAME: &'static str = "casebus-court";
    const ABOUT: &'static str = "casebus court service: records what a court does in an IP case \
        (docketing, preliminary injunctions, hearings, judgment, appeal, effectiveness, notice of judgment) \
        as signed events on the casebus stream, acknowledges hand-offs addressed to the office \
        and keeps its inbox of pending hand-offs";
    const GRPC_SERVICE: &'static str = <CourtServiceServer<CourtApi> as NamedService>::NAME;

    fn register(kit: &Kit, routes: &mut RoutesBuilder) {
        let service = CourtServiceServer::new(CourtApi { kit: kit.clone() })
            .max_decoding_message_size(MAX_REQUEST_BYTES);
        routes.add_service(authenticated(kit, service));
    }
}

/// The receiving agency of a judgment notice; the rules check where notices may go.
fn notice_to(raw: i32) -> Result<Agency, Status> {
    match Agency::try_from(raw) {
        Ok(Agency::Unspecified) => Err(status::required("to_agency")),
        Ok(agency) => Ok(agency),
        Err(_) => Err(status::invalid(
            "to_agency",
            format!("unknown agency value {raw}"),
        )),
    }
}

command_service!(CourtApi, CourtService, {
    docket_case(DocketCaseRequest) =>
        |r| required(r.case_docketed, "case_docketed").map(Kind::CaseDocketed);
    issue_preliminary_injunction(IssuePreliminaryInjunctionRequest) =>
        |r| required(r.preliminary_injunction_issued, "preliminary_injunction_issued")
            .map(Kind::PreliminaryInjunctionIssued);
    schedule_hearing(ScheduleHearingRequest) =>
        |r| required(r.hearing_scheduled, "hearing_scheduled").map(Kind::HearingScheduled);
    record_hearing(RecordHearingRequest) =>
        |r| required(r.hearing_held, "hearing_held").map(Kind::HearingHeld);
    issue_judgment(IssueJudgmentRequest) =>
        |r| required(r.judgment_issued, "judgment_issued").map(Kind::JudgmentIssued);
    record_appeal(RecordAppealRequest) =>
        |r| required(r.appeal_filed, "appeal_filed").map(Kind::AppealFiled);
    mark_judgment_effective(MarkJudgmentEffectiveRequest) =>
        |r| required(r.judgment_effective, "judgment_effective").map(Kind::JudgmentEffective);
    notify_judgment(NotifyJudgmentRequest) =>
        |r| notice_to(r.to_agency)
            .and_then(|to| handoff(r.handoff, HandoffKind::JudgmentNotice, to));
    notify_customs_to_assist(NotifyCustomsToAssistRequest) =>
        |r| handoff(r.handoff, HandoffKind::CourtAssistanceNotice, Agency::Customs);
});
