//! Sealed content opened for the callers of an agency's own gateway.
//!
//! The shared gateway holds no decryption key: an event sealed for its readers
//! (`Event.sealed`) is served with its readable payload, and the caller who may read it
//! gets the exact signed bytes (`event_bytes`), which hold the ciphertext and the content
//! key wrapped for each reader office, to open with its own key. A gateway that an agency
//! runs for itself may be given that agency's offices' keys (`--decryption-key`); it then
//! opens what is sealed for the caller's own office, and only for callers of that office,
//! and serves the full payload (`TimelineEvent.opened`). `event_bytes` stays the signed
//! form, so the signature and the hash still verify.
//!
//! **Invariant:** a key of office X opens events only for callers whose office is X; an
//! event the caller may not read is a stub before any opening is tried.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use casebus_integrity::OfficeRegistry;
use casebus_integrity::seal::{Opener, OpeningKey, WrappedKey, open_event_with};
use casebus_proto::OfficeId;
use casebus_proto::event::v1::Event;

use crate::error::RunError;

/// The openers of the offices whose keys the gateway was given, by office.
#[derive(Debug, Clone, Default)]
pub struct Openers(Arc<HashMap<OfficeId, Opener>>);

impl Openers {
    /// Loads the key files given with `--decryption-key`; each must be a key of an
    /// office the registry knows.
    ///
    /// # Errors
    /// [`RunError::Config`] naming `--decryption-key` and the file when one cannot be
    /// read or is of an office the registry does not know.
    pub fn load(paths: &[PathBuf], registry: &OfficeRegistry) -> Result<Self, RunError> {
        let mut keys: HashMap<OfficeId, Vec<OpeningKey>> = HashMap::new();
        for path in paths {
            let bad = |reason: String| RunError::Config {
                key: "--decryption-key",
                reason: format!("{}: {reason}", path.display()),
            };
            let key = OpeningKey::load(path).map_err(|e| bad(e.to_string()))?;
            if !registry.contains(key.office()) {
                return Err(bad(format!(
                    "a key of {}, which the office registry does not know",
                    key.office()
                )));
            }
            keys.entry(key.office().clone()).or_default().push(key);
        }
        Ok(Self(Arc::new(
            keys.into_iter()
                .map(|(office, keys)| (office, Opener::new(keys)))
                .collect(),
        )))
    }

    /// The offices whose callers get sealed content opened.
    pub fn offices(&self) -> Vec<String> {
        let mut offices: Vec<String> = self.0.keys().map(ToString::to_string).collect();
        offices.sort();
        offices
    }

    /// The full payload of sealed `event` for a caller of `office`, when the gateway
    /// holds a key of that office the event is sealed for, in the event itself or in
    /// `widened` (the keys later widening VisibilityChanged events wrapped for new
    /// readers); `None` otherwise (no key, not sealed for it, or a seal that does not
    /// open or disagrees with the readable part, which is logged).
    pub fn open_for(
        &self,
        office: &OfficeId,
        event: &Event,
        widened: &[WrappedKey],
    ) -> Option<casebus_proto::event::v1::Payload> {
        event.sealed.as_ref()?;
        let opener = self.0.get(office)?;
        match open_event_with(opener, event, widened) {
            Ok(full) => Some(full),
            Err(casebus_integrity::seal::SealError::NotAReader { .. }) => None,
            Err(error) => {
                tracing::warn!(
                    case_id = %event.case_id,
                    version = event.case_version,
                    %office,
                    error = %error,
                    "a sealed event does not open for the caller's office; serving its readable part"
                );
                None
            }
        }
    }
}
