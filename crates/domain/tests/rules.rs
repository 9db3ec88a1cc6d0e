//! The case rules, table-style: each test states a history of accepted commands, one
//! more command, and the expected outcome, through the single `check` helper.
//! The property tests at the end run random command sequences.

use proptest::prelude::*;
use time::OffsetDateTime;
use time::macros::datetime;

use casebus_domain::{
    CaseState, Command, Context, DeadlineRules, HandoffStatus, RecordedEvent, Rejection,
    RejectionKind, Sight, decide, sight,
};
use casebus_proto::event::v1::payload::Kind;
use casebus_proto::event::v1::*;
use casebus_proto::{CaseId, EventId, OfficeId, RequestId, datetime_from};

use crate::common::{COURT, CUSTOMS, IPC, POLICE, PROC, accept, ack, file_investigation, handoff};

mod common;

const T0: OffsetDateTime = datetime!(2026-11-02 9:00 UTC);

fn office(id: &str) -> OfficeId {
    OfficeId::new(id).expect("valid office")
}

/// A stored event with owned fields, standing in for what the bus would store.
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
    clock: OffsetDateTime,
}

fn registered(o: &OfficeId) -> bool {
    o.code() != "unregistered"
}

impl World {
    fn new() -> Self {
        Self {
            rules: DeadlineRules::default(),
            state: CaseState::default(),
            log: Vec::new(),
            clock: T0,
        }
    }

    fn command(&self, who: &str, payload: Kind) -> Command {
        Command {
            case_id: CaseId::new("CASE-1").expect("valid"),
            office: office(who),
            actor: "officer-1".into(),
            occurred_at: self.clock,
            visibility: None,
            payload,
        }
    }

