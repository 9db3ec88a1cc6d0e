//! The bulk import stream (`AgencyService.Import`) against the real customs binary: an
//! import over many cases records exactly one event per item, in the order sent within
//! each case, and every chain verifies; the same import sent again records nothing and
//! answers the original versions; bad items are refused one by one (INVALID_ARGUMENT
//! naming the field, or the code the unary RPC would answer) without recording anything
//! while the items around them succeed, each item counted in the metrics by its code; callers without a clerk credential of the office
//! are refused before any item is read; and a shutdown ends an open import with
//! UNAVAILABLE after answering what it took. The clock changes and legal holds are
//! imported like their unary commands, refusals included.

mod agency_harness;

use std::collections::BTreeMap;

use futures::StreamExt as _;
use tokio::sync::mpsc;
use tonic::{Code, Streaming};

use casebus_bus::ops::Ops;
use casebus_bus::subjects::CASES_STREAM;
use casebus_integrity::token::Role;
use casebus_proto::agency::v1::import_request::Command;
use casebus_proto::agency::v1::import_response::Outcome;
use casebus_proto::agency::v1::{
    AddNoteRequest, AddPartyRequest, CommandMeta, CommandReply, ImportError, ImportRequest,
    ImportResponse, LinkReferenceRequest, OpenCaseRequest, RecordEvidenceRequest,
};
use casebus_proto::event::v1::{
    Agency, CaseOpened, CaseType, EvidenceRecorded, NoteAdded, Party, PartyAdded, PartyRole,
    ReferenceLinked,
};

use agency_harness::*;

/// Ceiling for a whole import to be answered.
const IMPORT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(120);

fn meta_of(case_id: &str, request_id: &str) -> Option<CommandMeta> {
    meta_with(case_id, request_id)
}

fn open(case_id: &str) -> ImportRequest {
    ImportRequest {
        command: Some(Command::OpenCase(OpenCaseRequest {
            meta: meta_of(case_id, &format!("{case_id}-open")),
            case_opened: Some(CaseOpened {
                case_type: CaseType::CounterfeitTrademark as i32,
                title: format!("historical case {case_id}"),
                ..Default::default()
            }),
        })),
    }
}

fn note(case_id: &str, n: usize) -> ImportRequest {
    ImportRequest {
        command: Some(Command::AddNote(AddNoteRequest {
            meta: meta_of(case_id, &format!("{case_id}-note-{n}")),
            note_added: Some(NoteAdded {
                text: format!("note {n} of {case_id}"),
            }),
        })),
    }
}

/// The historical record of one case: opened, a party, evidence, its local number,
/// then notes: `1 + 3 + notes` items, each depending on the opening before it.
fn history(case_id: &str, notes: usize) -> Vec<ImportRequest> {
    let mut items = vec![
        open(case_id),
        ImportRequest {
            command: Some(Command::AddParty(AddPartyRequest {
                meta: meta_of(case_id, &format!("{case_id}-party")),
                party_added: Some(PartyAdded {
                    party: Some(Party {
                        party_id: "p1".into(),
                        role: PartyRole::RightsHolder as i32,
                        name: "Acme Audio Ltd".into(),
                        organisation: true,
                        ..Default::default()
                    }),
                }),
            })),
        },
        ImportRequest {
            command: Some(Command::RecordEvidence(RecordEvidenceRequest {
                meta: meta_of(case_id, &format!("{case_id}-evidence")),
                evidence_recorded: Some(EvidenceRecorded {
                    evidence_id: "e1".into(),
                    description: "photographs of the consignment".into(),
                    content_sha256: vec![9; 32],
                    location: format!("evidence://customs/{case_id}/e1"),
                    media_type: "image/jpeg".into(),
                    size_bytes: 1234,
                }),
            })),
        },
        ImportRequest {
            command: Some(Command::LinkReference(LinkReferenceRequest {
                meta: meta_of(case_id, &format!("{case_id}-ref")),
                reference_linked: Some(ReferenceLinked {
                    agency: Agency::Customs as i32,
                    local_case_number: format!("NB-OLD-{case_id}"),
                }),
            })),
        },
    ];
    items.extend((1..=notes).map(|n| note(case_id, n)));
    items
}

