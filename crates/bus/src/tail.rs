//! Reading `CASES` in order from a position, catch-up then live, with an ordered
//! consumer (ephemeral, recreated by the client on any gap). Used by inboxes, feeds and
//! the operator's `tail --follow`. Messages come raw: callers verify them.

use std::pin::Pin;

use async_nats::jetstream::consumer::{DeliverPolicy, pull::OrderedConfig};
use bytes::Bytes;
use futures::{Stream, StreamExt as _};

use casebus_proto::CaseId;

use crate::bus::Bus;
use crate::error::LoadError;
use crate::subjects::{CASES_SUBJECTS, case_subject};

/// One message of `CASES` as stored.
#[derive(Debug, Clone)]
pub struct RawEvent {
    /// Stream sequence.
    pub sequence: u64,
    /// Subject (`case.<id>`).
    pub subject: String,
    /// The stored bytes (a `SignedEvent`, unless it is a poison message).
    pub payload: Bytes,
    /// Header name and value pairs.
    pub headers: Vec<(String, String)>,
    /// Messages still pending after this one when it was delivered (0 = caught up).
    pub pending: u64,
}

/// A stream of raw events.
pub type RawEvents = Pin<Box<dyn Stream<Item = Result<RawEvent, LoadError>> + Send>>;

impl Bus {
    /// Every message from stream sequence `from` (1 = the beginning) on, optionally of
    /// one case only, in order; after the last stored message it waits for new ones.
    ///
    /// # Errors
    /// [`LoadError::Nats`] when the ordered consumer cannot be created; errors during
    /// the stream come as items.
    pub async fn tail(&self, from: u64, case: Option<&CaseId>) -> Result<RawEvents, LoadError> {
        let label = case.map_or_else(|| "*".to_owned(), ToString::to_string);
        let fail = |e: crate::error::NatsError| LoadError::Nats {
            case_id: label.clone(),
            source: e,
        };
        let consumer = self
            .cases()
            .create_consumer(OrderedConfig {
                filter_subject: case.map_or_else(|| CASES_SUBJECTS.to_owned(), case_subject),
                deliver_policy: if from <= 1 {
                    DeliverPolicy::All
                } else {
                    DeliverPolicy::ByStartSequence {
                        start_sequence: from,
                    }
                },
                ..Default::default()
            })
            .await
            .map_err(|e| fail(Box::new(e)))?;
        let messages = consumer.messages().await.map_err(|e| fail(Box::new(e)))?;
        let label2 = label.clone();
        Ok(Box::pin(messages.map(move |item| {
            let message = item.map_err(|e| LoadError::Nats {
                case_id: label2.clone(),
                source: Box::new(e),
            })?;
            let (sequence, pending) = message
                .info()
                .map(|i| (i.stream_sequence, i.pending))
                .map_err(|e| LoadError::Nats {
                    case_id: label2.clone(),
                    source: e,
                })?;
            let headers = message
                .headers
                .as_ref()
                .map(|h| {
                    h.iter()
                        .flat_map(|(name, values)| {
                            values
                                .iter()
                                .map(move |v| (name.to_string(), v.as_str().to_owned()))
                        })
                        .collect()
                })
                .unwrap_or_default();
            Ok(RawEvent {
                sequence,
                subject: message.subject.to_string(),
                payload: message.payload.clone(),
                headers,
                pending,
            })
        })))
    }
}
