//! `casebus witness` over the real binaries: against a gateway publishing checkpoints
//! (`--log-key`), the witness cosigns the checkpoints it finds (each extending the last
//! one it cosigned, by the gateway's consistency proof), publishes the cosignature, and
//! the gateway's GetCheckpoint then carries a cosignature line that verifies with the
//! witness's verifier key. Shown a fork forged with the real log key (a checkpoint of
//! the size it cosigned with another root, and a smaller tree that is not a prefix), it
//! refuses both: an error line each, the forks counter of its state at 2, exit code 1,
//! nothing cosigned, and its state still at the honest checkpoint. Following the stream
//! (no `--once`), it reports the same on its metrics endpoint, and stops cleanly on
//! SIGTERM.

mod gateway_common;

use std::process::Output;

use casebus_bus::ops::{Ops, PublishOptions};
use casebus_bus::subjects::{CHECKPOINTS_STREAM, checkpoint_subject, cosignature_subject};
use casebus_proto::gateway::v1::GetCheckpointRequest;
use casebus_runtime::tlog_keys::{LogKeyKind, generate, load_log_key};
use casebus_test_support::wait_until;
use casebus_tlog::checkpoint::{Checkpoint, SignedCheckpoint};
use casebus_tlog::merkle::Hash;
use casebus_tlog::note::Note;

use gateway_common::catalogue::{declined_case, note};
use gateway_common::*;

const ORIGIN: &str = "casebus.test/witnessed";
const WITNESS: &str = "witness.test/court";

fn casebus_binary() -> std::path::PathBuf {
    let path = casebus_tests::binaries::bin_dir().join("casebus");
    assert!(
        path.is_file(),
        "{} not found; build it with `cargo build -p casebus-cli`",
        path.display()
    );
    path
}

async fn witness(f: &Fixture, args: &[String]) -> Output {
    tokio::process::Command::new(casebus_binary())
        .arg("--json")
        .arg("witness")
        .args(args)
        .env("CASEBUS_NATS_URL", f.server.url())
        .output()
        .await
        .expect("run casebus witness")
}

fn state(f: &Fixture) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(f.path("witness.json")).expect("state"))
        .expect("json state")
}

/// A gateway publishing checkpoints of its log (signed with `log.key`, a checkpoint
/// per entry), the court's witness key, and the witness's arguments for it.
struct Witnessed {
    gateway: Gateway,
    log_key: std::path::PathBuf,
    log_verifier: casebus_tlog::note::NoteVerifier,
    witness_verifier: casebus_tlog::note::NoteVerifier,
    witness_args: Vec<String>,
}

async fn witnessed(f: &Fixture, consumer: &str) -> Witnessed {
    let log_key = f.path("log.key");
    let log_verifier = generate(LogKeyKind::Log, ORIGIN, &log_key).expect("log key");
    let witness_key = f.path("court-witness.key");
    let witness_verifier =
        generate(LogKeyKind::Witness, WITNESS, &witness_key).expect("witness key");
    let path = |p: &std::path::Path| p.display().to_string();
    let args = [
        "--tlog-file",
        &path(&f.path(&format!("{consumer}.tlog"))),
        "--tlog-interval",
        "200ms",
        "--log-key",
        &path(&log_key),
        "--checkpoint-every",
        "1",
        "--checkpoint-interval",
        "200ms",
    ]
    .map(str::to_owned);
    let gateway = f.gateway_with(consumer, &f.db(consumer), &args).await;
    let token_file = f.path("witness.token");
    std::fs::write(&token_file, f.reader(COURT)).expect("token file");
    let witness_args = [
        "--origin",
        ORIGIN,
        "--log-vkey",
        &path(&f.path("log.key.vkey")),
        "--witness-key",
        &path(&witness_key),
        "--state",
        &path(&f.path("witness.json")),
        "--gateway",
        &format!("http://{}", gateway.grpc),
        "--gateway-token-file",
        &path(&token_file),
    ]
    .map(str::to_owned)
    .to_vec();
    Witnessed {
        gateway,
        log_key,
        log_verifier,
        witness_verifier,
        witness_args,
    }
}

