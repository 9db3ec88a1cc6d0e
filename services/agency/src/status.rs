//! The one mapping from what can go wrong in a command to a gRPC `Status`, plus the few
//! statuses the kit raises before an append (authorisation, malformed requests, a
//! service still starting). Messages are written for the back-office developer who
//! reads them: they name the field, the rule or what to do, and never carry internal
//! details (NATS errors, hosts, stack traces), which go to the service's log instead.
//!
//! Codes:
//!
//! | outcome | code |
//! | --- | --- |
//! | malformed field, unknown office, event too large | INVALID_ARGUMENT |
//! | case does not exist | NOT_FOUND |
//! | case, party, hand-off ... exists; request id reused for another command | ALREADY_EXISTS |
//! | wrong office or role; another agency's or office's action | PERMISSION_DENIED |
//! | a case rule failed (message starts with `rule <name> failed:`) | FAILED_PRECONDITION |
//! | the case kept changing concurrently | ABORTED |
//! | NATS unreachable or no confirmation in time; service still starting | UNAVAILABLE |
//! | the office's signing key is not valid now (expired, not yet valid, unregistered) | UNAVAILABLE |
//! | a service misconfiguration | INTERNAL |
//!
//! A signing key that is not valid is UNAVAILABLE, not FAILED_PRECONDITION: nothing in
//! the request or the case is wrong and the caller cannot fix it; the service cannot
//! record for its office until its operator rotates the key, which it picks up without a
//! restart, and the same request (same request id) then succeeds. That is the retry
//! contract of UNAVAILABLE; FAILED_PRECONDITION is reserved for case rules, which a
//! retry never passes.
//!
//! A reused request id is ALREADY_EXISTS rather than INVALID_ARGUMENT: the request is
//! well-formed, but its idempotency key exists already for another command; the fix is
//! a new request id.
//!
//! Every status carries the trailer [`REASON_METADATA`] with a stable code (the rule name
//! for FAILED_PRECONDITION, which also gets [`RULE_METADATA`]), so programs can branch
//! without parsing text.

use std::fmt::Display;

use tonic::metadata::{MetadataMap, MetadataValue};
use tonic::{Code, Status};

use casebus_bus::AppendError;
use casebus_domain::{Rejection, RejectionKind};

/// Trailer with a stable reason code on every error (`invalid`, `case_not_found`, the
/// failed rule's name, `request_id_reused`, `unavailable` ...).
pub const REASON_METADATA: &str = "x-casebus-reason";
/// Trailer with the failed rule's name on FAILED_PRECONDITION.
pub const RULE_METADATA: &str = "x-casebus-rule";

fn with_reason(code: Code, message: impl Into<String>, reason: &'static str) -> Status {
    let mut metadata = MetadataMap::new();
    metadata.insert(REASON_METADATA, MetadataValue::from_static(reason));
    Status::with_metadata(code, message, metadata)
}

/// The stable reason code of an append error (also the `reason` label of the rejection
/// metric).
pub(crate) fn reason_of(error: &AppendError) -> &'static str {
    match error {
        AppendError::InvalidRequest { .. } => "invalid",
        AppendError::Rejected { rejection, .. } => rejection.reason_code(),
        AppendError::RequestIdReused { .. } => "request_id_reused",
        AppendError::TooLarge { .. } => "too_large",
        AppendError::Contention { .. } => "contention",
        AppendError::UnknownSigner { .. } => "unknown_signer",
        AppendError::SigningKeyNotValid { .. } => "signing_key_not_valid",
        AppendError::Sealing { .. } => "cannot_seal",
        AppendError::Unavailable { .. } => "unavailable",
        _ => "internal",
    }
}

fn rejection_status(case_id: &str, rejection: &Rejection) -> Status {
    let code = match rejection.kind() {
        RejectionKind::Invalid => Code::InvalidArgument,
        RejectionKind::NotFound => Code::NotFound,
        RejectionKind::AlreadyExists => Code::AlreadyExists,
        RejectionKind::NotPermitted => Code::PermissionDenied,
        RejectionKind::Precondition => Code::FailedPrecondition,
        _ => Code::FailedPrecondition,
    };
    let reason = rejection.reason_code();
    let message = match rejection {
        // The case id is already in this text.
        Rejection::CaseNotFound { .. } => rejection.to_string(),
        _ => format!("case {case_id}: {rejection}"),
    };
    let mut status = with_reason(code, message, reason);
    if let Rejection::Precondition { rule, .. } = rejection {
        status
            .metadata_mut()
            .insert(RULE_METADATA, MetadataValue::from_static(rule));
    }
    status
}

