//! Counters a service reports through `$SRV.STATS` and its `status` endpoint: requests
//! and errors of its gRPC API, events appended, duplicates, rejections and automatic
//! receipts. Prometheus has the same and more, by label; these are the totals an
//! administrator sees when discovering services over NATS.

use std::sync::atomic::{AtomicU64, Ordering};

/// Totals since the service started.
#[derive(Debug, Default)]
pub(crate) struct Stats {
    /// gRPC calls of the agency APIs (commands and queries); each item of an `Import`
    /// stream counts as one command.
    pub requests: AtomicU64,
    /// Of those, the ones answered with an error.
    pub errors: AtomicU64,
    /// Events appended by commands (retries not counted).
    pub appended: AtomicU64,
    /// Commands recognised as retries of applied commands.
    pub duplicates: AtomicU64,
    /// Commands refused (invalid, not permitted, rule failed ...).
    pub rejected: AtomicU64,
    /// Commands that failed because the bus was unavailable.
    pub unavailable: AtomicU64,
    /// Automatic receipts appended.
    pub receipts: AtomicU64,
}

impl Stats {
    /// Counts one answered call.
    pub fn count<T, E>(&self, outcome: &Result<T, E>) {
        self.requests.fetch_add(1, Ordering::Relaxed);
        if outcome.is_err() {
            self.errors.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Adds one to `counter`.
    pub fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// The totals as JSON.
    pub fn to_json(&self) -> serde_json::Value {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        serde_json::json!({
            "requests": get(&self.requests),
            "errors": get(&self.errors),
            "appended": get(&self.appended),
            "duplicates": get(&self.duplicates),
            "rejected": get(&self.rejected),
            "unavailable": get(&self.unavailable),
            "receipts": get(&self.receipts),
        })
    }
}
