//! Court-grade bundles over the real binaries: a real nats-server, the real gateway with
//! `--tlog-file`/`--log-key` publishing checkpoints, two real `casebus witness`
//! processes cosigning them, `casebus export --gateway` writing a casebus.bundle.v2, and
//! `casebus verify --bundle` checking it with NATS unreachable against a policy file
//! written here from the keys (not by the code under test).
//!
//! The exported bundle verifies with the policy (quorum 2 of the two witnesses), the
//! exporting operator's key and a checkpoint the court holds from earlier. Each
//! tampered copy fails with its own reason code: the last event removed (`case_head`),
//! one from the middle (the chain's `gap`), a changed byte of a stored message
//! (`inclusion`), the office keys or the operator key swapped for others
//! (`untrusted_key`, `operator_key_untrusted`), the checkpoint re-signed by an unknown
//! key (`checkpoint_signature`), a cosignature removed (`cosignature_quorum`), an
//! inclusion proof removed (`inclusion_missing`), the consistency proof removed
//! (`consistency_missing`), the source claimed beyond the checkpoint (`not_covered`, and
//! `manifest`: the seal covers the source), the operator's seal altered
//! (`operator_signature`), a known checkpoint the log contradicts (`consistency`), and
//! one the log key did not sign (`known_checkpoint`); export itself refuses, writing
//! nothing, a known checkpoint the gateway's log contradicts (a fork), one without the
//! log key's signature line and one of another origin. `casebus verify --log`
//! recomputes the whole log from the stream against the latest checkpoint. Export is
//! refused while the gateway's checkpoint does not cover the case's last event, and a
//! bad policy file is refused naming its line and field.

mod gateway_common;

use std::path::{Path, PathBuf};
use std::process::Output;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;

use casebus_proto::gateway::v1::GetCheckpointRequest;
use casebus_runtime::tlog_keys::{LogKeyKind, generate, load_log_key};
use casebus_test_support::wait_until;
use casebus_tlog::checkpoint::Checkpoint;
use casebus_tlog::merkle::Hash;
use casebus_tlog::note::Note;

use gateway_common::catalogue::{declined_case, note};
use gateway_common::*;

const ORIGIN: &str = "casebus.test/bundles";
const COURT_WITNESS: &str = "witness.test/court";
const CUSTOMS_WITNESS: &str = "witness.test/customs";

fn casebus_binary() -> PathBuf {
    let path = casebus_tests::binaries::bin_dir().join("casebus");
    assert!(
        path.is_file(),
        "{} not found; build it with `cargo build -p casebus-cli`",
        path.display()
    );
    path
}

/// Runs `casebus` with `args`; `nats` is the server's URL, or `None` for a closed port
/// (so a verification is certainly offline).
async fn casebus(f: &Fixture, nats: Option<&str>, args: &[&str]) -> Output {
    tokio::process::Command::new(casebus_binary())
        .args(args)
        .env("CASEBUS_NATS_URL", nats.unwrap_or("nats://127.0.0.1:1"))
        .env("CASEBUS_REGISTRY", &f.registry_path)
        .env_remove("RUST_LOG")
        .kill_on_drop(true)
        .output()
        .await
        .expect("run casebus")
}

fn text(p: &Path) -> String {
    p.display().to_string()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn json(o: &Output) -> serde_json::Value {
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| {
        panic!(
            "stdout is not JSON ({e}): {}\nstderr: {}",
            String::from_utf8_lossy(&o.stdout),
            stderr(o)
        )
    })
}

fn codes(o: &Output) -> Vec<String> {
    let mut codes: Vec<String> = json(o)["failures"]
        .as_array()
        .expect("failures")
        .iter()
        .map(|f| f["code"].as_str().expect("code").to_owned())
        .collect();
    codes.sort();
    codes.dedup();
    codes
}

