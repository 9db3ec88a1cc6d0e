//! Payload builders and scripted histories for the gateway tests, adapted from the bus
//! tests' catalogue: together they use every event kind of the v1 catalogue in an order
//! the case rules accept.

#![allow(dead_code)]

use casebus_proto::event::v1::payload::Kind;
use casebus_proto::event::v1::*;
use casebus_proto::timestamp_from;

use super::{COURT, CUSTOMS, IPC, POLICE, PROC};

pub fn party(id: &str, role: PartyRole) -> Party {
    Party {
        party_id: id.into(),
        role: role as i32,
        name: format!("party {id}"),
        organisation: role == PartyRole::RightsHolder,
        identifier: String::new(),
        description: String::new(),
    }
}

pub fn opened(title: &str) -> Kind {
    Kind::CaseOpened(CaseOpened {
        case_type: CaseType::CounterfeitTrademark as i32,
        title: title.into(),
        rights: vec![IpRight {
            kind: IpRightKind::Trademark as i32,
            registration_number: "TM-10086".into(),
            holder: "Acme Audio Co.".into(),
            title: "ACME".into(),
        }],
        parties: vec![
            party("rh", PartyRole::RightsHolder),
            party("s1", PartyRole::Suspect),
        ],
        summary: "12,000 earphones bearing the ACME mark".into(),
        local_case_number: "NB-CUS-1".into(),
    })
}

pub fn note(text: &str) -> Kind {
    Kind::NoteAdded(NoteAdded { text: text.into() })
}

pub fn handoff(id: &str, kind: HandoffKind, to: Agency) -> Kind {
    Kind::HandoffRequested(HandoffRequested {
        handoff_id: id.into(),
        kind: kind as i32,
        to_agency: to as i32,
        to_office_id: String::new(),
        reason: "for your decision".into(),
        due_at: None,
        evidence_ids: vec![],
    })
}

pub fn ack(id: &str) -> Kind {
    Kind::HandoffAcknowledged(HandoffAcknowledged {
        handoff_id: id.into(),
    })
}

pub fn accept(id: &str) -> Kind {
    Kind::HandoffAccepted(HandoffAccepted {
        handoff_id: id.into(),
        local_case_number: String::new(),
    })
}

pub fn detain(id: &str) -> Kind {
    Kind::GoodsDetained(GoodsDetained {
        detention_id: id.into(),
        description: "earphones".into(),
        quantity: "12000 pcs".into(),
        declared_value_fen: 1_200_000,
        port: "Ningbo Beilun".into(),
        declaration_number: "310420260001".into(),
        on_rights_holder_application: true,
    })
}

pub fn file_investigation() -> Kind {
    Kind::InvestigationFiled(InvestigationFiled {
        police_case_number: "NB-PS-77".into(),
        suspected_offence: "Criminal Law art. 213".into(),
        basis: "referral".into(),
    })
}

pub fn conclude() -> Kind {
    Kind::InvestigationConcluded(InvestigationConcluded {
        findings: "sold 12,000 units".into(),
        recommend_prosecution: true,
    })
}

