//! The legal clocks over the real binaries (customs and police services, the gateway,
//! nats-server): a referral made in the past, acknowledged and accepted by the police
//! but not decided, is overdue on its filing clock in the police inbox, in the sender's
//! own `GetCase` view and on the gateway (`GetCase` hand-off view, `ListCases
//! has_overdue_handoffs`); the police's
//! `InvestigationFiled` answers the clock, and both stop showing it. Every service runs
//! with the built-in deadline rules on the shipped calendar, and the acts carry
//! `occurred_at` in November 2026, so their periods have elapsed and are counted on a
//! published schedule whenever the test runs.
//!
//! Then the changes of a clock over the same binaries (and the procuratorate's): the
//! police extend the filing clock once (3 → 10 days) and are refused a later due time
//! than the step allows, suspend it (no longer overdue, in the inbox or on the gateway)
//! and resume it (its due time moved by the days it stood still); the procuratorate
//! returns the case twice for supplementary investigation, each new transfer restarts
//! the full review month from its own date, and the third return is refused
//! (FAILED_PRECONDITION `supplementary_investigation_at_most_twice`).
//!
//! Then a decision not to file, reconsidered and supervised: a late request for
//! reconsideration is refused, a timely one runs the police's 3-day decision clock
//! (inbox, gateway) until they decline again; the procuratorate, asked by customs to
//! supervise, cannot notify to file before asking for an explanation, the explanation
//! answers its 7-day clock, the notice runs 15 days, binds the police (a decline is
//! refused) and the filing answers it.
//!
//! Then a customs detention on the rights holder's application: its 20-working-day
//! release clock is past due on the gateway (`GetCase` clocks, `ListCases
//! has_overdue_clocks`), shown only to readers of the detention (a sealed one to
//! customs alone), until the court's assistance notice answers it; the notice runs
//! until customs takes it.
//!
//! Then a detained suspect: the police's 3-day arrest-request clock is past due on the
//! gateway, the police extend it (to 7 days, shown with its extension) and asking for
//! arrest approval answers it.

mod agency_harness;

use std::time::Duration;

use time::OffsetDateTime;
use time::macros::datetime;

use casebus_proto::agency::v1::*;
use casebus_proto::customs::v1::RequestReconsiderationRequest;
use casebus_proto::event::v1::{
    ClockExtended, ClockResumed, ClockSuspended, HandoffAccepted, InvestigationConcluded,
    InvestigationDeclined, InvestigationFiled, NonFilingExplained,
};
use casebus_proto::gateway::v1::{GetCaseRequest, ListCasesRequest, RunningClock};
use casebus_proto::procuratorate::v1::{
    NotifyToFileRequest, RequestNonFilingExplanationRequest,
    ReturnForSupplementaryInvestigationRequest,
};
use casebus_proto::public_security::v1::{
    ConcludeInvestigationRequest, DeclineInvestigationRequest, ExplainNonFilingRequest,
    FileInvestigationRequest, TransferForProsecutionRequest,
};
use casebus_proto::{Timestamp, timestamp_from};
use casebus_test_support::wait_until;
use tonic::Code;

use agency_harness::*;

const CASE: &str = "C-CLOCK";
/// Ceiling for the inbox and the gateway to show what was recorded.
const SHOW_TIMEOUT: Duration = Duration::from_secs(30);
/// The referral: Monday 2 November 2026, 10:00 China Standard Time.
const REFERRED: OffsetDateTime = datetime!(2026-11-02 10:00 +8);
/// Its filing clock: 3 days from Tuesday 3 November end on Thursday 5 November at 24:00
/// CST (16:00 UTC), a working day.
const FILING_DUE: OffsetDateTime = datetime!(2026-11-05 16:00 UTC);

fn at(instant: OffsetDateTime) -> Option<Timestamp> {
    Some(timestamp_from(instant))
}

fn meta_at(case_id: &str, occurred: OffsetDateTime) -> Option<CommandMeta> {
    meta(case_id).map(|m| CommandMeta {
        occurred_at: at(occurred),
        ..m
    })
}

/// The police inbox's overdue items.
async fn overdue_in_inbox(police: &Running) -> Vec<InboxItem> {
    police
        .common()
        .list_inbox(ListInboxRequest {
            case_id: CASE.into(),
            overdue_only: true,
        })
        .await
        .expect("list the inbox")
        .into_inner()
        .items
}

fn assert_filing_clock(clock: Option<&RunningClockView>, what: &str) {
    let clock = clock.unwrap_or_else(|| panic!("{what}: no running clock"));
    assert_eq!(clock.name, "filing_decision", "{what}");
    assert_eq!(clock.due_at, at(FILING_DUE), "{what}");
    assert_eq!(clock.started_at, at(REFERRED), "{what}");
    assert!(clock.basis.contains("Order 310"), "{what}: {}", clock.basis);
    assert!(clock.due_error.is_empty(), "{what}: {}", clock.due_error);
}

/// The fields both surfaces' running clocks share.
struct RunningClockView {
    name: String,
    started_at: Option<Timestamp>,
    due_at: Option<Timestamp>,
    basis: String,
    due_error: String,
}

impl From<&casebus_proto::agency::v1::RunningClock> for RunningClockView {
    fn from(c: &casebus_proto::agency::v1::RunningClock) -> Self {
        Self {
            name: c.name.clone(),
            started_at: c.started_at,
            due_at: c.due_at,
            basis: c.basis.clone(),
            due_error: c.due_error.clone(),
        }
    }
}

