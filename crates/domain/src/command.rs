//! What a decision takes and gives: `Command` (an office proposes a payload for a case),
//! `Context` (the current time, the deadline rules and calendar, the known offices), `Decision` (the
//! event payload to record) and `Rejection` (why not, in one of a few fixed kinds).

use time::OffsetDateTime;

use casebus_proto::event::v1::payload::Kind;
use casebus_proto::event::v1::{Agency, Visibility};
use casebus_proto::{CaseId, OfficeId};

use crate::calendar::Calendar;
use crate::rules::DeadlineRules;

/// An office asks to record `payload` on a case.
#[derive(Debug, Clone, PartialEq)]
pub struct Command {
    /// The case.
    pub case_id: CaseId,
    /// The office performing the action (the caller, authenticated upstream).
    pub office: OfficeId,
    /// The person or system at the office (1-128 chars).
    pub actor: String,
    /// When the action happened; must not lie in the future.
    pub occurred_at: OffsetDateTime,
    /// Who may see the event; `None` means participants.
    pub visibility: Option<Visibility>,
    /// What the office did.
    pub payload: Kind,
}

impl Command {
    /// The agency of the acting office.
    pub fn agency(&self) -> Agency {
        self.office.agency()
    }
}

/// Tells the rules which offices exist (the office registry, seen through a trait so the
/// domain stays free of I/O).
pub trait OfficeDirectory: Send + Sync {
    /// Whether `office` is registered.
    fn is_registered(&self, office: &OfficeId) -> bool;
}

impl<F: Fn(&OfficeId) -> bool + Send + Sync> OfficeDirectory for F {
    fn is_registered(&self, office: &OfficeId) -> bool {
        self(office)
    }
}

/// Everything outside the case that a decision depends on.
pub struct Context<'a> {
    /// The current time (the caller's clock; the domain has none).
    pub now: OffsetDateTime,
    /// Deadline rules.
    pub rules: &'a DeadlineRules,
    /// The holiday calendar the rules count on (for the due time an extension gives).
    pub calendar: &'a Calendar,
    /// `rules.digest(calendar)`, which the caller computes once (a service at start),
    /// recorded with every due time the decision counts.
    pub rules_digest: &'a str,
    /// Known offices.
    pub offices: &'a dyn OfficeDirectory,
}

/// The event to record: the payload (completed by the rules, e.g. with a due time) and
/// its visibility.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    /// The payload to record.
    pub payload: Kind,
    /// The visibility to record (never unspecified).
    pub visibility: Visibility,
}

/// The few kinds of rejection, each mapping to one gRPC status code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum RejectionKind {
    /// The command is malformed (INVALID_ARGUMENT).
    Invalid,
    /// The case does not exist (NOT_FOUND).
    NotFound,
    /// The thing to create exists already (ALREADY_EXISTS).
    AlreadyExists,
    /// The acting office's agency may not do this (PERMISSION_DENIED).
    NotPermitted,
    /// The case is not in a state that allows this (FAILED_PRECONDITION).
    Precondition,
}

/// Why a command was refused. The text is written for a back-office developer: it names
/// the field or rule and what to do.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Rejection {
    /// A field is missing or invalid.
    #[error("invalid {field}: {reason}")]
    Invalid {
        /// The field, e.g. `payload.goods_detained.description`.
        field: String,
        /// What is wrong.
        reason: String,
    },
    /// An office named in the command is not registered.
    #[error("unknown office {office}: it is not in the office registry")]
    UnknownOffice {
        /// The office.
        office: String,
    },
    /// The case does not exist yet; open it first.
    #[error("case {case_id} does not exist; open it first")]
    CaseNotFound {
        /// The case.
        case_id: String,
    },
    /// Something that must be unique exists already.
    #[error("{what} already exists in case {case_id}")]
    AlreadyExists {
        /// The case.
        case_id: String,
        /// What exists, e.g. `hand-off h1`.
        what: String,
    },
    /// The acting agency may not perform this action.
    #[error("{agency} may not {action}: {reason}")]
    NotPermitted {
        /// The acting agency's name.
        agency: &'static str,
        /// The action, e.g. `record GoodsDetained`.
        action: String,
        /// Why not.
        reason: String,
    },
    /// The case's state does not allow the action; `rule` names the rule that failed.
    #[error("rule {rule} failed: {detail}")]
    Precondition {
        /// Stable rule name, e.g. `goods_detained_first`.
        rule: &'static str,
        /// Explanation with the relevant ids.
        detail: String,
    },
}

impl Rejection {
    /// The kind, for mapping to a status code.
    pub fn kind(&self) -> RejectionKind {
        match self {
            Self::Invalid { .. } | Self::UnknownOffice { .. } => RejectionKind::Invalid,
            Self::CaseNotFound { .. } => RejectionKind::NotFound,
            Self::AlreadyExists { .. } => RejectionKind::AlreadyExists,
            Self::NotPermitted { .. } => RejectionKind::NotPermitted,
            Self::Precondition { .. } => RejectionKind::Precondition,
        }
    }

    /// A stable short reason for metrics labels: the rule name, or the kind.
    pub fn reason_code(&self) -> &'static str {
        match self {
            Self::Invalid { .. } => "invalid",
            Self::UnknownOffice { .. } => "unknown_office",
            Self::CaseNotFound { .. } => "case_not_found",
            Self::AlreadyExists { .. } => "already_exists",
            Self::NotPermitted { .. } => "not_permitted",
            Self::Precondition { rule, .. } => rule,
        }
    }
}
