//! Office signing keys: generating them, the secret key file format (TOML, mode 0600),
//! and `OfficeSigner`, which encodes and signs events for one office.
//!
//! Secret material is zeroised on drop and redacted from `Debug`.

use std::fmt;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use ed25519_dalek::{Signer as _, SigningKey};
use prost::Message as _;
use time::OffsetDateTime;
use zeroize::Zeroizing;

use casebus_proto::OfficeId;
use casebus_proto::event::v1::{Event, SignedEvent};

use crate::hash::EventHash;
use crate::registry::{KeyEntry, validate_key_id};

/// Errors reading, writing or generating key files.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// The key file could not be read or written.
    #[error("key file {path}")]
    Io {
        /// The key file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The key file's content is not a valid key.
    #[error("key file {path}: {reason}")]
    Invalid {
        /// The key file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The operating system's random source failed.
    #[error("random number generator unavailable: {0}")]
    Random(String),
    /// A key id was malformed.
    #[error("{0}")]
    BadKeyId(String),
}

/// The on-disk form of an office's secret signing key.
#[derive(serde::Serialize, serde::Deserialize)]
pub struct KeyFile {
    /// Key id, `<office>#<label>`.
    pub key_id: String,
    /// The office the key signs for.
    pub office_id: OfficeId,
    /// The 32-byte Ed25519 seed, base64.
    pub secret_key: Zeroizing<String>,
}

impl fmt::Debug for KeyFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyFile")
            .field("key_id", &self.key_id)
            .field("office_id", &self.office_id)
            .field("secret_key", &"<redacted>")
            .finish()
    }
}

/// Signs events for one office with one key.
#[derive(Clone)]
pub struct OfficeSigner {
    office: OfficeId,
    key_id: String,
    key: SigningKey,
}

impl fmt::Debug for OfficeSigner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OfficeSigner")
            .field("office", &self.office)
            .field("key_id", &self.key_id)
            .finish_non_exhaustive()
    }
}

impl OfficeSigner {
    /// Generates a fresh key for `office` with key id `<office>#<label>`.
    ///
    /// # Errors
    /// [`KeyError::BadKeyId`] when `label` is not 1-32 chars of `[A-Za-z0-9_-]`;
    /// [`KeyError::Random`] when the OS random source fails.
    pub fn generate(office: OfficeId, label: &str) -> Result<Self, KeyError> {
        let key_id = format!("{office}#{label}");
        validate_key_id(&office, &key_id).map_err(KeyError::BadKeyId)?;
        let mut seed = Zeroizing::new([0u8; 32]);
        getrandom::fill(seed.as_mut_slice()).map_err(|e| KeyError::Random(e.to_string()))?;
        Ok(Self {
            office,
            key_id,
            key: SigningKey::from_bytes(&seed),
        })
    }

    /// Builds a signer from a 32-byte seed (deterministic keys for tests and simulations).
    ///
    /// # Errors
    /// [`KeyError::BadKeyId`] when `label` is not 1-32 chars of `[A-Za-z0-9_-]`.
    pub fn from_seed(office: OfficeId, label: &str, seed: [u8; 32]) -> Result<Self, KeyError> {
        let key_id = format!("{office}#{label}");
        validate_key_id(&office, &key_id).map_err(KeyError::BadKeyId)?;
        Ok(Self {
            office,
            key_id,
            key: SigningKey::from_bytes(&seed),
        })
    }

    /// Loads a signer from a secret key file.
    ///
    /// # Errors
    /// [`KeyError::Io`] when the file cannot be read; [`KeyError::Invalid`] when it is not
    /// a valid key file (bad TOML, bad base64, wrong seed length, key id not of the office).
    pub fn load(path: &Path) -> Result<Self, KeyError> {
        let text =
            Zeroizing::new(
                std::fs::read_to_string(path).map_err(|source| KeyError::Io {
                    path: path.to_owned(),
                    source,
                })?,
            );
        let invalid = |reason: String| KeyError::Invalid {
            path: path.to_owned(),
            reason,
        };
        let file: KeyFile = toml::from_str(&text).map_err(|e| invalid(e.message().to_owned()))?;
        validate_key_id(&file.office_id, &file.key_id).map_err(invalid)?;
        let seed = Zeroizing::new(
            B64.decode(file.secret_key.as_bytes())
                .map_err(|e| invalid(format!("secret_key is not base64: {e}")))?,
        );
        let seed: [u8; 32] = seed
            .as_slice()
            .try_into()
            .map_err(|_| invalid(format!("secret_key must be 32 bytes, found {}", seed.len())))?;
        Ok(Self {
            office: file.office_id,
            key_id: file.key_id,
            key: SigningKey::from_bytes(&seed),
        })
    }

