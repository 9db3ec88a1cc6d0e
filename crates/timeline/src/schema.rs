//! The projection's SQLite schema and its migrations, and the connection settings every
//! projection file is opened with.
//!
//! Conventions of the schema (version 4; version 2 added each hand-off's running legal
//! clock and the digest of the rules and calendar it was counted with, version 3 dropped
//! the index on event ids, version 4 added the clock's extensions and suspension):
//! - instants are INTEGER unix nanoseconds, UTC. That sorts and compares as numbers and
//!   costs 8 bytes; it covers 1677-09-21 to 2262-04-11, and an instant outside that range
//!   is clamped to the nearest end in these columns (the exact value always stays in the
//!   event's `signed` bytes);
//! - enum values are lower-case text (`customs`, `counterfeit_trademark`, `requested`), so
//!   the file can be read with the `sqlite3` shell; a value this build does not know is
//!   stored as its decimal number;
//! - `events` is the only table filled from the stream as it is; every other table is
//!   derived from the folded case state and rewritten per case on each batch.
//!
//! This module does not own the queries (see `query`) or the writes (see `apply`).

use rusqlite::config::DbConfig;
use rusqlite::{Connection, TransactionBehavior};

use crate::error::ProjectError;

/// The newest schema version this build knows.
pub(crate) const SCHEMA_VERSION: i64 = 5;

/// Migration `i` leads from version `i` to version `i + 1`.
const MIGRATIONS: &[&str] = &[V1, V2, V3, V4, V5];

// Every version up to SCHEMA_VERSION has its migration.
const _: () = assert!(MIGRATIONS.len() as i64 == SCHEMA_VERSION);

const V1: &str = r"
-- Where the projection stands in the CASES stream. Exactly one row; written in the same
-- transaction as the rows it accounts for, so a restart resumes exactly.
CREATE TABLE position (
    id            INTEGER PRIMARY KEY CHECK (id = 1),
    consumer      TEXT,
    last_sequence INTEGER NOT NULL CHECK (last_sequence >= 0)
);
INSERT INTO position (id, consumer, last_sequence) VALUES (1, NULL, 0);

-- Every projected event, keyed by its CASES stream sequence.
CREATE TABLE events (
    stream_sequence     INTEGER PRIMARY KEY,
    case_id             TEXT    NOT NULL,
    case_version        INTEGER NOT NULL CHECK (case_version >= 1),
    event_id            TEXT    NOT NULL UNIQUE,
    office_id           TEXT    NOT NULL,
    agency              TEXT    NOT NULL,
    type_name           TEXT    NOT NULL,
    occurred_at         INTEGER NOT NULL,
    recorded_at         INTEGER NOT NULL,
    -- The effective visibility: as recorded, or as last replaced by VisibilityChanged.
    visibility          TEXT    NOT NULL,
    -- For listed_agencies: the agencies, comma-separated in recorded order; else empty.
    visible_to          TEXT    NOT NULL,
    hash                BLOB    NOT NULL,
    prev_hash           BLOB,
    -- The SignedEvent exactly as it was stored on the stream, so a newer schema can
    -- derive anything it adds without going back to the stream.
    signed              BLOB    NOT NULL,
    UNIQUE (case_id, case_version)
);

