//! The gateway's Prometheus metrics: the shared set of every casebus service (gRPC
//! requests, events consumed, dead letters, consumer lag, overdue hand-offs) plus what
//! only a gateway has: its projection position, the size of the batches it commits,
//! the watch streams open, audit records that could not be written, and the
//! transparency log's size, last checkpoint and refused checkpoints.

use prometheus::{Histogram, HistogramOpts, IntCounter, IntGauge};

use casebus_runtime::RuntimeError;
use casebus_runtime::metrics::Metrics;

/// Batch sizes, from a lone event to the largest batch.
const BATCH_BUCKETS: &[f64] = &[1.0, 2.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0];

/// Every metric of one gateway. Cheap to clone.
#[derive(Clone, Debug)]
pub struct GatewayMetrics {
    /// The shared metrics and their registry.
    pub base: Metrics,
    /// The durable consumer's name (the `consumer` label).
    pub consumer: String,
    /// The stream sequence the projection has accounted for.
    pub position: IntGauge,
    /// Events per committed batch.
    pub batch_events: Histogram,
    /// Watch streams (timeline and feed) open now.
    pub watch_streams: IntGauge,
    /// Reads refused because their audit record could not be written.
    pub audit_failures: IntCounter,
    /// Entries of the transparency log (`--tlog-file`), 0 when none is kept.
    pub tlog_entries: IntGauge,
    /// Tree size of the last checkpoint published (or found consistent on the stream).
    pub checkpoint_size: IntGauge,
    /// Checkpoint rounds refused because the stream's last checkpoint disagrees with
    /// the log.
    pub checkpoint_refusals: IntCounter,
}

impl GatewayMetrics {
    /// The metrics of the gateway whose durable consumer is `consumer`; the shared
    /// metrics carry `service="casebus-gateway"` and `office=<consumer>`.
    ///
    /// # Errors
    /// [`RuntimeError::Metrics`] when the registry refuses a metric.
    pub fn new(consumer: &str) -> Result<Self, RuntimeError> {
        let base = Metrics::new("casebus-gateway", consumer)?;
        let r = &base.registry;
        let position = IntGauge::new(
            "casebus_gateway_projection_position",
            "CASES sequence the projection has accounted for",
        )
        .map_err(RuntimeError::Metrics)?;
        r.register(Box::new(position.clone()))
            .map_err(RuntimeError::Metrics)?;
        let batch_events = Histogram::with_opts(
            HistogramOpts::new(
                "casebus_gateway_batch_events",
                "Events per batch committed to the projection",
            )
            .buckets(BATCH_BUCKETS.to_vec()),
        )
        .map_err(RuntimeError::Metrics)?;
        r.register(Box::new(batch_events.clone()))
            .map_err(RuntimeError::Metrics)?;
        let watch_streams = IntGauge::new(
            "casebus_gateway_watch_streams",
            "WatchTimeline and WatchFeed streams open",
        )
        .map_err(RuntimeError::Metrics)?;
        r.register(Box::new(watch_streams.clone()))
            .map_err(RuntimeError::Metrics)?;
        let audit_failures = IntCounter::new(
            "casebus_gateway_audit_failures_total",
            "Reads refused because the audit record could not be written",
        )
        .map_err(RuntimeError::Metrics)?;
        r.register(Box::new(audit_failures.clone()))
            .map_err(RuntimeError::Metrics)?;
        let tlog_entries = IntGauge::new(
            "casebus_gateway_tlog_entries",
            "Entries of the transparency log the gateway keeps over CASES",
        )
        .map_err(RuntimeError::Metrics)?;
        r.register(Box::new(tlog_entries.clone()))
            .map_err(RuntimeError::Metrics)?;
        let checkpoint_size = IntGauge::new(
            "casebus_gateway_checkpoint_size",
            "Tree size of the last transparency log checkpoint published or found consistent on CHECKPOINTS",
        )
        .map_err(RuntimeError::Metrics)?;
        r.register(Box::new(checkpoint_size.clone()))
            .map_err(RuntimeError::Metrics)?;
        let checkpoint_refusals = IntCounter::new(
            "casebus_gateway_checkpoint_refusals_total",
            "Checkpoints not published because the last one on CHECKPOINTS is inconsistent with the log or not signed by its key",
        )
        .map_err(RuntimeError::Metrics)?;
        r.register(Box::new(checkpoint_refusals.clone()))
            .map_err(RuntimeError::Metrics)?;
        Ok(Self {
            base,
            checkpoint_size,
            checkpoint_refusals,
            consumer: consumer.to_owned(),
            position,
            batch_events,
            watch_streams,
            audit_failures,
            tlog_entries,
        })
    }
}
