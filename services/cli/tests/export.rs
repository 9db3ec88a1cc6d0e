//! `casebus export` and `casebus verify --bundle`: an exported evidence bundle verifies
//! offline (no NATS reachable), and fails after any one byte of an event's signed bytes
//! is changed, after an event is removed, after a readable field is altered, or against
//! a trusted registry whose keys differ. Checked with its own keys only, it fails unless
//! `--trust-bundle-keys` accepts them; a bundle that is not the quoted one (an older,
//! shorter export of the same case) fails `--expect-digest`. Export never overwrites a
//! file.

mod common;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use serde_json::Value;

use common::catalogue::{declined_case, note};
use common::*;

/// Exports a four-event case (plus a poison message) and returns the bundle path.
async fn exported(f: &Fixture) -> std::path::PathBuf {
    let c = case("EXP-1");
    let mut appenders = std::collections::HashMap::new();
    for (office_id, payload) in declined_case() {
        let appender = appenders
            .entry(office_id)
            .or_insert_with(|| f.appender(office_id));
        append(appender, &c, payload).await;
    }
    f.publish_raw("case.EXP-1", b"poison".to_vec()).await;
    append(&f.appender(CUSTOMS), &c, note("after the poison")).await;
    let out = f.path("EXP-1.bundle.json");
    let run = f
        .cli(&[
            "export",
            "--case",
            "EXP-1",
            "--out",
            out.to_str().expect("utf-8"),
        ])
        .await;
    run.expect_code(0);
    assert!(run.stdout.contains("5 events"), "{}", run.stdout);
    assert!(run.stderr.contains("failed verification"), "{}", run.stderr);
    out
}

fn read(path: &std::path::Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(path).expect("read bundle")).expect("JSON")
}

fn write(f: &Fixture, name: &str, bundle: &Value) -> String {
    let path = f.path(name);
    std::fs::write(&path, serde_json::to_vec_pretty(bundle).expect("json")).expect("write");
    path.display().to_string()
}

/// Verifies a bundle with no NATS reachable, so it is certainly offline, accepting the
/// keys it carries (what these tests change is the bundle, not who vouches for keys).
async fn verify_offline(path: &str) -> Run {
    run_offline(&["--json", "verify", "--bundle", path, "--trust-bundle-keys"]).await
}

/// Verifies a bundle offline against the fixture's registry, as a third party that
/// trusts it would.
async fn verify_trusted(f: &Fixture, args: &[&str]) -> Run {
    let mut all = vec!["--json", "verify"];
    all.extend_from_slice(args);
    run_with_env(
        &all,
        &[
            ("CASEBUS_NATS_URL", "nats://127.0.0.1:1"),
            ("CASEBUS_REGISTRY", f.registry_path.to_str().expect("utf-8")),
        ],
    )
    .await
}

