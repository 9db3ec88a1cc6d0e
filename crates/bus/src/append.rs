//! Appending: load the case (from a per-appender cache plus whatever the stream has
//! beyond it), recognise a retried command by its event id, decide with the case rules,
//! sign, and publish with `Nats-Msg-Id: <event_id>` and
//! `Nats-Expected-Last-Subject-Sequence: <last sequence of the case>`. A wrong-sequence
//! answer means another writer got there first: reload and decide again, a bounded
//! number of times. This gives one total order per case and no lost update.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use async_nats::jetstream::context::PublishErrorKind;
use async_nats::jetstream::message::PublishMessage as Publish;
use prost::Message as _;
use sha2::{Digest, Sha256};
use time::OffsetDateTime;

use casebus_domain::{Calendar, Command, Context, DeadlineRules, decide};
use casebus_integrity::seal::{Opener, Sealer, keyed_command_digest, seal_event};
use casebus_integrity::{EventHash, OfficeSigner, VerifiedEvent};
use casebus_proto::event::v1::payload::Kind;
use casebus_proto::event::v1::{Event, Payload, SignedEvent, Visibility, VisibilityKind};
use casebus_proto::{CaseId, EventId, RequestId, payload_type_name, timestamp_from};

use crate::bus::Bus;
use crate::error::{AppendError, LoadError};
use crate::store::CaseHead;
use crate::subjects::{case_subject, headers};

/// Tuning of an [`Appender`].
#[derive(Debug, Clone)]
pub struct AppenderConfig {
    /// Attempts before giving up on a case that keeps changing under us.
    pub max_attempts: u32,
    /// Largest encoded signed event in bytes (keep below the stream's message limit,
    /// leaving room for headers).
    pub max_event_bytes: usize,
    /// Estimated bytes of case heads kept in memory (a head's estimate is its events'
    /// encoded size plus a fixed overhead per event, see [`AppenderStats::cache_bytes`]);
    /// beyond that arbitrary heads are evicted, and an evicted case is read from the
    /// stream again on its next append (the optimistic check keeps a stale cache safe).
    /// A head larger than the whole budget is not cached.
    pub cache_bytes: usize,
    /// The holiday calendar the deadline rules count on (the due time a clock
    /// extension gives); the shipped calendar by default.
    pub calendar: Arc<Calendar>,
}

/// The default of [`AppenderConfig::cache_bytes`]: 64 MiB, about what the case-count cap
/// of 10,000 it replaced held with the cases of the soak load.
pub const DEFAULT_CACHE_BYTES: usize = 64 * 1024 * 1024;

impl Default for AppenderConfig {
    fn default() -> Self {
        Self {
            max_attempts: 10,
            max_event_bytes: 248 * 1024,
            cache_bytes: DEFAULT_CACHE_BYTES,
            calendar: Arc::new(Calendar::shipped()),
        }
    }
}

/// What an [`Appender`] has retried and cached, readable while it runs (for metrics).
/// Counters only grow; `cache_bytes` and `cache_cases` are the current sizes.
#[derive(Debug, Default)]
pub struct AppenderStats {
    /// Publishes the stream refused because another writer appended to the case first
    /// (a wrong-last-sequence answer).
    pub conflicts: AtomicU64,
    /// Attempts after the first of an append, whatever made the first one go round
    /// again (a conflict, a cached head that had to be confirmed against the stream, a
    /// duplicate publish to report).
    pub retries: AtomicU64,
    /// Reads of a case from the stream made because the head an append had was not
    /// enough: every reload after the first attempt, and the reread after a duplicate
    /// publish. (The first read of a case not in the cache is not counted.)
    pub rereads: AtomicU64,
    /// Heads evicted from the cache to stay within [`AppenderConfig::cache_bytes`], or
    /// not cached because they alone exceed it.
    pub evictions: AtomicU64,
    /// Estimated bytes of the heads in the cache now.
    pub cache_bytes: AtomicU64,
    /// Heads in the cache now.
    pub cache_cases: AtomicU64,
}

fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

/// The head cache: heads by case and the sum of their estimated sizes.
#[derive(Default)]
struct HeadCache {
    heads: HashMap<CaseId, CaseHead>,
    bytes: usize,
}

