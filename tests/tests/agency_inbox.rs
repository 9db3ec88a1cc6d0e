//! The inbox as a back-office sees it: `WatchInbox` sends what is pending, a caught-up
//! marker, then every change live (a new hand-off, its automatic receipt, its
//! acceptance, which keeps it in the inbox while its filing clock runs, the clock
//! running out, and the filing decision, which answers it); `ListInbox` filters overdue
//! hand-offs and names their running clock; the overdue gauge counts them; the sender's
//! case view flags them; and a watch ends cleanly when the service shuts down.

mod agency_harness;

use std::time::Duration;

use tonic::Streaming;

use casebus_proto::agency::v1::*;
use casebus_proto::event::v1::{HandoffAccepted, InvestigationFiled};
use casebus_proto::public_security::v1::FileInvestigationRequest;
use casebus_test_support::wait_until;

use agency_harness::*;

/// Ceiling for the next message of a watch.
const WATCH_TIMEOUT: Duration = Duration::from_secs(20);
/// The police's filing clock runs this short under these rules (given to both the sender
/// and the police, whose inbox counts it), so the test sees referrals go overdue.
const SHORT_RULES: &str = "[handoff_due]\nsuspected_crime_referral = \"2s\"\n";

type Seen = Vec<(InboxChange, String, i32, bool)>;

/// Reads the watch until `done` holds for what was seen so far.
async fn read_until(
    watch: &mut Streaming<WatchInboxResponse>,
    seen: &mut Seen,
    done: impl Fn(&Seen) -> bool,
) {
    while !done(seen) {
        let message = tokio::time::timeout(WATCH_TIMEOUT, watch.message())
            .await
            .unwrap_or_else(|_| panic!("no inbox change within {WATCH_TIMEOUT:?}; seen {seen:?}"))
            .expect("the watch goes on")
            .expect("the watch is open");
        let change = InboxChange::try_from(message.change).expect("known change");
        let item = message.item.unwrap_or_default();
        seen.push((change, item.handoff_id, item.status, item.overdue));
    }
}

fn saw(
    seen: &Seen,
    change: InboxChange,
    handoff: &str,
    status: HandoffStatus,
    overdue: bool,
) -> bool {
    seen.iter()
        .any(|(c, h, s, o)| *c == change && h == handoff && *s == status as i32 && *o == overdue)
}

