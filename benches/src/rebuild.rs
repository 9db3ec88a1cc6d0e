//! Figure 4: rebuilding a gateway projection into SQLite from the stream (read in
//! order, verify signature and chain, apply in batches of 500), against a raw durable
//! pull consumer acking every message, batch 500.

use std::collections::HashMap;
use std::time::Instant;

use async_nats::jetstream::{self, consumer::pull};
use futures::StreamExt as _;

use casebus_bus::Bus;
use casebus_integrity::{ChainTip, verify_signed};
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
    /// Decoding, signature and chain checks.
    pub verify: std::time::Duration,
    /// SQLite transactions.
    pub apply: std::time::Duration,
}

/// Rebuilds a projection from `CASES` into a new SQLite file at `path`.
pub async fn casebus_rebuild(
    bus: &Bus,
    path: &std::path::Path,
    count: u64,
) -> anyhow::Result<(Measurement, Projection, Phases)> {
    let mut phases = Phases::default();
    let mut projection = Projection::open(path)?;
    let start = Instant::now();
    let mut tail = bus.tail(1, None).await?;
    let mut tips: HashMap<casebus_proto::CaseId, ChainTip> = HashMap::new();
    let mut batch = Vec::with_capacity(500);
    let mut seen = 0u64;
    while seen < count {
        let Some(raw) = tail.next().await else { break };
        let raw = raw?;
        seen += 1;
        let t = Instant::now();
        let event = verify_signed(&raw.payload, &bus.registry())?;
        let tip = tips
            .entry(event.case_id.clone())
            .or_insert_with(|| ChainTip::empty(event.case_id.clone()));
        tip.check(&event)?;
        tip.advance(&event);
        phases.verify += t.elapsed();
        batch.push((raw.sequence, event));
        if batch.len() == 500 || raw.pending == 0 || seen == count {
            let t = Instant::now();
            let inputs: Vec<ProjectedInput<'_>> = batch
                .iter()
                .map(|(s, e)| ProjectedInput::new(*s, e))
                .collect();
            projection.apply_batch(&inputs)?;
            phases.apply += t.elapsed();
            batch.clear();
        }
    }
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
            "the projection holds exactly {count} events of {} cases, each verified (signature + chain) on the way; per event: verify {:.1} µs, SQLite {:.1} µs, the rest is reading the stream",
            counts.cases,
            phases.verify.as_secs_f64() * 1e6 / count as f64,
            phases.apply.as_secs_f64() * 1e6 / count as f64,
        ),
    ))
}
