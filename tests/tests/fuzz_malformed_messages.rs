//! 10,000 malformed messages published straight onto `case.*` subjects, interleaved with
//! a load of valid appends to the same cases, against a real nats-server with a verifying
//! consumer running the whole time.
//!
//! The malformed kinds: random bytes, truncated protobuf, an empty message, a wrong
//! signature, an unknown key, a key of another office, a key not valid at the event's
//! time, a broken chain (gap and wrong previous hash), a valid event replayed onto
//! another case, the same event published twice in place, an event on a subject whose
//! token is not a case id, and oversized messages (above the stream's limit, and above
//! the server's max payload).
//!
//! Two consumers run throughout: one inside the test that records what it is handed,
//! and the real `casebus-gateway` binary projecting into SQLite.
//!
//! It proves: every malformed message the stream took ends in `CASES_DLQ` with a reason,
//! its code, the consumer and its original sequence, once per consumer (the oversized
//! ones are refused by the server); every valid event is handed to the recording
//! consumer exactly once and in case order, and the gateway's projection equals the fold
//! of the valid events; the appends all succeed; neither consumer stops or restarts.
//!
//! `CASEBUS_MALFORMED_COUNT` changes the number of malformed messages (default 10,000).

mod fault_common;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use prost::Message as _;
use time::macros::datetime;
use tokio::time::Instant;

use casebus_bus::ops::Ops;
use casebus_bus::subjects::{CASES_STREAM, DLQ_STREAM};
use casebus_bus::{Appender, AppenderConfig};
use casebus_domain::DeadlineRules;
use casebus_proto::CaseId;
use casebus_test_support::wait_until;

use fault_common::audit::{dead_letters, last_sequence, read_stream};
use fault_common::chain::{ChainBuilder, note, opened, realistic_case, sign};
use fault_common::load::{self, Ledger, LoadPlan};
use fault_common::procs::RecordingConsumer;
use fault_common::report::{Figures, ms};
use fault_common::services::Stage;
use fault_common::{CUSTOMS, POLICE, case, generations, open_bus, signer, unregistered_signer};

/// Ceiling for the consumer to work through everything that was published.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(240);
/// The consumer under test.
const CONSUMER: &str = "fuzz-recorder";
/// The gateway under test consumes as `gw-<this>`.
const GATEWAY: &str = "malformed";

fn malformed_count() -> usize {
    std::env::var("CASEBUS_MALFORMED_COUNT")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000)
}

/// The kinds of malformed message, and the dead-letter codes each may end with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Kind {
    RandomBytes,
    Truncated,
    Empty,
    WrongSignature,
    UnknownKey,
    OtherOfficesKey,
    KeyNotValidThen,
    Gap,
    WrongPreviousHash,
    ReplayedOntoAnotherCase,
    RepeatedInPlace,
    NotACaseSubject,
    OverStreamLimit,
    OverMaxPayload,
}

const KINDS: [Kind; 14] = [
    Kind::RandomBytes,
    Kind::Truncated,
    Kind::Empty,
    Kind::WrongSignature,
    Kind::UnknownKey,
    Kind::OtherOfficesKey,
    Kind::KeyNotValidThen,
    Kind::Gap,
    Kind::WrongPreviousHash,
    Kind::ReplayedOntoAnotherCase,
    Kind::RepeatedInPlace,
    Kind::NotACaseSubject,
    Kind::OverStreamLimit,
    Kind::OverMaxPayload,
];

impl Kind {
    fn codes(self) -> &'static [&'static str] {
        match self {
            // Random bytes may happen to decode as a wrapper naming no known key.
            Self::RandomBytes => &["undecodable", "unknown_key", "bad_signature"],
            Self::Truncated | Self::Empty => &["undecodable", "unknown_key", "bad_signature"],
            Self::WrongSignature => &["bad_signature"],
            Self::UnknownKey => &["unknown_key"],
            Self::OtherOfficesKey => &["office_mismatch"],
            Self::KeyNotValidThen => &["key_not_valid"],
            Self::Gap => &["gap"],
            Self::WrongPreviousHash => &["chain_break", "reorder", "gap", "invalid_envelope"],
            Self::ReplayedOntoAnotherCase | Self::NotACaseSubject => &["case_mismatch"],
            // A stored event published again: the consumer knows it from its replay index.
            Self::RepeatedInPlace => &["replay"],
            Self::OverStreamLimit | Self::OverMaxPayload => &[],
        }
    }

    fn refused_by_server(self) -> bool {
        matches!(self, Self::OverStreamLimit | Self::OverMaxPayload)
    }
}

/// A small deterministic generator, so a failure can be replayed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn bytes(&mut self, len: usize) -> Vec<u8> {
        (0..len).map(|_| self.next() as u8).collect()
    }
}

