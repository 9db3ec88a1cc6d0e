//! The case rules of casebus, as pure functions: fold a case's events into its state
//! (`CaseState::apply`), decide a command against that state into the event to record or
//! a rejection that says why (`decide`), compute hand-off due times from configurable
//! deadline rules (`DeadlineRules`), record and check the due times a triggering event
//! records (`dues`), count legal clocks on the legal calendar (`clock`,
//! `calendar`), and tell who may see which event (`visibility`).
//!
//! **Boundary:** this crate does no I/O: no tokio, no NATS, no files, no clock. Callers
//! pass the current time and the deadline rules text in; it never reads them itself.

mod calendar;
mod clock;
mod command;
mod decide;
mod dues;
mod rules;
mod state;
mod visibility;

pub use calendar::{
    CHINA_STANDARD_TIME, Calendar, CalendarError, SHIPPED_CALENDAR, YearCalendar, YearStatus,
};
pub use clock::{ClockRule, Step, Unit, end_of_day, legal_date};
pub use command::{Command, Context, Decision, OfficeDirectory, Rejection, RejectionKind};
pub use decide::{check_erasable, decide};
pub use dues::{
    DueMismatch, DueProblem, RecordedDueTime, RulesDigest, check_recorded_dues,
    check_recorded_dues_against, clocks_started_by, dues_of, recorded_due_of, recorded_dues,
    recorded_in,
};
pub use rules::{ClockName, DeadlineRules, RulesError};
pub use state::{
    CaseClock, CaseState, ClockAdjust, ClockAnswer, ClockAnswerKind, Detention, EventMeta,
    Extension, Handoff, HandoffClockKind, HandoffClocks, HandoffStatus, Hearing, Judgment,
    LegalHold, LiftedHold, OpenCaseClock, OpenClock, Opened, ProsecutionDecision, RecordedDues,
    RecordedEvent, Reference, Suspension, Track, TrackStatus, outcome_of, suspension_shift,
};
pub use visibility::{Sight, effective_visibility, event_sight, names_office, office_known, sight};
