//! Reading `CASES` in order from a position, catch-up then live, with an ordered
//! consumer (ephemeral, recreated by the client on any gap). Used by inboxes, feeds and
//! the operator's `tail --follow`. Messages come raw: callers verify them.
//!
//! A tail also watches its connection: when the client is connected again to a server
//! (a restarted one, or another of the cluster), the tail makes a new ordered consumer
//! from the message after the last one it delivered. The client's own ordered consumer
//! notices a lost consumer only through missed heartbeats and retries with a backoff of
//! up to ten seconds, which after a restart left a tail silent for about 15 s; this
//! check makes it seconds or less (`crates/bus/tests/tail_restart.rs`).

use std::pin::Pin;
use std::time::Duration;

use async_nats::connection::State;
use async_nats::jetstream::consumer::DeliverPolicy;
use async_nats::jetstream::consumer::pull::{Ordered, OrderedConfig};
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

/// How often a tail checks whether its client connected again.
const RECONNECT_CHECK: Duration = Duration::from_millis(250);

/// The connection a tail's consumer was made on: the server's id (new at every server
/// start) and the client's id on it (new at every connection).
fn connection_of(client: &async_nats::Client) -> (String, u64) {
    let info = client.server_info();
    (info.server_id, info.client_id)
}

/// A tail's state between messages.
struct Follow {
    bus: Bus,
    label: String,
    filter: String,
    /// The first sequence not delivered yet.
    next: u64,
    messages: Ordered,
    /// What [`connection_of`] said when `messages` was made.
    connection: (String, u64),
    check: tokio::time::Interval,
}

impl Follow {
    /// The next message, or the end of the stream.
    async fn next_item(&mut self) -> Option<Result<RawEvent, LoadError>> {
        loop {
            tokio::select! {
                item = self.messages.next() => {
                    let item = item?;
                    let event = raw_event(item, &self.label);
                    if let Ok(event) = &event {
                        self.next = event.sequence + 1;
                    }
                    return Some(event);
                }
                _ = self.check.tick() => self.reopen_after_reconnect().await,
            }
        }
    }

    /// Makes a new ordered consumer from `next` when the client is connected on another
    /// connection than the consumer was made on. A failure is logged and tried again at
    /// the next check; the old consumer goes on meanwhile.
    async fn reopen_after_reconnect(&mut self) {
        let client = self.bus.client();
        if client.connection_state() != State::Connected {
            return;
        }
        let connection = connection_of(client);
        if connection == self.connection {
            return;
        }
        match open(&self.bus, &self.filter, self.next).await {
            Ok(messages) => {
                tracing::info!(subject = %self.filter, from = self.next, "nats connected again; tail resumed");
                self.messages = messages;
                self.connection = connection;
            }
            Err(error) => {
                tracing::debug!(subject = %self.filter, error = %error, "tail not resumed yet; retrying");
            }
        }
    }
}

/// An ordered consumer's messages on `filter` from stream sequence `from` on.
async fn open(bus: &Bus, filter: &str, from: u64) -> Result<Ordered, crate::error::NatsError> {
    let consumer = bus
        .cases()
        .create_consumer(OrderedConfig {
            filter_subject: filter.to_owned(),
            deliver_policy: if from <= 1 {
                DeliverPolicy::All
            } else {
                DeliverPolicy::ByStartSequence {
                    start_sequence: from,
                }
            },
            ..Default::default()
        })
        .await?;
    Ok(consumer.messages().await?)
}

/// One delivered message as a [`RawEvent`].
fn raw_event(
    item: Result<
        async_nats::jetstream::Message,
        async_nats::jetstream::consumer::pull::OrderedError,
    >,
    label: &str,
) -> Result<RawEvent, LoadError> {
    let fail = |source: crate::error::NatsError| LoadError::Nats {
        case_id: label.to_owned(),
        source,
    };
    let message = item.map_err(|e| fail(Box::new(e)))?;
    let (sequence, pending) = message
        .info()
        .map(|i| (i.stream_sequence, i.pending))
        .map_err(fail)?;
    let headers = crate::ops::header_pairs(message.headers.as_ref());
    Ok(RawEvent {
        sequence,
        subject: message.subject.to_string(),
        payload: message.payload.clone(),
        headers,
        pending,
    })
}

impl Bus {
    /// Every message from stream sequence `from` (1 = the beginning) on, optionally of
    /// one case only, in order; after the last stored message it waits for new ones.
    /// After the client connects again (a restarted server, say) it resumes from the
    /// message after the last one delivered.
    ///
    /// # Errors
    /// [`LoadError::Nats`] when the ordered consumer cannot be created; errors during
    /// the stream come as items.
    pub async fn tail(&self, from: u64, case: Option<&CaseId>) -> Result<RawEvents, LoadError> {
        let label = case.map_or_else(|| "*".to_owned(), ToString::to_string);
        let filter = case.map_or_else(|| CASES_SUBJECTS.to_owned(), case_subject);
        let connection = connection_of(self.client());
        let messages = open(self, &filter, from)
            .await
            .map_err(|source| LoadError::Nats {
                case_id: label.clone(),
                source,
            })?;
        let mut check = tokio::time::interval_at(
            tokio::time::Instant::now() + RECONNECT_CHECK,
            RECONNECT_CHECK,
        );
        check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let follow = Follow {
            bus: self.clone(),
            label,
            filter,
            next: from.max(1),
            messages,
            connection,
            check,
        };
        Ok(Box::pin(futures::stream::unfold(
            follow,
            |mut follow| async move {
                let item = follow.next_item().await?;
                Some((item, follow))
            },
        )))
    }
}