/// The gateway flags of a log publishing checkpoints with `log_key`.
fn log_args(f: &Fixture, name: &str, log_key: &Path, every: &str, interval: &str) -> Vec<String> {
    [
        "--tlog-file",
        &text(&f.path(&format!("{name}.tlog"))),
        "--tlog-interval",
        "200ms",
        "--log-key",
        &text(log_key),
        "--checkpoint-every",
        every,
        "--checkpoint-interval",
        interval,
    ]
    .map(str::to_owned)
    .to_vec()
}

/// Waits for the gateway's latest checkpoint to be of `size` with `cosignatures`
/// signature lines besides the log's; returns its note text.
async fn checkpoint_of(gateway: &Gateway, token: &str, size: u64, cosignatures: usize) -> String {
    let mut client = gateway.client(Some(token)).await;
    wait_until(
        PROJECTION_TIMEOUT,
        &format!("a checkpoint of size {size} with {cosignatures} cosignature(s)"),
        async || {
            let c = client.get_checkpoint(GetCheckpointRequest {}).await.ok()?;
            let c = c.into_inner();
            let lines = Note::parse(c.checkpoint.as_bytes())
                .ok()?
                .signatures()
                .len();
            (c.size == size && lines == 1 + cosignatures).then_some(c.checkpoint)
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}; the gateway's log:\n{}", gateway.log_text()))
}

/// Every string in `value` with `from` replaced by `to` (the checkpoint note is both
/// in `proofs.checkpoint` and inside every tlog-proof).
fn replace_everywhere(value: &mut serde_json::Value, from: &str, to: &str) {
    match value {
        serde_json::Value::String(s) => *s = s.replace(from, to),
        serde_json::Value::Array(a) => a.iter_mut().for_each(|v| replace_everywhere(v, from, to)),
        serde_json::Value::Object(o) => {
            o.values_mut().for_each(|v| replace_everywhere(v, from, to))
        }
        _ => {}
    }
}

struct Witnessed {
    f: Fixture,
    gateway: Gateway,
    policy: PathBuf,
    operator_vkey: String,
    operator_key: PathBuf,
    known: PathBuf,
    token_file: PathBuf,
    log_key: PathBuf,
}

impl Witnessed {
    /// Exports `case` (with `--known-checkpoint known` when given) to `name`.
    async fn export(&self, case: &str, name: &str, known: Option<&Path>) -> (PathBuf, Output) {
        let out = self.f.path(name);
        let mut args = vec![
            "--json".to_owned(),
            "export".into(),
            "--case".into(),
            case.into(),
            "--out".into(),
            text(&out),
            "--gateway".into(),
            format!("http://{}", self.gateway.grpc),
            "--gateway-token-file".into(),
            text(&self.token_file),
            "--operator-key".into(),
            text(&self.operator_key),
        ];
        if let Some(known) = known {
            args.extend(["--known-checkpoint".into(), text(known)]);
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let run = casebus(&self.f, Some(&self.f.server.url()), &args).await;
        (out, run)
    }

    /// Verifies `bundle` offline with the policy, the operator key and `known`.
    async fn verify(&self, bundle: &Path, policy: &Path, known: &Path) -> Output {
        casebus(
            &self.f,
            None,
            &[
                "--json",
                "verify",
                "--bundle",
                &text(bundle),
                "--policy",
                &text(policy),
                "--operator-vkey",
                &self.operator_vkey,
                "--known-checkpoint",
                &text(known),
            ],
        )
        .await
    }

    /// Writes a tampered copy of the bundle at `from`.
    fn tamper(
        &self,
        from: &Path,
        name: &str,
        change: impl FnOnce(&mut serde_json::Value),
    ) -> PathBuf {
        let mut bundle: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(from).expect("bundle")).expect("json");
        change(&mut bundle);
        let path = self.f.path(name);
        std::fs::write(&path, serde_json::to_vec_pretty(&bundle).expect("json")).expect("write");
        path
    }
}

/// A gateway publishing a checkpoint at every entry, two witnesses that have cosigned
/// the case `id`'s history in two rounds, the policy of both, an operator key, and the
/// first round's checkpoint kept as the court's known one.
async fn witnessed(id: &str) -> Witnessed {
    let f = Fixture::start().await;
    let case_id = case(id);
    f.script(&case_id, declined_case()).await;
    let log_key = f.path("log.key");
    let log = generate(LogKeyKind::Log, ORIGIN, &log_key).expect("log key");
    let mut witnesses = Vec::new();
    for (label, name) in [("court", COURT_WITNESS), ("customs", CUSTOMS_WITNESS)] {
        let key = f.path(&format!("{label}-witness.key"));
        let verifier = generate(LogKeyKind::Witness, name, &key).expect("witness key");
        witnesses.push((label, key, verifier));
    }
    let operator_key = f.path("operator.key");
    let run = casebus(
        &f,
        None,
        &[
            "keys",
            "generate",
            "--kind",
            "operator",
            "--name",
            "ops.test/zhang",
            "--out",
            &text(&operator_key),
        ],
    )
    .await;
    assert_eq!(run.status.code(), Some(0), "{}", stderr(&run));
    let operator_vkey = std::fs::read_to_string(f.path("operator.key.vkey"))
        .expect("operator vkey")
        .trim()
        .to_owned();

    // The policy, written from the keys by hand.
    let policy = f.path("court.policy");
    let mut policy_text = format!(
        "# the log and the agencies' witnesses\nlog {}\n",
        log.to_vkey()
    );
    for (label, _, verifier) in &witnesses {
        policy_text.push_str(&format!("witness {label} {}\n", verifier.to_vkey()));
    }
    policy_text.push_str("quorum 2\n");
    std::fs::write(&policy, policy_text).expect("policy");

    let args = log_args(&f, "gw-bundle", &log_key, "1", "200ms");
    let gateway = f.gateway_with("gw-bundle", &f.db("gw-bundle"), &args).await;
    let token = f.reader(CUSTOMS);
    let token_file = f.path("reader.token");
    std::fs::write(&token_file, &token).expect("token file");
    let known = f.path("known.checkpoint");
    for round in 0..2 {
        if round == 1 {
            for n in 0..2 {
                f.append(CUSTOMS, &case_id, note(&format!("later {n}")), None)
                    .await;
            }
        }
        let size = f.cases_last().await;
        checkpoint_of(&gateway, &token, size, 0).await;
        for (label, key, _) in &witnesses {
            let state = f.path(&format!("{label}-witness.json"));
            let run = casebus(
                &f,
                Some(&f.server.url()),
                &[
                    "--json",
                    "witness",
                    "--origin",
                    ORIGIN,
                    "--log-vkey",
                    &text(&f.path("log.key.vkey")),
                    "--witness-key",
                    &text(key),
                    "--state",
                    &text(&state),
                    "--gateway",
                    &format!("http://{}", gateway.grpc),
                    "--gateway-token-file",
                    &text(&token_file),
                    "--once",
                ],
            )
            .await;
            assert_eq!(
                run.status.code(),
                Some(0),
                "witness {label}: {}",
                stderr(&run)
            );
        }
        let note = checkpoint_of(&gateway, &token, size, 2).await;
        if round == 0 {
            std::fs::write(&known, note).expect("known checkpoint");
        }
    }
    Witnessed {
        f,
        gateway,
        policy,
        operator_vkey,
        operator_key,
        known,
        token_file,
        log_key,
    }
}

#[tokio::test]
async fn an_exported_bundle_verifies_offline_and_each_tampering_fails_with_its_own_reason() {
    let mut w = witnessed("BND-1").await;
    let (bundle, run) = w.export("BND-1", "BND-1.bundle.json", Some(&w.known)).await;
    assert_eq!(run.status.code(), Some(0), "export: {}", stderr(&run));
    let exported = json(&run);
    assert_eq!(exported["format"], "casebus.bundle.v2");
    assert_eq!(exported["operator"], w.operator_vkey.as_str());
    let size = w.f.cases_last().await;
    assert_eq!(exported["checkpoint_size"], size);

    let content: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&bundle).expect("bundle")).expect("json");
    let events = content["events"].as_array().expect("events").len();
    assert_eq!(
        content["proofs"]["inclusion"].as_array().map(Vec::len),
        Some(events),
        "one inclusion proof per event"
    );
    let first_proof = content["proofs"]["inclusion"][0]["tlog_proof"]
        .as_str()
        .expect("proof text");
    assert!(
        first_proof.starts_with("c2sp.org/tlog-proof@v1\nindex "),
        "{first_proof}"
    );
    assert!(
        content["proofs"]["consistency"]["proof"]
            .as_array()
            .is_some(),
        "the consistency proof to the known checkpoint is carried"
    );

    // The untouched bundle verifies offline with the policy.
    let ok = w.verify(&bundle, &w.policy, &w.known).await;
    assert_eq!(
        ok.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&ok.stdout)
    );
    let report = json(&ok);
    assert_eq!(report["ok"], true);
    assert_eq!(report["verified"], events);
    assert_eq!(report["inclusion_proofs_verified"], events);
    assert_eq!(report["case_head_proven"], true);
    assert_eq!(report["consistent_with_known"], true);
    assert_eq!(report["checkpoint_size"], size);
    assert_eq!(report["witnesses"], serde_json::json!(["court", "customs"]));

    // Tampered copies, each with the codes it must fail with and no other.
    let checkpoint = content["proofs"]["checkpoint"]
        .as_str()
        .expect("checkpoint")
        .to_owned();
    let foreign_log = w.f.path("foreign-log.key");
    generate(LogKeyKind::Log, ORIGIN, &foreign_log).expect("foreign log key");
    let foreign = load_log_key(&foreign_log).expect("foreign log key");
    let text_part = Note::parse(checkpoint.as_bytes())
        .expect("note")
        .text()
        .to_owned();
    let mut resigned = Note::new(text_part.clone()).expect("note");
    resigned
        .add_signature(foreign.sign(&resigned))
        .expect("sign");
    let original = Note::parse(checkpoint.as_bytes()).expect("note");
    let mut fewer = Note::new(text_part.clone()).expect("note");
    for s in original
        .signatures()
        .iter()
        .filter(|s| s.name != CUSTOMS_WITNESS)
    {
        fewer.add_signature(s.clone()).expect("line");
    }
    let thief_key = w.f.path("thief.key");
    generate(LogKeyKind::Log, "ops.test/zhang", &thief_key).expect("thief key");
    let thief = load_log_key(&thief_key).expect("thief key");
    let seal = content["operator"]["note"]
        .as_str()
        .expect("seal")
        .to_owned();
    let seal_text = Note::parse(seal.as_bytes())
        .expect("seal")
        .text()
        .to_owned();
    let mut stolen = Note::new(seal_text).expect("note");
    stolen.add_signature(thief.sign(&stolen)).expect("sign");
    let offices = content["offices"].as_array().expect("offices");
    assert!(offices.len() > 1, "several offices signed: {offices:?}");
    let first_office = offices[0]["id"].clone();
    let first_key = offices[0]["keys"][0]["public_key"].clone();

    type Change = Box<dyn FnOnce(&mut serde_json::Value)>;
    let cases: Vec<(&str, Change, &[&str])> = vec![
        (
            "last event removed",
            Box::new(|b| {
                b["events"].as_array_mut().expect("events").pop();
                b["proofs"]["inclusion"]
                    .as_array_mut()
                    .expect("proofs")
                    .pop();
            }),
            &["case_head", "manifest"],
        ),
        (
            "middle event removed",
            Box::new(|b| {
                b["events"].as_array_mut().expect("events").remove(2);
                b["proofs"]["inclusion"]
                    .as_array_mut()
                    .expect("proofs")
                    .remove(2);
            }),
            &["gap", "manifest"],
        ),
        (
            "a byte changed",
            Box::new(|b| {
                let e = &mut b["events"][1]["signed_event"];
                let mut raw = base64_decode(e.as_str().expect("b64"));
                let at = raw.len() / 2;
                raw[at] ^= 0x01;
                *e = base64_encode(&raw).into();
            }),
            &["bad_signature", "gap", "inclusion", "manifest"],
        ),
        (
            "office keys swapped",
            Box::new(move |b| {
                for o in b["offices"].as_array_mut().expect("offices") {
                    if o["id"] != first_office {
                        o["keys"][0]["public_key"] = first_key.clone();
                    }
                }
            }),
            &["manifest", "untrusted_key"],
        ),
        (
            "operator key swapped",
            Box::new(move |b| {
                b["operator"]["vkey"] = thief.verifier().to_vkey().into();
                b["operator"]["note"] = stolen.to_text().into();
            }),
            &["manifest", "operator_key_untrusted"],
        ),
        (
            "checkpoint signed by an unknown key",
            Box::new({
                let (from, to) = (checkpoint.clone(), resigned.to_text());
                move |b| replace_everywhere(b, &from, &to)
            }),
            &["checkpoint_signature", "manifest"],
        ),
        (
            "a cosignature removed",
            Box::new({
                let (from, to) = (checkpoint.clone(), fewer.to_text());
                move |b| replace_everywhere(b, &from, &to)
            }),
            &["cosignature_quorum", "manifest"],
        ),
        (
            "an inclusion proof removed",
            Box::new(|b| {
                b["proofs"]["inclusion"]
                    .as_array_mut()
                    .expect("proofs")
                    .remove(1);
            }),
            &["inclusion_missing", "manifest"],
        ),
        (
            "the consistency proof removed",
            Box::new(|b| b["proofs"]["consistency"] = serde_json::Value::Null),
            &["consistency_missing", "manifest"],
        ),
        (
            "the source claimed beyond the checkpoint",
            Box::new(move |b| b["source"]["last_sequence"] = (size + 5).into()),
            &["manifest", "not_covered"],
        ),
        (
            "the operator's seal altered",
            Box::new({
                let mut altered = Note::parse(seal.as_bytes()).expect("seal");
                let mut line = altered.signatures()[0].clone();
                line.signature[10] ^= 0x01;
                altered = Note::new(altered.text().to_owned()).expect("note");
                altered.add_signature(line).expect("line");
                move |b| b["operator"]["note"] = altered.to_text().into()
            }),
            &["operator_signature"],
        ),
    ];
    let mut wrong = Vec::new();
    for (what, change, expected) in cases {
        let path = w.tamper(&bundle, &format!("{}.json", what.replace(' ', "-")), change);
        let run = w.verify(&path, &w.policy, &w.known).await;
        if run.status.code() != Some(1) || codes(&run) != expected {
            wrong.push(format!(
                "{what}: exit {:?}, codes {:?}, expected {expected:?}: {}",
                run.status.code(),
                codes(&run),
                String::from_utf8_lossy(&run.stdout)
            ));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));

    // A known checkpoint that the log contradicts: the court's size, another root,
    // signed by the real log key.
    let known_note = Note::parse(&std::fs::read(&w.known).expect("known")).expect("note");
    let mut forged = Checkpoint::parse(known_note.text()).expect("checkpoint");
    forged.root = Hash([7; 32]);
    let forged = forged
        .sign(&load_log_key(&w.log_key).expect("log key"))
        .expect("sign");
    let forged_path = w.f.path("forged.checkpoint");
    std::fs::write(&forged_path, forged.to_text()).expect("write");
    let run = w.verify(&bundle, &w.policy, &forged_path).await;
    assert_eq!(run.status.code(), Some(1));
    assert_eq!(
        codes(&run),
        ["consistency"],
        "{}",
        String::from_utf8_lossy(&run.stdout)
    );

    // A known checkpoint the policy's log key did not sign proves nothing.
    let unsigned_path = w.f.path("unsigned.checkpoint");
    std::fs::write(&unsigned_path, resigned.to_text()).expect("write");
    let run = w.verify(&bundle, &w.policy, &unsigned_path).await;
    assert_eq!(run.status.code(), Some(1));
    assert_eq!(
        codes(&run),
        ["known_checkpoint"],
        "{}",
        String::from_utf8_lossy(&run.stdout)
    );

    // Export checks the court's checkpoint too, and writes nothing a verifier could only
    // refuse: one the log contradicts is a fork, one without the log key's signature line
    // or of another origin is not of this log.
    let mut other_origin = Checkpoint::parse(known_note.text()).expect("checkpoint");
    other_origin.origin = "casebus.test/elsewhere".into();
    let other_origin = other_origin
        .sign(&load_log_key(&w.log_key).expect("log key"))
        .expect("sign");
    let other_origin_path = w.f.path("elsewhere.checkpoint");
    std::fs::write(&other_origin_path, other_origin.to_text()).expect("write");
    for (known, name, says) in [
        (
            &forged_path,
            "forked.bundle.json",
            "is not consistent with it",
        ),
        (
            &unsigned_path,
            "unsigned.bundle.json",
            "carries no signature of the log key",
        ),
        (
            &other_origin_path,
            "elsewhere.bundle.json",
            "casebus.test/elsewhere",
        ),
    ] {
        let (out, run) = w.export("BND-1", name, Some(known)).await;
        assert_eq!(run.status.code(), Some(1), "{}", stderr(&run));
        assert!(
            stderr(&run).contains(says) && stderr(&run).contains("nothing exported"),
            "{name}: {}",
            stderr(&run)
        );
        assert!(
            !out.exists(),
            "{name}: a refused export wrote {}",
            out.display()
        );
    }

    // The same bundle without a policy proves nothing about the log; a v1 bundle carries
    // no proofs to check.
    let run = casebus(
        &w.f,
        None,
        &[
            "--json",
            "verify",
            "--bundle",
            &text(&bundle),
            "--operator-vkey",
            &w.operator_vkey,
        ],
    )
    .await;
    assert_eq!(codes(&run), ["no_policy"]);
    let v1 = w.f.path("BND-1.v1.json");
    let run = casebus(
        &w.f,
        Some(&w.f.server.url()),
        &["export", "--case", "BND-1", "--out", &text(&v1)],
    )
    .await;
    assert_eq!(run.status.code(), Some(0), "{}", stderr(&run));
    let run = casebus(
        &w.f,
        None,
        &[
            "--json",
            "verify",
            "--bundle",
            &text(&v1),
            "--policy",
            &text(&w.policy),
        ],
    )
    .await;
    assert_eq!(codes(&run), ["no_proofs"]);
    let run = casebus(&w.f, None, &["--json", "verify", "--bundle", &text(&v1)]).await;
    assert_eq!(
        run.status.code(),
        Some(0),
        "a v1 bundle still verifies as before: {}",
        stderr(&run)
    );

    // The whole log against the stream.
    let run = casebus(
        &w.f,
        Some(&w.f.server.url()),
        &["--json", "verify", "--log", "--policy", &text(&w.policy)],
    )
    .await;
    assert_eq!(
        run.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&run.stdout)
    );
    let report = json(&run);
    assert_eq!(report["checkpoint_size"], size);
    assert_eq!(report["messages_checked"], size);
    assert_eq!(report["witnesses"], serde_json::json!(["court", "customs"]));
    w.gateway.stop().await;
}