/// `cases` histories interleaved round-robin, so items of different cases alternate and
/// each case's items depend on the ones before them.
fn interleaved(prefix: &str, cases: usize, notes: usize) -> Vec<ImportRequest> {
    let histories: Vec<Vec<ImportRequest>> = (0..cases)
        .map(|c| history(&format!("{prefix}-{c:03}"), notes))
        .collect();
    let mut items = Vec::new();
    for round in 0..4 + notes {
        for h in &histories {
            items.push(h[round].clone());
        }
    }
    items
}

/// Sends `items` on one Import call (reading answers while sending) and returns every
/// answer, and how the call ended.
async fn import(
    agency: &Running,
    token: Option<&str>,
    items: Vec<ImportRequest>,
) -> Result<(Vec<ImportResponse>, Result<(), tonic::Status>), tonic::Status> {
    let mut client = agency.common_as(token);
    let call = async {
        let answers = client
            .import(futures::stream::iter(items))
            .await?
            .into_inner();
        Ok(read_all(answers).await)
    };
    tokio::time::timeout(IMPORT_TIMEOUT, call)
        .await
        .unwrap_or_else(|_| {
            panic!(
                "the import was not answered in time:\n{}",
                agency.log_text()
            )
        })
}

async fn read_all(
    mut answers: Streaming<ImportResponse>,
) -> (Vec<ImportResponse>, Result<(), tonic::Status>) {
    let mut out = Vec::new();
    loop {
        match answers.next().await {
            Some(Ok(answer)) => out.push(answer),
            Some(Err(status)) => return (out, Err(status)),
            None => return (out, Ok(())),
        }
    }
}

/// The answers by index, checking each index 0..n came exactly once.
fn by_index(answers: Vec<ImportResponse>, n: usize) -> BTreeMap<u64, ImportResponse> {
    let count = answers.len();
    let map: BTreeMap<u64, ImportResponse> = answers.into_iter().map(|a| (a.index, a)).collect();
    assert_eq!(count, n, "one answer per item");
    assert_eq!(map.len(), n, "each index answered once");
    assert_eq!(
        map.keys().copied().collect::<Vec<_>>(),
        (0..n as u64).collect::<Vec<_>>()
    );
    map
}

fn recorded(answer: &ImportResponse) -> &CommandReply {
    match &answer.outcome {
        Some(Outcome::Recorded(reply)) => reply,
        other => panic!(
            "item {} ({}) refused: {other:?}",
            answer.index, answer.request_id
        ),
    }
}

fn refusal(answer: &ImportResponse) -> &ImportError {
    match &answer.outcome {
        Some(Outcome::Error(error)) => error,
        other => panic!("item {} must be refused, got {other:?}", answer.index),
    }
}

async fn stored(f: &Fixture) -> u64 {
    Ops::from_bus(&f.bus)
        .stream_status(CASES_STREAM)
        .await
        .expect("stream status")
        .expect("CASES exists")
        .messages
}

