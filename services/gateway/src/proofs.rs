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
//! This module does not sign or publish (see `checkpoint`); it reads.

use std::sync::{Arc, Mutex, PoisonError};

use casebus_bus::ops::{Ops, ScanStart};
use casebus_bus::subjects::{CHECKPOINTS_STREAM, checkpoint_subject, cosignatures_filter};
use casebus_timeline::LogStore;
use casebus_tlog::case_heads::CaseHeads;
use casebus_tlog::checkpoint::SignedCheckpoint;
use casebus_tlog::merkle::Hash;
use casebus_tlog::note::{Note, NoteVerifier};
use casebus_tlog::proof::TlogProof;

use crate::error::ReadError;

/// Cosignature messages read at most for one checkpoint (one per witness).
const MAX_WITNESSES: usize = 64;

/// What the proof reads need: a reader connection to the log, the origin and the key.
#[derive(Debug)]
pub struct ProofLog {
    store: Mutex<LogStore>,
    ops: Ops,
    origin: String,
    verifier: NoteVerifier,
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
        }
    }

    /// The log's origin.
    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// The checkpoint last published for the origin, with the cosignature lines of
    /// every witness whose last cosignature is of this very checkpoint.
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
        let subject = checkpoint_subject(&self.origin);
        let message = self
            .ops
            .last_on_subject(CHECKPOINTS_STREAM, &subject)
            .await
            .map_err(|e| ReadError::Checkpoints(e.to_string()))?
            .ok_or(ReadError::NoCheckpoint)?;
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
        let mut note = signed.note.clone();
        for cosigned in self.cosignatures().await {
            if cosigned.text() != note.text() {
                continue;
            }
            for line in cosigned.signatures() {
                let known = note
                    .signatures()
                    .iter()
                    .any(|s| s.name == line.name && s.id == line.id);
                // A note holds at most so many lines; past them, the rest are left out.
                if !known && note.add_signature(line.clone()).is_err() {
                    break;
                }
            }
        }
        Ok(Latest {
            text: note.to_text(),
            signed,
        })
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
            let mut store = this.store.lock().unwrap_or_else(PoisonError::into_inner);
            store.refresh().map_err(ReadError::Log)?;
            read(&store)
        })
        .await
        .map_err(|_| ReadError::Task)?
    }

    /// The inclusion proof of `CASES` sequence `sequence` under `latest`.
    ///
    /// # Errors
    /// [`ReadError::NotYetCheckpointed`] when the checkpoint does not cover it;
    /// [`ReadError::LogBehind`]; [`ReadError::Log`].
    pub async fn inclusion(
        self: &Arc<Self>,
        sequence: u64,
        latest: &Latest,
    ) -> Result<([u8; 32], Vec<Hash>), ReadError> {
        let size = latest.signed.checkpoint.size;
        if sequence == 0 || sequence > size {
            return Err(ReadError::NotYetCheckpointed);
        }
        self.read(move |store| {
            check_holds(store, size)?;
            let entry = store
                .entry(sequence)
                .map_err(ReadError::Log)?
                .ok_or(ReadError::LogBehind)?;
            let proof = store
                .inclusion_proof(sequence - 1, size)
                .map_err(ReadError::Log)?;
            Ok((entry, proof))
        })
        .await
    }

    /// The sequence of version `version` of `case_id` in the log, if logged.
    ///
    /// # Errors
    /// [`ReadError::Log`].
    pub async fn sequence_of(
        self: &Arc<Self>,
        case_id: String,
        version: u64,
    ) -> Result<Option<u64>, ReadError> {
        self.read(move |store| store.sequence_of(&case_id, version).map_err(ReadError::Log))
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
