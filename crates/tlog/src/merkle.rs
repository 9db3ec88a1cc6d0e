//! RFC 6962 / RFC 9162 Merkle trees: hashing, tree heads, inclusion and consistency
//! proofs, and the compact storage layout the log keeps.
//!
//! Storage: the log stores one hash per *complete* subtree (2^level leaves starting at
//! a multiple of 2^level), numbered in the order an append-only log creates them:
//! appending leaf `n` stores its leaf hash, then the hash of every complete subtree that
//! leaf `n` completes, lowest level first. A tree of `size` leaves has
//! `2·size − popcount(size)` of them ([`stored_hash_count`]), and the hash of the
//! subtree at `(level, index)` is number [`stored_hash_index`]. Every subtree hash a
//! proof or a tree head needs is a fold of at most 64 of these, so proofs are served
//! from storage without recomputing anything from the entries.
//!
//! This module does not own where the hashes live ([`HashReader`] reads them) nor the
//! text formats (see `checkpoint` and `proof`).

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use sha2::{Digest, Sha256};

/// Bytes in a hash.
pub const HASH_SIZE: usize = 32;

/// A SHA-256 hash: a leaf, a node or a tree head.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Hash(pub [u8; HASH_SIZE]);

impl Hash {
    /// Standard base64 (RFC 4648 section 4), as the C2SP texts write hashes.
    pub fn to_base64(&self) -> String {
        STANDARD.encode(self.0)
    }

    /// Parses standard base64 of exactly 32 bytes.
    ///
    /// # Errors
    /// [`HashParseError`] when the text is not base64 or not 32 bytes.
    pub fn from_base64(text: &str) -> Result<Self, HashParseError> {
        let bytes = STANDARD
            .decode(text)
            .map_err(|_| HashParseError(text.to_owned()))?;
        Self::from_slice(&bytes).ok_or_else(|| HashParseError(text.to_owned()))
    }

    /// The hash in `bytes` when they are exactly 32.
    pub fn from_slice(bytes: &[u8]) -> Option<Self> {
        <[u8; HASH_SIZE]>::try_from(bytes).ok().map(Hash)
    }

    /// Lower-case hex.
    pub fn to_hex(&self) -> String {
        self.0.iter().map(|b| format!("{b:02x}")).collect()
    }
}

impl fmt::Debug for Hash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Hash({})", self.to_hex())
    }
}

impl fmt::Display for Hash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_base64())
    }
}

/// Text that is not the base64 of a 32-byte hash.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not the base64 of a 32-byte hash: {0:?}")]
pub struct HashParseError(pub String);

/// The leaf hash of an entry: SHA-256(0x00 ‖ entry).
pub fn leaf_hash(entry: &[u8]) -> Hash {
    let mut h = Sha256::new();
    h.update([0x00]);
    h.update(entry);
    Hash(h.finalize().into())
}

/// The hash of an interior node: SHA-256(0x01 ‖ left ‖ right).
pub fn node_hash(left: &Hash, right: &Hash) -> Hash {
    let mut h = Sha256::new();
    h.update([0x01]);
    h.update(left.0);
    h.update(right.0);
    Hash(h.finalize().into())
}

/// The root of the empty tree: SHA-256 of nothing.
pub fn empty_root() -> Hash {
    Hash(Sha256::digest([]).into())
}

/// How many hashes a log of `size` leaves stores: one per complete subtree.
pub fn stored_hash_count(size: u64) -> u64 {
    2 * size - u64::from(size.count_ones())
}

/// The number of the stored hash of the complete subtree of `2^level` leaves starting
/// at leaf `index · 2^level`.
///
/// That subtree is completed by leaf `(index + 1) · 2^level − 1`, whose group of stored
/// hashes starts after those of all leaves before it and holds one hash per level.
pub fn stored_hash_index(level: u8, index: u64) -> u64 {
    let last_leaf = ((index + 1) << level) - 1;
    stored_hash_count(last_leaf) + u64::from(level)
}

