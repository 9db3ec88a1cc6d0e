//! `Store`: the gateway's handle on its SQLite projection. One writer connection (the
//! consumer's batches), a small pool of reader connections (WAL lets them read beside
//! the writer), a `watch` channel that announces the position after every committed
//! batch (what wakes the feed streams), and one such channel per watched case that
//! announces only the batches touching that case (what wakes its timeline watches, so
//! a watch of a quiet case does not query the projection for every other case's event).
//!
//! `Projection` is `Send` but not `Sync` and blocks, so every call runs on the blocking
//! pool with the connection behind a mutex held only for that call.
//!
//! It also prepares the file before opening: a lock file keeps a second gateway off the
//! same projection, and the `-wal`/`-shm` files of a deleted or emptied database are
//! removed, because SQLite would otherwise replay a stale WAL into the new file.

use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::{Semaphore, watch};

use casebus_bus::StoredEvent;
use casebus_proto::CaseId;
use casebus_timeline::{ApplyOutcome, ProjectError, ProjectedInput, Projection};

use crate::error::{ReadError, RunError};

/// Folded cases each reader connection keeps in memory.
const READER_CACHE_CASES: usize = 1024;

/// The projection file of a running gateway, shared by the consumer and the gRPC
/// handlers.
pub struct Store {
    path: PathBuf,
    writer: Mutex<Projection>,
    readers: Mutex<Vec<Projection>>,
    permits: Semaphore,
    position: watch::Sender<u64>,
    cases: Mutex<CaseChannels>,
    // Held for the life of the store: the exclusive lock on `<db>.lock`.
    _lock: File,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

/// The lock file of a projection: `<db>.lock`.
pub fn lock_path(db: &Path) -> PathBuf {
    let mut name = db.as_os_str().to_owned();
    name.push(".lock");
    PathBuf::from(name)
}

fn sibling(db: &Path, suffix: &str) -> PathBuf {
    let mut name = db.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

fn file_error(path: &Path) -> impl FnOnce(std::io::Error) -> RunError + '_ {
    move |source| RunError::File {
        path: path.to_owned(),
        source,
    }
}

impl Store {
    /// Opens (or creates) the projection at `path` with `readers` reader connections
    /// (at least one), after taking its lock file and clearing the leftovers of a
    /// deleted or emptied database file. Blocking: call it from `spawn_blocking`.
    ///
    /// # Errors
    /// [`RunError::Locked`] when another process holds the lock;
    /// [`RunError::File`] when the lock or a leftover file cannot be handled;
    /// [`RunError::Projection`] when SQLite refuses the file.
    pub fn open(path: &Path, readers: usize, consumer: &str) -> Result<Self, RunError> {
        let lock = lock_path(path);
        let lock_file = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock)
            .map_err(file_error(&lock))?;
        match lock_file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(RunError::Locked {
                    path: path.to_owned(),
                    lock,
                });
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(file_error(&lock)(e)),
        }
        remove_stale_journal(path)?;

