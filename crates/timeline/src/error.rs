//! The errors of the projection, one enum per operation family: `ProjectError` for
//! opening, applying, resetting and reading the position (the consumer side), and
//! `QueryError` for every read the gateway, the CLI and the monitor make.
//!
//! Callers branch on them: a `ProjectError` that is transient (`is_transient`) is retried
//! in place by the consumer, any other one dead-letters the event; a `QueryError` that
//! names invalid input maps to INVALID_ARGUMENT, the rest to INTERNAL.

use std::path::PathBuf;

/// Why the projection could not be opened, written or positioned.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProjectError {
    /// The SQLite file could not be opened or configured.
    #[error("cannot open projection {path}")]
    Open {
        /// The file (`:memory:` for an in-memory projection).
        path: PathBuf,
        /// What SQLite said.
        #[source]
        source: rusqlite::Error,
    },
    /// The file was written by a newer build with a schema this build does not know.
    #[error("projection schema version {found} is newer than this build supports ({supported})")]
    NewerSchema {
        /// The version found in the file.
        found: i64,
        /// The newest version this build knows.
        supported: i64,
    },
    /// A schema migration failed; the file is left at the previous version.
    #[error("projection schema migration to version {version} failed")]
    Migrate {
        /// The version the migration leads to.
        version: i64,
        /// What SQLite said.
        #[source]
        source: rusqlite::Error,
    },
    /// An event does not continue its case: its version is not the next one, so an
    /// earlier event of the case is missing from the input.
    #[error(
        "event {event_id} of case {case_id} at sequence {sequence} has version {found}; version {expected} was expected"
    )]
    OutOfOrder {
        /// The case.
        case_id: String,
        /// The event.
        event_id: String,
        /// Its stream sequence.
        sequence: u64,
        /// The version the case is at plus one.
        expected: u64,
        /// The version the event claims.
        found: u64,
    },
    /// An event claims a version of its case that is already taken by another event.
    #[error(
        "event {event_id} at sequence {sequence} claims version {version} of case {case_id}, which holds event {stored_event_id}"
    )]
    Conflict {
        /// The case.
        case_id: String,
        /// The incoming event.
        event_id: String,
        /// Its stream sequence.
        sequence: u64,
        /// The contested version.
        version: u64,
        /// The event already stored at that version.
        stored_event_id: String,
    },
    /// A stored event could not be decoded while rebuilding its case's state.
    #[error("stored event of case {case_id} at version {version} is unreadable: {reason}")]
    CorruptEvent {
        /// The case.
        case_id: String,
        /// The version of the unreadable event.
        version: u64,
        /// What is wrong with it.
        reason: String,
    },
    /// A stream sequence or case version does not fit SQLite's signed 64-bit integers.
    #[error("{what} {value} is too large for the projection")]
    OutOfRange {
        /// What the number is ("stream sequence", "case version").
        what: &'static str,
        /// The number.
        value: u64,
    },
    /// SQLite failed while writing or reading the projection.
    #[error("projection storage failed while {operation}")]
    Storage {
        /// What the projection was doing, e.g. "inserting an event".
        operation: &'static str,
        /// What SQLite said.
        #[source]
        source: rusqlite::Error,
    },
}

impl ProjectError {
    /// Whether retrying the same call may succeed: the database was busy or locked by
    /// another connection. Everything else fails again with the same input.
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Storage { source, .. } | Self::Open { source, .. } => is_busy(source),
            _ => false,
        }
    }
}

fn is_busy(error: &rusqlite::Error) -> bool {
    matches!(
        error.sqlite_error_code(),
        Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked)
    )
}

/// Why a query could not be answered.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum QueryError {
    /// A page limit of 0 or above the maximum.
    #[error("limit {limit} is out of range; use 1 to {max}")]
    InvalidLimit {
        /// The limit asked for.
        limit: usize,
        /// The largest limit accepted.
        max: usize,
    },
    /// A list cursor that this projection did not hand out.
    #[error("malformed list cursor: {reason}")]
    MalformedCursor {
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A list filter with an invalid value.
    #[error("invalid filter {field}: {reason}")]
    InvalidFilter {
        /// The filter field, e.g. `text`.
        field: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// A case listing would take more work than one call may cause: its filters, over
    /// the reader's own cases, examine too many rows.
    #[error(
        "the listing would examine more than this gateway's budget of {budget} steps; narrow it with opened_from and opened_to"
    )]
    TooMuchWork {
        /// The budget, in SQLite virtual-machine steps.
        budget: u64,
    },
    /// A stored value could not be read back (the file was changed behind the
    /// projection's back, or by a build with other rules).
    #[error("projection table {table} holds an unreadable {column}: {reason}")]
    Corrupt {
        /// The table.
        table: &'static str,
        /// The column.
        column: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// SQLite failed while reading the projection.
    #[error("projection query failed while {operation}")]
    Storage {
        /// What the query was doing, e.g. "reading a timeline".
        operation: &'static str,
        /// What SQLite said.
        #[source]
        source: rusqlite::Error,
    },
}

impl QueryError {
    /// Whether the caller's input was at fault (a limit, cursor or filter), as opposed
    /// to the projection itself.
    pub fn is_invalid_input(&self) -> bool {
        matches!(
            self,
            Self::InvalidLimit { .. } | Self::MalformedCursor { .. } | Self::InvalidFilter { .. }
        )
    }

    /// Whether retrying the same query may succeed (the database was busy or locked).
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Storage { source, .. } => is_busy(source),
            _ => false,
        }
    }
}

/// Attaches the operation to a SQLite error on the write side.
pub(crate) fn storage(operation: &'static str) -> impl FnOnce(rusqlite::Error) -> ProjectError {
    move |source| ProjectError::Storage { operation, source }
}

/// Attaches the operation to a SQLite error on the read side.
pub(crate) fn query(operation: &'static str) -> impl FnOnce(rusqlite::Error) -> QueryError {
    move |source| QueryError::Storage { operation, source }
}
