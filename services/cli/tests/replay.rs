//! `casebus replay` against a real nats-server and a real durable consumer: the plan
//! says how many messages the consumer will receive again, changes nothing, and after
//! `--execute` a `ConsumerRunner` receives exactly those events; replay is refused while
//! a client pulls, and when it would skip unprocessed messages.

mod common;

use casebus_bus::subjects::CASES_STREAM;
use casebus_test_support::wait_until;
use time::OffsetDateTime;

use common::catalogue::{note, opened};
use common::*;

/// Seeds two cases with `notes` notes each, interleaved; returns the sequences.
async fn seed(f: &Fixture, prefix: &str, notes: usize) -> Vec<u64> {
    let customs = f.appender(CUSTOMS);
    let a = case(&format!("{prefix}-A"));
    let b = case(&format!("{prefix}-B"));
    let mut sequences = vec![
        append(&customs, &a, opened("a")).await.stream_sequence,
        append(&customs, &b, opened("b")).await.stream_sequence,
    ];
    for i in 0..notes {
        sequences.push(
            append(&customs, &a, note(&format!("a{i}")))
                .await
                .stream_sequence,
        );
        sequences.push(
            append(&customs, &b, note(&format!("b{i}")))
                .await
                .stream_sequence,
        );
    }
    sequences
}

async fn wait_caught_up(f: &Fixture, name: &str, last: u64) {
    let ops = f.ops.clone();
    wait_until(DELIVERY_TIMEOUT, "consumer caught up", async || {
        ops.consumer(CASES_STREAM, name)
            .await
            .is_ok_and(|c| c.pending == 0 && c.ack_pending == 0 && c.ack_floor_sequence == last)
    })
    .await
    .expect("caught up");
}

#[tokio::test]
async fn the_plan_matches_what_execute_then_redelivers() {
    let f = Fixture::start().await;
    let sequences = seed(&f, "REPLAY", 4).await;
    let last = *sequences.last().expect("seeded");
    let consumer = f.start_consumer("svc-replay", registry()).await;
    consumer.wait_handled(sequences.len() as u64).await;
    wait_caught_up(&f, "svc-replay", last).await;

    // While the service pulls, executing is refused and changes nothing.
    let k = sequences[3];
    let refused = f
        .cli(&[
            "replay",
            "--consumer",
            "svc-replay",
            "--to-seq",
            &k.to_string(),
            "--execute",
        ])
        .await;
    refused.expect_code(1);
    assert!(
        refused.stderr.contains("active pull request"),
        "{}",
        refused.stderr
    );
    assert!(
        refused.stderr.contains("nothing changed"),
        "{}",
        refused.stderr
    );
    consumer.stop().await;
    f.wait_idle("svc-replay").await;
    let unchanged = f
        .ops
        .consumer(CASES_STREAM, "svc-replay")
        .await
        .expect("consumer");
    assert_eq!(unchanged.ack_floor_sequence, last);

    // The plan.
    let expected: Vec<u64> = sequences.iter().copied().filter(|s| *s >= k).collect();
    let plan = f
        .cli(&[
            "--json",
            "replay",
            "--consumer",
            "svc-replay",
            "--to-seq",
            &k.to_string(),
        ])
        .await;
    plan.expect_code(0);
    let plan = plan.json();
    assert_eq!(plan["consumer"], "svc-replay");
    assert_eq!(plan["ack_floor"], last);
    assert_eq!(plan["new_start"], k);
    assert_eq!(plan["will_receive"], expected.len() as u64);
    assert_eq!(plan["receive_again"], expected.len() as u64);
    assert_eq!(plan["skips"], 0);
    assert_eq!(plan["executed"], false);
    assert_eq!(plan["filter_subject"], "case.*");
    let still = f
        .ops
        .consumer(CASES_STREAM, "svc-replay")
        .await
        .expect("consumer");
    assert_eq!(still.ack_floor_sequence, last, "a plan changes nothing");
    assert_eq!(still.pending, 0);

    // Execute, then a consumer receives exactly the planned events.
    let done = f
        .cli(&[
            "replay",
            "--consumer",
            "svc-replay",
            "--to-seq",
            &k.to_string(),
            "--execute",
        ])
        .await;
    done.expect_code(0);
    assert!(
        done.stdout.contains("now delivers from sequence"),
        "{}",
        done.stdout
    );
    let after = f
        .ops
        .consumer(CASES_STREAM, "svc-replay")
        .await
        .expect("consumer");
    assert_eq!(after.pending, expected.len() as u64);
    assert_eq!(after.filter_subject, "case.*", "the filter is kept");
    assert_eq!(after.ack_policy, "explicit", "the ack policy is kept");
    assert_eq!(after.max_ack_pending, unchanged.max_ack_pending);
    assert_eq!(after.ack_wait, unchanged.ack_wait);
    // A reset consumer stands just before its new start.
    let replanned = f
        .cli(&[
            "--json",
            "replay",
            "--consumer",
            "svc-replay",
            "--to-seq",
            &k.to_string(),
        ])
        .await
        .json();
    assert_eq!(replanned["position"], k - 1);
    assert_eq!(replanned["skips"], 0);
    assert_eq!(replanned["receive_again"], 0);

    let again = f.start_consumer("svc-replay", registry()).await;
    again.wait_handled(expected.len() as u64).await;
    wait_caught_up(&f, "svc-replay", last).await;
    assert_eq!(again.recorder.sequences(), expected);
    again.stop().await;
}

