//! The monitor attributes what it counts from verified content, never from a message's
//! headers: `Casebus-Office` and `Casebus-Event-Type` are unsigned, and any user who may
//! publish on `case.*` chooses them. Tried as such a user would, over the real
//! `casebus-monitor` binary: bytes that are no event under headers naming the court and
//! a judgment, and a stored customs event published again under the same headers. The
//! court's throughput stays zero, no judgment is counted, the copy counts for customs
//! (its verified signer), and the garbage counts as `unverified` with its code.

mod gateway_common;
mod monitor_harness;

use bytes::Bytes;
use casebus_bus::ops::{Ops, PublishOptions};
use casebus_bus::subjects::{CASES_STREAM, headers};
use casebus_integrity::token::{Audience, Role};
use casebus_test_support::wait_until;

use gateway_common::catalogue::opened;
use gateway_common::{COURT, CUSTOMS, Fixture, case, office};
use monitor_harness::{MONITOR_TIMEOUT, get, spawn_ready};

fn count(list: &serde_json::Value, key: &str, name: &str, field: &str) -> u64 {
    list.as_array()
        .and_then(|items| items.iter().find(|i| i[key] == name))
        .and_then(|i| i[field].as_u64())
        .unwrap_or(0)
}

#[tokio::test]
async fn the_monitor_counts_events_by_their_verified_signer_not_by_their_headers() {
    let f = Fixture::start().await;
    let real = f
        .append(
            CUSTOMS,
            &case("ATTR-1"),
            opened("a real customs case"),
            None,
        )
        .await;
    let ops = Ops::from_bus(&f.bus);
    let stored = ops
        .get_message(CASES_STREAM, real.stream_sequence)
        .await
        .expect("read back")
        .expect("stored");
    let forged_headers = vec![
        (headers::OFFICE.to_owned(), COURT.to_owned()),
        (headers::EVENT_TYPE.to_owned(), "JudgmentIssued".to_owned()),
    ];
    // Garbage claiming to be the court's judgment.
    ops.publish(
        "case.ATTR-2",
        Bytes::from_static(b"not an event, but the headers say a judgment"),
        &forged_headers,
        &PublishOptions::default(),
    )
    .await
    .expect("publish the garbage");
    // A genuine customs event, published again under the court's name.
    ops.publish(
        "case.ATTR-1",
        stored.payload.clone(),
        &forged_headers,
        &PublishOptions::default(),
    )
    .await
    .expect("publish the copy");

    let admin = f
        .issuer
        .issue(
            Audience::Monitor,
            &office(COURT),
            "administrator",
            &[Role::Admin],
            time::OffsetDateTime::now_utc(),
            time::Duration::hours(1),
        )
        .expect("token");
    let args: Vec<String> = [
        "--registry",
        &f.registry_path.display().to_string(),
        "--trusted-issuers",
        &f.issuers_path.display().to_string(),
        "--nats-url",
        &f.server.url(),
        "--listen",
        "127.0.0.1:0",
        "--metrics-listen",
        "127.0.0.1:0",
        "--refresh",
        "500ms",
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect();
    let monitor = spawn_ready(
        f.dir.path(),
        "monitor",
        "casebus-monitor",
        &args,
        "--ready-file",
    )
    .await;
    let dashboard = monitor.addr("http");

    let overview = wait_until(
        MONITOR_TIMEOUT,
        "the monitor to count all three messages",
        async || {
            let o = get(dashboard, "/api/overview", Some(&admin))
                .await
                .ok()?
                .json();
            (o["throughput"]["last_sequence"].as_u64()? >= 3).then_some(o)
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", monitor.log_text()));

    let agencies = &overview["throughput"]["agencies"];
    let types = &overview["event_types"];
    assert_eq!(
        count(agencies, "agency", "court", "total_last_hour"),
        0,
        "nothing the court signed was stored: {agencies}"
    );
    assert_eq!(
        count(agencies, "agency", "customs", "total_last_hour"),
        2,
        "the event and its copy are customs': {agencies}"
    );
    assert_eq!(
        count(agencies, "agency", "unverified", "total_last_hour"),
        1,
        "{agencies}"
    );
    assert_eq!(
        count(types, "name", "JudgmentIssued", "count"),
        0,
        "{types}"
    );
    assert_eq!(count(types, "name", "CaseOpened", "count"), 2, "{types}");
    assert_eq!(
        count(types, "name", "Unverified(undecodable)", "count"),
        1,
        "{types}"
    );
}
