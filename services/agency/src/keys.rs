//! Picking up a rotated signing key and a changed office registry without a restart.
//!
//! Two triggers, either of which reloads both files: SIGHUP, and a change of either
//! file seen by polling its metadata (modification time, length, inode) every
//! `--key-reload-interval`. Polling rather than inotify because it also sees files
//! replaced on a network or container volume (a Kubernetes secret is swapped by a
//! symlink rename), needs no extra dependency, and a rotation is planned well ahead of
//! the old key's `valid_until`.
//!
//! The registry is replaced first, then the signer, so that the new key is known to
//! this service's own consumer before it signs anything. A file that fails to load
//! changes nothing: the service keeps verifying and signing with what it had, and says
//! so in its log. It does not own the rollout order across services (add the new key
//! to every registry first, then install the signing key); see ARCHITECTURE.md, Keys.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use casebus_bus::{Appender, Bus};
use casebus_integrity::{OfficeRegistry, OfficeSigner};
use casebus_proto::OfficeId;
use casebus_runtime::files::Fingerprint;
pub(crate) use casebus_runtime::shutdown::Hangup;

/// The files to watch and where their contents go.
pub(crate) struct KeyReload {
    /// The office the service signs for; a key file of another office is refused.
    pub office: OfficeId,
    /// `--registry`.
    pub registry: PathBuf,
    /// `--signing-key`.
    pub signing_key: PathBuf,
    /// `--key-reload-interval`.
    pub interval: Duration,
    /// Where the registry goes.
    pub bus: Bus,
    /// Where the signer goes.
    pub appender: Arc<Appender>,
}

impl KeyReload {
    /// Reloads on SIGHUP and on file changes until `stop`.
    pub(crate) async fn run(self, mut hangup: Hangup, stop: CancellationToken) {
        let mut seen = (
            Fingerprint::of(&self.registry),
            Fingerprint::of(&self.signing_key),
        );
        let mut tick = tokio::time::interval(self.interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tracing::info!(interval = ?self.interval, "watching the registry and signing key files");
        loop {
            let trigger = tokio::select! {
                () = stop.cancelled() => return,
                () = hangup.recv() => "sighup",
                _ = tick.tick() => "file change",
            };
            let now = (
                Fingerprint::of(&self.registry),
                Fingerprint::of(&self.signing_key),
            );
            if trigger == "file change" && now == seen {
                continue;
            }
            seen = now;
            self.reload(trigger);
        }
    }

    /// Loads both files and installs what loaded; logs what happened.
    fn reload(&self, trigger: &str) {
        let registry = match OfficeRegistry::load(&self.registry) {
            Ok(registry) if registry.contains(&self.office) => registry,
            Ok(_) => {
                tracing::error!(trigger, office = %self.office, "reloaded office registry does not list this office; keeping the previous one");
                return;
            }
            Err(error) => {
                tracing::error!(trigger, error = %error, "office registry reload failed; keeping the previous one");
                return;
            }
        };
        let keys = registry.offices().map(|o| o.keys.len()).sum::<usize>();
        self.bus.replace_registry(Arc::new(registry));
        let signer = match OfficeSigner::load(&self.signing_key) {
            Ok(signer) => signer,
            Err(error) => {
                tracing::error!(trigger, error = %error, "signing key reload failed; keeping the previous key");
                return;
            }
        };
        let key_id = signer.key_id().to_owned();
        if let Err(error) = self.appender.replace_signer(signer) {
            tracing::error!(trigger, key_id, error = %error, "new signing key is not in the office registry; keeping the previous key");
            return;
        }
        tracing::info!(
            trigger,
            keys,
            signing_key = %self.appender.key_id(),
            "keys reloaded"
        );
    }
}
