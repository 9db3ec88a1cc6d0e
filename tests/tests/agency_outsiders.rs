//! Existence does not leak through the agency services: a clerk of an agency that takes
//! no part in a case sends every common command on it, and on a case that does not
//! exist, through the real service binaries; the two answers are the same (code,
//! message with the case id as the only difference, every `x-casebus-*` trailer), and
//! nothing is recorded. Once a hand-off is addressed to its agency, the case exists for
//! it and the same commands get the case rules' own answers.

mod agency_harness;

use tonic::{Code, Status};

use casebus_proto::agency::v1::*;
use casebus_proto::event::v1::{
    Agency, EvidenceRecorded, HandoffAccepted, HandoffDeclined, HandoffKind, HandoffRequested,
    LegalHoldLifted, LegalHoldPlaced, Party, PartyAdded, PartyRole, ReferenceLinked, TrackClosed,
    Visibility, VisibilityChanged, VisibilityKind,
};

use agency_harness::*;

/// Every common command with valid fields, for `case_id`, in a fixed order.
async fn every_command(
    agency: &Running,
    own: Agency,
    case_id: &str,
) -> Vec<(&'static str, Status)> {
    let mut client = agency.common();
    let mut out = Vec::new();
    let mut push =
        |name: &'static str, result: Result<tonic::Response<CommandReply>, Status>| match result {
            Ok(reply) => panic!("{name} on {case_id} was accepted: {reply:?}"),
            Err(status) => out.push((name, status)),
        };
    push(
        "AddParty",
        client
            .add_party(AddPartyRequest {
                meta: meta(case_id),
                party_added: Some(PartyAdded {
                    party: Some(Party {
                        party_id: "w9".into(),
                        role: PartyRole::Witness as i32,
                        name: "Li Na".into(),
                        ..Default::default()
                    }),
                }),
            })
            .await,
    );
    push(
        "RecordEvidence",
        client
            .record_evidence(RecordEvidenceRequest {
                meta: meta(case_id),
                evidence_recorded: Some(EvidenceRecorded {
                    evidence_id: "e9".into(),
                    description: "photo".into(),
                    content_sha256: vec![7; 32],
                    location: "locker 9".into(),
                    media_type: "image/jpeg".into(),
                    size_bytes: 10,
                }),
            })
            .await,
    );
    push(
        "AddNote",
        client
            .add_note(AddNoteRequest {
                meta: meta(case_id),
                note_added: note("probe"),
            })
            .await,
    );
    push(
        "LinkReference",
        client
            .link_reference(LinkReferenceRequest {
                meta: meta(case_id),
                reference_linked: Some(ReferenceLinked {
                    agency: own as i32,
                    local_case_number: "X-9".into(),
                }),
            })
            .await,
    );
    push(
        "RequestHandoff",
        client
            .request_handoff(RequestHandoffRequest {
                meta: meta(case_id),
                handoff_requested: Some(HandoffRequested {
                    handoff_id: "h9".into(),
                    kind: HandoffKind::AssistanceRequest as i32,
                    to_agency: Agency::Customs as i32,
                    reason: "help".into(),
                    ..Default::default()
                }),
            })
            .await,
    );
    push(
        "AcceptHandoff",
        client
            .accept_handoff(AcceptHandoffRequest {
                meta: meta(case_id),
                handoff_accepted: Some(HandoffAccepted {
                    handoff_id: "h1".into(),
                    local_case_number: String::new(),
                }),
            })
            .await,
    );
    push(
        "DeclineHandoff",
        client
            .decline_handoff(DeclineHandoffRequest {
                meta: meta(case_id),
                handoff_declined: Some(HandoffDeclined {
                    handoff_id: "h1".into(),
                    reason: "no".into(),
                }),
            })
            .await,
    );
    push(
        "CloseTrack",
        client
            .close_track(CloseTrackRequest {
                meta: meta(case_id),
                track_closed: Some(TrackClosed {
                    reason: "done".into(),
                }),
            })
            .await,
    );
    push(
        "ChangeVisibility",
        client
            .change_visibility(ChangeVisibilityRequest {
                meta: meta(case_id),
                visibility_changed: Some(VisibilityChanged {
                    target_version: 1,
                    visibility: Some(Visibility {
                        kind: VisibilityKind::Participants as i32,
                        agencies: vec![],
                    }),
                    reason: "probe".into(),
                    wrapped_keys: Vec::new(),
                }),
            })
            .await,
    );
    // A participant could place a hold; this one asks for a visibility the rules refuse,
    // so that once the agency takes part it gets the rule's answer, not a new event.
    push(
        "PlaceLegalHold",
        client
            .place_legal_hold(PlaceLegalHoldRequest {
                meta: meta(case_id).map(|m| CommandMeta {
                    visibility: Some(Visibility {
                        kind: VisibilityKind::OriginOnly as i32,
                        agencies: vec![],
                    }),
                    ..m
                }),
                legal_hold_placed: Some(LegalHoldPlaced {
                    hold_id: "lh9".into(),
                    legal_basis: "PIPL Art. 47(2)".into(),
                    reason: String::new(),
                }),
            })
            .await,
    );
    push(
        "LiftLegalHold",
        client
            .lift_legal_hold(LiftLegalHoldRequest {
                meta: meta(case_id),
                legal_hold_lifted: Some(LegalHoldLifted {
                    hold_id: "lh9".into(),
                    reason: "probe".into(),
                }),
            })
            .await,
    );
    out
}

