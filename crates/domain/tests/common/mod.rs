//! What the domain's test suites (`rules.rs`, `handoff_clocks.rs`) share: the offices of
//! their scripted cases and the payload builders of the hand-off path, written once.

#![allow(dead_code)]

use casebus_proto::event::v1::payload::Kind;
use casebus_proto::event::v1::{
    Agency, HandoffAccepted, HandoffAcknowledged, HandoffKind, HandoffRequested, InvestigationFiled,
};

pub const CUSTOMS: &str = "customs:ningbo";
pub const IPC: &str = "ip_center:zhejiang";
pub const POLICE: &str = "public_security:ningbo";
pub const PROC: &str = "procuratorate:ningbo";
pub const COURT: &str = "court:hangzhou-ip";

/// A hand-off `id` of `kind` to the agency `to`.
pub fn handoff(id: &str, kind: HandoffKind, to: Agency) -> Kind {
    Kind::HandoffRequested(HandoffRequested {
        handoff_id: id.into(),
        kind: kind as i32,
        to_agency: to as i32,
        reason: "please act".into(),
        ..Default::default()
    })
}

/// The automatic receipt of hand-off `id`.
pub fn ack(id: &str) -> Kind {
    Kind::HandoffAcknowledged(HandoffAcknowledged {
        handoff_id: id.into(),
    })
}

/// Taking hand-off `id`, without a local case number.
pub fn accept(id: &str) -> Kind {
    Kind::HandoffAccepted(HandoffAccepted {
        handoff_id: id.into(),
        local_case_number: String::new(),
    })
}

/// The police file a criminal investigation on a customs referral.
pub fn file_investigation() -> Kind {
    Kind::InvestigationFiled(InvestigationFiled {
        police_case_number: "NB-PS-77".into(),
        suspected_offence: "Criminal Law art. 213".into(),
        basis: "customs referral".into(),
    })
}
