//! Sealing the content of a restricted event for the offices that may read it.
//!
//! A sealed content is encrypted once, under a fresh 32-byte content key, with
//! XChaCha20-Poly1305 (a random 24-byte nonce, so no nonce bookkeeping across services).
//! The content key is then wrapped for each reader office's X25519 encryption key:
//!
//! - the sender sets up an HPKE (RFC 9180) base-mode context with the reader key, suite
//!   DHKEM(X25519, HKDF-SHA256) / HKDF-SHA256 / ChaCha20-Poly1305, `info` [`WRAP_INFO`],
//!   and exports a 32-byte wrapping key from it (RFC 9180 section 5.3, exporter context
//!   [`EXPORT_CONTEXT`]);
//! - the content key is sealed under the wrapping key with XChaCha20-Poly1305 and a
//!   random nonce; the wrapped key carries the context's encapsulated key `enc`, from
//!   which the reader, with its secret key, exports the same wrapping key.
//!
//! A [`Sealer`] keeps one context per reader key for a while ([`EpochPolicy`]: an hour
//! or a million wraps by default), so a seal costs two AEAD operations per reader
//! instead of two X25519 operations; an [`Opener`] remembers the wrapping keys it has
//! derived, by `enc`. Both layers authenticate the [`Binding`] — case id, version and
//! event id — as associated data, so a sealed content or a wrapped key copied into
//! another event does not open; a wrapped key also binds the key id it is for.
//!
//! The event's signature and hash are computed over the event holding the sealed form,
//! so every consumer verifies the chain without being able to read the content.
//! [`seal_event`] and [`open_event`] apply this to an `Event`: the full payload sealed,
//! the readable part (content fields cleared, see `casebus_proto::content`) in clear,
//! and on opening the check that the two agree.
//!
//! Secret keys live in TOML files of mode 0600, like signing keys; secret material is
//! zeroised on drop and redacted from `Debug`.

use std::fmt;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use chacha20poly1305::aead::{Aead as _, KeyInit as _, Payload as AeadInput};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use hpke::aead::ChaCha20Poly1305;
use hpke::kdf::HkdfSha256;
use hpke::kem::X25519HkdfSha256;
use hpke::{Deserializable as _, Kem as _, OpModeR, OpModeS, Serializable as _};
use prost::Message as _;
use zeroize::Zeroizing;

use casebus_proto::OfficeId;
use casebus_proto::event::v1::{Event, Payload};
pub use casebus_proto::event::v1::{SealedPayload as Sealed, WrappedKey};

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
/// The HPKE exporter context of the wrapping key.
pub const EXPORT_CONTEXT: &[u8] = b"casebus wrapping key";

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
    /// The content decrypts but is not a payload whose readable part is the event's
    /// readable payload: the recording service sealed one thing and showed another.
    #[error("the sealed payload disagrees with the event's readable payload: {0}")]
    Disagrees(String),
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
#[derive(Clone)]
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

fn random<const N: usize>() -> Result<Zeroizing<[u8; N]>, SealError> {
    let mut out = Zeroizing::new([0u8; N]);
    getrandom::fill(out.as_mut_slice()).map_err(|e| SealError::Random(e.to_string()))?;
    Ok(out)
}

/// A content key, zeroised on drop.
pub type ContentKey = Zeroizing<[u8; KEY_LEN]>;

/// Encrypts `msg` under `key` with a random nonce; returns (nonce, ciphertext).
fn aead_seal(key: &[u8; KEY_LEN], msg: &[u8], aad: &[u8]) -> Result<(Vec<u8>, Vec<u8>), SealError> {
    let nonce = random::<NONCE_LEN>()?;
    let ciphertext = XChaCha20Poly1305::new(key.into())
        .encrypt(XNonce::from_slice(nonce.as_slice()), AeadInput { msg, aad })
        .map_err(|_| SealError::Malformed("the content is too long to seal".into()))?;
    Ok((nonce.to_vec(), ciphertext))
}

/// Decrypts; `None` when the nonce has the wrong length or the tag does not verify.
fn aead_open(
    key: &[u8; KEY_LEN],
    nonce: &[u8],
    ciphertext: &[u8],
    aad: &[u8],
) -> Option<Zeroizing<Vec<u8>>> {
    if nonce.len() != NONCE_LEN {
        return None;
    }
    XChaCha20Poly1305::new(key.into())
        .decrypt(
            XNonce::from_slice(nonce),
            AeadInput {
                msg: ciphertext,
                aad,
            },
        )
        .ok()
        .map(Zeroizing::new)
}

