//! The replay row: copies of one case's stored, validly signed events published again
//! on its subject (what any agency user may do), and what they cost a consumer. A
//! durable consumer in the agency services' mode (one message at a time), and another in
//! the gateway's (batches), works through the case's events and then 10,000 copies,
//! each of which it must recognise as a replay from its memory of the case and
//! dead-letter; the figure is its wall time per copy. The baseline is a raw durable pull
//! consumer acking the same messages.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use async_nats::jetstream::message::PublishMessage;

use casebus_bus::{
    BatchHandler, Bus, CancellationToken, ConsumerConfig, ConsumerRunner, EventHandler,
    HandlerError, StoredEvent,
};

use crate::fixture;
use crate::report::{Measurement, Row};

/// Events of the case that is replayed.
const CASE_EVENTS: usize = 100;
/// Copies published.
const REPLAYS: u64 = 10_000;
/// The target per copy.
const TARGET: Duration = Duration::from_micros(50);
/// Ceiling for the consumer to work through everything.
const CEILING: Duration = Duration::from_secs(300);

/// Hands nothing anywhere: the cost measured is the consumer's own.
struct Discard;

impl EventHandler for Discard {
    async fn handle(&self, _event: &StoredEvent) -> Result<(), HandlerError> {
        Ok(())
    }
}

impl BatchHandler for Discard {
    async fn handle_batch(&self, _events: &[StoredEvent]) -> Result<(), HandlerError> {
        Ok(())
    }
}

/// The gateway's batch size.
const GATEWAY_BATCH: usize = 500;

/// Runs the replay rows (one-at-a-time, then batched) on a fresh server.
pub async fn run() -> anyhow::Result<Vec<Row>> {
    let (server, bus) = fixture::start().await?;
    let rows = measure(&bus).await;
    drop(bus);
    drop(server);
    rows
}

async fn measure(bus: &Bus) -> anyhow::Result<Vec<Row>> {
    let appender = fixture::appender(bus)?;
    let case = fixture::case(0)?;
    appender
        .append(fixture::request(&case, "open", fixture::opened(0))?)
        .await?;
    for j in 1..CASE_EVENTS {
        appender
            .append(fixture::request(
                &case,
                &format!("note-{j}"),
                fixture::note(0, j),
            )?)
            .await?;
    }
    let last = bus.last_sequence(&case).await?;
    let stored = bus.read_case_messages(&case, 0, last).await?;
    anyhow::ensure!(
        stored.len() == CASE_EVENTS,
        "the case has {} events",
        stored.len()
    );
    let subject = casebus_bus::subjects::case_subject(&case);
    let mut acks = Vec::with_capacity(1024);
    for i in 0..REPLAYS {
        let copy = &stored[(i as usize) % stored.len()];
        let publish = PublishMessage::build().payload(copy.payload.clone());
        acks.push(
            bus.jetstream()
                .send_publish(subject.clone(), publish)
                .await?,
        );
        if acks.len() == 1024 {
            for ack in acks.drain(..) {
                ack.await?;
            }
        }
    }
    for ack in acks {
        ack.await?;
    }
    let total = CASE_EVENTS as u64 + REPLAYS;

    let js = Bus::context(bus.client().clone(), &casebus_bus::BusConfig::default());
    let baseline =
        crate::rebuild::raw_consume(&js, casebus_bus::subjects::CASES_STREAM, total).await?;

    let mut rows = Vec::new();
    for (mode, batched) in [("one at a time", false), ("batched", true)] {
        rows.push(consume(bus, &baseline, total, mode, batched, rows.len() as u64 + 1).await?);
    }
    Ok(rows)
}

/// Runs one consumer through the case and its copies; `round` is how many consumers
/// have dead-lettered the copies by the end of it.
async fn consume(
    bus: &Bus,
    baseline: &Measurement,
    total: u64,
    mode: &str,
    batched: bool,
    round: u64,
) -> anyhow::Result<Row> {
    let name = if batched {
        "replaybench-batched"
    } else {
        "replaybench"
    };
    let runner = ConsumerRunner::new(bus.clone(), ConsumerConfig::named(name));
    let counters = runner.counters();
    let shutdown = CancellationToken::new();
    let start = Instant::now();
    let task = if batched {
        tokio::spawn(runner.run_batched(Discard, GATEWAY_BATCH, shutdown.clone()))
    } else {
        tokio::spawn(runner.run(Discard, shutdown.clone()))
    };
    let deadline = start + CEILING;
    let mut tick = tokio::time::interval(Duration::from_millis(1));
    loop {
        tick.tick().await;
        let done = counters.handled.load(Ordering::Relaxed)
            + counters.dead_lettered.load(Ordering::Relaxed);
        if done >= total {
            break;
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "the consumer handled {done} of {total}"
        );
    }
    let elapsed = start.elapsed();
    shutdown.cancel();
    task.await??;
    let handled = counters.handled.load(Ordering::Relaxed);
    let dead = counters.dead_lettered.load(Ordering::Relaxed);
    anyhow::ensure!(
        handled == CASE_EVENTS as u64 && dead == REPLAYS,
        "handled {handled} (expected {CASE_EVENTS}), dead-lettered {dead} (expected {REPLAYS})"
    );
    let dlq = bus
        .jetstream()
        .get_stream(casebus_bus::subjects::DLQ_STREAM)
        .await?
        .info()
        .await?
        .state
        .messages;
    anyhow::ensure!(
        dlq == REPLAYS * round,
        "the dead-letter stream holds {dlq} messages"
    );

    let casebus = Measurement::rate("messages/s", total, elapsed);
    let per_copy = elapsed.as_secs_f64() * 1e6 / total as f64;
    let ratio = casebus.rate / baseline.rate.max(1e-9);
    Ok(Row {
        figure: format!(
            "replay: {REPLAYS} copies of a {CASE_EVENTS}-event case through one consumer ({mode})"
        ),
        target: format!("< {} µs per copy", TARGET.as_micros()),
        met: per_copy < TARGET.as_secs_f64() * 1e6,
        ratio: Some(ratio),
        casebus,
        baseline: Some(baseline.clone()),
        verified: format!(
            "{per_copy:.1} µs per message; {handled} events handled once, {dead} copies dead-lettered as replay"
        ),
    })
}
