//! Reading the projection: summaries and states equal to a direct fold of the same
//! events, timeline and feed paging, case lists with every filter and cursor paging,
//! lookup by reference, effective visibility, overdue hand-offs, and typed refusals of
//! invalid input.

mod common;

use std::collections::BTreeSet;

use time::{Duration, OffsetDateTime};

use casebus_domain::{CaseState, HandoffStatus, Sight, TrackStatus, effective_visibility, sight};
use casebus_proto::event::v1::{Agency, CaseType, HandoffKind, PartyRole, VisibilityKind};
use casebus_proto::{CaseId, OfficeId};
use casebus_timeline::{
    CaseFilter, CaseListItem, Direction, ListReader, MAX_LIMIT, Projection, QueryError, TimelineRow,
};

use common::catalogue::{
    accept, accept_numbered, ack, close, declined_case, dropped_case, handoff, listed, main_case,
    named_party, note, opened, opened_as, origin_only, party_added, reference, visibility_changed,
};
use common::{
    COURT, CUSTOMS, CUSTOMS_SH, CaseBuilder, IPC, POLICE, Stream, T0, case, default_clocks,
    expected_clock, fold, has_overdue_clock, project, temp_projection,
};

/// The main case, a case with references linked by several offices, and two short
/// ones, projected in batches of 16.
struct Scripted {
    cases: Vec<CaseBuilder>,
    stream: Stream,
    projection: Projection,
    _dir: tempfile::TempDir,
}

fn scripted() -> Scripted {
    let mut main = CaseBuilder::new("MAIN-1", T0);
    main.script(main_case(T0));
    let mut refs = CaseBuilder::new("REFS-1", T0 + Duration::hours(3));
    refs.record(
        CUSTOMS,
        opened_as(
            CaseType::PatentInfringement,
            "Design patent lamps",
            vec![],
            "NB-CUS-1",
        ),
    );
    refs.record(CUSTOMS, reference(Agency::Customs, "SHARED-7"));
    refs.record(
        CUSTOMS,
        handoff(
            "r1",
            HandoffKind::SuspectedCrimeReferral,
            Agency::PublicSecurity,
        ),
    );
    refs.record(POLICE, ack("r1"));
    refs.record(POLICE, accept_numbered("r1", "NB-PS-1"));
    refs.record(
        POLICE,
        handoff("x1", HandoffKind::AssistanceRequest, Agency::Customs),
    );
    // Another customs office accepts with the number customs:ningbo linked already.
    refs.record(CUSTOMS_SH, accept_numbered("x1", "SHARED-7"));
    refs.record(
        CUSTOMS,
        party_added(named_party("p9", PartyRole::Witness, "Li Na")),
    );
    refs.record(
        CUSTOMS,
        handoff("y1", HandoffKind::AssistanceRequest, Agency::IpCenter),
    );
    let mut declined = CaseBuilder::new("DECL-1", T0 + Duration::days(1));
    declined.script(declined_case());
    let mut dropped = CaseBuilder::new("DROP-1", T0 + Duration::days(2));
    dropped.script(dropped_case());

    let mut stream = Stream::with_gaps(11);
    stream.interleave(&[
        &main.events,
        &refs.events,
        &declined.events,
        &dropped.events,
    ]);
    let (dir, _path, mut projection) = temp_projection();
    project(&mut projection, &stream, 16);
    Scripted {
        cases: vec![main, refs, declined, dropped],
        stream,
        projection,
        _dir: dir,
    }
}

fn assert_summary_matches_fold(
    projection: &Projection,
    builder: &CaseBuilder,
    now: OffsetDateTime,
) {
    let state = fold(&builder.events);
    assert_eq!(state, builder.state, "the fixture folds like the rules");
    let summary = projection
        .case_summary(&builder.case_id, now)
        .expect("summary")
        .unwrap_or_else(|| panic!("case {} exists", builder.case_id));
    let id = &builder.case_id;

    assert_eq!(summary.version, state.version, "{id}: version");
    assert_eq!(summary.opened, state.opened, "{id}: opened");
    assert_eq!(
        summary.tracks,
        state.tracks.values().cloned().collect::<Vec<_>>(),
        "{id}: tracks"
    );
    let parties: Vec<_> = summary
        .parties
        .iter()
        .map(|p| {
            (
                p.party_id.clone(),
                p.role as i32,
                p.name.clone(),
                p.organisation,
            )
        })
        .collect();
    let expected: Vec<_> = state
        .parties
        .iter()
        .map(|(id, p)| (id.clone(), p.role, p.name.clone(), p.organisation))
        .collect();
    assert_eq!(parties, expected, "{id}: parties");
    for party in &summary.parties {
        assert!(
            (1..=state.version).contains(&party.source_version),
            "{id}: party {} has a source version",
            party.party_id
        );
    }

    let mut handoffs: Vec<_> = state.handoffs.values().cloned().collect();
    handoffs.sort_by_key(|h| h.requested_version);
    assert_eq!(
        summary
            .handoffs
            .iter()
            .map(|h| h.handoff.clone())
            .collect::<Vec<_>>(),
        handoffs,
        "{id}: hand-offs"
    );
    for h in &summary.handoffs {
        assert!(
            h.handoff.due_at.is_some(),
            "{id}: every hand-off has a due time"
        );
        let clock = expected_clock(&state, &h.handoff.handoff_id);
        assert_eq!(
            h.clock, clock,
            "{id}: running clock of {}",
            h.handoff.handoff_id
        );
        let overdue = clock.and_then(|c| c.due_at).is_some_and(|due| now > due);
        assert_eq!(h.overdue, overdue, "{id}: overdue flag");
    }
    assert_eq!(
        summary
            .references
            .iter()
            .map(|r| r.reference.clone())
            .collect::<BTreeSet<_>>(),
        state.references,
        "{id}: references"
    );
    assert_eq!(
        summary
            .participants
            .iter()
            .copied()
            .collect::<BTreeSet<_>>(),
        state.participants(),
        "{id}: participants"
    );
    let projected_state = projection
        .case_state(&builder.case_id)
        .expect("state")
        .expect("case exists");
    assert_eq!(projected_state, state, "{id}: case_state");
}

