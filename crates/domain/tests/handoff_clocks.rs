//! The legal clocks of hand-offs (and, at the end, of customs detentions) as the fold
//! keeps them, table-style: each test records
//! a history through `decide` and the fold (with the act's `occurred_at` and the time of
//! recording given separately), then states, through the single `check` helper, which
//! clock of which hand-off runs, until when, and whether it is overdue. Then the rule
//! that only an indictment sends a case to court, and the replay property (which also
//! folds the clock events alone, as the agency inbox does).

use proptest::prelude::*;
use time::macros::offset;
use time::{OffsetDateTime, PrimitiveDateTime};

use casebus_domain::{
    Calendar, CaseState, ClockAnswerKind, ClockName, Command, Context, DeadlineRules, DueProblem,
    HandoffClockKind, RecordedEvent, Rejection, check_recorded_dues, decide,
};
use casebus_proto::event::v1::payload::Kind;
use casebus_proto::event::v1::*;
use casebus_proto::{CaseId, EventId, OfficeId, RequestId};

use crate::common::{COURT, CUSTOMS, IPC, POLICE, PROC, accept, ack, file_investigation, handoff};

mod common;

fn calendar() -> Calendar {
    Calendar::parse_files([(
        "deploy/calendar/2026.toml",
        include_str!("../../../deploy/calendar/2026.toml"),
    )])
    .expect("the shipped calendar is valid")
}

/// `"2026-03-06 15:00"` in China Standard Time; `"2026-03-09 24:00"` is the end of that day.
fn cst(text: &str) -> OffsetDateTime {
    let format = time::macros::format_description!("[year]-[month]-[day] [hour]:[minute]");
    match text.strip_suffix(" 24:00") {
        Some(day) => cst(&format!("{day} 00:00")) + time::Duration::days(1),
        None => PrimitiveDateTime::parse(text, format)
            .unwrap_or_else(|e| panic!("bad test time {text:?}: {e}"))
            .assume_offset(offset!(+8)),
    }
}

struct Stored {
    case_id: CaseId,
    version: u64,
    event_id: EventId,
    office: OfficeId,
    occurred_at: OffsetDateTime,
    visibility: Visibility,
    payload: Kind,
}

impl Stored {
    fn view(&self) -> RecordedEvent<'_> {
        RecordedEvent {
            case_id: &self.case_id,
            version: self.version,
            event_id: &self.event_id,
            office: &self.office,
            occurred_at: self.occurred_at,
            visibility: Some(&self.visibility),
            payload: Some(&self.payload),
        }
    }
}

struct World {
    rules: DeadlineRules,
    state: CaseState,
    log: Vec<Stored>,
}

impl World {
    fn new() -> Self {
        Self {
            rules: DeadlineRules::default(),
            state: CaseState::default(),
            log: Vec::new(),
        }
    }

    /// Records what `who` did at `occurred` (CST), as recorded at `recorded` (CST).
    fn record_at(
        &mut self,
        who: &str,
        occurred: &str,
        recorded: &str,
        payload: Kind,
    ) -> Result<(), Rejection> {
        let cmd = Command {
            case_id: CaseId::new("CASE-1").expect("valid"),
            office: OfficeId::new(who).expect("valid"),
            actor: "officer-1".into(),
            occurred_at: cst(occurred),
            visibility: None,
            payload,
        };
        let ctx = Context {
            now: cst(recorded),
            rules: &self.rules,
            calendar: &calendar(),
            rules_digest: &self.rules.digest(&calendar()),
            offices: &|_: &OfficeId| true,
        };
        let decision = decide(&self.state, &cmd, &ctx)?;
        let version = self.state.version + 1;
        let request = RequestId::new(&format!("r{version}")).expect("valid");
        let stored = Stored {
            case_id: cmd.case_id.clone(),
            version,
            event_id: EventId::derive(&cmd.office, &cmd.case_id, &request),
            office: cmd.office.clone(),
            occurred_at: cmd.occurred_at,
            visibility: decision.visibility,
            payload: decision.payload,
        };
        self.state.apply(&stored.view());
        self.log.push(stored);
        Ok(())
    }

    /// Records what `who` did at `at` (CST), recorded at once.
    fn record(&mut self, who: &str, at: &str, payload: Kind) {
        if let Err(e) = self.record_at(who, at, at, payload.clone()) {
            panic!("{who} at {at}: {payload:?} was rejected: {e}");
        }
    }
}

/// What the running clock of a hand-off should be: which clock, which rule, and its
/// due time in CST (`"… 24:00"` for the end of a day).
type Expected<'a> = Option<(HandoffClockKind, ClockName, &'a str)>;

/// Checks the running clock of `handoff_id` in `world`, and whether it is overdue at
/// `now` (CST).
fn check(world: &World, handoff_id: &str, expected: Expected<'_>, now: &str, overdue: bool) {
    let open = world
        .state
        .open_clock(handoff_id, &world.rules, &calendar());
    let got = open.as_ref().map(|c| {
        (
            c.clock,
            c.rule,
            c.due_at.clone().expect("the due time is countable"),
        )
    });
    let want = expected.map(|(clock, rule, due)| (clock, rule, cst(due)));
    assert_eq!(got, want, "running clock of {handoff_id}");
    if let Some(open) = &open {
        assert_eq!(
            open.basis,
            world.rules.clock(open.rule).basis,
            "the basis is the rule's"
        );
        assert_eq!(open.is_overdue(cst(now)), overdue, "{handoff_id} at {now}");
    }
    let listed = world
        .state
        .overdue_clocks(&world.rules, &calendar(), cst(now))
        .iter()
        .any(|c| c.handoff_id == handoff_id);
    assert_eq!(listed, overdue, "{handoff_id} in the overdue list at {now}");
}

fn opened() -> Kind {
    Kind::CaseOpened(CaseOpened {
        case_type: CaseType::CounterfeitTrademark as i32,
        title: "Earphones".into(),
        parties: vec![Party {
            party_id: "s1".into(),
            role: PartyRole::Suspect as i32,
            name: "Suspect One".into(),
            ..Default::default()
        }],
        ..Default::default()
    })
}

fn concluded() -> Kind {
    Kind::InvestigationConcluded(InvestigationConcluded {
        findings: "counterfeit".into(),
        recommend_prosecution: true,
    })
}

fn indictment(handoff_id: &str) -> Kind {
    Kind::IndictmentFiled(IndictmentFiled {
        handoff_id: handoff_id.into(),
        indictment_number: "NB-P-1".into(),
        charges: "Criminal Law art. 213".into(),
        defendant_party_ids: vec!["s1".into()],
    })
}

fn non_prosecution(handoff_id: &str) -> Kind {
    Kind::NonProsecutionDecided(NonProsecutionDecided {
        handoff_id: handoff_id.into(),
        reason: "insufficient evidence".into(),
    })
}

use ClockName::*;
use HandoffClockKind::{Decision, Receipt as ReceiptClock};

/// Customs opens the case on Friday 6 March and refers it to the police at 10:20.
fn referred() -> World {
    let mut w = World::new();
    w.record(CUSTOMS, "2026-03-06 09:00", opened());
    w.record(
        CUSTOMS,
        "2026-03-06 10:20",
        handoff(
            "ref",
            HandoffKind::SuspectedCrimeReferral,
            Agency::PublicSecurity,
        ),
    );
    w
}

#[test]
fn a_referral_runs_its_receipt_then_its_filing_clock_until_the_filing_decision() {
    let mut w = referred();
    check(
        &w,
        "ref",
        Some((ReceiptClock, Receipt, "2026-03-07 11:00")),
        "2026-03-07 10:59",
        false,
    );
    check(
        &w,
        "ref",
        Some((ReceiptClock, Receipt, "2026-03-07 11:00")),
        "2026-03-07 11:01",
        true,
    );
    w.record(POLICE, "2026-03-06 10:21", ack("ref"));
    // Three days from Friday: Saturday, Sunday, Monday.
    let filing = Some((Decision, FilingDecision, "2026-03-09 24:00"));
    check(&w, "ref", filing, "2026-03-09 23:59", false);
    // Accepting starts the work; it does not stop the clock.
    w.record(POLICE, "2026-03-09 09:00", accept("ref"));
    check(&w, "ref", filing, "2026-03-09 23:59", false);
    check(&w, "ref", filing, "2026-03-10 00:01", true);
    // Only the filing decision answers it, even late.
    w.record(POLICE, "2026-03-10 09:00", file_investigation());
    check(&w, "ref", None, "2026-03-10 09:01", false);
    let answer = w.state.clocks["ref"].decision.expect("answered");
    assert_eq!(answer.by, ClockAnswerKind::InvestigationFiled);
}

#[test]
fn a_clock_starts_from_when_the_act_occurred_not_from_when_it_was_recorded() {
    let mut w = World::new();
    w.record(CUSTOMS, "2026-03-02 09:00", opened());
    // The referral went out on Friday 6 March but was entered on Wednesday 11 March.
    w.record_at(
        CUSTOMS,
        "2026-03-06 10:20",
        "2026-03-11 08:00",
        handoff(
            "ref",
            HandoffKind::SuspectedCrimeReferral,
            Agency::PublicSecurity,
        ),
    )
    .expect("accepted");
    w.record_at(POLICE, "2026-03-06 10:30", "2026-03-11 08:01", ack("ref"))
        .expect("accepted");
    // Counted from the recording it would run to Monday 16 March (Sat 14 → Mon 16);
    // counted from the act it ended on Monday 9 March, so it is overdue on entry.
    check(
        &w,
        "ref",
        Some((Decision, FilingDecision, "2026-03-09 24:00")),
        "2026-03-11 08:02",
        true,
    );
}

#[test]
fn a_declined_referral_stops_both_clocks_and_a_filing_decision_answers_every_open_referral() {
    let mut w = referred();
    w.record(POLICE, "2026-03-06 11:00", ack("ref"));
    w.record(
        POLICE,
        "2026-03-06 11:05",
        Kind::HandoffDeclined(HandoffDeclined {
            handoff_id: "ref".into(),
            reason: "another office has jurisdiction".into(),
        }),
    );
    check(&w, "ref", None, "2026-04-01 00:00", false);

    let mut w = referred();
    // The IP center joins by taking an assistance request, then refers the case too.
    w.record(
        CUSTOMS,
        "2026-03-06 11:30",
        handoff("a1", HandoffKind::AssistanceRequest, Agency::IpCenter),
    );
    w.record(IPC, "2026-03-06 12:00", accept("a1"));
    w.record(
        IPC,
        "2026-03-06 12:30",
        handoff(
            "ref2",
            HandoffKind::SuspectedCrimeReferral,
            Agency::PublicSecurity,
        ),
    );
    w.record(POLICE, "2026-03-06 13:00", accept("ref"));
    w.record(POLICE, "2026-03-06 13:05", accept("ref2"));
    w.record(POLICE, "2026-03-07 10:00", file_investigation());
    check(&w, "ref", None, "2026-04-01 00:00", false);
    check(&w, "ref2", None, "2026-04-01 00:00", false);
}

