//! The checkpoint publisher: signs a C2SP checkpoint of the transparency log with the
//! log's key (`--log-key`) every `--checkpoint-every` entries or `--checkpoint-interval`,
//! with the `case-heads/v1` extension line over every case's head at that same size,
//! and publishes it on `CHECKPOINTS`, subject `checkpoint.<origin token>`.
//!
//! **Invariant:** no two inconsistent checkpoints of one origin are published. Before
//! each publish the last checkpoint on the subject is read back: it must be signed by
//! this log key for this origin, and the log must hold its tree (same root at its size)
//! and its case heads (same extension line); otherwise the publisher refuses, logs at
//! error level and counts the refusal, and publishes nothing until an operator looks.
//! The publish then expects that message to be the subject's last
//! (`Nats-Expected-Last-Subject-Sequence`), so two gateways signing for one origin
//! cannot fork it: the one that loses the race reads the winner's checkpoint next time
//! and checks it like any other.
//!
//! The case heads come from the log's own store (`LogStore::heads_at`), written in the
//! same transaction as the entries, so the map is that of exactly the tree size signed;
//! the projection, which advances on its own consumer, is not consulted.
//!
//! This module runs on the log follower's thread ([`crate::tlog::follow`]); it does
//! not serve proofs.

use std::time::{Duration, Instant};

use prometheus::{IntCounter, IntGauge};

use casebus_bus::ops::{Ops, OpsError, PublishOptions};
use casebus_bus::subjects::{CHECKPOINTS_STREAM, checkpoint_subject};
use casebus_timeline::{LogStore, LogStoreError};
use casebus_tlog::case_heads::{CaseHeadError, CaseHeads};
use casebus_tlog::checkpoint::{Checkpoint, CheckpointError as FormatError, SignedCheckpoint};
use casebus_tlog::note::{NoteSigner, NoteVerifier};

/// Why a round of the publisher failed or refused to publish.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CheckpointError {
    /// Reading or publishing on `CHECKPOINTS` failed.
    #[error("checkpoints stream")]
    Stream(#[source] OpsError),
    /// Reading the log failed.
    #[error("transparency log")]
    Store(#[source] LogStoreError),
    /// The last checkpoint on the subject is not one of this log key for this origin.
    #[error("the last checkpoint on {subject} (stream sequence {sequence}) is not this log's")]
    Foreign {
        /// The subject.
        subject: String,
        /// Its stream sequence.
        sequence: u64,
        /// Why it was refused.
        #[source]
        source: FormatError,
    },
    /// The last checkpoint on the subject disagrees with the log: a fork.
    #[error(
        "the last checkpoint on {subject} (stream sequence {sequence}, tree size {size}) is inconsistent with the log: {reason}"
    )]
    Inconsistent {
        /// The subject.
        subject: String,
        /// Its stream sequence.
        sequence: u64,
        /// Its tree size.
        size: u64,
        /// What differs.
        reason: &'static str,
    },
    /// The case-head map could not be built (a case id the log should never hold).
    #[error("case-head map")]
    Heads(#[source] CaseHeadError),
    /// The checkpoint could not be signed.
    #[error("signing the checkpoint")]
    Sign(#[source] FormatError),
}

impl CheckpointError {
    /// True when the refusal means the published record and the log disagree, which
    /// an operator must look into.
    pub fn is_refusal(&self) -> bool {
        matches!(self, Self::Foreign { .. } | Self::Inconsistent { .. })
    }
}

/// What one round did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Round {
    /// Not due, or the log has not grown since the last checkpoint.
    Idle,
    /// A checkpoint of this size was published at this stream sequence.
    Published {
        /// Tree size.
        size: u64,
        /// Its sequence in `CHECKPOINTS`.
        sequence: u64,
    },
    /// The subject already holds a (consistent) checkpoint at least as large.
    UpToDate {
        /// Its tree size.
        size: u64,
    },
    /// Another publisher stored a checkpoint between the read and the publish.
    Raced,
    /// The subject's last checkpoint is larger than this log: it is checked once the
    /// log has caught up with it.
    Behind {
        /// Its tree size.
        checkpoint: u64,
    },
}

/// When and how checkpoints are signed.
#[derive(Debug, Clone)]
pub struct CheckpointSettings {
    /// The log's key.
    pub signer: NoteSigner,
    /// The log's origin line.
    pub origin: String,
    /// Publish once the log has grown by this many entries.
    pub every: u64,
    /// Publish once this much time has passed and the log has grown at all.
    pub interval: Duration,
}

/// The publisher's metrics.
#[derive(Debug, Clone)]
pub struct CheckpointMetrics {
    /// Tree size of the last checkpoint published or found consistent on the stream.
    pub size: IntGauge,
    /// Rounds refused because the stream's last checkpoint disagrees with the log.
    pub refusals: IntCounter,
}

/// Signs and publishes checkpoints; one per gateway, on the log follower's thread.
#[derive(Debug)]
pub struct CheckpointPublisher {
    ops: Ops,
    settings: CheckpointSettings,
    verifier: NoteVerifier,
    subject: String,
    metrics: CheckpointMetrics,
    /// The tree size last published or found on the stream; `None` before the first
    /// round.
    known: Option<u64>,
    last_round: Instant,
}

