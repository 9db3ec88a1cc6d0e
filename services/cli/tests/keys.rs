//! `casebus keys`, `token` and `issuer`, offline: generated keys are private and
//! registrable; a registered key verifies what it signs; rotation adds a key and retires
//! the old one at the given time; encryption keys (`--kind encryption`) are generated,
//! registered, listed and rotated beside the signing keys, and open what is sealed for
//! them; tokens issued with an issuer key verify against the
//! trust file `issuer generate` wrote.

mod common;

use time::OffsetDateTime;
use time::macros::datetime;

use casebus_integrity::seal::{Binding, Opener, OpeningKey, Sealer};
use casebus_integrity::token::{Audience, Role, TokenError, TrustedIssuers};
use casebus_integrity::{OfficeRegistry, OfficeSigner, verify_signed};

use common::*;

fn s(path: &std::path::Path) -> &str {
    path.to_str().expect("utf-8 path")
}

/// Asserts that only the owner may read or write `path` (a secret key file).
fn assert_private(path: &std::path::Path) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(path).expect("key").permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "the secret key file is private");
    }
}

/// Runs offline with a registry file.
async fn with_registry(registry: &std::path::Path, args: &[&str]) -> Run {
    run_with_env(
        args,
        &[
            ("CASEBUS_NATS_URL", "nats://127.0.0.1:1"),
            ("CASEBUS_REGISTRY", s(registry)),
        ],
    )
    .await
}

#[tokio::test]
async fn a_generated_key_registers_and_verifies_what_it_signs() {
    let dir = tempfile::tempdir().expect("tempdir");
    let key = dir.path().join("customs.key");
    let registry = dir.path().join("offices.toml");

    let generated = run_offline(&[
        "--json",
        "keys",
        "generate",
        "--office",
        CUSTOMS,
        "--label",
        "2026",
        "--out",
        s(&key),
    ])
    .await;
    generated.expect_code(0);
    assert_eq!(generated.json()["key_id"], "customs:ningbo#2026");
    assert_private(&key);
    let public = dir.path().join("customs.key.pub");
    let public_text = std::fs::read_to_string(&public).expect("public key file");
    let secret_text = std::fs::read_to_string(&key).expect("key file");
    assert!(!public_text.contains("secret"), "{public_text}");
    assert!(secret_text.contains("secret_key"));

    let again = run_offline(&[
        "keys",
        "generate",
        "--office",
        CUSTOMS,
        "--label",
        "2026",
        "--out",
        s(&key),
    ])
    .await;
    again.expect_code(2);
    assert!(
        again.stderr.contains("refusing to overwrite"),
        "{}",
        again.stderr
    );
    assert_eq!(std::fs::read_to_string(&key).expect("key"), secret_text);

    let registered = with_registry(
        &registry,
        &[
            "keys",
            "register",
            "--office",
            CUSTOMS,
            "--public-key-from",
            s(&public),
            "--valid-from",
            "2026-01-01T00:00:00Z",
            "--name",
            "Ningbo Customs",
        ],
    )
    .await;
    registered.expect_code(0);
    let loaded = OfficeRegistry::load(&registry).expect("registry written");
    let entry = loaded.office(&office(CUSTOMS)).expect("office registered");
    assert_eq!(entry.name, "Ningbo Customs");
    assert_eq!(entry.keys[0].valid_from, datetime!(2026-01-01 0:00 UTC));

    // What the key signs verifies with the registry.
    let signer = OfficeSigner::load(&key).expect("key loads");
    let (raw, _) = hand_made_note(&signer, "KEY-1", 1, None, "signed");
    assert!(verify_signed(&raw, &loaded).is_ok());

    let twice = with_registry(
        &registry,
        &[
            "keys",
            "register",
            "--office",
            CUSTOMS,
            "--public-key-from",
            s(&public),
        ],
    )
    .await;
    twice.expect_code(1);
    assert!(
        twice.stderr.contains("registered already"),
        "{}",
        twice.stderr
    );
    let wrong_office = with_registry(
        &registry,
        &[
            "keys",
            "register",
            "--office",
            COURT,
            "--public-key-from",
            s(&public),
        ],
    )
    .await;
    wrong_office.expect_code(2);
    assert!(
        wrong_office.stderr.contains("not of --office"),
        "{}",
        wrong_office.stderr
    );

    let listed = with_registry(&registry, &["--json", "keys", "list"]).await;
    listed.expect_code(0);
    let offices = listed.json()["offices"].clone();
    assert_eq!(offices[0]["office"], CUSTOMS);
    assert_eq!(offices[0]["keys"][0]["state"], "valid");
    let text = with_registry(&registry, &["keys", "list"]).await;
    assert!(
        text.stdout.contains("customs:ningbo#2026"),
        "{}",
        text.stdout
    );
}

