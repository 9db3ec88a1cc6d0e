//! The collectors: long-running tasks that read NATS and the gateway and feed the
//! [`Model`]. Each owns one source and notes its problems in the model (shown on the
//! dashboard) instead of failing, and each ends when the shutdown token is cancelled.
//!
//! - [`follow_cases`]: reads `CASES` from an hour ago (or from the start, when overdue
//!   hand-offs are folded from the stream) and on, live; verifies every event against
//!   the office registry and counts it per agency and type from its verified content
//!   (the `Casebus-Office` and `Casebus-Event-Type` headers are unsigned, and anyone who
//!   may publish on `case.*` chooses them). A message that fails verification counts as
//!   `unverified` and is never folded.
//! - [`follow_dead_letters`]: reads the newest dead letters of `CASES_DLQ`, then live.
//! - [`sample_streams`]: stream and durable consumer status on every refresh.
//! - [`discover_services`]: `$SRV.INFO` and `$SRV.STATS` on every refresh.
//! - [`read_overdue`]: overdue hand-offs from the gateway, or from the fold.
//!
//! **Boundary:** reads only. Scans use ephemeral consumers without acks; nothing is
//! published.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use time::OffsetDateTime;
use tokio_util::sync::CancellationToken;

use casebus_bus::discovery::{ServiceInstance, discover};
use casebus_bus::ops::{DeadLetter, Ops, ScanStart, StoredMessage};
use casebus_bus::subjects::{CASES_STREAM, DLQ_STREAM};
use casebus_integrity::{OfficeRegistry, verify_signed};

use crate::metrics::MonitorMetrics;
use crate::model::{
    ConsumerSample, DeadLetterView, Model, STREAMS, ServiceView, StreamSample, VERIFICATION_CODES,
    agency_of_office,
};
use crate::overdue::{GatewayReader, HandoffFold};

/// The model, shared by the collectors and the web handlers.
pub type SharedModel = Arc<Mutex<Model>>;

/// Messages per fetch when catching up.
const SCAN_BATCH: usize = 500;
/// How long one wait for new messages lasts before the loop looks at the token again.
const WAIT: Duration = Duration::from_secs(1);
/// Pause before reading a source again after it failed.
const RETRY: Duration = Duration::from_secs(2);
/// How much history the throughput charts need.
const HISTORY: time::Duration = time::Duration::hours(1);

fn lock(model: &SharedModel) -> std::sync::MutexGuard<'_, Model> {
    // A panic while holding the lock leaves plain counters behind; keep serving them.
    model.lock().unwrap_or_else(|p| p.into_inner())
}

/// Sleeps for `d`, or less when shutdown comes first; false when it did.
async fn pause(d: Duration, shutdown: &CancellationToken) -> bool {
    tokio::select! {
        () = shutdown.cancelled() => false,
        () = tokio::time::sleep(d) => true,
    }
}

fn note(model: &SharedModel, metrics: &MonitorMetrics, source: &str, problem: String) {
    tracing::warn!(source, error = %problem, "monitor source unavailable");
    metrics.source_errors.with_label_values(&[source]).inc();
    lock(model).problem(source, Some(problem));
}

