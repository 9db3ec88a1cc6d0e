//! The gateway's errors: `ReadError` for everything a gRPC read can end in, with the one
//! mapping to `tonic::Status` (a small fixed set of codes; internal details stay in the
//! log), and `RunError` for what can stop the gateway from starting, or end its run in failure.
//!
//! A read never answers PERMISSION_DENIED for a case the caller takes no part in: that
//! is NOT_FOUND, so the existence of the case does not leak.

use std::path::PathBuf;

use tonic::Status;

use casebus_bus::ops::OpsError;
use casebus_timeline::{ProjectError, QueryError};

/// Why a read was refused or failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReadError {
    /// A request field is invalid.
    #[error("invalid {field}: {reason}")]
    InvalidArgument {
        /// The request field.
        field: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// The case (or reference) does not exist for this caller.
    #[error("{what} not found")]
    NotFound {
        /// What was looked for, as the caller named it.
        what: String,
    },
    /// The request carries no authenticated caller.
    #[error("request was not authenticated")]
    Unauthenticated,
    /// The caller has neither the reader nor the admin role.
    #[error("reading the case record needs the reader or admin role")]
    PermissionDenied,
    /// The audit record of the read could not be written, so the read is refused.
    #[error("the audit trail cannot be written")]
    AuditUnavailable {
        /// Why the publish failed.
        #[source]
        source: OpsError,
    },
    /// The projection answered with an error that is not the caller's fault.
    #[error("projection query failed")]
    Projection {
        /// What the projection said.
        #[source]
        source: QueryError,
    },
    /// A stored event could not be decoded for the answer.
    #[error("stored event of case {case_id} at version {version} is unreadable")]
    CorruptEvent {
        /// The case.
        case_id: String,
        /// The version.
        version: u64,
    },
    /// The blocking task that ran the query failed (it panicked or was cancelled).
    #[error("projection task failed")]
    Task,
    /// Too many watch streams are open at this gateway.
    #[error("too many watch streams are open ({limit})")]
    TooManyWatches {
        /// The configured limit.
        limit: usize,
    },
    /// The gateway is shutting down.
    #[error("the gateway is shutting down")]
    ShuttingDown,
    /// This gateway keeps no transparency log or signs no checkpoints.
    #[error("this gateway serves no proofs: it keeps no transparency log with a log key")]
    NoLog,
    /// No checkpoint has been published yet.
    #[error("no checkpoint has been published yet; retry")]
    NoCheckpoint,
    /// The event is not under the latest checkpoint yet.
    #[error("the event is not under a published checkpoint yet; retry")]
    NotYetCheckpointed,
    /// This gateway's log has not reached the latest checkpoint's size.
    #[error("this gateway's log has not reached the latest checkpoint yet; retry")]
    LogBehind,
    /// The checkpoints stream could not be read, or holds what this log did not sign.
    #[error("checkpoints: {0}")]
    Checkpoints(String),
    /// The transparency log file failed.
    #[error("transparency log")]
    Log(#[source] casebus_timeline::LogStoreError),
}

impl From<QueryError> for ReadError {
    fn from(source: QueryError) -> Self {
        if source.is_invalid_input() {
            // The message names the limit, cursor or filter at fault and nothing else.
            Self::InvalidArgument {
                field: match &source {
                    QueryError::InvalidLimit { .. } => "limit",
                    QueryError::MalformedCursor { .. } => "page_token",
                    QueryError::InvalidFilter { field, .. } => field,
                    _ => "request",
                },
                reason: source.to_string(),
            }
        } else {
            Self::Projection { source }
        }
    }
}

impl ReadError {
    /// A shorthand for [`ReadError::InvalidArgument`].
    pub fn invalid(field: &'static str, reason: impl Into<String>) -> Self {
        Self::InvalidArgument {
            field,
            reason: reason.into(),
        }
    }

    /// A shorthand for [`ReadError::NotFound`] of a case.
    pub fn case_not_found(case_id: &str) -> Self {
        Self::NotFound {
            what: format!("case {case_id}"),
        }
    }
}

impl From<ReadError> for Status {
    /// The one mapping from gateway errors to gRPC statuses. Messages for the caller's
    /// own mistakes name the field; failures inside the gateway are logged here with
    /// their cause and answered with a fixed text.
    fn from(error: ReadError) -> Self {
        match &error {
            ReadError::InvalidArgument { .. } => Status::invalid_argument(error.to_string()),
            ReadError::NotFound { .. } => Status::not_found(error.to_string()),
            ReadError::Unauthenticated => Status::unauthenticated(error.to_string()),
            ReadError::PermissionDenied => Status::permission_denied(error.to_string()),
            ReadError::TooManyWatches { .. } => Status::resource_exhausted(error.to_string()),
            ReadError::ShuttingDown => Status::unavailable(error.to_string()),
            ReadError::AuditUnavailable { source } => {
                tracing::error!(error = %source, "audit record not written; read refused");
                Status::unavailable(
                    "the audit trail cannot be written; the read was refused, retry later",
                )
            }
            // The message names the budget and how to narrow the listing, nothing else.
            ReadError::Projection {
                source: source @ QueryError::TooMuchWork { .. },
            } => Status::resource_exhausted(source.to_string()),
            ReadError::Projection { source } if source.is_transient() => {
                tracing::warn!(error = %source, "projection busy");
                Status::unavailable("the projection is busy; retry")
            }
            ReadError::Projection { source } => {
                tracing::error!(error = %source, "projection query failed");
                Status::internal("the gateway's projection failed; the operators were told")
            }
            ReadError::CorruptEvent { case_id, version } => {
                tracing::error!(case_id = %case_id, version, "stored event unreadable");
                Status::internal("the gateway's projection failed; the operators were told")
            }
            ReadError::Task => {
                tracing::error!("projection task failed");
                Status::internal("the gateway's projection failed; the operators were told")
            }
            ReadError::NoLog => Status::failed_precondition(error.to_string()),
            ReadError::NoCheckpoint | ReadError::NotYetCheckpointed | ReadError::LogBehind => {
                Status::unavailable(error.to_string())
            }
            ReadError::Checkpoints(reason) => {
                tracing::error!(error = %reason, "checkpoints unreadable");
                Status::internal("the gateway's transparency log failed; the operators were told")
            }
            ReadError::Log(source) => {
                tracing::error!(error = %source, source = ?std::error::Error::source(source), "transparency log read failed");
                Status::internal("the gateway's transparency log failed; the operators were told")
            }
        }
    }
}

/// Why the gateway could not start, or stopped with a failure.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RunError {
    /// A configuration value is invalid.
    #[error("invalid configuration {key}: {reason}")]
    Config {
        /// The flag.
        key: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// Another process holds the projection file.
    #[error("projection {path} is in use by another gateway (lock file {lock})")]
    Locked {
        /// The projection file.
        path: PathBuf,
        /// The lock file.
        lock: PathBuf,
    },
    /// A file (the lock, a leftover journal, the ready file) could not be handled.
    #[error("file {path}")]
    File {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The projection could not be opened.
    #[error("opening the projection failed")]
    Projection(#[source] ProjectError),
    /// The projection has events the stream does not: it belongs to another stream.
    #[error(
        "projection {path} is at stream position {position} but stream CASES ends at {stream_last}: it was built from another stream; delete it to rebuild"
    )]
    AheadOfStream {
        /// The projection file.
        path: PathBuf,
        /// The projection's position.
        position: u64,
        /// The stream's last sequence.
        stream_last: u64,
    },
    /// The durable consumer could not be set up or repositioned.
    #[error("durable consumer {consumer}")]
    Consumer {
        /// The consumer.
        consumer: String,
        /// What went wrong.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// A blocking start-up task failed.
    #[error("start-up task failed")]
    Task,
    /// The SIGHUP listener could not be installed.
    #[error("installing the SIGHUP listener")]
    Signal(#[source] std::io::Error),
    /// The office registry could not be loaded.
    #[error("office registry")]
    Registry(#[source] casebus_integrity::RegistryError),
    /// The transparency log file cannot be opened.
    #[error("opening the transparency log (--tlog-file)")]
    Tlog(#[source] casebus_timeline::LogStoreError),
    /// The log key file cannot be read.
    #[error("reading the log key (--log-key)")]
    LogKey(#[source] casebus_runtime::tlog_keys::LogKeyError),
    /// NATS could not be reached, or the streams could not be opened.
    #[error("nats")]
    Nats(#[source] casebus_bus::BusError),
    /// The streams could not be provisioned.
    #[error("provisioning the streams")]
    Provision(#[source] casebus_bus::ProvisionError),
    /// The shared runtime (listeners, TLS, authentication, metrics) refused its setup.
    #[error("service runtime")]
    Runtime(#[source] casebus_runtime::RuntimeError),
    /// A part of the running gateway failed and stopped it.
    #[error("{part} failed: {reason}")]
    Failed {
        /// The part: `consumer`, `grpc server`.
        part: &'static str,
        /// Why.
        reason: String,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invalid_input_from_the_projection_is_invalid_argument_naming_the_field() {
        let status = Status::from(ReadError::from(QueryError::InvalidLimit {
            limit: 0,
            max: 1000,
        }));
        assert_eq!(status.code(), tonic::Code::InvalidArgument);
        assert!(
            status.message().starts_with("invalid limit"),
            "{}",
            status.message()
        );
    }

    #[test]
    fn internal_failures_do_not_reach_the_caller() {
        let status = Status::from(ReadError::CorruptEvent {
            case_id: "SECRET-CASE".into(),
            version: 7,
        });
        assert_eq!(status.code(), tonic::Code::Internal);
        assert!(!status.message().contains("SECRET-CASE"));
    }

    #[test]
    fn a_case_of_no_concern_is_not_found_not_permission_denied() {
        let status = Status::from(ReadError::case_not_found("NB-1"));
        assert_eq!(status.code(), tonic::Code::NotFound);
        assert_eq!(status.message(), "case NB-1 not found");
    }
}
