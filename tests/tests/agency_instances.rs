//! Two instances of one office's service side by side under load: commands on many cases
//! arrive through both at once (the same command often through both, as a client
//! failing over would send it), while another office writes to the same cases and
//! hand-offs to the office stream in. Nothing may be lost, nothing duplicated, every
//! case stays one verified chain, and each hand-off gets exactly one automatic receipt
//! although both instances share the durable consumer.

mod agency_harness;

use std::collections::{BTreeMap, BTreeSet};

use futures::future::join_all;

use casebus_proto::agency::v1::{
    AcceptHandoffRequest, CommandReply, HandoffDetails, ListInboxRequest,
};
use casebus_proto::customs::v1::RequestAssessmentRequest;
use casebus_proto::event::v1::HandoffAccepted;

use agency_harness::*;

/// Cases worked at once.
const CASES: usize = 24;
/// Notes the IP center adds per case, each sent through both instances.
const IPC_NOTES: usize = 8;
/// Notes customs adds per case meanwhile.
const CUSTOMS_NOTES: usize = 3;

fn case_id(i: usize) -> String {
    format!("LOAD-{i:03}")
}

async fn request_assessment(customs: &Running, case_id: &str, handoff_id: &str) -> CommandReply {
    let r = customs
        .customs()
        .request_assessment(RequestAssessmentRequest {
            meta: meta(case_id),
            handoff: Some(HandoffDetails {
                handoff_id: handoff_id.into(),
                to_office_id: String::new(),
                reason: "assess the goods".into(),
                evidence_ids: vec![],
            }),
        })
        .await;
    ok(customs, "request assessment", r)
}

/// The IP center's work on one case under load: every note through both instances at
/// once. Returns each note's pair of replies.
async fn ipc_notes(a: &Running, b: &Running, case_id: &str) -> Vec<(CommandReply, CommandReply)> {
    let mut pairs = Vec::new();
    for n in 0..IPC_NOTES {
        let request_id = format!("ipc-{case_id}-{n}");
        let text = format!("note {n}");
        let (ra, rb) = tokio::join!(
            add_note(a, case_id, &request_id, &text),
            add_note(b, case_id, &request_id, &text),
        );
        pairs.push((ok(a, "note via a", ra), ok(b, "note via b", rb)));
    }
    pairs
}