#[test]
fn the_summary_of_each_scripted_case_matches_a_direct_fold() {
    let s = scripted();
    for now in [T0, T0 + Duration::days(40)] {
        for builder in &s.cases {
            assert_summary_matches_fold(&s.projection, builder, now);
        }
    }
    let main = s
        .projection
        .case_summary(&case("MAIN-1"), T0)
        .expect("summary")
        .expect("exists");
    assert_eq!(main.participants.len(), 5, "all five agencies take part");
    let last = s
        .stream
        .log
        .iter()
        .rev()
        .find(|(_, e)| e.case_id.as_str() == "MAIN-1")
        .map(|(seq, e)| (*seq, e.recorded_at))
        .expect("main case has events");
    assert_eq!((main.last_sequence, main.updated_at), last);
}

#[test]
fn overdue_flags_follow_the_clock_passed_in() {
    let s = scripted();
    let main = &s.cases[0];
    // h5 (judgment notice to customs) is the one hand-off of the main case never answered.
    let due = expected_clock(&main.state, "h5")
        .and_then(|c| c.due_at)
        .expect("h5's clock runs and can be counted");
    let before = s
        .projection
        .case_summary(&main.case_id, due)
        .expect("summary")
        .expect("exists");
    let after = s
        .projection
        .case_summary(&main.case_id, due + Duration::seconds(1))
        .expect("summary")
        .expect("exists");
    let flag = |summary: &casebus_timeline::CaseSummary| {
        summary
            .handoffs
            .iter()
            .find(|h| h.handoff.handoff_id == "h5")
            .map(|h| h.overdue)
    };
    assert_eq!(flag(&before), Some(false), "due but not past due");
    assert_eq!(flag(&after), Some(true));
    let accepted = after
        .handoffs
        .iter()
        .find(|h| h.handoff.handoff_id == "h1")
        .expect("h1");
    assert_eq!(accepted.handoff.status, HandoffStatus::Accepted);
    assert!(
        accepted.clock.is_none() && !accepted.overdue,
        "a hand-off whose clocks are answered is never overdue"
    );
}

#[test]
fn overdue_handoffs_and_counts_are_computed_at_the_time_passed_in() {
    let s = scripted();
    let states: Vec<(CaseId, CaseState)> = s
        .cases
        .iter()
        .map(|b| (b.case_id.clone(), b.state.clone()))
        .collect();
    for now in [T0, T0 + Duration::days(5), T0 + Duration::days(400)] {
        let (rules, calendar) = default_clocks();
        let mut expected: Vec<_> = states
            .iter()
            .flat_map(|(id, st)| {
                st.overdue_clocks(&rules, &calendar, now)
                    .into_iter()
                    .map(move |c| (c.due_at.ok(), id.clone(), c.handoff_id))
            })
            .collect();
        expected.sort();
        let listed = s
            .projection
            .overdue_handoffs(now, MAX_LIMIT)
            .expect("overdue");
        let got: Vec<_> = listed
            .iter()
            .map(|o| {
                (
                    o.clock.as_ref().and_then(|c| c.due_at),
                    o.case_id.clone(),
                    o.handoff.handoff_id.clone(),
                )
            })
            .collect();
        assert_eq!(got, expected, "overdue at {now}");

        let counts = s.projection.counts(now).expect("counts");
        assert_eq!(counts.handoffs_overdue, expected.len() as u64);
        assert_eq!(counts.events, s.stream.log.len() as u64);
        assert_eq!(counts.cases, 4);
        assert_eq!(counts.position, s.stream.last_sequence());
        let open: usize = states
            .iter()
            .map(|(_, st)| st.handoffs.values().filter(|h| h.status.is_open()).count())
            .sum();
        assert_eq!(counts.handoffs_open, open as u64);
        let all: usize = states.iter().map(|(_, st)| st.handoffs.len()).sum();
        assert_eq!(counts.handoffs, all as u64);
    }
    let far = T0 + Duration::days(400);
    let first = s.projection.overdue_handoffs(far, 1).expect("one");
    assert_eq!(first.len(), 1);
    assert!(
        s.projection
            .overdue_handoffs(far, MAX_LIMIT)
            .expect("all")
            .len()
            > 1,
        "the limit cuts the list"
    );
}

