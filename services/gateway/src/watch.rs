//! The watch streams: WatchTimeline (one case from a version) and WatchFeed (every event
//! the caller may see, from a stream position). Both are driven by the projection alone:
//! each round queries the events after the last one delivered, sends them, and when it
//! has caught up waits for the store's next announcement (of a batch with an event of
//! the case, for a timeline; of any batch, for the feed). Catch-up and live are the same
//! query, so there is no gap and no duplicate at the switch.
//!
//! Memory stays bounded however slow a client is: each stream has one producer task with
//! a small channel, the task waits while the channel is full, and what the client has
//! not yet taken stays in the projection, not in memory (a stream holds one page of
//! events and its channel's items at most). The number of streams is
//! capped; every stream ends when its client goes away or the gateway shuts down, and
//! with UNAUTHENTICATED when the credential that opened it expires.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tonic::Status;

use casebus_domain::{CaseState, Sight};
use casebus_proto::CaseId;
use casebus_proto::gateway::v1 as pb;
use casebus_runtime::auth::Caller;

use crate::audit::Read;
use crate::convert::timeline_event;
use crate::error::ReadError;
use crate::metrics::GatewayMetrics;
use crate::service::{Shared, redaction_detail};
use crate::visibility::Viewer;

/// Events a watch reads from the projection per round: with the channel buffer, what
/// one stream holds in memory at most while its client is slow.
const WATCH_PAGE: usize = 200;

/// Least time between two feed checkpoints sent while live.
const CHECKPOINT_INTERVAL: Duration = Duration::from_secs(1);

/// The watch streams' shared limits and lifecycle.
#[derive(Debug)]
pub(crate) struct Watches {
    /// One permit per open stream.
    pub slots: Arc<Semaphore>,
    /// The number of permits.
    pub limit: usize,
    /// Responses buffered per stream.
    pub buffer: usize,
    /// Where the producer tasks run.
    pub tracker: TaskTracker,
    /// Ends every stream.
    pub shutdown: CancellationToken,
}

impl Watches {
    fn slot(&self) -> Result<OwnedSemaphorePermit, ReadError> {
        if self.shutdown.is_cancelled() {
            return Err(ReadError::ShuttingDown);
        }
        self.slots
            .clone()
            .try_acquire_owned()
            .map_err(|_| ReadError::TooManyWatches { limit: self.limit })
    }
}

/// The response stream of a watch: what its producer task sends.
#[derive(Debug)]
pub struct ResponseStream<T> {
    rx: mpsc::Receiver<Result<T, Status>>,
}

impl<T> futures::Stream for ResponseStream<T> {
    type Item = Result<T, Status>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.rx.poll_recv(cx)
    }
}

/// Keeps the open-streams gauge and the stream's slot for as long as the producer runs.
struct Open {
    gauge: prometheus::IntGauge,
    _slot: OwnedSemaphorePermit,
}

impl Open {
    fn new(metrics: &GatewayMetrics, slot: OwnedSemaphorePermit) -> Self {
        metrics.watch_streams.inc();
        Self {
            gauge: metrics.watch_streams.clone(),
            _slot: slot,
        }
    }
}

impl Drop for Open {
    fn drop(&mut self) {
        self.gauge.dec();
    }
}

/// How a producer's wait for news ended.
enum Woken {
    /// The projection moved on.
    Moved,
    /// The client went away, or the store is gone.
    Gone,
    /// The gateway is shutting down.
    Shutdown,
}

async fn wait_for_news<T>(
    position: &mut tokio::sync::watch::Receiver<u64>,
    tx: &mpsc::Sender<Result<T, Status>>,
    shutdown: &CancellationToken,
) -> Woken {
    tokio::select! {
        () = shutdown.cancelled() => Woken::Shutdown,
        () = tx.closed() => Woken::Gone,
        changed = position.changed() => match changed {
            Ok(()) => Woken::Moved,
            Err(_) => Woken::Gone,
        },
    }
}

