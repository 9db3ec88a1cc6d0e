//! `casebus case show` against a real nats-server: the verified timeline and the
//! summary folded by the case rules (tracks, parties, hand-offs with due times and
//! overdue flags, open legal holds); a message that fails verification is listed and
//! makes the exit code 1; an unknown case is reported.

mod common;

use std::time::Duration;

use time::OffsetDateTime;

use casebus_domain::DeadlineRules;
use casebus_proto::event::v1::{Agency, HandoffKind};
use casebus_test_support::wait_until;

use common::catalogue::{ack, handoff, lift_hold, note, opened, place_hold};
use common::*;

/// Ceiling for a short deadline to pass.
const DEADLINE_TIMEOUT: Duration = Duration::from_secs(10);

#[tokio::test]
async fn a_case_shows_its_verified_timeline_and_summary_with_overdue_hand_offs() {
    let f = Fixture::start().await;
    const SHORT: &str = "[handoff_due]\nsuspected_crime_referral = \"200ms\"\n";
    let rules = DeadlineRules::parse(SHORT).expect("rules");
    // The CLI counts the running clocks with the same rules: the referral's filing clock
    // runs one second (whole seconds, at least one).
    let rules_file = f.path("short-rules.toml");
    std::fs::write(&rules_file, SHORT).expect("rules file");
    let rules_arg = rules_file.display().to_string();
    let customs = f.appender_with(signer(CUSTOMS), rules);
    let police = f.appender(POLICE);
    let c = case("SHOW-1");
    append(&customs, &c, opened("Counterfeit earphones")).await;
    append(
        &customs,
        &c,
        handoff(
            "h1",
            HandoffKind::SuspectedCrimeReferral,
            Agency::PublicSecurity,
        ),
    )
    .await;
    append(&police, &c, ack("h1")).await;
    append(
        &customs,
        &c,
        handoff("a1", HandoffKind::AssistanceRequest, Agency::IpCenter),
    )
    .await;
    append(&customs, &c, note("waiting for the police")).await;

    // Let the referral's short deadline pass.
    let run = wait_until(DEADLINE_TIMEOUT, "the referral to be overdue", async || {
        let run = f
            .cli(&[
                "--json",
                "case",
                "show",
                "SHOW-1",
                "--deadline-rules",
                &rules_arg,
            ])
            .await;
        let overdue = run.json()["handoffs"]
            .as_array()
            .and_then(|h| h.iter().find(|h| h["handoff_id"] == "h1"))
            .is_some_and(|h| h["overdue"] == true);
        overdue.then_some(run)
    })
    .await
    .expect("overdue");
    run.expect_code(0);
    let shown = run.json();
    assert_eq!(shown["case"], "SHOW-1");
    assert_eq!(shown["verified"], true);
    assert_eq!(shown["version"], 5);
    assert_eq!(shown["title"], "Counterfeit earphones");
    assert_eq!(shown["opened_by"], CUSTOMS);
    let tracks = shown["tracks"].as_array().expect("tracks");
    assert_eq!(tracks.len(), 1);
    assert_eq!(tracks[0]["agency"], "customs");
    assert_eq!(tracks[0]["status"], "active");
    let parties: Vec<&str> = shown["parties"]
        .as_array()
        .expect("parties")
        .iter()
        .map(|p| p["party_id"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(parties, ["rh", "s1"]);
    let handoffs = shown["handoffs"].as_array().expect("handoffs");
    let h1 = handoffs
        .iter()
        .find(|h| h["handoff_id"] == "h1")
        .expect("h1");
    assert_eq!(h1["status"], "acknowledged");
    assert_eq!(h1["kind"], "suspected_crime_referral");
    assert_eq!(h1["to_agency"], "public_security");
    assert!(h1["due_at"].as_str().is_some());
    assert_eq!(h1["clock"]["name"], "filing_decision");
    assert!(h1["clock"]["due_at"].as_str().is_some());
    assert!(
        h1["clock"]["basis"]
            .as_str()
            .is_some_and(|b| b.contains("Order 310")),
        "{h1}"
    );
    let a1 = handoffs
        .iter()
        .find(|h| h["handoff_id"] == "a1")
        .expect("a1");
    assert_eq!(a1["overdue"], false);
    assert_eq!(a1["clock"]["name"], "receipt");
    let due = OffsetDateTime::parse(
        a1["due_at"].as_str().expect("due"),
        &time::format_description::well_known::Rfc3339,
    )
    .expect("RFC 3339");
    assert!(due > OffsetDateTime::now_utc() + time::Duration::days(14));
    let events = shown["events"].as_array().expect("events");
    assert_eq!(events.len(), 5);
    assert_eq!(
        events[4]["payload"]["note_added"]["text"],
        "waiting for the police"
    );
    assert_eq!(events[4]["status"], "verified");

    let text = f
        .cli(&["case", "show", "SHOW-1", "--deadline-rules", &rules_arg])
        .await;
    text.expect_code(0);
    for expected in [
        "case SHOW-1: \"Counterfeit earphones\"",
        "chain and signatures verified",
        "Tracks",
        "Hand-offs",
        "OVERDUE",
        "filing_decision",
        "suspected_crime_referral",
        "Timeline",
        "waiting for the police",
    ] {
        assert!(
            text.stdout.contains(expected),
            "missing {expected:?} in\n{}",
            text.stdout
        );
    }
}

#[tokio::test]
async fn a_case_shows_its_open_legal_holds_and_not_the_lifted_ones() {
    let f = Fixture::start().await;
    let customs = f.appender(CUSTOMS);
    let c = case("HOLD-1");
    append(&customs, &c, opened("Counterfeit earphones")).await;
    append(&customs, &c, place_hold("lh1")).await;
    append(&customs, &c, place_hold("lh2")).await;
    append(&customs, &c, lift_hold("lh1")).await;

    let run = f.cli(&["--json", "case", "show", "HOLD-1"]).await;
    run.expect_code(0);
    let shown = run.json();
    let holds = shown["legal_holds"].as_array().expect("legal_holds");
    assert_eq!(holds.len(), 1, "{holds:?}");
    assert_eq!(holds[0]["hold_id"], "lh2");
    assert_eq!(holds[0]["placed_by"], CUSTOMS);
    assert_eq!(holds[0]["version"], 3);
    assert!(
        holds[0]["legal_basis"]
            .as_str()
            .is_some_and(|b| b.contains("PIPL Art. 47(2)")),
        "{holds:?}"
    );

    let text = f.cli(&["case", "show", "HOLD-1"]).await;
    text.expect_code(0);
    let section = text
        .stdout
        .split("Legal holds")
        .nth(1)
        .and_then(|rest| rest.split("Timeline").next())
        .unwrap_or_else(|| panic!("no legal holds section in\n{}", text.stdout));
    assert!(
        section.contains("lh2") && section.contains("PIPL Art. 47(2)"),
        "{section}"
    );
    assert!(
        !section.contains("lh1"),
        "a lifted hold is listed:\n{section}"
    );
}

#[tokio::test]
async fn a_case_with_a_failing_message_is_shown_with_it_and_exits_1() {
    let f = Fixture::start().await;
    let customs = f.appender(CUSTOMS);
    let c = case("SHOW-BAD");
    append(&customs, &c, opened("bad")).await;
    let poison = f.publish_raw("case.SHOW-BAD", b"poison".to_vec()).await;
    append(&customs, &c, note("after")).await;
    let run = f.cli(&["--json", "case", "show", "SHOW-BAD"]).await;
    run.expect_code(1);
    let shown = run.json();
    assert_eq!(shown["verified"], false);
    assert_eq!(shown["version"], 2);
    assert_eq!(shown["rejected"][0]["sequence"], poison);
    assert_eq!(shown["rejected"][0]["code"], "undecodable");

    let text = f.cli(&["case", "show", "SHOW-BAD"]).await;
    text.expect_code(1);
    assert!(
        text.stdout.contains("FAILED verification"),
        "{}",
        text.stdout
    );

    let unknown = f.cli(&["case", "show", "NOBODY"]).await;
    unknown.expect_code(1);
    assert!(
        unknown.stderr.contains("case NOBODY not found"),
        "{}",
        unknown.stderr
    );
}
