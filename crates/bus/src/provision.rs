//! Idempotent provisioning of the casebus streams with the settings of the design brief:
//! `CASES` (file storage, deny delete and purge, no age limit, a duplicate window, direct
//! get), `CASES_DLQ` and `AUDIT` (deny delete), and `CHECKPOINTS` (the transparency log's
//! checkpoints and cosignatures, deny delete and purge). Running it again changes nothing; a
//! stream with a setting that cannot be changed in place is reported, never recreated.

use std::time::Duration;

use async_nats::jetstream::{self, stream};

use crate::error::ProvisionError;
use crate::subjects::{
    AUDIT_STREAM, AUDIT_SUBJECTS, CASES_STREAM, CASES_SUBJECTS, CHECKPOINTS_STREAM,
    CHECKPOINTS_SUBJECTS, DLQ_STREAM, DLQ_SUBJECTS,
};

/// Settings an operator may choose.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamSettings {
    /// Replicas of every stream: 1 (single node) or 3 (cluster).
    pub replicas: usize,
    /// How long JetStream remembers `Nats-Msg-Id`s to drop duplicate publishes. Retries
    /// after the window are still recognised by the appender, which looks the event id
    /// up in the case.
    pub duplicate_window: Duration,
    /// Largest stored message (signed event plus headers) in bytes.
    pub max_message_bytes: i32,
}

impl Default for StreamSettings {
    fn default() -> Self {
        Self {
            replicas: 1,
            duplicate_window: Duration::from_secs(2 * 60),
            max_message_bytes: 256 * 1024,
        }
    }
}

impl StreamSettings {
    fn validate(&self) -> Result<(), ProvisionError> {
        if self.replicas != 1 && self.replicas != 3 {
            return Err(ProvisionError::InvalidSetting {
                setting: "replicas",
                reason: format!("must be 1 or 3, not {}", self.replicas),
            });
        }
        if self.duplicate_window < Duration::from_secs(1) {
            return Err(ProvisionError::InvalidSetting {
                setting: "duplicate_window",
                reason: "must be at least 1s".into(),
            });
        }
        if !(4096..=1024 * 1024).contains(&self.max_message_bytes) {
            return Err(ProvisionError::InvalidSetting {
                setting: "max_message_bytes",
                reason: "must be between 4 KiB and 1 MiB".into(),
            });
        }
        Ok(())
    }
}

/// The `CASES` stream configuration.
pub fn cases_config(s: &StreamSettings) -> stream::Config {
    stream::Config {
        name: CASES_STREAM.into(),
        description: Some("casebus case events, the source of truth".into()),
        subjects: vec![CASES_SUBJECTS.into()],
        storage: stream::StorageType::File,
        num_replicas: s.replicas,
        retention: stream::RetentionPolicy::Limits,
        max_age: Duration::ZERO,
        max_messages: -1,
        max_bytes: -1,
        max_messages_per_subject: -1,
        max_message_size: s.max_message_bytes,
        discard: stream::DiscardPolicy::New,
        duplicate_window: s.duplicate_window,
        deny_delete: true,
        deny_purge: true,
        allow_direct: true,
        ..Default::default()
    }
}

/// The `CASES_DLQ` stream configuration (operators may drop dead letters).
pub fn dlq_config(s: &StreamSettings) -> stream::Config {
    stream::Config {
        name: DLQ_STREAM.into(),
        description: Some("casebus messages that could not be decoded or verified".into()),
        subjects: vec![DLQ_SUBJECTS.into()],
        storage: stream::StorageType::File,
        num_replicas: s.replicas,
        // A dead letter carries the original message plus headers.
        max_message_size: s.max_message_bytes.saturating_add(8 * 1024),
        duplicate_window: s.duplicate_window,
        allow_direct: true,
        ..Default::default()
    }
}

/// The `AUDIT` stream configuration.
pub fn audit_config(s: &StreamSettings) -> stream::Config {
    stream::Config {
        name: AUDIT_STREAM.into(),
        description: Some("casebus timeline reads, one record per read".into()),
        subjects: vec![AUDIT_SUBJECTS.into()],
        storage: stream::StorageType::File,
        num_replicas: s.replicas,
        deny_delete: true,
        deny_purge: true,
        duplicate_window: s.duplicate_window,
        allow_direct: true,
        ..Default::default()
    }
}

