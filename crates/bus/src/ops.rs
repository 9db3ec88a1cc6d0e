//! Operator operations on the casebus streams, for the `casebus` CLI and the monitor:
//! stream and consumer status, reading any stream in order from a sequence or a time
//! ([`Scanner`]), single messages by sequence, counting what a consumer would receive
//! from a point, resetting a durable consumer to a sequence (delete and recreate with the
//! same settings, since NATS 2.9 has no reset API), raw publishes (dead-letter retries),
//! deleting dead letters, and the audit trail ([`AuditRecord`]).
//!
//! Every type in the public API is casebus's own; no async-nats type leaks out, so the
//! callers stay free of the NATS client.
//!
//! **Boundary:** this module does not verify events and holds no policy: whether a
//! replay or a dead-letter retry is wise is the caller's decision.

use std::time::Duration;

use async_nats::HeaderMap;
use async_nats::jetstream::consumer::{AckPolicy, DeliverPolicy, pull};
use async_nats::jetstream::context::PublishErrorKind;
use async_nats::jetstream::message::PublishMessage;
use async_nats::jetstream::{self, ErrorCode, stream::LastRawMessageErrorKind};
use bytes::Bytes;
use futures::StreamExt as _;
use time::OffsetDateTime;

use crate::bus::{Bus, BusConfig};
use crate::error::{NatsError, ProvisionError};
use crate::provision::{StreamSettings, is_stream_not_found};
use crate::subjects::{audit_subject, headers};

/// The office name under which operator actions are audited (`audit.operator`).
pub const OPERATOR_AUDIT_OFFICE: &str = "operator";

/// Errors of operator operations.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OpsError {
    /// The stream does not exist.
    #[error("stream {stream} not found; provision the streams first (casebus streams provision)")]
    StreamMissing {
        /// The stream.
        stream: String,
    },
    /// The consumer does not exist on the stream.
    #[error("consumer {consumer} not found on stream {stream}")]
    ConsumerMissing {
        /// The stream.
        stream: String,
        /// The consumer.
        consumer: String,
    },
    /// An argument is out of range or malformed.
    #[error("invalid {what}: {reason}")]
    Invalid {
        /// What was invalid.
        what: &'static str,
        /// Why.
        reason: String,
    },
    /// The consumer cannot be reset safely.
    #[error("consumer {consumer} cannot be reset: {reason}")]
    NotResettable {
        /// The consumer.
        consumer: String,
        /// Why.
        reason: String,
    },
    /// The consumer was deleted for a reset but could not be created again.
    #[error(
        "consumer {consumer} was deleted for the reset but could not be created again ({reason}); restored at sequence {restored_at}: {restored}"
    )]
    ResetFailed {
        /// The consumer.
        consumer: String,
        /// Why the new consumer was refused.
        reason: String,
        /// The start sequence of the restore attempt.
        restored_at: u64,
        /// Whether the restore succeeded.
        restored: bool,
    },
    /// A read lost messages on the way (the server skipped consumer sequences).
    #[error(
        "reading stream {stream} lost messages (consumer sequence {found} after {expected_before}); run it again"
    )]
    Interrupted {
        /// The stream.
        stream: String,
        /// The consumer sequence expected next, minus one.
        expected_before: u64,
        /// The consumer sequence that came.
        found: u64,
    },
    /// A conditional publish found the subject moved on.
    #[error(
        "publish to {subject} refused: the subject's last sequence is no longer {expected}; nothing was written"
    )]
    WrongLastSequence {
        /// The subject.
        subject: String,
        /// The expected last sequence of the subject.
        expected: u64,
    },
    /// A stored audit record is not valid JSON of the expected shape.
    #[error("audit record at sequence {sequence}: {reason}")]
    BadAuditRecord {
        /// Its sequence in `AUDIT`.
        sequence: u64,
        /// What is wrong.
        reason: String,
    },
    /// Provisioning failed.
    #[error(transparent)]
    Provision(#[from] ProvisionError),
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

fn nats<E: std::error::Error + Send + Sync + 'static>(
    what: impl Into<String>,
) -> impl FnOnce(E) -> OpsError {
    let what = what.into();
    move |e| OpsError::Nats {
        what,
        source: Box::new(e),
    }
}

/// Settings and state of a stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamStatus {
    /// Stream name.
    pub name: String,
    /// Subjects it stores.
    pub subjects: Vec<String>,
    /// Messages stored.
    pub messages: u64,
    /// Bytes stored.
    pub bytes: u64,
    /// Lowest sequence stored (0 or last + 1 when empty).
    pub first_sequence: u64,
    /// Last sequence assigned.
    pub last_sequence: u64,
    /// When the first stored message arrived; `None` when empty.
    pub first_time: Option<OffsetDateTime>,
    /// When the last message arrived; `None` when empty.
    pub last_time: Option<OffsetDateTime>,
    /// Consumers defined on the stream.
    pub consumer_count: usize,
    /// Replicas.
    pub replicas: usize,
    /// Whether deleting messages is refused.
    pub deny_delete: bool,
    /// Whether purging is refused.
    pub deny_purge: bool,
    /// The `Nats-Msg-Id` duplicate window.
    pub duplicate_window: Duration,
}