    fn try_cmd(&mut self, cmd: Command) -> Result<(), Rejection> {
        let ctx = Context {
            now: self.clock,
            rules: &self.rules,
            calendar: &casebus_domain::Calendar::shipped(),
            rules_digest: &self.rules.digest(&casebus_domain::Calendar::shipped()),
            offices: &registered,
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
        self.clock += time::Duration::minutes(1);
        Ok(())
    }

    fn act(&mut self, who: &str, payload: Kind) -> Result<(), Rejection> {
        let cmd = self.command(who, payload);
        self.try_cmd(cmd)
    }
}

/// Runs `history` (every step must be accepted), then `last`, and compares the outcome
/// with `expected`: `Ok(())` or `Err(reason_code)`.
fn check(history: &[(&str, Kind)], last: (&str, Kind), expected: Result<(), &str>) -> World {
    let mut world = World::new();
    for (i, (who, payload)) in history.iter().enumerate() {
        if let Err(e) = world.act(who, payload.clone()) {
            panic!("history step {i} ({who}) was rejected: {e}");
        }
    }
    let before = world.state.clone();
    let outcome = world.act(last.0, last.1);
    match (&outcome, expected) {
        (Ok(()), Ok(())) => {}
        (Err(e), Err(code)) => {
            assert_eq!(e.reason_code(), code, "wrong rejection: {e}");
            assert_eq!(world.state, before, "a rejected command changed the state");
        }
        (got, want) => panic!("expected {want:?}, got {got:?}"),
    }
    world
}

fn opened() -> Kind {
    Kind::CaseOpened(CaseOpened {
        case_type: CaseType::CounterfeitTrademark as i32,
        title: "Counterfeit earphones at Ningbo port".into(),
        rights: vec![IpRight {
            kind: IpRightKind::Trademark as i32,
            registration_number: "TM-10086".into(),
            holder: "Acme Audio Co.".into(),
            title: "ACME".into(),
        }],
        parties: vec![
            party("rh", PartyRole::RightsHolder),
            party("s1", PartyRole::Suspect),
        ],
        summary: "12,000 earphones with the ACME mark declared as generic".into(),
        local_case_number: "NB-CUS-2026-001".into(),
    })
}

fn party(id: &str, role: PartyRole) -> Party {
    Party {
        party_id: id.into(),
        role: role as i32,
        name: format!("party {id}"),
        ..Default::default()
    }
}

fn detain() -> Kind {
    Kind::GoodsDetained(GoodsDetained {
        detention_id: "d1".into(),
        description: "12,000 earphones".into(),
        quantity: "12000 pcs".into(),
        port: "Ningbo".into(),
        on_rights_holder_application: true,
        ..Default::default()
    })
}

/// Customs opens and refers to the police, who accept and file.
fn to_police() -> Vec<(&'static str, Kind)> {
    vec![
        (CUSTOMS, opened()),
        (CUSTOMS, detain()),
        (
            CUSTOMS,
            handoff(
                "h1",
                HandoffKind::SuspectedCrimeReferral,
                Agency::PublicSecurity,
            ),
        ),
        (POLICE, ack("h1")),
        (POLICE, accept("h1")),
        (POLICE, file_investigation()),
    ]
}

#[test]
fn opening_a_case_makes_version_one_with_the_openers_track() {
    let world = check(&[], (CUSTOMS, opened()), Ok(()));
    assert_eq!(world.state.version, 1);
    assert!(world.state.has_active_track(Agency::Customs));
    assert_eq!(world.state.parties.len(), 2);
}

#[test]
fn opening_an_existing_case_is_already_exists() {
    check(
        &[(CUSTOMS, opened())],
        (IPC, opened()),
        Err("already_exists"),
    );
}

#[test]
fn acting_on_a_case_that_does_not_exist_is_not_found() {
    check(&[], (CUSTOMS, detain()), Err("case_not_found"));
}

#[test]
fn another_agencys_action_is_not_permitted() {
    check(&to_police(), (POLICE, detain()), Err("not_permitted"));
    check(
        &to_police(),
        (
            POLICE,
            Kind::ArrestApproved(ArrestApproved {
                handoff_id: "h1".into(),
                party_id: "s1".into(),
                recorded_dues: Vec::new(),
            }),
        ),
        Err("not_permitted"),
    );
}

#[test]
fn an_agency_without_a_track_must_accept_a_hand_off_first() {
    let addressed = vec![
        (CUSTOMS, opened()),
        (
            CUSTOMS,
            handoff(
                "h1",
                HandoffKind::SuspectedCrimeReferral,
                Agency::PublicSecurity,
            ),
        ),
    ];
    check(
        &addressed,
        (POLICE, file_investigation()),
        Err("track_open"),
    );
}

/// Every command of an agency that takes no part in a case, answered as for a case
/// that does not exist: the same rejection, the same text.
#[test]
fn an_agency_taking_no_part_gets_the_answer_of_a_case_that_does_not_exist() {
    let commands = |who: &'static str| -> Vec<(&'static str, Kind)> {
        vec![
            (who, detain()),
            (who, file_investigation()),
            (who, ack("h1")),
            (who, accept("h1")),
            (
                who,
                Kind::HandoffDeclined(HandoffDeclined {
                    handoff_id: "h1".into(),
                    reason: "no".into(),
                }),
            ),
            (
                who,
                handoff("h2", HandoffKind::AssistanceRequest, Agency::Customs),
            ),
            (who, Kind::NoteAdded(NoteAdded { text: "n".into() })),
            (
                who,
                Kind::PartyAdded(PartyAdded {
                    party: Some(party("p9", PartyRole::Witness)),
                }),
            ),
            (
                who,
                Kind::TrackClosed(TrackClosed {
                    reason: "done".into(),
                }),
            ),
            (
                who,
                Kind::VisibilityChanged(VisibilityChanged {
                    target_version: 1,
                    reason: "r".into(),
                    wrapped_keys: Vec::new(),
                    visibility: Some(Visibility {
                        kind: VisibilityKind::Participants as i32,
                        agencies: vec![],
                    }),
                }),
            ),
        ]
    };
    for outsider in [IPC, PROC, COURT] {
        for (who, payload) in commands(outsider) {
            let mut missing = World::new();
            let absent = missing.act(who, payload.clone()).expect_err("no case");
            let mut world = World::new();
            for (w, p) in to_police() {
                world.act(w, p).expect("history");
            }
            let before = world.state.clone();
            let hidden = world.act(who, payload).expect_err("outsider");
            assert_eq!(hidden.reason_code(), "case_not_found", "{who}: {hidden}");
            assert_eq!(hidden.to_string(), absent.to_string(), "{who}");
            assert_eq!(hidden.reason_code(), absent.reason_code(), "{who}");
            assert_eq!(world.state, before);
        }
    }
}