#[tokio::test]
async fn export_is_refused_while_the_checkpoint_does_not_cover_the_case_or_lacks_its_cosignatures()
{
    let f = Fixture::start().await;
    let id = case("BND-2");
    f.script(&id, declined_case()).await;
    let log_key = f.path("log.key");
    generate(LogKeyKind::Log, ORIGIN, &log_key).expect("log key");
    let operator_key = f.path("operator.key");
    generate(LogKeyKind::Log, "ops.test/li", &operator_key).expect("operator key");
    // One checkpoint at the first round, then none for an hour.
    let args = log_args(&f, "gw-slow", &log_key, "1000000", "1h");
    let mut gateway = f.gateway_with("gw-slow", &f.db("gw-slow"), &args).await;
    let token = f.reader(CUSTOMS);
    let size = f.cases_last().await;
    checkpoint_of(&gateway, &token, size, 0).await;
    let token_file = f.path("reader.token");
    std::fs::write(&token_file, &token).expect("token");
    let out = f.path("BND-2.bundle.json");
    let grpc = format!("http://{}", gateway.grpc);
    let export = [
        "export",
        "--case",
        "BND-2",
        "--out",
        &text(&out),
        "--gateway",
        &grpc,
        "--gateway-token-file",
        &text(&token_file),
        "--operator-key",
        &text(&operator_key),
    ];
    // The checkpoint covers the case, but no witness cosigned it: a court whose policy
    // needs one would get a bundle that cannot verify, so export waits for them.
    let run = casebus(
        &f,
        Some(&f.server.url()),
        &[&export[..], &["--min-cosignatures", "1"]].concat(),
    )
    .await;
    assert_eq!(run.status.code(), Some(1), "{}", stderr(&run));
    let err = stderr(&run);
    assert!(
        err.contains(&format!(
            "the gateway's latest checkpoint (tree size {size}) carries 0 cosignatures, fewer than --min-cosignatures 1"
        )),
        "{err}"
    );
    assert!(!out.exists(), "nothing is written");
    f.append(CUSTOMS, &id, note("after the checkpoint"), None)
        .await;
    let run = casebus(&f, Some(&f.server.url()), &export).await;
    assert_eq!(run.status.code(), Some(1), "{}", stderr(&run));
    let err = stderr(&run);
    assert!(
        err.contains(&format!(
            "the gateway's latest checkpoint (tree size {size}) does not cover the last event of case BND-2 (CASES sequence {})",
            size + 1
        )) && err.contains("--checkpoint-every"),
        "{err}"
    );
    assert!(!out.exists(), "nothing is written");
    gateway.stop().await;
}