/// One command to append.
#[derive(Debug, Clone, PartialEq)]
pub struct AppendRequest {
    /// The case.
    pub case_id: CaseId,
    /// The client's idempotency key.
    pub request_id: RequestId,
    /// Who at the office acted.
    pub actor: String,
    /// When it happened; `None` means now.
    pub occurred_at: Option<OffsetDateTime>,
    /// Event id of the event that caused this one, if any.
    pub causation_id: Option<EventId>,
    /// Free correlation id (at most 128 chars).
    pub correlation_id: String,
    /// Visibility; `None` means participants.
    pub visibility: Option<Visibility>,
    /// What happened.
    pub payload: Kind,
}

/// The outcome of a successful append.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Appended {
    /// The event's id.
    pub event_id: EventId,
    /// The case.
    pub case_id: CaseId,
    /// The event's version in the case.
    pub case_version: u64,
    /// The event's sequence in `CASES`.
    pub stream_sequence: u64,
    /// The event's hash.
    pub hash: EventHash,
    /// True when the command had been applied before (a retry); nothing new was written.
    pub duplicate: bool,
}

/// SHA-256 over a command as submitted (case, payload, visibility), stored in the event
/// so a reused request id with a different command is recognised.
pub fn command_digest(
    case_id: &CaseId,
    payload: &Kind,
    visibility: Option<&Visibility>,
) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(b"casebus.command.v1\0");
    h.update(case_id.as_str().as_bytes());
    h.update([0]);
    h.update(
        Payload {
            kind: Some(payload.clone()),
        }
        .encode_to_vec(),
    );
    h.update([0]);
    if let Some(v) = visibility {
        h.update(v.encode_to_vec());
    }
    h.finalize().into()
}

/// Appends events for one office. Share it (`Arc`) between all request handlers of the
/// office's service: it caches case heads so an append normally costs one direct get
/// and one publish.
pub struct Appender {
    bus: Bus,
    office: casebus_proto::OfficeId,
    /// The key events are signed with; replaced by [`Appender::replace_signer`] when the
    /// office's key is rotated. Each append takes a snapshot.
    signer: RwLock<Arc<SigningKey>>,
    rules: Arc<DeadlineRules>,
    /// `rules.digest(&config.calendar)`, counted once.
    rules_digest: String,
    config: AppenderConfig,
    cache: Mutex<HeadCache>,
    stats: Arc<AppenderStats>,
    /// One lock per case with an append in progress: appends to one case from this
    /// appender queue up instead of racing each other, so the optimistic check only
    /// ever settles races between appenders (service instances).
    locks: Mutex<HashMap<CaseId, Arc<tokio::sync::Mutex<()>>>>,
    /// Sealing of restricted events, when the office's decryption keys were given.
    sealing: Option<Sealing>,
}

/// What an appender seals with: a sealer (its HPKE contexts) and the office's own
/// decryption keys, to compare a retried sealed command with the stored one.
struct Sealing {
    sealer: Sealer,
    opener: Arc<Opener>,
}

/// Whether an event of `visibility` is restricted, so sealed.
fn restricted(visibility: &Visibility) -> bool {
    matches!(
        VisibilityKind::try_from(visibility.kind),
        Ok(VisibilityKind::ListedAgencies | VisibilityKind::OriginOnly)
    )
}

impl std::fmt::Debug for Appender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Appender")
            .field("office", &self.office)
            .finish_non_exhaustive()
    }
}

/// A signer with its public key as the registry writes it, so that the check at every
/// append compares two strings instead of encoding the key again.
struct SigningKey {
    signer: OfficeSigner,
    public_key: String,
}

impl SigningKey {
    fn new(signer: OfficeSigner) -> Self {
        let public_key = signer.key_entry(OffsetDateTime::UNIX_EPOCH).public_key;
        Self { signer, public_key }
    }

    /// Whether the registry has this very key (id and public key) for the office; the
    /// key's entry when it does.
    fn registered<'r>(
        &self,
        registry: &'r casebus_integrity::OfficeRegistry,
    ) -> Option<&'r casebus_integrity::KeyEntry> {
        registry
            .key_entry(self.signer.key_id())
            .filter(|(office, entry)| {
                *office == self.signer.office() && entry.public_key == self.public_key
            })
            .map(|(_, entry)| entry)
    }

    /// Checks that an event recorded at `at` may carry this key under `registry`: the
    /// check every consumer makes, made before anything is published.
    fn check(
        &self,
        registry: &casebus_integrity::OfficeRegistry,
        at: OffsetDateTime,
    ) -> Result<(), AppendError> {
        let rfc3339 = |t: OffsetDateTime| {
            t.format(&time::format_description::well_known::Rfc3339)
                .unwrap_or_default()
        };
        let reason = match self.registered(registry) {
            Some(entry) if entry.valid_at(at) => return Ok(()),
            Some(entry) => match entry.valid_until {
                Some(until) if at >= until => format!("it expired at {}", rfc3339(until)),
                _ => format!("it is valid from {}", rfc3339(entry.valid_from)),
            },
            None => "it is not in the office registry".to_owned(),
        };
        Err(AppendError::SigningKeyNotValid {
            office: self.signer.office().to_string(),
            key_id: self.signer.key_id().to_owned(),
            at: rfc3339(at),
            reason,
        })
    }
}