/// What an answer tells: code, message with the case id blanked, every casebus trailer.
fn answer(status: &Status, case_id: &str) -> (Code, String, Vec<(String, String)>) {
    let mut trailers: Vec<(String, String)> = status
        .metadata()
        .iter()
        .map(|entry| match entry {
            tonic::metadata::KeyAndValueRef::Ascii(key, value) => (
                key.as_str().to_owned(),
                value
                    .to_str()
                    .unwrap_or_default()
                    .replace(case_id, "<case>"),
            ),
            tonic::metadata::KeyAndValueRef::Binary(key, _) => {
                (key.as_str().to_owned(), "<binary>".into())
            }
        })
        .filter(|(key, _)| key.starts_with("x-casebus"))
        .collect();
    trailers.sort();
    (
        status.code(),
        status.message().replace(case_id, "<case>"),
        trailers,
    )
}

#[tokio::test]
async fn an_outsider_gets_for_every_command_the_answer_of_a_case_that_does_not_exist() {
    let f = Fixture::start().await;
    let (customs, court, procuratorate) =
        tokio::join!(f.spawn(CUSTOMS), f.spawn(COURT), f.spawn(PROC));
    open_case(&customs, "C-HIDDEN").await;
    refer_to_police(&customs, "C-HIDDEN", "h1").await;
    let before = f.load("C-HIDDEN").await.state.version;

    for (outsider, own) in [
        (&court, Agency::Court),
        (&procuratorate, Agency::Procuratorate),
    ] {
        let hidden = every_command(outsider, own, "C-HIDDEN").await;
        let absent = every_command(outsider, own, "C-ABSENT").await;
        assert_eq!(hidden.len(), absent.len());
        for ((name, h), (_, a)) in hidden.iter().zip(&absent) {
            assert_eq!(h.code(), Code::NotFound, "{name}: {}", h.message());
            assert_eq!(reason(h), "case_not_found", "{name}");
            assert_eq!(
                answer(h, "C-HIDDEN"),
                answer(a, "C-ABSENT"),
                "{name}: the hidden case answers as a missing one"
            );
        }
        // The coordination view says the same.
        let h = outsider
            .common()
            .get_case(GetCaseRequest {
                case_id: "C-HIDDEN".into(),
            })
            .await
            .expect_err("hidden case");
        let a = outsider
            .common()
            .get_case(GetCaseRequest {
                case_id: "C-ABSENT".into(),
            })
            .await
            .expect_err("missing case");
        assert_eq!(answer(&h, "C-HIDDEN"), answer(&a, "C-ABSENT"), "GetCase");
    }
    assert_eq!(
        f.load("C-HIDDEN").await.state.version,
        before,
        "nothing was recorded"
    );

    // A hand-off addressed to the court makes it a participant: now the rules answer.
    let r = customs
        .common()
        .request_handoff(RequestHandoffRequest {
            meta: meta("C-HIDDEN"),
            handoff_requested: Some(HandoffRequested {
                handoff_id: "h2".into(),
                kind: HandoffKind::AssistanceRequest as i32,
                to_agency: Agency::Court as i32,
                reason: "please assist".into(),
                ..Default::default()
            }),
        })
        .await;
    ok(&customs, "hand-off to the court", r);
    let answers = every_command(&court, Agency::Court, "C-HIDDEN").await;
    assert!(
        answers.iter().any(|(_, s)| s.code() != Code::NotFound),
        "a participant gets the rules' answers: {answers:?}"
    );
}
