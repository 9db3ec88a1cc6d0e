//! The proof RPCs over real gRPC against the real gateway binary (`--tlog-file` with
//! `--log-key`), each answer checked with `casebus_tlog`'s verifiers: GetCheckpoint's
//! note opens with the log key; every event's inclusion proof (also as tlog-proof@v1
//! text) leads from the SHA-256 of the stored message to the checkpoint's root, at the
//! event's stream position; the case-head proof shows the case's last event in the map
//! the checkpoint's `case-heads/v1` line commits to; a consistency proof links an older
//! checkpoint to a newer one. An outsider gets for a case it takes no part in exactly the
//! NOT_FOUND of a case that does not exist; every proof read is audited; a call without
//! a credential is refused, and a gateway without a log key answers FAILED_PRECONDITION.

mod gateway_common;

use sha2::{Digest as _, Sha256};
use tonic::Code;

use casebus_bus::ops::Ops;
use casebus_bus::subjects::CASES_STREAM;
use casebus_proto::gateway::v1::{
    GetCaseHeadProofRequest, GetCheckpointRequest, GetConsistencyProofRequest,
    GetInclusionProofRequest, GetTimelineRequest,
};
use casebus_runtime::tlog_keys::{LogKeyKind, generate};
use casebus_test_support::wait_until;
use casebus_tlog::case_heads::{self, CaseHead, CaseHeadProof, parse_extension_line};
use casebus_tlog::checkpoint::SignedCheckpoint;
use casebus_tlog::merkle::{Hash, leaf_hash, verify_consistency, verify_inclusion};
use casebus_tlog::note::NoteVerifier;
use casebus_tlog::proof::TlogProof;

use gateway_common::catalogue::{declined_case, note, opened};
use gateway_common::*;

const ORIGIN: &str = "casebus.test/proofs";

fn hashes(raw: &[Vec<u8>]) -> Vec<Hash> {
    raw.iter()
        .map(|h| Hash::from_slice(h).expect("32-byte hashes"))
        .collect()
}

