//! A case as read from the stream: `LoadedCase` (every verified event plus the messages
//! that failed, with why) and `CaseHead` (just what the appender needs: state, chain tip,
//! last sequence, and the event ids seen, for idempotent retries).
//!
//! A message that fails verification is left out of the chain; the next valid event
//! links to the last valid one. So a poison message never blocks a case.
//!
//! The loaders apply exactly the checks a consumer applies, including the two on time
//! (`recorded_at` within the clock skew of the time the stream stored the message, and
//! never before the event it follows), so the appender decides on the same chain that
//! every consumer follows: an event a consumer dead-letters is left out here too.

use std::collections::HashMap;
use std::time::Duration;

use time::OffsetDateTime;

use casebus_domain::{CaseState, RecordedEvent};
use casebus_integrity::{
    ChainTip, OfficeRegistry, VerifiedEvent, VerifyError, check_recorded_at, verify_signed,
};
use casebus_proto::{CaseId, EventId, PayloadKind};

/// A verified event and where it is in the stream.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredEvent {
    /// Its sequence in `CASES`.
    pub sequence: u64,
    /// The verified event.
    pub event: VerifiedEvent,
}

impl StoredEvent {
    /// The view of the event the case rules fold.
    pub fn recorded(&self) -> RecordedEvent<'_> {
        recorded(&self.event)
    }
}

/// The domain's view of a verified event.
pub fn recorded(event: &VerifiedEvent) -> RecordedEvent<'_> {
    RecordedEvent {
        case_id: &event.case_id,
        version: event.version(),
        event_id: &event.event_id,
        office: &event.office,
        occurred_at: event.occurred_at,
        visibility: event.event.visibility.as_ref(),
        payload: match event.payload_kind() {
            PayloadKind::Known(_) => event.event.payload.as_ref().and_then(|p| p.kind.as_ref()),
            _ => None,
        },
    }
}

/// A message of the case that failed verification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RejectedMessage {
    /// Its sequence in `CASES`.
    pub sequence: u64,
    /// Why it failed.
    pub error: VerifyError,
}

/// One case read from the stream.
#[derive(Debug, Clone)]
pub struct LoadedCase {
    /// Verified events, in order (versions 1..n).
    pub events: Vec<StoredEvent>,
    /// Messages that failed verification, in stream order.
    pub rejected: Vec<RejectedMessage>,
    /// Sequence of the last message read (valid or not); 0 for none.
    pub last_sequence: u64,
    /// The case state folded from `events`.
    pub state: CaseState,
    /// The chain tip after `events`.
    pub tip: ChainTip,
}

/// When the stream stored a message and how far its `recorded_at` may be from that.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Stored {
    pub at: OffsetDateTime,
    pub max_skew: Duration,
}

/// Checks one raw message against the tip and its stored time, as a consumer does; on
/// success advances the tip.
fn check_message(
    tip: &mut ChainTip,
    raw: &[u8],
    stored: Stored,
    registry: &OfficeRegistry,
) -> Result<VerifiedEvent, VerifyError> {
    let event = verify_signed(raw, registry)?;
    tip.check(&event)?;
    check_recorded_at(&event, stored.at, stored.max_skew)?;
    tip.advance(&event);
    Ok(event)
}

impl LoadedCase {
    pub(crate) fn empty(case_id: CaseId) -> Self {
        Self {
            events: Vec::new(),
            rejected: Vec::new(),
            last_sequence: 0,
            state: CaseState::default(),
            tip: ChainTip::empty(case_id),
        }
    }

    /// The case id.
    pub fn case_id(&self) -> &CaseId {
        &self.tip.case_id
    }

    /// Verifies and folds one more message.
    pub(crate) fn push(
        &mut self,
        sequence: u64,
        raw: &[u8],
        stored: Stored,
        registry: &OfficeRegistry,
    ) {
        self.last_sequence = sequence;
        match check_message(&mut self.tip, raw, stored, registry) {
            Ok(event) => {
                let stored = StoredEvent { sequence, event };
                self.state.apply(&stored.recorded());
                self.events.push(stored);
            }
            Err(error) => self.rejected.push(RejectedMessage { sequence, error }),
        }
    }

    /// The event with this id, if the case has it.
    pub fn find(&self, event_id: &EventId) -> Option<&StoredEvent> {
        self.events.iter().find(|e| &e.event.event_id == event_id)
    }
}

/// What the appender remembers of an event id: enough to answer a retry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct IdEntry {
    pub version: u64,
    pub sequence: u64,
    pub digest: [u8; 32],
    pub hash: casebus_integrity::EventHash,
    /// The event is sealed: its digest is keyed with its content key.
    pub sealed: bool,
}

/// What a head is estimated to keep per event beyond the event's encoded bytes: its id
/// entry (the event id, the entry, the map's slot) and the fold's bookkeeping.
pub(crate) const HEAD_BYTES_PER_EVENT: usize = 192;
/// What an empty head is estimated to take.
pub(crate) const HEAD_BYTES_BASE: usize = 512;

/// The appender's compact view of a case.
#[derive(Debug, Clone)]
pub(crate) struct CaseHead {
    pub state: CaseState,
    pub tip: ChainTip,
    pub last_sequence: u64,
    pub ids: HashMap<EventId, IdEntry>,
    /// Estimated memory the head takes: [`HEAD_BYTES_BASE`] plus, per event folded, its
    /// encoded size (the state keeps what its payload says) and
    /// [`HEAD_BYTES_PER_EVENT`]. The appender bounds its cache by the sum.
    pub bytes: usize,
}

impl CaseHead {
    pub fn empty(case_id: CaseId) -> Self {
        Self {
            state: CaseState::default(),
            tip: ChainTip::empty(case_id),
            last_sequence: 0,
            ids: HashMap::new(),
            bytes: HEAD_BYTES_BASE,
        }
    }

    pub fn push(&mut self, sequence: u64, raw: &[u8], stored: Stored, registry: &OfficeRegistry) {
        self.last_sequence = sequence;
        match check_message(&mut self.tip, raw, stored, registry) {
            Ok(event) => self.remember(sequence, &event),
            Err(error) => {
                tracing::warn!(
                    case_id = %self.tip.case_id,
                    sequence,
                    code = error.code(),
                    error = %error,
                    "case message fails verification; left out of the chain"
                );
            }
        }
    }

    pub fn remember(&mut self, sequence: u64, event: &VerifiedEvent) {
        self.state.apply(&recorded(event));
        self.bytes += event.signed.event.len() + HEAD_BYTES_PER_EVENT;
        let digest = <[u8; 32]>::try_from(event.event.command_digest.as_slice()).unwrap_or([0; 32]);
        self.ids.insert(
            event.event_id.clone(),
            IdEntry {
                version: event.version(),
                sequence,
                digest,
                hash: event.hash,
                sealed: event.event.sealed.is_some(),
            },
        );
    }
}
