//! `CaseState`: everything the rules need to know about one case, folded from its
//! events in order (`CaseState::apply`). Folding never fails: events were decided by the
//! rules when recorded, and an event the state cannot use (e.g. an unknown payload kind
//! from a newer producer) still advances the version.
//!
//! The fold also keeps each hand-off's two legal clocks (`HandoffClocks`): the receipt
//! clock, answered by the automatic receipt, and the decision clock, answered only by
//! the decision the law asks for (see `docs/DEADLINES.md`). Accepting a hand-off starts
//! the work; it does not stop the decision clock. Due times are counted on demand
//! (`CaseState::open_clocks`) with the rules and calendar the caller passes in, so the
//! fold itself stays free of configuration.

use std::collections::{BTreeMap, BTreeSet};

use time::OffsetDateTime;

use casebus_proto::event::v1::payload::Kind;
use casebus_proto::event::v1::{
    Agency, CaseType, DeterminationOutcome, HandoffKind, InfringementDetermined, Party,
    RecordedDue, Visibility, VisibilityKind, WrappedKey,
};
use casebus_proto::{CaseId, EventId, OfficeId, datetime_from};

use crate::calendar::{Calendar, CalendarError};
use crate::clock::{ClockRule, Unit, legal_date};
use crate::dues::{RecordedDueTime, recorded_due_of};
use crate::rules::{ClockName, DeadlineRules};

/// The view of a recorded, verified event that folding needs.
#[derive(Debug, Clone, Copy)]
pub struct RecordedEvent<'a> {
    /// The case.
    pub case_id: &'a CaseId,
    /// Position in the case.
    pub version: u64,
    /// The event id.
    pub event_id: &'a EventId,
    /// The recording office.
    pub office: &'a OfficeId,
    /// When the action happened.
    pub occurred_at: OffsetDateTime,
    /// The recorded visibility.
    pub visibility: Option<&'a Visibility>,
    /// The payload, `None` for a kind this build does not know.
    pub payload: Option<&'a Kind>,
}

/// How the case was opened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Opened {
    /// Kind of IP matter.
    pub case_type: CaseType,
    /// Title.
    pub title: String,
    /// The office that opened it.
    pub office: OfficeId,
    /// When.
    pub at: OffsetDateTime,
}

/// Status of an agency's track.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum TrackStatus {
    /// The agency is working the case.
    Active,
    /// The agency closed its track.
    Closed,
}

/// One agency's part of the case.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Track {
    /// The agency.
    pub agency: Agency,
    /// The office that opened (or last reopened) the track.
    pub office: OfficeId,
    /// Status.
    pub status: TrackStatus,
    /// When it opened.
    pub opened_at: OffsetDateTime,
}

/// Status of a hand-off. The order of the variants is the order in which a hand-off
/// may move; it never moves back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum HandoffStatus {
    /// Sent, not yet seen by the receiver.
    Requested,
    /// The receiving service issued its automatic receipt.
    Acknowledged,
    /// The receiver took it.
    Accepted,
    /// The receiver declined it.
    Declined,
}

impl HandoffStatus {
    /// Position in the forward order (accepted and declined are both final).
    pub fn rank(self) -> u8 {
        match self {
            Self::Requested => 0,
            Self::Acknowledged => 1,
            Self::Accepted | Self::Declined => 2,
        }
    }

    /// Whether the receiver still has to decide.
    pub fn is_open(self) -> bool {
        self.rank() < 2
    }
}

/// A hand-off between agencies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Handoff {
    /// Id within the case.
    pub handoff_id: String,
    /// Kind.
    pub kind: HandoffKind,
    /// Sending office.
    pub from_office: OfficeId,
    /// Receiving agency.
    pub to_agency: Agency,
    /// Receiving office, if a particular one.
    pub to_office: Option<OfficeId>,
    /// Status.
    pub status: HandoffStatus,
    /// When it was requested.
    pub requested_at: OffsetDateTime,
    /// When the receiver must decide.
    pub due_at: Option<OffsetDateTime>,
    /// Version of the HandoffRequested event.
    pub requested_version: u64,
    /// Event id of the HandoffRequested event.
    pub requested_event_id: EventId,
    /// Whether the receiving agency already answered it on the merits (arrest approval,
    /// indictment or non-prosecution).
    pub answered: bool,
}

impl Handoff {
    /// Whether the hand-off is still open and its due time has passed at `now`.
    pub fn is_overdue(&self, now: OffsetDateTime) -> bool {
        self.status.is_open() && self.due_at.is_some_and(|due| now > due)
    }
}

/// A customs detention.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Detention {
    /// Released without confiscation.
    pub released: bool,
    /// Whether the determination found the goods infringing, once made (`false` also
    /// when it could not determine; `outcome` says which).
    pub infringing: Option<bool>,
    /// The determination's outcome, once made.
    pub outcome: Option<DeterminationOutcome>,
    /// Confiscated.
    pub confiscated: bool,
    /// Detained on the rights holder's application (Regulations on Customs Protection
    /// of IP Rights Art. 15); `false`: held ex officio (Art. 16).
    pub on_application: bool,
    /// When customs first notified the rights holder (RightsHolderNotified).
    pub notified_at: Option<OffsetDateTime>,
    /// Whether the rights holder applied for the detention of goods held ex officio
    /// (RightsHolderApplied).
    pub applied: bool,
}

impl Detention {
    /// Whether the goods are still detained (neither released nor confiscated).
    pub fn is_active(&self) -> bool {
        !self.released && !self.confiscated
    }
}

/// A court hearing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hearing {
    /// Whether it took place.
    pub held: bool,
}

/// The court's judgment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Judgment {
    /// Judgment number.
    pub number: String,
    /// When it was issued (starts the appeal period).
    pub issued_at: OffsetDateTime,
    /// Whether an appeal was filed.
    pub appealed: bool,
    /// Whether it became effective.
    pub effective: bool,
}

/// An agency's local case number linked to the case.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Reference {
    /// The agency.
    pub agency: Agency,
    /// The office that linked it.
    pub office: OfficeId,
    /// The number.
    pub number: String,
}

/// Metadata of one recorded event, kept for visibility decisions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventMeta {
    /// The recording office.
    pub office: OfficeId,
    /// Visibility as recorded, or as last changed by VisibilityChanged.
    pub visibility: Visibility,
    /// The content key of the event, when it is sealed, wrapped for the readers later
    /// VisibilityChanged events widened it to (in case order); empty otherwise.
    pub widened_keys: Vec<WrappedKey>,
}

/// Which of a hand-off's two clocks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum HandoffClockKind {
    /// The receiving service must issue its automatic receipt.
    Receipt,
    /// The receiving agency must give the decision the law asks for.
    Decision,
}