#[test]
fn an_assessment_answers_the_assistance_request_it_names_or_else_the_oldest_open_one() {
    let mut w = World::new();
    w.record(CUSTOMS, "2026-03-02 09:00", opened());
    for id in ["a1", "a2", "a3"] {
        w.record(
            CUSTOMS,
            "2026-03-02 10:00",
            handoff(id, HandoffKind::AssistanceRequest, Agency::IpCenter),
        );
        w.record(IPC, "2026-03-02 10:30", accept(id));
    }
    // 15 days from Monday 2 March end on Tuesday 17 March.
    let open = Some((Decision, AssistanceDecision, "2026-03-17 24:00"));
    check(&w, "a1", open, "2026-03-10 00:00", false);
    let assess = |id: &str, handoff_id: &str| {
        Kind::InfringementAssessed(InfringementAssessed {
            assessment_id: id.into(),
            infringing: true,
            opinion: "identical mark".into(),
            handoff_id: handoff_id.into(),
        })
    };
    w.record(IPC, "2026-03-03 09:00", assess("as1", "a2"));
    check(&w, "a2", None, "2026-03-10 00:00", false);
    check(&w, "a1", open, "2026-03-18 00:01", true);
    w.record(IPC, "2026-03-04 09:00", assess("as2", ""));
    check(&w, "a1", None, "2026-03-18 00:01", false);
    check(&w, "a3", open, "2026-03-18 00:01", true);
}

/// The police filed the investigation of the referred case and concluded it.
fn investigated() -> World {
    let mut w = referred();
    w.record(POLICE, "2026-03-06 11:00", accept("ref"));
    w.record(POLICE, "2026-03-07 09:00", file_investigation());
    w
}

#[test]
fn an_arrest_request_runs_until_the_arrest_decision_naming_it_without_roll_over() {
    let mut w = investigated();
    // Requested on Thursday 24 September: 7 days end on 1 October, National Day, and a
    // detained suspect's arrest decision does not roll over.
    w.record(
        POLICE,
        "2026-09-24 10:00",
        handoff(
            "arr",
            HandoffKind::ArrestApprovalRequest,
            Agency::Procuratorate,
        ),
    );
    w.record(PROC, "2026-09-24 10:05", ack("arr"));
    w.record(PROC, "2026-09-24 11:00", accept("arr"));
    let open = Some((Decision, ArrestDecision, "2026-10-01 24:00"));
    check(&w, "arr", open, "2026-10-01 23:00", false);
    check(&w, "arr", open, "2026-10-02 00:01", true);
    w.record(
        PROC,
        "2026-09-30 10:00",
        Kind::ArrestApproved(ArrestApproved {
            handoff_id: "arr".into(),
            party_id: "s1".into(),
            ..Default::default()
        }),
    );
    check(&w, "arr", None, "2026-10-02 00:01", false);
}

/// The case is transferred for prosecution on Saturday 31 January and accepted.
fn transferred() -> World {
    let mut w = World::new();
    w.record(CUSTOMS, "2026-01-05 09:00", opened());
    w.record(
        CUSTOMS,
        "2026-01-05 10:00",
        handoff(
            "ref",
            HandoffKind::SuspectedCrimeReferral,
            Agency::PublicSecurity,
        ),
    );
    w.record(POLICE, "2026-01-05 11:00", accept("ref"));
    w.record(POLICE, "2026-01-06 09:00", file_investigation());
    w.record(POLICE, "2026-01-30 09:00", concluded());
    w.record(
        POLICE,
        "2026-01-31 10:00",
        handoff(
            "pt1",
            HandoffKind::ProsecutionTransfer,
            Agency::Procuratorate,
        ),
    );
    w.record(PROC, "2026-01-31 10:05", ack("pt1"));
    w.record(PROC, "2026-02-02 09:00", accept("pt1"));
    w
}

#[test]
fn prosecution_review_runs_one_month_and_stops_at_the_indictment() {
    let mut w = transferred();
    // One month from 31 January ends on Saturday 28 February, a make-up working day.
    let review = Some((Decision, ProsecutionReview, "2026-02-28 24:00"));
    check(&w, "pt1", review, "2026-02-28 12:00", false);
    check(&w, "pt1", review, "2026-03-01 00:01", true);
    w.record(PROC, "2026-02-27 09:00", indictment("pt1"));
    check(&w, "pt1", None, "2026-03-01 00:01", false);
    w.record(
        PROC,
        "2026-02-27 10:00",
        handoff("pp", HandoffKind::PublicProsecution, Agency::Court),
    );
    // Seven days from Friday 27 February end on Friday 6 March.
    check(
        &w,
        "pp",
        Some((ReceiptClock, Receipt, "2026-02-28 11:00")),
        "2026-02-28 10:00",
        false,
    );
    w.record(COURT, "2026-02-27 10:05", ack("pp"));
    w.record(COURT, "2026-03-02 09:00", accept("pp"));
    let acceptance = Some((Decision, CourtAcceptance, "2026-03-06 24:00"));
    check(&w, "pp", acceptance, "2026-03-07 00:01", true);
    w.record(
        COURT,
        "2026-03-03 09:00",
        Kind::CaseDocketed(CaseDocketed {
            court_case_number: "(2026)Zhe02XingChu1".into(),
            procedure: Procedure::Criminal as i32,
            presiding_judge: String::new(),
        }),
    );
    check(&w, "pp", None, "2026-03-07 00:01", false);
}

#[test]
fn after_non_prosecution_the_case_cannot_be_sent_to_court() {
    let mut w = transferred();
    w.record(PROC, "2026-02-20 09:00", non_prosecution("pt1"));
    check(&w, "pt1", None, "2026-03-01 00:01", false);
    let before = w.state.clone();
    let refused = w
        .record_at(
            PROC,
            "2026-02-21 09:00",
            "2026-02-21 09:00",
            handoff("pp", HandoffKind::PublicProsecution, Agency::Court),
        )
        .expect_err("a non-prosecuted case does not go to court");
    assert_eq!(
        refused.kind(),
        casebus_domain::RejectionKind::Precondition,
        "{refused}"
    );
    assert_eq!(refused.reason_code(), "prosecution_decision_is_indictment");
    assert!(refused.to_string().contains("pt1"), "{refused}");
    assert!(refused.to_string().contains("non-prosecution"), "{refused}");
    assert_eq!(w.state, before, "the refusal changed nothing");
}

#[test]
fn a_return_for_supplementary_investigation_answers_the_review_and_the_next_transfer_restarts_it() {
    let mut w = transferred();
    w.record(
        PROC,
        "2026-02-10 09:00",
        handoff(
            "si1",
            HandoffKind::SupplementaryInvestigation,
            Agency::PublicSecurity,
        ),
    );
    let answer = w.state.clocks["pt1"]
        .decision
        .expect("the return answers the review");
    assert_eq!(
        answer.by,
        ClockAnswerKind::ReturnedForSupplementaryInvestigation
    );
    check(&w, "pt1", None, "2026-03-01 00:01", false);
    // While the case is back with the police it cannot go to court.
    let refused = w
        .record_at(
            PROC,
            "2026-02-11 09:00",
            "2026-02-11 09:00",
            handoff("pp", HandoffKind::PublicProsecution, Agency::Court),
        )
        .expect_err("returned, not indicted");
    assert_eq!(refused.reason_code(), "prosecution_decision_is_indictment");
    w.record(POLICE, "2026-02-10 10:00", accept("si1"));
    // One month from 10 February ends on 10 March.
    let supplementary = Some((Decision, SupplementaryInvestigation, "2026-03-10 24:00"));
    check(&w, "si1", supplementary, "2026-03-11 00:01", true);
    // The police transfer the case again on Friday 6 March: that answers the return and
    // starts a full review period again (one month: Monday 6 April is Qingming, so
    // Tuesday 7 April).
    w.record(
        POLICE,
        "2026-03-06 10:00",
        handoff(
            "pt2",
            HandoffKind::ProsecutionTransfer,
            Agency::Procuratorate,
        ),
    );
    check(&w, "si1", None, "2026-03-11 00:01", false);
    w.record(PROC, "2026-03-06 10:05", ack("pt2"));
    check(
        &w,
        "pt2",
        Some((Decision, ProsecutionReview, "2026-04-07 24:00")),
        "2026-04-07 12:00",
        false,
    );
}

#[test]
fn a_judgment_notice_is_answered_by_taking_it() {
    let mut w = World::new();
    w.record(COURT, "2026-03-02 09:00", opened());
    w.record(
        COURT,
        "2026-03-02 09:30",
        Kind::CaseDocketed(CaseDocketed {
            court_case_number: "(2026)Zhe02MinChu1".into(),
            procedure: Procedure::Civil as i32,
            presiding_judge: String::new(),
        }),
    );
    w.record(
        COURT,
        "2026-03-03 09:00",
        Kind::HearingScheduled(HearingScheduled {
            hearing_id: "hr1".into(),
            scheduled_for: Some(casebus_proto::timestamp_from(cst("2026-03-04 09:00"))),
            location: String::new(),
        }),
    );
    w.record(
        COURT,
        "2026-03-04 09:00",
        Kind::HearingHeld(HearingHeld {
            hearing_id: "hr1".into(),
            summary: String::new(),
        }),
    );
    w.record(
        COURT,
        "2026-03-05 09:00",
        Kind::JudgmentIssued(JudgmentIssued {
            judgment_number: "J1".into(),
            outcome: "infringing".into(),
            summary: String::new(),
        }),
    );
    w.record(
        COURT,
        "2026-03-05 10:00",
        handoff("jn", HandoffKind::JudgmentNotice, Agency::Customs),
    );
    w.record(CUSTOMS, "2026-03-05 10:01", ack("jn"));
    // Ten days from Thursday 5 March end on Sunday 15 March, which rolls to Monday.
    let service = Some((Decision, JudgmentService, "2026-03-16 24:00"));
    check(&w, "jn", service, "2026-03-17 00:01", true);
    w.record(CUSTOMS, "2026-03-06 09:00", accept("jn"));
    check(&w, "jn", None, "2026-03-17 00:01", false);
}

