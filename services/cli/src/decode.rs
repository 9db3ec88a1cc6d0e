//! Turning stored `CASES` messages into something an operator can read: the envelope
//! fields, hashes and key, the payload decoded to JSON through the protobuf descriptors
//! (so every kind of the catalogue renders without hand-written code, and a kind from a
//! newer producer shows as its field number and raw bytes), and the verification
//! status. A message that cannot be decoded or verified is shown as such, never dropped.

use std::sync::OnceLock;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use prost::Message as _;
use prost_reflect::{DescriptorPool, DynamicMessage, MessageDescriptor, SerializeOptions};
use serde_json::{Value, json};
use time::OffsetDateTime;

use casebus_integrity::seal::{Opener, SealError, open_event_with};
use casebus_integrity::{EventHash, OfficeRegistry, VerifyError, verify_signed};
use casebus_proto::event::v1::{Event, Payload, SignedEvent, WrappedKey};
use casebus_proto::{
    FILE_DESCRIPTOR_SET, PayloadKind, agency_name, datetime_from, payload_type_name,
    unknown_payload,
};

use crate::output::shorten;
use crate::times::rfc3339;

const EVENT_MESSAGE: &str = "casebus.event.v1.Event";
const PAYLOAD_MESSAGE: &str = "casebus.event.v1.Payload";

fn pool() -> Option<&'static DescriptorPool> {
    static POOL: OnceLock<Option<DescriptorPool>> = OnceLock::new();
    POOL.get_or_init(|| DescriptorPool::decode(FILE_DESCRIPTOR_SET).ok())
        .as_ref()
}

fn descriptor(name: &str) -> Option<MessageDescriptor> {
    pool().and_then(|p| p.get_message_by_name(name))
}

/// Catalogue names of every payload kind this build knows (`CaseOpened`, ...), in
/// field-number order.
pub fn payload_type_names() -> Vec<String> {
    let Some(payload) = descriptor(PAYLOAD_MESSAGE) else {
        return Vec::new();
    };
    let mut fields: Vec<_> = payload
        .fields()
        .filter_map(|f| {
            f.kind()
                .as_message()
                .map(|m| (f.number(), m.name().to_owned()))
        })
        .collect();
    fields.sort();
    fields.into_iter().map(|(_, name)| name).collect()
}

/// Parses an event type filter: a catalogue name, matched without regard to case.
///
/// # Errors
/// A message listing the known names.
pub fn event_type_arg(value: &str) -> Result<String, String> {
    let names = payload_type_names();
    names
        .iter()
        .find(|n| n.eq_ignore_ascii_case(value.trim()))
        .cloned()
        .ok_or_else(|| {
            format!(
                "{value:?} is not an event type; known types: {}",
                names.join(", ")
            )
        })
}

fn json_options() -> SerializeOptions {
    SerializeOptions::new()
        .use_proto_field_name(true)
        .skip_default_fields(false)
        .stringify_64_bit_integers(false)
}

/// The whole encoded `Event` as JSON (protobuf JSON mapping, proto field names, every
/// field shown), or `None` when the bytes do not decode.
pub fn event_json(event_bytes: &[u8]) -> Option<Value> {
    let message = DynamicMessage::decode(descriptor(EVENT_MESSAGE)?, event_bytes).ok()?;
    message
        .serialize_with_options(serde_json::value::Serializer, &json_options())
        .ok()
}

/// The payload of an encoded `Event` as JSON: `{"<kind>": {...fields}}` for a known
/// kind, `{"unknown_kind": {"field_number": n, "bytes_base64": "..."}}` for a kind from
/// a newer producer, `null` for none.
pub fn payload_json(event_bytes: &[u8]) -> Value {
    let decoded = Event::decode(event_bytes).ok();
    let known = decoded
        .as_ref()
        .and_then(|e| e.payload.as_ref())
        .and_then(|p| p.kind.as_ref())
        .is_some();
    if known
        && let Some(Value::Object(mut event)) = event_json(event_bytes)
        && let Some(payload) = event.remove("payload")
    {
        return payload;
    }
    match unknown_payload(event_bytes) {
        Some((field_number, bytes)) => json!({
            "unknown_kind": { "field_number": field_number, "bytes_base64": B64.encode(bytes) }
        }),
        None => Value::Null,
    }
}

