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
        Kind::InfringementAssessed(_) => "InfringementAssessed",
        Kind::MediationConcluded(_) => "MediationConcluded",
        Kind::PreExaminationRequested(_) => "PreExaminationRequested",
        Kind::PreExaminationCompleted(_) => "PreExaminationCompleted",
        Kind::InvestigationFiled(_) => "InvestigationFiled",
        Kind::InvestigationDeclined(_) => "InvestigationDeclined",
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
    fn garbage_yields_no_payload_and_no_panic() {
        assert_eq!(unknown_payload(&[0xff, 0xff, 0xff]), None);
        assert_eq!(unknown_payload(&[]), None);
    }
}
