//! The oracle of the gateway's projection: what a caught-up projection must hold, built
//! without any of the projection's write code, and the comparison that names every
//! difference.
//!
//! [`expected_projection`] reads every message of `CASES`, verifies it as a consumer
//! does (signature and key with `verify_signed`, then the chain of its subject's case
//! with `ChainTip`), and folds each case's good events with the domain's own
//! `CaseState::apply`. [`projection_diffs`] then reads the projection only through the
//! timeline crate's queries (timelines, the agency feed, case summaries and states, case
//! lists, reference lookups, counts) and compares, field by field, what both know.
//!
//! **Boundary:** nothing here calls `Projection::apply_batch` or reads the projection's
//! own fold, so a bug in how the projection writes or derives its rows shows up as a
//! difference instead of being reproduced on both sides. The version that set a party
//! or first linked a reference, which `CaseState` does not keep, is derived here from
//! the payloads and the folded state, not borrowed from the projection.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Debug;
use std::path::Path;

use time::OffsetDateTime;

use casebus_bus::Bus;
use casebus_bus::ops::{Ops, ScanStart, StoredMessage};
use casebus_bus::subjects::{CASES_STREAM, case_of_subject};
use casebus_domain::{Calendar, CaseState, DeadlineRules, Reference, effective_visibility};
use casebus_integrity::{ChainTip, OfficeRegistry, VerifiedEvent, verify_signed};
use casebus_proto::CaseId;
use casebus_proto::event::v1::payload::Kind;
use casebus_proto::event::v1::{Visibility, VisibilityKind};
use casebus_timeline::{CaseFilter, Direction, MAX_LIMIT, Projection, TimelineRow};

/// One event a caught-up projection must hold.
#[derive(Debug, Clone)]
pub struct ExpectedEvent {
    /// Its sequence in `CASES`.
    pub sequence: u64,
    /// The event, verified and chain-checked.
    pub event: VerifiedEvent,
}

/// One case as the domain's rules fold its verified events.
#[derive(Debug, Clone, Default)]
pub struct ExpectedCase {
    /// Its verified events, in version order.
    pub events: Vec<ExpectedEvent>,
    /// The state `CaseState::apply` folds from them.
    pub state: CaseState,
    /// Party id to the version of the CaseOpened or PartyAdded that last set it.
    pub party_versions: BTreeMap<String, u64>,
    /// Reference to the version of the event that first linked it.
    pub reference_versions: BTreeMap<Reference, u64>,
}

impl ExpectedCase {
    /// Folds the next verified event of the case.
    fn fold(&mut self, sequence: u64, event: VerifiedEvent) {
        let version = event.version();
        let references_before = self.state.references.clone();
        self.state.apply(&casebus_bus::recorded(&event));
        if self.state.version != version {
            // The domain ignored it (not the next version); the chain check upstream
            // makes that impossible, but then the event is not part of the case either.
            return;
        }
        match event.event.payload.as_ref().and_then(|p| p.kind.as_ref()) {
            Some(Kind::CaseOpened(p)) => {
                for party in &p.parties {
                    self.party_versions.insert(party.party_id.clone(), version);
                }
            }
            Some(Kind::PartyAdded(p)) => {
                if let Some(party) = &p.party {
                    self.party_versions.insert(party.party_id.clone(), version);
                }
            }
            _ => {}
        }
        for reference in self.state.references.difference(&references_before) {
            self.reference_versions.insert(reference.clone(), version);
        }
        self.events.push(ExpectedEvent { sequence, event });
    }
}

/// What a gateway consuming as `consumer` must hold once it has caught up with the
/// stream.
#[derive(Debug, Clone, Default)]
pub struct ExpectedProjection {
    /// The consumer name the projection records.
    pub consumer: String,
    /// The stream position: the last sequence of `CASES`, good message or not.
    pub position: u64,
    /// Every case with at least one good event.
    pub cases: BTreeMap<CaseId, ExpectedCase>,
}

