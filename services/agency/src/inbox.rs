//! The inbox: hand-offs addressed to this office (or to its agency without naming an
//! office) that still await the answer the law asks for, with their running legal
//! clock. It is folded from the whole `CASES` stream, read from the start at every
//! service start (catch-up, then live), and serves `ListInbox` and `WatchInbox`.
//!
//! A hand-off stays in the inbox while one of its legal clocks runs
//! (`CaseState::open_clocks`): the receipt clock, then the decision clock, which
//! accepting the hand-off does not stop: an accepted referral stays until the police
//! record `InvestigationFiled` or `InvestigationDeclined`, and becomes overdue when its
//! filing clock runs out. The clocks are folded per case by the domain's own fold
//! (`CaseState::apply_clocks`) and counted with the service's deadline rules and holiday
//! calendar, so the inbox, the gateway and the case rules agree on every due time.
//!
//! Only the events that move clocks matter here, so every message is decoded but only
//! those are verified (signature, key, envelope) before they count; a message that
//! fails is left out and counted. The inbox does not check case chains: it is a working
//! list, the clocks fold ignores an event at or below the version it folded, and the
//! hand-off states it keeps only ever move forward, so a replayed message changes
//! nothing. The authoritative checks are the appender's (before every answer is
//! recorded) and the verifying consumer's.
//!
//! The inbox lives in memory, per service instance; a restart rebuilds it from the
//! stream before the service reports ready, or, with `--inbox-snapshot`, loads the
//! snapshot it last wrote and follows the stream from the snapshot's position (see
//! `snapshot`).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt as _;
use prost::Message as _;
use time::OffsetDateTime;
use tokio::sync::{broadcast, watch};
use tokio_util::sync::CancellationToken;

use casebus_bus::ops::Ops;
use casebus_bus::subjects::{CASES_STREAM, case_of_subject};
use casebus_bus::{Bus, RawEvent};
use casebus_domain::{CaseState, OpenClock, RecordedEvent, Sight, event_sight};
use casebus_integrity::{VerifiedEvent, verify_signed};
use casebus_proto::agency::v1::{HandoffStatus, InboxChange, InboxItem, RunningClock};
use casebus_proto::event::v1::payload::Kind;
use casebus_proto::event::v1::{
    Agency, Event, HandoffKind, SignedEvent, Visibility, VisibilityKind,
};
use casebus_proto::{CaseId, EventId, OfficeId, datetime_from, timestamp_from};
use casebus_runtime::clocks::Clocks;
use casebus_runtime::metrics::Metrics;

use crate::snapshot::Snapshot;

/// Changes buffered per watcher; a watcher further behind is ended (it must watch again).
const WATCH_BUFFER: usize = 1024;
/// First pause before reading the stream again after an error.
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
/// Longest pause between attempts to read the stream.
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// How often a reader that made no progress checks whether the stream moved on without
/// it (after a server restart, say).
const STALL_CHECK: Duration = Duration::from_secs(3);

/// One pending hand-off.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Entry {
    pub case_id: CaseId,
    pub handoff_id: String,
    pub kind: HandoffKind,
    pub from_office: OfficeId,
    /// False when the request is sealed and this office may not read it: the sending
    /// office is then left out of the item, as the gateway leaves it out of a stub.
    pub names_office: bool,
    pub to_agency: Agency,
    pub to_office: Option<OfficeId>,
    pub status: HandoffStatus,
    /// The request's reason and evidence ids as recorded; they reach the item only
    /// when `clear`.
    pub reason: String,
    pub evidence_ids: Vec<String>,
    /// The request's visibility as recorded, or as last changed by `VisibilityChanged`.
    pub visibility: Visibility,
    /// Whether this office may read the request under `visibility`.
    pub clear: bool,
    pub requested_at: OffsetDateTime,
    pub due_at: Option<OffsetDateTime>,
    pub event_id: EventId,
    pub version: u64,
    pub sequence: u64,
    pub acknowledged_by: Option<OfficeId>,
    /// The running legal clock, as of the last event folded; `None` only until the
    /// clocks are first counted.
    pub clock: Option<OpenClock>,
}

/// The wire form of a running clock.
pub(crate) fn running_clock(clock: &OpenClock) -> RunningClock {
    RunningClock {
        name: clock.rule.key().to_owned(),
        started_at: Some(timestamp_from(clock.started_at)),
        due_at: clock.due_at.as_ref().ok().map(|due| timestamp_from(*due)),
        basis: clock.basis.clone(),
        due_error: clock
            .due_at
            .as_ref()
            .err()
            .map(ToString::to_string)
            .unwrap_or_default(),
        extensions: u32::try_from(clock.extensions).unwrap_or(u32::MAX),
        extensions_allowed: u32::try_from(clock.extensions_allowed).unwrap_or(u32::MAX),
        suspended_since: clock.suspended_since.map(timestamp_from),
    }
}

impl Entry {
    /// Judges, for `viewer` (this inbox's office), what of the request it may read
    /// under `visibility`: a sealed or restricted hand-off still arrives, as routing and
    /// due time, without its reason and evidence ids, and a sealed one without the
    /// sending office. True when that changed.
    fn see(&mut self, visibility: Visibility, viewer: &OfficeId) -> bool {
        let clear = event_sight(&self.from_office, &visibility, viewer) == Sight::Clear;
        let names_office = clear || visibility.kind() != VisibilityKind::OriginOnly;
        let changed = clear != self.clear || names_office != self.names_office;
        self.visibility = visibility;
        self.clear = clear;
        self.names_office = names_office;
        changed
    }

    /// Whether the running clock's due time has passed at `now`.
    pub fn is_overdue(&self, now: OffsetDateTime) -> bool {
        self.clock.as_ref().is_some_and(|c| c.is_overdue(now))
    }

