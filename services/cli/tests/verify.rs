//! `casebus verify` against a real nats-server: an intact case verifies; a forged,
//! chain-breaking or tampered message published straight onto the case's subject is
//! reported with case, version, sequence and reason and makes the exit code 1; `--all`
//! finds a poison message among clean cases.

mod common;

use prost::Message as _;

use casebus_proto::event::v1::payload::Kind;
use casebus_proto::event::v1::{Agency, GoodsDetained, HandoffKind, SignedEvent};

use common::catalogue::{main_case, note, opened, recorded_handoff};
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

/// A referral as customs would record it at `at`, with its dues counted by `rules`,
/// the filing decision's moved by `shift`, signed with customs' valid key.
fn recorded_referral(
    case_id: &str,
    prev: casebus_integrity::EventHash,
    at: time::OffsetDateTime,
    rules: &casebus_domain::DeadlineRules,
    shift: time::Duration,
) -> Vec<u8> {
    let calendar = casebus_domain::Calendar::shipped();
    let mut dues = casebus_domain::recorded_dues(
        HandoffKind::SuspectedCrimeReferral,
        at,
        rules,
        &calendar,
        &rules.digest(&calendar),
    );
    let filing = &mut dues[1];
    assert_eq!(filing.clock, "filing_decision");
    let due = filing
        .due_at
        .as_ref()
        .and_then(casebus_proto::datetime_from)
        .expect("countable in 2026");
    filing.due_at = Some(casebus_proto::timestamp_from(due + shift));
    let payload = recorded_handoff(
        "ref",
        HandoffKind::SuspectedCrimeReferral,
        Agency::PublicSecurity,
        dues,
    );
    hand_made(&signer(CUSTOMS), case_id, 2, Some(prev), at, payload).0
}