/// A payload as JSON, as [`payload_json`] renders the payload of an event.
pub fn full_payload_json(payload: &Payload) -> Value {
    descriptor(PAYLOAD_MESSAGE)
        .and_then(|d| DynamicMessage::decode(d, payload.encode_to_vec().as_slice()).ok())
        .and_then(|m| {
            m.serialize_with_options(serde_json::value::Serializer, &json_options())
                .ok()
        })
        .unwrap_or(Value::Null)
}

/// The opener of the keys given with `--decryption-key`, `None` without.
///
/// # Errors
/// A usage error naming `--decryption-key` and the file when one is not a readable
/// encryption key file.
pub fn load_opener(
    args: &crate::cli::DecryptionArgs,
) -> Result<Option<Opener>, crate::error::CliError> {
    if args.decryption_keys.is_empty() {
        return Ok(None);
    }
    let keys = args
        .decryption_keys
        .iter()
        .map(|path| {
            casebus_integrity::seal::OpeningKey::load(path).map_err(|e| {
                crate::error::CliError::usage(format!("--decryption-key {}: {e}", path.display()))
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Some(Opener::new(keys)))
}

/// What a reader of the stream sees of an event's content.
#[derive(Debug, Clone, PartialEq)]
pub enum Content {
    /// In clear: the payload shown is all of it.
    Clear,
    /// Sealed, and opened with a key given (`--decryption-key`): the full payload.
    Opened {
        /// The offices it is sealed for.
        readers: Vec<String>,
        /// The full payload.
        payload: Payload,
    },
    /// Sealed for `readers` and not opened here: only the readable part is shown.
    Sealed {
        /// The offices it is sealed for.
        readers: Vec<String>,
        /// Why a key given did not open it (altered, disagreeing), if one was tried.
        problem: Option<String>,
    },
}

/// The content keys later `VisibilityChanged` events wrapped for new readers, by the
/// version of the event they widen, in case order.
pub fn widened_keys<'a>(
    events: impl IntoIterator<Item = &'a casebus_integrity::VerifiedEvent>,
) -> std::collections::HashMap<u64, Vec<WrappedKey>> {
    let mut widened: std::collections::HashMap<u64, Vec<WrappedKey>> =
        std::collections::HashMap::new();
    for event in events {
        if let Some(casebus_proto::event::v1::payload::Kind::VisibilityChanged(p)) =
            event.event.payload.as_ref().and_then(|p| p.kind.as_ref())
            && !p.wrapped_keys.is_empty()
        {
            widened
                .entry(p.target_version)
                .or_default()
                .extend(p.wrapped_keys.iter().cloned());
        }
    }
    widened
}

/// The offices a sealed event's content key is wrapped for (its own wrapped keys and
/// `widened`), from the key ids (`<office>#<label>`), sorted, each once.
fn sealed_for(sealed: &casebus_integrity::seal::Sealed, widened: &[WrappedKey]) -> Vec<String> {
    let mut offices: Vec<String> = sealed
        .wrapped_keys
        .iter()
        .chain(widened)
        .map(|w| {
            w.key_id
                .split_once('#')
                .map_or(w.key_id.as_str(), |(office, _)| office)
                .to_owned()
        })
        .collect();
    offices.sort();
    offices.dedup();
    offices
}

/// The content of `event`: in clear, or sealed and opened with `opener` (looking for its
/// content key among the event's wrapped keys and `widened`, those later widenings
/// added), or sealed and not opened.
pub fn content_of(event: &Event, opener: Option<&Opener>, widened: &[WrappedKey]) -> Content {
    let Some(sealed) = &event.sealed else {
        return Content::Clear;
    };
    let readers = sealed_for(sealed, widened);
    let Some(opener) = opener else {
        return Content::Sealed {
            readers,
            problem: None,
        };
    };
    match open_event_with(opener, event, widened) {
        Ok(payload) => Content::Opened { readers, payload },
        Err(SealError::NotAReader { .. }) => Content::Sealed {
            readers,
            problem: None,
        },
        Err(e) => Content::Sealed {
            readers,
            problem: Some(e.to_string()),
        },
    }
}

impl Content {
    /// The payload to show: the full one when opened, else the event's own (its readable
    /// part when sealed).
    pub fn payload_json(&self, event_bytes: &[u8]) -> Value {
        match self {
            Self::Opened { payload, .. } => full_payload_json(payload),
            _ => payload_json(event_bytes),
        }
    }

    /// `null` in clear; otherwise who it is sealed for, whether it was opened, and why a
    /// key given did not open it.
    pub fn to_json(&self) -> Value {
        match self {
            Self::Clear => Value::Null,
            Self::Opened { readers, .. } => json!({ "for": readers, "opened": true }),
            Self::Sealed { readers, problem } => {
                json!({ "for": readers, "opened": false, "problem": problem })
            }
        }
    }

    /// A label for text output: empty in clear, `opened (sealed for ...)`, or
    /// `sealed for ...` with what failed.
    pub fn label(&self) -> String {
        match self {
            Self::Clear => String::new(),
            Self::Opened { readers, .. } => format!("opened (sealed for {})", readers.join(", ")),
            Self::Sealed {
                readers,
                problem: None,
            } => format!("sealed for {}", readers.join(", ")),
            Self::Sealed {
                readers,
                problem: Some(p),
            } => format!("sealed for {} (does not open: {p})", readers.join(", ")),
        }
    }

    /// The payload shown in text: labelled when sealed.
    pub fn payload_text(&self, event_bytes: &[u8], width: usize) -> String {
        let payload = self.payload_json(event_bytes);
        let inner = payload
            .as_object()
            .and_then(|o| o.values().next())
            .map_or_else(String::new, ToString::to_string);
        let label = self.label();
        if label.is_empty() {
            shorten(&inner, width)
        } else {
            format!("[{label}] {}", shorten(&inner, width))
        }
    }
}

/// Why a message is not a valid event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Stable code (`bad_signature`, `undecodable`, `gap`, ...).
    pub code: String,
    /// Human-readable reason.
    pub reason: String,
}

impl From<&VerifyError> for Problem {
    fn from(error: &VerifyError) -> Self {
        Self {
            code: error.code().to_owned(),
            reason: error.to_string(),
        }
    }
}

/// What verification said about a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Status {
    /// Signature, key and envelope verified.
    Verified,
    /// Decoded but not verified: no registry was given.
    Unverified,
    /// Failed: undecodable, or not verifiable with the registry.
    Invalid(Problem),
}

