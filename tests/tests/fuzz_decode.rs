//! Fuzzing of the decode → verify → fold path with proptest, bounded so it runs in CI.
//!
//! Seeds are valid signed events of realistic cases (every office, several payload
//! kinds, sealed and listed visibility). Three harnesses:
//!
//! - byte mutations of stored messages (flips, insertions, deletions, truncation, splices
//!   of two events) through `verify_signed`, `verify_case` and the fold: nothing panics,
//!   whatever still verifies carries exactly the bytes an office signed, the untouched
//!   events before the mutated one all verify, and a mutated message that fails is left
//!   out with exactly the one event after it (which no longer links) and no other;
//! - mutations of the inner event bytes, signed again with a valid key, so that garbage
//!   passes the signature check and reaches the envelope checks, the chain and the case
//!   rules' fold and visibility;
//! - events built field by field from arbitrary values (any version up to `u64::MAX`,
//!   timestamps out of range, unknown enum values, long strings) signed with a valid key.
//!
//! Plus fixed inputs no fuzzer finds by chance: 10 MB of junk, length prefixes claiming
//! exabytes, deeply nested groups. Each must be refused quickly and without allocating
//! more than a bounded multiple of its size.
//!
//! `CASEBUS_FUZZ_CASES` sets the number of cases per harness (default 300).

mod fault_common;

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use proptest::prelude::*;
use prost::Message as _;

use casebus_bus::recorded;
use casebus_domain::{CaseState, sight};
use casebus_integrity::{ChainTip, EventHash, OfficeRegistry, verify_case, verify_signed};
use casebus_proto::event::v1::{Event, SignedEvent, Visibility};
use casebus_proto::{CaseId, Timestamp};

use fault_common::chain::{Built, realistic_case, sign};
use fault_common::{CUSTOMS, OFFICES, case, office, registry, signer};

/// Ceiling for verifying one input of several megabytes.
const LARGE_INPUT_TIMEOUT: Duration = Duration::from_secs(2);

fn cases() -> u32 {
    std::env::var("CASEBUS_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(300)
}

struct Corpus {
    registry: OfficeRegistry,
    case_id: CaseId,
    events: Vec<Built>,
}

fn corpus() -> &'static Corpus {
    static CORPUS: OnceLock<Corpus> = OnceLock::new();
    CORPUS.get_or_init(|| {
        let case_id = case("fuzz-1");
        Corpus {
            registry: registry(),
            events: realistic_case(&case_id, 12),
            case_id,
        }
    })
}

/// Runs everything a consumer and a loader run on one case's messages, and returns the
/// hashes of the events that verified as the case's chain, in order.
fn exercise(corpus: &Corpus, messages: &[Vec<u8>]) -> Vec<EventHash> {
    let registry = &corpus.registry;
    // One message at a time, as a consumer does, with its own chain tip.
    let mut tip = ChainTip::empty(corpus.case_id.clone());
    let mut state = CaseState::default();
    for raw in messages {
        if let Ok(event) = verify_signed(raw, registry) {
            if tip.check(&event).is_ok() {
                tip.advance(&event);
            }
            state.apply(&recorded(&event));
        }
    }
    // The whole case at once, as `casebus verify` and the loaders do.
    let report = verify_case(
        &corpus.case_id,
        messages.iter().map(Vec::as_slice),
        registry,
    );
    let folded = CaseState::fold(report.events.iter().map(recorded));
    for v in 0..=folded.version + 1 {
        for o in OFFICES {
            let _ = sight(&folded, v, &office(o));
        }
    }
    report.events.iter().map(|e| e.hash).collect()
}

#[derive(Debug, Clone)]
enum Mutation {
    Flip {
        at: usize,
        mask: u8,
    },
    Insert {
        at: usize,
        bytes: Vec<u8>,
    },
    Delete {
        at: usize,
        len: usize,
    },
    Truncate {
        len: usize,
    },
    Splice {
        other: usize,
        from: usize,
        at: usize,
    },
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<usize>(), 1..=255u8).prop_map(|(at, mask)| Mutation::Flip { at, mask }),
        (any::<usize>(), prop::collection::vec(any::<u8>(), 1..16))
            .prop_map(|(at, bytes)| Mutation::Insert { at, bytes }),
        (any::<usize>(), 1..64usize).prop_map(|(at, len)| Mutation::Delete { at, len }),
        any::<usize>().prop_map(|len| Mutation::Truncate { len }),
        (any::<usize>(), any::<usize>(), any::<usize>())
            .prop_map(|(other, from, at)| Mutation::Splice { other, from, at }),
    ]
}

