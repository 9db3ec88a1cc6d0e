//! The gateway signs and publishes checkpoints of its transparency log (`--log-key`)
//! over the real binary: each on `CHECKPOINTS` under its origin's subject, signed by the
//! log key for the origin given, of a tree size the log holds, with the root the log has
//! at that size and the case-heads line over every case's last event at that size; each
//! later checkpoint extends the earlier ones (a consistency proof from the log verifies),
//! and the last size is on `/metrics`. A forged checkpoint (signed by the real log key,
//! same size, another root) put on the subject stops the gateway publishing: it refuses,
//! counts the refusal and logs it at error level, publishes nothing after it, and
//! GetCheckpoint does not serve it. Two
//! gateways signing for one origin publish one chain of growing, consistent checkpoints.
//! The gateway's watcher of `CHECKPOINTS` follows the stream, and GetCheckpoint serves
//! the first checkpoint published after the NATS server restarted within 15 s of its
//! publication.

mod gateway_common;

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;
use prost::Message as _;

use casebus_bus::ops::{Ops, PublishOptions, ScanStart};
use casebus_bus::subjects::{CASES_STREAM, CHECKPOINTS_STREAM, checkpoint_subject};
use casebus_integrity::EventHash;
use casebus_proto::event::v1::{Event, SignedEvent};
use casebus_proto::gateway::v1::GetCheckpointRequest;
use casebus_runtime::tlog_keys::{LogKeyKind, generate, load_log_key};
use casebus_test_support::wait_until;
use casebus_timeline::LogStore;
use casebus_tlog::case_heads::{CaseHead, CaseHeads};
use casebus_tlog::checkpoint::{Checkpoint, SignedCheckpoint};
use casebus_tlog::merkle::{Hash, verify_consistency};
use casebus_tlog::note::NoteVerifier;

use gateway_common::catalogue::{declined_case, main_case, note};
use gateway_common::*;

const ORIGIN: &str = "casebus.test/cases";

/// A gateway publishing checkpoints after every new entry, its log file and key.
struct Publishing {
    log_path: std::path::PathBuf,
    verifier: NoteVerifier,
    args: Vec<String>,
}

fn publishing(f: &Fixture, name: &str) -> Publishing {
    let key = f.path(&format!("{name}.key"));
    let verifier = generate(LogKeyKind::Log, ORIGIN, &key).expect("a log key");
    let log_path = f.path(&format!("{name}.tlog"));
    let path = |p: &std::path::Path| p.display().to_string();
    let args = [
        "--tlog-file",
        &path(&log_path),
        "--tlog-interval",
        "200ms",
        "--log-key",
        &path(&key),
        "--log-origin",
        ORIGIN,
        "--checkpoint-every",
        "1",
        "--checkpoint-interval",
        "200ms",
    ]
    .map(str::to_owned)
    .to_vec();
    Publishing {
        log_path,
        verifier,
        args,
    }
}

/// Every checkpoint on the origin's subject, in stream order, each opened with the log
/// key (a checkpoint that does not open fails the test).
async fn checkpoints(ops: &Ops, verifier: &NoteVerifier) -> Vec<(u64, SignedCheckpoint)> {
    let mut scanner = ops
        .scan(
            CHECKPOINTS_STREAM,
            Some(&checkpoint_subject(ORIGIN)),
            ScanStart::Sequence(1),
            100,
        )
        .await
        .expect("scan CHECKPOINTS");
    let mut out = Vec::new();
    loop {
        let batch = scanner.fetch().await.expect("read CHECKPOINTS");
        if batch.is_empty() {
            break;
        }
        for m in batch {
            let signed = SignedCheckpoint::open(&m.payload, verifier, ORIGIN)
                .unwrap_or_else(|e| panic!("checkpoint at {}: {e}", m.sequence));
            out.push((m.sequence, signed));
        }
    }
    scanner.close().await;
    out
}