fn clear(model: &SharedModel, source: &str) {
    let mut model = lock(model);
    if model.has_problem(source) {
        tracing::info!(source, "monitor source available again");
        model.problem(source, None);
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// The registry the monitor verifies with; replaced whole when the file is reloaded.
pub type SharedRegistry = Arc<std::sync::RwLock<Arc<OfficeRegistry>>>;

/// Counts one `CASES` message (and folds it, when folding), attributed from its
/// verified content only.
fn record_case_message(
    model: &SharedModel,
    fold: Option<&Mutex<HandoffFold>>,
    registry: &OfficeRegistry,
    m: &StoredMessage,
) {
    match verify_signed(&m.payload, registry) {
        Ok(verified) => {
            lock(model).record_event(
                m.sequence,
                verified.office.as_str(),
                &verified.type_name(),
                m.stored_at,
            );
            if let Some(fold) = fold {
                fold.lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .apply(&verified.event);
            }
        }
        Err(error) => {
            tracing::debug!(sequence = m.sequence, error = %error, "CASES message failed verification");
            lock(model).record_unverified(m.sequence, error.code(), m.stored_at);
        }
    }
}

/// Follows `CASES` until shutdown (see the module documentation).
pub async fn follow_cases(
    ops: Ops,
    model: SharedModel,
    registry: SharedRegistry,
    fold: Option<Arc<Mutex<HandoffFold>>>,
    metrics: MonitorMetrics,
    shutdown: CancellationToken,
) {
    let mut start = if fold.is_some() {
        ScanStart::Sequence(1)
    } else {
        ScanStart::Time(OffsetDateTime::now_utc() - HISTORY)
    };
    loop {
        let mut scanner = match ops.scan(CASES_STREAM, None, start, SCAN_BATCH).await {
            Ok(scanner) => scanner,
            Err(e) => {
                note(&model, &metrics, "CASES", error_chain(&e));
                if pause(RETRY, &shutdown).await {
                    continue;
                }
                return;
            }
        };
        clear(&model, "CASES");
        tracing::info!(stream = CASES_STREAM, "following the case stream");
        let failed = loop {
            let batch = tokio::select! {
                () = shutdown.cancelled() => {
                    scanner.close().await;
                    return;
                }
                batch = scanner.wait(WAIT) => batch,
            };
            match batch {
                Ok(messages) => {
                    let registry = registry.read().unwrap_or_else(|p| p.into_inner()).clone();
                    for m in &messages {
                        record_case_message(&model, fold.as_deref(), &registry, m);
                    }
                }
                Err(e) => break e,
            }
        };
        note(&model, &metrics, "CASES", error_chain(&failed));
        scanner.close().await;
        // Go on after the last message counted, so nothing is counted twice.
        start = ScanStart::Sequence(lock(&model).last_sequence() + 1);
        if !pause(RETRY, &shutdown).await {
            return;
        }
    }
}

fn dead_letter_view(letter: DeadLetter) -> DeadLetterView {
    DeadLetterView {
        sequence: letter.message.sequence,
        stored_at: letter
            .message
            .stored_at
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default(),
        verification: VERIFICATION_CODES.contains(&letter.code.as_str()),
        consumer: letter.consumer,
        code: letter.code,
        reason: letter.reason,
        original_stream: letter.original_stream,
        original_sequence: letter.original_sequence,
        original_subject: letter.original_subject,
    }
}

/// Follows `CASES_DLQ` from its newest `backlog` messages on, until shutdown.
pub async fn follow_dead_letters(
    ops: Ops,
    model: SharedModel,
    backlog: u64,
    metrics: MonitorMetrics,
    shutdown: CancellationToken,
) {
    loop {
        let seen = lock(&model).dlq_last_sequence();
        let start = if seen > 0 {
            seen + 1
        } else {
            match ops.stream_status(DLQ_STREAM).await {
                Ok(Some(status)) => status
                    .last_sequence
                    .saturating_sub(backlog)
                    .max(status.first_sequence)
                    .max(1),
                Ok(None) => {
                    note(
                        &model,
                        &metrics,
                        "CASES_DLQ",
                        "stream CASES_DLQ not found; provision the streams".into(),
                    );
                    if pause(RETRY, &shutdown).await {
                        continue;
                    }
                    return;
                }
                Err(e) => {
                    note(&model, &metrics, "CASES_DLQ", error_chain(&e));
                    if pause(RETRY, &shutdown).await {
                        continue;
                    }
                    return;
                }
            }
        };
        let mut scanner = match ops
            .scan(DLQ_STREAM, None, ScanStart::Sequence(start), SCAN_BATCH)
            .await
        {
            Ok(scanner) => scanner,
            Err(e) => {
                note(&model, &metrics, "CASES_DLQ", error_chain(&e));
                if pause(RETRY, &shutdown).await {
                    continue;
                }
                return;
            }
        };
        clear(&model, "CASES_DLQ");
        let failed = loop {
            let batch = tokio::select! {
                () = shutdown.cancelled() => {
                    scanner.close().await;
                    return;
                }
                batch = scanner.wait(WAIT) => batch,
            };
            match batch {
                Ok(messages) => {
                    let now = OffsetDateTime::now_utc();
                    let mut model = lock(&model);
                    for m in messages {
                        model.record_dead_letter(dead_letter_view(DeadLetter::from(m)), now);
                    }
                }
                Err(e) => break e,
            }
        };
        note(&model, &metrics, "CASES_DLQ", error_chain(&failed));
        scanner.close().await;
        if !pause(RETRY, &shutdown).await {
            return;
        }
    }
}

/// Samples streams and durable consumers every `every`, until shutdown. Sets `ready`
/// after the first complete sample.
pub async fn sample_streams(
    ops: Ops,
    model: SharedModel,
    every: Duration,
    ready: Arc<std::sync::atomic::AtomicBool>,
    metrics: MonitorMetrics,
    shutdown: CancellationToken,
) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let now = OffsetDateTime::now_utc();
        let mut ok = true;
        for stream in STREAMS {
            match ops.stream_status(stream).await {
                Ok(status) => {
                    let sample = status.map(|s| StreamSample {
                        name: s.name,
                        messages: s.messages,
                        bytes: s.bytes,
                        first_sequence: s.first_sequence,
                        last_sequence: s.last_sequence,
                        consumers: s.consumer_count,
                        replicas: s.replicas,
                    });
                    lock(&model).record_stream(stream, sample, now);
                }
                Err(e) => {
                    ok = false;
                    note(&model, &metrics, "streams", error_chain(&e));
                }
            }
        }
        let mut consumers = Vec::new();
        for stream in STREAMS {
            match ops.consumers(stream).await {
                Ok(list) => consumers.extend(list.into_iter().filter(|c| c.durable).map(|c| {
                    ConsumerSample {
                        stream: c.stream,
                        name: c.name,
                        pending: c.pending,
                        ack_pending: c.ack_pending,
                        redelivered: c.redelivered,
                        waiting: c.waiting,
                        delivered_sequence: c.delivered_sequence,
                        ack_floor_sequence: c.ack_floor_sequence,
                    }
                })),
                // A missing stream is shown by the stream sample already.
                Err(casebus_bus::ops::OpsError::StreamMissing { .. }) => {}
                Err(e) => {
                    ok = false;
                    note(&model, &metrics, "consumers", error_chain(&e));
                }
            }
        }
        let overview = {
            let mut model = lock(&model);
            model.record_consumers(consumers);
            model.overview(now)
        };
        metrics.observe(&overview);
        if ok {
            clear(&model, "streams");
            clear(&model, "consumers");
            ready.store(true, std::sync::atomic::Ordering::Relaxed);
            metrics.up.set(1);
        }
    }
}