/// The envelope of a decodable event.
#[derive(Debug, Clone)]
pub struct EventView {
    /// The case id the event claims.
    pub case_id: String,
    /// Its version in the case.
    pub version: u64,
    /// Its event id.
    pub event_id: String,
    /// Catalogue name of its payload kind, `Unknown(<n>)` or `Missing`.
    pub type_name: String,
    /// Recording office.
    pub office: String,
    /// Agency name of the envelope.
    pub agency: String,
    /// Acting person.
    pub actor: String,
    /// When it happened.
    pub occurred_at: Option<OffsetDateTime>,
    /// When it was recorded.
    pub recorded_at: Option<OffsetDateTime>,
    /// SHA-256 of the event bytes.
    pub hash: EventHash,
    /// The previous event's hash, as claimed (hex), if any.
    pub prev_hash: Option<String>,
    /// The signing key id.
    pub key_id: String,
    /// The signature.
    pub signature: Vec<u8>,
    /// The encoded event bytes (what was signed and hashed).
    pub event_bytes: Vec<u8>,
    /// Causation id.
    pub causation_id: String,
    /// Correlation id.
    pub correlation_id: String,
    /// Request id.
    pub request_id: String,
    /// Visibility kind name (`participants`, `listed_agencies`, `origin_only`).
    pub visibility: String,
    /// Its content: in clear, sealed, or sealed and opened.
    pub content: Content,
}

