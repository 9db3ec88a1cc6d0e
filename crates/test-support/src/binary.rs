//! Locating the `nats-server` executable.

use std::path::{Path, PathBuf};

use crate::HarnessError;

/// Environment variable that names the `nats-server` executable to run.
pub const NATS_SERVER_BIN_ENV: &str = "NATS_SERVER_BIN";

/// What to do when `nats-server` is missing; part of [`HarnessError::BinaryNotFound`].
pub const INSTALL_HINT: &str =
    "install it with `apt-get install -y nats-server`, or set NATS_SERVER_BIN";

/// Executable name looked up on `PATH`.
const EXE_NAME: &str = "nats-server";

/// Places Debian and manual installs use, checked after `PATH`.
const FALLBACK_DIRS: [&str; 2] = ["/usr/sbin", "/usr/local/bin"];

/// Finds the `nats-server` executable.
///
/// An `explicit` path wins, then `$NATS_SERVER_BIN`; either must exist. Otherwise `PATH`
/// is searched, then `/usr/sbin` and `/usr/local/bin`. Fails with
/// [`HarnessError::BinaryNotFound`], whose message says how to install it.
pub fn find_nats_server(explicit: Option<&Path>) -> Result<PathBuf, HarnessError> {
    let pinned = explicit
        .map(Path::to_path_buf)
        .or_else(|| std::env::var_os(NATS_SERVER_BIN_ENV).map(PathBuf::from));
    if let Some(path) = pinned {
        return if path.is_file() {
            Ok(path)
        } else {
            Err(HarnessError::BinaryNotFound {
                searched: vec![path],
            })
        };
    }

    let path_dirs = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default();
    let candidates: Vec<PathBuf> = path_dirs
        .into_iter()
        .chain(FALLBACK_DIRS.iter().map(PathBuf::from))
        .map(|dir| dir.join(EXE_NAME))
        .collect();
    match candidates.iter().find(|c| c.is_file()) {
        Some(found) => Ok(found.clone()),
        None => Err(HarnessError::BinaryNotFound {
            searched: candidates,
        }),
    }
}
