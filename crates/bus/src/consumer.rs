//! `ConsumerRunner`: a durable pull consumer on `CASES` that decodes and verifies every
//! message (signature, key, envelope, chain), hands good events to an `EventHandler` in
//! stream order, acks only after the handler committed, and moves anything it cannot
//! verify to `CASES_DLQ` with the reason, the consumer and the original sequence in
//! headers. A poison message is dead-lettered and acked, so it never blocks the consumer.
//!
//! A handler's transient failure is retried in place (with backoff, keeping the message
//! alive with progress acks) rather than nak'ed, so events of a case are never handled
//! out of order. A permanent failure dead-letters the event.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_nats::HeaderMap;
use async_nats::jetstream::consumer::{AckPolicy, DeliverPolicy, pull};
use async_nats::jetstream::message::PublishMessage as Publish;
use async_nats::jetstream::{AckKind, Message};
use futures::StreamExt as _;
use tokio_util::sync::CancellationToken;

use casebus_integrity::{ChainError, ChainTip, VerifyError, verify_signed};
use casebus_proto::CaseId;

use crate::bus::Bus;
use crate::error::ConsumeError;
use crate::store::StoredEvent;
use crate::subjects::{CASES_STREAM, CASES_SUBJECTS, case_of_subject, dlq_subject, headers};

/// Why a handler could not handle an event.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HandlerError {
    /// Worth retrying (a database busy, NATS briefly unavailable).
    #[error("transient: {0}")]
    Transient(String),
    /// Will never succeed for this event; dead-letter it.
    #[error("permanent: {0}")]
    Permanent(String),
}

/// Handles verified events, in stream order, one at a time.
pub trait EventHandler: Send + Sync + 'static {
    /// Handles one event. Must be idempotent on `event.event.event_id`: after a crash
    /// the same event may be delivered again.
    fn handle(&self, event: &StoredEvent) -> impl Future<Output = Result<(), HandlerError>> + Send;
}

/// Settings of a durable consumer.
#[derive(Debug, Clone)]
pub struct ConsumerConfig {
    /// Durable name (one token: `[A-Za-z0-9_-]`), e.g. `svc-customs-ningbo`.
    pub name: String,
    /// Messages pulled per request.
    pub batch: usize,
    /// Messages delivered but not yet acked at most.
    pub max_ack_pending: i64,
    /// How long the server waits for an ack before redelivering.
    pub ack_wait: Duration,
    /// Chain tips kept in memory; beyond that they are dropped and reloaded on demand.
    pub tip_cache: usize,
}

impl ConsumerConfig {
    /// Defaults for a consumer called `name`.
    pub fn named(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            batch: 256,
            max_ack_pending: 1024,
            ack_wait: Duration::from_secs(30),
            tip_cache: 100_000,
        }
    }
}

/// Counters of a running consumer, readable while it runs.
#[derive(Debug, Default)]
pub struct ConsumerCounters {
    /// Events handled and acked.
    pub handled: AtomicU64,
    /// Messages moved to the dead-letter stream.
    pub dead_lettered: AtomicU64,
    /// Handler attempts that failed transiently.
    pub retries: AtomicU64,
    /// Stream sequence of the last message acked.
    pub last_sequence: AtomicU64,
}

/// Runs one durable consumer.
pub struct ConsumerRunner {
    bus: Bus,
    config: ConsumerConfig,
    tips: HashMap<CaseId, ChainTip>,
    counters: Arc<ConsumerCounters>,
}

/// Backoff ceiling for retrying a handler or a dead-letter publish.
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// First backoff step.
const FIRST_BACKOFF: Duration = Duration::from_millis(50);

impl ConsumerRunner {
    /// A runner for the consumer described by `config`.
    pub fn new(bus: Bus, config: ConsumerConfig) -> Self {
        Self {
            bus,
            config,
            tips: HashMap::new(),
            counters: Arc::new(ConsumerCounters::default()),
        }
    }

    /// Counters to read while the consumer runs.
    pub fn counters(&self) -> Arc<ConsumerCounters> {
        self.counters.clone()
    }

