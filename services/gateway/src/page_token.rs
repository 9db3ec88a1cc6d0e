//! `ListCases` page tokens: opaque and tamper-evident.
//!
//! A token seals the projection's list cursor (the position after the last case the
//! page returned) with XChaCha20-Poly1305 under the gateway's page-token key. The
//! associated data is a digest of the query it belongs to (the caller's office, its
//! admin role and every filter), so a token only continues the very listing that
//! handed it out: a token of another caller or another filter is refused like a forged
//! one. The plaintext is padded to a fixed length, so every token has the same length
//! and carries nothing readable: no case id, no time, not even the length of an id.
//!
//! The key comes from `--page-token-key` (a file holding 64 hex digits); without it a
//! key is generated at start, and then tokens die with the process. Gateways behind
//! one load balancer share a key file, so a client may switch between them.
//!
//! This module does not decide what a page contains (see `service` and the projection).

use std::fmt;
use std::path::Path;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use sha2::{Digest as _, Sha256};
use zeroize::Zeroizing;

use crate::error::{ReadError, RunError};

/// The prefix naming the token format, so a later format can be told apart.
const TAG: &str = "pt1_";
/// Nonce length of XChaCha20-Poly1305: long enough to be drawn at random per token.
const NONCE: usize = 24;
/// Plaintext length: one length byte and the cursor, zero-padded. A cursor is at most
/// 172 bytes (version tag, hex of a 20-digit instant, separator and a 64-byte case id).
const PLAIN: usize = 192;
/// Poly1305 tag length.
const TAG_LEN: usize = 16;

/// The reason every refused token gets: the same whatever is wrong with it, so the
/// answer tells an attacker nothing about how close a forgery came.
const REFUSED: &str = "is not a page token this gateway handed out for this query (altered, \
from another caller or filter, or from before a restart of a gateway without --page-token-key); \
start again without page_token";

/// The gateway's page-token key.
pub struct PageTokens {
    cipher: XChaCha20Poly1305,
}

impl fmt::Debug for PageTokens {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PageTokens(<key redacted>)")
    }
}

impl PageTokens {
    /// A fresh random key: tokens are valid only as long as this process runs.
    ///
    /// # Errors
    /// [`RunError::Config`] when the system has no randomness to give.
    pub fn generate() -> Result<Self, RunError> {
        let mut key = Zeroizing::new([0u8; 32]);
        getrandom::fill(key.as_mut_slice()).map_err(|e| RunError::Config {
            key: "page-token-key",
            reason: format!("no randomness for a generated key: {e}"),
        })?;
        Ok(Self::from_key(&key))
    }

    /// The key in `path`: 64 hex digits (32 bytes), surrounding white space ignored.
    ///
    /// # Errors
    /// [`RunError::File`] when the file cannot be read; [`RunError::Config`] when it
    /// does not hold exactly 64 hex digits.
    pub fn from_file(path: &Path) -> Result<Self, RunError> {
        let text =
            Zeroizing::new(
                std::fs::read_to_string(path).map_err(|source| RunError::File {
                    path: path.to_owned(),
                    source,
                })?,
            );
        let hex = text.trim();
        let invalid = || RunError::Config {
            key: "page-token-key",
            reason: format!(
                "{} must hold 64 hex digits (32 random bytes, e.g. from `openssl rand -hex 32`)",
                path.display()
            ),
        };
        if hex.len() != 64 {
            return Err(invalid());
        }
        let mut key = Zeroizing::new([0u8; 32]);
        for (i, byte) in key.iter_mut().enumerate() {
            *byte = hex
                .get(2 * i..2 * i + 2)
                .and_then(|pair| u8::from_str_radix(pair, 16).ok())
                .ok_or_else(invalid)?;
        }
        Ok(Self::from_key(&key))
    }

    fn from_key(key: &[u8; 32]) -> Self {
        Self {
            cipher: XChaCha20Poly1305::new(key.into()),
        }
    }

    /// The token continuing the listing `scope` after `cursor`.
    ///
    /// # Errors
    /// [`ReadError::Task`] in the impossible cases of a cursor longer than a token holds
    /// or no randomness for a nonce; both are bugs or a broken system, never the
    /// caller's doing.
    pub fn seal(&self, scope: &Scope, cursor: &str) -> Result<String, ReadError> {
        let bytes = cursor.as_bytes();
        let len = u8::try_from(bytes.len())
            .ok()
            .filter(|len| usize::from(*len) < PLAIN)
            .ok_or(ReadError::Task)?;
        let mut plain = Zeroizing::new([0u8; PLAIN]);
        plain[0] = len;
        plain[1..=bytes.len()].copy_from_slice(bytes);
        let mut nonce = [0u8; NONCE];
        getrandom::fill(&mut nonce).map_err(|_| ReadError::Task)?;
        let sealed = self
            .cipher
            .encrypt(
                XNonce::from_slice(&nonce),
                Payload {
                    msg: plain.as_slice(),
                    aad: &scope.0,
                },
            )
            .map_err(|_| ReadError::Task)?;
        let mut raw = Vec::with_capacity(NONCE + sealed.len());
        raw.extend_from_slice(&nonce);
        raw.extend_from_slice(&sealed);
        Ok(format!("{TAG}{}", URL_SAFE_NO_PAD.encode(raw)))
    }