#[tokio::test]
async fn rotation_adds_a_key_and_retires_the_old_one_at_the_given_time() {
    let dir = tempfile::tempdir().expect("tempdir");
    let registry_path = dir.path().join("offices.toml");
    registry().save(&registry_path).expect("registry");
    let new_key = dir.path().join("customs-2027.key");
    let rotated = with_registry(
        &registry_path,
        &[
            "--json",
            "keys",
            "rotate",
            "--office",
            CUSTOMS,
            "--label",
            "2027",
            "--out",
            s(&new_key),
            "--valid-from",
            "2026-12-01T00:00:00Z",
            "--retire-at",
            "2027-01-01T00:00:00Z",
        ],
    )
    .await;
    rotated.expect_code(0);
    assert_eq!(
        rotated.json()["retired"],
        serde_json::json!(["customs:ningbo#k1"])
    );
    let loaded = OfficeRegistry::load(&registry_path).expect("registry");
    let keys = &loaded.office(&office(CUSTOMS)).expect("office").keys;
    assert_eq!(keys.len(), 2);
    assert_eq!(keys[0].valid_until, Some(datetime!(2027-01-01 0:00 UTC)));
    assert_eq!(keys[1].key_id, "customs:ningbo#2027");
    assert_eq!(keys[1].valid_from, datetime!(2026-12-01 0:00 UTC));
    assert!(OfficeSigner::load(&new_key).is_ok());
    // Other offices are untouched.
    assert_eq!(
        loaded.office(&office(COURT)),
        registry().office(&office(COURT))
    );

    let backwards = with_registry(
        &registry_path,
        &[
            "keys",
            "rotate",
            "--office",
            CUSTOMS,
            "--label",
            "2028",
            "--out",
            s(&dir.path().join("x.key")),
            "--valid-from",
            "2027-06-01T00:00:00Z",
            "--retire-at",
            "2027-01-01T00:00:00Z",
        ],
    )
    .await;
    backwards.expect_code(2);
    assert!(
        !dir.path().join("x.key").exists(),
        "nothing written on refusal"
    );
}

#[tokio::test]
async fn encryption_keys_are_generated_registered_listed_and_rotated_beside_signing_keys() {
    let dir = tempfile::tempdir().expect("tempdir");
    let registry_path = dir.path().join("offices.toml");
    registry().save(&registry_path).expect("registry");
    let signing_before = registry()
        .office(&office(COURT))
        .expect("court")
        .keys
        .clone();
    let first = dir.path().join("court-enc-2026.key");
    let generated = run_offline(&[
        "--json",
        "keys",
        "generate",
        "--kind",
        "encryption",
        "--office",
        COURT,
        "--label",
        "enc-2026",
        "--out",
        s(&first),
    ])
    .await;
    generated.expect_code(0);
    assert_eq!(generated.json()["kind"], "encryption");
    assert_private(&first);
    let public = dir.path().join("court-enc-2026.key.pub");
    assert!(
        std::fs::read_to_string(&public)
            .expect("public key file")
            .contains("kind = \"encryption\"")
    );
    with_registry(
        &registry_path,
        &[
            "keys",
            "register",
            "--office",
            COURT,
            "--public-key-from",
            s(&public),
            "--valid-from",
            "2026-01-01T00:00:00Z",
        ],
    )
    .await
    .expect_code(0);

    let listed = with_registry(&registry_path, &["--json", "keys", "list"]).await;
    listed.expect_code(0);
    let court = listed.json()["offices"]
        .as_array()
        .expect("offices")
        .iter()
        .find(|o| o["office"] == COURT)
        .expect("court")
        .clone();
    assert_eq!(
        court["encryption_keys"][0]["key_id"],
        "court:hangzhou-ip#enc-2026"
    );
    assert_eq!(court["encryption_keys"][0]["state"], "valid");
    assert_eq!(
        court["keys"].as_array().expect("keys").len(),
        signing_before.len()
    );

    // Rotate the encryption keys: the old one ends, the signing keys stay as they were.
    let second = dir.path().join("court-enc-2027.key");
    let rotated = with_registry(
        &registry_path,
        &[
            "--json",
            "keys",
            "rotate",
            "--kind",
            "encryption",
            "--office",
            COURT,
            "--label",
            "enc-2027",
            "--out",
            s(&second),
            "--valid-from",
            "2026-12-01T00:00:00Z",
            "--retire-at",
            "2027-01-01T00:00:00Z",
        ],
    )
    .await;
    rotated.expect_code(0);
    assert_eq!(
        rotated.json()["retired"],
        serde_json::json!(["court:hangzhou-ip#enc-2026"])
    );
    let loaded = OfficeRegistry::load(&registry_path).expect("registry");
    let entry = loaded.office(&office(COURT)).expect("court");
    assert_eq!(entry.keys, signing_before, "signing keys untouched");
    assert_eq!(entry.encryption_keys.len(), 2);
    assert_eq!(
        entry.encryption_keys[0].valid_until,
        Some(datetime!(2027-01-01 0:00 UTC))
    );

    // What is sealed for the keys the registry names opens with the files written.
    let binding = Binding {
        case_id: "NB-1",
        version: 3,
        event_id: "e-3",
    };
    let is_court = |o: &casebus_proto::OfficeId| o.as_str() == COURT;
    let old_key = OpeningKey::load(&first).expect("old secret key");
    let new_key = OpeningKey::load(&second).expect("new secret key");
    let sealer = Sealer::default();
    let (in_2026, _) = sealer
        .seal(
            b"sealed in 2026",
            &binding,
            &loaded.reader_keys(datetime!(2026-06-01 0:00 UTC), is_court),
        )
        .expect("seal");
    let (in_2027, _) = sealer
        .seal(
            b"sealed in 2027",
            &binding,
            &loaded.reader_keys(datetime!(2027-06-01 0:00 UTC), is_court),
        )
        .expect("seal");
    let open =
        |sealed, binding, key: &OpeningKey| Opener::new(vec![key.clone()]).open(sealed, binding);
    assert_eq!(
        open(&in_2026, &binding, &old_key).expect("open").as_slice(),
        b"sealed in 2026"
    );
    assert_eq!(
        open(&in_2027, &binding, &new_key).expect("open").as_slice(),
        b"sealed in 2027"
    );
    assert!(
        open(&in_2027, &binding, &old_key).is_err(),
        "new seals skip the old key"
    );
}