fn extend(handoff_id: &str, clock: &str, approver: &str, new_due_at: Option<&str>) -> Kind {
    Kind::ClockExtended(ClockExtended {
        handoff_id: handoff_id.into(),
        clock: clock.into(),
        basis: "major, difficult or complex case".into(),
        approving_office_id: approver.into(),
        new_due_at: new_due_at.map(|t| casebus_proto::timestamp_from(cst(t))),
        subject_id: String::new(),
    })
}

/// ClockExtended of the `clock` that runs on suspect `party_id`, approved by `approver`.
fn extend_suspect(party_id: &str, clock: &str, approver: &str) -> Kind {
    Kind::ClockExtended(ClockExtended {
        subject_id: party_id.into(),
        clock: clock.into(),
        basis: "roving crime across several provinces".into(),
        approving_office_id: approver.into(),
        ..Default::default()
    })
}

fn suspend(handoff_id: &str, clock: &str) -> Kind {
    Kind::ClockSuspended(ClockSuspended {
        handoff_id: handoff_id.into(),
        clock: clock.into(),
        reason: "expert assessment (CPL Art. 149)".into(),
    })
}

fn resume(handoff_id: &str, clock: &str) -> Kind {
    Kind::ClockResumed(ClockResumed {
        handoff_id: handoff_id.into(),
        clock: clock.into(),
        reason: "assessment delivered".into(),
    })
}

/// Records `payload` by `who` at `at` and expects it refused with `rule` (a
/// FAILED_PRECONDITION) or, for `rule` = `"invalid"` / `"not_permitted"`, that kind; the
/// refusal must change nothing and name `mentions`.
fn refused(w: &mut World, who: &str, at: &str, payload: Kind, rule: &str, mentions: &[&str]) {
    let before = w.state.clone();
    let err = w
        .record_at(who, at, at, payload.clone())
        .expect_err(&format!("{payload:?} by {who} at {at} is refused"));
    assert_eq!(err.reason_code(), rule, "{err}");
    for m in mentions {
        assert!(err.to_string().contains(m), "{err} names {m}");
    }
    assert_eq!(w.state, before, "the refusal changed nothing");
}

/// The referral of Friday 6 March, acknowledged and accepted: its filing clock runs to
/// Monday 9 March, 24:00.
fn accepted_referral() -> World {
    let mut w = referred();
    w.record(POLICE, "2026-03-06 10:21", ack("ref"));
    w.record(POLICE, "2026-03-06 11:00", accept("ref"));
    w
}

#[test]
fn a_filing_clock_is_extended_step_by_step_to_its_cap_and_a_third_extension_is_refused() {
    let mut w = accepted_referral();
    check(
        &w,
        "ref",
        Some((Decision, FilingDecision, "2026-03-09 24:00")),
        "2026-03-07 09:00",
        false,
    );
    // 3 days → at the latest 10: seven days more, Monday 16 March.
    w.record(
        POLICE,
        "2026-03-07 09:00",
        extend("ref", "filing_decision", POLICE, None),
    );
    let ten = Some((Decision, FilingDecision, "2026-03-16 24:00"));
    check(&w, "ref", ten, "2026-03-16 23:59", false);
    check(&w, "ref", ten, "2026-03-17 00:01", true);
    let open = w
        .state
        .open_clock("ref", &w.rules, &calendar())
        .expect("runs");
    assert_eq!((open.extensions, open.extensions_allowed), (1, 2));
    // → 30 days: 20 more end on Sunday 5 April, in the Qingming holiday (4-6 April),
    // so the period ends on Tuesday 7 April.
    w.record(
        POLICE,
        "2026-03-12 09:00",
        extend("ref", "filing_decision", POLICE, None),
    );
    let thirty = Some((Decision, FilingDecision, "2026-04-07 24:00"));
    check(&w, "ref", thirty, "2026-04-07 23:59", false);
    assert_eq!(
        w.state
            .open_clock("ref", &w.rules, &calendar())
            .expect("runs")
            .due_at,
        w.rules
            .clock(FilingDecision)
            .cap(cst("2026-03-06 10:20"), &calendar()),
        "two extensions reach the cap"
    );
    refused(
        &mut w,
        POLICE,
        "2026-03-20 09:00",
        extend("ref", "filing_decision", POLICE, None),
        "clock_extension_cap",
        &["ref", "2 of 2", "2026-04-07T16:00:00Z"],
    );
    // The extension recorded the due time it gave.
    let Kind::ClockExtended(last) = &w.log.last().expect("recorded").payload else {
        panic!("the last event is the second extension")
    };
    assert_eq!(
        last.new_due_at
            .as_ref()
            .and_then(casebus_proto::datetime_from),
        Some(cst("2026-04-07 24:00"))
    );
}

#[test]
fn an_extension_past_its_step_is_refused_and_a_shorter_one_is_kept() {
    let mut w = accepted_referral();
    refused(
        &mut w,
        POLICE,
        "2026-03-07 09:00",
        extend("ref", "filing_decision", POLICE, Some("2026-03-20 24:00")),
        "clock_extension_cap",
        &["2026-03-16T16:00:00Z", "+7 days"],
    );
    refused(
        &mut w,
        POLICE,
        "2026-03-07 09:00",
        extend("ref", "filing_decision", POLICE, Some("2026-03-09 12:00")),
        "invalid",
        &["clock_extended.new_due_at"],
    );
    w.record(
        POLICE,
        "2026-03-07 09:00",
        extend("ref", "filing_decision", POLICE, Some("2026-03-12 24:00")),
    );
    check(
        &w,
        "ref",
        Some((Decision, FilingDecision, "2026-03-12 24:00")),
        "2026-03-13 00:01",
        true,
    );
}

#[test]
fn only_the_agency_a_running_decision_clock_runs_for_extends_it_before_it_runs_out() {
    let mut w = referred();
    // Customs sent the referral; the filing clock runs for the police alone.
    refused(
        &mut w,
        CUSTOMS,
        "2026-03-06 10:30",
        extend("ref", "filing_decision", CUSTOMS, None),
        "not_permitted",
        &["public_security"],
    );
    w.record(POLICE, "2026-03-06 10:21", ack("ref"));
    w.record(POLICE, "2026-03-06 11:00", accept("ref"));
    refused(
        &mut w,
        POLICE,
        "2026-03-07 09:00",
        extend("ref", "prosecution_review", POLICE, None),
        "clock_running",
        &["filing_decision", "prosecution_review"],
    );
    refused(
        &mut w,
        POLICE,
        "2026-03-07 09:00",
        extend("ref", "filing_decision", PROC, None),
        "invalid",
        &["clock_extended.approving_office_id", PROC],
    );
    refused(
        &mut w,
        POLICE,
        "2026-03-07 09:00",
        extend("ref", "fileing_decision", POLICE, None),
        "invalid",
        &["clock_extended.clock", "filing_decision"],
    );
    // Past its due time the period cannot be extended any more.
    refused(
        &mut w,
        POLICE,
        "2026-03-10 09:00",
        extend("ref", "filing_decision", POLICE, None),
        "clock_not_overdue",
        &["2026-03-09T16:00:00Z"],
    );
    // Once answered, no clock runs to extend.
    w.record(POLICE, "2026-03-09 09:00", file_investigation());
    refused(
        &mut w,
        POLICE,
        "2026-03-09 10:00",
        extend("ref", "filing_decision", POLICE, None),
        "clock_running",
        &["answered"],
    );
}

#[test]
fn a_prosecution_review_is_extended_once_by_15_days() {
    let mut w = transferred();
    w.record(
        PROC,
        "2026-02-20 09:00",
        extend("pt1", "prosecution_review", PROC, None),
    );
    // 28 February + 15 days is Sunday 15 March: Monday 16 March.
    check(
        &w,
        "pt1",
        Some((Decision, ProsecutionReview, "2026-03-16 24:00")),
        "2026-03-17 00:01",
        true,
    );
    refused(
        &mut w,
        PROC,
        "2026-03-01 09:00",
        extend("pt1", "prosecution_review", PROC, None),
        "clock_extension_cap",
        &["1 of 1"],
    );
}

#[test]
fn a_suspended_clock_is_never_overdue_and_its_due_time_moves_by_the_days_it_stood_still() {
    let mut w = accepted_referral();
    refused(
        &mut w,
        POLICE,
        "2026-03-08 10:00",
        resume("ref", "filing_decision"),
        "clock_suspended",
        &["not suspended"],
    );
    w.record(
        POLICE,
        "2026-03-08 10:00",
        suspend("ref", "filing_decision"),
    );
    // While suspended: the due time as of the suspension, never overdue.
    check(
        &w,
        "ref",
        Some((Decision, FilingDecision, "2026-03-09 24:00")),
        "2026-03-12 09:00",
        false,
    );
    let open = w
        .state
        .open_clock("ref", &w.rules, &calendar())
        .expect("runs");
    assert_eq!(open.suspended_since, Some(cst("2026-03-08 10:00")));
    refused(
        &mut w,
        POLICE,
        "2026-03-09 10:00",
        suspend("ref", "filing_decision"),
        "clock_not_suspended",
        &["suspended already"],
    );
    refused(
        &mut w,
        POLICE,
        "2026-03-09 10:00",
        extend("ref", "filing_decision", POLICE, None),
        "clock_not_suspended",
        &["resume it"],
    );
    // Suspended on 8 March, resumed on 11 March: three days later, Thursday 12 March.
    w.record(POLICE, "2026-03-11 15:00", resume("ref", "filing_decision"));
    let moved = Some((Decision, FilingDecision, "2026-03-12 24:00"));
    check(&w, "ref", moved, "2026-03-12 23:59", false);
    check(&w, "ref", moved, "2026-03-13 00:01", true);
    // A period that ran out cannot be stopped after the fact.
    refused(
        &mut w,
        POLICE,
        "2026-03-13 09:00",
        suspend("ref", "filing_decision"),
        "clock_not_overdue",
        &["2026-03-12T16:00:00Z"],
    );
}

