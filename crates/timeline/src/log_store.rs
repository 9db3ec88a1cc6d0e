//! The transparency log's storage: an SQLite file of its own, beside the projection,
//! holding every entry of the log over `CASES` and one hash per complete subtree
//! (`casebus_tlog::merkle`'s layout), so tree heads and proofs of any size are read,
//! never recomputed from the entries.
//!
//! Entry `n` (leaf index `n − 1`) is the SHA-256 of the message stored at `CASES`
//! sequence `n`: every message, including those that fail to decode or verify, so the
//! log is the stream. [`LogStore::append`] takes the next messages in sequence order and
//! writes their entries, the hashes they create and the new size in one transaction;
//! a message already logged is checked against its entry and skipped (a redelivery).
//! Delete the file and feed the stream again from sequence 1 to rebuild it.
//!
//! The file is separate from the projection so that the log's schema and its rebuild
//! never touch the projection's migrations, and so that one can be rebuilt without the
//! other. This module does not read the stream (the gateway's log follower does) and
//! does not sign anything.

use std::path::{Path, PathBuf};

use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};
use sha2::{Digest, Sha256};

use casebus_tlog::merkle::{
    self, Frontier, Hash, HashReader, InclusionError, ProofError, stored_hash_count,
};

/// Why the log's storage failed or refused an append.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LogStoreError {
    /// SQLite failed.
    #[error("transparency log storage {path}")]
    Sqlite {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: rusqlite::Error,
    },
    /// A message that is not the next one: the log has no gaps.
    #[error("stream sequence {found} cannot follow a log of {size} entries")]
    OutOfOrder {
        /// Entries in the log.
        size: u64,
        /// The sequence offered.
        found: u64,
    },
    /// A message offered again whose bytes differ from those logged.
    #[error("stream sequence {sequence} differs from the message logged there")]
    Conflict {
        /// The sequence.
        sequence: u64,
    },
    /// The file's schema is newer than this build, or its contents are damaged.
    #[error("transparency log file {path}: {reason}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A proof request outside the log.
    #[error(transparent)]
    Proof(#[from] ProofError),
}

const SCHEMA_VERSION: i64 = 1;

const SCHEMA: &str = r"
-- The log's size: entries 1..size are logged. Exactly one row.
CREATE TABLE IF NOT EXISTS tlog_state (
    id             INTEGER PRIMARY KEY CHECK (id = 1),
    schema_version INTEGER NOT NULL,
    size           INTEGER NOT NULL CHECK (size >= 0)
);
INSERT OR IGNORE INTO tlog_state (id, schema_version, size) VALUES (1, 1, 0);
-- Entry of CASES sequence n: SHA-256 of the stored message bytes.
CREATE TABLE IF NOT EXISTS tlog_entries (
    sequence INTEGER PRIMARY KEY,
    entry    BLOB NOT NULL CHECK (length(entry) = 32)
);
-- One hash per complete subtree, numbered as casebus_tlog::merkle::stored_hash_index.
CREATE TABLE IF NOT EXISTS tlog_hashes (
    id   INTEGER PRIMARY KEY,
    hash BLOB NOT NULL CHECK (length(hash) = 32)
);
";

/// The transparency log's SQLite file.
pub struct LogStore {
    conn: Connection,
    path: PathBuf,
    frontier: Frontier,
}

impl std::fmt::Debug for LogStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogStore")
            .field("path", &self.path)
            .field("size", &self.frontier.size())
            .finish_non_exhaustive()
    }
}

/// The entry of a stored message: SHA-256 of its bytes.
pub fn log_entry(message: &[u8]) -> [u8; 32] {
    Sha256::digest(message).into()
}

