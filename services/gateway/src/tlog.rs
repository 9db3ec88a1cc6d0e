//! The log follower: brings the transparency log (`casebus_timeline::LogStore`) up to
//! date with the `CASES` stream, reading every stored message in sequence order through
//! an ephemeral scan (so messages the gateway's consumer dead-letters are logged too),
//! one SQLite transaction per batch read.
//!
//! A log file that is missing or was deleted starts at size 0, so [`catch_up`] on it
//! rebuilds the whole log from the stream; one that is behind resumes after its size.
//! This module does not sign checkpoints or serve proofs.

use casebus_bus::ops::{Ops, OpsError, ScanStart};
use casebus_bus::subjects::CASES_STREAM;
use casebus_timeline::{LogStore, LogStoreError};

/// Why the log could not be brought up to date.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LogSyncError {
    /// Reading the stream failed.
    #[error("reading stream {CASES_STREAM} for the transparency log")]
    Stream(#[source] OpsError),
    /// Storing failed, or the stream and the log disagree (a gap, a changed message).
    #[error("storing the transparency log")]
    Store(#[source] LogStoreError),
}

/// Logs every message of `CASES` after the log's size, `batch` messages per
/// transaction, and returns the new size: the stream's last sequence when it returns.
///
/// SQLite runs on the calling thread: call it from `spawn_blocking`'s side of a runtime
/// or from a tool, not from a task that serves requests.
///
/// # Errors
/// [`LogSyncError::Stream`]; [`LogSyncError::Store`], among them a gap in the stream
/// (`LogStoreError::OutOfOrder`), since `CASES` denies deletes and a gap means the
/// stream is not the one the log was kept over.
pub async fn catch_up(ops: &Ops, store: &mut LogStore, batch: usize) -> Result<u64, LogSyncError> {
    let mut scanner = ops
        .scan(
            CASES_STREAM,
            None,
            ScanStart::Sequence(store.size() + 1),
            batch,
        )
        .await
        .map_err(LogSyncError::Stream)?;
    let result = async {
        loop {
            let messages = scanner.fetch().await.map_err(LogSyncError::Stream)?;
            if messages.is_empty() {
                return Ok(store.size());
            }
            store
                .append(messages.iter().map(|m| (m.sequence, &m.payload[..])))
                .map_err(LogSyncError::Store)?;
        }
    }
    .await;
    scanner.close().await;
    result
}
