//! Bad commands against the real service binaries get the right gRPC code, a message that
//! names the field, rule or credential at fault, a stable reason trailer, and record
//! nothing: another agency's or office's action, actions out of order, retries and reused
//! request ids, malformed ids and fields, missing cases, and callers without a valid
//! credential of the service's own office.

mod agency_harness;

use prost_types::Timestamp;
use time::OffsetDateTime;
use tonic::Code;

use casebus_integrity::token::{Audience, IssuerKey, Role};
use casebus_proto::agency::v1::*;
use casebus_proto::customs::v1::{
    ConfiscateGoodsRequest, DetainGoodsRequest, ReferToPublicSecurityRequest,
};
use casebus_proto::event::v1::{
    Agency, EvidenceRecorded, GoodsConfiscated, GoodsDetained, HandoffAccepted, HandoffKind,
    HandoffRequested, InvestigationFiled, ReferenceLinked, Visibility, VisibilityChanged,
    VisibilityKind,
};
use casebus_proto::public_security::v1::FileInvestigationRequest;
use casebus_proto::timestamp_from;

use agency_harness::*;

async fn version(f: &Fixture, case_id: &str) -> u64 {
    f.load(case_id).await.state.version
}

#[tokio::test]
async fn an_office_acting_for_another_agency_or_office_is_permission_denied() {
    let f = Fixture::start().await;
    let (customs, police) = tokio::join!(f.spawn(CUSTOMS), f.spawn(POLICE));
    open_case(&customs, "C-PERM").await;
    refer_to_police(&customs, "C-PERM", "h1").await;
    police
        .wait_inbox("C-PERM", "h1", "police to acknowledge h1", |i| {
            i.status == HandoffStatus::Acknowledged as i32
        })
        .await;
    let before = version(&f, "C-PERM").await;

    // Customs answers a hand-off addressed to the police.
    let status = refused(
        customs
            .common()
            .accept_handoff(AcceptHandoffRequest {
                meta: meta("C-PERM"),
                handoff_accepted: Some(HandoffAccepted {
                    handoff_id: "h1".into(),
                    local_case_number: String::new(),
                }),
            })
            .await,
        Code::PermissionDenied,
    );
    assert_eq!(reason(&status), "not_permitted");
    assert!(
        status.message().contains("answer hand-off h1"),
        "{}",
        status.message()
    );
    assert!(status.message().contains(POLICE), "{}", status.message());

    // Customs sends a kind of hand-off only the police send.
    let status = refused(
        customs
            .common()
            .request_handoff(RequestHandoffRequest {
                meta: meta("C-PERM"),
                handoff_requested: Some(HandoffRequested {
                    handoff_id: "h9".into(),
                    kind: HandoffKind::ArrestApprovalRequest as i32,
                    to_agency: Agency::Procuratorate as i32,
                    reason: "arrest him".into(),
                    ..Default::default()
                }),
            })
            .await,
        Code::PermissionDenied,
    );
    assert!(
        status.message().contains("ArrestApprovalRequest"),
        "{}",
        status.message()
    );

    // Customs links the court's case number.
    refused(
        customs
            .common()
            .link_reference(LinkReferenceRequest {
                meta: meta("C-PERM"),
                reference_linked: Some(ReferenceLinked {
                    agency: Agency::Court as i32,
                    local_case_number: "COURT-1".into(),
                }),
            })
            .await,
        Code::PermissionDenied,
    );

    // The police change the visibility of customs' opening event.
    let r = police
        .common()
        .accept_handoff(AcceptHandoffRequest {
            meta: meta("C-PERM"),
            handoff_accepted: Some(HandoffAccepted {
                handoff_id: "h1".into(),
                local_case_number: String::new(),
            }),
        })
        .await;
    ok(&police, "accept h1", r);
    let status = refused(
        police
            .common()
            .change_visibility(ChangeVisibilityRequest {
                meta: meta("C-PERM"),
                visibility_changed: Some(VisibilityChanged {
                    target_version: 1,
                    visibility: Some(Visibility {
                        kind: VisibilityKind::OriginOnly as i32,
                        agencies: vec![],
                    }),
                    reason: "seal it".into(),
                    wrapped_keys: Vec::new(),
                }),
            })
            .await,
        Code::PermissionDenied,
    );
    assert!(
        status.message().contains("recorded by customs:ningbo"),
        "{}",
        status.message()
    );
    assert_eq!(
        version(&f, "C-PERM").await,
        before + 1,
        "only the acceptance was recorded"
    );
}

