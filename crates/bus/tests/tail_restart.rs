//! `Bus::tail` across restarts of the NATS server: a tail following `CASES` on a client
//! made by `casebus_bus::connect` keeps delivering after the server is stopped and
//! started again on the same port and store, and the first message stored after the
//! restart reaches it within [`RESUME_LIMIT`] of the server answering again (before,
//! the client's ordered consumer took about 15 s to notice). Nothing is delivered
//! twice and nothing is skipped.

mod common;

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::message::PublishMessage;
use futures::StreamExt as _;
use tokio::sync::mpsc;
use tokio::time::Instant;

use casebus_bus::{Bus, BusConfig, ConnectConfig, connect};
use common::{Fixture, registry};

/// How soon after the server answers again the tail must deliver.
const RESUME_LIMIT: Duration = Duration::from_secs(2);
/// Ceiling for a message to arrive at all (a broken tail fails here, not by hanging).
const ARRIVAL_TIMEOUT: Duration = Duration::from_secs(30);
/// Restarts in a row.
const RESTARTS: usize = 3;

/// Publishes junk bytes on `case.<case_id>` over a fresh connection (so the publisher's
/// own reconnect is not measured) and returns the stream sequence.
async fn publish(f: &Fixture, case_id: &str, n: usize) -> u64 {
    let js = f.server.jetstream().await.expect("a fresh connection");
    js.send_publish(
        format!("case.{case_id}"),
        PublishMessage::build().payload(format!("message {n}").into_bytes().into()),
    )
    .await
    .expect("publish")
    .await
    .expect("stored")
    .sequence
}

/// The next sequence the tail delivers and when.
async fn next(delivered: &mut mpsc::Receiver<(u64, Instant)>) -> (u64, Instant) {
    tokio::time::timeout(ARRIVAL_TIMEOUT, delivered.recv())
        .await
        .expect("the tail delivers within the arrival timeout")
        .expect("the tail goes on")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tail_resumes_within_two_seconds_of_a_restarted_server() {
    let mut f = Fixture::start().await;
    let client = connect(&ConnectConfig::new(f.server.url(), "tail test"))
        .await
        .expect("connect");
    let bus = Bus::open(client, Arc::new(registry()), BusConfig::default())
        .await
        .expect("open bus");

    let first = publish(&f, "TAIL-1", 0).await;
    let mut tail = bus.tail(1, None).await.expect("tail");
    let (tx, mut delivered) = mpsc::channel(64);
    let reader = tokio::spawn(async move {
        while let Some(item) = tail.next().await {
            if let Ok(raw) = item
                && tx.send((raw.sequence, Instant::now())).await.is_err()
            {
                return;
            }
        }
    });
    assert_eq!(next(&mut delivered).await.0, first);

    let mut figures = Vec::new();
    for round in 1..=RESTARTS {
        f.server.stop().await.expect("stop nats-server");
        f.server.restart().await.expect("restart nats-server");
        let back = Instant::now();
        let sequence = publish(&f, "TAIL-1", round).await;
        let (got, at) = next(&mut delivered).await;
        assert_eq!(got, sequence, "round {round}: nothing skipped or repeated");
        let took = at.duration_since(back);
        figures.push(took);
        assert!(
            took < RESUME_LIMIT,
            "round {round}: the tail resumed {took:?} after the server answered again"
        );
    }
    let worst = figures.iter().max().expect("rounds ran");
    println!("tail resumed after a restart within {worst:?} (rounds: {figures:?})");
    reader.abort();
}
