//! `Projection`: one SQLite connection to a projection file, its schema, its stored
//! stream position and its cache of folded cases. Opening, the position, the consumer
//! name and `reset` live here; writes are in `apply`, reads in `query` and `dump`.
//!
//! A `Projection` is synchronous and `Send` but not `Sync`: the gateway keeps it behind
//! a mutex and calls it from `spawn_blocking`. Further `Projection`s may be opened on the
//! same file (WAL lets readers run beside the writer); only one should apply events.

use std::cell::RefCell;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use rusqlite::{Connection, OptionalExtension as _, TransactionBehavior};

use casebus_domain::{Calendar, DeadlineRules};

use crate::codec::to_u64;
use crate::error::{ProjectError, storage};
use crate::fold::StateCache;
use crate::schema;

/// SQLite virtual-machine steps one case listing may take unless told otherwise
/// ([`Projection::set_list_work_budget`]): a few hundred milliseconds of one core.
pub const DEFAULT_LIST_WORK_BUDGET: u64 = 200_000_000;

/// Virtual-machine steps between two calls of the progress handler that enforces a
/// work budget.
pub(crate) const WORK_TICK: u64 = 100;

/// How many folded cases a projection keeps in memory unless told otherwise.
pub const DEFAULT_CACHE_CASES: usize = 4096;

/// The gateway's SQLite projection of the CASES stream.
#[derive(Debug)]
pub struct Projection {
    pub(crate) conn: Connection,
    pub(crate) cache: RefCell<StateCache>,
    /// Progress-handler ticks the statement running now may still take; a statement
    /// that runs out is interrupted. Unlimited except while a budgeted query runs.
    pub(crate) work_left: Arc<AtomicI64>,
    /// The budget of one case listing, in virtual-machine steps.
    pub(crate) list_work_budget: u64,
    /// The rules and calendar the writer counts hand-offs' clocks with.
    pub(crate) clocks: Arc<ClockSet>,
    /// Whether the stored clock columns were checked (and recounted if need be) against
    /// `clocks` since they were set.
    pub(crate) clocks_checked: bool,
    path: PathBuf,
}

/// Deadline rules and a holiday calendar, with their digest.
#[derive(Debug)]
pub(crate) struct ClockSet {
    pub rules: DeadlineRules,
    pub calendar: Calendar,
    pub digest: String,
}

impl ClockSet {
    fn new(rules: DeadlineRules, calendar: Calendar) -> Self {
        let digest = rules.digest(&calendar);
        Self {
            rules,
            calendar,
            digest,
        }
    }
}

