//! `Bus`: a connected handle on the casebus streams (JetStream context sized for
//! pipelined publishing, the `CASES` stream, the office registry), and reading a case's
//! messages in order with direct get.
//!
//! The registry can be replaced while the bus runs ([`Bus::replace_registry`]): every
//! clone of the bus, and so every appender and consumer built on it, verifies with the
//! new one from its next message on. This is how a service picks up a rotated key
//! without a restart.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use async_nats::jetstream::consumer::DeliverPolicy;
use async_nats::jetstream::consumer::pull::OrderedConfig;
use async_nats::jetstream::message::StreamMessage;
use async_nats::jetstream::{self, context::ContextBuilder, stream::DirectGetErrorKind};
use futures::StreamExt as _;

use casebus_integrity::OfficeRegistry;
use casebus_proto::CaseId;

use crate::error::{BusError, LoadError};
use crate::provision::is_stream_not_found;
use crate::store::{CaseHead, LoadedCase, Stored};
use crate::subjects::{CASES_STREAM, case_subject};

/// Messages of a case read by direct gets, one request each, before the rest of its
/// history is read with one ordered consumer.
pub const DIRECT_READS: usize = 16;

/// How the bus uses its NATS connection.
#[derive(Debug, Clone)]
pub struct BusConfig {
    /// Publishes awaiting their ack at once; further publishes wait (backpressure)
    /// rather than fail. The JetStream default of 5,000 then erroring is never wanted.
    pub max_ack_inflight: usize,
    /// Ceiling for JetStream API requests and publish acks.
    pub request_timeout: Duration,
    /// How far an event's `recorded_at` may be from the time the stream stored it, either
    /// way; consumers dead-letter (code `clock_skew`) and loaders leave out an event
    /// beyond it. The signer chooses `recorded_at`, and its key's validity is judged at
    /// it, so this is what stops a backdated event.
    pub max_clock_skew: Duration,
}

impl Default for BusConfig {
    fn default() -> Self {
        Self {
            max_ack_inflight: 1024,
            request_timeout: Duration::from_secs(5),
            max_clock_skew: Duration::from_secs(300),
        }
    }
}

/// A connected handle on the casebus streams. Cheap to clone.
#[derive(Clone)]
pub struct Bus {
    client: async_nats::Client,
    js: jetstream::Context,
    cases: jetstream::stream::Stream,
    /// Shared by every clone, so one replacement reaches every user of the bus. A
    /// reader takes a snapshot (an `Arc` clone) and never holds the lock while working.
    registry: Arc<RwLock<Arc<OfficeRegistry>>>,
    max_clock_skew: Duration,
    /// How long one read of a case's history may wait for its next message.
    request_timeout: Duration,
}

impl std::fmt::Debug for Bus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bus").finish_non_exhaustive()
    }
}

impl Bus {
    /// Opens the bus on a connected client. The streams must exist (see
    /// [`crate::provision::provision`]).
    ///
    /// # Errors
    /// [`BusError::StreamMissing`] when `CASES` does not exist; [`BusError::Nats`] when
    /// the server does not answer.
    pub async fn open(
        client: async_nats::Client,
        registry: Arc<OfficeRegistry>,
        config: BusConfig,
    ) -> Result<Self, BusError> {
        let js = Self::context(client.clone(), &config);
        let cases = match js.get_stream(CASES_STREAM).await {
            Ok(stream) => stream,
            Err(e) if is_stream_not_found(&e) => {
                return Err(BusError::StreamMissing {
                    stream: CASES_STREAM,
                });
            }
            Err(e) => {
                return Err(BusError::Nats {
                    what: format!("stream {CASES_STREAM}"),
                    source: Box::new(e),
                });
            }
        };
        Ok(Self {
            client,
            js,
            cases,
            registry: Arc::new(RwLock::new(registry)),
            max_clock_skew: config.max_clock_skew,
            request_timeout: config.request_timeout,
        })
    }

    /// A JetStream context with backpressure and the configured ceilings.
    pub fn context(client: async_nats::Client, config: &BusConfig) -> jetstream::Context {
        ContextBuilder::new()
            .timeout(config.request_timeout)
            .max_ack_inflight(config.max_ack_inflight)
            .backpressure_on_inflight(true)
            .build(client)
    }

    /// The NATS client.
    pub fn client(&self) -> &async_nats::Client {
        &self.client
    }

    /// The JetStream context.
    pub fn jetstream(&self) -> &jetstream::Context {
        &self.js
    }

    /// The `CASES` stream handle.
    pub fn cases(&self) -> &jetstream::stream::Stream {
        &self.cases
    }

