//! The case rules of casebus, as pure functions: fold a case's events into its state
//! (`CaseState::apply`), decide a command against that state into the event to record or
//! a rejection that says why (`decide`), compute hand-off due times from configurable
//! deadline rules (`DeadlineRules`), and tell who may see which event (`visibility`).
//!
//! **Boundary:** this crate does no I/O: no tokio, no NATS, no files, no clock. Callers
//! pass the current time and the deadline rules text in; it never reads them itself.

mod command;
mod decide;
mod rules;
mod state;
mod visibility;

pub use command::{Command, Context, Decision, OfficeDirectory, Rejection, RejectionKind};
pub use decide::decide;
pub use rules::{DeadlineRules, RulesError};
pub use state::{
    CaseState, Detention, EventMeta, Handoff, HandoffStatus, Hearing, Judgment, Opened,
    RecordedEvent, Reference, Track, TrackStatus,
};
pub use visibility::{Sight, effective_visibility, event_sight, sight};
