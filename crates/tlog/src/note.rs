//! C2SP `signed-note`: a text ending in a newline, a blank line, and one or more
//! signature lines `— <key name> base64(key id ‖ signature)`, with Ed25519 keys
//! (signature type 0x01) and verifier keys (`<name>+<hex key id>+<base64(type ‖ key)>`).
//!
//! The cosignature type (0x04) shares the key-id rule and the line format but signs a
//! different message; `cosignature` owns it and plugs into [`Note::verify`] through
//! [`NoteVerifier::Cosigner`].
//!
//! This module does not own what a note's text means (see `checkpoint`).

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use ed25519_dalek::{Signer as _, SigningKey, VerifyingKey};
use sha2::{Digest, Sha256};

use crate::cosignature;

/// Signature type byte of plain Ed25519 note signatures.
pub const TYPE_ED25519: u8 = 0x01;
/// Signature type byte of timestamped Ed25519 cosignatures (`tlog-cosignature`).
pub const TYPE_COSIGNATURE: u8 = 0x04;
/// The most signature lines a note may carry here (the spec asks for at least 16).
pub const MAX_SIGNATURES: usize = 64;

const EM_DASH_SPACE: &str = "\u{2014} ";

/// Why a note, key or signature was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum NoteError {
    /// The note is not valid UTF-8 or holds a control character other than newline.
    #[error("the note holds a byte that is not allowed: {0}")]
    BadCharacter(&'static str),
    /// The layout is not text, blank line, signature lines.
    #[error("malformed note: {0}")]
    Malformed(&'static str),
    /// A signature line is not `— <name> <base64>`.
    #[error("malformed signature line {line:?}")]
    BadSignatureLine {
        /// The line.
        line: String,
    },
    /// A key name that is empty or holds a space or a plus sign.
    #[error("invalid key name {0:?}: it must be non-empty, without spaces or '+'")]
    BadKeyName(String),
    /// More signature lines than [`MAX_SIGNATURES`].
    #[error("the note has more than {MAX_SIGNATURES} signatures")]
    TooManySignatures,
    /// A verifier key that does not parse.
    #[error("malformed verifier key {key:?}: {reason}")]
    BadVerifierKey {
        /// The key text.
        key: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A signature by a known key that does not verify.
    #[error("the signature of {name} (key id {id:08x}) does not verify")]
    InvalidSignature {
        /// Key name.
        name: String,
        /// Key id.
        id: u32,
    },
    /// No signature of a known key.
    #[error("the note has no signature by a known key")]
    NoKnownSignature,
}

/// One signature line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NoteSignature {
    /// Key name.
    pub name: String,
    /// Key id (the first four bytes, big-endian).
    pub id: u32,
    /// The signature bytes after the key id.
    pub signature: Vec<u8>,
}

impl NoteSignature {
    /// The line, with its final newline.
    pub fn to_line(&self) -> String {
        let mut bytes = self.id.to_be_bytes().to_vec();
        bytes.extend_from_slice(&self.signature);
        format!("{EM_DASH_SPACE}{} {}\n", self.name, STANDARD.encode(bytes))
    }
}

/// A signed note: its text (with the final newline) and its signatures in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Note {
    text: String,
    signatures: Vec<NoteSignature>,
}

/// Checks a key name: non-empty, no Unicode space, no plus sign.
///
/// # Errors
/// [`NoteError::BadKeyName`].
pub fn check_key_name(name: &str) -> Result<(), NoteError> {
    if name.is_empty() || name.chars().any(|c| c.is_whitespace() || c == '+') {
        return Err(NoteError::BadKeyName(name.to_owned()));
    }
    Ok(())
}

fn check_characters(text: &str) -> Result<(), NoteError> {
    if text.chars().any(|c| c < ' ' && c != '\n') {
        return Err(NoteError::BadCharacter(
            "an ASCII control character other than newline",
        ));
    }
    Ok(())
}

/// The key id of a key: SHA-256(name ‖ 0x0A ‖ type ‖ public key)[:4], big-endian.
pub fn key_id(name: &str, signature_type: u8, public_key: &[u8]) -> u32 {
    let mut h = Sha256::new();
    h.update(name.as_bytes());
    h.update([b'\n', signature_type]);
    h.update(public_key);
    let digest = h.finalize();
    u32::from_be_bytes([digest[0], digest[1], digest[2], digest[3]])
}

impl Note {
    /// A note of `text` without signatures yet.
    ///
    /// # Errors
    /// [`NoteError::Malformed`] when the text does not end in a newline;
    /// [`NoteError::BadCharacter`].
    pub fn new(text: impl Into<String>) -> Result<Self, NoteError> {
        let text = text.into();
        if !text.ends_with('\n') {
            return Err(NoteError::Malformed("the text does not end in a newline"));
        }
        check_characters(&text)?;
        Ok(Self {
            text,
            signatures: Vec::new(),
        })
    }

