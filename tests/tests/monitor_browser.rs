//! The monitoring dashboard end to end: the real agency services, gateway and monitor on
//! a real `nats-server`, traffic from the workload simulator, one poison message, and
//! the dashboard opened in headless Chromium. The charts and tables must show the
//! simulated traffic per agency, the consumers, the streams, the dead letter with its
//! reason, the verification failure, an overdue hand-off read from the gateway, and every
//! service found through `$SRV`. The JSON API refuses anyone without an admin token, and
//! the metrics endpoint exports the monitor's gauges. A screenshot of the dashboard is
//! saved as `target/test-artifacts/monitor.png`.
//!
//! Chromium and chromedriver must be installed (`scripts/test` installs them); without
//! them this test fails and says so.

mod monitor_harness;

use std::collections::BTreeSet;

use casebus_integrity::token::Role;
use casebus_test_support::wait_until;

use monitor_harness::{ADMIN_OFFICE, Browser, MONITOR_TIMEOUT, System, get, http, target_dir};

/// Reads what the dashboard shows, as JSON, straight from the DOM.
const READ_DASHBOARD: &str = r#"
const rows = (id) => Array.from(document.querySelectorAll('#' + id + ' tbody tr'));
const text = (id) => (document.getElementById(id) || {}).textContent || '';
return {
  loaded: document.body.getAttribute('data-loaded') === '1',
  path: window.location.pathname,
  throughput: rows('throughput-table').map(r => ({
    agency: r.getAttribute('data-agency'),
    total: Number(r.getAttribute('data-total') || 0),
    text: r.textContent
  })).filter(r => r.agency),
  lines: Array.from(document.querySelectorAll('#throughput-chart polyline.series')).map(p => ({
    agency: p.getAttribute('data-series'),
    total: Number(p.getAttribute('data-total') || 0)
  })),
  consumers: rows('consumers-table').map(r => r.getAttribute('data-consumer')).filter(Boolean),
  streams: rows('streams-table').map(r => ({
    name: r.getAttribute('data-stream'),
    messages: Number(r.getAttribute('data-messages') || 0)
  })),
  dead_letters: rows('dlq-table').filter(r => r.getAttribute('data-code')).map(r => r.textContent),
  verification: rows('verification-table').filter(r => r.getAttribute('data-code')).map(r => r.textContent),
  overdue: rows('overdue-table').filter(r => r.getAttribute('data-case')).map(r => ({
    case_id: r.getAttribute('data-case'),
    agency: r.getAttribute('data-agency'),
    text: r.textContent
  })),
  overdue_agencies: rows('overdue-agencies').map(r => r.getAttribute('data-agency')).filter(Boolean),
  services: rows('services-table').map(r => ({
    name: r.getAttribute('data-service'),
    office: r.getAttribute('data-office')
  })).filter(s => s.name),
  kpi_events: text('kpi-events'),
  kpi_dlq: text('kpi-dlq'),
  kpi_overdue: text('kpi-overdue')
};
"#;

