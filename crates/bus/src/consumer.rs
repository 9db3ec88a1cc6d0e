//! `ConsumerRunner`: a durable pull consumer on `CASES` that decodes and verifies every
//! message (signature, key, envelope, chain), hands good events to an `EventHandler` in
//! stream order, acks only after the handler committed, and moves anything it cannot
//! verify to `CASES_DLQ` with the reason, the consumer and the original sequence in
//! headers. A poison message is dead-lettered and acked, so it never blocks the consumer.
//!
//! A handler's transient failure is retried in place (with backoff, keeping the message
//! alive with progress acks) rather than nak'ed, so events of a case are never handled
//! out of order. A permanent failure dead-letters the event.
//!
//! In the one-at-a-time mode the runner keeps every message it holds alive while a
//! handler works: every third of the ack wait it sends a progress ack for the message
//! being handled and for each message pulled behind it and not handed over yet. So the
//! ack wait can be short (the agency services run theirs at 3 s): a message is
//! redelivered to another instance only when its holder died or froze, never because
//! a handler or the queue in front of it was slow.
//!
//! Two ways to run: [`ConsumerRunner::run`] hands events to an [`EventHandler`] one at a
//! time and acks each after it; [`ConsumerRunner::run_batched`] gathers verified events
//! into batches for a [`BatchHandler`] (one database transaction per batch, say) and acks
//! a whole batch after it committed. A poison message ends the batch gathered before it:
//! that batch is handed over first, so the handler sees every message in stream order,
//! and [`BatchHandler::skipped`] then tells the handler which sequence was
//! dead-lettered.

use std::collections::VecDeque;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_nats::jetstream::consumer::{AckPolicy, DeliverPolicy, pull};
use async_nats::jetstream::context::PublishAckFuture;
use async_nats::jetstream::message::PublishMessage as Publish;
use async_nats::jetstream::{AckKind, Message};
use async_nats::{HeaderMap, Subject};
use futures::{FutureExt as _, StreamExt as _};
use time::OffsetDateTime;
use tokio_util::sync::CancellationToken;

use casebus_integrity::{
    ChainError, ChainTip, EventHash, VerifiedEvent, VerifyError, check_recorded_at, verify_signed,
};
use casebus_proto::CaseId;

use crate::bus::Bus;
use crate::error::ConsumeError;
use crate::memory::{CaseMemory, Known, Memories};
use crate::store::StoredEvent;
use crate::subjects::{
    CASES_STREAM, CASES_SUBJECTS, case_of_subject, case_subject, dlq_subject, headers,
};

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

/// Handles verified events in batches, in stream order.
pub trait BatchHandler: Send + Sync + 'static {
    /// Handles a batch of events (stream order, at least one) as a unit: `Ok` means every
    /// event of it is committed, and the runner then acks them all. Must be idempotent:
    /// after a crash the same events may be delivered again.
    ///
    /// A [`HandlerError::Transient`] retries the same batch in place. A
    /// [`HandlerError::Permanent`] for a batch of several events makes the runner hand
    /// them over again one at a time, so only the events at fault are dead-lettered.
    fn handle_batch(
        &self,
        events: &[StoredEvent],
    ) -> impl Future<Output = Result<(), HandlerError>> + Send;

    /// Called after the messages at `sequences` (in stream order, at least one) were
    /// dead-lettered (they failed verification, or the handler refused them
    /// permanently) and before they are acked, so that a handler which stores its
    /// stream position can move past them. Every message before the last of them has
    /// been handed over and committed by then. An error is retried in place; the
    /// default does nothing.
    fn skipped(&self, sequences: &[u64]) -> impl Future<Output = Result<(), HandlerError>> + Send {
        let _ = sequences;
        async { Ok(()) }
    }
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
    /// Cases whose chain tip and replay index are kept in memory; beyond that
    /// arbitrary cases are forgotten and read from the stream again on demand.
    pub tip_cache: usize,
    /// Events remembered in the replay index over all cases (16 bytes each); beyond
    /// that arbitrary cases are forgotten, as for `tip_cache`.
    pub replay_index_events: usize,
    /// The office's decryption keys, when it has them: a sealed event wrapped for one
    /// of them is opened before the handler sees it (the handler gets the full payload),
    /// and one that does not open, or whose sealed payload disagrees with its readable
    /// part, is dead-lettered with code `sealed` (the chain goes on past it: it is
    /// signed and stored, every other office folds it).
    pub opener: Option<std::sync::Arc<casebus_integrity::seal::Opener>>,
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
            replay_index_events: 4_000_000,
            opener: None,
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
    /// Messages the server delivered more than once (its delivery count above 1): the
    /// ack wait ran out at an instance that died, froze or took too long.
    pub redelivered: AtomicU64,
}

/// Runs one durable consumer.
pub struct ConsumerRunner {
    bus: Bus,
    config: ConsumerConfig,
    memory: Memories,
    counters: Arc<ConsumerCounters>,
    /// Dead letters published but not confirmed yet (the one-at-a-time mode), oldest
    /// first; each message is acked only once its copy is stored.
    in_flight: VecDeque<InFlightDeadLetter>,
}

/// A dead letter published but not yet confirmed by the stream (`ack`), or confirmed
/// already (`None`: it was published again after a failure and awaited then).
struct InFlightDeadLetter {
    message: Message,
    sequence: u64,
    subject: String,
    code: &'static str,
    reason: String,
    ack: Option<PublishAckFuture>,
}

/// Backoff ceiling for retrying a handler or a dead-letter publish.
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// First backoff step.
const FIRST_BACKOFF: Duration = Duration::from_millis(50);
/// Gathered messages from which signatures are checked on several cores.
const PARALLEL_VERIFY_FROM: usize = 32;
/// Blocking threads one batch's signature checks use at most.
const MAX_VERIFY_THREADS: usize = 8;
/// Dead letters the one-at-a-time mode keeps in flight before it awaits the oldest:
/// awaiting each would cost a round trip per message, which is what a flood of
/// replayed or junk messages would then cost.
const DEAD_LETTER_WINDOW: usize = 256;

/// Shortest interval between the progress acks that keep held messages alive.
const MIN_KEEP_ALIVE: Duration = Duration::from_millis(50);