/// The status a stream ends with when the gateway shuts down.
fn shutting_down() -> Status {
    Status::unavailable(
        "the gateway is shutting down; resume the watch from the last item received",
    )
}

/// Starts a WatchTimeline stream of `case` from `from_version` (inclusive).
///
/// # Errors
/// [`ReadError::NotFound`] when the case does not exist for the viewer (the attempt is
/// audited); [`ReadError::TooManyWatches`], [`ReadError::ShuttingDown`]; query and
/// audit failures.
#[tracing::instrument(skip_all, fields(case_id = %case))]
pub(crate) async fn timeline(
    shared: Arc<Shared>,
    caller: Caller,
    viewer: Viewer,
    case: CaseId,
    from_version: u64,
) -> Result<ResponseStream<pb::WatchTimelineResponse>, ReadError> {
    let slot = shared.watches.slot()?;
    let (query_case, query_viewer) = (case.clone(), viewer.clone());
    let visible = shared
        .store
        .read(move |p| {
            Ok(p.case_state(&query_case)?
                .is_some_and(|s| query_viewer.may_see_case(&s)))
        })
        .await?;
    if !visible {
        shared
            .audit(
                &caller,
                Read {
                    method: "WatchTimeline",
                    case_id: case.to_string(),
                    versions: Vec::new(),
                    detail: Some("not found".into()),
                },
            )
            .await?;
        return Err(ReadError::case_not_found(case.as_str()));
    }
    let (tx, rx) = mpsc::channel(shared.watches.buffer);
    let open = Open::new(&shared.metrics, slot);
    let task_shared = shared.clone();
    shared.watches.tracker.spawn(async move {
        let _open = open;
        let run = run_timeline(
            &task_shared,
            &caller,
            &viewer,
            &case,
            from_version.max(1),
            &tx,
        );
        // The stream lives no longer than the credential that opened it (its expiry or
        // its revocation): what the caller may read after that needs a new call with a
        // valid credential.
        let end = task_shared.auth.stream_end(&caller);
        tokio::select! {
            result = run => if let Err(e) = result {
                let _ = tx.send(Err(Status::from(e))).await;
            },
            status = end => {
                let _ = tx.send(Err(status)).await;
            }
        }
    });
    Ok(ResponseStream { rx })
}

/// One round's answer for a timeline watch.
struct TimelinePage {
    events: Vec<pb::TimelineEvent>,
    full: bool,
    position: u64,
}