fn strings(value: &serde_json::Value) -> Vec<String> {
    value
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_shows_simulated_traffic_dead_letters_overdue_hand_offs_and_services() {
    // Fail first, and clearly, when there is no browser.
    let browser = Browser::find();
    let mut system = System::start().await;
    system.start_gateway().await;
    system.start_monitor().await;

    let report = system.simulate(10, 0.35, 7).await;
    assert_eq!(report.cases_failed, 0, "{report}\n{}", system.logs());
    assert!(
        report.cases_overdue >= 1,
        "seed 7 leaves a case overdue: {report}"
    );
    assert!(
        report.duplicates >= 1,
        "retried commands are answered as duplicates: {report}"
    );
    let poison_case = "poison-1";
    system.inject_poison(poison_case).await;

    let dashboard = system.dashboard();
    let admin = system.token(ADMIN_OFFICE, &[Role::Admin]);
    let prefix = report.case_prefix.clone();

    // The JSON API first: everything the page will show must be there.
    let overview = wait_until(
        MONITOR_TIMEOUT,
        "the monitor to show traffic, the dead letters, an overdue hand-off and the services",
        async || {
            let reply = get(dashboard, "/api/overview", Some(&admin)).await.ok()?;
            let o = reply.json();
            let customs = o["throughput"]["agencies"]
                .as_array()?
                .iter()
                .find(|a| a["agency"] == "customs")?["total_last_hour"]
                .as_u64()?;
            let dead = o["dead_letters"]["latest"].as_array()?.len();
            let overdue = o["overdue"]["total"].as_u64()?;
            let services = o["services"]["instances"].as_array()?.len();
            let consumers = o["consumers"].as_array()?.len();
            // Every command recorded one event, receipts more, and the poison message.
            let stored = o["streams"][0]["messages"].as_u64()?;
            let all_stored = stored > report.commands;
            (customs > 0
                && dead >= 6
                && overdue >= 1
                && services >= 6
                && consumers >= 6
                && all_stored)
                .then_some(o)
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", system.logs()));

    let dead: Vec<&serde_json::Value> = overview["dead_letters"]["latest"]
        .as_array()
        .expect("latest")
        .iter()
        .collect();
    assert!(
        dead.iter().all(|d| d["code"] == "undecodable"
            && d["original_subject"] == format!("case.{poison_case}")
            && !d["reason"].as_str().unwrap_or_default().is_empty()),
        "every consumer dead-lettered the poison message with a reason: {dead:?}"
    );
    let consumers: BTreeSet<&str> = dead.iter().filter_map(|d| d["consumer"].as_str()).collect();
    assert_eq!(
        consumers.len(),
        6,
        "five services and the gateway: {consumers:?}"
    );
    let failures = &overview["verification_failures"];
    assert_eq!(
        failures["messages"], 1,
        "one message, reported six times: {failures}"
    );
    assert_eq!(failures["latest"][0]["case_id"], poison_case);
    assert_eq!(overview["overdue"]["source"], "gateway");
    let overdue = overview["overdue"]["handoffs"]
        .as_array()
        .expect("handoffs");
    assert!(
        overdue.iter().all(|h| h["case_id"]
            .as_str()
            .is_some_and(|c| c.starts_with(&prefix))
            && h["overdue_seconds"].as_i64().is_some_and(|s| s > 0)),
        "{overdue:?}"
    );
    let dues: Vec<&str> = overdue
        .iter()
        .filter_map(|h| h["due_at"].as_str())
        .collect();
    let mut sorted = dues.clone();
    sorted.sort();
    assert_eq!(dues, sorted, "oldest first");
    let names: BTreeSet<&str> = overview["services"]["instances"]
        .as_array()
        .expect("instances")
        .iter()
        .filter_map(|s| s["name"].as_str())
        .collect();
    for name in [
        "casebus-customs",
        "casebus-ip-center",
        "casebus-public-security",
        "casebus-procuratorate",
        "casebus-court",
        "casebus-gateway",
    ] {
        assert!(names.contains(name), "{name} missing from {names:?}");
    }
    // Every agency service and the gateway announce the digest of the rules they count
    // with; run with the same rules, they are one group and nothing is flagged.
    let groups = overview["services"]["rules_digests"]
        .as_array()
        .expect("rules digests");
    assert_eq!(groups.len(), 1, "{groups:?}");
    assert!(
        groups[0]["digest"]
            .as_str()
            .is_some_and(|d| d.starts_with("sha256:")),
        "{groups:?}"
    );
    assert!(
        groups[0]["instances"]
            .as_array()
            .is_some_and(|i| i.len() >= 6),
        "{groups:?}"
    );
    assert_eq!(overview["services"]["rules_differ"], false);
    assert!(overview["problems"].get("deadline_rules").is_none());
    assert_eq!(overview["streams"][0]["name"], "CASES");

    // Only administrators get in.
    let anonymous = get(dashboard, "/api/overview", None).await.expect("answer");
    assert_eq!(anonymous.status, 401, "{}", anonymous.text());
    let clerk = system.token("customs:ningbo", &[Role::Clerk, Role::Reader]);
    let not_admin = get(dashboard, "/api/overview", Some(&clerk))
        .await
        .expect("answer");
    assert_eq!(not_admin.status, 403, "{}", not_admin.text());
    let forged = get(dashboard, "/api/overview", Some(&format!("{admin}x")))
        .await
        .expect("answer");
    assert_eq!(forged.status, 401, "{}", forged.text());
    let page = get(dashboard, "/", None).await.expect("answer");
    assert_eq!(page.status, 303);
    assert_eq!(page.header("location"), Some("/login"));
    assert!(
        page.header("content-security-policy")
            .is_some_and(|c| c.contains("script-src 'self'")),
        "{:?}",
        page.headers
    );
    let form = format!("token={clerk}");
    let refused = http(
        dashboard,
        "POST",
        "/login",
        &[("Content-Type", "application/x-www-form-urlencoded")],
        form.as_bytes(),
    )
    .await
    .expect("answer");
    assert_eq!(refused.status, 403, "a clerk's token does not sign in");
    assert!(refused.header("set-cookie").is_none());
    let form = format!("token={admin}");
    let signed_in = http(
        dashboard,
        "POST",
        "/login",
        &[("Content-Type", "application/x-www-form-urlencoded")],
        form.as_bytes(),
    )
    .await
    .expect("answer");
    assert_eq!(signed_in.status, 303);
    let cookie = signed_in.header("set-cookie").expect("a cookie");
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"),
        "{cookie}"
    );

    // Prometheus metrics on the metrics port.
    let metrics_addr = system.monitor.as_ref().expect("monitor").addr("metrics");
    // The gauges follow the model on the next sample, so wait for them.
    let wanted = [
        "casebus_monitor_stream_messages{",
        "casebus_monitor_consumer_lag{",
        "casebus_monitor_overdue_handoffs{",
        "casebus_monitor_dead_letters{",
        "casebus_monitor_events_last_hour{",
    ];
    let metrics = wait_until(
        MONITOR_TIMEOUT,
        "the monitor's gauges on /metrics",
        async || {
            let text = get(metrics_addr, "/metrics", None).await.ok()?.text();
            wanted.iter().all(|w| text.contains(w)).then_some(text)
        },
    )
    .await
    .expect("metrics");
    assert!(
        metrics.lines().any(|l| l.starts_with("casebus_up{")
            && l.contains("casebus-monitor")
            && l.ends_with(" 1")),
        "/metrics lacks casebus_up 1:\n{metrics}"
    );

    // Now as an administrator sees it: in the browser.
    let profile = tempfile::tempdir().expect("profile dir");
    let session = browser.open(profile.path()).await;
    session
        .goto(&format!("http://{dashboard}/login#token={admin}"))
        .await;
    let shown = wait_until(
        MONITOR_TIMEOUT,
        "the dashboard to render the traffic",
        async || {
            let d = session.execute(READ_DASHBOARD).await;
            let ready = d["loaded"] == true
                && d["path"] == "/"
                && d["throughput"]
                    .as_array()
                    .is_some_and(|rows| rows.iter().any(|r| r["total"].as_u64() > Some(0)))
                && d["lines"].as_array().is_some_and(|l| l.len() >= 5)
                && d["dead_letters"].as_array().is_some_and(|r| r.len() >= 6)
                && d["overdue"].as_array().is_some_and(|r| !r.is_empty())
                && d["services"].as_array().is_some_and(|r| r.len() >= 6);
            ready.then_some(d)
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", system.logs()));

    // The screenshot is the artifact an administrator would look at.
    let png = session.screenshot().await;
    let artifacts = target_dir().join("test-artifacts");
    std::fs::create_dir_all(&artifacts).expect("artifact dir");
    let shot = artifacts.join("monitor.png");
    std::fs::write(&shot, &png).expect("screenshot written");
    assert!(png.starts_with(b"\x89PNG"), "a PNG");
    session.close().await;

    let throughput = shown["throughput"].as_array().expect("rows");
    let agencies: Vec<&str> = throughput
        .iter()
        .filter_map(|r| r["agency"].as_str())
        .collect();
    for agency in [
        "customs",
        "ip_center",
        "public_security",
        "procuratorate",
        "court",
    ] {
        assert!(
            agencies.contains(&agency),
            "{agency} row missing: {agencies:?}"
        );
    }
    let customs = throughput
        .iter()
        .find(|r| r["agency"] == "customs")
        .expect("customs row");
    assert!(customs["total"].as_u64() > Some(0), "{customs}");
    assert!(
        customs["text"]
            .as_str()
            .is_some_and(|t| t.contains("Customs")),
        "{customs}"
    );
    let lines = shown["lines"].as_array().expect("lines");
    assert!(
        lines
            .iter()
            .any(|l| l["agency"] == "customs" && l["total"].as_u64() > Some(0)),
        "the customs line of the chart carries its events: {lines:?}"
    );
    let consumers = strings(&shown["consumers"]);
    assert!(
        consumers.contains(&"gw-test".to_owned())
            && consumers.contains(&"svc-customs-ningbo".to_owned()),
        "{consumers:?}"
    );
    let streams = shown["streams"].as_array().expect("streams");
    assert!(
        streams
            .iter()
            .any(|s| s["name"] == "CASES" && s["messages"].as_u64() > Some(0)),
        "{streams:?}"
    );
    assert!(
        streams.iter().any(|s| s["name"] == "CHECKPOINTS"),
        "the transparency log's stream is shown too: {streams:?}"
    );
    let dead = strings(&shown["dead_letters"]);
    assert!(
        dead.iter()
            .all(|t| t.contains("undecodable") && t.contains("poison-1")),
        "{dead:?}"
    );
    let verification = strings(&shown["verification"]);
    assert_eq!(verification.len(), 1, "{verification:?}");
    let overdue = shown["overdue"].as_array().expect("overdue");
    assert!(
        overdue.iter().all(|h| h["case_id"]
            .as_str()
            .is_some_and(|c| c.starts_with(&prefix))),
        "{overdue:?}"
    );
    assert!(!strings(&shown["overdue_agencies"]).is_empty());
    let offices: BTreeSet<String> = shown["services"]
        .as_array()
        .expect("services")
        .iter()
        .filter_map(|s| s["office"].as_str().map(str::to_owned))
        .collect();
    for (office, _) in monitor_harness::OFFICES {
        assert!(
            offices.contains(office),
            "{office} missing from {offices:?}"
        );
    }
    assert_ne!(shown["kpi_events"], "–");
    assert_ne!(shown["kpi_dlq"], "0");
    eprintln!("dashboard screenshot: {}", shot.display());

    // Without a gateway, a monitor folds the open hand-offs from the stream itself; once
    // the gateway's projection has caught up, both find the same overdue hand-offs.
    let folding = system.spawn_monitor("monitor-fold", false).await;
    let folding_addr = folding.addr("http");
    let keys = |o: &serde_json::Value| -> BTreeSet<String> {
        o["handoffs"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|h| format!("{}/{}", h["case_id"], h["handoff_id"]))
                    .collect()
            })
            .unwrap_or_default()
    };
    let mut last = (BTreeSet::new(), BTreeSet::new());
    let agreed = wait_until(
        MONITOR_TIMEOUT,
        "the folding monitor and the gateway to report the same overdue hand-offs",
        async || {
            let folded = get(folding_addr, "/api/overdue", Some(&admin))
                .await
                .ok()?
                .json();
            let gateway = get(dashboard, "/api/overdue", Some(&admin))
                .await
                .ok()?
                .json();
            last = (keys(&folded), keys(&gateway));
            (folded["source"] == "stream"
                && gateway["source"] == "gateway"
                && !last.0.is_empty()
                && last.0 == last.1)
                .then(|| last.0.clone())
        },
    )
    .await
    .unwrap_or_else(|e| {
        panic!(
            "{e}: folded {:?}, gateway {:?}\n{}",
            last.0,
            last.1,
            folding.log_text()
        )
    });
    assert!(
        agreed.iter().all(|k| k.contains(&prefix)),
        "only simulated cases are overdue: {agreed:?}"
    );
}
