//! The batched mode of the verifying consumer against a real nats-server: events come in
//! batches of bounded size and in stream order and are acked per batch; a poison
//! message ends the batch before it and is reported as skipped only after that batch
//! committed, also in large batches whose signatures are checked on several cores;
//! transient failures retry the same batch; a permanent failure in a batch dead-letters
//! only the event at fault.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::jetstream::consumer::pull;
use async_nats::jetstream::message::PublishMessage;

use casebus_bus::{
    BatchHandler, CancellationToken, ConsumerConfig, ConsumerRunner, HandlerError, StoredEvent,
    subjects,
};
use casebus_test_support::wait_until;

use common::catalogue::{note, opened};
use common::*;

/// What the handler saw, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Seen {
    /// A committed batch: (case, version, sequence) of each event.
    Batch(Vec<(String, u64, u64)>),
    /// A dead-lettered sequence.
    Skipped(u64),
}

/// Records batches; can fail a batch transiently a number of times, or refuse one case
/// version for good.
#[derive(Clone, Default)]
struct BatchRecorder {
    seen: Arc<Mutex<Vec<Seen>>>,
    transient_failures: Arc<Mutex<u32>>,
    refuse_version: Option<u64>,
}

impl BatchRecorder {
    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().expect("lock").clone()
    }

    fn events(&self) -> Vec<(String, u64, u64)> {
        self.seen()
            .into_iter()
            .flat_map(|s| match s {
                Seen::Batch(events) => events,
                Seen::Skipped(_) => Vec::new(),
            })
            .collect()
    }

    fn batches(&self) -> Vec<usize> {
        self.seen()
            .into_iter()
            .filter_map(|s| match s {
                Seen::Batch(events) => Some(events.len()),
                Seen::Skipped(_) => None,
            })
            .collect()
    }
}

impl BatchHandler for BatchRecorder {
    async fn handle_batch(&self, events: &[StoredEvent]) -> Result<(), HandlerError> {
        assert!(!events.is_empty(), "never an empty batch");
        {
            let mut left = self.transient_failures.lock().expect("lock");
            if *left > 0 {
                *left -= 1;
                return Err(HandlerError::Transient("database busy".into()));
            }
        }
        if let Some(refused) = self.refuse_version
            && events.iter().any(|e| e.event.version() == refused)
        {
            return Err(HandlerError::Permanent(format!(
                "version {refused} refused"
            )));
        }
        self.seen.lock().expect("lock").push(Seen::Batch(
            events
                .iter()
                .map(|e| (e.event.case_id.to_string(), e.event.version(), e.sequence))
                .collect(),
        ));
        Ok(())
    }

    async fn skipped(&self, sequences: &[u64]) -> Result<(), HandlerError> {
        self.seen
            .lock()
            .expect("lock")
            .extend(sequences.iter().map(|s| Seen::Skipped(*s)));
        Ok(())
    }
}

async fn ack_floor(f: &Fixture, name: &str) -> u64 {
    let mut consumer = f
        .bus
        .cases()
        .get_consumer::<pull::Config>(name)
        .await
        .expect("consumer");
    consumer
        .info()
        .await
        .map(|i| i.ack_floor.stream_sequence)
        .unwrap_or(0)
}

async fn dlq_count(f: &Fixture) -> u64 {
    let mut stream = f
        .bus
        .jetstream()
        .get_stream(subjects::DLQ_STREAM)
        .await
        .expect("DLQ");
    stream.info().await.expect("info").state.messages
}

/// The stream's last sequence.
async fn last_sequence(f: &Fixture) -> u64 {
    let mut stream = f.bus.cases().clone();
    stream.info().await.expect("info").state.last_sequence
}

/// Appends `n` notes after opening the case; returns the last stream sequence.
async fn case_with_notes(f: &Fixture, id: &str, n: usize) -> u64 {
    let case_id = case(id);
    let customs = f.appender(CUSTOMS);
    let mut last = customs
        .append(request(&case_id, opened(id)))
        .await
        .expect("open")
        .stream_sequence;
    for i in 0..n {
        last = customs
            .append(request(&case_id, note(&format!("n{i}"))))
            .await
            .expect("note")
            .stream_sequence;
    }
    last
}