    /// Creates the durable consumer if missing (idempotent) and returns it.
    ///
    /// # Errors
    /// [`ConsumeError::Setup`] when the server refuses.
    pub async fn ensure_consumer(
        &self,
    ) -> Result<async_nats::jetstream::consumer::Consumer<pull::Config>, ConsumeError> {
        let config = pull::Config {
            durable_name: Some(self.config.name.clone()),
            ack_policy: AckPolicy::Explicit,
            deliver_policy: DeliverPolicy::All,
            filter_subject: CASES_SUBJECTS.into(),
            ack_wait: self.config.ack_wait,
            max_ack_pending: self.config.max_ack_pending,
            ..Default::default()
        };
        self.bus
            .cases()
            .get_or_create_consumer(&self.config.name, config)
            .await
            .map_err(|e| ConsumeError::Setup {
                consumer: self.config.name.clone(),
                source: Box::new(e),
            })
    }

    /// Consumes until `shutdown` is cancelled. Stops pulling at once on shutdown; the
    /// event being handled finishes first (its ack is sent), nothing else is started.
    ///
    /// # Errors
    /// [`ConsumeError::Setup`] when the consumer cannot be created at start. Later
    /// stream errors are logged and the stream is re-established.
    pub async fn run<H: EventHandler>(
        mut self,
        handler: H,
        shutdown: CancellationToken,
    ) -> Result<(), ConsumeError> {
        let consumer = self.ensure_consumer().await?;
        tracing::info!(consumer = %self.config.name, stream = CASES_STREAM, "consumer started");
        let mut backoff = FIRST_BACKOFF;
        'outer: while !shutdown.is_cancelled() {
            let messages = consumer
                .stream()
                .max_messages_per_batch(self.config.batch)
                .heartbeat(Duration::from_secs(5))
                .expires(Duration::from_secs(30))
                .messages()
                .await;
            let mut messages = match messages {
                Ok(m) => m,
                Err(e) => {
                    tracing::warn!(consumer = %self.config.name, error = %e, "pull failed; retrying");
                    if !pause(&shutdown, &mut backoff).await {
                        break;
                    }
                    continue;
                }
            };
            loop {
                let next = tokio::select! {
                    () = shutdown.cancelled() => break 'outer,
                    next = messages.next() => next,
                };
                match next {
                    Some(Ok(message)) => {
                        backoff = FIRST_BACKOFF;
                        self.process(&handler, message, &shutdown).await;
                    }
                    Some(Err(e)) => {
                        tracing::warn!(consumer = %self.config.name, error = %e, "message stream error");
                        // Missed heartbeats and similar are recoverable by pulling anew.
                        if !pause(&shutdown, &mut backoff).await {
                            break 'outer;
                        }
                        continue 'outer;
                    }
                    None => continue 'outer,
                }
            }
        }
        tracing::info!(consumer = %self.config.name, "consumer stopped");
        Ok(())
    }

    async fn process<H: EventHandler>(
        &mut self,
        handler: &H,
        message: Message,
        shutdown: &CancellationToken,
    ) {
        let (sequence, subject) = match message.info() {
            Ok(info) => (info.stream_sequence, message.subject.to_string()),
            Err(e) => {
                tracing::warn!(consumer = %self.config.name, error = %e, "message without metadata; skipped");
                return;
            }
        };
        let event = match self.verify(sequence, &subject, &message.payload).await {
            Ok(Some(event)) => event,
            Ok(None) => return, // transient trouble loading the chain: redelivered later
            Err(error) => {
                self.dead_letter(
                    &message,
                    sequence,
                    &subject,
                    error.code(),
                    &error.to_string(),
                    shutdown,
                )
                .await;
                return;
            }
        };
        let stored = StoredEvent { sequence, event };
        let mut backoff = FIRST_BACKOFF;
        loop {
            match handler.handle(&stored).await {
                Ok(()) => break,
                Err(HandlerError::Permanent(reason)) => {
                    self.dead_letter(&message, sequence, &subject, "handler", &reason, shutdown)
                        .await;
                    self.advance(&stored);
                    return;
                }
                Err(HandlerError::Transient(reason)) => {
                    self.counters.retries.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(
                        consumer = %self.config.name,
                        case_id = %stored.event.case_id,
                        event_id = %stored.event.event_id,
                        error = %reason,
                        "handler failed transiently; retrying"
                    );
                    // Keep the message ours while we retry, so it is not redelivered
                    // to another instance behind our back.
                    let _ = message.ack_with(AckKind::Progress).await;
                    if !pause(shutdown, &mut backoff).await {
                        return; // not acked: redelivered after a restart
                    }
                }
            }
        }
        self.advance(&stored);
        if let Err(e) = message.ack().await {
            tracing::warn!(consumer = %self.config.name, error = %e, "ack failed; the event will be redelivered");
            return;
        }
        self.counters.handled.fetch_add(1, Ordering::Relaxed);
        self.counters
            .last_sequence
            .store(sequence, Ordering::Relaxed);
    }

    fn advance(&mut self, stored: &StoredEvent) {
        if self.tips.len() >= self.config.tip_cache {
            self.tips.clear();
        }
        let tip = self
            .tips
            .entry(stored.event.case_id.clone())
            .or_insert_with(|| ChainTip::empty(stored.event.case_id.clone()));
        tip.advance(&stored.event);
    }

    /// Verifies one message. `Ok(None)` means the chain could not be loaded right now.
    async fn verify(
        &mut self,
        sequence: u64,
        subject: &str,
        payload: &[u8],
    ) -> Result<Option<casebus_integrity::VerifiedEvent>, VerifyError> {
        let event = verify_signed(payload, self.bus.registry())?;
        let Some(subject_case) = case_of_subject(subject) else {
            return Err(ChainError::CaseMismatch {
                expected_case: subject.to_owned(),
                event_case: event.case_id.to_string(),
            }
            .into());
        };
        if !self.tips.contains_key(&subject_case) {
            // First sight of this case since start: rebuild its tip from the stream,
            // up to the message before this one.
            match self
                .bus
                .load_case_until(&subject_case, sequence.saturating_sub(1))
                .await
            {
                Ok(loaded) => {
                    self.tips.insert(subject_case.clone(), loaded.tip);
                }
                Err(e) => {
                    tracing::warn!(consumer = %self.config.name, case_id = %subject_case, error = %e, "loading chain failed; will retry");
                    return Ok(None);
                }
            }
        }
        let tip = self
            .tips
            .get(&subject_case)
            .cloned()
            .unwrap_or_else(|| ChainTip::empty(subject_case.clone()));
        tip.check(&event)?;
        Ok(Some(event))
    }

    async fn dead_letter(
        &self,
        message: &Message,
        sequence: u64,
        subject: &str,
        code: &str,
        reason: &str,
        shutdown: &CancellationToken,
    ) {
        let mut headers = HeaderMap::new();
        headers.insert(headers::DLQ_REASON, truncate(reason, 1000).as_str());
        headers.insert(headers::DLQ_CODE, code);
        headers.insert(headers::DLQ_CONSUMER, self.config.name.as_str());
        headers.insert(headers::DLQ_STREAM, CASES_STREAM);
        headers.insert(headers::DLQ_SEQUENCE, sequence.to_string().as_str());
        headers.insert(headers::DLQ_SUBJECT, subject);
        let mut backoff = FIRST_BACKOFF;
        loop {
            let publish = Publish::build()
                .payload(message.payload.clone())
                .headers(headers.clone())
                .message_id(format!("{}:{sequence}", self.config.name));
            let result = match self
                .bus
                .jetstream()
                .send_publish(dlq_subject(&self.config.name), publish)
                .await
            {
                Ok(ack) => ack.await.map(|_| ()),
                Err(e) => Err(e),
            };
            match result {
                Ok(()) => break,
                Err(e) => {
                    tracing::error!(consumer = %self.config.name, sequence, error = %e, "dead-letter publish failed; retrying");
                    let _ = message.ack_with(AckKind::Progress).await;
                    if !pause(shutdown, &mut backoff).await {
                        return;
                    }
                }
            }
        }
        tracing::warn!(consumer = %self.config.name, sequence, code, "message dead-lettered");
        self.counters.dead_lettered.fetch_add(1, Ordering::Relaxed);
        if let Err(e) = message.ack().await {
            tracing::warn!(consumer = %self.config.name, error = %e, "ack of dead letter failed");
        }
        self.counters
            .last_sequence
            .store(sequence, Ordering::Relaxed);
    }
}

fn truncate(s: &str, max: usize) -> String {
    // Header values may not contain line breaks.
    s.chars()
        .filter(|c| *c != '\r' && *c != '\n')
        .take(max)
        .collect()
}

/// Waits `backoff` (doubling it up to the ceiling) unless shutdown comes first; returns
/// false on shutdown.
async fn pause(shutdown: &CancellationToken, backoff: &mut Duration) -> bool {
    let wait = *backoff;
    *backoff = (*backoff * 2).min(MAX_BACKOFF);
    tokio::select! {
        () = shutdown.cancelled() => false,
        () = tokio::time::sleep(wait) => true,
    }
}