#[tokio::test]
async fn an_import_over_many_cases_records_each_item_once_in_order_and_every_chain_verifies() {
    let f = Fixture::start().await;
    let customs = f.spawn(CUSTOMS).await;
    let (cases, notes) = (60, 6);
    let items = interleaved("IMP", cases, notes);
    let n = items.len();
    assert!(n > 256, "more items than the in-flight window");
    let before = stored(&f).await;

    let (answers, end) = import(&customs, Some(&customs.token), items)
        .await
        .expect("the import is accepted");
    end.expect("the import ends with OK");
    let answers = by_index(answers, n);

    assert_eq!(
        stored(&f).await - before,
        n as u64,
        "exactly one event per item"
    );
    // Per case, the answers in the order sent carry versions 1, 2, 3 ... and each
    // answer names the item's case and request id.
    let mut versions: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for answer in answers.values() {
        let reply = recorded(answer);
        assert!(!reply.duplicate);
        assert_eq!(reply.case_id, answer.case_id);
        versions
            .entry(answer.case_id.clone())
            .or_default()
            .push(reply.case_version);
    }
    assert_eq!(versions.len(), cases);
    let expected: Vec<u64> = (1..=(4 + notes) as u64).collect();
    for (case_id, got) in &versions {
        assert_eq!(got, &expected, "versions of {case_id} in the order sent");
    }
    // The stored events carry the request ids in the order sent, and verify.
    for c in 0..cases {
        let case_id = format!("IMP-{c:03}");
        let loaded = f.load(&case_id).await;
        let request_ids: Vec<String> = loaded
            .events
            .iter()
            .map(|e| e.event.event.request_id.clone())
            .collect();
        let sent: Vec<String> = history(&case_id, notes)
            .iter()
            .map(|i| request_id_of(i).to_owned())
            .collect();
        assert_eq!(request_ids, sent, "{case_id} stored in the order sent");
        let report = f.verify(&case_id).await;
        assert!(report.is_intact(), "{case_id}: {:?}", report.failures);
        assert_eq!(report.events.len(), 4 + notes);
    }
    f.assert_no_dead_letters().await;
}

fn request_id_of(item: &ImportRequest) -> &str {
    let meta = match item.command.as_ref().expect("a command") {
        Command::OpenCase(r) => &r.meta,
        Command::AddParty(r) => &r.meta,
        Command::RecordEvidence(r) => &r.meta,
        Command::AddNote(r) => &r.meta,
        Command::LinkReference(r) => &r.meta,
        _ => unreachable!("the history sends these commands only"),
    };
    &meta.as_ref().expect("meta").request_id
}

#[tokio::test]
async fn an_import_sent_again_records_nothing_and_answers_the_original_outcomes() {
    let f = Fixture::start().await;
    let customs = f.spawn(CUSTOMS).await;
    let items = interleaved("AGAIN", 20, 3);
    let n = items.len();
    let (first, end) = import(&customs, Some(&customs.token), items.clone())
        .await
        .expect("accepted");
    end.expect("first import ends with OK");
    let first = by_index(first, n);
    let after_first = stored(&f).await;

    // The same items again, as an importer resuming after losing every answer would.
    // A fresh service instance proves the answers come from the stream, not a cache.
    let mut customs = customs;
    customs.terminate();
    customs.wait_exit().await;
    let customs = f.spawn(CUSTOMS).await;
    let (second, end) = import(&customs, Some(&customs.token), items)
        .await
        .expect("accepted");
    end.expect("second import ends with OK");
    let second = by_index(second, n);

    assert_eq!(stored(&f).await, after_first, "nothing new was recorded");
    for (index, again) in &second {
        let original = recorded(&first[index]);
        let reply = recorded(again);
        assert!(reply.duplicate, "item {index} is recognised as a retry");
        assert_eq!(reply.event_id, original.event_id);
        assert_eq!(reply.case_version, original.case_version);
        assert_eq!(reply.stream_sequence, original.stream_sequence);
        assert_eq!(reply.event_hash, original.event_hash);
    }
}