fn unavailable(case_id: &CaseId, source: impl Into<crate::error::NatsError>) -> AppendError {
    AppendError::Unavailable {
        case_id: case_id.to_string(),
        source: source.into(),
    }
}

/// A case head taken out of the appender's cache for one attempt: it goes back into the
/// cache when dropped, however the attempt ends, unless [`Taken::into_inner`] took it.
struct Taken<'a> {
    appender: &'a Appender,
    head: Option<CaseHead>,
}

impl<'a> Taken<'a> {
    fn new(appender: &'a Appender, head: CaseHead) -> Self {
        Self {
            appender,
            head: Some(head),
        }
    }

    fn into_inner(mut self) -> CaseHead {
        self.head
            .take()
            .expect("a taken head is present until dropped")
    }
}

impl std::ops::Deref for Taken<'_> {
    type Target = CaseHead;

    fn deref(&self) -> &CaseHead {
        self.head
            .as_ref()
            .expect("a taken head is present until dropped")
    }
}

impl std::ops::DerefMut for Taken<'_> {
    fn deref_mut(&mut self) -> &mut CaseHead {
        self.head
            .as_mut()
            .expect("a taken head is present until dropped")
    }
}

impl Drop for Taken<'_> {
    fn drop(&mut self) {
        if let Some(head) = self.head.take() {
            self.appender.store(head);
        }
    }
}

impl Appender {
    /// An appender signing with `signer`.
    ///
    /// # Errors
    /// [`AppendError::UnknownSigner`] when the signer's office or key is not in the
    /// registry the bus verifies with, or the registered public key differs, or the key
    /// is not valid now: its events would be dead-lettered by every consumer.
    pub fn new(
        bus: Bus,
        signer: OfficeSigner,
        rules: Arc<DeadlineRules>,
        config: AppenderConfig,
    ) -> Result<Self, AppendError> {
        let key = SigningKey::new(signer);
        let registry = bus.registry();
        let now = OffsetDateTime::now_utc();
        if key.registered(&registry).is_none_or(|k| !k.valid_at(now)) {
            return Err(AppendError::UnknownSigner {
                office: format!("{} (key {})", key.signer.office(), key.signer.key_id()),
            });
        }
        Ok(Self {
            bus,
            office: key.signer.office().clone(),
            signer: RwLock::new(Arc::new(key)),
            rules_digest: rules.digest(&config.calendar),
            rules,
            config,
            cache: Mutex::new(HeadCache::default()),
            stats: Arc::default(),
            locks: Mutex::new(HashMap::new()),
            sealing: None,
        })
    }

    /// Seals restricted events from now on, with `opener` holding the office's own
    /// decryption keys (current and retired: a retried command is compared with the
    /// event stored under whichever key sealed it).
    ///
    /// # Errors
    /// [`AppendError::Sealing`] when `opener` holds a key of another office, or none of
    /// its keys is in the registry as an encryption key of this office.
    pub fn seal_with(mut self, opener: Arc<Opener>) -> Result<Self, AppendError> {
        let refuse = |reason: String| AppendError::Sealing {
            office: self.office.to_string(),
            reason,
        };
        if let Some(other) = opener.keys().iter().find(|k| k.office() != &self.office) {
            return Err(refuse(format!(
                "decryption key {} belongs to another office",
                other.key_id()
            )));
        }
        let registry = self.bus.registry();
        let registered = opener.keys().iter().any(|k| {
            registry
                .encryption_key_entry(k.key_id())
                .is_some_and(|(office, entry)| {
                    office == &self.office && entry.public_key == k.public_base64()
                })
        });
        if !registered {
            return Err(refuse(format!(
                "none of its decryption keys ({}) is registered as its encryption key",
                opener.key_ids().join(", ")
            )));
        }
        self.sealing = Some(Sealing {
            sealer: Sealer::default(),
            opener,
        });
        Ok(self)
    }