#[tokio::test]
async fn a_replay_to_a_time_starts_at_the_first_message_stored_then_and_skipping_needs_force() {
    let f = Fixture::start().await;
    let before = seed(&f, "TIMED", 1).await;
    let boundary = OffsetDateTime::now_utc();
    wait_until(DELIVERY_TIMEOUT, "the clock to move on", async || {
        OffsetDateTime::now_utc() > boundary
    })
    .await
    .expect("clock moves");
    let customs = f.appender(CUSTOMS);
    let late = append(&customs, &case("TIMED-A"), note("late"))
        .await
        .stream_sequence;
    let consumer = f.start_consumer("svc-timed", registry()).await;
    consumer.wait_handled(before.len() as u64 + 1).await;
    wait_caught_up(&f, "svc-timed", late).await;
    consumer.stop().await;
    f.wait_idle("svc-timed").await;

    let at = casebus_cli_times(boundary);
    let plan = f
        .cli(&[
            "--json",
            "replay",
            "--consumer",
            "svc-timed",
            "--to-time",
            &at,
        ])
        .await;
    plan.expect_code(0);
    let plan = plan.json();
    assert_eq!(plan["new_start"], late);
    assert_eq!(plan["will_receive"], 1);
    assert_eq!(plan["receive_again"], 1);

    // Two events the consumer has not processed; a start after them would skip them.
    let unseen = append(&customs, &case("TIMED-B"), note("unseen"))
        .await
        .stream_sequence;
    let skip_to = (unseen + 1).to_string();
    let refused = f
        .cli(&[
            "replay",
            "--consumer",
            "svc-timed",
            "--to-seq",
            &skip_to,
            "--execute",
        ])
        .await;
    refused.expect_code(1);
    assert!(
        refused.stderr.contains("skips 1 message"),
        "{}",
        refused.stderr
    );
    let forced = f
        .cli(&[
            "--json",
            "replay",
            "--consumer",
            "svc-timed",
            "--to-seq",
            &skip_to,
            "--execute",
            "--force",
        ])
        .await;
    forced.expect_code(0);
    assert_eq!(forced.json()["executed"], true);
    let after = f
        .ops
        .consumer(CASES_STREAM, "svc-timed")
        .await
        .expect("consumer");
    assert_eq!(after.pending, 0, "the unseen event was skipped as asked");

    // A sequence beyond the stream is a bad argument.
    let beyond = f
        .cli(&["replay", "--consumer", "svc-timed", "--to-seq", "9999"])
        .await;
    beyond.expect_code(2);
    assert!(beyond.stderr.contains("--to-seq 9999"), "{}", beyond.stderr);
    // An unknown consumer is reported, not created.
    let unknown = f
        .cli(&["replay", "--consumer", "nobody", "--to-seq", "1"])
        .await;
    unknown.expect_code(1);
    assert!(
        unknown.stderr.contains("consumer nobody not found"),
        "{}",
        unknown.stderr
    );
}

fn casebus_cli_times(at: OffsetDateTime) -> String {
    at.format(&time::format_description::well_known::Rfc3339)
        .expect("format")
}
