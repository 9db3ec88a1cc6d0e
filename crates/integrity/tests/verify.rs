//! Verification of signed events and case chains: every kind of tampering and every key
//! problem is detected and named.

use prost::Message as _;
use time::macros::datetime;

use casebus_integrity::{
    ChainError, EventHash, OfficeEntry, OfficeRegistry, OfficeSigner, VerifyError, verify_case,
    verify_signed, verify_signed_all,
};
use casebus_proto::event::v1::{Agency, Event, NoteAdded, Payload, payload::Kind};
use casebus_proto::{CaseId, EventId, OfficeId, RequestId, timestamp_from};

fn office(id: &str) -> OfficeId {
    OfficeId::new(id).expect("valid office")
}

struct Fixture {
    registry: OfficeRegistry,
    customs: OfficeSigner,
    court: OfficeSigner,
}

fn fixture() -> Fixture {
    let customs = OfficeSigner::from_seed(office("customs:ningbo"), "1", [1; 32]).expect("key");
    let court = OfficeSigner::from_seed(office("court:hangzhou-ip"), "1", [2; 32]).expect("key");
    let mut registry = OfficeRegistry::default();
    for signer in [&customs, &court] {
        registry
            .insert_office(OfficeEntry {
                id: signer.office().clone(),
                name: String::new(),
                keys: vec![signer.key_entry(datetime!(2026-01-01 0:00 UTC))],
                encryption_keys: Vec::new(),
            })
            .expect("register");
    }
    Fixture {
        registry,
        customs,
        court,
    }
}

/// A well-formed event `version` of case `C1` chained to `prev`.
fn event(signer: &OfficeSigner, version: u64, prev: Option<EventHash>) -> Event {
    let request = RequestId::new(&format!("r{version}")).expect("valid");
    Event {
        event_id: EventId::derive(
            signer.office(),
            &CaseId::new("C1").expect("valid"),
            &request,
        )
        .to_string(),
        case_id: "C1".into(),
        case_version: version,
        office_id: signer.office().to_string(),
        agency: signer.office().agency() as i32,
        actor: "officer-7".into(),
        occurred_at: Some(timestamp_from(datetime!(2026-11-20 8:00 UTC))),
        recorded_at: Some(timestamp_from(datetime!(2026-11-20 8:00 UTC))),
        prev_event_hash: prev.map(|h| h.0.to_vec()).unwrap_or_default(),
        request_id: request.to_string(),
        payload: Some(Payload {
            kind: Some(Kind::NoteAdded(NoteAdded {
                text: format!("note {version}"),
            })),
        }),
        ..Default::default()
    }
}

/// A valid chain of `n` events alternating between customs and court.
fn chain(f: &Fixture, n: u64) -> Vec<Vec<u8>> {
    let mut prev = None;
    let mut out = Vec::new();
    for v in 1..=n {
        let signer = if v % 2 == 1 { &f.customs } else { &f.court };
        let (signed, hash) = signer.sign(&event(signer, v, prev));
        prev = Some(hash);
        out.push(signed.encode_to_vec());
    }
    out
}

fn case() -> CaseId {
    CaseId::new("C1").expect("valid")
}

#[test]
fn an_untouched_chain_verifies() {
    let f = fixture();
    let msgs = chain(&f, 5);
    let report = verify_case(&case(), msgs.iter().map(Vec::as_slice), &f.registry);
    assert!(report.is_intact(), "{:?}", report.failures);
    assert_eq!(report.events.len(), 5);
    assert_eq!(
        report
            .events
            .iter()
            .map(|e| e.version())
            .collect::<Vec<_>>(),
        vec![1, 2, 3, 4, 5]
    );
}

#[test]
fn flipping_any_single_byte_of_any_event_is_detected() {
    let f = fixture();
    let msgs = chain(&f, 3);
    for target in 0..msgs.len() {
        for byte in 0..msgs[target].len() {
            let mut tampered = msgs.clone();
            tampered[target][byte] ^= 0x01;
            let report = verify_case(&case(), tampered.iter().map(Vec::as_slice), &f.registry);
            assert!(
                !report.is_intact(),
                "flip of byte {byte} in event {target} went unnoticed"
            );
        }
    }
}

#[test]
fn a_flipped_payload_byte_is_reported_as_a_bad_signature() {
    let f = fixture();
    let mut msgs = chain(&f, 3);
    let last = msgs[1].len() - 70;
    msgs[1][last] ^= 0x20;
    let report = verify_case(&case(), msgs.iter().map(Vec::as_slice), &f.registry);
    assert!(matches!(
        report.failures[0].error,
        VerifyError::BadSignature { .. } | VerifyError::Undecodable { .. }
    ));
    assert_eq!(report.failures[0].position, 1);
}

#[test]
fn a_dropped_event_is_reported_as_a_gap_at_that_version() {
    let f = fixture();
    let mut msgs = chain(&f, 5);
    msgs.remove(2);
    let report = verify_case(&case(), msgs.iter().map(Vec::as_slice), &f.registry);
    assert_eq!(report.failures.len(), 1, "{:?}", report.failures);
    assert_eq!(
        report.failures[0].error,
        VerifyError::Chain(ChainError::Gap {
            case_id: "C1".into(),
            expected: 3,
            found: 4
        })
    );
    assert_eq!(
        report.failures[0].error.to_string(),
        "gap in case C1: expected version 3, found 4"
    );
}

