//! Noticing that a configuration file changed, for the files a service re-reads while it
//! runs (the revocation list, the office registry and signing key): one fingerprint of a
//! file's version, compared by polling. It owns no timer and reads no contents.

use std::path::Path;
use std::time::SystemTime;

/// What identifies one version of a file: a rewrite changes its time or length, a
/// replacement by rename (a Kubernetes secret is swapped by a symlink rename) its inode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fingerprint {
    modified: Option<SystemTime>,
    len: u64,
    inode: u64,
}

impl Fingerprint {
    /// The fingerprint of the file at `path` now; `None` when it cannot be read, which
    /// compares unequal to every version that could.
    pub fn of(path: &Path) -> Option<Self> {
        let meta = std::fs::metadata(path).ok()?;
        #[cfg(unix)]
        let inode = std::os::unix::fs::MetadataExt::ino(&meta);
        #[cfg(not(unix))]
        let inode = 0;
        Some(Self {
            modified: meta.modified().ok(),
            len: meta.len(),
            inode,
        })
    }
}