#[tokio::test]
async fn the_witness_cosigns_what_extends_its_log_and_refuses_a_forged_fork() {
    let f = Fixture::start().await;
    let id = case("WIT-1");
    f.script(&id, declined_case()).await;
    let Witnessed {
        mut gateway,
        log_key,
        log_verifier,
        witness_verifier,
        mut witness_args,
    } = witnessed(&f, "gw-wit").await;
    witness_args.push("--once".into());
    let mut client = gateway.client(Some(&f.reader(COURT))).await;
    let ops = Ops::from_bus(&f.bus);

    // Two rounds: the first checkpoint cosigned on trust, the next by its consistency
    // proof from the first.
    for round in 0..2 {
        if round == 1 {
            f.append(CUSTOMS, &id, note("witnessed growth"), None).await;
        }
        let size = f.cases_last().await;
        wait_until(
            PROJECTION_TIMEOUT,
            &format!("a checkpoint of size {size}"),
            async || {
                let c = client.get_checkpoint(GetCheckpointRequest {}).await.ok()?;
                (c.into_inner().size == size).then_some(())
            },
        )
        .await
        .unwrap_or_else(|e| panic!("{e}; the gateway's log:\n{}", gateway.log_text()));
        let run = witness(&f, &witness_args).await;
        let stderr = String::from_utf8_lossy(&run.stderr);
        assert_eq!(run.status.code(), Some(0), "{stderr}");
        assert_eq!(state(&f)["size"], size, "the witness cosigned size {size}");
        assert_eq!(state(&f)["forks"], 0);
        let latest = client
            .get_checkpoint(GetCheckpointRequest {})
            .await
            .expect("checkpoint")
            .into_inner();
        let signed = SignedCheckpoint::open(latest.checkpoint.as_bytes(), &log_verifier, ORIGIN)
            .expect("the log's checkpoint");
        let witnesses = [witness_verifier.clone()];
        let cosigned = signed.cosigned_by(&witnesses).expect("cosignatures verify");
        assert_eq!(
            cosigned.len(),
            1,
            "the gateway serves the witness's cosignature"
        );
    }
    let honest = state(&f);

    // A fork, signed by the real log key: the same size with another root, then a
    // smaller tree with a root that is no prefix of the cosigned one.
    let key = load_log_key(&log_key).expect("log key");
    let subject = checkpoint_subject(ORIGIN);
    let size = honest["size"].as_u64().expect("size");
    for (forged_size, root) in [(size, Hash([9; 32])), (size - 2, Hash([8; 32]))] {
        let forged = Checkpoint {
            origin: ORIGIN.into(),
            size: forged_size,
            root,
            extensions: vec![],
        }
        .sign(&key)
        .expect("signed");
        let last = ops
            .last_on_subject(CHECKPOINTS_STREAM, &subject)
            .await
            .expect("read")
            .expect("a checkpoint");
        ops.publish(
            &subject,
            forged.to_text().into_bytes().into(),
            &[],
            &PublishOptions {
                message_id: None,
                expected_last_subject_sequence: Some(last.sequence),
            },
        )
        .await
        .expect("the forged checkpoint is stored");
    }
    let run = witness(&f, &witness_args).await;
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert_eq!(run.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "fork: two checkpoints of size {size} with different roots"
        )),
        "{stderr}"
    );
    assert!(
        stderr.contains("that is not a prefix of the tree"),
        "{stderr}"
    );
    let after = state(&f);
    assert_eq!(after["forks"], 2);
    for field in ["size", "root", "checkpoint", "cosigned"] {
        assert_eq!(
            after[field], honest[field],
            "{field} is unchanged by the fork"
        );
    }
    // The last cosignature published is still of the honest checkpoint.
    let cosignature = ops
        .last_on_subject(CHECKPOINTS_STREAM, &cosignature_subject(ORIGIN, WITNESS))
        .await
        .expect("read")
        .expect("a cosignature");
    let note = Note::parse(&cosignature.payload).expect("a note");
    assert_eq!(Some(note.text()), honest["checkpoint"].as_str());
    gateway.stop().await;
}

/// A metric's value on the witness's `/metrics`, once it reports it.
async fn witness_metric(addr: std::net::SocketAddr, name: &str) -> Option<u64> {
    http_get(addr, "/metrics")
        .await
        .lines()
        .filter(|l| l.starts_with(name))
        .find_map(|l| l.rsplit(' ').next()?.trim().parse().ok())
}