#[tokio::test]
async fn a_bad_policy_file_is_refused_naming_its_line_and_field() {
    let f = Fixture::start().await;
    let log_key = f.path("log.key");
    let log = generate(LogKeyKind::Log, ORIGIN, &log_key).expect("log key");
    let witness = generate(LogKeyKind::Witness, COURT_WITNESS, &f.path("w.key")).expect("key");
    let bundle = f.path("any.bundle.json");
    std::fs::write(&bundle, "{}").expect("bundle");
    let cases = [
        (
            format!(
                "log {}\nwitnes court {}\nquorum 1\n",
                log.to_vkey(),
                witness.to_vkey()
            ),
            "line 2: unknown keyword \"witnes\"",
        ),
        (
            format!(
                "log {}\nwitness court {}\nquorum 1\n",
                witness.to_vkey(),
                witness.to_vkey()
            ),
            "line 1: field <vkey>: a key of signature type 0x04 where 0x01 is needed",
        ),
        (
            format!(
                "# c\nlog {}\nwitness court {}\nquorum 2\n",
                log.to_vkey(),
                witness.to_vkey()
            ),
            "line 4: field <n> of quorum: 2 exceeds the 1 witness(es) listed",
        ),
        (
            format!("log {}\nwitness court\n", log.to_vkey()),
            "line 2: witness needs the field <vkey>",
        ),
    ];
    for (i, (policy, expected)) in cases.iter().enumerate() {
        let path = f.path(&format!("bad-{i}.policy"));
        std::fs::write(&path, policy).expect("policy");
        let run = casebus(
            &f,
            None,
            &[
                "verify",
                "--bundle",
                &text(&bundle),
                "--policy",
                &text(&path),
            ],
        )
        .await;
        assert_eq!(run.status.code(), Some(2), "{}", stderr(&run));
        let err = stderr(&run);
        assert!(
            err.contains(&format!("--policy {}: {expected}", path.display())),
            "{err}"
        );
    }
}

