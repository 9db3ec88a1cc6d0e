//! The case-head map: one Merkle tree (RFC 6962 hashing) over the head of every case,
//! so a checkpoint proves, for each case, which event was its last at that tree size.
//!
//! Leaves are sorted by case id (byte order; case ids are ASCII) and each case appears
//! once. A leaf's entry is
//!
//! ```text
//! u8 len(case_id) ‖ case_id (ASCII) ‖ u64 last_version (big-endian) ‖ 32-byte hash of the last event
//! ```
//!
//! and the map's root is MTH over the entries (the empty root when there is no case).
//! A checkpoint commits to it with the extension line
//! `case-heads/v1 <number of cases> <base64 root>` ([`extension_line`]).
//!
//! This module does not decide which event is a case's head (the caller folds the
//! verified chain); it builds the tree, proves one case's leaf and checks such proofs.

use crate::merkle::{self, Frontier, Hash, ProofError};

/// The prefix of the checkpoint extension line.
pub const EXTENSION_PREFIX: &str = "case-heads/v1";

/// The head of one case.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct CaseHead {
    /// The case id (1 to 64 of `[A-Za-z0-9_-]`).
    pub case_id: String,
    /// Its last version.
    pub version: u64,
    /// The hash of its last event (SHA-256 of the signed bytes).
    pub event_hash: [u8; 32],
}

impl CaseHead {
    /// The leaf entry, as the module header defines it.
    pub fn entry(&self) -> Vec<u8> {
        let id = self.case_id.as_bytes();
        let mut out = Vec::with_capacity(1 + id.len() + 8 + 32);
        // A valid case id is at most 64 bytes, checked before any entry is built.
        out.push(u8::try_from(id.len()).unwrap_or(u8::MAX));
        out.extend_from_slice(id);
        out.extend_from_slice(&self.version.to_be_bytes());
        out.extend_from_slice(&self.event_hash);
        out
    }

    /// The leaf hash of the entry.
    pub fn leaf_hash(&self) -> Hash {
        merkle::leaf_hash(&self.entry())
    }
}

/// Why a map or a case-head proof was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CaseHeadError {
    /// A case id that is not 1 to 64 of `[A-Za-z0-9_-]`.
    #[error("invalid case id {0:?}")]
    BadCaseId(String),
    /// The same case twice.
    #[error("case {0} appears twice")]
    Duplicate(String),
    /// The extension line does not parse.
    #[error("malformed case-heads extension line {0:?}")]
    BadExtension(String),
    /// The proof does not lead to the map's root.
    #[error("the case-head proof of case {case_id}")]
    Proof {
        /// The case.
        case_id: String,
        /// What failed.
        #[source]
        source: ProofError,
    },
}

fn check_case_id(id: &str) -> Result<(), CaseHeadError> {
    let ok = (1..=64).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(CaseHeadError::BadCaseId(id.to_owned()))
    }
}

/// The built map: heads in order and the tree's stored hashes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaseHeads {
    heads: Vec<CaseHead>,
    stored: Vec<Hash>,
    root: Hash,
}

/// A proof that one case's head is in a map.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaseHeadProof {
    /// The leaf's position among the sorted cases.
    pub index: u64,
    /// The number of cases in the map.
    pub count: u64,
    /// The inclusion proof.
    pub proof: Vec<Hash>,
}

impl CaseHeads {
    /// Builds the map from the heads in any order.
    ///
    /// # Errors
    /// [`CaseHeadError::BadCaseId`], [`CaseHeadError::Duplicate`].
    pub fn new(mut heads: Vec<CaseHead>) -> Result<Self, CaseHeadError> {
        for h in &heads {
            check_case_id(&h.case_id)?;
        }
        heads.sort_by(|a, b| a.case_id.as_bytes().cmp(b.case_id.as_bytes()));
        if let Some(w) = heads.windows(2).find(|w| w[0].case_id == w[1].case_id) {
            return Err(CaseHeadError::Duplicate(w[0].case_id.clone()));
        }
        let mut frontier = Frontier::new();
        let mut stored = Vec::with_capacity(heads.len() * 2);
        for h in &heads {
            stored.extend(frontier.push(h.leaf_hash()));
        }
        Ok(Self {
            root: frontier.root(),
            heads,
            stored,
        })
    }

    /// The map's root.
    pub fn root(&self) -> Hash {
        self.root
    }

    /// Number of cases.
    pub fn len(&self) -> u64 {
        self.heads.len() as u64
    }

    /// Whether the map has no case.
    pub fn is_empty(&self) -> bool {
        self.heads.is_empty()
    }

    /// The heads, sorted by case id.
    pub fn heads(&self) -> &[CaseHead] {
        &self.heads
    }

    /// The checkpoint extension line committing to this map.
    pub fn extension_line(&self) -> String {
        extension_line(self.len(), &self.root)
    }

    /// The head of `case_id` and the proof of its leaf; `None` when the map has no
    /// such case.
    pub fn prove(&self, case_id: &str) -> Option<(&CaseHead, CaseHeadProof)> {
        let i = self
            .heads
            .binary_search_by(|h| h.case_id.as_bytes().cmp(case_id.as_bytes()))
            .ok()?;
        let proof = merkle::inclusion_proof(i as u64, self.len(), &self.stored)
            .expect("the map holds every stored hash of its own tree");
        Some((
            &self.heads[i],
            CaseHeadProof {
                index: i as u64,
                count: self.len(),
                proof,
            },
        ))
    }
}

/// `case-heads/v1 <count> <base64 root>`.
pub fn extension_line(count: u64, root: &Hash) -> String {
    format!("{EXTENSION_PREFIX} {count} {}", root.to_base64())
}

/// The count and root of a `case-heads/v1` extension line.
///
/// # Errors
/// [`CaseHeadError::BadExtension`].
pub fn parse_extension_line(line: &str) -> Result<(u64, Hash), CaseHeadError> {
    let bad = || CaseHeadError::BadExtension(line.to_owned());
    let mut parts = line.split(' ');
    if parts.next() != Some(EXTENSION_PREFIX) {
        return Err(bad());
    }
    let count = parts
        .next()
        .and_then(crate::checkpoint::parse_decimal)
        .ok_or_else(bad)?;
    let root = parts
        .next()
        .and_then(|r| Hash::from_base64(r).ok())
        .ok_or_else(bad)?;
    if parts.next().is_some() {
        return Err(bad());
    }
    Ok((count, root))
}

/// Checks that `head` is leaf `proof.index` of a map of `proof.count` cases with root
/// `root`, and that `proof.count` is the count the extension line states.
///
/// # Errors
/// [`CaseHeadError::BadCaseId`]; [`CaseHeadError::Proof`] (with
/// [`ProofError::WrongLength`] also when the counts differ).
pub fn verify(
    head: &CaseHead,
    proof: &CaseHeadProof,
    count: u64,
    root: &Hash,
) -> Result<(), CaseHeadError> {
    check_case_id(&head.case_id)?;
    let fail = |source| CaseHeadError::Proof {
        case_id: head.case_id.clone(),
        source,
    };
    if proof.count != count {
        return Err(fail(ProofError::IndexOutOfRange {
            index: proof.index,
            size: count,
        }));
    }
    merkle::verify_inclusion(proof.index, count, &head.leaf_hash(), &proof.proof, root)
        .map_err(fail)
}
