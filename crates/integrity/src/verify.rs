//! Verification: one signed message (`verify_signed`: decode, key, validity period,
//! signature, envelope), the link between consecutive events of a case (`ChainTip`),
//! and a whole case (`verify_case`), each naming exactly what failed.

use prost::Message as _;
use time::OffsetDateTime;

use casebus_proto::event::v1::{Agency, Event, SignedEvent};
use casebus_proto::{CaseId, EventId, OfficeId, PayloadKind, agency_name, datetime_from};

use crate::hash::EventHash;
use crate::registry::OfficeRegistry;

/// Why a single message failed verification.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum VerifyError {
    /// The bytes are not a `SignedEvent`, or its `event` bytes are not an `Event`.
    #[error("undecodable {what}: {reason}")]
    Undecodable {
        /// "signed wrapper" or "event".
        what: &'static str,
        /// The decoder's explanation.
        reason: String,
    },
    /// No key with this id is registered.
    #[error("unknown key {key_id:?}")]
    UnknownKey {
        /// The key id named by the wrapper.
        key_id: String,
    },
    /// The signature does not verify with the named key: the bytes were changed or the
    /// signer did not hold the key.
    #[error("bad signature for key {key_id}")]
    BadSignature {
        /// The key id named by the wrapper.
        key_id: String,
    },
    /// The key was not valid when the event was recorded.
    #[error("key {key_id} was not valid at {at}")]
    KeyNotValidAt {
        /// The key id.
        key_id: String,
        /// The event's recorded_at (RFC 3339).
        at: String,
    },
    /// The key belongs to another office than the one the event names.
    #[error("event claims office {event_office} but is signed with key {key_id} of {key_office}")]
    OfficeMismatch {
        /// Office named in the event.
        event_office: String,
        /// Office owning the key.
        key_office: String,
        /// The key id.
        key_id: String,
    },
    /// The event's `recorded_at`, which its signer chose, is further from the time the
    /// stream stored the message than the allowed clock skew: a backdated event (say,
    /// to use a key whose period has ended) or a badly wrong clock.
    #[error(
        "recorded_at {recorded_at} is more than {max_skew_secs} s from the stored time {stored_at}"
    )]
    ClockSkew {
        /// The event's recorded_at (RFC 3339).
        recorded_at: String,
        /// When the stream stored the message (RFC 3339).
        stored_at: String,
        /// The allowed skew in seconds.
        max_skew_secs: u64,
    },
    /// An envelope field is missing or invalid.
    #[error("invalid envelope field {field}: {reason}")]
    InvalidEnvelope {
        /// The field.
        field: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// The event does not continue its case's chain.
    #[error(transparent)]
    Chain(#[from] ChainError),
}

impl VerifyError {
    /// A short stable code for the failure, used in DLQ headers and metrics labels.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Undecodable { .. } => "undecodable",
            Self::UnknownKey { .. } => "unknown_key",
            Self::BadSignature { .. } => "bad_signature",
            Self::KeyNotValidAt { .. } => "key_not_valid",
            Self::ClockSkew { .. } => "clock_skew",
            Self::OfficeMismatch { .. } => "office_mismatch",
            Self::InvalidEnvelope { .. } => "invalid_envelope",
            Self::Chain(c) => c.code(),
        }
    }
}

