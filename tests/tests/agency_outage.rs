//! A service that loses NATS in the middle of a command answers UNAVAILABLE (saying to
//! retry with the same request id) instead of hanging or guessing; once NATS is back the
//! retry is applied exactly once, and the service's reactions (automatic receipts, inbox)
//! resume on their own.

mod agency_harness;

use std::time::Duration;

use tokio::time::Instant;
use tonic::Code;

use casebus_proto::agency::v1::ListInboxRequest;
use casebus_test_support::wait_until;

use agency_harness::*;

/// Ceiling for a service to work again after NATS came back.
const RECOVERY_TIMEOUT: Duration = Duration::from_secs(30);

#[tokio::test]
async fn a_service_that_loses_nats_answers_unavailable_and_the_retry_applies_exactly_once() {
    let mut f = Fixture::start().await;
    let (customs, police) = tokio::join!(f.spawn(CUSTOMS), f.spawn(POLICE));
    open_case(&customs, "C-OUT").await;

    // NATS freezes while the command is on its way, and then dies.
    f.nats.pause().expect("SIGSTOP nats-server");
    let started = Instant::now();
    let status = refused(
        add_note(&customs, "C-OUT", "outage-1", "written during the outage").await,
        Code::Unavailable,
    );
    assert!(
        started.elapsed() < CALL_TIMEOUT,
        "the service answers within its NATS request ceiling"
    );
    assert_eq!(reason(&status), "unavailable");
    assert!(
        status.message().contains("retry with the same request id"),
        "{}",
        status.message()
    );
    assert!(
        !status.message().contains("127.0.0.1"),
        "no internal details: {}",
        status.message()
    );
    f.nats.kill_hard().await.expect("kill nats-server");
    let status = refused(
        add_note(&customs, "C-OUT", "outage-1", "written during the outage").await,
        Code::Unavailable,
    );
    assert_eq!(reason(&status), "unavailable");

    // NATS is back: the client retries with the same request id until it is accepted.
    f.nats.restart().await.expect("restart nats-server");
    let applied = wait_until(
        RECOVERY_TIMEOUT,
        "the retried command to be applied",
        async || {
            add_note(&customs, "C-OUT", "outage-1", "written during the outage")
                .await
                .ok()
                .map(tonic::Response::into_inner)
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", customs.log_text()));
    let again = ok(
        &customs,
        "retry after success",
        add_note(&customs, "C-OUT", "outage-1", "written during the outage").await,
    );
    assert!(again.duplicate);
    assert_eq!(again.event_id, applied.event_id);
    assert_eq!(again.case_version, applied.case_version);

    let loaded = f.load("C-OUT").await;
    assert!(loaded.rejected.is_empty(), "{:?}", loaded.rejected);
    assert_eq!(loaded.state.version, 2, "the opening and the note, once");
    assert_eq!(
        loaded
            .events
            .iter()
            .filter(|e| e.event.event_id.as_str() == applied.event_id)
            .count(),
        1
    );

    // Reactions resumed: a hand-off sent now is acknowledged and shows in the inbox.
    refer_to_police(&customs, "C-OUT", "h1").await;
    let item = police
        .wait_inbox(
            "C-OUT",
            "h1",
            "the police to acknowledge h1 after the outage",
            acknowledged,
        )
        .await;
    assert_eq!(item.acknowledged_by_office_id, POLICE);
    let listed = police
        .common()
        .list_inbox(ListInboxRequest::default())
        .await
        .expect("inbox")
        .into_inner();
    assert_eq!(listed.items.len(), 1);
    assert!(f.verify("C-OUT").await.is_intact());
}
