//! Support for the workspace-wide checks in `tests/tests/`: the schema evolution guard
//! (a text baseline of every proto field and enum value, and the rules a change must
//! follow so a v1 consumer never mis-reads a newer event), the workspace root, and where
//! the service binaries are (with a check that they are not stale), and the oracle of
//! the gateway's projection (the stream verified and folded with the domain's rules,
//! compared with the projection through its queries).

pub mod binaries;
pub mod oracle;
pub mod schema;

use std::path::PathBuf;

/// The workspace root (the parent of this crate).
pub fn workspace_root() -> PathBuf {
    let here = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    here.parent().map(PathBuf::from).unwrap_or(here)
}
