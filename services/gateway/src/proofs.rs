//! The proof reads: the latest signed checkpoint (with the cosignatures the witnesses
//! published for it), an event's inclusion proof, a consistency proof between two
//! sizes, and a case's head proof, all under the checkpoint last published on
//! `CHECKPOINTS` for this gateway's origin, read from the transparency log file on a
//! connection of its own (the follower writes on another).
//!
//! **Invariant:** a proof tells nothing the caller could not see. The case-scoped proofs
//! answer only a caller who may see the case, by the same rule as GetTimeline (an
//! outsider gets the NOT_FOUND of a case that does not exist, audited alike), and carry
//! only hashes: the log entry (SHA-256 of the stored message), proof hashes, the head's
//! event hash.
//!
//! A watcher ([`ProofLog::watch`]) follows `CHECKPOINTS` so that a proof read costs no
//! round trip to NATS for the checkpoint and its cosignatures; each checkpoint's
//! signature and its agreement with the log are checked once, not per read.
//!
//! This module does not sign or publish (see `checkpoint`); it reads.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use casebus_bus::ops::{Ops, OpsError, ScanStart, StoredMessage};
use casebus_bus::subjects::{CHECKPOINTS_STREAM, checkpoint_subject, cosignatures_filter};
use casebus_timeline::LogStore;
use casebus_tlog::case_heads::CaseHeads;
use casebus_tlog::checkpoint::SignedCheckpoint;
use casebus_tlog::merkle::Hash;
use casebus_tlog::note::{Note, NoteVerifier};
use casebus_tlog::proof::TlogProof;

use tokio_util::sync::CancellationToken;

use crate::error::ReadError;

/// Cosignature messages read at most for one checkpoint (one per witness).
const MAX_WITNESSES: usize = 64;
/// Messages the checkpoint watcher reads at once while catching up.
const WATCH_BATCH: usize = 256;
/// How long one pull of the checkpoint watcher waits for news before asking again.
const WATCH_WAIT: Duration = Duration::from_secs(5);
/// The watcher's first pause after it lost the stream; it doubles up to the maximum.
const WATCH_RETRY_MIN: Duration = Duration::from_millis(250);
const WATCH_RETRY_MAX: Duration = Duration::from_secs(5);

/// What the proof reads need: a reader connection to the log, the origin and the key.
#[derive(Debug)]
pub struct ProofLog {
    store: Mutex<LogStore>,
    ops: Ops,
    origin: String,
    verifier: NoteVerifier,
    /// What [`ProofLog::watch`] last saw.
    watched: Mutex<Watched>,
    /// The last checkpoint message that opened and agreed with the log, by sequence.
    checked: Mutex<Option<(u64, SignedCheckpoint)>>,
}

/// What the checkpoint watcher has read of `CHECKPOINTS` for the origin.
#[derive(Debug, Clone, Default)]
struct Watched {
    /// True once the checkpoint reader has read what was stored when it started.
    checkpoint_live: bool,
    /// True once the cosignature reader has.
    cosignatures_live: bool,
    /// The origin's last checkpoint message.
    checkpoint: Option<StoredMessage>,
    /// Each witness's last cosigned note, by subject.
    cosignatures: BTreeMap<String, Note>,
}

/// The two readers of the watcher: NATS 2.9 allows one filter per consumer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Part {
    Checkpoint,
    Cosignatures,
}

impl Watched {
    /// The last checkpoint message and the cosignatures, while both readers are live.
    fn view(&self) -> Option<(Option<StoredMessage>, Vec<Note>)> {
        (self.checkpoint_live && self.cosignatures_live).then(|| {
            (
                self.checkpoint.clone(),
                self.cosignatures.values().cloned().collect(),
            )
        })
    }

    fn apply(&mut self, part: Part, messages: Vec<StoredMessage>) {
        for message in messages {
            match part {
                Part::Checkpoint => self.checkpoint = Some(message),
                Part::Cosignatures => {
                    if let Ok(note) = Note::parse(&message.payload) {
                        self.cosignatures.insert(message.subject, note);
                    }
                }
            }
        }
    }