#[test]
fn a_hand_off_gets_its_due_time_from_the_rules() {
    let world = check(
        &[(CUSTOMS, opened())],
        (
            CUSTOMS,
            handoff(
                "h1",
                HandoffKind::SuspectedCrimeReferral,
                Agency::PublicSecurity,
            ),
        ),
        Ok(()),
    );
    let h = &world.state.handoffs["h1"];
    assert_eq!(h.due_at, Some(h.requested_at + time::Duration::days(3)));
    assert_eq!(h.status, HandoffStatus::Requested);
    let Kind::HandoffRequested(p) = &world.log[1].payload else {
        panic!("not a hand-off")
    };
    assert_eq!(p.due_at.as_ref().and_then(datetime_from), h.due_at);
}

#[test]
fn a_client_supplied_due_time_is_invalid() {
    let mut payload = handoff(
        "h1",
        HandoffKind::SuspectedCrimeReferral,
        Agency::PublicSecurity,
    );
    if let Kind::HandoffRequested(p) = &mut payload {
        p.due_at = Some(casebus_proto::timestamp_from(T0));
    }
    check(&[(CUSTOMS, opened())], (CUSTOMS, payload), Err("invalid"));
}

#[test]
fn a_hand_off_must_follow_its_route() {
    check(
        &[(CUSTOMS, opened())],
        (
            CUSTOMS,
            handoff("h1", HandoffKind::SuspectedCrimeReferral, Agency::Court),
        ),
        Err("handoff_route"),
    );
    check(
        &[(CUSTOMS, opened())],
        (
            CUSTOMS,
            handoff("h1", HandoffKind::PublicProsecution, Agency::Court),
        ),
        Err("not_permitted"),
    );
}

#[test]
fn a_hand_off_to_an_unregistered_office_is_refused() {
    let mut payload = handoff(
        "h1",
        HandoffKind::SuspectedCrimeReferral,
        Agency::PublicSecurity,
    );
    if let Kind::HandoffRequested(p) = &mut payload {
        p.to_office_id = "public_security:unregistered".into();
    }
    check(
        &[(CUSTOMS, opened())],
        (CUSTOMS, payload),
        Err("unknown_office"),
    );
}

#[test]
fn an_unregistered_office_cannot_act() {
    check(
        &[],
        ("customs:unregistered", opened()),
        Err("unknown_office"),
    );
}

#[test]
fn only_the_addressee_answers_a_hand_off_and_only_forward() {
    let base = vec![
        (CUSTOMS, opened()),
        (
            CUSTOMS,
            handoff(
                "h1",
                HandoffKind::SuspectedCrimeReferral,
                Agency::PublicSecurity,
            ),
        ),
    ];
    check(&base, (COURT, ack("h1")), Err("case_not_found"));
    check(&base, (CUSTOMS, ack("h1")), Err("not_permitted"));
    let mut acked = base.clone();
    acked.push((POLICE, ack("h1")));
    check(&acked, (POLICE, ack("h1")), Err("handoff_unacknowledged"));
    let mut accepted = acked.clone();
    accepted.push((POLICE, accept("h1")));
    check(&accepted, (POLICE, accept("h1")), Err("handoff_open"));
    check(
        &accepted,
        (
            POLICE,
            Kind::HandoffDeclined(HandoffDeclined {
                handoff_id: "h1".into(),
                reason: "no".into(),
            }),
        ),
        Err("handoff_open"),
    );
}

#[test]
fn accepting_a_hand_off_opens_the_receivers_track() {
    let world = check(
        &[
            (CUSTOMS, opened()),
            (
                CUSTOMS,
                handoff(
                    "h1",
                    HandoffKind::SuspectedCrimeReferral,
                    Agency::PublicSecurity,
                ),
            ),
        ],
        (POLICE, accept("h1")),
        Ok(()),
    );
    assert!(world.state.has_active_track(Agency::PublicSecurity));
}