    /// Writes the secret key file, readable by its owner only (mode 0600). Refuses to
    /// overwrite an existing file.
    ///
    /// # Errors
    /// [`KeyError::Io`] when the file exists already or cannot be written.
    pub fn save(&self, path: &Path) -> Result<(), KeyError> {
        let file = KeyFile {
            key_id: self.key_id.clone(),
            office_id: self.office.clone(),
            secret_key: Zeroizing::new(B64.encode(self.key.to_bytes())),
        };
        let text = Zeroizing::new(toml::to_string(&file).map_err(|e| KeyError::Invalid {
            path: path.to_owned(),
            reason: e.to_string(),
        })?);
        let io = |source| KeyError::Io {
            path: path.to_owned(),
            source,
        };
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let mut out = options.open(path).map_err(io)?;
        out.write_all(text.as_bytes()).map_err(io)?;
        out.sync_all().map_err(io)
    }

    /// The office this signer signs for.
    pub fn office(&self) -> &OfficeId {
        &self.office
    }

    /// The key id, `<office>#<label>`.
    pub fn key_id(&self) -> &str {
        &self.key_id
    }

    /// The public key, raw 32 bytes.
    pub fn public_key(&self) -> [u8; 32] {
        self.key.verifying_key().to_bytes()
    }

    /// The registry entry for this key, valid from `valid_from` with no end.
    pub fn key_entry(&self, valid_from: OffsetDateTime) -> KeyEntry {
        KeyEntry {
            key_id: self.key_id.clone(),
            public_key: B64.encode(self.public_key()),
            valid_from,
            valid_until: None,
        }
    }

    /// Encodes `event` once, signs those bytes and returns the signed wrapper and the
    /// event hash. The bytes signed are the bytes stored; nobody re-encodes them.
    pub fn sign(&self, event: &Event) -> (SignedEvent, EventHash) {
        let bytes = event.encode_to_vec();
        self.sign_bytes(bytes)
    }

    /// Signs already-encoded event bytes (used to build test fixtures from raw bytes).
    pub fn sign_bytes(&self, event_bytes: Vec<u8>) -> (SignedEvent, EventHash) {
        let hash = EventHash::of(&event_bytes);
        let signature = self.key.sign(&event_bytes).to_bytes().to_vec();
        (
            SignedEvent {
                event: event_bytes,
                signature,
                key_id: self.key_id.clone(),
            },
            hash,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn office() -> OfficeId {
        OfficeId::new("customs:ningbo").expect("valid")
    }

    #[test]
    fn a_saved_key_file_loads_back_to_the_same_key_and_is_private() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("customs.key");
        let signer = OfficeSigner::generate(office(), "2026").expect("generate");
        signer.save(&path).expect("save");
        let loaded = OfficeSigner::load(&path).expect("load");
        assert_eq!(loaded.public_key(), signer.public_key());
        assert_eq!(loaded.key_id(), "customs:ningbo#2026");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(&path).expect("meta").permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        assert!(
            matches!(signer.save(&path), Err(KeyError::Io { .. })),
            "no overwrite"
        );
        assert!(!format!("{loaded:?}").contains(&B64.encode(signer.key.to_bytes())));
    }

    #[test]
    fn a_key_file_with_a_short_seed_is_rejected_naming_the_problem() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("bad.key");
        std::fs::write(
            &path,
            "key_id = \"customs:ningbo#1\"\noffice_id = \"customs:ningbo\"\nsecret_key = \"AAAA\"\n",
        )
        .expect("write");
        let err = OfficeSigner::load(&path).expect_err("short seed");
        assert!(err.to_string().contains("must be 32 bytes"), "{err}");
    }

    #[test]
    fn a_key_id_of_another_office_is_rejected() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("bad.key");
        let seed = B64.encode([7u8; 32]);
        std::fs::write(
            &path,
            format!(
                "key_id = \"court:x#1\"\noffice_id = \"customs:ningbo\"\nsecret_key = \"{seed}\"\n"
            ),
        )
        .expect("write");
        let err = OfficeSigner::load(&path).expect_err("wrong office");
        assert!(err.to_string().contains("court:x#1"), "{err}");
    }
}