#[tokio::test]
async fn the_inbox_streams_existing_new_acknowledged_overdue_and_answered_hand_offs() {
    let f = Fixture::start().await;
    let (customs, mut police) = tokio::join!(
        f.spawn_with_rules(CUSTOMS, SHORT_RULES),
        f.spawn_with_rules(POLICE, SHORT_RULES)
    );
    open_case(&customs, "C-WATCH").await;
    refer_to_police(&customs, "C-WATCH", "h1").await;
    police
        .wait_inbox(
            "C-WATCH",
            "h1",
            "the police to acknowledge h1",
            acknowledged,
        )
        .await;

    let mut watch = police
        .common()
        .watch_inbox(WatchInboxRequest {})
        .await
        .expect("watch the inbox")
        .into_inner();
    let mut seen = Seen::new();
    read_until(&mut watch, &mut seen, |s| {
        s.iter().any(|(c, ..)| *c == InboxChange::CaughtUp)
    })
    .await;
    assert_eq!(seen[0].0, InboxChange::Existing);
    assert_eq!(seen[0].1, "h1");
    assert_eq!(seen[0].2, HandoffStatus::Acknowledged as i32);
    assert_eq!(seen.len(), 2, "{seen:?}");

    // A new hand-off arrives and is acknowledged; the old one is accepted and stays:
    // accepting does not answer the filing clock.
    refer_to_police(&customs, "C-WATCH", "h2").await;
    read_until(&mut watch, &mut seen, |s| {
        saw(s, InboxChange::Added, "h2", HandoffStatus::Requested, false)
            && saw(
                s,
                InboxChange::Updated,
                "h2",
                HandoffStatus::Acknowledged,
                false,
            )
    })
    .await;
    let r = police
        .common()
        .accept_handoff(AcceptHandoffRequest {
            meta: meta("C-WATCH"),
            handoff_accepted: Some(HandoffAccepted {
                handoff_id: "h1".into(),
                local_case_number: "PS-WATCH-1".into(),
            }),
        })
        .await;
    ok(&police, "accept h1", r);
    // Both filing clocks run out two seconds after their referral.
    read_until(&mut watch, &mut seen, |s| {
        saw(s, InboxChange::Updated, "h1", HandoffStatus::Accepted, true)
            && saw(
                s,
                InboxChange::Updated,
                "h2",
                HandoffStatus::Acknowledged,
                true,
            )
    })
    .await;
    assert!(
        !seen.iter().any(|(c, ..)| *c == InboxChange::Removed),
        "{seen:?}"
    );

    let list_overdue = async || {
        police
            .common()
            .list_inbox(ListInboxRequest {
                case_id: String::new(),
                overdue_only: true,
            })
            .await
            .expect("list overdue")
            .into_inner()
            .items
    };
    let overdue = list_overdue().await;
    let ids: Vec<&str> = overdue.iter().map(|i| i.handoff_id.as_str()).collect();
    assert_eq!(ids, ["h1", "h2"], "the oldest due first");
    for item in &overdue {
        assert!(item.overdue);
        let clock = item.clock.as_ref().expect("a running clock");
        assert_eq!(clock.name, "filing_decision");
        assert!(clock.basis.contains("Order 310"), "{}", clock.basis);
        assert!(
            clock.due_at.is_some() && clock.due_error.is_empty(),
            "{clock:?}"
        );
    }
    wait_until(
        WATCH_TIMEOUT,
        "the overdue gauge to count h1 and h2",
        async || {
            let metrics = http_get(police.metrics, "/metrics").await;
            has_sample(
                &metrics,
                "casebus_handoffs_overdue",
                POLICE,
                &["agency=\"public_security\""],
                "2",
            )
        },
    )
    .await
    .expect("overdue gauge");
    let view = customs
        .common()
        .get_case(GetCaseRequest {
            case_id: "C-WATCH".into(),
        })
        .await
        .expect("the sender's view")
        .into_inner()
        .case
        .expect("case");
    let flags: Vec<(&str, bool)> = view
        .handoffs
        .iter()
        .map(|h| (h.handoff_id.as_str(), h.overdue))
        .collect();
    // The sender's view counts the same clocks: the accepted h1 is overdue too.
    assert_eq!(flags, [("h1", true), ("h2", true)]);

    // The filing decision answers every referral to the police: both leave the inbox.
    let r = police
        .police()
        .file_investigation(FileInvestigationRequest {
            meta: meta("C-WATCH"),
            investigation_filed: Some(InvestigationFiled {
                police_case_number: "PS-WATCH-1".into(),
                suspected_offence: "Criminal Law art. 213".into(),
                basis: "referral by customs".into(),
            }),
        })
        .await;
    ok(&police, "file the investigation", r);
    read_until(&mut watch, &mut seen, |s| {
        saw(s, InboxChange::Removed, "h1", HandoffStatus::Accepted, true)
            && saw(
                s,
                InboxChange::Removed,
                "h2",
                HandoffStatus::Acknowledged,
                true,
            )
    })
    .await;
    assert!(list_overdue().await.is_empty());

    // Shutting down ends the watch cleanly, and the service exits.
    police.terminate();
    let end = tokio::time::timeout(WATCH_TIMEOUT, async {
        loop {
            match watch.message().await {
                Ok(Some(_)) => {}
                Ok(None) => return Ok(()),
                Err(status) => return Err(status),
            }
        }
    })
    .await
    .expect("the watch ends with the service");
    assert!(end.is_ok(), "{end:?}");
    assert!(police.wait_exit().await.success());
}