/// A stored message, decoded as far as it goes.
#[derive(Debug, Clone)]
pub struct Decoded {
    /// Stream sequence.
    pub sequence: u64,
    /// Subject.
    pub subject: String,
    /// When the server stored it, if known.
    pub stored_at: Option<OffsetDateTime>,
    /// Size in bytes.
    pub size: usize,
    /// Verification status.
    pub status: Status,
    /// The envelope, when the bytes decode.
    pub event: Option<EventView>,
}

fn decode_view(raw: &[u8]) -> Result<EventView, Problem> {
    let undecodable = |what: &str, e: prost::DecodeError| Problem {
        code: "undecodable".into(),
        reason: format!("undecodable {what}: {e}"),
    };
    let signed = SignedEvent::decode(raw).map_err(|e| undecodable("signed wrapper", e))?;
    if signed.event.is_empty() {
        return Err(Problem {
            code: "undecodable".into(),
            reason: "undecodable signed wrapper: no event bytes".into(),
        });
    }
    let event = Event::decode(signed.event.as_slice()).map_err(|e| undecodable("event", e))?;
    let type_name = match event.payload.as_ref().and_then(|p| p.kind.as_ref()) {
        Some(kind) => payload_type_name(kind).to_owned(),
        None => match unknown_payload(&signed.event) {
            Some((n, _)) => format!("Unknown({n})"),
            None => "Missing".to_owned(),
        },
    };
    let visibility = event
        .visibility
        .as_ref()
        .map_or("participants".to_owned(), |v| match v.kind() {
            casebus_proto::event::v1::VisibilityKind::Unspecified => "participants".to_owned(),
            other => other.as_str_name().to_ascii_lowercase(),
        });
    let content = content_of(&event, None, &[]);
    Ok(EventView {
        content,
        case_id: event.case_id.clone(),
        version: event.case_version,
        event_id: event.event_id.clone(),
        type_name,
        office: event.office_id.clone(),
        agency: agency_name(event.agency()).to_owned(),
        actor: event.actor.clone(),
        occurred_at: event.occurred_at.as_ref().and_then(datetime_from),
        recorded_at: event.recorded_at.as_ref().and_then(datetime_from),
        hash: EventHash::of(&signed.event),
        prev_hash: (!event.prev_event_hash.is_empty()).then(|| hex::encode(&event.prev_event_hash)),
        key_id: signed.key_id.clone(),
        signature: signed.signature.clone(),
        event_bytes: signed.event,
        causation_id: event.causation_id,
        correlation_id: event.correlation_id,
        request_id: event.request_id,
        visibility,
    })
}

impl Decoded {
    /// Decodes a stored message and, with a registry, verifies its signature, key and
    /// envelope (not its place in the chain: that needs the case, see `verify`).
    pub fn new(
        sequence: u64,
        subject: &str,
        stored_at: Option<OffsetDateTime>,
        raw: &[u8],
        registry: Option<&OfficeRegistry>,
    ) -> Self {
        let view = decode_view(raw);
        let subject_case = subject.strip_prefix("case.");
        let status = match (&view, registry) {
            (Err(problem), _) => Status::Invalid(problem.clone()),
            (Ok(view), _) if subject_case.is_some_and(|c| c != view.case_id) => {
                Status::Invalid(Problem {
                    code: "case_mismatch".into(),
                    reason: format!("event of case {} found on subject {subject}", view.case_id),
                })
            }
            (Ok(_), None) => Status::Unverified,
            (Ok(_), Some(registry)) => match verify_signed(raw, registry) {
                Ok(_) => Status::Verified,
                Err(e) => Status::Invalid(Problem::from(&e)),
            },
        };
        Self {
            sequence,
            subject: subject.to_owned(),
            stored_at,
            size: raw.len(),
            status,
            event: view.ok(),
        }
    }

