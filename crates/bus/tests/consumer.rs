//! The verifying consumer against a real nats-server: poison messages land in
//! `CASES_DLQ` with the reason and the consumer goes on; a handler's transient failure is
//! retried without reordering; tampering with stored events is detected.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use prost::Message as _;

use casebus_bus::{
    CancellationToken, ConsumerConfig, ConsumerRunner, EventHandler, HandlerError, StoredEvent,
    subjects,
};
use casebus_integrity::{OfficeSigner, verify_case, verify_signed};
use casebus_proto::event::v1::{Event, SignedEvent};
use casebus_test_support::wait_until;

use common::catalogue::{note, opened};
use common::*;

/// Records what it handles; optionally fails a given case version a number of times.
#[derive(Clone, Default)]
struct Recorder {
    seen: Arc<Mutex<Vec<(String, u64, u64)>>>,
    fail_version: Option<u64>,
    failures_left: Arc<Mutex<u32>>,
}

impl Recorder {
    fn seen(&self) -> Vec<(String, u64, u64)> {
        self.seen.lock().expect("lock").clone()
    }
}

impl EventHandler for Recorder {
    async fn handle(&self, event: &StoredEvent) -> Result<(), HandlerError> {
        if self.fail_version == Some(event.event.version()) {
            let mut left = self.failures_left.lock().expect("lock");
            if *left > 0 {
                *left -= 1;
                return Err(HandlerError::Transient("database busy".into()));
            }
        }
        self.seen.lock().expect("lock").push((
            event.event.case_id.to_string(),
            event.event.version(),
            event.sequence,
        ));
        Ok(())
    }
}

/// A dead letter's headers of interest.
#[derive(Debug, PartialEq, Eq)]
struct DeadLetter {
    code: String,
    consumer: String,
    sequence: u64,
    subject: String,
    reason: String,
}

async fn dead_letters(f: &Fixture) -> Vec<DeadLetter> {
    let js = f.bus.jetstream();
    let mut stream = js.get_stream(subjects::DLQ_STREAM).await.expect("DLQ");
    let count = stream.info().await.expect("info").state.messages;
    let mut out = Vec::new();
    for seq in 1..=count {
        let msg = stream.get_raw_message(seq).await.expect("dead letter");
        let h = |name: &str| {
            msg.headers
                .get(name)
                .map(|v| v.as_str().to_owned())
                .unwrap_or_default()
        };
        out.push(DeadLetter {
            code: h(subjects::headers::DLQ_CODE),
            consumer: h(subjects::headers::DLQ_CONSUMER),
            sequence: h(subjects::headers::DLQ_SEQUENCE).parse().unwrap_or(0),
            subject: h(subjects::headers::DLQ_SUBJECT),
            reason: h(subjects::headers::DLQ_REASON),
        });
    }
    out
}

