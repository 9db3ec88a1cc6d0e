//! Legal holds over the real binaries (customs and police services, the gateway,
//! nats-server): bad input is INVALID_ARGUMENT naming the field and records nothing;
//! the police place a hold, which customs sees on the gateway's `GetCase` and in its own
//! service's `GetCase`; a retry is the same event; the same hold id again, a lift by
//! customs, a lift of an unknown hold and a narrower visibility are each refused with
//! their rule; the police lift it and it is listed nowhere any more. The chain verifies
//! and nothing is dead-lettered.

mod agency_harness;

use std::time::Duration;

use tonic::Code;

use casebus_proto::agency::v1::*;
use casebus_proto::event::v1::{
    Agency, HandoffAccepted, LegalHoldLifted, LegalHoldPlaced, Visibility, VisibilityChanged,
    VisibilityKind,
};
use casebus_proto::gateway::v1::{CaseSummary, GetCaseRequest as GatewayGetCase};
use casebus_test_support::wait_until;

use agency_harness::*;

const CASE: &str = "C-HOLD";
/// Ceiling for the gateway to show what was recorded.
const SHOW_TIMEOUT: Duration = Duration::from_secs(30);
const BASIS: &str = "PIPL Art. 47(2); CPL Art. 245: exhibits kept until the judgment is effective";