#[tokio::test]
async fn events_come_in_bounded_batches_in_stream_order_and_are_acked() {
    let f = Fixture::start().await;
    let a_last = case_with_notes(&f, "BATCH-A", 20).await;
    let b_last = case_with_notes(&f, "BATCH-B", 20).await;
    let last = a_last.max(b_last);

    let recorder = BatchRecorder::default();
    let runner = ConsumerRunner::new(f.bus.clone(), ConsumerConfig::named("batched"));
    let counters = runner.counters();
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(runner.run_batched(recorder.clone(), 8, shutdown.clone()));

    wait_until(DELIVERY_TIMEOUT, "all 42 events handled", async || {
        recorder.events().len() == 42
    })
    .await
    .expect("handled");
    let sequences: Vec<u64> = recorder.events().iter().map(|e| e.2).collect();
    assert_eq!(sequences, (1..=last).collect::<Vec<_>>(), "stream order");
    let batches = recorder.batches();
    assert!(batches.iter().all(|n| (1..=8).contains(n)), "{batches:?}");
    assert!(
        batches.iter().any(|n| *n > 1),
        "a backlog is handed over in batches: {batches:?}"
    );
    wait_until(DELIVERY_TIMEOUT, "every event acked", async || {
        ack_floor(&f, "batched").await == last
    })
    .await
    .expect("acked");
    assert_eq!(
        counters.handled.load(std::sync::atomic::Ordering::Relaxed),
        42
    );

    // A lone live event is handed over at once, not held for a full batch.
    let live = f
        .appender(CUSTOMS)
        .append(request(&case("BATCH-A"), note("live")))
        .await
        .expect("live");
    wait_until(DELIVERY_TIMEOUT, "the live event handled", async || {
        recorder.events().last().map(|e| e.2) == Some(live.stream_sequence)
    })
    .await
    .expect("live delivery");
    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .expect("stops within 5s")
        .expect("join")
        .expect("clean stop");
}

#[tokio::test]
async fn a_poison_message_is_skipped_only_after_the_batch_before_it_committed() {
    let f = Fixture::start().await;
    let before = case_with_notes(&f, "POISON-B", 3).await;
    let poison = f
        .bus
        .jetstream()
        .send_publish(
            "case.POISON-B",
            PublishMessage::build().payload(b"not an event".to_vec().into()),
        )
        .await
        .expect("publish")
        .await
        .expect("ack")
        .sequence;
    assert_eq!(poison, before + 1);
    let customs = f.appender(CUSTOMS);
    let after = customs
        .append(request(&case("POISON-B"), note("after")))
        .await
        .expect("after")
        .stream_sequence;

    let recorder = BatchRecorder::default();
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(
        ConsumerRunner::new(f.bus.clone(), ConsumerConfig::named("poisoned")).run_batched(
            recorder.clone(),
            100,
            shutdown.clone(),
        ),
    );
    wait_until(
        DELIVERY_TIMEOUT,
        "the event after the poison handled",
        async || recorder.events().last().map(|e| e.2) == Some(after),
    )
    .await
    .expect("handled");
    let seen = recorder.seen();
    let skipped_at = seen
        .iter()
        .position(|s| *s == Seen::Skipped(poison))
        .expect("the poison was reported");
    let handled_before: Vec<u64> = seen[..skipped_at]
        .iter()
        .flat_map(|s| match s {
            Seen::Batch(events) => events.iter().map(|e| e.2).collect(),
            Seen::Skipped(_) => Vec::new(),
        })
        .collect();
    assert_eq!(
        handled_before,
        (1..=before).collect::<Vec<_>>(),
        "everything before the poison committed before it was skipped"
    );
    assert_eq!(dlq_count(&f).await, 1);
    wait_until(DELIVERY_TIMEOUT, "every message acked", async || {
        ack_floor(&f, "poisoned").await == after
    })
    .await
    .expect("acked");
    shutdown.cancel();
    task.await.expect("join").expect("clean stop");
}