/// The main case: uses every kind except InvestigationDeclined and
/// NonProsecutionDecided, which need other cases (see `declined_case`, `dropped_case`).
pub fn main_case() -> Vec<(&'static str, Kind)> {
    let now = timestamp_from(time::OffsetDateTime::now_utc());
    vec![
        (CUSTOMS, opened("Counterfeit earphones at Ningbo port")),
        (
            CUSTOMS,
            Kind::PartyAdded(PartyAdded {
                party: Some(party("c1", PartyRole::Consignee)),
            }),
        ),
        (
            CUSTOMS,
            Kind::EvidenceRecorded(EvidenceRecorded {
                evidence_id: "e1".into(),
                description: "photos of the goods".into(),
                content_sha256: vec![7; 32],
                location: "evidence://customs-ningbo/2026/e1.zip".into(),
                media_type: "application/zip".into(),
                size_bytes: 1_234_567,
            }),
        ),
        (CUSTOMS, note("informant tip, keep sealed later")),
        (
            CUSTOMS,
            Kind::ReferenceLinked(ReferenceLinked {
                agency: Agency::Customs as i32,
                local_case_number: "NB-CUS-2".into(),
            }),
        ),
        (CUSTOMS, detain("d1")),
        (
            CUSTOMS,
            Kind::RightsHolderNotified(RightsHolderNotified {
                detention_id: "d1".into(),
                rights_holder_party_id: "rh".into(),
                respond_by: Some(now),
            }),
        ),
        (
            CUSTOMS,
            Kind::InfringementDetermined(InfringementDetermined {
                detention_id: "d1".into(),
                infringing: true,
                basis: "identical mark".into(),
            }),
        ),
        (
            CUSTOMS,
            Kind::GoodsConfiscated(GoodsConfiscated {
                detention_id: "d1".into(),
                disposal: "destroyed".into(),
            }),
        ),
        (CUSTOMS, detain("d2")),
        (
            CUSTOMS,
            Kind::DetentionReleased(DetentionReleased {
                detention_id: "d2".into(),
                reason: "genuine goods".into(),
            }),
        ),
        (
            CUSTOMS,
            handoff("a1", HandoffKind::AssistanceRequest, Agency::IpCenter),
        ),
        (IPC, ack("a1")),
        (IPC, accept("a1")),
        (
            IPC,
            Kind::InfringementAssessed(InfringementAssessed {
                assessment_id: "as1".into(),
                infringing: true,
                opinion: "identical mark on identical goods".into(),
                handoff_id: "a1".into(),
            }),
        ),
        (
            IPC,
            Kind::PreExaminationRequested(PreExaminationRequested {
                pre_examination_id: "pe1".into(),
                application_number: "CN2026100001".into(),
                patent_kind: IpRightKind::DesignPatent as i32,
            }),
        ),
        (
            IPC,
            Kind::PreExaminationCompleted(PreExaminationCompleted {
                pre_examination_id: "pe1".into(),
                passed: true,
                notes: String::new(),
            }),
        ),
        (
            IPC,
            Kind::MediationConcluded(MediationConcluded {
                settled: false,
                terms: "no settlement".into(),
            }),
        ),
        (
            IPC,
            handoff("a2", HandoffKind::AssistanceRequest, Agency::Court),
        ),
        (
            COURT,
            Kind::HandoffDeclined(HandoffDeclined {
                handoff_id: "a2".into(),
                reason: "not for the court yet".into(),
            }),
        ),
        (
            IPC,
            handoff(
                "h1",
                HandoffKind::SuspectedCrimeReferral,
                Agency::PublicSecurity,
            ),
        ),
        (POLICE, ack("h1")),
        (POLICE, accept("h1")),
        (POLICE, file_investigation()),
        (
            POLICE,
            Kind::SuspectDetained(SuspectDetained {
                party_id: "s1".into(),
                measure: "criminal detention".into(),
                location: "Ningbo".into(),
            }),
        ),
        (
            POLICE,
            handoff(
                "h2",
                HandoffKind::ArrestApprovalRequest,
                Agency::Procuratorate,
            ),
        ),
        (PROC, ack("h2")),
        (PROC, accept("h2")),
        (
            PROC,
            Kind::ArrestApproved(ArrestApproved {
                handoff_id: "h2".into(),
                party_id: "s1".into(),
            }),
        ),
        (
            POLICE,
            handoff(
                "h2b",
                HandoffKind::ArrestApprovalRequest,
                Agency::Procuratorate,
            ),
        ),
        (PROC, accept("h2b")),
        (
            PROC,
            Kind::ArrestDenied(ArrestDenied {
                handoff_id: "h2b".into(),
                party_id: "c1".into(),
                reason: "no evidence against the consignee".into(),
            }),
        ),
        (POLICE, conclude()),
        (
            POLICE,
            handoff(
                "h3",
                HandoffKind::ProsecutionTransfer,
                Agency::Procuratorate,
            ),
        ),
        (PROC, accept("h3")),
        (
            PROC,
            handoff(
                "h3s",
                HandoffKind::SupplementaryInvestigation,
                Agency::PublicSecurity,
            ),
        ),
        (POLICE, accept("h3s")),
        (
            PROC,
            Kind::IndictmentFiled(IndictmentFiled {
                handoff_id: "h3".into(),
                indictment_number: "NB-PROC-9".into(),
                charges: "art. 213".into(),
                defendant_party_ids: vec!["s1".into()],
            }),
        ),
        (
            PROC,
            handoff("h4", HandoffKind::PublicProsecution, Agency::Court),
        ),
        (COURT, ack("h4")),
        (COURT, accept("h4")),
        (
            COURT,
            Kind::CaseDocketed(CaseDocketed {
                court_case_number: "(2026)Zhe01XingChu5".into(),
                procedure: Procedure::Criminal as i32,
                presiding_judge: "Judge Wang".into(),
            }),
        ),
        (
            COURT,
            Kind::PreliminaryInjunctionIssued(PreliminaryInjunctionIssued {
                order_number: "PI-1".into(),
                scope: "stop selling".into(),
            }),
        ),
        (
            COURT,
            Kind::HearingScheduled(HearingScheduled {
                hearing_id: "hr1".into(),
                scheduled_for: Some(now),
                location: "Court 1".into(),
            }),
        ),
        (
            COURT,
            Kind::HearingHeld(HearingHeld {
                hearing_id: "hr1".into(),
                summary: "heard".into(),
            }),
        ),
        (
            COURT,
            Kind::JudgmentIssued(JudgmentIssued {
                judgment_number: "J-5".into(),
                outcome: "guilty".into(),
                summary: String::new(),
            }),
        ),
        (
            COURT,
            Kind::AppealFiled(AppealFiled {
                appellant_party_id: "s1".into(),
                grounds: "sentence too heavy".into(),
            }),
        ),
        (
            COURT,
            Kind::JudgmentEffective(JudgmentEffective {
                judgment_number: "J-5".into(),
            }),
        ),
        (
            COURT,
            handoff("h5", HandoffKind::JudgmentNotice, Agency::Customs),
        ),
        (
            CUSTOMS,
            Kind::VisibilityChanged(VisibilityChanged {
                target_version: 4,
                visibility: Some(Visibility {
                    kind: VisibilityKind::OriginOnly as i32,
                    agencies: vec![],
                }),
                reason: "protect the informant".into(),
            }),
        ),
        (
            CUSTOMS,
            Kind::TrackClosed(TrackClosed {
                reason: "goods destroyed".into(),
            }),
        ),
    ]
}

