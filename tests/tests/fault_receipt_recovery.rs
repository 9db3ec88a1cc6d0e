//! Recovery of automatic receipts after an instance dies holding hand-offs, over the
//! real binaries: two instances of the IP center's service share the durable receipts
//! consumer; instance A has pulled every hand-off customs sent and cannot finish any
//! (its signing key expired, so each receipt is retried in place). It keeps them all
//! alive with progress acks: for twice the ack wait instance B gets none of them and
//! the server redelivers nothing. Then A is killed with SIGKILL, and B sends every
//! receipt within [`RECOVERY_LIMIT`] of the kill, exactly one per hand-off.
//!
//! B's `/metrics` counts the redeliveries (`casebus_consumer_redeliveries_total`).
//!
//! The consumer exists before either instance starts with the 30 s ack wait of an older
//! deployment; the first instance to start updates it in place to the service's short
//! one ([`casebus_agency::RECEIPTS_ACK_WAIT`]).

mod agency_harness;
mod fault_common;

use std::time::Duration;

use time::OffsetDateTime;
use tokio::time::Instant;

use casebus_agency::RECEIPTS_ACK_WAIT;
use casebus_bus::ops::Ops;
use casebus_bus::subjects::CASES_STREAM;
use casebus_bus::{Bus, ConsumerConfig, ConsumerRunner};
use casebus_proto::agency::v1::agency_service_client::AgencyServiceClient;
use casebus_proto::agency::v1::{HandoffDetails, OpenCaseRequest};
use casebus_proto::customs::v1::RequestAssessmentRequest;
use casebus_proto::customs::v1::customs_service_client::CustomsServiceClient;
use casebus_proto::event::v1::payload::Kind;
use casebus_proto::event::v1::{CaseOpened, CaseType};
use casebus_test_support::wait_until;

use fault_common::audit::dead_letters;
use fault_common::grpc_load::meta;
use fault_common::report::{Figures, ms};
use fault_common::services::Stage;
use fault_common::{CUSTOMS, IPC, case, generations, open_bus, registry, signer};

/// The IP center's receipts consumer, shared by both instances.
const CONSUMER: &str = "svc-ip_center-zhejiang";
/// Hand-offs instance A holds when it is killed.
const HANDOFFS: usize = 8;
/// Receipts must all be in the stream this soon after the kill.
const RECOVERY_LIMIT: Duration = Duration::from_secs(5);
/// Ceiling for the receipts to come at all (a failure shows the figure, not a hang).
const RECOVERY_TIMEOUT: Duration = Duration::from_secs(60);
/// Ceiling for each preparation step.
const STEP_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the old key stays valid after it is retired in A's registry.
const KEY_LEFT: time::Duration = time::Duration::seconds(1);

fn case_id(i: usize) -> String {
    format!("RCV-{i:02}")
}