fn apply(bytes: &mut Vec<u8>, m: &Mutation, corpus: &Corpus) {
    let len = bytes.len().max(1);
    match m {
        Mutation::Flip { at, mask } => {
            if !bytes.is_empty() {
                bytes[at % len] ^= mask;
            }
        }
        Mutation::Insert { at, bytes: b } => {
            let at = at % (bytes.len() + 1);
            bytes.splice(at..at, b.iter().copied());
        }
        Mutation::Delete { at, len: n } => {
            if !bytes.is_empty() {
                let at = at % bytes.len();
                let end = (at + n).min(bytes.len());
                bytes.drain(at..end);
            }
        }
        Mutation::Truncate { len: n } => {
            let n = n % (bytes.len() + 1);
            bytes.truncate(n);
        }
        Mutation::Splice { other, from, at } => {
            let other = &corpus.events[other % corpus.events.len()].bytes;
            let from = from % other.len();
            let at = at % (bytes.len() + 1);
            bytes.truncate(at);
            bytes.extend_from_slice(&other[from..]);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: cases(),
        // A failure prints its minimal input; nothing is written into the source tree.
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    /// Stored messages mutated byte by byte: nothing panics, and a message that still
    /// verifies carries the exact event bytes some office signed.
    #[test]
    fn mutated_stored_messages_never_panic_and_never_verify_as_something_unsigned(
        target in 0usize..12,
        mutations in prop::collection::vec(mutation(), 1..6),
    ) {
        let corpus = corpus();
        let mut messages: Vec<Vec<u8>> = corpus.events.iter().map(|e| e.bytes.clone()).collect();
        let mut bytes = messages[target].clone();
        for m in &mutations {
            apply(&mut bytes, m, corpus);
        }
        if let Ok(event) = verify_signed(&bytes, &corpus.registry) {
            prop_assert!(
                corpus.events.iter().any(|e| e.signed.event == event.signed.event),
                "{mutations:?} made a message that verifies with unsigned bytes"
            );
        }
        let outcome = verify_signed(&bytes, &corpus.registry).map(|e| e.signed.event);
        messages[target] = bytes;
        let verified = exercise(corpus, &messages);
        let originals: Vec<EventHash> = corpus.events.iter().map(|e| e.hash).collect();
        // Every event that verified is one of the case's signed events, never twice.
        for (i, hash) in verified.iter().enumerate() {
            prop_assert!(originals.contains(hash), "{mutations:?}: an unknown event verified");
            prop_assert!(!verified[..i].contains(hash), "{mutations:?}: an event verified twice");
        }
        // The untouched events before the target verify, all and in order.
        prop_assert!(
            verified.len() >= target && verified[..target] == originals[..target],
            "{mutations:?}: events before {target} were lost: {} verified",
            verified.len()
        );
        match outcome {
            // The mutation changed nothing an office signed: the whole case verifies.
            Ok(event) if event == corpus.events[target].signed.event => {
                prop_assert_eq!(&verified, &originals, "{:?}", mutations);
            }
            // A refused message is left out, and the event after it no longer links (a
            // gap the chain resynchronises on); everything after that verifies.
            Err(_) => {
                let mut expected = originals.clone();
                expected.drain(target..(target + 2).min(originals.len()));
                prop_assert_eq!(&verified, &expected, "{:?}", mutations);
            }
            // Another genuine event spliced in (a copy out of place): only the checks above.
            Ok(_) => {}
        }
    }

    /// The inner event mutated and signed again with a valid key: garbage that passes
    /// the signature check reaches the envelope checks, the chain and the fold.
    #[test]
    fn resigned_garbage_events_reach_the_fold_without_panic(
        target in 0usize..12,
        mutations in prop::collection::vec(mutation(), 1..6),
    ) {
        let corpus = corpus();
        let original = &corpus.events[target];
        let mut inner = original.signed.event.clone();
        for m in &mutations {
            apply(&mut inner, m, corpus);
        }
        let by = signer(original.event.office_id.as_str());
        let (signed, _hash) = by.sign_bytes(inner);
        let mut messages: Vec<Vec<u8>> = corpus.events.iter().map(|e| e.bytes.clone()).collect();
        messages[target] = signed.encode_to_vec();
        exercise(corpus, &messages);
    }

    /// Events built from arbitrary field values, signed with a valid key.
    #[test]
    fn arbitrary_envelopes_signed_with_a_valid_key_never_panic(
        version in prop_oneof![Just(0u64), Just(1u64), Just(u64::MAX), Just(u64::MAX - 1), any::<u64>(), 1u64..20],
        seconds in prop_oneof![1 => Just(i64::MAX), 1 => Just(i64::MIN), 1 => any::<i64>(), 4 => 1_600_000_000i64..1_900_000_000],
        nanos in prop_oneof![1 => Just(-1i32), 1 => Just(1_000_000_000i32), 1 => any::<i32>(), 4 => 0i32..1_000_000_000],
        agency in prop_oneof![4 => Just(None), 1 => any::<i32>().prop_map(Some)],
        visibility_kind in prop_oneof![any::<i32>(), 0i32..5],
        visibility_agencies in prop::collection::vec(any::<i32>(), 0..8),
        case_text in prop_oneof![4 => Just("fuzz-1".to_owned()), 1 => ".{0,80}"],
        event_id in prop_oneof![1 => Just(String::new()), 4 => "[0-9a-f]{32}", 1 => ".{0,40}"],
        office_pick in 0usize..5,
        prev in prop_oneof![1 => prop::collection::vec(any::<u8>(), 0..40), 4 => prop::collection::vec(any::<u8>(), 32..=32)],
        text_len in prop_oneof![0usize..64, Just(300_000usize)],
        position in 0usize..13,
    ) {
        let corpus = corpus();
        let by = signer(OFFICES[office_pick]);
        let mut event = corpus.events[position % corpus.events.len()].event.clone();
        event.case_version = version;
        event.case_id = case_text;
        event.event_id = event_id;
        event.office_id = by.office().to_string();
        event.agency = agency.unwrap_or(by.office().agency() as i32);
        event.recorded_at = Some(Timestamp { seconds, nanos });
        event.occurred_at = Some(Timestamp { seconds: seconds.wrapping_neg(), nanos });
        event.prev_event_hash = prev;
        event.visibility = Some(Visibility { kind: visibility_kind, agencies: visibility_agencies });
        event.actor = "a".repeat(text_len);
        let built = sign(&by, event);
        let mut messages: Vec<Vec<u8>> = corpus.events.iter().map(|e| e.bytes.clone()).collect();
        messages.insert(position.min(messages.len()), built.bytes.clone());
        // The same event twice, and at the end, where a version of u64::MAX leaves the
        // chain tip at its ceiling for the next message.
        messages.push(built.bytes.clone());
        messages.push(corpus.events[1].bytes.clone());
        exercise(corpus, &messages);
    }
}

/// Peak resident memory of this process in KiB (`VmHWM`).
fn peak_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

/// Verifies `input` as a stored message and as a one-message case, bounded in time;
/// returns how long it took.
fn verify_bounded(what: &str, input: &[u8]) -> Duration {
    let corpus = corpus();
    let started = Instant::now();
    assert!(
        verify_signed(input, &corpus.registry).is_err(),
        "{what} verified"
    );
    let report = verify_case(&corpus.case_id, [input], &corpus.registry);
    assert!(!report.is_intact(), "{what} verified as a case");
    let took = started.elapsed();
    assert!(
        took < LARGE_INPUT_TIMEOUT,
        "{what} took {took:?} to refuse (ceiling {LARGE_INPUT_TIMEOUT:?})"
    );
    took
}

#[test]
fn ten_megabytes_of_junk_are_refused_quickly_and_without_a_memory_blowup() {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let junk: Vec<u8> = (0..10 * 1024 * 1024)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    let before = peak_kib();
    let took = verify_bounded("10 MB of random bytes", &junk);
    // A signed wrapper whose `event` field holds 10 MB of junk: decodes, fails the
    // signature.
    let wrapper = SignedEvent {
        event: junk.clone(),
        signature: vec![0; 64],
        key_id: signer(CUSTOMS).key_id().to_owned(),
    }
    .encode_to_vec();
    let took_wrapped = verify_bounded("10 MB of junk in a signed wrapper", &wrapper);
    let grown_mib = peak_kib().saturating_sub(before) / 1024;
    eprintln!(
        "10 MB junk refused in {took:?}; in a wrapper in {took_wrapped:?}; peak memory grew by {grown_mib} MiB"
    );
    // The inputs themselves are 20 MB; decoding copies the 10 MB field once. Anything
    // far beyond that would be an allocation driven by the input's claims.
    assert!(
        grown_mib < 128,
        "verifying 10 MB inputs grew peak memory by {grown_mib} MiB"
    );
}

#[test]
fn length_prefixes_claiming_exabytes_are_refused_without_allocating_them() {
    // Field 1 (event, length-delimited) claiming 2^62 bytes, followed by 16 bytes.
    let mut bomb = vec![0x0a];
    let mut len: u64 = 1 << 62;
    while len >= 0x80 {
        bomb.push((len as u8) | 0x80);
        len >>= 7;
    }
    bomb.push(len as u8);
    bomb.extend_from_slice(&[0x41; 16]);
    let before = peak_kib();
    verify_bounded("a length prefix of 2^62 bytes", &bomb);
    // The same claim inside an otherwise valid-looking event, signed with a valid key:
    // the signature verifies, the event decoder must refuse the claim.
    let (signed, _) = signer(CUSTOMS).sign_bytes(bomb.clone());
    verify_bounded(
        "a signed event with a length prefix of 2^62 bytes",
        &signed.encode_to_vec(),
    );
    let grown_mib = peak_kib().saturating_sub(before) / 1024;
    assert!(
        grown_mib < 16,
        "the claims grew peak memory by {grown_mib} MiB"
    );
}

#[test]
fn deeply_nested_unknown_groups_are_refused_without_overflowing_the_stack() {
    // Unknown field 15 as start-group, 100,000 levels deep, signed with a valid key so
    // the event decoder has to skip them.
    let depth = 100_000;
    let mut nested = Vec::with_capacity(depth * 2);
    nested.extend(std::iter::repeat_n(0x7b, depth)); // field 15, wire type 3 (start group)
    nested.extend(std::iter::repeat_n(0x7c, depth)); // field 15, wire type 4 (end group)
    verify_bounded("100,000 nested groups", &nested);
    let (signed, _) = signer(CUSTOMS).sign_bytes(nested);
    verify_bounded(
        "a signed event of 100,000 nested groups",
        &signed.encode_to_vec(),
    );
}

/// Regression: `ChainTip::check` computed `version + 1` unchecked, and `verify_case`
/// resynchronises the tip on the version found after a gap, so one validly signed event
/// claiming version u64::MAX made the next message of the case overflow (a panic in
/// debug builds, a wrap to 0 in release).
#[test]
fn a_version_of_u64_max_after_a_gap_leaves_the_chain_checks_working() {
    let corpus = corpus();
    let by = signer(CUSTOMS);
    // A validly signed event claiming the last possible version, linking to a hash.
    let mut event = corpus.events[1].event.clone();
    event.case_version = u64::MAX;
    event.prev_event_hash = vec![9; 32];
    let ceiling = sign(&by, event);
    let mut messages: Vec<Vec<u8>> = corpus.events.iter().map(|e| e.bytes.clone()).collect();
    messages.insert(3, ceiling.bytes.clone());
    let report = verify_case(
        &corpus.case_id,
        messages.iter().map(Vec::as_slice),
        &corpus.registry,
    );
    // The forged ceiling is reported, and so is everything after it (a gap then a
    // reorder), but nothing panics and the events before it verified.
    assert!(
        report.failures.iter().any(|f| f.version == Some(u64::MAX)),
        "{:?}",
        report.failures
    );
    assert!(report.events.len() >= 3);
    // The same through one chain tip, as a consumer checks.
    let mut tip = ChainTip::empty(corpus.case_id.clone());
    for raw in &messages {
        if let Ok(e) = verify_signed(raw, &corpus.registry)
            && tip.check(&e).is_ok()
        {
            tip.advance(&e);
        }
    }
    assert_eq!(
        tip.version,
        corpus.events.len() as u64,
        "a consumer's tip skips the forged event and follows the real chain"
    );
}

#[test]
fn every_seed_verifies_so_the_fuzzers_start_from_valid_input() {
    let corpus = corpus();
    let messages: Vec<Vec<u8>> = corpus.events.iter().map(|e| e.bytes.clone()).collect();
    let report = verify_case(
        &corpus.case_id,
        messages.iter().map(Vec::as_slice),
        &corpus.registry,
    );
    assert!(report.is_intact(), "{:?}", report.failures);
    assert_eq!(report.events.len(), corpus.events.len());
    let state = CaseState::fold(report.events.iter().map(recorded));
    assert_eq!(state.version, corpus.events.len() as u64);
    // Decoding the inner event alone, as the CLI's inspector does.
    for e in &corpus.events {
        Event::decode(e.signed.event.as_slice()).expect("seed decodes");
    }
}