#[test]
fn customs_must_detain_and_determine_before_confiscating() {
    let confiscate = Kind::GoodsConfiscated(GoodsConfiscated {
        detention_id: "d1".into(),
        disposal: "destroyed".into(),
    });
    check(
        &[(CUSTOMS, opened())],
        (CUSTOMS, confiscate.clone()),
        Err("goods_detained"),
    );
    check(
        &[(CUSTOMS, opened()), (CUSTOMS, detain())],
        (CUSTOMS, confiscate.clone()),
        Err("determined_infringing"),
    );
    let determined = Kind::InfringementDetermined(InfringementDetermined {
        outcome: DeterminationOutcome::Infringing as i32,
        detention_id: "d1".into(),
        infringing: true,
        basis: "mark identical".into(),
    });
    check(
        &[
            (CUSTOMS, opened()),
            (CUSTOMS, detain()),
            (CUSTOMS, determined),
        ],
        (CUSTOMS, confiscate),
        Ok(()),
    );
}

#[test]
fn arrest_approval_needs_a_filed_investigation_and_an_accepted_request() {
    let ask = handoff(
        "h2",
        HandoffKind::ArrestApprovalRequest,
        Agency::Procuratorate,
    );
    let mut history = to_police();
    history.pop();
    check(&history, (POLICE, ask.clone()), Err("investigation_filed"));
    let mut history = to_police();
    history.push((POLICE, ask));
    let approve = Kind::ArrestApproved(ArrestApproved {
        handoff_id: "h2".into(),
        party_id: "s1".into(),
        recorded_dues: Vec::new(),
    });
    check(&history, (PROC, approve.clone()), Err("track_open"));
    history.push((PROC, accept("h2")));
    let world = check(&history, (PROC, approve.clone()), Ok(()));
    assert!(world.state.handoffs["h2"].answered);
    history.push((PROC, approve.clone()));
    check(&history, (PROC, approve), Err("arrest_request_accepted"));
}

#[test]
fn the_judgment_needs_a_docket_and_a_hearing_and_the_appeal_its_period() {
    let mut history = vec![(COURT, opened())];
    let judgment = Kind::JudgmentIssued(JudgmentIssued {
        judgment_number: "J1".into(),
        outcome: "infringing".into(),
        summary: String::new(),
    });
    check(&history, (COURT, judgment.clone()), Err("docketed"));
    history.push((
        COURT,
        Kind::CaseDocketed(CaseDocketed {
            court_case_number: "(2026)Zhe01MinChu1".into(),
            procedure: Procedure::Civil as i32,
            presiding_judge: "Judge Li".into(),
        }),
    ));
    check(&history, (COURT, judgment.clone()), Err("hearing_held"));
    history.push((
        COURT,
        Kind::HearingScheduled(HearingScheduled {
            hearing_id: "hr1".into(),
            scheduled_for: Some(casebus_proto::timestamp_from(T0)),
            location: "Court 3".into(),
        }),
    ));
    history.push((
        COURT,
        Kind::HearingHeld(HearingHeld {
            hearing_id: "hr1".into(),
            summary: String::new(),
        }),
    ));
    history.push((COURT, judgment));
    // Becoming effective before the appeal period ends is refused.
    check(
        &history,
        (
            COURT,
            Kind::JudgmentEffective(JudgmentEffective {
                judgment_number: "J1".into(),
            }),
        ),
        Err("appeal_period"),
    );

    // An appeal 11 days after judgment is out of time.
    let mut world = World::new();
    for (who, p) in &history {
        world.act(who, p.clone()).expect("history");
    }
    world.clock += time::Duration::days(11);
    let late = world.command(
        COURT,
        Kind::AppealFiled(AppealFiled {
            appellant_party_id: "s1".into(),
            grounds: "excessive".into(),
        }),
    );
    let err = world.try_cmd(late).expect_err("out of time");
    assert_eq!(err.reason_code(), "appeal_period");
    assert_eq!(err.kind(), RejectionKind::Precondition);
    // After the period, with no appeal, it becomes effective.
    let effective = world.command(
        COURT,
        Kind::JudgmentEffective(JudgmentEffective {
            judgment_number: "J1".into(),
        }),
    );
    world
        .try_cmd(effective)
        .expect("effective after the period");
}

