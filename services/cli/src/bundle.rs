//! Evidence bundles: one case exported as JSON so that a third party can verify it
//! offline, and that verification.
//!
//! A bundle holds every event of the case's chain with the exact bytes stored in
//! `CASES` (base64 of the signed wrapper), and, for reading, its hash, previous hash,
//! signature, key id and decoded JSON; the messages of the case that failed
//! verification at export, with the reason; the registry entries (public keys with
//! validity) of every office that signed; and a manifest: event count, head hash, and a
//! SHA-256 over the case id, every stored byte and the keys. A sealed event also has
//! `sealed`: the offices it is sealed for and, when the exporter was given a key that
//! opens it (`--decryption-key`), its full payload; that is for reading only, outside
//! the digest, and verification checks only that it is there exactly when the bytes are
//! sealed.
//!
//! Verifying a bundle trusts nothing but the stored bytes: signatures and the chain are
//! checked with the keys (the bundle's own, or a registry the verifier trusts), every
//! readable field is recomputed from the bytes and compared, and the manifest is
//! recomputed. A missing event in the middle breaks the chain; a missing last event
//! changes the manifest, so quote the manifest digest where the bundle is referenced.
//!
//! The bundle's own keys prove only that the bundle agrees with itself: whoever forges
//! the events can put matching keys beside them. So a bundle verified without a trusted
//! registry fails with [`own_keys_failure`] unless the verifier explicitly accepts its
//! keys, and a quoted digest is checked with [`digest_failure`].

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use time::OffsetDateTime;

use casebus_integrity::{OfficeEntry, OfficeRegistry, VerifiedEvent, verify_case};
use casebus_proto::CaseId;

use casebus_integrity::seal::{Opener, WrappedKey};

use crate::decode::{Content, Problem, content_of, event_json, kind_name, widened_keys};
use crate::times::rfc3339;

/// The format tag of a bundle without proofs (what `casebus export` writes without
/// `--gateway`, and wrote before proofs existed).
pub const FORMAT: &str = "casebus.bundle.v1";
/// The format tag of a bundle with proofs (`crate::proofs`): a v1 bundle plus the
/// `proofs` and `operator` members, its digest covering them too.
pub const FORMAT_V2: &str = "casebus.bundle.v2";

/// An evidence bundle.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Bundle {
    /// [`FORMAT`], or [`FORMAT_V2`] for a bundle with proofs.
    pub format: String,
    /// The case.
    pub case_id: String,
    /// When it was exported (RFC 3339).
    pub exported_at: String,
    /// Where in the stream the events came from.
    pub source: Source,
    /// The case's chain, in order.
    pub events: Vec<BundleEvent>,
    /// Messages of the case that failed verification at export.
    #[serde(default)]
    pub rejected: Vec<RejectedEntry>,
    /// Registry entries of every office that signed an event of the bundle.
    pub offices: Vec<OfficeEntry>,
    /// Counts and digest over the bundle.
    pub manifest: Manifest,
    /// The transparency-log proofs (v2 only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proofs: Option<crate::proofs::Proofs>,
    /// The exporting operator's signature over the manifest (v2 only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub operator: Option<crate::proofs::OperatorSeal>,
}

/// Where the events came from.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Source {
    /// The stream (`CASES`).
    pub stream: String,
    /// The subject (`case.<id>`).
    pub subject: String,
    /// The last stream sequence of the case at export.
    pub last_sequence: u64,
}

