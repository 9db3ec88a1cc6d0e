//! Where the tests find the service binaries, and the check that a binary is not older
//! than any source it is built from: a test of a stale binary proves nothing, and
//! `cargo test -p casebus-tests` alone does not rebuild the service binaries. The sources
//! of a binary are those of its package and of every workspace package it depends on
//! (normal and build dependencies, read with `cargo metadata`), plus the proto contract
//! when `casebus-proto` is among them; a change elsewhere does not make it stale.

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::SystemTime;

use cargo_metadata::{DependencyKind, MetadataCommand};

use crate::workspace_root;

/// The directory holding the binaries: `CASEBUS_BIN_DIR`, or the profile directory the
/// running test executable lies in (`target/<profile>/deps/<test>` -> `target/<profile>`).
pub fn bin_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("CASEBUS_BIN_DIR") {
        return PathBuf::from(dir);
    }
    let exe = std::env::current_exe().expect("the test knows its own path");
    exe.parent()
        .and_then(Path::parent)
        .map(Path::to_path_buf)
        .expect("the test executable lies in target/<profile>/deps")
}

/// The path of binary `package` (its package name, e.g. `casebus-customs`), failing with
/// `build_hint` when it is missing or, unless `CASEBUS_BIN_DIR` points elsewhere, older
/// than one of its sources.
pub fn service_binary(package: &str, build_hint: &str) -> PathBuf {
    let path = bin_dir().join(package);
    assert!(
        path.is_file(),
        "{} not found. {build_hint}; CASEBUS_BIN_DIR may point elsewhere",
        path.display()
    );
    if std::env::var_os("CASEBUS_BIN_DIR").is_none()
        && let Some(file) = stale_because(&path, package)
    {
        panic!(
            "{} is older than {}: it is stale. {build_hint}",
            path.display(),
            file.display()
        );
    }
    path
}

/// The newest source of `package` changed after `binary` was built, if any.
fn stale_because(binary: &Path, package: &str) -> Option<PathBuf> {
    let built = std::fs::metadata(binary).and_then(|m| m.modified()).ok()?;
    let mut newest: Option<(SystemTime, PathBuf)> = None;
    for dir in source_dirs(package) {
        newest_file(&dir, &mut newest);
    }
    newest
        .filter(|(changed, _)| *changed > built)
        .map(|(_, file)| file)
}

/// The directories holding the sources of `package` and of the workspace packages it
/// depends on.
fn source_dirs(package: &str) -> Vec<PathBuf> {
    static GRAPH: OnceLock<HashMap<String, (PathBuf, Vec<String>)>> = OnceLock::new();
    let graph = GRAPH.get_or_init(|| {
        let metadata = MetadataCommand::new()
            .manifest_path(workspace_root().join("Cargo.toml"))
            .no_deps()
            .exec()
            .expect("cargo metadata runs");
        metadata
            .workspace_packages()
            .into_iter()
            .map(|p| {
                let dir = p
                    .manifest_path
                    .parent()
                    .map(|d| d.as_std_path().to_path_buf())
                    .unwrap_or_default();
                let deps = p
                    .dependencies
                    .iter()
                    .filter(|d| matches!(d.kind, DependencyKind::Normal | DependencyKind::Build))
                    .map(|d| d.name.clone())
                    .collect();
                (p.name.to_string(), (dir, deps))
            })
            .collect()
    });
    let mut seen = BTreeSet::new();
    let mut todo = vec![package.to_owned()];
    while let Some(name) = todo.pop() {
        if let Some((_, deps)) = graph.get(&name)
            && seen.insert(name)
        {
            todo.extend(deps.iter().cloned());
        }
    }
    let mut dirs = Vec::new();
    for name in &seen {
        let dir = &graph[name].0;
        dirs.push(dir.join("src"));
        dirs.push(dir.join("build.rs"));
        dirs.push(dir.join("assets"));
    }
    if seen.contains("casebus-proto") {
        dirs.push(workspace_root().join("proto"));
    }
    dirs
}

fn newest_file(path: &Path, newest: &mut Option<(SystemTime, PathBuf)>) {
    let source = path
        .extension()
        .is_some_and(|e| e == "rs" || e == "proto" || e == "html" || e == "js" || e == "css");
    if path.is_file() {
        if source
            && let Ok(modified) = std::fs::metadata(path).and_then(|m| m.modified())
            && newest.as_ref().is_none_or(|(at, _)| modified > *at)
        {
            *newest = Some((modified, path.to_path_buf()));
        }
        return;
    }
    let Ok(entries) = std::fs::read_dir(path) else {
        return;
    };
    for entry in entries.flatten() {
        newest_file(&entry.path(), newest);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_binarys_sources_are_its_package_and_its_workspace_dependencies_only() {
        let dirs = source_dirs("casebus-customs");
        let root = workspace_root();
        for expected in [
            "services/customs/src",
            "services/agency/src",
            "crates/bus/src",
        ] {
            assert!(
                dirs.contains(&root.join(expected)),
                "{expected} in {dirs:?}"
            );
        }
        assert!(
            dirs.contains(&root.join("proto")),
            "the proto contract in {dirs:?}"
        );
        for unrelated in ["crates/timeline/src", "services/gateway/src", "tests/src"] {
            assert!(
                !dirs.contains(&root.join(unrelated)),
                "{unrelated} not in {dirs:?}"
            );
        }
    }
}
