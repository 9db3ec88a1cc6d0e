//! Figure 4: rebuilding a gateway projection into SQLite from the stream (read in
//! order, verify signature and chain, apply in batches of 500), against a raw durable
//! pull consumer acking every message, batch 500.

use std::collections::HashMap;
use std::time::Instant;

use async_nats::jetstream::{self, consumer::pull};
use futures::StreamExt as _;

use casebus_bus::Bus;
use casebus_bus::ops::{Ops, ScanStart};
use casebus_bus::subjects::CASES_STREAM;
use casebus_integrity::{ChainTip, VerifiedEvent, verify_signed_all};
use casebus_timeline::{ProjectedInput, Projection};

use crate::report::{Measurement, Row};

/// Consumes `count` messages of `stream` with a durable pull consumer, acking each.
pub async fn raw_consume(
    js: &jetstream::Context,
    stream: &str,
    count: u64,
) -> anyhow::Result<Measurement> {
    let stream = js.get_stream(stream).await?;
    let consumer = stream
        .create_consumer(pull::Config {
            durable_name: Some("rawbench".into()),
            ack_policy: jetstream::consumer::AckPolicy::Explicit,
            ..Default::default()
        })
        .await?;
    let start = Instant::now();
    let mut messages = consumer
        .stream()
        .max_messages_per_batch(500)
        .messages()
        .await?;
    let mut seen = 0;
    while seen < count {
        let Some(message) = messages.next().await else {
            break;
        };
        message?
            .ack()
            .await
            .map_err(|e| anyhow::anyhow!("ack: {e}"))?;
        seen += 1;
    }
    anyhow::ensure!(seen == count, "raw consumer saw {seen} of {count}");
    Ok(Measurement::rate("events/s", seen, start.elapsed()))
}

/// Where a rebuild spent its time.
#[derive(Debug, Default, Clone, Copy)]
pub struct Phases {
    /// Decoding, signature and chain checks (wall time, on every core).
    pub verify: std::time::Duration,
    /// SQLite transactions (wall time on the writer's thread, overlapping the reading
    /// and verifying of the next batch).
    pub apply: std::time::Duration,
    /// Waiting for the writer to finish the previous batch.
    pub wait: std::time::Duration,
    /// Transactions.
    pub transactions: u64,
}

/// Messages fetched at a time, as `casebus rebuild` does.
const FETCH: usize = 1024;
/// The most events in one transaction, as `casebus rebuild`.
const MAX_TRANSACTION: usize = 8192;

type Written = (Projection, anyhow::Result<std::time::Duration>);

/// Rebuilds a projection from `CASES` into a new SQLite file at `path` the way
/// `casebus rebuild` does: batches of 1,024 messages read with an ordered scan, their
/// signatures checked on every core (each with `verify_strict`) and their chains in
/// order, written by one thread in transactions of what was verified while the
/// previous one was written (at most 8,192 events).
pub async fn casebus_rebuild(
    bus: &Bus,
    path: &std::path::Path,
    count: u64,
) -> anyhow::Result<(Measurement, Projection, Phases)> {
    let mut phases = Phases::default();
    let projection = Projection::open(path)?;
    let threads = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
    let registry = bus.registry();
    let start = Instant::now();
    let ops = Ops::from_bus(bus);
    let mut scanner = ops
        .scan(CASES_STREAM, None, ScanStart::Sequence(1), FETCH)
        .await?;
    let mut tips: HashMap<casebus_proto::CaseId, ChainTip> = HashMap::new();
    let mut events: Vec<(u64, VerifiedEvent)> = Vec::new();
    let mut writer: Option<tokio::task::JoinHandle<Written>> = None;
    let mut idle = Some(projection);
    let mut seen = 0u64;
    while seen < count {
        let batch = scanner.fetch().await?;
        anyhow::ensure!(
            !batch.is_empty(),
            "the stream ended after {seen} of {count}"
        );
        let t = Instant::now();
        let payloads: Vec<&[u8]> = batch.iter().map(|m| m.payload.as_ref()).collect();
        let checked =
            tokio::task::block_in_place(|| verify_signed_all(&payloads, &registry, threads));
        for (message, event) in batch.iter().zip(checked) {
            let event = event?;
            let tip = tips
                .entry(event.case_id.clone())
                .or_insert_with(|| ChainTip::empty(event.case_id.clone()));
            tip.check(&event)?;
            tip.advance(&event);
            events.push((message.sequence, event));
        }
        seen += batch.len() as u64;
        phases.verify += t.elapsed();
        let done = seen >= count;
        let free = writer
            .as_ref()
            .is_none_or(tokio::task::JoinHandle::is_finished);
        if free || events.len() >= MAX_TRANSACTION || done {
            let t = Instant::now();
            if let Some(task) = writer.take() {
                let (p, took) = task.await?;
                phases.apply += took?;
                idle = Some(p);
            }
            phases.wait += t.elapsed();
            let mut p = idle.take().expect("the writer returned the projection");
            let batch = std::mem::take(&mut events);
            phases.transactions += 1;
            writer = Some(tokio::task::spawn_blocking(move || {
                let t = Instant::now();
                let inputs: Vec<ProjectedInput<'_>> = batch
                    .iter()
                    .map(|(s, e)| ProjectedInput::new(*s, e))
                    .collect();
                let result = p.apply_batch(&inputs).map(|_| t.elapsed());
                (p, result.map_err(anyhow::Error::from))
            }));
        }
    }
    if let Some(task) = writer.take() {
        let t = Instant::now();
        let (p, took) = task.await?;
        phases.apply += took?;
        phases.wait += t.elapsed();
        idle = Some(p);
    }
    scanner.close().await;
    let projection = idle.expect("the writer returned the projection");

    let measurement = Measurement::rate("events/s", seen, start.elapsed());
    Ok((measurement, projection, phases))
}

/// Runs figure 4 over the `count` events already in `CASES` and `RAWBENCH`.
pub async fn run(bus: &Bus, count: u64) -> anyhow::Result<Row> {
    let js = Bus::context(bus.client().clone(), &casebus_bus::BusConfig::default());
    let baseline = raw_consume(&js, "RAWBENCH", count).await?;
    let dir = tempfile::tempdir()?;
    let (casebus, projection, phases) =
        casebus_rebuild(bus, &dir.path().join("rebuild.db"), count).await?;
    let counts = projection.counts(time::OffsetDateTime::now_utc())?;
    anyhow::ensure!(
        counts.events == count,
        "projection holds {} events, {count} expected",
        counts.events
    );
    Ok(Row::ratio(
        &format!("projection rebuild into SQLite, {count} events"),
        casebus,
        baseline,
        0.5,
        format!(
            "the projection holds exactly {count} events of {} cases, each verified (signature + chain) on the way; per event: verify {:.1} µs (on {} threads), SQLite {:.1} µs (overlapping the next batch's reading and verifying; {} transactions), waiting for SQLite {:.1} µs",
            counts.cases,
            phases.verify.as_secs_f64() * 1e6 / count as f64,
            std::thread::available_parallelism().map_or(1, std::num::NonZero::get),
            phases.apply.as_secs_f64() * 1e6 / count as f64,
            phases.transactions,
            phases.wait.as_secs_f64() * 1e6 / count as f64,
        ),
    ))
}