/// What answered a clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum ClockAnswerKind {
    /// The automatic receipt (HandoffAcknowledged).
    Acknowledged,
    /// HandoffAccepted: answers the receipt, and the decision only of hand-offs whose
    /// answer is taking them (a judgment notice; assistance asked of an agency other
    /// than the IP center).
    Accepted,
    /// HandoffDeclined: the receiver refused the hand-off, so no decision can follow.
    Declined,
    /// InvestigationFiled.
    InvestigationFiled,
    /// InvestigationDeclined.
    InvestigationDeclined,
    /// ArrestApproved.
    ArrestApproved,
    /// ArrestDenied.
    ArrestDenied,
    /// IndictmentFiled.
    IndictmentFiled,
    /// NonProsecutionDecided.
    NonProsecutionDecided,
    /// The procuratorate returned the case for supplementary investigation (a
    /// SupplementaryInvestigation hand-off).
    ReturnedForSupplementaryInvestigation,
    /// The police transferred the case for prosecution again after a supplementary
    /// investigation (a new ProsecutionTransfer hand-off).
    TransferredAgain,
    /// CaseDocketed.
    CaseDocketed,
    /// InfringementAssessed.
    InfringementAssessed,
    /// NonFilingExplained.
    NonFilingExplained,
    /// RightsHolderApplied.
    RightsHolderApplied,
    /// DetentionReleased.
    DetentionReleased,
    /// InfringementDetermined.
    InfringementDetermined,
    /// GoodsConfiscated.
    GoodsConfiscated,
    /// The court's assistance notice to customs (a COURT_ASSISTANCE_NOTICE hand-off).
    CourtAssistanceNotice,
    /// The police asked the procuratorate to approve an arrest (an
    /// ARREST_APPROVAL_REQUEST hand-off).
    ArrestRequested,
    /// The police transferred the case for prosecution (a PROSECUTION_TRANSFER
    /// hand-off): the custody of the investigation ends.
    ProsecutionTransferred,
}

/// When and by what a clock was answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClockAnswer {
    /// The answering event.
    pub by: ClockAnswerKind,
    /// Its version in the case.
    pub version: u64,
    /// Its `occurred_at`.
    pub at: OffsetDateTime,
}

/// The legal clocks of one hand-off, as folded: when they started and what answered
/// them. Due times are counted by [`CaseState::open_clocks`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HandoffClocks {
    /// The hand-off.
    pub handoff_id: String,
    /// Its kind, which names its decision clock ([`ClockName::decision_of`]).
    pub kind: HandoffKind,
    /// The receiving agency.
    pub to_agency: Agency,
    /// The `occurred_at` of the HandoffRequested event: both clocks start from the act,
    /// not from when it was recorded.
    pub started_at: OffsetDateTime,
    /// Version of the HandoffRequested event (orders "the oldest open hand-off").
    pub requested_version: u64,
    /// What answered the receipt clock, once answered.
    pub receipt: Option<ClockAnswer>,
    /// What answered the decision clock, once answered.
    pub decision: Option<ClockAnswer>,
    /// The extensions and suspensions of the decision clock.
    pub adjust: ClockAdjust,
    /// The due times the recording service recorded in the HandoffRequested event
    /// (none for events recorded before due times were recorded).
    pub recorded: RecordedDues,
}

/// The due times a HandoffRequested event recorded for its two clocks.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RecordedDues {
    /// The receipt clock's.
    pub receipt: Option<RecordedDueTime>,
    /// The decision clock's.
    pub decision: Option<RecordedDueTime>,
}

/// One extension of a decision clock (ClockExtended).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Extension {
    /// Version of the ClockExtended event.
    pub version: u64,
    /// The due time the extension gave when it was granted (`new_due_at`), when it was
    /// recorded: no later than the rules allow, shorter when the approving office
    /// granted less.
    pub new_due_at: Option<OffsetDateTime>,
    /// How many suspensions had ended before it: the time suspended after it moves
    /// `new_due_at` on.
    pub suspensions_before: usize,
}

/// A time a decision clock stood still (ClockSuspended, then ClockResumed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Suspension {
    /// The `occurred_at` of the suspension.
    pub from: OffsetDateTime,
    /// The `occurred_at` of the resumption.
    pub to: OffsetDateTime,
}

/// What extended or stopped a decision clock, as folded.
///
/// The time a clock stood still is counted the way the clock counts, and the clock's
/// start moves later by it: for clocks in days, working days or months the whole
/// calendar days (CST) from the day of suspension to the day of resumption (suspended
/// on 5 November, resumed on 8 November: 3 days; the same day: none), so the period
/// still ends at 24:00 and rolls over as it would; for clocks in hours the elapsed time
/// rounded up to full hours; for seconds the exact time.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ClockAdjust {
    /// The extensions granted, in order.
    pub extensions: Vec<Extension>,
    /// The suspensions ended by a resumption, in order.
    pub suspensions: Vec<Suspension>,
    /// When the clock was suspended, while it is.
    pub suspended_since: Option<OffsetDateTime>,
}

/// How much later a clock counted in `unit` ends for standing still from `from` to `to`.
pub fn suspension_shift(unit: Unit, from: OffsetDateTime, to: OffsetDateTime) -> time::Duration {
    if to <= from {
        return time::Duration::ZERO;
    }
    match unit {
        Unit::Days | Unit::WorkingDays | Unit::Months => {
            time::Duration::days((legal_date(to) - legal_date(from)).whole_days())
        }
        Unit::Hours => {
            let secs = (to - from).whole_seconds();
            time::Duration::hours((secs + 3599) / 3600)
        }
        Unit::Seconds => to - from,
    }
}

impl ClockAdjust {
    /// The suspended time counted so far, for a clock in `unit` (a suspension still
    /// running is not counted until it ends).
    pub fn shift(&self, unit: Unit) -> time::Duration {
        self.shift_since(unit, 0)
    }

    /// The suspended time of the suspensions from the `first`th on.
    fn shift_since(&self, unit: Unit, first: usize) -> time::Duration {
        self.suspensions
            .iter()
            .skip(first)
            .map(|s| suspension_shift(unit, s.from, s.to))
            .sum()
    }

    /// When the clock that started at `started_at` falls due under `rule`: the period
    /// counted from the start moved by the suspended time, with every extension granted,
    /// and no later than the last extension's own `new_due_at` (moved by the time
    /// suspended after it).
    ///
    /// # Errors
    /// As [`ClockRule::due`].
    pub fn due(
        &self,
        rule: &ClockRule,
        started_at: OffsetDateTime,
        calendar: &Calendar,
    ) -> Result<OffsetDateTime, CalendarError> {
        let shift = self.shift(rule.unit);
        let full = rule.due_after(started_at + shift, self.extensions.len(), calendar)?;
        Ok(
            match self
                .extensions
                .last()
                .and_then(|e| Some((e.new_due_at?, e.suspensions_before)))
            {
                Some((granted, before)) => full.min(granted + self.shift_since(rule.unit, before)),
                None => full,
            },
        )
    }
}

impl HandoffClocks {
    /// The clock still running: the receipt clock while unanswered (it always falls due
    /// first), then the decision clock; `None` once both are answered.
    pub fn open(&self) -> Option<HandoffClockKind> {
        if self.receipt.is_none() {
            Some(HandoffClockKind::Receipt)
        } else if self.decision.is_none() {
            Some(HandoffClockKind::Decision)
        } else {
            None
        }
    }
}