    /// Opens the event's content with `opener` when it is sealed for one of its keys
    /// (or for one of `widened`, the keys later widenings added).
    #[must_use]
    pub fn opened_with(mut self, opener: Option<&Opener>, widened: &[WrappedKey]) -> Self {
        if let (Some(view), Some(_)) = (self.event.as_mut(), opener)
            && view.content != Content::Clear
            && let Ok(event) = Event::decode(view.event_bytes.as_slice())
        {
            view.content = content_of(&event, opener, widened);
        }
        self
    }

    /// The message as one JSON object: sequence, subject, times, status, and for a
    /// decodable event its envelope, hashes, key and decoded payload.
    pub fn to_json(&self) -> Value {
        let mut object = serde_json::Map::new();
        object.insert("sequence".into(), self.sequence.into());
        object.insert("subject".into(), self.subject.clone().into());
        object.insert(
            "stored_at".into(),
            self.stored_at.map(rfc3339).map_or(Value::Null, Value::from),
        );
        object.insert("size".into(), self.size.into());
        let (status, problem) = match &self.status {
            Status::Verified => ("verified", Value::Null),
            Status::Unverified => ("unverified", Value::Null),
            Status::Invalid(p) => ("invalid", json!({ "code": p.code, "reason": p.reason })),
        };
        object.insert("status".into(), status.into());
        object.insert("problem".into(), problem);
        if let Some(e) = &self.event {
            object.insert("case".into(), e.case_id.clone().into());
            object.insert("version".into(), e.version.into());
            object.insert("event_id".into(), e.event_id.clone().into());
            object.insert("type".into(), e.type_name.clone().into());
            object.insert("office".into(), e.office.clone().into());
            object.insert("agency".into(), e.agency.clone().into());
            object.insert("actor".into(), e.actor.clone().into());
            object.insert(
                "occurred_at".into(),
                e.occurred_at.map(rfc3339).map_or(Value::Null, Value::from),
            );
            object.insert(
                "recorded_at".into(),
                e.recorded_at.map(rfc3339).map_or(Value::Null, Value::from),
            );
            object.insert("hash".into(), e.hash.to_hex().into());
            object.insert(
                "prev_hash".into(),
                e.prev_hash.clone().map_or(Value::Null, Value::from),
            );
            object.insert("key_id".into(), e.key_id.clone().into());
            object.insert("signature".into(), B64.encode(&e.signature).into());
            object.insert("visibility".into(), e.visibility.clone().into());
            object.insert("request_id".into(), e.request_id.clone().into());
            object.insert("causation_id".into(), e.causation_id.clone().into());
            object.insert("correlation_id".into(), e.correlation_id.clone().into());
            object.insert("payload".into(), e.content.payload_json(&e.event_bytes));
            object.insert("sealed".into(), e.content.to_json());
        } else {
            object.insert(
                "case".into(),
                self.subject
                    .strip_prefix("case.")
                    .map_or(Value::Null, Value::from),
            );
        }
        Value::Object(object)
    }