#[tokio::test]
async fn a_transient_failure_retries_the_same_batch_without_loss_or_duplicates() {
    let f = Fixture::start().await;
    let last = case_with_notes(&f, "RETRY-B", 9).await;
    let recorder = BatchRecorder {
        transient_failures: Arc::new(Mutex::new(3)),
        ..BatchRecorder::default()
    };
    let runner = ConsumerRunner::new(f.bus.clone(), ConsumerConfig::named("retry-b"));
    let counters = runner.counters();
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(runner.run_batched(recorder.clone(), 50, shutdown.clone()));
    wait_until(DELIVERY_TIMEOUT, "all ten events handled", async || {
        recorder.events().len() == 10
    })
    .await
    .expect("handled");
    let sequences: Vec<u64> = recorder.events().iter().map(|e| e.2).collect();
    assert_eq!(sequences, (1..=last).collect::<Vec<_>>());
    assert_eq!(
        counters.retries.load(std::sync::atomic::Ordering::Relaxed),
        3
    );
    assert_eq!(dlq_count(&f).await, 0);
    shutdown.cancel();
    task.await.expect("join").expect("clean stop");
}

#[tokio::test]
async fn a_permanent_failure_in_a_batch_dead_letters_only_the_event_at_fault() {
    let f = Fixture::start().await;
    let last = case_with_notes(&f, "REFUSE-B", 5).await;
    let recorder = BatchRecorder {
        refuse_version: Some(4),
        ..BatchRecorder::default()
    };
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(
        ConsumerRunner::new(f.bus.clone(), ConsumerConfig::named("refuse-b")).run_batched(
            recorder.clone(),
            50,
            shutdown.clone(),
        ),
    );
    // The case is the stream's only one, so its version 4 is sequence 4.
    wait_until(
        DELIVERY_TIMEOUT,
        "five events handled and one skipped",
        async || recorder.events().len() == 5 && recorder.seen().contains(&Seen::Skipped(4)),
    )
    .await
    .expect("handled");
    let versions: Vec<u64> = recorder.events().iter().map(|e| e.1).collect();
    assert_eq!(versions, vec![1, 2, 3, 5, 6]);
    assert_eq!(dlq_count(&f).await, 1);
    let dlq = f
        .bus
        .jetstream()
        .get_stream(subjects::DLQ_STREAM)
        .await
        .expect("DLQ");
    let letter = dlq.get_raw_message(1).await.expect("dead letter");
    assert_eq!(
        letter
            .headers
            .get(subjects::headers::DLQ_CODE)
            .map(|v| v.as_str().to_owned()),
        Some("handler".to_owned())
    );
    wait_until(DELIVERY_TIMEOUT, "every message acked", async || {
        ack_floor(&f, "refuse-b").await == last
    })
    .await
    .expect("acked");
    shutdown.cancel();
    task.await.expect("join").expect("clean stop");
}

#[tokio::test]
async fn a_large_batch_checked_on_several_cores_keeps_stream_order_around_poison() {
    let f = Fixture::start().await;
    // Two cases interleaved, with poison in the middle: more than enough messages for
    // the signatures of one gathered batch to be checked on several cores.
    let customs = f.appender(CUSTOMS);
    let (a, b) = (case("WIDE-A"), case("WIDE-B"));
    customs
        .append(request(&a, opened("wide a")))
        .await
        .expect("open a");
    customs
        .append(request(&b, opened("wide b")))
        .await
        .expect("open b");
    let mut poison = Vec::new();
    for i in 0..60 {
        if i == 30 || i == 45 {
            let sequence = f
                .bus
                .jetstream()
                .send_publish(
                    "case.WIDE-A",
                    PublishMessage::build().payload(format!("junk {i}").into_bytes().into()),
                )
                .await
                .expect("publish")
                .await
                .expect("ack")
                .sequence;
            poison.push(sequence);
        }
        let id = if i % 2 == 0 { &a } else { &b };
        customs
            .append(request(id, note(&format!("n{i}"))))
            .await
            .expect("note");
    }
    let last = last_sequence(&f).await;

    let recorder = BatchRecorder::default();
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(
        ConsumerRunner::new(f.bus.clone(), ConsumerConfig::named("wide")).run_batched(
            recorder.clone(),
            500,
            shutdown.clone(),
        ),
    );
    wait_until(DELIVERY_TIMEOUT, "all 62 events handled", async || {
        recorder.events().len() == 62
    })
    .await
    .expect("handled");
    // Every sequence but the poison, in stream order, each once; the poison reported
    // exactly between its neighbours.
    let mut expected: Vec<Seen> = Vec::new();
    let mut seen_order: Vec<Seen> = Vec::new();
    for item in recorder.seen() {
        match item {
            Seen::Batch(events) => {
                seen_order.extend(events.iter().map(|e| Seen::Batch(vec![e.clone()])));
            }
            skipped => seen_order.push(skipped),
        }
    }
    let events = recorder.events();
    let mut next_event = events.iter();
    for sequence in 1..=last {
        if poison.contains(&sequence) {
            expected.push(Seen::Skipped(sequence));
        } else {
            let event = next_event.next().expect("an event per good sequence");
            assert_eq!(event.2, sequence, "stream order");
            expected.push(Seen::Batch(vec![event.clone()]));
        }
    }
    assert_eq!(seen_order, expected);
    assert_eq!(dlq_count(&f).await, 2);
    shutdown.cancel();
    task.await.expect("join").expect("clean stop");
}