/// Why an otherwise valid event does not continue its case's chain.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ChainError {
    /// The event belongs to another case than the subject it was found on.
    #[error("event of case {event_case} found in case {expected_case}")]
    CaseMismatch {
        /// The case whose chain is being checked.
        expected_case: String,
        /// The case named in the event.
        event_case: String,
    },
    /// Versions are missing before this event.
    #[error("gap in case {case_id}: expected version {expected}, found {found}")]
    Gap {
        /// The case.
        case_id: String,
        /// The version that should come next.
        expected: u64,
        /// The version found.
        found: u64,
    },
    /// The event's version was seen already (a replay or reordering).
    #[error("reorder in case {case_id}: expected version {expected}, found {found}")]
    Reorder {
        /// The case.
        case_id: String,
        /// The version that should come next.
        expected: u64,
        /// The version found.
        found: u64,
    },
    /// The event's prev_event_hash is not the hash of the event before it.
    #[error("chain break in case {case_id} at version {version}: prev_event_hash does not match")]
    ChainBreak {
        /// The case.
        case_id: String,
        /// The version of the event whose link is broken.
        version: u64,
    },
    /// The event is recorded before the event it follows: time goes backwards within
    /// the case.
    #[error(
        "time goes backwards in case {case_id} at version {version}: recorded_at {found} is before {previous}"
    )]
    TimeRegression {
        /// The case.
        case_id: String,
        /// The version of the event.
        version: u64,
        /// recorded_at of the event before it (RFC 3339).
        previous: String,
        /// recorded_at of this event (RFC 3339).
        found: String,
    },
    /// The message is a copy of an event of the case handled already (the same signed
    /// bytes published again), not a new event.
    #[error(
        "replay in case {case_id}: version {version} was stored already at sequence {original_sequence}"
    )]
    Replay {
        /// The case.
        case_id: String,
        /// The version the copy claims.
        version: u64,
        /// Stream sequence of the original.
        original_sequence: u64,
    },
}

impl ChainError {
    /// A short stable code, as for [`VerifyError::code`].
    pub fn code(&self) -> &'static str {
        match self {
            Self::CaseMismatch { .. } => "case_mismatch",
            Self::Gap { .. } => "gap",
            Self::Reorder { .. } => "reorder",
            Self::ChainBreak { .. } => "chain_break",
            Self::TimeRegression { .. } => "time_regression",
            Self::Replay { .. } => "replay",
        }
    }
}

/// An event whose signature, key and envelope were checked.
#[derive(Debug, Clone, PartialEq)]
pub struct VerifiedEvent {
    /// The decoded event.
    pub event: Event,
    /// The signed wrapper exactly as stored (its `event` bytes are what was hashed).
    pub signed: SignedEvent,
    /// `event.event_id`, validated.
    pub event_id: EventId,
    /// `event.case_id`, validated.
    pub case_id: CaseId,
    /// `event.office_id`, validated and matching the signing key.
    pub office: OfficeId,
    /// SHA-256 of `signed.event`.
    pub hash: EventHash,
    /// `event.prev_event_hash`; `None` for version 1.
    pub prev_hash: Option<EventHash>,
    /// `event.recorded_at`.
    pub recorded_at: OffsetDateTime,
    /// `event.occurred_at`.
    pub occurred_at: OffsetDateTime,
}

impl VerifiedEvent {
    /// The event's position in its case.
    pub fn version(&self) -> u64 {
        self.event.case_version
    }

    /// The agency of the recording office.
    pub fn agency(&self) -> Agency {
        self.office.agency()
    }

    /// The payload as this build understands it; kinds from a newer producer come back
    /// as [`PayloadKind::Unknown`] with their raw bytes.
    pub fn payload_kind(&self) -> PayloadKind<'_> {
        match self.event.payload.as_ref().and_then(|p| p.kind.as_ref()) {
            Some(kind) => PayloadKind::Known(kind),
            None => match casebus_proto::unknown_payload(&self.signed.event) {
                Some((field_number, bytes)) => PayloadKind::Unknown {
                    field_number,
                    bytes,
                },
                None => PayloadKind::Missing,
            },
        }
    }

    /// The catalogue name of the payload kind, or `Unknown(<field>)`.
    pub fn type_name(&self) -> String {
        match self.payload_kind() {
            PayloadKind::Known(kind) => casebus_proto::payload_type_name(kind).to_owned(),
            PayloadKind::Unknown { field_number, .. } => format!("Unknown({field_number})"),
            PayloadKind::Missing => "Missing".to_owned(),
        }
    }

    /// The stored bytes of the signed wrapper.
    pub fn encode_signed(&self) -> Vec<u8> {
        self.signed.encode_to_vec()
    }
}

