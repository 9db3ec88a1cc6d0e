//! The gateway's projection of the CASES stream into an embedded SQLite file: every
//! event with its effective visibility, and per case the rows the case rules fold
//! (tracks, parties, hand-offs with due times and running legal clocks, linked references, participating
//! agencies), plus the stream position, written in the same transaction as the rows so
//! a restart resumes exactly and deleting the file rebuilds it from the stream.
//!
//! - [`Projection::apply_batch`] writes a batch of verified events (idempotent on
//!   redelivery);
//! - the queries serve GetTimeline, WatchTimeline's catch-up, GetCase, ListCases,
//!   FindCaseByReference and the agency feed, plus counts and overdue hand-offs for the
//!   CLI and the monitor;
//! - [`Projection::dump_for_comparison`] renders every table deterministically;
//! - [`LogStore`] keeps the transparency log over `CASES` in a file of its own beside
//!   the projection (entries and one hash per complete subtree).
//!
//! **Boundary:** this crate is synchronous and never talks to NATS; the gateway feeds it
//! from its consumer and calls it from `spawn_blocking`. It does not verify events (the
//! consumer did) and does not decide visibility (the gateway applies
//! `casebus_domain::sight` to the rows and states it returns).

mod apply;
mod codec;
mod dump;
mod error;
mod fold;
mod log_store;
mod model;
mod projection;
mod query;
mod schema;

pub use error::{ProjectError, QueryError};
pub use log_store::{LogStore, LogStoreError, log_entry};
pub use model::{
    ApplyOutcome, CaseClockSummary, CaseFilter, CaseListItem, CasePage, CaseSummary, Direction,
    HandoffSummary, ListReader, OverdueHandoff, PartySummary, ProjectedInput, ProjectionCounts,
    ReferenceSummary, RunningClock, TimelineRow,
};
pub use projection::{DEFAULT_CACHE_CASES, DEFAULT_LIST_WORK_BUDGET, Projection};
pub use query::{MAX_LIMIT, MAX_TEXT_FILTER};
