//! Payload kinds: the name of each known kind, and recovery of payload kinds this build
//! does not know (from a newer producer) as raw bytes, so they are shown, never dropped.

use prost::encoding::{WireType, decode_key, decode_varint};

use crate::event::v1::payload::Kind;

/// The payload of an event as this build understands it.
#[derive(Debug, Clone, PartialEq)]
pub enum PayloadKind<'a> {
    /// A kind of the v1 catalogue.
    Known(&'a Kind),
    /// A kind from a newer producer: its field number in `Payload` and raw bytes.
    Unknown {
        /// Field number of the unknown kind inside the `Payload` message.
        field_number: u32,
        /// The kind's encoded bytes, exactly as they arrived.
        bytes: Vec<u8>,
    },
    /// No payload at all.
    Missing,
}

/// Field number of `Event.payload`.
const EVENT_PAYLOAD_FIELD: u32 = 15;

/// Finds the payload kind inside the encoded `Event` bytes when the decoded `Payload`
/// has no known kind. Returns the first field of the `Payload` message with its raw
/// bytes, or `None` when the event carries no payload at all (or is not well-formed).
pub fn unknown_payload(event_bytes: &[u8]) -> Option<(u32, Vec<u8>)> {
    let payload = find_field(event_bytes, EVENT_PAYLOAD_FIELD)?;
    let mut buf = payload;
    let (field, wire_type) = decode_key(&mut buf).ok()?;
    let value = field_value(&mut buf, wire_type)?;
    Some((field, value.to_vec()))
}

/// Returns the value bytes of the first length-delimited field `wanted` in `msg`.
fn find_field(msg: &[u8], wanted: u32) -> Option<&[u8]> {
    let mut buf = msg;
    while !buf.is_empty() {
        let (field, wire_type) = decode_key(&mut buf).ok()?;
        let value = field_value(&mut buf, wire_type)?;
        if field == wanted && wire_type == WireType::LengthDelimited {
            return Some(value);
        }
    }
    None
}

/// Field number of `SignedEvent.event`.
const SIGNED_EVENT_EVENT_FIELD: u32 = 1;
/// Field number of `Event.case_version`.
const EVENT_CASE_VERSION_FIELD: u32 = 3;

/// The `Event` bytes inside encoded `SignedEvent` bytes, and that event's
/// `case_version`, read in place without decoding (or copying) either message: what a
/// consumer needs to recognise a copy of an event it holds before checking anything.
/// Takes the last occurrence of each field, as a full decode does; `None` when either
/// message is not well-formed or a field has the wrong wire type (a full decode fails
/// on those too). An event without `case_version` has version 0.
pub fn peek_signed_event(signed: &[u8]) -> Option<(&[u8], u64)> {
    let event = last_field(signed, SIGNED_EVENT_EVENT_FIELD, WireType::LengthDelimited)?
        .unwrap_or_default();
    let version = match last_field(event, EVENT_CASE_VERSION_FIELD, WireType::Varint)? {
        Some(mut bytes) => decode_varint(&mut bytes).ok()?,
        None => 0,
    };
    Some((event, version))
}

/// The value bytes of the last field `wanted` in `msg` (`Some(None)` when it has
/// none); `None` when `msg` is not well-formed or `wanted` comes with another wire type.
fn last_field(msg: &[u8], wanted: u32, wire: WireType) -> Option<Option<&[u8]>> {
    let mut buf = msg;
    let mut last = None;
    while !buf.is_empty() {
        let (field, wire_type) = decode_key(&mut buf).ok()?;
        let value = field_value(&mut buf, wire_type)?;
        if field == wanted {
            if wire_type != wire {
                return None;
            }
            last = Some(value);
        }
    }
    Some(last)
}