fn envelope(field: &'static str, reason: impl Into<String>) -> VerifyError {
    VerifyError::InvalidEnvelope {
        field,
        reason: reason.into(),
    }
}

/// Decodes and verifies one stored message: the wrapper, the signature with the named
/// key, the event, its envelope, that the key belongs to the event's office and that it
/// was valid when the event was recorded. The chain is checked separately
/// ([`ChainTip::check`]).
///
/// # Errors
/// The [`VerifyError`] naming the first check that failed.
pub fn verify_signed(raw: &[u8], registry: &OfficeRegistry) -> Result<VerifiedEvent, VerifyError> {
    let signed = SignedEvent::decode(raw).map_err(|e| VerifyError::Undecodable {
        what: "signed wrapper",
        reason: e.to_string(),
    })?;
    if signed.event.is_empty() {
        return Err(VerifyError::Undecodable {
            what: "signed wrapper",
            reason: "no event bytes".into(),
        });
    }
    let Some((key_office, key, verifying)) = registry.key(&signed.key_id) else {
        return Err(VerifyError::UnknownKey {
            key_id: signed.key_id.clone(),
        });
    };
    let signature = ed25519_dalek::Signature::from_slice(&signed.signature).map_err(|_| {
        VerifyError::BadSignature {
            key_id: signed.key_id.clone(),
        }
    })?;
    verifying
        .verify_strict(&signed.event, &signature)
        .map_err(|_| VerifyError::BadSignature {
            key_id: signed.key_id.clone(),
        })?;

    let event = Event::decode(signed.event.as_slice()).map_err(|e| VerifyError::Undecodable {
        what: "event",
        reason: e.to_string(),
    })?;
    let case_id = CaseId::new(&event.case_id).map_err(|e| envelope("case_id", e.to_string()))?;
    let event_id =
        EventId::new(&event.event_id).map_err(|e| envelope("event_id", e.to_string()))?;
    let office =
        OfficeId::new(&event.office_id).map_err(|e| envelope("office_id", e.to_string()))?;
    if event.agency != office.agency() as i32 {
        return Err(envelope(
            "agency",
            format!(
                "does not match office {office} (expected {})",
                agency_name(office.agency())
            ),
        ));
    }
    if event.case_version == 0 {
        return Err(envelope("case_version", "must be 1 or more"));
    }
    let recorded_at = event
        .recorded_at
        .as_ref()
        .and_then(datetime_from)
        .ok_or_else(|| envelope("recorded_at", "missing or out of range"))?;
    let occurred_at = event
        .occurred_at
        .as_ref()
        .and_then(datetime_from)
        .ok_or_else(|| envelope("occurred_at", "missing or out of range"))?;
    let prev_hash = match (event.case_version, event.prev_event_hash.len()) {
        (1, 0) => None,
        (1, _) => return Err(envelope("prev_event_hash", "must be empty at version 1")),
        (_, 32) => EventHash::from_slice(&event.prev_event_hash),
        (_, n) => {
            return Err(envelope(
                "prev_event_hash",
                format!("must be 32 bytes, found {n}"),
            ));
        }
    };
    if *key_office != office {
        return Err(VerifyError::OfficeMismatch {
            event_office: office.to_string(),
            key_office: key_office.to_string(),
            key_id: key.key_id.clone(),
        });
    }
    if !key.valid_at(recorded_at) {
        return Err(VerifyError::KeyNotValidAt {
            key_id: key.key_id.clone(),
            at: recorded_at
                .format(&time::format_description::well_known::Rfc3339)
                .unwrap_or_default(),
        });
    }
    let hash = EventHash::of(&signed.event);
    Ok(VerifiedEvent {
        event,
        signed,
        event_id,
        case_id,
        office,
        hash,
        prev_hash,
        recorded_at,
        occurred_at,
    })
}