impl ExpectedProjection {
    /// Verifies and folds `messages` (in stream order) as a consumer named `consumer`
    /// must: a message is kept when its subject names a case, it verifies against
    /// `registry`, and it is the next link of that case's chain; everything else only
    /// advances the position.
    pub fn fold<'a>(
        consumer: &str,
        messages: impl IntoIterator<Item = &'a StoredMessage>,
        registry: &OfficeRegistry,
    ) -> Self {
        let mut out = Self {
            consumer: consumer.to_owned(),
            ..Self::default()
        };
        let mut tips: BTreeMap<CaseId, ChainTip> = BTreeMap::new();
        for message in messages {
            out.position = message.sequence;
            let Some(subject_case) = case_of_subject(&message.subject) else {
                continue;
            };
            let Ok(event) = verify_signed(&message.payload, registry) else {
                continue;
            };
            let tip = tips
                .entry(subject_case.clone())
                .or_insert_with(|| ChainTip::empty(subject_case.clone()));
            if tip.check(&event).is_err() {
                continue;
            }
            tip.advance(&event);
            out.cases
                .entry(subject_case)
                .or_default()
                .fold(message.sequence, event);
        }
        out
    }

    /// Every good event, in stream order.
    fn events(&self) -> Vec<(&CaseId, &ExpectedEvent)> {
        let mut all: Vec<_> = self
            .cases
            .iter()
            .flat_map(|(id, case)| case.events.iter().map(move |e| (id, e)))
            .collect();
        all.sort_by_key(|(_, e)| e.sequence);
        all
    }
}

/// Reads every message of `CASES` as it is now and folds it into what a gateway
/// consuming as `consumer` must hold (see [`ExpectedProjection::fold`]).
///
/// Panics when the stream cannot be read: this is test support, and a test without its
/// oracle cannot go on.
pub async fn expected_projection(bus: &Bus, consumer: &str) -> ExpectedProjection {
    let ops = Ops::from_bus(bus);
    let mut scanner = ops
        .scan(CASES_STREAM, None, ScanStart::Sequence(1), 1000)
        .await
        .expect("scan CASES");
    let mut messages = Vec::new();
    loop {
        let batch = scanner.fetch().await.expect("read CASES");
        if batch.is_empty() {
            break;
        }
        messages.extend(batch);
    }
    scanner.close().await;
    ExpectedProjection::fold(consumer, &messages, &bus.registry())
}

/// The differences between the projection file at `db` and `expected` (see
/// [`projection_diffs`]); a file that cannot be opened is one difference.
pub fn projection_file_diffs(expected: &ExpectedProjection, db: &Path) -> Vec<String> {
    match Projection::open(db) {
        Ok(projection) => projection_diffs(expected, &projection),
        Err(e) => vec![format!(
            "projection {}: cannot be opened: {e}",
            db.display()
        )],
    }
}

/// Collects readable differences, one per line, each naming the case and the field.
struct Diffs(Vec<String>);

impl Diffs {
    fn field<T: PartialEq + Debug>(
        &mut self,
        what: impl FnOnce() -> String,
        projected: T,
        folded: T,
    ) {
        if projected != folded {
            self.0.push(format!(
                "{}: projection has {projected:?}, the fold of the stream {folded:?}",
                what()
            ));
        }
    }

    fn error(&mut self, what: &str, error: impl std::fmt::Display) {
        self.0.push(format!("{what}: the query failed: {error}"));
    }
}

