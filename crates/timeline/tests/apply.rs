//! Writing the projection: idempotent redelivery, batch size independence, resuming
//! after a reopen, reset and rebuild, and refusal of events that do not continue their
//! case, all against a real SQLite file.

mod common;

use time::Duration;

use casebus_proto::event::v1::Agency;
use casebus_timeline::{ProjectError, ProjectedInput, Projection};

use common::catalogue::{
    accept, declined_case, dropped_case, handoff, main_case, note, opened, supervised_case,
};
use common::{CUSTOMS, CaseBuilder, IPC, Stream, T0, project, temp_projection};

/// The scripted main case plus two short ones, interleaved, with holes in the
/// sequences where dead-lettered messages would be.
fn scripted_stream() -> Stream {
    scripted_stream_recorded(true)
}

/// How many cases the scripted stream holds (the catalogue's main, declined, dropped and
/// supervised cases).
const SCRIPTED_CASES: u64 = 4;

/// The scripted stream, its hand-offs with their recorded due times or, with
/// `recorded_dues` false, without them (events recorded before due times were).
fn scripted_stream_recorded(recorded_dues: bool) -> Stream {
    let builder = |id: &str, start| {
        let mut b = CaseBuilder::new(id, start);
        b.without_recorded_dues = !recorded_dues;
        b
    };
    let mut main = builder("MAIN-1", T0);
    main.script(main_case(T0));
    let mut declined = builder("DECL-1", T0 + Duration::days(1));
    declined.script(declined_case());
    let mut dropped = builder("DROP-1", T0 + Duration::days(2));
    dropped.script(dropped_case());
    let mut supervised = builder("SUPV-1", T0 + Duration::days(3));
    supervised.script(supervised_case());
    let mut stream = Stream::with_gaps(9);
    stream.interleave(&[
        &main.events,
        &declined.events,
        &dropped.events,
        &supervised.events,
    ]);
    stream
}

fn dump(projection: &Projection) -> String {
    projection.dump_for_comparison().expect("dump")
}

#[test]
fn redelivering_a_batch_applies_nothing_twice() {
    let (_dir, _path, mut projection) = temp_projection();
    let stream = scripted_stream();
    let inputs = stream.inputs();

    let first = projection.apply_batch(&inputs).expect("first delivery");
    assert_eq!(first.applied, inputs.len());
    assert_eq!(first.cases_touched as u64, SCRIPTED_CASES);
    assert_eq!(first.position, stream.last_sequence());
    let before = dump(&projection);
    let counts = projection.counts(T0).expect("counts");

    let again = projection.apply_batch(&inputs).expect("redelivery");
    assert_eq!(again.applied, 0);
    assert_eq!(again.already_applied, inputs.len());
    assert_eq!(again.cases_touched, 0);
    assert_eq!(again.position, first.position);
    assert_eq!(projection.position().expect("position"), first.position);
    assert_eq!(projection.counts(T0).expect("counts"), counts);
    assert_eq!(dump(&projection), before);
}

#[test]
fn a_batch_holding_the_same_message_twice_applies_it_once() {
    let (_dir, _path, mut projection) = temp_projection();
    let stream = scripted_stream();
    let mut inputs = stream.inputs();
    inputs.insert(3, inputs[2]);
    let outcome = projection.apply_batch(&inputs).expect("applies");
    assert_eq!(outcome.applied, stream.log.len());
    assert_eq!(outcome.already_applied, 1);
}

#[test]
fn applying_one_by_one_or_in_batches_gives_identical_projections() {
    let stream = scripted_stream();
    let mut dumps = Vec::new();
    for batch in [1, 7, 500] {
        let (_dir, _path, mut projection) = temp_projection();
        project(&mut projection, &stream, batch);
        dumps.push((batch, dump(&projection)));
    }
    let (_, reference) = &dumps[0];
    assert!(reference.contains("events|"), "the dump shows rows");
    for (batch, text) in &dumps[1..] {
        assert_eq!(text, reference, "batches of {batch} differ from one by one");
    }
}

#[test]
fn a_small_cache_gives_the_same_projection_as_a_large_one() {
    let stream = scripted_stream();
    let (_d1, _p1, mut small) = temp_projection();
    small.set_cache_capacity(1);
    let (_d2, _p2, mut large) = temp_projection();
    // Interleaved cases evict each other from a one-case cache on every event, so each
    // event folds its case again from the stored rows.
    project(&mut small, &stream, 1);
    project(&mut large, &stream, 1);
    assert_eq!(dump(&small), dump(&large));
}