/// Reads stored hashes by number (see [`stored_hash_index`]).
pub trait HashReader {
    /// What reading can fail with.
    type Error;

    /// The stored hashes with these numbers, in the order asked.
    ///
    /// # Errors
    /// Whatever the storage fails with, including a number it does not hold.
    fn read_hashes(&self, indexes: &[u64]) -> Result<Vec<Hash>, Self::Error>;
}

impl HashReader for [Hash] {
    type Error = ProofError;

    fn read_hashes(&self, indexes: &[u64]) -> Result<Vec<Hash>, ProofError> {
        indexes
            .iter()
            .map(|&i| {
                usize::try_from(i)
                    .ok()
                    .and_then(|i| self.get(i).copied())
                    .ok_or(ProofError::MissingHash { index: i })
            })
            .collect()
    }
}

impl HashReader for Vec<Hash> {
    type Error = ProofError;

    fn read_hashes(&self, indexes: &[u64]) -> Result<Vec<Hash>, ProofError> {
        self.as_slice().read_hashes(indexes)
    }
}

/// What a proof request or a proof check failed on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ProofError {
    /// An inclusion proof of an index outside the tree.
    #[error("leaf index {index} is not in a tree of size {size}")]
    IndexOutOfRange {
        /// The leaf index.
        index: u64,
        /// The tree size.
        size: u64,
    },
    /// A consistency proof from a larger tree to a smaller one.
    #[error("tree size {first} is larger than tree size {second}")]
    SizesOutOfOrder {
        /// The first (older) size.
        first: u64,
        /// The second (newer) size.
        second: u64,
    },
    /// A proof of the wrong number of hashes.
    #[error("the proof has {got} hashes where {want} are needed")]
    WrongLength {
        /// Hashes needed.
        want: usize,
        /// Hashes given.
        got: usize,
    },
    /// The proof does not lead to the root it was checked against.
    #[error("the proof does not lead to the expected root hash")]
    RootMismatch,
    /// A consistency proof that does not lead to the first tree's root.
    #[error("the proof does not lead to the first tree's root hash")]
    FirstRootMismatch,
    /// A consistency proof that does not lead to the second tree's root.
    #[error("the proof does not lead to the second tree's root hash")]
    SecondRootMismatch,
    /// A stored hash the in-memory reader does not hold.
    #[error("stored hash {index} is not held")]
    MissingHash {
        /// Its number.
        index: u64,
    },
}

/// The largest power of two smaller than `n` (`n >= 2`): RFC 9162's split point k.
fn split(n: u64) -> u64 {
    debug_assert!(n >= 2);
    1 << (63 - (n - 1).leading_zeros())
}

/// The complete subtrees covering leaves `[lo, hi)` from left to right, as stored-hash
/// numbers. Every range a proof asks for starts at a multiple of the smallest power of
/// two not below its length (RFC 9162's recursion only makes such ranges), so the
/// subtrees are the binary digits of the length, largest first.
fn cover(mut lo: u64, hi: u64, out: &mut Vec<u64>) {
    while lo < hi {
        let mut len = 1u64 << (63 - (hi - lo).leading_zeros());
        if lo != 0 {
            len = len.min(1 << lo.trailing_zeros());
        }
        let level = len.trailing_zeros() as u8;
        out.push(stored_hash_index(level, lo >> level));
        lo += len;
    }
}

/// The hash of leaves `[lo, hi)`: its covering subtrees folded from the right, which is
/// MTH(D[lo:hi]) of RFC 9162 section 2.1.1 for the ranges `cover` is given.
fn fold(subtrees: &[Hash]) -> Hash {
    let mut iter = subtrees.iter().rev();
    let Some(last) = iter.next() else {
        return empty_root();
    };
    iter.fold(*last, |right, left| node_hash(left, &right))
}

