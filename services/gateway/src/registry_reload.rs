//! Picking up a changed office registry without a restart: on SIGHUP, and when the
//! file's fingerprint (modification time, length, inode) changes, polled every
//! `--registry-reload-interval`, as the agency services do for their keys. The new
//! registry replaces the bus's, which the consumer reads for every message it verifies,
//! so events signed with a key added to the file are projected from then on. A file
//! that fails to load, or lists no office, changes nothing: the gateway keeps verifying
//! with what it had, and says so in its log.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use casebus_bus::Bus;
use casebus_integrity::OfficeRegistry;
use casebus_runtime::files::Fingerprint;
use casebus_runtime::shutdown::Hangup;

/// Reloads the registry at `path` into `bus` on SIGHUP and on file changes until `stop`.
pub(crate) async fn run(
    path: PathBuf,
    interval: Duration,
    bus: Bus,
    mut hangup: Hangup,
    stop: CancellationToken,
) {
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
                bus.replace_registry(Arc::new(registry));
                tracing::info!(trigger, keys, "office registry reloaded");
            }
            Err(error) => {
                tracing::error!(trigger, error = %error, "office registry reload failed; keeping the previous one");
            }
        }
    }
}
