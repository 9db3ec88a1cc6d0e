//! Secret key text of a log or witness key, in the form Go's `sumdb/note` gives signer
//! keys: `PRIVATE+KEY+<name>+<8 hex digits of the key id>+base64(type ‖ 32-byte seed)`,
//! with type 0x01 for a log key ([`NoteSigner`]) and 0x04 for a witness's cosigning key
//! ([`Cosigner`]). The key id is the one its verifier key (`<name>+<id>+<key>`) states.
//!
//! This module parses and writes the text; where the file lives, and its mode, is the
//! caller's.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use ed25519_dalek::SigningKey;

use crate::cosignature::Cosigner;
use crate::note::{NoteError, NoteSigner, NoteVerifier, TYPE_COSIGNATURE, TYPE_ED25519};

/// The first part of the text.
pub const PREFIX: &str = "PRIVATE+KEY+";

/// A parsed secret key: a log key or a witness key.
#[derive(Clone, Debug)]
pub enum SecretKey {
    /// Signs checkpoints (signature type 0x01).
    Log(NoteSigner),
    /// Cosigns checkpoints (signature type 0x04).
    Witness(Cosigner),
}

impl SecretKey {
    /// The verifier key matching this secret key.
    pub fn verifier(&self) -> NoteVerifier {
        match self {
            Self::Log(s) => s.verifier(),
            Self::Witness(c) => c.verifier(),
        }
    }

    /// Parses the text (surrounding whitespace ignored) and checks its key id.
    ///
    /// # Errors
    /// [`NoteError::BadVerifierKey`] naming what is wrong (the key itself is never
    /// quoted); [`NoteError::BadKeyName`].
    pub fn parse(text: &str) -> Result<Self, NoteError> {
        let bad = |reason| NoteError::BadVerifierKey {
            key: "PRIVATE+KEY+…".to_owned(),
            reason,
        };
        let rest = text
            .trim()
            .strip_prefix(PREFIX)
            .ok_or(bad("a secret key starts with PRIVATE+KEY+"))?;
        let mut parts = rest.splitn(3, '+');
        let (Some(name), Some(id), Some(material)) = (parts.next(), parts.next(), parts.next())
        else {
            return Err(bad("expected PRIVATE+KEY+<name>+<key id>+<key>"));
        };
        if id.len() != 8 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(bad("the key id is not 8 hex digits"));
        }
        let id = u32::from_str_radix(id, 16).map_err(|_| bad("the key id is not hex"))?;
        let material = STANDARD
            .decode(material)
            .map_err(|_| bad("the key is not base64"))?;
        let (&kind, seed) = material.split_first().ok_or(bad("the key is empty"))?;
        let seed = <[u8; 32]>::try_from(seed).map_err(|_| bad("an Ed25519 seed is 32 bytes"))?;
        let key = SigningKey::from_bytes(&seed);
        let parsed = match kind {
            TYPE_ED25519 => Self::Log(NoteSigner::new(name, key)?),
            TYPE_COSIGNATURE => Self::Witness(Cosigner::new(name, key)?),
            _ => return Err(bad("unsupported signature type")),
        };
        if parsed.verifier().id() != id {
            return Err(bad("the key id does not match the name and key"));
        }
        Ok(parsed)
    }
}

/// The text of a log key named `name` with `key`.
///
/// # Errors
/// [`NoteError::BadKeyName`].
pub fn log_key_text(name: &str, key: &SigningKey) -> Result<String, NoteError> {
    let signer = NoteSigner::new(name, key.clone())?;
    Ok(text(TYPE_ED25519, &signer.verifier(), key))
}

/// The text of a witness key named `name` with `key`.
///
/// # Errors
/// [`NoteError::BadKeyName`].
pub fn witness_key_text(name: &str, key: &SigningKey) -> Result<String, NoteError> {
    let cosigner = Cosigner::new(name, key.clone())?;
    Ok(text(TYPE_COSIGNATURE, &cosigner.verifier(), key))
}

fn text(kind: u8, verifier: &NoteVerifier, key: &SigningKey) -> String {
    let mut material = vec![kind];
    material.extend_from_slice(key.as_bytes());
    format!(
        "{PREFIX}{}+{:08x}+{}",
        verifier.name(),
        verifier.id(),
        STANDARD.encode(material)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_go_example_signer_key_parses_to_its_verifier_key() {
        // The example key pair of Go's golang.org/x/mod/sumdb/note documentation.
        let skey = "PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz";
        let vkey = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW";
        let parsed = SecretKey::parse(skey).expect("parses");
        assert!(matches!(parsed, SecretKey::Log(_)));
        assert_eq!(parsed.verifier().to_vkey(), vkey);
        let SecretKey::Log(signer) = parsed else {
            unreachable!()
        };
        let seed = SigningKey::from_bytes(
            &<[u8; 32]>::try_from(
                &STANDARD
                    .decode(skey.split_once("c74f20a3+").expect("key part").1)
                    .expect("b64")[1..],
            )
            .expect("32 bytes"),
        );
        assert_eq!(log_key_text(signer.name(), &seed).expect("text"), skey);
    }

    #[test]
    fn a_witness_key_round_trips_and_a_wrong_id_or_type_is_refused() {
        let key = SigningKey::from_bytes(&[7; 32]);
        let text = witness_key_text("witness.example/court", &key).expect("text");
        let parsed = SecretKey::parse(&format!("{text}\n")).expect("parses");
        assert!(matches!(parsed, SecretKey::Witness(_)));
        assert!(
            parsed
                .verifier()
                .to_vkey()
                .starts_with("witness.example/court+")
        );
        let wrong_id = text.replacen(
            "PRIVATE+KEY+witness.example/court+",
            "PRIVATE+KEY+witness.example/court+0",
            1,
        );
        assert!(SecretKey::parse(&wrong_id).is_err());
        for bad in [
            "",
            "PRIVATE+KEY+",
            "a+00000000+AQ==",
            "PRIVATE+KEY+a+zzzzzzzz+AQ==",
        ] {
            assert!(SecretKey::parse(bad).is_err(), "{bad}");
        }
    }
}