#[test]
fn invalid_fields_are_named() {
    let mut bad = opened();
    if let Kind::CaseOpened(p) = &mut bad {
        p.title = String::new();
    }
    let mut world = World::new();
    let err = world.act(CUSTOMS, bad).expect_err("empty title");
    assert_eq!(err.to_string(), "invalid case_opened.title: is required");

    let mut bad = opened();
    if let Kind::CaseOpened(p) = &mut bad {
        p.parties[0].party_id = "a.b".into();
    }
    let err = world.act(CUSTOMS, bad).expect_err("bad party id");
    assert!(
        err.to_string().contains("case_opened.parties[0].party_id"),
        "{err}"
    );

    let mut bad = opened();
    if let Kind::CaseOpened(p) = &mut bad {
        p.case_type = 99;
    }
    let err = world.act(CUSTOMS, bad).expect_err("unknown enum");
    assert!(err.to_string().contains("unknown case type 99"), "{err}");

    let mut cmd = world.command(CUSTOMS, opened());
    cmd.occurred_at = T0 + time::Duration::hours(1);
    let err = world.try_cmd(cmd).expect_err("future");
    assert!(err.to_string().contains("occurred_at"), "{err}");
    assert_eq!(world.state.version, 0, "nothing was recorded");
}

#[test]
fn a_sealed_event_is_clear_only_to_its_office_and_outsiders_see_nothing() {
    let mut world = World::new();
    world.act(CUSTOMS, opened()).expect("open");
    let mut note = world.command(
        CUSTOMS,
        Kind::NoteAdded(NoteAdded {
            text: "informant: X".into(),
        }),
    );
    note.visibility = Some(Visibility {
        kind: VisibilityKind::OriginOnly as i32,
        agencies: vec![],
    });
    world.try_cmd(note).expect("sealed note");
    world
        .act(
            CUSTOMS,
            handoff(
                "h1",
                HandoffKind::SuspectedCrimeReferral,
                Agency::PublicSecurity,
            ),
        )
        .expect("refer");
    assert_eq!(sight(&world.state, 2, &office(CUSTOMS)), Sight::Clear);
    assert_eq!(
        sight(&world.state, 2, &office("customs:shanghai")),
        Sight::Stub
    );
    assert_eq!(sight(&world.state, 2, &office(POLICE)), Sight::Stub);
    assert_eq!(
        sight(&world.state, 1, &office(POLICE)),
        Sight::Clear,
        "addressee is a participant"
    );
    assert_eq!(sight(&world.state, 1, &office(COURT)), Sight::NotInvolved);
}

#[test]
fn only_the_recording_office_changes_an_events_visibility() {
    let mut world = World::new();
    world.act(CUSTOMS, opened()).expect("open");
    world
        .act(
            CUSTOMS,
            handoff(
                "h1",
                HandoffKind::SuspectedCrimeReferral,
                Agency::PublicSecurity,
            ),
        )
        .expect("refer");
    let change = |target| {
        Kind::VisibilityChanged(VisibilityChanged {
            target_version: target,
            visibility: Some(Visibility {
                kind: VisibilityKind::ListedAgencies as i32,
                agencies: vec![Agency::Court as i32],
            }),
            reason: "protect informant".into(),
            wrapped_keys: Vec::new(),
        })
    };
    world.act(POLICE, accept("h1")).expect("accept");
    let err = world.act(POLICE, change(1)).expect_err("not the recorder");
    assert_eq!(err.kind(), RejectionKind::NotPermitted);
    assert_eq!(sight(&world.state, 1, &office(POLICE)), Sight::Clear);
    world.act(CUSTOMS, change(1)).expect("recorder may");
    assert_eq!(sight(&world.state, 1, &office(POLICE)), Sight::Stub);
    let err = world.act(CUSTOMS, change(99)).expect_err("no such version");
    assert_eq!(err.kind(), RejectionKind::Invalid);
}

