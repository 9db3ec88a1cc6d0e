//! Sealing the content of a restricted event for the offices that may read it.
//!
//! A sealed content is encrypted once, under a fresh 32-byte content key, with
//! XChaCha20-Poly1305 (a random 24-byte nonce, so no nonce bookkeeping across services);
//! the content key is then wrapped for each reader office's X25519 encryption key with
//! HPKE (RFC 9180) in base mode, suite DHKEM(X25519, HKDF-SHA256) / HKDF-SHA256 /
//! ChaCha20-Poly1305. Both layers authenticate the [`Binding`] — case id, version and
//! event id — as associated data, so a sealed content or a wrapped key copied into
//! another event does not open; a wrapped key also binds the key id it is for.
//!
//! The event's signature and hash are computed over the event holding the sealed form,
//! so every consumer verifies the chain without being able to read the content.
//!
//! Secret keys live in TOML files of mode 0600, like signing keys; secret material is
//! zeroised on drop and redacted from `Debug`.

use std::fmt;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use chacha20poly1305::aead::{Aead as _, KeyInit as _, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use hpke::aead::ChaCha20Poly1305;
use hpke::kdf::HkdfSha256;
use hpke::kem::X25519HkdfSha256;
use hpke::{Deserializable as _, Kem as _, OpModeR, OpModeS, Serializable as _};
use zeroize::Zeroizing;

use casebus_proto::OfficeId;

use crate::registry::{KeyEntry, validate_key_id};

type Kem = X25519HkdfSha256;
type PublicKey = <Kem as hpke::Kem>::PublicKey;
type PrivateKey = <Kem as hpke::Kem>::PrivateKey;
type EncappedKey = <Kem as hpke::Kem>::EncappedKey;

/// The HPKE `info` of every wrapped content key: names the scheme and its version, so a
/// key wrapped for another purpose with the same recipient key never opens here.
pub const WRAP_INFO: &[u8] = b"casebus sealed content key v1";
/// Length of a content key, a public or secret X25519 key and an encapsulated key.
pub const KEY_LEN: usize = 32;
/// Length of the XChaCha20-Poly1305 nonce.
pub const NONCE_LEN: usize = 24;
/// A wrapped content key: the 32-byte key and the 16-byte tag.
pub const WRAPPED_LEN: usize = KEY_LEN + 16;

/// Why sealing or opening failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SealError {
    /// The content has no wrapped key for this reader key.
    #[error("the content is not sealed for key {key_id}")]
    NotAReader {
        /// The key that tried to open it.
        key_id: String,
    },
    /// The wrapped key for this reader does not open with its secret key: the wrapped
    /// key was altered, was made for another key, or belongs to another event.
    #[error(
        "the content key wrapped for {key_id} does not open: altered, for another key or for another event"
    )]
    Unwrap {
        /// The reader key.
        key_id: String,
    },
    /// The content does not decrypt under its content key: the ciphertext or the nonce
    /// was altered, or it belongs to another event.
    #[error("the sealed content does not decrypt: altered or from another event")]
    Content,
    /// A key or a sealed part has the wrong form.
    #[error("{0}")]
    Malformed(String),
    /// The operating system's random source failed.
    #[error("random number generator unavailable: {0}")]
    Random(String),
    /// A key file could not be read or written.
    #[error("key file {path}: {reason}")]
    KeyFile {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
}

/// What a sealed content is bound to: the event that carries it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Binding<'a> {
    /// The event's case id.
    pub case_id: &'a str,
    /// The event's position in its case.
    pub version: u64,
    /// The event's id.
    pub event_id: &'a str,
}

impl Binding<'_> {
    /// The associated data: a label, then each field length-prefixed (u32 big-endian)
    /// or fixed-width (the version, u64 big-endian), so no two bindings share bytes.
    pub fn associated_data(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(32 + self.case_id.len() + self.event_id.len());
        out.extend_from_slice(b"casebus-seal-v1\0");
        put_field(&mut out, self.case_id.as_bytes());
        out.extend_from_slice(&self.version.to_be_bytes());
        put_field(&mut out, self.event_id.as_bytes());
        out
    }

    /// The associated data of a content key wrapped for `key_id`.
    fn wrap_data(&self, key_id: &str) -> Vec<u8> {
        let mut out = self.associated_data();
        put_field(&mut out, key_id.as_bytes());
        out
    }
}

/// Appends `bytes` with its length (u32, big-endian) before it.
fn put_field(out: &mut Vec<u8>, bytes: &[u8]) {
    // Ids are at most a few hundred bytes; a u32 length cannot overflow.
    out.extend_from_slice(&u32::try_from(bytes.len()).unwrap_or(u32::MAX).to_be_bytes());
    out.extend_from_slice(bytes);
}

