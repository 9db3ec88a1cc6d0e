//! C2SP `tlog-cosignature`, the Ed25519 type (`cosignature/v1`, signature type 0x04): a
//! witness's note signature over `cosignature/v1\ntime <timestamp>\n` followed by the
//! whole checkpoint text, carried as `timestamp (u64, big-endian) ‖ Ed25519 signature`.
//!
//! This module does not decide whether a checkpoint deserves a cosignature (the
//! witness does, with a consistency proof); it only makes and checks the bytes.

use ed25519_dalek::{Signer as _, SigningKey, VerifyingKey};

use crate::note::{Note, NoteError, NoteSignature, NoteVerifier, check_key_name};

/// The header line of the signed message.
pub const HEADER: &str = "cosignature/v1";

/// The message a cosigner signs for a checkpoint `text` (with its final newline) at
/// `timestamp` (POSIX seconds).
pub fn signed_message(timestamp: u64, text: &str) -> String {
    format!("{HEADER}\ntime {timestamp}\n{text}")
}

/// `Some(timestamp)` when `signature` (timestamp ‖ Ed25519 signature) verifies under
/// `key` for the checkpoint `text`.
pub(crate) fn check(key: &VerifyingKey, text: &str, signature: &[u8]) -> Option<u64> {
    if signature.len() != 8 + 64 {
        return None;
    }
    let (ts, sig) = signature.split_at(8);
    let timestamp = u64::from_be_bytes(ts.try_into().ok()?);
    if timestamp > i64::MAX as u64 {
        return None;
    }
    let sig = ed25519_dalek::Signature::from_slice(sig).ok()?;
    key.verify_strict(signed_message(timestamp, text).as_bytes(), &sig)
        .ok()?;
    Some(timestamp)
}

/// A witness's cosigning key under its name.
#[derive(Clone)]
pub struct Cosigner {
    name: String,
    key: SigningKey,
}

impl std::fmt::Debug for Cosigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cosigner")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl Cosigner {
    /// A cosigner named `name` with `key`.
    ///
    /// # Errors
    /// [`NoteError::BadKeyName`].
    pub fn new(name: impl Into<String>, key: SigningKey) -> Result<Self, NoteError> {
        let name = name.into();
        check_key_name(&name)?;
        Ok(Self { name, key })
    }

    /// Key name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The matching verifier (type 0x04).
    pub fn verifier(&self) -> NoteVerifier {
        NoteVerifier::Cosigner {
            name: self.name.clone(),
            key: self.key.verifying_key(),
        }
    }

    /// The cosignature line for a checkpoint note at `timestamp`.
    ///
    /// # Errors
    /// [`NoteError::Malformed`] when `timestamp` exceeds 2^63 − 1.
    pub fn cosign(&self, checkpoint: &Note, timestamp: u64) -> Result<NoteSignature, NoteError> {
        if timestamp > i64::MAX as u64 {
            return Err(NoteError::Malformed(
                "a cosignature timestamp exceeds 2^63 - 1",
            ));
        }
        let sig = self
            .key
            .sign(signed_message(timestamp, checkpoint.text()).as_bytes());
        let mut signature = timestamp.to_be_bytes().to_vec();
        signature.extend_from_slice(&sig.to_bytes());
        Ok(NoteSignature {
            name: self.name.clone(),
            id: self.verifier().id(),
            signature,
        })
    }
}