/// The latest checkpoint once it covers `size`, opened with the log key.
async fn checkpoint_of(
    gateway: &Gateway,
    token: &str,
    verifier: &NoteVerifier,
    size: u64,
) -> SignedCheckpoint {
    let mut client = gateway.client(Some(token)).await;
    wait_until(
        PROJECTION_TIMEOUT,
        &format!("a checkpoint of size {size}"),
        async || {
            let answer = client.get_checkpoint(GetCheckpointRequest {}).await.ok()?;
            let answer = answer.into_inner();
            (answer.size == size).then(|| {
                assert_eq!(answer.origin, ORIGIN);
                SignedCheckpoint::open(answer.checkpoint.as_bytes(), verifier, ORIGIN)
                    .expect("the checkpoint opens with the log key")
            })
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}; the gateway's log:\n{}", gateway.log_text()))
}

#[tokio::test]
async fn every_proof_served_verifies_and_outsiders_learn_nothing() {
    let f = Fixture::start().await;
    let shared = case("PR-1");
    f.script(&shared, declined_case()).await;
    f.append(CUSTOMS, &case("PR-2"), opened("customs alone"), None)
        .await;
    let key = f.path("log.key");
    let verifier = generate(LogKeyKind::Log, ORIGIN, &key).expect("a log key");
    let path = |p: &std::path::Path| p.display().to_string();
    let args = [
        "--tlog-file",
        &path(&f.path("gw-proofs.tlog")),
        "--tlog-interval",
        "200ms",
        "--log-key",
        &path(&key),
        "--checkpoint-every",
        "1",
        "--checkpoint-interval",
        "200ms",
    ]
    .map(str::to_owned);
    let gateway = f.gateway_with("gw-proofs", &f.db("gw-proofs"), &args).await;
    let police = f.reader(POLICE);
    let first_size = f.cases_last().await;
    let first = checkpoint_of(&gateway, &police, &verifier, first_size).await;
    let c = &first.checkpoint;

    // Each event of the case: its inclusion proof, from the stored message's entry.
    let mut client = gateway.client(Some(&police)).await;
    let timeline = client
        .get_timeline(GetTimelineRequest {
            case_id: shared.to_string(),
            ..Default::default()
        })
        .await
        .expect("the timeline")
        .into_inner();
    let ops = Ops::from_bus(&f.bus);
    for event in &timeline.events {
        let proof = client
            .get_inclusion_proof(GetInclusionProofRequest {
                case_id: shared.to_string(),
                case_version: event.case_version,
            })
            .await
            .expect("an inclusion proof")
            .into_inner();
        assert_eq!(
            proof.leaf_index,
            event.position - 1,
            "the leaf is the event's position"
        );
        let stored = ops
            .get_message(CASES_STREAM, event.position)
            .await
            .expect("read")
            .expect("stored");
        let entry: [u8; 32] = Sha256::digest(&stored.payload).into();
        assert_eq!(
            proof.entry, entry,
            "the entry is the SHA-256 of the stored message"
        );
        let leaf = leaf_hash(&entry);
        verify_inclusion(
            proof.leaf_index,
            c.size,
            &leaf,
            &hashes(&proof.proof),
            &c.root,
        )
        .expect("the inclusion proof leads to the checkpoint's root");
        let text = TlogProof::parse(&proof.tlog_proof).expect("tlog-proof@v1 text");
        assert_eq!(text.index, proof.leaf_index);
        text.verify(&leaf, &verifier, ORIGIN)
            .expect("the tlog-proof verifies on its own");
        // A proof for another leaf does not verify.
        assert!(
            verify_inclusion(
                proof.leaf_index,
                c.size,
                &leaf_hash(&[0; 32]),
                &hashes(&proof.proof),
                &c.root
            )
            .is_err()
        );
    }

    // The case's head, in the map the checkpoint commits to.
    let last = timeline.events.last().expect("events");
    let head_proof = client
        .get_case_head_proof(GetCaseHeadProofRequest {
            case_id: shared.to_string(),
        })
        .await
        .expect("a case-head proof")
        .into_inner();
    assert_eq!(head_proof.case_version, last.case_version);
    assert_eq!(
        head_proof.event_hash, last.hash,
        "the head is the last event"
    );
    let (count, map_root) = parse_extension_line(&c.extensions[0]).expect("case-heads line");
    assert_eq!(count, 2);
    let head = CaseHead {
        case_id: shared.to_string(),
        version: head_proof.case_version,
        event_hash: head_proof
            .event_hash
            .as_slice()
            .try_into()
            .expect("32 bytes"),
    };
    let proof = CaseHeadProof {
        index: head_proof.leaf_index,
        count: head_proof.case_count,
        proof: hashes(&head_proof.proof),
    };
    case_heads::verify(&head, &proof, count, &map_root).expect("the head verifies");
    let older = CaseHead {
        version: head.version - 1,
        ..head.clone()
    };
    assert!(
        case_heads::verify(&older, &proof, count, &map_root).is_err(),
        "a head missing the last event does not verify"
    );

    // An outsider gets what it gets for a case that does not exist.
    let mut court = gateway.client(Some(&f.reader(COURT))).await;
    for case_id in ["PR-1", "PR-NONE"] {
        let status = court
            .get_inclusion_proof(GetInclusionProofRequest {
                case_id: case_id.into(),
                case_version: 1,
            })
            .await
            .expect_err("not for the court");
        assert_eq!(status.code(), Code::NotFound);
        assert_eq!(status.message(), format!("case {case_id} not found"));
        let status = court
            .get_case_head_proof(GetCaseHeadProofRequest {
                case_id: case_id.into(),
            })
            .await
            .expect_err("not for the court");
        assert_eq!(status.code(), Code::NotFound);
        assert_eq!(status.message(), format!("case {case_id} not found"));
    }

    // A later checkpoint extends the first.
    f.append(CUSTOMS, &shared, note("after the first checkpoint"), None)
        .await;
    let second = checkpoint_of(&gateway, &police, &verifier, f.cases_last().await).await;
    let consistency = client
        .get_consistency_proof(GetConsistencyProofRequest {
            first_size: c.size,
            second_size: 0,
        })
        .await
        .expect("a consistency proof")
        .into_inner();
    assert_eq!(consistency.second_size, second.checkpoint.size);
    verify_consistency(
        c.size,
        second.checkpoint.size,
        &c.root,
        &second.checkpoint.root,
        &hashes(&consistency.proof),
    )
    .expect("the second checkpoint extends the first");
    let status = client
        .get_consistency_proof(GetConsistencyProofRequest {
            first_size: second.checkpoint.size + 1,
            second_size: second.checkpoint.size,
        })
        .await
        .expect_err("sizes out of order");
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(
        status.message().contains("first_size"),
        "{}",
        status.message()
    );

    // Every proof read is audited, the outsider's attempts too.
    let records = f.audit_records().await;
    let count = |method: &str, office: &str| {
        records
            .iter()
            .filter(|r| r.method == method && r.office == office)
            .count()
    };
    assert_eq!(count("GetInclusionProof", POLICE), timeline.events.len());
    assert_eq!(count("GetCaseHeadProof", POLICE), 1);
    assert_eq!(count("GetInclusionProof", COURT), 2);
    assert!(count("GetCheckpoint", POLICE) >= 2);
    assert_eq!(count("GetConsistencyProof", POLICE), 1);

    // No credential, no proof.
    let mut anonymous = gateway.client(None).await;
    let status = anonymous
        .get_checkpoint(GetCheckpointRequest {})
        .await
        .expect_err("unauthenticated");
    assert_eq!(status.code(), Code::Unauthenticated);

    // A gateway without a log key serves no proofs.
    let plain = f.gateway("gw-plain").await;
    let status = plain
        .client(Some(&police))
        .await
        .get_checkpoint(GetCheckpointRequest {})
        .await
        .expect_err("no log");
    assert_eq!(status.code(), Code::FailedPrecondition);
}
