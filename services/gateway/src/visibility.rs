//! Who sees what: the caller as a `Viewer` (office, admin or not) and the gateway's
//! rules on top of the domain's `sight`.
//!
//! - A case exists for a viewer whose agency takes part in it; for anyone else it is
//!   NOT_FOUND. An `admin` sees every case, but only as metadata: events of a case its
//!   agency takes no part in are stubs.
//! - An event is clear or a stub as `casebus_domain::sight` says (participants, listed
//!   agencies plus the recording agency, origin office only). A stub of a sealed
//!   (origin-only) event does not even name the office.
//! - Parts of a case summary follow the event they come from: the title and case type
//!   follow the CaseOpened event, a party the event that last set it, a reference the
//!   event that linked it. Tracks, hand-off metadata and participants are the case's
//!   structure, shown to everyone who may see the case.
//!
//! This module decides; it does not query or encode (see `service` and `convert`).

use casebus_domain::{CaseState, Sight, sight};
use casebus_integrity::token::Role;
use casebus_proto::OfficeId;
use casebus_proto::event::v1::{Agency, VisibilityKind};
use casebus_runtime::auth::Caller;

use crate::error::ReadError;

/// The reading office and whether it has the admin role.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Viewer {
    /// The caller's office.
    pub office: OfficeId,
    /// Whether the caller has the admin role (metadata of every case).
    pub admin: bool,
}

impl Viewer {
    /// The viewer of an authenticated caller.
    ///
    /// # Errors
    /// [`ReadError::PermissionDenied`] when the caller has neither the reader nor the
    /// admin role.
    pub fn of(caller: &Caller) -> Result<Self, ReadError> {
        let admin = caller.has(Role::Admin);
        if !admin && !caller.has(Role::Reader) {
            return Err(ReadError::PermissionDenied);
        }
        Ok(Self {
            office: caller.office.clone(),
            admin,
        })
    }

    /// The viewer's agency.
    pub fn agency(&self) -> Agency {
        self.office.agency()
    }

    /// Whether the case exists for this viewer at all.
    pub fn may_see_case(&self, state: &CaseState) -> bool {
        self.admin || state.involves(self.agency())
    }

    /// What the viewer may see of the event at `version`.
    pub fn sight(&self, state: &CaseState, version: u64) -> Sight {
        match sight(state, version, &self.office) {
            Sight::NotInvolved if self.admin => Sight::Stub,
            other => other,
        }
    }

    /// Whether the viewer may read the event at `version` in clear.
    pub fn reads(&self, state: &CaseState, version: u64) -> bool {
        self.sight(state, version) == Sight::Clear
    }
}

/// Whether a stub of an event with this effective visibility names its office.
pub fn stub_names_office(kind: VisibilityKind) -> bool {
    kind != VisibilityKind::OriginOnly
}

#[cfg(test)]
mod tests {
    use casebus_domain::RecordedEvent;
    use casebus_proto::event::v1::payload::Kind;
    use casebus_proto::event::v1::{
        CaseOpened, HandoffKind, HandoffRequested, NoteAdded, Visibility,
    };
    use casebus_proto::{CaseId, EventId};
    use time::macros::datetime;

    use super::*;

    fn office(id: &str) -> OfficeId {
        OfficeId::new(id).expect("office")
    }

    /// Customs opens; refers to the police; a note for participants, one listed for the
    /// police, one sealed.
    fn state() -> CaseState {
        let case = CaseId::new("C-1").expect("case");
        let customs = office("customs:ningbo");
        let events: Vec<(Kind, Option<Visibility>)> = vec![
            (
                Kind::CaseOpened(CaseOpened {
                    case_type: 1,
                    title: "t".into(),
                    ..Default::default()
                }),
                None,
            ),
            (
                Kind::HandoffRequested(HandoffRequested {
                    handoff_id: "h1".into(),
                    kind: HandoffKind::SuspectedCrimeReferral as i32,
                    to_agency: Agency::PublicSecurity as i32,
                    ..Default::default()
                }),
                None,
            ),
            (
                Kind::NoteAdded(NoteAdded { text: "a".into() }),
                Some(Visibility {
                    kind: VisibilityKind::ListedAgencies as i32,
                    agencies: vec![Agency::PublicSecurity as i32],
                }),
            ),
            (
                Kind::NoteAdded(NoteAdded { text: "b".into() }),
                Some(Visibility {
                    kind: VisibilityKind::OriginOnly as i32,
                    agencies: vec![],
                }),
            ),
        ];
        let ids: Vec<EventId> = (0..events.len())
            .map(|i| EventId::new(&format!("{i:032x}")).expect("id"))
            .collect();
        let mut state = CaseState::default();
        for (i, (payload, visibility)) in events.iter().enumerate() {
            state.apply(&RecordedEvent {
                case_id: &case,
                version: i as u64 + 1,
                event_id: &ids[i],
                office: &customs,
                occurred_at: datetime!(2026-03-01 8:00 UTC),
                visibility: visibility.as_ref(),
                payload: Some(payload),
            });
        }
        state
    }

    fn viewer(id: &str, admin: bool) -> Viewer {
        Viewer {
            office: office(id),
            admin,
        }
    }

    #[test]
    fn the_matrix_of_sights() {
        let state = state();
        use Sight::*;
        let cases = [
            ("customs:ningbo", false, [Clear, Clear, Clear, Clear]),
            ("customs:shanghai", false, [Clear, Clear, Clear, Stub]),
            ("public_security:ningbo", false, [Clear, Clear, Clear, Stub]),
            ("court:hangzhou-ip", false, [NotInvolved; 4]),
            ("court:hangzhou-ip", true, [Stub; 4]),
            ("public_security:ningbo", true, [Clear, Clear, Clear, Stub]),
        ];
        for (id, admin, expected) in cases {
            let v = viewer(id, admin);
            let got: Vec<Sight> = (1..=4).map(|version| v.sight(&state, version)).collect();
            assert_eq!(got, expected, "{id} admin={admin}");
            assert_eq!(
                v.may_see_case(&state),
                expected[0] != NotInvolved,
                "{id} admin={admin}"
            );
        }
    }

    #[test]
    fn only_readers_and_admins_may_read() {
        let caller = |roles: Vec<Role>| Caller {
            office: office("customs:ningbo"),
            actor: "a".into(),
            roles,
            method: casebus_runtime::auth::Method::Token,
            token_id: String::new(),
            expires_at: None,
        };
        assert!(Viewer::of(&caller(vec![Role::Reader])).is_ok());
        assert!(Viewer::of(&caller(vec![Role::Admin])).expect("admin").admin);
        assert!(matches!(
            Viewer::of(&caller(vec![Role::Clerk, Role::Operator])),
            Err(ReadError::PermissionDenied)
        ));
    }

    #[test]
    fn a_sealed_stub_does_not_name_its_office() {
        assert!(!stub_names_office(VisibilityKind::OriginOnly));
        assert!(stub_names_office(VisibilityKind::ListedAgencies));
        assert!(stub_names_office(VisibilityKind::Participants));
    }
}