fn codes(run: &Run) -> Vec<String> {
    run.json()["failures"]
        .as_array()
        .map(|f| {
            f.iter()
                .map(|x| x["code"].as_str().unwrap_or_default().to_owned())
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test]
async fn an_exported_bundle_verifies_offline_and_carries_what_a_third_party_needs() {
    let f = Fixture::start().await;
    let out = exported(&f).await;
    let bundle = read(&out);
    assert_eq!(bundle["format"], "casebus.bundle.v1");
    assert_eq!(bundle["case_id"], "EXP-1");
    let events = bundle["events"].as_array().expect("events");
    assert_eq!(events.len(), 5);
    let first = &events[0];
    for field in [
        "sequence",
        "version",
        "event_id",
        "type",
        "office",
        "key_id",
        "hash",
        "signature",
        "signed_event",
    ] {
        assert!(!first[field].is_null(), "events carry {field}");
    }
    assert_eq!(first["prev_hash"], Value::Null);
    assert_eq!(events[1]["prev_hash"], first["hash"]);
    assert_eq!(
        events[0]["event"]["payload"]["case_opened"]["title"],
        "Declined referral"
    );
    assert_eq!(bundle["rejected"].as_array().map(Vec::len), Some(1));
    assert_eq!(bundle["rejected"][0]["code"], "undecodable");
    let offices: Vec<&str> = bundle["offices"]
        .as_array()
        .expect("offices")
        .iter()
        .map(|o| o["id"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(
        offices,
        [CUSTOMS, POLICE],
        "exactly the offices that signed"
    );
    assert_eq!(bundle["manifest"]["event_count"], 5);
    assert_eq!(bundle["manifest"]["head_hash"], events[4]["hash"]);

    let run = verify_offline(out.to_str().expect("utf-8")).await;
    run.expect_code(0);
    let report = run.json();
    assert_eq!(report["ok"], true);
    assert_eq!(report["verified"], 5);
    assert_eq!(report["digest"], bundle["manifest"]["digest"]);

    // Against a trusted registry that agrees, it verifies too.
    let trusted = run_with_env(
        &["--json", "verify", "--bundle", out.to_str().expect("utf-8")],
        &[
            ("CASEBUS_NATS_URL", "nats://127.0.0.1:1"),
            ("CASEBUS_REGISTRY", f.registry_path.to_str().expect("utf-8")),
        ],
    )
    .await;
    trusted.expect_code(0);
    assert_eq!(trusted.json()["keys"], "trusted registry");

    // Export never overwrites.
    let before = std::fs::read(&out).expect("read");
    let again = f
        .cli(&[
            "export",
            "--case",
            "EXP-1",
            "--out",
            out.to_str().expect("utf-8"),
        ])
        .await;
    again.expect_code(2);
    assert!(
        again.stderr.contains("refusing to overwrite"),
        "{}",
        again.stderr
    );
    assert_eq!(std::fs::read(&out).expect("read"), before);
}

#[tokio::test]
async fn changing_any_one_byte_of_an_events_signed_bytes_fails_verification() {
    let f = Fixture::start().await;
    let out = exported(&f).await;
    let bundle = read(&out);
    let target = 2;
    let original = B64
        .decode(
            bundle["events"][target]["signed_event"]
                .as_str()
                .expect("b64"),
        )
        .expect("base64");
    // Every byte position, in parallel batches so the suite stays quick.
    let positions: Vec<usize> = (0..original.len()).collect();
    for chunk in positions.chunks(16) {
        let runs = chunk.iter().map(|&i| {
            let mut bytes = original.clone();
            bytes[i] ^= 0x01;
            let mut changed = bundle.clone();
            changed["events"][target]["signed_event"] = B64.encode(&bytes).into();
            let path = write(&f, &format!("flip-{i}.json"), &changed);
            async move { (i, verify_offline(&path).await) }
        });
        for (i, run) in futures::future::join_all(runs).await {
            assert_eq!(
                run.code,
                1,
                "flipping byte {i} of {} must fail verification: {}",
                original.len(),
                run.stdout
            );
            assert_eq!(run.json()["ok"], false);
        }
    }
}

#[tokio::test]
async fn a_missing_or_altered_event_fails_verification() {
    let f = Fixture::start().await;
    let out = exported(&f).await;
    let bundle = read(&out);

    let mut middle = bundle.clone();
    middle["events"].as_array_mut().expect("events").remove(2);
    let run = verify_offline(&write(&f, "middle.json", &middle)).await;
    run.expect_code(1);
    let found = codes(&run);
    assert!(found.contains(&"gap".to_owned()), "{found:?}");
    assert!(found.contains(&"manifest".to_owned()), "{found:?}");

    let mut last = bundle.clone();
    last["events"].as_array_mut().expect("events").pop();
    let run = verify_offline(&write(&f, "last.json", &last)).await;
    run.expect_code(1);
    assert!(
        codes(&run).contains(&"manifest".to_owned()),
        "{:?}",
        codes(&run)
    );

    // The readable JSON must say what the signed bytes say.
    let mut altered = bundle.clone();
    altered["events"][0]["event"]["payload"]["case_opened"]["title"] = "Something else".into();
    let run = verify_offline(&write(&f, "altered.json", &altered)).await;
    run.expect_code(1);
    assert_eq!(codes(&run), ["field_mismatch"]);

    // A bundle whose keys a trusted registry does not know fails against it.
    let mut other = registry();
    other = {
        let mut r = casebus_integrity::OfficeRegistry::default();
        for o in other.offices().filter(|o| o.id.as_str() != POLICE) {
            r.insert_office(o.clone()).expect("office");
        }
        r
    };
    let trusted = f.write_registry("trusted.toml", &other);
    let run = run_with_env(
        &["--json", "verify", "--bundle", out.to_str().expect("utf-8")],
        &[
            ("CASEBUS_NATS_URL", "nats://127.0.0.1:1"),
            ("CASEBUS_REGISTRY", trusted.to_str().expect("utf-8")),
        ],
    )
    .await;
    run.expect_code(1);
    assert!(
        codes(&run).contains(&"untrusted_key".to_owned()),
        "{:?}",
        codes(&run)
    );

    // Not a bundle at all.
    let run = verify_offline(&write(&f, "nonsense.json", &serde_json::json!({"a": 1}))).await;
    run.expect_code(1);
}

/// Exports `case` to file `name` of the fixture's directory; its path.
async fn export_to(f: &Fixture, case: &str, name: &str) -> String {
    let out = f.path(name).display().to_string();
    f.cli(&["export", "--case", case, "--out", &out])
        .await
        .expect_code(0);
    out
}

#[tokio::test]
async fn a_bundle_is_not_trusted_on_its_own_keys_and_must_be_the_quoted_one() {
    let f = Fixture::start().await;
    let c = case("DIG-1");
    let mut appenders = std::collections::HashMap::new();
    for (office_id, payload) in declined_case() {
        let appender = appenders
            .entry(office_id)
            .or_insert_with(|| f.appender(office_id));
        append(appender, &c, payload).await;
    }
    // An earlier export, then the case goes on and the full one is quoted.
    let short = export_to(&f, "DIG-1", "short.json").await;
    append(&f.appender(CUSTOMS), &c, note("the last word")).await;
    let full = export_to(&f, "DIG-1", "full.json").await;
    let quoted = read(std::path::Path::new(&full))["manifest"]["digest"]
        .as_str()
        .expect("digest")
        .to_owned();

    // Without a trusted registry the keys are the bundle's own: not good enough.
    let run = run_offline(&["--json", "verify", "--bundle", &full]).await;
    run.expect_code(1);
    let report = run.json();
    assert_eq!(report["ok"], false);
    assert_eq!(report["keys"], "bundle");
    assert_eq!(report["verified"], 5, "the chain itself verifies: {report}");
    assert_eq!(codes(&run), ["own_keys"]);
    let text = run_offline(&["verify", "--bundle", &full]).await;
    text.expect_code(1);
    assert!(
        text.stdout.contains("the keys are the bundle's own")
            && text.stdout.contains("--trust-bundle-keys"),
        "{}",
        text.stdout
    );
    // Accepting them explicitly, it verifies.
    let run = run_offline(&["--json", "verify", "--bundle", &full, "--trust-bundle-keys"]).await;
    run.expect_code(0);

    // The quoted digest: the full bundle matches it (in either case of hex digits),
    // the earlier export of the same case, genuine on its own, does not.
    let run = verify_trusted(&f, &["--bundle", &full, "--expect-digest", &quoted]).await;
    run.expect_code(0);
    assert_eq!(run.json()["expected_digest"], quoted.as_str());
    let upper = quoted.to_ascii_uppercase();
    verify_trusted(&f, &["--bundle", &full, "--expect-digest", &upper])
        .await
        .expect_code(0);
    verify_trusted(&f, &["--bundle", &short])
        .await
        .expect_code(0);
    let run = verify_trusted(&f, &["--bundle", &short, "--expect-digest", &quoted]).await;
    run.expect_code(1);
    assert_eq!(codes(&run), ["digest_mismatch"]);
    let reason = run.json()["failures"][0]["reason"]
        .as_str()
        .expect("reason")
        .to_owned();
    assert!(reason.contains(&quoted), "{reason}");

    // A digest that is not one, or the flags without a bundle, are usage errors.
    for (args, complaint) in [
        (
            vec![
                "verify",
                "--bundle",
                full.as_str(),
                "--expect-digest",
                "abc",
            ],
            "is not a manifest digest",
        ),
        (
            vec!["verify", "--case", "DIG-1", "--trust-bundle-keys"],
            "--bundle",
        ),
        (
            vec!["verify", "--all", "--expect-digest", quoted.as_str()],
            "--bundle",
        ),
    ] {
        let run = run_offline(&args).await;
        assert_eq!(run.code, 2, "{args:?}: {}", run.stderr);
        assert!(run.stderr.contains(complaint), "{args:?}: {}", run.stderr);
    }
}
