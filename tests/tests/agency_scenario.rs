//! The counterfeit-goods case, end to end, through the five real agency service binaries
//! and nothing but their gRPC APIs: customs detains goods at the border and opens the
//! case, asks the IP center for an assessment; the IP center assesses and refers the case
//! to the police; the police file an investigation and ask for arrest approval; the
//! procuratorate approves, later receives the transfer for prosecution, indicts and
//! prosecutes in court; the court dockets, hears, judges, records the appeal and notifies
//! customs. Every hand-off must be acknowledged automatically by the receiving service,
//! with the due time of the deadline rules; the case read back from the stream must be
//! complete (versions 1..n), chained, and signed event by event by the office that acted.

mod agency_harness;

use std::collections::BTreeSet;

use prost_types::Timestamp;
use time::OffsetDateTime;

use casebus_proto::agency::v1::*;
use casebus_proto::court::v1::*;
use casebus_proto::customs::v1::*;
use casebus_proto::event::v1::payload::Kind;
use casebus_proto::event::v1::*;
use casebus_proto::ip_center::v1::*;
use casebus_proto::procuratorate::v1::*;
use casebus_proto::public_security::v1::*;
use casebus_proto::{EventId, PayloadKind, datetime_from, payload_type_name, timestamp_from};

use agency_harness::*;

const CASE: &str = "NB-2026-0001";

fn party(id: &str, role: PartyRole, name: &str) -> Party {
    Party {
        party_id: id.into(),
        role: role as i32,
        name: name.into(),
        organisation: role == PartyRole::RightsHolder,
        identifier: String::new(),
        description: String::new(),
    }
}

fn details(
    handoff_id: &str,
    to_office: &str,
    reason: &str,
    evidence: &[&str],
) -> Option<HandoffDetails> {
    Some(HandoffDetails {
        handoff_id: handoff_id.into(),
        to_office_id: to_office.into(),
        reason: reason.into(),
        evidence_ids: evidence.iter().map(|e| (*e).to_owned()).collect(),
    })
}

fn accept(case_id: &str, handoff_id: &str, local: &str) -> AcceptHandoffRequest {
    AcceptHandoffRequest {
        meta: meta(case_id),
        handoff_accepted: Some(HandoffAccepted {
            handoff_id: handoff_id.into(),
            local_case_number: local.into(),
        }),
    }
}

fn later(days: i64) -> Timestamp {
    timestamp_from(OffsetDateTime::now_utc() + time::Duration::days(days))
}

/// What the test expects at each version of the case.
struct Expected {
    office: &'static str,
    kind: &'static str,
    /// The reply that recorded it (none for automatic receipts).
    reply: Option<CommandReply>,
}

struct Script {
    expected: Vec<Expected>,
}

impl Script {
    fn did(&mut self, office: &'static str, kind: &'static str, reply: CommandReply) {
        assert!(!reply.duplicate, "{kind} by {office} is new");
        assert_eq!(reply.case_id, CASE);
        assert_eq!(
            reply.case_version,
            self.expected.len() as u64 + 1,
            "{kind} by {office} gets the next version"
        );
        self.expected.push(Expected {
            office,
            kind,
            reply: Some(reply),
        });
    }

    /// Waits for the receiver's automatic receipt of `handoff_id` and checks the inbox
    /// item: kind, sender, and the due time from the rules.
    async fn receipt(
        &mut self,
        receiver: &Running,
        receiver_office: &'static str,
        handoff_id: &str,
        kind: HandoffKind,
        sender: &str,
    ) -> InboxItem {
        let item = receiver
            .wait_inbox(
                CASE,
                handoff_id,
                &format!("{receiver_office} to acknowledge hand-off {handoff_id}"),
                |i| i.status == HandoffStatus::Acknowledged as i32,
            )
            .await;
        assert_eq!(item.kind, kind as i32, "{handoff_id}");
        assert_eq!(item.from_office_id, sender, "{handoff_id}");
        assert_eq!(item.acknowledged_by_office_id, receiver_office);
        assert!(!item.overdue, "{handoff_id} is not overdue yet");
        let requested = item
            .requested_at
            .as_ref()
            .and_then(datetime_from)
            .expect("requested_at");
        let due = item
            .due_at
            .as_ref()
            .and_then(datetime_from)
            .expect("due_at");
        assert_eq!(
            due - requested,
            time::Duration::days(rule_days(kind)),
            "{handoff_id}: due time comes from the rules file"
        );
        let sent = self
            .expected
            .last()
            .and_then(|e| e.reply.as_ref())
            .expect("the hand-off was the last command");
        assert_eq!(item.requested_event_id, sent.event_id, "{handoff_id}");
        assert_eq!(item.requested_version, sent.case_version, "{handoff_id}");
        self.expected.push(Expected {
            office: receiver_office,
            kind: "HandoffAcknowledged",
            reply: None,
        });
        item
    }
}