/// The gRPC status for an append error: the one mapping every RPC of every agency
/// service uses.
pub fn status_of(error: &AppendError) -> Status {
    let reason = reason_of(error);
    match error {
        AppendError::InvalidRequest { field, reason: why } => with_reason(
            Code::InvalidArgument,
            format!("invalid meta.{field}: {why}"),
            reason,
        ),
        AppendError::Rejected { case_id, rejection } => rejection_status(case_id, rejection),
        AppendError::RequestIdReused { .. } => with_reason(
            Code::AlreadyExists,
            format!("{error}; use a new request_id for a new command"),
            reason,
        ),
        AppendError::TooLarge { .. } => with_reason(
            Code::InvalidArgument,
            format!("{error}; shorten the texts or move content into evidence files"),
            reason,
        ),
        AppendError::Contention { .. } => with_reason(Code::Aborted, error.to_string(), reason),
        AppendError::Unavailable { .. } => {
            with_reason(Code::Unavailable, error.to_string(), reason)
        }
        // The key's id and period are for the operator's log, not for callers.
        AppendError::SigningKeyNotValid { office, .. } => with_reason(
            Code::Unavailable,
            format!(
                "office {office} cannot sign events right now: its signing key is not valid; nothing was recorded; retry with the same request_id after the key is rotated"
            ),
            reason,
        ),
        // Which key is missing is for the operator's log.
        AppendError::Sealing { office, .. } => with_reason(
            Code::FailedPrecondition,
            format!(
                "office {office} cannot record a restricted event right now: its service cannot seal it for its readers; nothing was recorded; its operator has been told (see the service log)"
            ),
            reason,
        ),
        _ => with_reason(
            Code::Internal,
            "the service cannot record events for its office right now; its operator has been told (see the service log)",
            reason,
        ),
    }
}

/// INVALID_ARGUMENT naming a request field.
pub(crate) fn invalid(field: &str, why: impl Display) -> Status {
    with_reason(
        Code::InvalidArgument,
        format!("invalid {field}: {why}"),
        "invalid",
    )
}

/// INVALID_ARGUMENT for a missing message field.
pub(crate) fn required(field: &str) -> Status {
    invalid(field, "is required")
}

/// PERMISSION_DENIED for a caller of another office.
pub(crate) fn wrong_office(service: impl Display, caller: impl Display) -> Status {
    with_reason(
        Code::PermissionDenied,
        format!(
            "this service records for office {service} only; the caller acts for {caller}: call your own office's service"
        ),
        "wrong_office",
    )
}

/// PERMISSION_DENIED for a caller without the needed role.
pub(crate) fn missing_role(needed: &str) -> Status {
    with_reason(
        Code::PermissionDenied,
        format!("the caller's credential lacks the {needed} role this call needs"),
        "missing_role",
    )
}

/// UNAVAILABLE while the inbox still reads the stream after a start.
pub(crate) fn not_ready() -> Status {
    with_reason(
        Code::Unavailable,
        "the service is still reading the stream after its start; retry shortly",
        "starting",
    )
}

/// UNAVAILABLE when reading from the bus failed.
pub(crate) fn bus_unavailable(what: impl Display) -> Status {
    with_reason(
        Code::Unavailable,
        format!("{what}: the bus is unavailable; retry shortly"),
        "unavailable",
    )
}

/// NOT_FOUND for a case that does not exist or that the caller's agency takes no part
/// in (the answer must not tell the two apart).
pub(crate) fn case_not_found(case_id: impl Display) -> Status {
    with_reason(
        Code::NotFound,
        format!("case {case_id} not found"),
        "case_not_found",
    )
}

/// ABORTED for an inbox watcher that fell behind.
pub(crate) fn watch_lagged() -> Status {
    with_reason(
        Code::Aborted,
        "the watch fell behind the inbox's changes; call WatchInbox again",
        "lagged",
    )
}