/// How long a [`Sealer`] keeps one HPKE context per reader key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EpochPolicy {
    /// A context older than this is replaced by a fresh one.
    pub max_age: Duration,
    /// A context that wrapped this many content keys is replaced by a fresh one.
    pub max_wraps: u64,
}

impl Default for EpochPolicy {
    fn default() -> Self {
        Self {
            max_age: Duration::from_secs(3600),
            max_wraps: 1_000_000,
        }
    }
}

/// One sender context with one reader key: its `enc` and the wrapping key exported
/// from it.
struct Epoch {
    public: [u8; KEY_LEN],
    enc: Vec<u8>,
    wrapping_key: Zeroizing<[u8; KEY_LEN]>,
    since: Instant,
    wraps: u64,
}

/// The sending side: seals contents and wraps their keys, keeping one HPKE context per
/// reader key for the [`EpochPolicy`]. Share one between the appends of a service.
pub struct Sealer {
    policy: EpochPolicy,
    epochs: Mutex<HashMap<String, Epoch>>,
}

impl fmt::Debug for Sealer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sealer")
            .field("policy", &self.policy)
            .finish_non_exhaustive()
    }
}

impl Default for Sealer {
    fn default() -> Self {
        Self::new(EpochPolicy::default())
    }
}

impl Sealer {
    /// A sealer keeping its contexts for `policy`.
    pub fn new(policy: EpochPolicy) -> Self {
        Self {
            policy,
            epochs: Mutex::new(HashMap::new()),
        }
    }

    /// The wrapping key and `enc` for `reader` now: the current context's, or a fresh
    /// one's when there is none, it is too old, has wrapped enough, or the key changed.
    fn epoch(&self, reader: &ReaderKey) -> Result<(Vec<u8>, Zeroizing<[u8; KEY_LEN]>), SealError> {
        let public = reader.to_bytes();
        let mut epochs = self
            .epochs
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(epoch) = epochs.get_mut(&reader.key_id)
            && epoch.public == public
            && epoch.since.elapsed() < self.policy.max_age
            && epoch.wraps < self.policy.max_wraps
        {
            epoch.wraps += 1;
            return Ok((epoch.enc.clone(), epoch.wrapping_key.clone()));
        }
        let (enc, context) = hpke::setup_sender::<ChaCha20Poly1305, HkdfSha256, Kem>(
            &OpModeS::Base,
            &reader.public,
            WRAP_INFO,
        )
        .map_err(|e| SealError::Malformed(format!("wrapping for {}: {e}", reader.key_id)))?;
        let mut wrapping_key = Zeroizing::new([0u8; KEY_LEN]);
        context
            .export(EXPORT_CONTEXT, wrapping_key.as_mut_slice())
            .map_err(|e| SealError::Malformed(format!("wrapping for {}: {e}", reader.key_id)))?;
        let enc = enc.to_bytes().to_vec();
        epochs.insert(
            reader.key_id.clone(),
            Epoch {
                public,
                enc: enc.clone(),
                wrapping_key: wrapping_key.clone(),
                since: Instant::now(),
                wraps: 1,
            },
        );
        Ok((enc, wrapping_key))
    }

    /// Wraps `content_key` for `reader`, bound to `binding`.
    fn wrap(
        &self,
        content_key: &[u8; KEY_LEN],
        binding: &Binding<'_>,
        reader: &ReaderKey,
    ) -> Result<WrappedKey, SealError> {
        let (enc, wrapping_key) = self.epoch(reader)?;
        let (nonce, ciphertext) = aead_seal(
            &wrapping_key,
            content_key,
            &binding.wrap_data(&reader.key_id),
        )?;
        Ok(WrappedKey {
            key_id: reader.key_id.clone(),
            enc,
            nonce,
            ciphertext,
        })
    }

    /// Seals `plaintext`, bound to `binding`, for every key of `readers` (wrapped keys
    /// ordered by key id); returns the sealed form and its content key.
    ///
    /// # Errors
    /// [`SealError::Random`] when the random source fails; [`SealError::Malformed`] when a
    /// reader key is unusable (a low-order point).
    pub fn seal(
        &self,
        plaintext: &[u8],
        binding: &Binding<'_>,
        readers: &[ReaderKey],
    ) -> Result<(Sealed, ContentKey), SealError> {
        let content_key = random::<KEY_LEN>()?;
        let (nonce, ciphertext) = aead_seal(&content_key, plaintext, &binding.associated_data())?;
        let mut wrapped_keys = readers
            .iter()
            .map(|reader| self.wrap(&content_key, binding, reader))
            .collect::<Result<Vec<_>, _>>()?;
        wrapped_keys.sort_by(|a, b| a.key_id.cmp(&b.key_id));
        Ok((
            Sealed {
                nonce,
                ciphertext,
                wrapped_keys,
            },
            content_key,
        ))
    }

