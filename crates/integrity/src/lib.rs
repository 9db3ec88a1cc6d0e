//! Integrity of the casebus record: SHA-256 event hashes over the exact signed bytes,
//! Ed25519 signing by an office's key, secret key files, the office registry of public
//! keys with validity periods, and verification of single events and whole case chains.
//!
//! Verification always names what failed (bad signature, unknown key, key not valid at
//! that time, chain break at version N, gap, reorder). This crate reads and writes key
//! and registry files but never talks to NATS.

mod hash;
mod keys;
mod registry;
mod verify;

pub use hash::EventHash;
pub use keys::{KeyError, KeyFile, OfficeSigner};
pub use registry::{KeyEntry, OfficeEntry, OfficeRegistry, RegistryError};
pub use verify::{
    CaseFailure, CaseReport, ChainError, ChainTip, VerifiedEvent, VerifyError, check_recorded_at,
    verify_case, verify_signed, verify_signed_all,
};

pub mod seal;
pub mod token;
