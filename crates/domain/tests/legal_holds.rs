//! Legal holds (LegalHoldPlaced / LegalHoldLifted): ids never reused, only an open hold
//! lifted and only by the agency that placed it, PARTICIPANTS visibility that cannot be
//! narrowed, and the fold's open holds (what erasure will check).

use time::OffsetDateTime;
use time::macros::datetime;

use casebus_domain::{
    CaseState, Command, Context, DeadlineRules, RecordedEvent, Rejection, RejectionKind,
    check_erasable, decide,
};
use casebus_proto::event::v1::payload::Kind;
use casebus_proto::event::v1::*;
use casebus_proto::{CaseId, EventId, OfficeId, RequestId};

use crate::common::{CUSTOMS, IPC, POLICE, accept, handoff};

mod common;

const T0: OffsetDateTime = datetime!(2026-11-02 9:00 UTC);

/// A case with its stored events, each command decided against the fold so far.
struct World {
    rules: DeadlineRules,
    state: CaseState,
    clock: OffsetDateTime,
}

fn registered(_: &OfficeId) -> bool {
    true
}

impl World {
    /// Customs opened the case and referred it to the police, who accepted.
    fn new() -> Self {
        let mut w = Self {
            rules: DeadlineRules::default(),
            state: CaseState::default(),
            clock: T0,
        };
        w.act(CUSTOMS, opened(), None).expect("open");
        w.act(
            CUSTOMS,
            handoff(
                "h1",
                HandoffKind::SuspectedCrimeReferral,
                Agency::PublicSecurity,
            ),
            None,
        )
        .expect("refer");
        w.act(POLICE, accept("h1"), None).expect("accept");
        w
    }

    /// Decides and, when accepted, folds; a refusal must leave the state unchanged.
    fn act(
        &mut self,
        who: &str,
        payload: Kind,
        visibility: Option<Visibility>,
    ) -> Result<(), Rejection> {
        let case_id = CaseId::new("CASE-1").expect("valid");
        let office = OfficeId::new(who).expect("valid office");
        let cmd = Command {
            case_id: case_id.clone(),
            office: office.clone(),
            actor: "officer-1".into(),
            occurred_at: self.clock,
            visibility,
            payload,
        };
        let ctx = Context {
            now: self.clock,
            rules: &self.rules,
            calendar: &casebus_domain::Calendar::shipped(),
            rules_digest: &self.rules.digest(&casebus_domain::Calendar::shipped()),
            offices: &registered,
        };
        let before = self.state.clone();
        let decision = match decide(&self.state, &cmd, &ctx) {
            Ok(d) => d,
            Err(e) => {
                assert_eq!(self.state, before);
                return Err(e);
            }
        };
        let version = self.state.version + 1;
        let request = RequestId::new(&format!("r{version}")).expect("valid");
        let event_id = EventId::derive(&office, &case_id, &request);
        self.state.apply(&RecordedEvent {
            case_id: &case_id,
            version,
            event_id: &event_id,
            office: &office,
            occurred_at: self.clock,
            visibility: Some(&decision.visibility),
            payload: Some(&decision.payload),
        });
        self.clock += time::Duration::minutes(1);
        Ok(())
    }
}

fn opened() -> Kind {
    Kind::CaseOpened(CaseOpened {
        case_type: CaseType::CounterfeitTrademark as i32,
        title: "Counterfeit earphones".into(),
        ..Default::default()
    })
}

fn place(id: &str, basis: &str) -> Kind {
    Kind::LegalHoldPlaced(LegalHoldPlaced {
        hold_id: id.into(),
        legal_basis: basis.into(),
        reason: "criminal proceedings pending".into(),
    })
}

fn lift(id: &str) -> Kind {
    Kind::LegalHoldLifted(LegalHoldLifted {
        hold_id: id.into(),
        reason: "judgment effective".into(),
    })
}

fn visibility(kind: VisibilityKind, agencies: &[Agency]) -> Visibility {
    Visibility {
        kind: kind as i32,
        agencies: agencies.iter().map(|a| *a as i32).collect(),
    }
}

