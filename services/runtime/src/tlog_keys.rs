//! Key files of the transparency log: the log's key (`--log-key`, what a gateway signs
//! checkpoints with) and a witness's key (what `casebus witness` cosigns with), each a
//! secret key text (`PRIVATE+KEY+<name>+<id>+<key>`, `casebus_tlog::skey`) in a file of
//! mode 0600, with its C2SP verifier key (`<name>+<id>+<key>`) in `<file>.vkey` beside
//! it. Neither is an office key: office keys sign events, these sign tree heads.
//!
//! This module generates, writes and reads those files; it signs nothing.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use ed25519_dalek::SigningKey;
use zeroize::Zeroizing;

use casebus_tlog::cosignature::Cosigner;
use casebus_tlog::note::{NoteError, NoteSigner, NoteVerifier};
use casebus_tlog::skey::{self, SecretKey};

/// Why a log or witness key file could not be written or read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LogKeyError {
    /// Reading or writing the file failed (a file that exists is never overwritten).
    #[error("key file {path}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The file's contents are not a key of the kind asked for.
    #[error("key file {path}: {reason}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The system's random source failed.
    #[error("no randomness for a new key: {0}")]
    Random(String),
}

/// Which key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogKeyKind {
    /// The log's key (note signature type 0x01).
    Log,
    /// A witness's key (cosignature type 0x04).
    Witness,
}

/// `<file>.vkey`, where the verifier key is written.
pub fn verifier_path(secret: &Path) -> PathBuf {
    let mut name = secret.as_os_str().to_owned();
    name.push(".vkey");
    PathBuf::from(name)
}

/// Generates a key of `kind` named `name`, writes the secret file `out` (mode 0600,
/// never overwriting) and `<out>.vkey`, and returns the verifier key.
///
/// # Errors
/// [`LogKeyError::Invalid`] for a bad key name; [`LogKeyError::Io`] when either file
/// exists or cannot be written (nothing is left behind then);
/// [`LogKeyError::Random`].
pub fn generate(kind: LogKeyKind, name: &str, out: &Path) -> Result<NoteVerifier, LogKeyError> {
    let mut seed = Zeroizing::new([0u8; 32]);
    getrandom::fill(seed.as_mut_slice()).map_err(|e| LogKeyError::Random(e.to_string()))?;
    let key = SigningKey::from_bytes(&seed);
    let invalid = |e: NoteError| LogKeyError::Invalid {
        path: out.to_owned(),
        reason: e.to_string(),
    };
    let text = Zeroizing::new(
        match kind {
            LogKeyKind::Log => skey::log_key_text(name, &key),
            LogKeyKind::Witness => skey::witness_key_text(name, &key),
        }
        .map_err(invalid)?,
    );
    let verifier = SecretKey::parse(&text).map_err(invalid)?.verifier();
    let vkey_path = verifier_path(out);
    if vkey_path.exists() {
        return Err(LogKeyError::Io {
            path: vkey_path,
            source: std::io::ErrorKind::AlreadyExists.into(),
        });
    }
    write_new(out, format!("{}\n", &*text).as_bytes(), true)?;
    if let Err(e) = write_new(
        &vkey_path,
        format!("{}\n", verifier.to_vkey()).as_bytes(),
        false,
    ) {
        let _ = std::fs::remove_file(out);
        return Err(e);
    }
    Ok(verifier)
}

fn write_new(path: &Path, bytes: &[u8], secret: bool) -> Result<(), LogKeyError> {
    let io = |source| LogKeyError::Io {
        path: path.to_owned(),
        source,
    };
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    if secret {
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    }
    #[cfg(not(unix))]
    let _ = secret;
    let mut file = options.open(path).map_err(io)?;
    file.write_all(bytes)
        .and_then(|()| file.sync_all())
        .map_err(io)
}

fn read_secret(path: &Path) -> Result<SecretKey, LogKeyError> {
    let text = Zeroizing::new(
        std::fs::read_to_string(path).map_err(|source| LogKeyError::Io {
            path: path.to_owned(),
            source,
        })?,
    );
    SecretKey::parse(&text).map_err(|e| LogKeyError::Invalid {
        path: path.to_owned(),
        reason: e.to_string(),
    })
}

/// Reads a log key file.
///
/// # Errors
/// [`LogKeyError::Io`]; [`LogKeyError::Invalid`] for anything else, a witness key too.
pub fn load_log_key(path: &Path) -> Result<NoteSigner, LogKeyError> {
    match read_secret(path)? {
        SecretKey::Log(signer) => Ok(signer),
        SecretKey::Witness(_) => Err(LogKeyError::Invalid {
            path: path.to_owned(),
            reason: "this is a witness key, not a log key".into(),
        }),
    }
}

/// Reads a witness key file.
///
/// # Errors
/// [`LogKeyError::Io`]; [`LogKeyError::Invalid`] for anything else, a log key too.
pub fn load_witness_key(path: &Path) -> Result<Cosigner, LogKeyError> {
    match read_secret(path)? {
        SecretKey::Witness(cosigner) => Ok(cosigner),
        SecretKey::Log(_) => Err(LogKeyError::Invalid {
            path: path.to_owned(),
            reason: "this is a log key, not a witness key".into(),
        }),
    }
}

/// Reads a verifier key: `text` itself when it is one (`<name>+<id>+<key>`), otherwise
/// the first line of the file it names.
///
/// # Errors
/// [`LogKeyError::Io`]; [`LogKeyError::Invalid`].
pub fn load_verifier(text: &str) -> Result<NoteVerifier, LogKeyError> {
    if let Ok(v) = NoteVerifier::from_vkey(text.trim()) {
        return Ok(v);
    }
    let path = Path::new(text);
    let contents = std::fs::read_to_string(path).map_err(|source| LogKeyError::Io {
        path: path.to_owned(),
        source,
    })?;
    NoteVerifier::from_vkey(contents.lines().next().unwrap_or_default().trim()).map_err(|e| {
        LogKeyError::Invalid {
            path: path.to_owned(),
            reason: e.to_string(),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_generated_log_key_is_private_loads_back_and_matches_its_vkey_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let out = dir.path().join("log.key");
        let verifier = generate(LogKeyKind::Log, "casebus.example/cases", &out).expect("generate");
        let signer = load_log_key(&out).expect("load");
        assert_eq!(signer.verifier(), verifier);
        let vkey = verifier_path(&out);
        assert_eq!(
            load_verifier(vkey.to_str().expect("utf-8")).expect("vkey file"),
            verifier
        );
        assert_eq!(
            load_verifier(&verifier.to_vkey()).expect("vkey text"),
            verifier
        );
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(&out).expect("meta").permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        assert!(matches!(
            generate(LogKeyKind::Log, "casebus.example/cases", &out),
            Err(LogKeyError::Io { .. })
        ));
        let err = load_witness_key(&out).expect_err("a log key is no witness key");
        assert!(err.to_string().contains("not a witness key"), "{err}");
    }
}