/// Consumes one field value of `wire_type` from `buf` and returns its bytes.
fn field_value<'a>(buf: &mut &'a [u8], wire_type: WireType) -> Option<&'a [u8]> {
    let start: &'a [u8] = buf;
    let len = match wire_type {
        WireType::Varint => {
            let before = buf.len();
            decode_varint(buf).ok()?;
            return Some(&start[..before - buf.len()]);
        }
        WireType::SixtyFourBit => 8,
        WireType::ThirtyTwoBit => 4,
        WireType::LengthDelimited => {
            let len = usize::try_from(decode_varint(buf).ok()?).ok()?;
            let data: &'a [u8] = buf;
            let value = data.get(..len)?;
            *buf = &data[len..];
            return Some(value);
        }
        WireType::StartGroup | WireType::EndGroup => return None,
    };
    let value = start.get(..len)?;
    *buf = &start[len..];
    Some(value)
}

/// The catalogue name of a payload kind, e.g. `"GoodsDetained"`; used in logs, metrics
/// labels and CLI filters.
pub fn payload_type_name(kind: &Kind) -> &'static str {
    match kind {
        Kind::CaseOpened(_) => "CaseOpened",
        Kind::PartyAdded(_) => "PartyAdded",
        Kind::EvidenceRecorded(_) => "EvidenceRecorded",
        Kind::NoteAdded(_) => "NoteAdded",
        Kind::ReferenceLinked(_) => "ReferenceLinked",
        Kind::HandoffRequested(_) => "HandoffRequested",
        Kind::HandoffAcknowledged(_) => "HandoffAcknowledged",
        Kind::HandoffAccepted(_) => "HandoffAccepted",
        Kind::HandoffDeclined(_) => "HandoffDeclined",
        Kind::TrackClosed(_) => "TrackClosed",
        Kind::VisibilityChanged(_) => "VisibilityChanged",
        Kind::ClockExtended(_) => "ClockExtended",
        Kind::ClockSuspended(_) => "ClockSuspended",
        Kind::ClockResumed(_) => "ClockResumed",
        Kind::LegalHoldPlaced(_) => "LegalHoldPlaced",
        Kind::LegalHoldLifted(_) => "LegalHoldLifted",
        Kind::GoodsDetained(_) => "GoodsDetained",
        Kind::DetentionReleased(_) => "DetentionReleased",
        Kind::RightsHolderNotified(_) => "RightsHolderNotified",
        Kind::InfringementDetermined(_) => "InfringementDetermined",
        Kind::GoodsConfiscated(_) => "GoodsConfiscated",
        Kind::RightsHolderApplied(_) => "RightsHolderApplied",
        Kind::InfringementAssessed(_) => "InfringementAssessed",
        Kind::MediationConcluded(_) => "MediationConcluded",
        Kind::PreExaminationRequested(_) => "PreExaminationRequested",
        Kind::PreExaminationCompleted(_) => "PreExaminationCompleted",
        Kind::InvestigationFiled(_) => "InvestigationFiled",
        Kind::InvestigationDeclined(_) => "InvestigationDeclined",
        Kind::NonFilingExplained(_) => "NonFilingExplained",
        Kind::SuspectDetained(_) => "SuspectDetained",
        Kind::InvestigationConcluded(_) => "InvestigationConcluded",
        Kind::ArrestApproved(_) => "ArrestApproved",
        Kind::ArrestDenied(_) => "ArrestDenied",
        Kind::IndictmentFiled(_) => "IndictmentFiled",
        Kind::NonProsecutionDecided(_) => "NonProsecutionDecided",
        Kind::CaseDocketed(_) => "CaseDocketed",
        Kind::PreliminaryInjunctionIssued(_) => "PreliminaryInjunctionIssued",
        Kind::HearingScheduled(_) => "HearingScheduled",
        Kind::HearingHeld(_) => "HearingHeld",
        Kind::JudgmentIssued(_) => "JudgmentIssued",
        Kind::AppealFiled(_) => "AppealFiled",
        Kind::JudgmentEffective(_) => "JudgmentEffective",
    }
}

#[cfg(test)]
mod tests {
    use prost::Message;

    use super::*;
    use crate::event::v1::{Event, NoteAdded, Payload};

