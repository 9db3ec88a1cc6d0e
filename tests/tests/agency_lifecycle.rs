//! The life of an agency service process: once ready it reports SERVING on the standard
//! health service, answers `$SRV` discovery with its office and addresses, counts what it
//! does in `/metrics` and `$SRV.STATS`, and stops cleanly on SIGTERM (exit status 0,
//! deregistered, ready file removed). A restarted service picks up hand-offs sent while
//! it was down, and replaying its consumer from the start never yields a second receipt.

mod agency_harness;

use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

use casebus_bus::ops::Ops;
use casebus_bus::subjects::CASES_STREAM;

use agency_harness::*;

async fn nats_request(f: &Fixture, subject: &str) -> serde_json::Value {
    let client = f.nats.client().await.expect("connect");
    let reply = client
        .request(subject.to_owned(), Default::default())
        .await
        .unwrap_or_else(|e| panic!("{subject}: {e}"));
    serde_json::from_slice(&reply.payload).expect("json reply")
}

#[tokio::test]
async fn a_running_service_is_healthy_discoverable_measured_and_stops_cleanly_on_sigterm() {
    let f = Fixture::start().await;
    let mut customs = f.spawn(CUSTOMS).await;
    open_case(&customs, "C-LIFE").await;
    ok(
        &customs,
        "retry",
        add_note(&customs, "C-LIFE", "life-1", "x").await,
    );
    ok(
        &customs,
        "retry",
        add_note(&customs, "C-LIFE", "life-1", "x").await,
    );

    let mut health = HealthClient::new(customs.channel());
    for service in [
        "",
        "casebus.agency.v1.AgencyService",
        "casebus.customs.v1.CustomsService",
    ] {
        let status = health
            .check(HealthCheckRequest {
                service: service.into(),
            })
            .await
            .expect("health check needs no credential")
            .into_inner()
            .status;
        assert_eq!(status, ServingStatus::Serving as i32, "{service:?}");
    }

    let info = nats_request(&f, "$SRV.INFO.casebus-customs").await;
    assert_eq!(info["name"], "casebus-customs");
    assert_eq!(info["metadata"]["office"], CUSTOMS);
    assert_eq!(info["metadata"]["grpc"], customs.grpc.to_string());
    assert_eq!(info["metadata"]["consumer"], "svc-customs-ningbo");
    assert!(
        info["metadata"]["started_at"]
            .as_str()
            .is_some_and(|s| !s.is_empty())
    );
    let stats = nats_request(&f, "$SRV.STATS.casebus-customs").await;
    let data = &stats["endpoints"][0]["data"];
    assert_eq!(data["office"], CUSTOMS, "{stats}");
    assert_eq!(data["appended"], 2, "{stats}");
    assert_eq!(data["duplicates"], 1, "{stats}");
    assert_eq!(data["requests"], 3, "{stats}");
    assert_eq!(data["inbox"]["ready"], true, "{stats}");

    let metrics = http_get(customs.metrics, "/metrics").await;
    assert!(
        has_sample(&metrics, "casebus_up", CUSTOMS, &[], "1"),
        "{metrics}"
    );
    assert!(
        has_sample(
            &metrics,
            "casebus_duplicate_commands_total",
            CUSTOMS,
            &[],
            "1"
        ),
        "{metrics}"
    );
    assert!(
        has_sample(
            &metrics,
            "casebus_events_appended_total",
            CUSTOMS,
            &["type=\"CaseOpened\"", "agency=\"customs\""],
            "1"
        ),
        "{metrics}"
    );
    assert!(
        has_sample(
            &metrics,
            "casebus_grpc_requests_total",
            CUSTOMS,
            &[
                "code=\"OK\"",
                "method=\"casebus.agency.v1.AgencyService/AddNote\""
            ],
            "2"
        ),
        "{metrics}"
    );
    assert!(
        http_get(customs.metrics, "/readyz")
            .await
            .ends_with("ready")
    );

    customs.terminate();
    let status = customs.wait_exit().await;
    assert!(status.success(), "{status}:\n{}", customs.log_text());
    assert!(!customs.ready_file.exists(), "the ready file is removed");
    let log = customs.log_text();
    assert!(log.contains("agency service stopped"), "{log}");
    let client = f.nats.client().await.expect("connect");
    assert!(
        client
            .request("$SRV.PING.casebus-customs".to_owned(), Default::default())
            .await
            .is_err(),
        "a stopped service no longer answers discovery"
    );
}

#[tokio::test]
async fn a_restarted_service_acknowledges_what_it_missed_and_never_issues_a_second_receipt() {
    let f = Fixture::start().await;
    let customs = f.spawn(CUSTOMS).await;
    let mut police = f.spawn(POLICE).await;
    open_case(&customs, "C-AGAIN").await;
    refer_to_police(&customs, "C-AGAIN", "h1").await;
    police
        .wait_inbox(
            "C-AGAIN",
            "h1",
            "the police to acknowledge h1",
            acknowledged,
        )
        .await;
    police.terminate();
    assert!(police.wait_exit().await.success());

    // A hand-off sent while the police service is down ...
    refer_to_police(&customs, "C-AGAIN", "h2").await;
    // ... and every hand-off handed to the consumer again from the start.
    let consumer = "svc-public_security-ningbo";
    Ops::from_bus(&f.bus)
        .reset_consumer(CASES_STREAM, consumer, 1)
        .await
        .expect("reset the receipts consumer");

    let police = f.spawn(POLICE).await;
    police
        .wait_inbox(
            "C-AGAIN",
            "h2",
            "the restarted police service to acknowledge h2",
            acknowledged,
        )
        .await;
    f.wait_consumer_caught_up(consumer).await;
    f.assert_no_dead_letters().await;

    let loaded = f.load("C-AGAIN").await;
    assert_eq!(count_for_handoff(&loaded, "HandoffAcknowledged", "h1"), 1);
    assert_eq!(count_for_handoff(&loaded, "HandoffAcknowledged", "h2"), 1);
    assert_eq!(loaded.state.version, 5, "open, two hand-offs, two receipts");
    let inbox = police
        .common()
        .list_inbox(casebus_proto::agency::v1::ListInboxRequest::default())
        .await
        .expect("inbox")
        .into_inner();
    let ids: Vec<&str> = inbox.items.iter().map(|i| i.handoff_id.as_str()).collect();
    assert_eq!(ids, ["h1", "h2"], "rebuilt from the stream at start");
}