#[test]
fn a_reopened_projection_resumes_at_its_stored_position() {
    let stream = scripted_stream();
    let inputs = stream.inputs();
    let half = inputs.len() / 2;
    let (_dir, path, mut projection) = temp_projection();
    projection.apply_batch(&inputs[..half]).expect("first half");
    let stored = projection.position().expect("position");
    assert_eq!(stored, inputs[half - 1].sequence);
    drop(projection);

    let mut reopened = Projection::open(&path).expect("reopens");
    assert_eq!(reopened.position().expect("position"), stored);
    // The consumer would resume after the stored position, but a redelivery of the
    // whole stream is just as safe: the first half is skipped.
    let outcome = reopened.apply_batch(&inputs).expect("whole stream");
    assert_eq!(outcome.already_applied, half);
    assert_eq!(outcome.applied, inputs.len() - half);

    let (_d2, _p2, mut fresh) = temp_projection();
    project(&mut fresh, &stream, 500);
    assert_eq!(dump(&reopened), dump(&fresh));
}

#[test]
fn reset_and_reapply_yields_an_identical_projection() {
    let stream = scripted_stream();
    let (_dir, _path, mut projection) = temp_projection();
    projection.set_consumer("gateway-1").expect("consumer");
    project(&mut projection, &stream, 64);
    let before = dump(&projection);
    let counts = projection.counts(T0).expect("counts");
    assert!(counts.events > 0 && counts.cases == SCRIPTED_CASES);

    projection.reset().expect("reset");
    let empty = projection.counts(T0).expect("counts");
    assert_eq!(
        empty.events + empty.cases + empty.tracks + empty.handoffs,
        0
    );
    assert_eq!(projection.position().expect("position"), 0);
    assert_eq!(
        projection.consumer().expect("consumer").as_deref(),
        Some("gateway-1")
    );

    project(&mut projection, &stream, 64);
    assert_eq!(dump(&projection), before);
    assert_eq!(projection.counts(T0).expect("counts"), counts);
}

#[test]
fn the_same_event_under_a_later_sequence_is_skipped_as_a_duplicate() {
    let stream = scripted_stream();
    let (_dir, _path, mut projection) = temp_projection();
    project(&mut projection, &stream, 500);
    let before = dump(&projection);
    let (_, event) = &stream.log[5];
    let later = stream.last_sequence() + 10;
    let outcome = projection
        .apply_batch(&[ProjectedInput::new(later, event)])
        .expect("a duplicate is no error");
    assert_eq!(outcome.duplicates, 1);
    assert_eq!(outcome.applied, 0);
    assert_eq!(outcome.position, later);
    let after = dump(&projection);
    assert_eq!(
        after.replace(
            &format!("last_sequence={later}"),
            &format!("last_sequence={}", stream.last_sequence())
        ),
        before,
        "only the position moved"
    );
}

#[test]
fn an_event_whose_predecessor_is_missing_is_refused_and_its_batch_is_rolled_back() {
    let mut case = CaseBuilder::new("GAP-1", T0);
    case.record(CUSTOMS, opened("gap"));
    case.record(CUSTOMS, note("two"));
    case.record(CUSTOMS, note("three"));
    let mut other = CaseBuilder::new("OK-1", T0);
    other.record(IPC, opened("fine"));
    let (_dir, _path, mut projection) = temp_projection();

    let error = projection
        .apply_batch(&[
            ProjectedInput::new(1, &other.events[0]),
            ProjectedInput::new(2, &case.events[0]),
            ProjectedInput::new(3, &case.events[2]),
        ])
        .expect_err("version 2 is missing");
    match &error {
        ProjectError::OutOfOrder {
            case_id,
            sequence,
            expected,
            found,
            ..
        } => {
            assert_eq!(case_id, "GAP-1");
            assert_eq!((*sequence, *expected, *found), (3, 2, 3));
        }
        other => panic!("expected OutOfOrder, got {other:?}"),
    }
    assert!(!error.is_transient());
    assert!(error.to_string().contains("GAP-1"), "{error}");
    let counts = projection.counts(T0).expect("counts");
    assert_eq!((counts.events, counts.cases, counts.position), (0, 0, 0));

    // The failed batch left nothing behind, in the file or in the cache.
    let outcome = projection
        .apply_batch(&[
            ProjectedInput::new(1, &other.events[0]),
            ProjectedInput::new(2, &case.events[0]),
            ProjectedInput::new(3, &case.events[1]),
            ProjectedInput::new(4, &case.events[2]),
        ])
        .expect("the complete history applies");
    assert_eq!(outcome.applied, 4);
    let state = projection
        .case_state(&case.case_id)
        .expect("state")
        .expect("case exists");
    assert_eq!(state, case.state);
}

