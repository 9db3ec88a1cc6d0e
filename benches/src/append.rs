//! Figure 1: the append path (load case, decide, sign, publish with optimistic
//! concurrency and Msg-Id) over many cases concurrently, against raw async-nats
//! JetStream publishing of messages of the same size with 1,024 acks in flight and a
//! Msg-Id each.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, message::PublishMessage};
use futures::StreamExt as _;
use futures::stream::FuturesUnordered;
use hdrhistogram::Histogram;

use casebus_bus::{Bus, BusConfig, StreamSettings, provision::cases_config};

use crate::fixture;
use crate::report::{Measurement, Row};

/// Size of the benchmark run.
#[derive(Debug, Clone, Copy)]
pub struct Size {
    /// Cases written concurrently.
    pub cases: usize,
    /// Notes per case after it is opened.
    pub rounds: usize,
    /// Concurrent writers (each owns a share of the cases).
    pub writers: usize,
}

/// Appends `size.cases × (1 + size.rounds)` events; returns the measurement.
pub async fn casebus_appends(
    bus: &Bus,
    size: Size,
    first_case: usize,
) -> anyhow::Result<(Measurement, u64)> {
    // Every case's head stays cached (the default cap is 10,000 cases; the growth row's
    // 1M events are 20,000 cases written round robin).
    let appender = Arc::new(fixture::appender_caching(bus, size.cases)?);
    appends_with(appender, size, first_case, None).await
}

/// [`casebus_appends`] through `appender`, the notes recorded with `visibility`.
pub async fn appends_with(
    appender: Arc<casebus_bus::Appender>,
    size: Size,
    first_case: usize,
    visibility: Option<casebus_proto::event::v1::Visibility>,
) -> anyhow::Result<(Measurement, u64)> {
    let start = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..size.writers {
        let appender = appender.clone();
        let visibility = visibility.clone();
        tasks.push(tokio::spawn(async move {
            let mut hist = Histogram::<u64>::new(3)?;
            let mut count = 0u64;
            let mine: Vec<usize> = (first_case + w..first_case + size.cases)
                .step_by(size.writers)
                .collect();
            for round in 0..=size.rounds {
                for &i in &mine {
                    let case = fixture::case(i)?;
                    let (request, payload) = if round == 0 {
                        (format!("open-{i}"), fixture::opened(i))
                    } else {
                        (format!("note-{i}-{round}"), fixture::note(i, round))
                    };
                    let mut command = fixture::request(&case, &request, payload)?;
                    if round > 0 {
                        command.visibility = visibility.clone();
                    }
                    let t = Instant::now();
                    appender.append(command).await?;
                    hist.record(t.elapsed().as_micros() as u64)?;
                    count += 1;
                }
            }
            anyhow::Ok((hist, count))
        }));
    }
    let mut hist = Histogram::<u64>::new(3)?;
    let mut count = 0;
    for task in tasks {
        let (h, c) = task.await??;
        hist.add(h)?;
        count += c;
    }
    Ok((
        Measurement::rate("events/s", count, start.elapsed()).with_latency(&hist),
        count,
    ))
}

/// Publishes `count` messages of `size` bytes to a stream configured like `CASES`.
pub async fn raw_publishes(
    js: &jetstream::Context,
    count: u64,
    size: usize,
    subjects: usize,
) -> anyhow::Result<Measurement> {
    let mut config = cases_config(&StreamSettings::default());
    config.name = "RAWBENCH".into();
    config.subjects = vec!["rawbench.*".into()];
    js.create_stream(config).await?;
    let payload = bytes::Bytes::from(vec![0x5a; size]);
    let mut inflight = FuturesUnordered::new();
    let start = Instant::now();
    for i in 0..count {
        let publish = PublishMessage::build()
            .payload(payload.clone())
            .message_id(format!("raw-{i}"));
        let ack = js
            .send_publish(format!("rawbench.{}", i as usize % subjects), publish)
            .await?;
        inflight.push(ack.into_future());
        if inflight.len() >= 1024
            && let Some(ack) = inflight.next().await
        {
            ack?;
        }
    }
    while let Some(ack) = inflight.next().await {
        ack?;
    }
    Ok(Measurement::rate("events/s", count, start.elapsed()))
}

/// Messages in a stream.
pub async fn stream_count(js: &jetstream::Context, name: &str) -> anyhow::Result<u64> {
    Ok(js.get_stream(name).await?.info().await?.state.messages)
}

/// Runs figure 1 on `bus` (a fresh server); returns the row and the event size used.
pub async fn run(bus: &Bus, size: Size) -> anyhow::Result<(Row, usize)> {
    let js = Bus::context(bus.client().clone(), &BusConfig::default());
    let (casebus, count) = casebus_appends(bus, size, 0).await?;
    // The raw baseline publishes messages as large as the stored events.
    let stored = stream_count(&js, "CASES").await?;
    let bytes = js.get_stream("CASES").await?.info().await?.state.bytes;
    let event_size = usize::try_from(bytes / stored.max(1))
        .unwrap_or(400)
        .saturating_sub(40)
        .max(64);
    let baseline = raw_publishes(&js, count, event_size, size.cases).await?;
    let raw_stored = stream_count(&js, "RAWBENCH").await?;

    // Correctness: every counted event is in the stream, and sampled cases verify.
    anyhow::ensure!(
        stored == count,
        "CASES holds {stored} messages, {count} were appended"
    );
    anyhow::ensure!(
        raw_stored == count,
        "RAWBENCH holds {raw_stored}, {count} were published"
    );
    for i in [0, size.cases / 2, size.cases - 1] {
        let loaded = bus.load_case(&fixture::case(i)?).await?;
        anyhow::ensure!(
            loaded.rejected.is_empty() && loaded.events.len() == size.rounds + 1,
            "case {i} does not verify completely"
        );
    }
    let row = Row::ratio(
        &format!(
            "append path, {} cases, {} writers",
            size.cases, size.writers
        ),
        casebus,
        baseline,
        0.5,
        format!(
            "CASES holds exactly the {count} appended events; 3 sampled cases verify (chain + signatures) with {} events each",
            size.rounds + 1
        ),
    );
    Ok((row, event_size))
}

/// Ceiling for a whole figure, so a stuck run ends.
pub const FIGURE_TIMEOUT: Duration = Duration::from_secs(600);