/// Where a consumer starts (its deliver policy).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConsumerStart {
    /// From the first message.
    All,
    /// From the last message.
    Last,
    /// Only messages stored after its creation.
    New,
    /// From this stream sequence.
    Sequence(u64),
    /// From the first message stored at or after this time.
    Time(OffsetDateTime),
    /// From the last message of every subject.
    LastPerSubject,
}

impl std::fmt::Display for ConsumerStart {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::All => f.write_str("all"),
            Self::Last => f.write_str("last"),
            Self::New => f.write_str("new"),
            Self::Sequence(s) => write!(f, "sequence {s}"),
            Self::Time(t) => write!(f, "time {t}"),
            Self::LastPerSubject => f.write_str("last per subject"),
        }
    }
}

/// Settings and state of a consumer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumerStatus {
    /// The stream it reads.
    pub stream: String,
    /// Its name.
    pub name: String,
    /// Whether it is durable.
    pub durable: bool,
    /// Whether it is a pull consumer (push consumers have a deliver subject).
    pub pull: bool,
    /// Its subject filter (empty for the whole stream).
    pub filter_subject: String,
    /// Where it started.
    pub start: ConsumerStart,
    /// Its ack policy: `explicit`, `all` or `none`.
    pub ack_policy: &'static str,
    /// How long the server waits for an ack before redelivering.
    pub ack_wait: Duration,
    /// Deliveries at most per message (-1 for unlimited).
    pub max_deliver: i64,
    /// Unacknowledged messages at most.
    pub max_ack_pending: i64,
    /// Stream sequence of the last message delivered.
    pub delivered_sequence: u64,
    /// Stream sequence up to which every message is acknowledged: the consumer's
    /// position.
    pub ack_floor_sequence: u64,
    /// Messages not yet delivered.
    pub pending: u64,
    /// Messages delivered and not yet acknowledged.
    pub ack_pending: u64,
    /// Messages delivered more than once (the redelivery backlog).
    pub redelivered: u64,
    /// Pull requests waiting for messages: a client is consuming right now.
    pub waiting: u64,
    /// When it was created.
    pub created: OffsetDateTime,
}

impl ConsumerStatus {
    fn from_info(info: &jetstream::consumer::Info) -> Self {
        let config = &info.config;
        Self {
            stream: info.stream_name.clone(),
            name: info.name.clone(),
            durable: config.durable_name.is_some(),
            pull: config.deliver_subject.is_none(),
            filter_subject: config.filter_subject.clone(),
            start: match config.deliver_policy {
                DeliverPolicy::All => ConsumerStart::All,
                DeliverPolicy::Last => ConsumerStart::Last,
                DeliverPolicy::New => ConsumerStart::New,
                DeliverPolicy::ByStartSequence { start_sequence } => {
                    ConsumerStart::Sequence(start_sequence)
                }
                DeliverPolicy::ByStartTime { start_time } => ConsumerStart::Time(start_time),
                DeliverPolicy::LastPerSubject => ConsumerStart::LastPerSubject,
            },
            ack_policy: match config.ack_policy {
                AckPolicy::Explicit => "explicit",
                AckPolicy::All => "all",
                AckPolicy::None => "none",
            },
            ack_wait: config.ack_wait,
            max_deliver: config.max_deliver,
            max_ack_pending: config.max_ack_pending,
            delivered_sequence: info.delivered.stream_sequence,
            ack_floor_sequence: info.ack_floor.stream_sequence,
            pending: info.num_pending,
            ack_pending: info.num_ack_pending as u64,
            redelivered: info.num_redelivered as u64,
            waiting: info.num_waiting as u64,
            created: info.created,
        }
    }
}

/// One message as stored in a stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredMessage {
    /// Its stream sequence.
    pub sequence: u64,
    /// Its subject.
    pub subject: String,
    /// Its bytes.
    pub payload: Bytes,
    /// Header name and value pairs, in order.
    pub headers: Vec<(String, String)>,
    /// When the server stored it.
    pub stored_at: OffsetDateTime,
    /// Messages after it still to be read when it was delivered (0 = caught up); 0 for
    /// messages read by sequence.
    pub pending: u64,
}

impl StoredMessage {
    /// The first value of header `name`, if present.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Every header of a message as (name, value) pairs, a pair per value.
pub(crate) fn header_pairs(headers: Option<&HeaderMap>) -> Vec<(String, String)> {
    headers
        .map(|h| {
            h.iter()
                .flat_map(|(name, values)| {
                    values
                        .iter()
                        .map(move |v| (name.to_string(), v.as_str().to_owned()))
                })
                .collect()
        })
        .unwrap_or_default()
}

/// A message of `CASES_DLQ` with its dead-letter headers read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetter {
    /// The dead letter as stored in `CASES_DLQ` (its payload is the original message).
    pub message: StoredMessage,
    /// The consumer that dead-lettered it.
    pub consumer: String,
    /// The stable failure code (`unknown_key`, `gap`, `handler`, ...).
    pub code: String,
    /// The human-readable reason.
    pub reason: String,
    /// The stream the original came from.
    pub original_stream: String,
    /// The original's sequence in that stream, when the header is present and valid.
    pub original_sequence: Option<u64>,
    /// The original's subject.
    pub original_subject: String,
}