/// A hand-off's running clock with its due time and legal basis.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenClock {
    /// The hand-off.
    pub handoff_id: String,
    /// Its kind.
    pub kind: HandoffKind,
    /// The receiving agency.
    pub to_agency: Agency,
    /// Which of its clocks is running.
    pub clock: HandoffClockKind,
    /// The rule counted.
    pub rule: ClockName,
    /// When the clock started (the triggering act's `occurred_at`).
    pub started_at: OffsetDateTime,
    /// When it falls due, or why the calendar cannot say (a year without a schedule).
    pub due_at: Result<OffsetDateTime, CalendarError>,
    /// The rule's legal basis.
    pub basis: String,
    /// How many of the rule's extensions were granted.
    pub extensions: usize,
    /// How many the rule allows (the cap is reached when both are equal).
    pub extensions_allowed: usize,
    /// When the clock was suspended, while it is; `due_at` is then the due time as of
    /// the suspension, and moves on resumption.
    pub suspended_since: Option<OffsetDateTime>,
    /// The digest of the rules the recording service counted the due time with, when
    /// the triggering event recorded it (`due_at` is then the recorded due time, until
    /// an extension or a suspension changes the clock).
    pub rules_digest: Option<String>,
}

impl OpenClock {
    /// Whether the due time passed at `now`. A due time the calendar cannot count is
    /// not overdue; callers show its error instead. A suspended clock is never overdue.
    pub fn is_overdue(&self, now: OffsetDateTime) -> bool {
        self.suspended_since.is_none() && self.due_at.as_ref().is_ok_and(|due| now > *due)
    }
}

/// A legal clock of the case that runs on something other than a hand-off: a customs
/// detention's, or a suspect's (`docs/DEADLINES.md`). Keyed in the state by its rule and
/// subject.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaseClock {
    /// The rule counted.
    pub rule: ClockName,
    /// What it runs on: the detention id, or the suspect's party id.
    pub subject: String,
    /// The agency whose act answers it.
    pub agency: Agency,
    /// The `occurred_at` of the act that started it.
    pub started_at: OffsetDateTime,
    /// Version of that event.
    pub started_version: u64,
    /// What answered it, once answered.
    pub answer: Option<ClockAnswer>,
    /// The due time the starting event recorded for it, if it recorded one.
    pub recorded: Option<RecordedDueTime>,
    /// Its extensions (ClockExtended naming the subject); case clocks are not
    /// suspended.
    pub adjust: ClockAdjust,
}

/// A case clock still running, with its due time and legal basis.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenCaseClock {
    /// The rule counted.
    pub rule: ClockName,
    /// What it runs on: the detention id, or the suspect's party id.
    pub subject: String,
    /// The agency whose act answers it.
    pub agency: Agency,
    /// When it started.
    pub started_at: OffsetDateTime,
    /// Version of the event that started it (readers show the clock only to whoever
    /// may read that event).
    pub started_version: u64,
    /// When it falls due: the recorded due time when the starting event recorded one,
    /// else counted by the caller's rules; or why the calendar cannot say.
    pub due_at: Result<OffsetDateTime, CalendarError>,
    /// The rule's legal basis.
    pub basis: String,
    /// The digest of the rules the recording service counted the due time with, when
    /// the starting event recorded it.
    pub rules_digest: Option<String>,
    /// How many of the rule's extensions were granted (`due_at` includes them).
    pub extensions: usize,
    /// How many the rule allows.
    pub extensions_allowed: usize,
}

impl OpenCaseClock {
    /// Whether the due time passed at `now` (a due time the calendar cannot count is
    /// not overdue).
    pub fn is_overdue(&self, now: OffsetDateTime) -> bool {
        self.due_at.as_ref().is_ok_and(|due| now > *due)
    }
}

/// The procuratorate's latest decision on a prosecution transfer, which decides whether
/// the case may be sent to court.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProsecutionDecision {
    /// The prosecution transfer decided on.
    pub handoff_id: String,
    /// The decision: an indictment, a non-prosecution or a return for supplementary
    /// investigation.
    pub by: ClockAnswerKind,
    /// Version of the deciding event.
    pub version: u64,
}

/// An open legal hold of a case (LegalHoldPlaced, not lifted): while one is open, the
/// erasure of personal data in the case is refused (PIPL Art. 47(2)).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LegalHold {
    /// The hold's id, unique in the case.
    pub hold_id: String,
    /// The office that placed it; only its agency lifts it.
    pub office: OfficeId,
    /// When it was placed (the event's `occurred_at`).
    pub placed_at: OffsetDateTime,
    /// The legal basis, as recorded (readable, never sealed).
    pub legal_basis: String,
    /// Version of the LegalHoldPlaced event.
    pub placed_version: u64,
}

/// A legal hold that was lifted: its id is never used again in the case.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LiftedHold {
    /// The hold as it was placed.
    pub hold: LegalHold,
    /// The office that lifted it.
    pub office: OfficeId,
    /// When it was lifted.
    pub lifted_at: OffsetDateTime,
    /// Version of the LegalHoldLifted event.
    pub lifted_version: u64,
}

/// The folded state of one case.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CaseState {
    /// Number of events folded (the case version); 0 for a case that does not exist.
    pub version: u64,
    /// Set by CaseOpened.
    pub opened: Option<Opened>,
    /// Tracks by agency.
    pub tracks: BTreeMap<Agency, Track>,
    /// Parties by party id.
    pub parties: BTreeMap<String, Party>,
    /// Evidence ids recorded.
    pub evidence: BTreeSet<String>,
    /// Linked agency case numbers.
    pub references: BTreeSet<Reference>,
    /// Hand-offs by id.
    pub handoffs: BTreeMap<String, Handoff>,
    /// Customs detentions by id.
    pub detentions: BTreeMap<String, Detention>,
    /// IP-center assessment ids.
    pub assessments: BTreeSet<String>,
    /// Whether mediation concluded, and if so whether settled.
    pub mediation: Option<bool>,
    /// Pre-examinations by id, `true` once completed.
    pub pre_examinations: BTreeMap<String, bool>,
    /// Police investigation: `Some(true)` filed, `Some(false)` declined.
    pub investigation_filed: Option<bool>,
    /// The police's latest decision not to file (InvestigationDeclined): its version and
    /// `occurred_at`, from which the referring organ's window for reconsideration runs.
    pub declined: Option<(u64, OffsetDateTime)>,
    /// Whether the police concluded the investigation.
    pub investigation_concluded: bool,
    /// Party ids of detained suspects.
    pub detained_suspects: BTreeSet<String>,
    /// Court case number once docketed.
    pub docketed: Option<String>,
    /// Number of preliminary injunctions issued.
    pub injunctions: u32,
    /// Hearings by id.
    pub hearings: BTreeMap<String, Hearing>,
    /// The judgment, once issued.
    pub judgment: Option<Judgment>,
    /// Number of events whose payload kind this build does not know.
    pub unknown_events: u64,
    /// Per-event metadata, index = version - 1.
    pub events: Vec<EventMeta>,
    /// The legal clocks of every hand-off, by hand-off id.
    pub clocks: BTreeMap<String, HandoffClocks>,
    /// The case's clocks that run on a detention, by rule and subject.
    pub case_clocks: BTreeMap<(ClockName, String), CaseClock>,
    /// The latest decision on a prosecution transfer, if any.
    pub prosecution_decision: Option<ProsecutionDecision>,
    /// The open legal holds, by hold id.
    pub legal_holds: BTreeMap<String, LegalHold>,
    /// The legal holds lifted, by hold id (their ids are never reused).
    pub lifted_holds: BTreeMap<String, LiftedHold>,
}