    /// The message as one line of text.
    pub fn to_line(&self) -> String {
        let at = self
            .event
            .as_ref()
            .and_then(|e| e.recorded_at)
            .or(self.stored_at)
            .map_or_else(|| "-".to_owned(), crate::times::short);
        let mut line = format!("#{:<6} {at}", self.sequence);
        match &self.event {
            Some(e) => {
                line.push_str(&format!(
                    "  {} v{}  {}  {}",
                    e.case_id, e.version, e.office, e.type_name
                ));
                let payload = e.content.payload_text(&e.event_bytes, 100);
                if !payload.is_empty() {
                    line.push_str("  ");
                    line.push_str(&payload);
                }
            }
            None => line.push_str(&format!("  {}", self.subject)),
        }
        match &self.status {
            Status::Invalid(p) => line.push_str(&format!("  INVALID {}: {}", p.code, p.reason)),
            Status::Unverified => line.push_str("  (unverified)"),
            Status::Verified => {}
        }
        line
    }
}

/// A verified event as JSON, with the same fields as [`Decoded::to_json`] and status
/// `verified`. A sealed event is opened with `opener` when it is sealed (or widened, `widened`) for
/// one of its keys.
pub fn verified_json(
    sequence: u64,
    event: &casebus_integrity::VerifiedEvent,
    opener: Option<&Opener>,
    widened: &[WrappedKey],
) -> Value {
    let raw = event.encode_signed();
    let subject = format!("case.{}", event.case_id);
    let mut decoded =
        Decoded::new(sequence, &subject, None, &raw, None).opened_with(opener, widened);
    decoded.status = Status::Verified;
    let mut json = decoded.to_json();
    if let Some(object) = json.as_object_mut() {
        object.remove("stored_at");
    }
    json
}

/// The type name of a verified payload kind, as [`EventView::type_name`] spells it.
pub fn kind_name(kind: &PayloadKind<'_>) -> String {
    match kind {
        PayloadKind::Known(k) => payload_type_name(k).to_owned(),
        PayloadKind::Unknown { field_number, .. } => format!("Unknown({field_number})"),
        PayloadKind::Missing => "Missing".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use casebus_proto::event::v1::payload::Kind;
    use casebus_proto::event::v1::{NoteAdded, Payload};

    use super::*;

    #[test]
    fn the_descriptors_know_every_payload_kind() {
        let names = payload_type_names();
        assert_eq!(names.first().map(String::as_str), Some("CaseOpened"));
        // The catalogue's four cases record every payload kind between them.
        use casebus_fixtures::catalogue::{
            declined_case, dropped_case, main_case, supervised_case,
        };
        let cases = [
            main_case(),
            declined_case(),
            dropped_case(),
            supervised_case(),
        ];
        let recorded: std::collections::BTreeSet<&str> = cases
            .iter()
            .flatten()
            .map(|(_, kind)| casebus_proto::payload_type_name(kind))
            .collect();
        let known: std::collections::BTreeSet<&str> = names.iter().map(String::as_str).collect();
        assert_eq!(known, recorded);
        assert_eq!(names.len(), known.len(), "each kind named once");
        assert_eq!(event_type_arg("noteadded"), Ok("NoteAdded".to_owned()));
        let err = event_type_arg("Party").expect_err("unknown type");
        assert!(err.contains("PartyAdded"), "{err}");
    }

    #[test]
    fn a_known_payload_decodes_to_json_with_proto_field_names() {
        let event = Event {
            case_id: "C1".into(),
            case_version: 1,
            payload: Some(Payload {
                kind: Some(Kind::NoteAdded(NoteAdded {
                    text: "hello".into(),
                })),
            }),
            ..Default::default()
        };
        let json = payload_json(&event.encode_to_vec());
        assert_eq!(json, json!({ "note_added": { "text": "hello" } }));
    }

    #[test]
    fn garbage_is_shown_as_undecodable_not_dropped() {
        let decoded = Decoded::new(7, "case.C1", None, b"\xff\xff\xff", None);
        assert!(matches!(decoded.status, Status::Invalid(_)));
        let json = decoded.to_json();
        assert_eq!(json["status"], "invalid");
        assert_eq!(json["problem"]["code"], "undecodable");
        assert_eq!(json["case"], "C1");
        assert!(decoded.to_line().contains("INVALID undecodable"));
    }
}