/// A list of leaf ranges, each standing for one hash of a proof, read in one go.
fn read_ranges<R: HashReader + ?Sized>(
    ranges: &[(u64, u64)],
    reader: &R,
) -> Result<Vec<Hash>, R::Error> {
    let mut indexes = Vec::new();
    let mut bounds = Vec::with_capacity(ranges.len());
    for &(lo, hi) in ranges {
        let start = indexes.len();
        cover(lo, hi, &mut indexes);
        bounds.push(start..indexes.len());
    }
    let hashes = reader.read_hashes(&indexes)?;
    Ok(bounds.into_iter().map(|b| fold(&hashes[b])).collect())
}

/// The root hash of the first `size` leaves (the empty root for 0).
///
/// # Errors
/// The reader's error.
pub fn tree_hash<R: HashReader + ?Sized>(size: u64, reader: &R) -> Result<Hash, R::Error> {
    if size == 0 {
        return Ok(empty_root());
    }
    Ok(read_ranges(&[(0, size)], reader)?[0])
}

/// RFC 9162 section 2.1.3.1, PATH(m, D[lo:hi]): the ranges whose hashes form the
/// inclusion proof of leaf `m`, from the leaf's sibling up to the root's child.
fn path(m: u64, lo: u64, hi: u64, out: &mut Vec<(u64, u64)>) {
    let n = hi - lo;
    if n <= 1 {
        return;
    }
    let k = split(n);
    if m < lo + k {
        path(m, lo, lo + k, out);
        out.push((lo + k, hi));
    } else {
        path(m, lo + k, hi, out);
        out.push((lo, lo + k));
    }
}

/// The inclusion proof of leaf `index` in the tree of the first `size` leaves.
///
/// # Errors
/// [`InclusionError::Proof`] with [`ProofError::IndexOutOfRange`] when `index >= size`;
/// [`InclusionError::Read`] with the reader's error.
pub fn inclusion_proof<R: HashReader + ?Sized>(
    index: u64,
    size: u64,
    reader: &R,
) -> Result<Vec<Hash>, InclusionError<R::Error>> {
    if index >= size {
        return Err(InclusionError::Proof(ProofError::IndexOutOfRange {
            index,
            size,
        }));
    }
    let mut ranges = Vec::new();
    path(index, 0, size, &mut ranges);
    read_ranges(&ranges, reader).map_err(InclusionError::Read)
}

/// RFC 9162 section 2.1.4.1, SUBPROOF(m, D[lo:hi], b), with `m` counted from `lo`.
fn subproof(m: u64, lo: u64, hi: u64, complete: bool, out: &mut Vec<(u64, u64)>) {
    let n = hi - lo;
    if m == n {
        if !complete {
            out.push((lo, hi));
        }
        return;
    }
    let k = split(n);
    if m <= k {
        subproof(m, lo, lo + k, complete, out);
        out.push((lo + k, hi));
    } else {
        subproof(m - k, lo + k, hi, false, out);
        out.push((lo, lo + k));
    }
}

/// The consistency proof between the trees of the first `first` and `second` leaves:
/// empty when `first` is 0 or equal to `second`.
///
/// # Errors
/// [`InclusionError::Proof`] with [`ProofError::SizesOutOfOrder`] when `first >
/// second`; [`InclusionError::Read`] with the reader's error.
pub fn consistency_proof<R: HashReader + ?Sized>(
    first: u64,
    second: u64,
    reader: &R,
) -> Result<Vec<Hash>, InclusionError<R::Error>> {
    if first > second {
        return Err(InclusionError::Proof(ProofError::SizesOutOfOrder {
            first,
            second,
        }));
    }
    if first == 0 || first == second {
        return Ok(Vec::new());
    }
    let mut ranges = Vec::new();
    subproof(first, 0, second, true, &mut ranges);
    read_ranges(&ranges, reader).map_err(InclusionError::Read)
}

