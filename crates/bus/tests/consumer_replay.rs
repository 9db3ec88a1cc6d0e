//! Messages an agency user can publish on `case.*` without producing a new event,
//! against a real nats-server: copies of stored, validly signed events (dead-lettered as
//! `replay`, recognised from the consumer's memory of the case, before the consumer
//! started and while it runs), and events whose signer-chosen `recorded_at` is far from
//! the time the stream stored them (`clock_skew`) or before the event they follow
//! (`time_regression`). Loaders leave the same events out, so the appender decides on
//! the chain the consumers follow.

mod common;

use std::sync::{Arc, Mutex};

use prost::Message as _;

use casebus_bus::{
    BatchHandler, CancellationToken, ConsumerConfig, ConsumerRunner, EventHandler, HandlerError,
    StoredEvent, subjects,
};
use casebus_proto::event::v1::{Event, SignedEvent};
use casebus_proto::timestamp_from;
use casebus_test_support::wait_until;

use common::catalogue::{note, opened};
use common::*;

/// Records the (version, sequence) of what it handles.
#[derive(Clone, Default)]
struct Recorder {
    seen: Arc<Mutex<Vec<(u64, u64)>>>,
    /// What the batched mode reported as skipped.
    skipped: Arc<Mutex<Vec<u64>>>,
}

impl Recorder {
    fn seen(&self) -> Vec<(u64, u64)> {
        self.seen.lock().expect("lock").clone()
    }
}

impl BatchHandler for Recorder {
    async fn handle_batch(&self, events: &[StoredEvent]) -> Result<(), HandlerError> {
        self.seen
            .lock()
            .expect("lock")
            .extend(events.iter().map(|e| (e.event.version(), e.sequence)));
        Ok(())
    }

    async fn skipped(&self, sequences: &[u64]) -> Result<(), HandlerError> {
        self.skipped
            .lock()
            .expect("lock")
            .extend_from_slice(sequences);
        Ok(())
    }
}

impl EventHandler for Recorder {
    async fn handle(&self, event: &StoredEvent) -> Result<(), HandlerError> {
        self.seen
            .lock()
            .expect("lock")
            .push((event.event.version(), event.sequence));
        Ok(())
    }
}

/// `(code, original sequence)` of every dead letter, in order.
async fn dead_letters(f: &Fixture) -> Vec<(String, u64)> {
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
        out.push((
            h(subjects::headers::DLQ_CODE),
            h(subjects::headers::DLQ_SEQUENCE).parse().unwrap_or(0),
        ));
    }
    out
}

/// The stored bytes of the case's message at `sequence`.
async fn stored_bytes(f: &Fixture, case_id: &str, sequence: u64) -> Vec<u8> {
    let messages = f
        .bus
        .read_case_messages(&case(case_id), sequence - 1, sequence)
        .await
        .expect("read");
    messages[0].payload.to_vec()
}