    #[test]
    fn an_unknown_payload_kind_is_recovered_with_its_bytes() {
        // A newer producer's payload: field 999 of `Payload`, length-delimited.
        let inner = b"\x0a\x05hello".to_vec();
        let mut payload = Vec::new();
        prost::encoding::bytes::encode(999, &inner, &mut payload);
        let mut event = Event {
            case_id: "C1".into(),
            ..Default::default()
        }
        .encode_to_vec();
        prost::encoding::bytes::encode(EVENT_PAYLOAD_FIELD, &payload, &mut event);

        let decoded = Event::decode(event.as_slice()).expect("unknown fields are skipped");
        assert_eq!(decoded.payload.and_then(|p| p.kind), None);
        assert_eq!(unknown_payload(&event), Some((999, inner)));
    }

    #[test]
    fn a_known_payload_is_found_at_its_field_number() {
        let event = Event {
            payload: Some(Payload {
                kind: Some(Kind::NoteAdded(NoteAdded { text: "x".into() })),
            }),
            ..Default::default()
        }
        .encode_to_vec();
        assert_eq!(unknown_payload(&event).map(|(f, _)| f), Some(4));
    }

    #[test]
    fn a_peek_finds_what_a_full_decode_of_the_signed_event_finds() {
        use crate::event::v1::SignedEvent;
        let event = |version: u64| Event {
            case_id: "C1".into(),
            case_version: version,
            payload: Some(Payload {
                kind: Some(Kind::NoteAdded(NoteAdded { text: "x".into() })),
            }),
            ..Default::default()
        };
        let signed = SignedEvent {
            event: event(7).encode_to_vec(),
            signature: vec![1; 64],
            key_id: "k1".into(),
        }
        .encode_to_vec();
        let full = SignedEvent::decode(signed.as_slice()).expect("decodes");
        let full_version = Event::decode(full.event.as_slice())
            .expect("decodes")
            .case_version;
        assert_eq!(
            peek_signed_event(&signed),
            Some((full.event.as_slice(), full_version))
        );
        assert_eq!(full_version, 7);

        // A field given twice: the last one counts, in the peek as in a decode.
        let mut twice = signed.clone();
        let second = event(9).encode_to_vec();
        prost::encoding::bytes::encode(SIGNED_EVENT_EVENT_FIELD, &second, &mut twice);
        let full = SignedEvent::decode(twice.as_slice()).expect("decodes");
        assert_eq!(full.event, second);
        assert_eq!(peek_signed_event(&twice), Some((second.as_slice(), 9)));
        let mut version_twice = event(3).encode_to_vec();
        prost::encoding::uint64::encode(EVENT_CASE_VERSION_FIELD, &11, &mut version_twice);
        let wrapped = SignedEvent {
            event: version_twice.clone(),
            ..Default::default()
        }
        .encode_to_vec();
        assert_eq!(
            Event::decode(version_twice.as_slice())
                .expect("decodes")
                .case_version,
            11
        );
        assert_eq!(peek_signed_event(&wrapped).map(|(_, v)| v), Some(11));

        // What a decode refuses, the peek refuses: a truncated message, the event field
        // as a varint, the version as bytes.
        assert_eq!(peek_signed_event(&signed[..signed.len() - 3]), None);
        let mut wrong = Vec::new();
        prost::encoding::uint64::encode(SIGNED_EVENT_EVENT_FIELD, &5, &mut wrong);
        assert!(SignedEvent::decode(wrong.as_slice()).is_err());
        assert_eq!(peek_signed_event(&wrong), None);
        let mut bad_version = Vec::new();
        prost::encoding::bytes::encode(EVENT_CASE_VERSION_FIELD, &vec![1u8], &mut bad_version);
        let wrapped = SignedEvent {
            event: bad_version.clone(),
            ..Default::default()
        }
        .encode_to_vec();
        assert!(Event::decode(bad_version.as_slice()).is_err());
        assert_eq!(peek_signed_event(&wrapped), None);
        // Nothing at all: an empty event at version 0, as a decode gives.
        assert_eq!(peek_signed_event(&[]), Some((&[][..], 0)));
    }

    #[test]
    fn garbage_yields_no_payload_and_no_panic() {
        assert_eq!(unknown_payload(&[0xff, 0xff, 0xff]), None);
        assert_eq!(unknown_payload(&[]), None);
    }
}
