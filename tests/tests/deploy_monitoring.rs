//! The monitoring configs of `deploy/`: `promtool` accepts the Prometheus config and the
//! alert rules and the rules' unit tests pass; the rules and the Grafana dashboard cover
//! what an administrator must see; and every metric they use is one a casebus service
//! exports (the registries of `casebus_runtime::metrics::Metrics` and of the witness's
//! `WitnessMetrics`), with every label they filter or group by.
//!
//! This checks the names against the registry, not against running services; the
//! end-to-end tests scrape real ones.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

use casebus_runtime::metrics::{Metrics, WitnessMetrics, render};
use casebus_tests::workspace_root;

/// Labels Prometheus attaches to every scraped series, and the bucket label.
const SCRAPE_LABELS: [&str; 3] = ["job", "instance", "le"];

fn deploy(path: &str) -> PathBuf {
    workspace_root().join("deploy").join(path)
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

fn yaml(path: &Path) -> Value {
    serde_norway::from_str(&read(path))
        .unwrap_or_else(|e| panic!("{} is not valid YAML: {e}", path.display()))
}

/// `promtool`, from PATH or Debian's place.
fn promtool() -> PathBuf {
    let on_path = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default();
    on_path
        .into_iter()
        .chain([PathBuf::from("/usr/bin")])
        .map(|dir| dir.join("promtool"))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!(
                "promtool not found; install Debian's prometheus package \
                 (apt-get install -y prometheus) or run scripts/test, which does"
            )
        })
}

