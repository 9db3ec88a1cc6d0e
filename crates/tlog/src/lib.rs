//! The casebus transparency log, as pure functions and types: no I/O, no clock, no NATS.
//!
//! - [`merkle`]: RFC 6962 / RFC 9162 hashing (leaf = SHA-256(0x00 ‖ entry), node =
//!   SHA-256(0x01 ‖ left ‖ right)), the tree head of any size, inclusion and consistency
//!   proofs generated and verified exactly as RFC 9162 sections 2.1.3 and 2.1.4 state
//!   them, and the compact storage layout (one hash per complete subtree, numbered in
//!   the order the log creates them) with the [`merkle::Frontier`] that appends to it;
//! - [`note`]: C2SP `signed-note` with Ed25519 keys (key names, key ids, verifier keys);
//! - [`checkpoint`]: C2SP `tlog-checkpoint` (origin, size, root hash, extension lines);
//! - [`cosignature`]: C2SP `tlog-cosignature`, `cosignature/v1` with its timestamp;
//! - [`proof`]: the C2SP `tlog-proof@v1` text;
//! - [`skey`]: the secret key text of log and witness keys (`PRIVATE+KEY+…`, as Go's
//!   `sumdb/note` writes signer keys);
//! - [`policy`]: the witness policy file (log key, witnesses, quorum) and when a
//!   checkpoint is witnessed under it;
//! - [`case_heads`]: the case-head map, a Merkle tree over every case's head, committed
//!   to by one checkpoint extension line.
//!
//! **Boundary:** this crate stores nothing and reads nothing: storage comes in through
//! [`merkle::HashReader`], time through arguments, keys as bytes. Formats follow the C2SP
//! texts byte for byte; `docs/PROOFS.md` states them.

pub mod case_heads;
pub mod checkpoint;
pub mod cosignature;
pub mod merkle;
pub mod note;
pub mod policy;
pub mod proof;
pub mod skey;

pub use merkle::Hash;
