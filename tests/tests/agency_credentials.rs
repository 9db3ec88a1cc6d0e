//! Credentials at an agency service through the real binary: `WatchInbox` and `Import`
//! end with UNAUTHENTICATED when the token that opened them expires (an import answers
//! what it took and records nothing sent after the expiry) or is revoked (within
//! seconds of its id reaching the `--revoked-tokens` file), and a token for the gateway
//! or the monitor is UNAUTHENTICATED on every command.

mod agency_harness;

use std::time::Duration;

use futures::StreamExt as _;
use time::OffsetDateTime;
use tokio::sync::mpsc;
use tonic::Code;

use casebus_integrity::token::{Audience, Role};
use casebus_proto::agency::v1::import_request::Command;
use casebus_proto::agency::v1::import_response::Outcome;
use casebus_proto::agency::v1::*;
use casebus_proto::event::v1::{CaseOpened, CaseType, NoteAdded};

use agency_harness::*;

/// Lifetime of the short-lived token: long enough to open the stream and use it.
const SHORT_TTL: time::Duration = time::Duration::seconds(4);
/// Ceiling for a stream to end after its token expired.
const EXPIRY_TIMEOUT: Duration = Duration::from_secs(20);

fn token_for(f: &Fixture, audience: Audience, roles: &[Role], ttl: time::Duration) -> String {
    f.issuer
        .issue(
            audience,
            &office(CUSTOMS),
            "clerk of customs",
            roles,
            OffsetDateTime::now_utc(),
            ttl,
        )
        .expect("token")
}

fn open_item(case_id: &str) -> ImportRequest {
    ImportRequest {
        command: Some(Command::OpenCase(OpenCaseRequest {
            meta: meta_with(case_id, &format!("{case_id}-open")),
            case_opened: Some(CaseOpened {
                case_type: CaseType::CounterfeitTrademark as i32,
                title: format!("historical case {case_id}"),
                ..Default::default()
            }),
        })),
    }
}

fn note_item(case_id: &str, n: usize) -> ImportRequest {
    ImportRequest {
        command: Some(Command::AddNote(AddNoteRequest {
            meta: meta_with(case_id, &format!("{case_id}-note-{n}")),
            note_added: Some(NoteAdded {
                text: format!("note {n}"),
            }),
        })),
    }
}

/// Opens `WatchInbox` and `Import` at `customs` with `token`, and records the opening of
/// `case_id` through the import: the two streams, the import's sender and its answers.
async fn open_streams(
    customs: &Running,
    token: &str,
    case_id: &str,
) -> (
    tonic::Streaming<WatchInboxResponse>,
    mpsc::Sender<ImportRequest>,
    tonic::Streaming<ImportResponse>,
) {
    let watch = customs
        .common_as(Some(token))
        .watch_inbox(WatchInboxRequest {})
        .await
        .expect("watch the inbox")
        .into_inner();
    let (sender, receiver) = mpsc::channel::<ImportRequest>(16);
    let requests = futures::stream::unfold(receiver, |mut r| async move {
        r.recv().await.map(|item| (item, r))
    });
    let mut answers = customs
        .common_as(Some(token))
        .import(requests)
        .await
        .expect("import accepted")
        .into_inner();
    sender
        .send(open_item(case_id))
        .await
        .expect("the call is open");
    let answer = tokio::time::timeout(CALL_TIMEOUT, answers.next())
        .await
        .expect("answered in time")
        .expect("the stream is open")
        .expect("an answer");
    assert!(
        matches!(answer.outcome, Some(Outcome::Recorded(_))),
        "{answer:?}"
    );
    (watch, sender, answers)
}

fn assert_expired(what: &str, status: &tonic::Status, token: &str) {
    assert_eq!(status.code(), Code::Unauthenticated, "{what}: {status:?}");
    assert!(
        status
            .message()
            .contains("token that opened this stream expired"),
        "{what}: {}",
        status.message()
    );
    assert!(
        !status.message().contains(token),
        "{what}: the token is not echoed"
    );
}

#[tokio::test]
async fn watch_inbox_and_import_end_unauthenticated_when_the_token_that_opened_them_expires() {
    let f = Fixture::start().await;
    let customs = f.spawn(CUSTOMS).await;
    let short = token_for(
        &f,
        Audience::Agency,
        &[Role::Clerk, Role::Reader],
        SHORT_TTL,
    );
    let opened_at = OffsetDateTime::now_utc();

    let (mut watch, sender, mut answers) = open_streams(&customs, &short, "EXP-1").await;

    // The watch ends at the expiry; the client keeps the import open and must be cut off.
    let deadline = tokio::time::Instant::now() + EXPIRY_TIMEOUT;
    let watch_end = loop {
        match tokio::time::timeout_at(deadline, watch.message()).await {
            Err(_) => panic!("the watch did not end within {EXPIRY_TIMEOUT:?}"),
            Ok(Ok(Some(_))) => {}
            Ok(Ok(None)) => panic!("the watch ended without a status"),
            Ok(Err(status)) => break status,
        }
    };
    assert_expired("WatchInbox", &watch_end, &short);
    let import_end = tokio::time::timeout(EXPIRY_TIMEOUT, answers.next())
        .await
        .expect("the import ends in time");
    match import_end {
        Some(Err(status)) => assert_expired("Import", &status, &short),
        other => panic!("expected UNAUTHENTICATED, got {other:?}"),
    }
    assert!(
        OffsetDateTime::now_utc() - opened_at >= SHORT_TTL - time::Duration::seconds(1),
        "the streams ended at the expiry, not before"
    );
    // An item sent after the expiry is never recorded.
    let _ = sender.send(note_item("EXP-1", 1)).await;
    drop(sender);
    assert_eq!(
        f.load("EXP-1").await.events.len(),
        1,
        "only the item answered"
    );
}