fn base64_decode(text: &str) -> Vec<u8> {
    B64.decode(text).expect("base64")
}

fn base64_encode(bytes: &[u8]) -> String {
    B64.encode(bytes)
}

/// Replaces `CASES` by a copy of its first messages in which `change` may alter or drop
/// each `(sequence, payload)`: what an operator with the stream's administration rights
/// could do. The checkpoints stay as the witnesses cosigned them.
async fn rewrite_cases(f: &Fixture, change: impl Fn(u64, Vec<u8>) -> Option<Vec<u8>>) {
    let js = f.server.jetstream().await.expect("jetstream");
    let last = f.cases_last().await;
    let stream = js.get_stream("CASES").await.expect("CASES");
    let mut messages = Vec::new();
    for sequence in 1..=last {
        let m = stream
            .get_raw_message(sequence)
            .await
            .expect("stored message");
        messages.push((sequence, m.subject.to_string(), m.payload.to_vec()));
    }
    js.delete_stream("CASES").await.expect("delete CASES");
    casebus_bus::provision::provision(&js, &casebus_bus::StreamSettings::default())
        .await
        .expect("provision again");
    for (sequence, subject, payload) in messages {
        if let Some(payload) = change(sequence, payload) {
            js.publish(subject, payload.into())
                .await
                .expect("publish")
                .await
                .expect("stored");
        }
    }
}

