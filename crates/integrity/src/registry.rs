//! The office registry: every office that may sign events, its agency, and its public
//! keys with validity periods (so keys can be rotated without invalidating old events).
//!
//! Kept as a TOML file shared by every service:
//!
//! ```toml
//! [[office]]
//! id = "customs:ningbo"
//! name = "Ningbo Customs"
//!
//! [[office.keys]]
//! key_id = "customs:ningbo#2026"
//! public_key = "base64 of the 32-byte Ed25519 public key"
//! valid_from = "2026-01-01T00:00:00Z"
//! # valid_until = "2027-01-01T00:00:00Z"   (optional, exclusive)
//!
//! [[office.encryption_keys]]              # optional: X25519 keys sealed content is wrapped for
//! key_id = "customs:ningbo#enc-2026"
//! public_key = "base64 of the 32-byte X25519 public key"
//! valid_from = "2026-01-01T00:00:00Z"
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use ed25519_dalek::VerifyingKey;
use time::OffsetDateTime;

use casebus_proto::OfficeId;
use casebus_proto::event::v1::Agency;

use crate::seal::ReaderKey;

/// Errors loading or changing the registry.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RegistryError {
    /// The registry file could not be read or written.
    #[error("office registry {path}")]
    Io {
        /// The registry file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The registry text is not valid TOML of the expected shape.
    #[error("office registry {path}: {reason}")]
    Parse {
        /// The registry file (or `<memory>`).
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// An entry is invalid.
    #[error("office registry: office {office}: {reason}")]
    Invalid {
        /// The office whose entry is invalid.
        office: String,
        /// What is wrong.
        reason: String,
    },
}

/// One public key of an office: a signing key (Ed25519) in `keys`, an encryption key
/// (X25519) in `encryption_keys`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyEntry {
    /// Key id, `<office>#<label>`.
    pub key_id: String,
    /// The public key, base64 of 32 bytes.
    pub public_key: String,
    /// First instant at which events may be recorded with this key.
    #[serde(with = "time::serde::rfc3339")]
    pub valid_from: OffsetDateTime,
    /// Instant from which the key is no longer valid (exclusive); none for open-ended.
    #[serde(
        default,
        with = "time::serde::rfc3339::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub valid_until: Option<OffsetDateTime>,
}

impl KeyEntry {
    /// Whether an event recorded at `at` may carry this key.
    pub fn valid_at(&self, at: OffsetDateTime) -> bool {
        self.valid_from <= at && self.valid_until.is_none_or(|until| at < until)
    }
}

/// One office of the registry.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OfficeEntry {
    /// The office id.
    pub id: OfficeId,
    /// Human name, e.g. "Ningbo Customs".
    #[serde(default)]
    pub name: String,
    /// Its keys, oldest first.
    #[serde(default)]
    pub keys: Vec<KeyEntry>,
    /// Its X25519 encryption keys, oldest first: what is sealed for the office is
    /// wrapped for those valid at the time of sealing (absent in registries older than
    /// sealing).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub encryption_keys: Vec<KeyEntry>,
}

// Unknown fields are errors: a misspelt table (`offices = 7`, `[[offcie]]`) would
// otherwise load as a registry with fewer offices or keys than the file means.
#[derive(serde::Serialize, serde::Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RegistryFile {
    #[serde(default)]
    office: Vec<OfficeEntry>,
}

/// Offices and their keys, indexed by office id and by key id.
#[derive(Debug, Clone, Default)]
pub struct OfficeRegistry {
    offices: BTreeMap<OfficeId, OfficeEntry>,
    keys: BTreeMap<String, (OfficeId, KeyEntry, VerifyingKey)>,
    encryption_keys: BTreeMap<String, (OfficeId, KeyEntry, ReaderKey)>,
}