/// How many of the cases hold an automatic receipt of their hand-off, and the most any
/// one holds.
async fn receipts(bus: &Bus) -> (usize, usize) {
    let mut with = 0;
    let mut most = 0;
    for i in 0..HANDOFFS {
        let Ok(loaded) = bus.load_case(&case(&case_id(i))).await else {
            continue;
        };
        let n = loaded
            .events
            .iter()
            .filter(|e| {
                matches!(
                    e.event.event.payload.as_ref().and_then(|p| p.kind.as_ref()),
                    Some(Kind::HandoffAcknowledged(a)) if a.handoff_id == "a1"
                )
            })
            .count();
        with += usize::from(n > 0);
        most = most.max(n);
    }
    (with, most)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_receipts_of_hand_offs_a_killed_instance_held_are_sent_by_another_within_five_seconds()
{
    let generation = &generations()[0];
    let server = generation.start_server().await;
    let urls = vec![server.url()];
    let bus = open_bus(&urls, "receipt recovery", 1).await;
    let ops = Ops::from_bus(&bus);

    // An older deployment made the consumer with a 30 s ack wait.
    let old = ConsumerRunner::new(
        bus.clone(),
        ConsumerConfig {
            ack_wait: Duration::from_secs(30),
            ..ConsumerConfig::named(CONSUMER)
        },
    );
    old.ensure_consumer().await.expect("the old consumer");

    let stage = Stage::new(urls.clone());
    std::fs::copy(stage.path("registry.toml"), stage.path("registry-a.toml"))
        .expect("instance a's registry");
    let customs = stage.agency(CUSTOMS).await;
    let mut a = stage
        .agency_instance(
            IPC,
            "-a",
            "registry-a.toml",
            &["--key-reload-interval", "200ms"],
        )
        .await;
    let status = ops
        .consumer(CASES_STREAM, CONSUMER)
        .await
        .expect("consumer");
    assert_eq!(
        status.ack_wait,
        RECEIPTS_ACK_WAIT,
        "updated in place at start:\n{}",
        a.log_text()
    );
    assert!(a.log_text().contains("consumer settings updated in place"));

    // A's key ends a second from now in A's registry: from then on A cannot sign a
    // receipt and retries each in place, holding the message.
    let expiry = OffsetDateTime::now_utc() + KEY_LEFT;
    let mut retiring = registry();
    retiring
        .retire_key(signer(IPC).key_id(), expiry)
        .expect("retire the key");
    retiring
        .save(&stage.path("registry-a.toml"))
        .expect("registry file");
    wait_until(
        STEP_TIMEOUT,
        "instance a to reload its registry",
        async || a.log_text().contains("keys reloaded") && OffsetDateTime::now_utc() > expiry,
    )
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", a.log_text()));

    // Customs asks the IP center for an assessment on every case; A pulls them all.
    let mut common = AgencyServiceClient::new(customs.authed(Some(&customs.token)));
    let mut api = CustomsServiceClient::new(customs.authed(Some(&customs.token)));
    for i in 0..HANDOFFS {
        let id = case_id(i);
        common
            .open_case(OpenCaseRequest {
                meta: meta(&id, "open"),
                case_opened: Some(CaseOpened {
                    case_type: CaseType::CounterfeitTrademark as i32,
                    title: format!("recovery case {id}"),
                    ..Default::default()
                }),
            })
            .await
            .expect("open the case");
        api.request_assessment(RequestAssessmentRequest {
            meta: meta(&id, "assess"),
            handoff: Some(HandoffDetails {
                handoff_id: "a1".into(),
                to_office_id: String::new(),
                reason: "assess the goods".into(),
                evidence_ids: vec![],
            }),
        })
        .await
        .expect("request an assessment");
    }
    let last = bus
        .last_sequence(&case(&case_id(HANDOFFS - 1)))
        .await
        .expect("last");
    wait_until(
        STEP_TIMEOUT,
        "instance a to hold every message",
        async || {
            ops.consumer(CASES_STREAM, CONSUMER)
                .await
                .is_ok_and(|c| c.pending == 0 && c.delivered_sequence >= last && c.ack_pending > 0)
                && a.log_text().contains("handler failed transiently")
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", a.log_text()));

    // B starts; while A lives, its progress acks keep every held message its own.
    let b = stage.agency_instance(IPC, "-b", "registry.toml", &[]).await;
    let hold = RECEIPTS_ACK_WAIT * 2;
    let watched = Instant::now();
    wait_until(
        hold * 3,
        "the hold window to pass with nothing redelivered",
        async || {
            let c = ops
                .consumer(CASES_STREAM, CONSUMER)
                .await
                .expect("consumer");
            assert_eq!(c.redelivered, 0, "nothing redelivered while A lives");
            assert_eq!(receipts(&bus).await.0, 0, "no receipt while A holds them");
            watched.elapsed() >= hold
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    let held = ops
        .consumer(CASES_STREAM, CONSUMER)
        .await
        .expect("consumer")
        .ack_pending;

    // SIGKILL by A's PID; B must send every receipt within the limit.
    let killed = Instant::now();
    a.kill_hard().await;
    wait_until(
        RECOVERY_TIMEOUT,
        "instance b to send every receipt",
        async || receipts(&bus).await.0 == HANDOFFS,
    )
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", b.log_text()));
    let took = killed.elapsed();

    let (with, most) = receipts(&bus).await;
    assert_eq!((with, most), (HANDOFFS, 1), "one receipt per hand-off");
    assert!(dead_letters(&bus).await.is_empty(), "nothing dead-lettered");
    // B's metrics count what it was delivered again: at least every hand-off.
    let label = format!("consumer=\"{CONSUMER}\"");
    let redeliveries = wait_until(
        STEP_TIMEOUT,
        "b's metrics to count the redeliveries",
        async || {
            let text = agency_harness::http_get(b.metrics, "/metrics").await;
            let n: u64 = text
                .lines()
                .find(|l| {
                    l.starts_with("casebus_consumer_redeliveries_total{") && l.contains(&label)
                })?
                .rsplit(' ')
                .next()?
                .parse()
                .ok()?;
            (n >= HANDOFFS as u64).then_some(n)
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    let mut figures = Figures::new("receipt recovery after SIGKILL", &generation.label);
    figures
        .row("ack wait of the receipts consumer", ms(RECEIPTS_ACK_WAIT))
        .row("hand-offs held by the killed instance", HANDOFFS)
        .row("messages it held (unacknowledged)", held)
        .row("held alive without redelivery", ms(hold))
        .row(
            "every receipt sent by the other instance after the kill",
            ms(took),
        )
        .row("redeliveries counted on its /metrics", redeliveries);
    figures.write();
    assert!(
        took < RECOVERY_LIMIT,
        "receipts took {took:?} after the kill:\n{}",
        b.log_text()
    );
}
