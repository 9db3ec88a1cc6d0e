//! Sealed events on the CLI's read surfaces (issue 14): `casebus events`, `case show` and
//! `export` open what a key given with `--decryption-key` may read, and without one show
//! a sealed event as sealed, naming the offices it is sealed for, never as an empty
//! payload. An exported bundle keeps the signed bytes as stored, so it verifies whether
//! the exporter opened anything or not. A file that is not an encryption key is refused
//! before anything is read.

mod common;

use std::sync::Arc;

use serde_json::Value;

use casebus_integrity::seal::Opener;
use casebus_proto::event::v1::payload::Kind;
use casebus_proto::event::v1::{
    Agency, CaseOpened, CaseType, NoteAdded, Party, PartyAdded, PartyRole, Visibility,
    VisibilityKind,
};

use common::*;

const CASE: &str = "SEAL-CLI";
const SECRET: &str = "informant Wang Wu met us at the Beilun pier";
const PERSON: &str = "Li Si";

/// The fixture with every office's encryption key registered, and the key files of
/// customs and the police.
async fn sealing_fixture() -> Fixture {
    let registry =
        casebus_fixtures::sealing_registry_of(&OFFICES).expect("a registry of sealing offices");
    let f = Fixture::start_with_registry(registry).await;
    for office in [CUSTOMS, POLICE] {
        casebus_fixtures::opening_key(office)
            .save(&key_file(&f, office))
            .expect("key file");
    }
    f
}

fn key_file(f: &Fixture, office: &str) -> std::path::PathBuf {
    f.path(&casebus_fixtures::encryption_key_file_name(office))
}

fn key_arg(f: &Fixture, office: &str) -> String {
    key_file(f, office).display().to_string()
}

/// Customs records, sealing: the case in clear (v1), a note for itself alone (v2), a
/// suspect for itself and the police (v3).
async fn record(f: &Fixture) -> casebus_bus::Appender {
    let customs = f
        .appender(CUSTOMS)
        .seal_with(Arc::new(Opener::new(vec![casebus_fixtures::opening_key(
            CUSTOMS,
        )])))
        .expect("customs seals");
    let c = case(CASE);
    append(
        &customs,
        &c,
        Kind::CaseOpened(CaseOpened {
            case_type: CaseType::CounterfeitTrademark as i32,
            title: "counterfeit watches".into(),
            ..Default::default()
        }),
    )
    .await;
    let restricted = |payload: Kind, kind: VisibilityKind, agencies: &[Agency]| {
        let mut r = request(&c, payload);
        r.visibility = Some(Visibility {
            kind: kind as i32,
            agencies: agencies.iter().map(|a| *a as i32).collect(),
        });
        r
    };
    customs
        .append(restricted(
            Kind::NoteAdded(NoteAdded {
                text: SECRET.into(),
            }),
            VisibilityKind::OriginOnly,
            &[],
        ))
        .await
        .expect("sealed note");
    customs
        .append(restricted(
            Kind::PartyAdded(PartyAdded {
                party: Some(Party {
                    party_id: "suspect-1".into(),
                    role: PartyRole::Suspect as i32,
                    name: PERSON.into(),
                    ..Default::default()
                }),
            }),
            VisibilityKind::ListedAgencies,
            &[Agency::PublicSecurity],
        ))
        .await
        .expect("sealed party");
    customs
}

fn by_version(lines: &[Value], version: u64) -> &Value {
    lines
        .iter()
        .find(|l| l["version"] == version)
        .unwrap_or_else(|| panic!("no version {version} in {lines:?}"))
}