/// Every difference between what `projection` holds, read through its queries only,
/// and `expected`, as readable lines naming the case and the field: position and
/// consumer; the set of cases; per case its events (version, id, sequence, office,
/// times, hashes, signed bytes, visibility in force), its row (version, last sequence,
/// update time, how it was opened), tracks, parties (with the version that set them),
/// hand-offs (every field, the running legal clock counted with the built-in rules on
/// the shipped calendar, as a gateway started without `--deadline-rules` and
/// `--calendar-dir` counts it, and the overdue flag at one `now`), references (with the version
/// that linked them, and found by lookup), participants and folded state; the list of
/// opened cases; and the row counts. Empty when they agree.
pub fn projection_diffs(expected: &ExpectedProjection, projection: &Projection) -> Vec<String> {
    let mut d = Diffs(Vec::new());
    let now = OffsetDateTime::now_utc();

    match projection.position() {
        Ok(position) => d.field(|| "position".into(), position, expected.position),
        Err(e) => d.error("position", e),
    }
    match projection.consumer() {
        Ok(consumer) => d.field(
            || "consumer".into(),
            consumer.as_deref(),
            Some(expected.consumer.as_str()),
        ),
        Err(e) => d.error("consumer", e),
    }

    // The agency feed holds every stored event in stream order.
    let mut feed: Vec<TimelineRow> = Vec::new();
    loop {
        let after = feed.last().map_or(0, |r| r.sequence);
        match projection.events_after(after, MAX_LIMIT) {
            Ok(page) if page.is_empty() => break,
            Ok(page) => feed.extend(page),
            Err(e) => {
                d.error("events after a position", e);
                break;
            }
        }
    }
    let folded_events = expected.events();
    d.field(
        || "events in stream order (sequence, case, version)".into(),
        feed.iter()
            .map(|r| (r.sequence, r.case_id.to_string(), r.version))
            .collect::<Vec<_>>(),
        folded_events
            .iter()
            .map(|(id, e)| (e.sequence, id.to_string(), e.event.version()))
            .collect::<Vec<_>>(),
    );

    let projected_cases: BTreeSet<&CaseId> = feed.iter().map(|r| &r.case_id).collect();
    let folded_cases: BTreeSet<&CaseId> = expected.cases.keys().collect();
    for extra in projected_cases.difference(&folded_cases) {
        d.0.push(format!(
            "case {extra}: in the projection, not in the fold of the stream"
        ));
    }
    for missing in folded_cases.difference(&projected_cases) {
        d.0.push(format!(
            "case {missing}: in the fold of the stream, missing from the projection's events"
        ));
    }

    for (case_id, case) in &expected.cases {
        compare_case(&mut d, projection, case_id, case, now);
    }
    for extra in projected_cases.difference(&folded_cases) {
        if let Ok(Some(summary)) = projection.case_summary(extra, now) {
            d.0.push(format!(
                "case {extra}: the projection summarises a case the stream does not have \
                 (version {})",
                summary.version
            ));
        }
    }

    compare_list(&mut d, projection, expected);
    compare_counts(&mut d, projection, expected, now);
    d.0
}

fn participants_visibility() -> Visibility {
    Visibility {
        kind: VisibilityKind::Participants as i32,
        agencies: Vec::new(),
    }
}