/// A reader office's public encryption key, as the registry lists it.
#[derive(Clone, PartialEq)]
pub struct ReaderKey {
    key_id: String,
    public: PublicKey,
}

impl fmt::Debug for ReaderKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReaderKey")
            .field("key_id", &self.key_id)
            .finish_non_exhaustive()
    }
}

impl ReaderKey {
    /// The key `key_id` from the 32 bytes of an X25519 public key.
    ///
    /// # Errors
    /// [`SealError::Malformed`] when `public` is not 32 bytes.
    pub fn from_bytes(key_id: &str, public: &[u8]) -> Result<Self, SealError> {
        if public.len() != KEY_LEN {
            return Err(SealError::Malformed(format!(
                "encryption key {key_id}: public key must be {KEY_LEN} bytes, found {}",
                public.len()
            )));
        }
        let public = PublicKey::from_bytes(public).map_err(|e| {
            SealError::Malformed(format!(
                "encryption key {key_id}: not an X25519 public key: {e}"
            ))
        })?;
        Ok(Self {
            key_id: key_id.to_owned(),
            public,
        })
    }

    /// The key `key_id` from base64 (the registry's form).
    ///
    /// # Errors
    /// [`SealError::Malformed`] when it is not base64 of 32 bytes.
    pub fn from_base64(key_id: &str, public: &str) -> Result<Self, SealError> {
        let raw = B64.decode(public.as_bytes()).map_err(|e| {
            SealError::Malformed(format!(
                "encryption key {key_id}: public key is not base64: {e}"
            ))
        })?;
        Self::from_bytes(key_id, &raw)
    }

    /// The key id, `<office>#<label>`.
    pub fn key_id(&self) -> &str {
        &self.key_id
    }

    /// The 32 bytes of the public key.
    pub fn to_bytes(&self) -> [u8; KEY_LEN] {
        let mut out = [0u8; KEY_LEN];
        out.copy_from_slice(&self.public.to_bytes());
        out
    }
}

/// An office's secret encryption key, which opens what was sealed for it.
pub struct OpeningKey {
    office: OfficeId,
    key_id: String,
    secret: PrivateKey,
    public: PublicKey,
}

impl fmt::Debug for OpeningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OpeningKey")
            .field("office", &self.office)
            .field("key_id", &self.key_id)
            .finish_non_exhaustive()
    }
}

/// The on-disk form of an office's secret encryption key.
#[derive(serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct OpeningKeyFile {
    key_id: String,
    office_id: OfficeId,
    /// Always `x25519`: names the key kind, so a signing key file is never taken for one.
    kind: String,
    secret_key: Zeroizing<String>,
}

const KIND: &str = "x25519";

impl OpeningKey {
    fn from_secret(office: OfficeId, key_id: String, secret: PrivateKey) -> Self {
        let public = Kem::sk_to_pk(&secret);
        Self {
            office,
            key_id,
            secret,
            public,
        }
    }

    /// A fresh key for `office` with key id `<office>#<label>`.
    ///
    /// # Errors
    /// [`SealError::Malformed`] when `label` is not 1-32 chars of `[A-Za-z0-9_-]`.
    pub fn generate(office: OfficeId, label: &str) -> Result<Self, SealError> {
        let key_id = format!("{office}#{label}");
        validate_key_id(&office, &key_id).map_err(SealError::Malformed)?;
        let mut ikm = Zeroizing::new([0u8; KEY_LEN]);
        getrandom::fill(ikm.as_mut_slice()).map_err(|e| SealError::Random(e.to_string()))?;
        let (secret, _) = Kem::derive_keypair(ikm.as_slice());
        Ok(Self::from_secret(office, key_id, secret))
    }

    /// The key RFC 9180's `DeriveKeyPair` makes from `ikm` (deterministic keys for tests
    /// and simulations).
    ///
    /// # Errors
    /// [`SealError::Malformed`] when `label` is not 1-32 chars of `[A-Za-z0-9_-]`.
    pub fn derive(office: OfficeId, label: &str, ikm: &[u8]) -> Result<Self, SealError> {
        let key_id = format!("{office}#{label}");
        validate_key_id(&office, &key_id).map_err(SealError::Malformed)?;
        let (secret, _) = Kem::derive_keypair(ikm);
        Ok(Self::from_secret(office, key_id, secret))
    }