-- One row per case that has events.
CREATE TABLE cases (
    case_id          TEXT    PRIMARY KEY,
    -- NULL only for a case whose CaseOpened was never projected.
    case_type        TEXT,
    title            TEXT,
    opened_by_office TEXT,
    opened_at        INTEGER,
    version          INTEGER NOT NULL,
    last_sequence    INTEGER NOT NULL,
    -- recorded_at of the case's latest event.
    updated_at       INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX cases_by_opened ON cases (opened_at, case_id);
CREATE INDEX cases_by_type ON cases (case_type, opened_at, case_id);

-- Each agency's track of a case.
CREATE TABLE tracks (
    case_id   TEXT    NOT NULL REFERENCES cases (case_id) ON DELETE CASCADE,
    agency    TEXT    NOT NULL,
    office_id TEXT    NOT NULL,
    status    TEXT    NOT NULL,
    opened_at INTEGER NOT NULL,
    PRIMARY KEY (case_id, agency)
) WITHOUT ROWID;
CREATE INDEX tracks_by_agency ON tracks (agency, status, case_id);

-- Parties of a case. Only what lists and summaries show: identifiers and descriptions
-- are personal data and stay in the events, behind their visibility.
CREATE TABLE parties (
    case_id        TEXT    NOT NULL REFERENCES cases (case_id) ON DELETE CASCADE,
    party_id       TEXT    NOT NULL,
    role           TEXT    NOT NULL,
    name           TEXT    NOT NULL,
    organisation   INTEGER NOT NULL,
    -- Version of the event that last set the party, so the gateway can hide a party
    -- whose event the caller may not see.
    source_version INTEGER NOT NULL,
    PRIMARY KEY (case_id, party_id)
) WITHOUT ROWID;

-- Hand-offs of a case.
CREATE TABLE handoffs (
    case_id            TEXT    NOT NULL REFERENCES cases (case_id) ON DELETE CASCADE,
    handoff_id         TEXT    NOT NULL,
    kind               TEXT    NOT NULL,
    from_office        TEXT    NOT NULL,
    to_agency          TEXT    NOT NULL,
    to_office          TEXT,
    status             TEXT    NOT NULL,
    requested_at       INTEGER NOT NULL,
    due_at             INTEGER,
    requested_version  INTEGER NOT NULL,
    requested_event_id TEXT    NOT NULL,
    answered           INTEGER NOT NULL,
    PRIMARY KEY (case_id, handoff_id)
) WITHOUT ROWID;
CREATE INDEX handoffs_open_by_due ON handoffs (due_at, case_id, handoff_id)
    WHERE status IN ('requested', 'acknowledged');

-- Agency case numbers linked to a case. Two offices of one agency may link the same
-- number, so the office is part of the key.
CREATE TABLE case_references (
    agency         TEXT    NOT NULL,
    local_number   TEXT    NOT NULL,
    case_id        TEXT    NOT NULL REFERENCES cases (case_id) ON DELETE CASCADE,
    office_id      TEXT    NOT NULL,
    source_version INTEGER NOT NULL,
    PRIMARY KEY (agency, local_number, case_id, office_id)
) WITHOUT ROWID;
CREATE INDEX case_references_by_case ON case_references (case_id);

-- Agencies taking part in a case: a track, or addressed by a hand-off. An agency not
-- listed here must not learn that the case exists.
CREATE TABLE participants (
    case_id TEXT NOT NULL REFERENCES cases (case_id) ON DELETE CASCADE,
    agency  TEXT NOT NULL,
    PRIMARY KEY (case_id, agency)
) WITHOUT ROWID;
CREATE INDEX participants_by_agency ON participants (agency, case_id);
";

/// Version 2: each hand-off's running legal clock (`CaseState::open_clocks`), counted by
/// the writer with its deadline rules and holiday calendar, and the digest of those. A
/// file migrated from version 1 has no digest, so the writer counts every hand-off's
/// clock from the stored events before it projects anything (`Projection::recount_clocks`),
/// as it does whenever its rules or calendar differ from the stored digest.
const V2: &str = r"
-- The running clock: NULL name when no clock runs (answered, declined, decided).
ALTER TABLE handoffs ADD COLUMN clock TEXT;
ALTER TABLE handoffs ADD COLUMN clock_started_at INTEGER;
-- NULL when no clock runs or the calendar cannot count it (clock_error says why).
ALTER TABLE handoffs ADD COLUMN clock_due_at INTEGER;
ALTER TABLE handoffs ADD COLUMN clock_basis TEXT;
ALTER TABLE handoffs ADD COLUMN clock_error TEXT;
CREATE INDEX handoffs_running_by_due ON handoffs (clock_due_at, case_id, handoff_id)
    WHERE clock_due_at IS NOT NULL;

-- The DeadlineRules::digest the clock columns were counted with. At most one row.
CREATE TABLE clock_settings (
    id     INTEGER PRIMARY KEY CHECK (id = 1),
    digest TEXT NOT NULL
);
";

/// Version 3: `events` without the unique index on `event_id`. No query looks events up
/// by id, and the index cost the most of any: its keys are random, so at a million
/// events nearly every insert read and dirtied another page of it (see
/// docs/PERFORMANCE.md). What it guarded stays guarded: an event id is derived from its
/// office, case and request id, so two events of different cases never share one; the
/// stream refuses a second message with the same `Nats-Msg-Id` (the event id); the
/// appender records a command's request id once per case; and `apply_batch` refuses or
/// skips a second event at a case version (`UNIQUE (case_id, case_version)` stays).
/// SQLite cannot drop a constraint's index, so the table is copied, rows unchanged.
const V3: &str = r"
CREATE TABLE events_v3 (
    stream_sequence     INTEGER PRIMARY KEY,
    case_id             TEXT    NOT NULL,
    case_version        INTEGER NOT NULL CHECK (case_version >= 1),
    event_id            TEXT    NOT NULL,
    office_id           TEXT    NOT NULL,
    agency              TEXT    NOT NULL,
    type_name           TEXT    NOT NULL,
    occurred_at         INTEGER NOT NULL,
    recorded_at         INTEGER NOT NULL,
    visibility          TEXT    NOT NULL,
    visible_to          TEXT    NOT NULL,
    hash                BLOB    NOT NULL,
    prev_hash           BLOB,
    signed              BLOB    NOT NULL,
    UNIQUE (case_id, case_version)
);
INSERT INTO events_v3 (stream_sequence, case_id, case_version, event_id, office_id, agency,
        type_name, occurred_at, recorded_at, visibility, visible_to, hash, prev_hash, signed)
    SELECT stream_sequence, case_id, case_version, event_id, office_id, agency, type_name,
        occurred_at, recorded_at, visibility, visible_to, hash, prev_hash, signed
    FROM events ORDER BY stream_sequence;
DROP TABLE events;
ALTER TABLE events_v3 RENAME TO events;
";

/// Version 4: the running clock's extensions (granted, allowed) and, while it is
/// suspended, since when (a suspended clock is never overdue). The digest is cleared,
/// so the writer recounts every clock from the stored events at its next start: an
/// older build folded the clock events as unknown kinds.
const V4: &str = r"
ALTER TABLE handoffs ADD COLUMN clock_extensions INTEGER NOT NULL DEFAULT 0;
ALTER TABLE handoffs ADD COLUMN clock_extensions_allowed INTEGER NOT NULL DEFAULT 0;
-- NULL unless the running clock is suspended; overdue queries skip suspended clocks.
ALTER TABLE handoffs ADD COLUMN clock_suspended_since INTEGER;
DELETE FROM clock_settings;
";

/// Version 5: the running clocks of a case that are not tied to a hand-off (a customs
/// detention's or a suspect's, `CaseState::open_case_clocks`), one row per running clock, counted by
/// the writer like the hand-offs' clock columns. The digest is cleared, so the writer
/// counts them from the stored events at its next start.
const V5: &str = r"
CREATE TABLE case_clocks (
    case_id        TEXT    NOT NULL REFERENCES cases (case_id) ON DELETE CASCADE,
    clock          TEXT    NOT NULL,
    -- What it runs on: the detention id.
    subject        TEXT    NOT NULL,
    -- The agency whose act answers it.
    agency         TEXT    NOT NULL,
    started_at     INTEGER NOT NULL,
    -- NULL when the calendar cannot count it (error says why).
    due_at         INTEGER,
    basis          TEXT    NOT NULL,
    error          TEXT,
    -- Extensions granted (due_at includes them) and allowed by the rules.
    extensions     INTEGER NOT NULL DEFAULT 0,
    extensions_allowed INTEGER NOT NULL DEFAULT 0,
    -- Version of the event that started it: shown only to who may read that event.
    source_version INTEGER NOT NULL,
    PRIMARY KEY (case_id, clock, subject)
) WITHOUT ROWID;
CREATE INDEX case_clocks_by_due ON case_clocks (due_at, case_id) WHERE due_at IS NOT NULL;
DELETE FROM clock_settings;
";

/// Sets the connection pragmas every projection uses.
///
/// WAL with `synchronous=NORMAL`: a commit survives a crash of the process (the WAL is
/// written before the commit returns) but may be lost on power failure or an OS crash,
/// because the WAL is only synced at checkpoints. That is enough here: the stream
/// position is written in the same transaction as the rows, so a lost commit loses its
/// position too, and the projection simply re-projects those events from the stream.
/// FULL would add an fsync per batch for no gain in correctness.
pub(crate) fn configure(conn: &Connection) -> rusqlite::Result<()> {
    // `journal_mode` answers with the mode in force ("memory" for in-memory databases).
    let _mode: String = conn.query_row("PRAGMA journal_mode = WAL", [], |row| row.get(0))?;
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    // Readers on other connections (a second gateway handle, the CLI) wait for a writer
    // instead of failing at once.
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    conn.pragma_update(None, "temp_store", "MEMORY")?;
    // The query planner stability guarantee: a statement keeps the plan it was prepared
    // with. Without it SQLite (3.47 and later) marks a statement with `LIMIT ?` for
    // re-preparation whenever that parameter is bound, so every cached timeline or feed
    // query was parsed and planned again on each call (an eighth of the gateway's CPU
    // under GetTimeline load); with STAT4 data it would do the same for indexed
    // comparisons. Every query here has one good plan whatever the values.
    conn.set_db_config(DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG, true)?;
    conn.set_prepared_statement_cache_capacity(64);
    Ok(())
}

/// Brings the schema to [`SCHEMA_VERSION`], one migration per transaction. Each step
/// reads the version inside an IMMEDIATE transaction, so two processes opening a new
/// file at once do not both run the same migration.
pub(crate) fn migrate(conn: &mut Connection) -> Result<(), ProjectError> {
    // Fast path without any write lock: a file already at this version needs nothing,
    // and opening it must not block the gateway's writer (readers open files often).
    let current: Option<i64> = conn
        .query_row("SELECT max(version) FROM schema_version", [], |row| {
            row.get(0)
        })
        .ok()
        .flatten();
    if current == Some(SCHEMA_VERSION) {
        return Ok(());
    }
    conn.execute_batch("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
        .map_err(|source| ProjectError::Migrate { version: 0, source })?;
    loop {
        let setup = |source| ProjectError::Migrate { version: 0, source };
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(setup)?;
        let current: i64 = tx
            .query_row("SELECT max(version) FROM schema_version", [], |row| {
                row.get::<_, Option<i64>>(0)
            })
            .map_err(setup)?
            .unwrap_or(0);
        if current > SCHEMA_VERSION {
            return Err(ProjectError::NewerSchema {
                found: current,
                supported: SCHEMA_VERSION,
            });
        }
        // The assertion next to MIGRATIONS guarantees a migration for every version
        // below SCHEMA_VERSION, so the loop ends exactly at SCHEMA_VERSION.
        let Some(sql) = usize::try_from(current)
            .ok()
            .and_then(|index| MIGRATIONS.get(index))
        else {
            return Ok(());
        };
        let version = current + 1;
        let failed = |source| ProjectError::Migrate { version, source };
        tx.execute_batch(sql).map_err(failed)?;
        tx.execute("DELETE FROM schema_version", [])
            .map_err(failed)?;
        tx.execute(
            "INSERT INTO schema_version (version) VALUES (?1)",
            [version],
        )
        .map_err(failed)?;
        tx.commit().map_err(failed)?;
        tracing::info!(version, "projection schema migrated");
    }
}