/// [`verify_signed`] for every payload, in order, on up to `threads` threads (at least
/// one; the calling thread when there is one or only a few payloads). Each result is
/// exactly what [`verify_signed`] returns for that payload alone: every signature is
/// checked on its own with `verify_strict`, never with batch verification (see
/// `docs/PERFORMANCE.md` on why batch verification is not equivalent).
pub fn verify_signed_all<P: AsRef<[u8]> + Sync>(
    payloads: &[P],
    registry: &OfficeRegistry,
    threads: usize,
) -> Vec<Result<VerifiedEvent, VerifyError>> {
    // Below this, starting a thread costs more than the signatures it would check.
    const PER_THREAD_AT_LEAST: usize = 16;
    let threads = threads.min(payloads.len() / PER_THREAD_AT_LEAST).max(1);
    if threads == 1 {
        return payloads
            .iter()
            .map(|p| verify_signed(p.as_ref(), registry))
            .collect();
    }
    let chunk = payloads.len().div_ceil(threads);
    std::thread::scope(|scope| {
        let parts: Vec<_> = payloads
            .chunks(chunk)
            .skip(1)
            .map(|part| {
                scope.spawn(move || {
                    part.iter()
                        .map(|p| verify_signed(p.as_ref(), registry))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        // The calling thread checks the first chunk itself instead of waiting idle.
        let mut out: Vec<_> = payloads[..chunk.min(payloads.len())]
            .iter()
            .map(|p| verify_signed(p.as_ref(), registry))
            .collect();
        out.reserve(payloads.len() - out.len());
        for (part, payloads) in parts.into_iter().zip(payloads.chunks(chunk).skip(1)) {
            match part.join() {
                Ok(results) => out.extend(results),
                // A panicking check (it has none today) must not lose its results:
                // check that chunk again here, where the panic would surface.
                Err(_) => out.extend(payloads.iter().map(|p| verify_signed(p.as_ref(), registry))),
            }
        }
        out
    })
}

fn rfc3339(t: OffsetDateTime) -> String {
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

/// Checks the event's `recorded_at` (chosen by its signer, and the instant its key's
/// validity is judged at) against `stored_at`, when the stream stored the message: they
/// may differ by at most `max_skew` either way. Only a reader that knows the stored
/// time can make this check (a consumer, a loader reading the stream); an offline
/// bundle cannot.
///
/// # Errors
/// [`VerifyError::ClockSkew`] when they differ by more.
pub fn check_recorded_at(
    event: &VerifiedEvent,
    stored_at: OffsetDateTime,
    max_skew: std::time::Duration,
) -> Result<(), VerifyError> {
    let skew = (event.recorded_at - stored_at).unsigned_abs();
    if skew > max_skew {
        return Err(VerifyError::ClockSkew {
            recorded_at: rfc3339(event.recorded_at),
            stored_at: rfc3339(stored_at),
            max_skew_secs: max_skew.as_secs(),
        });
    }
    Ok(())
}

/// The last verified event of a case: what the next event must link to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainTip {
    /// The case.
    pub case_id: CaseId,
    /// Version of the last verified event (0 before the first).
    pub version: u64,
    /// Hash of the last verified event; `None` before the first.
    pub hash: Option<EventHash>,
    /// `recorded_at` of the last verified event; `None` before the first. The next
    /// event may not be recorded earlier.
    pub recorded_at: Option<OffsetDateTime>,
}

impl ChainTip {
    /// The tip of a case with no events yet.
    pub fn empty(case_id: CaseId) -> Self {
        Self {
            case_id,
            version: 0,
            hash: None,
            recorded_at: None,
        }
    }

    /// Checks that `event` is the next event of this case: same case, version + 1,
    /// `prev_event_hash` equal to the tip's hash, and `recorded_at` not before the
    /// tip's.
    ///
    /// # Errors
    /// [`ChainError`] naming the mismatch; the tip is left unchanged.
    pub fn check(&self, event: &VerifiedEvent) -> Result<(), ChainError> {
        if event.case_id != self.case_id {
            return Err(ChainError::CaseMismatch {
                expected_case: self.case_id.to_string(),
                event_case: event.case_id.to_string(),
            });
        }
        // Saturating: `verify_case` resynchronises on the version found after a gap, so
        // a validly signed event claiming version u64::MAX can leave the tip there.
        let expected = self.version.saturating_add(1);
        let found = event.version();
        if found > expected {
            return Err(ChainError::Gap {
                case_id: self.case_id.to_string(),
                expected,
                found,
            });
        }
        if found < expected {
            return Err(ChainError::Reorder {
                case_id: self.case_id.to_string(),
                expected,
                found,
            });
        }
        if event.prev_hash != self.hash {
            return Err(ChainError::ChainBreak {
                case_id: self.case_id.to_string(),
                version: found,
            });
        }
        if let Some(previous) = self.recorded_at
            && event.recorded_at < previous
        {
            return Err(ChainError::TimeRegression {
                case_id: self.case_id.to_string(),
                version: found,
                previous: rfc3339(previous),
                found: rfc3339(event.recorded_at),
            });
        }
        Ok(())
    }

    /// Moves the tip to `event` (after a successful [`ChainTip::check`]).
    pub fn advance(&mut self, event: &VerifiedEvent) {
        self.version = event.version();
        self.hash = Some(event.hash);
        self.recorded_at = Some(event.recorded_at);
    }
}

/// One failure found while verifying a case.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaseFailure {
    /// Index of the message in the input (0-based).
    pub position: usize,
    /// The case version the message claims, when it could be decoded.
    pub version: Option<u64>,
    /// What failed.
    pub error: VerifyError,
}

/// The outcome of verifying every message of one case.
#[derive(Debug, Clone)]
pub struct CaseReport {
    /// The case.
    pub case_id: CaseId,
    /// The events that verified and continue the chain, in order.
    pub events: Vec<VerifiedEvent>,
    /// Every failure, in input order.
    pub failures: Vec<CaseFailure>,
}

impl CaseReport {
    /// Whether the case verified completely: no failure at all.
    pub fn is_intact(&self) -> bool {
        self.failures.is_empty()
    }
}

/// Verifies every message of one case, in stream order, reporting every failure rather
/// than stopping at the first.
///
/// A message that fails its own checks is left out of the chain. After a gap the chain
/// resynchronises on the event found (so one missing event is reported once, not for
/// every later event); after a reorder or chain break it does not.
pub fn verify_case<'a>(
    case_id: &CaseId,
    messages: impl IntoIterator<Item = &'a [u8]>,
    registry: &OfficeRegistry,
) -> CaseReport {
    let mut tip = ChainTip::empty(case_id.clone());
    let mut report = CaseReport {
        case_id: case_id.clone(),
        events: Vec::new(),
        failures: Vec::new(),
    };
    for (position, raw) in messages.into_iter().enumerate() {
        let event = match verify_signed(raw, registry) {
            Ok(event) => event,
            Err(error) => {
                let version = SignedEvent::decode(raw)
                    .ok()
                    .and_then(|s| Event::decode(s.event.as_slice()).ok())
                    .map(|e| e.case_version);
                report.failures.push(CaseFailure {
                    position,
                    version,
                    error,
                });
                continue;
            }
        };
        match tip.check(&event) {
            Ok(()) => {
                tip.advance(&event);
                report.events.push(event);
            }
            Err(error) => {
                let resync = matches!(error, ChainError::Gap { .. }) && event.prev_hash.is_some();
                report.failures.push(CaseFailure {
                    position,
                    version: Some(event.version()),
                    error: error.into(),
                });
                if resync {
                    tip.advance(&event);
                }
            }
        }
    }
    report
}