#[tokio::test]
async fn an_action_out_of_order_is_failed_precondition_naming_the_rule() {
    let f = Fixture::start().await;
    let (customs, police) = tokio::join!(f.spawn(CUSTOMS), f.spawn(POLICE));
    open_case(&customs, "C-ORDER").await;
    let r = customs
        .customs()
        .detain_goods(DetainGoodsRequest {
            meta: meta("C-ORDER"),
            goods_detained: Some(GoodsDetained {
                detention_id: "d1".into(),
                description: "handbags".into(),
                ..Default::default()
            }),
        })
        .await;
    ok(&customs, "detain", r);

    let status = refused(
        customs
            .customs()
            .confiscate_goods(ConfiscateGoodsRequest {
                meta: meta("C-ORDER"),
                goods_confiscated: Some(GoodsConfiscated {
                    detention_id: "d1".into(),
                    disposal: "destroy".into(),
                }),
            })
            .await,
        Code::FailedPrecondition,
    );
    assert_eq!(rule(&status), "determined_infringing");
    assert_eq!(reason(&status), "determined_infringing");
    assert!(
        status
            .message()
            .starts_with("case C-ORDER: rule determined_infringing failed:"),
        "{}",
        status.message()
    );

    // The police have no track before they accept a hand-off.
    refer_to_police(&customs, "C-ORDER", "h1").await;
    let status = refused(
        police
            .police()
            .file_investigation(FileInvestigationRequest {
                meta: meta("C-ORDER"),
                investigation_filed: Some(InvestigationFiled {
                    police_case_number: "PS-1".into(),
                    suspected_offence: "art. 213".into(),
                    basis: String::new(),
                }),
            })
            .await,
        Code::FailedPrecondition,
    );
    assert_eq!(rule(&status), "track_open");
    assert!(
        status.message().contains("accept a hand-off first"),
        "{}",
        status.message()
    );

    let loaded = f.load("C-ORDER").await;
    let kinds: Vec<String> = loaded.events.iter().map(|e| e.event.type_name()).collect();
    assert!(
        !kinds
            .iter()
            .any(|k| k == "GoodsConfiscated" || k == "InvestigationFiled"),
        "{kinds:?}"
    );
}

#[tokio::test]
async fn a_retried_command_returns_the_original_answer_flagged_duplicate() {
    let f = Fixture::start().await;
    let customs = f.spawn(CUSTOMS).await;
    open_case(&customs, "C-RETRY").await;
    let first = ok(
        &customs,
        "note",
        add_note(&customs, "C-RETRY", "note-1", "first").await,
    );
    ok(
        &customs,
        "other note",
        add_note(&customs, "C-RETRY", "note-2", "second").await,
    );
    let retry = ok(
        &customs,
        "retry",
        add_note(&customs, "C-RETRY", "note-1", "first").await,
    );
    assert!(!first.duplicate);
    assert!(retry.duplicate);
    assert_eq!(
        CommandReply {
            duplicate: false,
            ..retry.clone()
        },
        first,
        "the retry answers with the original event"
    );

    // The same request id for a different command is refused, not applied.
    let status = refused(
        add_note(&customs, "C-RETRY", "note-1", "something else").await,
        Code::AlreadyExists,
    );
    assert_eq!(reason(&status), "request_id_reused");
    assert!(status.message().contains("note-1"), "{}", status.message());

    let loaded = f.load("C-RETRY").await;
    assert_eq!(loaded.state.version, 3, "open and two notes");
    let with_id = loaded
        .events
        .iter()
        .filter(|e| e.event.event_id.as_str() == first.event_id)
        .count();
    assert_eq!(with_id, 1);
}