#[tokio::test]
async fn a_following_witness_reports_its_cosignatures_and_a_refused_fork_on_its_metrics() {
    let f = Fixture::start().await;
    let id = case("WIT-2");
    f.script(&id, declined_case()).await;
    let Witnessed {
        mut gateway,
        log_key,
        witness_args,
        ..
    } = witnessed(&f, "gw-follow").await;
    let ready = f.path("witness.ready");
    let child = tokio::process::Command::new(casebus_binary())
        .arg("witness")
        .args(&witness_args)
        .args(["--metrics-listen", "127.0.0.1:0", "--ready-file"])
        .arg(&ready)
        .env("CASEBUS_NATS_URL", f.server.url())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start casebus witness");
    let metrics: std::net::SocketAddr =
        wait_until(PROJECTION_TIMEOUT, "the witness's ready file", async || {
            let text = std::fs::read_to_string(&ready).ok()?;
            let v: serde_json::Value = serde_json::from_str(&text).ok()?;
            v["metrics"].as_str()?.parse().ok()
        })
        .await
        .expect("the witness is ready");
    assert_eq!(witness_metric(metrics, "casebus_witness_up").await, Some(1));

    // It cosigns what the gateway publishes, and goes on as the log grows.
    for round in 0..2 {
        if round == 1 {
            f.append(CUSTOMS, &id, note("followed growth"), None).await;
        }
        let size = f.cases_last().await;
        wait_until(
            PROJECTION_TIMEOUT,
            &format!("the witness's cosigned size at {size}"),
            async || {
                (witness_metric(metrics, "casebus_witness_cosigned_size").await == Some(size))
                    .then_some(())
            },
        )
        .await
        .unwrap_or_else(|e| panic!("{e}; the gateway's log:\n{}", gateway.log_text()));
    }
    let cosigned = witness_metric(metrics, "casebus_witness_cosignatures_total")
        .await
        .expect("cosignatures counted");
    assert!(cosigned >= 2, "{cosigned} cosignatures");
    assert_eq!(
        witness_metric(metrics, "casebus_witness_forks_total").await,
        Some(0)
    );

    // A checkpoint of the cosigned size with another root, signed with the real key.
    let size = f.cases_last().await;
    let forged = Checkpoint {
        origin: ORIGIN.into(),
        size,
        root: Hash([7; 32]),
        extensions: vec![],
    }
    .sign(&load_log_key(&log_key).expect("log key"))
    .expect("signed");
    let ops = Ops::from_bus(&f.bus);
    let subject = checkpoint_subject(ORIGIN);
    let last = ops
        .last_on_subject(CHECKPOINTS_STREAM, &subject)
        .await
        .expect("read")
        .expect("a checkpoint");
    ops.publish(
        &subject,
        forged.to_text().into_bytes().into(),
        &[],
        &PublishOptions {
            message_id: None,
            expected_last_subject_sequence: Some(last.sequence),
        },
    )
    .await
    .expect("the forged checkpoint is stored");
    wait_until(PROJECTION_TIMEOUT, "the fork counted", async || {
        (witness_metric(metrics, "casebus_witness_forks_total").await == Some(1)).then_some(())
    })
    .await
    .expect("the witness counts the fork");
    assert_eq!(
        witness_metric(metrics, "casebus_witness_cosigned_size").await,
        Some(size),
        "the fork is not cosigned"
    );
    assert_eq!(
        witness_metric(metrics, "casebus_witness_cosignatures_total").await,
        Some(cosigned),
        "nothing more is cosigned"
    );

    let pid = rustix::process::Pid::from_raw(child.id().expect("pid") as i32).expect("pid");
    rustix::process::kill_process(pid, rustix::process::Signal::TERM).expect("SIGTERM");
    let output = tokio::time::timeout(EXIT_TIMEOUT, child.wait_with_output())
        .await
        .expect("the witness stops on SIGTERM")
        .expect("wait");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains(&format!(
            "fork: two checkpoints of size {size} with different roots"
        )),
        "{stderr}"
    );
    assert_eq!(
        output.status.code(),
        Some(1),
        "a run that refused a checkpoint exits 1: {stderr}"
    );
    gateway.stop().await;
}