/// Counters worth showing from a casebus service's `$SRV` statistics.
const DETAIL_KEYS: [&str; 10] = [
    "appended",
    "duplicates",
    "rejected",
    "unavailable",
    "receipts",
    "handled",
    "dead_lettered",
    "retries",
    "position",
    "watch_streams",
];

/// What the dashboard shows of one discovered instance.
pub fn service_view(instance: &ServiceInstance) -> ServiceView {
    let data = instance.data().cloned().unwrap_or(serde_json::Value::Null);
    let office = instance
        .metadata
        .get("office")
        .cloned()
        .or_else(|| {
            data.get("office")
                .and_then(|v| v.as_str())
                .map(str::to_owned)
        })
        .unwrap_or_default();
    let agency =
        instance.metadata.get("agency").cloned().unwrap_or_else(|| {
            match agency_of_office(&office) {
                "unknown" => String::new(),
                a => a.to_owned(),
            }
        });
    let consumer = instance
        .metadata
        .get("consumer")
        .cloned()
        .or_else(|| match data.get("consumer") {
            Some(serde_json::Value::String(s)) => Some(s.clone()),
            Some(v) => v.get("name").and_then(|n| n.as_str()).map(str::to_owned),
            None => None,
        })
        .unwrap_or_default();
    let endpoint_requests: u64 = instance.endpoints.iter().map(|e| e.requests).sum();
    let endpoint_errors: u64 = instance.endpoints.iter().map(|e| e.errors).sum();
    let number = |key: &str| data.get(key).and_then(serde_json::Value::as_u64);
    let mut details = std::collections::BTreeMap::new();
    let nested = data.get("consumer").filter(|v| v.is_object());
    for key in DETAIL_KEYS {
        let value = data
            .get(key)
            .or_else(|| nested.and_then(|c| c.get(key)))
            .filter(|v| v.is_number());
        if let Some(v) = value {
            details.insert(key.to_owned(), v.clone());
        }
    }
    if let Some(inbox) = data.get("inbox").filter(|v| v.is_object()) {
        for (key, name) in [("pending", "inbox_pending"), ("overdue", "inbox_overdue")] {
            if let Some(v) = inbox.get(key).filter(|v| v.is_number()) {
                details.insert(name.to_owned(), v.clone());
            }
        }
    }
    let started = instance
        .started
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .or_else(|| instance.metadata.get("started_at").cloned());
    ServiceView {
        name: instance.name.clone(),
        id: instance.id.clone(),
        version: instance.version.clone(),
        office,
        agency,
        started,
        uptime_seconds: None,
        requests: number("requests").unwrap_or(endpoint_requests),
        errors: number("errors").unwrap_or(endpoint_errors),
        consumer,
        details,
        rules_digest: instance
            .metadata
            .get("rules_digest")
            .cloned()
            .unwrap_or_default(),
        metadata: instance.metadata.clone().into_iter().collect(),
        last_error: instance
            .endpoints
            .iter()
            .map(|e| e.last_error.clone())
            .find(|e| !e.is_empty())
            .unwrap_or_default(),
    }
}