impl LogStore {
    /// Opens (creating if needed) the log file at `path`.
    ///
    /// # Errors
    /// [`LogStoreError::Sqlite`]; [`LogStoreError::Corrupt`] for a newer schema or a
    /// file whose hashes do not match its size.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, LogStoreError> {
        let path = path.as_ref().to_path_buf();
        let conn = Connection::open(&path).map_err(sqlite(&path))?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(sqlite(&path))?;
        conn.pragma_update(None, "synchronous", "NORMAL")
            .map_err(sqlite(&path))?;
        Self::with_connection(conn, path)
    }

    /// A log in memory, for tests and tools.
    ///
    /// # Errors
    /// [`LogStoreError::Sqlite`].
    pub fn open_in_memory() -> Result<Self, LogStoreError> {
        let path = PathBuf::from(":memory:");
        let conn = Connection::open_in_memory().map_err(sqlite(&path))?;
        Self::with_connection(conn, path)
    }

    fn with_connection(conn: Connection, path: PathBuf) -> Result<Self, LogStoreError> {
        conn.execute_batch(SCHEMA).map_err(sqlite(&path))?;
        let (version, size): (i64, i64) = conn
            .query_row(
                "SELECT schema_version, size FROM tlog_state WHERE id = 1",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .map_err(sqlite(&path))?;
        let size = from_sql(size);
        if version > SCHEMA_VERSION {
            return Err(LogStoreError::Corrupt {
                path,
                reason: format!("schema version {version} is newer than this build's"),
            });
        }
        let mut store = Self {
            conn,
            path,
            frontier: Frontier::new(),
        };
        let stored: i64 = store
            .conn
            .query_row("SELECT count(*) FROM tlog_hashes", [], |r| r.get(0))
            .map_err(sqlite(&store.path))?;
        let stored = from_sql(stored);
        if stored != stored_hash_count(size) {
            return Err(LogStoreError::Corrupt {
                path: store.path.clone(),
                reason: format!(
                    "{stored} stored hashes for a log of {size} entries, which has {}",
                    stored_hash_count(size)
                ),
            });
        }
        store.frontier = Frontier::load(size, &store)?;
        Ok(store)
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Entries logged: the last `CASES` sequence logged.
    pub fn size(&self) -> u64 {
        self.frontier.size()
    }

    /// The current tree head.
    pub fn root(&self) -> Hash {
        self.frontier.root()
    }

    /// Logs the messages `(sequence, bytes)` in order, in one transaction, and returns
    /// the new size. Messages already logged are compared with their entries and
    /// skipped; the first new one must be sequence `size + 1`, and each next one the
    /// sequence after it.
    ///
    /// # Errors
    /// [`LogStoreError::OutOfOrder`] for a gap; [`LogStoreError::Conflict`] when a
    /// message already logged differs; [`LogStoreError::Sqlite`]. Nothing is written
    /// on error.
    pub fn append<'a>(
        &mut self,
        messages: impl IntoIterator<Item = (u64, &'a [u8])>,
    ) -> Result<u64, LogStoreError> {
        let path = self.path.clone();
        let mut frontier = self.frontier.clone();
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(sqlite(&path))?;
        {
            let mut entry_at = tx
                .prepare_cached("SELECT entry FROM tlog_entries WHERE sequence = ?1")
                .map_err(sqlite(&path))?;
            let mut put_entry = tx
                .prepare_cached("INSERT INTO tlog_entries (sequence, entry) VALUES (?1, ?2)")
                .map_err(sqlite(&path))?;
            let mut put_hash = tx
                .prepare_cached("INSERT INTO tlog_hashes (id, hash) VALUES (?1, ?2)")
                .map_err(sqlite(&path))?;
            for (sequence, bytes) in messages {
                let entry = log_entry(bytes);
                let size = frontier.size();
                if sequence != 0 && sequence <= size {
                    let logged: Option<Vec<u8>> = entry_at
                        .query_row([to_sql(sequence)], |r| r.get(0))
                        .optional()
                        .map_err(sqlite(&path))?;
                    if logged.as_deref() != Some(&entry[..]) {
                        return Err(LogStoreError::Conflict { sequence });
                    }
                    continue;
                }
                if sequence != size + 1 || sequence > i64::MAX as u64 {
                    return Err(LogStoreError::OutOfOrder {
                        size,
                        found: sequence,
                    });
                }
                put_entry
                    .execute(params![to_sql(sequence), &entry[..]])
                    .map_err(sqlite(&path))?;
                let first = stored_hash_count(size);
                for (i, h) in frontier.push(merkle::leaf_hash(&entry)).iter().enumerate() {
                    put_hash
                        .execute(params![to_sql(first + i as u64), &h.0[..]])
                        .map_err(sqlite(&path))?;
                }
            }
        }
        tx.execute(
            "UPDATE tlog_state SET size = ?1 WHERE id = 1",
            [to_sql(frontier.size())],
        )
        .map_err(sqlite(&path))?;
        tx.commit().map_err(sqlite(&path))?;
        // Only a committed transaction moves the frontier, so a failed one leaves the
        // store as it was.
        self.frontier = frontier;
        Ok(self.frontier.size())
    }

    /// The entry of `sequence`, if logged.
    ///
    /// # Errors
    /// [`LogStoreError::Sqlite`].
    pub fn entry(&self, sequence: u64) -> Result<Option<[u8; 32]>, LogStoreError> {
        let bytes: Option<Vec<u8>> = self
            .conn
            .query_row(
                "SELECT entry FROM tlog_entries WHERE sequence = ?1",
                [to_sql(sequence)],
                |r| r.get(0),
            )
            .optional()
            .map_err(sqlite(&self.path))?;
        Ok(bytes.and_then(|b| <[u8; 32]>::try_from(b.as_slice()).ok()))
    }

    /// The tree head at `size` (at most the log's size).
    ///
    /// # Errors
    /// [`LogStoreError::Proof`] for a size beyond the log; [`LogStoreError::Sqlite`].
    pub fn tree_hash(&self, size: u64) -> Result<Hash, LogStoreError> {
        self.check_size(size)?;
        merkle::tree_hash(size, self)
    }

    /// The inclusion proof of leaf `index` (sequence `index + 1`) in the tree of `size`.
    ///
    /// # Errors
    /// [`LogStoreError::Proof`]; [`LogStoreError::Sqlite`].
    pub fn inclusion_proof(&self, index: u64, size: u64) -> Result<Vec<Hash>, LogStoreError> {
        self.check_size(size)?;
        merkle::inclusion_proof(index, size, self).map_err(|e| self.proof_failure(e))
    }

    /// The consistency proof between the trees of `first` and `second` entries.
    ///
    /// # Errors
    /// [`LogStoreError::Proof`]; [`LogStoreError::Sqlite`].
    pub fn consistency_proof(&self, first: u64, second: u64) -> Result<Vec<Hash>, LogStoreError> {
        self.check_size(second)?;
        merkle::consistency_proof(first, second, self).map_err(|e| self.proof_failure(e))
    }

    fn check_size(&self, size: u64) -> Result<(), LogStoreError> {
        if size > self.size() {
            // A tree larger than the log: no leaf of it beyond the log can be proven.
            return Err(ProofError::IndexOutOfRange {
                index: size - 1,
                size: self.size(),
            }
            .into());
        }
        Ok(())
    }

    /// Every entry and stored hash, in order, as text: two stores are the same log
    /// exactly when these are equal.
    ///
    /// # Errors
    /// [`LogStoreError::Sqlite`].
    pub fn dump_for_comparison(&self) -> Result<String, LogStoreError> {
        let mut out = format!("size {}\n", self.size());
        let mut rows = |sql: &str, label: &str| -> Result<(), LogStoreError> {
            let mut stmt = self.conn.prepare(sql).map_err(sqlite(&self.path))?;
            let mut q = stmt.query([]).map_err(sqlite(&self.path))?;
            while let Some(r) = q.next().map_err(sqlite(&self.path))? {
                let id: i64 = r.get(0).map_err(sqlite(&self.path))?;
                let bytes: Vec<u8> = r.get(1).map_err(sqlite(&self.path))?;
                let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
                out.push_str(&format!("{label} {id} {hex}\n"));
            }
            Ok(())
        };
        rows(
            "SELECT sequence, entry FROM tlog_entries ORDER BY sequence",
            "entry",
        )?;
        rows("SELECT id, hash FROM tlog_hashes ORDER BY id", "hash")?;
        Ok(out)
    }
}

impl LogStore {
    fn proof_failure(&self, e: InclusionError<LogStoreError>) -> LogStoreError {
        match e {
            InclusionError::Proof(p) => LogStoreError::Proof(p),
            InclusionError::Read(e) => e,
            // The enum is non-exhaustive; a variant added later is reported as such.
            other => LogStoreError::Corrupt {
                path: self.path.clone(),
                reason: format!("proof failed: {other}"),
            },
        }
    }
}

impl HashReader for LogStore {
    type Error = LogStoreError;

    fn read_hashes(&self, indexes: &[u64]) -> Result<Vec<Hash>, LogStoreError> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT hash FROM tlog_hashes WHERE id = ?1")
            .map_err(sqlite(&self.path))?;
        indexes
            .iter()
            .map(|&i| {
                let bytes: Option<Vec<u8>> = stmt
                    .query_row([to_sql(i)], |r| r.get(0))
                    .optional()
                    .map_err(sqlite(&self.path))?;
                bytes
                    .as_deref()
                    .and_then(Hash::from_slice)
                    .ok_or_else(|| LogStoreError::Corrupt {
                        path: self.path.clone(),
                        reason: format!("stored hash {i} is missing"),
                    })
            })
            .collect()
    }
}