fn check_row(row: &TimelineRow, sequence: u64, event: &casebus_integrity::VerifiedEvent) {
    assert_eq!(row.sequence, sequence);
    assert_eq!(row.case_id, event.case_id);
    assert_eq!(row.version, event.version());
    assert_eq!(row.event_id, event.event_id);
    assert_eq!(row.office, event.office);
    assert_eq!(row.agency, event.agency());
    assert_eq!(row.type_name, event.type_name());
    assert_eq!(row.occurred_at, event.occurred_at);
    assert_eq!(row.recorded_at, event.recorded_at);
    assert_eq!(row.hash, event.hash);
    assert_eq!(row.prev_hash, event.prev_hash);
    assert_eq!(
        row.signed,
        event.encode_signed(),
        "signed bytes are kept exactly"
    );
}

#[test]
fn timeline_pages_forward_and_backward_cover_every_version_once() {
    let s = scripted();
    let main = &s.cases[0];
    let total = main.events.len() as u64;
    let sequences: std::collections::HashMap<_, _> = s
        .stream
        .log
        .iter()
        .map(|(seq, e)| (e.event_id.clone(), *seq))
        .collect();

    let mut forward = Vec::new();
    let mut from = 1;
    loop {
        let page = s
            .projection
            .timeline(&main.case_id, from, Direction::Forward, 7)
            .expect("page");
        assert!(page.len() <= 7);
        let Some(last) = page.last() else { break };
        from = last.version + 1;
        forward.extend(page);
    }
    assert_eq!(
        forward.iter().map(|r| r.version).collect::<Vec<_>>(),
        (1..=total).collect::<Vec<_>>()
    );
    for (row, event) in forward.iter().zip(&main.events) {
        check_row(row, sequences[&event.event_id], event);
    }

    let mut backward = Vec::new();
    let mut from = u64::MAX;
    loop {
        let page = s
            .projection
            .timeline(&main.case_id, from, Direction::Backward, 7)
            .expect("page");
        let Some(last) = page.last() else { break };
        if last.version == 1 {
            backward.extend(page);
            break;
        }
        from = last.version - 1;
        backward.extend(page);
    }
    backward.reverse();
    assert_eq!(backward, forward);

    let middle = s
        .projection
        .timeline(&main.case_id, 10, Direction::Backward, 3)
        .expect("page");
    assert_eq!(
        middle.iter().map(|r| r.version).collect::<Vec<_>>(),
        [10, 9, 8]
    );
    let tail = s
        .projection
        .case_events_after_version(&main.case_id, total - 2, 100)
        .expect("tail");
    assert_eq!(
        tail.iter().map(|r| r.version).collect::<Vec<_>>(),
        [total - 1, total]
    );
    assert!(
        s.projection
            .timeline(&case("NOPE-1"), 1, Direction::Forward, 10)
            .expect("page")
            .is_empty()
    );
}

#[test]
fn events_after_a_position_follow_the_stream_order() {
    let s = scripted();
    let mut seen = Vec::new();
    let mut position = 0;
    loop {
        let page = s.projection.events_after(position, 10).expect("page");
        let Some(last) = page.last() else { break };
        position = last.sequence;
        seen.extend(page);
    }
    assert_eq!(seen.len(), s.stream.log.len());
    for (row, (sequence, event)) in seen.iter().zip(&s.stream.log) {
        check_row(row, *sequence, event);
    }
    let from_middle = s
        .projection
        .events_after(s.stream.log[20].0, 5)
        .expect("page");
    assert_eq!(from_middle[0].sequence, s.stream.log[21].0);
}

#[test]
fn visibility_changed_updates_the_effective_visibility_of_its_target() {
    let mut main = CaseBuilder::new("MAIN-1", T0);
    main.script(main_case(T0));
    let changed_at = main
        .events
        .iter()
        .position(|e| e.type_name() == "VisibilityChanged")
        .expect("the main case changes a visibility");
    let mut stream = Stream::new();
    for event in &main.events {
        stream.push(event.clone());
    }
    let (_dir, _path, mut projection) = temp_projection();
    let inputs = stream.inputs();
    projection
        .apply_batch(&inputs[..changed_at])
        .expect("before");
    let note = projection
        .timeline(&main.case_id, 4, Direction::Forward, 1)
        .expect("page");
    assert_eq!(note[0].type_name, "NoteAdded");
    assert_eq!(note[0].visibility.kind(), VisibilityKind::Participants);

    projection
        .apply_batch(&inputs[changed_at..])
        .expect("after");
    let note = projection
        .timeline(&main.case_id, 4, Direction::Forward, 1)
        .expect("page");
    assert_eq!(note[0].visibility, origin_only());
    let state = projection
        .case_state(&main.case_id)
        .expect("state")
        .expect("exists");
    assert_eq!(effective_visibility(&state, 4), Some(&origin_only()));
    // The feed shows the same effective visibility as the timeline.
    let feed = projection.events_after(3, 1).expect("feed");
    assert_eq!(feed[0].visibility, origin_only());
}

