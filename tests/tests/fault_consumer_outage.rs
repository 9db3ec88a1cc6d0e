//! A consumer that cannot load a case's chain for a while (the broker briefly away, or
//! direct get refused) must not let the case's later events overtake the message it
//! holds: a case's events reach the handler in version order, whatever fails meanwhile.
//!
//! Regression test for the one-at-a-time `ConsumerRunner::run`, which used to leave such
//! a message unacknowledged "for redelivery" and move on: the case's next event loaded
//! the chain from the stream (which holds the skipped events), passed the check and was
//! handed over first; the skipped events came back after `ack_wait`, out of order. The
//! agency services' automatic receipts run on that mode.
//!
//! Deterministic: the consumer's handler is held while it pulls the messages into its
//! buffer, then direct get is switched off on `CASES` (so loading a chain fails at once),
//! the handler is released, and direct get comes back only after three ack waits. All
//! that time the consumer retries the message it holds in place and keeps it and those
//! behind it alive with progress acks: the server redelivers nothing (before the
//! progress acks of held messages, the test waited for that redelivery).

mod fault_common;

use std::sync::Arc;
use std::time::Duration;

use casebus_bus::ops::Ops;
use casebus_bus::provision::cases_config;
use casebus_bus::subjects::CASES_STREAM;
use casebus_bus::{Appender, AppenderConfig, ConsumerConfig, StreamSettings};
use casebus_domain::DeadlineRules;
use casebus_test_support::wait_until;

use fault_common::chain::{note, opened};
use fault_common::load::{Ledger, command};
use fault_common::procs::RecordingConsumer;
use fault_common::{CUSTOMS, case, generations, open_bus, reopen_bus, signer};

/// Ceiling for each step of the scenario.
const STEP_TIMEOUT: Duration = Duration::from_secs(30);
const CONSUMER: &str = "outage-recorder";
/// The consumer's ack wait: short, so that a redelivery would come within the test.
const ACK_WAIT: Duration = Duration::from_secs(1);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_case_whose_chain_cannot_be_loaded_is_retried_in_place_not_overtaken_by_its_later_events()
{
    let generation = generations().remove(0);
    let server = generation.start_server().await;
    let urls = vec![server.url()];
    let bus = open_bus(&urls, "outage-load", 1).await;
    let consumer_bus = reopen_bus(&urls, "outage-consumer").await;
    let consumer = RecordingConsumer::start_with(
        &consumer_bus,
        ConsumerConfig {
            ack_wait: ACK_WAIT,
            ..ConsumerConfig::named(CONSUMER)
        },
    );
    consumer.recorded.hold.send_replace(true);

    let appender = Appender::new(
        bus.clone(),
        signer(CUSTOMS),
        Arc::new(DeadlineRules::default()),
        AppenderConfig::default(),
    )
    .expect("appender");
    let ledger = Ledger::default();
    let (gate, a) = (case("gate"), case("a"));
    assert!(command(&appender, &ledger, &gate, "open", opened("gate")).await);
    assert!(command(&appender, &ledger, &a, "open", opened("a")).await);
    for n in 2..=4 {
        assert!(command(&appender, &ledger, &a, &format!("n{n}"), note("x")).await);
    }

    // The consumer pulls all five into its buffer while its handler is held.
    let ops = Ops::from_bus(&bus);
    wait_until(
        STEP_TIMEOUT,
        "the consumer to pull every message",
        async || {
            ops.consumer(CASES_STREAM, CONSUMER)
                .await
                .is_ok_and(|c| c.delivered_sequence >= 5)
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"));

    // Loading a chain now fails at once.
    let mut config = cases_config(&StreamSettings::default());
    config.allow_direct = false;
    bus.jetstream()
        .update_stream(config.clone())
        .await
        .expect("switch direct get off");
    consumer.recorded.hold.send_replace(false);
    let outage = tokio::time::Instant::now();
    wait_until(
        STEP_TIMEOUT,
        "three ack waits to pass with nothing redelivered",
        async || {
            let c = ops
                .consumer(CASES_STREAM, CONSUMER)
                .await
                .expect("consumer");
            assert_eq!(c.redelivered, 0, "the held messages are kept alive");
            let handled = consumer
                .recorded
                .distinct
                .load(std::sync::atomic::Ordering::Relaxed);
            // Only the gate's event, whose chain was read before direct get went off.
            assert!(handled <= 1, "{handled} handed over without their chain");
            outage.elapsed() >= ACK_WAIT * 3
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    config.allow_direct = true;
    bus.jetstream()
        .update_stream(config)
        .await
        .expect("switch direct get on");

    // The case's next event arrives while the earlier ones may still be unhandled.
    assert!(command(&appender, &ledger, &a, "n5", note("after the outage")).await);
    wait_until(STEP_TIMEOUT, "every event to be handled", async || {
        consumer
            .recorded
            .distinct
            .load(std::sync::atomic::Ordering::Relaxed)
            >= 6
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    let order = consumer.recorded.order.lock().expect("lock").clone();
    assert_eq!(
        order["a"],
        vec![1, 2, 3, 4, 5],
        "case a handed over out of order"
    );
    assert_eq!(order["gate"], vec![1]);
    assert!(!consumer.task.is_finished(), "the consumer stopped");
    consumer.stop().await;
}
