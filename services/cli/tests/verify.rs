//! `casebus verify` against a real nats-server: an intact case verifies; a forged,
//! chain-breaking or tampered message published straight onto the case's subject is
//! reported with case, version, sequence and reason and makes the exit code 1; `--all`
//! finds a poison message among clean cases.

mod common;

use prost::Message as _;

use casebus_proto::event::v1::SignedEvent;

use common::catalogue::{main_case, note, opened};
use common::*;

#[tokio::test]
async fn an_intact_case_verifies() {
    let f = Fixture::start().await;
    let c = case("VER-OK");
    let mut appenders = std::collections::HashMap::new();
    let history = main_case();
    for (office_id, payload) in history.clone() {
        let appender = appenders
            .entry(office_id)
            .or_insert_with(|| f.appender(office_id));
        append(appender, &c, payload).await;
    }
    let run = f.cli(&["--json", "verify", "--case", "VER-OK"]).await;
    run.expect_code(0);
    let report = run.json();
    assert_eq!(report["ok"], true);
    assert_eq!(report["events"], history.len() as u64);
    assert_eq!(report["last_version"], history.len() as u64);
    assert_eq!(report["failures"], serde_json::json!([]));

    let text = f.cli(&["verify", "--case", "VER-OK"]).await;
    text.expect_code(0);
    assert!(text.stdout.contains("case VER-OK: OK"), "{}", text.stdout);

    let missing = f.cli(&["verify", "--case", "NO-SUCH-CASE"]).await;
    missing.expect_code(1);
    assert!(missing.stdout.contains("not found"), "{}", missing.stdout);
}

#[tokio::test]
async fn forged_and_tampered_messages_are_reported_with_case_version_sequence_and_reason() {
    let f = Fixture::start().await;
    let c = case("VER-BAD");
    let customs = f.appender(CUSTOMS);
    let v1 = append(&customs, &c, opened("bad")).await;
    let v2 = append(&customs, &c, note("two")).await;

    // A validly signed v3 that links to v1 instead of v2: a chain break.
    let (broken, _) = hand_made_note(&signer(CUSTOMS), "VER-BAD", 3, Some(v1.hash), "forged");
    let broken_seq = f.publish_raw("case.VER-BAD", broken).await;
    // v2 again with one byte of the event changed: the signature no longer holds.
    let stored = f
        .ops
        .get_message("CASES", v2.stream_sequence)
        .await
        .expect("read")
        .expect("v2 stored");
    let mut signed = SignedEvent::decode(stored.payload.as_ref()).expect("signed");
    let last = signed.event.len() - 1;
    signed.event[last] ^= 0x01;
    let tampered_seq = f.publish_raw("case.VER-BAD", signed.encode_to_vec()).await;

    let run = f.cli(&["--json", "verify", "--case", "VER-BAD"]).await;
    run.expect_code(1);
    let report = run.json();
    assert_eq!(report["ok"], false);
    let failures = report["failures"].as_array().expect("failures");
    assert_eq!(failures.len(), 2, "{failures:?}");
    assert_eq!(failures[0]["case"], "VER-BAD");
    assert_eq!(failures[0]["sequence"], broken_seq);
    assert_eq!(failures[0]["version"], 3);
    assert_eq!(failures[0]["code"], "chain_break");
    assert!(
        failures[0]["reason"]
            .as_str()
            .is_some_and(|r| r.contains("prev_event_hash"))
    );
    assert_eq!(failures[1]["sequence"], tampered_seq);
    assert_eq!(failures[1]["code"], "bad_signature");

    let text = f.cli(&["verify", "--case", "VER-BAD"]).await;
    text.expect_code(1);
    assert!(
        text.stdout.contains(&format!(
            "FAIL case VER-BAD v3 seq {broken_seq}: chain break"
        )),
        "{}",
        text.stdout
    );
    assert!(
        text.stdout.contains("FAILED, 2 failure(s)"),
        "{}",
        text.stdout
    );
}

#[tokio::test]
async fn verify_all_finds_a_poison_message_among_clean_cases() {
    let f = Fixture::start().await;
    let customs = f.appender(CUSTOMS);
    for id in ["ALL-A", "ALL-B", "ALL-C"] {
        let c = case(id);
        append(&customs, &c, opened(id)).await;
        append(&customs, &c, note("n")).await;
    }
    let clean = f.cli(&["--json", "verify", "--all"]).await;
    clean.expect_code(0);
    let report = clean.json();
    assert_eq!(report["ok"], true);
    assert_eq!(report["messages"], 6);
    assert_eq!(report["cases"], 3);

    let poison = f.publish_raw("case.ALL-B", b"poison".to_vec()).await;
    append(&customs, &case("ALL-B"), note("after the poison")).await;
    let run = f.cli(&["--json", "verify", "--all"]).await;
    run.expect_code(1);
    let report = run.json();
    assert_eq!(report["messages"], 8);
    let failures = report["failures"].as_array().expect("failures");
    assert_eq!(failures.len(), 1, "{failures:?}");
    assert_eq!(failures[0]["case"], "ALL-B");
    assert_eq!(failures[0]["sequence"], poison);
    assert_eq!(failures[0]["code"], "undecodable");
    assert_eq!(
        report["events"], 7,
        "the event after the poison links past it"
    );

    let text = f.cli(&["verify", "--all"]).await;
    text.expect_code(1);
    assert!(
        text.stdout
            .contains(&format!("FAIL case ALL-B v? seq {poison}")),
        "{}",
        text.stdout
    );
    assert!(
        text.stdout.contains("FAILED: 1 failure(s) in 1 of 3 cases"),
        "{}",
        text.stdout
    );
}

#[tokio::test]
async fn verify_without_a_registry_is_a_usage_error() {
    let f = Fixture::start().await;
    let run = run_with_env(
        &["verify", "--all"],
        &[("CASEBUS_NATS_URL", f.server.url().as_str())],
    )
    .await;
    run.expect_code(2);
    assert!(run.stderr.contains("--registry"), "{}", run.stderr);
}
