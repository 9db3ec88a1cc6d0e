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
//! The same transaction keeps the **case heads** the log's checkpoints commit to
//! (`casebus_tlog::case_heads`): `tlog_heads` has one row per message that extends its
//! case's chain (it decodes as a signed event whose version follows the case's head
//! version and whose `prev_event_hash` is the head's hash, empty at version 1), at its
//! sequence, so [`LogStore::heads_at`] gives every case's head at any log size. The
//! rule reads the stored bytes only, not the office registry: signatures are not
//! checked, so the map is a function of the log's own messages, rebuilt identically from
//! the stream at any time, and recomputable by anyone who reads the stream (a message
//! signed by no known key but chaining correctly would be a head here while the
//! projection dead-letters it; appenders never store one, and a bundle's verifier checks
//! every signature anyway).
//!
//! The file is separate from the projection so that the log's schema and its rebuild
//! never touch the projection's migrations, and so that one can be rebuilt without the
//! other. This module does not read the stream (the gateway's log follower does) and
//! does not sign anything.

use std::path::{Path, PathBuf};

use prost::Message as _;
use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};
use sha2::{Digest, Sha256};

use casebus_integrity::EventHash;
use casebus_proto::CaseId;
use casebus_proto::event::v1::{Event, SignedEvent};
use casebus_tlog::case_heads::CaseHead;
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

/// 2: case heads (`tlog_heads`). A version 1 file with entries has none, and is
/// refused; a version 1 file without entries is upgraded.
const SCHEMA_VERSION: i64 = 2;