/// Ceiling for a stream to end after its token was revoked: the list is polled every
/// second.
const REVOCATION_TIMEOUT: Duration = Duration::from_secs(10);

#[tokio::test]
async fn watch_inbox_and_import_end_unauthenticated_within_seconds_of_their_token_being_revoked() {
    let f = Fixture::start().await;
    let list = f.dir.path().join("revoked.txt");
    std::fs::write(&list, "# revoked token ids\n").expect("revocation list");
    let list_arg = list.display().to_string();
    let customs = f
        .spawn_with(CUSTOMS, &["--revoked-tokens", &list_arg])
        .await;
    let stolen = token_for(
        &f,
        Audience::Agency,
        &[Role::Clerk, Role::Reader],
        time::Duration::days(1),
    );
    let jti = casebus_integrity::token::TrustedIssuers::default()
        .with(&f.issuer)
        .verify(&stolen, Audience::Agency, OffsetDateTime::now_utc())
        .expect("the token verifies")
        .jti;

    let (mut watch, sender, mut answers) = open_streams(&customs, &stolen, "REV-1").await;

    std::fs::write(&list, format!("# revoked token ids\n{jti}\n")).expect("revocation list");
    let assert_revoked = |what: &str, status: &tonic::Status| {
        assert_eq!(status.code(), Code::Unauthenticated, "{what}: {status:?}");
        assert!(
            status.message().contains(&format!("({jti}) was revoked")),
            "{what}: {}",
            status.message()
        );
        assert!(
            !status.message().contains(&stolen),
            "{what}: the token is not echoed"
        );
    };
    let deadline = tokio::time::Instant::now() + REVOCATION_TIMEOUT;
    let watch_end = loop {
        match tokio::time::timeout_at(deadline, watch.message()).await {
            Err(_) => {
                panic!("the watch did not end within {REVOCATION_TIMEOUT:?} of the revocation")
            }
            Ok(Ok(Some(_))) => {}
            Ok(Ok(None)) => panic!("the watch ended without a status"),
            Ok(Err(status)) => break status,
        }
    };
    assert_revoked("WatchInbox", &watch_end);
    match tokio::time::timeout_at(deadline, answers.next())
        .await
        .expect("the import ends in time")
    {
        Some(Err(status)) => assert_revoked("Import", &status),
        other => panic!("expected UNAUTHENTICATED, got {other:?}"),
    }
    // An item sent after the revocation is never recorded, and a new call is refused.
    let _ = sender.send(note_item("REV-1", 1)).await;
    drop(sender);
    assert_eq!(
        f.load("REV-1").await.events.len(),
        1,
        "only the item answered"
    );
    let status = customs
        .common_as(Some(&stolen))
        .watch_inbox(WatchInboxRequest {})
        .await
        .expect_err("revoked");
    assert_eq!(status.code(), Code::Unauthenticated);
    assert!(
        status.message().contains("is revoked"),
        "{}",
        status.message()
    );
}

#[tokio::test]
async fn tokens_for_the_gateway_or_the_monitor_record_nothing_at_an_agency_service() {
    let f = Fixture::start().await;
    let customs = f.spawn(CUSTOMS).await;
    let hour = time::Duration::hours(1);
    for (label, audience) in [
        ("a gateway reader's token", Audience::Gateway),
        ("the monitor's sign-in token", Audience::Monitor),
    ] {
        let token = token_for(
            &f,
            audience,
            &[Role::Clerk, Role::Reader, Role::Admin],
            hour,
        );
        let mut client = customs.common_as(Some(&token));
        let status = client
            .open_case(OpenCaseRequest {
                meta: meta("AUD-1"),
                case_opened: opened("audience"),
            })
            .await
            .expect_err(label);
        assert_eq!(status.code(), Code::Unauthenticated, "{label}");
        assert!(
            status
                .message()
                .contains(&format!("token is for the {audience} audience, not agency")),
            "{label}: {}",
            status.message()
        );
        let status = client
            .list_inbox(ListInboxRequest::default())
            .await
            .expect_err(label);
        assert_eq!(status.code(), Code::Unauthenticated, "{label}");
    }
    assert!(f.load("AUD-1").await.events.is_empty(), "nothing recorded");
}