/// Messages the one-at-a-time mode took from the pull stream while a handler worked, to
/// keep them alive with progress acks; they are handed over before anything else.
#[derive(Default)]
struct Held {
    messages: VecDeque<Message>,
    /// What ended the taking: a stream error or the stream's end, reported after the
    /// held messages.
    after: Option<Option<Result<Message, pull::MessagesError>>>,
}

impl Held {
    /// The next item to handle: a held message, then what ended the taking.
    fn take(&mut self) -> Option<Option<Result<Message, pull::MessagesError>>> {
        match self.messages.pop_front() {
            Some(message) => Some(Some(Ok(message))),
            None => self.after.take(),
        }
    }

    /// Takes whatever the pull stream has received already, without waiting.
    fn gather(&mut self, messages: &mut pull::Stream) {
        while self.after.is_none() {
            match next_delivered(messages) {
                Some(Some(Ok(message))) => self.messages.push_back(message),
                Some(other) => self.after = Some(other),
                None => break,
            }
        }
    }
}

/// The next message the pull stream has received already, without waiting (`None`
/// when it has none yet).
///
/// Polled outside tokio's cooperative budget: the stream's channel spends that budget,
/// so after 128 messages in one poll of the task it answers "not ready" although it
/// holds more, which capped every gathered batch at 128 messages however many had
/// arrived while the previous batch was being committed.
fn next_delivered(
    messages: &mut pull::Stream,
) -> Option<Option<Result<Message, pull::MessagesError>>> {
    tokio::task::unconstrained(messages.next()).now_or_never()
}

/// Adds to `gathered` what the pull stream has received already, up to `max_batch`
/// messages in all, without waiting: waiting for more would hold the first message
/// back. (A linger restarted by every message never ends at a steady rate above one
/// message per linger, until the batch is full: at 1,000 events/s a 500-event batch
/// held events for half a second.) Under load the batches grow by themselves, because
/// messages pile up while the previous batch is being committed. Returns what ended
/// the stream, if it did: an error, or its end.
fn gather_delivered(
    messages: &mut pull::Stream,
    gathered: &mut Vec<Message>,
    max_batch: usize,
) -> Option<Option<pull::MessagesError>> {
    while gathered.len() < max_batch {
        match next_delivered(messages) {
            Some(Some(Ok(message))) => gathered.push(message),
            Some(Some(Err(e))) => return Some(Some(e)),
            Some(None) => return Some(None),
            None => break,
        }
    }
    None
}

/// Messages gathered for a batch, with their signature checks started.
struct Gathered {
    messages: Vec<Message>,
    verification: Verification,
    /// What ended the taking after them: a stream error, or the stream's end.
    interrupted: Option<Option<pull::MessagesError>>,
}

/// A chunk's signature checks on the blocking pool.
type Checking = tokio::task::JoinHandle<Vec<Result<VerifiedEvent, VerifyError>>>;

/// The signature checks of gathered messages, in their order.
struct Verification {
    /// For each message, the replay it is a copy of (then it is not checked).
    copies: Vec<Option<ChainError>>,
    /// The checks of the other messages, in order.
    checks: Checks,
}

enum Checks {
    /// Checked in place.
    Done(Vec<Result<VerifiedEvent, VerifyError>>),
    /// Chunks checked on the blocking pool, with their payloads in case a task is lost.
    Running {
        tasks: Vec<(Checking, Vec<bytes::Bytes>)>,
        registry: Arc<casebus_integrity::OfficeRegistry>,
    },
}

impl Verification {
    /// One result per message, in order.
    async fn finish(self) -> Vec<Result<VerifiedEvent, VerifyError>> {
        let checked = match self.checks {
            Checks::Done(checked) => checked,
            Checks::Running { tasks, registry } => {
                let mut out = Vec::new();
                for (task, chunk) in tasks {
                    match task.await {
                        Ok(results) => out.extend(results),
                        // The blocking pool refused or lost the task: check the chunk
                        // here.
                        Err(_) => out.extend(chunk.iter().map(|p| verify_signed(p, &registry))),
                    }
                }
                out
            }
        };
        let mut signatures = checked.into_iter();
        self.copies
            .into_iter()
            .map(|copy| match copy {
                Some(replay) => Err(replay.into()),
                // One result per payload checked, so this never runs dry.
                None => signatures.next().unwrap_or_else(|| {
                    Err(VerifyError::Undecodable {
                        what: "signed wrapper",
                        reason: "not checked".into(),
                    })
                }),
            })
            .collect()
    }
}

/// Messages gathered for the next batch, with their verified events.
#[derive(Default)]
struct Pending {
    /// Dead letters in flight, all before `events` in stream order.
    dead: Vec<InFlightDeadLetter>,
    messages: Vec<Message>,
    events: Vec<StoredEvent>,
}

impl Pending {
    fn is_empty(&self) -> bool {
        self.events.is_empty()
    }
}

/// How handing events over to a batch handler ended.
enum HandOver {
    /// Committed.
    Done,
    /// Refused for good, with the reason.
    Permanent(String),
    /// Shutdown came while retrying a transient failure; nothing was acked.
    Stopped,
}

impl ConsumerRunner {
    /// A runner for the consumer described by `config`.
    pub fn new(bus: Bus, config: ConsumerConfig) -> Self {
        Self {
            bus,
            memory: Memories::new(config.tip_cache, config.replay_index_events),
            config,
            counters: Arc::new(ConsumerCounters::default()),
            in_flight: VecDeque::new(),
        }
    }

    /// Counters to read while the consumer runs.
    pub fn counters(&self) -> Arc<ConsumerCounters> {
        self.counters.clone()
    }

    /// Creates the durable consumer if missing (idempotent) and returns it. A consumer
    /// that exists with another ack wait or limit of unacknowledged messages (made by an
    /// older deployment, say) is updated in place to this runner's, keeping its
    /// position and every other setting.
    ///
    /// # Errors
    /// [`ConsumeError::Setup`] when the server refuses.
    pub async fn ensure_consumer(
        &self,
    ) -> Result<async_nats::jetstream::consumer::Consumer<pull::Config>, ConsumeError> {
        let consumer = self.get_or_create_consumer().await?;
        let current = &consumer.cached_info().config;
        if current.ack_wait == self.config.ack_wait
            && current.max_ack_pending == self.config.max_ack_pending
        {
            return Ok(consumer);
        }
        let (old_ack_wait, old_max_ack_pending) = (current.ack_wait, current.max_ack_pending);
        self.update_settings().await?;
        tracing::info!(
            consumer = %self.config.name,
            stream = CASES_STREAM,
            old_ack_wait = ?old_ack_wait,
            ack_wait = ?self.config.ack_wait,
            old_max_ack_pending,
            max_ack_pending = self.config.max_ack_pending,
            "consumer settings updated in place"
        );
        self.get_or_create_consumer().await
    }