#[test]
fn the_full_counterfeit_flow_is_accepted_end_to_end() {
    let mut w = World::new();
    let steps: Vec<(&str, Kind)> = vec![
        (CUSTOMS, opened()),
        (CUSTOMS, detain()),
        (
            CUSTOMS,
            handoff("a1", HandoffKind::AssistanceRequest, Agency::IpCenter),
        ),
        (IPC, ack("a1")),
        (IPC, accept("a1")),
        (
            IPC,
            Kind::InfringementAssessed(InfringementAssessed {
                assessment_id: "as1".into(),
                infringing: true,
                opinion: "identical mark".into(),
                handoff_id: "a1".into(),
            }),
        ),
        (
            IPC,
            handoff(
                "h1",
                HandoffKind::SuspectedCrimeReferral,
                Agency::PublicSecurity,
            ),
        ),
        (POLICE, ack("h1")),
        (POLICE, accept("h1")),
        (POLICE, file_investigation()),
        (
            POLICE,
            Kind::SuspectDetained(SuspectDetained {
                party_id: "s1".into(),
                measure: "criminal detention".into(),
                location: "Ningbo detention center".into(),
                recorded_dues: Vec::new(),
            }),
        ),
        (
            POLICE,
            handoff(
                "h2",
                HandoffKind::ArrestApprovalRequest,
                Agency::Procuratorate,
            ),
        ),
        (PROC, ack("h2")),
        (PROC, accept("h2")),
        (
            PROC,
            Kind::ArrestApproved(ArrestApproved {
                handoff_id: "h2".into(),
                party_id: "s1".into(),
                recorded_dues: Vec::new(),
            }),
        ),
        (
            POLICE,
            Kind::InvestigationConcluded(InvestigationConcluded {
                findings: "sold 12,000 units".into(),
                recommend_prosecution: true,
            }),
        ),
        (
            POLICE,
            handoff(
                "h3",
                HandoffKind::ProsecutionTransfer,
                Agency::Procuratorate,
            ),
        ),
        (PROC, ack("h3")),
        (PROC, accept("h3")),
        (
            PROC,
            Kind::IndictmentFiled(IndictmentFiled {
                handoff_id: "h3".into(),
                indictment_number: "NB-PROC-9".into(),
                charges: "art. 213".into(),
                defendant_party_ids: vec!["s1".into()],
            }),
        ),
        (
            PROC,
            handoff("h4", HandoffKind::PublicProsecution, Agency::Court),
        ),
        (COURT, ack("h4")),
        (COURT, accept("h4")),
        (
            COURT,
            Kind::CaseDocketed(CaseDocketed {
                court_case_number: "(2026)Zhe01XingChu5".into(),
                procedure: Procedure::Criminal as i32,
                presiding_judge: "Judge Wang".into(),
            }),
        ),
        (
            COURT,
            Kind::HearingScheduled(HearingScheduled {
                hearing_id: "hr1".into(),
                scheduled_for: Some(casebus_proto::timestamp_from(T0)),
                location: "Court 1".into(),
            }),
        ),
        (
            COURT,
            Kind::HearingHeld(HearingHeld {
                hearing_id: "hr1".into(),
                summary: "heard".into(),
            }),
        ),
        (
            COURT,
            Kind::JudgmentIssued(JudgmentIssued {
                judgment_number: "J-5".into(),
                outcome: "guilty".into(),
                summary: String::new(),
            }),
        ),
        (
            COURT,
            Kind::AppealFiled(AppealFiled {
                appellant_party_id: "s1".into(),
                grounds: "sentence".into(),
            }),
        ),
    ];
    for (i, (who, payload)) in steps.into_iter().enumerate() {
        if let Err(e) = w.act(who, payload) {
            panic!("step {i} by {who} rejected: {e}");
        }
    }
    assert_eq!(w.state.version, 28);
    assert!(
        w.state
            .handoffs
            .values()
            .all(|h| h.status == HandoffStatus::Accepted)
    );
    assert!(w.state.judgment.as_ref().is_some_and(|j| j.appealed));
}

// ---------------------------------------------------------------------------------
// Properties over random command sequences.