#[test]
fn a_listed_visibility_round_trips_with_its_agencies_in_order() {
    let mut case_b = CaseBuilder::new("VIS-1", T0);
    case_b.record(CUSTOMS, opened("visibility"));
    let restricted = listed(&[Agency::PublicSecurity, Agency::Court]);
    case_b.record_with(
        CUSTOMS,
        note("for police and court"),
        Some(restricted.clone()),
    );
    case_b.record_with(CUSTOMS, note("sealed"), Some(origin_only()));
    case_b.record(
        CUSTOMS,
        visibility_changed(2, listed(&[Agency::Court, Agency::IpCenter])),
    );
    let mut stream = Stream::new();
    for event in &case_b.events {
        stream.push(event.clone());
    }
    let (_dir, _path, mut projection) = temp_projection();
    project(&mut projection, &stream, 1);
    let rows = projection
        .timeline(&case_b.case_id, 1, Direction::Forward, 10)
        .expect("timeline");
    assert_eq!(
        rows[1].visibility,
        listed(&[Agency::Court, Agency::IpCenter])
    );
    assert_eq!(rows[2].visibility, origin_only());
    assert_eq!(rows[3].visibility.kind(), VisibilityKind::Participants);
    for row in &rows {
        assert_eq!(
            Some(&row.visibility),
            effective_visibility(&case_b.state, row.version),
            "version {}",
            row.version
        );
    }
}

#[test]
fn find_by_reference_finds_a_case_by_any_agencys_number() {
    let s = scripted();
    let find = |agency, number: &str| {
        s.projection
            .find_by_reference(agency, number)
            .expect("lookup")
            .into_iter()
            .map(|c| c.to_string())
            .collect::<Vec<_>>()
    };
    // NB-CUS-1 is the opening number of every catalogue case and of REFS-1.
    assert_eq!(
        find(Agency::Customs, "NB-CUS-1"),
        ["DECL-1", "DROP-1", "MAIN-1", "REFS-1"]
    );
    assert_eq!(find(Agency::Customs, "NB-CUS-2"), ["MAIN-1"]);
    // Linked by two customs offices: one case, listed once.
    assert_eq!(find(Agency::Customs, "SHARED-7"), ["REFS-1"]);
    assert_eq!(find(Agency::PublicSecurity, "NB-PS-1"), ["REFS-1"]);
    assert!(
        find(Agency::Court, "NB-CUS-1").is_empty(),
        "numbers are per agency"
    );
    assert!(find(Agency::Customs, "nope").is_empty());

    let summary = s
        .projection
        .case_summary(&case("REFS-1"), T0)
        .expect("summary")
        .expect("exists");
    let shared: Vec<_> = summary
        .references
        .iter()
        .filter(|r| r.reference.number == "SHARED-7")
        .map(|r| (r.reference.office.to_string(), r.source_version))
        .collect();
    assert_eq!(
        shared,
        [
            ("customs:ningbo".to_owned(), 2),
            ("customs:shanghai".to_owned(), 7)
        ]
    );
}

#[test]
fn an_unknown_case_has_no_summary_and_no_state() {
    let s = scripted();
    assert!(
        s.projection
            .case_summary(&case("NOPE-1"), T0)
            .expect("summary")
            .is_none()
    );
    assert!(
        s.projection
            .case_state(&case("NOPE-1"))
            .expect("state")
            .is_none()
    );
}

// ---------------------------------------------------------------------------------
// Case lists.

const TYPES: [CaseType; 6] = [
    CaseType::CounterfeitTrademark,
    CaseType::PatentInfringement,
    CaseType::CopyrightInfringement,
    CaseType::TradeSecret,
    CaseType::GeographicalIndication,
    CaseType::OtherIp,
];
const OPENERS: [&str; 5] = [CUSTOMS, IPC, POLICE, COURT, CUSTOMS_SH];

/// A listed case as the test knows it, for computing expected lists.
struct Known {
    case_id: CaseId,
    title: String,
    party_names: Vec<String>,
    /// Every party name with the version of the event that set it.
    named: Vec<(String, u64)>,
    state: CaseState,
}

