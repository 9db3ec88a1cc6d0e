//! Which office a reader may be told of: `names_office` (the office that recorded one
//! event) and `office_known` (an office anywhere in the case, tracks included), table
//! style over one folded case. A sealed event names its office only to those who may
//! read it; a restricted one names it in its stub; an office that recorded only sealed
//! events is unknown to everyone else; a change of visibility moves both answers.

use time::OffsetDateTime;

use casebus_domain::{CaseState, RecordedEvent, names_office, office_known};
use casebus_proto::event::v1::payload::Kind;
use casebus_proto::event::v1::*;
use casebus_proto::{CaseId, EventId, OfficeId, RequestId};

use crate::common::{COURT, CUSTOMS, IPC, POLICE, PROC};

mod common;

const CUSTOMS_SH: &str = "customs:shanghai";

fn office(id: &str) -> OfficeId {
    OfficeId::new(id).expect("office id")
}

fn sealed() -> Visibility {
    Visibility {
        kind: VisibilityKind::OriginOnly as i32,
        agencies: vec![],
    }
}

fn open() -> Visibility {
    Visibility {
        kind: VisibilityKind::Participants as i32,
        agencies: vec![],
    }
}

fn listed(agencies: &[Agency]) -> Visibility {
    Visibility {
        kind: VisibilityKind::ListedAgencies as i32,
        agencies: agencies.iter().map(|a| *a as i32).collect(),
    }
}

fn note(text: &str) -> Kind {
    Kind::NoteAdded(NoteAdded { text: text.into() })
}

/// A case folded event by event, as recorded by `(office, visibility, payload)`.
struct Case {
    id: CaseId,
    state: CaseState,
}

impl Case {
    fn new() -> Self {
        Self {
            id: CaseId::new("VIS-1").expect("case id"),
            state: CaseState::default(),
        }
    }

    fn record(&mut self, by: &str, visibility: Visibility, payload: Kind) -> u64 {
        let version = self.state.version + 1;
        let by = office(by);
        let request = RequestId::new(&format!("r{version}")).expect("request id");
        let event_id = EventId::derive(&by, &self.id, &request);
        self.state.apply(&RecordedEvent {
            case_id: &self.id,
            version,
            event_id: &event_id,
            office: &by,
            occurred_at: OffsetDateTime::UNIX_EPOCH,
            visibility: Some(&visibility),
            payload: Some(&payload),
        });
        version
    }

    fn names(&self, version: u64, viewer: &str) -> bool {
        names_office(&self.state, version, &office(viewer))
    }

    fn knows(&self, recorder: &str, viewer: &str) -> bool {
        office_known(&self.state, &office(recorder), &office(viewer))
    }
}

#[test]
fn an_office_is_named_only_where_the_viewer_may_read_it_or_the_event_is_not_sealed() {
    let mut case = Case::new();
    let opening = case.record(
        CUSTOMS,
        open(),
        Kind::CaseOpened(CaseOpened {
            case_type: CaseType::CounterfeitTrademark as i32,
            title: "counterfeit watches".into(),
            ..Default::default()
        }),
    );
    let customs_sealed = case.record(CUSTOMS, sealed(), note("informant's name"));
    let shanghai_sealed = case.record(CUSTOMS_SH, sealed(), note("a tip from Shanghai"));
    let ipc_for_court = case.record(IPC, listed(&[Agency::Court]), note("for the court"));

    // (event, viewer, named?)
    let table = [
        (opening, POLICE, true),
        (opening, COURT, true),
        (customs_sealed, CUSTOMS, true),
        (customs_sealed, POLICE, false),
        (customs_sealed, CUSTOMS_SH, false),
        (shanghai_sealed, CUSTOMS_SH, true),
        (shanghai_sealed, CUSTOMS, false),
        (shanghai_sealed, COURT, false),
        (ipc_for_court, COURT, true),
        (ipc_for_court, POLICE, true),
        (ipc_for_court, PROC, true),
        (99, POLICE, false),
        (0, POLICE, false),
    ];
    for (version, viewer, named) in table {
        assert_eq!(
            case.names(version, viewer),
            named,
            "v{version} named to {viewer}"
        );
    }

    // (recorder, viewer, known?)
    let table = [
        (CUSTOMS, POLICE, true),
        (CUSTOMS_SH, POLICE, false),
        (CUSTOMS_SH, CUSTOMS, false),
        (CUSTOMS_SH, CUSTOMS_SH, true),
        (IPC, POLICE, true),
        (PROC, POLICE, false),
    ];
    for (recorder, viewer, known) in table {
        assert_eq!(
            case.knows(recorder, viewer),
            known,
            "{recorder} known to {viewer}"
        );
    }
}

#[test]
fn a_change_of_visibility_moves_whether_the_office_is_named_both_ways() {
    let mut case = Case::new();
    case.record(
        CUSTOMS,
        open(),
        Kind::CaseOpened(CaseOpened {
            case_type: CaseType::CounterfeitTrademark as i32,
            title: "t".into(),
            ..Default::default()
        }),
    );
    let secret = case.record(PROC, sealed(), note("a sealed instruction"));
    assert!(!case.names(secret, POLICE));
    assert!(!case.knows(PROC, POLICE));

    let change = |target_version: u64, visibility: Visibility| {
        Kind::VisibilityChanged(VisibilityChanged {
            target_version,
            visibility: Some(visibility),
            reason: "review".into(),
            wrapped_keys: Vec::new(),
        })
    };
    // The change itself is sealed, so it names nobody: only the opened event does.
    case.record(PROC, sealed(), change(secret, open()));
    assert!(case.names(secret, POLICE));
    assert!(case.knows(PROC, POLICE));

    case.record(PROC, sealed(), change(secret, sealed()));
    assert!(!case.names(secret, POLICE), "sealed again");
    assert!(!case.knows(PROC, POLICE), "sealed again");
    assert!(!case.knows(PROC, CUSTOMS), "nor to the opening agency");
}