    /// Whether restricted events are sealed.
    pub fn seals(&self) -> bool {
        self.sealing.is_some()
    }

    /// Signs from now on with `signer` (a rotated key). The key's validity is not
    /// required now (a key may be installed ahead of its `valid_from`): every append
    /// checks it at the instant it records.
    ///
    /// # Errors
    /// [`AppendError::UnknownSigner`] when `signer` signs for another office, or its key
    /// id and public key are not in the bus's registry (replace the registry first);
    /// the appender keeps its key then.
    pub fn replace_signer(&self, signer: OfficeSigner) -> Result<(), AppendError> {
        let key = SigningKey::new(signer);
        if key.signer.office() != &self.office || key.registered(&self.bus.registry()).is_none() {
            return Err(AppendError::UnknownSigner {
                office: format!("{} (key {})", key.signer.office(), key.signer.key_id()),
            });
        }
        match self.signer.write() {
            Ok(mut current) => *current = Arc::new(key),
            Err(poisoned) => *poisoned.into_inner() = Arc::new(key),
        }
        Ok(())
    }

    /// The id of the key events are signed with now.
    pub fn key_id(&self) -> String {
        self.signing_key().signer.key_id().to_owned()
    }

    fn signing_key(&self) -> Arc<SigningKey> {
        match self.signer.read() {
            Ok(current) => current.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// What this appender has retried and cached so far, updated as it runs.
    pub fn stats(&self) -> Arc<AppenderStats> {
        self.stats.clone()
    }

    /// The bus this appender publishes to.
    pub fn bus(&self) -> &Bus {
        &self.bus
    }

    /// The signing office.
    pub fn office(&self) -> &casebus_proto::OfficeId {
        &self.office
    }

    /// The case head taken out of the cache as it is (`true`), or the head read from the
    /// stream on a miss (`false`).
    ///
    /// Heads are taken out of the cache and put back (see [`Taken`]), never cloned: a
    /// head holds every event id of its case, so a clone per append would make appending
    /// to a long case cost time in proportion to its length. The per-case lock makes the
    /// appender the only user of the head meanwhile.
    async fn cached_head(&self, case_id: &CaseId) -> Result<(CaseHead, bool), LoadError> {
        match self.take(case_id) {
            Some(head) => Ok((head, true)),
            None => self.head(case_id).await.map(|h| (h, false)),
        }
    }

    /// The case head from the cache (taken out of it) brought up to date with the
    /// stream. On an error the cached head is dropped, and the next append reads the
    /// case anew.
    async fn head(&self, case_id: &CaseId) -> Result<CaseHead, LoadError> {
        let mut head = self
            .take(case_id)
            .unwrap_or_else(|| CaseHead::empty(case_id.clone()));
        self.bus.refresh(&mut head).await?;
        Ok(head)
    }

    fn take(&self, case_id: &CaseId) -> Option<CaseHead> {
        let mut cache = self.cache.lock().ok()?;
        let head = cache.heads.remove(case_id)?;
        cache.bytes -= head.bytes;
        self.record_size(&cache);
        Some(head)
    }

    fn store(&self, head: CaseHead) {
        let Ok(mut cache) = self.cache.lock() else {
            return;
        };
        let newer = cache
            .heads
            .get(&head.tip.case_id)
            .is_none_or(|c| c.last_sequence <= head.last_sequence);
        if !newer {
            return;
        }
        if let Some(old) = cache.heads.remove(&head.tip.case_id) {
            cache.bytes -= old.bytes;
        }
        if head.bytes > self.config.cache_bytes {
            bump(&self.stats.evictions);
            self.record_size(&cache);
            return;
        }
        // Evict arbitrary heads (the map's hashing is seeded per process) until this
        // one fits: emptying the whole cache at the cap made every case reload at
        // once, and a load over more cases than fit reload on every append.
        while cache.bytes + head.bytes > self.config.cache_bytes {
            let Some(evicted) = cache.heads.keys().next().cloned() else {
                break;
            };
            if let Some(old) = cache.heads.remove(&evicted) {
                cache.bytes -= old.bytes;
                bump(&self.stats.evictions);
            }
        }
        cache.bytes += head.bytes;
        cache.heads.insert(head.tip.case_id.clone(), head);
        self.record_size(&cache);
    }

    fn record_size(&self, cache: &HeadCache) {
        self.stats
            .cache_bytes
            .store(cache.bytes as u64, Ordering::Relaxed);
        self.stats
            .cache_cases
            .store(cache.heads.len() as u64, Ordering::Relaxed);
    }

    /// Appends the event for `request`, or returns the original outcome when this
    /// request was applied before.
    ///
    /// # Errors
    /// - [`AppendError::InvalidRequest`] for a malformed request;
    /// - [`AppendError::Rejected`] when the case rules refuse the command;
    /// - [`AppendError::RequestIdReused`] when the request id was used for another command;
    /// - [`AppendError::TooLarge`] when the event exceeds the size limit;
    /// - [`AppendError::Contention`] when the case kept changing for every attempt;
    /// - [`AppendError::SigningKeyNotValid`] when the signing key is not valid at the
    ///   instant the event would be recorded (checked at every attempt, against the
    ///   registry the bus verifies with now);
    /// - [`AppendError::Unavailable`] when NATS is down or did not confirm: the outcome is
    ///   unknown and a retry with the same request id is safe.
    ///
    /// In every error case nothing was written, except possibly for `Unavailable`.
    #[tracing::instrument(skip_all, fields(case_id = %request.case_id, event_id))]
    pub async fn append(&self, request: AppendRequest) -> Result<Appended, AppendError> {
        let case_id = request.case_id.clone();
        let lock = self.case_lock(&case_id);
        let result = {
            let _guard = lock.lock().await;
            self.append_locked(request).await
        };
        self.release_case_lock(&case_id, &lock);
        result
    }

    fn case_lock(&self, case_id: &CaseId) -> Arc<tokio::sync::Mutex<()>> {
        match self.locks.lock() {
            Ok(mut locks) => locks.entry(case_id.clone()).or_default().clone(),
            // A poisoned map only loses the queueing; the optimistic check still holds.
            Err(_) => Arc::default(),
        }
    }

    fn release_case_lock(&self, case_id: &CaseId, lock: &Arc<tokio::sync::Mutex<()>>) {
        if let Ok(mut locks) = self.locks.lock()
            && locks
                .get(case_id)
                // Only the map and we hold it: nobody is waiting, so drop the entry.
                .is_some_and(|l| Arc::ptr_eq(l, lock) && Arc::strong_count(l) == 2)
        {
            locks.remove(case_id);
        }
    }

    async fn append_locked(&self, request: AppendRequest) -> Result<Appended, AppendError> {
        let case_id = request.case_id.clone();
        if request.correlation_id.chars().count() > 128 {
            return Err(AppendError::InvalidRequest {
                field: "correlation_id",
                reason: "at most 128 characters are allowed".into(),
            });
        }
        let office = self.office.clone();
        let event_id = EventId::derive(&office, &case_id, &request.request_id);
        tracing::Span::current().record("event_id", tracing::field::display(&event_id));
        let digest = command_digest(&case_id, &request.payload, request.visibility.as_ref());
        let registry = self.bus.registry();
        let directory = |o: &casebus_proto::OfficeId| registry.contains(o);

        for attempt in 1..=self.config.max_attempts {
            // First attempt: trust the cached head without asking the stream; if another
            // instance appended meanwhile, the expected-sequence check refuses our publish
            // and the next attempt reloads. A cache miss always reads the stream.
            let (head, cached) = if attempt == 1 {
                self.cached_head(&case_id).await
            } else {
                bump(&self.stats.retries);
                bump(&self.stats.rereads);
                self.head(&case_id).await.map(|h| (h, false))
            }
            .map_err(|e| unavailable(&case_id, e))?;
            // Back into the cache whichever way this attempt ends.
            let mut head = Taken::new(self, head);
            if let Some(done) = head.ids.get(&event_id) {
                // A retry. A cached head may remember an event the stream no longer
                // holds (a server that lost acknowledged writes): confirm it against
                // the stream before answering that it is stored.
                if attempt == 1 && cached {
                    continue;
                }
                let done = *done;
                drop(head);
                return self.duplicate(&request, &event_id, &done, &digest).await;
            }
            let now = OffsetDateTime::now_utc();
            // Time never goes backwards within a case (consumers dead-letter an event
            // recorded before its predecessor): another instance with a clock slightly
            // ahead may have recorded the last event.
            let recorded_at = head.tip.recorded_at.map_or(now, |last| last.max(now));
            // The key is judged at the instant the event records, against the registry
            // consumers verify with now, so no event leaves here that they would refuse.
            // A snapshot of both: a rotation during this attempt applies to the next.
            let key = self.signing_key();
            let registry_now = self.bus.registry();
            key.check(&registry_now, recorded_at)?;
            let command = Command {
                case_id: case_id.clone(),
                office: office.clone(),
                actor: request.actor.clone(),
                occurred_at: request.occurred_at.unwrap_or(now),
                visibility: request.visibility.clone(),
                payload: request.payload.clone(),
            };
            let ctx = Context {
                now,
                rules: &self.rules,
                calendar: &self.config.calendar,
                rules_digest: &self.rules_digest,
                offices: &directory,
            };
            let decision = match decide(&head.state, &command, &ctx) {
                Ok(decision) => decision,
                // A cached head may be stale; never refuse on a stale state: read the
                // stream and decide again.
                Err(_) if attempt == 1 && cached => continue,
                Err(rejection) => {
                    return Err(AppendError::Rejected {
                        case_id: case_id.to_string(),
                        rejection,
                    });
                }
            };
            let type_name = payload_type_name(&decision.payload);
            let version = head.state.version + 1;
            let event = Event {
                event_id: event_id.to_string(),
                case_id: case_id.to_string(),
                case_version: version,
                office_id: office.to_string(),
                agency: office.agency() as i32,
                actor: request.actor.clone(),
                occurred_at: Some(timestamp_from(command.occurred_at)),
                recorded_at: Some(timestamp_from(recorded_at)),
                causation_id: request
                    .causation_id
                    .as_ref()
                    .map(ToString::to_string)
                    .unwrap_or_default(),
                correlation_id: request.correlation_id.clone(),
                visibility: Some(decision.visibility),
                prev_event_hash: head.tip.hash.map(|h| h.0.to_vec()).unwrap_or_default(),
                request_id: request.request_id.to_string(),
                command_digest: digest.to_vec(),
                payload: Some(Payload {
                    kind: Some(decision.payload),
                }),
                sealed: None,
            };
            let mut event = event;
            self.widen(&mut event, &head, &registry_now, recorded_at)
                .await?;
            self.seal(&mut event, &registry_now, recorded_at, &digest)?;
            let (signed, hash) = key.signer.sign(&event);
            let bytes = signed.encode_to_vec();
            if bytes.len() > self.config.max_event_bytes {
                return Err(AppendError::TooLarge {
                    case_id: case_id.to_string(),
                    size: bytes.len(),
                    max: self.config.max_event_bytes,
                });
            }
            let publish = Publish::build()
                .payload(bytes.clone().into())
                .message_id(event_id.as_str())
                .expected_last_subject_sequence(head.last_sequence)
                .header(headers::EVENT_TYPE, type_name)
                .header(headers::OFFICE, office.as_str())
                .header(headers::CASE_VERSION, version.to_string().as_str());
            let ack = match self
                .bus
                .jetstream()
                .send_publish(case_subject(&case_id), publish)
                .await
            {
                Ok(future) => future.await,
                Err(e) => Err(e),
            };
            match ack {
                Ok(ack) if ack.duplicate => {
                    // Another attempt of this very request (a concurrent retry, or one
                    // whose ack we never saw) was stored inside the duplicate window.
                    // Reload to report it.
                    tracing::debug!(attempt, "publish was a duplicate; reloading");
                    bump(&self.stats.rereads);
                    let mut fresh = head.into_inner();
                    self.bus
                        .refresh(&mut fresh)
                        .await
                        .map_err(|e| unavailable(&case_id, e))?;
                    let head = Taken::new(self, fresh);
                    return match head.ids.get(&event_id).cloned() {
                        Some(done) => {
                            drop(head);
                            self.duplicate(&request, &event_id, &done, &digest).await
                        }
                        // The stream has the original at `ack.sequence`, but the replica
                        // that answered the reload has not got it yet: read again.
                        None if head.last_sequence < ack.sequence => continue,
                        None => Err(AppendError::RequestIdReused {
                            case_id: case_id.to_string(),
                            request_id: request.request_id.to_string(),
                        }),
                    };
                }
                Ok(ack) => {
                    // We built and signed this event ourselves: no need to verify it again
                    // to remember it.
                    let verified = VerifiedEvent {
                        event_id: event_id.clone(),
                        case_id: case_id.clone(),
                        office: office.clone(),
                        hash,
                        prev_hash: head.tip.hash,
                        recorded_at,
                        occurred_at: command.occurred_at,
                        event,
                        signed,
                    };
                    head.tip.advance(&verified);
                    head.remember(ack.sequence, &verified);
                    head.last_sequence = ack.sequence;
                    drop(head);
                    tracing::debug!(version, sequence = ack.sequence, "event appended");
                    return Ok(Appended {
                        event_id,
                        case_id,
                        case_version: version,
                        stream_sequence: ack.sequence,
                        hash,
                        duplicate: false,
                    });
                }
                Err(e) if e.kind() == PublishErrorKind::WrongLastSequence => {
                    tracing::debug!(attempt, "case changed concurrently; deciding again");
                    bump(&self.stats.conflicts);
                    // Spread competing appenders apart so one of them wins the next round;
                    // the jitter comes from the event id, which differs per command.
                    let spread = u64::from_str_radix(&event_id.as_str()[..8], 16).unwrap_or(0);
                    let ceiling = 5 * u64::from(attempt);
                    tokio::time::sleep(Duration::from_millis(spread % ceiling.max(1))).await;
                    continue;
                }
                Err(e) if e.kind() == PublishErrorKind::MaxPayloadExceeded => {
                    return Err(AppendError::TooLarge {
                        case_id: case_id.to_string(),
                        size: bytes.len(),
                        max: self.config.max_event_bytes,
                    });
                }
                Err(e) => return Err(unavailable(&case_id, e)),
            }
        }
        Err(AppendError::Contention {
            case_id: case_id.to_string(),
            attempts: self.config.max_attempts,
        })
    }

    /// Seals `event` when its visibility is restricted and this appender seals: for
    /// every office the visibility admits, its encryption keys valid at `at`; the command
    /// digest keyed with the content key. Refuses to record a restricted event in clear
    /// for an office that has an encryption key registered.
    fn seal(
        &self,
        event: &mut Event,
        registry: &casebus_integrity::OfficeRegistry,
        at: OffsetDateTime,
        digest: &[u8; 32],
    ) -> Result<(), AppendError> {
        let Some(visibility) = event.visibility.clone().filter(restricted) else {
            return Ok(());
        };
        let refuse = |reason: String| AppendError::Sealing {
            office: self.office.to_string(),
            reason,
        };
        let own = registry.reader_keys(at, |o| o == &self.office);
        let Some(sealing) = &self.sealing else {
            if own.is_empty() {
                // No encryption key registered: the office has not moved to sealing yet.
                return Ok(());
            }
            return Err(refuse(format!(
                "it has encryption key {} registered, but this service holds no decryption key of it (--decryption-key)",
                own[0].key_id()
            )));
        };
        if !own
            .iter()
            .any(|k| sealing.opener.key_ids().contains(&k.key_id()))
        {
            return Err(refuse(format!(
                "the registry lists no encryption key of it valid now that this service can decrypt with (it holds {})",
                sealing.opener.key_ids().join(", ")
            )));
        }
        // The readers are the offices the visibility rule shows the event in clear.
        let readers = registry.reader_keys(at, |o| {
            casebus_domain::event_sight(&self.office, &visibility, o)
                == casebus_domain::Sight::Clear
        });
        let content_key =
            seal_event(&sealing.sealer, event, &readers).map_err(|e| refuse(e.to_string()))?;
        event.command_digest = keyed_command_digest(&content_key, digest).to_vec();
        Ok(())
    }

    /// When `event` is a VisibilityChanged that widens a sealed event: the target's
    /// content key wrapped (`Sealer::rewrap`, bound to the target) for every encryption
    /// key valid at `at` of the offices the new visibility shows it to in clear, less
    /// those it is wrapped for already (in the target or by earlier widenings), put in
    /// `wrapped_keys`. The target's stored bytes stay as they are. A narrowing wraps
    /// nothing, and cannot take back a content key a reader already holds.
    async fn widen(
        &self,
        event: &mut Event,
        head: &CaseHead,
        registry: &casebus_integrity::OfficeRegistry,
        at: OffsetDateTime,
    ) -> Result<(), AppendError> {
        let Some(Kind::VisibilityChanged(change)) =
            event.payload.as_mut().and_then(|p| p.kind.as_mut())
        else {
            return Ok(());
        };
        let target_version = change.target_version;
        let Some(entry) = head
            .ids
            .values()
            .find(|e| e.version == target_version && e.sealed)
        else {
            return Ok(());
        };
        let refuse = |reason: String| AppendError::Sealing {
            office: self.office.to_string(),
            reason,
        };
        let Some(sealing) = &self.sealing else {
            return Err(refuse(format!(
                "version {target_version} is sealed, and this service holds no decryption key to wrap its content key for the new readers (--decryption-key)"
            )));
        };
        let case_id = CaseId::new(&event.case_id).map_err(|e| AppendError::InvalidRequest {
            field: "case_id",
            reason: e.to_string(),
        })?;
        let messages = self
            .bus
            .read_case_messages(&case_id, entry.sequence - 1, entry.sequence)
            .await
            .map_err(|e| unavailable(&case_id, e))?;
        let target = messages
            .first()
            .and_then(|m| SignedEvent::decode(m.payload.as_ref()).ok())
            .and_then(|signed| Event::decode(signed.event.as_slice()).ok())
            .filter(|e| e.case_version == target_version)
            .ok_or_else(|| {
                refuse(format!(
                    "version {target_version} could not be read back to widen it"
                ))
            })?;
        let Some(sealed) = &target.sealed else {
            return Ok(());
        };
        let Ok(recorder) = casebus_proto::OfficeId::new(&target.office_id) else {
            return Ok(());
        };
        let visibility = change.visibility.clone().unwrap_or_default();
        let already: Vec<&str> = sealed
            .wrapped_keys
            .iter()
            .chain(head.state.widened_keys(target_version))
            .map(|w| w.key_id.as_str())
            .collect();
        let readers: Vec<_> = registry
            .reader_keys(at, |o| {
                casebus_domain::event_sight(&recorder, &visibility, o)
                    == casebus_domain::Sight::Clear
            })
            .into_iter()
            .filter(|k| !already.contains(&k.key_id()))
            .collect();
        if readers.is_empty() {
            return Ok(());
        }
        let binding = casebus_integrity::seal::binding(&target);
        let mut wrapped = sealing
            .sealer
            .rewrap(sealed, &binding, &sealing.opener, &readers)
            .map_err(|e| {
                refuse(format!(
                    "cannot wrap the content key of version {target_version} for its new readers: {e}"
                ))
            })?;
        wrapped.sort_by(|a, b| a.key_id.cmp(&b.key_id));
        change.wrapped_keys = wrapped;
        Ok(())
    }

    /// The outcome of a retried command: the original's when the command is the same.
    /// A sealed original's digest is keyed with its content key: the stored event is
    /// read and opened with the office's decryption key to compare.
    async fn duplicate(
        &self,
        request: &AppendRequest,
        event_id: &EventId,
        done: &crate::store::IdEntry,
        digest: &[u8; 32],
    ) -> Result<Appended, AppendError> {
        let same = if done.sealed {
            self.keyed_digest_of(&request.case_id, done.sequence, digest)
                .await?
                .is_some_and(|keyed| keyed == done.digest)
        } else {
            &done.digest == digest
        };
        if !same {
            return Err(AppendError::RequestIdReused {
                case_id: request.case_id.to_string(),
                request_id: request.request_id.to_string(),
            });
        }
        Ok(Appended {
            event_id: event_id.clone(),
            case_id: request.case_id.clone(),
            case_version: done.version,
            stream_sequence: done.sequence,
            hash: done.hash,
            duplicate: true,
        })
    }

    /// `digest` keyed with the content key of the sealed event stored at `sequence`, or
    /// `None` when this appender cannot open it.
    async fn keyed_digest_of(
        &self,
        case_id: &CaseId,
        sequence: u64,
        digest: &[u8; 32],
    ) -> Result<Option<[u8; 32]>, AppendError> {
        let Some(sealing) = &self.sealing else {
            return Ok(None);
        };
        let messages = self
            .bus
            .read_case_messages(case_id, sequence - 1, sequence)
            .await
            .map_err(|e| unavailable(case_id, e))?;
        let Some(message) = messages.first() else {
            return Ok(None);
        };
        let event = SignedEvent::decode(message.payload.as_ref())
            .ok()
            .and_then(|signed| Event::decode(signed.event.as_slice()).ok());
        let Some((event, sealed)) = event.and_then(|e| e.sealed.clone().map(|s| (e, s))) else {
            return Ok(None);
        };
        let binding = casebus_integrity::seal::binding(&event);
        Ok(sealing
            .opener
            .content_key(&sealed, &binding)
            .ok()
            .map(|key| keyed_command_digest(&key, digest)))
    }
}