impl From<StoredMessage> for DeadLetter {
    fn from(message: StoredMessage) -> Self {
        let h = |name: &str| message.header(name).unwrap_or_default().to_owned();
        let consumer = match message.header(headers::DLQ_CONSUMER) {
            Some(c) => c.to_owned(),
            None => message
                .subject
                .strip_prefix("dlq.")
                .unwrap_or_default()
                .to_owned(),
        };
        Self {
            consumer,
            code: h(headers::DLQ_CODE),
            reason: h(headers::DLQ_REASON),
            original_stream: h(headers::DLQ_STREAM),
            original_sequence: message
                .header(headers::DLQ_SEQUENCE)
                .and_then(|s| s.parse().ok()),
            original_subject: h(headers::DLQ_SUBJECT),
            message,
        }
    }
}

/// One read of the audit trail: who read or changed what, when. The gateway writes one
/// per timeline read to `audit.<office>`; operators' repairs go to `audit.operator`.
///
/// The JSON form is an object with exactly these field names; `at` is RFC 3339 and
/// `detail` is left out when absent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditRecord {
    /// The reading office (`customs:ningbo`), or `operator` for operator actions.
    pub office: String,
    /// The person or system at the office.
    pub actor: String,
    /// The case concerned (empty when no case could be named).
    pub case_id: String,
    /// The case versions that were returned (or acted upon).
    pub versions: Vec<u64>,
    /// When.
    pub at: OffsetDateTime,
    /// The method: a gRPC method (`GetTimeline`) or an operator action (`dlq.drop`).
    pub method: String,
    /// Free detail, e.g. what a dropped dead letter was.
    pub detail: Option<String>,
}

impl AuditRecord {
    /// The subject this record is published on: `audit.<office>`.
    pub fn subject(&self) -> String {
        audit_subject(&self.office)
    }

    /// The record as JSON bytes.
    pub fn to_json(&self) -> Vec<u8> {
        let mut object = serde_json::Map::new();
        object.insert("office".into(), self.office.clone().into());
        object.insert("actor".into(), self.actor.clone().into());
        object.insert("case_id".into(), self.case_id.clone().into());
        object.insert("versions".into(), self.versions.clone().into());
        object.insert(
            "at".into(),
            self.at
                .format(&time::format_description::well_known::Rfc3339)
                .unwrap_or_default()
                .into(),
        );
        object.insert("method".into(), self.method.clone().into());
        if let Some(detail) = &self.detail {
            object.insert("detail".into(), detail.clone().into());
        }
        // Serialising a map of strings and numbers cannot fail.
        serde_json::to_vec(&serde_json::Value::Object(object)).unwrap_or_default()
    }

    /// Reads a record from its JSON bytes; unknown fields are ignored, so newer writers
    /// may add some.
    ///
    /// # Errors
    /// A message naming the missing or mistyped field.
    pub fn from_json(bytes: &[u8]) -> Result<Self, String> {
        let value: serde_json::Value =
            serde_json::from_slice(bytes).map_err(|e| format!("not JSON: {e}"))?;
        let object = value.as_object().ok_or("not a JSON object")?;
        let text = |name: &str| -> Result<String, String> {
            object
                .get(name)
                .and_then(serde_json::Value::as_str)
                .map(str::to_owned)
                .ok_or_else(|| format!("field {name} missing or not a string"))
        };
        let versions = match object.get("versions") {
            None | Some(serde_json::Value::Null) => Vec::new(),
            Some(serde_json::Value::Array(items)) => items
                .iter()
                .map(|v| v.as_u64().ok_or("field versions holds a non-number"))
                .collect::<Result<_, _>>()?,
            Some(_) => return Err("field versions is not an array".into()),
        };
        let at =
            OffsetDateTime::parse(&text("at")?, &time::format_description::well_known::Rfc3339)
                .map_err(|e| format!("field at is not RFC 3339: {e}"))?;
        Ok(Self {
            office: text("office")?,
            actor: text("actor")?,
            case_id: text("case_id").unwrap_or_default(),
            versions,
            at,
            method: text("method")?,
            detail: object
                .get("detail")
                .and_then(serde_json::Value::as_str)
                .map(str::to_owned),
        })
    }
}

/// Conditions of a raw publish.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PublishOptions {
    /// `Nats-Msg-Id`: a repeat within the stream's duplicate window is not stored again.
    pub message_id: Option<String>,
    /// `Nats-Expected-Last-Subject-Sequence`: store only if the subject's last message
    /// has this sequence (0 for none).
    pub expected_last_subject_sequence: Option<u64>,
}

/// The answer to a publish.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Published {
    /// The stream that stored it.
    pub stream: String,
    /// Its sequence there.
    pub sequence: u64,
    /// True when the message id was seen within the duplicate window: nothing new was
    /// stored and `sequence` is the earlier message's.
    pub duplicate: bool,
}