fn run_promtool(args: &[&str]) {
    let output = Command::new(promtool())
        .args(args)
        .current_dir(deploy("prometheus"))
        .output()
        .expect("promtool runs");
    assert!(
        output.status.success(),
        "promtool {}:\n{}{}",
        args.join(" "),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn promtool_accepts_the_scrape_config_and_the_alert_rules() {
    run_promtool(&["check", "config", "prometheus.yml"]);
    run_promtool(&["check", "rules", "alerts.yml"]);
}

#[test]
fn the_alert_rules_fire_exactly_as_their_unit_tests_expect() {
    run_promtool(&["test", "rules", "alerts.test.yml"]);
}

/// Every series name a service exports, with its label names. Vec families appear in the
/// text output only once a label combination was observed, so each is touched here;
/// a metric added to `Metrics` must be touched too before a dashboard may use it.
fn exported_series() -> BTreeMap<String, BTreeSet<String>> {
    let m = Metrics::new("casebus-test", "customs:ningbo").expect("metrics");
    m.grpc_requests.with_label_values(&["m", "OK"]).inc();
    m.grpc_latency.with_label_values(&["m"]).observe(0.1);
    m.events_appended.with_label_values(&["customs", "t"]).inc();
    m.append_latency.observe(0.1);
    m.append_retries.inc();
    m.duplicates.inc();
    m.rejections.with_label_values(&["r"]).inc();
    m.events_consumed
        .with_label_values(&["c", "customs", "t"])
        .inc();
    m.dead_letters.with_label_values(&["c"]).inc();
    m.consumer_redeliveries.with_label_values(&["c"]).inc();
    m.consumer_pending.with_label_values(&["c"]).set(1);
    m.handoffs_opened.with_label_values(&["court"]).inc();
    m.handoffs_acknowledged.with_label_values(&["court"]).inc();
    m.handoffs_overdue.with_label_values(&["court"]).set(1);
    m.verification_failures
        .with_label_values(&["bad_signature"])
        .inc();
    m.up.set(1);

    let w = WitnessMetrics::new("witness.test/court", "casebus.test/cases").expect("metrics");
    w.cosigned_size.set(1);
    w.checkpoint_size.set(1);
    w.last_cosignature.set(1);
    w.cosignatures.inc();
    w.forks.inc();
    w.refused.inc();
    w.up.set(1);

    let mut series: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let text = m.render() + &render(&w.registry);
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let (name, rest) = match line.find(['{', ' ']) {
            Some(i) => line.split_at(i),
            None => continue,
        };
        let labels = series.entry(name.to_owned()).or_default();
        if let Some(inside) = rest.strip_prefix('{').and_then(|r| r.split_once('}')) {
            for pair in inside.0.split(',') {
                if let Some((label, _)) = pair.split_once('=') {
                    labels.insert(label.trim().to_owned());
                }
            }
        }
    }
    // Prometheus' own series for each target.
    series.insert("up".to_owned(), BTreeSet::new());
    series
}

/// What one PromQL expression uses: metric names with the labels their selectors name,
/// and the labels of its `by`/`on`/`without`/`ignoring` clauses.
#[derive(Debug, Default)]
struct Uses {
    metrics: Vec<(String, Vec<String>)>,
    grouping: Vec<String>,
}

const AGGREGATION_CLAUSES: [&str; 4] = ["by", "on", "without", "ignoring"];

/// A small PromQL scanner: enough to find metric names, selector labels and grouping
/// labels in the expressions of this repository (string literals and ranges skipped).
fn uses(expr: &str) -> Uses {
    let chars: Vec<char> = expr.chars().collect();
    let mut out = Uses::default();
    let mut i = 0;
    let ident = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == ':';
    while i < chars.len() {
        let c = chars[i];
        if c == '"' || c == '\'' || c == '`' {
            i += 1;
            while i < chars.len() && chars[i] != c {
                i += if chars[i] == '\\' { 2 } else { 1 };
            }
            i += 1;
        } else if c == '[' {
            while i < chars.len() && chars[i] != ']' {
                i += 1;
            }
            i += 1;
        } else if c == '$' {
            // A Grafana variable ($__rate_interval, $service).
            i += 1;
            while i < chars.len() && ident(chars[i]) {
                i += 1;
            }
        } else if c.is_ascii_alphabetic() || c == '_' {
            let start = i;
            while i < chars.len() && ident(chars[i]) {
                i += 1;
            }
            let word: String = chars[start..i].iter().collect();
            let mut j = i;
            while j < chars.len() && chars[j] == ' ' {
                j += 1;
            }
            let next = chars.get(j).copied();
            if AGGREGATION_CLAUSES.contains(&word.as_str()) && next == Some('(') {
                let close = chars[j..].iter().position(|&c| c == ')').map(|p| j + p);
                let inner: String = chars[j + 1..close.unwrap_or(chars.len())].iter().collect();
                out.grouping.extend(
                    inner
                        .split(',')
                        .map(str::trim)
                        .filter(|l| !l.is_empty())
                        .map(str::to_owned),
                );
                i = close.map_or(chars.len(), |p| p + 1);
            } else if word.starts_with("casebus_") || (word == "up" && next == Some('{')) {
                let mut labels = Vec::new();
                if next == Some('{') {
                    let close = chars[j..].iter().position(|&c| c == '}').map(|p| j + p);
                    let inner: String = chars[j + 1..close.unwrap_or(chars.len())].iter().collect();
                    labels = matcher_labels(&inner);
                    i = close.map_or(chars.len(), |p| p + 1);
                }
                out.metrics.push((word, labels));
            }
        } else {
            i += 1;
        }
    }
    out
}

/// The label names of a selector's matchers: `a="x", b=~"y"` gives `a`, `b`.
fn matcher_labels(inner: &str) -> Vec<String> {
    let mut labels = Vec::new();
    let mut rest = inner;
    while let Some(op) = rest.find(['=', '!']) {
        let label = rest[..op].trim().trim_start_matches(',').trim();
        if !label.is_empty() {
            labels.push(label.to_owned());
        }
        // Skip the quoted value after the operator.
        let after = &rest[op..];
        let Some(open) = after.find('"') else { break };
        let Some(close) = after[open + 1..].find('"') else {
            break;
        };
        rest = &after[open + 1 + close + 1..];
    }
    labels
}

/// Problems with one expression against the exported series; `where_` names it.
fn check_expr(
    where_: &str,
    expr: &str,
    series: &BTreeMap<String, BTreeSet<String>>,
) -> Vec<String> {
    let found = uses(expr);
    let mut problems = Vec::new();
    let mut available: BTreeSet<String> = SCRAPE_LABELS.iter().map(|s| s.to_string()).collect();
    if found.metrics.is_empty() {
        problems.push(format!("{where_}: uses no casebus metric: {expr}"));
    }
    for (metric, labels) in &found.metrics {
        let Some(known) = series.get(metric) else {
            problems.push(format!("{where_}: {metric} is not exported by any service"));
            continue;
        };
        available.extend(known.iter().cloned());
        for label in labels {
            if !known.contains(label) && !SCRAPE_LABELS.contains(&label.as_str()) {
                problems.push(format!("{where_}: {metric} has no label {label}"));
            }
        }
    }
    for label in &found.grouping {
        if !available.contains(label) {
            problems.push(format!(
                "{where_}: groups by {label}, which none of its metrics has"
            ));
        }
    }
    problems
}

/// Every `expr` of the alert rules, by alert name.
fn alert_exprs() -> Vec<(String, String)> {
    let rules = yaml(&deploy("prometheus/alerts.yml"));
    let mut out = Vec::new();
    for group in rules["groups"].as_array().expect("groups") {
        for rule in group["rules"].as_array().expect("rules") {
            let name = rule["alert"]
                .as_str()
                .or(rule["record"].as_str())
                .expect("a named rule")
                .to_owned();
            let expr = rule["expr"].as_str().expect("an expr").to_owned();
            out.push((name, expr));
        }
    }
    out
}

fn dashboard() -> Value {
    serde_json::from_str(&read(&deploy("grafana/casebus.json"))).expect("the dashboard is JSON")
}

/// Every panel, rows' children included.
fn panels(dashboard: &Value) -> Vec<Value> {
    let mut out = Vec::new();
    for panel in dashboard["panels"].as_array().expect("panels") {
        out.push(panel.clone());
        if let Some(children) = panel["panels"].as_array() {
            out.extend(children.iter().cloned());
        }
    }
    out
}

#[test]
fn every_metric_the_alerts_and_the_dashboard_use_is_exported_with_those_labels() {
    let series = exported_series();
    let mut problems = Vec::new();
    for (name, expr) in alert_exprs() {
        problems.extend(check_expr(&format!("alert {name}"), &expr, &series));
    }
    let board = dashboard();
    for panel in panels(&board) {
        let title = panel["title"].as_str().unwrap_or("?");
        for target in panel["targets"].as_array().into_iter().flatten() {
            let expr = target["expr"]
                .as_str()
                .expect("a Prometheus target has an expr");
            problems.extend(check_expr(&format!("panel {title:?}"), expr, &series));
        }
    }
    for variable in board["templating"]["list"].as_array().expect("variables") {
        if let Some(query) = variable["definition"].as_str() {
            // label_values(<selector>, <label>)
            let inner = query
                .strip_prefix("label_values(")
                .and_then(|q| q.strip_suffix(')'))
                .expect("variables are label_values queries");
            let (selector, label) = inner.rsplit_once(',').expect("selector and label");
            let selector_uses = uses(selector);
            let metric = &selector_uses.metrics[0].0;
            match series.get(metric) {
                Some(labels) if labels.contains(label.trim()) => {}
                _ => problems.push(format!("variable {query}: {metric} has no {label}")),
            }
        }
    }
    assert!(problems.is_empty(), "\n  {}", problems.join("\n  "));
}

#[test]
fn the_scanner_finds_metrics_labels_and_groupings() {
    let found = uses(
        r#"sum by (service, office) (rate(casebus_rejections_total{reason=~"a|b", office!="x"}[$__rate_interval])) / on (service) casebus_up"#,
    );
    assert_eq!(
        found.metrics,
        vec![
            (
                "casebus_rejections_total".to_owned(),
                vec!["reason".to_owned(), "office".to_owned()]
            ),
            ("casebus_up".to_owned(), vec![]),
        ]
    );
    assert_eq!(found.grouping, vec!["service", "office", "service"]);
    let problems = check_expr(
        "t",
        "sum by (nope) (casebus_nothing_total{x=\"1\"})",
        &exported_series(),
    );
    assert_eq!(problems.len(), 2, "{problems:?}");
}

#[test]
fn the_alerts_cover_lag_dead_letters_overdue_handoffs_down_services_append_errors_and_forks() {
    let names: BTreeSet<String> = alert_exprs().into_iter().map(|(n, _)| n).collect();
    for needed in [
        "CasebusConsumerLagGrowing",
        "CasebusDeadLetters",
        "CasebusHandoffsOverdue",
        "CasebusServiceDown",
        "CasebusAppendErrorRate",
        "CasebusWitnessRefusedFork",
        "CasebusWitnessBehind",
    ] {
        assert!(names.contains(needed), "no alert {needed} in {names:?}");
    }
    let rules = yaml(&deploy("prometheus/alerts.yml"));
    for group in rules["groups"].as_array().expect("groups") {
        for rule in group["rules"].as_array().expect("rules") {
            let name = rule["alert"].as_str().unwrap_or("?");
            let severity = rule["labels"]["severity"].as_str();
            assert!(
                matches!(severity, Some("warning" | "critical")),
                "{name}: severity warning or critical"
            );
            for key in ["summary", "description"] {
                assert!(
                    rule["annotations"][key]
                        .as_str()
                        .is_some_and(|s| !s.is_empty()),
                    "{name}: annotation {key}"
                );
            }
        }
    }
}

#[test]
fn the_dashboard_has_the_panels_administrators_need_and_is_well_formed() {
    let board = dashboard();
    assert_eq!(board["uid"], "casebus");
    let all = panels(&board);
    let titles: Vec<&str> = all.iter().filter_map(|p| p["title"].as_str()).collect();
    for needed in [
        "Throughput per agency",
        "Append latency p50 / p99",
        "Consumer pending",
        "Dead letters",
        "Overdue hand-offs by agency",
        "Rejections by reason",
        "gRPC requests by method and code",
        "gRPC server errors",
        "Services ready",
        "Witnessed log size",
        "Witness refusals",
    ] {
        assert!(
            titles.contains(&needed),
            "no panel {needed:?} in {titles:?}"
        );
    }
    let mut ids = BTreeSet::new();
    for panel in &all {
        let title = panel["title"].as_str().unwrap_or("?");
        assert!(
            ids.insert(panel["id"].as_i64().expect("panel id")),
            "duplicate panel id in {title}"
        );
        let grid = &panel["gridPos"];
        let (x, w) = (
            grid["x"].as_i64().unwrap_or(-1),
            grid["w"].as_i64().unwrap_or(0),
        );
        assert!(
            x >= 0 && w > 0 && x + w <= 24,
            "{title}: gridPos inside 24 columns"
        );
        if panel["type"] != "row" {
            assert_eq!(
                panel["datasource"]["uid"], "${datasource}",
                "{title}: uses the datasource variable"
            );
            let targets = panel["targets"].as_array().expect("targets");
            assert!(!targets.is_empty(), "{title}: has a query");
            let refs: BTreeSet<&str> = targets.iter().filter_map(|t| t["refId"].as_str()).collect();
            assert_eq!(refs.len(), targets.len(), "{title}: distinct refIds");
        }
    }
}

#[test]
fn every_scrape_job_is_covered_by_the_service_down_alert() {
    let config = yaml(&deploy("prometheus/prometheus.yml"));
    let jobs: Vec<&str> = config["scrape_configs"]
        .as_array()
        .expect("scrape_configs")
        .iter()
        .filter_map(|j| j["job_name"].as_str())
        .collect();
    for job in [
        "casebus-agency",
        "casebus-gateway",
        "casebus-monitor",
        "casebus-witness",
    ] {
        assert!(jobs.contains(&job), "no scrape job {job} in {jobs:?}");
    }
    let down = alert_exprs()
        .into_iter()
        .find(|(n, _)| n == "CasebusServiceDown")
        .expect("CasebusServiceDown")
        .1;
    assert!(down.contains(r#"job=~"casebus-.*""#), "{down}");
    assert_eq!(
        config["rule_files"][0], "alerts.yml",
        "the rules are loaded"
    );
}
