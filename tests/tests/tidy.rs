//! Tidy checks over the whole workspace: every Rust file opens with a `//!` header, no
//! test sleeps or is ignored, and the dependency edges between crates stay as
//! ARCHITECTURE.md draws them (checked with `cargo metadata`).

use std::path::{Path, PathBuf};

use cargo_metadata::{DependencyKind, MetadataCommand, Package};

use casebus_tests::workspace_root;

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if path.is_dir() {
            if name == "target" || name.starts_with('.') || name == "node_modules" {
                continue;
            }
            rust_files(&path, out);
        } else if name.ends_with(".rs") {
            out.push(path);
        }
    }
}

fn workspace_rust_files() -> Vec<PathBuf> {
    let root = workspace_root();
    let mut files = Vec::new();
    for dir in ["crates", "services", "tests", "benches"] {
        rust_files(&root.join(dir), &mut files);
    }
    assert!(
        files.len() > 20,
        "found the sources ({} files)",
        files.len()
    );
    files
}

fn relative(path: &Path) -> String {
    path.strip_prefix(workspace_root())
        .unwrap_or(path)
        .display()
        .to_string()
}

#[test]
fn every_rust_file_opens_with_a_module_doc_comment() {
    let missing: Vec<String> = workspace_rust_files()
        .into_iter()
        .filter(|path| {
            let text = std::fs::read_to_string(path).unwrap_or_default();
            let first = text.lines().find(|l| !l.trim().is_empty()).unwrap_or("");
            !first.starts_with("//!")
        })
        .map(|p| relative(&p))
        .collect();
    assert!(
        missing.is_empty(),
        "files without a `//!` header: {missing:?}"
    );
}

fn is_test_file(path: &Path) -> bool {
    path.components().any(|c| c.as_os_str() == "tests")
}

#[test]
fn tests_wait_on_conditions_never_on_fixed_sleeps() {
    let offenders: Vec<String> = workspace_rust_files()
        .into_iter()
        .filter(|p| is_test_file(p) && !p.ends_with("tidy.rs"))
        .filter(|p| {
            std::fs::read_to_string(p)
                .unwrap_or_default()
                .contains("sleep(")
                // `sleep_until(now + d)` is the same fixed sleep.
                || std::fs::read_to_string(p)
                    .unwrap_or_default()
                    .contains("sleep_until(")
        })
        .map(|p| relative(&p))
        .collect();
    assert!(
        offenders.is_empty(),
        "tests calling sleep(: {offenders:?}; use wait_until"
    );
}

#[test]
fn no_test_is_ignored_or_expects_a_panic() {
    let ignore = ["#[", "ignore]"].concat();
    let should_panic = ["#[", "should_panic"].concat();
    let offenders: Vec<String> = workspace_rust_files()
        .into_iter()
        .filter(|p| {
            let text = std::fs::read_to_string(p).unwrap_or_default();
            text.contains(&ignore) || text.contains(&should_panic)
        })
        .map(|p| relative(&p))
        .collect();
    assert!(
        offenders.is_empty(),
        "ignored or should_panic tests in {offenders:?}"
    );
}

fn metadata() -> cargo_metadata::Metadata {
    MetadataCommand::new()
        .manifest_path(workspace_root().join("Cargo.toml"))
        .no_deps()
        .exec()
        .expect("cargo metadata runs")
}

fn normal_deps(package: &Package) -> Vec<&str> {
    package
        .dependencies
        .iter()
        .filter(|d| d.kind == DependencyKind::Normal)
        .map(|d| d.name.as_str())
        .collect()
}

fn is_service(package: &Package) -> bool {
    let path = package.manifest_path.as_str();
    path.contains("/services/") || path.contains("/benches/")
}

#[test]
fn only_the_bus_talks_to_nats() {
    for package in metadata().workspace_packages() {
        // The benchmark's baselines are raw JetStream by definition.
        let allowed = ["casebus-bus", "casebus-test-support", "casebus-bench"]
            .contains(&package.name.as_str());
        let uses = package.dependencies.iter().any(|d| d.name == "async-nats");
        assert!(
            !uses || allowed,
            "{} depends on async-nats; go through casebus-bus",
            package.name
        );
    }
}