#[test]
fn an_extension_after_a_suspension_counts_from_the_moved_due_time() {
    let mut w = accepted_referral();
    w.record(
        POLICE,
        "2026-03-08 10:00",
        suspend("ref", "filing_decision"),
    );
    w.record(POLICE, "2026-03-10 10:00", resume("ref", "filing_decision"));
    // Due Wednesday 11 March; +7 days: Wednesday 18 March.
    w.record(
        POLICE,
        "2026-03-11 10:00",
        extend("ref", "filing_decision", POLICE, None),
    );
    check(
        &w,
        "ref",
        Some((Decision, FilingDecision, "2026-03-18 24:00")),
        "2026-03-18 12:00",
        false,
    );
    // A suspension after the extension moves the extended due time on: 1 day.
    w.record(
        POLICE,
        "2026-03-12 10:00",
        suspend("ref", "filing_decision"),
    );
    w.record(POLICE, "2026-03-13 09:00", resume("ref", "filing_decision"));
    check(
        &w,
        "ref",
        Some((Decision, FilingDecision, "2026-03-19 24:00")),
        "2026-03-20 00:01",
        true,
    );
}

/// Returns the case in review for supplementary investigation by `si` at `at`, and the
/// police take it.
fn returned(w: &mut World, si: &str, at: &str) {
    w.record(
        PROC,
        at,
        handoff(
            si,
            HandoffKind::SupplementaryInvestigation,
            Agency::PublicSecurity,
        ),
    );
    w.record(POLICE, at, accept(si));
}

/// The police transfer the case again by `pt` at `at`, and the procuratorate takes it.
fn transferred_again(w: &mut World, pt: &str, at: &str) {
    w.record(
        POLICE,
        at,
        handoff(pt, HandoffKind::ProsecutionTransfer, Agency::Procuratorate),
    );
    w.record(PROC, at, accept(pt));
}

#[test]
fn a_third_return_for_supplementary_investigation_is_refused_and_each_return_restarts_the_review() {
    let mut w = transferred();
    returned(&mut w, "si1", "2026-02-10 09:00");
    transferred_again(&mut w, "pt2", "2026-03-02 10:00");
    // The review restarts its full month from the case's return: 2 April.
    check(
        &w,
        "pt2",
        Some((Decision, ProsecutionReview, "2026-04-02 24:00")),
        "2026-04-02 12:00",
        false,
    );
    returned(&mut w, "si2", "2026-03-20 09:00");
    check(&w, "pt2", None, "2026-04-03 00:01", false);
    transferred_again(&mut w, "pt3", "2026-04-10 10:00");
    // From Friday 10 April, 1 month: Sunday 10 May, a rest day, so Monday 11 May.
    check(
        &w,
        "pt3",
        Some((Decision, ProsecutionReview, "2026-05-11 24:00")),
        "2026-05-12 00:01",
        true,
    );
    refused(
        &mut w,
        PROC,
        "2026-04-20 09:00",
        handoff(
            "si3",
            HandoffKind::SupplementaryInvestigation,
            Agency::PublicSecurity,
        ),
        "supplementary_investigation_at_most_twice",
        &["CPL Art. 175", "si1", "si2"],
    );
    // The review of the last transfer still runs and is decided on the merits.
    w.record(PROC, "2026-04-21 09:00", indictment("pt3"));
    check(&w, "pt3", None, "2026-05-12 00:01", false);
}

fn any_step() -> impl Strategy<Value = (usize, Kind)> {
    let ids = prop_oneof![Just("x1"), Just("x2"), Just("x3")];
    let clocks = prop_oneof![
        Just("filing_decision"),
        Just("prosecution_review"),
        Just("supplementary_investigation"),
        Just("receipt"),
    ];
    let approvers = prop_oneof![Just(POLICE), Just(PROC)];
    let kinds = prop_oneof![
        Just((HandoffKind::SuspectedCrimeReferral, Agency::PublicSecurity)),
        Just((HandoffKind::AssistanceRequest, Agency::IpCenter)),
        Just((HandoffKind::AssistanceRequest, Agency::Court)),
        Just((HandoffKind::ArrestApprovalRequest, Agency::Procuratorate)),
        Just((HandoffKind::ProsecutionTransfer, Agency::Procuratorate)),
        Just((
            HandoffKind::SupplementaryInvestigation,
            Agency::PublicSecurity
        )),
        Just((HandoffKind::PublicProsecution, Agency::Court)),
        Just((HandoffKind::ReconsiderationRequest, Agency::PublicSecurity)),
        Just((
            HandoffKind::NonFilingExplanationRequest,
            Agency::PublicSecurity
        )),
        Just((HandoffKind::FilingNotice, Agency::PublicSecurity)),
        Just((HandoffKind::CourtAssistanceNotice, Agency::Customs)),
    ];
    let payload = prop_oneof![
        (ids.clone(), kinds).prop_map(|(id, (k, a))| handoff(id, k, a)),
        ids.clone().prop_map(ack),
        ids.clone().prop_map(accept),
        ids.clone()
            .prop_map(|id| Kind::HandoffDeclined(HandoffDeclined {
                handoff_id: id.into(),
                reason: "no".into()
            })),
        Just(file_investigation()),
        Just(decline_filing()),
        ids.clone().prop_map(explain),
        Just(concluded()),
        ids.clone().prop_map(indictment),
        ids.clone().prop_map(non_prosecution),
        ids.clone().prop_map(|id| Kind::ArrestDenied(ArrestDenied {
            handoff_id: id.into(),
            party_id: "s1".into(),
            reason: "no grounds".into()
        })),
        (ids.clone(), prop_oneof![Just(true), Just(false)]).prop_map(|(id, named)| {
            Kind::InfringementAssessed(InfringementAssessed {
                assessment_id: format!("as-{id}-{named}"),
                infringing: true,
                opinion: "o".into(),
                handoff_id: if named { id.into() } else { String::new() },
            })
        }),
        Just(Kind::SuspectDetained(SuspectDetained {
            party_id: "s1".into(),
            measure: "criminal detention".into(),
            ..Default::default()
        })),
        ids.clone()
            .prop_map(|id| Kind::ArrestApproved(ArrestApproved {
                handoff_id: id.into(),
                party_id: "s1".into(),
                ..Default::default()
            })),
        (
            prop_oneof![Just("arrest_request"), Just("custody")],
            prop_oneof![Just(POLICE), Just(PROC)]
        )
            .prop_map(|(c, a)| extend_suspect("s1", c, a)),
        prop_oneof![Just(true), Just(false)].prop_map(|on| detained("d1", on)),
        Just(notified("d1")),
        Just(applied("d1")),
        prop_oneof![
            Just(DeterminationOutcome::Infringing),
            Just(DeterminationOutcome::Undetermined)
        ]
        .prop_map(|o| determined("d1", o)),
        Just(Kind::DetentionReleased(DetentionReleased {
            detention_id: "d1".into(),
            reason: "r".into()
        })),
        Just(Kind::CaseDocketed(CaseDocketed {
            court_case_number: "c".into(),
            procedure: Procedure::Criminal as i32,
            presiding_judge: String::new()
        })),
        (ids.clone(), clocks.clone(), approvers).prop_map(|(id, c, a)| extend(id, c, a, None)),
        (ids.clone(), clocks.clone()).prop_map(|(id, c)| suspend(id, c)),
        (ids.clone(), clocks).prop_map(|(id, c)| resume(id, c)),
    ];
    (0usize..5, payload)
}

const OFFICES: [&str; 5] = [CUSTOMS, IPC, POLICE, PROC, COURT];

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Replaying the recorded events gives the same clocks, at once or in two parts, and
    /// every running clock is due after it started.
    #[test]
    fn replaying_the_events_gives_the_same_clocks(
        steps in proptest::collection::vec((any_step(), 0i64..72), 1..50)
    ) {
        let mut w = World::new();
        w.record(CUSTOMS, "2026-03-02 09:00", opened());
        w.record(CUSTOMS, "2026-03-02 09:00", rights_holder_added());
        let mut at = cst("2026-03-02 09:00");
        let format = time::macros::format_description!("[year]-[month]-[day] [hour]:[minute]");
        for ((who, payload), hours) in steps {
            at += time::Duration::hours(hours);
            let text = at.to_offset(offset!(+8)).format(format).expect("formats");
            let _ = w.record_at(OFFICES[who], &text, &text, payload);
        }
        let calendar = calendar();
        let replayed = CaseState::fold(w.log.iter().map(Stored::view));
        prop_assert_eq!(&replayed.clocks, &w.state.clocks);
        prop_assert_eq!(
            replayed.open_clocks(&w.rules, &calendar),
            w.state.open_clocks(&w.rules, &calendar)
        );
        let cut = w.log.len() / 2;
        let mut halves = CaseState::fold(w.log[..cut].iter().map(Stored::view));
        for stored in &w.log[cut..] {
            halves.apply(&stored.view());
        }
        prop_assert_eq!(&halves, &w.state);
        // Folding only the events that move clocks, each twice (a replay), gives the
        // same clocks as the whole fold (the agency inbox folds that way).
        let mut clocks_only = CaseState::default();
        for stored in w.log.iter().filter(|s| CaseState::moves_clocks(&s.payload)) {
            clocks_only.apply_clocks(&stored.view());
            clocks_only.apply_clocks(&stored.view());
        }
        prop_assert_eq!(&clocks_only.clocks, &w.state.clocks);
        prop_assert_eq!(&clocks_only.case_clocks, &w.state.case_clocks);
        prop_assert_eq!(&clocks_only.prosecution_decision, &w.state.prosecution_decision);
        for open in w.state.open_clocks(&w.rules, &calendar) {
            if let Ok(due) = &open.due_at {
                prop_assert!(*due > open.started_at, "{:?}", open);
            }
        }
        for open in w.state.open_case_clocks(&w.rules, &calendar) {
            if let Ok(due) = &open.due_at {
                prop_assert!(*due > open.started_at, "{:?}", open);
            }
        }
    }

    /// However clocks are extended, suspended and resumed, no extension takes a clock
    /// past its cap: the rule's every extension counted from the start moved by the
    /// days it stood still (summed here from the recorded events themselves).
    #[test]
    fn an_extension_never_goes_past_its_cap(
        steps in proptest::collection::vec((any_step(), 0i64..72), 1..60)
    ) {
        let mut w = accepted_referral();
        let mut at = cst("2026-03-06 11:00");
        let format = time::macros::format_description!("[year]-[month]-[day] [hour]:[minute]");
        let clock_steps = [
            extend("ref", "filing_decision", POLICE, None),
            suspend("ref", "filing_decision"),
            resume("ref", "filing_decision"),
        ];
        for ((who, payload), hours) in steps {
            at += time::Duration::minutes(hours * 20);
            let text = at.to_offset(offset!(+8)).format(format).expect("formats");
            // Mostly steps on the referral's clock, sometimes anything else.
            let payload = match hours % 4 {
                0 => payload,
                n => clock_steps[usize::try_from(n - 1).expect("1..=3")].clone(),
            };
            let who = if hours % 4 == 0 { OFFICES[who] } else { POLICE };
            let _ = w.record_at(who, &text, &text, payload);
        }
        let mut stood_still = 0i64;
        let mut since = None;
        for stored in &w.log {
            match &stored.payload {
                Kind::ClockSuspended(p) if p.handoff_id == "ref" => since = Some(stored.occurred_at),
                Kind::ClockResumed(p) if p.handoff_id == "ref" => {
                    let from = since.take().expect("a resumption follows a suspension");
                    let day = |t: OffsetDateTime| t.to_offset(offset!(+8)).date();
                    stood_still += (day(stored.occurred_at) - day(from)).whole_days();
                }
                _ => {}
            }
        }
        if let Some(open) = w.state.open_clock("ref", &w.rules, &calendar()) {
            let rule = w.rules.clock(FilingDecision);
            let cap = rule
                .cap(open.started_at + time::Duration::days(stood_still), &calendar())
                .expect("countable in 2026");
            let due = open.due_at.clone().expect("countable in 2026");
            prop_assert!(due <= cap, "due {due} past the cap {cap}");
            prop_assert!(open.extensions <= open.extensions_allowed);
        }
    }
}

