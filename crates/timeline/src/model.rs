//! The plain values the projection takes and returns: the input of `apply_batch`, its
//! outcome, timeline rows, case summaries, case list items and filters, counts.
//!
//! They carry no connection and no lifetime beyond the input borrow, so the gateway can
//! move them out of `spawn_blocking` freely. Where the domain already has the type
//! (`Track`, `Handoff`, `Reference`, `Opened`), it is reused as it is.

use time::OffsetDateTime;

use casebus_domain::{Handoff, Opened, Reference, Track, TrackStatus};
use casebus_integrity::{EventHash, VerifiedEvent};
use casebus_proto::event::v1::{Agency, CaseType, PartyRole, Visibility};
use casebus_proto::{CaseId, EventId, OfficeId};

/// One verified event and its sequence in the CASES stream, as handed to
/// [`crate::Projection::apply_batch`].
#[derive(Debug, Clone, Copy)]
pub struct ProjectedInput<'a> {
    /// The message's sequence in the CASES stream.
    pub sequence: u64,
    /// The event, verified and chain-checked by the consumer.
    pub event: &'a VerifiedEvent,
}

impl<'a> ProjectedInput<'a> {
    /// Pairs an event with its stream sequence.
    pub fn new(sequence: u64, event: &'a VerifiedEvent) -> Self {
        Self { sequence, event }
    }
}

/// What one [`crate::Projection::apply_batch`] call did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ApplyOutcome {
    /// Events written.
    pub applied: usize,
    /// Events skipped because their sequence was at or below the stored position (a
    /// redelivery after a crash or a lost ack).
    pub already_applied: usize,
    /// Events skipped because the same event (same case version, same bytes) is already
    /// stored under an earlier sequence.
    pub duplicates: usize,
    /// Distinct cases whose rows were rewritten.
    pub cases_touched: usize,
    /// The stored position after the call.
    pub position: u64,
}

/// Which way a timeline page runs from its starting version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    /// Ascending versions, from the starting version up.
    Forward,
    /// Descending versions, from the starting version down.
    Backward,
}

/// One event as the projection stores it: everything a timeline, the agency feed or a
/// redacted stub needs, and the signed bytes for a caller allowed to see it in clear.
#[derive(Debug, Clone, PartialEq)]
pub struct TimelineRow {
    /// Sequence in the CASES stream.
    pub sequence: u64,
    /// The case.
    pub case_id: CaseId,
    /// Position in the case.
    pub version: u64,
    /// The event id.
    pub event_id: EventId,
    /// The recording office.
    pub office: OfficeId,
    /// The recording office's agency.
    pub agency: Agency,
    /// Catalogue name of the payload kind, e.g. `GoodsDetained`, or `Unknown(<field>)`.
    pub type_name: String,
    /// When the action happened.
    pub occurred_at: OffsetDateTime,
    /// When the office's service recorded the event.
    pub recorded_at: OffsetDateTime,
    /// SHA-256 of the signed event bytes.
    pub hash: EventHash,
    /// The previous event's hash; `None` at version 1.
    pub prev_hash: Option<EventHash>,
    /// The encoded `SignedEvent` exactly as it was on the stream. Contains the payload:
    /// hand it only to a caller whose sight of the event is clear.
    pub signed: Vec<u8>,
    /// The visibility in force: as recorded, or as replaced by a later
    /// VisibilityChanged. Never of kind unspecified.
    pub visibility: Visibility,
}

/// A party of a case, as shown in summaries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartySummary {
    /// The party's id within the case.
    pub party_id: String,
    /// Its role (`Unspecified` for a role this build does not know).
    pub role: PartyRole,
    /// Its name.
    pub name: String,
    /// Whether it is an organisation.
    pub organisation: bool,
    /// Version of the event that last set the party; show the party only to a caller
    /// who may see that event.
    pub source_version: u64,
}

/// A hand-off's running legal clock, as the writer counted it
/// (`CaseState::open_clock` with its deadline rules and holiday calendar).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunningClock {
    /// The clock's name in the deadline rules (`receipt`, `filing_decision`, …).
    pub name: String,
    /// When it started: the request's `occurred_at`.
    pub started_at: OffsetDateTime,
    /// When it falls due; `None` when the calendar cannot count it.
    pub due_at: Option<OffsetDateTime>,
    /// The law that sets it.
    pub basis: String,
    /// Why the calendar cannot count it, when it cannot.
    pub error: Option<String>,
    /// How many extensions were granted (`due_at` includes them).
    pub extensions: u32,
    /// How many the deadline rules allow for this clock.
    pub extensions_allowed: u32,
    /// Since when the clock is suspended, while it is; `due_at` is then the due time as
    /// of the suspension.
    pub suspended_since: Option<OffsetDateTime>,
}

impl RunningClock {
    /// Whether it is past due at `now`: never while suspended, nor when the calendar
    /// cannot count it.
    pub fn is_overdue(&self, now: OffsetDateTime) -> bool {
        self.suspended_since.is_none() && self.due_at.is_some_and(|due| now > due)
    }
}

/// A hand-off with its running clock and its overdue flag at the time the summary was
/// made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HandoffSummary {
    /// The hand-off, as the case rules fold it.
    pub handoff: Handoff,
    /// Its running legal clock; `None` once every clock is answered.
    pub clock: Option<RunningClock>,
    /// Whether its running clock's due time had passed at the `now` of the query.
    pub overdue: bool,
}

