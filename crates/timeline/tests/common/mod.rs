//! Shared fixture of the timeline tests, without NATS: the six offices of
//! `casebus-fixtures` with their deterministic keys, `CaseBuilder` (commands decided by the real case rules, then
//! signed, verified and chained exactly as the bus would store them) and `Stream`
//! (assigns CASES sequences, with holes where dead-lettered messages would be).

// Each test binary uses its own part of this module, re-exports included.
#![allow(dead_code, unused_imports)]

/// The catalogue of `casebus-fixtures`, whose main case takes its instant from the
/// caller here so histories are deterministic.
pub mod catalogue {
    pub use casebus_fixtures::catalogue::main_case_at as main_case;
    pub use casebus_fixtures::catalogue::*;
}

use prost::Message as _;
use time::macros::datetime;
use time::{Duration, OffsetDateTime};

use casebus_domain::{CaseState, Context, DeadlineRules, RecordedEvent, decide};
use casebus_integrity::{ChainTip, VerifiedEvent, verify_signed};
use casebus_proto::event::v1::payload::Kind;
use casebus_proto::event::v1::{Event, Payload, Visibility};
use casebus_proto::{CaseId, EventId, OfficeId, PayloadKind, RequestId, timestamp_from};
use casebus_timeline::{ProjectedInput, Projection};

pub use casebus_fixtures::{
    COURT, CUSTOMS, CUSTOMS_SH, IPC, OFFICES, POLICE, PROC, case, office,
    shared_registry as registry, signer,
};

/// The instant the scripted cases start at.
pub const T0: OffsetDateTime = datetime!(2026-03-02 9:00 UTC);

/// The rules and calendar a projection counts clocks with unless told otherwise: the
/// built-in rules on the shipped calendar.
pub fn default_clocks() -> (casebus_domain::DeadlineRules, casebus_domain::Calendar) {
    (
        casebus_domain::DeadlineRules::default(),
        casebus_domain::Calendar::shipped(),
    )
}

/// What a projection should store as a hand-off's running clock: the fold's, counted
/// with `default_clocks`.
pub fn expected_clock(
    state: &CaseState,
    handoff_id: &str,
) -> Option<casebus_timeline::RunningClock> {
    let (rules, calendar) = default_clocks();
    state
        .open_clock(handoff_id, &rules, &calendar)
        .map(|open| casebus_timeline::RunningClock {
            name: open.rule.key().to_owned(),
            started_at: open.started_at,
            due_at: open.due_at.as_ref().ok().copied(),
            basis: open.basis.clone(),
            error: open.due_at.as_ref().err().map(ToString::to_string),
            extensions: u32::try_from(open.extensions).expect("few"),
            extensions_allowed: u32::try_from(open.extensions_allowed).expect("few"),
            suspended_since: open.suspended_since,
        })
}

/// Whether a case has a running clock past due at `now` (default rules and calendar).
pub fn has_overdue_clock(state: &CaseState, now: OffsetDateTime) -> bool {
    let (rules, calendar) = default_clocks();
    !state.overdue_clocks(&rules, &calendar, now).is_empty()
}

/// The domain's view of a verified event (as the bus folds it).
pub fn recorded(event: &VerifiedEvent) -> RecordedEvent<'_> {
    RecordedEvent {
        case_id: &event.case_id,
        version: event.version(),
        event_id: &event.event_id,
        office: &event.office,
        occurred_at: event.occurred_at,
        visibility: event.event.visibility.as_ref(),
        payload: match event.payload_kind() {
            PayloadKind::Known(kind) => Some(kind),
            _ => None,
        },
    }
}

/// Folds events directly with the case rules, for comparison with the projection.
pub fn fold<'a>(events: impl IntoIterator<Item = &'a VerifiedEvent>) -> CaseState {
    CaseState::fold(events.into_iter().map(recorded))
}

/// Builds one case event by event through `decide`, so every event is one the rules
/// accept, with due times filled in by the default deadline rules.
pub struct CaseBuilder {
    pub case_id: CaseId,
    pub state: CaseState,
    pub events: Vec<VerifiedEvent>,
    /// occurred_at and recorded_at of the next event.
    pub clock: OffsetDateTime,
    /// How far the clock moves after each event.
    pub step: Duration,
    /// Request ids are `<prefix>-<version>`; change it to fork a case's history.
    pub request_prefix: String,
    tip: ChainTip,
    rules: DeadlineRules,
    /// Record hand-offs without their recorded due times, as events recorded before
    /// due times were recorded (`HandoffRequested.recorded_dues` empty).
    pub without_recorded_dues: bool,
}

impl CaseBuilder {
    pub fn new(case_id: &str, start: OffsetDateTime) -> Self {
        let case_id = case(case_id);
        Self {
            tip: ChainTip::empty(case_id.clone()),
            case_id,
            state: CaseState::default(),
            events: Vec::new(),
            clock: start,
            step: Duration::hours(1),
            request_prefix: "req".into(),
            rules: DeadlineRules::default(),
            without_recorded_dues: false,
        }
    }