#[test]
fn another_event_at_a_taken_version_is_refused_as_a_conflict() {
    let mut first = CaseBuilder::new("FORK-1", T0);
    first.record(CUSTOMS, opened("fork"));
    first.record(CUSTOMS, note("one branch"));
    let mut second = CaseBuilder::new("FORK-1", T0);
    second.record(CUSTOMS, opened("fork"));
    second.request_prefix = "alt".into();
    second.record(
        CUSTOMS,
        handoff(
            "h1",
            casebus_proto::event::v1::HandoffKind::AssistanceRequest,
            Agency::IpCenter,
        ),
    );
    let (_dir, _path, mut projection) = temp_projection();
    projection
        .apply_batch(&[
            ProjectedInput::new(1, &first.events[0]),
            ProjectedInput::new(2, &first.events[1]),
        ])
        .expect("first branch");
    let error = projection
        .apply_batch(&[ProjectedInput::new(3, &second.events[1])])
        .expect_err("version 2 is taken");
    assert!(
        matches!(
            &error,
            ProjectError::Conflict {
                version: 2,
                sequence: 3,
                ..
            }
        ),
        "{error:?}"
    );
    assert_eq!(projection.position().expect("position"), 2);
}

#[test]
fn advancing_the_position_accounts_for_dead_lettered_messages() {
    let (_dir, _path, mut projection) = temp_projection();
    let mut case = CaseBuilder::new("DLQ-1", T0);
    case.record(CUSTOMS, opened("dlq"));
    projection
        .apply_batch(&[ProjectedInput::new(4, &case.events[0])])
        .expect("applies");
    assert_eq!(projection.advance_position(9).expect("advance"), 9);
    assert_eq!(projection.advance_position(2).expect("never backwards"), 9);
    let outcome = projection
        .apply_batch(&[ProjectedInput::new(4, &case.events[0])])
        .expect("redelivery");
    assert_eq!(outcome.already_applied, 1);
}

#[test]
fn an_empty_batch_changes_nothing() {
    let (_dir, _path, mut projection) = temp_projection();
    let outcome = projection.apply_batch(&[]).expect("empty batch");
    assert_eq!(outcome.applied + outcome.already_applied, 0);
    assert_eq!(outcome.position, 0);
}

#[test]
fn the_file_runs_in_wal_mode_at_the_current_schema_version() {
    let (_dir, path, projection) = temp_projection();
    drop(projection);
    let conn = rusqlite::Connection::open(&path).expect("raw connection");
    let mode: String = conn
        .query_row("PRAGMA journal_mode", [], |r| r.get(0))
        .expect("journal mode");
    assert_eq!(mode, "wal");
    let version: i64 = conn
        .query_row("SELECT version FROM schema_version", [], |r| r.get(0))
        .expect("schema version");
    assert_eq!(version, 5);
}

#[test]
fn a_file_written_by_a_newer_schema_is_refused() {
    let (_dir, path, projection) = temp_projection();
    drop(projection);
    let conn = rusqlite::Connection::open(&path).expect("raw connection");
    conn.execute("UPDATE schema_version SET version = 99", [])
        .expect("bump version");
    drop(conn);
    let error = Projection::open(&path).expect_err("newer schema");
    assert!(
        matches!(
            error,
            ProjectError::NewerSchema {
                found: 99,
                supported: 5
            }
        ),
        "{error:?}"
    );
}

#[test]
fn reopening_keeps_rows_and_the_consumer_name() {
    let stream = scripted_stream();
    let (_dir, path, mut projection) = temp_projection();
    projection.set_consumer("gateway-a").expect("consumer");
    project(&mut projection, &stream, 100);
    let before = dump(&projection);
    drop(projection);
    let reopened = Projection::open(&path).expect("reopens");
    assert_eq!(dump(&reopened), before);
    assert_eq!(
        reopened.consumer().expect("consumer").as_deref(),
        Some("gateway-a")
    );
    let state = reopened
        .case_state(&common::case("MAIN-1"))
        .expect("state")
        .expect("case exists");
    let expected = common::fold(
        stream
            .log
            .iter()
            .map(|(_, e)| e)
            .filter(|e| e.case_id.as_str() == "MAIN-1"),
    );
    assert_eq!(
        state, expected,
        "a state folded from stored events equals the direct fold"
    );
}

