//! The `casebus-monitor` binary's command line: `--help` documents the settings an
//! administrator needs, a missing trust file stops it with a message naming the file,
//! and it does not start without the office registry it verifies events with. (Having an integration test here also makes `cargo test --workspace` build the
//! binary, which the end-to-end tests in `tests/` run.)

use std::process::Command;

fn monitor() -> Command {
    Command::new(env!("CARGO_BIN_EXE_casebus-monitor"))
}

#[test]
fn help_names_the_listeners_the_gateway_and_the_admin_credential() {
    let output = monitor().arg("--help").output().expect("runs");
    assert!(output.status.success());
    let help = String::from_utf8_lossy(&output.stdout);
    for flag in [
        "--listen",
        "--metrics-listen",
        "--trusted-issuers",
        "--gateway-url",
        "--gateway-token-file",
        "--nats-url",
        "--registry",
        "CASEBUS_MONITOR_LISTEN",
        "admin",
    ] {
        assert!(help.contains(flag), "--help lacks {flag}:\n{help}");
    }
}

#[test]
fn a_missing_trust_file_is_named_at_start() {
    let dir = tempfile::tempdir().expect("temp dir");
    let missing = dir.path().join("trusted-issuers.toml");
    let output = monitor()
        .arg("--trusted-issuers")
        .arg(&missing)
        .arg("--registry")
        .arg(dir.path().join("registry.toml"))
        .args(["--listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0"])
        .output()
        .expect("runs");
    assert!(!output.status.success());
    let err = String::from_utf8_lossy(&output.stderr);
    assert!(err.contains("trusted-issuers.toml"), "{err}");
}

#[test]
fn the_office_registry_is_required_it_verifies_every_event_it_counts() {
    let dir = tempfile::tempdir().expect("temp dir");
    let output = monitor()
        .arg("--trusted-issuers")
        .arg(dir.path().join("trusted-issuers.toml"))
        .args(["--listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0"])
        .env_remove("CASEBUS_REGISTRY")
        .output()
        .expect("runs");
    assert_eq!(output.status.code(), Some(2), "a usage error");
    let err = String::from_utf8_lossy(&output.stderr);
    assert!(err.contains("--registry"), "{err}");
}