async fn customs_notes(customs: &Running, case_id: &str) -> Vec<CommandReply> {
    let mut replies = Vec::new();
    for n in 0..CUSTOMS_NOTES {
        let r = add_note(
            customs,
            case_id,
            &format!("cus-{case_id}-{n}"),
            "customs note",
        )
        .await;
        replies.push(ok(customs, "customs note", r));
    }
    replies
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_of_one_office_under_load_lose_nothing_duplicate_nothing_and_receipt_each_hand_off_once()
 {
    let f = Fixture::start().await;
    let (customs, a, b) = tokio::join!(f.spawn(CUSTOMS), f.spawn(IPC), f.spawn(IPC));
    let cases: Vec<String> = (0..CASES).map(case_id).collect();

    // Customs opens every case and asks the IP center (any office) for an assessment.
    join_all(cases.iter().map(async |c| {
        open_case(&customs, c).await;
        request_assessment(&customs, c, "a1").await;
    }))
    .await;
    // Each hand-off is acknowledged once; both instances see it in their inbox.
    for (i, c) in cases.iter().enumerate() {
        a.wait_inbox(c, "a1", "instance a to see the receipt of a1", acknowledged)
            .await;
        b.wait_inbox(c, "a1", "instance b to see the receipt of a1", acknowledged)
            .await;
        let via = if i % 2 == 0 { &a } else { &b };
        let r = via
            .common()
            .accept_handoff(AcceptHandoffRequest {
                meta: meta(c),
                handoff_accepted: Some(HandoffAccepted {
                    handoff_id: "a1".into(),
                    local_case_number: String::new(),
                }),
            })
            .await;
        ok(via, "accept a1", r);
    }

    // Under load: the IP center notes every case through both instances, customs writes
    // to the same cases and sends a second hand-off whose receipt races the notes.
    let work = cases.iter().map(async |c| {
        let (pairs, customs_replies, second) = tokio::join!(
            ipc_notes(&a, &b, c),
            customs_notes(&customs, c),
            request_assessment(&customs, c, "a2"),
        );
        (c.clone(), pairs, customs_replies, second)
    });
    let results = join_all(work).await;

    let mut expected_events = 0;
    for (c, pairs, customs_replies, second) in &results {
        // The same command through both instances: one event, one of the two answers
        // flagged duplicate, both naming the same event.
        for (ra, rb) in pairs {
            assert_eq!(ra.event_id, rb.event_id, "{c}");
            assert_eq!(ra.case_version, rb.case_version, "{c}");
            assert_eq!(ra.stream_sequence, rb.stream_sequence, "{c}");
            assert!(
                ra.duplicate != rb.duplicate,
                "{c}: exactly one applied it: {ra:?} {rb:?}"
            );
        }
        a.wait_inbox(c, "a2", "instance a to see the receipt of a2", acknowledged)
            .await;
        let loaded = f.load(c).await;
        assert!(loaded.rejected.is_empty(), "{c}: {:?}", loaded.rejected);
        let report = f.verify(c).await;
        assert!(report.is_intact(), "{c}: {:?}", report.failures);
        // open, a1, receipt, accept, notes, customs notes, a2, receipt
        let n = 2 + 1 + 1 + IPC_NOTES + CUSTOMS_NOTES + 1 + 1;
        assert_eq!(loaded.events.len(), n, "{c}");
        expected_events += n;
        for (i, stored) in loaded.events.iter().enumerate() {
            assert_eq!(stored.event.version(), i as u64 + 1, "{c}");
        }
        let ids: BTreeMap<&str, usize> = loaded.events.iter().fold(BTreeMap::new(), |mut m, e| {
            *m.entry(e.event.event_id.as_str()).or_default() += 1;
            m
        });
        assert!(ids.values().all(|n| *n == 1), "{c}: an event id twice");
        let replies = pairs
            .iter()
            .map(|(ra, _)| ra)
            .chain(customs_replies)
            .chain(std::iter::once(second));
        for reply in replies {
            assert_eq!(ids.get(reply.event_id.as_str()), Some(&1), "{c}: {reply:?}");
        }
        assert_eq!(
            count_for_handoff(&loaded, "HandoffAcknowledged", "a1"),
            1,
            "{c}"
        );
        assert_eq!(
            count_for_handoff(&loaded, "HandoffAcknowledged", "a2"),
            1,
            "{c}"
        );
    }

    // Nothing stray anywhere in the stream.
    let mut total = 0;
    for c in &cases {
        total += f.load(c).await.events.len();
    }
    assert_eq!(total, expected_events);
    let last = f
        .bus
        .last_sequence(&case(&cases[CASES - 1]))
        .await
        .expect("last sequence");
    assert!(
        last as usize <= expected_events,
        "no message outside the cases"
    );

    f.wait_consumer_caught_up("svc-ip_center-zhejiang").await;
    f.wait_consumer_caught_up("svc-customs-ningbo").await;
    f.assert_no_dead_letters().await;

    // Both instances' inboxes agree: every second assessment request pending, acknowledged.
    for instance in [&a, &b] {
        let items = instance
            .common()
            .list_inbox(ListInboxRequest::default())
            .await
            .expect("inbox")
            .into_inner()
            .items;
        let pending: BTreeSet<(String, String)> = items
            .iter()
            .filter(|i| acknowledged(i))
            .map(|i| (i.case_id.clone(), i.handoff_id.clone()))
            .collect();
        let expected: BTreeSet<(String, String)> =
            cases.iter().map(|c| (c.clone(), "a2".to_owned())).collect();
        assert_eq!(pending, expected, "{}", instance.log_text());
    }
}