/// Checks that `key_id` is `<office>#<label>` with a label of 1-32 chars of
/// `[A-Za-z0-9_-]`.
pub(crate) fn validate_key_id(office: &OfficeId, key_id: &str) -> Result<(), String> {
    let Some((prefix, label)) = key_id.split_once('#') else {
        return Err(format!(
            "key id {key_id:?} must have the form <office>#<label>"
        ));
    };
    if prefix != office.as_str() {
        return Err(format!(
            "key id {key_id:?} does not belong to office {office}"
        ));
    }
    if label.is_empty()
        || label.len() > 32
        || !label
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    {
        return Err(format!(
            "key id {key_id:?}: label must be 1-32 chars of [A-Za-z0-9_-]"
        ));
    }
    Ok(())
}

/// Ends `found` (the key registered under `key_id`, with its office) at `until`;
/// returns its office. `what` names the kind in errors.
fn retire(
    found: Option<(OfficeId, &mut KeyEntry)>,
    key_id: &str,
    until: OffsetDateTime,
    what: &str,
) -> Result<OfficeId, RegistryError> {
    let Some((office, key)) = found else {
        return Err(RegistryError::Invalid {
            office: key_id.split('#').next().unwrap_or_default().to_owned(),
            reason: format!("{what} id {key_id} is not registered"),
        });
    };
    if until <= key.valid_from {
        return Err(RegistryError::Invalid {
            office: office.to_string(),
            reason: format!("{what} {key_id}: valid_until must be after valid_from"),
        });
    }
    key.valid_until = Some(until);
    Ok(office)
}