#[tokio::test]
async fn malformed_ids_and_fields_are_invalid_argument_naming_them() {
    let f = Fixture::start().await;
    let customs = f.spawn(CUSTOMS).await;
    open_case(&customs, "C-BAD").await;
    let mut common = customs.common();

    let cases: Vec<(Result<tonic::Response<CommandReply>, tonic::Status>, &str)> = vec![
        (
            add_note(&customs, "bad.case", "r-1", "x").await,
            "invalid meta.case_id",
        ),
        (
            add_note(&customs, "C-BAD", "two words", "x").await,
            "invalid meta.request_id",
        ),
        (
            common
                .add_note(AddNoteRequest {
                    meta: None,
                    note_added: note("x"),
                })
                .await,
            "invalid meta: is required",
        ),
        (
            common
                .add_note(AddNoteRequest {
                    meta: meta("C-BAD"),
                    note_added: None,
                })
                .await,
            "invalid note_added: is required",
        ),
        (
            common
                .add_note(AddNoteRequest {
                    meta: Some(CommandMeta {
                        occurred_at: Some(timestamp_from(
                            OffsetDateTime::now_utc() + time::Duration::days(2),
                        )),
                        ..meta("C-BAD").expect("meta")
                    }),
                    note_added: note("from the future"),
                })
                .await,
            "case C-BAD: invalid occurred_at: ",
        ),
        (
            common
                .add_note(AddNoteRequest {
                    meta: Some(CommandMeta {
                        occurred_at: Some(Timestamp {
                            seconds: 1,
                            nanos: 2_000_000_000,
                        }),
                        ..meta("C-BAD").expect("meta")
                    }),
                    note_added: note("x"),
                })
                .await,
            "invalid meta.occurred_at",
        ),
        (
            common
                .record_evidence(RecordEvidenceRequest {
                    meta: meta("C-BAD"),
                    evidence_recorded: Some(EvidenceRecorded {
                        evidence_id: "e1".into(),
                        description: "photo".into(),
                        content_sha256: vec![1, 2, 3],
                        location: "evidence://x".into(),
                        ..Default::default()
                    }),
                })
                .await,
            "case C-BAD: invalid evidence_recorded.content_sha256: must be 32 bytes",
        ),
        (
            customs
                .customs()
                .refer_to_public_security(ReferToPublicSecurityRequest {
                    meta: meta("C-BAD"),
                    handoff: Some(HandoffDetails {
                        handoff_id: "h 1".into(),
                        reason: "x".into(),
                        ..Default::default()
                    }),
                })
                .await,
            "case C-BAD: invalid handoff_requested.handoff_id: ",
        ),
        (
            customs
                .customs()
                .refer_to_public_security(ReferToPublicSecurityRequest {
                    meta: meta("C-BAD"),
                    handoff: Some(HandoffDetails {
                        handoff_id: "h1".into(),
                        to_office_id: "public_security:nowhere".into(),
                        reason: "x".into(),
                        evidence_ids: vec![],
                    }),
                })
                .await,
            "case C-BAD: unknown office public_security:nowhere",
        ),
    ];
    for (result, expected) in cases {
        let status = refused(result, Code::InvalidArgument);
        assert!(
            status.message().starts_with(expected),
            "expected {expected:?}, got {:?}",
            status.message()
        );
        assert!(!reason(&status).is_empty());
    }
    assert_eq!(version(&f, "C-BAD").await, 1, "nothing was recorded");
}

#[tokio::test]
async fn a_missing_case_is_not_found_and_a_second_opening_already_exists() {
    let f = Fixture::start().await;
    let (customs, police) = tokio::join!(f.spawn(CUSTOMS), f.spawn(POLICE));
    let status = refused(
        add_note(&customs, "C-NONE", "r-1", "x").await,
        Code::NotFound,
    );
    assert_eq!(
        status.message(),
        "case C-NONE does not exist; open it first"
    );
    assert_eq!(reason(&status), "case_not_found");

    open_case(&customs, "C-ONCE").await;
    let status = refused(
        customs
            .common()
            .open_case(OpenCaseRequest {
                meta: meta("C-ONCE"),
                case_opened: opened("again"),
            })
            .await,
        Code::AlreadyExists,
    );
    assert!(
        status.message().contains("case C-ONCE already exists"),
        "{}",
        status.message()
    );

    // An agency not involved in a case cannot even learn that it exists.
    let get = |case_id: &str| GetCaseRequest {
        case_id: case_id.into(),
    };
    let hidden = refused(
        police.common().get_case(get("C-ONCE")).await,
        Code::NotFound,
    );
    let missing = refused(
        police.common().get_case(get("C-NONE")).await,
        Code::NotFound,
    );
    assert_eq!(
        hidden.message().replace("C-ONCE", "X"),
        missing.message().replace("C-NONE", "X")
    );
    refer_to_police(&customs, "C-ONCE", "h1").await;
    let view = police
        .common()
        .get_case(get("C-ONCE"))
        .await
        .expect("addressed, the police see the case")
        .into_inner()
        .case
        .expect("view");
    assert_eq!(view.handoffs.len(), 1);
}