/// The `CHECKPOINTS` stream configuration: the log's signed checkpoints and the
/// witnesses' cosignatures, kept like evidence (deny delete and purge, no limits), with
/// direct get for the last checkpoint of an origin.
pub fn checkpoints_config(s: &StreamSettings) -> stream::Config {
    stream::Config {
        name: CHECKPOINTS_STREAM.into(),
        description: Some("casebus transparency log checkpoints and witness cosignatures".into()),
        subjects: CHECKPOINTS_SUBJECTS
            .iter()
            .map(|s| (*s).to_owned())
            .collect(),
        storage: stream::StorageType::File,
        num_replicas: s.replicas,
        retention: stream::RetentionPolicy::Limits,
        max_age: Duration::ZERO,
        max_messages: -1,
        max_bytes: -1,
        max_messages_per_subject: -1,
        // A checkpoint note with its signatures is a few hundred bytes.
        max_message_size: 64 * 1024,
        discard: stream::DiscardPolicy::New,
        duplicate_window: s.duplicate_window,
        deny_delete: true,
        deny_purge: true,
        allow_direct: true,
        ..Default::default()
    }
}

/// Creates the four streams, or checks and updates them when they exist.
///
/// # Errors
/// [`ProvisionError::InvalidSetting`] for bad settings (nothing is touched);
/// [`ProvisionError::Incompatible`] when a stream exists with a setting that cannot be
/// changed in place (storage, replicas, subjects); [`ProvisionError::Nats`] when the
/// server refuses or does not answer.
pub async fn provision(
    js: &jetstream::Context,
    settings: &StreamSettings,
) -> Result<(), ProvisionError> {
    settings.validate()?;
    ensure(js, CASES_STREAM, cases_config(settings)).await?;
    ensure(js, DLQ_STREAM, dlq_config(settings)).await?;
    ensure(js, AUDIT_STREAM, audit_config(settings)).await?;
    ensure(js, CHECKPOINTS_STREAM, checkpoints_config(settings)).await?;
    Ok(())
}

async fn ensure(
    js: &jetstream::Context,
    name: &'static str,
    wanted: stream::Config,
) -> Result<(), ProvisionError> {
    let nats = |source: NatsErrorLike| ProvisionError::Nats {
        stream: name,
        source: source.0,
    };
    match js.get_stream(name).await {
        Ok(mut existing) => {
            let info = existing
                .info()
                .await
                .map_err(|e| nats(NatsErrorLike(Box::new(e))))?;
            let have = &info.config;
            let incompatible = |setting: &'static str, found: String, expected: String| {
                ProvisionError::Incompatible {
                    stream: name,
                    setting,
                    found,
                    expected,
                }
            };
            if have.storage != wanted.storage {
                return Err(incompatible(
                    "storage",
                    format!("{:?}", have.storage),
                    format!("{:?}", wanted.storage),
                ));
            }
            if have.subjects != wanted.subjects {
                return Err(incompatible(
                    "subjects",
                    have.subjects.join(","),
                    wanted.subjects.join(","),
                ));
            }
            if have.num_replicas.max(1) != wanted.num_replicas {
                return Err(incompatible(
                    "replicas",
                    have.num_replicas.to_string(),
                    wanted.num_replicas.to_string(),
                ));
            }
            let differs = have.deny_delete != wanted.deny_delete
                || have.deny_purge != wanted.deny_purge
                || have.allow_direct != wanted.allow_direct
                || have.duplicate_window != wanted.duplicate_window
                || have.max_message_size != wanted.max_message_size;
            if differs {
                if have.deny_delete && !wanted.deny_delete || have.deny_purge && !wanted.deny_purge
                {
                    // The server refuses to lift these protections, and we never want to.
                    return Err(incompatible(
                        "deny_delete/deny_purge",
                        "on".into(),
                        "off".into(),
                    ));
                }
                tracing::info!(stream = name, "updating stream settings");
                js.update_stream(wanted)
                    .await
                    .map_err(|e| nats(NatsErrorLike(Box::new(e))))?;
            }
            Ok(())
        }
        Err(err) if is_stream_not_found(&err) => {
            tracing::info!(stream = name, "creating stream");
            js.create_stream(wanted)
                .await
                .map_err(|e| nats(NatsErrorLike(Box::new(e))))?;
            Ok(())
        }
        Err(err) => Err(nats(NatsErrorLike(Box::new(err)))),
    }
}

struct NatsErrorLike(crate::error::NatsError);

pub(crate) fn is_stream_not_found(err: &jetstream::context::GetStreamError) -> bool {
    matches!(
        err.kind(),
        jetstream::context::GetStreamErrorKind::JetStream(e)
            if e.error_code() == jetstream::ErrorCode::STREAM_NOT_FOUND
    )
}