impl OfficeRegistry {
    /// Loads the registry from a TOML file.
    ///
    /// # Errors
    /// [`RegistryError::Io`] when the file cannot be read, [`RegistryError::Parse`] when
    /// it is not valid TOML, [`RegistryError::Invalid`] when an entry is invalid.
    pub fn load(path: &Path) -> Result<Self, RegistryError> {
        let text = std::fs::read_to_string(path).map_err(|source| RegistryError::Io {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(&text).map_err(|e| match e {
            RegistryError::Parse { reason, .. } => RegistryError::Parse {
                path: path.to_owned(),
                reason,
            },
            other => other,
        })
    }

    /// Parses registry TOML.
    ///
    /// # Errors
    /// [`RegistryError::Parse`] for bad TOML; [`RegistryError::Invalid`] for an invalid
    /// entry (duplicate office or key id, bad public key, empty validity period).
    pub fn parse(text: &str) -> Result<Self, RegistryError> {
        let file: RegistryFile = toml::from_str(text).map_err(|e| RegistryError::Parse {
            path: PathBuf::from("<memory>"),
            reason: match e.span() {
                Some(span) => format!(
                    "line {}: {}",
                    text.as_bytes()[..span.start.min(text.len())]
                        .iter()
                        .filter(|b| **b == b'\n')
                        .count()
                        + 1,
                    e.message()
                ),
                None => e.message().to_owned(),
            },
        })?;
        let mut registry = Self::default();
        for office in file.office {
            registry.insert_office(office)?;
        }
        Ok(registry)
    }

    /// Adds an office with its keys.
    ///
    /// # Errors
    /// [`RegistryError::Invalid`] when the office exists already or one of its keys is
    /// invalid or already registered.
    pub fn insert_office(&mut self, entry: OfficeEntry) -> Result<(), RegistryError> {
        if self.offices.contains_key(&entry.id) {
            return Err(RegistryError::Invalid {
                office: entry.id.to_string(),
                reason: "listed twice".into(),
            });
        }
        // Work on a copy so that an invalid key leaves the registry unchanged.
        let mut next = self.clone();
        let mut stored = entry;
        let keys = std::mem::take(&mut stored.keys);
        let encryption_keys = std::mem::take(&mut stored.encryption_keys);
        let id = stored.id.clone();
        next.offices.insert(id.clone(), stored);
        for key in keys {
            next.add_key(&id, key)?;
        }
        for key in encryption_keys {
            next.add_encryption_key(&id, key)?;
        }
        *self = next;
        Ok(())
    }

    /// Adds a key to a registered office (key rotation: add the new key, then set
    /// `valid_until` on the old one with [`OfficeRegistry::retire_key`]).
    ///
    /// # Errors
    /// [`RegistryError::Invalid`] when the office is unknown, the key id is malformed or
    /// taken, the public key is not 32 bytes of base64, or the validity period is empty.
    pub fn add_key(&mut self, office: &OfficeId, key: KeyEntry) -> Result<(), RegistryError> {
        let raw = self.check_new_key(office, &key, "key")?;
        let verifying = VerifyingKey::from_bytes(&raw).map_err(|_| RegistryError::Invalid {
            office: office.to_string(),
            reason: format!("key {}: not a valid Ed25519 public key", key.key_id),
        })?;
        if let Some(entry) = self.offices.get_mut(office) {
            entry.keys.push(key.clone());
        }
        self.keys
            .insert(key.key_id.clone(), (office.clone(), key, verifying));
        Ok(())
    }

    /// What every new key must satisfy, of either kind (`what` names it in errors): its
    /// office is registered, its id is well formed and taken by no key of either kind,
    /// its public key is 32 bytes of base64, and its validity period is not empty.
    /// Returns the public key's bytes.
    fn check_new_key(
        &self,
        office: &OfficeId,
        key: &KeyEntry,
        what: &str,
    ) -> Result<[u8; 32], RegistryError> {
        let invalid = |reason: String| RegistryError::Invalid {
            office: office.to_string(),
            reason,
        };
        if !self.offices.contains_key(office) {
            return Err(invalid("not registered".into()));
        }
        validate_key_id(office, &key.key_id).map_err(invalid)?;
        if self.keys.contains_key(&key.key_id) || self.encryption_keys.contains_key(&key.key_id) {
            return Err(invalid(format!(
                "key id {} is registered already",
                key.key_id
            )));
        }
        let raw = B64.decode(key.public_key.as_bytes()).map_err(|e| {
            invalid(format!(
                "{what} {}: public_key is not base64: {e}",
                key.key_id
            ))
        })?;
        let raw: [u8; 32] = raw.as_slice().try_into().map_err(|_| {
            invalid(format!(
                "{what} {}: public_key must be 32 bytes, found {}",
                key.key_id,
                raw.len()
            ))
        })?;
        if key.valid_until.is_some_and(|until| until <= key.valid_from) {
            return Err(invalid(format!(
                "{what} {}: valid_until must be after valid_from",
                key.key_id
            )));
        }
        Ok(raw)
    }

    /// Adds an encryption key to a registered office (rotation: add the new key, then
    /// end the old one with [`OfficeRegistry::retire_encryption_key`]).
    ///
    /// # Errors
    /// [`RegistryError::Invalid`] when the office is unknown, the key id is malformed or
    /// taken (by a signing or an encryption key), the public key is not 32 bytes of
    /// base64, or the validity period is empty.
    pub fn add_encryption_key(
        &mut self,
        office: &OfficeId,
        key: KeyEntry,
    ) -> Result<(), RegistryError> {
        let raw = self.check_new_key(office, &key, "encryption key")?;
        let reader =
            ReaderKey::from_bytes(&key.key_id, &raw).map_err(|e| RegistryError::Invalid {
                office: office.to_string(),
                reason: e.to_string(),
            })?;
        if let Some(entry) = self.offices.get_mut(office) {
            entry.encryption_keys.push(key.clone());
        }
        self.encryption_keys
            .insert(key.key_id.clone(), (office.clone(), key, reader));
        Ok(())
    }

    /// Ends the validity of an encryption key at `until` (exclusive): nothing is sealed
    /// for it from then on.
    ///
    /// # Errors
    /// [`RegistryError::Invalid`] when the key is unknown or `until` is not after its
    /// `valid_from`.
    pub fn retire_encryption_key(
        &mut self,
        key_id: &str,
        until: OffsetDateTime,
    ) -> Result<(), RegistryError> {
        let found = self
            .encryption_keys
            .get_mut(key_id)
            .map(|(office, key, _)| (office.clone(), key));
        let office = retire(found, key_id, until, "encryption key")?;
        if let Some(entry) = self.offices.get_mut(&office) {
            for k in entry
                .encryption_keys
                .iter_mut()
                .filter(|k| k.key_id == key_id)
            {
                k.valid_until = Some(until);
            }
        }
        Ok(())
    }

    /// The keys content sealed at `at` is wrapped for, for the offices `readers` keeps:
    /// each such office's encryption keys valid at `at`, ordered by key id. An office
    /// without a valid key is left out (it cannot read what is sealed then).
    pub fn reader_keys(
        &self,
        at: OffsetDateTime,
        mut readers: impl FnMut(&OfficeId) -> bool,
    ) -> Vec<ReaderKey> {
        self.encryption_keys
            .values()
            .filter(|(office, entry, _)| entry.valid_at(at) && readers(office))
            .map(|(_, _, reader)| reader.clone())
            .collect()
    }

    /// The office and entry registered under the encryption key id `key_id`.
    pub fn encryption_key_entry(&self, key_id: &str) -> Option<(&OfficeId, &KeyEntry)> {
        self.encryption_keys
            .get(key_id)
            .map(|(office, entry, _)| (office, entry))
    }

    /// Ends the validity of a key at `until` (exclusive).
    ///
    /// # Errors
    /// [`RegistryError::Invalid`] when the key is unknown or `until` is not after its
    /// `valid_from`.
    pub fn retire_key(&mut self, key_id: &str, until: OffsetDateTime) -> Result<(), RegistryError> {
        let found = self
            .keys
            .get_mut(key_id)
            .map(|(office, key, _)| (office.clone(), key));
        let office = retire(found, key_id, until, "key")?;
        if let Some(entry) = self.offices.get_mut(&office) {
            for k in entry.keys.iter_mut().filter(|k| k.key_id == key_id) {
                k.valid_until = Some(until);
            }
        }
        Ok(())
    }

    /// The registered office, if any.
    pub fn office(&self, id: &OfficeId) -> Option<&OfficeEntry> {
        self.offices.get(id)
    }

    /// Whether `id` is registered.
    pub fn contains(&self, id: &OfficeId) -> bool {
        self.offices.contains_key(id)
    }

    /// The agency of a registered office.
    pub fn agency_of(&self, id: &OfficeId) -> Option<Agency> {
        self.offices.get(id).map(|o| o.id.agency())
    }

    /// All offices, ordered by id.
    pub fn offices(&self) -> impl Iterator<Item = &OfficeEntry> {
        self.offices.values()
    }

    /// The office and entry (public key, validity period) registered under `key_id`.
    pub fn key_entry(&self, key_id: &str) -> Option<(&OfficeId, &KeyEntry)> {
        self.keys
            .get(key_id)
            .map(|(office, entry, _)| (office, entry))
    }

    /// The office and verifying key registered under `key_id`.
    pub(crate) fn key(&self, key_id: &str) -> Option<&(OfficeId, KeyEntry, VerifyingKey)> {
        self.keys.get(key_id)
    }

    /// The registry as TOML text (the file format [`OfficeRegistry::parse`] reads).
    pub fn to_toml(&self) -> String {
        let file = RegistryFile {
            office: self.offices.values().cloned().collect(),
        };
        // Serialising plain strings, ids and RFC 3339 times cannot fail.
        toml::to_string_pretty(&file).unwrap_or_default()
    }

    /// Writes the registry to `path` atomically (write a sibling file, then rename).
    ///
    /// # Errors
    /// [`RegistryError::Io`] when the file cannot be written.
    pub fn save(&self, path: &Path) -> Result<(), RegistryError> {
        let io = |source| RegistryError::Io {
            path: path.to_owned(),
            source,
        };
        let tmp = path.with_extension("toml.tmp");
        std::fs::write(&tmp, self.to_toml()).map_err(io)?;
        std::fs::rename(&tmp, path).map_err(io)
    }
}

#[cfg(test)]
mod tests {
    use time::macros::datetime;

    use super::*;
    use crate::keys::OfficeSigner;

    fn office(id: &str) -> OfficeId {
        OfficeId::new(id).expect("valid")
    }

    #[test]
    fn a_registry_round_trips_through_toml() {
        let signer = OfficeSigner::from_seed(office("customs:ningbo"), "1", [1; 32]).expect("key");
        let mut registry = OfficeRegistry::default();
        registry
            .insert_office(OfficeEntry {
                id: office("customs:ningbo"),
                name: "Ningbo Customs".into(),
                keys: vec![signer.key_entry(datetime!(2026-01-01 0:00 UTC))],
                encryption_keys: Vec::new(),
            })
            .expect("insert");
        let parsed = OfficeRegistry::parse(&registry.to_toml()).expect("parse");
        assert_eq!(
            parsed.office(&office("customs:ningbo")),
            registry.office(&office("customs:ningbo"))
        );
        assert!(parsed.key("customs:ningbo#1").is_some());
    }

    #[test]
    fn invalid_entries_are_rejected_naming_the_office() {
        let text = r#"
            [[office]]
            id = "customs:ningbo"
            [[office.keys]]
            key_id = "customs:ningbo#1"
            public_key = "AAAA"
            valid_from = "2026-01-01T00:00:00Z"
        "#;
        let err = OfficeRegistry::parse(text).expect_err("short key");
        assert!(err.to_string().contains("customs:ningbo"), "{err}");
        assert!(err.to_string().contains("32 bytes"), "{err}");

        let err = OfficeRegistry::parse("[[office]]\nid = \"navy:x\"\n").expect_err("bad office");
        assert!(err.to_string().contains("navy:x"), "{err}");
    }

    #[test]
    fn a_misspelt_or_unknown_field_is_an_error_naming_it_not_an_emptier_registry() {
        for (text, named, line) in [
            ("offices = 7\n", "offices", "line 1"),
            ("[[offcie]]\nid = \"customs:ningbo\"\n", "offcie", "line 1"),
            (
                "[[office]]\nid = \"customs:ningbo\"\nkey = []\n",
                "key",
                "line 3",
            ),
            (
                "[[office]]\nid = \"customs:ningbo\"\n[[office.keys]]\nkey_id = \"customs:ningbo#1\"\n\
                 public_key = \"AAAA\"\nvalid_from = \"2026-01-01T00:00:00Z\"\nvalid_untill = \"2027-01-01T00:00:00Z\"\n",
                "valid_untill",
                "line 7",
            ),
        ] {
            let err = OfficeRegistry::parse(text).expect_err(text);
            let message = err.to_string();
            assert!(
                message.contains(&format!("`{named}`")),
                "{text:?}: {message}"
            );
            assert!(message.contains(line), "{text:?}: {message}");
        }
    }

    #[test]
    fn a_retired_key_is_valid_only_inside_its_period() {
        let signer = OfficeSigner::from_seed(office("court:hz"), "a", [2; 32]).expect("key");
        let mut registry = OfficeRegistry::default();
        registry
            .insert_office(OfficeEntry {
                id: office("court:hz"),
                name: String::new(),
                keys: vec![signer.key_entry(datetime!(2026-01-01 0:00 UTC))],
                encryption_keys: Vec::new(),
            })
            .expect("insert");
        registry
            .retire_key("court:hz#a", datetime!(2026-06-01 0:00 UTC))
            .expect("retire");
        let (_, key, _) = registry.key("court:hz#a").expect("present");
        assert!(key.valid_at(datetime!(2026-03-01 0:00 UTC)));
        assert!(!key.valid_at(datetime!(2026-06-01 0:00 UTC)));
        assert!(!key.valid_at(datetime!(2025-12-31 0:00 UTC)));
        assert!(
            registry
                .retire_key("court:hz#zz", datetime!(2026-06-01 0:00 UTC))
                .is_err()
        );
    }
}