/// A case the police decline to investigate.
pub fn declined_case() -> Vec<(&'static str, Kind)> {
    vec![
        (CUSTOMS, opened("Declined referral")),
        (
            CUSTOMS,
            handoff(
                "h1",
                HandoffKind::SuspectedCrimeReferral,
                Agency::PublicSecurity,
            ),
        ),
        (POLICE, accept("h1")),
        (
            POLICE,
            Kind::InvestigationDeclined(InvestigationDeclined {
                reason: "amount below the threshold".into(),
            }),
        ),
    ]
}

/// A case the procuratorate decides not to prosecute.
pub fn dropped_case() -> Vec<(&'static str, Kind)> {
    vec![
        (CUSTOMS, opened("Dropped prosecution")),
        (
            CUSTOMS,
            handoff(
                "h1",
                HandoffKind::SuspectedCrimeReferral,
                Agency::PublicSecurity,
            ),
        ),
        (POLICE, accept("h1")),
        (POLICE, file_investigation()),
        (POLICE, conclude()),
        (
            POLICE,
            handoff(
                "h2",
                HandoffKind::ProsecutionTransfer,
                Agency::Procuratorate,
            ),
        ),
        (PROC, accept("h2")),
        (
            PROC,
            Kind::NonProsecutionDecided(NonProsecutionDecided {
                handoff_id: "h2".into(),
                reason: "minor circumstances".into(),
            }),
        ),
    ]
}
