//! `casebus dlq` against a real nats-server and real consumers: dead letters are listed
//! and shown with their reasons; a dead letter that now verifies is processed after
//! `dlq retry` (by redelivering the original in place, or by publishing again a message
//! that arrived before its predecessor); one that still fails is not retried; `drop`
//! needs `--execute` and leaves an audit record.

mod common;

use casebus_bus::subjects::CASES_STREAM;

use common::catalogue::{note, opened};
use common::*;

#[tokio::test]
async fn a_dead_letter_signed_with_a_key_the_consumer_lacked_is_processed_after_retry() {
    // The appenders and the operator know customs' new key k2; the service's consumer
    // runs with the old registry, which lacks it.
    let full = registry_with_second_key(CUSTOMS);
    let f = Fixture::start_with_registry(full.clone()).await;
    let c = case("DLQ-KEY");
    let old_key = f.appender(CUSTOMS);
    let new_key = f.appender_with(
        second_signer(CUSTOMS),
        casebus_domain::DeadlineRules::default(),
    );
    append(&old_key, &c, opened("key")).await;
    let v2 = append(&new_key, &c, note("signed with k2")).await;
    let v3 = append(&old_key, &c, note("k1 again")).await;

    let consumer = f.start_consumer("svc-key", registry()).await;
    consumer.wait_dead_lettered(1).await;
    // v3 links to v2, which this consumer never accepted: dead-lettered too.
    consumer.wait_dead_lettered(2).await;
    consumer.wait_handled(1).await;
    assert_eq!(consumer.recorder.seen(), [("DLQ-KEY".to_owned(), 1, 1)]);

    let list = f.cli(&["--json", "dlq", "list"]).await;
    list.expect_code(0);
    let letters = list.json_lines();
    assert_eq!(letters.len(), 2);
    assert_eq!(letters[0]["consumer"], "svc-key");
    assert_eq!(letters[0]["code"], "unknown_key");
    assert_eq!(letters[0]["original_sequence"], v2.stream_sequence);
    assert_eq!(letters[0]["case"], "DLQ-KEY");
    assert_eq!(letters[1]["code"], "gap");
    let dead = letters[0]["sequence"].as_u64().expect("dlq sequence");

    let show = f.cli(&["--json", "dlq", "show", &dead.to_string()]).await;
    show.expect_code(0);
    let shown = show.json();
    assert_eq!(shown["original"]["version"], 2);
    assert_eq!(
        shown["original"]["payload"]["note_added"]["text"],
        "signed with k2"
    );
    assert!(shown["reason"].as_str().is_some_and(|r| r.contains("k2")));

    // The fix: the service's registry gets the key; the service is stopped for the
    // retry and restarted with the new registry.
    consumer.stop().await;
    f.wait_idle("svc-key").await;
    let plan = f.cli(&["--json", "dlq", "retry", &dead.to_string()]).await;
    plan.expect_code(0);
    let plan = plan.json();
    assert_eq!(plan["action"], "redeliver");
    assert_eq!(plan["executed"], false);
    assert_eq!(plan["plan"]["new_start"], v2.stream_sequence);
    assert_eq!(plan["plan"]["will_receive"], 2);
    let unchanged = f
        .ops
        .consumer(CASES_STREAM, "svc-key")
        .await
        .expect("consumer");
    assert_eq!(unchanged.pending, 0, "a plan changes nothing");

    let done = f
        .cli(&["dlq", "retry", &dead.to_string(), "--execute"])
        .await;
    done.expect_code(0);
    assert!(
        done.stdout.contains("will receive sequence"),
        "{}",
        done.stdout
    );

    let fixed = f.start_consumer("svc-key", full).await;
    fixed.wait_handled(2).await;
    assert_eq!(
        fixed.recorder.seen(),
        [
            ("DLQ-KEY".to_owned(), 2, v2.stream_sequence),
            ("DLQ-KEY".to_owned(), 3, v3.stream_sequence),
        ]
    );
    fixed.stop().await;

    // The retry is in the audit trail.
    let audit = f.cli(&["--json", "audit", "--operator"]).await;
    audit.expect_code(0);
    let records = audit.json_lines();
    assert_eq!(records.len(), 1);
    assert_eq!(records[0]["method"], "dlq.retry");
    assert_eq!(records[0]["actor"], "test-operator");
    assert_eq!(records[0]["case_id"], "DLQ-KEY");
}

