//! The visibility rule: which office sees which event of a case in clear, and which gets
//! only a redacted stub (position, hash, time) that keeps the chain verifiable.
//!
//! - PARTICIPANTS (the default): every agency taking part in the case (a track, or
//!   addressed by a hand-off) sees the payload.
//! - LISTED_AGENCIES: the listed agencies and the recording agency.
//! - ORIGIN_ONLY (sealed): the recording office only.
//!
//! A later VisibilityChanged by the recording office replaces the event's visibility. An
//! agency not involved in the case at all must not even learn that it exists.

use casebus_proto::OfficeId;
use casebus_proto::event::v1::{Visibility, VisibilityKind};

use crate::state::CaseState;

/// What a viewer may see of one event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sight {
    /// The whole event.
    Clear,
    /// A redacted stub only.
    Stub,
    /// Nothing: the viewer's agency is not involved in the case (answer NOT_FOUND).
    NotInvolved,
}

/// The visibility in force for the event at `version` (after any VisibilityChanged), or
/// `None` when the case has no such event.
pub fn effective_visibility(state: &CaseState, version: u64) -> Option<&Visibility> {
    let index = usize::try_from(version).ok()?.checked_sub(1)?;
    state.events.get(index).map(|meta| &meta.visibility)
}

/// What `viewer` may see of the event at `version`. Versions the case does not have
/// are `Stub` for an involved viewer (there is nothing to show).
pub fn sight(state: &CaseState, version: u64, viewer: &OfficeId) -> Sight {
    let agency = viewer.agency();
    if !state.involves(agency) {
        return Sight::NotInvolved;
    }
    let Some(index) = usize::try_from(version).ok().and_then(|v| v.checked_sub(1)) else {
        return Sight::Stub;
    };
    let Some(meta) = state.events.get(index) else {
        return Sight::Stub;
    };
    event_sight(&meta.office, &meta.visibility, viewer)
}

/// Whether `viewer` may learn which office recorded the event at `version`: it may read
/// the event, or the event is not sealed (a stub of a restricted event names its office;
/// a sealed one does not).
pub fn names_office(state: &CaseState, version: u64, viewer: &OfficeId) -> bool {
    sight(state, version, viewer) == Sight::Clear
        || effective_visibility(state, version)
            .is_some_and(|v| v.kind() != VisibilityKind::OriginOnly)
}

/// Whether `office` may be named to `viewer` at all in this case: some event it recorded
/// names it ([`names_office`]). An office that recorded only sealed events the viewer may
/// not read stays hidden everywhere, tracks included.
pub fn office_known(state: &CaseState, office: &OfficeId, viewer: &OfficeId) -> bool {
    state
        .events
        .iter()
        .zip(1u64..)
        .any(|(meta, version)| meta.office == *office && names_office(state, version, viewer))
}

/// What `viewer`, whose agency takes part in the case, may see of one event recorded by
/// `recorder` with `visibility`: the rule of [`sight`] for a single event, for readers
/// that hold the event but not the whole case state (an agency's inbox).
pub fn event_sight(recorder: &OfficeId, visibility: &Visibility, viewer: &OfficeId) -> Sight {
    if recorder == viewer {
        return Sight::Clear;
    }
    let agency = viewer.agency();
    let same_agency = recorder.agency() == agency;
    let clear = match visibility.kind() {
        VisibilityKind::OriginOnly => false,
        VisibilityKind::ListedAgencies => {
            same_agency || visibility.agencies.contains(&(agency as i32))
        }
        // The caller vouches that the viewer's agency is a participant.
        VisibilityKind::Participants | VisibilityKind::Unspecified => true,
    };
    if clear { Sight::Clear } else { Sight::Stub }
}