/// Where a [`Scanner`] starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScanStart {
    /// At this stream sequence (1 = the beginning).
    Sequence(u64),
    /// At the first message stored at or after this time.
    Time(OffsetDateTime),
    /// The last message of each subject the filter matches, then what comes after.
    LastPerSubject,
}

/// Reads one stream in order through an ephemeral consumer that never needs acks. Call
/// [`Scanner::close`] when done; an abandoned scanner's consumer is removed by the
/// server after a minute of inactivity.
pub struct Scanner {
    consumer: jetstream::consumer::Consumer<pull::Config>,
    handle: jetstream::stream::Stream,
    stream: String,
    batch: usize,
    pending_at_start: u64,
    last_consumer_sequence: u64,
}

impl std::fmt::Debug for Scanner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scanner")
            .field("stream", &self.stream)
            .field("pending_at_start", &self.pending_at_start)
            .finish_non_exhaustive()
    }
}

/// How long an abandoned scan consumer lives on the server.
const SCAN_INACTIVE_THRESHOLD: Duration = Duration::from_secs(60);

impl Scanner {
    /// Matching messages stored from the start position when the scan began.
    pub fn pending_at_start(&self) -> u64 {
        self.pending_at_start
    }

    fn convert(&mut self, message: jetstream::Message) -> Result<StoredMessage, OpsError> {
        let info = message.info().map_err(|e| OpsError::Nats {
            what: format!("metadata of a message of stream {}", self.stream),
            source: e,
        })?;
        if info.consumer_sequence != self.last_consumer_sequence + 1 {
            return Err(OpsError::Interrupted {
                stream: self.stream.clone(),
                expected_before: self.last_consumer_sequence,
                found: info.consumer_sequence,
            });
        }
        self.last_consumer_sequence = info.consumer_sequence;
        let (sequence, pending, stored_at) = (info.stream_sequence, info.pending, info.published);
        Ok(StoredMessage {
            sequence,
            subject: message.subject.to_string(),
            payload: message.payload.clone(),
            headers: header_pairs(message.headers.as_ref()),
            stored_at,
            pending,
        })
    }

    /// The next messages already stored, up to one batch; empty when the scan has caught
    /// up with the stream.
    ///
    /// # Errors
    /// [`OpsError::Nats`] when the server does not answer; [`OpsError::Interrupted`] when
    /// messages were lost on the way (run the scan again).
    pub async fn fetch(&mut self) -> Result<Vec<StoredMessage>, OpsError> {
        let what = format!("reading stream {}", self.stream);
        let mut batch = self
            .consumer
            .fetch()
            .max_messages(self.batch)
            .messages()
            .await
            .map_err(nats(what.clone()))?;
        let mut out = Vec::new();
        while let Some(message) = batch.next().await {
            let message = message.map_err(|e| OpsError::Nats {
                what: what.clone(),
                source: e,
            })?;
            out.push(self.convert(message)?);
        }
        Ok(out)
    }

    /// Waits up to `max_wait` for the next message, then returns it with whatever else
    /// is already stored; empty when nothing came.
    ///
    /// # Errors
    /// As [`Scanner::fetch`].
    pub async fn wait(&mut self, max_wait: Duration) -> Result<Vec<StoredMessage>, OpsError> {
        let what = format!("waiting on stream {}", self.stream);
        let mut batch = self
            .consumer
            .batch()
            .max_messages(1)
            .expires(max_wait)
            .messages()
            .await
            .map_err(nats(what.clone()))?;
        let mut out = Vec::new();
        while let Some(message) = batch.next().await {
            let message = message.map_err(|e| OpsError::Nats {
                what: what.clone(),
                source: e,
            })?;
            out.push(self.convert(message)?);
        }
        if !out.is_empty() {
            out.extend(self.fetch().await?);
        }
        Ok(out)
    }

    /// Asks the server whether the scan's consumer still exists: a server restarted
    /// without it answers a pull with nothing, which looks like a quiet stream.
    ///
    /// # Errors
    /// [`OpsError::Nats`] when the consumer is gone or the server does not answer.
    pub async fn check(&mut self) -> Result<(), OpsError> {
        self.consumer
            .info()
            .await
            .map(|_| ())
            .map_err(nats(format!("the scan consumer of stream {}", self.stream)))
    }

    /// Deletes the scan's consumer. Failing to is harmless: the server removes it after
    /// a minute of inactivity.
    pub async fn close(self) {
        let name = self.consumer.cached_info().name.clone();
        if let Err(e) = self.handle.delete_consumer(&name).await {
            tracing::debug!(stream = %self.stream, consumer = %name, error = %e, "scan consumer not deleted");
        }
    }
}

/// Operator access to the casebus streams. Cheap to clone.
#[derive(Clone)]
pub struct Ops {
    js: jetstream::Context,
}

impl std::fmt::Debug for Ops {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ops").finish_non_exhaustive()
    }
}