/// Compares one case: its timeline, its summary, its folded state, its references.
fn compare_case(
    d: &mut Diffs,
    projection: &Projection,
    case_id: &CaseId,
    case: &ExpectedCase,
    now: OffsetDateTime,
) {
    let state = &case.state;
    let (rules, calendar) = (DeadlineRules::default(), Calendar::shipped());
    let mut timeline: Vec<TimelineRow> = Vec::new();
    loop {
        let from = timeline.last().map_or(1, |r| r.version.saturating_add(1));
        match projection.timeline(case_id, from, Direction::Forward, MAX_LIMIT) {
            Ok(page) if page.is_empty() => break,
            Ok(page) => timeline.extend(page),
            Err(e) => {
                d.error(&format!("case {case_id}: timeline"), e);
                break;
            }
        }
    }
    d.field(
        || format!("case {case_id}: events (version, event id)"),
        timeline
            .iter()
            .map(|r| (r.version, r.event_id.to_string()))
            .collect::<Vec<_>>(),
        case.events
            .iter()
            .map(|e| (e.event.version(), e.event.event_id.to_string()))
            .collect::<Vec<_>>(),
    );
    for (row, folded) in timeline.iter().zip(&case.events) {
        let e = &folded.event;
        if row.version != e.version() {
            continue;
        }
        let at = |field: &str| format!("case {case_id}: event version {} {field}", row.version);
        d.field(|| at("sequence"), row.sequence, folded.sequence);
        d.field(|| at("case"), &row.case_id, &e.case_id);
        d.field(|| at("office"), &row.office, &e.office);
        d.field(|| at("agency"), row.agency, e.agency());
        d.field(|| at("type"), row.type_name.clone(), e.type_name());
        d.field(|| at("occurred_at"), row.occurred_at, e.occurred_at);
        d.field(|| at("recorded_at"), row.recorded_at, e.recorded_at);
        d.field(|| at("hash"), row.hash, e.hash);
        d.field(|| at("prev_hash"), row.prev_hash, e.prev_hash);
        d.field(|| at("signed bytes"), &row.signed, &e.encode_signed());
        d.field(
            || at("visibility"),
            row.visibility.clone(),
            effective_visibility(state, row.version)
                .cloned()
                .unwrap_or_else(participants_visibility),
        );
    }

    let last = case.events.last();
    match projection.case_summary(case_id, now) {
        Ok(None) => {
            d.0.push(format!("case {case_id}: no summary in the projection"))
        }
        Err(e) => d.error(&format!("case {case_id}: summary"), e),
        Ok(Some(summary)) => {
            let at = |field: &str| format!("case {case_id}: {field}");
            d.field(|| at("version"), summary.version, state.version);
            d.field(
                || at("last sequence"),
                Some(summary.last_sequence),
                last.map(|e| e.sequence),
            );
            d.field(
                || at("updated at"),
                Some(summary.updated_at),
                last.map(|e| e.event.recorded_at),
            );
            d.field(
                || at("title"),
                summary.opened.as_ref().map(|o| &o.title),
                state.opened.as_ref().map(|o| &o.title),
            );
            d.field(|| at("opened"), &summary.opened, &state.opened);

            let tracks: BTreeMap<_, _> = summary.tracks.iter().map(|t| (t.agency, t)).collect();
            for agency in tracks
                .keys()
                .chain(state.tracks.keys())
                .collect::<BTreeSet<_>>()
            {
                let projected = tracks.get(agency).copied();
                let folded = state.tracks.get(agency);
                d.field(
                    || format!("case {case_id}: track of {agency:?} status"),
                    projected.map(|t| t.status),
                    folded.map(|t| t.status),
                );
                d.field(
                    || format!("case {case_id}: track of {agency:?}"),
                    projected,
                    folded,
                );
            }

            let parties: BTreeMap<_, _> = summary
                .parties
                .iter()
                .map(|p| (p.party_id.as_str(), p))
                .collect();
            let ids: BTreeSet<&str> = parties
                .keys()
                .copied()
                .chain(state.parties.keys().map(String::as_str))
                .collect();
            for id in ids {
                let projected = parties
                    .get(id)
                    .map(|p| (p.role, p.name.as_str(), p.organisation, p.source_version));
                let folded = state.parties.get(id).map(|p| {
                    (
                        p.role(),
                        p.name.as_str(),
                        p.organisation,
                        case.party_versions.get(id).copied().unwrap_or(0),
                    )
                });
                d.field(
                    || {
                        format!(
                            "case {case_id}: party {id} (role, name, organisation, set by version)"
                        )
                    },
                    projected,
                    folded,
                );
            }

            let handoffs: BTreeMap<_, _> = summary
                .handoffs
                .iter()
                .map(|h| (h.handoff.handoff_id.as_str(), h))
                .collect();
            let ids: BTreeSet<&str> = handoffs
                .keys()
                .copied()
                .chain(state.handoffs.keys().map(String::as_str))
                .collect();
            for id in ids {
                let projected = handoffs.get(id).copied();
                let folded = state.handoffs.get(id);
                d.field(
                    || format!("case {case_id}: hand-off {id} status"),
                    projected.map(|h| h.handoff.status),
                    folded.map(|h| h.status),
                );
                d.field(
                    || format!("case {case_id}: hand-off {id}"),
                    projected.map(|h| &h.handoff),
                    folded,
                );
                let clock = state.open_clock(id, &rules, &calendar);
                d.field(
                    || format!("case {case_id}: hand-off {id} running clock"),
                    projected.map(|h| {
                        h.clock.as_ref().map(|c| {
                            (
                                c.name.clone(),
                                c.started_at,
                                c.due_at,
                                c.basis.clone(),
                                c.error.clone(),
                                (c.extensions, c.extensions_allowed, c.suspended_since),
                            )
                        })
                    }),
                    folded.map(|_| {
                        clock.as_ref().map(|c| {
                            (
                                c.rule.key().to_owned(),
                                c.started_at,
                                c.due_at.as_ref().ok().copied(),
                                c.basis.clone(),
                                c.due_at.as_ref().err().map(ToString::to_string),
                                (
                                    u32::try_from(c.extensions).unwrap_or(u32::MAX),
                                    u32::try_from(c.extensions_allowed).unwrap_or(u32::MAX),
                                    c.suspended_since,
                                ),
                            )
                        })
                    }),
                );
                d.field(
                    || format!("case {case_id}: hand-off {id} overdue at {now}"),
                    projected.map(|h| h.overdue),
                    folded.map(|_| clock.as_ref().is_some_and(|c| c.is_overdue(now))),
                );
            }

            d.field(
                || format!("case {case_id}: running clocks not on a hand-off"),
                summary
                    .clocks
                    .iter()
                    .map(|c| {
                        (
                            (c.clock.name.clone(), c.subject.clone()),
                            (c.agency, c.clock.started_at, c.clock.due_at),
                            (c.clock.basis.clone(), c.clock.error.clone()),
                            (c.clock.extensions, c.clock.extensions_allowed),
                            (c.overdue, c.source_version),
                        )
                    })
                    .collect::<BTreeSet<_>>(),
                state
                    .open_case_clocks(&rules, &calendar)
                    .into_iter()
                    .map(|c| {
                        (
                            (c.rule.key().to_owned(), c.subject),
                            (c.agency, c.started_at, c.due_at.as_ref().ok().copied()),
                            (c.basis, c.due_at.as_ref().err().map(ToString::to_string)),
                            (
                                u32::try_from(c.extensions).unwrap_or(u32::MAX),
                                u32::try_from(c.extensions_allowed).unwrap_or(u32::MAX),
                            ),
                            (c.due_at.is_ok_and(|due| now > due), c.started_version),
                        )
                    })
                    .collect::<BTreeSet<_>>(),
            );
            d.field(
                || format!("case {case_id}: references (with the version that linked them)"),
                summary
                    .references
                    .iter()
                    .map(|r| (r.reference.clone(), r.source_version))
                    .collect::<BTreeMap<_, _>>(),
                state
                    .references
                    .iter()
                    .map(|r| {
                        let version = case.reference_versions.get(r).copied().unwrap_or(0);
                        (r.clone(), version)
                    })
                    .collect::<BTreeMap<_, _>>(),
            );
            d.field(
                || format!("case {case_id}: participants"),
                summary
                    .participants
                    .iter()
                    .copied()
                    .collect::<BTreeSet<_>>(),
                state.participants(),
            );
        }
    }

    // The state the gateway decides visibility with, folded from the stored events.
    match projection.case_state(case_id) {
        Ok(projected) => d.field(
            || format!("case {case_id}: folded state"),
            projected.as_ref(),
            Some(state),
        ),
        Err(e) => d.error(&format!("case {case_id}: state"), e),
    }

    for reference in &state.references {
        match projection.find_by_reference(reference.agency, &reference.number) {
            Ok(found) if found.contains(case_id) => {}
            Ok(found) => d.0.push(format!(
                "case {case_id}: reference {:?} {:?} finds {found:?}, not the case",
                reference.agency, reference.number
            )),
            Err(e) => d.error(&format!("case {case_id}: reference lookup"), e),
        }
    }
}