#[tokio::test]
async fn copies_of_handled_events_are_dead_lettered_as_replay_and_never_handled_again() {
    let f = Fixture::start().await;
    let case_id = case("REPLAY");
    let customs = f.appender(CUSTOMS);
    let mut appended = Vec::new();
    appended.push(
        customs
            .append(request(&case_id, opened("replay")))
            .await
            .expect("open"),
    );
    for text in ["two", "three"] {
        appended.push(
            customs
                .append(request(&case_id, note(text)))
                .await
                .expect("note"),
        );
    }
    // Copies before the consumer starts: it learns the case from the stream.
    let mut copies = Vec::new();
    for original in [&appended[0], &appended[2], &appended[1]] {
        let bytes = stored_bytes(&f, "REPLAY", original.stream_sequence).await;
        copies.push(f.publish_raw("REPLAY", bytes).await);
    }

    let recorder = Recorder::default();
    let runner = ConsumerRunner::new(f.bus.clone(), ConsumerConfig::named("replay-consumer"));
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(runner.run(recorder.clone(), shutdown.clone()));
    wait_until(
        DELIVERY_TIMEOUT,
        "three events handled and three replays dead-lettered",
        async || recorder.seen().len() == 3 && dead_letters(&f).await.len() == 3,
    )
    .await
    .expect("consumer processed everything");

    // Copies while it runs, of an old event and of the tip, then a new event.
    for original in [&appended[1], &appended[2]] {
        let bytes = stored_bytes(&f, "REPLAY", original.stream_sequence).await;
        copies.push(f.publish_raw("REPLAY", bytes).await);
    }
    let v4 = customs
        .append(request(&case_id, note("four")))
        .await
        .expect("v4");
    assert_eq!(v4.case_version, 4, "the copies are not part of the chain");
    wait_until(
        DELIVERY_TIMEOUT,
        "the new event handled and five replays dead-lettered",
        async || recorder.seen().len() == 4 && dead_letters(&f).await.len() == 5,
    )
    .await
    .expect("consumer processed everything");
    shutdown.cancel();
    task.await.expect("join").expect("consumer ends cleanly");

    let handled: Vec<(u64, u64)> = appended
        .iter()
        .chain([&v4])
        .map(|a| (a.case_version, a.stream_sequence))
        .collect();
    assert_eq!(
        recorder.seen(),
        handled,
        "each event handled once, in order"
    );
    let expected: Vec<(String, u64)> = copies.iter().map(|s| ("replay".into(), *s)).collect();
    assert_eq!(dead_letters(&f).await, expected);
    let loaded = f.bus.load_case(&case_id).await.expect("load");
    assert_eq!(loaded.events.len(), 4);
    assert_eq!(loaded.rejected.len(), copies.len());
}

/// The durable consumer's `(pending, ack pending)` counts.
async fn consumer_backlog(f: &Fixture, name: &str) -> (u64, usize) {
    let mut consumer: async_nats::jetstream::consumer::PullConsumer = f
        .bus
        .jetstream()
        .get_stream(subjects::CASES_STREAM)
        .await
        .expect("CASES")
        .get_consumer(name)
        .await
        .expect("consumer");
    let info = consumer.info().await.expect("consumer info");
    (info.num_pending, info.num_ack_pending)
}

#[tokio::test]
async fn a_flood_of_copies_beyond_the_dead_letter_window_is_dead_lettered_once_each_and_acked() {
    flood(false).await;
}

#[tokio::test]
async fn in_batched_mode_a_flood_of_copies_is_dead_lettered_once_each_skipped_and_acked() {
    flood(true).await;
}

async fn flood(batched: bool) {
    // More copies than a consumer keeps in flight (256), so the window fills, drains
    // while messages keep coming, and settles when they stop.
    const COPIES: usize = 700;
    let f = Fixture::start().await;
    let case_id = case("FLOOD");
    let customs = f.appender(CUSTOMS);
    let opened = customs
        .append(request(&case_id, opened("flood")))
        .await
        .expect("open");
    let second = customs
        .append(request(&case_id, note("two")))
        .await
        .expect("note");
    let originals = [
        stored_bytes(&f, "FLOOD", opened.stream_sequence).await,
        stored_bytes(&f, "FLOOD", second.stream_sequence).await,
    ];
    // A copy whose event bytes are the original's but whose signature is not: the
    // event is still the stored one, so it is reported as a copy, never handled.
    let mut forged = SignedEvent::decode(originals[1].as_slice()).expect("signed");
    forged.signature[0] ^= 1;
    let mut copies = Vec::new();
    for i in 0..COPIES {
        let bytes = if i == COPIES / 2 {
            forged.encode_to_vec()
        } else {
            originals[i % 2].clone()
        };
        copies.push(f.publish_raw("FLOOD", bytes).await);
    }

    let recorder = Recorder::default();
    let name = "flood-consumer";
    let runner = ConsumerRunner::new(f.bus.clone(), ConsumerConfig::named(name));
    let counters = runner.counters();
    let shutdown = CancellationToken::new();
    let task = if batched {
        tokio::spawn(runner.run_batched(recorder.clone(), 500, shutdown.clone()))
    } else {
        tokio::spawn(runner.run(recorder.clone(), shutdown.clone()))
    };
    wait_until(
        DELIVERY_TIMEOUT,
        "every copy dead-lettered and every message acked",
        async || {
            dead_letters(&f).await.len() == COPIES && consumer_backlog(&f, name).await == (0, 0)
        },
    )
    .await
    .expect("the consumer settles every dead letter without more messages coming");
    assert_eq!(
        counters
            .dead_lettered
            .load(std::sync::atomic::Ordering::Relaxed),
        COPIES as u64
    );
    shutdown.cancel();
    task.await.expect("join").expect("consumer ends cleanly");

    assert_eq!(
        recorder.seen(),
        vec![(1, opened.stream_sequence), (2, second.stream_sequence)],
        "only the two events are handled"
    );
    let expected: Vec<(String, u64)> = copies.iter().map(|s| ("replay".into(), *s)).collect();
    assert_eq!(dead_letters(&f).await, expected, "each copy once, in order");
    let skipped = recorder.skipped.lock().expect("lock").clone();
    if batched {
        assert_eq!(
            skipped, copies,
            "the handler is told of each copy once, in order"
        );
    } else {
        assert!(skipped.is_empty());
    }
}