#[tokio::test]
async fn events_and_case_show_open_what_the_key_may_read_and_mark_the_rest_sealed() {
    let f = sealing_fixture().await;
    let _customs = record(&f).await;

    // Without a key: the sealed events show their readable part, marked sealed.
    let run = f.cli(&["--json", "events", "list", "--case", CASE]).await;
    run.expect_code(0);
    assert!(!run.stdout.contains(SECRET), "{}", run.stdout);
    assert!(!run.stdout.contains(PERSON), "{}", run.stdout);
    let lines = run.json_lines();
    assert_eq!(lines.len(), 3);
    assert_eq!(by_version(&lines, 1)["sealed"], Value::Null);
    let note = by_version(&lines, 2);
    assert_eq!(note["sealed"]["for"], serde_json::json!([CUSTOMS]));
    assert_eq!(note["sealed"]["opened"], false);
    assert_eq!(note["payload"]["note_added"]["text"], "");
    assert_eq!(
        by_version(&lines, 3)["sealed"]["for"],
        serde_json::json!([CUSTOMS, POLICE])
    );
    let text = f.cli(&["events", "list", "--case", CASE]).await;
    text.expect_code(0);
    assert!(
        text.stdout.contains(&format!("[sealed for {CUSTOMS}]")),
        "{}",
        text.stdout
    );

    // With customs' key: both open, and say so.
    let customs_key = key_arg(&f, CUSTOMS);
    let run = f
        .cli(&[
            "--json",
            "events",
            "list",
            "--case",
            CASE,
            "--decryption-key",
            &customs_key,
        ])
        .await;
    run.expect_code(0);
    let lines = run.json_lines();
    let note = by_version(&lines, 2);
    assert_eq!(note["payload"]["note_added"]["text"], SECRET);
    assert_eq!(note["sealed"]["opened"], true);
    assert_eq!(
        by_version(&lines, 3)["payload"]["party_added"]["party"]["name"],
        PERSON
    );
    assert_eq!(note["status"], "verified", "the signed bytes still verify");

    // With the police's key: the suspect opens, the note for customs alone does not.
    let police_key = key_arg(&f, POLICE);
    let run = f
        .cli(&[
            "--json",
            "events",
            "tail",
            "--case",
            CASE,
            "--decryption-key",
            &police_key,
        ])
        .await;
    run.expect_code(0);
    let lines = run.json_lines();
    assert!(!run.stdout.contains(SECRET), "{}", run.stdout);
    assert_eq!(by_version(&lines, 2)["sealed"]["opened"], false);
    assert_eq!(by_version(&lines, 3)["sealed"]["opened"], true);
    assert_eq!(
        by_version(&lines, 3)["payload"]["party_added"]["party"]["name"],
        PERSON
    );

    // case show: the party's name and the note opened with the key, marked sealed
    // without.
    let run = f.cli(&["case", "show", CASE]).await;
    run.expect_code(0);
    assert!(!run.stdout.contains(SECRET) && !run.stdout.contains(PERSON));
    assert!(
        run.stdout
            .contains(&format!("(sealed for {CUSTOMS}, {POLICE})")),
        "the party's name is marked sealed: {}",
        run.stdout
    );
    let run = f
        .cli(&["case", "show", CASE, "--decryption-key", &police_key])
        .await;
    run.expect_code(0);
    assert!(run.stdout.contains(PERSON), "{}", run.stdout);
    assert!(!run.stdout.contains(SECRET), "{}", run.stdout);
    let run = f
        .cli(&[
            "--json",
            "case",
            "show",
            CASE,
            "--decryption-key",
            &customs_key,
        ])
        .await;
    run.expect_code(0);
    let shown = run.json();
    assert_eq!(shown["parties"][0]["name"], PERSON);
    assert_eq!(
        shown["events"][1]["payload"]["note_added"]["text"], SECRET,
        "{shown}"
    );

    // A file that is not an encryption key is refused, naming the flag and the file.
    let registry = f.registry_path.display().to_string();
    for args in [
        vec!["events", "list", "--decryption-key", &registry],
        vec!["case", "show", CASE, "--decryption-key", &registry],
    ] {
        let run = f.cli(&args).await;
        run.expect_code(2);
        assert!(
            run.stderr.contains("--decryption-key") && run.stderr.contains("offices.toml"),
            "{}",
            run.stderr
        );
    }
}