/// Compares the list of opened cases, every page, with the opened cases of the fold.
fn compare_list(d: &mut Diffs, projection: &Projection, expected: &ExpectedProjection) {
    let mut listed = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        match projection.list_cases(&CaseFilter::default(), cursor.as_deref(), MAX_LIMIT) {
            Ok(page) => {
                listed.extend(page.cases);
                match page.next_cursor {
                    Some(next) => cursor = Some(next),
                    None => break,
                }
            }
            Err(e) => {
                d.error("list of cases", e);
                break;
            }
        }
    }
    let projected: BTreeMap<String, _> = listed
        .iter()
        .map(|c| {
            (
                c.case_id.to_string(),
                (
                    c.case_type,
                    c.title.clone(),
                    c.opened_by.to_string(),
                    c.opened_at,
                    c.version,
                    c.updated_at,
                ),
            )
        })
        .collect();
    let folded: BTreeMap<String, _> = expected
        .cases
        .iter()
        .filter_map(|(id, case)| {
            let opened = case.state.opened.as_ref()?;
            let updated_at = case.events.last()?.event.recorded_at;
            Some((
                id.to_string(),
                (
                    opened.case_type,
                    opened.title.clone(),
                    opened.office.to_string(),
                    opened.at,
                    case.state.version,
                    updated_at,
                ),
            ))
        })
        .collect();
    let ids: BTreeSet<&String> = projected.keys().chain(folded.keys()).collect();
    for id in ids {
        d.field(
            || {
                format!(
                    "case {id}: listed as (type, title, opened by, opened at, version, updated at)"
                )
            },
            projected.get(id),
            folded.get(id),
        );
    }
}