/// The outcome of a determination: as recorded, or from `infringing` for one recorded
/// before outcomes were.
pub fn outcome_of(p: &InfringementDetermined) -> DeterminationOutcome {
    match p.outcome() {
        DeterminationOutcome::Unspecified if p.infringing => DeterminationOutcome::Infringing,
        DeterminationOutcome::Unspecified => DeterminationOutcome::NotInfringing,
        outcome => outcome,
    }
}

fn office_or_none(id: &str) -> Option<OfficeId> {
    if id.is_empty() {
        None
    } else {
        OfficeId::new(id).ok()
    }
}

fn normalise(visibility: Option<&Visibility>) -> Visibility {
    match visibility {
        Some(v) if v.kind != VisibilityKind::Unspecified as i32 => v.clone(),
        _ => Visibility {
            kind: VisibilityKind::Participants as i32,
            agencies: Vec::new(),
        },
    }
}

impl CaseState {
    /// The content key of the sealed event at `version` as later VisibilityChanged
    /// events wrapped it for the readers they added; empty when none did.
    pub fn widened_keys(&self, version: u64) -> &[WrappedKey] {
        usize::try_from(version)
            .ok()
            .and_then(|v| v.checked_sub(1))
            .and_then(|i| self.events.get(i))
            .map_or(&[], |meta| meta.widened_keys.as_slice())
    }

    /// Whether a legal hold of the case is open: erasing personal data of the case
    /// must be refused until every hold is lifted.
    pub fn has_open_hold(&self) -> bool {
        !self.legal_holds.is_empty()
    }

    /// Whether the event at `version` placed or lifted a legal hold (such an event is
    /// shown to every participant and its visibility is never narrowed).
    pub fn is_legal_hold_event(&self, version: u64) -> bool {
        self.legal_holds
            .values()
            .any(|h| h.placed_version == version)
            || self
                .lifted_holds
                .values()
                .any(|l| l.hold.placed_version == version || l.lifted_version == version)
    }