    /// The text, with its final newline.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// The signatures, in order.
    pub fn signatures(&self) -> &[NoteSignature] {
        &self.signatures
    }

    /// Adds a signature line.
    ///
    /// # Errors
    /// [`NoteError::BadKeyName`]; [`NoteError::TooManySignatures`].
    pub fn add_signature(&mut self, signature: NoteSignature) -> Result<(), NoteError> {
        check_key_name(&signature.name)?;
        if self.signatures.len() >= MAX_SIGNATURES {
            return Err(NoteError::TooManySignatures);
        }
        self.signatures.push(signature);
        Ok(())
    }

    /// Adds the signature lines of `other` that this note lacks (by key name and id),
    /// when `other` is a note of the same text, as a witness's cosigned copy is; lines
    /// past the limit of a note are left out. Returns how many were added.
    pub fn merge_signatures(&mut self, other: &Note) -> usize {
        if other.text != self.text {
            return 0;
        }
        let mut added = 0;
        for line in &other.signatures {
            let known = self
                .signatures
                .iter()
                .any(|s| s.name == line.name && s.id == line.id);
            if known {
                continue;
            }
            if self.add_signature(line.clone()).is_err() {
                break;
            }
            added += 1;
        }
        added
    }

    /// The note as text: text, blank line, signature lines.
    pub fn to_text(&self) -> String {
        let mut out = self.text.clone();
        out.push('\n');
        for s in &self.signatures {
            out.push_str(&s.to_line());
        }
        out
    }

    /// Parses a signed note; verifies nothing (see [`Note::verify`]).
    ///
    /// # Errors
    /// [`NoteError::BadCharacter`], [`NoteError::Malformed`],
    /// [`NoteError::BadSignatureLine`], [`NoteError::BadKeyName`],
    /// [`NoteError::TooManySignatures`].
    pub fn parse(bytes: &[u8]) -> Result<Self, NoteError> {
        let all = std::str::from_utf8(bytes)
            .map_err(|_| NoteError::BadCharacter("bytes that are not UTF-8"))?;
        check_characters(all)?;
        if !all.ends_with('\n') {
            return Err(NoteError::Malformed("the note does not end in a newline"));
        }
        // The text ends at the last blank line; the signature lines follow it.
        let split = all
            .rfind("\n\n")
            .ok_or(NoteError::Malformed("no blank line before the signatures"))?;
        let text = &all[..=split];
        let block = &all[split + 2..];
        if block.is_empty() {
            return Err(NoteError::Malformed("no signature lines"));
        }
        let mut note = Self::new(text)?;
        for line in block.strip_suffix('\n').unwrap_or(block).split('\n') {
            note.add_signature(parse_signature_line(line)?)?;
        }
        Ok(note)
    }

    /// Checks the signatures against `verifiers` as the spec orders: a signature whose
    /// (name, key id) no verifier has is ignored; one that a verifier has must verify,
    /// or the whole note is refused; and at least one must verify. Returns the
    /// verifiers whose signatures verified, in the order of the lines.
    ///
    /// # Errors
    /// [`NoteError::InvalidSignature`] for a known key whose signature fails;
    /// [`NoteError::NoKnownSignature`] when no known key signed.
    pub fn verify<'v>(
        &self,
        verifiers: &'v [NoteVerifier],
    ) -> Result<Vec<VerifiedSignature<'v>>, NoteError> {
        let mut verified = Vec::new();
        for sig in &self.signatures {
            let Some(verifier) = verifiers
                .iter()
                .find(|v| v.name() == sig.name && v.id() == sig.id)
            else {
                continue;
            };
            match verifier.check(&self.text, &sig.signature) {
                Some(timestamp) => verified.push(VerifiedSignature {
                    verifier,
                    timestamp,
                }),
                None => {
                    return Err(NoteError::InvalidSignature {
                        name: sig.name.clone(),
                        id: sig.id,
                    });
                }
            }
        }
        if verified.is_empty() {
            return Err(NoteError::NoKnownSignature);
        }
        Ok(verified)
    }
}

fn parse_signature_line(line: &str) -> Result<NoteSignature, NoteError> {
    let bad = || NoteError::BadSignatureLine {
        line: line.to_owned(),
    };
    let rest = line.strip_prefix(EM_DASH_SPACE).ok_or_else(bad)?;
    let (name, b64) = rest.split_once(' ').ok_or_else(bad)?;
    check_key_name(name)?;
    let bytes = STANDARD.decode(b64).map_err(|_| bad())?;
    if bytes.len() < 5 {
        return Err(bad());
    }
    Ok(NoteSignature {
        name: name.to_owned(),
        id: u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]),
        signature: bytes[4..].to_vec(),
    })
}