fn any_command() -> impl Strategy<Value = (usize, Kind)> {
    let ids = prop_oneof![Just("x1"), Just("x2")];
    let agencies = prop_oneof![
        Just(Agency::Court),
        Just(Agency::Procuratorate),
        Just(Agency::PublicSecurity),
        Just(Agency::Customs),
        Just(Agency::IpCenter)
    ];
    let kinds = prop_oneof![
        Just(HandoffKind::SuspectedCrimeReferral),
        Just(HandoffKind::AssistanceRequest),
        Just(HandoffKind::ArrestApprovalRequest),
        Just(HandoffKind::ProsecutionTransfer),
        Just(HandoffKind::PublicProsecution),
        Just(HandoffKind::JudgmentNotice)
    ];
    let payload = prop_oneof![
        Just(opened()),
        Just(detain()),
        Just(file_investigation()),
        (ids.clone(), kinds, agencies).prop_map(|(id, k, a)| handoff(id, k, a)),
        ids.clone().prop_map(ack),
        ids.clone().prop_map(accept),
        ids.clone()
            .prop_map(|id| Kind::HandoffDeclined(HandoffDeclined {
                handoff_id: id.into(),
                reason: "no".into()
            })),
        ids.clone()
            .prop_map(|id| Kind::ArrestApproved(ArrestApproved {
                handoff_id: id.into(),
                party_id: "s1".into(),
                recorded_dues: Vec::new(),
            })),
        Just(Kind::InvestigationConcluded(InvestigationConcluded {
            findings: "f".into(),
            recommend_prosecution: true
        })),
        ids.clone()
            .prop_map(|id| Kind::IndictmentFiled(IndictmentFiled {
                handoff_id: id.into(),
                indictment_number: "I".into(),
                charges: "c".into(),
                defendant_party_ids: vec!["s1".into()]
            })),
        Just(Kind::TrackClosed(TrackClosed {
            reason: "done".into()
        })),
        Just(Kind::NoteAdded(NoteAdded { text: "n".into() })),
        Just(Kind::CaseDocketed(CaseDocketed {
            court_case_number: "c".into(),
            procedure: Procedure::Criminal as i32,
            presiding_judge: String::new()
        })),
    ];
    (0usize..5, payload)
}

const OFFICES: [&str; 5] = [CUSTOMS, IPC, POLICE, PROC, COURT];

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Any sequence of accepted commands folds to a state that replaying the same
    /// events from scratch reproduces; rejected commands produce no event and leave the
    /// state as it was; hand-off status only moves forward.
    #[test]
    fn accepted_histories_replay_to_the_same_state(cmds in proptest::collection::vec(any_command(), 1..60)) {
        let mut world = World::new();
        let mut accepted = 0u64;
        let mut last_rank: std::collections::BTreeMap<String, u8> = Default::default();
        for (who, payload) in cmds {
            let before = world.state.clone();
            match world.act(OFFICES[who], payload) {
                Ok(()) => accepted += 1,
                Err(_) => prop_assert_eq!(&world.state, &before),
            }
            prop_assert_eq!(world.log.len() as u64, accepted);
            for (id, h) in &world.state.handoffs {
                let rank = h.status.rank();
                let prev = last_rank.insert(id.clone(), rank).unwrap_or(0);
                prop_assert!(rank >= prev, "hand-off {} moved back", id);
            }
        }
        let replayed = CaseState::fold(world.log.iter().map(Stored::view));
        prop_assert_eq!(replayed, world.state.clone());
        prop_assert_eq!(world.state.version, accepted);
    }
}

#[test]
fn an_action_dated_before_2000_is_invalid() {
    let mut world = World::new();
    let mut cmd = world.command(CUSTOMS, opened());
    cmd.occurred_at = datetime!(1200-01-01 0:00 UTC);
    let err = world.try_cmd(cmd).expect_err("too early");
    assert!(err.to_string().contains("before 2000-01-01"), "{err}");
}

#[test]
fn accepting_with_a_local_number_the_office_already_linked_is_already_exists() {
    let mut history = vec![
        (CUSTOMS, opened()),
        (
            CUSTOMS,
            handoff(
                "h1",
                HandoffKind::SuspectedCrimeReferral,
                Agency::PublicSecurity,
            ),
        ),
        (
            CUSTOMS,
            handoff(
                "h2",
                HandoffKind::SuspectedCrimeReferral,
                Agency::PublicSecurity,
            ),
        ),
    ];
    let with_number = |id: &str| {
        Kind::HandoffAccepted(HandoffAccepted {
            handoff_id: id.into(),
            local_case_number: "PS-1".into(),
        })
    };
    history.push((POLICE, with_number("h1")));
    check(&history, (POLICE, with_number("h2")), Err("already_exists"));
    // Another office of the same agency may use the same number in its own numbering.
    check(
        &history,
        ("public_security:hangzhou", with_number("h2")),
        Ok(()),
    );
}
