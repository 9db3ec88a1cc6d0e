//! `Projector`: the consumer's batch handler. It writes each batch of verified events to
//! the projection in one transaction (rows and position together), moves the position
//! past dead-lettered messages, and sorts the projection's errors into transient (retry
//! in place, forever, with backoff) and permanent (dead-letter the event).
//!
//! Only errors that the same input will always produce are permanent: an event that
//! does not continue its case (a gap: the projection misses an earlier event, so it
//! needs a rebuild), a version conflict, a stored event that does not decode, a number
//! out of range. Storage failures (busy, disk full, I/O) are transient: dead-lettering an
//! event because the disk was full would leave a gap in the projection for good.

use std::sync::Arc;

use casebus_bus::{BatchHandler, HandlerError, StoredEvent};
use casebus_proto::agency_name;
use casebus_timeline::ProjectError;

use crate::metrics::GatewayMetrics;
use crate::store::Store;

/// Projects batches into the store.
#[derive(Debug, Clone)]
pub struct Projector {
    store: Arc<Store>,
    metrics: GatewayMetrics,
}

impl Projector {
    /// A projector writing to `store`.
    pub fn new(store: Arc<Store>, metrics: GatewayMetrics) -> Self {
        Self { store, metrics }
    }
}

/// Sorts a projection error: permanent only when retrying cannot help.
fn classify(error: Option<ProjectError>) -> HandlerError {
    match error {
        None => HandlerError::Transient("projection task failed".into()),
        Some(
            e @ (ProjectError::OutOfOrder { .. }
            | ProjectError::Conflict { .. }
            | ProjectError::CorruptEvent { .. }
            | ProjectError::OutOfRange { .. }),
        ) => {
            tracing::error!(error = %e, "projection refused an event; it is dead-lettered and the projection needs a rebuild (casebus rebuild)");
            HandlerError::Permanent(e.to_string())
        }
        Some(e) => {
            if e.is_transient() {
                tracing::debug!(error = %e, "projection busy");
            } else {
                tracing::error!(error = %e, "projection write failed; retrying");
            }
            HandlerError::Transient(e.to_string())
        }
    }
}

impl BatchHandler for Projector {
    async fn handle_batch(&self, events: &[StoredEvent]) -> Result<(), HandlerError> {
        let started = std::time::Instant::now();
        let outcome = self.store.apply(events).await.map_err(classify)?;
        // From the recording of the batch's oldest event (the agency service's clock)
        // to its commit here: the projection's lag, for profiling.
        let lag = events
            .iter()
            .map(|e| e.event.recorded_at)
            .min()
            .map(|oldest| (time::OffsetDateTime::now_utc() - oldest).whole_microseconds());
        tracing::debug!(
            took_us = started.elapsed().as_micros(),
            lag_us = lag,
            applied = outcome.applied,
            already_applied = outcome.already_applied,
            duplicates = outcome.duplicates,
            position = outcome.position,
            "batch projected"
        );
        self.metrics
            .position
            .set(i64::try_from(outcome.position).unwrap_or(i64::MAX));
        #[allow(clippy::cast_precision_loss)]
        self.metrics.batch_events.observe(events.len() as f64);
        for stored in events {
            self.metrics
                .base
                .events_consumed
                .with_label_values(&[
                    self.metrics.consumer.as_str(),
                    agency_name(stored.event.agency()),
                    &stored.event.type_name(),
                ])
                .inc();
        }
        Ok(())
    }

    async fn skipped(&self, sequences: &[u64]) -> Result<(), HandlerError> {
        let Some(&last) = sequences.last() else {
            return Ok(());
        };
        let position = self.store.advance_position(last).await.map_err(|e| {
            HandlerError::Transient(
                e.map_or_else(|| "projection task failed".into(), |e| e.to_string()),
            )
        })?;
        self.metrics
            .base
            .dead_letters
            .with_label_values(&[self.metrics.consumer.as_str()])
            .inc_by(sequences.len() as u64);
        self.metrics
            .position
            .set(i64::try_from(position).unwrap_or(i64::MAX));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_errors_the_same_input_repeats_are_permanent() {
        let gap = ProjectError::OutOfOrder {
            case_id: "C".into(),
            event_id: "e".into(),
            sequence: 9,
            expected: 3,
            found: 4,
        };
        assert!(matches!(classify(Some(gap)), HandlerError::Permanent(_)));
        let range = ProjectError::OutOfRange {
            what: "stream sequence",
            value: u64::MAX,
        };
        assert!(matches!(classify(Some(range)), HandlerError::Permanent(_)));
        let disk = ProjectError::Storage {
            operation: "inserting an event",
            source: rusqlite_full(),
        };
        assert!(matches!(classify(Some(disk)), HandlerError::Transient(_)));
        assert!(matches!(classify(None), HandlerError::Transient(_)));
    }

    /// A SQLite "disk full" error.
    fn rusqlite_full() -> rusqlite::Error {
        rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(13),
            Some("database or disk is full".into()),
        )
    }
}
