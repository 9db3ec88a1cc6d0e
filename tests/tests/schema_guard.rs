//! The schema evolution guard: the current protos against the committed baseline
//! (`proto/baseline.txt`), and the guard's own rules on synthetic changes.

use casebus_tests::schema::{Snapshot, breaking_changes};
use casebus_tests::workspace_root;

fn current() -> Snapshot {
    Snapshot::from_descriptor_set(casebus_proto::FILE_DESCRIPTOR_SET)
        .expect("descriptor set decodes")
}

#[test]
fn the_protos_make_no_breaking_change_against_the_baseline() {
    let path = workspace_root().join("proto/baseline.txt");
    let current = current();
    if std::env::var_os("CASEBUS_BLESS_SCHEMA").is_some() {
        if let Ok(text) = std::fs::read_to_string(&path) {
            let problems = breaking_changes(&Snapshot::from_text(&text), &current);
            assert!(
                problems.is_empty(),
                "refusing to bless a breaking change:\n{}",
                problems.join("\n")
            );
        }
        std::fs::write(&path, current.to_text()).expect("write baseline");
    }
    let text = std::fs::read_to_string(&path).expect("proto/baseline.txt is committed");
    let baseline = Snapshot::from_text(&text);
    assert!(
        baseline.elements.len() > 100,
        "the baseline covers the catalogue"
    );
    let problems = breaking_changes(&baseline, &current);
    assert!(
        problems.is_empty(),
        "breaking proto changes:\n{}",
        problems.join("\n")
    );
}

fn edit(base: &Snapshot, from: &str, to: Option<&str>) -> Snapshot {
    let text = base.to_text();
    assert!(text.contains(from), "fixture line {from:?} exists");
    Snapshot::from_text(&match to {
        Some(to) => text.replace(from, to),
        None => text.replace(&format!("{from}\n"), ""),
    })
}

#[test]
fn removing_a_field_without_reserving_its_number_is_breaking() {
    let base = current();
    let line = "field .casebus.event.v1.Event 6 actor string optional -";
    let removed = edit(&base, line, None);
    assert_eq!(
        breaking_changes(&base, &removed),
        vec!["field .casebus.event.v1.Event.actor (6) was removed without reserving its number"]
    );
    let reserved = edit(&base, line, Some("reserved .casebus.event.v1.Event 6 7"));
    assert!(breaking_changes(&base, &reserved).is_empty());
}

#[test]
fn changing_a_field_type_label_or_oneof_is_breaking() {
    let base = current();
    let line = "field .casebus.event.v1.Event 3 case_version uint64 optional -";
    let retyped = edit(
        &base,
        line,
        Some("field .casebus.event.v1.Event 3 case_version string optional -"),
    );
    assert_eq!(breaking_changes(&base, &retyped).len(), 1);
    let repeated = edit(
        &base,
        line,
        Some("field .casebus.event.v1.Event 3 case_version uint64 repeated -"),
    );
    assert_eq!(breaking_changes(&base, &repeated).len(), 1);
    let oneofed = edit(
        &base,
        line,
        Some("field .casebus.event.v1.Event 3 case_version uint64 optional kind"),
    );
    assert_eq!(breaking_changes(&base, &oneofed).len(), 1);
}

#[test]
fn reusing_a_reserved_number_is_breaking() {
    let base = current();
    let mut with_reserved = base.clone();
    with_reserved
        .elements
        .insert(casebus_tests::schema::Element::Reserved {
            scope: ".casebus.event.v1.Event".into(),
            start: 40,
            end: 41,
        });
    let mut reused = with_reserved.clone();
    reused
        .elements
        .insert(casebus_tests::schema::Element::Field {
            message: ".casebus.event.v1.Event".into(),
            number: 40,
            name: "shiny".into(),
            ty: "string".into(),
            label: "optional".into(),
            oneof: "-".into(),
        });
    let problems = breaking_changes(&with_reserved, &reused);
    assert!(
        problems
            .iter()
            .any(|p| p.contains("reuses reserved number 40")),
        "{problems:?}"
    );
}

#[test]
fn renumbering_or_removing_an_enum_value_is_breaking() {
    let base = current();
    let line = "value .casebus.event.v1.Agency CUSTOMS 4";
    let renumbered = edit(
        &base,
        line,
        Some("value .casebus.event.v1.Agency CUSTOMS 9"),
    );
    assert_eq!(
        breaking_changes(&base, &renumbered),
        vec!["enum value .casebus.event.v1.Agency.CUSTOMS was renumbered from 4 to 9"]
    );
    let removed = edit(&base, line, None);
    assert_eq!(breaking_changes(&base, &removed).len(), 1);
}

#[test]
fn additions_are_never_breaking() {
    let base = current();
    let mut added = base.clone();
    added
        .elements
        .insert(casebus_tests::schema::Element::Field {
            message: ".casebus.event.v1.Payload".into(),
            number: 70,
            name: "something_new".into(),
            ty: ".casebus.event.v1.NoteAdded".into(),
            label: "optional".into(),
            oneof: "kind".into(),
        });
    added
        .elements
        .insert(casebus_tests::schema::Element::Value {
            r#enum: ".casebus.event.v1.Agency".into(),
            name: "MARKET_REGULATOR".into(),
            number: 6,
        });
    assert!(breaking_changes(&base, &added).is_empty());
}

#[test]
fn the_text_form_round_trips() {
    let base = current();
    assert_eq!(Snapshot::from_text(&base.to_text()), base);
}

#[test]
fn the_content_marks_are_recorded_and_removing_one_is_breaking() {
    let base = current();
    // Read from the descriptors' options: a sample of each kind of content.
    for field in [
        ".casebus.event.v1.NoteAdded.text",
        ".casebus.event.v1.Party.name",
        ".casebus.event.v1.Party.identifier",
        ".casebus.event.v1.HandoffRequested.reason",
        ".casebus.event.v1.EvidenceRecorded.location",
    ] {
        let line = format!("content {field}");
        assert!(base.to_text().contains(&line), "{line} is in the snapshot");
    }
    // What the rules fold is not content.
    for field in [
        ".casebus.event.v1.Party.party_id",
        ".casebus.event.v1.HandoffRequested.handoff_id",
        ".casebus.event.v1.HandoffRequested.to_agency",
    ] {
        assert!(!base.to_text().contains(&format!("content {field}\n")));
    }
    let unmarked = edit(&base, "content .casebus.event.v1.Party.identifier", None);
    assert_eq!(
        breaking_changes(&base, &unmarked),
        vec![
            "field .casebus.event.v1.Party.identifier is no longer marked content: new events would carry it readable by every participant"
        ]
    );
    // A new mark is an addition.
    assert!(breaking_changes(&unmarked, &base).is_empty());
}