/// `len` bytes of a fixed pattern, built once per size.
fn big(len: usize) -> Vec<u8> {
    static CACHE: std::sync::Mutex<Vec<Vec<u8>>> = std::sync::Mutex::new(Vec::new());
    let mut cache = CACHE.lock().expect("lock");
    if let Some(found) = cache.iter().find(|b| b.len() == len) {
        return found.clone();
    }
    let mut rng = Rng(len as u64 | 1);
    let bytes = rng.bytes(len);
    cache.push(bytes.clone());
    bytes
}

/// Builds the malformed message number `i` of `kind`: its subject and payload.
fn malformed(
    kind: Kind,
    i: usize,
    rng: &mut Rng,
    valid_cases: &[CaseId],
    seeds: &[Vec<u8>],
) -> (String, Vec<u8>) {
    // Half go onto cases the valid load writes, half onto cases of their own.
    let target = if i.is_multiple_of(2) {
        valid_cases[rng.below(valid_cases.len())].clone()
    } else {
        case(&format!("junk-{}", rng.below(100)))
    };
    let subject = format!("case.{target}");
    let customs = signer(CUSTOMS);
    let mut chain = ChainBuilder::new(&target);
    let payload = match kind {
        Kind::RandomBytes => {
            let len = 1 + rng.below(2048);
            rng.bytes(len)
        }
        Kind::Truncated => {
            let seed = &seeds[rng.below(seeds.len())];
            seed[..rng.below(seed.len())].to_vec()
        }
        Kind::Empty => Vec::new(),
        Kind::WrongSignature => {
            let mut built = chain.peek(&customs, note("forged"), None);
            let at = rng.below(built.signed.signature.len());
            built.signed.signature[at] ^= 0x5a;
            built.signed.encode_to_vec()
        }
        Kind::UnknownKey => {
            chain
                .peek(&unregistered_signer(CUSTOMS), opened("rogue"), None)
                .bytes
        }
        Kind::OtherOfficesKey => {
            // Claims the police office, signed with the customs key.
            let mut event = chain.peek(&customs, note("impostor"), None).event;
            event.office_id = POLICE.into();
            event.agency = casebus_proto::event::v1::Agency::PublicSecurity as i32;
            sign(&customs, event).bytes
        }
        Kind::KeyNotValidThen => {
            chain.at = datetime!(2019-06-01 0:00 UTC);
            chain.peek(&customs, opened("too early"), None).bytes
        }
        Kind::Gap => {
            chain.version = 500 + rng.below(500) as u64;
            chain.prev = Some(casebus_integrity::EventHash([3; 32]));
            chain.peek(&customs, note("from the future"), None).bytes
        }
        Kind::WrongPreviousHash => {
            if i.is_multiple_of(2) {
                // On a case the load writes: some version it has or will have, linking
                // to a hash nobody signed (a chain break at the next version, a reorder
                // below it, a gap above it).
                chain.version = 1 + rng.below(25) as u64;
                chain.prev = Some(casebus_integrity::EventHash([4; 32]));
                chain.peek(&customs, note("rewritten history"), None).bytes
            } else {
                // A first event that claims a predecessor.
                let mut event = chain.peek(&customs, opened("junk"), None).event;
                event.prev_event_hash = vec![4; 32];
                sign(&customs, event).bytes
            }
        }
        Kind::ReplayedOntoAnotherCase => seeds[rng.below(seeds.len())].clone(),
        Kind::RepeatedInPlace => Vec::new(), // built by the caller from a stored event
        Kind::NotACaseSubject => {
            let bad = format!("case.bad:token-{}", rng.below(10));
            return (bad, chain.peek(&customs, opened("elsewhere"), None).bytes);
        }
        // Random content does not matter here, only the size (and generating megabytes
        // per message would dominate the run).
        Kind::OverStreamLimit => big(300 * 1024),
        Kind::OverMaxPayload => big(2 * 1024 * 1024),
    };
    (subject, payload)
}

