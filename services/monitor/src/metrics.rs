//! The monitor's Prometheus metrics, with the conventions of every casebus service
//! (constant `service` and `office` labels, `casebus_up`), and its own gauges under
//! `casebus_monitor_*`: it re-exports what it sees of the whole system under its own
//! names, never under the services' (a `casebus_consumer_pending` from the monitor would
//! double every consumer in the alert rules). The agency services' metrics (appends,
//! gRPC latency ...) are not registered here: the monitor has none of that to report.

use prometheus::{Encoder as _, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry, TextEncoder};

use casebus_runtime::RuntimeError;

use crate::model::Overview;

/// Every metric of the monitor.
#[derive(Clone, Debug)]
pub struct MonitorMetrics {
    registry: Registry,
    /// 1 once the first sample of the streams succeeded.
    pub up: IntGauge,
    stream_messages: IntGaugeVec,
    stream_bytes: IntGaugeVec,
    consumer_lag: IntGaugeVec,
    events_last_hour: IntGaugeVec,
    dead_letters: IntGauge,
    verification_failures: IntGauge,
    overdue: IntGaugeVec,
    services: IntGaugeVec,
    /// Failures reading a source, by source.
    pub source_errors: IntCounterVec,
    /// Sign-in attempts, by outcome.
    pub logins: IntCounterVec,
}

fn gauge_vec(
    m: &Registry,
    name: &str,
    help: &str,
    labels: &[&str],
) -> Result<IntGaugeVec, RuntimeError> {
    let g = IntGaugeVec::new(Opts::new(name, help), labels).map_err(RuntimeError::Metrics)?;
    m.register(Box::new(g.clone()))
        .map_err(RuntimeError::Metrics)?;
    Ok(g)
}

fn counter_vec(
    m: &Registry,
    name: &str,
    help: &str,
    labels: &[&str],
) -> Result<IntCounterVec, RuntimeError> {
    let c = IntCounterVec::new(Opts::new(name, help), labels).map_err(RuntimeError::Metrics)?;
    m.register(Box::new(c.clone()))
        .map_err(RuntimeError::Metrics)?;
    Ok(c)
}

fn gauge(m: &Registry, name: &str, help: &str) -> Result<IntGauge, RuntimeError> {
    let g = IntGauge::new(name, help).map_err(RuntimeError::Metrics)?;
    m.register(Box::new(g.clone()))
        .map_err(RuntimeError::Metrics)?;
    Ok(g)
}

impl MonitorMetrics {
    /// The registry with the shared and the monitor's own metrics.
    ///
    /// # Errors
    /// [`RuntimeError::Metrics`] when a metric cannot be registered.
    pub fn new() -> Result<Self, RuntimeError> {
        let constant = std::collections::HashMap::from([
            ("service".to_owned(), "casebus-monitor".to_owned()),
            ("office".to_owned(), "monitor".to_owned()),
        ]);
        let base = Registry::new_custom(None, Some(constant)).map_err(RuntimeError::Metrics)?;
        Ok(Self {
            up: gauge(&base, "casebus_up", "1 while the service is ready")?,
            stream_messages: gauge_vec(
                &base,
                "casebus_monitor_stream_messages",
                "Messages stored per stream, as the monitor last sampled",
                &["stream"],
            )?,
            stream_bytes: gauge_vec(
                &base,
                "casebus_monitor_stream_bytes",
                "Bytes stored per stream, as the monitor last sampled",
                &["stream"],
            )?,
            consumer_lag: gauge_vec(
                &base,
                "casebus_monitor_consumer_lag",
                "Pending plus unacknowledged messages per durable consumer",
                &["stream", "consumer"],
            )?,
            events_last_hour: gauge_vec(
                &base,
                "casebus_monitor_events_last_hour",
                "Events recorded in the last hour, by agency",
                &["agency"],
            )?,
            dead_letters: gauge(
                &base,
                "casebus_monitor_dead_letters",
                "Messages stored in CASES_DLQ",
            )?,
            verification_failures: gauge(
                &base,
                "casebus_monitor_verification_failures",
                "Distinct messages that failed verification, as read from CASES_DLQ",
            )?,
            overdue: gauge_vec(
                &base,
                "casebus_monitor_overdue_handoffs",
                "Open hand-offs past their due time, by receiving agency",
                &["agency"],
            )?,
            services: gauge_vec(
                &base,
                "casebus_monitor_service_instances",
                "Service instances answering $SRV discovery, by service name",
                &["name"],
            )?,
            source_errors: counter_vec(
                &base,
                "casebus_monitor_source_errors_total",
                "Failures reading a source (nats, gateway, discovery ...)",
                &["source"],
            )?,
            logins: counter_vec(
                &base,
                "casebus_monitor_logins_total",
                "Sign-in attempts on the dashboard, by outcome",
                &["outcome"],
            )?,
            registry: base,
        })
    }

    /// The text exposition of every metric.
    pub fn render(&self) -> String {
        let mut out = Vec::new();
        // Encoding well-formed families into a Vec cannot fail.
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut out);
        String::from_utf8(out).unwrap_or_default()
    }

    /// Sets the gauges from an overview.
    pub fn observe(&self, overview: &Overview) {
        for s in &overview.streams {
            let messages = i64::try_from(s.messages).unwrap_or(i64::MAX);
            let bytes = i64::try_from(s.bytes).unwrap_or(i64::MAX);
            self.stream_messages
                .with_label_values(&[&s.name])
                .set(messages);
            self.stream_bytes.with_label_values(&[&s.name]).set(bytes);
        }
        self.consumer_lag.reset();
        for c in &overview.consumers {
            self.consumer_lag
                .with_label_values(&[&c.stream, &c.name])
                .set(i64::try_from(c.lag).unwrap_or(i64::MAX));
        }
        for a in &overview.throughput.agencies {
            self.events_last_hour
                .with_label_values(&[&a.agency])
                .set(i64::try_from(a.total_last_hour).unwrap_or(i64::MAX));
        }
        self.dead_letters
            .set(i64::try_from(overview.dead_letters.stored).unwrap_or(i64::MAX));
        self.verification_failures
            .set(i64::try_from(overview.verification_failures.messages).unwrap_or(i64::MAX));
        self.overdue.reset();
        for a in &overview.overdue.by_agency {
            self.overdue
                .with_label_values(&[&a.agency])
                .set(i64::try_from(a.count).unwrap_or(i64::MAX));
        }
        self.services.reset();
        for s in &overview.services.instances {
            self.services.with_label_values(&[&s.name]).inc();
        }
    }
}