    /// The running clock's due time, when the calendar can count it.
    fn clock_due(&self) -> Option<OffsetDateTime> {
        self.clock
            .as_ref()
            .and_then(|c| c.due_at.as_ref().ok().copied())
    }

    /// The wire form, with the overdue flag as of `now`.
    pub fn item(&self, now: OffsetDateTime) -> InboxItem {
        InboxItem {
            case_id: self.case_id.to_string(),
            handoff_id: self.handoff_id.clone(),
            kind: self.kind as i32,
            from_office_id: if self.names_office {
                self.from_office.to_string()
            } else {
                String::new()
            },
            from_agency: self.from_office.agency() as i32,
            to_office_id: self
                .to_office
                .as_ref()
                .map(ToString::to_string)
                .unwrap_or_default(),
            status: self.status as i32,
            reason: if self.clear {
                self.reason.clone()
            } else {
                String::new()
            },
            evidence_ids: if self.clear {
                self.evidence_ids.clone()
            } else {
                Vec::new()
            },
            requested_at: Some(timestamp_from(self.requested_at)),
            due_at: self.due_at.map(timestamp_from),
            overdue: self.is_overdue(now),
            requested_event_id: self.event_id.to_string(),
            requested_version: self.version,
            stream_sequence: self.sequence,
            acknowledged_by_office_id: self
                .acknowledged_by
                .as_ref()
                .map(ToString::to_string)
                .unwrap_or_default(),
            clock: self.clock.as_ref().map(running_clock),
        }
    }

    /// Most urgent first: by the running clock's due time (none last), then case and
    /// hand-off.
    fn urgency(&self) -> (bool, Option<OffsetDateTime>, &str, &str) {
        let due = self.clock_due();
        (due.is_none(), due, self.case_id.as_str(), &self.handoff_id)
    }
}

/// A change of the inbox, as sent to watchers.
#[derive(Debug, Clone)]
pub(crate) struct Change {
    pub change: InboxChange,
    pub entry: Entry,
}

type Key = (CaseId, String);

#[derive(Debug, Default)]
struct State {
    items: BTreeMap<Key, Entry>,
    /// The legal clocks of every case with a hand-off, folded by the domain's fold.
    cases: BTreeMap<CaseId, CaseState>,
    /// Items already announced as overdue to watchers.
    overdue: BTreeSet<Key>,
    /// Stream sequence of the last message folded.
    position: u64,
}

/// The pending hand-offs addressed to one office.
#[derive(Debug)]
pub(crate) struct Inbox {
    office: OfficeId,
    clocks: Arc<Clocks>,
    state: Mutex<State>,
    changes: broadcast::Sender<Change>,
    ready: watch::Sender<bool>,
}

/// Whether a hand-off to `to_agency` / `to_office` is addressed to `office`.
pub(crate) fn addressed_to(office: &OfficeId, to_agency: Agency, to_office: &str) -> bool {
    to_agency == office.agency() && (to_office.is_empty() || to_office == office.as_str())
}

/// The visibility an event was recorded with; none means participants.
fn normalised(visibility: Option<&Visibility>) -> Visibility {
    visibility.cloned().unwrap_or(Visibility {
        kind: VisibilityKind::Participants as i32,
        agencies: Vec::new(),
    })
}

/// Whether a payload kind can change an inbox: the hand-off events, the decisions
/// that answer a hand-off's clock, and a change of visibility (which may seal or open a
/// request already in it).
fn is_handoff_event(kind: &Kind) -> bool {
    CaseState::moves_clocks(kind) || matches!(kind, Kind::VisibilityChanged(_))
}

/// The hand-off an answer of a hand-off (receipt, acceptance, refusal) names.
fn answered_handoff(kind: &Kind) -> Option<&str> {
    match kind {
        Kind::HandoffAcknowledged(a) => Some(&a.handoff_id),
        Kind::HandoffAccepted(a) => Some(&a.handoff_id),
        Kind::HandoffDeclined(d) => Some(&d.handoff_id),
        _ => None,
    }
}

