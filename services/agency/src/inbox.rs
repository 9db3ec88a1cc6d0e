//! The inbox: hand-offs addressed to this office (or to its agency without naming an
//! office) that still await a decision, with their due times. It is folded from the
//! whole `CASES` stream, read from the start at every service start (catch-up, then
//! live), and serves `ListInbox` and `WatchInbox`.
//!
//! Only hand-off events matter here, so every message is decoded but only hand-off
//! events are verified (signature, key, envelope) before they count; a message that
//! fails is left out and counted. The inbox does not check case chains: it is a working
//! list, and the hand-off states it keeps only ever move forward, so a replayed message
//! changes nothing. The authoritative checks are the appender's (before every answer is
//! recorded) and the verifying consumer's.
//!
//! The inbox lives in memory, per service instance; a restart rebuilds it from the
//! stream before the service reports ready.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;
use std::time::Duration;

use futures::StreamExt as _;
use prost::Message as _;
use time::OffsetDateTime;
use tokio::sync::{broadcast, watch};
use tokio_util::sync::CancellationToken;

use casebus_bus::ops::Ops;
use casebus_bus::subjects::{CASES_STREAM, case_of_subject};
use casebus_bus::{Bus, RawEvent};
use casebus_domain::{Sight, event_sight};
use casebus_integrity::{VerifiedEvent, verify_signed};
use casebus_proto::agency::v1::{HandoffStatus, InboxChange, InboxItem};
use casebus_proto::event::v1::payload::Kind;
use casebus_proto::event::v1::{
    Agency, Event, HandoffKind, SignedEvent, Visibility, VisibilityKind,
};
use casebus_proto::{CaseId, EventId, OfficeId, datetime_from, timestamp_from};
use casebus_runtime::metrics::Metrics;

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

    /// Whether the due time has passed at `now`.
    pub fn is_overdue(&self, now: OffsetDateTime) -> bool {
        self.due_at.is_some_and(|due| now > due)
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
        }
    }

    /// Most urgent first: by due time (none last), then case and hand-off.
    fn urgency(&self) -> (bool, Option<OffsetDateTime>, &str, &str) {
        (
            self.due_at.is_none(),
            self.due_at,
            self.case_id.as_str(),
            &self.handoff_id,
        )
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
    /// Items already announced as overdue to watchers.
    overdue: BTreeSet<Key>,
    /// Stream sequence of the last message folded.
    position: u64,
}

/// The pending hand-offs addressed to one office.
#[derive(Debug)]
pub(crate) struct Inbox {
    office: OfficeId,
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

/// Whether a payload kind can change an inbox: the hand-off events, and a change of
/// visibility (which may seal or open a request already in it).
fn is_handoff_event(kind: &Kind) -> bool {
    matches!(
        kind,
        Kind::HandoffRequested(_)
            | Kind::HandoffAcknowledged(_)
            | Kind::HandoffAccepted(_)
            | Kind::HandoffDeclined(_)
            | Kind::VisibilityChanged(_)
    )
}

impl Inbox {
    /// An empty inbox of `office`, not ready.
    pub fn new(office: OfficeId) -> Self {
        let (changes, _) = broadcast::channel(WATCH_BUFFER);
        let (ready, _) = watch::channel(false);
        Self {
            office,
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
        let key = |handoff_id: &str| (event.case_id.clone(), handoff_id.to_owned());
        match kind {
            Kind::HandoffRequested(h) => {
                if !addressed_to(&self.office, h.to_agency(), &h.to_office_id) {
                    return;
                }
                let key = key(&h.handoff_id);
                if state.items.contains_key(&key) {
                    return; // a replay of a hand-off we know
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
                };
                entry.see(normalised(event.event.visibility.as_ref()), &self.office);
                self.announce(InboxChange::Added, &entry);
                state.items.insert(key, entry);
            }
            Kind::HandoffAcknowledged(a) => {
                let key = key(&a.handoff_id);
                if let Some(entry) = state.items.get_mut(&key)
                    && entry.status == HandoffStatus::Requested
                    && answers(&event.office, entry)
                {
                    entry.status = HandoffStatus::Acknowledged;
                    entry.acknowledged_by = Some(event.office.clone());
                    let entry = entry.clone();
                    self.announce(InboxChange::Updated, &entry);
                }
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
            }
            Kind::HandoffAccepted(a) => self.close(&mut state, key(&a.handoff_id), event, true),
            Kind::HandoffDeclined(d) => self.close(&mut state, key(&d.handoff_id), event, false),
            _ => {}
        }
    }

    fn close(&self, state: &mut State, key: Key, event: &VerifiedEvent, accepted: bool) {
        let answerable = state
            .items
            .get(&key)
            .is_some_and(|entry| answers(&event.office, entry));
        if !answerable {
            return;
        }
        state.overdue.remove(&key);
        if let Some(mut entry) = state.items.remove(&key) {
            entry.status = if accepted {
                HandoffStatus::Accepted
            } else {
                HandoffStatus::Declined
            };
            self.announce(InboxChange::Removed, &entry);
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

/// Reads `CASES` from the start into the inbox, catch-up then live, until `stop`. Marks
/// the inbox ready once it has read everything that was in the stream when it started.
/// Read errors are logged and the stream is read again from where it stopped.
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
        HandoffAccepted, HandoffAcknowledged, HandoffDeclined, HandoffRequested, Payload,
    };
    use casebus_proto::{RequestId, Timestamp};

    use super::*;

    const CUSTOMS: &str = "customs:ningbo";
    const POLICE: &str = "public_security:ningbo";
    const OTHER_POLICE: &str = "public_security:hangzhou";

    fn office(id: &str) -> OfficeId {
        OfficeId::new(id).expect("valid office")
    }

    /// A verified event of `case` by `by` at `version`, signed with a throw-away key
    /// (the inbox trusts what it is given; verification happens before `fold`).
    fn event(case: &str, by: &str, version: u64, kind: Kind) -> VerifiedEvent {
        let signer = OfficeSigner::from_seed(office(by), "k1", [7; 32]).expect("signer");
        let case_id = CaseId::new(case).expect("case id");
        let request = RequestId::new(&format!("r{version}")).expect("request id");
        let event_id = EventId::derive(&office(by), &case_id, &request);
        let at = OffsetDateTime::from_unix_timestamp(1_800_000_000).expect("time");
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
        })
    }