/// A signature that verified, and who made it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VerifiedSignature<'v> {
    /// The verifier it verified under.
    pub verifier: &'v NoteVerifier,
    /// A cosignature's timestamp; `None` for a plain signature.
    pub timestamp: Option<u64>,
}

/// A key that can check note signatures.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NoteVerifier {
    /// An Ed25519 note key (type 0x01): the log's key.
    Ed25519 {
        /// Key name.
        name: String,
        /// The public key.
        key: VerifyingKey,
    },
    /// An Ed25519 cosigner key (type 0x04): a witness.
    Cosigner {
        /// Key name.
        name: String,
        /// The public key.
        key: VerifyingKey,
    },
}

impl NoteVerifier {
    /// Key name.
    pub fn name(&self) -> &str {
        match self {
            Self::Ed25519 { name, .. } | Self::Cosigner { name, .. } => name,
        }
    }

    /// Signature type byte.
    pub fn signature_type(&self) -> u8 {
        match self {
            Self::Ed25519 { .. } => TYPE_ED25519,
            Self::Cosigner { .. } => TYPE_COSIGNATURE,
        }
    }

    /// The public key.
    pub fn key(&self) -> &VerifyingKey {
        match self {
            Self::Ed25519 { key, .. } | Self::Cosigner { key, .. } => key,
        }
    }

    /// Key id.
    pub fn id(&self) -> u32 {
        key_id(self.name(), self.signature_type(), self.key().as_bytes())
    }

    /// `Some(timestamp)` when `signature` verifies over `text` (`None` inside for a
    /// plain signature); `None` when it does not.
    fn check(&self, text: &str, signature: &[u8]) -> Option<Option<u64>> {
        match self {
            Self::Ed25519 { key, .. } => {
                let sig = ed25519_dalek::Signature::from_slice(signature).ok()?;
                key.verify_strict(text.as_bytes(), &sig).ok()?;
                Some(None)
            }
            Self::Cosigner { key, .. } => cosignature::check(key, text, signature).map(Some),
        }
    }

    /// The verifier key text: `<name>+<8 hex digits of the key id>+<base64(type ‖ key)>`.
    pub fn to_vkey(&self) -> String {
        let mut material = vec![self.signature_type()];
        material.extend_from_slice(self.key().as_bytes());
        format!(
            "{}+{:08x}+{}",
            self.name(),
            self.id(),
            STANDARD.encode(material)
        )
    }

    /// Parses a verifier key of type 0x01 or 0x04 and checks its key id.
    ///
    /// # Errors
    /// [`NoteError::BadVerifierKey`] naming what is wrong; [`NoteError::BadKeyName`].
    pub fn from_vkey(text: &str) -> Result<Self, NoteError> {
        let bad = |reason| NoteError::BadVerifierKey {
            key: text.to_owned(),
            reason,
        };
        let mut parts = text.splitn(3, '+');
        let (Some(name), Some(id), Some(material)) = (parts.next(), parts.next(), parts.next())
        else {
            return Err(bad("expected <name>+<key id>+<key>"));
        };
        check_key_name(name)?;
        if id.len() != 8 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(bad("the key id is not 8 hex digits"));
        }
        let id = u32::from_str_radix(id, 16).map_err(|_| bad("the key id is not hex"))?;
        let material = STANDARD
            .decode(material)
            .map_err(|_| bad("the key is not base64"))?;
        let (&kind, key) = material.split_first().ok_or(bad("the key is empty"))?;
        let key = <[u8; 32]>::try_from(key).map_err(|_| bad("an Ed25519 key is 32 bytes"))?;
        let key = VerifyingKey::from_bytes(&key).map_err(|_| bad("not an Ed25519 point"))?;
        let verifier = match kind {
            TYPE_ED25519 => Self::Ed25519 {
                name: name.to_owned(),
                key,
            },
            TYPE_COSIGNATURE => Self::Cosigner {
                name: name.to_owned(),
                key,
            },
            _ => return Err(bad("unsupported signature type")),
        };
        if verifier.id() != id {
            return Err(bad("the key id does not match the name and key"));
        }
        Ok(verifier)
    }
}

/// Signs notes with an Ed25519 key under a name (signature type 0x01).
#[derive(Clone)]
pub struct NoteSigner {
    name: String,
    key: SigningKey,
}

impl std::fmt::Debug for NoteSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NoteSigner")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl NoteSigner {
    /// A signer named `name` with `key`.
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

    /// The matching verifier.
    pub fn verifier(&self) -> NoteVerifier {
        NoteVerifier::Ed25519 {
            name: self.name.clone(),
            key: self.key.verifying_key(),
        }
    }

    /// The signature line for `note`'s text.
    pub fn sign(&self, note: &Note) -> NoteSignature {
        NoteSignature {
            name: self.name.clone(),
            id: self.verifier().id(),
            signature: self.key.sign(note.text().as_bytes()).to_bytes().to_vec(),
        }
    }
}