const SCHEMA: &str = r"
-- The log's size: entries 1..size are logged. Exactly one row.
CREATE TABLE IF NOT EXISTS tlog_state (
    id             INTEGER PRIMARY KEY CHECK (id = 1),
    schema_version INTEGER NOT NULL,
    size           INTEGER NOT NULL CHECK (size >= 0)
);
INSERT OR IGNORE INTO tlog_state (id, schema_version, size) VALUES (1, 2, 0);
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
-- Each message that extends its case's chain: the case's head from its sequence on.
CREATE TABLE IF NOT EXISTS tlog_heads (
    case_id  TEXT NOT NULL,
    sequence INTEGER NOT NULL,
    version  INTEGER NOT NULL CHECK (version >= 1),
    hash     BLOB NOT NULL CHECK (length(hash) = 32),
    PRIMARY KEY (case_id, sequence)
) WITHOUT ROWID;
CREATE UNIQUE INDEX IF NOT EXISTS tlog_heads_by_version ON tlog_heads (case_id, version);
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
        if version < SCHEMA_VERSION {
            if size > 0 {
                return Err(LogStoreError::Corrupt {
                    path,
                    reason: format!(
                        "schema version {version} keeps no case heads; delete the file (with the gateway stopped) to rebuild it from the stream"
                    ),
                });
            }
            conn.execute(
                "UPDATE tlog_state SET schema_version = ?1 WHERE id = 1",
                [SCHEMA_VERSION],
            )
            .map_err(sqlite(&path))?;
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

    /// Reads the size again, for a second connection to a log another one appends to
    /// (the gateway's proofs are read beside its follower), and returns it.
    ///
    /// # Errors
    /// [`LogStoreError::Sqlite`]; [`LogStoreError::Corrupt`] when the hashes do not
    /// match the size.
    pub fn refresh(&mut self) -> Result<u64, LogStoreError> {
        let size: i64 = self
            .conn
            .query_row("SELECT size FROM tlog_state WHERE id = 1", [], |r| r.get(0))
            .map_err(sqlite(&self.path))?;
        let size = from_sql(size);
        if size != self.frontier.size() {
            let frontier = Frontier::load(size, &*self)?;
            self.frontier = frontier;
        }
        Ok(size)
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
            let mut head_of = tx
                .prepare_cached(
                    "SELECT version, hash FROM tlog_heads WHERE case_id = ?1 ORDER BY sequence DESC LIMIT 1",
                )
                .map_err(sqlite(&path))?;
            let mut put_head = tx
                .prepare_cached(
                    "INSERT INTO tlog_heads (case_id, sequence, version, hash) VALUES (?1, ?2, ?3, ?4)",
                )
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
                if let Some(link) = ChainLink::of(bytes) {
                    let head: Option<(i64, Vec<u8>)> = head_of
                        .query_row([&link.case_id], |r| Ok((r.get(0)?, r.get(1)?)))
                        .optional()
                        .map_err(sqlite(&path))?;
                    let extends = match (&head, link.prev) {
                        (None, None) => link.version == 1,
                        (Some((version, hash)), Some(prev)) => {
                            link.version == from_sql(*version) + 1 && hash[..] == prev[..]
                        }
                        _ => false,
                    };
                    if extends {
                        put_head
                            .execute(params![
                                &link.case_id,
                                to_sql(sequence),
                                to_sql(link.version),
                                &link.hash[..]
                            ])
                            .map_err(sqlite(&path))?;
                    }
                }
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

    /// Every case's head at log size `size`: for each case, the last message at or
    /// before sequence `size` that extended its chain. Unsorted.
    ///
    /// # Errors
    /// [`LogStoreError::Proof`] for a size beyond the log; [`LogStoreError::Sqlite`].
    pub fn heads_at(&self, size: u64) -> Result<Vec<CaseHead>, LogStoreError> {
        self.check_size(size)?;
        // SQLite takes the bare columns of an aggregate query from the row holding the
        // max(), so each case's row is the one at its greatest sequence up to `size`.
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT case_id, max(sequence), version, hash FROM tlog_heads WHERE sequence <= ?1 GROUP BY case_id",
            )
            .map_err(sqlite(&self.path))?;
        let rows = stmt
            .query_map([to_sql(size)], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, i64>(2)?,
                    r.get::<_, Vec<u8>>(3)?,
                ))
            })
            .map_err(sqlite(&self.path))?;
        let mut out = Vec::new();
        for row in rows {
            let (case_id, version, hash) = row.map_err(sqlite(&self.path))?;
            let event_hash =
                <[u8; 32]>::try_from(hash.as_slice()).map_err(|_| LogStoreError::Corrupt {
                    path: self.path.clone(),
                    reason: format!("the head hash of case {case_id} is not 32 bytes"),
                })?;
            out.push(CaseHead {
                case_id,
                version: from_sql(version),
                event_hash,
            });
        }
        Ok(out)
    }

    /// The sequence of version `version` of case `case_id`, when that event extended
    /// its case's chain in the log.
    ///
    /// # Errors
    /// [`LogStoreError::Sqlite`].
    pub fn sequence_of(&self, case_id: &str, version: u64) -> Result<Option<u64>, LogStoreError> {
        let sequence: Option<i64> = self
            .conn
            .query_row(
                "SELECT sequence FROM tlog_heads WHERE case_id = ?1 AND version = ?2",
                params![case_id, to_sql(version)],
                |r| r.get(0),
            )
            .optional()
            .map_err(sqlite(&self.path))?;
        Ok(sequence.map(from_sql))
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
        rows(
            "SELECT sequence, CAST(case_id || ':' || version || ':' || hex(hash) AS BLOB) FROM tlog_heads ORDER BY sequence",
            "head",
        )?;
        Ok(out)
    }
}

/// What a stored message says about its case's chain, when it decodes as a signed
/// event with a valid case id: the fields the head rule needs.
struct ChainLink {
    case_id: String,
    version: u64,
    /// `prev_event_hash`: `None` when empty (a first event must have none).
    prev: Option<[u8; 32]>,
    /// The event hash (SHA-256 of the event bytes inside the wrapper).
    hash: [u8; 32],
}