// One authority for due times: the recording service records each clock's due time in
// the HandoffRequested event; readers prefer it, an auditor recomputes it.

/// Five days to decide on a referral instead of three.
fn other_rules() -> DeadlineRules {
    DeadlineRules::parse(
        "[clocks.filing_decision]\namount = 5\nunit = \"days\"\nbasis = \"a local rule\"\n",
    )
    .expect("valid rules")
}

fn recorded_dues_of(world: &World, version: u64) -> Vec<RecordedDue> {
    let payload = &world.log[usize::try_from(version - 1).expect("small")].payload;
    match casebus_domain::recorded_in(payload) {
        Some((_, _, _, dues)) => dues.to_vec(),
        None => panic!("version {version} is {payload:?}"),
    }
}

#[test]
fn a_hand_off_records_the_due_time_of_each_clock_it_starts_with_the_rules_digest() {
    let w = referred();
    let digest = w.rules.digest(&calendar());
    let dues = recorded_dues_of(&w, 2);
    let got: Vec<(&str, Option<OffsetDateTime>, &str)> = dues
        .iter()
        .map(|d| {
            (
                d.clock.as_str(),
                d.due_at.as_ref().and_then(casebus_proto::datetime_from),
                d.rules_digest.as_str(),
            )
        })
        .collect();
    assert_eq!(
        got,
        [
            ("receipt", Some(cst("2026-03-07 11:00")), digest.as_str()),
            (
                "filing_decision",
                Some(cst("2026-03-09 24:00")),
                digest.as_str()
            ),
        ]
    );
    let open = w
        .state
        .open_clock("ref", &w.rules, &calendar())
        .expect("runs");
    assert_eq!(open.rules_digest.as_deref(), Some(digest.as_str()));
}

#[test]
fn a_command_with_recorded_dues_is_refused_naming_the_field() {
    let mut w = World::new();
    w.record(CUSTOMS, "2026-03-06 09:00", opened());
    let mut payload = handoff(
        "ref",
        HandoffKind::SuspectedCrimeReferral,
        Agency::PublicSecurity,
    );
    if let Kind::HandoffRequested(p) = &mut payload {
        p.recorded_dues = vec![RecordedDue {
            clock: "filing_decision".into(),
            due_at: Some(casebus_proto::timestamp_from(cst("2026-04-30 24:00"))),
            rules_digest: "sha256:mine".into(),
        }];
    }
    let err = w
        .record_at(CUSTOMS, "2026-03-06 10:20", "2026-03-06 10:20", payload)
        .expect_err("recorded dues are the recording service's");
    match err {
        Rejection::Invalid { field, .. } => assert_eq!(field, "handoff_requested.recorded_dues"),
        other => panic!("expected INVALID_ARGUMENT, got {other:?}"),
    }
    assert_eq!(w.state.version, 1, "nothing recorded");
}

#[test]
fn readers_with_other_rules_show_the_recorded_due_until_an_extension_or_suspension() {
    let mut w = accepted_referral();
    // The police's reader counts filing decisions in 5 days; the referral recorded 3.
    let theirs = other_rules();
    let open = w
        .state
        .open_clock("ref", &theirs, &calendar())
        .expect("runs");
    assert_eq!(open.due_at, Ok(cst("2026-03-09 24:00")), "the recorded due");
    // Without the recorded dues (an event from before they were recorded) the reader
    // counts with its own rules, as before.
    let mut old = CaseState::default();
    for stored in &w.log {
        let mut payload = stored.payload.clone();
        if let Kind::HandoffRequested(p) = &mut payload {
            p.recorded_dues.clear();
        }
        old.apply(&RecordedEvent {
            payload: Some(&payload),
            ..stored.view()
        });
    }
    let counted = old.open_clock("ref", &theirs, &calendar()).expect("runs");
    assert_eq!(counted.due_at, Ok(cst("2026-03-11 24:00")));
    assert_eq!(counted.rules_digest, None);
    // An extension changes the clock: from then on it is counted (and capped by the
    // extension's own recorded new due time, 16 March).
    w.record(
        POLICE,
        "2026-03-07 09:00",
        extend("ref", "filing_decision", POLICE, None),
    );
    let extended = w
        .state
        .open_clock("ref", &w.rules, &calendar())
        .expect("runs");
    assert_eq!(extended.due_at, Ok(cst("2026-03-16 24:00")));
}