#[tokio::test]
async fn events_recorded_far_from_their_stored_time_or_before_their_predecessor_are_dead_lettered_with_their_own_codes()
 {
    let f = Fixture::start().await;
    let case_id = case("CLOCK");
    let customs = f.appender(CUSTOMS);
    customs
        .append(request(&case_id, opened("clock")))
        .await
        .expect("open");
    let v2 = customs
        .append(request(&case_id, note("two")))
        .await
        .expect("v2");
    let template = Event::decode(
        SignedEvent::decode(
            stored_bytes(&f, "CLOCK", v2.stream_sequence)
                .await
                .as_slice(),
        )
        .expect("signed")
        .event
        .as_slice(),
    )
    .expect("event");
    let recorded_v2 = casebus_proto::datetime_from(template.recorded_at.as_ref().expect("time"))
        .expect("recorded_at");
    // A key holder's version 3, correctly chained, but dated beyond the skew (ahead, as
    // one would to use a key not valid yet; backdating also goes before version 2) ...
    let mut backdated = template.clone();
    backdated.case_version = 3;
    backdated.prev_event_hash = v2.hash.0.to_vec();
    backdated.event_id = "0123456789abcdef0123456789abcdef".into();
    backdated.recorded_at = Some(timestamp_from(recorded_v2 + time::Duration::minutes(10)));
    let skewed = f
        .publish_raw("CLOCK", signer(CUSTOMS).sign(&backdated).0.encode_to_vec())
        .await;
    // ... and one within the skew but recorded before version 2.
    let mut earlier = backdated.clone();
    earlier.event_id = "1123456789abcdef0123456789abcdef".into();
    earlier.recorded_at = Some(timestamp_from(recorded_v2 - time::Duration::seconds(1)));
    let regressed = f
        .publish_raw("CLOCK", signer(CUSTOMS).sign(&earlier).0.encode_to_vec())
        .await;

    // The loader leaves both out, so the appender continues after version 2.
    let loaded = f.bus.load_case(&case_id).await.expect("load");
    let codes: Vec<&str> = loaded.rejected.iter().map(|r| r.error.code()).collect();
    assert_eq!(codes, vec!["clock_skew", "time_regression"]);
    let v3 = f
        .appender(CUSTOMS)
        .append(request(&case_id, note("three")))
        .await
        .expect("v3");
    assert_eq!(v3.case_version, 3);

    let recorder = Recorder::default();
    let runner = ConsumerRunner::new(f.bus.clone(), ConsumerConfig::named("clock-consumer"));
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(runner.run(recorder.clone(), shutdown.clone()));
    wait_until(
        DELIVERY_TIMEOUT,
        "three events handled and two dead letters",
        async || recorder.seen().len() == 3 && dead_letters(&f).await.len() == 2,
    )
    .await
    .expect("consumer processed everything");
    shutdown.cancel();
    task.await.expect("join").expect("consumer ends cleanly");
    assert_eq!(
        dead_letters(&f).await,
        vec![
            ("clock_skew".to_owned(), skewed),
            ("time_regression".to_owned(), regressed)
        ]
    );
    assert_eq!(
        recorder.seen().iter().map(|(v, _)| *v).collect::<Vec<_>>(),
        vec![1, 2, 3]
    );
}
