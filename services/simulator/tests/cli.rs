//! The `casebus-simulator` binary's command line: `--help` documents the simulation
//! flags, and bad settings fail before anything is sent. (Having an integration test
//! here also makes `cargo test --workspace` build the binary, which the end-to-end tests
//! in `tests/` run.)

use std::process::Command;

fn simulator() -> Command {
    Command::new(env!("CARGO_BIN_EXE_casebus-simulator"))
}

#[test]
fn help_names_the_workload_flags() {
    let output = simulator().arg("--help").output().expect("runs");
    assert!(output.status.success());
    let help = String::from_utf8_lossy(&output.stdout);
    for flag in [
        "--target",
        "--issuer-key",
        "--rate",
        "--cases",
        "--seed",
        "--duration",
    ] {
        assert!(help.contains(flag), "--help lacks {flag}:\n{help}");
    }
}

#[test]
fn a_missing_agency_is_refused_with_its_name() {
    let dir = tempfile::tempdir().expect("temp dir");
    let output = simulator()
        .args([
            "--target",
            "customs:ningbo=http://127.0.0.1:1",
            "--issuer-key",
        ])
        .arg(dir.path().join("issuer.key"))
        .output()
        .expect("runs");
    assert!(!output.status.success());
    let err = String::from_utf8_lossy(&output.stderr);
    assert!(err.contains("ip_center"), "{err}");
}