#[test]
fn two_swapped_events_are_reported_as_gap_and_reorder() {
    let f = fixture();
    let mut msgs = chain(&f, 5);
    msgs.swap(1, 2);
    let report = verify_case(&case(), msgs.iter().map(Vec::as_slice), &f.registry);
    let codes: Vec<_> = report.failures.iter().map(|f| f.error.code()).collect();
    assert_eq!(codes, vec!["gap", "reorder"], "{:?}", report.failures);
}

#[test]
fn a_replaced_event_with_a_valid_signature_breaks_the_chain_at_its_successor() {
    let f = fixture();
    let mut msgs = chain(&f, 3);
    // Re-sign a different version 2 with the legitimate key: its signature is fine,
    // but version 3 no longer links to it.
    let first = verify_signed(&msgs[0], &f.registry).expect("valid");
    let mut forged = event(&f.court, 2, Some(first.hash));
    forged.actor = "someone else".into();
    msgs[1] = f.court.sign(&forged).0.encode_to_vec();
    let report = verify_case(&case(), msgs.iter().map(Vec::as_slice), &f.registry);
    assert_eq!(
        report
            .failures
            .iter()
            .map(|f| f.error.clone())
            .collect::<Vec<_>>(),
        vec![VerifyError::Chain(ChainError::ChainBreak {
            case_id: "C1".into(),
            version: 3
        })]
    );
}

#[test]
fn an_event_signed_by_an_unregistered_key_is_an_unknown_key() {
    let f = fixture();
    let rogue = OfficeSigner::from_seed(office("customs:ningbo"), "rogue", [9; 32]).expect("key");
    let raw = rogue.sign(&event(&rogue, 1, None)).0.encode_to_vec();
    assert_eq!(
        verify_signed(&raw, &f.registry).expect_err("unknown key"),
        VerifyError::UnknownKey {
            key_id: "customs:ningbo#rogue".into()
        }
    );
}

#[test]
fn a_signature_by_another_key_under_a_registered_key_id_is_a_bad_signature() {
    let f = fixture();
    let impostor = OfficeSigner::from_seed(office("customs:ningbo"), "1", [9; 32]).expect("key");
    let raw = impostor.sign(&event(&impostor, 1, None)).0.encode_to_vec();
    assert_eq!(
        verify_signed(&raw, &f.registry).expect_err("forged"),
        VerifyError::BadSignature {
            key_id: "customs:ningbo#1".into()
        }
    );
}

#[test]
fn an_event_claiming_another_office_than_its_key_is_refused() {
    let f = fixture();
    let mut ev = event(&f.customs, 1, None);
    ev.office_id = "court:hangzhou-ip".into();
    ev.agency = Agency::Court as i32;
    let raw = f.customs.sign(&ev).0.encode_to_vec();
    assert!(matches!(
        verify_signed(&raw, &f.registry),
        Err(VerifyError::OfficeMismatch { .. })
    ));
}

#[test]
fn an_event_recorded_outside_the_key_validity_period_is_refused() {
    let mut f = fixture();
    f.registry
        .retire_key("customs:ningbo#1", datetime!(2026-06-01 0:00 UTC))
        .expect("retire");
    let raw = f
        .customs
        .sign(&event(&f.customs, 1, None))
        .0
        .encode_to_vec();
    let err = verify_signed(&raw, &f.registry).expect_err("expired key");
    assert!(matches!(err, VerifyError::KeyNotValidAt { .. }), "{err}");
    assert!(err.to_string().contains("2026-11-20T08:00:00Z"), "{err}");
}

#[test]
fn random_bytes_are_undecodable_and_do_not_panic() {
    let f = fixture();
    for raw in [&b""[..], b"\xff\xff\xff", b"hello world", &[0x0a, 0x80]] {
        assert!(verify_signed(raw, &f.registry).is_err());
    }
}

#[test]
fn an_event_with_a_mismatched_agency_is_an_invalid_envelope() {
    let f = fixture();
    let mut ev = event(&f.customs, 1, None);
    ev.agency = Agency::Court as i32;
    let raw = f.customs.sign(&ev).0.encode_to_vec();
    let err = verify_signed(&raw, &f.registry).expect_err("agency mismatch");
    assert!(err.to_string().contains("agency"), "{err}");
}

#[test]
fn verifying_on_several_threads_gives_each_message_exactly_its_own_result() {
    let f = fixture();
    let mut msgs = chain(&f, 100);
    // A forged signature, a flipped event byte and junk, spread over the chunks.
    let last = msgs[7].len() - 1;
    msgs[7][last] ^= 1;
    msgs[55][20] ^= 1;
    msgs[93] = b"junk".to_vec();
    let alone: Vec<_> = msgs.iter().map(|m| verify_signed(m, &f.registry)).collect();
    for threads in [0, 1, 2, 3, 8] {
        let together = verify_signed_all(&msgs, &f.registry, threads);
        assert_eq!(together.len(), alone.len(), "{threads} threads");
        for (i, (a, b)) in alone.iter().zip(&together).enumerate() {
            match (a, b) {
                (Ok(a), Ok(b)) => assert_eq!(a.hash, b.hash, "message {i}, {threads} threads"),
                (Err(a), Err(b)) => assert_eq!(a, b, "message {i}, {threads} threads"),
                _ => panic!("message {i} differs on {threads} threads: {a:?} against {b:?}"),
            }
        }
    }
    assert!(together_failures(&msgs, &f.registry) == vec![7, 55, 93]);
}

fn together_failures(msgs: &[Vec<u8>], registry: &OfficeRegistry) -> Vec<usize> {
    verify_signed_all(msgs, registry, 2)
        .iter()
        .enumerate()
        .filter_map(|(i, r)| r.is_err().then_some(i))
        .collect()
}
