//! `casebus audit` against a real nats-server: records written the way the gateway
//! writes them (`AuditRecord` on `audit.<office>`) are found by case, by office and by
//! time, exactly; a malformed record is shown as such.

mod common;

use time::OffsetDateTime;

use casebus_bus::ops::{AuditRecord, PublishOptions};

use common::*;

fn record(office: &str, case_id: &str, versions: &[u64], at: OffsetDateTime) -> AuditRecord {
    AuditRecord {
        office: office.into(),
        actor: format!("{office}/reader"),
        case_id: case_id.into(),
        versions: versions.to_vec(),
        at,
        method: "GetTimeline".into(),
        detail: None,
    }
}

/// (office, case, versions) of every JSON line.
fn rows(run: &Run) -> Vec<(String, String, Vec<u64>)> {
    run.json_lines()
        .iter()
        .map(|v| {
            (
                v["office"].as_str().unwrap_or_default().to_owned(),
                v["case_id"].as_str().unwrap_or_default().to_owned(),
                v["versions"]
                    .as_array()
                    .map(|a| a.iter().filter_map(serde_json::Value::as_u64).collect())
                    .unwrap_or_default(),
            )
        })
        .collect()
}

fn row(office: &str, case_id: &str, versions: &[u64]) -> (String, String, Vec<u64>) {
    (office.to_owned(), case_id.to_owned(), versions.to_vec())
}

#[tokio::test]
async fn audit_records_are_found_by_case_office_and_time() {
    let f = Fixture::start().await;
    let old = OffsetDateTime::now_utc() - time::Duration::days(3);
    let now = OffsetDateTime::now_utc();
    for r in [
        record(CUSTOMS, "AUD-A", &[1, 2, 3], old),
        record(COURT, "AUD-A", &[1, 2, 3, 4], now),
        record(CUSTOMS, "AUD-B", &[1], now),
    ] {
        f.ops.publish_audit(&r, None).await.expect("audit record");
    }

    let by_case = f.cli(&["--json", "audit", "--case", "AUD-A"]).await;
    by_case.expect_code(0);
    assert_eq!(
        rows(&by_case),
        [
            row(CUSTOMS, "AUD-A", &[1, 2, 3]),
            row(COURT, "AUD-A", &[1, 2, 3, 4])
        ]
    );
    let first = &by_case.json_lines()[0];
    assert_eq!(first["method"], "GetTimeline");
    assert_eq!(first["actor"], "customs:ningbo/reader");
    assert_eq!(first["subject"], "audit.customs:ningbo");

    let by_office = f.cli(&["--json", "audit", "--office", CUSTOMS]).await;
    assert_eq!(
        rows(&by_office),
        [
            row(CUSTOMS, "AUD-A", &[1, 2, 3]),
            row(CUSTOMS, "AUD-B", &[1])
        ]
    );

    let recent = f
        .cli(&["--json", "audit", "--office", CUSTOMS, "--since", "1day"])
        .await;
    assert_eq!(rows(&recent), [row(CUSTOMS, "AUD-B", &[1])]);

    let text = f.cli(&["audit", "--case", "AUD-A"]).await;
    text.expect_code(0);
    assert!(text.stdout.contains("1..4 (4)"), "{}", text.stdout);
    assert!(text.stdout.contains("court:hangzhou-ip"), "{}", text.stdout);

    // A record that is not valid JSON is shown, flagged.
    f.ops
        .publish(
            "audit.court:hangzhou-ip",
            b"{not json".to_vec().into(),
            &[],
            &PublishOptions::default(),
        )
        .await
        .expect("publish");
    let with_bad = f.cli(&["--json", "audit", "--office", COURT]).await;
    let lines = with_bad.json_lines();
    assert_eq!(lines.len(), 2);
    assert!(
        lines[1]["invalid"]
            .as_str()
            .is_some_and(|r| r.contains("not JSON"))
    );

    let none = f.cli(&["audit", "--case", "AUD-NONE"]).await;
    none.expect_code(0);
    // The malformed record cannot be ruled out for any case, so it shows.
    assert!(none.stdout.contains("INVALID"), "{}", none.stdout);
}