impl ChainLink {
    fn of(bytes: &[u8]) -> Option<Self> {
        let signed = SignedEvent::decode(bytes).ok()?;
        if signed.event.is_empty() {
            return None;
        }
        let event = Event::decode(signed.event.as_slice()).ok()?;
        CaseId::new(&event.case_id).ok()?;
        let prev = match event.prev_event_hash.len() {
            0 => None,
            _ => Some(<[u8; 32]>::try_from(event.prev_event_hash.as_slice()).ok()?),
        };
        if event.case_version == 0 || event.case_version > i64::MAX as u64 {
            return None;
        }
        Some(Self {
            case_id: event.case_id,
            version: event.case_version,
            prev,
            hash: EventHash::of(&signed.event).0,
        })
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

    /// The stored bytes of an (unsigned) event of `case_id` at `version` after `prev`.
    fn event(
        case_id: &str,
        version: u64,
        prev: Option<[u8; 32]>,
        note: &str,
    ) -> (Vec<u8>, [u8; 32]) {
        let event = Event {
            case_id: case_id.into(),
            case_version: version,
            prev_event_hash: prev.map(|p| p.to_vec()).unwrap_or_default(),
            actor: note.into(),
            ..Default::default()
        }
        .encode_to_vec();
        let hash = EventHash::of(&event).0;
        let signed = SignedEvent {
            event,
            signature: vec![0; 64],
            key_id: "customs:ningbo#2026".into(),
        };
        (signed.encode_to_vec(), hash)
    }

    fn head(case_id: &str, version: u64, event_hash: [u8; 32]) -> CaseHead {
        CaseHead {
            case_id: case_id.into(),
            version,
            event_hash,
        }
    }

    #[test]
    fn case_heads_follow_each_chain_at_every_size_and_ignore_what_does_not_extend_it() {
        let (a1, ha1) = event("A", 1, None, "a1");
        let (b1, hb1) = event("B", 1, None, "b1");
        let (a2, ha2) = event("A", 2, Some(ha1), "a2");
        // Not heads: a second version 2 of A, a version 2 of B after the wrong hash, a
        // first event with a previous hash, and bytes that are no event.
        let (a2_again, _) = event("A", 2, Some(ha1), "a2 again");
        let (b2_wrong, _) = event("B", 2, Some(ha1), "b2 wrong");
        let (c1_linked, _) = event("C", 1, Some(ha1), "c1");
        let (a3, ha3) = event("A", 3, Some(ha2), "a3");
        let messages: Vec<Vec<u8>> = vec![
            a1,
            b1,
            b"not an event".to_vec(),
            a2,
            a2_again,
            b2_wrong,
            c1_linked,
            a3,
        ];
        let mut store = LogStore::open_in_memory().expect("open");
        store
            .append(
                messages
                    .iter()
                    .enumerate()
                    .map(|(i, m)| (i as u64 + 1, m.as_slice())),
            )
            .expect("append");
        let sorted = |size| {
            let mut heads = store.heads_at(size).expect("heads");
            heads.sort();
            heads
        };
        assert_eq!(sorted(0), vec![]);
        assert_eq!(sorted(1), vec![head("A", 1, ha1)]);
        assert_eq!(sorted(3), vec![head("A", 1, ha1), head("B", 1, hb1)]);
        assert_eq!(sorted(7), vec![head("A", 2, ha2), head("B", 1, hb1)]);
        assert_eq!(sorted(8), vec![head("A", 3, ha3), head("B", 1, hb1)]);
        assert_eq!(store.sequence_of("A", 2).expect("read"), Some(4));
        assert_eq!(store.sequence_of("A", 3).expect("read"), Some(8));
        assert_eq!(store.sequence_of("C", 1).expect("read"), None);
        assert!(matches!(store.heads_at(9), Err(LogStoreError::Proof(_))));

        // Fed in other batches, the heads are the same.
        let mut batched = LogStore::open_in_memory().expect("open");
        for (i, m) in messages.iter().enumerate() {
            batched
                .append([(i as u64 + 1, m.as_slice())])
                .expect("append");
        }
        assert_eq!(
            batched.dump_for_comparison().expect("dump"),
            store.dump_for_comparison().expect("dump")
        );
    }

    #[test]
    fn a_version_1_file_with_entries_is_refused_and_an_empty_one_upgraded() {
        let dir = tempfile::tempdir().expect("tempdir");
        for (name, size) in [("empty.tlog", 0), ("full.tlog", 1)] {
            let path = dir.path().join(name);
            {
                let mut store = LogStore::open(&path).expect("open");
                if size > 0 {
                    store.append([(1, &b"one"[..])]).expect("append");
                }
                store
                    .conn
                    .execute("UPDATE tlog_state SET schema_version = 1", [])
                    .expect("downgrade");
            }
            match LogStore::open(&path) {
                Ok(store) => assert_eq!(size, 0, "{:?}", store),
                Err(e) => {
                    assert_eq!(size, 1);
                    assert!(e.to_string().contains("keeps no case heads"), "{e}");
                }
            }
        }
    }
}