/// Why a proof could not be generated.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum InclusionError<E> {
    /// The request itself is impossible.
    #[error(transparent)]
    Proof(ProofError),
    /// Storage failed.
    #[error("reading stored hashes")]
    Read(#[source] E),
}

/// Checks an inclusion proof: RFC 9162 section 2.1.3.2, step by step.
///
/// # Errors
/// [`ProofError::IndexOutOfRange`], [`ProofError::WrongLength`] (a proof too long for
/// the tree), or [`ProofError::RootMismatch`].
pub fn verify_inclusion(
    index: u64,
    size: u64,
    leaf: &Hash,
    proof: &[Hash],
    root: &Hash,
) -> Result<(), ProofError> {
    if index >= size {
        return Err(ProofError::IndexOutOfRange { index, size });
    }
    let (mut fn_, mut sn) = (index, size - 1);
    let mut r = *leaf;
    for p in proof {
        if sn == 0 {
            return Err(ProofError::WrongLength {
                want: expected_inclusion_len(index, size),
                got: proof.len(),
            });
        }
        if fn_ & 1 == 1 || fn_ == sn {
            r = node_hash(p, &r);
            if fn_ & 1 == 0 {
                while fn_ & 1 == 0 && fn_ != 0 {
                    fn_ >>= 1;
                    sn >>= 1;
                }
            }
        } else {
            r = node_hash(&r, p);
        }
        fn_ >>= 1;
        sn >>= 1;
    }
    if sn != 0 {
        return Err(ProofError::WrongLength {
            want: expected_inclusion_len(index, size),
            got: proof.len(),
        });
    }
    if r != *root {
        return Err(ProofError::RootMismatch);
    }
    Ok(())
}

fn expected_inclusion_len(index: u64, size: u64) -> usize {
    let mut ranges = Vec::new();
    path(index, 0, size, &mut ranges);
    ranges.len()
}

fn expected_consistency_len(first: u64, second: u64) -> usize {
    if first == 0 || first >= second {
        return 0;
    }
    let mut ranges = Vec::new();
    subproof(first, 0, second, true, &mut ranges);
    ranges.len()
}

/// Checks a consistency proof: RFC 9162 section 2.1.4.2, step by step, plus the two
/// cases it leaves out: from the empty tree (any tree extends it; the proof is empty
/// and the first root must be the empty root) and between equal sizes (the proof is
/// empty and the roots are equal).
///
/// # Errors
/// [`ProofError::SizesOutOfOrder`], [`ProofError::WrongLength`],
/// [`ProofError::FirstRootMismatch`] or [`ProofError::SecondRootMismatch`].
pub fn verify_consistency(
    first: u64,
    second: u64,
    first_root: &Hash,
    second_root: &Hash,
    proof: &[Hash],
) -> Result<(), ProofError> {
    if first > second {
        return Err(ProofError::SizesOutOfOrder { first, second });
    }
    let wrong_length = || ProofError::WrongLength {
        want: expected_consistency_len(first, second),
        got: proof.len(),
    };
    if first == 0 || first == second {
        if !proof.is_empty() {
            return Err(wrong_length());
        }
        if first == 0 && *first_root != empty_root() {
            return Err(ProofError::FirstRootMismatch);
        }
        if first == second && first_root != second_root {
            return Err(ProofError::SecondRootMismatch);
        }
        return Ok(());
    }
    // Step 1: an empty path fails.
    if proof.is_empty() {
        return Err(wrong_length());
    }
    // Step 2: when the first tree is complete, its root is the path's first hash.
    let mut path: Vec<Hash> = Vec::with_capacity(proof.len() + 1);
    if first.is_power_of_two() {
        path.push(*first_root);
    }
    path.extend_from_slice(proof);
    // Steps 3 and 4.
    let (mut fn_, mut sn) = (first - 1, second - 1);
    while fn_ & 1 == 1 {
        fn_ >>= 1;
        sn >>= 1;
    }
    // Step 5.
    let (mut fr, mut sr) = (path[0], path[0]);
    // Step 6.
    for c in &path[1..] {
        if sn == 0 {
            return Err(wrong_length());
        }
        if fn_ & 1 == 1 || fn_ == sn {
            fr = node_hash(c, &fr);
            sr = node_hash(c, &sr);
            if fn_ & 1 == 0 {
                while fn_ & 1 == 0 && fn_ != 0 {
                    fn_ >>= 1;
                    sn >>= 1;
                }
            }
        } else {
            sr = node_hash(&sr, c);
        }
        fn_ >>= 1;
        sn >>= 1;
    }
    // Step 7.
    if sn != 0 {
        return Err(wrong_length());
    }
    if fr != *first_root {
        return Err(ProofError::FirstRootMismatch);
    }
    if sr != *second_root {
        return Err(ProofError::SecondRootMismatch);
    }
    Ok(())
}