    /// The office registry used to verify events: a snapshot, which a later
    /// [`Bus::replace_registry`] does not change.
    pub fn registry(&self) -> Arc<OfficeRegistry> {
        match self.registry.read() {
            Ok(current) => current.clone(),
            // A writer panicked while swapping one `Arc` for another: the value inside
            // is still a whole registry.
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// How far `recorded_at` may be from the stored time ([`BusConfig::max_clock_skew`]).
    pub fn max_clock_skew(&self) -> Duration {
        self.max_clock_skew
    }

    fn stored(&self, msg: &StreamMessage) -> Stored {
        Stored {
            at: msg.time,
            max_skew: self.max_clock_skew,
        }
    }

    /// Replaces the office registry for every clone of this bus (a reloaded registry
    /// file). Messages verified from now on are verified with `registry`.
    pub fn replace_registry(&self, registry: Arc<OfficeRegistry>) {
        match self.registry.write() {
            Ok(mut current) => *current = registry,
            Err(poisoned) => *poisoned.into_inner() = registry,
        }
    }

    /// Drains the connection: stops every subscription from taking new messages, lets
    /// those already delivered be processed, flushes pending publishes and closes. The
    /// last step of a graceful shutdown; every clone of this bus is closed with it.
    ///
    /// # Errors
    /// [`BusError::Nats`] when the connection is already closed or the flush fails.
    pub async fn drain(&self) -> Result<(), BusError> {
        self.client.drain().await.map_err(|e| BusError::Nats {
            what: "drain of the connection".into(),
            source: Box::new(e),
        })
    }

    /// The stream sequence of the case's last message (valid or not), 0 for none.
    ///
    /// # Errors
    /// [`LoadError::Nats`] when the stream cannot be read.
    pub async fn last_sequence(&self, case_id: &CaseId) -> Result<u64, LoadError> {
        match self
            .cases
            .direct_get_last_for_subject(case_subject(case_id))
            .await
        {
            Ok(msg) => Ok(msg.sequence),
            Err(e) if matches!(e.kind(), DirectGetErrorKind::NotFound) => Ok(0),
            Err(e) => Err(LoadError::Nats {
                case_id: case_id.to_string(),
                source: Box::new(e),
            }),
        }
    }

    /// The message `CASES` stores at `sequence`, by direct get (one read); `None` when
    /// there is none (never written, deleted, or beyond the stream's end).
    ///
    /// # Errors
    /// [`BusError::Nats`] when the stream cannot be read.
    pub async fn message_at(&self, sequence: u64) -> Result<Option<StreamMessage>, BusError> {
        match self.cases.direct_get(sequence).await {
            Ok(msg) => Ok(Some(msg)),
            Err(e) if matches!(e.kind(), DirectGetErrorKind::NotFound) => Ok(None),
            Err(e) => Err(BusError::Nats {
                what: format!("message {sequence} of stream {CASES_STREAM}"),
                source: Box::new(e),
            }),
        }
    }

    /// The case's messages with sequence in `(after, until]`, in order.
    ///
    /// The first [`DIRECT_READS`] by direct gets, one request each; a longer history
    /// (a case of a thousand events loaded by a restarted consumer, or by an appender
    /// whose cache lost the case) is read on with one ordered consumer, a few pulls for
    /// the lot.
    ///
    /// # Errors
    /// [`LoadError::Nats`] when the stream cannot be read.
    pub async fn read_case_messages(
        &self,
        case_id: &CaseId,
        after: u64,
        until: u64,
    ) -> Result<Vec<StreamMessage>, LoadError> {
        let subject = case_subject(case_id);
        let mut out = Vec::new();
        let mut next = after + 1;
        while next <= until {
            if out.len() == DIRECT_READS {
                self.read_case_ordered(case_id, &subject, next, until, &mut out)
                    .await?;
                break;
            }
            match self
                .cases
                .direct_get_next_for_subject(subject.clone(), Some(next))
                .await
            {
                Ok(msg) if msg.sequence > until => break,
                Ok(msg) => {
                    next = msg.sequence + 1;
                    out.push(msg);
                }
                Err(e) if matches!(e.kind(), DirectGetErrorKind::NotFound) => break,
                Err(e) => {
                    return Err(LoadError::Nats {
                        case_id: case_id.to_string(),
                        source: Box::new(e),
                    });
                }
            }
        }
        Ok(out)
    }

    /// Appends to `out` the messages of `subject` with sequence in `[from, until]`, read
    /// with one ordered consumer. It stops at `until` or after the last message the
    /// subject held when the consumer was created, so it never waits for new ones.
    async fn read_case_ordered(
        &self,
        case_id: &CaseId,
        subject: &str,
        from: u64,
        until: u64,
        out: &mut Vec<StreamMessage>,
    ) -> Result<(), LoadError> {
        let fail = |source: crate::error::NatsError| LoadError::Nats {
            case_id: case_id.to_string(),
            source,
        };
        let consumer = self
            .cases
            .create_consumer(OrderedConfig {
                filter_subject: subject.to_owned(),
                deliver_policy: DeliverPolicy::ByStartSequence {
                    start_sequence: from,
                },
                ..Default::default()
            })
            .await
            .map_err(|e| fail(Box::new(e)))?;
        if consumer.cached_info().num_pending == 0 {
            return Ok(());
        }
        let mut messages = consumer.messages().await.map_err(|e| fail(Box::new(e)))?;
        loop {
            let message = match tokio::time::timeout(self.request_timeout, messages.next()).await {
                Ok(Some(Ok(message))) => message,
                Ok(Some(Err(e))) => return Err(fail(Box::new(e))),
                Ok(None) => return Err(fail("the ordered reader ended early".into())),
                Err(_) => {
                    return Err(fail(
                        format!(
                            "no message of {subject} after sequence {} within {:?}",
                            out.last().map_or(from, |m| m.sequence),
                            self.request_timeout
                        )
                        .into(),
                    ));
                }
            };
            let info = message.info().map_err(fail)?;
            let (sequence, pending, time) = (info.stream_sequence, info.pending, info.published);
            if sequence > until {
                return Ok(());
            }
            let message = message.split().0;
            out.push(StreamMessage {
                subject: message.subject,
                sequence,
                headers: message.headers.unwrap_or_default(),
                payload: message.payload,
                time,
            });
            if sequence == until || pending == 0 {
                return Ok(());
            }
        }
    }

    /// Loads one case from the stream: every message verified (signature, key, envelope,
    /// chain), the good events folded into the case state, the others listed with why.
    ///
    /// # Errors
    /// [`LoadError::Nats`] when the stream cannot be read.
    pub async fn load_case(&self, case_id: &CaseId) -> Result<LoadedCase, LoadError> {
        let last = self.last_sequence(case_id).await?;
        let messages = self.read_case_messages(case_id, 0, last).await?;
        complete(case_id, &messages, last)?;
        let registry = self.registry();
        let mut loaded = LoadedCase::empty(case_id.clone());
        for msg in &messages {
            loaded.push(msg.sequence, &msg.payload, self.stored(msg), &registry);
        }
        Ok(loaded)
    }

    /// Loads the case as it was at stream sequence `until` (inclusive).
    ///
    /// # Errors
    /// [`LoadError::Nats`] when the stream cannot be read.
    pub async fn load_case_until(
        &self,
        case_id: &CaseId,
        until: u64,
    ) -> Result<LoadedCase, LoadError> {
        let messages = self.read_case_messages(case_id, 0, until).await?;
        let registry = self.registry();
        let mut loaded = LoadedCase::empty(case_id.clone());
        for msg in &messages {
            loaded.push(msg.sequence, &msg.payload, self.stored(msg), &registry);
        }
        Ok(loaded)
    }

    /// Brings `head` up to date with the stream, reading only messages after its last
    /// sequence. Returns whether anything new was read.
    ///
    /// # Errors
    /// [`LoadError::Nats`] when the stream cannot be read.
    pub(crate) async fn refresh(&self, head: &mut CaseHead) -> Result<(), LoadError> {
        let last = self.last_sequence(&head.tip.case_id).await?;
        if last == head.last_sequence {
            return Ok(());
        }
        let case_id = head.tip.case_id.clone();
        if last < head.last_sequence {
            // The stream holds less of the case than we remember: the server lost
            // acknowledged writes (NATS 2.9 killed before its flusher ran). What we
            // remember beyond the stream does not exist; rebuild from the stream.
            tracing::warn!(case_id = %case_id, remembered = head.last_sequence, stored = last, "case is behind what was acknowledged; reloading it");
            *head = CaseHead::empty(case_id.clone());
        }
        let messages = self
            .read_case_messages(&case_id, head.last_sequence, last)
            .await?;
        complete(&case_id, &messages, last)?;
        let registry = self.registry();
        for msg in &messages {
            head.push(msg.sequence, &msg.payload, self.stored(msg), &registry);
        }
        head.last_sequence = last;
        Ok(())
    }
}

/// Fails unless a read of a case reached `last`, the case's last sequence. With direct
/// get allowed on a replicated stream every replica answers, and one that lags has not
/// got the newest messages yet: the read ends early. Taking such a read for the whole
/// case would let an append pass the optimistic check on a stale state and store a
/// broken chain.
fn complete(case_id: &CaseId, messages: &[StreamMessage], last: u64) -> Result<(), LoadError> {
    let reached = messages.last().map_or(0, |m| m.sequence);
    if last > 0 && reached != last {
        return Err(LoadError::Nats {
            case_id: case_id.to_string(),
            source: format!(
                "the read of case {case_id} ended at sequence {reached}, before its last sequence {last} (a lagging replica answered); retry"
            )
            .into(),
        });
    }
    Ok(())
}