async fn run_timeline(
    shared: &Arc<Shared>,
    caller: &Caller,
    viewer: &Viewer,
    case: &CaseId,
    mut next: u64,
    tx: &mpsc::Sender<Result<pb::WatchTimelineResponse, Status>>,
) -> Result<(), ReadError> {
    // Only batches with an event of this case wake the stream.
    let mut position = shared.store.subscribe_case(case);
    let mut caught_up = false;
    loop {
        // Mark the case's announcements seen before querying: a batch of the case
        // committed after this point wakes the wait below, so nothing committed is ever
        // missed. The overall position, taken before the query too, is what the rows
        // read are complete up to.
        position.borrow_and_update();
        let seen = shared.store.position();
        let round = Instant::now();
        let (query_case, query_viewer) = (case.clone(), viewer.clone());
        let openers = shared.openers.clone();
        let page = shared
            .store
            .read(move |p| {
                let rows = p.case_events_after_version(&query_case, next - 1, WATCH_PAGE)?;
                let Some(state) = p
                    .case_state(&query_case)?
                    .filter(|s| query_viewer.may_see_case(s))
                else {
                    return Err(ReadError::case_not_found(query_case.as_str()));
                };
                let events = rows
                    .iter()
                    .map(|row| {
                        timeline_event(
                            row,
                            query_viewer.sight(&state, row.version),
                            &query_viewer,
                            &openers,
                            state.widened_keys(row.version),
                        )
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                Ok(TimelinePage {
                    full: rows.len() == WATCH_PAGE,
                    events,
                    position: seen,
                })
            })
            .await?;
        if let Some(last) = page.events.last() {
            next = last.case_version + 1;
            let queried = round.elapsed();
            shared
                .audit(
                    caller,
                    Read {
                        method: "WatchTimeline",
                        case_id: case.to_string(),
                        versions: page.events.iter().map(|e| e.case_version).collect(),
                        detail: redaction_detail(&page.events),
                    },
                )
                .await?;
            tracing::debug!(
                events = page.events.len(),
                query_us = queried.as_micros(),
                audit_us = (round.elapsed() - queried).as_micros(),
                "watch round"
            );
            for event in page.events {
                let item = pb::watch_timeline_response::Item::Event(event);
                if tx
                    .send(Ok(pb::WatchTimelineResponse { item: Some(item) }))
                    .await
                    .is_err()
                {
                    return Ok(());
                }
            }
        }
        if page.full {
            continue;
        }
        if !caught_up {
            caught_up = true;
            let item = pb::watch_timeline_response::Item::CaughtUp(pb::Checkpoint {
                position: page.position,
                caught_up: true,
            });
            if tx
                .send(Ok(pb::WatchTimelineResponse { item: Some(item) }))
                .await
                .is_err()
            {
                return Ok(());
            }
        }
        match wait_for_news(&mut position, tx, &shared.watches.shutdown).await {
            Woken::Moved => {}
            Woken::Gone => return Ok(()),
            Woken::Shutdown => {
                let _ = tx.send(Err(shutting_down())).await;
                return Ok(());
            }
        }
    }
}

/// Starts a WatchFeed stream from `from_position` (inclusive).
///
/// # Errors
/// [`ReadError::TooManyWatches`], [`ReadError::ShuttingDown`].
pub(crate) fn feed(
    shared: Arc<Shared>,
    caller: Caller,
    viewer: Viewer,
    from_position: u64,
) -> Result<ResponseStream<pb::WatchFeedResponse>, ReadError> {
    let slot = shared.watches.slot()?;
    let (tx, rx) = mpsc::channel(shared.watches.buffer);
    let open = Open::new(&shared.metrics, slot);
    let task_shared = shared.clone();
    shared.watches.tracker.spawn(async move {
        let _open = open;
        let after = from_position.saturating_sub(1);
        // As for a timeline, the feed ends when its credential does.
        let end = task_shared.auth.stream_end(&caller);
        tokio::select! {
            result = run_feed(&task_shared, &caller, &viewer, after, &tx) => if let Err(e) = result {
                let _ = tx.send(Err(Status::from(e))).await;
            },
            status = end => {
                let _ = tx.send(Err(status)).await;
            }
        }
    });
    Ok(ResponseStream { rx })
}

/// One round's answer for a feed.
struct FeedPage {
    events: Vec<pb::TimelineEvent>,
    /// Every event up to here was considered (delivered or not for the viewer).
    scanned_to: u64,
    full: bool,
}

async fn run_feed(
    shared: &Arc<Shared>,
    caller: &Caller,
    viewer: &Viewer,
    mut cursor: u64,
    tx: &mpsc::Sender<Result<pb::WatchFeedResponse, Status>>,
) -> Result<(), ReadError> {
    let mut position = shared.store.subscribe();
    let mut reported = cursor;
    let mut caught_up = false;
    let mut last_checkpoint: Option<Instant> = None;
    loop {
        // The position is taken before the rows are read: every event at or below it
        // is committed, so when the page is not full the scan has seen them all,
        // including the gaps that dead-lettered messages left.
        let seen = *position.borrow_and_update();
        let query_viewer = viewer.clone();
        let openers = shared.openers.clone();
        let after = cursor;
        let page = shared
            .store
            .read(move |p| {
                let rows = p.events_after(after, WATCH_PAGE)?;
                let full = rows.len() == WATCH_PAGE;
                let mut states: HashMap<CaseId, Option<CaseState>> = HashMap::new();
                let mut events = Vec::new();
                for row in &rows {
                    if !states.contains_key(&row.case_id) {
                        let state = p.case_state(&row.case_id)?;
                        states.insert(row.case_id.clone(), state);
                    }
                    let Some(Some(state)) = states.get(&row.case_id) else {
                        continue;
                    };
                    match query_viewer.sight(state, row.version) {
                        Sight::NotInvolved => {}
                        sight => events.push(timeline_event(
                            row,
                            sight,
                            &query_viewer,
                            &openers,
                            state.widened_keys(row.version),
                        )?),
                    }
                }
                let last_row = rows.last().map_or(after, |r| r.sequence);
                Ok(FeedPage {
                    events,
                    scanned_to: if full { last_row } else { last_row.max(seen) },
                    full,
                })
            })
            .await?;
        if let Some(last) = page.events.last() {
            reported = last.position;
            shared.audit_all(caller, feed_reads(&page.events)).await?;
            for event in page.events {
                let item = pb::watch_feed_response::Item::Event(event);
                if tx
                    .send(Ok(pb::WatchFeedResponse { item: Some(item) }))
                    .await
                    .is_err()
                {
                    return Ok(());
                }
            }
        }
        cursor = cursor.max(page.scanned_to);
        if page.full {
            continue;
        }
        // Tell the client how far the scan got when that is beyond what it received:
        // once at the switch to live, then at most every CHECKPOINT_INTERVAL.
        let due = last_checkpoint.is_none_or(|at| at.elapsed() >= CHECKPOINT_INTERVAL);
        if !caught_up || (cursor > reported && due) {
            caught_up = true;
            reported = cursor;
            last_checkpoint = Some(Instant::now());
            let item = pb::watch_feed_response::Item::Checkpoint(pb::Checkpoint {
                position: cursor,
                caught_up: true,
            });
            if tx
                .send(Ok(pb::WatchFeedResponse { item: Some(item) }))
                .await
                .is_err()
            {
                return Ok(());
            }
        }
        match wait_for_news(&mut position, tx, &shared.watches.shutdown).await {
            Woken::Moved => {}
            Woken::Gone => return Ok(()),
            Woken::Shutdown => {
                let _ = tx.send(Err(shutting_down())).await;
                return Ok(());
            }
        }
    }
}

/// One audit record per case of a feed batch, with the versions delivered.
fn feed_reads(events: &[pb::TimelineEvent]) -> Vec<Read> {
    let mut by_case: Vec<(String, Vec<pb::TimelineEvent>)> = Vec::new();
    for event in events {
        match by_case.iter_mut().find(|(case, _)| *case == event.case_id) {
            Some((_, list)) => list.push(event.clone()),
            None => by_case.push((event.case_id.clone(), vec![event.clone()])),
        }
    }
    by_case
        .into_iter()
        .map(|(case_id, list)| Read {
            method: "WatchFeed",
            case_id,
            versions: list.iter().map(|e| e.case_version).collect(),
            detail: redaction_detail(&list),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(case: &str, version: u64, redacted: bool) -> pb::TimelineEvent {
        pb::TimelineEvent {
            case_id: case.into(),
            case_version: version,
            redacted,
            ..Default::default()
        }
    }

    #[test]
    fn a_feed_batch_is_audited_once_per_case_with_its_versions() {
        let reads = feed_reads(&[
            event("A", 1, false),
            event("B", 4, true),
            event("A", 2, true),
        ]);
        let summary: Vec<(&str, Vec<u64>, Option<&str>)> = reads
            .iter()
            .map(|r| (r.case_id.as_str(), r.versions.clone(), r.detail.as_deref()))
            .collect();
        assert_eq!(
            summary,
            vec![
                ("A", vec![1, 2], Some("redacted 2")),
                ("B", vec![4], Some("redacted 4")),
            ]
        );
    }
}