/// The gateway's summary of the case once it has projected `version`.
async fn summary_at(gateway: &Gateway, client: &mut GatewayReader, version: u64) -> CaseSummary {
    wait_until(
        SHOW_TIMEOUT,
        &format!("the gateway to show version {version}"),
        async || {
            let summary = client
                .get_case(GatewayGetCase {
                    case_id: CASE.into(),
                })
                .await
                .ok()?
                .into_inner()
                .case?;
            (summary.version >= version).then_some(summary)
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}:\n{}", gateway.log_text()))
}

/// The agency service's own view of the case.
async fn agency_view(agency: &Running) -> CaseView {
    agency
        .common()
        .get_case(GetCaseRequest {
            case_id: CASE.into(),
        })
        .await
        .expect("GetCase")
        .into_inner()
        .case
        .expect("a case")
}

fn placed(hold_id: &str, basis: &str) -> Option<LegalHoldPlaced> {
    Some(LegalHoldPlaced {
        hold_id: hold_id.into(),
        legal_basis: basis.into(),
        reason: "the suspect's appeal is pending".into(),
    })
}

fn lifted(hold_id: &str) -> Option<LegalHoldLifted> {
    Some(LegalHoldLifted {
        hold_id: hold_id.into(),
        reason: "judgment effective".into(),
    })
}

async fn place(
    agency: &Running,
    meta: Option<CommandMeta>,
    hold: Option<LegalHoldPlaced>,
) -> Result<tonic::Response<CommandReply>, tonic::Status> {
    agency
        .common()
        .place_legal_hold(PlaceLegalHoldRequest {
            meta,
            legal_hold_placed: hold,
        })
        .await
}

async fn lift(
    agency: &Running,
    meta: Option<CommandMeta>,
    hold: Option<LegalHoldLifted>,
) -> Result<tonic::Response<CommandReply>, tonic::Status> {
    agency
        .common()
        .lift_legal_hold(LiftLegalHoldRequest {
            meta,
            legal_hold_lifted: hold,
        })
        .await
}

fn with_visibility(kind: VisibilityKind, agencies: &[Agency]) -> Option<CommandMeta> {
    meta(CASE).map(|m| CommandMeta {
        visibility: Some(Visibility {
            kind: kind as i32,
            agencies: agencies.iter().map(|a| *a as i32).collect(),
        }),
        ..m
    })
}

#[tokio::test]
async fn a_legal_hold_is_placed_shown_to_every_participant_and_lifted_only_by_its_agency() {
    let f = Fixture::start().await;
    let (customs, police) = tokio::join!(f.spawn(CUSTOMS), f.spawn(POLICE));
    let gateway = Gateway::start(&f).await;

    open_case(&customs, CASE).await;
    refer_to_police(&customs, CASE, "h1").await;
    police
        .wait_inbox(CASE, "h1", "the police to acknowledge h1", acknowledged)
        .await;
    let r = police
        .common()
        .accept_handoff(AcceptHandoffRequest {
            meta: meta(CASE),
            handoff_accepted: Some(HandoffAccepted {
                handoff_id: "h1".into(),
                local_case_number: String::new(),
            }),
        })
        .await;
    ok(&police, "accept h1", r);
    let before = f.load(CASE).await.state.version;

    // Bad input: INVALID_ARGUMENT naming the field, nothing recorded.
    let too_long = "h".repeat(65);
    let bad_places = [
        (placed("", BASIS), "legal_hold_placed.hold_id"),
        (placed(&too_long, BASIS), "legal_hold_placed.hold_id"),
        (placed("lh 1", BASIS), "legal_hold_placed.hold_id"),
        (placed("lh1", ""), "legal_hold_placed.legal_basis"),
        (
            placed("lh1", &"b".repeat(2_001)),
            "legal_hold_placed.legal_basis",
        ),
        (None, "legal_hold_placed"),
    ];
    for (hold, field) in bad_places {
        let status = refused(
            place(&police, meta(CASE), hold).await,
            Code::InvalidArgument,
        );
        assert!(
            status.message().contains(field),
            "{field}: {}",
            status.message()
        );
    }
    let bad_lifts = [
        (lifted(""), "legal_hold_lifted.hold_id"),
        (lifted(&too_long), "legal_hold_lifted.hold_id"),
        (
            Some(LegalHoldLifted {
                hold_id: "lh1".into(),
                reason: String::new(),
            }),
            "legal_hold_lifted.reason",
        ),
        (None, "legal_hold_lifted"),
    ];
    for (hold, field) in bad_lifts {
        let status = refused(lift(&police, meta(CASE), hold).await, Code::InvalidArgument);
        assert!(
            status.message().contains(field),
            "{field}: {}",
            status.message()
        );
    }
    // A narrower visibility is refused by its rule.
    for narrower in [
        with_visibility(VisibilityKind::OriginOnly, &[]),
        with_visibility(VisibilityKind::ListedAgencies, &[Agency::PublicSecurity]),
    ] {
        let status = refused(
            place(&police, narrower, placed("lh1", BASIS)).await,
            Code::FailedPrecondition,
        );
        assert_eq!(rule(&status), "legal_hold_visible_to_participants");
    }
    assert_eq!(f.load(CASE).await.state.version, before, "nothing recorded");

    // The police place a hold; a retry of the same request is the same event.
    let request = fresh_request_id();
    let first = ok(
        &police,
        "place lh1",
        place(&police, meta_with(CASE, &request), placed("lh1", BASIS)).await,
    );
    assert!(!first.duplicate);
    let retry = ok(
        &police,
        "retry lh1",
        place(&police, meta_with(CASE, &request), placed("lh1", BASIS)).await,
    );
    assert!(retry.duplicate);
    assert_eq!(
        (retry.event_id.as_str(), retry.case_version),
        (first.event_id.as_str(), first.case_version)
    );

    // Customs sees it on the gateway and in its own service's view.
    let mut customs_gw = gateway.client(&f.gateway_reader_token(CUSTOMS)).await;
    let summary = summary_at(&gateway, &mut customs_gw, first.case_version).await;
    assert_eq!(summary.legal_holds.len(), 1, "{summary:?}");
    let hold = &summary.legal_holds[0];
    assert_eq!(hold.hold_id, "lh1");
    assert_eq!(hold.placed_by_office_id, POLICE);
    assert_eq!(hold.legal_basis, BASIS);
    assert_eq!(hold.source_version, first.case_version);
    assert!(hold.placed_at.is_some());
    let view = agency_view(&customs).await;
    assert_eq!(view.legal_holds.len(), 1, "{view:?}");
    assert_eq!(view.legal_holds[0].hold_id, "lh1");
    assert_eq!(view.legal_holds[0].placed_by_office_id, POLICE);
    assert_eq!(view.legal_holds[0].legal_basis, BASIS);
    assert_eq!(view.legal_holds[0].placed_version, first.case_version);

    // The same id again, by anyone: ALREADY_EXISTS.
    let status = refused(
        place(&customs, meta(CASE), placed("lh1", "Customs Law Art. 91")).await,
        Code::AlreadyExists,
    );
    assert!(
        status.message().contains("legal hold lh1"),
        "{}",
        status.message()
    );
    // A lift by customs: PERMISSION_DENIED naming who placed it.
    let status = refused(
        lift(&customs, meta(CASE), lifted("lh1")).await,
        Code::PermissionDenied,
    );
    assert!(status.message().contains(POLICE), "{}", status.message());
    // A lift of a hold the case does not have: FAILED_PRECONDITION naming it.
    let status = refused(
        lift(&police, meta(CASE), lifted("lh-unknown")).await,
        Code::FailedPrecondition,
    );
    assert_eq!(rule(&status), "legal_hold_open");
    assert!(
        status.message().contains("lh-unknown"),
        "{}",
        status.message()
    );
    // The hold's visibility cannot be narrowed, not even by the police.
    let status = refused(
        police
            .common()
            .change_visibility(ChangeVisibilityRequest {
                meta: meta(CASE),
                visibility_changed: Some(VisibilityChanged {
                    target_version: first.case_version,
                    visibility: Some(Visibility {
                        kind: VisibilityKind::OriginOnly as i32,
                        agencies: Vec::new(),
                    }),
                    reason: "hide it".into(),
                    wrapped_keys: Vec::new(),
                }),
            })
            .await,
        Code::FailedPrecondition,
    );
    assert_eq!(rule(&status), "legal_hold_visible_to_participants");
    assert_eq!(
        f.load(CASE).await.state.version,
        first.case_version,
        "no refusal recorded anything"
    );

    // The police lift it: listed nowhere any more, and lifting again is refused.
    let lift_reply = ok(
        &police,
        "lift lh1",
        lift(&police, meta(CASE), lifted("lh1")).await,
    );
    let summary = summary_at(&gateway, &mut customs_gw, lift_reply.case_version).await;
    assert!(summary.legal_holds.is_empty(), "{summary:?}");
    assert!(agency_view(&customs).await.legal_holds.is_empty());
    assert!(agency_view(&police).await.legal_holds.is_empty());
    let status = refused(
        lift(&police, meta(CASE), lifted("lh1")).await,
        Code::FailedPrecondition,
    );
    assert_eq!(rule(&status), "legal_hold_open");
    assert!(
        status.message().contains("lifted already"),
        "{}",
        status.message()
    );
    let status = refused(
        place(&police, meta(CASE), placed("lh1", BASIS)).await,
        Code::AlreadyExists,
    );
    assert!(status.message().contains("lh1"), "{}", status.message());

    let loaded = f.load(CASE).await;
    assert!(!loaded.state.has_open_hold());
    assert_eq!(
        loaded.state.lifted_holds["lh1"].lifted_version,
        lift_reply.case_version
    );
    let report = f.verify(CASE).await;
    assert!(report.is_intact(), "{:?}", report.failures);
    f.assert_no_dead_letters().await;
    drop(gateway);
}
