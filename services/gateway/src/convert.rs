//! From projection rows to the wire types of `casebus.gateway.v1`, applying what the
//! `visibility` rules decided: an event in clear carries its decoded event, signed bytes,
//! signature and key id; a stub carries only version, position, hashes and time (and the
//! office unless sealed); summaries and list items leave out what comes from events the
//! viewer may not read.

use prost::Message as _;
use time::OffsetDateTime;

use casebus_domain::{CaseState, HandoffStatus, Sight, TrackStatus, effective_visibility};
use casebus_proto::event::v1::{Agency, Event, SignedEvent, VisibilityKind};
use casebus_proto::gateway::v1 as pb;
use casebus_proto::{OfficeId, Timestamp, timestamp_from};
use casebus_timeline::{CaseListItem, CaseSummary, HandoffSummary, TimelineRow};

use crate::error::ReadError;
use crate::opening::Openers;
use crate::visibility::{Viewer, stub_names_office};

/// The wire form of one timeline row as seen by `viewer` with `sight` (`Clear` or
/// `Stub`); a sealed event in clear is opened with `openers` for the viewer's office when
/// the gateway holds its key (`opened`), wrapped in the event or in `widened` (the keys
/// the case's widening VisibilityChanged events added for it).
///
/// # Errors
/// [`ReadError::CorruptEvent`] when the stored bytes of an event to show in clear do not
/// decode.
pub fn timeline_event(
    row: &TimelineRow,
    sight: Sight,
    viewer: &Viewer,
    openers: &Openers,
    widened: &[casebus_proto::event::v1::WrappedKey],
) -> Result<pb::TimelineEvent, ReadError> {
    let mut out = pb::TimelineEvent {
        case_id: row.case_id.to_string(),
        case_version: row.version,
        position: row.sequence,
        hash: row.hash.as_bytes().to_vec(),
        prev_hash: row
            .prev_hash
            .map(|h| h.as_bytes().to_vec())
            .unwrap_or_default(),
        recorded_at: Some(timestamp_from(row.recorded_at)),
        ..Default::default()
    };
    if sight == Sight::Clear {
        let corrupt = || ReadError::CorruptEvent {
            case_id: row.case_id.to_string(),
            version: row.version,
        };
        let signed = SignedEvent::decode(row.signed.as_slice()).map_err(|_| corrupt())?;
        let mut event = Event::decode(signed.event.as_slice()).map_err(|_| corrupt())?;
        if let Some(full) = openers.open_for(&viewer.office, &event, widened) {
            event.payload = Some(full);
            out.opened = true;
        }
        out.office_id = row.office.to_string();
        out.agency = row.agency as i32;
        out.event_type = row.type_name.clone();
        out.event = Some(event);
        out.event_bytes = signed.event;
        out.signature = signed.signature;
        out.key_id = signed.key_id;
    } else {
        out.redacted = true;
        if stub_names_office(row.visibility.kind()) {
            out.office_id = row.office.to_string();
            out.agency = row.agency as i32;
        }
    }
    Ok(out)
}

fn track_status(status: TrackStatus) -> pb::TrackStatus {
    match status {
        TrackStatus::Active => pb::TrackStatus::Active,
        TrackStatus::Closed => pb::TrackStatus::Closed,
    }
}

fn handoff_status(status: HandoffStatus) -> pb::HandoffStatus {
    match status {
        HandoffStatus::Requested => pb::HandoffStatus::Requested,
        HandoffStatus::Acknowledged => pb::HandoffStatus::Acknowledged,
        HandoffStatus::Accepted => pb::HandoffStatus::Accepted,
        HandoffStatus::Declined => pb::HandoffStatus::Declined,
    }
}