        let mut writer = Projection::open(path).map_err(RunError::Projection)?;
        if writer.consumer().map_err(RunError::Projection)?.as_deref() != Some(consumer) {
            writer
                .set_consumer(consumer)
                .map_err(RunError::Projection)?;
        }
        let position = writer.position().map_err(RunError::Projection)?;
        let count = readers.max(1);
        let mut pool = Vec::with_capacity(count);
        for _ in 0..count {
            let mut reader = Projection::open(path).map_err(RunError::Projection)?;
            reader.set_cache_capacity(READER_CACHE_CASES);
            pool.push(reader);
        }
        let (sender, _) = watch::channel(position);
        Ok(Self {
            path: path.to_owned(),
            writer: Mutex::new(writer),
            readers: Mutex::new(pool),
            permits: Semaphore::new(count),
            position: sender,
            cases: Mutex::new(CaseChannels::default()),
            _lock: lock_file,
        })
    }

    /// Sets the deadline rules and holiday calendar the writer counts hand-offs' running
    /// clocks with, and recounts the stored ones if they were counted with others
    /// (returns the number of cases recounted). Blocking: call it from `spawn_blocking`.
    ///
    /// # Errors
    /// [`RunError::Projection`] when a stored event cannot be decoded or SQLite fails.
    pub fn set_clocks(
        &self,
        rules: casebus_domain::DeadlineRules,
        calendar: casebus_domain::Calendar,
    ) -> Result<u64, RunError> {
        let mut writer = self.writer.lock().unwrap_or_else(PoisonError::into_inner);
        writer.set_clocks(rules, calendar);
        writer.recount_clocks().map_err(RunError::Projection)
    }

    /// Sets the work budget of one case listing on every reader
    /// ([`Projection::set_list_work_budget`]).
    pub fn set_list_work_budget(&self, steps: u64) {
        for reader in self
            .readers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter_mut()
        {
            reader.set_list_work_budget(steps);
        }
    }

    /// The position of the last committed batch.
    pub fn position(&self) -> u64 {
        *self.position.borrow()
    }

    /// A receiver told of the position after every committed batch.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.position.subscribe()
    }

    /// A receiver told of the position after every committed batch that holds an event
    /// of `case`; batches of other cases do not wake it.
    pub fn subscribe_case(&self, case: &CaseId) -> watch::Receiver<u64> {
        self.cases
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .subscribe(case, self.position())
    }

    /// Projects a batch of verified events in one transaction and announces the new
    /// position.
    ///
    /// # Errors
    /// The [`ProjectError`] of [`Projection::apply_batch`]; `None` when the blocking task
    /// failed.
    pub async fn apply(
        self: &Arc<Self>,
        events: &[StoredEvent],
    ) -> Result<ApplyOutcome, Option<ProjectError>> {
        let this = self.clone();
        // The blocking pool needs owned data; a copy of a batch is small next to the
        // SQLite work it feeds.
        let owned = events.to_vec();
        let outcome = tokio::task::spawn_blocking(move || {
            let inputs: Vec<ProjectedInput<'_>> = owned
                .iter()
                .map(|e| ProjectedInput::new(e.sequence, &e.event))
                .collect();
            let mut writer = this.writer.lock().unwrap_or_else(PoisonError::into_inner);
            writer.apply_batch(&inputs)
        })
        .await
        .map_err(|_| None)?
        .map_err(Some)?;
        self.announce(outcome.position);
        self.cases
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .announce(events.iter().map(|e| &e.event.case_id), outcome.position);
        Ok(outcome)
    }

    /// Moves the position past a dead-lettered message and announces it.
    ///
    /// # Errors
    /// The [`ProjectError`] of [`Projection::advance_position`]; `None` when the blocking
    /// task failed.
    pub async fn advance_position(
        self: &Arc<Self>,
        sequence: u64,
    ) -> Result<u64, Option<ProjectError>> {
        let this = self.clone();
        let position = tokio::task::spawn_blocking(move || {
            let mut writer = this.writer.lock().unwrap_or_else(PoisonError::into_inner);
            writer.advance_position(sequence)
        })
        .await
        .map_err(|_| None)?
        .map_err(Some)?;
        self.announce(position);
        Ok(position)
    }

    fn announce(&self, position: u64) {
        self.position.send_if_modified(|current| {
            if position > *current {
                *current = position;
                true
            } else {
                false
            }
        });
    }

    /// Runs `query` on a reader connection on the blocking pool. Waits for a free
    /// reader when all are busy.
    ///
    /// # Errors
    /// Whatever `query` returns; [`ReadError::Task`] when the blocking task failed.
    pub async fn read<T, F>(self: &Arc<Self>, query: F) -> Result<T, ReadError>
    where
        T: Send + 'static,
        F: FnOnce(&Projection) -> Result<T, ReadError> + Send + 'static,
    {
        // Closed only when the store is dropped, which cannot happen while we hold it.
        let _permit = self.permits.acquire().await.map_err(|_| ReadError::Task)?;
        let this = self.clone();
        tokio::task::spawn_blocking(move || {
            let reader = this
                .readers
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .pop();
            // The semaphore has as many permits as the pool has connections, so a
            // permit holder always finds one.
            let Some(reader) = reader else {
                return Err(ReadError::Task);
            };
            let result = query(&reader);
            this.readers
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(reader);
            result
        })
        .await
        .map_err(|_| ReadError::Task)?
    }
}