#[tokio::test]
async fn calls_without_a_valid_credential_are_unauthenticated() {
    let f = Fixture::start().await;
    let customs = f.spawn(CUSTOMS).await;
    open_case(&customs, "C-AUTH").await;
    let now = OffsetDateTime::now_utc();
    let expired = f
        .issuer
        .issue(
            Audience::Agency,
            &office(CUSTOMS),
            "clerk",
            &[Role::Clerk],
            now - time::Duration::hours(2),
            time::Duration::hours(1),
        )
        .expect("token");
    // Same key id as the trusted issuer, different key: a forgery.
    let forged = IssuerKey::from_seed("test-issuer", [9; 32])
        .issue(
            Audience::Agency,
            &office(CUSTOMS),
            "clerk",
            &[Role::Clerk],
            now,
            time::Duration::hours(1),
        )
        .expect("token");
    let unknown = IssuerKey::from_seed("other-issuer", [9; 32])
        .issue(
            Audience::Agency,
            &office(CUSTOMS),
            "clerk",
            &[Role::Clerk],
            now,
            time::Duration::hours(1),
        )
        .expect("token");
    let mut tampered = customs.token.clone();
    tampered.pop();
    tampered.push(if customs.token.ends_with('A') {
        'B'
    } else {
        'A'
    });

    for (token, expected) in [
        (None, "missing credentials"),
        (Some("not-a-token"), "token refused: malformed token"),
        (Some(expired.as_str()), "token refused: token expired"),
        (
            Some(forged.as_str()),
            "token refused: token signature is invalid",
        ),
        (Some(tampered.as_str()), "token refused"),
        (
            Some(unknown.as_str()),
            "token refused: token issued by unknown issuer",
        ),
    ] {
        let status = refused(
            customs
                .common_as(token)
                .add_note(AddNoteRequest {
                    meta: meta("C-AUTH"),
                    note_added: note("x"),
                })
                .await,
            Code::Unauthenticated,
        );
        assert!(
            status.message().starts_with(expected),
            "{token:?}: {}",
            status.message()
        );
        refused(
            customs
                .common_as(token)
                .list_inbox(ListInboxRequest::default())
                .await,
            Code::Unauthenticated,
        );
    }
    assert_eq!(version(&f, "C-AUTH").await, 1, "nothing was recorded");
}

#[tokio::test]
async fn a_credential_of_another_office_or_without_the_clerk_role_is_permission_denied() {
    let f = Fixture::start().await;
    let customs = f.spawn(CUSTOMS).await;
    open_case(&customs, "C-WHO").await;
    for other in [POLICE, CUSTOMS_2] {
        let token = f.token(other, &[Role::Clerk, Role::Reader]);
        let status = refused(
            customs
                .common_as(Some(&token))
                .add_note(AddNoteRequest {
                    meta: meta("C-WHO"),
                    note_added: note("x"),
                })
                .await,
            Code::PermissionDenied,
        );
        assert_eq!(reason(&status), "wrong_office");
        assert!(
            status.message().contains(&format!(
                "records for office {CUSTOMS} only; the caller acts for {other}"
            )),
            "{}",
            status.message()
        );
        refused(
            customs
                .common_as(Some(&token))
                .list_inbox(ListInboxRequest::default())
                .await,
            Code::PermissionDenied,
        );
    }

    let reader = f.token(CUSTOMS, &[Role::Reader]);
    let status = refused(
        customs
            .customs_as(Some(&reader))
            .detain_goods(DetainGoodsRequest {
                meta: meta("C-WHO"),
                goods_detained: None,
            })
            .await,
        Code::PermissionDenied,
    );
    assert_eq!(reason(&status), "missing_role");
    assert!(
        status.message().contains("clerk role"),
        "{}",
        status.message()
    );
    customs
        .common_as(Some(&reader))
        .list_inbox(ListInboxRequest::default())
        .await
        .expect("a reader may read the inbox");
    customs
        .common_as(Some(&reader))
        .get_case(GetCaseRequest {
            case_id: "C-WHO".into(),
        })
        .await
        .expect("a reader may read the case view");
    assert_eq!(version(&f, "C-WHO").await, 1, "nothing was recorded");
}