#[tokio::test]
async fn tokens_issued_with_an_issuer_key_verify_against_the_trust_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let key = dir.path().join("issuer.key");
    let trust = dir.path().join("trusted-issuers.toml");
    let made = run_offline(&[
        "issuer",
        "generate",
        "--key-id",
        "ops-2026",
        "--out",
        s(&key),
        "--trust-file",
        s(&trust),
        "--offices",
        "customs:*",
    ])
    .await;
    made.expect_code(0);
    let second = run_offline(&[
        "issuer",
        "generate",
        "--key-id",
        "ops-2027",
        "--out",
        s(&dir.path().join("i2.key")),
        "--trust-file",
        s(&trust),
        "--offices",
        "customs:*",
    ])
    .await;
    second.expect_code(0);
    let duplicate = run_offline(&[
        "issuer",
        "generate",
        "--key-id",
        "ops-2026",
        "--out",
        s(&dir.path().join("i3.key")),
        "--trust-file",
        s(&trust),
        "--offices",
        "customs:*",
    ])
    .await;
    duplicate.expect_code(2);
    assert!(!dir.path().join("i3.key").exists());

    let issued = run_offline(&[
        "--json",
        "token",
        "issue",
        "--audience",
        "agency",
        "--issuer-key",
        s(&key),
        "--office",
        CUSTOMS,
        "--actor",
        "clerk-wang",
        "--roles",
        "clerk,reader",
        "--ttl",
        "8h",
    ])
    .await;
    issued.expect_code(0);
    let token = issued.json()["token"].as_str().expect("token").to_owned();
    let trusted = TrustedIssuers::load(&trust).expect("trust file");
    let claims = trusted
        .verify(&token, Audience::Agency, OffsetDateTime::now_utc())
        .expect("token verifies");
    assert_eq!(claims.office, office(CUSTOMS));
    assert_eq!(claims.actor, "clerk-wang");
    assert_eq!(claims.roles, [Role::Clerk, Role::Reader]);
    assert!(claims.exp - claims.iat == 8 * 3600);
    assert!(
        trusted
            .verify(
                &token,
                Audience::Agency,
                OffsetDateTime::now_utc() + time::Duration::hours(9)
            )
            .is_err(),
        "it expires"
    );

    // Plain output is the token alone, for scripts.
    let plain = run_offline(&[
        "token",
        "issue",
        "--audience",
        "agency",
        "--issuer-key",
        s(&key),
        "--office",
        CUSTOMS,
        "--actor",
        "a",
        "--roles",
        "operator",
    ])
    .await;
    plain.expect_code(0);
    assert_eq!(plain.stdout.trim().lines().count(), 1);
    assert!(plain.stdout.starts_with("cb1."));

    for bad in [
        vec!["--roles", "king"],
        vec!["--roles", "clerk", "--ttl", "forever"],
        vec!["--roles", "clerk", "--ttl", "0s"],
    ] {
        let mut args = vec![
            "token",
            "issue",
            "--audience",
            "agency",
            "--issuer-key",
            s(&key),
            "--office",
            CUSTOMS,
            "--actor",
            "a",
        ];
        args.extend(bad.iter().copied());
        let run = run_offline(&args).await;
        run.expect_code(2);
    }

    // An absurd lifetime is a usage error naming the limit, not a panic.
    let absurd = run_offline(&[
        "token",
        "issue",
        "--audience",
        "agency",
        "--issuer-key",
        s(&key),
        "--office",
        CUSTOMS,
        "--actor",
        "a",
        "--roles",
        "clerk",
        "--ttl",
        "100000years",
    ])
    .await;
    absurd.expect_code(2);
    assert!(
        absurd
            .stderr
            .contains("is longer than the longest token lifetime, 366 days"),
        "{}",
        absurd.stderr
    );
    assert!(!absurd.stderr.contains("panicked"), "{}", absurd.stderr);

    // The issuer was trusted for customs offices only: a token it signs for the court
    // verifies nowhere.
    let court = run_offline(&[
        "token",
        "issue",
        "--audience",
        "agency",
        "--issuer-key",
        s(&key),
        "--office",
        "court:hangzhou",
        "--actor",
        "a",
        "--roles",
        "clerk",
    ])
    .await;
    court.expect_code(0);
    assert_eq!(
        trusted.verify(
            court.stdout.trim(),
            Audience::Agency,
            OffsetDateTime::now_utc()
        ),
        Err(TokenError::OfficeNotAllowed {
            issuer: "ops-2026".into(),
            office: "court:hangzhou".into()
        })
    );
    // And a trust file entry always names its limits.
    let unlimited = run_offline(&[
        "issuer",
        "generate",
        "--key-id",
        "ops-2028",
        "--out",
        s(&dir.path().join("i4.key")),
        "--trust-file",
        s(&trust),
    ])
    .await;
    unlimited.expect_code(2);
    assert!(
        unlimited.stderr.contains("--trust-file needs --offices"),
        "{}",
        unlimited.stderr
    );
}