/// The right edge of a log: the hashes of its maximal complete subtrees, largest
/// first, which is all an append needs. Appending a leaf returns the stored hashes it
/// creates, so the log's storage and its frontier stay one.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Frontier {
    size: u64,
    /// One hash per set bit of `size`, highest bit first.
    nodes: Vec<Hash>,
}

impl Frontier {
    /// The frontier of the empty log.
    pub fn new() -> Self {
        Self::default()
    }

    /// The frontier of a stored log of `size` leaves, read from its stored hashes.
    ///
    /// # Errors
    /// The reader's error.
    pub fn load<R: HashReader + ?Sized>(size: u64, reader: &R) -> Result<Self, R::Error> {
        let mut indexes = Vec::new();
        cover(0, size, &mut indexes);
        let nodes = reader.read_hashes(&indexes)?;
        Ok(Self { size, nodes })
    }

    /// Leaves in the log.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The tree head.
    pub fn root(&self) -> Hash {
        fold(&self.nodes)
    }

    /// Appends a leaf (given as its leaf hash) and returns the stored hashes it creates,
    /// numbered from [`stored_hash_count`] of the old size on: the leaf hash, then one
    /// per complete subtree the leaf completes, lowest level first.
    pub fn push(&mut self, leaf: Hash) -> Vec<Hash> {
        let n = self.size;
        let mut created = vec![leaf];
        let mut current = leaf;
        for _ in 0..n.trailing_ones() {
            // The trailing one bits of n are the complete subtrees just left of the
            // new leaf, the frontier's last entries: each merges with what we carry.
            let left = self
                .nodes
                .pop()
                .expect("a frontier holds one node per set bit of its size");
            current = node_hash(&left, &current);
            created.push(current);
        }
        self.nodes.push(current);
        self.size += 1;
        created
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_hash_numbers_follow_the_order_an_appending_log_creates_them() {
        // Walk appends and number each (level, index) as it completes.
        let mut next = 0u64;
        for n in 0u64..1000 {
            for level in 0..=n.trailing_ones() as u8 {
                assert_eq!(
                    stored_hash_index(level, n >> level),
                    next,
                    "leaf {n} level {level}"
                );
                next += 1;
            }
            assert_eq!(stored_hash_count(n + 1), next);
        }
    }

    #[test]
    fn the_split_point_is_the_largest_power_of_two_below_n() {
        assert_eq!(split(2), 1);
        assert_eq!(split(3), 2);
        assert_eq!(split(4), 2);
        assert_eq!(split(5), 4);
        assert_eq!(split(1 << 40), 1 << 39);
        assert_eq!(split((1 << 40) + 1), 1 << 40);
    }

    #[test]
    fn a_hash_round_trips_through_base64_and_other_text_is_refused() {
        let h = leaf_hash(b"x");
        assert_eq!(Hash::from_base64(&h.to_base64()), Ok(h));
        assert!(Hash::from_base64("AAAA").is_err());
        assert!(Hash::from_base64("not base64!").is_err());
    }
}
