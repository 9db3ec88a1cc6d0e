//! The `casebus-gateway` binary's command line, without NATS: every flag documents its
//! environment variable, and a configuration it cannot run with is refused at once with
//! the flag named and a failing exit status. (Being an integration test of this package
//! also makes `cargo test --workspace` build the binary for the end-to-end tests in
//! `tests/`.)

use std::process::Output;

use tokio::process::Command;

const GATEWAY: &str = env!("CARGO_BIN_EXE_casebus-gateway");

async fn run(args: &[&str]) -> Output {
    Command::new(GATEWAY)
        .args(args)
        .env_remove("CASEBUS_TRUSTED_ISSUERS")
        .env_remove("CASEBUS_CLIENT_CA")
        .output()
        .await
        .expect("the gateway binary runs")
}

#[tokio::test]
async fn the_help_names_every_setting_and_its_environment_variable() {
    let output = run(&["--help"]).await;
    assert!(output.status.success());
    let help = String::from_utf8_lossy(&output.stdout);
    for needle in [
        "--db",
        "CASEBUS_GATEWAY_DB",
        "--consumer-name",
        "CASEBUS_GATEWAY_CONSUMER_NAME",
        "--registry",
        "CASEBUS_REGISTRY",
        "--provision",
        "CASEBUS_GATEWAY_PROVISION",
        "--ready-file",
        "CASEBUS_GATEWAY_READY_FILE",
        "--batch",
        "CASEBUS_GATEWAY_BATCH",
        "--grpc-listen",
        "CASEBUS_GRPC_LISTEN",
        "--trusted-issuers",
        "--client-ca",
        "--metrics-listen",
        "--nats-url",
        "--shutdown-grace",
        "side by side",
    ] {
        assert!(help.contains(needle), "--help lacks {needle}:\n{help}");
    }
}

#[tokio::test]
async fn an_invalid_consumer_name_is_refused_naming_the_flag() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("gw.sqlite");
    let output = run(&[
        "--db",
        db.to_str().expect("utf-8 path"),
        "--registry",
        "offices.toml",
        "--trusted-issuers",
        "issuers.toml",
        "--consumer-name",
        "gateway.one",
    ])
    .await;
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("--consumer-name"), "{stderr}");
    assert!(!db.exists(), "nothing was created");
}

#[tokio::test]
async fn a_gateway_that_would_not_authenticate_its_callers_refuses_to_start() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("gw.sqlite");
    let output = run(&[
        "--db",
        db.to_str().expect("utf-8 path"),
        "--registry",
        "offices.toml",
        "--nats-url",
        "nats://127.0.0.1:1",
    ])
    .await;
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("every call must be authenticated"),
        "{stderr}"
    );
    assert!(!db.exists(), "nothing was created");
}

#[tokio::test]
async fn a_bad_deadline_rules_file_refuses_the_start_naming_file_line_and_field() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("gw.sqlite");
    let (rules, expected) = casebus_test_support::command_line::bad_deadline_rules(dir.path());
    let output = run(&[
        "--db",
        db.to_str().expect("utf-8 path"),
        "--registry",
        "offices.toml",
        "--deadline-rules",
        rules.to_str().expect("utf-8 path"),
    ])
    .await;
    assert_eq!(output.status.code(), Some(1), "{output:?}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains(&expected), "{stderr}");
    assert!(!db.exists(), "nothing was created");
}

#[tokio::test]
async fn a_bad_holiday_calendar_refuses_the_start_naming_file_line_and_field() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("gw.sqlite");
    let calendar = dir.path().join("calendar");
    std::fs::create_dir(&calendar).expect("calendar dir");
    let file = calendar.join("2026.toml");
    // 2026-03-04 is a Wednesday, which cannot be a make-up working day.
    std::fs::write(
        &file,
        "year = 2026\nstatus = \"published\"\nnotice = \"n\"\nissued = 2025-11-04\nsource = \"s\"\nrest_days = [2026-01-01]\nworking_days = [2026-03-04]\n",
    )
    .expect("write calendar");
    let output = run(&[
        "--db",
        db.to_str().expect("utf-8 path"),
        "--registry",
        "offices.toml",
        "--calendar-dir",
        calendar.to_str().expect("utf-8 path"),
    ])
    .await;
    assert_eq!(output.status.code(), Some(1), "{output:?}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    let expected = format!("{} line 7: working_days", file.display());
    assert!(stderr.contains(&expected), "{stderr}");
    assert!(!db.exists(), "nothing was created");
}