#[tokio::test]
async fn verify_log_finds_a_rewritten_stream() {
    let mut w = witnessed("LOG-1").await;
    w.gateway.stop().await;
    let size = w.f.cases_last().await;
    let verify_log = async || {
        let run = casebus(
            &w.f,
            Some(&w.f.server.url()),
            &["--json", "verify", "--log", "--policy", &text(&w.policy)],
        )
        .await;
        let out = String::from_utf8_lossy(&run.stdout).into_owned();
        (run.status.code(), codes(&run), out)
    };
    let (code, found, out) = verify_log().await;
    assert_eq!(
        (code, found.len()),
        (Some(0), 0),
        "the untouched stream: {out}"
    );

    // One byte of a stored message in the middle changed (its last: the signature's).
    let middle = size / 2;
    rewrite_cases(&w.f, |sequence, mut payload| {
        if sequence == middle {
            *payload.last_mut().expect("a payload") ^= 0x01;
        }
        Some(payload)
    })
    .await;
    assert_eq!(w.f.cases_last().await, size, "the copy is as long");
    let (code, found, out) = verify_log().await;
    assert_eq!(code, Some(1), "{out}");
    assert_eq!(found, ["log_root"], "{out}");
    assert!(
        out.contains(&format!("the first {size} messages of CASES")),
        "the failure names the tree it recomputed: {out}"
    );

    // The last message dropped: the stream is shorter than the witnessed tree.
    rewrite_cases(&w.f, |sequence, payload| {
        (sequence < size).then_some(payload)
    })
    .await;
    let (code, found, out) = verify_log().await;
    assert_eq!(code, Some(1), "{out}");
    assert_eq!(found, ["log_short"], "{out}");
    assert!(
        out.contains(&format!(
            "holds {} messages, the checkpoint states {size}",
            size - 1
        )),
        "{out}"
    );
}