/// Thirty cases with varied types, openers, dates (three per day, so opened_at ties
/// are broken by case id), titles, parties, hand-offs and closed tracks.
fn many_cases() -> (Vec<Known>, Projection, tempfile::TempDir) {
    let mut builders = Vec::new();
    let mut known = Vec::new();
    for i in 0..30_usize {
        // Scrambled ids, so id order differs from creation order.
        let id = format!("L-{:02}", (i * 7) % 30);
        let opened_at = T0 + Duration::days((i / 3) as i64);
        let mut b = CaseBuilder::new(&id, opened_at);
        let opener = OPENERS[i % OPENERS.len()];
        let title = match i {
            4 => "Refund 100% guaranteed fakes".to_owned(),
            5 => "Refund 100x fakes".to_owned(),
            6 => "snake_case lamps".to_owned(),
            7 => "snakeXcase lamps".to_owned(),
            _ if i % 4 == 1 => format!("ACME counterfeit batch {i}"),
            _ => format!("Matter {i}"),
        };
        let mut parties = vec![named_party("rh", PartyRole::RightsHolder, "Acme Audio Co.")];
        if i % 4 == 0 {
            parties.push(named_party("s1", PartyRole::Suspect, "Zhang Wei"));
        }
        let mut named: Vec<(String, u64)> = parties.iter().map(|p| (p.name.clone(), 1)).collect();
        // Some openings are sealed, so their title and type are hidden from every other
        // office: readers' listings must neither show nor match them.
        b.record_with(
            opener,
            opened_as(TYPES[i % TYPES.len()], &title, parties, &format!("N-{i}")),
            (i % 5 == 3).then(origin_only),
        );
        if i % 3 == 0 {
            if opener == POLICE {
                b.record(
                    opener,
                    handoff("h1", HandoffKind::AssistanceRequest, Agency::IpCenter),
                );
            } else {
                b.record(
                    opener,
                    handoff(
                        "h1",
                        HandoffKind::SuspectedCrimeReferral,
                        Agency::PublicSecurity,
                    ),
                );
                if i % 6 == 0 {
                    b.record(POLICE, accept("h1"));
                }
            }
        }
        if i % 7 == 2 {
            // A witness listed for the court only, or sealed.
            let visibility = if i % 2 == 0 {
                listed(&[Agency::Court])
            } else {
                origin_only()
            };
            b.record_with(
                opener,
                party_added(named_party("w1", PartyRole::Witness, "Wang Fang")),
                Some(visibility),
            );
            named.push(("Wang Fang".into(), b.state.version));
        }
        if i % 5 == 1 {
            b.record(opener, close("done"));
        }
        let party_names = b.state.parties.values().map(|p| p.name.clone()).collect();
        known.push(Known {
            case_id: b.case_id.clone(),
            title,
            party_names,
            named,
            state: b.state.clone(),
        });
        builders.push(b);
    }
    let mut stream = Stream::with_gaps(5);
    let histories: Vec<&[casebus_integrity::VerifiedEvent]> =
        builders.iter().map(|b| b.events.as_slice()).collect();
    stream.interleave(&histories);
    let (dir, _path, mut projection) = temp_projection();
    project(&mut projection, &stream, 13);
    (known, projection, dir)
}

/// Every page of a listing with `limit`, checking page sizes and cursors on the way.
fn list_all(projection: &Projection, filter: &CaseFilter, limit: usize) -> Vec<CaseListItem> {
    let mut all = Vec::new();
    let mut cursor: Option<String> = None;
    for _ in 0..100 {
        let page = projection
            .list_cases(filter, cursor.as_deref(), limit)
            .expect("page");
        assert!(page.cases.len() <= limit);
        all.extend(page.cases);
        match page.next_cursor {
            Some(next) => cursor = Some(next),
            None => return all,
        }
    }
    panic!("listing did not end");
}

fn expected(known: &[Known], keep: impl Fn(&Known) -> bool) -> Vec<String> {
    let mut list: Vec<_> = known
        .iter()
        .filter(|k| keep(k))
        .map(|k| {
            let opened = k.state.opened.as_ref().expect("opened");
            (opened.at, k.case_id.to_string())
        })
        .collect();
    list.sort();
    list.into_iter().map(|(_, id)| id).collect()
}

fn ids(items: &[CaseListItem]) -> Vec<String> {
    items.iter().map(|c| c.case_id.to_string()).collect()
}

#[test]
fn list_cases_pages_every_case_exactly_once_in_stable_order() {
    let (known, projection, _dir) = many_cases();
    let all = list_all(&projection, &CaseFilter::default(), 7);
    assert_eq!(ids(&all), expected(&known, |_| true));
    let unique: BTreeSet<_> = ids(&all).into_iter().collect();
    assert_eq!(unique.len(), 30);
    for item in &all {
        let k = known
            .iter()
            .find(|k| k.case_id == item.case_id)
            .expect("known");
        let opened = k.state.opened.as_ref().expect("opened");
        assert_eq!(item.case_type, opened.case_type);
        assert_eq!(item.title, opened.title);
        assert_eq!(item.opened_by, opened.office);
        assert_eq!(item.opened_at, opened.at);
        assert_eq!(item.version, k.state.version);
    }
    // Other page sizes cut the same order differently.
    for limit in [1, 30, MAX_LIMIT] {
        assert_eq!(
            ids(&list_all(&projection, &CaseFilter::default(), limit)),
            ids(&all)
        );
    }
    let exact = projection
        .list_cases(&CaseFilter::default(), None, 30)
        .expect("one page");
    assert_eq!(exact.cases.len(), 30);
    assert_eq!(exact.next_cursor, None, "no cursor when nothing follows");
}