/// One event of the chain.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct BundleEvent {
    /// Its sequence in `CASES`.
    pub sequence: u64,
    /// Its version in the case.
    pub version: u64,
    /// Its event id.
    pub event_id: String,
    /// Catalogue name of its payload kind.
    #[serde(rename = "type")]
    pub type_name: String,
    /// The recording office.
    pub office: String,
    /// When it was recorded (RFC 3339).
    pub recorded_at: String,
    /// The signing key id.
    pub key_id: String,
    /// SHA-256 of the event bytes, hex.
    pub hash: String,
    /// The previous event's hash, hex; none for version 1.
    pub prev_hash: Option<String>,
    /// The Ed25519 signature, base64.
    pub signature: String,
    /// The message exactly as stored in `CASES` (the signed wrapper), base64. The truth:
    /// everything else here is recomputed from it on verification.
    pub signed_event: String,
    /// The event decoded, for reading.
    pub event: serde_json::Value,
    /// Set when the event is sealed: the offices it is sealed for (`for`), whether the
    /// exporter opened it with a key it was given (`opened`), and then its full payload
    /// (`payload`). For reading only: neither the manifest digest nor verification
    /// covers it, and whoever holds the bundle reads what is in it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sealed: Option<serde_json::Value>,
}

/// A message of the case that failed verification at export.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct RejectedEntry {
    /// Its sequence in `CASES`.
    pub sequence: u64,
    /// Failure code.
    pub code: String,
    /// Failure reason.
    pub reason: String,
    /// The message as stored, base64.
    pub signed_event: String,
}

/// Counts and digest over the bundle.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Manifest {
    /// Always `sha256`.
    pub algorithm: String,
    /// Number of events.
    pub event_count: u64,
    /// Hash of the last event, hex; none for an empty chain.
    pub head_hash: Option<String>,
    /// SHA-256 over the case id, every stored message (events and rejected, with their
    /// sequences) and the office entries, hex.
    pub digest: String,
}

/// A stored message of the case, as read for export.
#[derive(Debug, Clone)]
pub struct ExportMessage {
    /// Its sequence in `CASES`.
    pub sequence: u64,
    /// Its stored bytes.
    pub raw: Vec<u8>,
    /// Its verification outcome (the consumers' rule).
    pub outcome: Result<VerifiedEvent, Problem>,
}

pub(crate) fn put_bytes(hasher: &mut Sha256, bytes: &[u8]) {
    hasher.update((bytes.len() as u64).to_be_bytes());
    hasher.update(bytes);
}

/// The manifest digest of a bundle's stored bytes and keys, and for a v2 bundle its
/// proofs, its source and the operator's verifier key (`extra`).
pub(crate) fn digest(
    format: &str,
    case_id: &str,
    events: &[(u64, Vec<u8>)],
    rejected: &[(u64, Vec<u8>)],
    offices: &[OfficeEntry],
    extra: Option<(&crate::proofs::Proofs, &Source, &str)>,
) -> String {
    let mut h = Sha256::new();
    h.update(format.as_bytes());
    h.update([0]);
    put_bytes(&mut h, case_id.as_bytes());
    for (label, list) in [
        (b"events".as_slice(), events),
        (b"rejected".as_slice(), rejected),
    ] {
        put_bytes(&mut h, label);
        h.update((list.len() as u64).to_be_bytes());
        for (sequence, raw) in list {
            h.update(sequence.to_be_bytes());
            put_bytes(&mut h, raw);
        }
    }
    // Field order of the entries is fixed by their type, so the JSON is canonical.
    let keys = serde_json::to_vec(offices).unwrap_or_default();
    put_bytes(&mut h, b"offices");
    put_bytes(&mut h, &keys);
    if let Some((proofs, source, operator_vkey)) = extra {
        crate::proofs::digest_proofs(&mut h, proofs);
        // What the seal stands for includes where the events came from.
        put_bytes(&mut h, b"source");
        put_bytes(&mut h, source.stream.as_bytes());
        put_bytes(&mut h, source.subject.as_bytes());
        h.update(source.last_sequence.to_be_bytes());
        put_bytes(&mut h, b"operator");
        put_bytes(&mut h, operator_vkey.as_bytes());
    }
    hex::encode(h.finalize())
}