/// The wire form of a hand-off; `names_office` is false when its request is sealed and
/// the viewer may not read it, so the requesting office stays hidden as in a stub.
fn handoff(summary: &HandoffSummary, names_office: bool) -> pb::Handoff {
    let h = &summary.handoff;
    pb::Handoff {
        handoff_id: h.handoff_id.clone(),
        kind: h.kind as i32,
        from_office_id: if names_office {
            h.from_office.to_string()
        } else {
            String::new()
        },
        to_agency: h.to_agency as i32,
        to_office_id: h
            .to_office
            .as_ref()
            .map(ToString::to_string)
            .unwrap_or_default(),
        status: handoff_status(h.status) as i32,
        requested_at: Some(timestamp_from(h.requested_at)),
        due_at: h.due_at.map(timestamp_from),
        overdue: summary.overdue,
        requested_version: h.requested_version,
        clock: summary.clock.as_ref().map(running_clock),
    }
}

/// The wire form of a running clock.
fn running_clock(c: &casebus_timeline::RunningClock) -> pb::RunningClock {
    pb::RunningClock {
        name: c.name.clone(),
        started_at: Some(timestamp_from(c.started_at)),
        due_at: c.due_at.map(timestamp_from),
        basis: c.basis.clone(),
        due_error: c.error.clone().unwrap_or_default(),
        extensions: c.extensions,
        extensions_allowed: c.extensions_allowed,
        suspended_since: c.suspended_since.map(timestamp_from),
    }
}

/// What of the CaseOpened event (version 1) the viewer sees: the title and type in
/// clear, the office unless sealed.
struct OpenedSight {
    clear: bool,
    office: bool,
}

/// Whether the viewer may learn which office recorded the event at `version`: it reads
/// the event, or the event is not sealed (a stub of a sealed event names no office).
fn names_office(state: &CaseState, viewer: &Viewer, version: u64) -> bool {
    viewer.reads(state, version)
        || effective_visibility(state, version)
            .is_none_or(|v| v.kind() != VisibilityKind::OriginOnly)
}

/// Whether some event `office` recorded names it to `viewer`: an office that recorded
/// only sealed events the viewer may not read stays hidden, in a track as in a stub.
fn office_known(state: &CaseState, viewer: &Viewer, office: &OfficeId) -> bool {
    state
        .events
        .iter()
        .zip(1u64..)
        .any(|(meta, version)| meta.office == *office && names_office(state, viewer, version))
}

fn opened_sight(state: &CaseState, viewer: &Viewer) -> OpenedSight {
    let clear = viewer.reads(state, 1);
    let sealed =
        effective_visibility(state, 1).is_some_and(|v| v.kind() == VisibilityKind::OriginOnly);
    OpenedSight {
        clear,
        office: clear || !sealed,
    }
}