#[test]
fn list_cases_filters_by_agency_status_type_dates_overdue_and_text() {
    let (known, projection, _dir) = many_cases();
    let check = |filter: CaseFilter, keep: &dyn Fn(&Known) -> bool| {
        let got = ids(&list_all(&projection, &filter, 7));
        let want = expected(&known, keep);
        assert_eq!(got, want, "filter {filter:?}");
        want.len()
    };

    for agency in [
        Agency::Customs,
        Agency::PublicSecurity,
        Agency::IpCenter,
        Agency::Court,
    ] {
        let n = check(
            CaseFilter {
                agency: Some(agency),
                ..CaseFilter::default()
            },
            &|k| k.state.involves(agency),
        );
        assert!(n > 0, "{agency:?} takes part in some cases");
    }
    assert_eq!(
        check(
            CaseFilter {
                agency: Some(Agency::Procuratorate),
                ..CaseFilter::default()
            },
            &|_| false,
        ),
        0
    );

    for status in [TrackStatus::Active, TrackStatus::Closed] {
        check(
            CaseFilter {
                track_status: Some(status),
                ..CaseFilter::default()
            },
            &|k| k.state.tracks.values().any(|t| t.status == status),
        );
        check(
            CaseFilter {
                agency: Some(Agency::PublicSecurity),
                track_status: Some(status),
                ..CaseFilter::default()
            },
            &|k| {
                k.state
                    .track(Agency::PublicSecurity)
                    .is_some_and(|t| t.status == status)
            },
        );
    }

    for case_type in TYPES {
        assert_eq!(
            check(
                CaseFilter {
                    case_type: Some(case_type),
                    ..CaseFilter::default()
                },
                &|k| k
                    .state
                    .opened
                    .as_ref()
                    .is_some_and(|o| o.case_type == case_type),
            ),
            5
        );
    }

    let from = T0 + Duration::days(2);
    let to = T0 + Duration::days(5);
    assert_eq!(
        check(
            CaseFilter {
                opened_from: Some(from),
                opened_to: Some(to),
                ..CaseFilter::default()
            },
            &|k| k
                .state
                .opened
                .as_ref()
                .is_some_and(|o| o.at >= from && o.at < to),
        ),
        9,
        "three days of three cases, end exclusive"
    );

    let mut overdue_counts = Vec::new();
    for days in [0, 4, 6, 60] {
        let now = T0 + Duration::days(days);
        overdue_counts.push(check(
            CaseFilter {
                overdue_at: Some(now),
                ..CaseFilter::default()
            },
            &|k| has_overdue_clock(&k.state, now),
        ));
    }
    assert_eq!(overdue_counts[0], 0, "nothing is overdue at the start");
    assert!(
        overdue_counts.windows(2).all(|w| w[0] <= w[1]) && overdue_counts[3] > overdue_counts[1],
        "more hand-offs become overdue as time passes: {overdue_counts:?}"
    );

    let text = |needle: &'static str| {
        move |k: &Known| {
            let n = needle.to_lowercase();
            k.title.to_lowercase().contains(&n)
                || k.party_names.iter().any(|p| p.to_lowercase().contains(&n))
        }
    };
    for needle in ["acme", "ZHANG", "Wang Fang", "100%", "snake_case", "lamps"] {
        let n = check(
            CaseFilter {
                text: Some(needle.into()),
                ..CaseFilter::default()
            },
            &text(needle),
        );
        assert!(n > 0, "{needle} matches something");
    }
    assert_eq!(
        ids(&list_all(
            &projection,
            &CaseFilter {
                text: Some("100%".into()),
                ..CaseFilter::default()
            },
            7
        ))
        .len(),
        1,
        "% matches itself, not any text"
    );
    assert_eq!(
        ids(&list_all(
            &projection,
            &CaseFilter {
                text: Some("snake_case".into()),
                ..CaseFilter::default()
            },
            7
        ))
        .len(),
        1,
        "_ matches itself, not any character"
    );

    let now = T0 + Duration::days(6);
    check(
        CaseFilter {
            agency: Some(Agency::PublicSecurity),
            track_status: None,
            case_type: Some(CaseType::CounterfeitTrademark),
            opened_from: Some(T0),
            opened_to: Some(T0 + Duration::days(30)),
            overdue_at: Some(now),
            any_clock_overdue_at: None,
            text: Some("a".into()),
            reader: None,
        },
        &|k| {
            k.state.involves(Agency::PublicSecurity)
                && k.state
                    .opened
                    .as_ref()
                    .is_some_and(|o| o.case_type == CaseType::CounterfeitTrademark)
                && has_overdue_clock(&k.state, now)
                && text("a")(k)
        },
    );
}