impl CheckpointPublisher {
    /// A publisher for `settings.origin` over `ops`.
    pub fn new(ops: Ops, settings: CheckpointSettings, metrics: CheckpointMetrics) -> Self {
        Self {
            ops,
            verifier: settings.signer.verifier(),
            subject: checkpoint_subject(&settings.origin),
            settings,
            metrics,
            known: None,
            last_round: Instant::now(),
        }
    }

    /// The subject checkpoints are published on.
    pub fn subject(&self) -> &str {
        &self.subject
    }

    /// Publishes a checkpoint of `store` when one is due: at the first round, once the
    /// log has grown by `every` entries, or once `interval` has passed and it has grown.
    ///
    /// # Errors
    /// [`CheckpointError::Foreign`] and [`CheckpointError::Inconsistent`] when the
    /// stream's last checkpoint is refused (counted in `refusals`; the next attempt
    /// waits an interval); the others when reading, signing or publishing failed.
    pub async fn round(&mut self, store: &LogStore) -> Result<Round, CheckpointError> {
        let size = store.size();
        if let Some(known) = self.known {
            let grown = size.saturating_sub(known);
            let due = grown >= self.settings.every
                || (grown > 0 && self.last_round.elapsed() >= self.settings.interval);
            if !due {
                return Ok(Round::Idle);
            }
        } else if size == 0 {
            return Ok(Round::Idle);
        }
        self.last_round = Instant::now();
        let result = self.publish(store).await;
        match &result {
            Ok(Round::Published { size, .. } | Round::UpToDate { size }) => {
                self.known = Some(*size);
                self.metrics
                    .size
                    .set(i64::try_from(*size).unwrap_or(i64::MAX));
            }
            Ok(Round::Behind { .. }) => {
                // Wait for the log to grow before looking again.
                self.known = Some(size);
            }
            Err(e) if e.is_refusal() => {
                self.metrics.refusals.inc();
                // Wait an interval before trying again, without forgetting what was known.
                self.known.get_or_insert(size);
            }
            _ => {}
        }
        result
    }

    async fn publish(&self, store: &LogStore) -> Result<Round, CheckpointError> {
        let size = store.size();
        let last = self
            .ops
            .last_on_subject(CHECKPOINTS_STREAM, &self.subject)
            .await
            .map_err(CheckpointError::Stream)?;
        let expected = match last {
            None => 0,
            Some(message) => {
                let previous =
                    SignedCheckpoint::open(&message.payload, &self.verifier, &self.settings.origin)
                        .map_err(|source| CheckpointError::Foreign {
                            subject: self.subject.clone(),
                            sequence: message.sequence,
                            source,
                        })?
                        .checkpoint;
                if previous.size > size {
                    // Another gateway's log is ahead of ours: check it once ours has
                    // caught up.
                    return Ok(Round::Behind {
                        checkpoint: previous.size,
                    });
                }
                let inconsistent = |reason| CheckpointError::Inconsistent {
                    subject: self.subject.clone(),
                    sequence: message.sequence,
                    size: previous.size,
                    reason,
                };
                let root = store
                    .tree_hash(previous.size)
                    .map_err(CheckpointError::Store)?;
                if root != previous.root {
                    return Err(inconsistent("its root hash is not the log's at its size"));
                }
                let heads = self.heads_line(store, previous.size)?;
                if previous.extensions != [heads.clone()] {
                    return Err(inconsistent(
                        "its case-heads line is not the log's at its size",
                    ));
                }
                if previous.size == size {
                    return Ok(Round::UpToDate { size });
                }
                message.sequence
            }
        };
        let checkpoint = Checkpoint {
            origin: self.settings.origin.clone(),
            size,
            root: store.root(),
            extensions: vec![self.heads_line(store, size)?],
        };
        let note = checkpoint
            .sign(&self.settings.signer)
            .map_err(CheckpointError::Sign)?;
        let published = self
            .ops
            .publish(
                &self.subject,
                note.to_text().into_bytes().into(),
                &[],
                &PublishOptions {
                    // The subject names the origin: two logs of one stream (two origins)
                    // reach the same size and root, and JetStream's duplicate window
                    // would drop the second's checkpoint under an id without it.
                    message_id: Some(format!(
                        "{}-{size}-{}",
                        self.subject,
                        &checkpoint.root.to_hex()[..16]
                    )),
                    expected_last_subject_sequence: Some(expected),
                },
            )
            .await;
        match published {
            Ok(p) => Ok(Round::Published {
                size,
                sequence: p.sequence,
            }),
            Err(OpsError::WrongLastSequence { .. }) => Ok(Round::Raced),
            Err(e) => Err(CheckpointError::Stream(e)),
        }
    }

    fn heads_line(&self, store: &LogStore, size: u64) -> Result<String, CheckpointError> {
        let heads = store.heads_at(size).map_err(CheckpointError::Store)?;
        Ok(CaseHeads::new(heads)
            .map_err(CheckpointError::Heads)?
            .extension_line())
    }
}