    /// Folds a whole history from scratch.
    pub fn fold<'a>(events: impl IntoIterator<Item = RecordedEvent<'a>>) -> Self {
        let mut state = Self::default();
        for event in events {
            state.apply(&event);
        }
        state
    }

    /// Whether the case has been opened.
    pub fn exists(&self) -> bool {
        self.opened.is_some()
    }

    /// The agency's track, if it has one.
    pub fn track(&self, agency: Agency) -> Option<&Track> {
        self.tracks.get(&agency)
    }

    /// Whether the agency has an active track.
    pub fn has_active_track(&self, agency: Agency) -> bool {
        self.track(agency)
            .is_some_and(|t| t.status == TrackStatus::Active)
    }

    /// Agencies that take part in the case: those with a track (open or closed) and
    /// those addressed by any hand-off.
    pub fn participants(&self) -> BTreeSet<Agency> {
        let mut out: BTreeSet<Agency> = self.tracks.keys().copied().collect();
        out.extend(self.handoffs.values().map(|h| h.to_agency));
        out
    }

    /// Whether `agency` takes part in the case at all.
    pub fn involves(&self, agency: Agency) -> bool {
        self.tracks.contains_key(&agency) || self.handoffs.values().any(|h| h.to_agency == agency)
    }

    /// Hand-offs still open whose due time passed at `now`.
    pub fn overdue_handoffs(&self, now: OffsetDateTime) -> impl Iterator<Item = &Handoff> {
        self.handoffs.values().filter(move |h| h.is_overdue(now))
    }

    /// Every hand-off's running clock, with its due time counted by `rules` on
    /// `calendar` and its legal basis, in hand-off id order. Hand-offs whose clocks are
    /// all answered are left out.
    pub fn open_clocks(&self, rules: &DeadlineRules, calendar: &Calendar) -> Vec<OpenClock> {
        self.clocks
            .values()
            .filter_map(|c| Self::open_clock_of(c, rules, calendar))
            .collect()
    }

    /// The running clock of one hand-off, if it has one.
    pub fn open_clock(
        &self,
        handoff_id: &str,
        rules: &DeadlineRules,
        calendar: &Calendar,
    ) -> Option<OpenClock> {
        Self::open_clock_of(self.clocks.get(handoff_id)?, rules, calendar)
    }

    /// The running clocks whose due time passed at `now`.
    pub fn overdue_clocks(
        &self,
        rules: &DeadlineRules,
        calendar: &Calendar,
        now: OffsetDateTime,
    ) -> Vec<OpenClock> {
        let mut open = self.open_clocks(rules, calendar);
        open.retain(|c| c.is_overdue(now));
        open
    }

    fn open_clock_of(
        clocks: &HandoffClocks,
        rules: &DeadlineRules,
        calendar: &Calendar,
    ) -> Option<OpenClock> {
        let clock = clocks.open()?;
        let name = match clock {
            HandoffClockKind::Receipt => ClockName::Receipt,
            HandoffClockKind::Decision => ClockName::decision_of(clocks.kind)?,
        };
        let rule = rules.clock(name);
        // Only decision clocks are extended or suspended.
        let none = ClockAdjust::default();
        let (adjust, recorded) = match clock {
            HandoffClockKind::Receipt => (&none, clocks.recorded.receipt.as_ref()),
            HandoffClockKind::Decision => (&clocks.adjust, clocks.recorded.decision.as_ref()),
        };
        Some(OpenClock {
            handoff_id: clocks.handoff_id.clone(),
            kind: clocks.kind,
            to_agency: clocks.to_agency,
            clock,
            rule: name,
            started_at: clocks.started_at,
            due_at: match recorded.and_then(|r| r.due_at) {
                // The recording service's count is the authority until an extension
                // or a suspension changes the clock; those are counted here.
                Some(due) if adjust.extensions.is_empty() && adjust.suspensions.is_empty() => {
                    Ok(due)
                }
                _ => adjust.due(rule, clocks.started_at, calendar),
            },
            rules_digest: recorded.map(|r| r.rules_digest.to_string()),
            basis: rule.basis.clone(),
            extensions: adjust.extensions.len(),
            extensions_allowed: rule.extensions.len(),
            suspended_since: adjust.suspended_since,
        })
    }

    /// Every running case clock (those not tied to a hand-off), with its due time and
    /// legal basis, in rule then subject order.
    pub fn open_case_clocks(
        &self,
        rules: &DeadlineRules,
        calendar: &Calendar,
    ) -> Vec<OpenCaseClock> {
        self.case_clocks
            .values()
            .filter(|c| c.answer.is_none())
            .map(|c| {
                let rule = rules.clock(c.rule);
                OpenCaseClock {
                    rule: c.rule,
                    subject: c.subject.clone(),
                    agency: c.agency,
                    started_at: c.started_at,
                    started_version: c.started_version,
                    // The recorded due time is the authority until an extension.
                    due_at: match c.recorded.as_ref().and_then(|r| r.due_at) {
                        Some(due) if c.adjust.extensions.is_empty() => Ok(due),
                        _ => c.adjust.due(rule, c.started_at, calendar),
                    },
                    basis: rule.basis.clone(),
                    rules_digest: c.recorded.as_ref().map(|r| r.rules_digest.to_string()),
                    extensions: c.adjust.extensions.len(),
                    extensions_allowed: rule.extensions.len(),
                }
            })
            .collect()
    }

    /// Folds one event. Events must come in version order; an event whose version is
    /// not `self.version + 1` is ignored (the chain check upstream rejects such events).
    pub fn apply(&mut self, event: &RecordedEvent<'_>) {
        if event.version != self.version + 1 {
            return;
        }
        self.version = event.version;
        self.events.push(EventMeta {
            office: event.office.clone(),
            visibility: normalise(event.visibility),
            widened_keys: Vec::new(),
        });
        let agency = event.office.agency();
        let at = event.occurred_at;
        let Some(kind) = event.payload else {
            self.unknown_events += 1;
            return;
        };
        self.fold_clocks(event, kind);
        match kind {
            Kind::CaseOpened(p) => {
                self.opened = Some(Opened {
                    case_type: p.case_type(),
                    title: p.title.clone(),
                    office: event.office.clone(),
                    at,
                });
                self.open_track(agency, event.office, at);
                for party in &p.parties {
                    self.parties.insert(party.party_id.clone(), party.clone());
                }
                if !p.local_case_number.is_empty() {
                    self.references.insert(Reference {
                        agency,
                        office: event.office.clone(),
                        number: p.local_case_number.clone(),
                    });
                }
            }
            Kind::PartyAdded(p) => {
                if let Some(party) = &p.party {
                    self.parties.insert(party.party_id.clone(), party.clone());
                }
            }
            Kind::EvidenceRecorded(p) => {
                self.evidence.insert(p.evidence_id.clone());
            }
            // Clock events move only the clocks (`fold_clocks`).
            Kind::NoteAdded(_)
            | Kind::ClockExtended(_)
            | Kind::ClockSuspended(_)
            | Kind::ClockResumed(_) => {}
            Kind::ReferenceLinked(p) => {
                self.references.insert(Reference {
                    agency: p.agency(),
                    office: event.office.clone(),
                    number: p.local_case_number.clone(),
                });
            }
            Kind::HandoffRequested(p) => {
                self.handoffs.insert(
                    p.handoff_id.clone(),
                    Handoff {
                        handoff_id: p.handoff_id.clone(),
                        kind: p.kind(),
                        from_office: event.office.clone(),
                        to_agency: p.to_agency(),
                        to_office: office_or_none(&p.to_office_id),
                        status: HandoffStatus::Requested,
                        requested_at: at,
                        due_at: p.due_at.as_ref().and_then(datetime_from),
                        requested_version: event.version,
                        requested_event_id: event.event_id.clone(),
                        answered: false,
                    },
                );
            }
            Kind::HandoffAcknowledged(p) => {
                self.move_handoff(&p.handoff_id, HandoffStatus::Acknowledged);
            }
            Kind::HandoffAccepted(p) => {
                self.move_handoff(&p.handoff_id, HandoffStatus::Accepted);
                self.open_track(agency, event.office, at);
                if !p.local_case_number.is_empty() {
                    self.references.insert(Reference {
                        agency,
                        office: event.office.clone(),
                        number: p.local_case_number.clone(),
                    });
                }
            }
            Kind::HandoffDeclined(p) => {
                self.move_handoff(&p.handoff_id, HandoffStatus::Declined);
            }
            Kind::TrackClosed(_) => {
                if let Some(track) = self.tracks.get_mut(&agency) {
                    track.status = TrackStatus::Closed;
                }
            }
            Kind::VisibilityChanged(p) => {
                let index = usize::try_from(p.target_version).unwrap_or(usize::MAX);
                if let Some(meta) = index.checked_sub(1).and_then(|i| self.events.get_mut(i)) {
                    meta.visibility = normalise(p.visibility.as_ref());
                    meta.widened_keys.extend(p.wrapped_keys.iter().cloned());
                }
            }
            Kind::LegalHoldPlaced(p) => {
                if !self.legal_holds.contains_key(&p.hold_id)
                    && !self.lifted_holds.contains_key(&p.hold_id)
                {
                    self.legal_holds.insert(
                        p.hold_id.clone(),
                        LegalHold {
                            hold_id: p.hold_id.clone(),
                            office: event.office.clone(),
                            placed_at: at,
                            legal_basis: p.legal_basis.clone(),
                            placed_version: event.version,
                        },
                    );
                }
            }
            Kind::LegalHoldLifted(p) => {
                if let Some(hold) = self.legal_holds.remove(&p.hold_id) {
                    self.lifted_holds.insert(
                        p.hold_id.clone(),
                        LiftedHold {
                            hold,
                            office: event.office.clone(),
                            lifted_at: at,
                            lifted_version: event.version,
                        },
                    );
                }
            }
            Kind::GoodsDetained(p) => {
                self.detentions
                    .entry(p.detention_id.clone())
                    .or_insert_with(|| Detention {
                        on_application: p.on_rights_holder_application,
                        ..Detention::default()
                    });
            }
            Kind::DetentionReleased(p) => {
                if let Some(d) = self.detentions.get_mut(&p.detention_id) {
                    d.released = true;
                }
            }
            Kind::RightsHolderNotified(p) => {
                if let Some(d) = self.detentions.get_mut(&p.detention_id) {
                    d.notified_at.get_or_insert(at);
                }
            }
            Kind::RightsHolderApplied(p) => {
                if let Some(d) = self.detentions.get_mut(&p.detention_id) {
                    d.applied = true;
                }
            }
            Kind::InfringementDetermined(p) => {
                if let Some(d) = self.detentions.get_mut(&p.detention_id) {
                    let outcome = outcome_of(p);
                    d.infringing = Some(outcome == DeterminationOutcome::Infringing);
                    d.outcome = Some(outcome);
                }
            }
            Kind::GoodsConfiscated(p) => {
                if let Some(d) = self.detentions.get_mut(&p.detention_id) {
                    d.confiscated = true;
                }
            }
            Kind::InfringementAssessed(p) => {
                self.assessments.insert(p.assessment_id.clone());
            }
            Kind::MediationConcluded(p) => self.mediation = Some(p.settled),
            Kind::PreExaminationRequested(p) => {
                self.pre_examinations
                    .insert(p.pre_examination_id.clone(), false);
            }
            Kind::PreExaminationCompleted(p) => {
                self.pre_examinations
                    .insert(p.pre_examination_id.clone(), true);
            }
            Kind::InvestigationFiled(_) => {
                self.investigation_filed = Some(true);
            }
            Kind::InvestigationDeclined(_) => {
                self.investigation_filed = Some(false);
                self.declined = Some((event.version, at));
            }
            Kind::NonFilingExplained(p) => self.answer(&p.handoff_id),
            Kind::SuspectDetained(p) => {
                self.detained_suspects.insert(p.party_id.clone());
            }
            Kind::InvestigationConcluded(_) => self.investigation_concluded = true,
            Kind::ArrestApproved(p) => self.answer(&p.handoff_id),
            Kind::ArrestDenied(p) => self.answer(&p.handoff_id),
            Kind::IndictmentFiled(p) => self.answer(&p.handoff_id),
            Kind::NonProsecutionDecided(p) => self.answer(&p.handoff_id),
            Kind::CaseDocketed(p) => {
                self.docketed = Some(p.court_case_number.clone());
            }
            Kind::PreliminaryInjunctionIssued(_) => self.injunctions += 1,
            Kind::HearingScheduled(p) => {
                self.hearings
                    .insert(p.hearing_id.clone(), Hearing { held: false });
            }
            Kind::HearingHeld(p) => {
                if let Some(h) = self.hearings.get_mut(&p.hearing_id) {
                    h.held = true;
                }
            }
            Kind::JudgmentIssued(p) => {
                self.judgment = Some(Judgment {
                    number: p.judgment_number.clone(),
                    issued_at: at,
                    appealed: false,
                    effective: false,
                });
            }
            Kind::AppealFiled(_) => {
                if let Some(j) = &mut self.judgment {
                    j.appealed = true;
                }
            }
            Kind::JudgmentEffective(_) => {
                if let Some(j) = &mut self.judgment {
                    j.effective = true;
                }
            }
        }
    }

    /// Folds what the legal clocks need from one event, whatever its version, for
    /// readers that see only a case's hand-off, decision and detention events (the
    /// agency inbox, the monitor): only `clocks`, `case_clocks`, `prosecution_decision`
    /// and `version` (the last version folded) change. Events must come in version order, gaps allowed (the events that move no
    /// clock); an event at or below the version folded is a replay and changes nothing,
    /// and so does a hand-off id already known. [`CaseState::apply`] folds the same.
    /// Use a state folded this way for its clocks only.
    pub fn apply_clocks(&mut self, event: &RecordedEvent<'_>) {
        if event.version <= self.version {
            return;
        }
        self.version = event.version;
        let Some(kind) = event.payload else {
            return;
        };
        if let Kind::HandoffRequested(p) = kind
            && self.clocks.contains_key(&p.handoff_id)
        {
            return;
        }
        self.fold_clocks(event, kind);
    }

    /// Whether events of `kind` can start or answer a legal clock (what
    /// [`CaseState::apply_clocks`] needs to see).
    pub fn moves_clocks(kind: &Kind) -> bool {
        matches!(
            kind,
            Kind::HandoffRequested(_)
                | Kind::HandoffAcknowledged(_)
                | Kind::HandoffAccepted(_)
                | Kind::HandoffDeclined(_)
                | Kind::InfringementAssessed(_)
                | Kind::InvestigationFiled(_)
                | Kind::InvestigationDeclined(_)
                | Kind::NonFilingExplained(_)
                | Kind::ArrestApproved(_)
                | Kind::ArrestDenied(_)
                | Kind::IndictmentFiled(_)
                | Kind::NonProsecutionDecided(_)
                | Kind::CaseDocketed(_)
                | Kind::ClockExtended(_)
                | Kind::ClockSuspended(_)
                | Kind::ClockResumed(_)
                | Kind::SuspectDetained(_)
                | Kind::GoodsDetained(_)
                | Kind::RightsHolderNotified(_)
                | Kind::RightsHolderApplied(_)
                | Kind::InfringementDetermined(_)
                | Kind::DetentionReleased(_)
                | Kind::GoodsConfiscated(_)
        )
    }

    /// The legal clocks' part of folding one event.
    fn fold_clocks(&mut self, event: &RecordedEvent<'_>, kind: &Kind) {
        let agency = event.office.agency();
        let at = event.occurred_at;
        match kind {
            Kind::HandoffRequested(p) => {
                let answer = |by| ClockAnswer {
                    by,
                    version: event.version,
                    at,
                };
                // A return for supplementary investigation answers the review of the
                // oldest open prosecution transfer; the transfer that follows the
                // supplementary investigation answers the oldest open return.
                match (p.kind(), agency) {
                    (HandoffKind::SupplementaryInvestigation, Agency::Procuratorate) => {
                        let by = ClockAnswerKind::ReturnedForSupplementaryInvestigation;
                        if let Some(id) =
                            self.oldest_open_decision(HandoffKind::ProsecutionTransfer, agency)
                        {
                            self.prosecution_decision = Some(ProsecutionDecision {
                                handoff_id: id.clone(),
                                by,
                                version: event.version,
                            });
                            self.answer_decision(&id, answer(by));
                        }
                    }
                    // The court's assistance notice keeps every running detention of the
                    // case from release at the end of its period.
                    (HandoffKind::CourtAssistanceNotice, Agency::Court) => {
                        let by = answer(ClockAnswerKind::CourtAssistanceNotice);
                        self.answer_case_clocks(ClockName::ReleaseOnApplication, by);
                        self.answer_case_clocks(ClockName::ReleaseExOfficio, by);
                    }
                    // Asking for arrest approval answers the request clock of every
                    // detained suspect (the request names the case, not a suspect).
                    (HandoffKind::ArrestApprovalRequest, Agency::PublicSecurity) => {
                        let by = answer(ClockAnswerKind::ArrestRequested);
                        self.answer_case_clocks(ClockName::ArrestRequest, by);
                    }
                    (HandoffKind::ProsecutionTransfer, Agency::PublicSecurity) => {
                        // The custody of the investigation ends with the transfer.
                        let by = answer(ClockAnswerKind::ProsecutionTransferred);
                        self.answer_case_clocks(ClockName::Custody, by);
                        if let Some(id) = self
                            .oldest_open_decision(HandoffKind::SupplementaryInvestigation, agency)
                        {
                            self.answer_decision(&id, answer(ClockAnswerKind::TransferredAgain));
                        }
                    }
                    _ => {}
                }
                self.clocks.insert(
                    p.handoff_id.clone(),
                    HandoffClocks {
                        handoff_id: p.handoff_id.clone(),
                        kind: p.kind(),
                        to_agency: p.to_agency(),
                        started_at: at,
                        requested_version: event.version,
                        receipt: None,
                        decision: None,
                        adjust: ClockAdjust::default(),
                        recorded: RecordedDues {
                            receipt: recorded_due_of(&p.recorded_dues, ClockName::Receipt),
                            decision: ClockName::decision_of(p.kind())
                                .and_then(|name| recorded_due_of(&p.recorded_dues, name)),
                        },
                    },
                );
            }
            Kind::HandoffAcknowledged(p) => {
                self.answer_receipt(
                    &p.handoff_id,
                    self.answer_of(ClockAnswerKind::Acknowledged, event),
                );
            }
            Kind::HandoffAccepted(p) => {
                let answer = self.answer_of(ClockAnswerKind::Accepted, event);
                self.answer_receipt(&p.handoff_id, answer);
                // Only hand-offs whose answer is taking them stop their decision clock
                // here; for the others accepting starts the work the law times.
                let taken_is_answer = self.clocks.get(&p.handoff_id).is_some_and(|c| {
                    c.kind == HandoffKind::JudgmentNotice
                        || c.kind == HandoffKind::CourtAssistanceNotice
                        || (c.kind == HandoffKind::AssistanceRequest
                            && c.to_agency != Agency::IpCenter)
                });
                if taken_is_answer {
                    self.answer_decision(&p.handoff_id, answer);
                }
            }
            Kind::HandoffDeclined(p) => {
                let answer = self.answer_of(ClockAnswerKind::Declined, event);
                self.answer_decision(&p.handoff_id, answer);
            }
            Kind::InfringementAssessed(p) => {
                let answer = self.answer_of(ClockAnswerKind::InfringementAssessed, event);
                // Assessments recorded without naming the hand-off answer the oldest
                // open request for assistance to the IP center.
                let id = if p.handoff_id.is_empty() {
                    self.oldest_open_decision(HandoffKind::AssistanceRequest, agency)
                } else {
                    Some(p.handoff_id.clone())
                };
                if let Some(id) = id {
                    self.answer_decision_of(&id, &[HandoffKind::AssistanceRequest], answer);
                }
            }
            // The police decide on filing for the whole case: a decision answers every
            // open hand-off to them that asks for it. Filing answers the referrals, a
            // reconsideration, and both steps of the procuratorate's filing supervision;
            // a (second) decision not to file answers the referrals and a
            // reconsideration (the rules refuse it while a notice to file is open).
            Kind::InvestigationFiled(_) => {
                let answer = self.answer_of(ClockAnswerKind::InvestigationFiled, event);
                for kind in [
                    HandoffKind::SuspectedCrimeReferral,
                    HandoffKind::ReconsiderationRequest,
                    HandoffKind::NonFilingExplanationRequest,
                    HandoffKind::FilingNotice,
                ] {
                    self.answer_all_open(kind, agency, answer);
                }
            }
            Kind::InvestigationDeclined(_) => {
                let answer = self.answer_of(ClockAnswerKind::InvestigationDeclined, event);
                for kind in [
                    HandoffKind::SuspectedCrimeReferral,
                    HandoffKind::ReconsiderationRequest,
                ] {
                    self.answer_all_open(kind, agency, answer);
                }
            }
            Kind::NonFilingExplained(p) => {
                let answer = self.answer_of(ClockAnswerKind::NonFilingExplained, event);
                self.answer_decision_of(
                    &p.handoff_id,
                    &[HandoffKind::NonFilingExplanationRequest],
                    answer,
                );
            }
            Kind::ArrestApproved(p) => {
                let answer = self.answer_of(ClockAnswerKind::ArrestApproved, event);
                self.answer_decision_of(
                    &p.handoff_id,
                    &[HandoffKind::ArrestApprovalRequest],
                    answer,
                );
                // The custody after arrest runs for the police, who investigate; the
                // procuratorate approves its extensions.
                self.start_case_clock(
                    ClockName::Custody,
                    (&p.party_id, Agency::PublicSecurity),
                    event,
                    &p.recorded_dues,
                );
            }
            Kind::SuspectDetained(p) => {
                self.start_case_clock(
                    ClockName::ArrestRequest,
                    (&p.party_id, agency),
                    event,
                    &p.recorded_dues,
                );
            }
            Kind::ArrestDenied(p) => {
                let answer = self.answer_of(ClockAnswerKind::ArrestDenied, event);
                self.answer_decision_of(
                    &p.handoff_id,
                    &[HandoffKind::ArrestApprovalRequest],
                    answer,
                );
            }
            Kind::IndictmentFiled(p) => {
                self.decide_prosecution(&p.handoff_id, ClockAnswerKind::IndictmentFiled, event);
            }
            Kind::NonProsecutionDecided(p) => {
                self.decide_prosecution(
                    &p.handoff_id,
                    ClockAnswerKind::NonProsecutionDecided,
                    event,
                );
            }
            Kind::CaseDocketed(_) => {
                let answer = self.answer_of(ClockAnswerKind::CaseDocketed, event);
                self.answer_all_open(HandoffKind::PublicProsecution, agency, answer);
            }
            // The customs clocks run on a detention (docs/DEADLINES.md, customs), from
            // the clock events alone, so that `apply_clocks` folds them too.
            Kind::GoodsDetained(p) if p.on_rights_holder_application => {
                self.start_case_clock(
                    ClockName::ReleaseOnApplication,
                    (&p.detention_id, agency),
                    event,
                    &p.recorded_dues,
                );
            }
            // Only goods held ex officio wait for the rights holder's application: a
            // detention on application started its release clock when it was made.
            // (The rules refuse a notice for a detention released or confiscated.)
            Kind::RightsHolderNotified(p) => {
                let on_application = self
                    .case_clocks
                    .contains_key(&(ClockName::ReleaseOnApplication, p.detention_id.clone()));
                if !on_application {
                    self.start_case_clock(
                        ClockName::RightsHolderApplication,
                        (&p.detention_id, agency),
                        event,
                        &p.recorded_dues,
                    );
                }
            }
            Kind::RightsHolderApplied(p) => {
                let answer = self.answer_of(ClockAnswerKind::RightsHolderApplied, event);
                self.answer_case_clock(ClockName::RightsHolderApplication, &p.detention_id, answer);
                for rule in [ClockName::CustomsInvestigation, ClockName::ReleaseExOfficio] {
                    self.start_case_clock(rule, (&p.detention_id, agency), event, &p.recorded_dues);
                }
            }
            Kind::InfringementDetermined(p) => {
                let answer = self.answer_of(ClockAnswerKind::InfringementDetermined, event);
                self.answer_case_clock(ClockName::CustomsInvestigation, &p.detention_id, answer);
                // Goods found infringing are confiscated, not released.
                if outcome_of(p) == DeterminationOutcome::Infringing {
                    for rule in [ClockName::ReleaseOnApplication, ClockName::ReleaseExOfficio] {
                        self.answer_case_clock(rule, &p.detention_id, answer);
                    }
                }
            }
            Kind::DetentionReleased(p) => {
                let answer = self.answer_of(ClockAnswerKind::DetentionReleased, event);
                self.answer_subject(&p.detention_id, answer);
            }
            Kind::GoodsConfiscated(p) => {
                let answer = self.answer_of(ClockAnswerKind::GoodsConfiscated, event);
                self.answer_subject(&p.detention_id, answer);
            }
            // The rules checked the clock when these were recorded; the fold only keeps
            // them on the hand-off's decision clock while it runs. A clock event whose
            // clock is not that hand-off's decision clock changes nothing.
            Kind::ClockExtended(p) if !p.subject_id.is_empty() => {
                let running = ClockName::from_key(&p.clock)
                    .and_then(|rule| self.case_clocks.get_mut(&(rule, p.subject_id.clone())))
                    .filter(|c| c.answer.is_none());
                if let Some(c) = running {
                    c.adjust.extensions.push(Extension {
                        version: event.version,
                        new_due_at: p.new_due_at.as_ref().and_then(datetime_from),
                        suspensions_before: 0,
                    });
                }
            }
            Kind::ClockExtended(p) => {
                if let Some(c) = self.decision_clock_mut(&p.handoff_id, &p.clock) {
                    let suspensions_before = c.adjust.suspensions.len();
                    c.adjust.extensions.push(Extension {
                        version: event.version,
                        new_due_at: p.new_due_at.as_ref().and_then(datetime_from),
                        suspensions_before,
                    });
                }
            }
            Kind::ClockSuspended(p) => {
                if let Some(c) = self.decision_clock_mut(&p.handoff_id, &p.clock) {
                    c.adjust.suspended_since.get_or_insert(at);
                }
            }
            Kind::ClockResumed(p) => {
                if let Some(c) = self.decision_clock_mut(&p.handoff_id, &p.clock)
                    && let Some(from) = c.adjust.suspended_since.take()
                {
                    c.adjust.suspensions.push(Suspension {
                        from,
                        to: at.max(from),
                    });
                }
            }
            _ => {}
        }
    }

    /// The clocks of `handoff_id` when `clock` names its decision clock and it still runs.
    fn decision_clock_mut(&mut self, handoff_id: &str, clock: &str) -> Option<&mut HandoffClocks> {
        let c = self.clocks.get_mut(handoff_id)?;
        let name = ClockName::decision_of(c.kind)?;
        (name.key() == clock && c.receipt.is_some() && c.decision.is_none()).then_some(c)
    }

    /// Starts the case clock `rule` on `subject` for `agency` at the event, unless it
    /// started already.
    fn start_case_clock(
        &mut self,
        rule: ClockName,
        (subject, agency): (&str, Agency),
        event: &RecordedEvent<'_>,
        recorded: &[RecordedDue],
    ) {
        self.case_clocks
            .entry((rule, subject.to_owned()))
            .or_insert_with(|| CaseClock {
                rule,
                subject: subject.to_owned(),
                agency,
                started_at: event.occurred_at,
                started_version: event.version,
                answer: None,
                recorded: recorded_due_of(recorded, rule),
                adjust: ClockAdjust::default(),
            });
    }

    /// Answers every running case clock `rule`, whatever its subject.
    fn answer_case_clocks(&mut self, rule: ClockName, answer: ClockAnswer) {
        for c in self.case_clocks.values_mut() {
            if c.rule == rule {
                c.answer.get_or_insert(answer);
            }
        }
    }

    /// Answers the case clock `rule` on `subject`, if it runs.
    fn answer_case_clock(&mut self, rule: ClockName, subject: &str, answer: ClockAnswer) {
        if let Some(c) = self.case_clocks.get_mut(&(rule, subject.to_owned())) {
            c.answer.get_or_insert(answer);
        }
    }

    /// Answers every running case clock on `subject`.
    fn answer_subject(&mut self, subject: &str, answer: ClockAnswer) {
        for c in self.case_clocks.values_mut() {
            if c.subject == subject {
                c.answer.get_or_insert(answer);
            }
        }
    }

    fn open_track(&mut self, agency: Agency, office: &OfficeId, at: OffsetDateTime) {
        let track = self.tracks.entry(agency).or_insert_with(|| Track {
            agency,
            office: office.clone(),
            status: TrackStatus::Active,
            opened_at: at,
        });
        if track.status == TrackStatus::Closed {
            track.status = TrackStatus::Active;
            track.office = office.clone();
            track.opened_at = at;
        }
    }

    fn move_handoff(&mut self, handoff_id: &str, to: HandoffStatus) {
        if let Some(h) = self.handoffs.get_mut(handoff_id) {
            // Only forward: a stale or repeated answer never moves a hand-off back.
            if to.rank() > h.status.rank() {
                h.status = to;
            }
        }
    }

    fn answer_of(&self, by: ClockAnswerKind, event: &RecordedEvent<'_>) -> ClockAnswer {
        ClockAnswer {
            by,
            version: event.version,
            at: event.occurred_at,
        }
    }

    fn answer_receipt(&mut self, handoff_id: &str, answer: ClockAnswer) {
        if let Some(c) = self.clocks.get_mut(handoff_id) {
            c.receipt.get_or_insert(answer);
        }
    }

    /// Stops a hand-off's decision clock (and its receipt clock, should the decision
    /// come before any receipt); a clock answered already keeps its first answer.
    fn answer_decision(&mut self, handoff_id: &str, answer: ClockAnswer) {
        if let Some(c) = self.clocks.get_mut(handoff_id) {
            c.receipt.get_or_insert(answer);
            c.decision.get_or_insert(answer);
        }
    }

    /// As `answer_decision`, for a hand-off named by the answering event, which only
    /// answers hand-offs of `kinds`.
    fn answer_decision_of(&mut self, handoff_id: &str, kinds: &[HandoffKind], answer: ClockAnswer) {
        if self
            .clocks
            .get(handoff_id)
            .is_some_and(|c| kinds.contains(&c.kind))
        {
            self.answer_decision(handoff_id, answer);
        }
    }

    /// The oldest hand-off of `kind` to `agency` whose decision clock still runs: the
    /// one an answer that does not name its hand-off answers.
    fn oldest_open_decision(&self, kind: HandoffKind, agency: Agency) -> Option<String> {
        self.clocks
            .values()
            .filter(|c| c.kind == kind && c.to_agency == agency && c.decision.is_none())
            .min_by_key(|c| c.requested_version)
            .map(|c| c.handoff_id.clone())
    }

    /// Answers every open decision clock of `kind` to `agency`: for the decisions taken
    /// once per case (filing, docketing), which answer every hand-off asking for them.
    fn answer_all_open(&mut self, kind: HandoffKind, agency: Agency, answer: ClockAnswer) {
        for c in self.clocks.values_mut() {
            if c.kind == kind && c.to_agency == agency && c.decision.is_none() {
                c.receipt.get_or_insert(answer);
                c.decision = Some(answer);
            }
        }
    }

    fn decide_prosecution(
        &mut self,
        handoff_id: &str,
        by: ClockAnswerKind,
        event: &RecordedEvent<'_>,
    ) {
        let answer = self.answer_of(by, event);
        if self
            .clocks
            .get(handoff_id)
            .is_some_and(|c| c.kind == HandoffKind::ProsecutionTransfer)
        {
            self.prosecution_decision = Some(ProsecutionDecision {
                handoff_id: handoff_id.to_owned(),
                by,
                version: event.version,
            });
        }
        self.answer_decision_of(handoff_id, &[HandoffKind::ProsecutionTransfer], answer);
    }

    fn answer(&mut self, handoff_id: &str) {
        if let Some(h) = self.handoffs.get_mut(handoff_id) {
            h.answered = true;
        }
    }
}