    /// Loads a key from its secret key file.
    ///
    /// # Errors
    /// [`SealError::KeyFile`] naming the file and what is wrong with it.
    pub fn load(path: &Path) -> Result<Self, SealError> {
        let invalid = |reason: String| SealError::KeyFile {
            path: path.to_owned(),
            reason,
        };
        let text =
            Zeroizing::new(std::fs::read_to_string(path).map_err(|e| invalid(e.to_string()))?);
        let file: OpeningKeyFile =
            toml::from_str(&text).map_err(|e| invalid(e.message().to_owned()))?;
        if file.kind != KIND {
            return Err(invalid(format!(
                "kind must be {KIND:?} (an encryption key), found {:?}",
                file.kind
            )));
        }
        validate_key_id(&file.office_id, &file.key_id).map_err(invalid)?;
        let raw = Zeroizing::new(
            B64.decode(file.secret_key.as_bytes())
                .map_err(|e| invalid(format!("secret_key is not base64: {e}")))?,
        );
        if raw.len() != KEY_LEN {
            return Err(invalid(format!(
                "secret_key must be {KEY_LEN} bytes, found {}",
                raw.len()
            )));
        }
        let secret = PrivateKey::from_bytes(&raw)
            .map_err(|e| invalid(format!("secret_key is not an X25519 secret key: {e}")))?;
        Ok(Self::from_secret(file.office_id, file.key_id, secret))
    }

    /// Writes the secret key file, readable by its owner only (mode 0600). Refuses to
    /// overwrite an existing file.
    ///
    /// # Errors
    /// [`SealError::KeyFile`] when the file exists already or cannot be written.
    pub fn save(&self, path: &Path) -> Result<(), SealError> {
        let failed = |reason: String| SealError::KeyFile {
            path: path.to_owned(),
            reason,
        };
        let file = OpeningKeyFile {
            key_id: self.key_id.clone(),
            office_id: self.office.clone(),
            kind: KIND.to_owned(),
            secret_key: Zeroizing::new(B64.encode(self.secret.to_bytes())),
        };
        let text = Zeroizing::new(toml::to_string(&file).map_err(|e| failed(e.to_string()))?);
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let mut out = options.open(path).map_err(|e| failed(e.to_string()))?;
        out.write_all(text.as_bytes())
            .and_then(|()| out.sync_all())
            .map_err(|e| failed(e.to_string()))
    }

    /// The office the key belongs to.
    pub fn office(&self) -> &OfficeId {
        &self.office
    }

    /// The key id, `<office>#<label>`.
    pub fn key_id(&self) -> &str {
        &self.key_id
    }

    /// The public half, as senders seal for it.
    pub fn reader_key(&self) -> ReaderKey {
        ReaderKey {
            key_id: self.key_id.clone(),
            public: self.public.clone(),
        }
    }

    /// The public key, base64 (the registry's form).
    pub fn public_base64(&self) -> String {
        B64.encode(self.public.to_bytes())
    }

    /// The registry entry of this key, valid from `valid_from` on.
    pub fn key_entry(&self, valid_from: time::OffsetDateTime) -> KeyEntry {
        KeyEntry {
            key_id: self.key_id.clone(),
            public_key: self.public_base64(),
            valid_from,
            valid_until: None,
        }
    }
}

/// A content key wrapped for one reader key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WrappedKey {
    /// The reader key it is wrapped for.
    pub key_id: String,
    /// HPKE's encapsulated key (the sender's ephemeral X25519 public key).
    pub enc: Vec<u8>,
    /// The content key sealed to the reader: 32 bytes and a 16-byte tag.
    pub ciphertext: Vec<u8>,
}

/// A content sealed for its readers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sealed {
    /// The XChaCha20-Poly1305 nonce.
    pub nonce: Vec<u8>,
    /// The content, encrypted under the content key, with its tag.
    pub ciphertext: Vec<u8>,
    /// The content key, wrapped for each reader key.
    pub wrapped: Vec<WrappedKey>,
}

fn random_key() -> Result<Zeroizing<[u8; KEY_LEN]>, SealError> {
    let mut key = Zeroizing::new([0u8; KEY_LEN]);
    getrandom::fill(key.as_mut_slice()).map_err(|e| SealError::Random(e.to_string()))?;
    Ok(key)
}

