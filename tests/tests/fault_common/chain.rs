//! Signed event chains built without NATS, the way the appender builds them: envelope,
//! version, previous hash, request id and command digest, signed by the office. They
//! seed the fuzzers and supply the forged, replayed and chain-breaking messages of the
//! malformed-input scenario.

use prost::Message as _;
use time::OffsetDateTime;

use casebus_bus::command_digest;
use casebus_integrity::{EventHash, OfficeSigner};
use casebus_proto::event::v1::payload::Kind;
use casebus_proto::event::v1::{
    Agency, CaseOpened, CaseType, Event, EvidenceRecorded, GoodsDetained, HandoffAcknowledged,
    HandoffKind, HandoffRequested, IpRight, IpRightKind, NoteAdded, Party, PartyAdded, PartyRole,
    Payload, SignedEvent, Visibility, VisibilityKind,
};
use casebus_proto::{CaseId, EventId, RequestId, timestamp_from};

use super::{CUSTOMS, IPC, POLICE, signer};

/// One signed event and what a test needs to know about it.
#[derive(Debug, Clone)]
pub struct Built {
    pub event: Event,
    pub signed: SignedEvent,
    pub bytes: Vec<u8>,
    pub hash: EventHash,
}

/// Builds the events of one case in order.
pub struct ChainBuilder {
    pub case_id: CaseId,
    pub version: u64,
    pub prev: Option<EventHash>,
    pub at: OffsetDateTime,
    next_request: u64,
}

impl ChainBuilder {
    pub fn new(case_id: &CaseId) -> Self {
        Self {
            case_id: case_id.clone(),
            version: 0,
            prev: None,
            at: OffsetDateTime::now_utc(),
            next_request: 1,
        }
    }

    /// The next event of the case, signed by `by`, without advancing the chain.
    pub fn peek(
        &mut self,
        by: &OfficeSigner,
        payload: Kind,
        visibility: Option<Visibility>,
    ) -> Built {
        let request_id =
            RequestId::new(&format!("chain-{}", self.next_request)).expect("valid request id");
        self.next_request += 1;
        let office = by.office().clone();
        let event = Event {
            event_id: EventId::derive(&office, &self.case_id, &request_id).to_string(),
            case_id: self.case_id.to_string(),
            case_version: self.version + 1,
            office_id: office.to_string(),
            agency: office.agency() as i32,
            actor: "officer-1".into(),
            occurred_at: Some(timestamp_from(self.at)),
            recorded_at: Some(timestamp_from(self.at)),
            causation_id: String::new(),
            correlation_id: String::new(),
            visibility: Some(visibility.clone().unwrap_or(Visibility {
                kind: VisibilityKind::Participants as i32,
                agencies: vec![],
            })),
            prev_event_hash: self.prev.map(|h| h.0.to_vec()).unwrap_or_default(),
            request_id: request_id.to_string(),
            command_digest: command_digest(&self.case_id, &payload, visibility.as_ref()).to_vec(),
            payload: Some(Payload {
                kind: Some(payload),
            }),
            sealed: None,
        };
        sign(by, event)
    }

    /// The next event of the case, signed by `by`; the chain advances past it.
    pub fn push(
        &mut self,
        by: &OfficeSigner,
        payload: Kind,
        visibility: Option<Visibility>,
    ) -> Built {
        let built = self.peek(by, payload, visibility);
        self.version += 1;
        self.prev = Some(built.hash);
        built
    }
}

/// Signs `event` as `by`.
pub fn sign(by: &OfficeSigner, event: Event) -> Built {
    let (signed, hash) = by.sign(&event);
    let bytes = signed.encode_to_vec();
    Built {
        event,
        signed,
        bytes,
        hash,
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
        parties: vec![Party {
            party_id: "rh".into(),
            role: PartyRole::RightsHolder as i32,
            name: "Acme Audio Co.".into(),
            organisation: true,
            identifier: String::new(),
            description: String::new(),
        }],
        summary: "12,000 earphones bearing the ACME mark".into(),
        local_case_number: String::new(),
    })
}

pub fn note(text: &str) -> Kind {
    Kind::NoteAdded(NoteAdded { text: text.into() })
}

/// A realistic case of `len` events (at least 1) across three offices: opening,
/// detention, evidence, a party, a referral to the police with its receipt, then notes.
pub fn realistic_case(case_id: &CaseId, len: usize) -> Vec<Built> {
    let customs = signer(CUSTOMS);
    let police = signer(POLICE);
    let ipc = signer(IPC);
    let mut chain = ChainBuilder::new(case_id);
    let mut out = Vec::with_capacity(len);
    for i in 0..len.max(1) {
        let (by, payload, visibility) = match i {
            0 => (&customs, opened("counterfeit earphones"), None),
            1 => (
                &customs,
                Kind::GoodsDetained(GoodsDetained {
                    recorded_dues: Vec::new(),
                    detention_id: "d1".into(),
                    description: "earphones".into(),
                    quantity: "12000 pcs".into(),
                    declared_value_fen: 1_200_000,
                    port: "Ningbo Beilun".into(),
                    declaration_number: "310420260001".into(),
                    on_rights_holder_application: true,
                }),
                None,
            ),
            2 => (
                &customs,
                Kind::EvidenceRecorded(EvidenceRecorded {
                    evidence_id: "e1".into(),
                    description: "photos of the goods".into(),
                    content_sha256: vec![7; 32],
                    location: "evidence://customs/e1".into(),
                    media_type: "image/jpeg".into(),
                    size_bytes: 1024,
                }),
                Some(Visibility {
                    kind: VisibilityKind::OriginOnly as i32,
                    agencies: vec![],
                }),
            ),
            3 => (
                &customs,
                Kind::PartyAdded(PartyAdded {
                    party: Some(Party {
                        party_id: "s1".into(),
                        role: PartyRole::Suspect as i32,
                        name: "Zhang San".into(),
                        organisation: false,
                        identifier: String::new(),
                        description: String::new(),
                    }),
                }),
                Some(Visibility {
                    kind: VisibilityKind::ListedAgencies as i32,
                    agencies: vec![Agency::PublicSecurity as i32],
                }),
            ),
            4 => (
                &customs,
                Kind::HandoffRequested(HandoffRequested {
                    handoff_id: "h1".into(),
                    kind: HandoffKind::SuspectedCrimeReferral as i32,
                    to_agency: Agency::PublicSecurity as i32,
                    to_office_id: POLICE.into(),
                    reason: "suspected crime".into(),
                    due_at: None,
                    evidence_ids: vec!["e1".into()],
                    recorded_dues: vec![],
                }),
                None,
            ),
            5 => (
                &police,
                Kind::HandoffAcknowledged(HandoffAcknowledged {
                    handoff_id: "h1".into(),
                }),
                None,
            ),
            n if n % 3 == 0 => (&ipc, note(&format!("note {n}")), None),
            n => (&customs, note(&format!("note {n}")), None),
        };
        out.push(chain.push(by, payload, visibility));
    }
    out
}
