//! The inbox snapshot over the real binaries (`--inbox-snapshot`, docs/STARTUP.md): a
//! police service stopped gracefully writes its snapshot, resumes from it at the next
//! start (the log names the position) and then has the very inbox a service rebuilt from
//! the first message has, after hand-offs recorded while it was down; a snapshot of
//! another server's stream, and one whose position lies beyond the stream's end, are
//! refused (log and `casebus_inbox_snapshot_refused_total{reason}`) and the inbox is
//! rebuilt correctly.

mod agency_harness;

use std::path::{Path, PathBuf};

use prost::Message as _;

use casebus_bus::ops::Ops;
use casebus_bus::subjects::CASES_STREAM;
use casebus_proto::agency::v1::*;
use casebus_proto::event::v1::{HandoffAccepted, InvestigationFiled};
use casebus_proto::public_security::v1::FileInvestigationRequest;
use casebus_test_support::wait_until;

use agency_harness::*;

/// The position and entry count of a snapshot file, as the test reads it.
fn snapshot_at(path: &Path) -> (u64, usize) {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let file = InboxSnapshotFile::decode(bytes.as_slice()).expect("a snapshot file");
    let contents = InboxSnapshot::decode(file.contents.as_slice()).expect("its contents");
    assert_eq!(contents.office_id, POLICE);
    assert_eq!(contents.stream, CASES_STREAM);
    (contents.position, contents.entries.len())
}

/// The stream's last sequence.
async fn last_sequence(f: &Fixture) -> u64 {
    Ops::from_bus(&f.bus)
        .stream_status(CASES_STREAM)
        .await
        .expect("stream status")
        .expect("the stream exists")
        .last_sequence
}

/// The whole inbox, once it reflects the stream up to its last sequence and every
/// hand-off in it has its automatic receipt (the receipts are appended by the service
/// after it starts, so the stream moves until they are).
async fn settled_inbox(f: &Fixture, service: &Running) -> Vec<InboxItem> {
    let mut client = service.common();
    let what = format!("the inbox of instance {} to settle", service.log.display());
    let settled = wait_until(RECEIPT_TIMEOUT, &what, async || {
        let last = last_sequence(f).await;
        let response = client
            .list_inbox(ListInboxRequest::default())
            .await
            .ok()?
            .into_inner();
        let receipted = response
            .items
            .iter()
            .all(|i| i.status != HandoffStatus::Requested as i32);
        (response.position == last && receipted && last_sequence(f).await == last)
            .then_some(response.items)
    })
    .await;
    settled.unwrap_or_else(|e| panic!("{e}\n{}", service.log_text()))
}

/// Stops `service` with SIGTERM and waits until it exited cleanly.
async fn stop(service: &mut Running) {
    service.terminate();
    let status = service.wait_exit().await;
    assert!(status.success(), "{status}\n{}", service.log_text());
}

fn snapshot_flag(path: &Path) -> [String; 2] {
    ["--inbox-snapshot".into(), path.display().to_string()]
}

async fn spawn_police(f: &Fixture, snapshot: Option<&Path>) -> Running {
    let flag = snapshot.map(snapshot_flag);
    let extra: Vec<&str> = flag.iter().flatten().map(String::as_str).collect();
    f.spawn_with(POLICE, &extra).await
}

/// Refers case `case_id` (opened first) to the police as hand-off `h1`.
async fn referred(customs: &Running, case_id: &str) {
    open_case(customs, case_id).await;
    refer_to_police(customs, case_id, "h1").await;
}

async fn accept(police: &Running, case_id: &str) {
    let r = police
        .common()
        .accept_handoff(AcceptHandoffRequest {
            meta: meta(case_id),
            handoff_accepted: Some(HandoffAccepted {
                handoff_id: "h1".into(),
                local_case_number: format!("PS-{case_id}"),
            }),
        })
        .await;
    ok(police, "accept h1", r);
}

async fn file_investigation(police: &Running, case_id: &str) {
    let r = police
        .police()
        .file_investigation(FileInvestigationRequest {
            meta: meta(case_id),
            investigation_filed: Some(InvestigationFiled {
                police_case_number: format!("PS-{case_id}"),
                suspected_offence: "Criminal Law art. 213".into(),
                basis: "referral by customs".into(),
            }),
        })
        .await;
    ok(police, "file the investigation", r);
}

async fn noted(agency: &Running, case_id: &str, text: &str) {
    let r = add_note(agency, case_id, &fresh_request_id(), text).await;
    ok(agency, "add a note", r);
}

fn case_ids(items: &[InboxItem]) -> Vec<&str> {
    items.iter().map(|i| i.case_id.as_str()).collect()
}