    async fn get_or_create_consumer(
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

    /// Sets the durable consumer's ack wait and limit of unacknowledged messages to this
    /// runner's. The configuration is read and sent back as the server holds it (JSON),
    /// so settings this client build does not model are kept; NATS 2.9 and later update
    /// an existing durable consumer when it is created again with editable changes.
    /// The request goes to `CONSUMER.CREATE.<stream>.<name>[.<filter>]`, the subject the
    /// client library creates consumers on, which the deployed service users may use
    /// (`deploy/nats/users.conf.in`; they may not use `CONSUMER.DURABLE.CREATE`).
    async fn update_settings(&self) -> Result<(), ConsumeError> {
        let name = &self.config.name;
        let fail = |reason: String| ConsumeError::Setup {
            consumer: name.clone(),
            source: reason.into(),
        };
        let js = self.bus.jetstream();
        let info: serde_json::Value = js
            .request(
                format!("CONSUMER.INFO.{CASES_STREAM}.{name}"),
                &serde_json::json!({}),
            )
            .await
            .map_err(|e| fail(format!("reading its configuration: {e}")))?;
        if let Some(error) = info.get("error") {
            return Err(fail(format!("reading its configuration: {error}")));
        }
        let mut config = info
            .get("config")
            .and_then(serde_json::Value::as_object)
            .cloned()
            .ok_or_else(|| fail("the server returned no configuration".into()))?;
        let ack_wait = u64::try_from(self.config.ack_wait.as_nanos()).unwrap_or(u64::MAX);
        config.insert("ack_wait".into(), ack_wait.into());
        config.insert("max_ack_pending".into(), self.config.max_ack_pending.into());
        if let Some(serde_json::Value::Object(metadata)) = config.get_mut("metadata") {
            // Keys under `_nats.` are set by the server itself.
            metadata.retain(|k, _| !k.starts_with("_nats."));
        }
        let filter = config
            .get("filter_subject")
            .and_then(serde_json::Value::as_str)
            .filter(|f| !f.is_empty())
            .map(|f| format!(".{f}"))
            .unwrap_or_default();
        let answer: serde_json::Value = js
            .request(
                format!("CONSUMER.CREATE.{CASES_STREAM}.{name}{filter}"),
                &serde_json::json!({ "stream_name": CASES_STREAM, "config": config }),
            )
            .await
            .map_err(|e| fail(format!("updating its settings: {e}")))?;
        match answer.get("error") {
            Some(error) => Err(fail(format!("updating its settings: {error}"))),
            None => Ok(()),
        }
    }

    /// Consumes until `shutdown` is cancelled. Stops pulling at once on shutdown; the
    /// event being handled finishes first (its ack is sent), nothing else is started.
    ///
    /// # Errors
    /// [`ConsumeError::Setup`] when the consumer cannot be created at start. Later
    /// stream errors are logged; the pull stream recovers by itself and is
    /// re-established only when it ends.
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
            let mut held = Held::default();
            loop {
                // Dead letters in flight are settled before waiting for more: their
                // messages are acked only then.
                let ready = match held.take() {
                    Some(next) => Some(next),
                    None if self.in_flight.is_empty() => None,
                    None => next_delivered(&mut messages),
                };
                let next = match ready {
                    Some(next) => next,
                    None => {
                        if !self.settle_dead_letters(0, &shutdown).await {
                            break 'outer;
                        }
                        tokio::select! {
                            () = shutdown.cancelled() => break 'outer,
                            next = messages.next() => next,
                        }
                    }
                };
                match next {
                    Some(Ok(message)) => {
                        backoff = FIRST_BACKOFF;
                        let client = self.bus.client().clone();
                        let reply = message.reply.clone();
                        let every = (self.config.ack_wait / 3).max(MIN_KEEP_ALIVE);
                        let work = self.process(&handler, message, &shutdown);
                        keep_alive(work, every, &client, reply, &mut messages, &mut held).await;
                    }
                    Some(Err(e)) => {
                        tracing::warn!(consumer = %self.config.name, error = %e, "message stream error");
                        // Keep the stream: it pulls again by itself after a reconnect or an
                        // expired pull, and ends (None) when it cannot go on. Dropping it
                        // would drop what it was delivered but has not handed over yet
                        // (a consumer frozen past its heartbeat, say); the server gives
                        // those back only after ack_wait, behind later events of their
                        // cases.
                        if !pause(&shutdown, &mut backoff).await {
                            break 'outer;
                        }
                        continue;
                    }
                    None => continue 'outer,
                }
            }
        }
        // What is still in flight is settled if the server confirms it; whatever is not
        // acked is delivered again after a restart.
        self.settle_dead_letters(0, &shutdown).await;
        tracing::info!(consumer = %self.config.name, "consumer stopped");
        Ok(())
    }

    async fn process<H: EventHandler>(
        &mut self,
        handler: &H,
        message: Message,
        shutdown: &CancellationToken,
    ) {
        let (sequence, stored_at, subject) = match message.info() {
            Ok(info) => {
                if info.delivered > 1 {
                    self.counters.redelivered.fetch_add(1, Ordering::Relaxed);
                }
                (
                    info.stream_sequence,
                    info.published,
                    message.subject.to_string(),
                )
            }
            Err(e) => {
                tracing::warn!(consumer = %self.config.name, error = %e, "message without metadata; skipped");
                return;
            }
        };
        let mut backoff = FIRST_BACKOFF;
        let event = loop {
            match self
                .verify(sequence, stored_at, &subject, &message.payload)
                .await
            {
                Ok(Some(event)) => break event,
                Ok(None) => {
                    // The case's chain could not be loaded (NATS briefly away). Retry in
                    // place, as the batched mode does: leaving the message for
                    // redelivery would let the case's later events overtake it.
                    let _ = message.ack_with(AckKind::Progress).await;
                    if !pause(shutdown, &mut backoff).await {
                        return; // not acked: redelivered after a restart
                    }
                }
                Err(error) => {
                    self.dead_letter(
                        message,
                        sequence,
                        subject,
                        error.code(),
                        error.to_string(),
                        shutdown,
                    )
                    .await;
                    return;
                }
            }
        };
        let mut stored = StoredEvent { sequence, event };
        if let Err(reason) = self.open_sealed(&mut stored) {
            self.advance(&stored);
            self.dead_letter(message, sequence, subject, "sealed", reason, shutdown)
                .await;
            return;
        }
        let mut backoff = FIRST_BACKOFF;
        loop {
            match handler.handle(&stored).await {
                Ok(()) => break,
                Err(HandlerError::Permanent(reason)) => {
                    self.advance(&stored);
                    self.dead_letter(message, sequence, subject, "handler", reason, shutdown)
                        .await;
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

    /// Opens a sealed event wrapped for one of the office's keys, in place (the handler
    /// sees the full payload); an event sealed for others stays as stored.
    ///
    /// # Errors
    /// Why it does not open or disagrees with its readable part.
    fn open_sealed(&self, stored: &mut StoredEvent) -> Result<(), String> {
        let (Some(opener), Some(sealed)) = (&self.config.opener, &stored.event.event.sealed) else {
            return Ok(());
        };
        let ids = opener.key_ids();
        if !sealed
            .wrapped_keys
            .iter()
            .any(|w| ids.contains(&w.key_id.as_str()))
        {
            return Ok(());
        }
        match casebus_integrity::seal::open_event(opener, &stored.event.event) {
            Ok(full) => {
                stored.event.event.payload = Some(full);
                Ok(())
            }
            Err(e) => Err(format!(
                "version {} of case {}: {e}",
                stored.event.event.case_version, stored.event.case_id
            )),
        }
    }

    fn advance(&mut self, stored: &StoredEvent) {
        self.memory.advance(stored.sequence, &stored.event);
    }

    /// Verifies one message. `Ok(None)` means the chain could not be loaded right now.
    async fn verify(
        &mut self,
        sequence: u64,
        stored_at: OffsetDateTime,
        subject: &str,
        payload: &[u8],
    ) -> Result<Option<VerifiedEvent>, VerifyError> {
        if let Some((case_id, replay)) = self.known_copy(sequence, subject, payload) {
            self.memory.examined(&case_id, sequence);
            return Err(replay.into());
        }
        let event = verify_signed(payload, &self.bus.registry())?;
        Ok(self
            .check_chain(sequence, stored_at, subject, &event)
            .await?
            .then_some(event))
    }

    /// Recognises, before its signature is checked, a byte-for-byte copy of an event the
    /// memory of the subject's case holds at the version the copy claims, stored at
    /// another sequence: the case and the replay error for it.
    /// Costs a hash and a walk over the fields, no decode, no signature check and no stream read, so a flood of
    /// replays is cheap. Anything else (a case not remembered, a message that does not
    /// decode, a different event, a redelivery) is left to the full check.
    fn known_copy(
        &self,
        sequence: u64,
        subject: &str,
        payload: &[u8],
    ) -> Option<(CaseId, ChainError)> {
        let case_id = case_of_subject(subject)?;
        let memory = self.memory.get(&case_id)?;
        let (event, version) = casebus_proto::peek_signed_event(payload)?;
        let Some(Known::Replay { original_sequence }) =
            memory.known_hash(sequence, version, &EventHash::of(event))
        else {
            return None;
        };
        let replay = ChainError::Replay {
            case_id: case_id.to_string(),
            version,
            original_sequence,
        };
        Some((case_id, replay))
    }

    /// Checks that a signature-verified event continues the chain of the case named by
    /// its subject, is not a copy of an event handled already, and was recorded at a
    /// plausible time (within the clock skew of `stored_at`, and not before the event it
    /// follows). `Ok(false)` means the chain could not be loaded right now.
    ///
    /// The stream is read only when the memory of the case cannot decide: a case not
    /// remembered (read whole, up to the message), a message at or before what was
    /// examined already that is not a known copy (a redelivery, or a stream that lost
    /// its tail: read whole), and a message that does not continue the remembered tip
    /// (read only the case's messages after the last one examined: instances sharing
    /// the durable consumer handled them). So a flood of signed junk on one case costs
    /// one short read per message, and a flood of replays none.
    async fn check_chain(
        &mut self,
        sequence: u64,
        stored_at: OffsetDateTime,
        subject: &str,
        event: &VerifiedEvent,
    ) -> Result<bool, VerifyError> {
        let Some(case_id) = case_of_subject(subject) else {
            return Err(ChainError::CaseMismatch {
                expected_case: subject.to_owned(),
                event_case: event.case_id.to_string(),
            }
            .into());
        };
        if self.memory.get(&case_id).is_none() && !self.reload(&case_id, sequence).await {
            return Ok(false);
        }
        let (known, examined, continues) = match self.memory.get(&case_id) {
            Some(m) => (
                m.known(sequence, event),
                m.examined,
                m.tip.check(event).is_ok(),
            ),
            None => (None, 0, false),
        };
        let read = match known {
            Some(Known::Replay { original_sequence }) => {
                self.memory.examined(&case_id, sequence);
                return Err(ChainError::Replay {
                    case_id: case_id.to_string(),
                    version: event.version(),
                    original_sequence,
                }
                .into());
            }
            Some(Known::Redelivery) => self.reload(&case_id, sequence).await,
            None if sequence <= examined => self.reload(&case_id, sequence).await,
            None if !continues => self.catch_up(&case_id, sequence).await,
            None => true,
        };
        if !read {
            return Ok(false);
        }
        let checked = match self.memory.get(&case_id) {
            Some(m) => match m.known(sequence, event) {
                // Another instance handled the original, which the catch-up just read.
                Some(Known::Replay { original_sequence }) => Err(ChainError::Replay {
                    case_id: case_id.to_string(),
                    version: event.version(),
                    original_sequence,
                }
                .into()),
                _ => m.tip.check(event).map_err(VerifyError::from),
            },
            None => ChainTip::empty(case_id.clone())
                .check(event)
                .map_err(VerifyError::from),
        }
        .and_then(|()| check_recorded_at(event, stored_at, self.bus.max_clock_skew()));
        if checked.is_err() {
            self.memory.examined(&case_id, sequence);
        }
        checked.map(|()| true)
    }

    /// Rebuilds the case's memory from the stream, up to the message before `sequence`.
    /// False when the stream cannot be read right now.
    async fn reload(&mut self, case_id: &CaseId, sequence: u64) -> bool {
        match self
            .bus
            .load_case_until(case_id, sequence.saturating_sub(1))
            .await
        {
            Ok(loaded) => {
                self.memory.insert(CaseMemory::loaded(&loaded));
                true
            }
            Err(e) => {
                tracing::warn!(consumer = %self.config.name, case_id = %case_id, error = %e, "loading chain failed; will retry");
                false
            }
        }
    }

    /// Brings the case's memory up to the message before `sequence`, reading only the
    /// case's messages after the last one examined (those other instances handled).
    /// False when the stream cannot be read right now.
    async fn catch_up(&mut self, case_id: &CaseId, sequence: u64) -> bool {
        let examined = self.memory.get(case_id).map_or(0, |m| m.examined);
        let messages = match self
            .bus
            .read_case_messages(case_id, examined, sequence.saturating_sub(1))
            .await
        {
            Ok(messages) => messages,
            Err(e) => {
                tracing::warn!(consumer = %self.config.name, case_id = %case_id, error = %e, "reading chain failed; will retry");
                return false;
            }
        };
        if messages.is_empty() {
            return true;
        }
        // Taken out of the map and put back, never cloned: a memory holds every event of
        // its case.
        let mut memory = self
            .memory
            .remove(case_id)
            .unwrap_or_else(|| CaseMemory::empty(case_id.clone()));
        let registry = self.bus.registry();
        for message in &messages {
            let ok = verify_signed(&message.payload, &registry).ok().filter(|e| {
                memory.known(message.sequence, e).is_none()
                    && memory.tip.check(e).is_ok()
                    && check_recorded_at(e, message.time, self.bus.max_clock_skew()).is_ok()
            });
            match ok {
                Some(event) => memory.advance(message.sequence, &event),
                None => memory.examined(message.sequence),
            }
        }
        self.memory.insert(memory);
        true
    }

    /// Dead-letters a message in the one-at-a-time mode: publishes its copy without
    /// awaiting the stream's acknowledgement, keeping at most [`DEAD_LETTER_WINDOW`]
    /// in flight; the message is acked when its copy is confirmed
    /// ([`ConsumerRunner::settle_dead_letters`]).
    async fn dead_letter(
        &mut self,
        message: Message,
        sequence: u64,
        subject: String,
        code: &'static str,
        reason: String,
        shutdown: &CancellationToken,
    ) {
        if let Some(letter) = self
            .send_dead_letter(message, sequence, subject, code, reason, shutdown)
            .await
        {
            self.in_flight.push_back(letter);
        }
        self.settle_dead_letters(DEAD_LETTER_WINDOW - 1, shutdown)
            .await;
    }

    /// Publishes the dead-letter copy of a message without awaiting the stream's
    /// acknowledgement. When the publish cannot even be sent it is retried until stored
    /// (then the letter comes back confirmed); `None` when shutdown came first.
    async fn send_dead_letter(
        &self,
        message: Message,
        sequence: u64,
        subject: String,
        code: &'static str,
        reason: String,
        shutdown: &CancellationToken,
    ) -> Option<InFlightDeadLetter> {
        let publish = self.dead_letter_message(&message, sequence, &subject, code, &reason);
        let ack = match self
            .bus
            .jetstream()
            .send_publish(dlq_subject(&self.config.name), publish)
            .await
        {
            Ok(ack) => Some(ack),
            Err(e) => {
                tracing::error!(consumer = %self.config.name, sequence, error = %e, "dead-letter publish failed; retrying");
                if !self
                    .publish_dead_letter(&message, sequence, &subject, code, &reason, shutdown)
                    .await
                {
                    return None;
                }
                None
            }
        };
        Some(InFlightDeadLetter {
            message,
            sequence,
            subject,
            code,
            reason,
            ack,
        })
    }

    /// Awaits the stream's confirmation of a dead letter; a copy it did not confirm is
    /// published again (its message id makes that idempotent). False when shutdown came
    /// first.
    async fn confirm_dead_letter(
        &self,
        letter: &mut InFlightDeadLetter,
        shutdown: &CancellationToken,
    ) -> bool {
        let Some(ack) = letter.ack.take() else {
            return true;
        };
        match ack.await {
            Ok(_) => {
                tracing::warn!(consumer = %self.config.name, sequence = letter.sequence, code = letter.code, "message dead-lettered");
                self.counters.dead_lettered.fetch_add(1, Ordering::Relaxed);
                true
            }
            Err(e) => {
                tracing::error!(consumer = %self.config.name, sequence = letter.sequence, error = %e, "dead-letter publish not confirmed; retrying");
                self.publish_dead_letter(
                    &letter.message,
                    letter.sequence,
                    &letter.subject,
                    letter.code,
                    &letter.reason,
                    shutdown,
                )
                .await
            }
        }
    }

    /// Awaits the oldest dead letters in flight until at most `keep` are left, acking
    /// each message whose copy is stored. Returns false when shutdown came first: the
    /// rest stay unacked, to be delivered again.
    async fn settle_dead_letters(&mut self, keep: usize, shutdown: &CancellationToken) -> bool {
        while self.in_flight.len() > keep {
            let Some(mut letter) = self.in_flight.pop_front() else {
                break;
            };
            if !self.confirm_dead_letter(&mut letter, shutdown).await {
                self.in_flight.clear();
                return false;
            }
            self.ack_dead_letter(&letter.message, letter.sequence).await;
        }
        true
    }

    /// Acks a message whose dead-letter copy is stored.
    async fn ack_dead_letter(&self, message: &Message, sequence: u64) {
        if let Err(e) = message.ack().await {
            tracing::warn!(consumer = %self.config.name, error = %e, "ack of dead letter failed");
        }
        self.counters
            .last_sequence
            .fetch_max(sequence, Ordering::Relaxed);
    }

    /// The copy of a message for `CASES_DLQ`, with the reason in headers and a message
    /// id that makes publishing it again idempotent.
    fn dead_letter_message(
        &self,
        message: &Message,
        sequence: u64,
        subject: &str,
        code: &str,
        reason: &str,
    ) -> Publish {
        let mut headers = HeaderMap::new();
        headers.insert(headers::DLQ_REASON, truncate(reason, 1000).as_str());
        headers.insert(headers::DLQ_CODE, code);
        headers.insert(headers::DLQ_CONSUMER, self.config.name.as_str());
        headers.insert(headers::DLQ_STREAM, CASES_STREAM);
        headers.insert(headers::DLQ_SEQUENCE, sequence.to_string().as_str());
        headers.insert(headers::DLQ_SUBJECT, subject);
        Publish::build()
            .payload(message.payload.clone())
            .headers(headers)
            .message_id(format!("{}:{sequence}", self.config.name))
    }

    /// Publishes a copy of the message to `CASES_DLQ` with the reason in headers,
    /// retrying until it is stored. Returns false when shutdown came first (nothing is
    /// acked then: the message is delivered again after a restart).
    async fn publish_dead_letter(
        &self,
        message: &Message,
        sequence: u64,
        subject: &str,
        code: &str,
        reason: &str,
        shutdown: &CancellationToken,
    ) -> bool {
        let mut backoff = FIRST_BACKOFF;
        loop {
            let publish = self.dead_letter_message(message, sequence, subject, code, reason);
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
                        return false;
                    }
                }
            }
        }
        tracing::warn!(consumer = %self.config.name, sequence, code, "message dead-lettered");
        self.counters.dead_lettered.fetch_add(1, Ordering::Relaxed);
        true
    }

    /// Consumes until `shutdown` is cancelled, handing verified events to `handler` in
    /// batches of at most `max_batch` (at least 1): a batch is what the pull has
    /// delivered by the time the first message of it arrived, up to `max_batch`, so
    /// nothing waits for a batch to fill, and batches grow under load while the
    /// previous one is being committed. The signatures
    /// of a gathered batch are checked on several cores at once (they dominate the cost
    /// of consuming), the chains in stream order. After the handler committed a batch,
    /// all its messages are acked (without waiting for the server to confirm each ack).
    ///
    /// A message that fails verification ends the batch before it: that batch is
    /// handed over first, then the message is dead-lettered, [`BatchHandler::skipped`]
    /// is told its sequence, and it is acked. A chain that cannot be loaded (NATS
    /// briefly away) is retried in place, so nothing behind the message overtakes it.
    ///
    /// On shutdown it stops pulling at once; the batch in hand is handed over and acked
    /// first.
    ///
    /// # Errors
    /// [`ConsumeError::Setup`] when the consumer cannot be created at start. Later
    /// stream errors are logged; the pull stream recovers by itself and is
    /// re-established only when it ends.
    pub async fn run_batched<H: BatchHandler>(
        mut self,
        handler: H,
        max_batch: usize,
        shutdown: CancellationToken,
    ) -> Result<(), ConsumeError> {
        let consumer = self.ensure_consumer().await?;
        let max_batch = max_batch.max(1);
        tracing::info!(consumer = %self.config.name, stream = CASES_STREAM, max_batch, "batched consumer started");
        let mut backoff = FIRST_BACKOFF;
        'outer: while !shutdown.is_cancelled() {
            let messages = consumer
                .stream()
                .max_messages_per_batch(self.config.batch.max(max_batch))
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
            // A batch gathered, with its signature checks started, while the one before
            // it was being committed.
            let mut ahead: Option<Gathered> = None;
            loop {
                let Gathered {
                    messages: gathered,
                    verification,
                    interrupted,
                } = match ahead.take() {
                    Some(batch) => batch,
                    None => {
                        // The first message of a batch is awaited as long as it takes.
                        let first = tokio::select! {
                            biased;
                            () = shutdown.cancelled() => break 'outer,
                            next = messages.next() => next,
                        };
                        let (mut gathered, mut interrupted) = (Vec::new(), None);
                        match first {
                            Some(Ok(message)) => gathered.push(message),
                            Some(Err(e)) => interrupted = Some(Some(e)),
                            None => interrupted = Some(None),
                        }
                        if interrupted.is_none() {
                            interrupted = gather_delivered(&mut messages, &mut gathered, max_batch);
                        }
                        let verification = self.start_verification(&gathered);
                        Gathered {
                            messages: gathered,
                            verification,
                            interrupted,
                        }
                    }
                };
                if !gathered.is_empty() {
                    backoff = FIRST_BACKOFF;
                    let mut pending = Pending::default();
                    if !self
                        .admit_gathered(&handler, gathered, verification, &mut pending, &shutdown)
                        .await
                    {
                        // Shutdown came while a message was being retried: nothing after
                        // it may be handed over before it.
                        break 'outer;
                    }
                    // What arrived meanwhile is gathered now and its signatures are
                    // checked on the blocking pool while this batch commits: checking
                    // and committing take turns otherwise, each leaving a core idle. Its
                    // chains are checked only after this batch committed.
                    if interrupted.is_none() {
                        let mut next = Vec::new();
                        let next_interrupted =
                            gather_delivered(&mut messages, &mut next, max_batch);
                        if !next.is_empty() || next_interrupted.is_some() {
                            let verification = self.start_verification(&next);
                            ahead = Some(Gathered {
                                messages: next,
                                verification,
                                interrupted: next_interrupted,
                            });
                        }
                    }
                    if !self.flush(&handler, &mut pending, &shutdown).await {
                        break 'outer;
                    }
                }
                match interrupted {
                    None => {}
                    Some(Some(e)) => {
                        tracing::warn!(consumer = %self.config.name, error = %e, "message stream error");
                        // Keep the stream, as in `run`: dropping it would drop messages
                        // delivered to it but not handed over yet.
                        if !pause(&shutdown, &mut backoff).await {
                            break 'outer;
                        }
                    }
                    Some(None) => continue 'outer,
                }
            }
        }
        tracing::info!(consumer = %self.config.name, "consumer stopped");
        Ok(())
    }

    /// In stream order, checks the chain of each gathered message (their signatures
    /// checked by `verification`) and adds its event to `pending`, dead-lettering what
    /// fails (after handing over what came before it). Returns false when shutdown
    /// stopped it before every message was dealt with.
    async fn admit_gathered<H: BatchHandler>(
        &mut self,
        handler: &H,
        gathered: Vec<Message>,
        verification: Verification,
        pending: &mut Pending,
        shutdown: &CancellationToken,
    ) -> bool {
        let signatures = verification.finish().await;
        for (message, signature) in gathered.into_iter().zip(signatures) {
            if !self
                .admit(handler, message, signature, pending, shutdown)
                .await
            {
                return false;
            }
        }
        true
    }

    /// Starts `verify_signed` for every message, in order, except for copies of events
    /// the memory holds ([`ConsumerRunner::known_copy`]), which need no signature
    /// check. Signature checks dominate the cost of consuming, so a large batch is split
    /// over the blocking pool, one chunk per core, and runs while the caller goes on
    /// (committing the batch before it); a small one is checked in place.
    fn start_verification(&self, messages: &[Message]) -> Verification {
        let copies: Vec<Option<ChainError>> = messages
            .iter()
            .map(|m| {
                let sequence = m.info().ok()?.stream_sequence;
                self.known_copy(sequence, &m.subject, &m.payload)
                    .map(|(_, replay)| replay)
            })
            .collect();
        let payloads: Vec<bytes::Bytes> = messages
            .iter()
            .zip(&copies)
            .filter(|(_, copy)| copy.is_none())
            .map(|(m, _)| m.payload.clone())
            .collect();
        let registry = self.bus.registry();
        let cores = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
        if payloads.len() < PARALLEL_VERIFY_FROM || cores < 2 {
            let checked = payloads
                .iter()
                .map(|p| verify_signed(p, &registry))
                .collect();
            return Verification {
                copies,
                checks: Checks::Done(checked),
            };
        }
        let chunk = payloads.len().div_ceil(cores.min(MAX_VERIFY_THREADS));
        let tasks = payloads
            .chunks(chunk)
            .map(|chunk| {
                // Kept to be checked here if the blocking pool loses the task.
                let kept = chunk.to_vec();
                let (chunk, registry) = (kept.clone(), registry.clone());
                let task = tokio::task::spawn_blocking(move || {
                    chunk
                        .iter()
                        .map(|payload| verify_signed(payload, &registry))
                        .collect::<Vec<_>>()
                });
                (task, kept)
            })
            .collect();
        Verification {
            copies,
            checks: Checks::Running { tasks, registry },
        }
    }

    /// Checks one message's chain and adds it to the batch, or dead-letters it (after
    /// handing over the batch gathered before it). Returns false when shutdown came
    /// while it was being retried: it was neither handed over nor acked.
    async fn admit<H: BatchHandler>(
        &mut self,
        handler: &H,
        message: Message,
        signature: Result<VerifiedEvent, VerifyError>,
        pending: &mut Pending,
        shutdown: &CancellationToken,
    ) -> bool {
        let (sequence, stored_at, subject) = match message.info() {
            Ok(info) => {
                if info.delivered > 1 {
                    self.counters.redelivered.fetch_add(1, Ordering::Relaxed);
                }
                (
                    info.stream_sequence,
                    info.published,
                    message.subject.to_string(),
                )
            }
            Err(e) => {
                tracing::warn!(consumer = %self.config.name, error = %e, "message without metadata; skipped");
                return true;
            }
        };
        // Signatures are checked before the batch ahead committed, so a copy of an event
        // admitted since then was checked as a message of its own: one that failed is
        // told against the memory as it is now, and reported as the copy it is.
        let signature = match signature {
            Err(error) => Err(self
                .known_copy(sequence, &subject, &message.payload)
                .map_or(error, |(_, replay)| replay.into())),
            ok => ok,
        };
        let mut backoff = FIRST_BACKOFF;
        let checked = match signature {
            Ok(event) => loop {
                match self
                    .check_chain(sequence, stored_at, &subject, &event)
                    .await
                {
                    Ok(true) => break Ok(event),
                    Ok(false) => {
                        // The case's chain could not be loaded. Commit what came before
                        // and retry this message in place: leaving it for redelivery
                        // would let the messages behind it overtake it.
                        if !self.flush(handler, pending, shutdown).await {
                            return false;
                        }
                        let _ = message.ack_with(AckKind::Progress).await;
                        if !pause(shutdown, &mut backoff).await {
                            return false;
                        }
                    }
                    Err(error) => break Err(error),
                }
            },
            Err(error) => Err(error),
        };
        match checked {
            Ok(event) => {
                let stored = StoredEvent { sequence, event };
                // The next event of the case in this batch is checked against this one.
                self.advance(&stored);
                pending.messages.push(message);
                pending.events.push(stored);
                true
            }
            Err(error) => {
                // The events before it are committed first, so that the handler is
                // told of the dead letter only after them; its copy is published
                // without waiting, and settled with the next flush.
                if !pending.events.is_empty() && !self.flush(handler, pending, shutdown).await {
                    return false;
                }
                match self
                    .send_dead_letter(
                        message,
                        sequence,
                        subject,
                        error.code(),
                        error.to_string(),
                        shutdown,
                    )
                    .await
                {
                    Some(letter) => pending.dead.push(letter),
                    None => return false,
                }
                pending.dead.len() < DEAD_LETTER_WINDOW
                    || self.flush(handler, pending, shutdown).await
            }
        }
    }

    /// Settles the dead letters in flight, then hands the gathered batch over and acks
    /// it. Returns false when shutdown came while retrying: then nothing more is acked
    /// and the rest is dropped, to be delivered again after the restart.
    async fn flush<H: BatchHandler>(
        &mut self,
        handler: &H,
        pending: &mut Pending,
        shutdown: &CancellationToken,
    ) -> bool {
        if !self
            .settle_batched_dead_letters(handler, pending, shutdown)
            .await
        {
            return false;
        }
        if pending.is_empty() {
            return true;
        }
        let Pending {
            messages, events, ..
        } = std::mem::take(pending);
        match self.hand_over(handler, &events, &messages, shutdown).await {
            HandOver::Done => {
                self.acknowledge(&messages, &events).await;
                true
            }
            HandOver::Stopped => false,
            HandOver::Permanent(reason) if events.len() == 1 => {
                self.dead_letter_batched(
                    handler,
                    &messages[0],
                    events[0].sequence,
                    &case_subject(&events[0].event.case_id),
                    "handler",
                    &reason,
                    shutdown,
                )
                .await
            }
            HandOver::Permanent(reason) => {
                tracing::warn!(
                    consumer = %self.config.name,
                    events = events.len(),
                    error = %reason,
                    "batch refused; handing its events over one at a time"
                );
                for (message, event) in messages.iter().zip(&events) {
                    let single = std::slice::from_ref(event);
                    match self
                        .hand_over(handler, single, std::slice::from_ref(message), shutdown)
                        .await
                    {
                        HandOver::Done => {
                            self.acknowledge(std::slice::from_ref(message), single)
                                .await;
                        }
                        HandOver::Stopped => return false,
                        HandOver::Permanent(reason) => {
                            if !self
                                .dead_letter_batched(
                                    handler,
                                    message,
                                    event.sequence,
                                    &case_subject(&event.event.case_id),
                                    "handler",
                                    &reason,
                                    shutdown,
                                )
                                .await
                            {
                                return false;
                            }
                        }
                    }
                }
                true
            }
        }
    }

    /// Awaits the batch's dead letters in flight, tells the handler their sequences in
    /// one call, then acks them. False when shutdown came first (nothing more acked).
    async fn settle_batched_dead_letters<H: BatchHandler>(
        &self,
        handler: &H,
        pending: &mut Pending,
        shutdown: &CancellationToken,
    ) -> bool {
        let dead = std::mem::take(&mut pending.dead);
        self.settle_dead_letters_batched(handler, dead, shutdown)
            .await
    }

    /// Awaits dead letters in flight, tells the handler their sequences in one call,
    /// then acks them. False when shutdown came first (nothing more acked).
    async fn settle_dead_letters_batched<H: BatchHandler>(
        &self,
        handler: &H,
        mut dead: Vec<InFlightDeadLetter>,
        shutdown: &CancellationToken,
    ) -> bool {
        if dead.is_empty() {
            return true;
        }
        for letter in &mut dead {
            if !self.confirm_dead_letter(letter, shutdown).await {
                return false;
            }
        }
        let sequences: Vec<u64> = dead.iter().map(|l| l.sequence).collect();
        let mut backoff = FIRST_BACKOFF;
        while let Err(e) = handler.skipped(&sequences).await {
            tracing::warn!(consumer = %self.config.name, dead_letters = sequences.len(), error = %e, "handler did not take the skipped sequences; retrying");
            for letter in &dead {
                let _ = letter.message.ack_with(AckKind::Progress).await;
            }
            if !pause(shutdown, &mut backoff).await {
                return false;
            }
        }
        for letter in &dead {
            self.ack_dead_letter(&letter.message, letter.sequence).await;
        }
        true
    }

    /// Calls the handler until it commits or refuses for good, retrying transient
    /// failures with backoff while keeping the messages ours with progress acks.
    async fn hand_over<H: BatchHandler>(
        &self,
        handler: &H,
        events: &[StoredEvent],
        messages: &[Message],
        shutdown: &CancellationToken,
    ) -> HandOver {
        let mut backoff = FIRST_BACKOFF;
        loop {
            match handler.handle_batch(events).await {
                Ok(()) => return HandOver::Done,
                Err(HandlerError::Permanent(reason)) => return HandOver::Permanent(reason),
                Err(HandlerError::Transient(reason)) => {
                    self.counters.retries.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(
                        consumer = %self.config.name,
                        events = events.len(),
                        error = %reason,
                        "batch handler failed transiently; retrying"
                    );
                    for message in messages {
                        let _ = message.ack_with(AckKind::Progress).await;
                    }
                    if !pause(shutdown, &mut backoff).await {
                        return HandOver::Stopped;
                    }
                }
            }
        }
    }

    /// Acks committed messages. `ack()` only queues the ack on the connection; awaiting
    /// a server confirmation per message would cost a round trip each.
    async fn acknowledge(&self, messages: &[Message], events: &[StoredEvent]) {
        for message in messages {
            if let Err(e) = message.ack().await {
                tracing::warn!(consumer = %self.config.name, error = %e, "ack failed; the event will be redelivered");
            }
        }
        self.counters
            .handled
            .fetch_add(events.len() as u64, Ordering::Relaxed);
        if let Some(last) = events.last() {
            self.counters
                .last_sequence
                .store(last.sequence, Ordering::Relaxed);
        }
    }

    /// Dead-letters one message in batched mode at once: publish to the DLQ, tell the
    /// handler, then ack, as [`ConsumerRunner::settle_dead_letters_batched`] does for a
    /// run of them. Returns false when shutdown came first.
    #[allow(clippy::too_many_arguments)]
    async fn dead_letter_batched<H: BatchHandler>(
        &self,
        handler: &H,
        message: &Message,
        sequence: u64,
        subject: &str,
        code: &'static str,
        reason: &str,
        shutdown: &CancellationToken,
    ) -> bool {
        let Some(letter) = self
            .send_dead_letter(
                message.clone(),
                sequence,
                subject.to_owned(),
                code,
                reason.to_owned(),
                shutdown,
            )
            .await
        else {
            return false;
        };
        self.settle_dead_letters_batched(handler, vec![letter], shutdown)
            .await
    }
}

fn truncate(s: &str, max: usize) -> String {
    // Header values may not contain line breaks.
    s.chars()
        .filter(|c| *c != '\r' && *c != '\n')
        .take(max)
        .collect()
}

/// Runs `work` (the handling of one message) to its end. Every `every` while it runs, it
/// takes into `held` what the pull stream has received meanwhile and sends a progress
/// ack for the message being handled (its `reply` subject) and for every held message,
/// so the server redelivers none of them elsewhere while this instance lives.
async fn keep_alive(
    work: impl Future<Output = ()>,
    every: Duration,
    client: &async_nats::Client,
    reply: Option<Subject>,
    messages: &mut pull::Stream,
    held: &mut Held,
) {
    let mut work = std::pin::pin!(work);
    let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            biased;
            () = &mut work => return,
            _ = ticks.tick() => {
                held.gather(messages);
                // A progress ack only queues a publish on the connection; one that is
                // lost is made up by the next tick, well within the ack wait.
                if let Some(reply) = &reply {
                    let _ = client
                        .publish(reply.clone(), bytes::Bytes::from(AckKind::Progress))
                        .await;
                }
                for message in &held.messages {
                    let _ = message.ack_with(AckKind::Progress).await;
                }
            }
        }
    }
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