#[tokio::test]
async fn bad_items_are_refused_one_by_one_and_change_nothing_while_the_items_around_them_succeed() {
    let f = Fixture::start().await;
    let customs = f.spawn(CUSTOMS).await;
    let mut missing_payload = note("MIX-A", 90);
    if let Some(Command::AddNote(r)) = &mut missing_payload.command {
        r.note_added = None;
    }
    let mut bad_request_id = note("MIX-A", 91);
    if let Some(Command::AddNote(r)) = &mut bad_request_id.command {
        r.meta.as_mut().expect("meta").request_id = "has space".into();
    }
    let mut no_meta = note("MIX-A", 92);
    if let Some(Command::AddNote(r)) = &mut no_meta.command {
        r.meta = None;
    }
    let mut foreign_reference = note("MIX-A", 93);
    foreign_reference.command = Some(Command::LinkReference(LinkReferenceRequest {
        meta: meta_of("MIX-A", "MIX-A-foreign-ref"),
        reference_linked: Some(ReferenceLinked {
            agency: Agency::Court as i32,
            local_case_number: "COURT-1".into(),
        }),
    }));
    // (item, expected code, text the message must contain); None for a valid item.
    let plan: Vec<(ImportRequest, Option<(Code, &str)>)> = vec![
        (open("MIX-A"), None),
        (
            note("bad id*", 1),
            Some((Code::InvalidArgument, "invalid meta.case_id")),
        ),
        (note("MIX-A", 1), None),
        (
            missing_payload,
            Some((Code::InvalidArgument, "invalid note_added: is required")),
        ),
        (
            ImportRequest { command: None },
            Some((Code::InvalidArgument, "invalid command: is required")),
        ),
        (
            bad_request_id,
            Some((Code::InvalidArgument, "invalid meta.request_id")),
        ),
        (
            no_meta,
            Some((Code::InvalidArgument, "invalid meta: is required")),
        ),
        (note("MIX-A", 2), None),
        (
            note("MIX-NOWHERE", 1),
            Some((Code::NotFound, "MIX-NOWHERE")),
        ),
        (
            foreign_reference,
            Some((Code::PermissionDenied, "case MIX-A")),
        ),
        (open("MIX-A"), None), // the same opening again: a retry, answered duplicate
        (note("MIX-A", 3), None),
        (open("MIX-B"), None),
    ];
    let items: Vec<ImportRequest> = plan.iter().map(|(i, _)| i.clone()).collect();
    let before = stored(&f).await;
    let (answers, end) = import(&customs, Some(&customs.token), items)
        .await
        .expect("accepted");
    end.expect("the import ends with OK");
    let answers = by_index(answers, plan.len());

    for (index, (_, expected)) in plan.iter().enumerate() {
        let answer = &answers[&(index as u64)];
        match expected {
            None => {
                recorded(answer);
            }
            Some((code, text)) => {
                let error = refusal(answer);
                assert_eq!(error.code, *code as i32, "item {index}: {}", error.message);
                assert!(
                    error.message.contains(text),
                    "item {index}: {}",
                    error.message
                );
                assert!(!error.reason.is_empty(), "item {index} has a reason code");
            }
        }
    }
    assert!(recorded(&answers[&10]).duplicate);
    assert_eq!(
        answers[&1].case_id, "bad id*",
        "answers echo the ids as sent"
    );
    // Five events: MIX-A open + three notes, MIX-B open; the refused items wrote nothing.
    assert_eq!(stored(&f).await - before, 5);
    let a = f.load("MIX-A").await;
    let versions: Vec<u64> = a
        .events
        .iter()
        .map(|e| e.event.event.case_version)
        .collect();
    assert_eq!(versions, vec![1, 2, 3, 4]);
    assert!(f.verify("MIX-A").await.is_intact());
    // Every item is counted by the code of its outcome, as unary calls are.
    let metrics = http_get(customs.metrics, "/metrics").await;
    for (code, n) in [
        ("OK", "6"),
        ("INVALID_ARGUMENT", "5"),
        ("NOT_FOUND", "1"),
        ("PERMISSION_DENIED", "1"),
    ] {
        let label = format!("code=\"{code}\"");
        assert!(
            has_sample(
                &metrics,
                "casebus_import_items_total",
                CUSTOMS,
                &[&label],
                n
            ),
            "{code} {n}:\n{metrics}"
        );
    }
    assert!(has_sample(
        &metrics,
        "casebus_duplicate_commands_total",
        CUSTOMS,
        &[],
        "1"
    ));
}

