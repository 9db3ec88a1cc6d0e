//! One simulated case: a seeded script of the commands the agencies' clerks would send,
//! each through the agency service's gRPC API with the office's token, in the order the
//! procedure requires. Hand-offs are accepted only after the receiving service's
//! automatic receipt appeared in its inbox (or after a short wait), as a clerk who works
//! from the inbox would.
//!
//! Transient errors (UNAVAILABLE, ABORTED, DEADLINE_EXCEEDED, a timeout) are retried
//! with the same request id, which the services answer idempotently; any other error
//! abandons the case. A case chosen to be overdue is recorded with `occurred_at` weeks in
//! the past and stops right after one hand-off request, which is then overdue.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use time::OffsetDateTime;
use tonic::{Code, Status};

use casebus_proto::agency::v1::agency_service_client::AgencyServiceClient;
use casebus_proto::agency::v1::{
    AcceptHandoffRequest, AddNoteRequest, AddPartyRequest, CloseTrackRequest, CommandMeta,
    CommandReply, ExtendClockRequest, HandoffDetails, HandoffStatus, LinkReferenceRequest,
    ListInboxRequest, OpenCaseRequest, RecordEvidenceRequest,
};
use casebus_proto::court::v1::court_service_client::CourtServiceClient;
use casebus_proto::court::v1::{
    DocketCaseRequest, IssueJudgmentRequest, MarkJudgmentEffectiveRequest, NotifyJudgmentRequest,
    RecordAppealRequest, RecordHearingRequest, ScheduleHearingRequest,
};
use casebus_proto::customs::v1::customs_service_client::CustomsServiceClient;
use casebus_proto::customs::v1::{
    ConfiscateGoodsRequest, DetainGoodsRequest, DetermineInfringementRequest,
    NotifyRightsHolderRequest, RecordRightsHolderApplicationRequest, ReferToPublicSecurityRequest,
    ReleaseDetentionRequest, RequestAssessmentRequest, RequestReconsiderationRequest,
};
use casebus_proto::event::v1::{
    Agency, AppealFiled, ArrestApproved, ArrestDenied, CaseDocketed, CaseOpened, CaseType,
    ClockExtended, DetentionReleased, DeterminationOutcome, EvidenceRecorded, GoodsConfiscated,
    GoodsDetained, HandoffAccepted, HearingHeld, HearingScheduled, IndictmentFiled,
    InfringementAssessed, InfringementDetermined, InvestigationConcluded, InvestigationDeclined,
    InvestigationFiled, IpRight, IpRightKind, JudgmentEffective, JudgmentIssued,
    MediationConcluded, NonProsecutionDecided, NoteAdded, Party, PartyAdded, PartyRole,
    PreExaminationCompleted, PreExaminationRequested, Procedure, ReferenceLinked,
    RightsHolderApplied, RightsHolderNotified, SuspectDetained, TrackClosed, Visibility,
    VisibilityKind,
};
use casebus_proto::ip_center::v1::ip_center_service_client::IpCenterServiceClient;
use casebus_proto::ip_center::v1::{
    AssessInfringementRequest, CompletePreExaminationRequest, RecordMediationRequest,
    RequestPreExaminationRequest,
};
use casebus_proto::procuratorate::v1::procuratorate_service_client::ProcuratorateServiceClient;
use casebus_proto::procuratorate::v1::{
    ApproveArrestRequest, DecideNonProsecutionRequest, DenyArrestRequest, FileIndictmentRequest,
    ProsecuteInCourtRequest,
};
use casebus_proto::public_security::v1::public_security_service_client::PublicSecurityServiceClient;
use casebus_proto::public_security::v1::{
    ConcludeInvestigationRequest, DeclineInvestigationRequest, DetainSuspectRequest,
    FileInvestigationRequest, RequestArrestApprovalRequest, TransferForProsecutionRequest,
};
use casebus_proto::{agency_name, timestamp_from};

use crate::client::{Authed, Bearer, Office};
use crate::rng::Rng;
use crate::{Counters, Shared};

/// Attempts of one command before the case is abandoned.
const MAX_ATTEMPTS: u32 = 6;
/// First pause before a retry; doubled each time up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(200);
/// Longest pause between retries.
const MAX_BACKOFF: Duration = Duration::from_secs(3);
/// Pause between two looks at an inbox while waiting for a receipt.
const INBOX_POLL: Duration = Duration::from_millis(100);

/// How a case ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// It ran to the end of its script.
    Finished,
    /// It waits at an overdue hand-off, on purpose.
    Overdue,
    /// A command failed for good.
    Failed,
    /// The run ended first.
    Interrupted,
}

/// Why a script stopped early.
enum Stop {
    Failed,
    Interrupted,
}

type Step<T = ()> = Result<T, Stop>;

/// The hand-off an overdue case is left waiting at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StallAt {
    Assessment,
    Referral,
    Arrest,
    Prosecution,
    Court,
}

const STALL_POINTS: [StallAt; 5] = [
    StallAt::Assessment,
    StallAt::Referral,
    StallAt::Arrest,
    StallAt::Prosecution,
    StallAt::Court,
];

/// Which agency acts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Who {
    Customs,
    IpCenter,
    Police,
    Procuratorate,
    Court,
}

/// A clerk of one office, with the token they act under.
#[derive(Clone)]
struct Clerk {
    office: Office,
    bearer: Bearer,
}

impl Clerk {
    fn channel(&self) -> Authed {
        self.office.authed(&self.bearer)
    }
}