#[tokio::test]
async fn poison_messages_land_in_the_dlq_and_the_consumer_goes_on() {
    let f = Fixture::start().await;
    let case_id = case("POISON");
    let customs = f.appender(CUSTOMS);
    let v1 = customs
        .append(request(&case_id, opened("poison")))
        .await
        .expect("open");
    let v2 = customs
        .append(request(&case_id, note("before poison")))
        .await
        .expect("v2");

    // 1. Random bytes.
    let random_seq = f
        .publish_raw("POISON", b"\xde\xad\xbe\xef not protobuf at all".to_vec())
        .await;
    // 2. A well-formed version 3 signed by an impostor under customs' key id.
    let stored = f
        .bus
        .read_case_messages(&case_id, 0, v2.stream_sequence)
        .await
        .expect("read");
    let mut forged = Event::decode(
        SignedEvent::decode(stored[1].payload.as_ref())
            .expect("signed")
            .event
            .as_slice(),
    )
    .expect("event");
    forged.case_version = 3;
    forged.prev_event_hash = v2.hash.0.to_vec();
    forged.event_id = "0123456789abcdef0123456789abcdef".into();
    let impostor = OfficeSigner::from_seed(office(CUSTOMS), "k1", [99; 32]).expect("key");
    let bad_sig_seq = f
        .publish_raw("POISON", impostor.sign(&forged).0.encode_to_vec())
        .await;
    // 3. A correctly signed version 3 whose prev hash is wrong (a chain break).
    forged.prev_event_hash = vec![0xab; 32];
    let chain_break_seq = f
        .publish_raw("POISON", signer(CUSTOMS).sign(&forged).0.encode_to_vec())
        .await;
    // 4. A valid event of this case replayed onto another case's subject.
    let replay_seq = f.publish_raw("ELSEWHERE", stored[0].payload.to_vec()).await;

    // Good events keep coming after the poison, chained to the last valid event.
    let fresh = f.appender(CUSTOMS);
    let v3 = fresh
        .append(request(&case_id, note("after poison 1")))
        .await
        .expect("v3");
    let v4 = fresh
        .append(request(&case_id, note("after poison 2")))
        .await
        .expect("v4");
    assert_eq!((v3.case_version, v4.case_version), (3, 4));

    let recorder = Recorder::default();
    let runner = ConsumerRunner::new(f.bus.clone(), ConsumerConfig::named("test-consumer"));
    let counters = runner.counters();
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(runner.run(recorder.clone(), shutdown.clone()));

    wait_until(
        DELIVERY_TIMEOUT,
        "four good events handled and four dead letters",
        async || recorder.seen().len() == 4 && dead_letters(&f).await.len() == 4,
    )
    .await
    .expect("consumer processed everything");

    let seen = recorder.seen();
    let versions: Vec<u64> = seen.iter().map(|(_, v, _)| *v).collect();
    assert_eq!(versions, vec![1, 2, 3, 4]);
    assert_eq!(
        seen.iter().map(|(_, _, s)| *s).collect::<Vec<_>>(),
        vec![
            v1.stream_sequence,
            v2.stream_sequence,
            v3.stream_sequence,
            v4.stream_sequence
        ]
    );
    let letters = dead_letters(&f).await;
    let summary: Vec<(&str, u64, &str)> = letters
        .iter()
        .map(|d| (d.code.as_str(), d.sequence, d.subject.as_str()))
        .collect();
    assert_eq!(
        summary,
        vec![
            ("undecodable", random_seq, "case.POISON"),
            ("bad_signature", bad_sig_seq, "case.POISON"),
            ("chain_break", chain_break_seq, "case.POISON"),
            ("case_mismatch", replay_seq, "case.ELSEWHERE"),
        ]
    );
    assert!(
        letters
            .iter()
            .all(|d| d.consumer == "test-consumer" && !d.reason.is_empty())
    );
    assert!(
        letters[2]
            .reason
            .contains("chain break in case POISON at version 3"),
        "{}",
        letters[2].reason
    );
    assert_eq!(
        counters
            .dead_lettered
            .load(std::sync::atomic::Ordering::Relaxed),
        4
    );

    // And it keeps going live.
    let v5 = fresh
        .append(request(&case_id, note("live")))
        .await
        .expect("v5");
    wait_until(
        DELIVERY_TIMEOUT,
        "the live event to be handled",
        async || recorder.seen().last().map(|(_, _, s)| *s) == Some(v5.stream_sequence),
    )
    .await
    .expect("live delivery");
    shutdown.cancel();
    task.await.expect("join").expect("consumer ends cleanly");
}

#[tokio::test]
async fn a_transient_handler_failure_is_retried_without_reordering() {
    let f = Fixture::start().await;
    let case_id = case("RETRYING");
    let customs = f.appender(CUSTOMS);
    customs
        .append(request(&case_id, opened("retrying")))
        .await
        .expect("open");
    for i in 0..3 {
        customs
            .append(request(&case_id, note(&format!("n{i}"))))
            .await
            .expect("note");
    }
    let recorder = Recorder {
        fail_version: Some(2),
        failures_left: Arc::new(Mutex::new(3)),
        ..Recorder::default()
    };
    let runner = ConsumerRunner::new(f.bus.clone(), ConsumerConfig::named("retrying"));
    let counters = runner.counters();
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(runner.run(recorder.clone(), shutdown.clone()));
    wait_until(DELIVERY_TIMEOUT, "all four events handled", async || {
        recorder.seen().len() == 4
    })
    .await
    .expect("handled");
    let versions: Vec<u64> = recorder.seen().iter().map(|(_, v, _)| *v).collect();
    assert_eq!(versions, vec![1, 2, 3, 4], "order kept across retries");
    assert_eq!(
        counters.retries.load(std::sync::atomic::Ordering::Relaxed),
        3
    );
    assert!(dead_letters(&f).await.is_empty());
    shutdown.cancel();
    task.await.expect("join").expect("clean stop");
}