/// Compares the row counts, which catch rows no per-case query would show.
fn compare_counts(
    d: &mut Diffs,
    projection: &Projection,
    expected: &ExpectedProjection,
    now: OffsetDateTime,
) {
    let counts = match projection.counts(now) {
        Ok(counts) => counts,
        Err(e) => return d.error("counts", e),
    };
    let states = || expected.cases.values().map(|c| &c.state);
    let sum = |f: &dyn Fn(&CaseState) -> usize| states().map(f).sum::<usize>() as u64;
    d.field(
        || "count of cases".into(),
        counts.cases,
        expected.cases.len() as u64,
    );
    d.field(
        || "count of events".into(),
        counts.events,
        sum(&|s| s.events.len()),
    );
    d.field(
        || "count of tracks".into(),
        counts.tracks,
        sum(&|s| s.tracks.len()),
    );
    d.field(
        || "count of parties".into(),
        counts.parties,
        sum(&|s| s.parties.len()),
    );
    d.field(
        || "count of references".into(),
        counts.references,
        sum(&|s| s.references.len()),
    );
    d.field(
        || "count of hand-offs".into(),
        counts.handoffs,
        sum(&|s| s.handoffs.len()),
    );
    d.field(
        || "count of open hand-offs".into(),
        counts.handoffs_open,
        sum(&|s| s.handoffs.values().filter(|h| h.status.is_open()).count()),
    );
    let (rules, calendar) = (DeadlineRules::default(), Calendar::shipped());
    d.field(
        || format!("count of hand-offs whose running clock is past due at {now}"),
        counts.handoffs_overdue,
        sum(&|s| s.overdue_clocks(&rules, &calendar, now).len()),
    );
}