/// Goods seized at the border: what, whose mark, the holder, the trademark number.
const GOODS: [(&str, &str, &str, &str); 8] = [
    ("wireless earphones", "Xiaomi", "Xiaomi Inc.", "10156334"),
    (
        "handbags",
        "LOUIS VUITTON",
        "Louis Vuitton Malletier",
        "G1076318",
    ),
    ("running shoes", "NIKE", "Nike Innovate C.V.", "G1098442"),
    (
        "phone cases",
        "HUAWEI",
        "Huawei Technologies Co., Ltd.",
        "13279531",
    ),
    ("wristwatches", "ROLEX", "Rolex SA", "G0843107"),
    (
        "toner cartridges",
        "HP",
        "HP Hewlett Packard Group LLC",
        "G1212876",
    ),
    ("building-block toys", "LEGO", "LEGO Juris A/S", "G0812244"),
    (
        "lithium batteries",
        "CATL",
        "Contemporary Amperex Technology Co., Ltd.",
        "23618805",
    ),
];

const PORTS: [&str; 4] = [
    "Ningbo Beilun port",
    "Ningbo Meishan port",
    "Yiwu railway port",
    "Ningbo Lishe airport",
];

const CONSIGNEES: [&str; 5] = [
    "Ningbo Huaxin Trading Co., Ltd.",
    "Yiwu Jinsheng Import & Export Co., Ltd.",
    "Zhoushan Haitong Logistics Co., Ltd.",
    "Cixi Yongfa Commerce Co., Ltd.",
    "Shaoxing Ruida Supply Chain Co., Ltd.",
];

const SUSPECTS: [&str; 6] = [
    "Li Ming",
    "Zhang Wei",
    "Wang Fang",
    "Chen Jie",
    "Liu Yang",
    "Zhao Lei",
];

const JUDGES: [&str; 4] = [
    "Judge Xu Hong",
    "Judge Sun Li",
    "Judge Zhou Bin",
    "Judge He Ying",
];

const PATENTS: [(&str, &str); 4] = [
    (
        "a fast-charging circuit for portable devices",
        "Zhejiang Lianke Electronics Co., Ltd.",
    ),
    (
        "a low-noise impeller for range hoods",
        "Ningbo Fangtai Kitchen Appliances Co., Ltd.",
    ),
    (
        "a folding e-bike frame",
        "Hangzhou Qingcheng Mobility Co., Ltd.",
    ),
    (
        "a glass-fibre filter membrane",
        "Huzhou Xinjing Materials Co., Ltd.",
    ),
];

/// The plan for one case, before it runs.
pub(crate) struct CaseRun {
    shared: Arc<Shared>,
    number: u64,
    case_id: String,
}

impl CaseRun {
    pub fn new(shared: Arc<Shared>, number: u64, case_id: String) -> Self {
        Self {
            shared,
            number,
            case_id,
        }
    }

    /// Runs the case's script to its end.
    pub async fn run(self) -> Outcome {
        let mut rng = Rng::new(self.shared.config.seed, self.number);
        let mut pick = |agency: Agency| -> Option<Office> {
            let offices = self.shared.offices.of(agency);
            (!offices.is_empty()).then(|| rng.pick(offices).clone())
        };
        let offices = [
            Agency::Customs,
            Agency::IpCenter,
            Agency::PublicSecurity,
            Agency::Procuratorate,
            Agency::Court,
        ]
        .map(&mut pick);
        let mut clerks = Vec::new();
        for office in offices {
            // The configuration was validated: every agency has an office.
            let Some(office) = office else {
                return Outcome::Failed;
            };
            let actor = format!("clerk-{:02}", rng.range(1, 4));
            match self.shared.offices.bearer(&office.id, &actor) {
                Ok(bearer) => clerks.push(Clerk { office, bearer }),
                Err(e) => {
                    tracing::error!(error = %e, "cannot issue a simulator token");
                    return Outcome::Failed;
                }
            }
        }
        let stall = rng
            .chance(self.shared.config.overdue_ratio)
            .then(|| *rng.pick(&STALL_POINTS));
        // An overdue case happened 40 to 70 days ago: longer than any default deadline
        // (the longest is 30 days), so whatever hand-off it waits at is overdue.
        let clock = stall.map(|_| {
            OffsetDateTime::now_utc()
                - time::Duration::days(i64::try_from(rng.range(40, 70)).unwrap_or(40))
        });
        let mut case = Case {
            shared: self.shared.clone(),
            rng,
            case_id: self.case_id,
            number: self.number,
            step: 0,
            clock,
            stall,
            clerks,
        };
        let result = if case.rng.chance(0.12) {
            case.ip_center_complaint().await
        } else {
            case.customs_detention().await
        };
        match result {
            Ok(outcome) => outcome,
            Err(Stop::Failed) => Outcome::Failed,
            Err(Stop::Interrupted) => Outcome::Interrupted,
        }
    }
}

/// A case being worked.
struct Case {
    shared: Arc<Shared>,
    rng: Rng,
    case_id: String,
    number: u64,
    step: u32,
    /// The backdated clock of an overdue case; `None` records at the present time.
    clock: Option<OffsetDateTime>,
    stall: Option<StallAt>,
    /// Customs, IP center, police, procuratorate, court.
    clerks: Vec<Clerk>,
}

impl Case {
    fn clerk(&self, who: Who) -> &Clerk {
        let index = match who {
            Who::Customs => 0,
            Who::IpCenter => 1,
            Who::Police => 2,
            Who::Procuratorate => 3,
            Who::Court => 4,
        };
        &self.clerks[index]
    }

    fn office(&self, who: Who) -> String {
        self.clerk(who).office.id.to_string()
    }

    /// The time of the next action: now, or the backdated clock moved on a little.
    fn occurred_at(&mut self) -> Option<casebus_proto::Timestamp> {
        let minutes = i64::try_from(self.rng.range(20, 240)).unwrap_or(60);
        self.clock.as_mut().map(|clock| {
            *clock += time::Duration::minutes(minutes);
            timestamp_from(*clock)
        })
    }

    /// "Now" as this case sees it (for dates inside payloads).
    fn now(&self) -> OffsetDateTime {
        self.clock.unwrap_or_else(OffsetDateTime::now_utc)
    }

    fn stalls_at(&self, point: StallAt) -> bool {
        self.stall == Some(point)
    }

