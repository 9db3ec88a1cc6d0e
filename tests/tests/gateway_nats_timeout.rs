//! The gateway honours `--nats-request-timeout`: against a server whose JetStream API
//! never answers, its start-up request gives up after the configured ceiling, not after
//! the 5 s default it once used whatever the flag said.
//!
//! The server runs without JetStream and the test itself subscribes to `$JS.API.>`, so
//! every JetStream request of the gateway reaches the test, which stays silent: only the
//! gateway's own request ceiling ends the wait.

mod gateway_common;

use std::process::Stdio;
use std::time::{Duration, Instant};

use futures::StreamExt as _;
use tokio::process::Command;

use casebus_test_support::NatsServer;
use gateway_common::{READY_TIMEOUT, gateway_binary, registry};

/// The ceiling the gateway is given; far enough below the 5 s default that the two
/// cannot be confused.
const CONFIGURED: Duration = Duration::from_secs(1);
/// What the flag's default is (`services/runtime/src/args.rs`).
const DEFAULT: Duration = Duration::from_secs(5);
/// Room for the gateway to log the failure and exit after the request has timed out.
const EXIT_SLACK: Duration = Duration::from_secs(3);

#[tokio::test]
async fn the_gateway_gives_up_on_an_unanswered_jetstream_request_after_the_configured_timeout() {
    let server = NatsServer::start_from_config(None, |_| Ok("listen: \"127.0.0.1:-1\"\n".into()))
        .await
        .expect("nats-server without JetStream starts");
    let client = server.client().await.expect("connect");
    let mut silent = client
        .subscribe("$JS.API.>")
        .await
        .expect("subscribe to the JetStream API");
    client.flush().await.expect("the subscription is in place");

    let dir = tempfile::tempdir().expect("temp dir");
    let path = |name: &str| dir.path().join(name).display().to_string();
    registry()
        .save(&dir.path().join("offices.toml"))
        .expect("registry file");
    casebus_fixtures::write_trust_file(
        &dir.path().join("issuers.toml"),
        &casebus_fixtures::issuer(),
    )
    .expect("trust file");
    let log = dir.path().join("gateway.log");
    let out = std::fs::File::create(&log).expect("log file");
    let err = out.try_clone().expect("log file");
    let timeout = format!("{}ms", CONFIGURED.as_millis());
    let mut child = Command::new(gateway_binary())
        .args(["--db", &path("gw.sqlite"), "--consumer-name", "gw-timeout"])
        .args(["--registry", &path("offices.toml")])
        .args(["--trusted-issuers", &path("issuers.toml")])
        .args(["--nats-url", &server.url()])
        .args(["--nats-request-timeout", &timeout])
        .args([
            "--grpc-listen",
            "127.0.0.1:0",
            "--metrics-listen",
            "127.0.0.1:0",
        ])
        .args(["--ready-file", &path("gw.ready")])
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::from(out))
        .stderr(Stdio::from(err))
        .kill_on_drop(true)
        .spawn()
        .expect("start casebus-gateway");
    let log_text = || std::fs::read_to_string(&log).unwrap_or_default();

    let request = tokio::time::timeout(READY_TIMEOUT, silent.next())
        .await
        .unwrap_or_else(|_| panic!("the gateway sent no JetStream request:\n{}", log_text()))
        .expect("the subscription stays open");
    let asked = Instant::now();
    assert!(
        request.subject.as_str().starts_with("$JS.API."),
        "{}",
        request.subject
    );

    let status = tokio::time::timeout(DEFAULT + EXIT_SLACK * 4, child.wait())
        .await
        .unwrap_or_else(|_| panic!("the gateway never gave up:\n{}", log_text()))
        .expect("wait for the gateway");
    let waited = asked.elapsed();
    assert!(
        !status.success(),
        "a gateway without streams cannot start:\n{}",
        log_text()
    );
    assert!(
        waited >= CONFIGURED.mul_f32(0.9),
        "the gateway gave up after {waited:?}, before its {CONFIGURED:?} ceiling:\n{}",
        log_text()
    );
    assert!(
        waited < CONFIGURED + EXIT_SLACK,
        "the gateway waited {waited:?} for an answer although told to wait {CONFIGURED:?} \
         (the default is {DEFAULT:?}):\n{}",
        log_text()
    );
}