#[test]
fn a_readers_listing_holds_exactly_the_cases_and_matches_that_sight_allows() {
    let (known, projection, _dir) = many_cases();
    let reads = |k: &Known, office: &OfficeId, version: u64| {
        sight(&k.state, version, office) == Sight::Clear
    };
    type Keep = Box<dyn Fn(&Known, &OfficeId) -> bool>;
    let mut filters: Vec<(CaseFilter, Keep)> = vec![
        (CaseFilter::default(), Box::new(|_, _| true)),
        (
            CaseFilter {
                agency: Some(Agency::PublicSecurity),
                ..CaseFilter::default()
            },
            Box::new(|k, _| k.state.involves(Agency::PublicSecurity)),
        ),
    ];
    for text in ["acme", "wang", "zhang", "matter", "lamps"] {
        filters.push((
            CaseFilter {
                text: Some(text.into()),
                ..CaseFilter::default()
            },
            Box::new(move |k, office| {
                (reads(k, office, 1) && k.title.to_ascii_lowercase().contains(text))
                    || k.named.iter().any(|(name, version)| {
                        reads(k, office, *version) && name.to_ascii_lowercase().contains(text)
                    })
            }),
        ));
    }
    for case_type in TYPES {
        filters.push((
            CaseFilter {
                case_type: Some(case_type),
                ..CaseFilter::default()
            },
            Box::new(move |k, office| {
                reads(k, office, 1)
                    && k.state.opened.as_ref().map(|o| o.case_type) == Some(case_type)
            }),
        ));
    }
    let mut hidden_matches = 0;
    for reader in [CUSTOMS, CUSTOMS_SH, IPC, POLICE, COURT] {
        let office = OfficeId::new(reader).expect("office");
        for all_cases in [false, true] {
            for (filter, keep) in &filters {
                let filter = CaseFilter {
                    reader: Some(ListReader {
                        office: office.clone(),
                        all_cases,
                    }),
                    ..filter.clone()
                };
                let want = expected(&known, |k| {
                    (all_cases || k.state.involves(office.agency())) && keep(k, &office)
                });
                // A match only the unfiltered rule sees is a hidden value that matched.
                let unfiltered = expected(&known, |k| {
                    (all_cases || k.state.involves(office.agency()))
                        && keep(k, &OfficeId::new(CUSTOMS).expect("office"))
                });
                hidden_matches += unfiltered.len().saturating_sub(want.len());
                for limit in [1, 7] {
                    assert_eq!(
                        ids(&list_all(&projection, &filter, limit)),
                        want,
                        "{reader} all_cases={all_cases} limit {limit} {filter:?}"
                    );
                }
            }
        }
    }
    assert!(
        hidden_matches > 0,
        "the store hides values the filters would match"
    );
}

#[test]
fn invalid_limits_cursors_and_filters_are_refused_with_typed_errors() {
    let (_known, projection, _dir) = many_cases();
    let main = case("L-00");
    for limit in [0, MAX_LIMIT + 1] {
        let errors = [
            projection
                .timeline(&main, 1, Direction::Forward, limit)
                .expect_err("bad limit"),
            projection.events_after(0, limit).expect_err("bad limit"),
            projection
                .case_events_after_version(&main, 0, limit)
                .expect_err("bad limit"),
            projection
                .list_cases(&CaseFilter::default(), None, limit)
                .expect_err("bad limit"),
            projection
                .overdue_handoffs(T0, limit)
                .expect_err("bad limit"),
        ];
        for error in errors {
            assert!(
                matches!(error, QueryError::InvalidLimit { max: MAX_LIMIT, .. }),
                "{error:?}"
            );
            assert!(error.is_invalid_input());
            assert!(error.to_string().starts_with("limit "), "{error}");
        }
    }

    for cursor in ["", "garbage", "c1zz", "c1", "c2616263", "c17c6162"] {
        let error = projection
            .list_cases(&CaseFilter::default(), Some(cursor), 5)
            .expect_err("malformed cursor");
        assert!(
            matches!(error, QueryError::MalformedCursor { .. }),
            "{cursor:?}: {error:?}"
        );
        assert!(error.is_invalid_input());
    }

    for text in [String::new(), "x".repeat(201)] {
        let error = projection
            .list_cases(
                &CaseFilter {
                    text: Some(text),
                    ..CaseFilter::default()
                },
                None,
                5,
            )
            .expect_err("bad text");
        assert!(
            matches!(error, QueryError::InvalidFilter { field: "text", .. }),
            "{error:?}"
        );
    }
    let error = projection
        .list_cases(
            &CaseFilter {
                opened_from: Some(T0 + Duration::days(2)),
                opened_to: Some(T0),
                ..CaseFilter::default()
            },
            None,
            5,
        )
        .expect_err("reversed range");
    assert!(matches!(
        error,
        QueryError::InvalidFilter {
            field: "opened_from",
            ..
        }
    ));
}