fn bundle_event(
    sequence: u64,
    raw: &[u8],
    event: &VerifiedEvent,
    opener: Option<&Opener>,
    widened: &[WrappedKey],
) -> BundleEvent {
    let sealed = match content_of(&event.event, opener, widened) {
        Content::Clear => None,
        content @ Content::Opened { .. } => {
            let mut json = content.to_json();
            json["payload"] = content.payload_json(&event.signed.event);
            Some(json)
        }
        content @ Content::Sealed { .. } => Some(content.to_json()),
    };
    BundleEvent {
        sealed,
        sequence,
        version: event.version(),
        event_id: event.event_id.to_string(),
        type_name: kind_name(&event.payload_kind()),
        office: event.office.to_string(),
        recorded_at: rfc3339(event.recorded_at),
        key_id: event.signed.key_id.clone(),
        hash: event.hash.to_hex(),
        prev_hash: event.prev_hash.map(|h| h.to_hex()),
        signature: B64.encode(&event.signed.signature),
        signed_event: B64.encode(raw),
        event: event_json(&event.signed.event).unwrap_or(serde_json::Value::Null),
    }
}

/// Builds the bundle of `case_id` from its stored messages, in stream order; a sealed
/// event is opened with `opener` when it is sealed, or widened, for one of its keys.
pub fn build(
    case_id: &CaseId,
    messages: &[ExportMessage],
    last_sequence: u64,
    registry: &OfficeRegistry,
    now: OffsetDateTime,
    opener: Option<&Opener>,
) -> Bundle {
    let widened = widened_keys(messages.iter().filter_map(|m| m.outcome.as_ref().ok()));
    let mut events = Vec::new();
    let mut rejected = Vec::new();
    let mut signers = std::collections::BTreeSet::new();
    for message in messages {
        match &message.outcome {
            Ok(event) => {
                signers.insert(event.office.clone());
                let widened = widened.get(&event.version()).map_or(&[][..], Vec::as_slice);
                events.push(bundle_event(
                    message.sequence,
                    &message.raw,
                    event,
                    opener,
                    widened,
                ));
            }
            Err(problem) => rejected.push(RejectedEntry {
                sequence: message.sequence,
                code: problem.code.clone(),
                reason: problem.reason.clone(),
                signed_event: B64.encode(&message.raw),
            }),
        }
    }
    let offices: Vec<OfficeEntry> = signers
        .iter()
        .filter_map(|o| registry.office(o).cloned())
        .collect();
    let raw_events: Vec<(u64, Vec<u8>)> = messages
        .iter()
        .filter(|m| m.outcome.is_ok())
        .map(|m| (m.sequence, m.raw.clone()))
        .collect();
    let raw_rejected: Vec<(u64, Vec<u8>)> = messages
        .iter()
        .filter(|m| m.outcome.is_err())
        .map(|m| (m.sequence, m.raw.clone()))
        .collect();
    let manifest = Manifest {
        algorithm: "sha256".into(),
        event_count: events.len() as u64,
        head_hash: events.last().map(|e: &BundleEvent| e.hash.clone()),
        digest: digest(
            FORMAT,
            case_id.as_str(),
            &raw_events,
            &raw_rejected,
            &offices,
            None,
        ),
    };
    Bundle {
        format: FORMAT.into(),
        case_id: case_id.to_string(),
        exported_at: rfc3339(now),
        source: Source {
            stream: casebus_bus::subjects::CASES_STREAM.into(),
            subject: casebus_bus::subjects::case_subject(case_id),
            last_sequence,
        },
        events,
        rejected,
        offices,
        manifest,
        proofs: None,
        operator: None,
    }
}

/// One failure found in a bundle.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BundleFailure {
    /// The event's stream sequence, when the failure concerns one event.
    pub sequence: Option<u64>,
    /// The version concerned, when known.
    pub version: Option<u64>,
    /// What failed.
    pub problem: Problem,
}

impl BundleFailure {
    pub(crate) fn new(
        sequence: Option<u64>,
        version: Option<u64>,
        code: &str,
        reason: impl Into<String>,
    ) -> Self {
        Self {
            sequence,
            version,
            problem: Problem {
                code: code.into(),
                reason: reason.into(),
            },
        }
    }
}