    /// Wraps the content key of `sealed` for more readers: a reader that can open it
    /// widens who may read an event (`VisibilityChanged`) without sealing it again.
    ///
    /// # Errors
    /// As [`Opener::content_key`]; [`SealError::Malformed`] when a new reader key is
    /// unusable.
    pub fn rewrap(
        &self,
        sealed: &Sealed,
        binding: &Binding<'_>,
        opener: &Opener,
        readers: &[ReaderKey],
    ) -> Result<Vec<WrappedKey>, SealError> {
        let content_key = opener.content_key(sealed, binding)?;
        readers
            .iter()
            .map(|reader| self.wrap(&content_key, binding, reader))
            .collect()
    }
}

/// The wrapping keys an [`Opener`] remembers, at most this many (then it starts over).
const OPENER_CACHE: usize = 4096;

/// The reading side: an office's secret encryption keys (current and retired ones), and
/// the wrapping keys derived with them so far.
pub struct Opener {
    keys: Vec<OpeningKey>,
    wrapping_keys: Mutex<WrappingKeys>,
}

/// Wrapping keys by reader key id and `enc`.
type WrappingKeys = HashMap<(String, Vec<u8>), Zeroizing<[u8; KEY_LEN]>>;

impl fmt::Debug for Opener {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Opener")
            .field("keys", &self.key_ids())
            .finish_non_exhaustive()
    }
}

impl Opener {
    /// An opener with `keys`.
    pub fn new(keys: Vec<OpeningKey>) -> Self {
        Self {
            keys,
            wrapping_keys: Mutex::new(HashMap::new()),
        }
    }

    /// The ids of the keys it holds.
    pub fn key_ids(&self) -> Vec<&str> {
        self.keys.iter().map(|k| k.key_id.as_str()).collect()
    }

    /// The keys it holds.
    pub fn keys(&self) -> &[OpeningKey] {
        &self.keys
    }

    /// The wrapping key of `enc` for `key`: remembered, or exported from a receiver
    /// context set up anew.
    fn wrapping_key(&self, key: &OpeningKey, enc: &[u8]) -> Option<Zeroizing<[u8; KEY_LEN]>> {
        let id = (key.key_id.clone(), enc.to_vec());
        let mut cache = self
            .wrapping_keys
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(found) = cache.get(&id) {
            return Some(found.clone());
        }
        let encapped = EncappedKey::from_bytes(enc).ok()?;
        let context = hpke::setup_receiver::<ChaCha20Poly1305, HkdfSha256, Kem>(
            &OpModeR::Base,
            &key.secret,
            &encapped,
            WRAP_INFO,
        )
        .ok()?;
        let mut wrapping_key = Zeroizing::new([0u8; KEY_LEN]);
        context
            .export(EXPORT_CONTEXT, wrapping_key.as_mut_slice())
            .ok()?;
        if cache.len() >= OPENER_CACHE {
            cache.clear();
        }
        cache.insert(id, wrapping_key.clone());
        Some(wrapping_key)
    }

    /// The content key of `sealed`, unwrapped with whichever held key it is wrapped for.
    ///
    /// # Errors
    /// [`SealError::NotAReader`] when it is wrapped for none of the held keys (named by
    /// the first); [`SealError::Unwrap`] when the wrapped key does not open.
    pub fn content_key(
        &self,
        sealed: &Sealed,
        binding: &Binding<'_>,
    ) -> Result<ContentKey, SealError> {
        let Some((key, wrapped)) = self.keys.iter().find_map(|key| {
            sealed
                .wrapped_keys
                .iter()
                .find(|w| w.key_id == key.key_id)
                .map(|w| (key, w))
        }) else {
            return Err(SealError::NotAReader {
                key_id: self.key_ids().join(", "),
            });
        };
        let unwrap_failed = || SealError::Unwrap {
            key_id: key.key_id.clone(),
        };
        let wrapping_key = self
            .wrapping_key(key, &wrapped.enc)
            .ok_or_else(unwrap_failed)?;
        let opened = aead_open(
            &wrapping_key,
            &wrapped.nonce,
            &wrapped.ciphertext,
            &binding.wrap_data(&key.key_id),
        )
        .ok_or_else(unwrap_failed)?;
        let mut out = Zeroizing::new([0u8; KEY_LEN]);
        if opened.len() != KEY_LEN {
            return Err(unwrap_failed());
        }
        out.copy_from_slice(&opened);
        Ok(out)
    }

