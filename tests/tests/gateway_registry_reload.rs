//! A running gateway picks up a changed office registry without a restart (issue 13,
//! item 4, for the consumers): a key added to the registry file is used to verify the
//! events signed with it from then on, so they are projected rather than dead-lettered
//! as `unknown_key`; a file that fails to load (after SIGHUP), or lists no office,
//! changes nothing. Through
//! the real gateway binary and a real nats-server.

mod gateway_common;

use std::sync::Arc;

use casebus_bus::{Appender, AppenderConfig};
use casebus_domain::DeadlineRules;
use casebus_fixtures::{second_signer, with_second_key};
use casebus_proto::gateway::v1::GetCaseRequest;
use casebus_test_support::wait_until;

use gateway_common::catalogue::{note, opened};
use gateway_common::*;

/// How many times the gateway's log says `what`.
fn logged(gateway: &Gateway, what: &str) -> usize {
    gateway.log_text().matches(what).count()
}

#[tokio::test]
async fn a_key_added_to_the_registry_file_verifies_its_events_without_a_restart_and_a_broken_file_changes_nothing()
 {
    let f = Fixture::start().await;
    let case_id = case("RELOAD-1");
    f.append(CUSTOMS, &case_id, opened("reload"), None).await;
    let reload = ["--registry-reload-interval".to_owned(), "200ms".to_owned()];
    let mut gateway = f
        .gateway_with("gw-reload", &f.db("gw-reload"), &reload)
        .await;
    gateway.wait_projected(f.cases_last().await).await;

    // A file that does not load, announced with SIGHUP: refused, nothing changes, and
    // the gateway goes on (SIGHUP does not end it).
    std::fs::write(&f.registry_path, "[[office").expect("broken registry");
    let hup = std::process::Command::new("kill")
        .args(["-HUP", &gateway.pid().to_string()])
        .status()
        .expect("kill -HUP");
    assert!(hup.success(), "SIGHUP delivered");
    wait_until(PROJECTION_TIMEOUT, "the broken file refused", async || {
        logged(
            &gateway,
            "office registry reload failed; keeping the previous one",
        ) > 0
    })
    .await
    .unwrap_or_else(|e| panic!("{e}; the gateway's log:\n{}", gateway.log_text()));
    // A file that parses but lists no office is refused too.
    std::fs::write(&f.registry_path, "# every office removed by mistake\n")
        .expect("empty registry");
    wait_until(
        PROJECTION_TIMEOUT,
        "the empty registry refused",
        async || logged(&gateway, "lists no office; keeping the previous one") > 0,
    )
    .await
    .unwrap_or_else(|e| panic!("{e}; the gateway's log:\n{}", gateway.log_text()));
    f.append(CUSTOMS, &case_id, note("still k1"), None).await;
    gateway.wait_projected(f.cases_last().await).await;

    // The second key of customs added to the file, picked up by polling.
    let rotated = with_second_key(registry(), CUSTOMS);
    std::fs::write(&f.registry_path, rotated.to_toml()).expect("rotated registry");
    wait_until(PROJECTION_TIMEOUT, "the new registry loaded", async || {
        logged(&gateway, "office registry reloaded") > 0
    })
    .await
    .unwrap_or_else(|e| panic!("{e}; the gateway's log:\n{}", gateway.log_text()));

    // An event signed with the new key.
    f.bus.replace_registry(Arc::new(rotated));
    let k2 = Appender::new(
        f.bus.clone(),
        second_signer(CUSTOMS),
        Arc::new(DeadlineRules::default()),
        AppenderConfig::default(),
    )
    .expect("appender with k2");
    let appended = k2
        .append(request(&case_id, note("signed with k2"), None))
        .await
        .expect("append with k2");
    assert_eq!(appended.case_version, 3);
    gateway.wait_projected(f.cases_last().await).await;

    let mut client = gateway.client(Some(&f.reader(CUSTOMS))).await;
    let summary = client
        .get_case(GetCaseRequest {
            case_id: case_id.to_string(),
        })
        .await
        .expect("GetCase")
        .into_inner()
        .case
        .expect("a summary");
    assert_eq!(
        summary.version, 3,
        "the event signed with the added key is projected, not dead-lettered"
    );
    assert_eq!(
        logged(&gateway, "message dead-lettered"),
        0,
        "nothing was dead-lettered"
    );
    f.assert_projection_right("gw-reload", &f.db("gw-reload"))
        .await;
}