#[test]
fn only_the_proto_crate_runs_codegen() {
    let codegen = ["prost-build", "tonic-prost-build", "protox", "tonic-build"];
    for package in metadata().workspace_packages() {
        let runs = package
            .dependencies
            .iter()
            .any(|d| d.kind == DependencyKind::Build && codegen.contains(&d.name.as_str()));
        assert!(
            !runs || package.name == "casebus-proto",
            "{} runs codegen",
            package.name
        );
    }
}

#[test]
fn only_service_binaries_use_clap_anyhow_or_a_tracing_subscriber() {
    let binary_only = ["clap", "anyhow", "tracing-subscriber"];
    for package in metadata().workspace_packages() {
        if is_service(package) || package.name == "casebus-telemetry" {
            continue;
        }
        for dep in normal_deps(package) {
            assert!(
                !binary_only.contains(&dep),
                "library crate {} depends on {dep}; only services/* may",
                package.name
            );
        }
    }
}

#[test]
fn the_domain_crate_does_no_io() {
    let meta = metadata();
    let domain = meta
        .workspace_packages()
        .into_iter()
        .find(|p| p.name == "casebus-domain")
        .expect("casebus-domain exists");
    let io = [
        "tokio",
        "async-nats",
        "tonic",
        "rusqlite",
        "hyper",
        "reqwest",
        "casebus-bus",
    ];
    for dep in normal_deps(domain) {
        assert!(!io.contains(&dep), "casebus-domain depends on {dep}");
    }
    let text = std::fs::read_to_string(workspace_root().join("crates/domain/src/decide.rs"))
        .unwrap_or_default()
        + &std::fs::read_to_string(workspace_root().join("crates/domain/src/state.rs"))
            .unwrap_or_default();
    for call in ["now_utc()", "std::fs", "std::net", "std::env"] {
        assert!(!text.contains(call), "the domain must not call {call}");
    }
}

#[test]
fn the_test_harness_is_only_ever_a_dev_dependency() {
    for package in metadata().workspace_packages() {
        for dep in &package.dependencies {
            // The benchmark starts its servers with the harness; it is never shipped.
            if dep.name == "casebus-test-support" && package.name != "casebus-bench" {
                assert_eq!(
                    dep.kind,
                    DependencyKind::Development,
                    "{} uses the harness outside tests",
                    package.name
                );
            }
        }
    }
}

#[test]
fn the_fixtures_are_only_ever_a_dev_dependency_and_never_reach_nats() {
    let meta = metadata();
    let packages = meta.workspace_packages();
    for package in &packages {
        for dep in &package.dependencies {
            if dep.name == "casebus-fixtures" {
                assert_eq!(
                    dep.kind,
                    DependencyKind::Development,
                    "{} uses the fixtures outside tests",
                    package.name
                );
            }
        }
    }
    // Every workspace crate the fixtures reach through normal dependencies, and what
    // each depends on: none may be async-nats, so the fixtures stay usable without a
    // server and by suites that must not see NATS.
    let by_name = |name: &str| packages.iter().find(|p| p.name.as_str() == name);
    let mut seen = vec!["casebus-fixtures".to_owned()];
    let mut queue = seen.clone();
    while let Some(name) = queue.pop() {
        let package = by_name(&name).unwrap_or_else(|| panic!("{name} is a workspace package"));
        for dep in normal_deps(package) {
            assert_ne!(
                dep, "async-nats",
                "casebus-fixtures reaches async-nats through {name}"
            );
            if by_name(dep).is_some() && !seen.iter().any(|s| s == dep) {
                seen.push(dep.to_owned());
                queue.push(dep.to_owned());
            }
        }
    }
}

#[test]
fn every_package_carries_the_prefix_and_the_workspace_lints() {
    for package in metadata().workspace_packages() {
        assert!(
            package.name.starts_with("casebus"),
            "{} lacks the casebus- prefix",
            package.name
        );
        let manifest =
            std::fs::read_to_string(package.manifest_path.as_std_path()).unwrap_or_default();
        assert!(
            manifest.contains("[lints]") && manifest.contains("workspace = true"),
            "{} does not inherit the workspace lints",
            package.name
        );
    }
}