#[tokio::test]
async fn a_counterfeit_goods_case_moves_from_the_border_to_the_court_on_signed_events() {
    let f = Fixture::start().await;
    let (customs, ipc, police, prosecutor, court) = tokio::join!(
        f.spawn(CUSTOMS),
        f.spawn(IPC),
        f.spawn(POLICE),
        f.spawn(PROC),
        f.spawn(COURT),
    );
    let mut s = Script {
        expected: Vec::new(),
    };

    // Customs detains the goods at the border and opens the case.
    let opened = CaseOpened {
        case_type: CaseType::CounterfeitTrademark as i32,
        title: "Counterfeit ACME earphones, Ningbo Beilun port".into(),
        rights: vec![IpRight {
            kind: IpRightKind::Trademark as i32,
            registration_number: "TM-10086".into(),
            holder: "ACME Audio Co.".into(),
            title: "ACME".into(),
        }],
        parties: vec![
            party("rh", PartyRole::RightsHolder, "ACME Audio Co."),
            party("s1", PartyRole::Suspect, "Wang Trading Ltd."),
        ],
        summary: "12,000 earphones bearing the ACME mark declared as unbranded".into(),
        local_case_number: "NB-CUS-2026-17".into(),
    };
    let r = customs
        .common()
        .open_case(OpenCaseRequest {
            meta: meta(CASE),
            case_opened: Some(opened),
        })
        .await;
    s.did(CUSTOMS, "CaseOpened", ok(&customs, "open case", r));
    let r = customs
        .customs()
        .detain_goods(DetainGoodsRequest {
            meta: meta(CASE),
            goods_detained: Some(GoodsDetained {
                recorded_dues: Vec::new(),
                detention_id: "d1".into(),
                description: "earphones, ACME mark".into(),
                quantity: "12,000 pieces".into(),
                declared_value_fen: 36_000_000,
                port: "Ningbo Beilun".into(),
                declaration_number: "310420260001".into(),
                on_rights_holder_application: false,
            }),
        })
        .await;
    s.did(CUSTOMS, "GoodsDetained", ok(&customs, "detain goods", r));
    let r = customs
        .common()
        .record_evidence(RecordEvidenceRequest {
            meta: meta(CASE),
            evidence_recorded: Some(EvidenceRecorded {
                evidence_id: "e1".into(),
                description: "photos and samples of the goods".into(),
                content_sha256: vec![7; 32],
                location: "evidence://customs-ningbo/2026/e1.zip".into(),
                media_type: "application/zip".into(),
                size_bytes: 1_234_567,
            }),
        })
        .await;
    s.did(
        CUSTOMS,
        "EvidenceRecorded",
        ok(&customs, "record evidence", r),
    );

    // ... and asks the IP center for an expert assessment.
    let r = customs
        .customs()
        .request_assessment(RequestAssessmentRequest {
            meta: meta(CASE),
            handoff: details("a1", "", "please assess the marks on the samples", &["e1"]),
        })
        .await;
    s.did(
        CUSTOMS,
        "HandoffRequested",
        ok(&customs, "request assessment", r),
    );
    s.receipt(&ipc, IPC, "a1", HandoffKind::AssistanceRequest, CUSTOMS)
        .await;
    // The sender sees the receipt in its own view of the case.
    let view = customs
        .common()
        .get_case(GetCaseRequest {
            case_id: CASE.into(),
        })
        .await
        .expect("customs reads its case")
        .into_inner()
        .case
        .expect("case view");
    let a1 = view
        .handoffs
        .iter()
        .find(|h| h.handoff_id == "a1")
        .expect("customs sees its hand-off");
    assert_eq!(a1.status, HandoffStatus::Acknowledged as i32);

    // The IP center takes the request, assesses, and refers the case to the police.
    let r = ipc
        .common()
        .accept_handoff(accept(CASE, "a1", "ZJ-IPC-42"))
        .await;
    s.did(IPC, "HandoffAccepted", ok(&ipc, "accept a1", r));
    let r = ipc
        .ip_center()
        .assess_infringement(AssessInfringementRequest {
            meta: meta(CASE),
            infringement_assessed: Some(InfringementAssessed {
                assessment_id: "as1".into(),
                infringing: true,
                opinion: "identical mark on identical goods".into(),
                handoff_id: "a1".into(),
            }),
        })
        .await;
    s.did(IPC, "InfringementAssessed", ok(&ipc, "assess", r));
    let r = ipc
        .ip_center()
        .refer_to_public_security(casebus_proto::ip_center::v1::ReferToPublicSecurityRequest {
            meta: meta(CASE),
            handoff: details(
                "h1",
                POLICE,
                "value far above the criminal threshold",
                &["e1"],
            ),
        })
        .await;
    s.did(IPC, "HandoffRequested", ok(&ipc, "refer to police", r));
    s.receipt(
        &police,
        POLICE,
        "h1",
        HandoffKind::SuspectedCrimeReferral,
        IPC,
    )
    .await;

    // The police file an investigation, detain the suspect, ask for arrest approval.
    let r = police
        .common()
        .accept_handoff(accept(CASE, "h1", "NB-PS-77"))
        .await;
    s.did(POLICE, "HandoffAccepted", ok(&police, "accept h1", r));
    let r = police
        .police()
        .file_investigation(FileInvestigationRequest {
            meta: meta(CASE),
            investigation_filed: Some(InvestigationFiled {
                police_case_number: "NB-PS-77".into(),
                suspected_offence: "Criminal Law art. 213".into(),
                basis: "referral by the IP center".into(),
            }),
        })
        .await;
    s.did(
        POLICE,
        "InvestigationFiled",
        ok(&police, "file investigation", r),
    );
    let r = police
        .police()
        .detain_suspect(DetainSuspectRequest {
            meta: meta(CASE),
            suspect_detained: Some(SuspectDetained {
                party_id: "s1".into(),
                measure: "criminal detention".into(),
                location: "Ningbo detention center".into(),
                recorded_dues: Vec::new(),
            }),
        })
        .await;
    s.did(POLICE, "SuspectDetained", ok(&police, "detain suspect", r));
    let r = police
        .police()
        .request_arrest_approval(RequestArrestApprovalRequest {
            meta: meta(CASE),
            handoff: details("h2", "", "suspect likely to abscond", &[]),
        })
        .await;
    s.did(
        POLICE,
        "HandoffRequested",
        ok(&police, "request arrest approval", r),
    );
    s.receipt(
        &prosecutor,
        PROC,
        "h2",
        HandoffKind::ArrestApprovalRequest,
        POLICE,
    )
    .await;

    // The procuratorate approves the arrest.
    let r = prosecutor
        .common()
        .accept_handoff(accept(CASE, "h2", ""))
        .await;
    s.did(PROC, "HandoffAccepted", ok(&prosecutor, "accept h2", r));
    let r = prosecutor
        .procuratorate()
        .approve_arrest(ApproveArrestRequest {
            meta: meta(CASE),
            arrest_approved: Some(ArrestApproved {
                handoff_id: "h2".into(),
                party_id: "s1".into(),
                recorded_dues: Vec::new(),
            }),
        })
        .await;
    s.did(PROC, "ArrestApproved", ok(&prosecutor, "approve arrest", r));

    // The police conclude and transfer the case for prosecution.
    let r = police
        .police()
        .conclude_investigation(ConcludeInvestigationRequest {
            meta: meta(CASE),
            investigation_concluded: Some(InvestigationConcluded {
                findings: "sold 12,000 units through three shops".into(),
                recommend_prosecution: true,
            }),
        })
        .await;
    s.did(POLICE, "InvestigationConcluded", ok(&police, "conclude", r));
    let r = police
        .police()
        .transfer_for_prosecution(TransferForProsecutionRequest {
            meta: meta(CASE),
            handoff: details("h3", PROC, "investigation concluded", &["e1"]),
        })
        .await;
    s.did(
        POLICE,
        "HandoffRequested",
        ok(&police, "transfer for prosecution", r),
    );
    s.receipt(
        &prosecutor,
        PROC,
        "h3",
        HandoffKind::ProsecutionTransfer,
        POLICE,
    )
    .await;

    // The procuratorate indicts and prosecutes in court.
    let r = prosecutor
        .common()
        .accept_handoff(accept(CASE, "h3", "NB-PROC-9"))
        .await;
    s.did(PROC, "HandoffAccepted", ok(&prosecutor, "accept h3", r));
    let r = prosecutor
        .procuratorate()
        .file_indictment(FileIndictmentRequest {
            meta: meta(CASE),
            indictment_filed: Some(IndictmentFiled {
                handoff_id: "h3".into(),
                indictment_number: "NB-PROC-9-IND".into(),
                charges: "Criminal Law art. 213, counterfeit registered trademark".into(),
                defendant_party_ids: vec!["s1".into()],
            }),
        })
        .await;
    s.did(PROC, "IndictmentFiled", ok(&prosecutor, "indict", r));
    let r = prosecutor
        .procuratorate()
        .prosecute_in_court(ProsecuteInCourtRequest {
            meta: meta(CASE),
            handoff: details("h4", COURT, "public prosecution", &["e1"]),
        })
        .await;
    s.did(
        PROC,
        "HandoffRequested",
        ok(&prosecutor, "prosecute in court", r),
    );
    s.receipt(&court, COURT, "h4", HandoffKind::PublicProsecution, PROC)
        .await;

    // The court dockets, hears, judges, records the appeal and notifies customs.
    let r = court.common().accept_handoff(accept(CASE, "h4", "")).await;
    s.did(COURT, "HandoffAccepted", ok(&court, "accept h4", r));
    let r = court
        .court()
        .docket_case(DocketCaseRequest {
            meta: meta(CASE),
            case_docketed: Some(CaseDocketed {
                court_case_number: "(2026)Zhe01XingChu5".into(),
                procedure: Procedure::Criminal as i32,
                presiding_judge: "Judge Wang".into(),
            }),
        })
        .await;
    s.did(COURT, "CaseDocketed", ok(&court, "docket", r));
    let r = court
        .court()
        .schedule_hearing(ScheduleHearingRequest {
            meta: meta(CASE),
            hearing_scheduled: Some(HearingScheduled {
                hearing_id: "hr1".into(),
                scheduled_for: Some(later(7)),
                location: "Courtroom 3".into(),
            }),
        })
        .await;
    s.did(COURT, "HearingScheduled", ok(&court, "schedule hearing", r));
    let r = court
        .court()
        .record_hearing(RecordHearingRequest {
            meta: meta(CASE),
            hearing_held: Some(HearingHeld {
                hearing_id: "hr1".into(),
                summary: "the defendant admitted the sales".into(),
            }),
        })
        .await;
    s.did(COURT, "HearingHeld", ok(&court, "record hearing", r));
    let r = court
        .court()
        .issue_judgment(IssueJudgmentRequest {
            meta: meta(CASE),
            judgment_issued: Some(JudgmentIssued {
                judgment_number: "(2026)Zhe01XingChu5-J".into(),
                outcome: "guilty; 3 years; fine 500,000 yuan".into(),
                summary: String::new(),
            }),
        })
        .await;
    s.did(COURT, "JudgmentIssued", ok(&court, "judge", r));
    let r = court
        .court()
        .record_appeal(RecordAppealRequest {
            meta: meta(CASE),
            appeal_filed: Some(AppealFiled {
                appellant_party_id: "s1".into(),
                grounds: "sentence too heavy".into(),
            }),
        })
        .await;
    s.did(COURT, "AppealFiled", ok(&court, "record appeal", r));
    let r = court
        .court()
        .notify_judgment(NotifyJudgmentRequest {
            meta: meta(CASE),
            to_agency: Agency::Customs as i32,
            handoff: details("n1", "", "dispose of the detained goods", &[]),
        })
        .await;
    s.did(COURT, "HandoffRequested", ok(&court, "notify judgment", r));
    let notice = s
        .receipt(&customs, CUSTOMS, "n1", HandoffKind::JudgmentNotice, COURT)
        .await;
    // Customs has not decided on the notice yet: it stays in its inbox.
    let inbox = customs
        .common()
        .list_inbox(ListInboxRequest::default())
        .await
        .expect("customs inbox")
        .into_inner();
    assert_eq!(inbox.items, vec![notice]);
    for answered in [&ipc, &police, &prosecutor, &court] {
        let items = answered
            .common()
            .list_inbox(ListInboxRequest::default())
            .await
            .expect("inbox")
            .into_inner()
            .items;
        assert!(items.is_empty(), "{}: {items:?}", answered.office);
    }

    // The case as stored: complete, chained, each event signed by the office that acted.
    let loaded = f.load(CASE).await;
    assert!(loaded.rejected.is_empty(), "{:?}", loaded.rejected);
    assert_eq!(loaded.events.len(), s.expected.len());
    let report = f.verify(CASE).await;
    assert!(report.is_intact(), "{:?}", report.failures);
    assert_eq!(report.events.len(), s.expected.len());
    let mut previous: Option<&casebus_integrity::VerifiedEvent> = None;
    let mut handoff_events: Vec<EventId> = Vec::new();
    let mut receipts_seen = BTreeSet::new();
    for (i, (stored, expected)) in loaded.events.iter().zip(&s.expected).enumerate() {
        let event = &stored.event;
        let version = i as u64 + 1;
        assert_eq!(event.version(), version);
        assert_eq!(event.office.as_str(), expected.office, "version {version}");
        assert_eq!(event.type_name(), expected.kind, "version {version}");
        assert_eq!(
            event.signed.key_id,
            format!("{}#k1", expected.office),
            "version {version} is signed with its office's key"
        );
        match previous {
            None => assert_eq!(event.prev_hash, None),
            Some(p) => assert_eq!(event.prev_hash, Some(p.hash), "version {version} chains"),
        }
        if let Some(reply) = &expected.reply {
            assert_eq!(reply.event_id, event.event_id.as_str(), "version {version}");
            assert_eq!(reply.stream_sequence, stored.sequence, "version {version}");
            assert_eq!(reply.event_hash, event.hash.0.to_vec(), "version {version}");
            assert_eq!(event.event.actor, format!("clerk of {}", expected.office));
        }
        let PayloadKind::Known(kind) = event.payload_kind() else {
            panic!("version {version} has a known payload");
        };
        match kind {
            Kind::HandoffRequested(_) => handoff_events.push(event.event_id.clone()),
            Kind::HandoffAcknowledged(ack) => {
                // A receipt names the hand-off it answers and is caused by it.
                let cause = handoff_events.last().expect("a hand-off came first");
                assert_eq!(
                    event.event.causation_id,
                    cause.as_str(),
                    "version {version}"
                );
                assert!(
                    receipts_seen.insert(ack.handoff_id.clone()),
                    "one receipt per hand-off"
                );
                assert!(event.event.actor.ends_with("(automatic receipt)"));
            }
            _ => {}
        }
        assert_eq!(payload_type_name(kind), expected.kind);
        previous = Some(event);
    }
    assert_eq!(receipts_seen.len(), 6, "six hand-offs, six receipts");

    f.assert_no_dead_letters().await;

    // Every agency now has a track, and the case state agrees.
    let state = &loaded.state;
    assert_eq!(state.version, s.expected.len() as u64);
    assert_eq!(state.tracks.len(), 5);
    assert!(state.judgment.as_ref().is_some_and(|j| j.appealed));
    let view = court
        .common()
        .get_case(GetCaseRequest {
            case_id: CASE.into(),
        })
        .await
        .expect("court reads the case")
        .into_inner()
        .case
        .expect("case view");
    assert_eq!(view.version, state.version);
    assert_eq!(view.tracks.len(), 5);
    assert_eq!(view.title, "Counterfeit ACME earphones, Ningbo Beilun port");
    let statuses: Vec<(String, i32)> = view
        .handoffs
        .iter()
        .map(|h| (h.handoff_id.clone(), h.status))
        .collect();
    let accepted = HandoffStatus::Accepted as i32;
    assert_eq!(
        statuses,
        vec![
            ("a1".into(), accepted),
            ("h1".into(), accepted),
            ("h2".into(), accepted),
            ("h3".into(), accepted),
            ("h4".into(), accepted),
            ("n1".into(), HandoffStatus::Acknowledged as i32),
        ]
    );
}