/// Wraps `content_key` for `reader`, bound to `binding`.
fn wrap(
    content_key: &[u8; KEY_LEN],
    binding: &Binding<'_>,
    reader: &ReaderKey,
) -> Result<WrappedKey, SealError> {
    let (enc, ciphertext) = hpke::single_shot_seal::<ChaCha20Poly1305, HkdfSha256, Kem>(
        &OpModeS::Base,
        &reader.public,
        WRAP_INFO,
        content_key,
        &binding.wrap_data(&reader.key_id),
    )
    .map_err(|e| SealError::Malformed(format!("wrapping for {}: {e}", reader.key_id)))?;
    Ok(WrappedKey {
        key_id: reader.key_id.clone(),
        enc: enc.to_bytes().to_vec(),
        ciphertext,
    })
}

/// Seals `plaintext`, bound to `binding`, for every key of `readers`.
///
/// # Errors
/// [`SealError::Random`] when the random source fails; [`SealError::Malformed`] when a
/// reader key is unusable (a low-order point).
pub fn seal(
    plaintext: &[u8],
    binding: &Binding<'_>,
    readers: &[ReaderKey],
) -> Result<Sealed, SealError> {
    let content_key = random_key()?;
    let mut nonce = [0u8; NONCE_LEN];
    getrandom::fill(&mut nonce).map_err(|e| SealError::Random(e.to_string()))?;
    let cipher = XChaCha20Poly1305::new(content_key.as_ref().into());
    let aad = binding.associated_data();
    let ciphertext = cipher
        .encrypt(
            XNonce::from_slice(&nonce),
            Payload {
                msg: plaintext,
                aad: &aad,
            },
        )
        .map_err(|_| SealError::Malformed("the content is too long to seal".into()))?;
    let wrapped = readers
        .iter()
        .map(|reader| wrap(&content_key, binding, reader))
        .collect::<Result<_, _>>()?;
    Ok(Sealed {
        nonce: nonce.to_vec(),
        ciphertext,
        wrapped,
    })
}

/// The content key of `sealed`, unwrapped with `key`.
fn content_key(
    sealed: &Sealed,
    binding: &Binding<'_>,
    key: &OpeningKey,
) -> Result<Zeroizing<[u8; KEY_LEN]>, SealError> {
    let unwrap_failed = || SealError::Unwrap {
        key_id: key.key_id.clone(),
    };
    let wrapped = sealed
        .wrapped
        .iter()
        .find(|w| w.key_id == key.key_id)
        .ok_or_else(|| SealError::NotAReader {
            key_id: key.key_id.clone(),
        })?;
    let enc = EncappedKey::from_bytes(&wrapped.enc).map_err(|_| unwrap_failed())?;
    let opened = Zeroizing::new(
        hpke::single_shot_open::<ChaCha20Poly1305, HkdfSha256, Kem>(
            &OpModeR::Base,
            &key.secret,
            &enc,
            WRAP_INFO,
            &wrapped.ciphertext,
            &binding.wrap_data(&key.key_id),
        )
        .map_err(|_| unwrap_failed())?,
    );
    let mut out = Zeroizing::new([0u8; KEY_LEN]);
    if opened.len() != KEY_LEN {
        return Err(unwrap_failed());
    }
    out.copy_from_slice(&opened);
    Ok(out)
}

/// Opens `sealed` (bound to `binding`) with the reader's `key`.
///
/// # Errors
/// [`SealError::NotAReader`] when nothing is wrapped for the key; [`SealError::Unwrap`]
/// when its wrapped key does not open; [`SealError::Content`] when the content does not
/// decrypt.
pub fn open(
    sealed: &Sealed,
    binding: &Binding<'_>,
    key: &OpeningKey,
) -> Result<Zeroizing<Vec<u8>>, SealError> {
    let content_key = content_key(sealed, binding, key)?;
    if sealed.nonce.len() != NONCE_LEN {
        return Err(SealError::Content);
    }
    let cipher = XChaCha20Poly1305::new(content_key.as_ref().into());
    cipher
        .decrypt(
            XNonce::from_slice(&sealed.nonce),
            Payload {
                msg: &sealed.ciphertext,
                aad: &binding.associated_data(),
            },
        )
        .map(Zeroizing::new)
        .map_err(|_| SealError::Content)
}

/// Wraps the content key of `sealed` for more readers: a reader that holds `key`
/// widens who may read an event (`VisibilityChanged`) without sealing it again.
///
/// # Errors
/// As [`open`] for `key`; [`SealError::Malformed`] when a new reader key is unusable.
pub fn rewrap(
    sealed: &Sealed,
    binding: &Binding<'_>,
    key: &OpeningKey,
    readers: &[ReaderKey],
) -> Result<Vec<WrappedKey>, SealError> {
    let content_key = content_key(sealed, binding, key)?;
    readers
        .iter()
        .map(|reader| wrap(&content_key, binding, reader))
        .collect()
}