async fn wait_checkpoint_of(ops: &Ops, verifier: &NoteVerifier, size: u64, gateway: &Gateway) {
    wait_until(
        PROJECTION_TIMEOUT,
        &format!("a checkpoint of size {size}"),
        async || {
            checkpoints(ops, verifier)
                .await
                .last()
                .is_some_and(|(_, c)| c.checkpoint.size == size)
                .then_some(())
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}; the gateway's log:\n{}", gateway.log_text()));
}

/// Every case's last event (version and hash) among `CASES` sequences 1..=size, read
/// from the stored messages; what is not a signed event is skipped.
async fn heads_from_stream(ops: &Ops, size: u64) -> Vec<CaseHead> {
    let mut heads: BTreeMap<String, CaseHead> = BTreeMap::new();
    for sequence in 1..=size {
        let stored = ops
            .get_message(CASES_STREAM, sequence)
            .await
            .expect("read")
            .expect("stored");
        let Ok(signed) = SignedEvent::decode(stored.payload.as_ref()) else {
            continue;
        };
        let Ok(event) = Event::decode(signed.event.as_slice()) else {
            continue;
        };
        let head = CaseHead {
            case_id: event.case_id.clone(),
            version: event.case_version,
            event_hash: EventHash::of(&signed.event).0,
        };
        let newer = heads
            .get(&event.case_id)
            .is_none_or(|h| h.version < head.version);
        if newer {
            heads.insert(event.case_id, head);
        }
    }
    heads.into_values().collect()
}

async fn metric(gateway: &Gateway, name: &str) -> Option<u64> {
    http_get(gateway.metrics, "/metrics")
        .await
        .lines()
        .filter(|l| l.starts_with(name))
        .find_map(|l| l.rsplit(' ').next()?.trim().parse().ok())
}

#[tokio::test]
async fn the_gateway_publishes_checkpoints_of_its_log_with_the_case_heads_of_that_size() {
    let f = Fixture::start().await;
    f.script(&case("CP-1"), declined_case()).await;
    f.script(&case("CP-2"), main_case()).await;
    let ops = Ops::from_bus(&f.bus);
    ops.publish(
        "case.CP-3",
        Bytes::from_static(b"not an event: an entry of the log, no case head"),
        &[],
        &PublishOptions::default(),
    )
    .await
    .expect("publish a malformed message");
    let p = publishing(&f, "gw-cp");
    let mut gateway = f.gateway_with("gw-cp", &f.db("gw-cp"), &p.args).await;
    let first = f.cases_last().await;
    wait_checkpoint_of(&ops, &p.verifier, first, &gateway).await;
    f.append(
        CUSTOMS,
        &case("CP-1"),
        note("after the first checkpoint"),
        None,
    )
    .await;
    let second = f.cases_last().await;
    wait_checkpoint_of(&ops, &p.verifier, second, &gateway).await;
    assert_eq!(
        metric(&gateway, "casebus_gateway_checkpoint_size").await,
        Some(second)
    );
    assert_eq!(
        metric(&gateway, "casebus_gateway_checkpoint_refusals_total").await,
        Some(0)
    );
    gateway.stop().await;

    let log = LogStore::open(&p.log_path).expect("the gateway's log");
    let published = checkpoints(&ops, &p.verifier).await;
    let mut previous: Option<&Checkpoint> = None;
    for (sequence, signed) in &published {
        let c = &signed.checkpoint;
        assert_eq!(c.origin, ORIGIN);
        assert_eq!(
            c.root,
            log.tree_hash(c.size).expect("a size the log holds"),
            "checkpoint {sequence} states the log's root at its size"
        );
        let heads = CaseHeads::new(heads_from_stream(&ops, c.size).await).expect("map");
        assert_eq!(
            c.extensions,
            [heads.extension_line()],
            "checkpoint {sequence} commits to every case's head at its size"
        );
        if let Some(before) = previous {
            assert!(before.size < c.size, "sizes grow");
            let proof = log
                .consistency_proof(before.size, c.size)
                .expect("consistency proof");
            verify_consistency(before.size, c.size, &before.root, &c.root, &proof)
                .expect("each checkpoint extends the one before");
        }
        previous = Some(c);
    }
    let sizes: Vec<u64> = published.iter().map(|(_, c)| c.checkpoint.size).collect();
    assert!(
        sizes.contains(&first) && sizes.last() == Some(&second),
        "{sizes:?}"
    );
    let heads = CaseHeads::new(heads_from_stream(&ops, second).await).expect("map");
    assert_eq!(
        heads.len(),
        2,
        "two cases; the malformed message heads none"
    );
}

#[tokio::test]
async fn a_forged_checkpoint_on_the_subject_is_refused_and_nothing_is_published_after_it() {
    let f = Fixture::start().await;
    f.script(&case("CP-FORK"), declined_case()).await;
    let ops = Ops::from_bus(&f.bus);
    let p = publishing(&f, "gw-fork");
    let mut gateway = f.gateway_with("gw-fork", &f.db("gw-fork"), &p.args).await;
    let size = f.cases_last().await;
    wait_checkpoint_of(&ops, &p.verifier, size, &gateway).await;

    // The real log key signs a checkpoint of the same size with another root: a fork.
    let key = load_log_key(&f.path("gw-fork.key")).expect("the log key");
    let published = checkpoints(&ops, &p.verifier).await;
    let (last_sequence, honest) = published.last().expect("one checkpoint");
    let forged = Checkpoint {
        root: Hash([7; 32]),
        ..honest.checkpoint.clone()
    }
    .sign(&key)
    .expect("signed");
    let stored = ops
        .publish(
            &checkpoint_subject(ORIGIN),
            forged.to_text().into_bytes().into(),
            &[],
            &PublishOptions {
                message_id: None,
                expected_last_subject_sequence: Some(*last_sequence),
            },
        )
        .await
        .expect("the forged checkpoint is stored");

    // The log grows; the gateway must not publish over the fork.
    f.append(CUSTOMS, &case("CP-FORK"), note("after the fork"), None)
        .await;
    wait_until(
        PROJECTION_TIMEOUT,
        "the gateway to refuse the forged checkpoint",
        async || {
            (metric(&gateway, "casebus_gateway_checkpoint_refusals_total")
                .await
                .unwrap_or(0)
                > 0)
            .then_some(())
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}; the gateway's log:\n{}", gateway.log_text()));
    let log_text = gateway.log_text();
    assert!(
        log_text.contains("refusing to publish a checkpoint") && log_text.contains("ERROR"),
        "{log_text}"
    );
    assert!(
        log_text.contains("its root hash is not the log"),
        "{log_text}"
    );
    // Nor does the gateway hand the forged checkpoint out.
    let status = gateway
        .client(Some(&f.reader(CUSTOMS)))
        .await
        .get_checkpoint(GetCheckpointRequest {})
        .await
        .expect_err("a checkpoint the log contradicts is not served");
    assert_eq!(status.code(), tonic::Code::Internal);
    assert!(
        !status.message().contains("checkpoint."),
        "{}",
        status.message()
    );
    gateway.stop().await;
    let after = checkpoints(&ops, &p.verifier).await;
    assert_eq!(
        after.last().map(|(s, _)| *s),
        Some(stored.sequence),
        "nothing was published after the forged checkpoint"
    );
}

#[tokio::test]
async fn two_gateways_signing_for_one_origin_publish_one_chain_of_checkpoints() {
    let f = Fixture::start().await;
    let id = case("CP-TWO");
    f.script(&id, declined_case()).await;
    let a = publishing(&f, "gw-two-a");
    // The second gateway signs with the same log key for the same origin, from a log
    // of its own.
    let mut b_args = a.args.clone();
    b_args[1] = f.path("gw-two-b.tlog").display().to_string();
    let mut first = f.gateway_with("gw-two-a", &f.db("gw-two-a"), &a.args).await;
    let mut second = f.gateway_with("gw-two-b", &f.db("gw-two-b"), &b_args).await;
    let ops = Ops::from_bus(&f.bus);
    for n in 0..6 {
        f.append(CUSTOMS, &id, note(&format!("raced {n}")), None)
            .await;
    }
    let size = f.cases_last().await;
    wait_checkpoint_of(&ops, &a.verifier, size, &first).await;
    for gateway in [&first, &second] {
        assert_eq!(
            metric(gateway, "casebus_gateway_checkpoint_refusals_total").await,
            Some(0),
            "{}",
            gateway.log_text()
        );
    }
    first.stop().await;
    second.stop().await;

    // One chain: sizes grow, each checkpoint extends the one before it.
    let log = LogStore::open(&a.log_path).expect("a log");
    let published = checkpoints(&ops, &a.verifier).await;
    for pair in published.windows(2) {
        let (before, after) = (&pair[0].1.checkpoint, &pair[1].1.checkpoint);
        assert!(
            before.size < after.size,
            "{} then {}",
            before.size,
            after.size
        );
        let proof = log
            .consistency_proof(before.size, after.size)
            .expect("consistency proof");
        verify_consistency(before.size, after.size, &before.root, &after.root, &proof)
            .expect("each checkpoint extends the one before");
    }
}

#[tokio::test]
async fn two_logs_of_one_stream_under_their_own_origins_both_publish_every_checkpoint() {
    // Two gateways keep logs of the same CASES, each with a key and origin of its own:
    // at each size their checkpoints share size and root, and neither may be lost as a
    // duplicate of the other's.
    let f = Fixture::start().await;
    f.script(&case("CP-TWO"), declined_case()).await;
    let mut gateways = Vec::new();
    for (name, origin) in [("gw-one", ORIGIN), ("gw-two", "casebus.test/second-log")] {
        let key = f.path(&format!("{name}.key"));
        let verifier = generate(LogKeyKind::Log, origin, &key).expect("a log key");
        let args = [
            "--tlog-file".to_owned(),
            f.path(&format!("{name}.tlog")).display().to_string(),
            "--tlog-interval".into(),
            "200ms".into(),
            "--log-key".into(),
            key.display().to_string(),
            "--checkpoint-every".into(),
            "1".into(),
            "--checkpoint-interval".into(),
            "200ms".into(),
        ];
        let gateway = f.gateway_with(name, &f.db(name), &args).await;
        gateways.push((gateway, origin, verifier));
    }
    let size = f.cases_last().await;
    let mut roots = Vec::new();
    for (gateway, origin, verifier) in &gateways {
        let mut client = gateway.client(Some(&f.reader(CUSTOMS))).await;
        let latest = wait_until(
            PROJECTION_TIMEOUT,
            &format!("a checkpoint of {origin} of size {size}"),
            async || {
                let c = client
                    .get_checkpoint(GetCheckpointRequest {})
                    .await
                    .ok()?
                    .into_inner();
                (c.size == size).then_some(c)
            },
        )
        .await
        .unwrap_or_else(|e| panic!("{e}; the gateway's log:\n{}", gateway.log_text()));
        let signed = SignedCheckpoint::open(latest.checkpoint.as_bytes(), verifier, origin)
            .expect("signed with that log's key for its origin");
        roots.push(signed.checkpoint.root);
    }
    assert_eq!(roots[0], roots[1], "one stream, one tree");
    for (mut gateway, _, _) in gateways {
        gateway.stop().await;
    }
}

/// Waits up to `within` until GetCheckpoint serves the checkpoint of `size`.
async fn wait_served(f: &Fixture, gateway: &Gateway, size: u64, within: Duration) {
    let token = f.reader(CUSTOMS);
    let mut last = None;
    wait_until(
        within,
        &format!("GetCheckpoint to serve size {size}"),
        async || {
            let answer = gateway
                .client(Some(&token))
                .await
                .get_checkpoint(GetCheckpointRequest {})
                .await
                .map(|r| r.into_inner().size);
            let served = answer.as_ref().is_ok_and(|s| *s == size);
            last = Some(answer);
            served.then_some(())
        },
    )
    .await
    .unwrap_or_else(|e| {
        panic!(
            "{e}; the last answer {last:?}; the gateway's log:\n{}",
            gateway.log_text()
        )
    });
}

#[tokio::test]
async fn get_checkpoint_serves_the_checkpoints_published_after_the_nats_server_restarted() {
    let mut f = Fixture::start().await;
    let id = case("CP-RESTART");
    f.script(&id, declined_case()).await;
    let p = publishing(&f, "gw-restart");
    let mut gateway = f
        .gateway_with("gw-restart", &f.db("gw-restart"), &p.args)
        .await;
    let first = f.cases_last().await;
    wait_served(&f, &gateway, first, PROJECTION_TIMEOUT).await;
    // Both readers of the watcher (checkpoints, cosignatures) follow the stream, and
    // neither has failed: otherwise every read would go to the stream.
    wait_until(
        PROJECTION_TIMEOUT,
        "the checkpoint watcher to follow CHECKPOINTS",
        async || {
            (gateway
                .log_text()
                .matches("checkpoint watcher following")
                .count()
                == 2)
                .then_some(())
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}; the gateway's log:\n{}", gateway.log_text()));
    let log = gateway.log_text();
    assert!(!log.contains("checkpoint watcher lost"), "{log}");

    // The server goes away and comes back with its store: the gateway's reader of
    // CHECKPOINTS must notice, or it would serve the old checkpoint from then on.
    f.server.stop().await.expect("stop nats-server");
    f.server.restart().await.expect("restart nats-server");
    f.append(CUSTOMS, &id, note("after the restart"), None)
        .await;
    let second = f.cases_last().await;
    assert!(second > first);
    wait_checkpoint_of(&Ops::from_bus(&f.bus), &p.verifier, second, &gateway).await;
    // The watcher asks after 5 s of quiet whether its reader still exists.
    wait_served(&f, &gateway, second, Duration::from_secs(15)).await;
    gateway.stop().await;
}
