//! Error enums of the bus, one per operation family so callers can branch: opening the
//! bus, provisioning streams, loading a case, appending, consuming.

use casebus_domain::Rejection;

/// A boxed NATS client error (the async-nats error kinds differ per call).
pub type NatsError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Errors opening a [`crate::Bus`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BusError {
    /// A stream the bus needs does not exist; provision the streams first.
    #[error("stream {stream} not found; provision the streams first (casebus streams provision)")]
    StreamMissing {
        /// The stream.
        stream: &'static str,
    },
    /// NATS did not answer as expected.
    #[error("nats request for {what} failed")]
    Nats {
        /// What was asked.
        what: String,
        /// The client error.
        #[source]
        source: NatsError,
    },
}

/// Errors provisioning streams.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProvisionError {
    /// A setting is out of range.
    #[error("invalid stream setting {setting}: {reason}")]
    InvalidSetting {
        /// The setting.
        setting: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// The stream exists with a setting that cannot be changed in place.
    #[error(
        "stream {stream} exists with {setting} = {found}, expected {expected}; it cannot be changed in place"
    )]
    Incompatible {
        /// The stream.
        stream: &'static str,
        /// The setting.
        setting: &'static str,
        /// What the server has.
        found: String,
        /// What casebus needs.
        expected: String,
    },
    /// The server refused or did not answer.
    #[error("provisioning stream {stream} failed")]
    Nats {
        /// The stream.
        stream: &'static str,
        /// The client error.
        #[source]
        source: NatsError,
    },
}

/// Errors loading a case from the stream.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LoadError {
    /// Reading the case's messages failed.
    #[error("loading case {case_id} failed")]
    Nats {
        /// The case.
        case_id: String,
        /// The client error.
        #[source]
        source: NatsError,
    },
}

/// Errors appending an event.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AppendError {
    /// A request field is invalid (before the rules were asked).
    #[error("invalid {field}: {reason}")]
    InvalidRequest {
        /// The field.
        field: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// The case rules refused the command; nothing was published.
    #[error("case {case_id}: command rejected")]
    Rejected {
        /// The case.
        case_id: String,
        /// The rules' reason.
        #[source]
        rejection: Rejection,
    },
    /// The request id was used before by this office on this case for another command.
    #[error("request id {request_id} was already used on case {case_id} for a different command")]
    RequestIdReused {
        /// The case.
        case_id: String,
        /// The request id.
        request_id: String,
    },
    /// The signed event would exceed the maximum event size.
    #[error("event for case {case_id} is {size} bytes; at most {max} are allowed")]
    TooLarge {
        /// The case.
        case_id: String,
        /// The encoded size.
        size: usize,
        /// The limit.
        max: usize,
    },
    /// Other writers kept changing the case; retry later with the same request id.
    #[error(
        "case {case_id} changed concurrently {attempts} times in a row; retry with the same request id"
    )]
    Contention {
        /// The case.
        case_id: String,
        /// Attempts made.
        attempts: u32,
    },
    /// The signing office is not in the office registry.
    #[error("signing office {office} is not in the office registry")]
    UnknownSigner {
        /// The office.
        office: String,
    },
    /// The office's signing key is not valid at the instant the event would be recorded:
    /// expired, not valid yet, or no longer in the office registry. Nothing was
    /// published: every consumer would dead-letter an event signed with it. It clears
    /// when the operator rotates the key (the service picks up the new key and registry
    /// without a restart); retry with the same request id then.
    #[error("signing key {key_id} of office {office} is not valid at {at}: {reason}")]
    SigningKeyNotValid {
        /// The signing office.
        office: String,
        /// The signing key.
        key_id: String,
        /// The instant the event would have been recorded at (RFC 3339).
        at: String,
        /// Why the key is not valid then (its period, or that it is not registered).
        reason: String,
    },
    /// A restricted event cannot be sealed: the office has an encryption key registered
    /// but the appender was given no decryption key of it, or it was given one but the
    /// registry lists no encryption key of the office valid now. Nothing was written.
    #[error("office {office} cannot seal a restricted event: {reason}")]
    Sealing {
        /// The recording office.
        office: String,
        /// What is missing.
        reason: String,
    },
    /// NATS is unreachable or did not confirm in time; the outcome is unknown, so retry
    /// with the same request id (a retry never creates a second event).
    #[error("case {case_id}: the bus is unavailable; retry with the same request id")]
    Unavailable {
        /// The case.
        case_id: String,
        /// The client error.
        #[source]
        source: NatsError,
    },
}

/// Errors running a consumer.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConsumeError {
    /// Creating or binding the durable consumer failed.
    #[error("setting up consumer {consumer} failed")]
    Setup {
        /// The consumer.
        consumer: String,
        /// The client error.
        #[source]
        source: NatsError,
    },
    /// The message stream failed and could not be resumed.
    #[error("consumer {consumer} stopped")]
    Stream {
        /// The consumer.
        consumer: String,
        /// The client error.
        #[source]
        source: NatsError,
    },
}