/// Keys of a consumer configuration that a reset may send back as they are; anything
/// else must be absent or empty, or the reset is refused (see
/// [`Ops::reset_consumer`]).
const RESETTABLE_CONFIG_KEYS: &[&str] = &[
    "deliver_subject",
    "durable_name",
    "name",
    "description",
    "deliver_group",
    "deliver_policy",
    "opt_start_seq",
    "opt_start_time",
    "ack_policy",
    "ack_wait",
    "max_deliver",
    "filter_subject",
    "filter_subjects",
    "replay_policy",
    "rate_limit_bps",
    "sample_freq",
    "max_waiting",
    "max_ack_pending",
    "headers_only",
    "flow_control",
    "idle_heartbeat",
    "max_batch",
    "max_bytes",
    "max_expires",
    "inactive_threshold",
    "num_replicas",
    "mem_storage",
    "backoff",
    "metadata",
    "priority_policy",
    "priority_groups",
    "priority_timeout",
    "pinned_ttl",
    "pause_until",
];

impl Ops {
    /// Operator access over a connected client.
    pub fn new(client: async_nats::Client, config: &BusConfig) -> Self {
        Self {
            js: Bus::context(client, config),
        }
    }

    /// Operator access over an open bus's connection.
    pub fn from_bus(bus: &Bus) -> Self {
        Self {
            js: bus.jetstream().clone(),
        }
    }

    async fn stream(&self, name: &str) -> Result<jetstream::stream::Stream, OpsError> {
        match self.js.get_stream(name).await {
            Ok(stream) => Ok(stream),
            Err(e) if is_stream_not_found(&e) => Err(OpsError::StreamMissing {
                stream: name.to_owned(),
            }),
            Err(e) => Err(nats(format!("stream {name}"))(e)),
        }
    }

    /// Creates or updates the casebus streams (see [`crate::provision::provision`]).
    ///
    /// # Errors
    /// [`OpsError::Provision`] with the provisioning error.
    pub async fn provision(&self, settings: &StreamSettings) -> Result<(), OpsError> {
        crate::provision::provision(&self.js, settings).await?;
        Ok(())
    }

    /// The status of a stream; `None` when it does not exist.
    ///
    /// # Errors
    /// [`OpsError::Nats`] when the server does not answer.
    pub async fn stream_status(&self, name: &str) -> Result<Option<StreamStatus>, OpsError> {
        let stream = match self.stream(name).await {
            Ok(stream) => stream,
            Err(OpsError::StreamMissing { .. }) => return Ok(None),
            Err(e) => return Err(e),
        };
        let info = stream.cached_info();
        let state = &info.state;
        let empty = state.messages == 0;
        Ok(Some(StreamStatus {
            name: info.config.name.clone(),
            subjects: info.config.subjects.clone(),
            messages: state.messages,
            bytes: state.bytes,
            first_sequence: state.first_sequence,
            last_sequence: state.last_sequence,
            first_time: (!empty).then_some(state.first_timestamp),
            last_time: (!empty).then_some(state.last_timestamp),
            consumer_count: state.consumer_count,
            replicas: info.config.num_replicas.max(1),
            deny_delete: info.config.deny_delete,
            deny_purge: info.config.deny_purge,
            duplicate_window: info.config.duplicate_window,
        }))
    }