#[tokio::test]
async fn a_restarted_service_resumes_from_its_snapshot_to_the_inbox_a_rebuild_has() {
    let f = Fixture::start().await;
    let path = f.dir.path().join("police.inbox");
    let customs = f.spawn(CUSTOMS).await;
    let mut police = spawn_police(&f, Some(&path)).await;
    // A: referred and acknowledged; B: accepted (its filing clock runs); C: accepted
    // and filed (answered, it leaves the inbox).
    for case_id in ["C-SNAP-A", "C-SNAP-B", "C-SNAP-C"] {
        referred(&customs, case_id).await;
        police
            .wait_inbox(case_id, "h1", "the police to acknowledge h1", acknowledged)
            .await;
    }
    accept(&police, "C-SNAP-B").await;
    accept(&police, "C-SNAP-C").await;
    file_investigation(&police, "C-SNAP-C").await;
    let before = settled_inbox(&f, &police).await;
    assert_eq!(case_ids(&before), ["C-SNAP-A", "C-SNAP-B"]);
    stop(&mut police).await;
    let log = police.log_text();
    assert!(log.contains("inbox snapshot written at shutdown"), "{log}");
    let (position, entries) = snapshot_at(&path);
    assert_eq!(
        position,
        last_sequence(&f).await,
        "written at the stream's end"
    );
    assert_eq!(entries, 2);

    // While the police are down: another referral, a note on a referred case, and a
    // referral that the police answer at once when they are back.
    referred(&customs, "C-SNAP-D").await;
    noted(&customs, "C-SNAP-A", "while the police were down").await;
    referred(&customs, "C-SNAP-E").await;
    assert!(last_sequence(&f).await > position);

    let resumed = spawn_police(&f, Some(&path)).await;
    let log = resumed.log_text();
    assert!(
        log.contains("inbox resumed from its snapshot")
            && log.contains(&format!("position={position} ")),
        "the log names the position resumed from ({position}):\n{log}"
    );
    assert!(!log.contains("inbox snapshot refused"), "{log}");
    resumed
        .wait_inbox(
            "C-SNAP-E",
            "h1",
            "the resumed police to receipt E",
            acknowledged,
        )
        .await;
    accept(&resumed, "C-SNAP-E").await;
    file_investigation(&resumed, "C-SNAP-E").await;

    let rebuilt = spawn_police(&f, None).await;
    let log = rebuilt.log_text();
    assert!(!log.contains("inbox resumed"), "{log}");
    let (from_snapshot, from_stream) = (
        settled_inbox(&f, &resumed).await,
        settled_inbox(&f, &rebuilt).await,
    );
    assert_eq!(case_ids(&from_stream), ["C-SNAP-A", "C-SNAP-B", "C-SNAP-D"]);
    assert_eq!(from_snapshot, from_stream);
    assert_eq!(
        from_snapshot[1].status,
        HandoffStatus::Accepted as i32,
        "the accepted hand-off stays accepted"
    );
    let clock = from_snapshot[1].clock.as_ref().expect("B's filing clock");
    assert_eq!(clock.name, "filing_decision");
}

/// A copy of the snapshot at `from`, for one start (a service writes its own at
/// `path` once caught up, so every start gets a fresh copy).
fn copy_of(from: &Path, dir: &Path, name: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::copy(from, &path).expect("copy the snapshot");
    path
}

/// Starts the police over `f` with a copy of `snapshot`, and checks that the snapshot
/// was refused for `reason` (log and metric) and that the inbox was rebuilt: it equals
/// that of a service started without a snapshot.
async fn refused_and_rebuilt(f: &Fixture, snapshot: &Path, reason: &str) {
    let path = copy_of(snapshot, f.dir.path(), &format!("copy-{reason}.inbox"));
    let mut police = spawn_police(f, Some(&path)).await;
    let log = police.log_text();
    assert!(
        log.contains("inbox snapshot refused") && log.contains(&format!("reason={reason}")),
        "refused for {reason}:\n{log}"
    );
    assert!(!log.contains("inbox resumed"), "{log}");
    let metrics = http_get(police.metrics, "/metrics").await;
    assert!(
        has_sample(
            &metrics,
            "casebus_inbox_snapshot_refused_total",
            POLICE,
            &[&format!("reason=\"{reason}\"")],
            "1"
        ),
        "{metrics}"
    );
    let mut plain = spawn_police(f, None).await;
    let (after_refusal, rebuilt) = (
        settled_inbox(f, &police).await,
        settled_inbox(f, &plain).await,
    );
    assert!(!rebuilt.is_empty());
    assert_eq!(after_refusal, rebuilt);
    stop(&mut police).await;
    stop(&mut plain).await;
    // The refused file was replaced by a snapshot of this stream.
    assert_eq!(snapshot_at(&path).0, last_sequence(f).await);
}

#[tokio::test]
async fn a_snapshot_of_another_stream_or_beyond_its_end_is_refused_and_the_inbox_rebuilt() {
    // The snapshot of one server's stream: five referrals.
    let first = Fixture::start().await;
    let snapshot = first.dir.path().join("police.inbox");
    {
        let customs = first.spawn(CUSTOMS).await;
        let mut police = spawn_police(&first, Some(&snapshot)).await;
        for n in 0..5 {
            let case_id = format!("C-FIRST-{n}");
            referred(&customs, &case_id).await;
            police
                .wait_inbox(&case_id, "h1", "the police to acknowledge h1", acknowledged)
                .await;
        }
        settled_inbox(&first, &police).await;
        stop(&mut police).await;
    }
    let (position, _) = snapshot_at(&snapshot);

    // Another server whose stream is shorter than the snapshot's position.
    let second = Fixture::start().await;
    let customs = second.spawn(CUSTOMS).await;
    referred(&customs, "C-SECOND-1").await;
    assert!(last_sequence(&second).await < position);
    refused_and_rebuilt(&second, &snapshot, "beyond_stream").await;

    // The same server once its stream is longer: the message at the position is not
    // the one the snapshot was taken after.
    while last_sequence(&second).await <= position {
        noted(&customs, "C-SECOND-1", "a note").await;
    }
    referred(&customs, "C-SECOND-2").await;
    refused_and_rebuilt(&second, &snapshot, "anchor_mismatch").await;
}