/// UNAVAILABLE ending an `Import` call because the service shuts down.
pub(crate) fn import_interrupted() -> Status {
    with_reason(
        Code::Unavailable,
        "the service is shutting down and took no further import items; send again every item you have no answer for (same request_ids), to another instance or after the restart",
        "shutting_down",
    )
}

/// INTERNAL for a bug (a task that panicked); the details are in the log.
pub(crate) fn internal() -> Status {
    with_reason(
        Code::Internal,
        "the service failed to process the request; its operator has been told (see the service log)",
        "internal",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rejected(rejection: Rejection) -> AppendError {
        AppendError::Rejected {
            case_id: "C-1".into(),
            rejection,
        }
    }

    fn reason(status: &Status) -> &str {
        status
            .metadata()
            .get(REASON_METADATA)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
    }

    #[test]
    fn each_rejection_kind_maps_to_its_code() {
        let cases = [
            (
                rejected(Rejection::Invalid {
                    field: "note_added.text".into(),
                    reason: "is required".into(),
                }),
                Code::InvalidArgument,
                "invalid",
            ),
            (
                rejected(Rejection::UnknownOffice {
                    office: "customs:nowhere".into(),
                }),
                Code::InvalidArgument,
                "unknown_office",
            ),
            (
                rejected(Rejection::CaseNotFound {
                    case_id: "C-1".into(),
                }),
                Code::NotFound,
                "case_not_found",
            ),
            (
                rejected(Rejection::AlreadyExists {
                    case_id: "C-1".into(),
                    what: "hand-off h1".into(),
                }),
                Code::AlreadyExists,
                "already_exists",
            ),
            (
                rejected(Rejection::NotPermitted {
                    agency: "customs",
                    action: "record JudgmentIssued".into(),
                    reason: "only court records this".into(),
                }),
                Code::PermissionDenied,
                "not_permitted",
            ),
            (
                rejected(Rejection::Precondition {
                    rule: "docketed",
                    detail: "docket the case first".into(),
                }),
                Code::FailedPrecondition,
                "docketed",
            ),
        ];
        for (error, code, why) in cases {
            let status = status_of(&error);
            assert_eq!(status.code(), code, "{error:?}");
            assert_eq!(reason(&status), why);
        }
    }

    #[test]
    fn a_failed_rule_is_named_in_the_message_and_a_trailer() {
        let status = status_of(&rejected(Rejection::Precondition {
            rule: "hearing_held",
            detail: "hold a hearing before issuing the judgment".into(),
        }));
        assert_eq!(
            status.message(),
            "case C-1: rule hearing_held failed: hold a hearing before issuing the judgment"
        );
        assert_eq!(
            status
                .metadata()
                .get(RULE_METADATA)
                .and_then(|v| v.to_str().ok()),
            Some("hearing_held")
        );
    }

    #[test]
    fn transport_trouble_says_retry_with_the_same_request_id_and_hides_the_cause() {
        let status = status_of(&AppendError::Unavailable {
            case_id: "C-1".into(),
            source: "connection refused to 10.0.0.7:4222".into(),
        });
        assert_eq!(status.code(), Code::Unavailable);
        assert!(status.message().contains("retry with the same request id"));
        assert!(
            !status.message().contains("10.0.0.7"),
            "{}",
            status.message()
        );

        let status = status_of(&AppendError::Contention {
            case_id: "C-1".into(),
            attempts: 10,
        });
        assert_eq!(status.code(), Code::Aborted);
        assert!(status.message().contains("same request id"));
    }

    #[test]
    fn a_reused_request_id_is_already_exists_and_a_misconfigured_signer_is_internal() {
        let status = status_of(&AppendError::RequestIdReused {
            case_id: "C-1".into(),
            request_id: "r-1".into(),
        });
        assert_eq!(status.code(), Code::AlreadyExists);
        assert_eq!(reason(&status), "request_id_reused");
        assert!(status.message().contains("new request_id"));

        let status = status_of(&AppendError::UnknownSigner {
            office: "customs:ningbo (key customs:ningbo#k1)".into(),
        });
        assert_eq!(status.code(), Code::Internal);
        assert!(!status.message().contains("customs:ningbo#k1"));
    }
}
