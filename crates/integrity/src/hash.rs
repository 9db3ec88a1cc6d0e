//! `EventHash`: SHA-256 of an event's exact encoded bytes, the link of each case chain.

use std::fmt;

use sha2::{Digest, Sha256};

/// SHA-256 of the encoded `Event` bytes inside a `SignedEvent`. Each event's
/// `prev_event_hash` is the `EventHash` of the event before it in the same case.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EventHash(pub [u8; 32]);

impl EventHash {
    /// Hashes the exact encoded event bytes.
    pub fn of(event_bytes: &[u8]) -> Self {
        Self(Sha256::digest(event_bytes).into())
    }

    /// Reads a hash from its 32 raw bytes; `None` for any other length.
    pub fn from_slice(bytes: &[u8]) -> Option<Self> {
        <[u8; 32]>::try_from(bytes).ok().map(Self)
    }

    /// The raw bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Lower-case hex.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }
}

impl fmt::Display for EventHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for EventHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "EventHash({})", self.to_hex())
    }
}