    /// Every consumer of a stream, ordered by name.
    ///
    /// # Errors
    /// [`OpsError::StreamMissing`]; [`OpsError::Nats`] when the server does not answer.
    pub async fn consumers(&self, stream: &str) -> Result<Vec<ConsumerStatus>, OpsError> {
        let handle = self.stream(stream).await?;
        let mut list = handle.consumers();
        let mut out = Vec::new();
        while let Some(info) = list.next().await {
            let info = info.map_err(|e| OpsError::Nats {
                what: format!("consumers of stream {stream}"),
                source: Box::new(e),
            })?;
            out.push(ConsumerStatus::from_info(&info));
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    /// One consumer's status.
    ///
    /// # Errors
    /// [`OpsError::StreamMissing`], [`OpsError::ConsumerMissing`]; [`OpsError::Nats`]
    /// when the server does not answer.
    pub async fn consumer(&self, stream: &str, name: &str) -> Result<ConsumerStatus, OpsError> {
        use async_nats::jetstream::context::ConsumerInfoErrorKind as Kind;
        let handle = self.stream(stream).await?;
        match handle.consumer_info(name).await {
            Ok(info) => Ok(ConsumerStatus::from_info(&info)),
            Err(e) if matches!(e.kind(), Kind::NotFound) => Err(OpsError::ConsumerMissing {
                stream: stream.to_owned(),
                consumer: name.to_owned(),
            }),
            Err(e) if matches!(e.kind(), Kind::InvalidName) => Err(OpsError::Invalid {
                what: "consumer name",
                reason: format!("{name:?} is not a valid consumer name"),
            }),
            Err(e) => Err(nats(format!("consumer {name} of stream {stream}"))(e)),
        }
    }

    async fn ephemeral(
        &self,
        stream: &str,
        filter: Option<&str>,
        start: ScanStart,
    ) -> Result<
        (
            jetstream::consumer::Consumer<pull::Config>,
            jetstream::stream::Stream,
        ),
        OpsError,
    > {
        let handle = self.stream(stream).await?;
        let deliver_policy = match start {
            ScanStart::Sequence(s) if s <= 1 => DeliverPolicy::All,
            ScanStart::Sequence(start_sequence) => {
                DeliverPolicy::ByStartSequence { start_sequence }
            }
            ScanStart::Time(start_time) => DeliverPolicy::ByStartTime { start_time },
            ScanStart::LastPerSubject => DeliverPolicy::LastPerSubject,
        };
        let config = pull::Config {
            description: Some("casebus operator read".into()),
            deliver_policy,
            ack_policy: AckPolicy::None,
            filter_subject: filter.unwrap_or_default().to_owned(),
            inactive_threshold: SCAN_INACTIVE_THRESHOLD,
            memory_storage: true,
            num_replicas: 1,
            ..Default::default()
        };
        let consumer = handle
            .create_consumer(config)
            .await
            .map_err(nats(format!("a read consumer on stream {stream}")))?;
        Ok((consumer, handle))
    }

    /// Starts reading `stream` (optionally only `filter`ed subjects) in order from
    /// `start`.
    ///
    /// # Errors
    /// [`OpsError::StreamMissing`]; [`OpsError::Nats`] when the server refuses.
    pub async fn scan(
        &self,
        stream: &str,
        filter: Option<&str>,
        start: ScanStart,
        batch: usize,
    ) -> Result<Scanner, OpsError> {
        let (consumer, handle) = self.ephemeral(stream, filter, start).await?;
        let pending_at_start = consumer.cached_info().num_pending;
        Ok(Scanner {
            consumer,
            handle,
            stream: stream.to_owned(),
            batch: batch.max(1),
            pending_at_start,
            last_consumer_sequence: 0,
        })
    }

    /// How many messages of `stream` matching `filter` are stored from sequence `start`
    /// on: what a consumer with that filter starting there would receive now.
    ///
    /// # Errors
    /// [`OpsError::StreamMissing`]; [`OpsError::Nats`] when the server refuses.
    pub async fn count_from(
        &self,
        stream: &str,
        filter: Option<&str>,
        start: u64,
    ) -> Result<u64, OpsError> {
        let scanner = self
            .scan(stream, filter, ScanStart::Sequence(start), 1)
            .await?;
        let count = scanner.pending_at_start();
        scanner.close().await;
        Ok(count)
    }

    /// The sequence of the first message of `stream` matching `filter` stored at or
    /// after `at`; `None` when there is none (yet).
    ///
    /// # Errors
    /// [`OpsError::StreamMissing`]; [`OpsError::Nats`] when the server refuses.
    pub async fn first_sequence_at(
        &self,
        stream: &str,
        filter: Option<&str>,
        at: OffsetDateTime,
    ) -> Result<Option<u64>, OpsError> {
        let mut scanner = self.scan(stream, filter, ScanStart::Time(at), 1).await?;
        let first = if scanner.pending_at_start() == 0 {
            None
        } else {
            scanner.fetch().await?.first().map(|m| m.sequence)
        };
        scanner.close().await;
        Ok(first)
    }

    /// One message by sequence; `None` when the stream has no message there.
    ///
    /// # Errors
    /// [`OpsError::StreamMissing`]; [`OpsError::Nats`] when the server does not answer.
    pub async fn get_message(
        &self,
        stream: &str,
        sequence: u64,
    ) -> Result<Option<StoredMessage>, OpsError> {
        let handle = self.stream(stream).await?;
        match handle.get_raw_message(sequence).await {
            Ok(message) => Ok(Some(StoredMessage {
                sequence: message.sequence,
                subject: message.subject.to_string(),
                payload: message.payload.clone(),
                headers: header_pairs(Some(&message.headers)),
                stored_at: message.time,
                pending: 0,
            })),
            Err(e) => match e.kind() {
                LastRawMessageErrorKind::NoMessageFound => Ok(None),
                LastRawMessageErrorKind::JetStream(inner)
                    if inner.error_code() == ErrorCode::NO_MESSAGE_FOUND =>
                {
                    Ok(None)
                }
                _ => Err(nats(format!("message {sequence} of stream {stream}"))(e)),
            },
        }
    }

    /// The last message stored on `subject` (a literal subject), by direct get; `None`
    /// when the subject has none.
    ///
    /// # Errors
    /// [`OpsError::StreamMissing`]; [`OpsError::Nats`] when the server does not answer.
    pub async fn last_on_subject(
        &self,
        stream: &str,
        subject: &str,
    ) -> Result<Option<StoredMessage>, OpsError> {
        use async_nats::jetstream::stream::DirectGetErrorKind;
        let handle = self.stream(stream).await?;
        match handle.direct_get_last_for_subject(subject).await {
            Ok(message) => Ok(Some(StoredMessage {
                sequence: message.sequence,
                subject: message.subject.to_string(),
                payload: message.payload.clone(),
                headers: header_pairs(Some(&message.headers)),
                stored_at: message.time,
                pending: 0,
            })),
            Err(e) if matches!(e.kind(), DirectGetErrorKind::NotFound) => Ok(None),
            Err(e) => Err(nats(format!(
                "last message on {subject} of stream {stream}"
            ))(e)),
        }
    }

    /// Deletes one message (only streams without deny_delete allow it). Returns false
    /// when there was no such message.
    ///
    /// # Errors
    /// [`OpsError::StreamMissing`]; [`OpsError::Nats`] when the server refuses.
    pub async fn delete_message(&self, stream: &str, sequence: u64) -> Result<bool, OpsError> {
        let handle = self.stream(stream).await?;
        match handle.delete_message(sequence).await {
            Ok(deleted) => Ok(deleted),
            Err(e) => {
                if let async_nats::jetstream::stream::DeleteMessageErrorKind::JetStream(inner) =
                    e.kind()
                    && (inner.error_code() == ErrorCode::SEQUENCE_NOT_FOUND
                        || inner.error_code() == ErrorCode::NO_MESSAGE_FOUND)
                {
                    return Ok(false);
                }
                Err(nats(format!(
                    "deleting message {sequence} of stream {stream}"
                ))(e))
            }
        }
    }

    /// Publishes raw bytes with headers, under `options`, and waits for the ack.
    ///
    /// # Errors
    /// [`OpsError::WrongLastSequence`] when the expected last subject sequence no longer
    /// holds (nothing was written); [`OpsError::Nats`] when no stream took it or the
    /// server did not answer.
    pub async fn publish(
        &self,
        subject: &str,
        payload: Bytes,
        message_headers: &[(String, String)],
        options: &PublishOptions,
    ) -> Result<Published, OpsError> {
        let mut headers = HeaderMap::new();
        for (name, value) in message_headers {
            headers.append(name.as_str(), value.as_str());
        }
        let mut publish = PublishMessage::build().payload(payload).headers(headers);
        if let Some(id) = &options.message_id {
            publish = publish.message_id(id);
        }
        if let Some(expected) = options.expected_last_subject_sequence {
            publish = publish.expected_last_subject_sequence(expected);
        }
        let result = match self.js.send_publish(subject.to_owned(), publish).await {
            Ok(ack) => ack.await,
            Err(e) => Err(e),
        };
        match result {
            Ok(ack) => Ok(Published {
                stream: ack.stream,
                sequence: ack.sequence,
                duplicate: ack.duplicate,
            }),
            Err(e) if e.kind() == PublishErrorKind::WrongLastSequence => {
                Err(OpsError::WrongLastSequence {
                    subject: subject.to_owned(),
                    expected: options.expected_last_subject_sequence.unwrap_or_default(),
                })
            }
            Err(e) => Err(nats(format!("publish to {subject}"))(e)),
        }
    }

    /// Publishes an audit record on `audit.<office>`, with `message_id` as
    /// `Nats-Msg-Id` so a repeated action within the duplicate window is recorded once.
    ///
    /// # Errors
    /// [`OpsError::Invalid`] when the office is not one subject token of
    /// `[a-z0-9_:-]`; otherwise as [`Ops::publish`].
    pub async fn publish_audit(
        &self,
        record: &AuditRecord,
        message_id: Option<&str>,
    ) -> Result<Published, OpsError> {
        let office_ok = !record.office.is_empty()
            && record
                .office
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "_:-".contains(c));
        if !office_ok {
            return Err(OpsError::Invalid {
                what: "audit office",
                reason: format!("{:?} must be 1 token of [a-z0-9_:-]", record.office),
            });
        }
        self.publish(
            &record.subject(),
            record.to_json().into(),
            &[],
            &PublishOptions {
                message_id: message_id.map(str::to_owned),
                expected_last_subject_sequence: None,
            },
        )
        .await
    }

    /// Resets a durable consumer so that it next receives the message at
    /// `start_sequence`: NATS 2.9 has no reset API, so the consumer is deleted and
    /// created again with the same settings (filter, acks, limits, everything) except
    /// that it delivers from `start_sequence`.
    ///
    /// The caller checks first that no client is pulling (see
    /// [`ConsumerStatus::waiting`]): a client pulling during the reset sees errors until
    /// the consumer is back, then goes on from `start_sequence`.
    ///
    /// # Errors
    /// - [`OpsError::ConsumerMissing`], [`OpsError::StreamMissing`];
    /// - [`OpsError::NotResettable`] for an ephemeral consumer or one with settings this
    ///   build does not know (nothing is changed then);
    /// - [`OpsError::ResetFailed`] when the new consumer was refused after the old one
    ///   was deleted; the old one is then restored at the sequence after its position;
    /// - [`OpsError::Nats`] when the server does not answer.
    pub async fn reset_consumer(
        &self,
        stream: &str,
        name: &str,
        start_sequence: u64,
    ) -> Result<ConsumerStatus, OpsError> {
        if start_sequence == 0 {
            return Err(OpsError::Invalid {
                what: "start sequence",
                reason: "must be 1 or more".into(),
            });
        }
        let current = self.consumer(stream, name).await?;
        if !current.durable {
            return Err(OpsError::NotResettable {
                consumer: name.to_owned(),
                reason: "it is not durable".into(),
            });
        }
        // Read the configuration as the server holds it, so settings this client build
        // does not model are carried over rather than silently dropped.
        let raw: serde_json::Value = self
            .js
            .request(
                format!("CONSUMER.INFO.{stream}.{name}"),
                &serde_json::json!({}),
            )
            .await
            .map_err(nats(format!("consumer {name} of stream {stream}")))?;
        if let Some(error) = raw.get("error") {
            return Err(OpsError::Nats {
                what: format!("consumer {name} of stream {stream}"),
                source: error.to_string().into(),
            });
        }
        let original = raw
            .get("config")
            .and_then(serde_json::Value::as_object)
            .cloned()
            .ok_or_else(|| OpsError::NotResettable {
                consumer: name.to_owned(),
                reason: "the server returned no configuration".into(),
            })?;
        let unknown: Vec<&str> = original
            .iter()
            .filter(|(key, value)| {
                !RESETTABLE_CONFIG_KEYS.contains(&key.as_str()) && !is_empty_json(value)
            })
            .map(|(key, _)| key.as_str())
            .collect();
        if !unknown.is_empty() {
            return Err(OpsError::NotResettable {
                consumer: name.to_owned(),
                reason: format!(
                    "it has settings this build cannot carry over ({}); reset it with the nats CLI",
                    unknown.join(", ")
                ),
            });
        }
        let with_start = |start: u64| {
            let mut config = original.clone();
            config.insert("deliver_policy".into(), "by_start_sequence".into());
            config.insert("opt_start_seq".into(), start.into());
            config.remove("opt_start_time");
            if let Some(serde_json::Value::Object(metadata)) = config.get_mut("metadata") {
                // Keys under `_nats.` are set by the server itself.
                metadata.retain(|k, _| !k.starts_with("_nats."));
            }
            serde_json::json!({ "stream_name": stream, "config": config })
        };

        let handle = self.stream(stream).await?;
        handle
            .delete_consumer(name)
            .await
            .map_err(nats(format!("deleting consumer {name} of stream {stream}")))?;
        tracing::info!(
            stream,
            consumer = name,
            start_sequence,
            "consumer deleted for reset"
        );
        let create = |body: serde_json::Value| async move {
            let answer: Result<serde_json::Value, _> = self
                .js
                .request(format!("CONSUMER.DURABLE.CREATE.{stream}.{name}"), &body)
                .await;
            match answer {
                Ok(value) => match value.get("error") {
                    Some(error) => Err(error
                        .get("description")
                        .and_then(serde_json::Value::as_str)
                        .map_or_else(|| error.to_string(), str::to_owned)),
                    None => Ok(()),
                },
                Err(e) => Err(e.to_string()),
            }
        };
        if let Err(reason) = create(with_start(start_sequence)).await {
            // Where the old consumer stood: its ack floor, or what it was last delivered
            // when nothing awaited an ack.
            let position = if current.ack_pending == 0 {
                current.ack_floor_sequence.max(current.delivered_sequence)
            } else {
                current.ack_floor_sequence
            };
            let restored_at = position + 1;
            let restored = create(with_start(restored_at)).await.is_ok();
            tracing::error!(stream, consumer = name, error = %reason, restored, "consumer reset failed");
            return Err(OpsError::ResetFailed {
                consumer: name.to_owned(),
                reason,
                restored_at,
                restored,
            });
        }
        tracing::info!(
            stream,
            consumer = name,
            start_sequence,
            "consumer recreated"
        );
        self.consumer(stream, name).await
    }
}

fn is_empty_json(value: &serde_json::Value) -> bool {
    match value {
        serde_json::Value::Null => true,
        serde_json::Value::Bool(b) => !b,
        serde_json::Value::Number(n) => n.as_f64() == Some(0.0),
        serde_json::Value::String(s) => s.is_empty(),
        serde_json::Value::Array(a) => a.is_empty(),
        serde_json::Value::Object(o) => o.is_empty(),
    }
}

#[cfg(test)]
mod tests {
    use time::macros::datetime;