#[tokio::test]
async fn the_batched_consumer_stops_promptly_while_idle() {
    let f = Fixture::start().await;
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(
        ConsumerRunner::new(f.bus.clone(), ConsumerConfig::named("idle-b")).run_batched(
            BatchRecorder::default(),
            10,
            shutdown.clone(),
        ),
    );
    wait_until(
        DELIVERY_TIMEOUT,
        "the durable consumer to exist",
        async || f.bus.cases().consumer_info("idle-b").await.is_ok(),
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

/// Holds its first batch until the test releases it (once the server has delivered
/// the backlog to the consumer, so it waits in the client), then records like
/// [`BatchRecorder`].
#[derive(Clone)]
struct HoldFirstBatch {
    recorder: BatchRecorder,
    release: Arc<tokio::sync::Notify>,
    held: Arc<std::sync::atomic::AtomicBool>,
}

impl BatchHandler for HoldFirstBatch {
    async fn handle_batch(&self, events: &[StoredEvent]) -> Result<(), HandlerError> {
        if !self.held.swap(true, std::sync::atomic::Ordering::SeqCst) {
            self.release.notified().await;
        }
        self.recorder.handle_batch(events).await
    }

    async fn skipped(&self, sequences: &[u64]) -> Result<(), HandlerError> {
        self.recorder.skipped(sequences).await
    }
}

#[tokio::test]
async fn a_backlog_waiting_in_the_client_is_gathered_past_tokios_cooperative_budget() {
    // Tokio's budget lets one poll of a task take 128 items from a channel before
    // it answers "not ready"; gathering inside it capped every batch at 128 however
    // many messages had arrived while the previous batch was committed.
    let f = Fixture::start().await;
    let last = case_with_notes(&f, "COOP", 700).await;
    let recorder = BatchRecorder::default();
    let release = Arc::new(tokio::sync::Notify::new());
    let handler = HoldFirstBatch {
        recorder: recorder.clone(),
        release: release.clone(),
        held: Arc::default(),
    };
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(
        ConsumerRunner::new(f.bus.clone(), ConsumerConfig::named("coop")).run_batched(
            handler,
            500,
            shutdown.clone(),
        ),
    );
    // The first batch is held while the server delivers what the pull asked for.
    wait_until(DELIVERY_TIMEOUT, "the backlog delivered", async || {
        f.bus
            .cases()
            .consumer_info("coop")
            .await
            .is_ok_and(|info| info.num_ack_pending >= 500)
    })
    .await
    .expect("the server delivers the backlog while the first batch is held");
    release.notify_one();
    wait_until(DELIVERY_TIMEOUT, "all 701 events handled", async || {
        recorder.events().len() == 701
    })
    .await
    .expect("handled");
    let sequences: Vec<u64> = recorder.events().iter().map(|e| e.2).collect();
    assert_eq!(sequences, (1..=last).collect::<Vec<_>>(), "stream order");
    let batches = recorder.batches();
    assert!(batches.iter().all(|n| (1..=500).contains(n)), "{batches:?}");
    assert!(
        batches.iter().any(|n| *n > 128),
        "messages waiting in the client are gathered into one batch: {batches:?}"
    );
    shutdown.cancel();
    task.await.expect("join").expect("clean stop");
}