/// SQLite integers are signed. Sequences, sizes and hash numbers stay far below 2^63
/// (`append` refuses a sequence above it), so the conversions never clamp in practice.
fn to_sql(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// The columns read back are checked non-negative or written from `to_sql`.
fn from_sql(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

fn sqlite(path: &Path) -> impl Fn(rusqlite::Error) -> LogStoreError + '_ {
    move |source| LogStoreError::Sqlite {
        path: path.to_path_buf(),
        source,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn messages(range: std::ops::RangeInclusive<u64>) -> Vec<(u64, Vec<u8>)> {
        range
            .map(|s| (s, format!("message {s}").into_bytes()))
            .collect()
    }

    fn feed(store: &mut LogStore, msgs: &[(u64, Vec<u8>)]) -> Result<u64, LogStoreError> {
        store.append(msgs.iter().map(|(s, b)| (*s, b.as_slice())))
    }

    #[test]
    fn appending_in_batches_gives_the_log_of_one_batch_and_survives_reopening() {
        let dir = tempfile::tempdir().expect("tempdir");
        let all = messages(1..=100);
        let mut one = LogStore::open_in_memory().expect("open");
        feed(&mut one, &all).expect("append");
        let path = dir.path().join("tlog.sqlite");
        {
            let mut batched = LogStore::open(&path).expect("open");
            for chunk in all.chunks(7) {
                feed(&mut batched, chunk).expect("append");
            }
        }
        let reopened = LogStore::open(&path).expect("reopen");
        assert_eq!(reopened.size(), 100);
        assert_eq!(reopened.root(), one.root());
        assert_eq!(
            reopened.dump_for_comparison().expect("dump"),
            one.dump_for_comparison().expect("dump")
        );
        // The root of every size read from storage is the frontier's at that size.
        let mut f = Frontier::new();
        for (s, b) in &all {
            f.push(merkle::leaf_hash(&log_entry(b)));
            assert_eq!(reopened.tree_hash(*s).expect("root"), f.root());
        }
    }

    #[test]
    fn a_gap_or_a_changed_message_is_refused_and_changes_nothing() {
        let mut store = LogStore::open_in_memory().expect("open");
        feed(&mut store, &messages(1..=5)).expect("append");
        let before = store.dump_for_comparison().expect("dump");
        assert!(matches!(
            feed(&mut store, &messages(7..=8)),
            Err(LogStoreError::OutOfOrder { size: 5, found: 7 })
        ));
        assert!(matches!(
            store.append([(6, &b"six"[..]), (3, &b"not three"[..])]),
            Err(LogStoreError::Conflict { sequence: 3 })
        ));
        assert_eq!(store.dump_for_comparison().expect("dump"), before);
        assert_eq!(store.size(), 5);
        // A redelivery of logged messages is skipped.
        assert_eq!(feed(&mut store, &messages(3..=6)).expect("redelivery"), 6);
        assert_eq!(store.size(), 6);
    }
}