    use super::*;

    #[test]
    fn an_audit_record_round_trips_through_json_and_ignores_unknown_fields() {
        let record = AuditRecord {
            office: "customs:ningbo".into(),
            actor: "officer-7".into(),
            case_id: "C-1".into(),
            versions: vec![1, 2, 5],
            at: datetime!(2026-03-01 8:00 UTC),
            method: "GetTimeline".into(),
            detail: None,
        };
        let json = record.to_json();
        assert_eq!(AuditRecord::from_json(&json), Ok(record.clone()));
        assert_eq!(record.subject(), "audit.customs:ningbo");

        let mut value: serde_json::Value = serde_json::from_slice(&json).expect("json");
        value["page_token"] = "x".into();
        let with_extra = serde_json::to_vec(&value).expect("json");
        assert_eq!(AuditRecord::from_json(&with_extra), Ok(record));
    }

    #[test]
    fn an_audit_record_missing_a_field_is_refused_naming_it() {
        let err = AuditRecord::from_json(br#"{"office":"operator","at":"2026-03-01T08:00:00Z"}"#)
            .expect_err("no actor");
        assert!(err.contains("actor"), "{err}");
    }

    #[test]
    fn empty_settings_do_not_block_a_reset() {
        assert!(is_empty_json(&serde_json::json!([])));
        assert!(is_empty_json(&serde_json::json!({})));
        assert!(is_empty_json(&serde_json::json!(0)));
        assert!(!is_empty_json(&serde_json::json!(["case.a"])));
        assert!(!is_empty_json(&serde_json::json!({"k": "v"})));
    }
}
