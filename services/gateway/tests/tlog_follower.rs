//! The log follower against a real nats-server: the transparency log kept
//! incrementally over `CASES` (signed events and malformed messages alike, caught up
//! after each round of publishing) equals the log rebuilt from the stream after its
//! file is deleted, and each entry is the SHA-256 of the message as stored.

use std::sync::Arc;

use bytes::Bytes;
use sha2::{Digest, Sha256};

use casebus_bus::ops::{Ops, PublishOptions};
use casebus_bus::{AppendRequest, Appender, AppenderConfig, Bus, BusConfig, StreamSettings};
use casebus_domain::DeadlineRules;
use casebus_fixtures::{CUSTOMS, agency_registry, case, catalogue, signer};
use casebus_gateway::tlog::catch_up;
use casebus_proto::RequestId;
use casebus_proto::event::v1::payload::Kind;
use casebus_test_support::NatsServer;
use casebus_timeline::LogStore;
use casebus_tlog::merkle::{leaf_hash, verify_inclusion};

fn request(case_id: &str, n: u32, payload: Kind) -> AppendRequest {
    AppendRequest {
        case_id: case(case_id),
        request_id: RequestId::new(&format!("req-{case_id}-{n}")).expect("request id"),
        actor: "officer-1".into(),
        occurred_at: None,
        causation_id: None,
        correlation_id: String::new(),
        visibility: None,
        payload,
    }
}

#[tokio::test]
async fn the_log_rebuilt_from_the_stream_equals_the_one_kept_incrementally() {
    let server = NatsServer::start().await.expect("nats-server starts");
    let client = server.client().await.expect("connect");
    let ops = Ops::new(client.clone(), &BusConfig::default());
    ops.provision(&StreamSettings::default())
        .await
        .expect("provision");
    let bus = Bus::open(client, Arc::new(agency_registry()), BusConfig::default())
        .await
        .expect("bus");
    let appender = Appender::new(
        bus,
        signer(CUSTOMS),
        Arc::new(DeadlineRules::default()),
        AppenderConfig::default(),
    )
    .expect("appender");

    let dir = tempfile::tempdir().expect("tempdir");
    let kept_path = dir.path().join("kept.tlog");
    let mut kept = LogStore::open(&kept_path).expect("open");
    let mut malformed = Vec::new();
    for round in 0..4u32 {
        for c in 0..3u32 {
            let id = format!("TLOG-{c}");
            let payload = if round == 0 {
                catalogue::opened("log test")
            } else {
                catalogue::note(&format!("round {round}"))
            };
            appender
                .append(request(&id, round, payload))
                .await
                .expect("append");
        }
        // A message that is no event at all: the log holds it like any other.
        let published = ops
            .publish(
                "case.TLOG-0",
                Bytes::from(format!("not an event {round}")),
                &[],
                &PublishOptions::default(),
            )
            .await
            .expect("publish raw");
        malformed.push(published.sequence);
        // Caught up in small batches, so transactions end mid-round.
        let size = catch_up(&ops, &mut kept, 5).await.expect("catch up");
        assert_eq!(size, u64::from(round + 1) * 4);
    }
    assert_eq!(kept.size(), 16);

    // Every entry is the SHA-256 of the stored message's bytes.
    for sequence in 1..=16 {
        let message = ops
            .get_message("CASES", sequence)
            .await
            .expect("read")
            .expect("stored");
        let want: [u8; 32] = Sha256::digest(&message.payload).into();
        assert_eq!(
            kept.entry(sequence).expect("entry"),
            Some(want),
            "entry {sequence}"
        );
    }
    // A malformed message is proven in the log like an event.
    let root = kept.root();
    for &sequence in &malformed {
        let entry = kept.entry(sequence).expect("entry").expect("logged");
        let proof = kept.inclusion_proof(sequence - 1, 16).expect("proof");
        assert_eq!(
            verify_inclusion(sequence - 1, 16, &leaf_hash(&entry), &proof, &root),
            Ok(())
        );
    }
    let kept_dump = kept.dump_for_comparison().expect("dump");
    drop(kept);

    // Lose the log file, then rebuild it from the stream in one pass.
    for suffix in ["", "-wal", "-shm"] {
        let p = dir.path().join(format!("kept.tlog{suffix}"));
        if p.exists() {
            std::fs::remove_file(&p).expect("remove");
        }
    }
    let mut rebuilt = LogStore::open(&kept_path).expect("open rebuilt");
    assert_eq!(rebuilt.size(), 0);
    assert_eq!(
        catch_up(&ops, &mut rebuilt, 1000).await.expect("rebuild"),
        16
    );
    assert_eq!(rebuilt.root(), root);
    assert_eq!(rebuilt.dump_for_comparison().expect("dump"), kept_dump);

    // Caught up again with nothing new, the log stays as it is.
    assert_eq!(catch_up(&ops, &mut rebuilt, 1000).await.expect("idle"), 16);
}