fn case() -> CaseId {
    CaseId::new("CASE-1").expect("valid")
}

#[test]
fn a_placed_hold_is_open_with_its_placer_time_and_basis_until_its_agency_lifts_it() {
    let mut w = World::new();
    assert!(!w.state.has_open_hold());
    assert_eq!(check_erasable(&w.state, &case()), Ok(()));
    let placed_at = w.clock;
    w.act(POLICE, place("lh1", "PIPL Art. 47(2); CPL Art. 245"), None)
        .expect("place");
    let hold = &w.state.legal_holds["lh1"];
    assert_eq!(hold.office.as_str(), POLICE);
    assert_eq!(hold.placed_at, placed_at);
    assert_eq!(hold.legal_basis, "PIPL Art. 47(2); CPL Art. 245");
    assert_eq!(hold.placed_version, 4);
    assert!(w.state.has_open_hold());
    let refusal = check_erasable(&w.state, &case()).expect_err("under hold");
    assert_eq!(refusal.reason_code(), "no_open_legal_hold");
    let text = refusal.to_string();
    assert!(
        text.contains("lh1") && text.contains("PIPL Art. 47(2)") && text.contains(POLICE),
        "{text}"
    );

    w.act(POLICE, lift("lh1"), None).expect("lift");
    assert!(w.state.legal_holds.is_empty());
    assert!(!w.state.has_open_hold());
    let lifted = &w.state.lifted_holds["lh1"];
    assert_eq!((lifted.hold.placed_version, lifted.lifted_version), (4, 5));
    assert_eq!(check_erasable(&w.state, &case()), Ok(()));
}

#[test]
fn a_hold_id_is_never_reused_not_even_after_its_lift() {
    let mut w = World::new();
    w.act(CUSTOMS, place("lh1", "PIPL Art. 47(2)"), None)
        .expect("place");
    let again = w
        .act(POLICE, place("lh1", "PIPL Art. 47(2)"), None)
        .expect_err("open id");
    assert_eq!(again.kind(), RejectionKind::AlreadyExists);
    assert!(again.to_string().contains("legal hold lh1"), "{again}");
    w.act(CUSTOMS, lift("lh1"), None).expect("lift");
    let after = w
        .act(CUSTOMS, place("lh1", "PIPL Art. 47(2)"), None)
        .expect_err("lifted id");
    assert_eq!(after.kind(), RejectionKind::AlreadyExists);
    // Two holds of two agencies may be open at once; erasure waits for both.
    w.act(CUSTOMS, place("lh2", "Customs Law Art. 91"), None)
        .expect("second");
    w.act(POLICE, place("lh3", "CPL Art. 245"), None)
        .expect("third");
    w.act(CUSTOMS, lift("lh2"), None).expect("lift lh2");
    assert!(w.state.has_open_hold());
    assert_eq!(
        w.state.legal_holds.keys().collect::<Vec<_>>(),
        vec!["lh3"],
        "only the police's hold is left"
    );
}

#[test]
fn only_an_open_hold_is_lifted_and_only_by_the_agency_that_placed_it() {
    let mut w = World::new();
    let unknown = w.act(POLICE, lift("nope"), None).expect_err("unknown");
    assert_eq!(unknown.reason_code(), "legal_hold_open");
    assert!(
        unknown.to_string().contains("no legal hold nope"),
        "{unknown}"
    );

    w.act(POLICE, place("lh1", "CPL Art. 245"), None)
        .expect("place");
    let other = w.act(CUSTOMS, lift("lh1"), None).expect_err("other agency");
    assert_eq!(other.kind(), RejectionKind::NotPermitted);
    assert!(other.to_string().contains(POLICE), "{other}");

    w.act(POLICE, lift("lh1"), None).expect("lift");
    let twice = w.act(POLICE, lift("lh1"), None).expect_err("twice");
    assert_eq!(twice.reason_code(), "legal_hold_open");
    assert!(twice.to_string().contains("lifted already"), "{twice}");
}