#[tokio::test]
async fn a_restarted_consumer_resumes_after_its_last_ack_without_duplicates() {
    let f = Fixture::start().await;
    let case_id = case("RESUME");
    let customs = f.appender(CUSTOMS);
    customs
        .append(request(&case_id, opened("resume")))
        .await
        .expect("open");
    customs
        .append(request(&case_id, note("one")))
        .await
        .expect("note");

    let first = Recorder::default();
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(
        ConsumerRunner::new(f.bus.clone(), ConsumerConfig::named("resume"))
            .run(first.clone(), shutdown.clone()),
    );
    wait_until(DELIVERY_TIMEOUT, "two events handled", async || {
        first.seen().len() == 2
    })
    .await
    .expect("handled");
    shutdown.cancel();
    task.await.expect("join").expect("stop");
    // The acks must have reached the server before the restart is meaningful.
    let js = f.bus.jetstream();
    wait_until(
        DELIVERY_TIMEOUT,
        "the consumer's acks to be recorded",
        async || {
            let mut c = js
                .get_stream(subjects::CASES_STREAM)
                .await
                .expect("stream")
                .get_consumer::<async_nats::jetstream::consumer::pull::Config>("resume")
                .await
                .expect("consumer");
            c.info()
                .await
                .map(|i| i.ack_floor.stream_sequence == 2)
                .unwrap_or(false)
        },
    )
    .await
    .expect("acks recorded");

    customs
        .append(request(&case_id, note("two")))
        .await
        .expect("note");
    let second = Recorder::default();
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(
        ConsumerRunner::new(f.bus.clone(), ConsumerConfig::named("resume"))
            .run(second.clone(), shutdown.clone()),
    );
    wait_until(DELIVERY_TIMEOUT, "the new event handled", async || {
        second.seen().len() == 1
    })
    .await
    .expect("handled");
    assert_eq!(
        second.seen()[0].1,
        3,
        "resumes at version 3; its tip was rebuilt from the stream"
    );
    shutdown.cancel();
    task.await.expect("join").expect("stop");
    assert!(dead_letters(&f).await.is_empty());
}

#[tokio::test]
async fn tampering_with_stored_events_is_detected() {
    let f = Fixture::start().await;
    let case_id = case("TAMPER");
    let customs = f.appender(CUSTOMS);
    customs
        .append(request(&case_id, opened("tamper")))
        .await
        .expect("open");
    for i in 0..4 {
        customs
            .append(request(&case_id, note(&format!("n{i}"))))
            .await
            .expect("note");
    }
    let last = f.bus.last_sequence(&case_id).await.expect("last");
    let raw: Vec<Vec<u8>> = f
        .bus
        .read_case_messages(&case_id, 0, last)
        .await
        .expect("read")
        .into_iter()
        .map(|m| m.payload.to_vec())
        .collect();
    let registry = f.bus.registry();
    let check = |msgs: &[Vec<u8>]| verify_case(&case_id, msgs.iter().map(Vec::as_slice), &registry);
    assert!(check(&raw).is_intact(), "the stored case verifies");

    let mut flipped = raw.clone();
    let n = flipped[2].len();
    flipped[2][n / 2] ^= 0x01;
    let report = check(&flipped);
    assert!(!report.is_intact());
    assert_eq!(report.failures[0].position, 2);

    let mut dropped = raw.clone();
    dropped.remove(3);
    let report = check(&dropped);
    assert_eq!(report.failures.len(), 1);
    assert_eq!(
        report.failures[0].error.to_string(),
        "gap in case TAMPER: expected version 4, found 5"
    );

    let mut swapped = raw.clone();
    swapped.swap(1, 2);
    let codes: Vec<&str> = check(&swapped)
        .failures
        .iter()
        .map(|x| x.error.code())
        .collect();
    assert_eq!(codes, vec!["gap", "reorder"]);

    // Each stored message also verifies on its own, signed by the office that acted.
    for msg in &raw {
        assert_eq!(
            verify_signed(msg, &registry)
                .expect("valid")
                .office
                .as_str(),
            CUSTOMS
        );
    }
}

#[tokio::test]
async fn the_consumer_stops_promptly_on_shutdown_while_idle() {
    let f = Fixture::start().await;
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(
        ConsumerRunner::new(f.bus.clone(), ConsumerConfig::named("idle"))
            .run(Recorder::default(), shutdown.clone()),
    );
    // Let it reach the pull loop: the durable consumer exists once it is running.
    let js = f.bus.jetstream();
    wait_until(
        DELIVERY_TIMEOUT,
        "the durable consumer to exist",
        async || {
            js.get_stream(subjects::CASES_STREAM)
                .await
                .expect("stream")
                .consumer_info("idle")
                .await
                .is_ok()
        },
    )
    .await
    .expect("consumer created");
    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .expect("stops within 5s")
        .expect("join")
        .expect("clean");
}