/// A hand-off whose recorded due time was moved a day later and re-signed with the
/// recording office's valid key keeps its chain and signature: only recomputing the
/// due from the rules catches it, as `due_time_mismatch` with its version, in
/// `--case` and in `--all`. The same event with its true dues verifies; checked with
/// other rules it fails as `rules_digest_mismatch`, and a bad rules file is refused.
#[tokio::test]
async fn a_re_signed_hand_off_with_a_tampered_due_time_is_a_due_time_mismatch() {
    let f = Fixture::start().await;
    let customs = f.appender(CUSTOMS);
    // Friday 6 November 2026, 10:20 CST: the filing decision is due Monday 9 November.
    let at = time::macros::datetime!(2026-11-06 02:20 UTC);
    let rules = casebus_domain::DeadlineRules::default();

    let honest = case("DUE-OK");
    let v1 = append(&customs, &honest, opened("due ok")).await;
    let honest_seq = f
        .publish_raw(
            "case.DUE-OK",
            recorded_referral("DUE-OK", v1.hash, at, &rules, time::Duration::ZERO),
        )
        .await;
    let run = f.cli(&["--json", "verify", "--case", "DUE-OK"]).await;
    run.expect_code(0);
    assert_eq!(run.json()["failures"], serde_json::json!([]));
    assert_eq!(run.json()["events"], 2);

    let tampered = case("DUE-BAD");
    let v1 = append(&customs, &tampered, opened("due bad")).await;
    let bad_seq = f
        .publish_raw(
            "case.DUE-BAD",
            recorded_referral("DUE-BAD", v1.hash, at, &rules, time::Duration::days(1)),
        )
        .await;
    let run = f.cli(&["--json", "verify", "--case", "DUE-BAD"]).await;
    run.expect_code(1);
    let report = run.json();
    assert_eq!(report["events"], 2, "chain and signature hold: {report}");
    let failures = report["failures"].as_array().expect("failures");
    assert_eq!(failures.len(), 1, "{failures:?}");
    assert_eq!(failures[0]["code"], "due_time_mismatch");
    assert_eq!(failures[0]["version"], 2);
    assert_eq!(failures[0]["sequence"], bad_seq);
    let reason = failures[0]["reason"].as_str().expect("reason");
    assert!(
        reason.contains("filing_decision")
            && reason.contains("2026-11-10T16:00:00Z")
            && reason.contains("2026-11-09T16:00:00Z"),
        "{reason}"
    );
    let text = f.cli(&["verify", "--case", "DUE-BAD"]).await;
    text.expect_code(1);
    assert!(
        text.stdout
            .contains(&format!("FAIL case DUE-BAD v2 seq {bad_seq}: version 2")),
        "{}",
        text.stdout
    );
    assert!(
        text.stdout.contains("(due_time_mismatch)"),
        "{}",
        text.stdout
    );

    let all = f.cli(&["--json", "verify", "--all"]).await;
    all.expect_code(1);
    let failures: Vec<(String, u64, String)> = all.json()["failures"]
        .as_array()
        .expect("failures")
        .iter()
        .map(|f| {
            (
                f["case"].as_str().unwrap_or_default().to_owned(),
                f["sequence"].as_u64().unwrap_or_default(),
                f["code"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        failures,
        [(
            "DUE-BAD".to_owned(),
            bad_seq,
            "due_time_mismatch".to_owned()
        )]
    );

    // Other rules (five days to decide on a referral): the honest case was counted
    // with another digest, which is named; its due time is not compared.
    let other = f.path("other-rules.toml");
    std::fs::write(
        &other,
        "[clocks.filing_decision]\namount = 5\nunit = \"days\"\nbasis = \"a local rule\"\n",
    )
    .expect("write rules");
    let other = other.display().to_string();
    let run = f
        .cli(&[
            "--json",
            "verify",
            "--case",
            "DUE-OK",
            "--deadline-rules",
            &other,
        ])
        .await;
    run.expect_code(1);
    let failures = run.json()["failures"].clone();
    let failures = failures.as_array().expect("failures");
    assert_eq!(failures.len(), 2, "{failures:?}");
    for failure in failures {
        assert_eq!(failure["code"], "rules_digest_mismatch");
        assert_eq!(failure["sequence"], honest_seq);
        let reason = failure["reason"].as_str().expect("reason");
        assert!(
            reason.contains(&rules.digest(&casebus_domain::Calendar::shipped())),
            "{reason}"
        );
    }

    let broken = f.path("broken-rules.toml");
    std::fs::write(&broken, "[clocks.custody]\nunit = \"weeks\"\n").expect("write rules");
    let broken = broken.display().to_string();
    let run = f
        .cli(&["verify", "--case", "DUE-OK", "--deadline-rules", &broken])
        .await;
    assert_ne!(run.code, 0);
    assert_ne!(
        run.code, 1,
        "a bad rules file is not a verification failure"
    );
    assert!(
        run.stderr.contains("broken-rules.toml") && run.stderr.contains("clocks.custody"),
        "{}",
        run.stderr
    );
}

/// A detention's recorded release due, moved a week later and re-signed, is caught as
/// the hand-off's is: `due_time_mismatch` naming the detention and its clock; the same
/// detention with its true due verifies.
#[tokio::test]
async fn a_re_signed_detention_with_a_tampered_release_due_is_a_due_time_mismatch() {
    let f = Fixture::start().await;
    let customs = f.appender(CUSTOMS);
    // Monday 2 November 2026, 10:00 CST: released after 20 working days, on Monday
    // 30 November at 24:00 CST.
    let at = time::macros::datetime!(2026-11-02 02:00 UTC);
    let rules = casebus_domain::DeadlineRules::default();
    let calendar = casebus_domain::Calendar::shipped();
    for (id, shift, code) in [
        ("DET-OK", time::Duration::ZERO, None),
        (
            "DET-BAD",
            time::Duration::days(7),
            Some("due_time_mismatch"),
        ),
    ] {
        let case_id = case(id);
        let v1 = append(&customs, &case_id, opened("detained goods")).await;
        let mut dues = casebus_domain::dues_of(
            &[casebus_domain::ClockName::ReleaseOnApplication],
            at,
            &rules,
            &calendar,
            &rules.digest(&calendar),
        );
        let due = dues[0]
            .due_at
            .as_ref()
            .and_then(casebus_proto::datetime_from)
            .expect("countable in 2026");
        assert_eq!(due, time::macros::datetime!(2026-11-30 16:00 UTC));
        dues[0].due_at = Some(casebus_proto::timestamp_from(due + shift));
        let payload = Kind::GoodsDetained(GoodsDetained {
            detention_id: "d1".into(),
            description: "earphones".into(),
            on_rights_holder_application: true,
            recorded_dues: dues,
            ..Default::default()
        });
        let bytes = hand_made(&signer(CUSTOMS), id, 2, Some(v1.hash), at, payload).0;
        f.publish_raw(&format!("case.{id}"), bytes).await;
        let run = f.cli(&["--json", "verify", "--case", id]).await;
        let report = run.json();
        let failures = report["failures"].as_array().expect("failures").clone();
        match code {
            None => {
                run.expect_code(0);
                assert!(failures.is_empty(), "{failures:?}");
            }
            Some(code) => {
                run.expect_code(1);
                assert_eq!(failures.len(), 1, "{failures:?}");
                assert_eq!(failures[0]["code"], code);
                let reason = failures[0]["reason"].as_str().expect("reason");
                assert!(
                    reason.contains("(detention d1)")
                        && reason.contains("release_on_application")
                        && reason.contains("2026-12-07T16:00:00Z")
                        && reason.contains("2026-11-30T16:00:00Z"),
                    "{reason}"
                );
            }
        }
    }
}