#[test]
fn an_agency_taking_no_part_cannot_place_or_lift_a_hold() {
    let mut w = World::new();
    let refusal = w
        .act(IPC, place("lh1", "PIPL Art. 47(2)"), None)
        .expect_err("outsider");
    assert_eq!(refusal.kind(), RejectionKind::NotFound);
}

#[test]
fn a_hold_is_placed_also_after_the_placing_agency_closed_its_track() {
    let mut w = World::new();
    w.act(
        POLICE,
        Kind::TrackClosed(TrackClosed {
            reason: "investigation handed over".into(),
        }),
        None,
    )
    .expect("close");
    w.act(POLICE, place("lh1", "CPL Art. 245"), None)
        .expect("place with a closed track");
    w.act(POLICE, lift("lh1"), None)
        .expect("lift with a closed track");
}

#[test]
fn a_hold_is_recorded_for_participants_only_and_its_visibility_is_never_narrowed() {
    let mut w = World::new();
    for narrow in [
        visibility(VisibilityKind::OriginOnly, &[]),
        visibility(VisibilityKind::ListedAgencies, &[Agency::Customs]),
    ] {
        let refusal = w
            .act(POLICE, place("lh1", "CPL Art. 245"), Some(narrow))
            .expect_err("narrow place");
        assert_eq!(refusal.reason_code(), "legal_hold_visible_to_participants");
    }
    w.act(
        POLICE,
        place("lh1", "CPL Art. 245"),
        Some(visibility(VisibilityKind::Participants, &[])),
    )
    .expect("participants");
    let placed = w.state.version;
    let refusal = w
        .act(
            POLICE,
            lift("lh1"),
            Some(visibility(VisibilityKind::OriginOnly, &[])),
        )
        .expect_err("narrow lift");
    assert_eq!(refusal.reason_code(), "legal_hold_visible_to_participants");

    let narrow = |target: u64| {
        Kind::VisibilityChanged(VisibilityChanged {
            target_version: target,
            visibility: Some(visibility(VisibilityKind::OriginOnly, &[])),
            reason: "informant".into(),
            wrapped_keys: Vec::new(),
        })
    };
    let refusal = w.act(POLICE, narrow(placed), None).expect_err("narrow");
    assert_eq!(refusal.reason_code(), "legal_hold_visible_to_participants");
    assert!(
        refusal.to_string().contains(&format!("version {placed}")),
        "{refusal}"
    );
    w.act(POLICE, lift("lh1"), None).expect("lift");
    let lifted = w.state.version;
    for target in [placed, lifted] {
        let refusal = w.act(POLICE, narrow(target), None).expect_err("narrow");
        assert_eq!(refusal.reason_code(), "legal_hold_visible_to_participants");
    }
    // Any other event of the office may still be narrowed.
    w.act(POLICE, narrow(3), None).expect("the acceptance");
}

#[test]
fn bad_hold_fields_are_invalid_naming_the_field() {
    let mut w = World::new();
    let long_id = "x".repeat(65);
    let long_basis = "b".repeat(2_001);
    let cases: Vec<(Kind, &str)> = vec![
        (place("", "CPL"), "legal_hold_placed.hold_id"),
        (place(&long_id, "CPL"), "legal_hold_placed.hold_id"),
        (place("a b", "CPL"), "legal_hold_placed.hold_id"),
        (place("lh1", ""), "legal_hold_placed.legal_basis"),
        (place("lh1", "  "), "legal_hold_placed.legal_basis"),
        (place("lh1", &long_basis), "legal_hold_placed.legal_basis"),
        (lift(""), "legal_hold_lifted.hold_id"),
        (
            Kind::LegalHoldLifted(LegalHoldLifted {
                hold_id: "lh1".into(),
                reason: String::new(),
            }),
            "legal_hold_lifted.reason",
        ),
    ];
    for (payload, field) in cases {
        match w.act(POLICE, payload, None) {
            Err(Rejection::Invalid { field: f, .. }) => assert_eq!(f, field),
            other => panic!("expected invalid {field}, got {other:?}"),
        }
    }
    assert_eq!(w.state.version, 3, "nothing recorded");
}