    fn at(seconds: i64) -> OffsetDateTime {
        OffsetDateTime::from_unix_timestamp(seconds).expect("time")
    }

    #[test]
    fn hand_offs_to_the_office_or_its_agency_enter_and_others_do_not() {
        let inbox = Inbox::new(office(POLICE));
        inbox.fold(
            1,
            &event("C1", CUSTOMS, 2, requested("h1", "", 2_000_000_000)),
        );
        inbox.fold(
            2,
            &event("C2", CUSTOMS, 2, requested("h1", POLICE, 1_900_000_000)),
        );
        inbox.fold(
            3,
            &event("C3", CUSTOMS, 2, requested("h1", OTHER_POLICE, 1)),
        );
        let (items, position) = inbox.list(at(1_800_000_000), None, false);
        assert_eq!(position, 3);
        let cases: Vec<&str> = items.iter().map(|i| i.case_id.as_str()).collect();
        // Most urgent (earliest due) first.
        assert_eq!(cases, ["C2", "C1"]);
        assert_eq!(items[0].status, HandoffStatus::Requested as i32);
        assert_eq!(items[0].from_office_id, CUSTOMS);
    }

    #[test]
    fn a_sealed_or_restricted_hand_off_arrives_without_its_reason_and_evidence() {
        let inbox = Inbox::new(office(POLICE));
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
        let (items, _) = inbox.list(at(1_800_000_000), None, false);
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
    fn a_hand_off_sealed_after_it_arrived_loses_its_content_and_office_and_an_opened_one_regains_them()
     {
        let inbox = Inbox::new(office(POLICE));
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

    #[test]
    fn a_receipt_updates_and_an_answer_removes_the_item() {
        let inbox = Inbox::new(office(POLICE));
        let (_, mut changes) = inbox.watch();
        inbox.fold(
            1,
            &event("C1", CUSTOMS, 2, requested("h1", "", 2_000_000_000)),
        );
        let ack = Kind::HandoffAcknowledged(HandoffAcknowledged {
            handoff_id: "h1".into(),
        });
        inbox.fold(2, &event("C1", POLICE, 3, ack));
        let (items, _) = inbox.list(at(1_800_000_000), None, false);
        assert_eq!(items[0].status, HandoffStatus::Acknowledged as i32);
        assert_eq!(items[0].acknowledged_by_office_id, POLICE);

        // An answer from another agency does not count.
        let declined = Kind::HandoffDeclined(HandoffDeclined {
            handoff_id: "h1".into(),
            reason: "no".into(),
        });
        inbox.fold(3, &event("C1", CUSTOMS, 4, declined));
        assert_eq!(inbox.list(at(0), None, false).0.len(), 1);

        let accepted = Kind::HandoffAccepted(HandoffAccepted {
            handoff_id: "h1".into(),
            local_case_number: String::new(),
        });
        inbox.fold(4, &event("C1", POLICE, 5, accepted));
        assert!(inbox.list(at(0), None, false).0.is_empty());

        let seen: Vec<InboxChange> = std::iter::from_fn(|| changes.try_recv().ok())
            .map(|c| c.change)
            .collect();
        assert_eq!(
            seen,
            [
                InboxChange::Added,
                InboxChange::Updated,
                InboxChange::Removed
            ]
        );
    }

    #[test]
    fn overdue_items_are_flagged_filtered_and_announced_once() {
        let inbox = Inbox::new(office(POLICE));
        inbox.fold(1, &event("C1", CUSTOMS, 2, requested("h1", "", 100)));
        inbox.fold(2, &event("C2", CUSTOMS, 2, requested("h1", "", 300)));
        let (_, mut changes) = inbox.watch();
        assert_eq!(inbox.sweep(at(200)), (1, 2));
        assert_eq!(inbox.sweep(at(250)), (1, 2));
        let overdue = inbox.list(at(200), None, true).0;
        assert_eq!(overdue.len(), 1);
        assert!(overdue[0].overdue);
        let case = CaseId::new("C2").expect("case id");
        assert_eq!(inbox.list(at(200), Some(&case), false).0.len(), 1);
        let announced: Vec<String> = std::iter::from_fn(|| changes.try_recv().ok())
            .map(|c| c.entry.case_id.to_string())
            .collect();
        assert_eq!(announced, ["C1"]);
    }

    #[test]
    fn a_replayed_request_changes_nothing() {
        let inbox = Inbox::new(office(POLICE));
        let first = event("C1", CUSTOMS, 2, requested("h1", "", 100));
        inbox.fold(1, &first);
        let ack = Kind::HandoffAcknowledged(HandoffAcknowledged {
            handoff_id: "h1".into(),
        });
        inbox.fold(2, &event("C1", POLICE, 3, ack));
        inbox.fold(9, &first);
        let (items, _) = inbox.list(at(0), None, false);
        assert_eq!(items.len(), 1);
        assert_eq!(items[0].status, HandoffStatus::Acknowledged as i32);
        assert_eq!(items[0].stream_sequence, 1);
    }
}
