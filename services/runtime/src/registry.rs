//! The office registry of a service that verifies events (the gateway, the monitor):
//! its flags, and picking up a changed file without a restart — on SIGHUP, and when the
//! file's fingerprint (modification time, length, inode) changes, polled every
//! `--registry-reload-interval`, as the agency services do for their keys. A reloaded
//! registry is handed to the service, which verifies every later message with it, so
//! events signed with a key added to the file are accepted from then on. A file that
//! fails to load, or lists no office, changes nothing: the service keeps verifying with
//! what it had, and says so in its log.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use casebus_integrity::OfficeRegistry;

use crate::files::Fingerprint;
use crate::shutdown::Hangup;

/// The office registry a service verifies events with.
#[derive(Debug, Clone, clap::Args)]
pub struct RegistryArgs {
    /// Office registry (TOML): the public keys every event is verified with.
    #[arg(long = "registry", env = "CASEBUS_REGISTRY")]
    pub path: PathBuf,
    /// How often the registry file is checked for a change (modification time, length,
    /// inode); a changed file is reloaded without a restart, and so it is on SIGHUP.
    #[arg(
        long = "registry-reload-interval",
        env = "CASEBUS_REGISTRY_RELOAD_INTERVAL",
        default_value = "5s",
        value_parser = crate::args::humantime_duration
    )]
    pub reload_interval: Duration,
}

/// Reloads the registry at `path` on SIGHUP and on file changes until `stop`, handing
/// each good one to `install`.
pub async fn watch<F>(
    path: PathBuf,
    interval: Duration,
    install: F,
    mut hangup: Hangup,
    stop: CancellationToken,
) where
    F: Fn(Arc<OfficeRegistry>) + Send + 'static,
{
    let mut seen = Fingerprint::of(&path);
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tracing::info!(interval = ?interval, path = %path.display(), "watching the office registry file");
    loop {
        let trigger = tokio::select! {
            () = stop.cancelled() => return,
            () = hangup.recv() => "sighup",
            _ = tick.tick() => "file change",
        };
        let now = Fingerprint::of(&path);
        if trigger == "file change" && now == seen {
            continue;
        }
        seen = now;
        match OfficeRegistry::load(&path) {
            // A file that parses but lists nobody (a truncated write, a wrong file)
            // would make every event unverifiable.
            Ok(registry) if registry.offices().next().is_none() => {
                tracing::error!(
                    trigger,
                    "reloaded office registry lists no office; keeping the previous one"
                );
            }
            Ok(registry) => {
                let keys = registry.offices().map(|o| o.keys.len()).sum::<usize>();
                install(Arc::new(registry));
                tracing::info!(trigger, keys, "office registry reloaded");
            }
            Err(error) => {
                tracing::error!(trigger, error = %error, "office registry reload failed; keeping the previous one");
            }
        }
    }
}
