//! `casebus events list|tail` against a real nats-server: every filter returns exactly
//! the expected events, JSON lines carry the envelope, hashes and the decoded payload,
//! poison messages are shown as invalid rather than dropped, and `tail --follow` prints
//! events appended after it started.

mod common;

use std::collections::BTreeSet;
use std::process::Stdio;
use std::time::Duration;

use time::OffsetDateTime;
use tokio::io::{AsyncBufReadExt as _, BufReader};

use casebus_proto::event::v1::{Agency, HandoffKind};
use casebus_test_support::wait_until;

use common::catalogue::{accept, ack, handoff, note, opened};
use common::*;

/// Ceiling for `tail --follow` to print an event.
const FOLLOW_TIMEOUT: Duration = Duration::from_secs(20);

/// (case, version, type) of every JSON line.
fn keys(run: &Run) -> BTreeSet<(String, u64, String)> {
    run.json_lines()
        .iter()
        .map(|v| {
            (
                v["case"].as_str().unwrap_or_default().to_owned(),
                v["version"].as_u64().unwrap_or(0),
                v["type"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect()
}

fn set(items: &[(&str, u64, &str)]) -> BTreeSet<(String, u64, String)> {
    items
        .iter()
        .map(|(c, v, t)| ((*c).to_owned(), *v, (*t).to_owned()))
        .collect()
}

/// Two cases: EV-A with a referral to the police, accepted; EV-B with a note. Returns
/// the instant between the first batch (EV-A v1..v2) and the rest, and every sequence.
async fn seed(f: &Fixture) -> (OffsetDateTime, Vec<u64>) {
    let customs = f.appender(CUSTOMS);
    let police = f.appender(POLICE);
    let a = case("EV-A");
    let b = case("EV-B");
    let mut seqs = vec![
        append(&customs, &a, opened("a")).await.stream_sequence,
        append(&customs, &a, note("first note"))
            .await
            .stream_sequence,
    ];
    let mid = OffsetDateTime::now_utc();
    wait_until(FOLLOW_TIMEOUT, "the clock to move on", async || {
        OffsetDateTime::now_utc() > mid
    })
    .await
    .expect("clock");
    seqs.push(append(&customs, &b, opened("b")).await.stream_sequence);
    seqs.push(
        append(
            &customs,
            &a,
            handoff(
                "h1",
                HandoffKind::SuspectedCrimeReferral,
                Agency::PublicSecurity,
            ),
        )
        .await
        .stream_sequence,
    );
    seqs.push(append(&police, &a, ack("h1")).await.stream_sequence);
    seqs.push(append(&police, &a, accept("h1")).await.stream_sequence);
    seqs.push(append(&customs, &b, note("b note")).await.stream_sequence);
    (mid, seqs)
}

fn rfc3339(at: OffsetDateTime) -> String {
    at.format(&time::format_description::well_known::Rfc3339)
        .expect("format")
}

#[tokio::test]
async fn list_filters_return_exactly_the_expected_events() {
    let f = Fixture::start().await;
    let (mid, seqs) = seed(&f).await;

    let all = f.cli(&["--json", "events", "list"]).await;
    all.expect_code(0);
    assert_eq!(
        keys(&all),
        set(&[
            ("EV-A", 1, "CaseOpened"),
            ("EV-A", 2, "NoteAdded"),
            ("EV-B", 1, "CaseOpened"),
            ("EV-A", 3, "HandoffRequested"),
            ("EV-A", 4, "HandoffAcknowledged"),
            ("EV-A", 5, "HandoffAccepted"),
            ("EV-B", 2, "NoteAdded"),
        ])
    );
    let sequences: Vec<u64> = all
        .json_lines()
        .iter()
        .map(|v| v["sequence"].as_u64().unwrap_or(0))
        .collect();
    assert_eq!(sequences, seqs, "in stream order");

    let by_case = f.cli(&["--json", "events", "list", "--case", "EV-B"]).await;
    assert_eq!(
        keys(&by_case),
        set(&[("EV-B", 1, "CaseOpened"), ("EV-B", 2, "NoteAdded")])
    );

    let by_agency = f
        .cli(&["--json", "events", "list", "--agency", "public_security"])
        .await;
    assert_eq!(
        keys(&by_agency),
        set(&[
            ("EV-A", 4, "HandoffAcknowledged"),
            ("EV-A", 5, "HandoffAccepted")
        ])
    );

    let by_office = f
        .cli(&[
            "--json", "events", "list", "--office", CUSTOMS, "--case", "EV-A",
        ])
        .await;
    assert_eq!(
        keys(&by_office),
        set(&[
            ("EV-A", 1, "CaseOpened"),
            ("EV-A", 2, "NoteAdded"),
            ("EV-A", 3, "HandoffRequested"),
        ])
    );

    let by_type = f
        .cli(&[
            "--json",
            "events",
            "list",
            "--type",
            "noteadded,HandoffAccepted",
        ])
        .await;
    assert_eq!(
        keys(&by_type),
        set(&[
            ("EV-A", 2, "NoteAdded"),
            ("EV-A", 5, "HandoffAccepted"),
            ("EV-B", 2, "NoteAdded"),
        ])
    );

    let by_range = f
        .cli(&[
            "--json",
            "events",
            "list",
            "--from-seq",
            &seqs[2].to_string(),
            "--to-seq",
            &seqs[4].to_string(),
        ])
        .await;
    assert_eq!(
        keys(&by_range),
        set(&[
            ("EV-B", 1, "CaseOpened"),
            ("EV-A", 3, "HandoffRequested"),
            ("EV-A", 4, "HandoffAcknowledged"),
        ])
    );

    let since = f
        .cli(&[
            "--json",
            "events",
            "list",
            "--case",
            "EV-A",
            "--since",
            &rfc3339(mid),
        ])
        .await;
    assert_eq!(
        keys(&since),
        set(&[
            ("EV-A", 3, "HandoffRequested"),
            ("EV-A", 4, "HandoffAcknowledged"),
            ("EV-A", 5, "HandoffAccepted"),
        ])
    );
    let until = f
        .cli(&["--json", "events", "list", "--until", &rfc3339(mid)])
        .await;
    assert_eq!(
        keys(&until),
        set(&[("EV-A", 1, "CaseOpened"), ("EV-A", 2, "NoteAdded")])
    );
    let relative = f
        .cli(&[
            "--json",
            "events",
            "list",
            "--since",
            "1h",
            "--type",
            "CaseOpened",
        ])
        .await;
    assert_eq!(
        keys(&relative),
        set(&[("EV-A", 1, "CaseOpened"), ("EV-B", 1, "CaseOpened")])
    );

    let combined = f
        .cli(&[
            "--json",
            "events",
            "list",
            "--agency",
            "customs",
            "--type",
            "NoteAdded",
            "--since",
            &rfc3339(mid),
        ])
        .await;
    assert_eq!(keys(&combined), set(&[("EV-B", 2, "NoteAdded")]));

    let none = f.cli(&["events", "list", "--case", "NOPE"]).await;
    none.expect_code(0);
    assert!(none.stdout.is_empty(), "{}", none.stdout);
}

#[tokio::test]
async fn json_lines_carry_the_envelope_hashes_and_the_decoded_payload() {
    let f = Fixture::start().await;
    let customs = f.appender(CUSTOMS);
    let c = case("EV-JSON");
    let first = append(&customs, &c, opened("json")).await;
    let second = append(&customs, &c, note("hello operator")).await;
    let run = f
        .cli(&["--json", "events", "list", "--case", "EV-JSON"])
        .await;
    run.expect_code(0);
    let lines = run.json_lines();
    assert_eq!(lines.len(), 2);
    let v = &lines[1];
    assert_eq!(v["sequence"], second.stream_sequence);
    assert_eq!(v["subject"], "case.EV-JSON");
    assert_eq!(v["case"], "EV-JSON");
    assert_eq!(v["version"], 2);
    assert_eq!(v["type"], "NoteAdded");
    assert_eq!(v["office"], CUSTOMS);
    assert_eq!(v["agency"], "customs");
    assert_eq!(v["status"], "verified");
    assert_eq!(v["event_id"], second.event_id.as_str());
    assert_eq!(v["hash"], second.hash.to_hex());
    assert_eq!(v["prev_hash"], first.hash.to_hex());
    assert_eq!(v["key_id"], "customs:ningbo#k1");
    assert!(v["recorded_at"].as_str().is_some_and(|t| t.ends_with('Z')));
    assert!(v["occurred_at"].as_str().is_some());
    assert!(v["stored_at"].as_str().is_some());
    assert_eq!(v["payload"]["note_added"]["text"], "hello operator");
    assert_eq!(lines[0]["prev_hash"], serde_json::Value::Null);
    assert_eq!(
        lines[0]["payload"]["case_opened"]["rights"][0]["registration_number"],
        "TM-10086"
    );

    // Text output: one readable line per event.
    let text = f.cli(&["events", "list", "--case", "EV-JSON"]).await;
    text.expect_code(0);
    let lines: Vec<&str> = text.stdout.lines().collect();
    assert_eq!(lines.len(), 2, "{}", text.stdout);
    assert!(lines[1].contains("EV-JSON v2"), "{}", lines[1]);
    assert!(lines[1].contains("NoteAdded"), "{}", lines[1]);
    assert!(lines[1].contains("hello operator"), "{}", lines[1]);

    // Without a registry the events are decoded but not verified.
    let unverified = run_with_env(
        &["--json", "events", "list", "--case", "EV-JSON"],
        &[("CASEBUS_NATS_URL", f.server.url().as_str())],
    )
    .await;
    unverified.expect_code(0);
    assert!(
        unverified.stderr.contains("not verified"),
        "{}",
        unverified.stderr
    );
    assert!(
        unverified
            .json_lines()
            .iter()
            .all(|v| v["status"] == "unverified")
    );
}

#[tokio::test]
async fn invalid_messages_are_shown_as_such_not_dropped() {
    let f = Fixture::start().await;
    let customs = f.appender(CUSTOMS);
    let c = case("EV-BAD");
    let v1 = append(&customs, &c, opened("bad")).await;
    let garbage = f
        .publish_raw("case.EV-BAD", b"\x00\xffnot a signed event".to_vec())
        .await;
    // Signed by a key the registry does not know.
    let (forged, _) = hand_made_note(
        &second_signer(CUSTOMS),
        "EV-BAD",
        2,
        Some(v1.hash),
        "forged",
    );
    let forged_seq = f.publish_raw("case.EV-BAD", forged).await;

    let run = f
        .cli(&["--json", "events", "list", "--case", "EV-BAD"])
        .await;
    run.expect_code(0);
    let lines = run.json_lines();
    assert_eq!(lines.len(), 3);
    assert_eq!(lines[0]["status"], "verified");
    assert_eq!(lines[1]["sequence"], garbage);
    assert_eq!(lines[1]["status"], "invalid");
    assert_eq!(lines[1]["problem"]["code"], "undecodable");
    assert_eq!(lines[1]["case"], "EV-BAD");
    assert_eq!(lines[2]["sequence"], forged_seq);
    assert_eq!(lines[2]["status"], "invalid");
    assert_eq!(lines[2]["problem"]["code"], "unknown_key");
    assert_eq!(lines[2]["version"], 2, "what could be decoded is shown");

    let text = f.cli(&["events", "list", "--case", "EV-BAD"]).await;
    assert!(
        text.stdout.contains("INVALID undecodable"),
        "{}",
        text.stdout
    );
    assert!(
        text.stdout.contains("INVALID unknown_key"),
        "{}",
        text.stdout
    );
}

#[tokio::test]
async fn tail_shows_the_last_events_and_follows_new_ones() {
    let f = Fixture::start().await;
    let (_, seqs) = seed(&f).await;

    let last_three = f.cli(&["--json", "events", "tail", "-n", "3"]).await;
    last_three.expect_code(0);
    let got: Vec<u64> = last_three
        .json_lines()
        .iter()
        .map(|v| v["sequence"].as_u64().unwrap_or(0))
        .collect();
    assert_eq!(got, seqs[seqs.len() - 3..].to_vec());

    let case_tail = f
        .cli(&["--json", "events", "tail", "-n", "2", "--case", "EV-A"])
        .await;
    assert_eq!(
        keys(&case_tail),
        set(&[
            ("EV-A", 4, "HandoffAcknowledged"),
            ("EV-A", 5, "HandoffAccepted")
        ])
    );

    // --follow: start it, see the existing tail, append, see the new event.
    let mut child = tokio::process::Command::new(CASEBUS)
        .args([
            "--json", "events", "tail", "-n", "1", "--follow", "--case", "EV-B",
        ])
        .env("CASEBUS_NATS_URL", f.server.url())
        .env("CASEBUS_REGISTRY", &f.registry_path)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn tail --follow");
    let stdout = child.stdout.take().expect("stdout");
    let mut lines = BufReader::new(stdout).lines();
    let next_line = async |lines: &mut tokio::io::Lines<BufReader<tokio::process::ChildStdout>>| {
        let line = tokio::time::timeout(FOLLOW_TIMEOUT, lines.next_line())
            .await
            .expect("a line in time")
            .expect("read")
            .expect("a line");
        serde_json::from_str::<serde_json::Value>(&line).expect("JSON line")
    };
    let existing = next_line(&mut lines).await;
    assert_eq!(existing["case"], "EV-B");
    assert_eq!(existing["version"], 2);
    let customs = f.appender(CUSTOMS);
    let fresh = append(&customs, &case("EV-B"), note("live")).await;
    // An event of another case is not shown.
    append(&customs, &case("EV-A"), note("elsewhere")).await;
    let live = next_line(&mut lines).await;
    assert_eq!(live["sequence"], fresh.stream_sequence);
    assert_eq!(live["payload"]["note_added"]["text"], "live");
    child.start_kill().expect("stop tail");
    let _ = child.wait().await;
}