#[test]
fn check_recorded_dues_names_each_tampered_due_and_each_other_digest() {
    let mut w = accepted_referral();
    let rules = w.rules.clone();
    assert_eq!(
        check_recorded_dues(w.log.iter().map(Stored::view), &rules, &calendar()),
        [],
        "untampered dues recompute under the same rules"
    );
    // Checked with other rules, every due names another digest (and is not compared).
    let theirs = other_rules();
    let other = check_recorded_dues(w.log.iter().map(Stored::view), &theirs, &calendar());
    let digest = rules.digest(&calendar());
    let expected = theirs.digest(&calendar());
    assert_eq!(
        other
            .iter()
            .map(|m| (m.version, m.clock.as_str(), m.problem.clone()))
            .collect::<Vec<_>>(),
        ["receipt", "filing_decision"].map(|clock| (
            2,
            clock,
            DueProblem::RulesDigest {
                recorded: digest.clone(),
                expected: expected.clone()
            }
        )),
    );
    // A tampered due (one day later) under the right rules: only that one.
    if let Kind::HandoffRequested(p) = &mut w.log[1].payload {
        p.recorded_dues[1].due_at = Some(casebus_proto::timestamp_from(cst("2026-03-10 24:00")));
    }
    let tampered = check_recorded_dues(w.log.iter().map(Stored::view), &rules, &calendar());
    assert_eq!(tampered.len(), 1, "{tampered:?}");
    let m = &tampered[0];
    assert_eq!(
        (m.version, m.subject.as_str(), m.clock.as_str()),
        (2, "ref", "filing_decision")
    );
    assert_eq!(
        m.problem,
        DueProblem::DueTime {
            recorded: Some(cst("2026-03-10 24:00")),
            recomputed: Ok(cst("2026-03-09 24:00")),
        }
    );
    let text = m.to_string();
    assert!(
        text.contains("version 2")
            && text.contains("2026-03-10T16:00:00Z")
            && text.contains("2026-03-09T16:00:00Z"),
        "{text}"
    );
    // A clock dropped, or one the hand-off does not start, is named too.
    if let Kind::HandoffRequested(p) = &mut w.log[1].payload {
        p.recorded_dues[1].clock = "custody".into();
    }
    let problems: Vec<(String, DueProblem)> =
        check_recorded_dues(w.log.iter().map(Stored::view), &rules, &calendar())
            .into_iter()
            .map(|m| (m.clock, m.problem))
            .collect();
    assert_eq!(
        problems,
        [
            ("custody".to_owned(), DueProblem::UnexpectedClock),
            ("filing_decision".to_owned(), DueProblem::MissingClock),
        ]
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    /// Whatever the history, every recorded due recomputes under the rules it was
    /// recorded with, replaying gives the same clocks, and a reader with other rules
    /// shows the recorded due of every clock no extension or suspension changed.
    #[test]
    fn recorded_dues_recompute_under_the_same_rules(
        steps in proptest::collection::vec((any_step(), 0i64..72), 1..40)
    ) {
        let mut w = World::new();
        w.record(CUSTOMS, "2026-03-02 09:00", opened());
        w.record(CUSTOMS, "2026-03-02 09:00", rights_holder_added());
        let mut at = cst("2026-03-02 09:00");
        let format = time::macros::format_description!("[year]-[month]-[day] [hour]:[minute]");
        for ((who, payload), hours) in steps {
            at += time::Duration::hours(hours);
            let text = at.to_offset(offset!(+8)).format(format).expect("formats");
            let _ = w.record_at(OFFICES[who], &text, &text, payload);
        }
        let calendar = calendar();
        prop_assert_eq!(
            check_recorded_dues(w.log.iter().map(Stored::view), &w.rules, &calendar),
            vec![]
        );
        let replayed = CaseState::fold(w.log.iter().map(Stored::view));
        prop_assert_eq!(&replayed.clocks, &w.state.clocks);
        let theirs = other_rules();
        let mine = w.state.open_clocks(&w.rules, &calendar);
        let shown = w.state.open_clocks(&theirs, &calendar);
        for (m, s) in mine.iter().zip(&shown) {
            let c = &w.state.clocks[&m.handoff_id];
            let unchanged = m.clock == HandoffClockKind::Receipt
                || (c.adjust.extensions.is_empty() && c.adjust.suspensions.is_empty());
            if unchanged {
                prop_assert_eq!(&m.due_at, &s.due_at, "{:?}", m);
            }
        }
    }
}

fn decline_filing() -> Kind {
    Kind::InvestigationDeclined(InvestigationDeclined {
        reason: "amount below the threshold".into(),
    })
}

fn explain(handoff_id: &str) -> Kind {
    Kind::NonFilingExplained(NonFilingExplained {
        handoff_id: handoff_id.into(),
        explanation: "the sales proven stay below the threshold".into(),
    })
}

/// The accepted referral of Friday 6 March, declined on Monday 9 March at 16:00; customs
/// then asks the procuratorate to supervise the filing (Order 310 Art. 9), an
/// assistance request the procuratorate takes, which makes it a participant.
fn declined() -> World {
    let mut w = accepted_referral();
    w.record(POLICE, "2026-03-09 16:00", decline_filing());
    w.record(
        CUSTOMS,
        "2026-03-09 16:30",
        handoff("sv", HandoffKind::AssistanceRequest, Agency::Procuratorate),
    );
    w.record(PROC, "2026-03-09 17:00", accept("sv"));
    w
}

#[test]
fn the_referring_organ_may_ask_for_reconsideration_within_3_days_and_the_police_decide_again_within_3()
 {
    let mut w = declined();
    // Only the organ whose referral was declined asks (the IP center takes part and may
    // refer, but did not refer this case), and only of a decision not to file.
    w.record(
        CUSTOMS,
        "2026-03-09 18:00",
        handoff("a1", HandoffKind::AssistanceRequest, Agency::IpCenter),
    );
    w.record(IPC, "2026-03-09 18:30", accept("a1"));
    refused(
        &mut w,
        IPC,
        "2026-03-10 09:00",
        handoff(
            "rc",
            HandoffKind::ReconsiderationRequest,
            Agency::PublicSecurity,
        ),
        "not_permitted",
        &["whose referral the police declined"],
    );
    refused(
        &mut w,
        PROC,
        "2026-03-10 09:00",
        handoff(
            "rc",
            HandoffKind::ReconsiderationRequest,
            Agency::PublicSecurity,
        ),
        "not_permitted",
        &["sent by another agency"],
    );
    let mut filed = accepted_referral();
    filed.record(POLICE, "2026-03-09 16:00", file_investigation());
    refused(
        &mut filed,
        CUSTOMS,
        "2026-03-10 09:00",
        handoff(
            "rc",
            HandoffKind::ReconsiderationRequest,
            Agency::PublicSecurity,
        ),
        "investigation_declined",
        &["not to file"],
    );
    // Nothing reopens the decision without a request: a second decline or a filing is
    // refused.
    refused(
        &mut w,
        POLICE,
        "2026-03-10 09:00",
        file_investigation(),
        "investigation_undecided",
        &["reconsideration"],
    );
    refused(
        &mut w,
        POLICE,
        "2026-03-10 09:00",
        decline_filing(),
        "investigation_undecided",
        &["reconsideration"],
    );
    // The window: 3 days from the day after Monday's decision, to Thursday 12 March
    // 24:00 (no rest day at its end).
    let mut late = declined();
    refused(
        &mut late,
        CUSTOMS,
        "2026-03-13 00:01",
        handoff(
            "rc",
            HandoffKind::ReconsiderationRequest,
            Agency::PublicSecurity,
        ),
        "reconsideration_window",
        &["Order 310", "2026-03-12T16:00:00Z"],
    );
    w.record(
        CUSTOMS,
        "2026-03-12 23:59",
        handoff(
            "rc",
            HandoffKind::ReconsiderationRequest,
            Agency::PublicSecurity,
        ),
    );
    // Requested Thursday night: Friday, Saturday, Sunday, rolled over to Monday 16 March.
    w.record(POLICE, "2026-03-13 08:00", ack("rc"));
    let reconsider = Some((Decision, ReconsiderationDecision, "2026-03-16 24:00"));
    check(&w, "rc", reconsider, "2026-03-16 23:59", false);
    check(&w, "rc", reconsider, "2026-03-17 00:01", true);
    // Once per case.
    refused(
        &mut w,
        CUSTOMS,
        "2026-03-13 09:00",
        handoff(
            "rc2",
            HandoffKind::ReconsiderationRequest,
            Agency::PublicSecurity,
        ),
        "reconsideration_once",
        &["rc"],
    );
    // The police decide again, upholding the decision: that answers the request.
    w.record(POLICE, "2026-03-16 10:00", decline_filing());
    check(&w, "rc", None, "2026-03-20 00:00", false);
    let answer = w.state.clocks["rc"].decision.expect("answered");
    assert_eq!(answer.by, ClockAnswerKind::InvestigationDeclined);
    assert_eq!(w.state.investigation_filed, Some(false));

    // Or they file on reconsideration.
    let mut reversed = declined();
    reversed.record(
        CUSTOMS,
        "2026-03-10 09:00",
        handoff(
            "rc",
            HandoffKind::ReconsiderationRequest,
            Agency::PublicSecurity,
        ),
    );
    reversed.record(POLICE, "2026-03-11 09:00", file_investigation());
    check(&reversed, "rc", None, "2026-03-20 00:00", false);
    assert_eq!(reversed.state.investigation_filed, Some(true));
}

#[test]
fn filing_supervision_asks_for_an_explanation_in_7_days_then_notifies_to_file_in_15() {
    let mut w = declined();
    // The notice to file comes after the request for an explanation.
    refused(
        &mut w,
        PROC,
        "2026-03-10 09:00",
        handoff("fn", HandoffKind::FilingNotice, Agency::PublicSecurity),
        "non_filing_explanation_first",
        &["CPL Art. 113"],
    );
    refused(
        &mut w,
        CUSTOMS,
        "2026-03-10 09:00",
        handoff(
            "ex",
            HandoffKind::NonFilingExplanationRequest,
            Agency::PublicSecurity,
        ),
        "not_permitted",
        &[],
    );
    // Tuesday 10 March: 7 days from Wednesday, to Tuesday 17 March 24:00.
    w.record(
        PROC,
        "2026-03-10 09:00",
        handoff(
            "ex",
            HandoffKind::NonFilingExplanationRequest,
            Agency::PublicSecurity,
        ),
    );
    refused(
        &mut w,
        PROC,
        "2026-03-10 09:30",
        handoff(
            "ex2",
            HandoffKind::NonFilingExplanationRequest,
            Agency::PublicSecurity,
        ),
        "filing_supervision_open",
        &["ex"],
    );
    w.record(POLICE, "2026-03-10 10:00", ack("ex"));
    let explain_clock = Some((Decision, NonFilingExplanation, "2026-03-17 24:00"));
    check(&w, "ex", explain_clock, "2026-03-17 23:59", false);
    check(&w, "ex", explain_clock, "2026-03-18 00:01", true);
    // The explanation answers a request the police accepted, naming it.
    refused(
        &mut w,
        POLICE,
        "2026-03-12 09:00",
        explain("ex"),
        "non_filing_explanation_accepted",
        &["accepted"],
    );
    w.record(POLICE, "2026-03-10 11:00", accept("ex"));
    refused(
        &mut w,
        POLICE,
        "2026-03-12 09:00",
        explain("ref"),
        "non_filing_explanation_accepted",
        &["ref"],
    );
    w.record(POLICE, "2026-03-12 09:00", explain("ex"));
    check(&w, "ex", None, "2026-03-20 00:00", false);
    assert_eq!(
        w.state.clocks["ex"].decision.map(|d| d.by),
        Some(ClockAnswerKind::NonFilingExplained)
    );
    refused(
        &mut w,
        POLICE,
        "2026-03-12 10:00",
        explain("ex"),
        "non_filing_explanation_accepted",
        &["answered"],
    );
    // The reasons untenable, the procuratorate notifies the police to file on Friday
    // 13 March: 15 days end on Saturday 28 March, a rest day, so the period rolls over
    // to Monday 30 March.
    w.record(
        PROC,
        "2026-03-13 09:00",
        handoff("fn", HandoffKind::FilingNotice, Agency::PublicSecurity),
    );
    w.record(POLICE, "2026-03-13 09:30", accept("fn"));
    let notice_clock = Some((Decision, FilingOnNotice, "2026-03-30 24:00"));
    check(&w, "fn", notice_clock, "2026-03-30 23:59", false);
    check(&w, "fn", notice_clock, "2026-03-31 00:01", true);
    // Notified, the police may not decline again; they file, which answers the notice.
    refused(
        &mut w,
        POLICE,
        "2026-03-20 09:00",
        decline_filing(),
        "filing_notice_binds",
        &["fn", "CPL Art. 113"],
    );
    w.record(POLICE, "2026-03-20 09:00", file_investigation());
    check(&w, "fn", None, "2026-04-01 00:00", false);
    assert_eq!(w.state.investigation_filed, Some(true));
    // Filed: no more supervision.
    refused(
        &mut w,
        PROC,
        "2026-03-21 09:00",
        handoff(
            "ex3",
            HandoffKind::NonFilingExplanationRequest,
            Agency::PublicSecurity,
        ),
        "investigation_declined",
        &["filed"],
    );
}

#[test]
fn a_filing_answers_an_open_request_for_an_explanation_and_the_kinds_record_their_decision_due() {
    let mut w = declined();
    w.record(
        PROC,
        "2026-03-10 09:00",
        handoff(
            "ex",
            HandoffKind::NonFilingExplanationRequest,
            Agency::PublicSecurity,
        ),
    );
    // The flat due_at of these kinds is their decision clock's recorded due.
    let dues = recorded_dues_of(&w, w.state.version);
    let Kind::HandoffRequested(p) = &w.log.last().expect("recorded").payload else {
        panic!("a hand-off");
    };
    assert_eq!(
        dues.iter().map(|d| d.clock.as_str()).collect::<Vec<_>>(),
        ["receipt", "non_filing_explanation"]
    );
    assert_eq!(p.due_at, dues[1].due_at);
    assert_eq!(
        p.due_at.as_ref().and_then(casebus_proto::datetime_from),
        Some(cst("2026-03-17 24:00"))
    );
    assert!(check_recorded_dues(w.log.iter().map(Stored::view), &w.rules, &calendar()).is_empty());
    w.record(POLICE, "2026-03-11 09:00", file_investigation());
    check(&w, "ex", None, "2026-04-01 00:00", false);
    assert_eq!(
        w.state.clocks["ex"].decision.map(|d| d.by),
        Some(ClockAnswerKind::InvestigationFiled)
    );
}

// The customs clocks (Regulations on Customs Protection of IP Rights; docs/DEADLINES.md):
// they run on a detention, not on a hand-off.

/// What a detention's clock `rule` should be: its due time in CST, or `None` when it
/// does not run; and whether it is overdue at `now`.
fn check_detention(
    w: &World,
    rule: ClockName,
    detention: &str,
    due: Option<&str>,
    now: &str,
    overdue: bool,
) {
    let open = w.state.open_case_clocks(&w.rules, &calendar());
    let clock = open
        .iter()
        .find(|c| c.rule == rule && c.subject == detention);
    let got = clock.map(|c| c.due_at.clone().expect("the due time is countable"));
    assert_eq!(got, due.map(cst), "{rule:?} on {detention}");
    if let Some(c) = clock {
        assert_eq!(
            c.basis,
            w.rules.clock(rule).basis,
            "the basis is the rule's"
        );
        assert_eq!(c.agency, Agency::Customs, "customs answers it");
        assert_eq!(
            c.is_overdue(cst(now)),
            overdue,
            "{rule:?} on {detention} at {now}"
        );
    }
}

fn detained(id: &str, on_application: bool) -> Kind {
    Kind::GoodsDetained(GoodsDetained {
        detention_id: id.into(),
        description: "earphones".into(),
        on_rights_holder_application: on_application,
        ..Default::default()
    })
}

fn notified(id: &str) -> Kind {
    Kind::RightsHolderNotified(RightsHolderNotified {
        detention_id: id.into(),
        rights_holder_party_id: "rh".into(),
        ..Default::default()
    })
}

fn applied(id: &str) -> Kind {
    Kind::RightsHolderApplied(RightsHolderApplied {
        detention_id: id.into(),
        rights_holder_party_id: "rh".into(),
        bond_fen: 10_000_000,
        ..Default::default()
    })
}

fn determined(id: &str, outcome: DeterminationOutcome) -> Kind {
    Kind::InfringementDetermined(InfringementDetermined {
        detention_id: id.into(),
        basis: "compared with the recorded mark".into(),
        outcome: outcome as i32,
        ..Default::default()
    })
}

/// Customs opens a case on Tuesday 29 September 2026 with the rights holder as a party
/// and holds goods `d1` ex officio.
fn held_ex_officio() -> World {
    let mut w = World::new();
    w.record(CUSTOMS, "2026-09-29 09:00", opened());
    w.record(CUSTOMS, "2026-09-29 09:05", rights_holder_added());
    w.record(CUSTOMS, "2026-09-29 10:00", detained("d1", false));
    w
}

#[test]
fn goods_held_ex_officio_wait_3_working_days_for_the_application_across_national_day() {
    let mut w = held_ex_officio();
    // Held, not yet notified: nothing runs, and nothing may be determined.
    check_detention(
        &w,
        RightsHolderApplication,
        "d1",
        None,
        "2026-09-29 11:00",
        false,
    );
    refused(
        &mut w,
        CUSTOMS,
        "2026-09-29 11:00",
        determined("d1", DeterminationOutcome::Infringing),
        "rights_holder_applied",
        &["d1", "Art. 16"],
    );
    refused(
        &mut w,
        CUSTOMS,
        "2026-09-29 11:00",
        applied("d1"),
        "rights_holder_notified",
        &["d1"],
    );
    // Notified on Tuesday afternoon: the 3 working days are Wednesday 30 September,
    // then (1-7 October are the National Day holiday) Thursday 8 and Friday 9 October.
    w.record(CUSTOMS, "2026-09-29 15:00", notified("d1"));
    check_detention(
        &w,
        RightsHolderApplication,
        "d1",
        Some("2026-10-09 24:00"),
        "2026-10-09 23:59",
        false,
    );
    check_detention(
        &w,
        RightsHolderApplication,
        "d1",
        Some("2026-10-09 24:00"),
        "2026-10-10 00:01",
        true,
    );
    // The notice says until when, as counted.
    let Some(Kind::RightsHolderNotified(n)) = w.log.last().map(|s| &s.payload) else {
        panic!("the notice is recorded last");
    };
    assert_eq!(
        n.respond_by,
        Some(casebus_proto::timestamp_from(cst("2026-10-09 24:00")))
    );
    // A second notice restarts nothing.
    w.record(CUSTOMS, "2026-10-08 09:00", notified("d1"));
    check_detention(
        &w,
        RightsHolderApplication,
        "d1",
        Some("2026-10-09 24:00"),
        "2026-10-09 23:59",
        false,
    );
    // Too late on the make-up working day Saturday 10 October: refused, nothing changes.
    let mut late = w.clone_world();
    refused(
        &mut late,
        CUSTOMS,
        "2026-10-10 09:00",
        applied("d1"),
        "rights_holder_application_window",
        &["Art. 16", "releases them"],
    );
    // In time on Friday: the window closes, and the goods are detained: 30 working days
    // to investigate and 50 to release, counted from Saturday 10 October (a make-up
    // working day, so it counts).
    w.record(CUSTOMS, "2026-10-09 16:00", applied("d1"));
    check_detention(
        &w,
        RightsHolderApplication,
        "d1",
        None,
        "2026-10-10 00:01",
        false,
    );
    check_detention(
        &w,
        CustomsInvestigation,
        "d1",
        Some("2026-11-19 24:00"),
        "2026-11-19 23:59",
        false,
    );
    check_detention(
        &w,
        CustomsInvestigation,
        "d1",
        Some("2026-11-19 24:00"),
        "2026-11-20 00:01",
        true,
    );
    check_detention(
        &w,
        ReleaseExOfficio,
        "d1",
        Some("2026-12-17 24:00"),
        "2026-12-17 23:59",
        false,
    );
    refused(
        &mut w,
        CUSTOMS,
        "2026-10-12 09:00",
        applied("d1"),
        "not_applied_yet",
        &["d1"],
    );
    // Customs cannot determine: the investigation is answered, the goods stay until
    // their release is due.
    w.record(
        CUSTOMS,
        "2026-11-10 10:00",
        determined("d1", DeterminationOutcome::Undetermined),
    );
    check_detention(
        &w,
        CustomsInvestigation,
        "d1",
        None,
        "2026-11-20 00:01",
        false,
    );
    check_detention(
        &w,
        ReleaseExOfficio,
        "d1",
        Some("2026-12-17 24:00"),
        "2026-12-18 00:01",
        true,
    );
    refused(
        &mut w,
        CUSTOMS,
        "2026-11-11 10:00",
        Kind::GoodsConfiscated(GoodsConfiscated {
            detention_id: "d1".into(),
            disposal: "destroyed".into(),
        }),
        "determined_infringing",
        &["d1"],
    );
    // The release answers it.
    w.record(
        CUSTOMS,
        "2026-12-17 10:00",
        Kind::DetentionReleased(DetentionReleased {
            detention_id: "d1".into(),
            reason: "not determined, no court assistance notice (Art. 24(2))".into(),
        }),
    );
    check_detention(&w, ReleaseExOfficio, "d1", None, "2026-12-18 00:01", false);
    assert!(w.state.open_case_clocks(&w.rules, &calendar()).is_empty());
    refused(
        &mut w,
        CUSTOMS,
        "2026-12-17 11:00",
        notified("d1"),
        "detention_active",
        &["d1"],
    );
}

impl World {
    fn clone_world(&self) -> World {
        World {
            rules: self.rules.clone(),
            state: self.state.clone(),
            log: Vec::new(),
        }
    }
}

#[test]
fn goods_detained_on_application_are_released_after_20_working_days_across_the_spring_festival_unless_the_court_asks_customs_to_assist()
 {
    let mut w = World::new();
    w.record(CUSTOMS, "2026-02-13 09:00", opened());
    w.record(CUSTOMS, "2026-02-13 10:00", detained("d1", true));
    // From Saturday 14 February (a make-up working day): 14 February, then after the
    // Spring Festival (15-23 February) 24-28 February (28th a make-up working day),
    // and 2-19 March: 20 working days, ending Thursday 19 March.
    check_detention(
        &w,
        ReleaseOnApplication,
        "d1",
        Some("2026-03-19 24:00"),
        "2026-03-19 23:59",
        false,
    );
    check_detention(
        &w,
        ReleaseOnApplication,
        "d1",
        Some("2026-03-19 24:00"),
        "2026-03-20 00:01",
        true,
    );
    // The detention records its due time with the rules it was counted with.
    let dues = recorded_dues_of(&w, 2);
    assert_eq!(dues.len(), 1);
    assert_eq!(dues[0].clock, "release_on_application");
    assert_eq!(
        dues[0].due_at,
        Some(casebus_proto::timestamp_from(cst("2026-03-19 24:00")))
    );
    assert_eq!(dues[0].rules_digest, w.rules.digest(&calendar()));
    // A detention on application waits for no application.
    w.record(CUSTOMS, "2026-02-13 11:00", rights_holder_added());
    w.record(CUSTOMS, "2026-02-13 12:00", notified("d1"));
    check_detention(
        &w,
        RightsHolderApplication,
        "d1",
        None,
        "2026-02-13 13:00",
        false,
    );
    refused(
        &mut w,
        CUSTOMS,
        "2026-02-13 13:00",
        applied("d1"),
        "detention_ex_officio",
        &["d1"],
    );
    // The court, told of the detention by customs, asks customs to assist: the release
    // clock stops, and the notice runs until customs takes it.
    refused(
        &mut w,
        COURT,
        "2026-03-02 09:00",
        handoff("can", HandoffKind::CourtAssistanceNotice, Agency::Customs),
        "case_not_found",
        &[],
    );
    w.record(
        CUSTOMS,
        "2026-03-02 09:00",
        handoff("tell", HandoffKind::AssistanceRequest, Agency::Court),
    );
    w.record(COURT, "2026-03-02 10:00", accept("tell"));
    refused(
        &mut w,
        CUSTOMS,
        "2026-03-02 11:00",
        handoff("can", HandoffKind::CourtAssistanceNotice, Agency::Customs),
        "not_permitted",
        &["CourtAssistanceNotice"],
    );
    w.record(
        COURT,
        "2026-03-16 15:00",
        handoff("can", HandoffKind::CourtAssistanceNotice, Agency::Customs),
    );
    check_detention(
        &w,
        ReleaseOnApplication,
        "d1",
        None,
        "2026-03-20 00:01",
        false,
    );
    w.record(CUSTOMS, "2026-03-16 15:01", ack("can"));
    check(
        &w,
        "can",
        Some((Decision, CourtAssistance, "2026-03-17 24:00")),
        "2026-03-18 00:01",
        true,
    );
    w.record(CUSTOMS, "2026-03-17 09:00", accept("can"));
    check(&w, "can", None, "2026-03-18 00:01", false);
    assert!(check_recorded_dues(w.log.iter().map(Stored::view), &w.rules, &calendar()).is_empty());
}

/// The rights holder `rh` joins the case.
fn rights_holder_added() -> Kind {
    Kind::PartyAdded(PartyAdded {
        party: Some(Party {
            party_id: "rh".into(),
            role: PartyRole::RightsHolder as i32,
            name: "Acme Audio Co.".into(),
            organisation: true,
            ..Default::default()
        }),
    })
}

#[test]
fn goods_found_infringing_are_not_released_and_are_confiscated() {
    let mut w = held_ex_officio();
    w.record(CUSTOMS, "2026-09-29 15:00", notified("d1"));
    w.record(CUSTOMS, "2026-09-30 10:00", applied("d1"));
    // The old form (only `infringing`) and the outcome must agree.
    refused(
        &mut w,
        CUSTOMS,
        "2026-10-12 10:00",
        Kind::InfringementDetermined(InfringementDetermined {
            detention_id: "d1".into(),
            infringing: true,
            basis: "b".into(),
            outcome: DeterminationOutcome::NotInfringing as i32,
        }),
        "invalid",
        &["infringement_determined.infringing", "NOT_INFRINGING"],
    );
    // An event of the old form gets its outcome filled in.
    w.record(
        CUSTOMS,
        "2026-10-12 10:00",
        Kind::InfringementDetermined(InfringementDetermined {
            detention_id: "d1".into(),
            infringing: true,
            basis: "identical mark".into(),
            ..Default::default()
        }),
    );
    let Some(Kind::InfringementDetermined(d)) = w.log.last().map(|s| &s.payload) else {
        panic!("the determination is recorded last");
    };
    assert_eq!(d.outcome(), DeterminationOutcome::Infringing);
    check_detention(
        &w,
        CustomsInvestigation,
        "d1",
        None,
        "2027-01-01 00:00",
        false,
    );
    check_detention(&w, ReleaseExOfficio, "d1", None, "2027-01-01 00:00", false);
    w.record(
        CUSTOMS,
        "2026-10-13 10:00",
        Kind::GoodsConfiscated(GoodsConfiscated {
            detention_id: "d1".into(),
            disposal: "destroyed".into(),
        }),
    );
    assert!(w.state.open_case_clocks(&w.rules, &calendar()).is_empty());
}

#[test]
fn a_tampered_detention_due_is_named_by_its_detention() {
    let mut w = World::new();
    w.record(CUSTOMS, "2026-02-13 09:00", opened());
    w.record(CUSTOMS, "2026-02-13 10:00", detained("d1", true));
    if let Some(Kind::GoodsDetained(p)) = w.log.last_mut().map(|s| &mut s.payload) {
        p.recorded_dues[0].due_at = Some(casebus_proto::timestamp_from(cst("2026-03-26 24:00")));
    }
    let found = check_recorded_dues(w.log.iter().map(Stored::view), &w.rules, &calendar());
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(
        (
            found[0].version,
            found[0].subject.as_str(),
            found[0].clock.as_str()
        ),
        (2, "d1", "release_on_application")
    );
    assert!(
        found[0].to_string().contains("(detention d1)"),
        "{}",
        found[0]
    );
    assert!(matches!(found[0].problem, DueProblem::DueTime { .. }));
}

// A suspect's clocks (CPL Arts. 91, 156, 158, 159): they run on the suspect, not on a
// hand-off.

/// What the clock `rule` of suspect `party` should be: its due time in CST (or `None`
/// when it does not run), extensions granted, and whether it is overdue at `now`.
fn check_suspect(
    w: &World,
    rule: ClockName,
    party: &str,
    due: Option<(&str, usize)>,
    now: &str,
    overdue: bool,
) {
    let open = w.state.open_case_clocks(&w.rules, &calendar());
    let clock = open.iter().find(|c| c.rule == rule && c.subject == party);
    let got = clock.map(|c| (c.due_at.clone().expect("countable"), c.extensions));
    assert_eq!(got, due.map(|(d, n)| (cst(d), n)), "{rule:?} of {party}");
    if let Some(c) = clock {
        assert_eq!(c.agency, Agency::PublicSecurity, "the police's clock");
        assert_eq!(c.extensions_allowed, w.rules.clock(rule).extensions.len());
        assert_eq!(
            c.is_overdue(cst(now)),
            overdue,
            "{rule:?} of {party} at {now}"
        );
    }
}

#[test]
fn a_detained_suspect_waits_3_days_for_the_arrest_request_extended_to_7_then_30_and_custody_runs_2_months_plus_1_2_2()
 {
    let mut w = investigated();
    // Detained on Tuesday 29 September: 3 days from Wednesday end on 2 October, in the
    // National Day holiday; custody periods never roll over.
    w.record(
        POLICE,
        "2026-09-29 18:00",
        Kind::SuspectDetained(SuspectDetained {
            party_id: "s1".into(),
            measure: "criminal detention".into(),
            ..Default::default()
        }),
    );
    check_suspect(
        &w,
        ArrestRequest,
        "s1",
        Some(("2026-10-02 24:00", 0)),
        "2026-10-02 23:59",
        false,
    );
    check_suspect(
        &w,
        ArrestRequest,
        "s1",
        Some(("2026-10-02 24:00", 0)),
        "2026-10-03 00:01",
        true,
    );
    let dues = recorded_dues_of(&w, w.state.version);
    assert_eq!((dues.len(), dues[0].clock.as_str()), (1, "arrest_request"));
    // Only the police extend it (customs, which takes part, may not), approved by a
    // police office; then step by step.
    refused(
        &mut w,
        CUSTOMS,
        "2026-10-01 09:00",
        extend_suspect("s1", "arrest_request", POLICE),
        "not_permitted",
        &["arrest_request", "s1"],
    );
    refused(
        &mut w,
        POLICE,
        "2026-10-01 09:00",
        extend_suspect("s1", "arrest_request", PROC),
        "invalid",
        &["clock_extended.approving_office_id"],
    );
    refused(
        &mut w,
        POLICE,
        "2026-10-01 09:00",
        extend_suspect("s2", "arrest_request", POLICE),
        "clock_running",
        &["s2"],
    );
    w.record(
        POLICE,
        "2026-10-01 09:00",
        extend_suspect("s1", "arrest_request", POLICE),
    );
    check_suspect(
        &w,
        ArrestRequest,
        "s1",
        Some(("2026-10-06 24:00", 1)),
        "2026-10-06 23:59",
        false,
    );
    w.record(
        POLICE,
        "2026-10-05 09:00",
        extend_suspect("s1", "arrest_request", POLICE),
    );
    check_suspect(
        &w,
        ArrestRequest,
        "s1",
        Some(("2026-10-29 24:00", 2)),
        "2026-10-29 23:59",
        false,
    );
    refused(
        &mut w,
        POLICE,
        "2026-10-06 09:00",
        extend_suspect("s1", "arrest_request", POLICE),
        "clock_extension_cap",
        &["2 of 2", "s1"],
    );
    // Naming both a hand-off and a suspect is a malformed command.
    let mut both = extend_suspect("s1", "arrest_request", POLICE);
    if let Kind::ClockExtended(p) = &mut both {
        p.handoff_id = "ref".into();
    }
    refused(
        &mut w,
        POLICE,
        "2026-10-06 09:00",
        both,
        "invalid",
        &["clock_extended.handoff_id"],
    );
    // Asking for approval answers it.
    w.record(
        POLICE,
        "2026-10-20 10:00",
        handoff(
            "arr",
            HandoffKind::ArrestApprovalRequest,
            Agency::Procuratorate,
        ),
    );
    check_suspect(&w, ArrestRequest, "s1", None, "2026-10-30 00:01", false);
    w.record(PROC, "2026-10-20 10:05", ack("arr"));
    w.record(PROC, "2026-10-20 11:00", accept("arr"));
    // Arrested on Thursday 22 October: custody runs 2 months, to 22 December.
    w.record(
        PROC,
        "2026-10-22 10:00",
        Kind::ArrestApproved(ArrestApproved {
            handoff_id: "arr".into(),
            party_id: "s1".into(),
            ..Default::default()
        }),
    );
    check_suspect(
        &w,
        Custody,
        "s1",
        Some(("2026-12-22 24:00", 0)),
        "2026-12-23 00:01",
        true,
    );
    // Extended by the police on the procuratorate's approval (CPL Arts. 156, 158, 159):
    // +1, +2, +2 months, counted from the arrest's date; a fourth is refused.
    refused(
        &mut w,
        POLICE,
        "2026-12-01 09:00",
        extend_suspect("s1", "custody", POLICE),
        "invalid",
        &["procuratorate"],
    );
    w.record(
        POLICE,
        "2026-12-01 09:00",
        extend_suspect("s1", "custody", PROC),
    );
    check_suspect(
        &w,
        Custody,
        "s1",
        Some(("2027-01-22 24:00", 1)),
        "2027-01-22 23:59",
        false,
    );
    w.record(
        POLICE,
        "2027-01-05 09:00",
        extend_suspect("s1", "custody", PROC),
    );
    w.record(
        POLICE,
        "2027-03-01 09:00",
        extend_suspect("s1", "custody", PROC),
    );
    check_suspect(
        &w,
        Custody,
        "s1",
        Some(("2027-05-22 24:00", 3)),
        "2027-05-22 23:59",
        false,
    );
    refused(
        &mut w,
        POLICE,
        "2027-05-01 09:00",
        extend_suspect("s1", "custody", PROC),
        "clock_extension_cap",
        &["3 of 3"],
    );
    // The transfer for prosecution ends the custody of the investigation.
    w.record(POLICE, "2027-05-10 09:00", concluded());
    w.record(
        POLICE,
        "2027-05-10 10:00",
        handoff(
            "pt",
            HandoffKind::ProsecutionTransfer,
            Agency::Procuratorate,
        ),
    );
    check_suspect(&w, Custody, "s1", None, "2027-05-23 00:01", false);
    assert!(check_recorded_dues(w.log.iter().map(Stored::view), &w.rules, &calendar()).is_empty());
}