#[tokio::test]
async fn callers_without_a_clerk_credential_of_the_office_are_refused_before_any_item() {
    let f = Fixture::start().await;
    let customs = f.spawn(CUSTOMS).await;
    let before = stored(&f).await;
    let reader = f.token(CUSTOMS, &[Role::Reader]);
    let other_office = f.token(CUSTOMS_2, &[Role::Clerk]);
    for (who, token, code) in [
        ("no credential", None, Code::Unauthenticated),
        ("a reader", Some(reader.as_str()), Code::PermissionDenied),
        (
            "a clerk of another office",
            Some(other_office.as_str()),
            Code::PermissionDenied,
        ),
        (
            "a forged token",
            Some("cb1.e30.AAAA"),
            Code::Unauthenticated,
        ),
    ] {
        let status = match import(&customs, token, interleaved("DENY", 2, 1)).await {
            Err(status) => status,
            Ok((answers, Err(status))) if answers.is_empty() => status,
            Ok((answers, end)) => panic!("{who}: expected {code:?}, got {answers:?} {end:?}"),
        };
        assert_eq!(status.code(), code, "{who}: {}", status.message());
    }
    assert_eq!(stored(&f).await, before, "nothing was recorded");
}

#[tokio::test]
async fn a_shutdown_answers_the_items_taken_and_ends_the_import_with_unavailable() {
    let f = Fixture::start().await;
    let mut customs = f.spawn(CUSTOMS).await;
    let (sender, receiver) = mpsc::channel::<ImportRequest>(16);
    let requests = futures::stream::unfold(receiver, |mut r| async move {
        r.recv().await.map(|item| (item, r))
    });
    let mut client = customs.common();
    let mut answers = client
        .import(requests)
        .await
        .expect("accepted")
        .into_inner();
    for item in history("STOP-1", 2) {
        sender.send(item).await.expect("the call is open");
    }
    for _ in 0..6 {
        let answer = tokio::time::timeout(CALL_TIMEOUT, answers.next())
            .await
            .expect("answered in time")
            .expect("the stream is open")
            .expect("an answer");
        recorded(&answer);
    }
    // The client keeps its side open; the service must end the call itself.
    customs.terminate();
    let end = tokio::time::timeout(CALL_TIMEOUT, answers.next())
        .await
        .expect("the call ends in time");
    match end {
        Some(Err(status)) => {
            assert_eq!(status.code(), Code::Unavailable, "{}", status.message());
            assert_eq!(reason(&status), "shutting_down");
            assert!(status.message().contains("same request_ids"));
        }
        other => panic!("expected UNAVAILABLE, got {other:?}"),
    }
    assert!(customs.wait_exit().await.success());
    drop(sender);
    assert_eq!(f.load("STOP-1").await.events.len(), 6);
}