    /// Whether the script may take a random detour: never in an overdue case, which
    /// must reach its hand-off.
    fn detour(&mut self, p: f64) -> bool {
        self.stall.is_none() && self.rng.chance(p)
    }

    fn local_number(&self, code: &str) -> String {
        let year = self.now().year();
        format!("{code}-{year}-{:05}", self.number)
    }

    /// Sends one command as `who` and returns the recorded event's reply.
    async fn send<Req, F, Fut>(
        &mut self,
        who: Who,
        label: &str,
        build: impl FnOnce(Option<CommandMeta>) -> Req,
        call: F,
    ) -> Step<CommandReply>
    where
        Req: Clone,
        F: Fn(Authed, Req) -> Fut,
        Fut: Future<Output = Result<tonic::Response<CommandReply>, Status>>,
    {
        if self.shared.stop.is_cancelled() {
            return Err(Stop::Interrupted);
        }
        self.step += 1;
        let meta = CommandMeta {
            case_id: self.case_id.clone(),
            request_id: format!("{label}-{:02}", self.step),
            occurred_at: self.occurred_at(),
            correlation_id: self.case_id.clone(),
            ..Default::default()
        };
        let request = build(Some(meta));
        let clerk = self.clerk(who).clone();
        let shared = self.shared.clone();
        let config = &shared.config;
        let counters = &shared.counters;
        let mut backoff = FIRST_BACKOFF;
        for attempt in 1..=MAX_ATTEMPTS {
            tokio::select! {
                () = shared.stop.cancelled() => return Err(Stop::Interrupted),
                () = shared.limiter.acquire() => {}
            }
            let answer =
                tokio::time::timeout(config.call_timeout, call(clerk.channel(), request.clone()))
                    .await
                    .unwrap_or_else(|_| Err(Status::deadline_exceeded("no answer in time")));
            match answer {
                Ok(reply) => {
                    let reply = reply.into_inner();
                    Counters::bump(&counters.commands);
                    Counters::count_in(&counters.by_agency, agency_name(clerk.office.id.agency()));
                    if self.rng.chance(config.retry_ratio) {
                        self.resend(&clerk, &request, &call, &reply).await;
                    }
                    return Ok(reply);
                }
                Err(status) if transient(status.code()) && attempt < MAX_ATTEMPTS => {
                    Counters::bump(&counters.retries);
                    tracing::debug!(case_id = %self.case_id, command = label, code = ?status.code(), "retrying");
                    tokio::select! {
                        () = shared.stop.cancelled() => return Err(Stop::Interrupted),
                        () = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
                Err(status) => {
                    let code = casebus_runtime::metrics::code_name(status.code());
                    Counters::count_in(&counters.errors, code);
                    tracing::warn!(
                        case_id = %self.case_id,
                        command = label,
                        code,
                        error = status.message(),
                        "command failed; case abandoned"
                    );
                    return Err(Stop::Failed);
                }
            }
        }
        Err(Stop::Failed)
    }

    /// Sends a command again with the same request id, as a client that lost the
    /// answer would, and checks the service answers with the original event.
    async fn resend<Req, F, Fut>(
        &self,
        clerk: &Clerk,
        request: &Req,
        call: &F,
        first: &CommandReply,
    ) where
        Req: Clone,
        F: Fn(Authed, Req) -> Fut,
        Fut: Future<Output = Result<tonic::Response<CommandReply>, Status>>,
    {
        self.shared.limiter.acquire().await;
        let answer = tokio::time::timeout(
            self.shared.config.call_timeout,
            call(clerk.channel(), request.clone()),
        )
        .await;
        match answer {
            Ok(Ok(reply))
                if reply.get_ref().duplicate && reply.get_ref().event_id == first.event_id =>
            {
                Counters::bump(&self.shared.counters.duplicates);
            }
            Ok(Ok(_)) => {
                Counters::count_in(&self.shared.counters.errors, "duplicate_not_recognised");
                tracing::error!(case_id = %self.case_id, "a retried command was recorded twice");
            }
            // A failed retry of a recorded command changes nothing; the case goes on.
            Ok(Err(status)) => {
                tracing::debug!(case_id = %self.case_id, code = ?status.code(), "retry refused");
            }
            Err(_) => tracing::debug!(case_id = %self.case_id, "retry unanswered"),
        }
    }

    /// Waits until the receiving office's inbox shows the hand-off acknowledged by its
    /// automatic receipt, for at most `--receipt-wait`.
    async fn await_receipt(&mut self, who: Who, handoff_id: &str) -> Step {
        let clerk = self.clerk(who).clone();
        let shared = self.shared.clone();
        let deadline = tokio::time::Instant::now() + shared.config.receipt_wait;
        loop {
            let request = ListInboxRequest {
                case_id: self.case_id.clone(),
                overdue_only: false,
            };
            let answer = tokio::time::timeout(
                shared.config.call_timeout,
                AgencyServiceClient::new(clerk.channel()).list_inbox(request),
            )
            .await;
            if let Ok(Ok(reply)) = answer
                && reply.get_ref().items.iter().any(|item| {
                    item.handoff_id == handoff_id
                        && item.status == HandoffStatus::Acknowledged as i32
                })
            {
                return Ok(());
            }
            if tokio::time::Instant::now() >= deadline {
                tracing::debug!(case_id = %self.case_id, handoff_id, "no receipt seen; accepting anyway");
                return Ok(());
            }
            tokio::select! {
                () = shared.stop.cancelled() => return Err(Stop::Interrupted),
                () = tokio::time::sleep(INBOX_POLL) => {}
            }
        }
    }

    // ---- commands every agency records -------------------------------------------

    async fn accept(&mut self, who: Who, handoff_id: &str, local_code: &str) -> Step {
        self.await_receipt(who, handoff_id).await?;
        let accepted = HandoffAccepted {
            handoff_id: handoff_id.to_owned(),
            local_case_number: self.local_number(local_code),
        };
        self.send(
            who,
            "accept",
            |meta| AcceptHandoffRequest {
                meta,
                handoff_accepted: Some(accepted),
            },
            |ch, r| async move { AgencyServiceClient::new(ch).accept_handoff(r).await },
        )
        .await
        .map(drop)
    }

    /// The police decide not to file, for `reason`.
    async fn decline_filing(&mut self, reason: &str) -> Step {
        let declined = InvestigationDeclined {
            reason: reason.to_owned(),
        };
        self.send(
            Who::Police,
            "decline",
            |meta| DeclineInvestigationRequest {
                meta,
                investigation_declined: Some(declined),
            },
            |ch, r| async move {
                PublicSecurityServiceClient::new(ch)
                    .decline_investigation(r)
                    .await
            },
        )
        .await
        .map(drop)
    }

    async fn close(&mut self, who: Who, reason: &str) -> Step {
        let closed = TrackClosed {
            reason: reason.to_owned(),
        };
        self.send(
            who,
            "close",
            |meta| CloseTrackRequest {
                meta,
                track_closed: Some(closed),
            },
            |ch, r| async move { AgencyServiceClient::new(ch).close_track(r).await },
        )
        .await
        .map(drop)
    }

    async fn note(&mut self, who: Who, text: &str, sealed: bool) -> Step {
        let note = NoteAdded {
            text: text.to_owned(),
        };
        self.send(
            who,
            "note",
            |mut meta| {
                if sealed && let Some(m) = meta.as_mut() {
                    m.visibility = Some(Visibility {
                        kind: VisibilityKind::OriginOnly as i32,
                        agencies: Vec::new(),
                    });
                }
                AddNoteRequest {
                    meta,
                    note_added: Some(note),
                }
            },
            |ch, r| async move { AgencyServiceClient::new(ch).add_note(r).await },
        )
        .await
        .map(drop)
    }

    async fn evidence(&mut self, who: Who, id: &str, description: &str) -> Step {
        let office = self.office(who).replace(':', "-");
        let evidence = EvidenceRecorded {
            evidence_id: id.to_owned(),
            description: description.to_owned(),
            content_sha256: self.rng.digest(),
            location: format!("evidence://{office}/{}/{id}.zip", self.case_id),
            media_type: "application/zip".into(),
            size_bytes: self.rng.range(200_000, 40_000_000),
        };
        self.send(
            who,
            "evidence",
            |meta| RecordEvidenceRequest {
                meta,
                evidence_recorded: Some(evidence),
            },
            |ch, r| async move { AgencyServiceClient::new(ch).record_evidence(r).await },
        )
        .await
        .map(drop)
    }

    fn handoff(&mut self, id: &str, to: Who, reason: &str, evidence: &[&str]) -> HandoffDetails {
        HandoffDetails {
            handoff_id: id.to_owned(),
            to_office_id: self.office(to),
            reason: reason.to_owned(),
            evidence_ids: evidence.iter().map(|e| (*e).to_owned()).collect(),
        }
    }

    // ---- the scripts --------------------------------------------------------------

    /// Customs detains counterfeit goods at the border; the IP center assesses them;
    /// then an administrative end, or a criminal referral all the way to judgment.
    async fn customs_detention(&mut self) -> Step<Outcome> {
        let (goods, mark, holder, registration) = *self.rng.pick(&GOODS);
        let port = *self.rng.pick(&PORTS);
        let consignee = *self.rng.pick(&CONSIGNEES);
        let pieces = self.rng.range(2, 400) * 50;
        let opened = CaseOpened {
            case_type: CaseType::CounterfeitTrademark as i32,
            title: format!("Suspected counterfeit '{mark}' {goods}, {port}"),
            rights: vec![IpRight {
                kind: IpRightKind::Trademark as i32,
                registration_number: registration.into(),
                holder: holder.into(),
                title: mark.into(),
            }],
            parties: vec![
                Party {
                    party_id: "p-rh".into(),
                    role: PartyRole::RightsHolder as i32,
                    name: holder.into(),
                    organisation: true,
                    ..Default::default()
                },
                Party {
                    party_id: "p-cons".into(),
                    role: PartyRole::Consignee as i32,
                    name: consignee.into(),
                    organisation: true,
                    ..Default::default()
                },
            ],
            summary: format!(
                "{pieces} {goods} bearing the mark '{mark}' declared by {consignee} at {port}; \
                 the packaging and labels differ from the rights holder's genuine products."
            ),
            local_case_number: self.local_number("NBC"),
        };
        self.send(
            Who::Customs,
            "open",
            |meta| OpenCaseRequest {
                meta,
                case_opened: Some(opened),
            },
            |ch, r| async move { AgencyServiceClient::new(ch).open_case(r).await },
        )
        .await?;
        let detained = GoodsDetained {
            recorded_dues: Vec::new(),
            detention_id: "d1".into(),
            description: format!("{goods} bearing the mark '{mark}'"),
            quantity: format!("{pieces} pieces"),
            declared_value_fen: pieces * self.rng.range(800, 9_000),
            port: port.into(),
            declaration_number: format!("3101{:014}", self.rng.below(100_000_000_000_000)),
            on_rights_holder_application: self.rng.chance(0.5),
        };
        let ex_officio = !detained.on_rights_holder_application;
        // A bond of a tenth of the declared value.
        let bond_fen = detained.declared_value_fen / 10;
        self.send(
            Who::Customs,
            "detain",
            |meta| DetainGoodsRequest {
                meta,
                goods_detained: Some(detained),
            },
            |ch, r| async move { CustomsServiceClient::new(ch).detain_goods(r).await },
        )
        .await?;
        // The service counts the rights holder's 3 working days into `respond_by`.
        self.send(
            Who::Customs,
            "notify",
            |meta| NotifyRightsHolderRequest {
                meta,
                rights_holder_notified: Some(RightsHolderNotified {
                    detention_id: "d1".into(),
                    rights_holder_party_id: "p-rh".into(),
                    ..Default::default()
                }),
            },
            |ch, r| async move { CustomsServiceClient::new(ch).notify_rights_holder(r).await },
        )
        .await?;
        // Goods held ex officio are detained once the rights holder applies and gives
        // the bond (Regulations on Customs Protection of IP Rights Art. 16).
        if ex_officio {
            self.send(
                Who::Customs,
                "applied",
                |meta| RecordRightsHolderApplicationRequest {
                    meta,
                    rights_holder_applied: Some(RightsHolderApplied {
                        detention_id: "d1".into(),
                        rights_holder_party_id: "p-rh".into(),
                        bond_fen,
                        ..Default::default()
                    }),
                },
                |ch, r| async move {
                    CustomsServiceClient::new(ch)
                        .record_rights_holder_application(r)
                        .await
                },
            )
            .await?;
        }
        self.evidence(
            Who::Customs,
            "ev1",
            "photographs of the detained goods, packaging and labels",
        )
        .await?;
        let handoff = self.handoff(
            "h-assess",
            Who::IpCenter,
            "please assess whether the detained goods infringe the registered mark",
            &["ev1"],
        );
        self.send(
            Who::Customs,
            "assess",
            |meta| RequestAssessmentRequest {
                meta,
                handoff: Some(handoff),
            },
            |ch, r| async move { CustomsServiceClient::new(ch).request_assessment(r).await },
        )
        .await?;
        if self.stalls_at(StallAt::Assessment) {
            return Ok(Outcome::Overdue);
        }

        self.accept(Who::IpCenter, "h-assess", "ZJIPC").await?;
        let infringing = !self.detour(0.1);
        let assessed = InfringementAssessed {
            assessment_id: "a1".into(),
            infringing,
            opinion: if infringing {
                format!("the mark on the goods is identical to '{mark}'; the goods are not genuine")
            } else {
                "the goods are genuine products imported in parallel".into()
            },
            handoff_id: "h-assess".into(),
        };
        self.send(
            Who::IpCenter,
            "assessed",
            |meta| AssessInfringementRequest {
                meta,
                infringement_assessed: Some(assessed),
            },
            |ch, r| async move { IpCenterServiceClient::new(ch).assess_infringement(r).await },
        )
        .await?;
        self.send(
            Who::Customs,
            "determine",
            |meta| DetermineInfringementRequest {
                meta,
                infringement_determined: Some(InfringementDetermined {
                    outcome: if infringing {
                        DeterminationOutcome::Infringing
                    } else {
                        DeterminationOutcome::NotInfringing
                    } as i32,
                    detention_id: "d1".into(),
                    infringing,
                    basis: "Customs IP Protection Regulations art. 20; IP center opinion a1".into(),
                }),
            },
            |ch, r| async move {
                CustomsServiceClient::new(ch)
                    .determine_infringement(r)
                    .await
            },
        )
        .await?;
        self.close(Who::IpCenter, "assessment delivered").await?;
        if !infringing {
            self.send(
                Who::Customs,
                "release",
                |meta| ReleaseDetentionRequest {
                    meta,
                    detention_released: Some(DetentionReleased {
                        detention_id: "d1".into(),
                        reason: "the goods are genuine".into(),
                    }),
                },
                |ch, r| async move { CustomsServiceClient::new(ch).release_detention(r).await },
            )
            .await?;
            self.close(Who::Customs, "goods released").await?;
            return Ok(Outcome::Finished);
        }
        if self.detour(0.4) {
            return self
                .confiscate_and_close("administrative penalty; goods destroyed")
                .await;
        }

        let handoff = self.handoff(
            "h-ref",
            Who::Police,
            "the quantity and value exceed the thresholds for prosecution of trademark crimes",
            &["ev1"],
        );
        self.send(
            Who::Customs,
            "refer",
            |meta| ReferToPublicSecurityRequest {
                meta,
                handoff: Some(handoff),
            },
            |ch, r| async move {
                CustomsServiceClient::new(ch)
                    .refer_to_public_security(r)
                    .await
            },
        )
        .await?;
        if self.stalls_at(StallAt::Referral) {
            return Ok(Outcome::Overdue);
        }
        self.accept(Who::Police, "h-ref", "NBPS").await?;
        if self.detour(0.1) {
            self.decline_filing("no evidence that the consignee knew the goods were counterfeit")
                .await?;
            // Customs asks for reconsideration (State Council Order 310 Art. 9); the
            // police decide again: file after all, or uphold the decision.
            if self.detour(0.5) {
                let handoff = self.handoff(
                    "h-recon",
                    Who::Police,
                    "the consignee's messages show that it knew the goods were counterfeit",
                    &["ev1"],
                );
                self.send(
                    Who::Customs,
                    "reconsider",
                    |meta| RequestReconsiderationRequest {
                        meta,
                        handoff: Some(handoff),
                    },
                    |ch, r| async move {
                        CustomsServiceClient::new(ch)
                            .request_reconsideration(r)
                            .await
                    },
                )
                .await?;
                self.accept(Who::Police, "h-recon", "NBPSR").await?;
                if self.detour(0.5) {
                    return self.criminal(mark).await;
                }
                self.decline_filing("upheld on reconsideration").await?;
            }
            self.close(Who::Police, "investigation declined").await?;
            return self
                .confiscate_and_close("administrative penalty after the police declined")
                .await;
        }
        self.criminal(mark).await
    }

    /// From the police's filing to the judgment and the notice back to customs.
    async fn criminal(&mut self, mark: &str) -> Step<Outcome> {
        let police_number = self.local_number("NBPSI");
        self.send(
            Who::Police,
            "file",
            |meta| FileInvestigationRequest {
                meta,
                investigation_filed: Some(InvestigationFiled {
                    police_case_number: police_number,
                    suspected_offence:
                        "Criminal Law art. 214 (selling goods bearing counterfeit registered trademarks)"
                            .into(),
                    basis: "customs referral h-ref with the IP center's assessment".into(),
                }),
            },
            |ch, r| async move { PublicSecurityServiceClient::new(ch).file_investigation(r).await },
        )
        .await?;
        let suspect = *self.rng.pick(&SUSPECTS);
        let restricted = self.rng.chance(0.3);
        self.send(
            Who::Police,
            "suspect",
            |mut meta| {
                // Personal data: only the agencies that need it see the suspect's entry.
                if restricted && let Some(m) = meta.as_mut() {
                    m.visibility = Some(Visibility {
                        kind: VisibilityKind::ListedAgencies as i32,
                        agencies: vec![Agency::Procuratorate as i32, Agency::Court as i32],
                    });
                }
                AddPartyRequest {
                    meta,
                    party_added: Some(PartyAdded {
                        party: Some(Party {
                            party_id: "p-sus".into(),
                            role: PartyRole::Suspect as i32,
                            name: suspect.into(),
                            organisation: false,
                            description: "legal representative of the consignee".into(),
                            ..Default::default()
                        }),
                    }),
                }
            },
            |ch, r| async move { AgencyServiceClient::new(ch).add_party(r).await },
        )
        .await?;
        if self.rng.chance(0.2) {
            self.note(
                Who::Police,
                "informant details kept in the police file",
                true,
            )
            .await?;
        }
        self.send(
            Who::Police,
            "detain",
            |meta| DetainSuspectRequest {
                meta,
                suspect_detained: Some(SuspectDetained {
                    party_id: "p-sus".into(),
                    measure: "criminal detention".into(),
                    location: "Ningbo detention center".into(),
                    ..Default::default()
                }),
            },
            |ch, r| async move { PublicSecurityServiceClient::new(ch).detain_suspect(r).await },
        )
        .await?;
        // Special circumstances: the police take up to 7 days to ask for the arrest
        // (CPL Art. 91), an extension of the suspect's clock by the police chief.
        if self.detour(0.3) {
            let approving_office_id = self.office(Who::Police);
            self.send(
                Who::Police,
                "extend",
                |meta| ExtendClockRequest {
                    meta,
                    clock_extended: Some(ClockExtended {
                        subject_id: "p-sus".into(),
                        clock: "arrest_request".into(),
                        basis: "special circumstances: accomplices still at large".into(),
                        approving_office_id,
                        ..Default::default()
                    }),
                },
                |ch, r| async move { AgencyServiceClient::new(ch).extend_clock(r).await },
            )
            .await?;
        }
        let handoff = self.handoff(
            "h-arrest",
            Who::Procuratorate,
            "request to approve the arrest of suspect p-sus",
            &[],
        );
        self.send(
            Who::Police,
            "arrest",
            |meta| RequestArrestApprovalRequest {
                meta,
                handoff: Some(handoff),
            },
            |ch, r| async move {
                PublicSecurityServiceClient::new(ch)
                    .request_arrest_approval(r)
                    .await
            },
        )
        .await?;
        if self.stalls_at(StallAt::Arrest) {
            return Ok(Outcome::Overdue);
        }
        self.accept(Who::Procuratorate, "h-arrest", "NBPR-A")
            .await?;
        if self.detour(0.15) {
            self.send(
                Who::Procuratorate,
                "deny",
                |meta| DenyArrestRequest {
                    meta,
                    arrest_denied: Some(ArrestDenied {
                        handoff_id: "h-arrest".into(),
                        party_id: "p-sus".into(),
                        reason: "no risk of flight; bail pending trial suffices".into(),
                    }),
                },
                |ch, r| async move { ProcuratorateServiceClient::new(ch).deny_arrest(r).await },
            )
            .await?;
        } else {
            self.send(
                Who::Procuratorate,
                "approve",
                |meta| ApproveArrestRequest {
                    meta,
                    arrest_approved: Some(ArrestApproved {
                        handoff_id: "h-arrest".into(),
                        party_id: "p-sus".into(),
                        ..Default::default()
                    }),
                },
                |ch, r| async move { ProcuratorateServiceClient::new(ch).approve_arrest(r).await },
            )
            .await?;
        }
        self.send(
            Who::Police,
            "conclude",
            |meta| ConcludeInvestigationRequest {
                meta,
                investigation_concluded: Some(InvestigationConcluded {
                    findings: format!(
                        "the suspect knowingly sold goods bearing a counterfeit '{mark}' mark"
                    ),
                    recommend_prosecution: true,
                }),
            },
            |ch, r| async move {
                PublicSecurityServiceClient::new(ch)
                    .conclude_investigation(r)
                    .await
            },
        )
        .await?;
        let handoff = self.handoff(
            "h-pros",
            Who::Procuratorate,
            "investigation concluded; transferred for review of prosecution",
            &["ev1"],
        );
        self.send(
            Who::Police,
            "transfer",
            |meta| TransferForProsecutionRequest {
                meta,
                handoff: Some(handoff),
            },
            |ch, r| async move {
                PublicSecurityServiceClient::new(ch)
                    .transfer_for_prosecution(r)
                    .await
            },
        )
        .await?;
        if self.stalls_at(StallAt::Prosecution) {
            return Ok(Outcome::Overdue);
        }
        self.accept(Who::Procuratorate, "h-pros", "NBPR-P").await?;
        if self.detour(0.1) {
            self.send(
                Who::Procuratorate,
                "nonpros",
                |meta| DecideNonProsecutionRequest {
                    meta,
                    non_prosecution_decided: Some(NonProsecutionDecided {
                        handoff_id: "h-pros".into(),
                        reason: "minor circumstances; the suspect compensated the rights holder"
                            .into(),
                    }),
                },
                |ch, r| async move {
                    ProcuratorateServiceClient::new(ch)
                        .decide_non_prosecution(r)
                        .await
                },
            )
            .await?;
            self.close(Who::Procuratorate, "not prosecuted").await?;
            self.close(Who::Police, "case closed by the procuratorate")
                .await?;
            return self
                .confiscate_and_close("goods destroyed after non-prosecution")
                .await;
        }
        let indictment = self.local_number("NBPR-INDICT");
        self.send(
            Who::Procuratorate,
            "indict",
            |meta| FileIndictmentRequest {
                meta,
                indictment_filed: Some(IndictmentFiled {
                    handoff_id: "h-pros".into(),
                    indictment_number: indictment,
                    charges: "Criminal Law art. 214, selling goods bearing counterfeit registered trademarks".into(),
                    defendant_party_ids: vec!["p-sus".into()],
                }),
            },
            |ch, r| async move { ProcuratorateServiceClient::new(ch).file_indictment(r).await },
        )
        .await?;
        let handoff = self.handoff(
            "h-court",
            Who::Court,
            "public prosecution of defendant p-sus",
            &["ev1"],
        );
        self.send(
            Who::Procuratorate,
            "prosecute",
            |meta| ProsecuteInCourtRequest {
                meta,
                handoff: Some(handoff),
            },
            |ch, r| async move {
                ProcuratorateServiceClient::new(ch)
                    .prosecute_in_court(r)
                    .await
            },
        )
        .await?;
        if self.stalls_at(StallAt::Court) {
            return Ok(Outcome::Overdue);
        }
        self.trial().await
    }

    /// The court's part: docket, hearing, judgment, appeal, notice to customs.
    async fn trial(&mut self) -> Step<Outcome> {
        self.accept(Who::Court, "h-court", "ZJHZIP").await?;
        let court_number = self.local_number("(2026)Zhe01Xingchu");
        let judge = *self.rng.pick(&JUDGES);
        self.send(
            Who::Court,
            "docket",
            |meta| DocketCaseRequest {
                meta,
                case_docketed: Some(CaseDocketed {
                    court_case_number: court_number,
                    procedure: Procedure::Criminal as i32,
                    presiding_judge: judge.into(),
                }),
            },
            |ch, r| async move { CourtServiceClient::new(ch).docket_case(r).await },
        )
        .await?;
        let hearing_at = timestamp_from(self.now() + time::Duration::days(14));
        self.send(
            Who::Court,
            "schedule",
            |meta| ScheduleHearingRequest {
                meta,
                hearing_scheduled: Some(HearingScheduled {
                    hearing_id: "hr1".into(),
                    scheduled_for: Some(hearing_at),
                    location: "Hangzhou IP court, room 3".into(),
                }),
            },
            |ch, r| async move { CourtServiceClient::new(ch).schedule_hearing(r).await },
        )
        .await?;
        self.send(
            Who::Court,
            "hearing",
            |meta| RecordHearingRequest {
                meta,
                hearing_held: Some(HearingHeld {
                    hearing_id: "hr1".into(),
                    summary: "the defendant admitted the facts".into(),
                }),
            },
            |ch, r| async move { CourtServiceClient::new(ch).record_hearing(r).await },
        )
        .await?;
        let years = self.rng.range(1, 4);
        let fine = self.rng.range(5, 80) * 10_000;
        let judgment = self.local_number("JUDG");
        let judgment_number = judgment.clone();
        self.send(
            Who::Court,
            "judgment",
            |meta| IssueJudgmentRequest {
                meta,
                judgment_issued: Some(JudgmentIssued {
                    judgment_number,
                    outcome: format!("guilty; {years} years; fine {fine} yuan"),
                    summary: "the goods are to be confiscated and destroyed".into(),
                }),
            },
            |ch, r| async move { CourtServiceClient::new(ch).issue_judgment(r).await },
        )
        .await?;
        if self.rng.chance(0.3) {
            self.send(
                Who::Court,
                "appeal",
                |meta| RecordAppealRequest {
                    meta,
                    appeal_filed: Some(AppealFiled {
                        appellant_party_id: "p-sus".into(),
                        grounds: "the sentence is too severe".into(),
                    }),
                },
                |ch, r| async move { CourtServiceClient::new(ch).record_appeal(r).await },
            )
            .await?;
            let number = judgment.clone();
            self.send(
                Who::Court,
                "effective",
                |meta| MarkJudgmentEffectiveRequest {
                    meta,
                    judgment_effective: Some(JudgmentEffective {
                        judgment_number: number,
                    }),
                },
                |ch, r| async move { CourtServiceClient::new(ch).mark_judgment_effective(r).await },
            )
            .await?;
        }
        let handoff = self.handoff(
            "h-notice",
            Who::Customs,
            &format!("judgment {judgment}: the detained goods are to be confiscated"),
            &[],
        );
        self.send(
            Who::Court,
            "notice",
            |meta| NotifyJudgmentRequest {
                meta,
                to_agency: Agency::Customs as i32,
                handoff: Some(handoff),
            },
            |ch, r| async move { CourtServiceClient::new(ch).notify_judgment(r).await },
        )
        .await?;
        self.close(Who::Court, "judgment notified").await?;
        self.close(Who::Procuratorate, "prosecution concluded")
            .await?;
        self.close(Who::Police, "case concluded by judgment")
            .await?;
        self.accept(Who::Customs, "h-notice", "NBC-J").await?;
        self.confiscate_and_close("goods destroyed after the judgment")
            .await
    }

    async fn confiscate_and_close(&mut self, disposal: &str) -> Step<Outcome> {
        let confiscated = GoodsConfiscated {
            detention_id: "d1".into(),
            disposal: disposal.to_owned(),
        };
        self.send(
            Who::Customs,
            "confiscate",
            |meta| ConfiscateGoodsRequest {
                meta,
                goods_confiscated: Some(confiscated),
            },
            |ch, r| async move { CustomsServiceClient::new(ch).confiscate_goods(r).await },
        )
        .await?;
        self.close(Who::Customs, "goods confiscated").await?;
        Ok(Outcome::Finished)
    }

    /// A patent holder's complaint at the IP center: pre-examination, assessment and
    /// mediation; without a settlement, a referral the police decline as a civil matter.
    async fn ip_center_complaint(&mut self) -> Step<Outcome> {
        let (invention, holder) = *self.rng.pick(&PATENTS);
        let respondent = *self.rng.pick(&CONSIGNEES);
        let patent = format!(
            "ZL2023{:07}.{}",
            self.rng.below(10_000_000),
            self.rng.below(10)
        );
        let opened = CaseOpened {
            case_type: CaseType::PatentInfringement as i32,
            title: format!("Complaint: {respondent} copies {invention}"),
            rights: vec![IpRight {
                kind: IpRightKind::InventionPatent as i32,
                registration_number: patent.clone(),
                holder: holder.into(),
                title: invention.into(),
            }],
            parties: vec![
                Party {
                    party_id: "p-rh".into(),
                    role: PartyRole::RightsHolder as i32,
                    name: holder.into(),
                    organisation: true,
                    ..Default::default()
                },
                Party {
                    party_id: "p-resp".into(),
                    role: PartyRole::Suspect as i32,
                    name: respondent.into(),
                    organisation: true,
                    ..Default::default()
                },
            ],
            summary: format!(
                "{holder} complains that {respondent} sells products using {invention}."
            ),
            local_case_number: self.local_number("ZJIPC-C"),
        };
        self.send(
            Who::IpCenter,
            "open",
            |meta| OpenCaseRequest {
                meta,
                case_opened: Some(opened),
            },
            |ch, r| async move { AgencyServiceClient::new(ch).open_case(r).await },
        )
        .await?;
        self.evidence(
            Who::IpCenter,
            "ev1",
            "test purchase of the respondent's product and teardown report",
        )
        .await?;
        let application = format!("2024{:08}", self.rng.below(100_000_000));
        self.send(
            Who::IpCenter,
            "preexam",
            |meta| RequestPreExaminationRequest {
                meta,
                pre_examination_requested: Some(PreExaminationRequested {
                    pre_examination_id: "pe1".into(),
                    application_number: application,
                    patent_kind: IpRightKind::InventionPatent as i32,
                }),
            },
            |ch, r| async move {
                IpCenterServiceClient::new(ch)
                    .request_pre_examination(r)
                    .await
            },
        )
        .await?;
        self.send(
            Who::IpCenter,
            "preexamined",
            |meta| CompletePreExaminationRequest {
                meta,
                pre_examination_completed: Some(PreExaminationCompleted {
                    pre_examination_id: "pe1".into(),
                    passed: true,
                    notes: "claims 1-8 clear; fast track granted".into(),
                }),
            },
            |ch, r| async move {
                IpCenterServiceClient::new(ch)
                    .complete_pre_examination(r)
                    .await
            },
        )
        .await?;
        self.send(
            Who::IpCenter,
            "assessed",
            |meta| AssessInfringementRequest {
                meta,
                infringement_assessed: Some(InfringementAssessed {
                    assessment_id: "a1".into(),
                    infringing: true,
                    opinion: format!("the product reads on claim 1 of {patent}"),
                    handoff_id: String::new(),
                }),
            },
            |ch, r| async move { IpCenterServiceClient::new(ch).assess_infringement(r).await },
        )
        .await?;
        let reference = self.local_number("ZJIPC-M");
        self.send(
            Who::IpCenter,
            "reference",
            |meta| LinkReferenceRequest {
                meta,
                reference_linked: Some(ReferenceLinked {
                    agency: Agency::IpCenter as i32,
                    local_case_number: reference,
                }),
            },
            |ch, r| async move { AgencyServiceClient::new(ch).link_reference(r).await },
        )
        .await?;
        let settled = self.stall.is_none() && self.rng.chance(0.7);
        self.send(
            Who::IpCenter,
            "mediation",
            |meta| RecordMediationRequest {
                meta,
                mediation_concluded: Some(MediationConcluded {
                    settled,
                    terms: if settled {
                        "the respondent stops sales and pays a licence fee".into()
                    } else {
                        "the respondent refused to settle".into()
                    },
                }),
            },
            |ch, r| async move { IpCenterServiceClient::new(ch).record_mediation(r).await },
        )
        .await?;
        if settled {
            self.close(Who::IpCenter, "settled in mediation").await?;
            return Ok(Outcome::Finished);
        }
        let handoff = self.handoff(
            "h-ref",
            Who::Police,
            "the respondent continues large-scale sales after failed mediation",
            &["ev1"],
        );
        self.send(
            Who::IpCenter,
            "refer",
            |meta| casebus_proto::ip_center::v1::ReferToPublicSecurityRequest {
                meta,
                handoff: Some(handoff),
            },
            |ch, r| async move {
                IpCenterServiceClient::new(ch)
                    .refer_to_public_security(r)
                    .await
            },
        )
        .await?;
        if self.stall.is_some() {
            return Ok(Outcome::Overdue);
        }
        self.accept(Who::Police, "h-ref", "NBPS").await?;
        self.decline_filing("a civil patent dispute; no crime suspected")
            .await?;
        self.close(Who::Police, "investigation declined").await?;
        self.close(Who::IpCenter, "referred to the courts as a civil matter")
            .await?;
        Ok(Outcome::Finished)
    }
}

/// Errors after which the same request may simply be sent again.
fn transient(code: Code) -> bool {
    matches!(
        code,
        Code::Unavailable | Code::Aborted | Code::DeadlineExceeded | Code::Cancelled
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_outcome_unknown_errors_are_retried() {
        assert!(transient(Code::Unavailable));
        assert!(transient(Code::Aborted));
        assert!(!transient(Code::FailedPrecondition));
        assert!(!transient(Code::InvalidArgument));
        assert!(!transient(Code::Unauthenticated));
    }
}