/// A store in which `hidden` is written only where the police may not read it: the
/// title and a party of a sealed opening the police see only as a stub, a witness
/// listed for the court in a case the police take part in, and the title of a case the
/// police take no part in. Beside them one case the police read whole.
fn store_hiding(hidden: &str) -> (Projection, tempfile::TempDir) {
    let mut sealed = CaseBuilder::new("W-1", T0);
    sealed.record_with(
        CUSTOMS,
        opened_as(
            CaseType::CounterfeitTrademark,
            &format!("Batch {hidden}"),
            vec![named_party(
                "rh",
                PartyRole::RightsHolder,
                &format!("{hidden} Ltd"),
            )],
            "N-W1",
        ),
        Some(origin_only()),
    );
    sealed.record(
        CUSTOMS,
        handoff(
            "h1",
            HandoffKind::SuspectedCrimeReferral,
            Agency::PublicSecurity,
        ),
    );
    let mut open = CaseBuilder::new("W-2", T0 + Duration::hours(1));
    open.record(
        CUSTOMS,
        opened_as(
            CaseType::CounterfeitTrademark,
            "Visible lamps",
            vec![named_party("rh", PartyRole::RightsHolder, "Acme Audio Co.")],
            "N-W2",
        ),
    );
    open.record(
        CUSTOMS,
        handoff(
            "h1",
            HandoffKind::SuspectedCrimeReferral,
            Agency::PublicSecurity,
        ),
    );
    open.record_with(
        CUSTOMS,
        party_added(named_party(
            "w1",
            PartyRole::Witness,
            &format!("{hidden} witness"),
        )),
        Some(listed(&[Agency::Court])),
    );
    let mut outside = CaseBuilder::new("W-3", T0 + Duration::hours(2));
    outside.record(
        CUSTOMS,
        opened_as(
            CaseType::CounterfeitTrademark,
            &format!("Other {hidden}"),
            vec![named_party("rh", PartyRole::RightsHolder, "Acme Audio Co.")],
            "N-W3",
        ),
    );
    let mut stream = Stream::new();
    stream.interleave(&[&sealed.events, &open.events, &outside.events]);
    let (dir, _path, mut projection) = temp_projection();
    project(&mut projection, &stream, 4);
    (projection, dir)
}

#[test]
fn a_listings_work_is_the_same_whether_or_not_a_value_hidden_from_its_reader_matched() {
    // The same stores but for the hidden word: one in which the police's text filter
    // would match it, one in which it would not. What the police get, and the work the
    // query does (SQLite's virtual-machine steps, the cost behind any timing
    // difference), must not tell them apart.
    let (matching, _a) = store_hiding("alpha");
    let (other, _b) = store_hiding("gamma");
    let police = |text: &str| CaseFilter {
        text: Some(text.into()),
        reader: Some(ListReader {
            office: OfficeId::new(POLICE).expect("office"),
            all_cases: false,
        }),
        ..CaseFilter::default()
    };
    for text in ["alpha", "lamps", "witness", "Ltd", "Batch"] {
        for limit in [1, 7] {
            let a = matching
                .list_cases(&police(text), None, limit)
                .expect("list");
            let b = other.list_cases(&police(text), None, limit).expect("list");
            assert_eq!(ids(&a.cases), ids(&b.cases), "{text:?} limit {limit}");
            assert!(a.work > 0, "the work is measured");
            assert_eq!(
                a.work, b.work,
                "{text:?} limit {limit}: the work depends on a value the police may not read"
            );
        }
    }
    assert_eq!(
        ids(&matching
            .list_cases(&police("lamps"), None, 7)
            .expect("list")
            .cases),
        ["W-2"],
        "the police's filter matches what they may read"
    );
    // The control: customs reads everything it wrote, so the hidden word is there to
    // be matched, and matching it changes both the answer and the work.
    let customs = CaseFilter {
        reader: Some(ListReader {
            office: OfficeId::new(CUSTOMS).expect("office"),
            all_cases: false,
        }),
        ..police("alpha")
    };
    let a = matching.list_cases(&customs, None, 7).expect("list");
    let b = other.list_cases(&customs, None, 7).expect("list");
    assert_eq!(ids(&a.cases), ["W-1", "W-2", "W-3"]);
    assert!(b.cases.is_empty());
}

#[test]
fn a_listing_that_would_take_more_than_its_work_budget_is_refused_and_changes_nothing() {
    let (_known, mut projection, _dir) = many_cases();
    let filter = CaseFilter {
        text: Some("matter".into()),
        reader: Some(ListReader {
            office: OfficeId::new(CUSTOMS).expect("office"),
            all_cases: true,
        }),
        ..CaseFilter::default()
    };
    let whole = projection.list_cases(&filter, None, 100).expect("list");
    assert!(whole.work > 1_000, "the listing takes {} steps", whole.work);

    projection.set_list_work_budget(whole.work / 2);
    let error = projection
        .list_cases(&filter, None, 100)
        .expect_err("over budget");
    assert!(
        matches!(error, QueryError::TooMuchWork { budget } if budget == whole.work / 2),
        "{error:?}"
    );
    assert!(
        error
            .to_string()
            .contains("narrow it with opened_from and opened_to"),
        "{error}"
    );
    // Only the listing is budgeted, and only while it runs.
    assert!(
        projection
            .case_state(&case("L-00"))
            .expect("state")
            .is_some()
    );
    let narrow = CaseFilter {
        opened_to: Some(T0 + Duration::days(1)),
        ..filter.clone()
    };
    let page = projection
        .list_cases(&narrow, None, 100)
        .expect("a narrower listing fits");
    assert!(page.work <= whole.work / 2);

    projection.set_list_work_budget(whole.work * 2);
    let again = projection.list_cases(&filter, None, 100).expect("list");
    assert_eq!(ids(&again.cases), ids(&whole.cases));
}