    fn set_live(&mut self, part: Part, live: bool) {
        match part {
            Part::Checkpoint => {
                self.checkpoint_live = live;
                if !live {
                    self.checkpoint = None;
                }
            }
            Part::Cosignatures => {
                self.cosignatures_live = live;
                if !live {
                    self.cosignatures.clear();
                }
            }
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// An event's place in the log and its inclusion proof.
#[derive(Debug, Clone)]
pub struct Inclusion {
    /// Its `CASES` sequence (leaf index + 1).
    pub sequence: u64,
    /// Its log entry: the SHA-256 of the stored message.
    pub entry: [u8; 32],
    /// The audit path to the checkpoint's root.
    pub proof: Vec<Hash>,
}

/// The latest checkpoint with the cosignatures known for it.
#[derive(Debug, Clone)]
pub struct Latest {
    /// What it states.
    pub signed: SignedCheckpoint,
    /// The note text with the log's signature and every known cosignature.
    pub text: String,
}

impl ProofLog {
    /// Proofs from the log file `store` (a connection of its own) for `origin`, whose
    /// checkpoints `verifier` signs.
    pub fn new(store: LogStore, ops: Ops, origin: String, verifier: NoteVerifier) -> Self {
        Self {
            store: Mutex::new(store),
            ops,
            origin,
            verifier,
            watched: Mutex::default(),
            checked: Mutex::default(),
        }
    }

    /// The log's origin.
    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// The checkpoint last published for the origin, with the cosignature lines of
    /// every witness whose last cosignature is of this very checkpoint.
    ///
    /// While [`ProofLog::watch`] follows `CHECKPOINTS` this reads no NATS at all: it
    /// takes what the watcher last saw (so it lags the stream by the watcher's delivery,
    /// as any reader does). Otherwise, before the watcher has caught up or after it lost
    /// the stream, it reads the stream itself. A checkpoint's signature and its agreement
    /// with the log are checked once per checkpoint message.
    ///
    /// The checkpoint is served only when this gateway's log agrees with it (the same
    /// root at its size): a checkpoint signed with the log key that the log contradicts
    /// (a fork the publisher refused) is never handed out.
    ///
    /// # Errors
    /// [`ReadError::NoCheckpoint`] before the first; [`ReadError::LogBehind`] while the
    /// log has not reached its size; [`ReadError::Checkpoints`] when the stream cannot be
    /// read, or its last checkpoint does not open with the log key or contradicts the log.
    pub async fn latest(self: &Arc<Self>) -> Result<Latest, ReadError> {
        let watched = lock(&self.watched).view();
        let (message, cosigned) = match watched {
            Some((message, cosigned)) => (message.ok_or(ReadError::NoCheckpoint)?, cosigned),
            None => (
                self.last_checkpoint_message().await?,
                self.cosignatures().await,
            ),
        };
        let signed = self.checked(message).await?;
        let mut note = signed.note.clone();
        for cosigned in &cosigned {
            note.merge_signatures(cosigned);
        }
        Ok(Latest {
            text: note.to_text(),
            signed,
        })
    }

    /// The last checkpoint message of the origin, by direct get.
    async fn last_checkpoint_message(&self) -> Result<StoredMessage, ReadError> {
        self.ops
            .last_on_subject(CHECKPOINTS_STREAM, &checkpoint_subject(&self.origin))
            .await
            .map_err(|e| ReadError::Checkpoints(e.to_string()))?
            .ok_or(ReadError::NoCheckpoint)
    }

    /// The checkpoint `message` holds, opened with the log key and checked against the
    /// log; remembered by stream sequence once it passed, so a checkpoint is verified
    /// once and not on every read.
    async fn checked(
        self: &Arc<Self>,
        message: StoredMessage,
    ) -> Result<SignedCheckpoint, ReadError> {
        if let Some((sequence, signed)) = &*lock(&self.checked)
            && *sequence == message.sequence
        {
            return Ok(signed.clone());
        }
        let subject = &message.subject;
        let signed = SignedCheckpoint::open(&message.payload, &self.verifier, &self.origin)
            .map_err(|e| ReadError::Checkpoints(format!("the last checkpoint: {e}")))?;
        let (size, root) = (signed.checkpoint.size, signed.checkpoint.root);
        let agrees = self
            .read(move |store| {
                check_holds(store, size)?;
                Ok(store.tree_hash(size).map_err(ReadError::Log)? == root)
            })
            .await?;
        if !agrees {
            return Err(ReadError::Checkpoints(format!(
                "the last checkpoint on {subject} (stream sequence {}, size {size}) contradicts this gateway's log",
                message.sequence
            )));
        }
        *lock(&self.checked) = Some((message.sequence, signed.clone()));
        Ok(signed)
    }

    /// Follows `CHECKPOINTS` until `stop`: the origin's last checkpoint and each
    /// witness's last cosignature, so that [`ProofLog::latest`] needs no round trip.
    /// When the stream cannot be read (a server restart, a stream not provisioned yet)
    /// [`ProofLog::latest`] reads the stream itself until the watcher has caught up
    /// again.
    pub async fn watch(self: Arc<Self>, stop: CancellationToken) {
        tokio::join!(
            self.clone().follow(Part::Checkpoint, stop.clone()),
            self.follow(Part::Cosignatures, stop),
        );
    }

    async fn follow(self: Arc<Self>, part: Part, stop: CancellationToken) {
        let mut retry = WATCH_RETRY_MIN;
        loop {
            let result = tokio::select! {
                () = stop.cancelled() => return,
                result = self.follow_once(part, &stop) => result,
            };
            lock(&self.watched).set_live(part, false);
            match result {
                Ok(()) => return,
                Err(e) => {
                    tracing::warn!(error = %e, reader = ?part, retry_in = ?retry, "checkpoint watcher lost CHECKPOINTS; reading it per request meanwhile");
                }
            }
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep(retry) => {}
            }
            retry = (retry * 2).min(WATCH_RETRY_MAX);
        }
    }

    async fn follow_once(&self, part: Part, stop: &CancellationToken) -> Result<(), OpsError> {
        let filter = match part {
            Part::Checkpoint => checkpoint_subject(&self.origin),
            Part::Cosignatures => cosignatures_filter(&self.origin),
        };
        let mut scanner = self
            .ops
            .scan(
                CHECKPOINTS_STREAM,
                Some(&filter),
                ScanStart::LastPerSubject,
                WATCH_BATCH,
            )
            .await?;
        // What was stored when the scan began, then live.
        loop {
            let batch = scanner.fetch().await?;
            if batch.is_empty() {
                break;
            }
            lock(&self.watched).apply(part, batch);
        }
        lock(&self.watched).set_live(part, true);
        tracing::info!(filter = %filter, "checkpoint watcher following CHECKPOINTS");
        loop {
            let batch = tokio::select! {
                () = stop.cancelled() => break,
                batch = scanner.wait(WATCH_WAIT) => batch?,
            };
            if batch.is_empty() {
                // A quiet stream, or a server that lost the consumer: ask.
                scanner.check().await?;
                continue;
            }
            lock(&self.watched).apply(part, batch);
        }
        scanner.close().await;
        Ok(())
    }

    /// The last cosigned note each witness published for the origin; what cannot be
    /// read or parsed is left out (the caller's policy decides what it needs).
    async fn cosignatures(&self) -> Vec<Note> {
        let filter = cosignatures_filter(&self.origin);
        let Ok(mut scanner) = self
            .ops
            .scan(
                CHECKPOINTS_STREAM,
                Some(&filter),
                ScanStart::LastPerSubject,
                MAX_WITNESSES,
            )
            .await
        else {
            return Vec::new();
        };
        let mut notes = Vec::new();
        if scanner.pending_at_start() > 0
            && let Ok(messages) = scanner.fetch().await
        {
            notes.extend(messages.iter().filter_map(|m| Note::parse(&m.payload).ok()));
        }
        scanner.close().await;
        notes
    }

    /// Runs `read` on the log connection, brought up to the follower's size first, on a
    /// blocking thread.
    async fn read<T, F>(self: &Arc<Self>, read: F) -> Result<T, ReadError>
    where
        T: Send + 'static,
        F: FnOnce(&LogStore) -> Result<T, ReadError> + Send + 'static,
    {
        let this = self.clone();
        tokio::task::spawn_blocking(move || {
            let mut store = lock(&this.store);
            store.refresh().map_err(ReadError::Log)?;
            read(&store)
        })
        .await
        .map_err(|_| ReadError::Task)?
    }

    /// The log sequence of version `version` of `case_id` with its entry and inclusion
    /// proof under `latest`, in one read of the log; `None` when the log holds no such
    /// version.
    ///
    /// # Errors
    /// [`ReadError::NotYetCheckpointed`] when the checkpoint does not cover it;
    /// [`ReadError::LogBehind`]; [`ReadError::Log`].
    pub async fn inclusion_of(
        self: &Arc<Self>,
        case_id: String,
        version: u64,
        latest: &Latest,
    ) -> Result<Option<Inclusion>, ReadError> {
        let size = latest.signed.checkpoint.size;
        self.read(move |store| {
            let Some(sequence) = store
                .sequence_of(&case_id, version)
                .map_err(ReadError::Log)?
            else {
                return Ok(None);
            };
            if sequence > size {
                return Err(ReadError::NotYetCheckpointed);
            }
            check_holds(store, size)?;
            let entry = store
                .entry(sequence)
                .map_err(ReadError::Log)?
                .ok_or(ReadError::LogBehind)?;
            let proof = store
                .inclusion_proof(sequence - 1, size)
                .map_err(ReadError::Log)?;
            Ok(Some(Inclusion {
                sequence,
                entry,
                proof,
            }))
        })
        .await
    }

    /// The consistency proof between `first` and `second`.
    ///
    /// # Errors
    /// [`ReadError::InvalidArgument`] for sizes out of order; [`ReadError::LogBehind`]
    /// for a size the log does not hold; [`ReadError::Log`].
    pub async fn consistency(
        self: &Arc<Self>,
        first: u64,
        second: u64,
    ) -> Result<Vec<Hash>, ReadError> {
        if first > second {
            return Err(ReadError::invalid(
                "first_size",
                format!("{first} is larger than second_size {second}"),
            ));
        }
        self.read(move |store| {
            check_holds(store, second)?;
            store
                .consistency_proof(first, second)
                .map_err(ReadError::Log)
        })
        .await
    }

    /// The case-head map at `size`.
    ///
    /// # Errors
    /// [`ReadError::LogBehind`]; [`ReadError::Log`]; [`ReadError::Checkpoints`] when
    /// the map cannot be built.
    pub async fn heads(self: &Arc<Self>, size: u64) -> Result<CaseHeads, ReadError> {
        self.read(move |store| {
            check_holds(store, size)?;
            let heads = store.heads_at(size).map_err(ReadError::Log)?;
            CaseHeads::new(heads).map_err(|e| ReadError::Checkpoints(e.to_string()))
        })
        .await
    }
}

/// This gateway's log must hold the tree of `size` (another gateway's checkpoint may be
/// ahead of it).
fn check_holds(store: &LogStore, size: u64) -> Result<(), ReadError> {
    if store.size() < size {
        return Err(ReadError::LogBehind);
    }
    Ok(())
}

/// The `tlog-proof@v1` text of an inclusion proof under `latest`.
pub fn tlog_proof(index: u64, proof: &[Hash], latest: &Latest) -> String {
    TlogProof {
        extra: None,
        index,
        proof: proof.to_vec(),
        checkpoint: latest.text.clone(),
    }
    .to_text()
}

/// Hashes as the wire carries them.
pub fn hash_bytes(hashes: &[Hash]) -> Vec<Vec<u8>> {
    hashes.iter().map(|h| h.0.to_vec()).collect()
}