#[tokio::test]
async fn clock_changes_and_legal_holds_are_imported_like_their_unary_commands() {
    use casebus_fixtures::catalogue::{
        extend_clock, lift_hold, place_hold, resume_clock, suspend_clock,
    };
    use casebus_proto::agency::v1::{
        AcceptHandoffRequest, ExtendClockRequest, LiftLegalHoldRequest, PlaceLegalHoldRequest,
        RequestHandoffRequest, ResumeClockRequest, SuspendClockRequest,
    };
    use casebus_proto::event::v1::payload::Kind;
    use casebus_proto::event::v1::{HandoffAccepted, HandoffKind, HandoffRequested};

    const CASE: &str = "IMP-CLOCKS";
    let f = Fixture::start().await;
    let (customs, police) = tokio::join!(f.spawn(CUSTOMS), f.spawn(POLICE));
    let Kind::LegalHoldPlaced(hold) = place_hold("lh1") else {
        unreachable!("a hold")
    };
    let Kind::LegalHoldLifted(lifted) = lift_hold("lh1") else {
        unreachable!("a lift")
    };
    let customs_items = vec![
        open(CASE),
        ImportRequest {
            command: Some(Command::RequestHandoff(RequestHandoffRequest {
                meta: meta_of(CASE, "refer"),
                handoff_requested: Some(HandoffRequested {
                    handoff_id: "h1".into(),
                    kind: HandoffKind::SuspectedCrimeReferral as i32,
                    to_agency: Agency::PublicSecurity as i32,
                    reason: "suspected crime".into(),
                    ..Default::default()
                }),
            })),
        },
        ImportRequest {
            command: Some(Command::PlaceLegalHold(PlaceLegalHoldRequest {
                meta: meta_of(CASE, "hold"),
                legal_hold_placed: Some(hold),
            })),
        },
        ImportRequest {
            command: Some(Command::LiftLegalHold(LiftLegalHoldRequest {
                meta: meta_of(CASE, "lift"),
                legal_hold_lifted: Some(lifted),
            })),
        },
    ];
    let (answers, end) = import(&customs, Some(&customs.token), customs_items)
        .await
        .expect("the import is accepted");
    end.expect("the import ends with OK");
    for answer in by_index(answers, 4).values() {
        recorded(answer);
    }
    police
        .wait_inbox(CASE, "h1", "the police to acknowledge h1", acknowledged)
        .await;

    let Kind::ClockExtended(extended) = extend_clock("h1", "filing_decision", POLICE) else {
        unreachable!("an extension")
    };
    let Kind::ClockSuspended(suspended) = suspend_clock("h1", "filing_decision") else {
        unreachable!("a suspension")
    };
    let Kind::ClockResumed(resumed) = resume_clock("h1", "filing_decision") else {
        unreachable!("a resumption")
    };
    let resumed_again = resumed.clone();
    let police_items = vec![
        ImportRequest {
            command: Some(Command::AcceptHandoff(AcceptHandoffRequest {
                meta: meta_of(CASE, "accept"),
                handoff_accepted: Some(HandoffAccepted {
                    handoff_id: "h1".into(),
                    local_case_number: String::new(),
                }),
            })),
        },
        ImportRequest {
            command: Some(Command::ExtendClock(ExtendClockRequest {
                meta: meta_of(CASE, "extend"),
                clock_extended: Some(extended),
            })),
        },
        ImportRequest {
            command: Some(Command::SuspendClock(SuspendClockRequest {
                meta: meta_of(CASE, "suspend"),
                clock_suspended: Some(suspended),
            })),
        },
        ImportRequest {
            command: Some(Command::ResumeClock(ResumeClockRequest {
                meta: meta_of(CASE, "resume"),
                clock_resumed: Some(resumed),
            })),
        },
        // The same refusal as the unary RPC: nothing to resume any more.
        ImportRequest {
            command: Some(Command::ResumeClock(ResumeClockRequest {
                meta: meta_of(CASE, "resume-again"),
                clock_resumed: Some(resumed_again),
            })),
        },
    ];
    let (answers, end) = import(&police, Some(&police.token), police_items)
        .await
        .expect("the import is accepted");
    end.expect("the import ends with OK");
    let answers = by_index(answers, 5);
    for i in 0..4 {
        recorded(&answers[&i]);
    }
    let error = refusal(&answers[&4]);
    assert_eq!(error.code, Code::FailedPrecondition as i32, "{error:?}");
    assert_eq!(error.rule, "clock_suspended", "{error:?}");

    let loaded = f.load(CASE).await;
    let types: Vec<&str> = loaded
        .events
        .iter()
        .filter_map(|e| e.event.event.payload.as_ref()?.kind.as_ref())
        .map(casebus_proto::payload_type_name)
        .collect();
    // The police service's automatic receipt lands wherever it came among customs' items.
    let receipts = types
        .iter()
        .filter(|t| **t == "HandoffAcknowledged")
        .count();
    assert_eq!(receipts, 1, "{types:?}");
    let types: Vec<&str> = types
        .into_iter()
        .filter(|t| *t != "HandoffAcknowledged")
        .collect();
    assert_eq!(
        types,
        [
            "CaseOpened",
            "HandoffRequested",
            "LegalHoldPlaced",
            "LegalHoldLifted",
            "HandoffAccepted",
            "ClockExtended",
            "ClockSuspended",
            "ClockResumed",
        ]
    );
    assert!(f.verify(CASE).await.is_intact());
}