#[tokio::test]
async fn a_generated_log_key_is_private_its_vkey_verifies_what_it_signs_and_it_needs_a_name() {
    use casebus_tlog::checkpoint::{Checkpoint, SignedCheckpoint};
    use casebus_tlog::note::NoteVerifier;

    let dir = tempfile::tempdir().expect("tempdir");
    let key = dir.path().join("log.key");
    let generated = run_offline(&[
        "--json",
        "keys",
        "generate",
        "--kind",
        "log",
        "--name",
        "casebus.example/cases",
        "--out",
        s(&key),
    ])
    .await;
    generated.expect_code(0);
    assert_private(&key);
    let vkey_text = std::fs::read_to_string(dir.path().join("log.key.vkey")).expect("vkey file");
    assert_eq!(generated.json()["verifier_key"], vkey_text.trim());
    let verifier = NoteVerifier::from_vkey(vkey_text.trim()).expect("a C2SP verifier key");
    assert!(matches!(verifier, NoteVerifier::Ed25519 { .. }));

    // What the secret key signs verifies under the verifier key written beside it.
    let signer = casebus_runtime::tlog_keys::load_log_key(&key).expect("a log key");
    let note = Checkpoint {
        origin: "casebus.example/cases".into(),
        size: 1,
        root: casebus_tlog::merkle::empty_root(),
        extensions: vec![],
    }
    .sign(&signer)
    .expect("signed");
    SignedCheckpoint::open(
        note.to_text().as_bytes(),
        &verifier,
        "casebus.example/cases",
    )
    .expect("verifies");

    let witness = dir.path().join("witness.key");
    run_offline(&[
        "keys",
        "generate",
        "--kind",
        "witness",
        "--name",
        "witness.example/court",
        "--out",
        s(&witness),
    ])
    .await
    .expect_code(0);
    let vkey = std::fs::read_to_string(dir.path().join("witness.key.vkey")).expect("vkey");
    assert!(matches!(
        NoteVerifier::from_vkey(vkey.trim()).expect("vkey"),
        NoteVerifier::Cosigner { .. }
    ));

    let nameless = run_offline(&[
        "keys",
        "generate",
        "--kind",
        "log",
        "--out",
        s(&dir.path().join("x.key")),
    ])
    .await;
    assert_eq!(nameless.code, 2, "{}", nameless.stderr);
    assert!(nameless.stderr.contains("--name"), "{}", nameless.stderr);
    let again = run_offline(&[
        "keys",
        "generate",
        "--kind",
        "log",
        "--name",
        "casebus.example/cases",
        "--out",
        s(&key),
    ])
    .await;
    assert_ne!(again.code, 0);
    assert!(again.stderr.contains("exists already"), "{}", again.stderr);
}