/// Asks `$SRV` for every service every `every`, until shutdown.
pub async fn discover_services(
    client: casebus_bus::Client,
    model: SharedModel,
    every: Duration,
    window: Duration,
    metrics: MonitorMetrics,
    shutdown: CancellationToken,
) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let found = tokio::select! {
            () = shutdown.cancelled() => return,
            found = discover(&client, window) => found,
        };
        match found {
            Ok(instances) => {
                let views = instances.iter().map(service_view).collect();
                lock(&model).record_services(views, OffsetDateTime::now_utc());
                clear(&model, "services");
            }
            Err(e) => note(&model, &metrics, "services", error_chain(&e)),
        }
    }
}

/// Where overdue hand-offs come from.
pub enum OverdueSource {
    /// The gateway, read with an admin token.
    Gateway(Box<GatewayReader>),
    /// The fold of the stream's hand-off events (fed by [`follow_cases`]).
    Fold(Arc<Mutex<HandoffFold>>),
}

/// Reads the overdue hand-offs every `every`, until shutdown.
pub async fn read_overdue(
    mut source: OverdueSource,
    model: SharedModel,
    every: Duration,
    metrics: MonitorMetrics,
    shutdown: CancellationToken,
) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let now = OffsetDateTime::now_utc();
        match &mut source {
            OverdueSource::Gateway(reader) => {
                let read = tokio::select! {
                    () = shutdown.cancelled() => return,
                    read = reader.overdue(now) => read,
                };
                match read {
                    Ok(list) => {
                        lock(&model).record_overdue("gateway", list, now);
                        clear(&model, "gateway");
                    }
                    Err(e) => note(&model, &metrics, "gateway", error_chain(&e)),
                }
            }
            OverdueSource::Fold(fold) => {
                let list = fold.lock().unwrap_or_else(|p| p.into_inner()).overdue(now);
                lock(&model).record_overdue("stream", list, now);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use casebus_bus::discovery::EndpointStats;

    use super::*;

    #[test]
    fn an_agency_service_shows_its_office_counters_and_consumer() {
        let instance = ServiceInstance {
            name: "casebus-customs".into(),
            id: "X".into(),
            version: "0.1.0".into(),
            metadata: BTreeMap::from([
                ("office".to_owned(), "customs:ningbo".to_owned()),
                ("agency".to_owned(), "customs".to_owned()),
                ("consumer".to_owned(), "svc-customs-ningbo".to_owned()),
                ("rules_digest".to_owned(), "sha256:0123".to_owned()),
            ]),
            started: Some(time::macros::datetime!(2026-03-01 8:00 UTC)),
            endpoints: vec![EndpointStats {
                requests: 2,
                data: Some(serde_json::json!({
                    "requests": 40, "errors": 3, "appended": 30,
                    "inbox": {"pending": 2, "overdue": 1},
                    "consumer": {"name": "svc-customs-ningbo", "handled": 90, "dead_lettered": 1}
                })),
                ..Default::default()
            }],
            ..Default::default()
        };
        let view = service_view(&instance);
        assert_eq!(view.office, "customs:ningbo");
        assert_eq!(view.agency, "customs");
        assert_eq!(view.requests, 40);
        assert_eq!(view.errors, 3);
        assert_eq!(view.consumer, "svc-customs-ningbo");
        assert_eq!(view.details["appended"], 30);
        assert_eq!(view.details["handled"], 90);
        assert_eq!(view.details["inbox_overdue"], 1);
        assert_eq!(view.started.as_deref(), Some("2026-03-01T08:00:00Z"));
        assert_eq!(view.rules_digest, "sha256:0123");
    }

    #[test]
    fn a_service_without_counters_falls_back_to_its_endpoint_stats() {
        let instance = ServiceInstance {
            name: "casebus-gateway".into(),
            endpoints: vec![EndpointStats {
                requests: 5,
                errors: 1,
                last_error: "500:boom".into(),
                data: Some(serde_json::json!({"consumer": "gw-main", "position": 12})),
                ..Default::default()
            }],
            ..Default::default()
        };
        let view = service_view(&instance);
        assert_eq!(view.requests, 5);
        assert_eq!(view.errors, 1);
        assert_eq!(view.consumer, "gw-main");
        assert_eq!(view.details["position"], 12);
        assert_eq!(view.last_error, "500:boom");
        assert_eq!(view.agency, "");
    }
}