impl Inbox {
    /// An empty inbox of `office`, not ready, counting clocks with `clocks`.
    pub fn new(office: OfficeId, clocks: Arc<Clocks>) -> Self {
        let (changes, _) = broadcast::channel(WATCH_BUFFER);
        let (ready, _) = watch::channel(false);
        Self {
            office,
            clocks,
            state: Mutex::new(State::default()),
            changes,
            ready,
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding the lock leaves a consistent map (every update is a
        // single insert or remove), so a poisoned lock is still usable.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The rules and calendar the inbox counts clocks with (the service's).
    pub fn clocks(&self) -> &Clocks {
        &self.clocks
    }

    /// Whether the inbox has caught up with the stream since the start.
    pub fn is_ready(&self) -> bool {
        *self.ready.borrow()
    }

    /// Marks the inbox caught up.
    pub fn set_ready(&self) {
        self.ready.send_replace(true);
    }

    /// Waits until the inbox has caught up.
    pub async fn wait_ready(&self) {
        let mut ready = self.ready.subscribe();
        // The sender lives as long as the inbox, which outlives this borrow.
        let _ = ready.wait_for(|r| *r).await;
    }

    /// The stream position folded so far.
    pub fn position(&self) -> u64 {
        self.state().position
    }

    /// The office whose inbox this is.
    pub fn office(&self) -> &OfficeId {
        &self.office
    }

    /// The inbox as folded so far, of `stream`, taken under one lock: its position, its
    /// entries and the clocks of every case with a clock still running (see `snapshot`).
    /// The anchor is left empty for the caller to fill.
    pub fn snapshot(&self, stream: &str) -> Snapshot {
        let state = self.state();
        Snapshot {
            office: self.office.clone(),
            stream: stream.to_owned(),
            position: state.position,
            anchor: Vec::new(),
            entries: state.items.values().cloned().collect(),
            cases: state
                .cases
                .iter()
                .filter(|(_, case)| case.clocks.values().any(|c| c.open().is_some()))
                .map(|(id, case)| (id.clone(), case.clone()))
                .collect(),
        }
    }

    /// Replaces the inbox with `snapshot` (checked against the stream by the caller);
    /// every entry's running clock is counted again from its case's clocks with the
    /// service's rules and calendar, as folding would.
    pub fn restore(&self, snapshot: Snapshot) {
        let mut state = self.state();
        state.cases = snapshot.cases.into_iter().collect();
        state.items.clear();
        state.overdue.clear();
        for mut entry in snapshot.entries {
            entry.clock = state.cases.get(&entry.case_id).and_then(|case| {
                case.open_clock(&entry.handoff_id, &self.clocks.rules, &self.clocks.calendar)
            });
            if entry.clock.is_some() {
                state
                    .items
                    .insert((entry.case_id.clone(), entry.handoff_id.clone()), entry);
            }
        }
        state.position = snapshot.position;
    }

    fn announce(&self, change: InboxChange, entry: &Entry) {
        // No receiver (nobody watches) is fine.
        let _ = self.changes.send(Change {
            change,
            entry: entry.clone(),
        });
    }

    /// Records that the stream was read up to `sequence` (a message that did not
    /// matter, or could not be verified).
    pub fn advance(&self, sequence: u64) {
        let mut state = self.state();
        state.position = state.position.max(sequence);
    }

    /// Folds one verified event found at `sequence`.
    pub fn fold(&self, sequence: u64, event: &VerifiedEvent) {
        let mut state = self.state();
        state.position = state.position.max(sequence);
        let Some(kind) = event.event.payload.as_ref().and_then(|p| p.kind.as_ref()) else {
            return;
        };
        let changed = self.fold_entry(&mut state, sequence, event, kind);
        self.fold_clocks(&mut state, event, kind, changed);
    }

    /// The hand-off events' part of folding: entries added, acknowledged, accepted or
    /// declined. Returns the entry whose status changed, to be announced with its clock.
    fn fold_entry(
        &self,
        state: &mut State,
        sequence: u64,
        event: &VerifiedEvent,
        kind: &Kind,
    ) -> Option<Key> {
        let key = |handoff_id: &str| (event.case_id.clone(), handoff_id.to_owned());
        match kind {
            Kind::HandoffRequested(h) => {
                if !addressed_to(&self.office, h.to_agency(), &h.to_office_id) {
                    return None;
                }
                let key = key(&h.handoff_id);
                if state.items.contains_key(&key) {
                    return None; // a replay of a hand-off we know
                }
                let mut entry = Entry {
                    case_id: event.case_id.clone(),
                    handoff_id: h.handoff_id.clone(),
                    kind: h.kind(),
                    from_office: event.office.clone(),
                    names_office: false,
                    to_agency: h.to_agency(),
                    to_office: OfficeId::new(&h.to_office_id).ok(),
                    status: HandoffStatus::Requested,
                    reason: h.reason.clone(),
                    evidence_ids: h.evidence_ids.clone(),
                    visibility: Visibility::default(),
                    clear: false,
                    requested_at: event.occurred_at,
                    due_at: h.due_at.as_ref().and_then(datetime_from),
                    event_id: event.event_id.clone(),
                    version: event.version(),
                    sequence,
                    acknowledged_by: None,
                    clock: None,
                };
                entry.see(normalised(event.event.visibility.as_ref()), &self.office);
                // Announced once its clock is counted, in `fold_clocks`.
                state.items.insert(key, entry);
                None
            }
            Kind::HandoffAcknowledged(a) => {
                let key = key(&a.handoff_id);
                if let Some(entry) = state.items.get_mut(&key)
                    && entry.status == HandoffStatus::Requested
                    && answers(&event.office, entry)
                {
                    entry.status = HandoffStatus::Acknowledged;
                    entry.acknowledged_by = Some(event.office.clone());
                    return Some(key);
                }
                None
            }
            Kind::HandoffAccepted(a) => {
                // Accepting starts the work; the entry stays while its decision clock
                // runs (`fold_clocks` removes it once none does).
                if let Some(entry) = state.items.get_mut(&key(&a.handoff_id))
                    && matches!(
                        entry.status,
                        HandoffStatus::Requested | HandoffStatus::Acknowledged
                    )
                    && answers(&event.office, entry)
                {
                    entry.status = HandoffStatus::Accepted;
                    return Some(key(&a.handoff_id));
                }
                None
            }
            Kind::HandoffDeclined(d) => {
                if let Some(entry) = state.items.get_mut(&key(&d.handoff_id))
                    && answers(&event.office, entry)
                {
                    entry.status = HandoffStatus::Declined;
                    return Some(key(&d.handoff_id));
                }
                None
            }
            // A request sealed or restricted after it arrived is swept from the item,
            // and one opened later shows its content, as the gateway does.
            Kind::VisibilityChanged(v) => {
                let office = self.office.clone();
                let visibility = normalised(v.visibility.as_ref());
                let changed: Vec<Entry> = state
                    .items
                    .values_mut()
                    .filter(|e| e.case_id == event.case_id && e.version == v.target_version)
                    .filter_map(|e| e.see(visibility.clone(), &office).then(|| e.clone()))
                    .collect();
                for entry in &changed {
                    self.announce(InboxChange::Updated, entry);
                }
                None
            }
            _ => None,
        }
    }

    /// The clocks' part of folding: the case's clocks folded by the domain, then every
    /// entry of the case given its running clock, announced when it changed, and removed
    /// once no clock runs (decided or declined). `changed` is an entry whose status
    /// changed with this event: it is announced even when its clock did not.
    fn fold_clocks(
        &self,
        state: &mut State,
        event: &VerifiedEvent,
        kind: &Kind,
        changed: Option<Key>,
    ) {
        let case_id = &event.case_id;
        if matches!(kind, Kind::HandoffRequested(_)) {
            state.cases.entry(case_id.clone()).or_default();
        }
        let Some(case) = state.cases.get_mut(case_id) else {
            return; // a decision in a case without hand-offs answers no clock
        };
        // Only the agency (and office, when one is addressed) a hand-off is addressed to
        // answers it, as the inbox entries require: the appender refuses anything else,
        // and a stray event changes nothing here.
        if let Some(handoff_id) = answered_handoff(kind) {
            let entry = state.items.get(&(case_id.clone(), handoff_id.to_owned()));
            let stray = match entry {
                Some(entry) => !answers(&event.office, entry),
                None => case
                    .clocks
                    .get(handoff_id)
                    .is_some_and(|c| c.to_agency != event.office.agency()),
            };
            if stray {
                return;
            }
        }
        case.apply_clocks(&RecordedEvent {
            case_id,
            version: event.version(),
            event_id: &event.event_id,
            office: &event.office,
            occurred_at: event.occurred_at,
            visibility: event.event.visibility.as_ref(),
            payload: Some(kind),
        });
        let case = &state.cases[case_id];
        let (rules, calendar) = (&self.clocks.rules, &self.clocks.calendar);
        let keys: Vec<Key> = state
            .items
            .range((case_id.clone(), String::new())..)
            .take_while(|(k, _)| &k.0 == case_id)
            .map(|(k, _)| k.clone())
            .collect();
        let clocks: Vec<(Key, Option<OpenClock>)> = keys
            .into_iter()
            .map(|key| {
                let clock = case.open_clock(&key.1, rules, calendar);
                (key, clock)
            })
            .collect();
        for (key, clock) in clocks {
            if clock.is_none() {
                state.overdue.remove(&key);
                if let Some(entry) = state.items.remove(&key)
                    && entry.clock.is_some()
                {
                    self.announce(InboxChange::Removed, &entry);
                }
                continue;
            }
            let Some(entry) = state.items.get_mut(&key) else {
                continue;
            };
            if entry.clock == clock {
                if changed.as_ref() == Some(&key) {
                    let entry = entry.clone();
                    self.announce(InboxChange::Updated, &entry);
                }
                continue;
            }
            let added = entry.clock.is_none();
            entry.clock = clock;
            let entry = entry.clone();
            if !added {
                // A new clock runs (the decision clock after the receipt): it is
                // announced as overdue again when it runs out.
                state.overdue.remove(&key);
            }
            self.announce(
                if added {
                    InboxChange::Added
                } else {
                    InboxChange::Updated
                },
                &entry,
            );
        }
    }

    /// The pending items, most urgent first, optionally of one case or overdue only,
    /// and the stream position they reflect.
    pub fn list(
        &self,
        now: OffsetDateTime,
        case: Option<&CaseId>,
        overdue_only: bool,
    ) -> (Vec<InboxItem>, u64) {
        let state = self.state();
        let mut entries: Vec<&Entry> = state
            .items
            .values()
            .filter(|e| case.is_none_or(|c| &e.case_id == c))
            .filter(|e| !overdue_only || e.is_overdue(now))
            .collect();
        entries.sort_by(|a, b| a.urgency().cmp(&b.urgency()));
        (
            entries.into_iter().map(|e| e.item(now)).collect(),
            state.position,
        )
    }

    /// The pending entries (most urgent first) and a receiver of every later change,
    /// taken under one lock so nothing falls between them.
    pub fn watch(&self) -> (Vec<Entry>, broadcast::Receiver<Change>) {
        let state = self.state();
        let receiver = self.changes.subscribe();
        let mut entries: Vec<Entry> = state.items.values().cloned().collect();
        entries.sort_by(|a, b| a.urgency().cmp(&b.urgency()));
        (entries, receiver)
    }

    /// The number of pending items and of those overdue at `now`.
    pub fn counts(&self, now: OffsetDateTime) -> (usize, usize) {
        let state = self.state();
        let overdue = state.items.values().filter(|e| e.is_overdue(now)).count();
        (state.items.len(), overdue)
    }

    /// Announces items whose due time passed since the last sweep; returns the number of
    /// overdue items and the number of pending items.
    pub fn sweep(&self, now: OffsetDateTime) -> (usize, usize) {
        let mut state = self.state();
        let newly: Vec<Key> = state
            .items
            .iter()
            .filter(|(key, entry)| entry.is_overdue(now) && !state.overdue.contains(*key))
            .map(|(key, _)| key.clone())
            .collect();
        for key in newly {
            if let Some(entry) = state.items.get(&key) {
                self.announce(InboxChange::Updated, entry);
            }
            state.overdue.insert(key);
        }
        (state.overdue.len(), state.items.len())
    }
}

/// Whether `office` may answer (acknowledge, accept, decline) the hand-off `entry`.
fn answers(office: &OfficeId, entry: &Entry) -> bool {
    office.agency() == entry.to_agency && entry.to_office.as_ref().is_none_or(|o| o == office)
}

/// Decodes a raw message just far enough to tell whether it is a hand-off event.
fn is_candidate(raw: &RawEvent) -> bool {
    SignedEvent::decode(raw.payload.as_ref())
        .ok()
        .and_then(|signed| Event::decode(signed.event.as_slice()).ok())
        .and_then(|event| event.payload.and_then(|p| p.kind))
        .is_some_and(|kind| is_handoff_event(&kind))
}

/// Folds one raw message into the inbox: hand-off events are verified first, anything
/// else only advances the position.
fn fold_raw(inbox: &Inbox, bus: &Bus, metrics: &Metrics, raw: &RawEvent) {
    if !is_candidate(raw) {
        inbox.advance(raw.sequence);
        return;
    }
    match verify_signed(&raw.payload, &bus.registry()) {
        Ok(event) if case_of_subject(&raw.subject).as_ref() == Some(&event.case_id) => {
            inbox.fold(raw.sequence, &event);
        }
        Ok(event) => {
            tracing::warn!(case_id = %event.case_id, subject = %raw.subject, sequence = raw.sequence, "hand-off event found under another case's subject; ignored");
            metrics
                .verification_failures
                .with_label_values(&["case_mismatch"])
                .inc();
            inbox.advance(raw.sequence);
        }
        Err(error) => {
            tracing::warn!(subject = %raw.subject, sequence = raw.sequence, code = error.code(), error = %error, "hand-off event fails verification; left out of the inbox");
            metrics
                .verification_failures
                .with_label_values(&[error.code()])
                .inc();
            inbox.advance(raw.sequence);
        }
    }
}

/// Reads `CASES` into the inbox from the position after the one it holds (the start, or
/// a snapshot's position), catch-up then live, until `stop`. Marks the inbox ready once
/// it has read everything that was in the stream when it started. Read errors are
/// logged and the stream is read again from where it stopped.
pub(crate) async fn follow(inbox: &Inbox, bus: &Bus, metrics: &Metrics, stop: &CancellationToken) {
    let mut backoff = FIRST_BACKOFF;
    // The stream's last sequence when we start: reading up to it means caught up.
    let mut target: Option<u64> = None;
    while !stop.is_cancelled() {
        if target.is_none() && !inbox.is_ready() {
            match Ops::from_bus(bus).stream_status(CASES_STREAM).await {
                Ok(status) => {
                    let last = status.map_or(0, |s| s.last_sequence);
                    if last <= inbox.position() {
                        inbox.set_ready();
                    }
                    target = Some(last);
                }
                Err(error) => {
                    tracing::warn!(stream = CASES_STREAM, error = %error, "reading the stream state failed; retrying");
                    if !pause(stop, &mut backoff).await {
                        return;
                    }
                    continue;
                }
            }
        }
        let from = inbox.position() + 1;
        let mut events = match bus.tail(from, None).await {
            Ok(events) => events,
            Err(error) => {
                tracing::warn!(stream = CASES_STREAM, error = %error, "following the stream failed; retrying");
                if !pause(stop, &mut backoff).await {
                    return;
                }
                continue;
            }
        };
        let mut stall_check =
            tokio::time::interval_at(tokio::time::Instant::now() + STALL_CHECK, STALL_CHECK);
        stall_check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut checked_at = inbox.position();
        loop {
            let next = tokio::select! {
                () = stop.cancelled() => return,
                next = events.next() => next,
                _ = stall_check.tick() => {
                    let position = inbox.position();
                    if position == checked_at && behind(bus, position).await {
                        // The ordered consumer can take many seconds to notice that the
                        // server restarted; a fresh one resumes at once.
                        tracing::info!(position, "inbox stalled behind the stream; reading it again");
                        break;
                    }
                    checked_at = position;
                    continue;
                }
            };
            match next {
                Some(Ok(raw)) => {
                    backoff = FIRST_BACKOFF;
                    fold_raw(inbox, bus, metrics, &raw);
                    if !inbox.is_ready()
                        && (raw.pending == 0 || target.is_some_and(|t| raw.sequence >= t))
                    {
                        tracing::info!(position = raw.sequence, "inbox caught up with the stream");
                        inbox.set_ready();
                    }
                }
                Some(Err(error)) => {
                    tracing::warn!(stream = CASES_STREAM, error = %error, "stream read failed; resuming");
                    break;
                }
                None => break,
            }
        }
        if !pause(stop, &mut backoff).await {
            return;
        }
    }
}

/// Whether the stream holds messages after `position`. Errors count as "no": the stream
/// is then unreachable and a fresh reader would not help.
async fn behind(bus: &Bus, position: u64) -> bool {
    match Ops::from_bus(bus).stream_status(CASES_STREAM).await {
        Ok(Some(status)) => status.last_sequence > position,
        Ok(None) | Err(_) => false,
    }
}

/// Waits `backoff` (doubling it up to the ceiling) unless `stop` comes first; false on
/// stop.
async fn pause(stop: &CancellationToken, backoff: &mut Duration) -> bool {
    let wait = *backoff;
    *backoff = (*backoff * 2).min(MAX_BACKOFF);
    tokio::select! {
        () = stop.cancelled() => false,
        () = tokio::time::sleep(wait) => true,
    }
}

#[cfg(test)]
mod tests {
    use casebus_integrity::OfficeSigner;
    use casebus_proto::event::v1::{
        HandoffAccepted, HandoffAcknowledged, HandoffDeclined, HandoffRequested,
        InvestigationFiled, Payload,
    };
    use casebus_proto::{RequestId, Timestamp};

    use super::*;

    const CUSTOMS: &str = "customs:ningbo";
    const POLICE: &str = "public_security:ningbo";
    const OTHER_POLICE: &str = "public_security:hangzhou";

    fn office(id: &str) -> OfficeId {
        OfficeId::new(id).expect("valid office")
    }

    /// When the tests' events occur unless they say: Thursday 28 May 2026, 20:26 UTC
    /// (Friday 29 May, 04:26 in China Standard Time).
    const T: i64 = 1_780_000_000;
    const HOUR: i64 = 3600;

    fn inbox() -> Inbox {
        Inbox::new(office(POLICE), Arc::new(Clocks::default()))
    }

    /// A verified event of `case` by `by` at `version`, signed with a throw-away key
    /// (the inbox trusts what it is given; verification happens before `fold`).
    fn event(case: &str, by: &str, version: u64, kind: Kind) -> VerifiedEvent {
        event_at(case, by, version, kind, T)
    }

    /// As `event`, occurring (and recorded) at `seconds`.
    fn event_at(case: &str, by: &str, version: u64, kind: Kind, seconds: i64) -> VerifiedEvent {
        let signer = OfficeSigner::from_seed(office(by), "k1", [7; 32]).expect("signer");
        let case_id = CaseId::new(case).expect("case id");
        let request = RequestId::new(&format!("r{version}")).expect("request id");
        let event_id = EventId::derive(&office(by), &case_id, &request);
        let at = OffsetDateTime::from_unix_timestamp(seconds).expect("time");
        let event = Event {
            event_id: event_id.to_string(),
            case_id: case.into(),
            case_version: version,
            office_id: by.into(),
            agency: office(by).agency() as i32,
            actor: "a".into(),
            occurred_at: Some(timestamp_from(at)),
            recorded_at: Some(timestamp_from(at)),
            payload: Some(Payload { kind: Some(kind) }),
            ..Default::default()
        };
        let (signed, hash) = signer.sign(&event);
        VerifiedEvent {
            event,
            signed,
            event_id,
            case_id,
            office: office(by),
            hash,
            prev_hash: None,
            recorded_at: at,
            occurred_at: at,
        }
    }

    fn requested(id: &str, to_office: &str, due: i64) -> Kind {
        Kind::HandoffRequested(HandoffRequested {
            handoff_id: id.into(),
            kind: HandoffKind::SuspectedCrimeReferral as i32,
            to_agency: Agency::PublicSecurity as i32,
            to_office_id: to_office.into(),
            reason: "please investigate".into(),
            due_at: Some(Timestamp {
                seconds: due,
                nanos: 0,
            }),
            evidence_ids: vec![],
            recorded_dues: vec![],
        })
    }

    fn at(seconds: i64) -> OffsetDateTime {
        OffsetDateTime::from_unix_timestamp(seconds).expect("time")
    }

    #[test]
    fn hand_offs_to_the_office_or_its_agency_enter_and_others_do_not() {
        let inbox = inbox();
        inbox.fold(
            1,
            &event("C1", CUSTOMS, 2, requested("h1", "", 2_000_000_000)),
        );
        inbox.fold(
            2,
            &event_at(
                "C2",
                CUSTOMS,
                2,
                requested("h1", POLICE, 1_900_000_000),
                T - 2 * HOUR,
            ),
        );
        inbox.fold(
            3,
            &event("C3", CUSTOMS, 2, requested("h1", OTHER_POLICE, 1)),
        );
        let (items, position) = inbox.list(at(T), None, false);
        assert_eq!(position, 3);
        let cases: Vec<&str> = items.iter().map(|i| i.case_id.as_str()).collect();
        // Most urgent (earliest running clock due) first.
        assert_eq!(cases, ["C2", "C1"]);
        let clock = items[0].clock.as_ref().expect("a running clock");
        assert_eq!(clock.name, "receipt");
        assert!(!clock.basis.is_empty());
        assert_eq!(items[0].status, HandoffStatus::Requested as i32);
        assert_eq!(items[0].from_office_id, CUSTOMS);
    }

    #[test]
    fn a_sealed_or_restricted_hand_off_arrives_without_its_reason_and_evidence() {
        let inbox = inbox();
        let with = |case: &str, visibility: Option<Visibility>| {
            let mut e = event(case, CUSTOMS, 2, requested("h1", "", 2_000_000_000));
            if let Some(Kind::HandoffRequested(h)) =
                e.event.payload.as_mut().and_then(|p| p.kind.as_mut())
            {
                h.evidence_ids = vec!["ev-secret".into()];
            }
            // The inbox reads the visibility from the decoded event it is given.
            e.event.visibility = visibility;
            e
        };
        let listed = |agencies: &[Agency]| {
            Some(Visibility {
                kind: VisibilityKind::ListedAgencies as i32,
                agencies: agencies.iter().map(|a| *a as i32).collect(),
            })
        };
        let sealed = Some(Visibility {
            kind: VisibilityKind::OriginOnly as i32,
            agencies: vec![],
        });
        inbox.fold(1, &with("C-OPEN", None));
        inbox.fold(2, &with("C-SEALED", sealed));
        inbox.fold(3, &with("C-LISTED-OTHER", listed(&[Agency::Court])));
        inbox.fold(4, &with("C-LISTED-US", listed(&[Agency::PublicSecurity])));
        let (items, _) = inbox.list(at(T), None, false);
        let seen: BTreeMap<&str, (&str, usize)> = items
            .iter()
            .map(|i| {
                (
                    i.case_id.as_str(),
                    (i.reason.as_str(), i.evidence_ids.len()),
                )
            })
            .collect();
        assert_eq!(seen.len(), 4, "every hand-off arrives: {seen:?}");
        assert_eq!(seen["C-OPEN"], ("please investigate", 1));
        assert_eq!(seen["C-LISTED-US"], ("please investigate", 1));
        assert_eq!(seen["C-SEALED"], ("", 0));
        assert_eq!(seen["C-LISTED-OTHER"], ("", 0));
        let from: BTreeMap<&str, &str> = items
            .iter()
            .map(|i| (i.case_id.as_str(), i.from_office_id.as_str()))
            .collect();
        assert_eq!(
            from["C-SEALED"], "",
            "a sealed request does not name its office"
        );
        assert_eq!(
            from["C-LISTED-OTHER"], CUSTOMS,
            "a restricted one does, as a stub"
        );
        assert_eq!(from["C-OPEN"], CUSTOMS);
    }

    #[test]
    fn a_receipt_and_an_acceptance_update_and_the_filing_decision_removes_the_item() {
        let inbox = inbox();
        let (_, mut changes) = inbox.watch();
        inbox.fold(
            1,
            &event("C1", CUSTOMS, 2, requested("h1", "", 2_000_000_000)),
        );
        let ack = Kind::HandoffAcknowledged(HandoffAcknowledged {
            handoff_id: "h1".into(),
        });
        inbox.fold(2, &event("C1", POLICE, 3, ack));
        let (items, _) = inbox.list(at(T), None, false);
        assert_eq!(items[0].status, HandoffStatus::Acknowledged as i32);
        assert_eq!(items[0].acknowledged_by_office_id, POLICE);
        let clock = items[0].clock.as_ref().expect("a running clock");
        assert_eq!(clock.name, "filing_decision");

        // An answer from another agency does not count.
        let declined = Kind::HandoffDeclined(HandoffDeclined {
            handoff_id: "h1".into(),
            reason: "no".into(),
        });
        inbox.fold(3, &event("C1", CUSTOMS, 4, declined));
        assert_eq!(inbox.list(at(T), None, false).0.len(), 1);

        let accepted = Kind::HandoffAccepted(HandoffAccepted {
            handoff_id: "h1".into(),
            local_case_number: String::new(),
        });
        inbox.fold(4, &event("C1", POLICE, 5, accepted));
        // Accepting starts the work; the filing clock still runs.
        let (items, _) = inbox.list(at(T), None, false);
        assert_eq!(items.len(), 1);
        assert_eq!(items[0].status, HandoffStatus::Accepted as i32);
        assert_eq!(
            items[0].clock.as_ref().map(|c| c.name.as_str()),
            Some("filing_decision")
        );

        // Another agency's filing decision answers nothing; the police's does.
        let filed = || Kind::InvestigationFiled(InvestigationFiled::default());
        inbox.fold(5, &event("C9", POLICE, 2, filed()));
        assert_eq!(inbox.list(at(T), None, false).0.len(), 1);
        inbox.fold(6, &event("C1", POLICE, 6, filed()));
        assert!(inbox.list(at(T), None, false).0.is_empty());

        let seen: Vec<InboxChange> = std::iter::from_fn(|| changes.try_recv().ok())
            .map(|c| c.change)
            .collect();
        assert_eq!(
            seen,
            [
                InboxChange::Added,
                InboxChange::Updated,
                InboxChange::Updated,
                InboxChange::Removed
            ]
        );
    }

    #[test]
    fn overdue_items_are_flagged_filtered_and_announced_once() {
        let inbox = inbox();
        // Both receipt clocks run 24 hours from the next full hour; C2's starts two days
        // later. The flat due times recorded in the requests do not count.
        let c1 = requested("h1", "", T + 100 * HOUR);
        inbox.fold(1, &event_at("C1", CUSTOMS, 2, c1, T));
        let c2 = requested("h1", "", T - 100 * HOUR);
        inbox.fold(2, &event_at("C2", CUSTOMS, 2, c2, T + 48 * HOUR));
        let (_, mut changes) = inbox.watch();
        let (first, second) = (at(T + 30 * HOUR), at(T + 36 * HOUR));
        assert_eq!(inbox.sweep(first), (1, 2));
        assert_eq!(inbox.sweep(second), (1, 2));
        let overdue = inbox.list(first, None, true).0;
        assert_eq!(overdue.len(), 1);
        assert!(overdue[0].overdue);
        assert_eq!(overdue[0].case_id, "C1");
        let case = CaseId::new("C2").expect("case id");
        assert_eq!(inbox.list(first, Some(&case), false).0.len(), 1);
        let announced: Vec<String> = std::iter::from_fn(|| changes.try_recv().ok())
            .map(|c| c.entry.case_id.to_string())
            .collect();
        assert_eq!(announced, ["C1"]);
    }

    #[test]
    fn a_replayed_request_changes_nothing() {
        let inbox = inbox();
        let first = event("C1", CUSTOMS, 2, requested("h1", "", 100));
        inbox.fold(1, &first);
        let ack = Kind::HandoffAcknowledged(HandoffAcknowledged {
            handoff_id: "h1".into(),
        });
        inbox.fold(2, &event("C1", POLICE, 3, ack));
        inbox.fold(9, &first);
        let (items, _) = inbox.list(at(T), None, false);
        assert_eq!(items.len(), 1);
        assert_eq!(items[0].status, HandoffStatus::Acknowledged as i32);
        assert_eq!(items[0].stream_sequence, 1);
    }

    fn referred_and_accepted(inbox: &Inbox, case: &str, at: i64) {
        inbox.fold(1, &event_at(case, CUSTOMS, 2, requested("h1", "", at), at));
        let ack = Kind::HandoffAcknowledged(HandoffAcknowledged {
            handoff_id: "h1".into(),
        });
        inbox.fold(2, &event_at(case, POLICE, 3, ack, at + 60));
        let accepted = Kind::HandoffAccepted(HandoffAccepted {
            handoff_id: "h1".into(),
            local_case_number: String::new(),
        });
        inbox.fold(3, &event_at(case, POLICE, 4, accepted, at + 120));
    }

    #[test]
    fn an_accepted_undecided_referral_stays_and_becomes_overdue_on_its_filing_clock() {
        let inbox = inbox();
        referred_and_accepted(&inbox, "C1", T);
        // Referred on Friday 29 May 2026 (CST): three days from Saturday end on Monday
        // 1 June at 24:00 CST, 16:00 UTC.
        let due = OffsetDateTime::from_unix_timestamp(1_780_329_600).expect("time");
        let (items, _) = inbox.list(due, None, false);
        let clock = items[0].clock.as_ref().expect("the filing clock runs");
        assert_eq!(clock.name, "filing_decision");
        assert_eq!(clock.due_at, Some(timestamp_from(due)));
        assert!(clock.basis.contains("Art. 8"), "{}", clock.basis);
        assert!(!items[0].overdue);
        assert!(inbox.list(due, None, true).0.is_empty());
        let after = due + Duration::from_secs(1);
        let (overdue, _) = inbox.list(after, None, true);
        assert_eq!(overdue.len(), 1);
        assert!(overdue[0].overdue);
        assert_eq!(inbox.counts(after), (1, 1));
    }

    #[test]
    fn an_inbox_restored_from_its_snapshot_folds_on_as_the_one_it_was_taken_of() {
        let folded = inbox();
        // C1: referred, acknowledged and accepted (the filing clock runs); C2: referred
        // to the agency; C3: referred and decided (left out of the snapshot's cases).
        referred_and_accepted(&folded, "C1", T);
        folded.fold(
            4,
            &event("C2", CUSTOMS, 2, requested("h1", "", 2_000_000_000)),
        );
        folded.fold(5, &event("C3", CUSTOMS, 2, requested("h1", "", 1)));
        let filed = || Kind::InvestigationFiled(InvestigationFiled::default());
        folded.fold(6, &event("C3", POLICE, 3, filed()));
        let mut snapshot = folded.snapshot(CASES_STREAM);
        snapshot.anchor = crate::snapshot::anchor_of("case.C3", b"the message at 6");
        assert_eq!(snapshot.position, 6);
        assert_eq!(snapshot.entries.len(), 2);
        let cases: Vec<&str> = snapshot.cases.iter().map(|(c, _)| c.as_str()).collect();
        assert_eq!(
            cases,
            ["C1", "C2"],
            "a case with no clock running is left out"
        );
        let bytes = crate::snapshot::encode(&snapshot).expect("encode");
        let decoded =
            crate::snapshot::decode(&bytes, &office(POLICE), CASES_STREAM).expect("decode");
        let restored = inbox();
        restored.restore(decoded);
        let now = at(T + 3600);
        assert_eq!(
            restored.list(now, None, false),
            folded.list(now, None, false)
        );

        // What follows folds the same into both.
        let ack = Kind::HandoffAcknowledged(HandoffAcknowledged {
            handoff_id: "h1".into(),
        });
        let later: Vec<(u64, VerifiedEvent)> = vec![
            (7, event("C2", POLICE, 3, ack)),
            (8, event("C1", POLICE, 5, filed())),
            (
                9,
                event("C4", CUSTOMS, 2, requested("h1", POLICE, 2_000_000_000)),
            ),
        ];
        for (sequence, event) in &later {
            folded.fold(*sequence, event);
            restored.fold(*sequence, event);
            assert_eq!(
                restored.list(now, None, false),
                folded.list(now, None, false),
                "after sequence {sequence}"
            );
        }
        let (items, position) = restored.list(now, None, false);
        assert_eq!(position, 9);
        let cases: Vec<&str> = items.iter().map(|i| i.case_id.as_str()).collect();
        assert_eq!(cases.len(), 2, "{cases:?}");
    }

    #[test]
    fn a_clock_the_calendar_cannot_count_says_why_and_is_not_overdue() {
        let inbox = inbox();
        // 15 January 2027: the 2027 schedule awaits its notice.
        referred_and_accepted(&inbox, "C1", 1_800_000_000);
        let later = at(1_900_000_000);
        let (items, _) = inbox.list(later, None, false);
        let clock = items[0].clock.as_ref().expect("the filing clock runs");
        assert_eq!(clock.due_at, None);
        assert!(clock.due_error.contains("2027"), "{}", clock.due_error);
        assert!(!items[0].overdue);
    }
    #[test]
    fn a_hand_off_sealed_after_it_arrived_loses_its_content_and_office_and_an_opened_one_regains_them()
     {
        let inbox = inbox();
        let (_, mut changes) = inbox.watch();
        let mut request = event("C1", CUSTOMS, 2, requested("h1", "", 2_000_000_000));
        if let Some(Kind::HandoffRequested(h)) =
            request.event.payload.as_mut().and_then(|p| p.kind.as_mut())
        {
            h.evidence_ids = vec!["ev-secret".into()];
        }
        inbox.fold(1, &request);
        let shown = |inbox: &Inbox| {
            let (items, _) = inbox.list(at(1_800_000_000), None, false);
            let i = &items[0];
            (
                i.reason.clone(),
                i.evidence_ids.len(),
                i.from_office_id.clone(),
            )
        };
        assert_eq!(
            shown(&inbox),
            ("please investigate".into(), 1, CUSTOMS.into())
        );
        let change = |target_version: u64, kind: VisibilityKind, agencies: &[Agency]| {
            Kind::VisibilityChanged(casebus_proto::event::v1::VisibilityChanged {
                target_version,
                visibility: Some(Visibility {
                    kind: kind as i32,
                    agencies: agencies.iter().map(|a| *a as i32).collect(),
                }),
                reason: "witness protection".into(),
                wrapped_keys: Vec::new(),
            })
        };
        // Another event's change leaves the item alone.
        inbox.fold(
            2,
            &event("C1", CUSTOMS, 3, change(1, VisibilityKind::OriginOnly, &[])),
        );
        assert_eq!(shown(&inbox).0, "please investigate");

        inbox.fold(
            3,
            &event("C1", CUSTOMS, 4, change(2, VisibilityKind::OriginOnly, &[])),
        );
        assert_eq!(
            shown(&inbox),
            (String::new(), 0, String::new()),
            "sealed: swept"
        );
        let mut updates = Vec::new();
        while let Ok(c) = changes.try_recv() {
            updates.push((c.change, c.entry.item(at(0)).reason));
        }
        assert_eq!(
            updates.last(),
            Some(&(InboxChange::Updated, String::new())),
            "watchers are told, without the content: {updates:?}"
        );

        inbox.fold(
            4,
            &event(
                "C1",
                CUSTOMS,
                5,
                change(2, VisibilityKind::ListedAgencies, &[Agency::Court]),
            ),
        );
        assert_eq!(
            shown(&inbox),
            (String::new(), 0, CUSTOMS.into()),
            "restricted to the court: a stub naming its office"
        );
        inbox.fold(
            5,
            &event(
                "C1",
                CUSTOMS,
                6,
                change(2, VisibilityKind::ListedAgencies, &[Agency::PublicSecurity]),
            ),
        );
        assert_eq!(
            shown(&inbox),
            ("please investigate".into(), 1, CUSTOMS.into())
        );
    }
}
