//! The log follower: brings the transparency log (`casebus_timeline::LogStore`) up to
//! date with the `CASES` stream, reading every stored message in sequence order through
//! an ephemeral scan (so messages the gateway's consumer dead-letters are logged too),
//! one SQLite transaction per batch read.
//!
//! A log file that is missing or was deleted starts at size 0, so [`catch_up`] on it
//! rebuilds the whole log from the stream; one that is behind resumes after its size.
//! [`follow`] is the gateway's task (`--tlog-file`): one scan that waits for what is
//! stored next, on a thread of its own so SQLite never blocks a task that serves
//! requests. With a [`CheckpointPublisher`] (`--log-key`), each round of the follower
//! also gives the publisher its turn, on the same thread and store, so a checkpoint is
//! always of a size the store holds whole. This module does not serve proofs.

use std::time::Duration;

use prometheus::IntGauge;
use tokio_util::sync::CancellationToken;

use casebus_bus::ops::{Ops, OpsError, ScanStart};
use casebus_bus::subjects::CASES_STREAM;
use casebus_timeline::{LogStore, LogStoreError};

use crate::checkpoint::{CheckpointPublisher, Round};

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

/// Keeps `store` up to date with `CASES` until `stop`: one scan from the log's size
/// on, waiting up to `interval` at a time for what is stored next, `batch` messages per
/// transaction, setting `entries` to the log's size. A failed read or store is logged
/// and the scan opened again from the log's size after `interval` (a stream that
/// disagrees with the log stays an error in the log until an operator looks).
///
/// Runs on a blocking-pool thread of its own, driving its NATS reads with the
/// runtime's handle, so SQLite never blocks a task that serves requests.
pub fn follow(
    ops: Ops,
    mut store: LogStore,
    mut publisher: Option<CheckpointPublisher>,
    interval: Duration,
    batch: usize,
    entries: IntGauge,
    stop: CancellationToken,
) -> tokio::task::JoinHandle<()> {
    let handle = tokio::runtime::Handle::current();
    let set = |entries: &IntGauge, size: u64| entries.set(i64::try_from(size).unwrap_or(i64::MAX));
    set(&entries, store.size());
    tokio::task::spawn_blocking(move || {
        handle.block_on(async move {
            tracing::info!(path = %store.path().display(), size = store.size(), "keeping the transparency log");
            loop {
                let start = ScanStart::Sequence(store.size() + 1);
                let failed = match ops.scan(CASES_STREAM, None, start, batch).await {
                    Err(e) => LogSyncError::Stream(e),
                    Ok(mut scanner) => {
                        let failed = loop {
                            let read = tokio::select! {
                                () = stop.cancelled() => {
                                    scanner.close().await;
                                    return;
                                }
                                read = scanner.wait(interval) => read,
                            };
                            // Checkpoints are signed near the stream's head only: while the
                            // log catches up with a backlog of more than a batch, each would
                            // be of a size the stream is long past, and each costs a read of
                            // every case head.
                            let mut near_head = true;
                            match read {
                                Ok(messages) if messages.is_empty() => {}
                                Ok(messages) => {
                                    near_head = messages
                                        .last()
                                        .is_none_or(|m| m.pending <= batch as u64);
                                    let stored = store
                                        .append(messages.iter().map(|m| (m.sequence, &m.payload[..])));
                                    match stored {
                                        Ok(size) => set(&entries, size),
                                        Err(e) => break LogSyncError::Store(e),
                                    }
                                }
                                Err(e) => break LogSyncError::Stream(e),
                            }
                            if near_head && let Some(publisher) = publisher.as_mut() {
                                publish_round(publisher, &store).await;
                            }
                        };
                        scanner.close().await;
                        failed
                    }
                };
                tracing::error!(error = %failed, source = ?std::error::Error::source(&failed), "transparency log not brought up to date; trying again");
                tokio::select! {
                    () = stop.cancelled() => return,
                    () = tokio::time::sleep(interval) => {}
                }
            }
        });
    })
}

/// One round of the checkpoint publisher, its outcome logged: a refusal at error level
/// (an operator must look), a failed read or publish at warn (tried again next round).
async fn publish_round(publisher: &mut CheckpointPublisher, store: &LogStore) {
    match publisher.round(store).await {
        Ok(Round::Idle | Round::UpToDate { .. }) => {}
        Ok(Round::Behind { checkpoint }) => tracing::debug!(
            checkpoint,
            size = store.size(),
            subject = publisher.subject(),
            "the last checkpoint is ahead of this log; checked once the log reaches it"
        ),
        Ok(Round::Published { size, sequence }) => {
            tracing::debug!(
                size,
                sequence,
                subject = publisher.subject(),
                "checkpoint published"
            );
        }
        Ok(Round::Raced) => tracing::warn!(
            subject = publisher.subject(),
            "another publisher stored a checkpoint first; it is checked next round"
        ),
        Err(e) if e.is_refusal() => tracing::error!(
            error = %e,
            source = ?std::error::Error::source(&e),
            subject = publisher.subject(),
            "refusing to publish a checkpoint: the last one on the stream disagrees with the log"
        ),
        Err(e) => tracing::warn!(
            error = %e,
            source = ?std::error::Error::source(&e),
            subject = publisher.subject(),
            "checkpoint not published; trying again"
        ),
    }
}
