//! The C2SP `tlog-proof@v1` text: an offline proof that an entry is in the log.
//!
//! ```text
//! c2sp.org/tlog-proof@v1
//! extra <base64>            (optional)
//! index <leaf index>
//! <base64 hash>             (zero or more: the inclusion proof, leaf's sibling first)
//!
//! <the signed checkpoint, verbatim>
//! ```
//!
//! This module does not decide which checkpoint or witnesses to trust: [`TlogProof::verify`]
//! takes the log key and origin, and the caller counts cosignatures on the checkpoint
//! it returns.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

use crate::checkpoint::{CheckpointError, SignedCheckpoint, parse_decimal};
use crate::merkle::{Hash, ProofError, verify_inclusion};
use crate::note::NoteVerifier;

/// The first line.
pub const HEADER: &str = "c2sp.org/tlog-proof@v1";

/// Why a proof text was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TlogProofError {
    /// The text is not a `tlog-proof@v1`.
    #[error("malformed tlog-proof: {0}")]
    Malformed(&'static str),
    /// The checkpoint inside is refused.
    #[error("the proof's checkpoint")]
    Checkpoint(#[from] CheckpointError),
    /// The inclusion proof does not lead to the checkpoint's root.
    #[error("the inclusion proof of leaf {index}")]
    Inclusion {
        /// The leaf index.
        index: u64,
        /// What failed.
        #[source]
        source: ProofError,
    },
}

/// A parsed `tlog-proof@v1`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlogProof {
    /// Opaque, unauthenticated extra data.
    pub extra: Option<Vec<u8>>,
    /// Zero-based leaf index.
    pub index: u64,
    /// The inclusion proof, from the leaf's sibling up to the root's child.
    pub proof: Vec<Hash>,
    /// The signed checkpoint, verbatim (ending in a newline).
    pub checkpoint: String,
}

impl TlogProof {
    /// The proof text.
    pub fn to_text(&self) -> String {
        let mut out = format!("{HEADER}\n");
        if let Some(extra) = &self.extra {
            out.push_str(&format!("extra {}\n", STANDARD.encode(extra)));
        }
        out.push_str(&format!("index {}\n", self.index));
        for h in &self.proof {
            out.push_str(&h.to_base64());
            out.push('\n');
        }
        out.push('\n');
        out.push_str(&self.checkpoint);
        out
    }

    /// Parses a proof text; checks nothing cryptographic (see [`TlogProof::verify`]).
    ///
    /// # Errors
    /// [`TlogProofError::Malformed`] naming the line at fault.
    pub fn parse(text: &str) -> Result<Self, TlogProofError> {
        let (head, checkpoint) = text.split_once("\n\n").ok_or(TlogProofError::Malformed(
            "no empty line before the checkpoint",
        ))?;
        let mut lines = head.split('\n').peekable();
        if lines.next() != Some(HEADER) {
            return Err(TlogProofError::Malformed(
                "the first line is not c2sp.org/tlog-proof@v1",
            ));
        }
        let mut extra = None;
        if let Some(line) = lines.peek()
            && let Some(b64) = line.strip_prefix("extra ")
        {
            extra = Some(
                STANDARD
                    .decode(b64)
                    .map_err(|_| TlogProofError::Malformed("the extra data is not base64"))?,
            );
            lines.next();
        }
        let index = lines
            .next()
            .and_then(|l| l.strip_prefix("index "))
            .ok_or(TlogProofError::Malformed("no index line"))?;
        let index = parse_decimal(index).ok_or(TlogProofError::Malformed(
            "the index is not a decimal without leading zeroes",
        ))?;
        let proof = lines
            .map(|l| {
                Hash::from_base64(l).map_err(|_| {
                    TlogProofError::Malformed("a proof line is not the base64 of 32 bytes")
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        if checkpoint.is_empty() || !checkpoint.ends_with('\n') {
            return Err(TlogProofError::Malformed(
                "the checkpoint is missing or does not end in a newline",
            ));
        }
        Ok(Self {
            extra,
            index,
            proof,
            checkpoint: checkpoint.to_owned(),
        })
    }

    /// Checks that `leaf` (a leaf hash) is entry `index` of the tree the checkpoint
    /// states, and that the log key `log` signed that checkpoint for `origin`.
    /// Returns the checkpoint, so the caller can count its cosignatures.
    ///
    /// # Errors
    /// [`TlogProofError::Checkpoint`] or [`TlogProofError::Inclusion`].
    pub fn verify(
        &self,
        leaf: &Hash,
        log: &NoteVerifier,
        origin: &str,
    ) -> Result<SignedCheckpoint, TlogProofError> {
        let signed = SignedCheckpoint::open(self.checkpoint.as_bytes(), log, origin)?;
        verify_inclusion(
            self.index,
            signed.checkpoint.size,
            leaf,
            &self.proof,
            &signed.checkpoint.root,
        )
        .map_err(|source| TlogProofError::Inclusion {
            index: self.index,
            source,
        })?;
        Ok(signed)
    }
}