/// The stored opening event of `case_id`, once the load has had it acknowledged.
async fn opening(
    ops: &Ops,
    ledger: &Ledger,
    case_id: &CaseId,
    cache: &mut HashMap<CaseId, Vec<u8>>,
) -> Option<Vec<u8>> {
    if let Some(bytes) = cache.get(case_id) {
        return Some(bytes.clone());
    }
    let sequence = ledger
        .acks()
        .into_iter()
        .find(|a| &a.case_id == case_id && a.request_id == "r0")?
        .sequence;
    let message = ops.get_message(CASES_STREAM, sequence).await.ok()??;
    cache.insert(case_id.clone(), message.payload.to_vec());
    Some(message.payload.to_vec())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_messages_all_end_in_the_dead_letter_stream_and_never_block_valid_events() {
    let generation = generations().remove(0);
    let server = generation.start_server().await;
    let urls = vec![server.url()];
    let bus = open_bus(&urls, "fuzz-malformed", 1).await;
    let consumer = RecordingConsumer::start(&bus, CONSUMER);
    // The real gateway consumes the same stream into its projection.
    let stage = Stage::new(urls.clone());
    let mut gateway = stage.gateway(GATEWAY).await;
    let gateway_pid = gateway.pid();

    // The valid load: customs writes 40 cases of 25 events while the junk arrives.
    let plan = LoadPlan {
        prefix: "valid".into(),
        cases: 40,
        events_per_case: 25,
        workers: 8,
        note_bytes: 200,
    };
    let valid_cases: Vec<CaseId> = (0..plan.cases).map(|n| plan.case_id(n)).collect();
    let appender = Arc::new(
        Appender::new(
            bus.clone(),
            signer(CUSTOMS),
            Arc::new(DeadlineRules::default()),
            AppenderConfig::default(),
        )
        .expect("appender"),
    );
    let ledger = Arc::new(Ledger::default());
    let stop = Arc::new(AtomicBool::new(false));
    let load_task = tokio::spawn(load::run(appender, plan.clone(), ledger.clone(), stop));

    // Seeds of replays: valid events of a case that is never published itself.
    let seeds: Vec<Vec<u8>> = realistic_case(&case("replay-source"), 12)
        .into_iter()
        .map(|b| b.bytes)
        .collect();

    let count = malformed_count();
    let mut rng = Rng(0x5eed_cafe_f00d_d00d);
    let mut sent: HashMap<u64, Kind> = HashMap::new();
    let mut refused: BTreeMap<Kind, usize> = BTreeMap::new();
    let mut built: BTreeMap<Kind, usize> = BTreeMap::new();
    let started = Instant::now();
    let js = bus.jetstream();
    let ops = Ops::from_bus(&bus);
    let mut openings: HashMap<CaseId, Vec<u8>> = HashMap::new();
    let mut pending = Vec::new();
    for i in 0..count {
        let kind = KINDS[i % KINDS.len()];
        let (kind, subject, payload) = if kind == Kind::RepeatedInPlace {
            // The opening event of a load case, published again without a message id.
            let target = &valid_cases[rng.below(valid_cases.len())];
            match opening(&ops, &ledger, target, &mut openings).await {
                Some(bytes) => (kind, format!("case.{target}"), bytes),
                // The load has not opened it yet: replay a foreign event instead.
                None => (
                    Kind::ReplayedOntoAnotherCase,
                    format!("case.{target}"),
                    seeds[0].clone(),
                ),
            }
        } else {
            let (subject, payload) = malformed(kind, i, &mut rng, &valid_cases, &seeds);
            (kind, subject, payload)
        };
        *built.entry(kind).or_default() += 1;
        match js.publish(subject, payload.into()).await {
            Ok(ack) => pending.push((kind, ack)),
            Err(_) => *refused.entry(kind).or_default() += 1,
        }
        // Await acks in chunks: pipelined, but the outcome of each one is known.
        if pending.len() >= 256 || i + 1 == count {
            for (kind, ack) in pending.drain(..) {
                match ack.await {
                    Ok(ack) => {
                        sent.insert(ack.sequence, kind);
                    }
                    Err(_) => *refused.entry(kind).or_default() += 1,
                }
            }
        }
    }
    let publish_time = started.elapsed();
    load_task.await.expect("the valid load finishes");
    let load_time = started.elapsed();

    // The consumer works through everything.
    let last = last_sequence(&bus, CASES_STREAM).await;
    wait_until(
        DRAIN_TIMEOUT,
        "the consumer to handle or dead-letter every message",
        async || consumer.last_sequence() >= last,
    )
    .await
    .unwrap_or_else(|e| panic!("{e}; the consumer reached {}", consumer.last_sequence()));
    let drain_time = started.elapsed();
    assert!(
        !consumer.task.is_finished(),
        "the consumer stopped while handling malformed input"
    );
    wait_until(
        DRAIN_TIMEOUT,
        "the gateway to project or dead-letter every message",
        async || gateway.position() >= last,
    )
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", gateway.log_text()));
    let gateway_drain_time = started.elapsed();
    assert!(
        gateway.is_running() && gateway.pid() == gateway_pid,
        "the gateway restarted or died"
    );
    let (projection_diffs, _) = gateway
        .projection_diffs(&bus, &format!("gw-{GATEWAY}"))
        .await;
    let projection_equal = projection_diffs.is_empty();
    assert!(
        projection_equal,
        "the gateway's projection differs from the fold of the valid events:\n{}",
        projection_diffs.join("\n")
    );

    // Every valid command was acknowledged.
    assert!(ledger.failures().is_empty(), "{:?}", ledger.failures());
    assert_eq!(ledger.count(), plan.total());

    // Every valid event was handed over exactly once, in case order, and nothing else.
    let acked: HashSet<_> = ledger.acks().into_iter().map(|a| a.event_id).collect();
    let handed: HashSet<_> = consumer.recorded.ids().into_iter().collect();
    let missing: Vec<_> = acked.difference(&handed).collect();
    let extra: Vec<_> = handed.difference(&acked).collect();
    assert!(
        missing.is_empty(),
        "valid events never handed over: {missing:?}"
    );
    assert!(
        extra.is_empty(),
        "events handed over that nobody appended: {extra:?}"
    );
    assert!(
        consumer.recorded.out_of_order().is_empty(),
        "{:?}",
        consumer.recorded.out_of_order()
    );
    let redelivered = consumer
        .recorded
        .deliveries
        .lock()
        .expect("lock")
        .values()
        .filter(|n| **n > 1)
        .count();

    // Every malformed message the stream took is dead-lettered by each consumer, once,
    // with its reason.
    let letters = dead_letters(&bus).await;
    let mut by_code: BTreeMap<String, usize> = BTreeMap::new();
    let mut lettered: HashMap<String, HashSet<u64>> = HashMap::new();
    for letter in &letters {
        assert_eq!(letter.original_stream, CASES_STREAM);
        assert!(!letter.reason.is_empty(), "{letter:?}");
        let sequence = letter.original_sequence.expect("the original sequence");
        let kind = sent
            .get(&sequence)
            .unwrap_or_else(|| panic!("a valid message was dead-lettered: {letter:?}"));
        assert!(
            kind.codes().contains(&letter.code.as_str()),
            "{kind:?} dead-lettered by {} as {} ({})",
            letter.consumer,
            letter.code,
            letter.reason
        );
        assert!(
            lettered
                .entry(letter.consumer.clone())
                .or_default()
                .insert(sequence),
            "dead-lettered twice by {}: {sequence}",
            letter.consumer
        );
        if letter.consumer == CONSUMER {
            *by_code.entry(letter.code.clone()).or_default() += 1;
        }
    }
    let stored_malformed: HashSet<u64> = sent.keys().copied().collect();
    for name in [CONSUMER.to_owned(), format!("gw-{GATEWAY}")] {
        let mine = lettered.get(&name).cloned().unwrap_or_default();
        let not_lettered: Vec<_> = stored_malformed.difference(&mine).collect();
        assert!(
            not_lettered.is_empty(),
            "{name}: malformed messages stored but not dead-lettered: {} of them",
            not_lettered.len()
        );
    }
    // The oversized messages, and only they, were refused by the server.
    for kind in KINDS {
        let n = refused.get(&kind).copied().unwrap_or(0);
        if kind.refused_by_server() {
            assert_eq!(n, built[&kind], "{kind:?}: every one refused");
        } else {
            assert_eq!(n, 0, "{kind:?}: refused by the server");
        }
    }
    // The stream holds exactly the valid events plus the malformed ones it took.
    let stored = read_stream(&bus, CASES_STREAM).await.len();
    assert_eq!(stored, acked.len() + sent.len());
    let dlq_last = last_sequence(&bus, DLQ_STREAM).await;
    assert_eq!(dlq_last as usize, letters.len());
    assert_eq!(
        letters.len(),
        2 * sent.len(),
        "two consumers dead-letter each malformed message once"
    );

    let mut figures = Figures::new("malformed messages", &generation.label);
    figures
        .row("malformed messages built", count)
        .row("stored by the stream", sent.len())
        .row(
            "refused by the server (oversized)",
            refused.values().sum::<usize>(),
        )
        .row("dead-lettered (by each of the two consumers)", sent.len())
        .row("valid events appended concurrently", acked.len())
        .row("valid events handed to the consumer", handed.len())
        .row("valid events lost / duplicated / out of order", "0 / 0 / 0")
        .row("redeliveries (handled again, idempotent)", redelivered)
        .row("publishing the malformed messages took", ms(publish_time))
        .row("the valid load took", ms(load_time))
        .row(
            "recording consumer drained everything after",
            ms(drain_time),
        )
        .row("gateway drained everything after", ms(gateway_drain_time))
        .row(
            "gateway projection equals the fold of the valid events",
            projection_equal,
        )
        .row("consumer or gateway restarts", 0);
    figures.notes = format!(
        "Dead letters by code: {}",
        by_code
            .iter()
            .map(|(c, n)| format!("`{c}` {n}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    figures.write();
    consumer.stop().await;
}