    /// Records `payload` by `office_id` with the default visibility.
    pub fn record(&mut self, office_id: &str, payload: Kind) -> VerifiedEvent {
        self.record_with(office_id, payload, None)
    }

    /// Records `payload` by `office_id` with `visibility`; panics with the rejection if
    /// the case rules refuse it (a broken script, not a projection bug).
    pub fn record_with(
        &mut self,
        office_id: &str,
        payload: Kind,
        visibility: Option<Visibility>,
    ) -> VerifiedEvent {
        let office = office(office_id);
        let registered = |o: &OfficeId| registry().contains(o);
        let command = casebus_domain::Command {
            case_id: self.case_id.clone(),
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
        let mut decision = decide(&self.state, &command, &ctx).unwrap_or_else(|r| {
            panic!("script rejected at version {}: {r}", self.state.version + 1)
        });
        if let Kind::HandoffRequested(p) = &mut decision.payload
            && self.without_recorded_dues
        {
            p.recorded_dues.clear();
        }
        let version = self.state.version + 1;
        let request = RequestId::new(&format!("{}-{version}", self.request_prefix))
            .expect("valid request id");
        let event = Event {
            event_id: EventId::derive(&office, &self.case_id, &request).to_string(),
            case_id: self.case_id.to_string(),
            case_version: version,
            office_id: office.to_string(),
            agency: office.agency() as i32,
            actor: command.actor.clone(),
            occurred_at: Some(timestamp_from(self.clock)),
            recorded_at: Some(timestamp_from(self.clock)),
            causation_id: String::new(),
            correlation_id: String::new(),
            visibility: Some(decision.visibility),
            prev_event_hash: self.tip.hash.map(|h| h.0.to_vec()).unwrap_or_default(),
            request_id: request.to_string(),
            command_digest: vec![0; 32],
            payload: Some(Payload {
                kind: Some(decision.payload),
            }),
            sealed: None,
        };
        let (signed, _) = signer(office_id).sign(&event);
        let verified =
            verify_signed(&signed.encode_to_vec(), registry()).expect("fixture event verifies");
        self.tip
            .check(&verified)
            .expect("fixture event continues the chain");
        self.tip.advance(&verified);
        self.state.apply(&recorded(&verified));
        self.events.push(verified.clone());
        self.clock += self.step;
        verified
    }

    /// Records a whole script.
    pub fn script(&mut self, steps: Vec<(&str, Kind)>) -> &mut Self {
        for (office_id, payload) in steps {
            self.record(office_id, payload);
        }
        self
    }
}

/// The CASES stream as the projection sees it: events with their sequences.
#[derive(Default)]
pub struct Stream {
    pub log: Vec<(u64, VerifiedEvent)>,
    next: u64,
    /// Every `gap_every`-th sequence is left out, as if that message had been
    /// dead-lettered; 0 for none.
    pub gap_every: u64,
}

impl Stream {
    pub fn new() -> Self {
        Self::default()
    }

    /// A stream where every `n`-th sequence carries no event for the projection.
    pub fn with_gaps(n: u64) -> Self {
        Self {
            gap_every: n,
            ..Self::default()
        }
    }

    pub fn push(&mut self, event: VerifiedEvent) {
        self.next += 1;
        if self.gap_every > 0 && self.next.is_multiple_of(self.gap_every) {
            self.next += 1;
        }
        self.log.push((self.next, event));
    }

    /// Appends the events of several cases, interleaved round-robin as concurrent
    /// offices would produce them.
    pub fn interleave(&mut self, cases: &[&[VerifiedEvent]]) {
        let longest = cases.iter().map(|c| c.len()).max().unwrap_or(0);
        for i in 0..longest {
            for events in cases {
                if let Some(event) = events.get(i) {
                    self.push(event.clone());
                }
            }
        }
    }

    pub fn inputs(&self) -> Vec<ProjectedInput<'_>> {
        self.log
            .iter()
            .map(|(sequence, event)| ProjectedInput::new(*sequence, event))
            .collect()
    }

    pub fn last_sequence(&self) -> u64 {
        self.log.last().map_or(0, |(s, _)| *s)
    }
}

/// Applies the stream in batches of `batch` events.
pub fn project(projection: &mut Projection, stream: &Stream, batch: usize) {
    let inputs = stream.inputs();
    for chunk in inputs.chunks(batch) {
        projection.apply_batch(chunk).expect("batch applies");
    }
}

/// A projection file in a fresh temporary directory (kept alive by the returned guard).
pub fn temp_projection() -> (tempfile::TempDir, std::path::PathBuf, Projection) {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("gateway.sqlite");
    let projection = Projection::open(&path).expect("projection opens");
    (dir, path, projection)
}