    /// Opens `sealed` (bound to `binding`).
    ///
    /// # Errors
    /// As [`Opener::content_key`]; [`SealError::Content`] when the content does not
    /// decrypt.
    pub fn open(
        &self,
        sealed: &Sealed,
        binding: &Binding<'_>,
    ) -> Result<Zeroizing<Vec<u8>>, SealError> {
        let content_key = self.content_key(sealed, binding)?;
        aead_open(
            &content_key,
            &sealed.nonce,
            &sealed.ciphertext,
            &binding.associated_data(),
        )
        .ok_or(SealError::Content)
    }
}

/// The binding of an event: its case id, version and event id.
pub fn binding(event: &Event) -> Binding<'_> {
    Binding {
        case_id: &event.case_id,
        version: event.case_version,
        event_id: &event.event_id,
    }
}

/// Seals the payload of `event` for `readers`: `event.sealed` gets the full payload
/// sealed, `event.payload` keeps its readable part (every content field cleared).
/// Returns the content key (for a keyed command digest). Sign the event afterwards.
///
/// # Errors
/// As [`Sealer::seal`].
pub fn seal_event(
    sealer: &Sealer,
    event: &mut Event,
    readers: &[ReaderKey],
) -> Result<ContentKey, SealError> {
    let full = event.payload.take().unwrap_or_default();
    let plaintext = Zeroizing::new(full.encode_to_vec());
    let (sealed, content_key) = sealer.seal(&plaintext, &binding(event), readers)?;
    event.payload = Some(casebus_proto::content::readable(&full));
    event.sealed = Some(sealed);
    Ok(content_key)
}

/// The full payload of a sealed `event`, opened with `opener` and checked against the
/// event's readable payload.
///
/// # Errors
/// [`SealError::Malformed`] when the event is not sealed; as [`Opener::open`];
/// [`SealError::Disagrees`] when the opened payload does not decode, or its readable part
/// is not the event's readable payload.
pub fn open_event(opener: &Opener, event: &Event) -> Result<Payload, SealError> {
    open_event_with(opener, event, &[])
}

/// [`open_event`], with the content key also looked for among `widened`: the keys
/// wrapped for new readers by later `VisibilityChanged` events of the case
/// (`casebus_domain::EventMeta::widened_keys`). They are bound to the original event, so
/// a wrapped key copied from another event's widening does not open this one.
///
/// # Errors
/// As [`open_event`].
pub fn open_event_with(
    opener: &Opener,
    event: &Event,
    widened: &[WrappedKey],
) -> Result<Payload, SealError> {
    let stored = event
        .sealed
        .as_ref()
        .ok_or_else(|| SealError::Malformed("the event is not sealed".into()))?;
    let extended;
    let sealed = if widened.is_empty() {
        stored
    } else {
        let mut all = stored.clone();
        all.wrapped_keys.extend(widened.iter().cloned());
        extended = all;
        &extended
    };
    let plaintext = opener.open(sealed, &binding(event))?;
    let full = Payload::decode(plaintext.as_slice())
        .map_err(|e| SealError::Disagrees(format!("the sealed payload does not decode: {e}")))?;
    let shown = event.payload.clone().unwrap_or_default();
    if casebus_proto::content::readable(&full) != shown {
        let kind = |p: &Payload| {
            p.kind
                .as_ref()
                .map_or("none", casebus_proto::payload_type_name)
        };
        return Err(SealError::Disagrees(format!(
            "it holds a {} whose readable fields differ from the {} shown",
            kind(&full),
            kind(&shown)
        )));
    }
    Ok(full)
}

/// The digest of a sealed event's command: HMAC-SHA256 keyed with its content key over
/// the unkeyed digest, so nobody who cannot open the event can test guesses of its
/// content (an 18-digit identity number is guessed in seconds against a plain hash).
pub fn keyed_command_digest(content_key: &[u8; KEY_LEN], digest: &[u8; 32]) -> [u8; 32] {
    use hmac::Mac as _;
    let mut mac = <hmac::Hmac<sha2::Sha256> as hmac::Mac>::new_from_slice(content_key)
        .expect("HMAC takes a key of any length");
    mac.update(b"casebus.command.v1.sealed\0");
    mac.update(digest);
    mac.finalize().into_bytes().into()
}