/// The outcome of verifying a bundle.
#[derive(Debug, Clone)]
pub struct BundleReport {
    /// The case.
    pub case_id: String,
    /// Events in the bundle.
    pub events: usize,
    /// Events whose signature and chain verified.
    pub verified: usize,
    /// Every failure.
    pub failures: Vec<BundleFailure>,
    /// The manifest digest recomputed (to compare with a quoted one).
    pub digest: String,
}

/// The failure of a bundle checked only with the keys it carries, when the verifier has
/// not accepted them: they are the bundle's own, so they prove nothing about who signed.
pub fn own_keys_failure() -> BundleFailure {
    BundleFailure::new(
        None,
        None,
        "own_keys",
        "the keys are the bundle's own: anyone who writes a bundle can sign it with keys of \
         their making; give --registry with a registry you trust, or --trust-bundle-keys \
         to accept the bundle's keys",
    )
}

/// The failure of a bundle whose recomputed manifest digest is not the `expected` one
/// quoted where it was referenced; `None` when they agree (`expected` in lower case).
pub fn digest_failure(report: &BundleReport, expected: &str) -> Option<BundleFailure> {
    (report.digest != expected).then(|| {
        BundleFailure::new(
            None,
            None,
            "digest_mismatch",
            format!(
                "manifest digest {} is not the expected {expected}",
                report.digest
            ),
        )
    })
}

pub(crate) fn decode_b64(text: &str) -> Option<Vec<u8>> {
    B64.decode(text.as_bytes()).ok()
}