/// A running clock of the case not tied to a hand-off (a customs detention's), with
/// its overdue flag at the time the summary was made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaseClockSummary {
    /// What it runs on: the detention id, or the suspect's party id.
    pub subject: String,
    /// The agency whose act answers it.
    pub agency: Agency,
    /// The clock, as the writer counted it (extended, never suspended).
    pub clock: RunningClock,
    /// Whether its due time had passed at the `now` of the query.
    pub overdue: bool,
    /// Version of the event that started it; show the clock only to a caller who may
    /// see that event.
    pub source_version: u64,
}

/// A linked agency case number.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReferenceSummary {
    /// The reference, as the case rules fold it.
    pub reference: Reference,
    /// Version of the event that first linked it.
    pub source_version: u64,
}

/// Everything the gateway's GetCase shows about one case.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaseSummary {
    /// The case.
    pub case_id: CaseId,
    /// Its version (number of events).
    pub version: u64,
    /// Stream sequence of its latest event.
    pub last_sequence: u64,
    /// recorded_at of its latest event.
    pub updated_at: OffsetDateTime,
    /// How it was opened; `None` only if its CaseOpened was never projected.
    pub opened: Option<Opened>,
    /// Tracks, in agency order.
    pub tracks: Vec<Track>,
    /// Parties, by party id.
    pub parties: Vec<PartySummary>,
    /// Hand-offs, in the order they were requested.
    pub handoffs: Vec<HandoffSummary>,
    /// The running clocks not tied to a hand-off, in clock then subject order.
    pub clocks: Vec<CaseClockSummary>,
    /// Linked agency case numbers, in agency, number, office order.
    pub references: Vec<ReferenceSummary>,
    /// Agencies taking part (a track or addressed by a hand-off), in agency order.
    pub participants: Vec<Agency>,
}

/// Filters of [`crate::Projection::list_cases`]; every field left `None` matches all.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CaseFilter {
    /// Only cases this agency takes part in (a track, or addressed by a hand-off). The
    /// gateway always sets the caller's agency here.
    pub agency: Option<Agency>,
    /// Only cases with a track of this status: `agency`'s track when `agency` is set,
    /// any agency's track otherwise.
    pub track_status: Option<TrackStatus>,
    /// Only cases of this type.
    pub case_type: Option<CaseType>,
    /// Only cases opened at or after this instant.
    pub opened_from: Option<OffsetDateTime>,
    /// Only cases opened before this instant.
    pub opened_to: Option<OffsetDateTime>,
    /// Only cases with a hand-off whose running clock is past due at this instant.
    pub overdue_at: Option<OffsetDateTime>,
    /// Only cases with any running clock past due at this instant: a hand-off's, or
    /// one of the case's own clocks whose starting event the reader may read.
    pub any_clock_overdue_at: Option<OffsetDateTime>,
    /// Only cases whose title or a party's name contains this text (case-insensitive
    /// for ASCII letters; `%` and `_` match themselves). 1 to 200 characters.
    pub text: Option<String>,
    /// Whose list this is. `None` lists and matches everything (operators, tests);
    /// `Some` restricts the listing to what the reader may see, inside the query itself.
    pub reader: Option<ListReader>,
}

/// The reader a listing is for, so the query only ever touches and matches what it may
/// see: the same rule as `casebus_domain::sight`, expressed in SQL.
///
/// - Without `all_cases`, only cases the reader's agency takes part in are listed, and
///   the query walks that agency's participations, never another case's rows.
/// - With `all_cases` (an administrator), every case is listed.
/// - Either way, `case_type` and `text` match only content the reader may read in
///   clear: the title and type of a readable CaseOpened (version 1), the names of
///   parties whose source event is readable. A hidden value that would match is never
///   even compared, so a match cannot be told from a miss, not by the answer and not by
///   the work done.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListReader {
    /// The reading office.
    pub office: OfficeId,
    /// Whether every case is listed (metadata for administrators), not only those its
    /// agency takes part in.
    pub all_cases: bool,
}

/// One case in a list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaseListItem {
    /// The case.
    pub case_id: CaseId,
    /// Kind of IP matter.
    pub case_type: CaseType,
    /// Title.
    pub title: String,
    /// The office that opened it.
    pub opened_by: OfficeId,
    /// When it was opened.
    pub opened_at: OffsetDateTime,
    /// Its version.
    pub version: u64,
    /// recorded_at of its latest event.
    pub updated_at: OffsetDateTime,
}

/// One page of [`crate::Projection::list_cases`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CasePage {
    /// The cases, by (opened_at, case_id).
    pub cases: Vec<CaseListItem>,
    /// Pass this to get the next page; `None` on the last page.
    pub next_cursor: Option<String>,
    /// SQLite virtual-machine steps the listing's query took: the work it caused, which
    /// depends only on what the reader may see.
    pub work: u64,
}

/// A hand-off whose running clock is past due, for the monitoring dashboard.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OverdueHandoff {
    /// The case.
    pub case_id: CaseId,
    /// The hand-off.
    pub handoff: Handoff,
    /// Its running clock.
    pub clock: Option<RunningClock>,
}

/// Row counts of the projection, for the CLI's rebuild report and the monitor.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ProjectionCounts {
    /// The stored stream position.
    pub position: u64,
    /// Events stored.
    pub events: u64,
    /// Cases.
    pub cases: u64,
    /// Tracks of all cases.
    pub tracks: u64,
    /// Parties of all cases.
    pub parties: u64,
    /// Linked references.
    pub references: u64,
    /// Hand-offs of all cases.
    pub handoffs: u64,
    /// Hand-offs still open (requested or acknowledged).
    pub handoffs_open: u64,
    /// Hand-offs whose running clock is past due at the `now` of the query.
    pub handoffs_overdue: u64,
    /// Running case clocks (not tied to a hand-off) past due.
    pub case_clocks_overdue: u64,
}