/// The wire form of a case summary as `viewer` may see it (`state` is the case's folded
/// state, read after the summary, for the visibility decisions).
pub fn case_summary(summary: &CaseSummary, state: &CaseState, viewer: &Viewer) -> pb::CaseSummary {
    let opened = opened_sight(state, viewer);
    let mut redacted = !opened.clear;
    let mut out = pb::CaseSummary {
        case_id: summary.case_id.to_string(),
        version: summary.version,
        updated_at: Some(timestamp_from(summary.updated_at)),
        tracks: summary
            .tracks
            .iter()
            .map(|t| pb::Track {
                agency: t.agency as i32,
                office_id: if office_known(state, viewer, &t.office) {
                    t.office.to_string()
                } else {
                    String::new()
                },
                status: track_status(t.status) as i32,
                opened_at: Some(timestamp_from(t.opened_at)),
            })
            .collect(),
        handoffs: summary
            .handoffs
            .iter()
            .map(|h| handoff(h, names_office(state, viewer, h.handoff.requested_version)))
            .collect(),
        participants: summary.participants.iter().map(|a| *a as i32).collect(),
        ..Default::default()
    };
    for c in &summary.clocks {
        if viewer.reads(state, c.source_version) {
            out.clocks.push(pb::CaseClock {
                subject_id: c.subject.clone(),
                agency: c.agency as i32,
                clock: Some(running_clock(&c.clock)),
                overdue: c.overdue,
                source_version: c.source_version,
            });
        } else {
            redacted = true;
        }
    }
    if let Some(o) = &summary.opened {
        out.opened_at = Some(timestamp_from(o.at));
        if opened.clear {
            out.case_type = o.case_type as i32;
            out.title = o.title.clone();
        }
        if opened.office {
            out.opened_by_office_id = o.office.to_string();
        }
    }
    for p in &summary.parties {
        if viewer.reads(state, p.source_version) {
            out.parties.push(pb::Party {
                party_id: p.party_id.clone(),
                role: p.role as i32,
                name: p.name.clone(),
                organisation: p.organisation,
                source_version: p.source_version,
            });
        } else {
            redacted = true;
        }
    }
    for r in &summary.references {
        if viewer.reads(state, r.source_version) {
            out.references.push(pb::Reference {
                agency: r.reference.agency as i32,
                office_id: r.reference.office.to_string(),
                local_number: r.reference.number.clone(),
                source_version: r.source_version,
            });
        } else {
            redacted = true;
        }
    }
    // Holds are recorded for every participant and never narrowed; the check keeps
    // the rule of every other field.
    for h in state.legal_holds.values() {
        if viewer.reads(state, h.placed_version) {
            out.legal_holds.push(pb::LegalHold {
                hold_id: h.hold_id.clone(),
                placed_by_office_id: h.office.to_string(),
                placed_at: Some(timestamp_from(h.placed_at)),
                legal_basis: h.legal_basis.clone(),
                source_version: h.placed_version,
            });
        } else {
            redacted = true;
        }
    }
    out.redacted = redacted;
    out
}

/// The wire form of a case list item as `viewer` may see it.
pub fn list_item(item: &CaseListItem, state: &CaseState, viewer: &Viewer) -> pb::CaseListItem {
    let opened = opened_sight(state, viewer);
    pb::CaseListItem {
        case_id: item.case_id.to_string(),
        case_type: if opened.clear {
            item.case_type as i32
        } else {
            0
        },
        title: if opened.clear {
            item.title.clone()
        } else {
            String::new()
        },
        opened_by_office_id: if opened.office {
            item.opened_by.to_string()
        } else {
            String::new()
        },
        opened_at: Some(timestamp_from(item.opened_at)),
        version: item.version,
        updated_at: Some(timestamp_from(item.updated_at)),
        redacted: !opened.clear,
    }
}

/// A list item built from a summary (for reference lookups), as `viewer` may see it.
pub fn list_item_of_summary(
    summary: &CaseSummary,
    state: &CaseState,
    viewer: &Viewer,
) -> pb::CaseListItem {
    let opened = opened_sight(state, viewer);
    let o = summary.opened.as_ref();
    pb::CaseListItem {
        case_id: summary.case_id.to_string(),
        case_type: o.filter(|_| opened.clear).map_or(0, |o| o.case_type as i32),
        title: o
            .filter(|_| opened.clear)
            .map(|o| o.title.clone())
            .unwrap_or_default(),
        opened_by_office_id: o
            .filter(|_| opened.office)
            .map(|o| o.office.to_string())
            .unwrap_or_default(),
        opened_at: o.map(|o| timestamp_from(o.at)),
        version: summary.version,
        updated_at: Some(timestamp_from(summary.updated_at)),
        redacted: !opened.clear,
    }
}

/// The agency an enum number names, if it is a real agency (not unspecified).
pub fn agency(value: i32) -> Option<Agency> {
    Agency::try_from(value)
        .ok()
        .filter(|a| *a != Agency::Unspecified)
}

/// An instant from a wire timestamp, if valid.
pub fn instant(ts: &Timestamp) -> Option<OffsetDateTime> {
    casebus_proto::datetime_from(ts)
}