/// The announcement channels of the watched cases. An entry lives while someone
/// listens: entries without receivers are dropped when their case is next announced,
/// and all of them whenever the map has doubled since the last sweep.
#[derive(Debug, Default)]
struct CaseChannels {
    channels: HashMap<CaseId, watch::Sender<u64>>,
    sweep_at: usize,
}

/// Watched cases from which a new subscription first sweeps unheard channels away.
const CASE_SWEEP_FROM: usize = 64;

impl CaseChannels {
    fn subscribe(&mut self, case: &CaseId, position: u64) -> watch::Receiver<u64> {
        if self.channels.len() >= self.sweep_at.max(CASE_SWEEP_FROM) {
            self.channels
                .retain(|_, sender| sender.receiver_count() > 0);
            self.sweep_at = self.channels.len() * 2;
        }
        self.channels
            .entry(case.clone())
            .or_insert_with(|| watch::channel(position).0)
            .subscribe()
    }

    /// Announces `position` to the watchers of `cases` (a case may come several times).
    fn announce<'a>(&mut self, cases: impl IntoIterator<Item = &'a CaseId>, position: u64) {
        for case in cases {
            let Some(sender) = self.channels.get(case) else {
                continue;
            };
            if sender.receiver_count() == 0 {
                self.channels.remove(case);
            } else {
                sender.send_if_modified(|current| {
                    let moved = position > *current;
                    if moved {
                        *current = position;
                    }
                    moved
                });
            }
        }
    }
}

/// Removes `-wal` and `-shm` files left next to a database file that was deleted or
/// emptied (to have it rebuilt): opened with a fresh database, SQLite would replay the
/// stale WAL into it.
fn remove_stale_journal(db: &Path) -> Result<(), RunError> {
    let empty = match std::fs::metadata(db) {
        Ok(meta) => meta.len() == 0,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => true,
        Err(e) => return Err(file_error(db)(e)),
    };
    if !empty {
        return Ok(());
    }
    for suffix in ["-wal", "-shm", "-journal"] {
        let path = sibling(db, suffix);
        match std::fs::remove_file(&path) {
            Ok(()) => {
                tracing::warn!(path = %path.display(), "removed journal file of a deleted projection");
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(file_error(&path)(e)),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_store_on_the_same_file_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = dir.path().join("gw.sqlite");
        let first = Store::open(&db, 1, "gw-a").expect("first opens");
        let err = Store::open(&db, 1, "gw-b").expect_err("second is refused");
        assert!(matches!(err, RunError::Locked { .. }), "{err}");
        drop(first);
        Store::open(&db, 1, "gw-b").expect("opens once the first is gone");
    }

    #[test]
    fn journal_files_of_a_deleted_database_are_removed_before_opening() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = dir.path().join("gw.sqlite");
        std::fs::write(sibling(&db, "-wal"), b"stale").expect("write");
        std::fs::write(sibling(&db, "-shm"), b"stale").expect("write");
        let store = Store::open(&db, 2, "gw-a").expect("opens");
        assert_eq!(store.position(), 0);
        assert!(
            std::fs::read(sibling(&db, "-wal")).map_or(true, |b| b != b"stale"),
            "the stale WAL is gone"
        );
    }

    #[test]
    fn a_case_channel_wakes_only_for_its_case_and_is_dropped_when_unheard() {
        let case = |id: &str| CaseId::new(id).expect("valid case id");
        let mut channels = CaseChannels::default();
        let mut a = channels.subscribe(&case("A"), 3);
        assert_eq!(*a.borrow_and_update(), 3);
        channels.announce(&[case("B")], 4);
        assert!(!a.has_changed().expect("open"), "another case's batch");
        channels.announce(&[case("B"), case("A")], 5);
        assert!(a.has_changed().expect("open"));
        assert_eq!(*a.borrow_and_update(), 5);
        drop(a);
        channels.announce(&[case("A")], 6);
        assert!(channels.channels.is_empty(), "no one listens to A any more");
    }

    #[test]
    fn the_consumer_name_is_recorded_in_the_projection() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = dir.path().join("gw.sqlite");
        drop(Store::open(&db, 1, "gw-a").expect("opens"));
        let projection = Projection::open(&db).expect("open");
        assert_eq!(
            projection.consumer().expect("consumer").as_deref(),
            Some("gw-a")
        );
    }
}