#[tokio::test]
async fn an_export_opened_with_a_key_carries_the_content_beside_the_signed_bytes_and_verifies() {
    let f = sealing_fixture().await;
    let _customs = record(&f).await;
    let export = |name: &str, key: Option<String>| {
        let out = f.path(name);
        let mut args = vec![
            "export".to_owned(),
            "--case".into(),
            CASE.into(),
            "--out".into(),
            out.display().to_string(),
        ];
        if let Some(key) = key {
            args.extend(["--decryption-key".into(), key]);
        }
        (out, args)
    };
    let read = |path: &std::path::Path| -> Value {
        serde_json::from_str(&std::fs::read_to_string(path).expect("read bundle")).expect("JSON")
    };

    let (plain_path, args) = export("plain.bundle.json", None);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    f.cli(&args).await.expect_code(0);
    let (opened_path, args) = export("opened.bundle.json", Some(key_arg(&f, CUSTOMS)));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    f.cli(&args).await.expect_code(0);

    let plain = read(&plain_path);
    let opened = read(&opened_path);
    let plain_text = std::fs::read_to_string(&plain_path).expect("read");
    assert!(!plain_text.contains(SECRET) && !plain_text.contains(PERSON));
    assert_eq!(plain["events"][0].get("sealed"), None, "v1 is in clear");
    assert_eq!(
        plain["events"][1]["sealed"]["for"],
        serde_json::json!([CUSTOMS])
    );
    assert_eq!(plain["events"][1]["sealed"]["opened"], false);
    assert_eq!(opened["events"][1]["sealed"]["opened"], true);
    assert_eq!(
        opened["events"][1]["sealed"]["payload"]["note_added"]["text"],
        SECRET
    );
    assert_eq!(
        opened["events"][2]["sealed"]["payload"]["party_added"]["party"]["name"],
        PERSON
    );
    // The signed bytes and the manifest are the same either way, and both verify.
    for i in 0..3 {
        assert_eq!(
            plain["events"][i]["signed_event"],
            opened["events"][i]["signed_event"]
        );
        assert_eq!(plain["events"][i]["event"], opened["events"][i]["event"]);
    }
    assert_eq!(plain["manifest"]["digest"], opened["manifest"]["digest"]);
    for path in [&plain_path, &opened_path] {
        let run = f
            .cli(&[
                "--json",
                "verify",
                "--bundle",
                path.to_str().expect("utf-8"),
            ])
            .await;
        run.expect_code(0);
        assert_eq!(run.json()["ok"], true, "{}", run.stdout);
    }
}

#[tokio::test]
async fn after_a_widening_case_show_and_export_open_the_original_with_the_new_readers_key() {
    let f = sealing_fixture().await;
    let customs = record(&f).await;
    let police_key = key_arg(&f, POLICE);
    let show = async || {
        let run = f
            .cli(&["case", "show", CASE, "--decryption-key", &police_key])
            .await;
        run.expect_code(0);
        run.stdout
    };
    assert!(
        !show().await.contains(SECRET),
        "origin only: not the police's"
    );
    customs
        .append(request(
            &case(CASE),
            Kind::VisibilityChanged(casebus_proto::event::v1::VisibilityChanged {
                target_version: 2,
                visibility: Some(Visibility {
                    kind: VisibilityKind::ListedAgencies as i32,
                    agencies: vec![Agency::PublicSecurity as i32],
                }),
                reason: "the police take over".into(),
                wrapped_keys: Vec::new(),
            }),
        ))
        .await
        .expect("widen");
    assert!(show().await.contains(SECRET), "opened with the widened key");
    let out = f.path("widened.bundle.json");
    f.cli(&[
        "export",
        "--case",
        CASE,
        "--out",
        out.to_str().expect("utf-8"),
        "--decryption-key",
        &police_key,
    ])
    .await
    .expect_code(0);
    let bundle: Value =
        serde_json::from_str(&std::fs::read_to_string(&out).expect("read")).expect("JSON");
    assert_eq!(
        bundle["events"][1]["sealed"]["payload"]["note_added"]["text"],
        SECRET
    );
    assert_eq!(
        bundle["events"][1]["sealed"]["for"],
        serde_json::json!([CUSTOMS, POLICE])
    );
    let run = f
        .cli(&["--json", "verify", "--bundle", out.to_str().expect("utf-8")])
        .await;
    run.expect_code(0);
}
