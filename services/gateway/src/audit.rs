//! `Auditor`: writes one record to the `AUDIT` stream for every read, before the data is
//! returned (office, actor, method, case, versions, time). The publish waits for the
//! stream's ack; if it fails, the read fails, so nothing leaves the gateway unrecorded.
//!
//! Each record carries a `Nats-Msg-Id` unique to this gateway instance, so a publish the
//! client library retries is stored once.

use std::sync::atomic::{AtomicU64, Ordering};

use futures::{StreamExt as _, TryStreamExt as _};
use time::OffsetDateTime;

use casebus_bus::ops::{AuditRecord, Ops};
use casebus_runtime::auth::Caller;

use crate::error::ReadError;

/// Records in flight at once when one feed batch is audited per case.
const CONCURRENT_RECORDS: usize = 32;

/// One read to record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Read {
    /// The gRPC method, e.g. `GetTimeline`.
    pub method: &'static str,
    /// The case concerned; empty when the read named no single case (lists).
    pub case_id: String,
    /// The versions returned, in clear or as stubs.
    pub versions: Vec<u64>,
    /// What else an auditor needs: redacted versions, filters, the outcome.
    pub detail: Option<String>,
}

/// Writes audit records for one gateway instance.
#[derive(Debug)]
pub struct Auditor {
    ops: Ops,
    /// Prefix of every message id: the consumer name and the start time, so ids of two
    /// gateways, or of two runs of one, never collide.
    id_prefix: String,
    next: AtomicU64,
}

impl Auditor {
    /// An auditor publishing through `ops`, for the gateway instance `instance`.
    pub fn new(ops: Ops, instance: &str) -> Self {
        let started = OffsetDateTime::now_utc().unix_timestamp_nanos();
        Self {
            ops,
            id_prefix: format!("{instance}-{started:x}"),
            next: AtomicU64::new(1),
        }
    }

    /// Records one read by `caller` and waits until the stream stored it.
    ///
    /// # Errors
    /// [`ReadError::AuditUnavailable`] when the record was not stored.
    pub async fn record(&self, caller: &Caller, read: Read) -> Result<(), ReadError> {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let mut detail = read.detail;
        if !caller.token_id.is_empty() {
            let token = format!("token {}", caller.token_id);
            detail = Some(match detail {
                Some(d) => format!("{d}; {token}"),
                None => token,
            });
        }
        let record = AuditRecord {
            office: caller.office.to_string(),
            actor: caller.actor.clone(),
            case_id: read.case_id,
            versions: read.versions,
            at: OffsetDateTime::now_utc(),
            method: read.method.to_owned(),
            detail,
        };
        self.ops
            .publish_audit(&record, Some(&format!("{}-{n}", self.id_prefix)))
            .await
            .map(|_| ())
            .map_err(|source| ReadError::AuditUnavailable { source })
    }

    /// Records several reads (one per case of a feed batch), with a bounded number of
    /// publishes in flight, and waits for all of them.
    ///
    /// # Errors
    /// [`ReadError::AuditUnavailable`] when any record was not stored.
    pub async fn record_all(&self, caller: &Caller, reads: Vec<Read>) -> Result<(), ReadError> {
        futures::stream::iter(reads)
            .map(|read| self.record(caller, read))
            .buffer_unordered(CONCURRENT_RECORDS)
            .try_collect::<Vec<()>>()
            .await
            .map(|_| ())
    }
}

/// Versions as a short list for an audit detail: `3,4,7`.
pub fn version_list(versions: &[u64]) -> String {
    versions
        .iter()
        .map(u64::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_lists_are_comma_separated() {
        assert_eq!(version_list(&[3, 4, 7]), "3,4,7");
        assert_eq!(version_list(&[]), "");
    }
}