    /// The cursor inside `token`, if this key sealed it for `scope`.
    ///
    /// # Errors
    /// [`ReadError::InvalidArgument`] naming `page_token`, with one fixed reason for
    /// every kind of bad token.
    pub fn open(&self, scope: &Scope, token: &str) -> Result<String, ReadError> {
        let refused = || ReadError::invalid("page_token", REFUSED);
        let raw = token
            .strip_prefix(TAG)
            .and_then(|text| URL_SAFE_NO_PAD.decode(text).ok())
            .filter(|raw| raw.len() == NONCE + PLAIN + TAG_LEN)
            .ok_or_else(refused)?;
        let (nonce, sealed) = raw.split_at(NONCE);
        let plain = Zeroizing::new(
            self.cipher
                .decrypt(
                    XNonce::from_slice(nonce),
                    Payload {
                        msg: sealed,
                        aad: &scope.0,
                    },
                )
                .map_err(|_| refused())?,
        );
        let len = usize::from(*plain.first().ok_or_else(refused)?);
        plain
            .get(1..=len)
            .and_then(|bytes| std::str::from_utf8(bytes).ok())
            .map(str::to_owned)
            .ok_or_else(refused)
    }
}

/// The digest of one listing: who lists, and with which filters. Tokens are bound to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scope([u8; 32]);

impl Scope {
    /// The scope of a listing described by `parts` (each part is length-prefixed, so no
    /// two different descriptions collide by concatenation).
    pub fn of(parts: &[&[u8]]) -> Self {
        let mut hash = Sha256::new();
        hash.update(b"casebus list-cases page token v1");
        for part in parts {
            hash.update((part.len() as u64).to_be_bytes());
            hash.update(part);
        }
        Self(hash.finalize().into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scope(name: &str) -> Scope {
        Scope::of(&[name.as_bytes()])
    }

    #[test]
    fn a_token_opens_to_its_cursor_under_its_key_and_scope_only() {
        let keys = PageTokens::generate().expect("key");
        let token = keys.seal(&scope("a"), "c1abcdef").expect("seal");
        assert_eq!(
            keys.open(&scope("a"), &token).ok().as_deref(),
            Some("c1abcdef")
        );
        let other_scope = keys.open(&scope("b"), &token).expect_err("other scope");
        let other_key = PageTokens::generate()
            .expect("key")
            .open(&scope("a"), &token)
            .expect_err("other key");
        for err in [other_scope, other_key] {
            assert_eq!(err.to_string(), format!("invalid page_token: {REFUSED}"));
        }
    }

    #[test]
    fn every_token_has_the_same_length_and_differs_each_time() {
        let keys = PageTokens::generate().expect("key");
        let short = keys.seal(&scope("a"), "c1").expect("seal");
        let long = keys.seal(&scope("a"), &"c1".repeat(86)).expect("seal");
        assert_eq!(short.len(), long.len());
        assert_ne!(
            keys.seal(&scope("a"), "c1").expect("seal"),
            short,
            "a random nonce per token"
        );
    }

    #[test]
    fn altered_truncated_and_foreign_tokens_are_refused() {
        let keys = PageTokens::generate().expect("key");
        let token = keys.seal(&scope("a"), "c1abcdef").expect("seal");
        let mut flipped = token.clone().into_bytes();
        let last = flipped.len() - 3;
        flipped[last] = if flipped[last] == b'A' { b'B' } else { b'A' };
        let flipped = String::from_utf8(flipped).expect("ascii");
        for bad in [
            String::new(),
            "c1abcdef".to_owned(),
            flipped,
            token[..token.len() - 1].to_owned(),
            format!("{token}A"),
            token.replacen(TAG, "pt2_", 1),
        ] {
            assert!(keys.open(&scope("a"), &bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn key_files_need_exactly_64_hex_digits() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("key");
        std::fs::write(&path, format!("{}\n", "ab".repeat(32))).expect("write");
        assert!(PageTokens::from_file(&path).is_ok());
        for bad in ["ab".repeat(31), "zz".repeat(32), "ab".repeat(33)] {
            std::fs::write(&path, bad).expect("write");
            let err = PageTokens::from_file(&path).expect_err("bad key");
            assert!(err.to_string().contains("64 hex digits"), "{err}");
        }
    }
}