/// Verifies a bundle offline with its own keys, or with `trusted` instead (and then
/// also checks the bundle's keys against it).
pub fn verify(bundle: &Bundle, trusted: Option<&OfficeRegistry>) -> BundleReport {
    let mut failures = Vec::new();
    let mut report = |f: BundleFailure| failures.push(f);
    if bundle.format != FORMAT && bundle.format != FORMAT_V2 {
        report(BundleFailure::new(
            None,
            None,
            "format",
            format!(
                "format is {:?}, expected {FORMAT:?} or {FORMAT_V2:?}",
                bundle.format
            ),
        ));
    }
    let case_id = match CaseId::new(&bundle.case_id) {
        Ok(c) => Some(c),
        Err(e) => {
            report(BundleFailure::new(None, None, "case_id", e.to_string()));
            None
        }
    };

    let mut own = OfficeRegistry::default();
    for office in &bundle.offices {
        if let Err(e) = own.insert_office(office.clone()) {
            report(BundleFailure::new(None, None, "keys", e.to_string()));
        }
        if let Some(trusted) = trusted {
            match trusted.office(&office.id) {
                None => report(BundleFailure::new(
                    None,
                    None,
                    "untrusted_key",
                    format!(
                        "office {} of the bundle is not in the trusted registry",
                        office.id
                    ),
                )),
                Some(known) => {
                    for key in &office.keys {
                        if !known.keys.iter().any(|k| k == key) {
                            report(BundleFailure::new(
                                None,
                                None,
                                "untrusted_key",
                                format!(
                                    "key {} of the bundle differs from the trusted registry",
                                    key.key_id
                                ),
                            ));
                        }
                    }
                }
            }
        }
    }
    let registry = trusted.unwrap_or(&own);

    let mut raw_events: Vec<(u64, Vec<u8>)> = Vec::new();
    let mut previous_sequence = 0;
    for event in &bundle.events {
        if event.sequence <= previous_sequence {
            report(BundleFailure::new(
                Some(event.sequence),
                Some(event.version),
                "order",
                format!(
                    "sequence {} does not follow sequence {previous_sequence}",
                    event.sequence
                ),
            ));
        }
        previous_sequence = event.sequence;
        match decode_b64(&event.signed_event) {
            Some(raw) => raw_events.push((event.sequence, raw)),
            None => {
                report(BundleFailure::new(
                    Some(event.sequence),
                    Some(event.version),
                    "undecodable",
                    "signed_event is not base64",
                ));
                raw_events.push((event.sequence, Vec::new()));
            }
        }
    }

    let mut verified = 0;
    if let Some(case_id) = &case_id {
        let chain = verify_case(
            case_id,
            raw_events.iter().map(|(_, r)| r.as_slice()),
            registry,
        );
        for failure in &chain.failures {
            let listed = bundle.events.get(failure.position);
            report(BundleFailure {
                sequence: listed.map(|e| e.sequence),
                version: failure.version.or(listed.map(|e| e.version)),
                problem: Problem::from(&failure.error),
            });
        }
        verified = chain.events.len();
        // Every readable field must be what the stored bytes say.
        for (listed, verified_event) in bundle.events.iter().filter_map(|listed| {
            let raw = decode_b64(&listed.signed_event)?;
            let event = casebus_integrity::verify_signed(&raw, registry).ok()?;
            Some((listed, event))
        }) {
            let truth = bundle_event(listed.sequence, &[], &verified_event, None, &[]);
            let mut differs = Vec::new();
            if listed.version != truth.version {
                differs.push("version");
            }
            if listed.event_id != truth.event_id {
                differs.push("event_id");
            }
            if listed.type_name != truth.type_name {
                differs.push("type");
            }
            if listed.office != truth.office {
                differs.push("office");
            }
            if listed.recorded_at != truth.recorded_at {
                differs.push("recorded_at");
            }
            if listed.key_id != truth.key_id {
                differs.push("key_id");
            }
            if listed.hash != truth.hash {
                differs.push("hash");
            }
            if listed.prev_hash != truth.prev_hash {
                differs.push("prev_hash");
            }
            if listed.signature != truth.signature {
                differs.push("signature");
            }
            if listed.event != truth.event {
                differs.push("event");
            }
            // What an exporter opened is not checked (it needs the key), but whether the
            // event is sealed is what its bytes say.
            if listed.sealed.is_some() != truth.sealed.is_some() {
                differs.push("sealed");
            }
            if !differs.is_empty() {
                report(BundleFailure::new(
                    Some(listed.sequence),
                    Some(truth.version),
                    "field_mismatch",
                    format!("{} not what the signed bytes say", differs.join(", ")),
                ));
            }
        }
    }

    let raw_rejected: Vec<(u64, Vec<u8>)> = bundle
        .rejected
        .iter()
        .map(|r| (r.sequence, decode_b64(&r.signed_event).unwrap_or_default()))
        .collect();
    let extra = match (&bundle.proofs, &bundle.operator) {
        (Some(proofs), Some(operator)) if bundle.format == FORMAT_V2 => {
            Some((proofs, &bundle.source, operator.vkey.as_str()))
        }
        _ => None,
    };
    let recomputed = digest(
        &bundle.format,
        &bundle.case_id,
        &raw_events,
        &raw_rejected,
        &bundle.offices,
        extra,
    );
    let manifest = &bundle.manifest;
    if manifest.event_count != bundle.events.len() as u64 {
        report(BundleFailure::new(
            None,
            None,
            "manifest",
            format!(
                "manifest counts {} events, the bundle holds {}",
                manifest.event_count,
                bundle.events.len()
            ),
        ));
    }
    let head = bundle.events.last().map(|e| e.hash.clone());
    if manifest.head_hash != head {
        report(BundleFailure::new(
            None,
            None,
            "manifest",
            "manifest head hash is not the hash of the last event",
        ));
    }
    if manifest.digest != recomputed {
        report(BundleFailure::new(
            None,
            None,
            "manifest",
            "manifest digest does not match the bundle's bytes and keys",
        ));
    }
    BundleReport {
        case_id: bundle.case_id.clone(),
        events: bundle.events.len(),
        verified,
        failures,
        digest: recomputed,
    }
}