#[tokio::test]
async fn a_message_that_arrived_before_its_predecessor_is_published_again_and_processed() {
    let f = Fixture::start().await;
    let c = case("DLQ-ORDER");
    let customs = f.appender(CUSTOMS);
    let v1 = append(&customs, &c, opened("order")).await;
    let consumer = f.start_consumer("svc-order", registry()).await;
    consumer.wait_handled(1).await;

    // A producer that does not use the optimistic check publishes v3 before v2.
    let (v2, h2) = hand_made_note(&signer(CUSTOMS), "DLQ-ORDER", 2, Some(v1.hash), "two");
    let (v3, _) = hand_made_note(&signer(CUSTOMS), "DLQ-ORDER", 3, Some(h2), "three");
    let v3_seq = f.publish_raw("case.DLQ-ORDER", v3).await;
    let v2_seq = f.publish_raw("case.DLQ-ORDER", v2).await;
    consumer.wait_dead_lettered(1).await;
    consumer.wait_handled(2).await;

    let list = f
        .cli(&["--json", "dlq", "list", "--consumer", "svc-order"])
        .await;
    let letters = list.json_lines();
    assert_eq!(letters.len(), 1);
    assert_eq!(letters[0]["code"], "gap");
    assert_eq!(letters[0]["original_sequence"], v3_seq);
    let dead = letters[0]["sequence"]
        .as_u64()
        .expect("dlq sequence")
        .to_string();

    let plan = f.cli(&["--json", "dlq", "retry", &dead]).await;
    plan.expect_code(0);
    assert_eq!(plan.json()["action"], "republish");
    assert_eq!(plan.json()["expected_last_sequence"], v2_seq);

    let done = f.cli(&["--json", "dlq", "retry", &dead, "--execute"]).await;
    done.expect_code(0);
    let done = done.json();
    assert_eq!(done["action"], "republish");
    assert_eq!(done["duplicate"], false);
    let copy_seq = done["sequence"].as_u64().expect("new sequence");
    assert!(copy_seq > v2_seq);

    // The running consumer verifies the copy at its new place and handles it.
    consumer.wait_handled(3).await;
    assert_eq!(
        consumer.recorder.seen().last(),
        Some(&("DLQ-ORDER".to_owned(), 3, copy_seq))
    );
    consumer.stop().await;

    // Retrying again finds the copy in the chain and writes nothing.
    let again = f.cli(&["--json", "dlq", "retry", &dead, "--execute"]).await;
    again.expect_code(0);
    assert_eq!(again.json()["action"], "none");
    assert_eq!(again.json()["chained_at"], copy_seq);
    let last = f
        .ops
        .stream_status(CASES_STREAM)
        .await
        .expect("status")
        .expect("CASES")
        .last_sequence;
    assert_eq!(last, copy_seq, "nothing new was written");
}

#[tokio::test]
async fn a_dead_letter_that_still_fails_is_not_retried_and_drop_needs_execute() {
    let f = Fixture::start().await;
    let c = case("DLQ-DROP");
    let customs = f.appender(CUSTOMS);
    append(&customs, &c, opened("drop")).await;
    f.publish_raw("case.DLQ-DROP", b"garbage".to_vec()).await;
    let consumer = f.start_consumer("svc-drop", registry()).await;
    consumer.wait_dead_lettered(1).await;
    consumer.stop().await;

    let retry = f.cli(&["dlq", "retry", "1", "--execute"]).await;
    retry.expect_code(1);
    assert!(
        retry.stderr.contains("still fails verification"),
        "{}",
        retry.stderr
    );
    assert!(retry.stderr.contains("undecodable"), "{}", retry.stderr);

    let refused = f.cli(&["dlq", "drop", "1"]).await;
    refused.expect_code(2);
    assert!(refused.stderr.contains("--execute"), "{}", refused.stderr);
    assert!(
        refused.stderr.contains("nothing was changed"),
        "{}",
        refused.stderr
    );
    assert!(
        refused.stdout.contains("would drop dead letter 1"),
        "{}",
        refused.stdout
    );
    assert_eq!(
        f.cli(&["--json", "dlq", "list"]).await.json_lines().len(),
        1
    );
    let audit = f.cli(&["--json", "audit", "--operator"]).await;
    assert!(
        audit.json_lines().is_empty(),
        "no audit record without --execute"
    );

    let dropped = f
        .cli(&["dlq", "drop", "1", "--execute", "--actor", "ops-zhang"])
        .await;
    dropped.expect_code(0);
    assert!(
        dropped.stdout.contains("dropped dead letter 1"),
        "{}",
        dropped.stdout
    );
    assert!(
        f.cli(&["--json", "dlq", "list"])
            .await
            .json_lines()
            .is_empty()
    );
    let audit = f.cli(&["--json", "audit", "--operator"]).await;
    let records = audit.json_lines();
    assert_eq!(records.len(), 1);
    assert_eq!(records[0]["method"], "dlq.drop");
    assert_eq!(records[0]["actor"], "ops-zhang");
    assert_eq!(records[0]["case_id"], "DLQ-DROP");
    assert!(
        records[0]["detail"]
            .as_str()
            .is_some_and(|d| d.contains("svc-drop") && d.contains("undecodable"))
    );
    // The original stays in CASES.
    let cases = f
        .cli(&["--json", "events", "list", "--case", "DLQ-DROP"])
        .await;
    assert_eq!(cases.json_lines().len(), 2);

    let gone = f.cli(&["dlq", "show", "1"]).await;
    gone.expect_code(1);
    assert!(gone.stderr.contains("not found"), "{}", gone.stderr);
}