impl From<&RunningClock> for RunningClockView {
    fn from(c: &RunningClock) -> Self {
        Self {
            name: c.name.clone(),
            started_at: c.started_at,
            due_at: c.due_at,
            basis: c.basis.clone(),
            due_error: c.due_error.clone(),
        }
    }
}

#[tokio::test]
async fn an_accepted_undecided_referral_is_overdue_in_the_inbox_and_on_the_gateway_until_the_filing_decision()
 {
    let f = Fixture::start().await;
    let (customs, police) = tokio::join!(
        f.spawn_with_rules(CUSTOMS, ""),
        f.spawn_with_rules(POLICE, "")
    );
    let gateway = Gateway::start(&f).await;

    let r = customs
        .common()
        .open_case(OpenCaseRequest {
            meta: meta_at(CASE, REFERRED - time::Duration::hours(1)),
            case_opened: opened("counterfeit handbags"),
        })
        .await;
    ok(&customs, "open the case", r);
    let r = customs
        .customs()
        .refer_to_public_security(casebus_proto::customs::v1::ReferToPublicSecurityRequest {
            meta: meta_at(CASE, REFERRED),
            handoff: Some(HandoffDetails {
                handoff_id: "h1".into(),
                to_office_id: POLICE.into(),
                reason: "suspected crime".into(),
                evidence_ids: vec![],
            }),
        })
        .await;
    ok(&customs, "refer to the police", r);
    police
        .wait_inbox(CASE, "h1", "the police to acknowledge h1", acknowledged)
        .await;
    let r = police
        .common()
        .accept_handoff(AcceptHandoffRequest {
            meta: meta_at(CASE, REFERRED + time::Duration::days(1)),
            handoff_accepted: Some(HandoffAccepted {
                handoff_id: "h1".into(),
                local_case_number: "PS-CLOCK-1".into(),
            }),
        })
        .await;
    ok(&police, "accept h1", r);

    // The inbox: accepted, still there, overdue on its filing clock.
    let items = wait_until(
        SHOW_TIMEOUT,
        "the accepted h1 to be overdue in the inbox",
        async || {
            let items = overdue_in_inbox(&police).await;
            items
                .iter()
                .any(|i| i.status == HandoffStatus::Accepted as i32)
                .then_some(items)
        },
    )
    .await
    .expect("inbox");
    assert_eq!(items.len(), 1, "{items:?}");
    assert!(items[0].overdue);
    assert_filing_clock(
        items[0].clock.as_ref().map(RunningClockView::from).as_ref(),
        "inbox",
    );

    // The sender's coordination view (the agency's own GetCase) counts the same clock.
    let sender_view = customs
        .common()
        .get_case(casebus_proto::agency::v1::GetCaseRequest {
            case_id: CASE.into(),
        })
        .await
        .expect("the sender's view")
        .into_inner()
        .case
        .expect("case");
    let h1 = &sender_view.handoffs[0];
    assert!(h1.overdue, "{h1:?}");
    assert_filing_clock(
        h1.clock.as_ref().map(RunningClockView::from).as_ref(),
        "the sender's GetCase",
    );

    // The gateway: the hand-off view and the overdue filter, for the police and customs.
    let mut police_gw = gateway.client(&f.gateway_reader_token(POLICE)).await;
    let mut customs_gw = gateway.client(&f.gateway_reader_token(CUSTOMS)).await;
    let view = wait_until(
        SHOW_TIMEOUT,
        "the gateway to show h1 accepted",
        async || {
            let case = police_gw
                .get_case(GetCaseRequest {
                    case_id: CASE.into(),
                })
                .await
                .ok()?
                .into_inner()
                .case?;
            let h1 = case.handoffs.into_iter().find(|h| h.handoff_id == "h1")?;
            (h1.status == casebus_proto::gateway::v1::HandoffStatus::Accepted as i32).then_some(h1)
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}:\n{}", gateway.log_text()));
    assert!(view.overdue, "{view:?}");
    assert_filing_clock(
        view.clock.as_ref().map(RunningClockView::from).as_ref(),
        "gateway",
    );
    let overdue_filter = ListCasesRequest {
        has_overdue_handoffs: true,
        ..ListCasesRequest::default()
    };
    for client in [&mut police_gw, &mut customs_gw] {
        let listed = client
            .list_cases(overdue_filter.clone())
            .await
            .expect("list overdue cases")
            .into_inner()
            .cases;
        let ids: Vec<&str> = listed.iter().map(|c| c.case_id.as_str()).collect();
        assert_eq!(ids, [CASE]);
    }

    // The filing decision answers the clock: nothing is overdue any more.
    let r = police
        .police()
        .file_investigation(FileInvestigationRequest {
            meta: meta_at(CASE, REFERRED + time::Duration::days(2)),
            investigation_filed: Some(InvestigationFiled {
                police_case_number: "PS-CLOCK-1".into(),
                suspected_offence: "Criminal Law art. 213".into(),
                basis: "referral by customs".into(),
            }),
        })
        .await;
    ok(&police, "file the investigation", r);
    wait_until(SHOW_TIMEOUT, "the inbox to drop h1", async || {
        let all = police
            .common()
            .list_inbox(ListInboxRequest {
                case_id: CASE.into(),
                overdue_only: false,
            })
            .await
            .expect("list the inbox")
            .into_inner()
            .items;
        all.is_empty().then_some(())
    })
    .await
    .expect("inbox empty");
    let answered = wait_until(SHOW_TIMEOUT, "the gateway to stop h1's clock", async || {
        let case = police_gw
            .get_case(GetCaseRequest {
                case_id: CASE.into(),
            })
            .await
            .ok()?
            .into_inner()
            .case?;
        let h1 = case.handoffs.into_iter().find(|h| h.handoff_id == "h1")?;
        h1.clock.is_none().then_some(h1)
    })
    .await
    .unwrap_or_else(|e| panic!("{e}:\n{}", gateway.log_text()));
    assert!(!answered.overdue);
    let listed = police_gw
        .list_cases(overdue_filter)
        .await
        .expect("list overdue cases")
        .into_inner()
        .cases;
    assert!(listed.is_empty(), "{listed:?}");
    drop(gateway);
}

/// The running clock of `handoff_id` in `agency`'s inbox once `ready` holds for it.
async fn inbox_clock(
    agency: &Running,
    case_id: &str,
    handoff_id: &str,
    what: &str,
    ready: impl Fn(&casebus_proto::agency::v1::RunningClock) -> bool,
) -> InboxItem {
    agency
        .wait_inbox(case_id, handoff_id, what, |i| {
            i.clock.as_ref().is_some_and(&ready)
        })
        .await
}

/// Accepts `handoff_id` by `agency` at `occurred`, once its service acknowledged it.
async fn take(agency: &Running, case_id: &str, handoff_id: &str, occurred: OffsetDateTime) {
    agency
        .wait_inbox(case_id, handoff_id, "the automatic receipt", acknowledged)
        .await;
    let r = agency
        .common()
        .accept_handoff(AcceptHandoffRequest {
            meta: meta_at(case_id, occurred),
            handoff_accepted: Some(HandoffAccepted {
                handoff_id: handoff_id.into(),
                local_case_number: String::new(),
            }),
        })
        .await;
    ok(agency, &format!("accept {handoff_id}"), r);
}

fn details(handoff_id: &str) -> Option<HandoffDetails> {
    Some(HandoffDetails {
        handoff_id: handoff_id.into(),
        to_office_id: String::new(),
        reason: "for your decision".into(),
        evidence_ids: vec![],
    })
}

/// Hand-off h1 of the clock-changes case on the gateway, once its clock is `ready`.
async fn gateway_h1(
    gateway: &Gateway,
    client: &mut GatewayReader,
    ready: impl Fn(&RunningClock) -> bool,
) -> casebus_proto::gateway::v1::Handoff {
    wait_until(SHOW_TIMEOUT, "the gateway to show h1's clock", async || {
        let case = client
            .get_case(GetCaseRequest {
                case_id: "C-CLOCK-CHANGES".into(),
            })
            .await
            .ok()?
            .into_inner()
            .case?;
        let h1 = case.handoffs.into_iter().find(|h| h.handoff_id == "h1")?;
        h1.clock.as_ref().is_some_and(&ready).then_some(h1)
    })
    .await
    .unwrap_or_else(|e| panic!("{e}:\n{}", gateway.log_text()))
}

/// Customs opens `case_id` an hour before [`REFERRED`] and refers it to the police as
/// hand-off h1 then; the police take it two hours after.
async fn refer_and_take(customs: &Running, police: &Running, case_id: &str, title: &str) {
    let r = customs
        .common()
        .open_case(OpenCaseRequest {
            meta: meta_at(case_id, REFERRED - time::Duration::hours(1)),
            case_opened: opened(title),
        })
        .await;
    ok(customs, "open the case", r);
    let r = customs
        .customs()
        .refer_to_public_security(casebus_proto::customs::v1::ReferToPublicSecurityRequest {
            meta: meta_at(case_id, REFERRED),
            handoff: details("h1"),
        })
        .await;
    ok(customs, "refer to the police", r);
    take(police, case_id, "h1", REFERRED + time::Duration::hours(2)).await;
}

/// Days after the referral (2 November 2026, 10:00 CST).
fn day(n: i64) -> OffsetDateTime {
    REFERRED + time::Duration::days(n)
}

#[tokio::test]
async fn a_filing_clock_extended_suspended_and_resumed_shows_so_and_a_third_return_is_refused() {
    const CASE: &str = "C-CLOCK-CHANGES";
    let f = Fixture::start().await;
    let (customs, police, procuratorate) = tokio::join!(
        f.spawn_with_rules(CUSTOMS, ""),
        f.spawn_with_rules(POLICE, ""),
        f.spawn_with_rules(PROC, "")
    );
    let gateway = Gateway::start(&f).await;

    refer_and_take(&customs, &police, CASE, "counterfeit speakers").await;

    // One extension, 3 → 10 days: due Thursday 12 November, 24:00 CST.
    let extend =
        |new_due_at: Option<OffsetDateTime>, occurred: OffsetDateTime| ExtendClockRequest {
            meta: meta_at(CASE, occurred),
            clock_extended: Some(ClockExtended {
                handoff_id: "h1".into(),
                clock: "filing_decision".into(),
                basis: "major, difficult or complex case".into(),
                approving_office_id: POLICE.into(),
                new_due_at: new_due_at.map(timestamp_from),
                subject_id: String::new(),
            }),
        };
    let status = refused(
        police
            .common()
            .extend_clock(extend(Some(datetime!(2026-11-20 16:00 UTC)), day(1)))
            .await,
        Code::FailedPrecondition,
    );
    assert_eq!(rule(&status), "clock_extension_cap", "{}", status.message());
    assert!(
        status.message().contains("2026-11-12T16:00:00Z"),
        "{}",
        status.message()
    );
    let r = police.common().extend_clock(extend(None, day(1))).await;
    ok(&police, "extend the filing clock", r);
    let extended_due = datetime!(2026-11-12 16:00 UTC);
    let item = inbox_clock(&police, CASE, "h1", "the extension in the inbox", |c| {
        c.extensions == 1
    })
    .await;
    let clock = item.clock.as_ref().expect("clock");
    assert_eq!(
        (clock.name.as_str(), clock.due_at, clock.extensions_allowed),
        ("filing_decision", at(extended_due), 2)
    );
    assert!(item.overdue, "past 12 November: {item:?}");

    // Suspended on 4 November: never overdue while it stands still.
    let r = police
        .common()
        .suspend_clock(SuspendClockRequest {
            meta: meta_at(CASE, day(2)),
            clock_suspended: Some(ClockSuspended {
                handoff_id: "h1".into(),
                clock: "filing_decision".into(),
                reason: "expert assessment of the goods (CPL Art. 149)".into(),
            }),
        })
        .await;
    ok(&police, "suspend the filing clock", r);
    let item = inbox_clock(&police, CASE, "h1", "the suspension in the inbox", |c| {
        c.suspended_since.is_some()
    })
    .await;
    assert!(!item.overdue, "{item:?}");
    assert!(overdue_in_inbox(&police).await.is_empty());
    let mut police_gw = gateway.client(&f.gateway_reader_token(POLICE)).await;
    let h1 = gateway_h1(&gateway, &mut police_gw, |c| c.suspended_since.is_some()).await;
    assert!(!h1.overdue, "{h1:?}");
    let clock = h1.clock.as_ref().expect("clock");
    assert_eq!((clock.extensions, clock.due_at), (1, at(extended_due)));
    let overdue_filter = ListCasesRequest {
        has_overdue_handoffs: true,
        ..ListCasesRequest::default()
    };
    let listed = police_gw
        .list_cases(overdue_filter.clone())
        .await
        .expect("list overdue cases")
        .into_inner()
        .cases;
    assert!(listed.is_empty(), "{listed:?}");

    // Resumed on 9 November, five days later: due five days later, 17 November.
    let r = police
        .common()
        .resume_clock(ResumeClockRequest {
            meta: meta_at(CASE, day(7)),
            clock_resumed: Some(ClockResumed {
                handoff_id: "h1".into(),
                clock: "filing_decision".into(),
                reason: "assessment delivered".into(),
            }),
        })
        .await;
    ok(&police, "resume the filing clock", r);
    let moved = datetime!(2026-11-17 16:00 UTC);
    let item = inbox_clock(&police, CASE, "h1", "the resumption in the inbox", |c| {
        c.suspended_since.is_none() && c.due_at == at(moved)
    })
    .await;
    assert!(item.overdue, "{item:?}");
    let h1 = gateway_h1(&gateway, &mut police_gw, |c| {
        c.suspended_since.is_none() && c.due_at == at(moved)
    })
    .await;
    assert!(h1.overdue, "{h1:?}");
    let listed = police_gw
        .list_cases(overdue_filter)
        .await
        .expect("list overdue cases")
        .into_inner()
        .cases;
    assert_eq!(listed.len(), 1, "{listed:?}");

    // Filed, investigated, transferred; returned twice; the third return is refused.
    let r = police
        .police()
        .file_investigation(FileInvestigationRequest {
            meta: meta_at(CASE, day(8)),
            investigation_filed: Some(InvestigationFiled {
                police_case_number: "PS-CLOCK-2".into(),
                suspected_offence: "Criminal Law art. 213".into(),
                basis: "referral by customs".into(),
            }),
        })
        .await;
    ok(&police, "file the investigation", r);
    let r = police
        .police()
        .conclude_investigation(ConcludeInvestigationRequest {
            meta: meta_at(CASE, day(8) + time::Duration::hours(2)),
            investigation_concluded: Some(InvestigationConcluded {
                findings: "counterfeit".into(),
                recommend_prosecution: true,
            }),
        })
        .await;
    ok(&police, "conclude the investigation", r);
    let transfer = async |id: &str, occurred: OffsetDateTime| {
        let r = police
            .police()
            .transfer_for_prosecution(TransferForProsecutionRequest {
                meta: meta_at(CASE, occurred),
                handoff: details(id),
            })
            .await;
        ok(&police, &format!("transfer {id}"), r);
        take(
            &procuratorate,
            CASE,
            id,
            occurred + time::Duration::hours(1),
        )
        .await;
    };
    let give_back = async |id: &str, occurred: OffsetDateTime| {
        procuratorate
            .procuratorate()
            .return_for_supplementary_investigation(ReturnForSupplementaryInvestigationRequest {
                meta: meta_at(CASE, occurred),
                handoff: details(id),
            })
            .await
    };
    transfer("pt1", day(9)).await;
    let r = give_back("si1", day(10)).await;
    ok(&procuratorate, "return si1", r);
    take(&police, CASE, "si1", day(10) + time::Duration::hours(1)).await;
    transfer("pt2", day(14)).await;
    let r = give_back("si2", day(16)).await;
    ok(&procuratorate, "return si2", r);
    take(&police, CASE, "si2", day(16) + time::Duration::hours(1)).await;
    // The third transfer, Friday 20 November: its review restarts a full month from
    // that day, to Sunday 20 December, a rest day: Monday 21 December, 24:00 CST.
    transfer("pt3", day(18)).await;
    let item = inbox_clock(&procuratorate, CASE, "pt3", "pt3's review clock", |c| {
        c.name == "prosecution_review"
    })
    .await;
    let clock = item.clock.as_ref().expect("clock");
    assert_eq!(
        (clock.started_at, clock.due_at),
        (at(day(18)), at(datetime!(2026-12-21 16:00 UTC)))
    );
    let status = refused(give_back("si3", day(20)).await, Code::FailedPrecondition);
    assert_eq!(
        rule(&status),
        "supplementary_investigation_at_most_twice",
        "{}",
        status.message()
    );
    for named in ["CPL Art. 175", "si1", "si2"] {
        assert!(status.message().contains(named), "{}", status.message());
    }
    drop(gateway);
}

/// A hand-off of `case_id` on the gateway, once `ready` holds for it.
async fn gateway_handoff(
    gateway: &Gateway,
    client: &mut GatewayReader,
    case_id: &str,
    handoff_id: &str,
    ready: impl Fn(&casebus_proto::gateway::v1::Handoff) -> bool,
) -> casebus_proto::gateway::v1::Handoff {
    wait_until(
        SHOW_TIMEOUT,
        &format!("the gateway to show {handoff_id} of {case_id}"),
        async || {
            let case = client
                .get_case(GetCaseRequest {
                    case_id: case_id.into(),
                })
                .await
                .ok()?
                .into_inner()
                .case?;
            let h = case
                .handoffs
                .into_iter()
                .find(|h| h.handoff_id == handoff_id)?;
            ready(&h).then_some(h)
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}:\n{}", gateway.log_text()))
}

/// The police's inbox no longer holds `handoff_id`.
async fn dropped_from_inbox(police: &Running, case_id: &str, handoff_id: &str) {
    wait_until(
        SHOW_TIMEOUT,
        &format!("the inbox to drop {handoff_id}"),
        async || {
            let items = police
                .common()
                .list_inbox(ListInboxRequest {
                    case_id: case_id.into(),
                    overdue_only: false,
                })
                .await
                .expect("list the inbox")
                .into_inner()
                .items;
            (!items.iter().any(|i| i.handoff_id == handoff_id)).then_some(())
        },
    )
    .await
    .expect("dropped");
}

#[tokio::test]
async fn a_decision_not_to_file_is_reconsidered_then_supervised_until_the_police_file() {
    const CASE: &str = "C-CLOCK-SUPERVISED";
    let f = Fixture::start().await;
    let (customs, police, procuratorate) = tokio::join!(
        f.spawn_with_rules(CUSTOMS, ""),
        f.spawn_with_rules(POLICE, ""),
        f.spawn_with_rules(PROC, "")
    );
    let gateway = Gateway::start(&f).await;

    refer_and_take(&customs, &police, CASE, "counterfeit chargers").await;
    let decline = |occurred: OffsetDateTime, reason: &str| DeclineInvestigationRequest {
        meta: meta_at(CASE, occurred),
        investigation_declined: Some(InvestigationDeclined {
            reason: reason.into(),
        }),
    };
    // Tuesday 3 November: not filed. The window for reconsideration runs 3 days from
    // Wednesday, to Friday 6 November, 24:00 CST.
    let r = police
        .police()
        .decline_investigation(decline(day(1), "amount below the threshold"))
        .await;
    ok(&police, "decline to file", r);
    dropped_from_inbox(&police, CASE, "h1").await;

    let reconsider = |occurred: OffsetDateTime| RequestReconsiderationRequest {
        meta: meta_at(CASE, occurred),
        handoff: details("r1"),
    };
    let status = refused(
        customs
            .customs()
            .request_reconsideration(reconsider(day(5)))
            .await,
        Code::FailedPrecondition,
    );
    assert_eq!(
        rule(&status),
        "reconsideration_window",
        "{}",
        status.message()
    );
    assert!(
        status.message().contains("2026-11-06T16:00:00Z"),
        "{}",
        status.message()
    );
    // Wednesday 4 November: asked in time. The police decide again within 3 days from
    // Thursday, to Saturday 7 November, a rest day: Monday 9 November, 24:00 CST.
    let r = customs
        .customs()
        .request_reconsideration(reconsider(day(2)))
        .await;
    ok(&customs, "ask for reconsideration", r);
    take(&police, CASE, "r1", day(2) + time::Duration::hours(1)).await;
    let item = inbox_clock(&police, CASE, "r1", "r1's decision clock", |c| {
        c.name == "reconsideration_decision"
    })
    .await;
    let clock = item.clock.as_ref().expect("clock");
    assert_eq!(
        (clock.started_at, clock.due_at),
        (at(day(2)), at(datetime!(2026-11-09 16:00 UTC)))
    );
    assert!(clock.basis.contains("Order 310"), "{}", clock.basis);
    assert!(item.overdue, "accepted, undecided and past due: {item:?}");
    let mut customs_gw = gateway.client(&f.gateway_reader_token(CUSTOMS)).await;
    let r1 = gateway_handoff(&gateway, &mut customs_gw, CASE, "r1", |h| {
        h.clock
            .as_ref()
            .is_some_and(|c| c.name == "reconsideration_decision")
    })
    .await;
    assert!(r1.overdue, "{r1:?}");
    // Upheld: a second decision not to file answers the request.
    let r = police
        .police()
        .decline_investigation(decline(day(3), "upheld on reconsideration"))
        .await;
    ok(&police, "uphold the decision", r);
    dropped_from_inbox(&police, CASE, "r1").await;
    gateway_handoff(&gateway, &mut customs_gw, CASE, "r1", |h| h.clock.is_none()).await;

    // Customs asks the procuratorate to supervise the filing (Order 310 Art. 9).
    let r = customs
        .common()
        .request_handoff(RequestHandoffRequest {
            meta: meta_at(CASE, day(3) + time::Duration::hours(2)),
            handoff_requested: Some(casebus_proto::event::v1::HandoffRequested {
                handoff_id: "s1".into(),
                kind: casebus_proto::event::v1::HandoffKind::AssistanceRequest as i32,
                to_agency: casebus_proto::event::v1::Agency::Procuratorate as i32,
                reason: "please supervise the filing".into(),
                ..Default::default()
            }),
        })
        .await;
    ok(&customs, "ask for filing supervision", r);
    take(
        &procuratorate,
        CASE,
        "s1",
        day(3) + time::Duration::hours(3),
    )
    .await;
    let notify = |occurred: OffsetDateTime| NotifyToFileRequest {
        meta: meta_at(CASE, occurred),
        handoff: details("n1"),
    };
    let status = refused(
        procuratorate
            .procuratorate()
            .notify_to_file(notify(day(4)))
            .await,
        Code::FailedPrecondition,
    );
    assert_eq!(
        rule(&status),
        "non_filing_explanation_first",
        "{}",
        status.message()
    );
    // Friday 6 November: explain within 7 days, to Friday 13 November, 24:00 CST.
    let r = procuratorate
        .procuratorate()
        .request_non_filing_explanation(RequestNonFilingExplanationRequest {
            meta: meta_at(CASE, day(4)),
            handoff: details("e1"),
        })
        .await;
    ok(&procuratorate, "ask for an explanation", r);
    take(&police, CASE, "e1", day(4) + time::Duration::hours(1)).await;
    let item = inbox_clock(&police, CASE, "e1", "e1's explanation clock", |c| {
        c.name == "non_filing_explanation"
    })
    .await;
    assert_eq!(
        item.clock.as_ref().and_then(|c| c.due_at),
        at(datetime!(2026-11-13 16:00 UTC))
    );
    let r = police
        .police()
        .explain_non_filing(ExplainNonFilingRequest {
            meta: meta_at(CASE, day(5)),
            non_filing_explained: Some(NonFilingExplained {
                handoff_id: "e1".into(),
                explanation: "the sales proven stay below the threshold".into(),
            }),
        })
        .await;
    ok(&police, "explain", r);
    dropped_from_inbox(&police, CASE, "e1").await;

    // Sunday 8 November: notified to file, within 15 days, to Monday 23 November.
    let r = procuratorate
        .procuratorate()
        .notify_to_file(notify(day(6)))
        .await;
    ok(&procuratorate, "notify to file", r);
    take(&police, CASE, "n1", day(6) + time::Duration::hours(1)).await;
    let item = inbox_clock(&police, CASE, "n1", "n1's filing clock", |c| {
        c.name == "filing_on_notice"
    })
    .await;
    assert_eq!(
        item.clock.as_ref().and_then(|c| c.due_at),
        at(datetime!(2026-11-23 16:00 UTC))
    );
    assert!(item.overdue, "{item:?}");
    let mut proc_gw = gateway.client(&f.gateway_reader_token(PROC)).await;
    let n1 = gateway_handoff(&gateway, &mut proc_gw, CASE, "n1", |h| {
        h.clock
            .as_ref()
            .is_some_and(|c| c.name == "filing_on_notice")
    })
    .await;
    assert!(n1.overdue, "{n1:?}");
    // Notified, the police cannot decline again; filing answers the notice.
    let status = refused(
        police
            .police()
            .decline_investigation(decline(day(7), "still below the threshold"))
            .await,
        Code::FailedPrecondition,
    );
    assert_eq!(rule(&status), "filing_notice_binds", "{}", status.message());
    let r = police
        .police()
        .file_investigation(FileInvestigationRequest {
            meta: meta_at(CASE, day(10)),
            investigation_filed: Some(InvestigationFiled {
                police_case_number: "PS-SUPV-1".into(),
                suspected_offence: "Criminal Law art. 213".into(),
                basis: "notice to file of the procuratorate".into(),
            }),
        })
        .await;
    ok(&police, "file on notice", r);
    dropped_from_inbox(&police, CASE, "n1").await;
    let n1 = gateway_handoff(&gateway, &mut proc_gw, CASE, "n1", |h| h.clock.is_none()).await;
    assert!(!n1.overdue, "{n1:?}");
    drop(gateway);
}

/// Customs detains goods `detention` of `case_id` on the rights holder's application on
/// Monday 2 November 2026, 10:00 CST, with `visibility`.
async fn detain_on_application(
    customs: &Running,
    case_id: &str,
    detention: &str,
    visibility: Option<casebus_proto::event::v1::Visibility>,
) {
    let r = customs
        .customs()
        .detain_goods(casebus_proto::customs::v1::DetainGoodsRequest {
            meta: meta_at(case_id, REFERRED).map(|m| CommandMeta { visibility, ..m }),
            goods_detained: Some(casebus_proto::event::v1::GoodsDetained {
                detention_id: detention.into(),
                description: "earphones bearing the ACME mark".into(),
                on_rights_holder_application: true,
                ..Default::default()
            }),
        })
        .await;
    ok(customs, &format!("detain {detention}"), r);
}

/// The case clocks `reader` sees on the gateway once `ready` holds for them.
async fn gateway_clocks(
    gateway: &Gateway,
    reader: &mut GatewayReader,
    case_id: &str,
    ready: impl Fn(&[casebus_proto::gateway::v1::CaseClock]) -> bool,
) -> casebus_proto::gateway::v1::CaseSummary {
    wait_until(
        SHOW_TIMEOUT,
        "the gateway to show the case's clocks",
        async || {
            let case = reader
                .get_case(GetCaseRequest {
                    case_id: case_id.into(),
                })
                .await
                .ok()?
                .into_inner()
                .case?;
            ready(&case.clocks).then_some(case)
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}:\n{}", gateway.log_text()))
}

/// The ids of the cases `reader` lists with any running clock past due.
async fn overdue_clock_cases(reader: &mut GatewayReader) -> Vec<String> {
    reader
        .list_cases(ListCasesRequest {
            has_overdue_clocks: true,
            ..Default::default()
        })
        .await
        .expect("list cases with overdue clocks")
        .into_inner()
        .cases
        .into_iter()
        .map(|c| c.case_id)
        .collect()
}

#[tokio::test]
async fn a_detention_is_overdue_for_release_on_the_gateway_until_the_court_asks_customs_to_assist()
{
    const CASE: &str = "C-CLOCK-DETAINED";
    const SEALED: &str = "C-CLOCK-DETAINED-SEALED";
    let f = Fixture::start().await;
    let (customs, court) = tokio::join!(
        f.spawn_with_rules(CUSTOMS, ""),
        f.spawn_with_rules(COURT, "")
    );
    let gateway = Gateway::start(&f).await;
    let mut customs_gw = gateway.client(&f.gateway_reader_token(CUSTOMS)).await;
    let mut court_gw = gateway.client(&f.gateway_reader_token(COURT)).await;

    // Detained on application on Monday 2 November: 20 working days from Tuesday 3
    // November end on Monday 30 November, 24:00 CST; past due now.
    for (case_id, visibility) in [
        (CASE, None),
        (
            SEALED,
            Some(casebus_proto::event::v1::Visibility {
                kind: casebus_proto::event::v1::VisibilityKind::OriginOnly as i32,
                agencies: vec![],
            }),
        ),
    ] {
        let r = customs
            .common()
            .open_case(OpenCaseRequest {
                meta: meta_at(case_id, REFERRED - time::Duration::hours(1)),
                case_opened: opened("detained earphones"),
            })
            .await;
        ok(&customs, "open the case", r);
        detain_on_application(&customs, case_id, "d1", visibility).await;
        // Customs tells the court of the detention (the rights holder's suit); the court
        // takes it and so takes part in the case.
        let r = customs
            .common()
            .request_handoff(RequestHandoffRequest {
                meta: meta_at(case_id, REFERRED + time::Duration::hours(1)),
                handoff_requested: Some(casebus_proto::event::v1::HandoffRequested {
                    handoff_id: "tell".into(),
                    kind: casebus_proto::event::v1::HandoffKind::AssistanceRequest as i32,
                    to_agency: casebus_proto::event::v1::Agency::Court as i32,
                    reason: "goods detained on the rights holder's application".into(),
                    ..Default::default()
                }),
            })
            .await;
        ok(&customs, "tell the court", r);
        take(&court, case_id, "tell", REFERRED + time::Duration::hours(2)).await;
    }
    let case = gateway_clocks(&gateway, &mut customs_gw, CASE, |c| !c.is_empty()).await;
    assert_eq!(case.clocks.len(), 1, "{:?}", case.clocks);
    let clock = &case.clocks[0];
    let running = clock.clock.as_ref().expect("the running clock");
    assert_eq!(
        (
            clock.subject_id.as_str(),
            running.name.as_str(),
            clock.agency
        ),
        (
            "d1",
            "release_on_application",
            casebus_proto::event::v1::Agency::Customs as i32
        )
    );
    assert_eq!(
        (running.started_at, running.due_at),
        (at(REFERRED), at(datetime!(2026-11-30 16:00 UTC)))
    );
    assert!(running.basis.contains("Art. 24(1)"), "{}", running.basis);
    assert!(clock.overdue, "{clock:?}");
    // The sealed detention's clock is customs' alone: the court sees neither the clock
    // nor, through the overdue filter, the case.
    let sealed = gateway_clocks(&gateway, &mut customs_gw, SEALED, |c| c.len() == 1).await;
    assert!(sealed.clocks[0].overdue);
    let seen_by_court = gateway_clocks(&gateway, &mut court_gw, SEALED, |_| true).await;
    assert!(
        seen_by_court.clocks.is_empty(),
        "{:?}",
        seen_by_court.clocks
    );
    assert!(seen_by_court.redacted);
    let court_listed = overdue_clock_cases(&mut court_gw).await;
    assert!(court_listed.contains(&CASE.to_owned()), "{court_listed:?}");
    assert!(
        !court_listed.contains(&SEALED.to_owned()),
        "{court_listed:?}"
    );
    let customs_listed = overdue_clock_cases(&mut customs_gw).await;
    assert!(
        customs_listed.contains(&SEALED.to_owned()),
        "{customs_listed:?}"
    );
    // No hand-off is overdue there: the filter of hand-offs alone does not list it.
    let handoffs_only = customs_gw
        .list_cases(ListCasesRequest {
            has_overdue_handoffs: true,
            ..Default::default()
        })
        .await
        .expect("list")
        .into_inner()
        .cases;
    assert!(
        handoffs_only.iter().all(|c| c.case_id != SEALED),
        "{handoffs_only:?}"
    );

    // The court's assistance notice stops the release clock.
    let r = court
        .court()
        .notify_customs_to_assist(casebus_proto::court::v1::NotifyCustomsToAssistRequest {
            meta: meta_at(CASE, datetime!(2026-11-20 10:00 +8)),
            handoff: details("assist"),
        })
        .await;
    ok(&court, "notify customs to assist", r);
    gateway_clocks(&gateway, &mut customs_gw, CASE, <[_]>::is_empty).await;
    // The notice runs until customs takes it (1 day by default, past due now); taken,
    // nothing of the case is overdue.
    let notice = gateway_handoff(&gateway, &mut customs_gw, CASE, "assist", |h| {
        h.clock
            .as_ref()
            .is_some_and(|c| c.name == "court_assistance")
    })
    .await;
    assert!(notice.overdue, "{notice:?}");
    take(&customs, CASE, "assist", datetime!(2026-11-20 11:00 +8)).await;
    gateway_handoff(&gateway, &mut customs_gw, CASE, "assist", |h| {
        h.clock.is_none()
    })
    .await;
    let listed = overdue_clock_cases(&mut customs_gw).await;
    assert!(!listed.contains(&CASE.to_owned()), "{listed:?}");
    assert!(listed.contains(&SEALED.to_owned()), "{listed:?}");
}

#[tokio::test]
async fn a_detained_suspects_arrest_request_is_overdue_on_the_gateway_until_extended_and_asked_for()
{
    const CASE: &str = "C-CLOCK-SUSPECT";
    let f = Fixture::start().await;
    let (customs, police) = tokio::join!(
        f.spawn_with_rules(CUSTOMS, ""),
        f.spawn_with_rules(POLICE, "")
    );
    let gateway = Gateway::start(&f).await;
    let mut police_gw = gateway.client(&f.gateway_reader_token(POLICE)).await;

    refer_and_take(&customs, &police, CASE, "counterfeit earphones").await;
    let r = police
        .common()
        .add_party(AddPartyRequest {
            meta: meta_at(CASE, day(1)),
            party_added: Some(casebus_proto::event::v1::PartyAdded {
                party: Some(casebus_proto::event::v1::Party {
                    party_id: "s1".into(),
                    role: casebus_proto::event::v1::PartyRole::Suspect as i32,
                    name: "Suspect One".into(),
                    ..Default::default()
                }),
            }),
        })
        .await;
    ok(&police, "add the suspect", r);
    let r = police
        .police()
        .file_investigation(FileInvestigationRequest {
            meta: meta_at(CASE, day(1) + time::Duration::hours(1)),
            investigation_filed: Some(InvestigationFiled {
                police_case_number: "PS-CLOCK-S".into(),
                suspected_offence: "Criminal Law art. 213".into(),
                basis: "referral by customs".into(),
            }),
        })
        .await;
    ok(&police, "file the investigation", r);
    // Detained on Tuesday 3 November at noon: 3 days from Wednesday end on Friday 6
    // November, 24:00 CST.
    let r = police
        .police()
        .detain_suspect(casebus_proto::public_security::v1::DetainSuspectRequest {
            meta: meta_at(CASE, day(1) + time::Duration::hours(2)),
            suspect_detained: Some(casebus_proto::event::v1::SuspectDetained {
                party_id: "s1".into(),
                measure: "criminal detention".into(),
                ..Default::default()
            }),
        })
        .await;
    ok(&police, "detain the suspect", r);
    let case = gateway_clocks(&gateway, &mut police_gw, CASE, |c| !c.is_empty()).await;
    let clock = &case.clocks[0];
    let running = clock.clock.as_ref().expect("the running clock");
    assert_eq!(
        (
            clock.subject_id.as_str(),
            running.name.as_str(),
            running.due_at
        ),
        ("s1", "arrest_request", at(datetime!(2026-11-06 16:00 UTC)))
    );
    assert!(clock.overdue, "{clock:?}");
    assert!(running.basis.contains("CPL Art. 91"), "{}", running.basis);
    // Extended on Wednesday, before it ran out, to 7 days: Tuesday 10 November.
    let r = police
        .common()
        .extend_clock(ExtendClockRequest {
            meta: meta_at(CASE, day(2)),
            clock_extended: Some(ClockExtended {
                subject_id: "s1".into(),
                clock: "arrest_request".into(),
                basis: "special circumstances".into(),
                approving_office_id: POLICE.into(),
                ..Default::default()
            }),
        })
        .await;
    ok(&police, "extend the arrest request clock", r);
    let case = gateway_clocks(&gateway, &mut police_gw, CASE, |c| {
        c.iter()
            .any(|c| c.clock.as_ref().is_some_and(|r| r.extensions == 1))
    })
    .await;
    let running = case.clocks[0].clock.as_ref().expect("the running clock");
    assert_eq!(
        (
            running.due_at,
            running.extensions,
            running.extensions_allowed
        ),
        (at(datetime!(2026-11-10 16:00 UTC)), 1, 2)
    );
    // Asking the procuratorate to approve the arrest answers it.
    let r = police
        .police()
        .request_arrest_approval(
            casebus_proto::public_security::v1::RequestArrestApprovalRequest {
                meta: meta_at(CASE, day(4)),
                handoff: details("arr"),
            },
        )
        .await;
    ok(&police, "ask for arrest approval", r);
    gateway_clocks(&gateway, &mut police_gw, CASE, <[_]>::is_empty).await;
}