#[test]
fn a_handoff_accepted_later_updates_the_derived_rows() {
    let mut case = CaseBuilder::new("LATE-1", T0);
    case.record(CUSTOMS, opened("late"));
    case.record(
        CUSTOMS,
        handoff(
            "h1",
            casebus_proto::event::v1::HandoffKind::AssistanceRequest,
            Agency::IpCenter,
        ),
    );
    case.record(IPC, accept("h1"));
    let (_dir, _path, mut projection) = temp_projection();
    for (i, event) in case.events.iter().enumerate() {
        projection
            .apply_batch(&[ProjectedInput::new(i as u64 + 1, event)])
            .expect("applies");
    }
    let summary = projection
        .case_summary(&case.case_id, T0)
        .expect("summary")
        .expect("case exists");
    assert_eq!(
        summary.tracks.len(),
        2,
        "ip center's track opened on accept"
    );
    assert_eq!(
        summary.handoffs[0].handoff.status,
        casebus_domain::HandoffStatus::Accepted
    );
}

#[test]
fn a_second_handle_on_the_same_file_never_serves_a_stale_state() {
    let stream = scripted_stream();
    let inputs = stream.inputs();
    let half = inputs.len() / 2;
    let (_dir, path, mut writer) = temp_projection();
    let reader = Projection::open(&path).expect("second handle");
    let main = common::case("MAIN-1");
    let events_of_main = |upto: usize| {
        common::fold(
            stream.log[..upto]
                .iter()
                .map(|(_, e)| e)
                .filter(|e| e.case_id == main),
        )
    };

    writer.apply_batch(&inputs[..half]).expect("first half");
    let early = reader.case_state(&main).expect("state").expect("exists");
    assert_eq!(early, events_of_main(half));

    writer.apply_batch(&inputs[half..]).expect("second half");
    let late = reader.case_state(&main).expect("state").expect("exists");
    assert_eq!(
        late,
        events_of_main(inputs.len()),
        "the reader's cache entry was stale"
    );
    assert_eq!(reader.position().expect("position"), stream.last_sequence());
    assert_eq!(dump(&reader), dump(&writer));
}

#[test]
fn a_file_without_counted_clocks_has_them_recounted_from_its_events_before_the_next_batch() {
    let stream = scripted_stream();
    let (_dir, path, mut projection) = temp_projection();
    project(&mut projection, &stream, 16);
    let counted = dump(&projection);
    assert!(
        counted.contains("clock=\"receipt\""),
        "h5 of the main case runs its receipt clock"
    );
    drop(projection);
    // What a file migrated from schema version 1 looks like: no clock and no digest.
    let conn = rusqlite::Connection::open(&path).expect("raw connection");
    conn.execute_batch(
        "UPDATE handoffs SET clock = NULL, clock_started_at = NULL, clock_due_at = NULL,
             clock_basis = NULL, clock_error = NULL;
         DELETE FROM clock_settings;",
    )
    .expect("forget the clocks");
    drop(conn);
    let mut reopened = Projection::open(&path).expect("reopen");
    assert_ne!(dump(&reopened), counted);
    assert_eq!(
        reopened.recount_clocks().expect("recount"),
        SCRIPTED_CASES,
        "every case with hand-offs"
    );
    assert_eq!(dump(&reopened), counted);
    assert_eq!(reopened.recount_clocks().expect("nothing to do"), 0);
}

