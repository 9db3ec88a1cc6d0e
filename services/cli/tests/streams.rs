//! `casebus streams status|provision` against a real nats-server: provisioning is
//! idempotent; the status shows every stream and each durable consumer with its
//! pending, ack-pending, redelivered and waiting counts.

mod common;

use casebus_test_support::NatsServer;

use common::catalogue::{note, opened};
use common::*;

#[tokio::test]
async fn provisioning_creates_the_streams_and_is_idempotent() {
    let server = NatsServer::start().await.expect("nats-server");
    let url = server.url();
    let env = [("CASEBUS_NATS_URL", url.as_str())];
    let before = run_with_env(&["--json", "streams", "status"], &env).await;
    before.expect_code(1);
    assert_eq!(before.json()["ok"], false);

    for _ in 0..2 {
        let run = run_with_env(&["streams", "provision", "--duplicate-window", "5m"], &env).await;
        run.expect_code(0);
    }
    let after = run_with_env(&["--json", "streams", "status"], &env).await;
    after.expect_code(0);
    let status = after.json();
    let names: Vec<&str> = status["streams"]
        .as_array()
        .expect("streams")
        .iter()
        .map(|s| s["name"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(names, ["CASES", "CASES_DLQ", "AUDIT", "CHECKPOINTS"]);
    assert_eq!(status["streams"][3]["deny_purge"], true);
    assert_eq!(status["streams"][0]["deny_delete"], true);
    assert_eq!(status["streams"][0]["duplicate_window_secs"], 300);

    // Three replicas cannot be had on one server; the refusal is reported.
    let three = run_with_env(&["streams", "provision", "--replicas", "3"], &env).await;
    assert_ne!(three.code, 0);
}

#[tokio::test]
async fn the_status_shows_streams_and_consumers_with_their_backlog() {
    let f = Fixture::start().await;
    let customs = f.appender(CUSTOMS);
    let c = case("STATUS-1");
    append(&customs, &c, opened("status")).await;
    let consumer = f.start_consumer("svc-status", registry()).await;
    consumer.wait_handled(1).await;
    consumer.stop().await;
    f.wait_idle("svc-status").await;
    append(&customs, &c, note("pending one")).await;
    append(&customs, &c, note("pending two")).await;

    let run = f.cli(&["--json", "streams", "status"]).await;
    run.expect_code(0);
    let status = run.json();
    assert_eq!(status["streams"][0]["messages"], 3);
    assert_eq!(status["streams"][0]["last_sequence"], 3);
    let consumers = status["consumers"].as_array().expect("consumers");
    assert_eq!(consumers.len(), 1, "only durable consumers: {consumers:?}");
    let svc = &consumers[0];
    assert_eq!(svc["name"], "svc-status");
    assert_eq!(svc["ack_floor"], 1);
    assert_eq!(svc["pending"], 2);
    assert_eq!(svc["ack_pending"], 0);
    assert_eq!(svc["waiting"], 0);
    assert_eq!(svc["redelivered"], 0);

    let text = f.cli(&["streams", "status"]).await;
    text.expect_code(0);
    for expected in [
        "| CASES ",
        "| CASES_DLQ ",
        "| AUDIT ",
        "svc-status",
        "no delete, no purge",
    ] {
        assert!(
            text.stdout.contains(expected),
            "missing {expected:?} in\n{}",
            text.stdout
        );
    }
}