impl Projection {
    /// Opens the projection file at `path`, creating it if missing, and brings its schema
    /// to the version this build knows.
    ///
    /// The file runs in WAL mode with `synchronous=NORMAL`: a commit survives a crash of
    /// the process, and on power loss the last commits may be lost together with the
    /// stream position they wrote, so those events are simply projected again from the
    /// stream.
    ///
    /// # Errors
    /// - [`ProjectError::Open`] when the file cannot be opened or configured;
    /// - [`ProjectError::NewerSchema`] when a newer build wrote the file;
    /// - [`ProjectError::Migrate`] when a schema migration fails.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, ProjectError> {
        let path = path.as_ref().to_path_buf();
        let conn = Connection::open(&path).map_err(|source| ProjectError::Open {
            path: path.clone(),
            source,
        })?;
        Self::with_connection(conn, path)
    }

    /// Opens a fresh projection held in memory only, for tests and offline checks.
    ///
    /// # Errors
    /// As [`Projection::open`].
    pub fn open_in_memory() -> Result<Self, ProjectError> {
        let path = PathBuf::from(":memory:");
        let conn = Connection::open_in_memory().map_err(|source| ProjectError::Open {
            path: path.clone(),
            source,
        })?;
        Self::with_connection(conn, path)
    }

    fn with_connection(mut conn: Connection, path: PathBuf) -> Result<Self, ProjectError> {
        schema::configure(&conn).map_err(|source| ProjectError::Open {
            path: path.clone(),
            source,
        })?;
        schema::migrate(&mut conn)?;
        let work_left = Arc::new(AtomicI64::new(i64::MAX));
        let ticks = work_left.clone();
        conn.progress_handler(
            i32::try_from(WORK_TICK).unwrap_or(i32::MAX),
            Some(move || ticks.fetch_sub(1, Ordering::Relaxed) <= 0),
        )
        .map_err(|source| ProjectError::Open {
            path: path.clone(),
            source,
        })?;
        let projection = Self {
            conn,
            cache: RefCell::new(StateCache::new(DEFAULT_CACHE_CASES)),
            work_left,
            list_work_budget: DEFAULT_LIST_WORK_BUDGET,
            clocks: Arc::new(ClockSet::new(DeadlineRules::default(), Calendar::shipped())),
            clocks_checked: false,
            path,
        };
        tracing::info!(path = %projection.path.display(), position = projection.position()?, "projection opened");
        Ok(projection)
    }

    /// The file this projection was opened from (`:memory:` for an in-memory one).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Sets the deadline rules and holiday calendar hand-offs' running clocks are counted
    /// with (by default the built-in rules on the shipped calendar). Only the writer
    /// counts; the stored clocks are recounted before the next batch (or at
    /// [`Projection::recount_clocks`]) when they were counted with other rules.
    pub fn set_clocks(&mut self, rules: DeadlineRules, calendar: Calendar) {
        let clocks = ClockSet::new(rules, calendar);
        if clocks.digest != self.clocks.digest {
            self.clocks = Arc::new(clocks);
            self.clocks_checked = false;
        }
    }

    /// The digest of the rules and calendar this projection counts clocks with.
    pub fn clocks_digest(&self) -> &str {
        &self.clocks.digest
    }

    /// Sets how many folded cases are kept in memory (at least one). More saves
    /// re-folding busy cases from their stored events; each costs roughly a few hundred
    /// bytes per event of the case.
    pub fn set_cache_capacity(&mut self, cases: usize) {
        self.cache.get_mut().set_capacity(cases);
    }

    /// Sets how many SQLite virtual-machine steps one case listing may take (at least
    /// one tick of the progress handler, a hundred steps); a listing that would take
    /// more is refused with [`crate::QueryError::TooMuchWork`].
    pub fn set_list_work_budget(&mut self, steps: u64) {
        self.list_work_budget = steps.max(WORK_TICK);
    }

    /// Runs `query` with at most `steps` virtual-machine steps (rounded to ticks of
    /// the progress handler), then lifts the limit again.
    pub(crate) fn with_work_budget<T>(&self, steps: u64, query: impl FnOnce() -> T) -> T {
        struct Unlimit<'a>(&'a AtomicI64);
        impl Drop for Unlimit<'_> {
            fn drop(&mut self) {
                self.0.store(i64::MAX, Ordering::Relaxed);
            }
        }
        self.work_left.store(
            i64::try_from(steps / WORK_TICK).unwrap_or(i64::MAX),
            Ordering::Relaxed,
        );
        let _unlimit = Unlimit(&self.work_left);
        query()
    }

    /// The sequence of the last CASES message accounted for (0 before the first): the
    /// consumer resumes after it.
    ///
    /// # Errors
    /// [`ProjectError::Storage`] when SQLite fails.
    pub fn position(&self) -> Result<u64, ProjectError> {
        read_position(&self.conn)
    }

    /// Records that every message up to `sequence` is accounted for although it carried
    /// no event for the projection (it was dead-lettered by the consumer). A sequence at
    /// or below the stored position changes nothing. Returns the stored position.
    ///
    /// # Errors
    /// [`ProjectError::OutOfRange`] for a sequence above `i64::MAX`;
    /// [`ProjectError::Storage`] when SQLite fails.
    pub fn advance_position(&mut self, sequence: u64) -> Result<u64, ProjectError> {
        let value = i64::try_from(sequence).map_err(|_| ProjectError::OutOfRange {
            what: "stream sequence",
            value: sequence,
        })?;
        self.conn
            .execute(
                "UPDATE position SET last_sequence = ?1 WHERE id = 1 AND last_sequence < ?1",
                [value],
            )
            .map_err(storage("advancing the position"))?;
        self.position()
    }

    /// The durable consumer name recorded with [`Projection::set_consumer`], if any.
    ///
    /// # Errors
    /// [`ProjectError::Storage`] when SQLite fails.
    pub fn consumer(&self) -> Result<Option<String>, ProjectError> {
        self.conn
            .query_row("SELECT consumer FROM position WHERE id = 1", [], |row| {
                row.get(0)
            })
            .optional()
            .map(Option::flatten)
            .map_err(storage("reading the consumer name"))
    }

    /// Records the name of the durable consumer that feeds this projection, for
    /// operators and the monitor. It does not change the position.
    ///
    /// # Errors
    /// [`ProjectError::Storage`] when SQLite fails.
    pub fn set_consumer(&mut self, name: &str) -> Result<(), ProjectError> {
        self.conn
            .execute("UPDATE position SET consumer = ?1 WHERE id = 1", [name])
            .map_err(storage("recording the consumer name"))?;
        Ok(())
    }

    /// Deletes every event and derived row and sets the position back to 0, in one
    /// transaction, before rebuilding the projection from the start of the stream. The
    /// schema and the consumer name stay.
    ///
    /// # Errors
    /// [`ProjectError::Storage`] when SQLite fails; nothing is deleted then.
    pub fn reset(&mut self) -> Result<(), ProjectError> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(storage("starting the reset"))?;
        // Children before their parent table, so no cascade has to run.
        tx.execute_batch(
            "DELETE FROM participants;
             DELETE FROM case_references;
             DELETE FROM handoffs;
             DELETE FROM parties;
             DELETE FROM tracks;
             DELETE FROM cases;
             DELETE FROM events;
             UPDATE position SET last_sequence = 0 WHERE id = 1;",
        )
        .map_err(storage("deleting the projection rows"))?;
        tx.commit().map_err(storage("committing the reset"))?;
        self.cache.get_mut().clear();
        tracing::info!(path = %self.path.display(), "projection reset");
        Ok(())
    }
}

// The gateway moves a projection into `spawn_blocking` and keeps it behind a mutex.
const _: fn() = || {
    fn send<T: Send>() {}
    send::<Projection>();
};

/// Reads the stored position on `conn` (a connection or an open transaction).
pub(crate) fn read_position(conn: &Connection) -> Result<u64, ProjectError> {
    let value: i64 = conn
        .prepare_cached("SELECT last_sequence FROM position WHERE id = 1")
        .and_then(|mut stmt| stmt.query_row([], |row| row.get(0)))
        .map_err(storage("reading the position"))?;
    Ok(to_u64(value).unwrap_or(0))
}