/// Other rules at the gateway recount every clock and give what a projection made with
/// them gives. For hand-offs recorded before due times were, the due times change;
/// hand-offs that recorded theirs keep them (the recording service is the authority).
#[test]
fn other_rules_recount_every_clock_and_equal_a_projection_made_with_them() {
    let rules = casebus_domain::DeadlineRules::parse(
        "[clocks.receipt]\namount = 2\nunit = \"hours\"\n[clocks.judgment_service]\namount = 1\nunit = \"days\"\n",
    )
    .expect("rules");
    for recorded_dues in [false, true] {
        let stream = scripted_stream_recorded(recorded_dues);
        let (_dir, _path, mut old) = temp_projection();
        project(&mut old, &stream, 16);
        let before = dump(&old);
        old.set_clocks(rules.clone(), casebus_domain::Calendar::shipped());
        assert_eq!(old.recount_clocks().expect("recount"), SCRIPTED_CASES);
        let (_dir2, _path2, mut fresh) = temp_projection();
        fresh.set_clocks(rules.clone(), casebus_domain::Calendar::shipped());
        project(&mut fresh, &stream, 16);
        assert_eq!(dump(&old), dump(&fresh));
        if recorded_dues {
            assert_eq!(dump(&old), before, "the recorded due times are kept");
        } else {
            assert_ne!(dump(&old), before, "the due times changed");
        }
    }
}

/// The `events` table as schema version 2 had it, with its unique index on event ids,
/// `handoffs` without the clock columns of version 4, and no `case_clocks` (version 5).
const EVENTS_V2: &str = "
    CREATE TABLE events_old (
        stream_sequence INTEGER PRIMARY KEY, case_id TEXT NOT NULL,
        case_version INTEGER NOT NULL CHECK (case_version >= 1),
        event_id TEXT NOT NULL UNIQUE, office_id TEXT NOT NULL, agency TEXT NOT NULL,
        type_name TEXT NOT NULL, occurred_at INTEGER NOT NULL, recorded_at INTEGER NOT NULL,
        visibility TEXT NOT NULL, visible_to TEXT NOT NULL, hash BLOB NOT NULL,
        prev_hash BLOB, signed BLOB NOT NULL, UNIQUE (case_id, case_version));
    INSERT INTO events_old SELECT * FROM events;
    DROP TABLE events;
    ALTER TABLE events_old RENAME TO events;
    ALTER TABLE handoffs DROP COLUMN clock_extensions;
    ALTER TABLE handoffs DROP COLUMN clock_extensions_allowed;
    ALTER TABLE handoffs DROP COLUMN clock_suspended_since;
    DROP TABLE case_clocks;
    UPDATE schema_version SET version = 2;";

fn event_indexes(path: &std::path::Path) -> Vec<String> {
    let conn = rusqlite::Connection::open(path).expect("raw connection");
    let mut stmt = conn
        .prepare("SELECT name FROM pragma_index_list('events') ORDER BY name")
        .expect("index list");
    stmt.query_map([], |r| r.get(0))
        .expect("indexes")
        .collect::<Result<_, _>>()
        .expect("names")
}

#[test]
fn a_schema_2_file_is_upgraded_with_its_rows_unchanged_and_projects_on_as_a_new_one() {
    let stream = scripted_stream();
    let inputs = stream.inputs();
    let half = inputs.len() / 2;
    let (_dir, path, mut projection) = temp_projection();
    projection.set_consumer("gateway-a").expect("consumer");
    projection.apply_batch(&inputs[..half]).expect("first half");
    let before = dump(&projection);
    drop(projection);
    assert_eq!(
        event_indexes(&path).len(),
        1,
        "version 3: case and version only"
    );
    // Turn the file into what schema version 2 wrote.
    let conn = rusqlite::Connection::open(&path).expect("raw connection");
    conn.execute_batch(EVENTS_V2).expect("back to version 2");
    drop(conn);
    assert_eq!(event_indexes(&path).len(), 2, "version 2: event id too");

    let mut upgraded = Projection::open(&path).expect("upgrade");
    assert_eq!(event_indexes(&path).len(), 1, "the event id index is gone");
    assert_eq!(
        dump(&upgraded),
        before,
        "every row as it was, at version 3 again"
    );
    assert_eq!(
        upgraded.consumer().expect("consumer").as_deref(),
        Some("gateway-a")
    );
    upgraded.apply_batch(&inputs[half..]).expect("second half");
    let (_dir2, _path2, mut fresh) = temp_projection();
    fresh.set_consumer("gateway-a").expect("consumer");
    fresh.apply_batch(&inputs).expect("whole stream");
    assert_eq!(dump(&upgraded), dump(&fresh));

    // A second event at a stored version is still told apart: the same bytes are a
    // duplicate, anything else a conflict (the case and version index stays).
    let copy = ProjectedInput::new(stream.last_sequence() + 1, inputs[0].event);
    let again = upgraded.apply_batch(&[copy]).expect("a copy");
    assert_eq!((again.applied, again.duplicates), (0, 1));
}
