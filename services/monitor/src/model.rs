//! What the dashboard knows, and the JSON it serves: the collectors feed a [`Model`]
//! (events seen on `CASES`, dead letters, stream and consumer samples, discovered
//! services, overdue hand-offs), and [`Model::overview`] turns it into the [`Overview`]
//! the page and the JSON API show.
//!
//! Everything here is pure bookkeeping over bounded memory: per-minute counts for the
//! last hour, rings of samples, the latest dead letters. Time comes in as arguments, so
//! the tests drive it.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use serde::Serialize;
use time::OffsetDateTime;

/// Minutes of history kept for the throughput charts.
pub const MINUTES: usize = 60;
/// Stream samples kept per stream (an hour at the default 5 s refresh).
const STREAM_SAMPLES: usize = 720;
/// Lag samples kept per consumer for its sparkline.
const LAG_SAMPLES: usize = 60;
/// Dead letters listed.
const LATEST_DEAD_LETTERS: usize = 50;
/// Verification failures listed (grouped by original message).
const LATEST_FAILURES: usize = 100;
/// Overdue hand-offs listed.
pub const OVERDUE_LISTED: usize = 200;

/// Dead-letter codes that mean a message failed verification (decoding, signature,
/// key, envelope, chain), as opposed to a handler giving up.
pub const VERIFICATION_CODES: [&str; 10] = [
    "undecodable",
    "unknown_key",
    "bad_signature",
    "key_not_valid",
    "office_mismatch",
    "invalid_envelope",
    "case_mismatch",
    "gap",
    "reorder",
    "chain_break",
];

/// The agencies, in display order, by their wire names.
pub const AGENCIES: [&str; 5] = [
    "customs",
    "ip_center",
    "public_security",
    "procuratorate",
    "court",
];

/// Where throughput counts a message of `CASES` that failed verification: no agency's
/// name can be trusted from it.
pub const UNVERIFIED: &str = "unverified";

/// The agency of an office id (`customs:ningbo` -> `customs`), `unknown` when the text
/// is not an office of a known agency.
pub fn agency_of_office(office: &str) -> &'static str {
    let agency = office.split_once(':').map_or(office, |(a, _)| a);
    AGENCIES
        .iter()
        .find(|a| **a == agency)
        .copied()
        .unwrap_or("unknown")
}

fn minute_of(at: OffsetDateTime) -> i64 {
    at.unix_timestamp().div_euclid(60)
}

fn rfc3339(at: OffsetDateTime) -> String {
    at.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

/// Counts per key and minute over the last [`MINUTES`] minutes.
#[derive(Debug, Clone, Default)]
pub struct MinuteCounts {
    /// The minute (unix minutes) of the newest bucket.
    end: i64,
    counts: BTreeMap<String, VecDeque<u64>>,
}

impl MinuteCounts {
    /// Moves the window so its newest bucket is `minute`; older buckets fall out.
    pub fn advance(&mut self, minute: i64) {
        if minute <= self.end {
            return;
        }
        let shift = usize::try_from(minute - self.end).unwrap_or(MINUTES);
        self.end = minute;
        for buckets in self.counts.values_mut() {
            if shift >= MINUTES {
                buckets.iter_mut().for_each(|b| *b = 0);
            } else {
                for _ in 0..shift {
                    buckets.pop_front();
                    buckets.push_back(0);
                }
            }
        }
    }

    /// Counts one occurrence of `key` at `at`; occurrences older than the window are
    /// ignored, newer ones move the window.
    pub fn add(&mut self, key: &str, at: OffsetDateTime) {
        let minute = minute_of(at);
        self.advance(minute);
        let age = self.end - minute;
        let Ok(age) = usize::try_from(age) else {
            return;
        };
        if age >= MINUTES {
            return;
        }
        let buckets = self
            .counts
            .entry(key.to_owned())
            .or_insert_with(|| VecDeque::from(vec![0; MINUTES]));
        buckets[MINUTES - 1 - age] += 1;
    }

    /// Every key's buckets, oldest first, as of `now`.
    pub fn series(&mut self, now: OffsetDateTime) -> Vec<(String, Vec<u64>)> {
        self.advance(minute_of(now));
        self.counts
            .iter()
            .map(|(k, v)| (k.clone(), v.iter().copied().collect()))
            .collect()
    }

    /// The start of the oldest bucket.
    pub fn window_start(&self) -> i64 {
        (self.end - (MINUTES as i64 - 1)) * 60
    }
}

/// A dead letter as listed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DeadLetterView {
    /// Its sequence in `CASES_DLQ`.
    pub sequence: u64,
    /// When it was dead-lettered.
    pub stored_at: String,
    /// The consumer that gave up on it.
    pub consumer: String,
    /// Stable failure code.
    pub code: String,
    /// Human-readable reason.
    pub reason: String,
    /// The stream and sequence of the original message.
    pub original_stream: String,
    /// The original's sequence, when known.
    pub original_sequence: Option<u64>,
    /// The original's subject.
    pub original_subject: String,
    /// Whether the code is a verification failure.
    pub verification: bool,
}

/// One message that failed verification, with every consumer that dead-lettered it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FailureView {
    /// The original's stream.
    pub stream: String,
    /// The original's sequence.
    pub sequence: Option<u64>,
    /// The original's subject.
    pub subject: String,
    /// The case, from the subject.
    pub case_id: String,
    /// Failure code (of the first report).
    pub code: String,
    /// Reason (of the first report).
    pub reason: String,
    /// Consumers that reported it.
    pub consumers: BTreeSet<String>,
    /// When it was first reported.
    pub first_seen: String,
}

/// A count by name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Count {
    /// The name (code, consumer, agency, event type).
    pub name: String,
    /// How many.
    pub count: u64,
}

fn counts(map: &BTreeMap<String, u64>) -> Vec<Count> {
    let mut out: Vec<Count> = map
        .iter()
        .map(|(name, count)| Count {
            name: name.clone(),
            count: *count,
        })
        .collect();
    out.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.name.cmp(&b.name)));
    out
}

/// A stream as last sampled, with its history.
#[derive(Debug, Clone, Default)]
struct StreamTrack {
    status: Option<StreamSample>,
    samples: VecDeque<(i64, u64, u64)>,
}

/// What a stream sample holds.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct StreamSample {
    /// Stream name.
    pub name: String,
    /// Messages stored.
    pub messages: u64,
    /// Bytes stored.
    pub bytes: u64,
    /// First and last sequence.
    pub first_sequence: u64,
    /// Last sequence.
    pub last_sequence: u64,
    /// Consumers defined.
    pub consumers: usize,
    /// Replicas.
    pub replicas: usize,
}

/// A consumer as last sampled.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ConsumerSample {
    /// The stream it reads.
    pub stream: String,
    /// Durable name.
    pub name: String,
    /// Messages not yet delivered.
    pub pending: u64,
    /// Delivered, not yet acknowledged.
    pub ack_pending: u64,
    /// Redelivered messages.
    pub redelivered: u64,
    /// Pull requests waiting: a client is consuming now.
    pub waiting: u64,
    /// Stream sequence of the last delivery.
    pub delivered_sequence: u64,
    /// Stream sequence acknowledged up to.
    pub ack_floor_sequence: u64,
}

/// A discovered service instance, as shown.
#[derive(Debug, Clone, PartialEq, Serialize, Default)]
pub struct ServiceView {
    /// Service name, e.g. `casebus-customs`.
    pub name: String,
    /// Instance id.
    pub id: String,
    /// Version.
    pub version: String,
    /// The office it serves, when it names one.
    pub office: String,
    /// The agency, when known.
    pub agency: String,
    /// When it started (RFC 3339), when known.
    pub started: Option<String>,
    /// Seconds since it started.
    pub uptime_seconds: Option<i64>,
    /// Requests it reports (its own counter, or its `$SRV` endpoint's).
    pub requests: u64,
    /// Errors it reports.
    pub errors: u64,
    /// The durable consumer it reads with, when it names one.
    pub consumer: String,
    /// Notable counters from its statistics (appended, handled, dead-lettered ...).
    pub details: BTreeMap<String, serde_json::Value>,
    /// The digest of the deadline rules and holiday calendar it counts clocks with
    /// (`rules_digest` of its `$SRV` metadata); empty when it names none.
    pub rules_digest: String,
    /// Its `$SRV` metadata.
    pub metadata: BTreeMap<String, String>,
    /// The last error of its `$SRV` endpoint, if any.
    pub last_error: String,
}

/// One overdue hand-off.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OverdueHandoff {
    /// The case.
    pub case_id: String,
    /// The hand-off within the case; for a clock not on a hand-off (a detention's,
    /// status `RUNNING`), what it runs on (the detention id).
    pub handoff_id: String,
    /// Its kind, e.g. `SUSPECTED_CRIME_REFERRAL`; for a clock not on a hand-off, the
    /// clock's name (e.g. `release_ex_officio`).
    pub kind: String,
    /// The sending office.
    pub from_office: String,
    /// The receiving agency.
    pub to_agency: String,
    /// The receiving office, empty when any office of the agency may answer.
    pub to_office: String,
    /// `REQUESTED` or `ACKNOWLEDGED`.
    pub status: String,
    /// When it was requested (RFC 3339).
    pub requested_at: String,
    /// When it was due (RFC 3339).
    pub due_at: String,
    /// Unix seconds of the due time, for sorting.
    #[serde(skip)]
    pub due_unix: i64,
    /// Seconds past its due time, as of the overview.
    pub overdue_seconds: i64,
}

/// Where the overdue list comes from, and when it was read.
#[derive(Debug, Clone, Default)]
pub struct OverdueState {
    source: &'static str,
    updated_at: Option<OffsetDateTime>,
    handoffs: Vec<OverdueHandoff>,
    /// How many open hand-offs past due exist in all (the list may be cut).
    total: usize,
}

/// Everything the dashboard shows.
#[derive(Debug, Clone, Serialize)]
pub struct Overview {
    /// When this overview was made (RFC 3339).
    pub generated_at: String,
    /// When the monitor started.
    pub monitor_started_at: String,
    /// Events per agency per minute over the last hour.
    pub throughput: Throughput,
    /// Events per type over the last hour, most first.
    pub event_types: Vec<Count>,
    /// The streams.
    pub streams: Vec<StreamView>,
    /// Durable consumers and their lag.
    pub consumers: Vec<ConsumerView>,
    /// Dead letters.
    pub dead_letters: DeadLetters,
    /// Messages that failed verification.
    pub verification_failures: VerificationFailures,
    /// Overdue hand-offs.
    pub overdue: Overdue,
    /// Service instances found through `$SRV`.
    pub services: Services,
    /// Problems the monitor has reading its sources, by source.
    pub problems: BTreeMap<String, String>,
}

/// The throughput panel.
#[derive(Debug, Clone, Serialize)]
pub struct Throughput {
    /// Seconds per bucket.
    pub bucket_seconds: u32,
    /// Unix seconds of the start of the oldest bucket.
    pub window_start: i64,
    /// One series per agency, in display order (every agency, even idle ones).
    pub agencies: Vec<AgencySeries>,
    /// Events in the last hour, all agencies.
    pub total_last_hour: u64,
    /// Events per minute over the last five minutes, all agencies.
    pub per_minute_last_5: f64,
    /// Stream sequence of the newest event seen.
    pub last_sequence: u64,
    /// When the newest event seen was stored (RFC 3339).
    pub last_event_at: Option<String>,
}

/// One agency's throughput.
#[derive(Debug, Clone, Serialize)]
pub struct AgencySeries {
    /// Wire name, e.g. `customs`.
    pub agency: String,
    /// Events per minute, oldest first ([`MINUTES`] buckets).
    pub per_minute: Vec<u64>,
    /// Events in the last hour.
    pub total_last_hour: u64,
    /// Events per minute over the last five minutes.
    pub per_minute_last_5: f64,
}

/// A stream panel row.
#[derive(Debug, Clone, Serialize)]
pub struct StreamView {
    /// Stream name.
    pub name: String,
    /// Whether the stream exists.
    pub exists: bool,
    /// Messages stored.
    pub messages: u64,
    /// Bytes stored.
    pub bytes: u64,
    /// First sequence.
    pub first_sequence: u64,
    /// Last sequence.
    pub last_sequence: u64,
    /// Consumers defined.
    pub consumers: usize,
    /// Replicas.
    pub replicas: usize,
    /// Messages added per minute, over the last minute or so of samples.
    pub growth_per_minute: f64,
    /// Bytes added per minute, likewise.
    pub bytes_per_minute: f64,
    /// Samples over the last hour: `[unix seconds, messages, bytes]`.
    pub history: Vec<(i64, u64, u64)>,
}

/// A consumer panel row.
#[derive(Debug, Clone, Serialize)]
pub struct ConsumerView {
    /// The stream.
    pub stream: String,
    /// Durable name (`svc-<agency>-<code>`, `gw-<name>`).
    pub name: String,
    /// The service it belongs to, guessed from the name.
    pub service: String,
    /// Messages not yet delivered.
    pub pending: u64,
    /// Delivered, not yet acknowledged.
    pub ack_pending: u64,
    /// Lag: pending plus unacknowledged.
    pub lag: u64,
    /// Redelivered messages.
    pub redelivered: u64,
    /// Whether a client is pulling right now.
    pub active: bool,
    /// Stream sequence acknowledged up to.
    pub ack_floor_sequence: u64,
    /// Stream sequence of the last delivery.
    pub delivered_sequence: u64,
    /// Recent lag samples, oldest first.
    pub lag_history: Vec<u64>,
}

/// The dead-letter panel.
#[derive(Debug, Clone, Serialize)]
pub struct DeadLetters {
    /// Messages in `CASES_DLQ`.
    pub stored: u64,
    /// Dead letters the monitor has read.
    pub seen: u64,
    /// The latest, newest first.
    pub latest: Vec<DeadLetterView>,
    /// Counts by code.
    pub by_code: Vec<Count>,
    /// Counts by consumer.
    pub by_consumer: Vec<Count>,
}

/// The verification panel.
#[derive(Debug, Clone, Serialize)]
pub struct VerificationFailures {
    /// Distinct messages that failed verification.
    pub messages: u64,
    /// Counts by code (of distinct messages).
    pub by_code: Vec<Count>,
    /// The latest, newest first.
    pub latest: Vec<FailureView>,
}

/// The overdue panel.
#[derive(Debug, Clone, Serialize)]
pub struct Overdue {
    /// `gateway` (read with an admin token), `stream` (folded from `CASES`), or `none`.
    pub source: String,
    /// When the list was read.
    pub updated_at: Option<String>,
    /// Overdue hand-offs in all.
    pub total: usize,
    /// Per receiving agency: count and oldest due time, most overdue first.
    pub by_agency: Vec<OverdueAgency>,
    /// The hand-offs, oldest due time first.
    pub handoffs: Vec<OverdueHandoff>,
}

/// Overdue hand-offs of one receiving agency.
#[derive(Debug, Clone, Serialize)]
pub struct OverdueAgency {
    /// The receiving agency.
    pub agency: String,
    /// How many.
    pub count: usize,
    /// The oldest due time (RFC 3339).
    pub oldest_due_at: String,
    /// Seconds the oldest is past due.
    pub oldest_overdue_seconds: i64,
}

/// The services panel.
#[derive(Debug, Clone, Serialize)]
pub struct Services {
    /// When `$SRV` was last asked.
    pub updated_at: Option<String>,
    /// The instances, by name.
    pub instances: Vec<ServiceView>,
    /// Each rules digest the instances name, with the instances (`name id`) counting
    /// with it, in digest order.
    pub rules_digests: Vec<RulesDigestGroup>,
    /// Whether the instances count clocks with different rules or calendars (more than
    /// one digest): due times and overdue lists may then disagree between them.
    pub rules_differ: bool,
}

/// The instances that count clocks with one rules digest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RulesDigestGroup {
    /// The digest (`sha256:…`).
    pub digest: String,
    /// The instances, as `name id`.
    pub instances: Vec<String>,
}

/// The instances grouped by the rules digest they name (instances naming none are
/// left out).
pub fn rules_digest_groups(instances: &[ServiceView]) -> Vec<RulesDigestGroup> {
    let mut groups: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for i in instances.iter().filter(|i| !i.rules_digest.is_empty()) {
        groups
            .entry(&i.rules_digest)
            .or_default()
            .push(format!("{} {}", i.name, i.id));
    }
    groups
        .into_iter()
        .map(|(digest, instances)| RulesDigestGroup {
            digest: digest.to_owned(),
            instances,
        })
        .collect()
}

/// The monitor's knowledge; one instance behind a mutex, fed by the collectors.
#[derive(Debug)]
pub struct Model {
    started: OffsetDateTime,
    by_agency: MinuteCounts,
    by_type: MinuteCounts,
    last_sequence: u64,
    last_event_at: Option<OffsetDateTime>,
    streams: BTreeMap<String, StreamTrack>,
    consumers: Vec<ConsumerSample>,
    lag_history: BTreeMap<String, VecDeque<u64>>,
    dlq_seen: u64,
    dlq_last_sequence: u64,
    latest_dead_letters: VecDeque<DeadLetterView>,
    dlq_by_code: BTreeMap<String, u64>,
    dlq_by_consumer: BTreeMap<String, u64>,
    failures: VecDeque<FailureView>,
    failures_by_code: BTreeMap<String, u64>,
    failure_count: u64,
    overdue: OverdueState,
    services: Vec<ServiceView>,
    services_at: Option<OffsetDateTime>,
    problems: BTreeMap<String, String>,
}

/// The streams shown, in order.
pub const STREAMS: [&str; 4] = [
    casebus_bus::subjects::CASES_STREAM,
    casebus_bus::subjects::DLQ_STREAM,
    casebus_bus::subjects::AUDIT_STREAM,
    casebus_bus::subjects::CHECKPOINTS_STREAM,
];

impl Model {
    /// An empty model of a monitor started at `started`.
    pub fn new(started: OffsetDateTime) -> Self {
        Self {
            started,
            by_agency: MinuteCounts::default(),
            by_type: MinuteCounts::default(),
            last_sequence: 0,
            last_event_at: None,
            streams: BTreeMap::new(),
            consumers: Vec::new(),
            lag_history: BTreeMap::new(),
            dlq_seen: 0,
            dlq_last_sequence: 0,
            latest_dead_letters: VecDeque::new(),
            dlq_by_code: BTreeMap::new(),
            dlq_by_consumer: BTreeMap::new(),
            failures: VecDeque::new(),
            failures_by_code: BTreeMap::new(),
            failure_count: 0,
            overdue: OverdueState {
                source: "none",
                ..Default::default()
            },
            services: Vec::new(),
            services_at: None,
            problems: BTreeMap::new(),
        }
    }

    /// Counts one event of `CASES`: recorded by `office`, of `event_type`, stored at
    /// `at` with stream sequence `sequence`. A sequence seen before is ignored (a
    /// re-read after a reconnect).
    pub fn record_event(
        &mut self,
        sequence: u64,
        office: &str,
        event_type: &str,
        at: OffsetDateTime,
    ) {
        if sequence <= self.last_sequence {
            return;
        }
        self.last_sequence = sequence;
        self.last_event_at = Some(at);
        self.by_agency.add(agency_of_office(office), at);
        let event_type = if event_type.is_empty() {
            "unknown"
        } else {
            event_type
        };
        self.by_type.add(event_type, at);
    }

    /// Counts one message of `CASES` that failed verification (`code`, e.g.
    /// `bad_signature`): it is attributed to no agency, whatever its headers or
    /// content claim, but to [`UNVERIFIED`] and the type `Unverified(<code>)`.
    pub fn record_unverified(&mut self, sequence: u64, code: &str, at: OffsetDateTime) {
        if sequence <= self.last_sequence {
            return;
        }
        self.last_sequence = sequence;
        self.last_event_at = Some(at);
        self.by_agency.add(UNVERIFIED, at);
        self.by_type.add(&format!("Unverified({code})"), at);
    }

    /// The stream sequence of the newest event counted.
    pub fn last_sequence(&self) -> u64 {
        self.last_sequence
    }

    /// The sequence of the newest dead letter read.
    pub fn dlq_last_sequence(&self) -> u64 {
        self.dlq_last_sequence
    }

    /// Records one dead letter. A sequence seen before is ignored.
    pub fn record_dead_letter(&mut self, letter: DeadLetterView, at: OffsetDateTime) {
        if letter.sequence <= self.dlq_last_sequence {
            return;
        }
        self.dlq_last_sequence = letter.sequence;
        self.dlq_seen += 1;
        *self.dlq_by_code.entry(letter.code.clone()).or_default() += 1;
        *self
            .dlq_by_consumer
            .entry(letter.consumer.clone())
            .or_default() += 1;
        if letter.verification {
            let same = |f: &FailureView| {
                f.stream == letter.original_stream
                    && f.sequence == letter.original_sequence
                    && f.subject == letter.original_subject
            };
            if let Some(existing) = self.failures.iter_mut().find(|f| same(f)) {
                existing.consumers.insert(letter.consumer.clone());
            } else {
                self.failure_count += 1;
                *self
                    .failures_by_code
                    .entry(letter.code.clone())
                    .or_default() += 1;
                self.failures.push_front(FailureView {
                    stream: letter.original_stream.clone(),
                    sequence: letter.original_sequence,
                    subject: letter.original_subject.clone(),
                    case_id: letter
                        .original_subject
                        .strip_prefix("case.")
                        .unwrap_or_default()
                        .to_owned(),
                    code: letter.code.clone(),
                    reason: letter.reason.clone(),
                    consumers: BTreeSet::from([letter.consumer.clone()]),
                    first_seen: rfc3339(at),
                });
                self.failures.truncate(LATEST_FAILURES);
            }
        }
        self.latest_dead_letters.push_front(letter);
        self.latest_dead_letters.truncate(LATEST_DEAD_LETTERS);
    }

    /// Records a stream sample taken at `at`; `None` when the stream does not exist.
    pub fn record_stream(&mut self, name: &str, sample: Option<StreamSample>, at: OffsetDateTime) {
        let track = self.streams.entry(name.to_owned()).or_default();
        if let Some(s) = &sample {
            track
                .samples
                .push_back((at.unix_timestamp(), s.messages, s.bytes));
            while track.samples.len() > STREAM_SAMPLES {
                track.samples.pop_front();
            }
        }
        track.status = sample;
    }

    /// Records the durable consumers as sampled now.
    pub fn record_consumers(&mut self, consumers: Vec<ConsumerSample>) {
        let mut seen = BTreeSet::new();
        for c in &consumers {
            let key = format!("{}/{}", c.stream, c.name);
            let history = self.lag_history.entry(key.clone()).or_default();
            history.push_back(c.pending + c.ack_pending);
            while history.len() > LAG_SAMPLES {
                history.pop_front();
            }
            seen.insert(key);
        }
        self.lag_history.retain(|k, _| seen.contains(k));
        self.consumers = consumers;
    }

    /// Records the service instances found at `at`.
    pub fn record_services(&mut self, services: Vec<ServiceView>, at: OffsetDateTime) {
        self.services = services;
        self.services_at = Some(at);
    }

    /// Replaces the overdue list, read from `source` at `at`.
    pub fn record_overdue(
        &mut self,
        source: &'static str,
        mut handoffs: Vec<OverdueHandoff>,
        at: OffsetDateTime,
    ) {
        handoffs.sort_by(|a, b| {
            a.due_unix
                .cmp(&b.due_unix)
                .then_with(|| a.case_id.cmp(&b.case_id))
        });
        self.overdue = OverdueState {
            source,
            updated_at: Some(at),
            total: handoffs.len(),
            handoffs,
        };
    }

    /// Notes a problem reading `source`, or clears it with `None`.
    pub fn problem(&mut self, source: &str, problem: Option<String>) {
        match problem {
            Some(text) => {
                self.problems.insert(source.to_owned(), text);
            }
            None => {
                self.problems.remove(source);
            }
        }
    }

    /// Whether a problem with `source` is noted.
    pub fn has_problem(&self, source: &str) -> bool {
        self.problems.contains_key(source)
    }

    /// The overview as of `now`.
    pub fn overview(&mut self, now: OffsetDateTime) -> Overview {
        let agency_series = self.by_agency.series(now);
        let agencies: Vec<AgencySeries> = AGENCIES
            .iter()
            .map(|a| (*a).to_owned())
            .chain(
                agency_series
                    .iter()
                    .map(|(k, _)| k.clone())
                    .filter(|k| !AGENCIES.contains(&k.as_str())),
            )
            .map(|agency| {
                let per_minute = agency_series
                    .iter()
                    .find(|(k, _)| *k == agency)
                    .map(|(_, v)| v.clone())
                    .unwrap_or_else(|| vec![0; MINUTES]);
                let total_last_hour = per_minute.iter().sum();
                let last_5: u64 = per_minute.iter().rev().take(5).sum();
                AgencySeries {
                    agency,
                    per_minute,
                    total_last_hour,
                    per_minute_last_5: last_5 as f64 / 5.0,
                }
            })
            .collect();
        let total_last_hour = agencies.iter().map(|a| a.total_last_hour).sum();
        let per_minute_last_5 = agencies.iter().map(|a| a.per_minute_last_5).sum();
        let mut types: BTreeMap<String, u64> = BTreeMap::new();
        for (name, buckets) in self.by_type.series(now) {
            let total: u64 = buckets.iter().sum();
            if total > 0 {
                types.insert(name, total);
            }
        }
        let throughput = Throughput {
            bucket_seconds: 60,
            window_start: self.by_agency.window_start(),
            agencies,
            total_last_hour,
            per_minute_last_5,
            last_sequence: self.last_sequence,
            last_event_at: self.last_event_at.map(rfc3339),
        };

        let streams = STREAMS
            .iter()
            .map(|name| self.stream_view(name, now))
            .collect();
        let consumers = self
            .consumers
            .iter()
            .map(|c| ConsumerView {
                stream: c.stream.clone(),
                name: c.name.clone(),
                service: service_of_consumer(&c.name),
                pending: c.pending,
                ack_pending: c.ack_pending,
                lag: c.pending + c.ack_pending,
                redelivered: c.redelivered,
                active: c.waiting > 0,
                ack_floor_sequence: c.ack_floor_sequence,
                delivered_sequence: c.delivered_sequence,
                lag_history: self
                    .lag_history
                    .get(&format!("{}/{}", c.stream, c.name))
                    .map(|h| h.iter().copied().collect())
                    .unwrap_or_default(),
            })
            .collect();
        let dlq_stored = self
            .streams
            .get("CASES_DLQ")
            .and_then(|t| t.status.as_ref())
            .map_or(0, |s| s.messages);

        let now_unix = now.unix_timestamp();
        let mut handoffs = self.overdue.handoffs.clone();
        for h in &mut handoffs {
            h.overdue_seconds = now_unix - h.due_unix;
        }
        let mut by_agency: BTreeMap<String, (usize, i64, String)> = BTreeMap::new();
        for h in &handoffs {
            let entry =
                by_agency
                    .entry(h.to_agency.clone())
                    .or_insert((0, i64::MAX, String::new()));
            entry.0 += 1;
            if h.due_unix < entry.1 {
                entry.1 = h.due_unix;
                entry.2 = h.due_at.clone();
            }
        }
        let mut by_agency: Vec<OverdueAgency> = by_agency
            .into_iter()
            .map(|(agency, (count, due, due_at))| OverdueAgency {
                agency,
                count,
                oldest_due_at: due_at,
                oldest_overdue_seconds: now_unix - due,
            })
            .collect();
        by_agency.sort_by_key(|a| std::cmp::Reverse(a.oldest_overdue_seconds));
        handoffs.truncate(OVERDUE_LISTED);

        let rules_digests = rules_digest_groups(&self.services);
        let services = self
            .services
            .iter()
            .cloned()
            .map(|mut s| {
                s.uptime_seconds = s
                    .started
                    .as_deref()
                    .and_then(|t| {
                        OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339)
                            .ok()
                    })
                    .map(|t| (now - t).whole_seconds().max(0));
                s
            })
            .collect();

        Overview {
            generated_at: rfc3339(now),
            monitor_started_at: rfc3339(self.started),
            throughput,
            event_types: counts(&types),
            streams,
            consumers,
            dead_letters: DeadLetters {
                stored: dlq_stored,
                seen: self.dlq_seen,
                latest: self.latest_dead_letters.iter().cloned().collect(),
                by_code: counts(&self.dlq_by_code),
                by_consumer: counts(&self.dlq_by_consumer),
            },
            verification_failures: VerificationFailures {
                messages: self.failure_count,
                by_code: counts(&self.failures_by_code),
                latest: self.failures.iter().cloned().collect(),
            },
            overdue: Overdue {
                source: self.overdue.source.to_owned(),
                updated_at: self.overdue.updated_at.map(rfc3339),
                total: self.overdue.total,
                by_agency,
                handoffs,
            },
            problems: {
                let mut problems = self.problems.clone();
                if rules_digests.len() > 1 {
                    problems.insert(
                        "deadline_rules".to_owned(),
                        format!(
                            "services count legal clocks with different deadline rules or calendars: {}",
                            rules_digests
                                .iter()
                                .map(|g| format!("{} ({})", g.digest, g.instances.join(", ")))
                                .collect::<Vec<_>>()
                                .join("; ")
                        ),
                    );
                }
                problems
            },
            services: Services {
                updated_at: self.services_at.map(rfc3339),
                instances: services,
                rules_differ: rules_digests.len() > 1,
                rules_digests,
            },
        }
    }

    fn stream_view(&self, name: &str, now: OffsetDateTime) -> StreamView {
        let track = self.streams.get(name);
        let status = track.and_then(|t| t.status.clone());
        let samples: Vec<(i64, u64, u64)> = track
            .map(|t| t.samples.iter().copied().collect())
            .unwrap_or_default();
        // Growth over the samples of the last minute (or whatever is there).
        let now_unix = now.unix_timestamp();
        let (growth, bytes_growth) = match (
            samples.iter().find(|(t, _, _)| now_unix - t <= 60),
            samples.last(),
        ) {
            (Some(first), Some(last)) if last.0 > first.0 => {
                let minutes = (last.0 - first.0) as f64 / 60.0;
                (
                    last.1.saturating_sub(first.1) as f64 / minutes,
                    last.2.saturating_sub(first.2) as f64 / minutes,
                )
            }
            _ => (0.0, 0.0),
        };
        let s = status.clone().unwrap_or_default();
        StreamView {
            name: name.to_owned(),
            exists: status.is_some(),
            messages: s.messages,
            bytes: s.bytes,
            first_sequence: s.first_sequence,
            last_sequence: s.last_sequence,
            consumers: s.consumers,
            replicas: s.replicas,
            growth_per_minute: growth,
            bytes_per_minute: bytes_growth,
            history: samples,
        }
    }
}

/// The service a durable consumer belongs to, from the naming conventions
/// (`svc-<agency>-<code>` for agency services, `gw-<name>` for gateways).
pub fn service_of_consumer(name: &str) -> String {
    if let Some(rest) = name.strip_prefix("svc-") {
        for agency in AGENCIES {
            if let Some(code) = rest.strip_prefix(agency).and_then(|r| r.strip_prefix('-')) {
                return format!("{agency}:{code}");
            }
        }
        return rest.to_owned();
    }
    if name.starts_with("gw-") {
        return format!("gateway {name}");
    }
    name.to_owned()
}

#[cfg(test)]
mod tests {
    use time::macros::datetime;

    use super::*;

    const T0: OffsetDateTime = datetime!(2026-03-01 8:00 UTC);

    fn letter(sequence: u64, consumer: &str, code: &str, original: u64) -> DeadLetterView {
        DeadLetterView {
            sequence,
            stored_at: rfc3339(T0),
            consumer: consumer.into(),
            code: code.into(),
            reason: format!("{code} reason"),
            original_stream: "CASES".into(),
            original_sequence: Some(original),
            original_subject: "case.C-1".into(),
            verification: VERIFICATION_CODES.contains(&code),
        }
    }

    fn instance(name: &str, id: &str, digest: &str) -> ServiceView {
        ServiceView {
            name: name.into(),
            id: id.into(),
            rules_digest: digest.into(),
            ..ServiceView::default()
        }
    }

    /// The services panel groups instances by the rules digest they announce, and
    /// two digests are flagged as a problem naming each with its instances; one digest
    /// (and instances naming none) is not.
    #[test]
    fn services_counting_with_different_rules_are_flagged() {
        let mut model = Model::new(T0);
        model.record_services(
            vec![
                instance("casebus-customs", "c1", "sha256:aa"),
                instance("casebus-gateway", "g1", "sha256:aa"),
                instance("casebus-witness", "w1", ""),
            ],
            T0,
        );
        let same = model.overview(T0);
        assert!(!same.services.rules_differ);
        assert_eq!(
            same.services.rules_digests,
            [RulesDigestGroup {
                digest: "sha256:aa".into(),
                instances: vec!["casebus-customs c1".into(), "casebus-gateway g1".into()],
            }]
        );
        assert!(!same.problems.contains_key("deadline_rules"));

        model.record_services(
            vec![
                instance("casebus-customs", "c1", "sha256:aa"),
                instance("casebus-public-security", "p1", "sha256:bb"),
            ],
            T0,
        );
        let differ = model.overview(T0);
        assert!(differ.services.rules_differ);
        assert_eq!(differ.services.rules_digests.len(), 2);
        let problem = &differ.problems["deadline_rules"];
        assert!(
            problem.contains("sha256:aa (casebus-customs c1)")
                && problem.contains("sha256:bb (casebus-public-security p1)"),
            "{problem}"
        );
    }

    #[test]
    fn events_count_per_agency_and_minute_and_age_out_after_an_hour() {
        let mut model = Model::new(T0);
        model.record_event(1, "customs:ningbo", "CaseOpened", T0);
        model.record_event(
            2,
            "customs:ningbo",
            "GoodsDetained",
            T0 + time::Duration::seconds(30),
        );
        model.record_event(
            3,
            "court:hangzhou-ip",
            "CaseDocketed",
            T0 + time::Duration::minutes(2),
        );
        // A re-read of an old sequence changes nothing.
        model.record_event(2, "customs:ningbo", "GoodsDetained", T0);
        let now = T0 + time::Duration::minutes(2);
        let overview = model.overview(now);
        let customs = &overview.throughput.agencies[0];
        assert_eq!(customs.agency, "customs");
        assert_eq!(customs.total_last_hour, 2);
        assert_eq!(customs.per_minute[MINUTES - 3], 2);
        let court = overview
            .throughput
            .agencies
            .iter()
            .find(|a| a.agency == "court")
            .expect("court");
        assert_eq!(court.per_minute[MINUTES - 1], 1);
        assert_eq!(overview.throughput.total_last_hour, 3);
        assert_eq!(
            overview.throughput.agencies.len(),
            5,
            "every agency, even idle"
        );
        assert_eq!(overview.event_types.len(), 3);
        assert_eq!(overview.throughput.last_sequence, 3);

        let later = model.overview(T0 + time::Duration::minutes(61));
        assert_eq!(later.throughput.agencies[0].total_last_hour, 0);
        assert_eq!(
            later.throughput.total_last_hour, 1,
            "the court event is 59 minutes old"
        );
        let much_later = model.overview(T0 + time::Duration::hours(5));
        assert_eq!(much_later.throughput.total_last_hour, 0);
    }

    #[test]
    fn an_office_of_no_known_agency_counts_as_unknown() {
        assert_eq!(agency_of_office("customs:ningbo"), "customs");
        assert_eq!(agency_of_office("ip_center:zhejiang"), "ip_center");
        assert_eq!(agency_of_office(""), "unknown");
        assert_eq!(agency_of_office("navy:x"), "unknown");
    }

    #[test]
    fn dead_letters_are_listed_newest_first_and_failures_grouped_by_original() {
        let mut model = Model::new(T0);
        model.record_dead_letter(letter(1, "svc-customs-ningbo", "bad_signature", 7), T0);
        model.record_dead_letter(letter(2, "gw-main", "bad_signature", 7), T0);
        model.record_dead_letter(letter(3, "gw-main", "handler", 9), T0);
        model.record_dead_letter(letter(3, "gw-main", "handler", 9), T0);
        let overview = model.overview(T0);
        let dl = &overview.dead_letters;
        assert_eq!(dl.seen, 3);
        assert_eq!(dl.latest[0].sequence, 3);
        assert_eq!(dl.by_code[0].name, "bad_signature");
        assert_eq!(dl.by_code[0].count, 2);
        let vf = &overview.verification_failures;
        assert_eq!(vf.messages, 1, "one message, reported by two consumers");
        assert_eq!(vf.latest[0].consumers.len(), 2);
        assert_eq!(vf.latest[0].case_id, "C-1");
    }

    #[test]
    fn stream_growth_is_measured_over_the_last_minute_of_samples() {
        let mut model = Model::new(T0);
        let sample = |messages| StreamSample {
            name: "CASES".into(),
            messages,
            bytes: messages * 300,
            last_sequence: messages,
            ..Default::default()
        };
        model.record_stream("CASES", Some(sample(100)), T0);
        model.record_stream("CASES", Some(sample(130)), T0 + time::Duration::seconds(30));
        model.record_stream("CASES", Some(sample(160)), T0 + time::Duration::seconds(60));
        model.record_stream("AUDIT", None, T0);
        let overview = model.overview(T0 + time::Duration::seconds(60));
        let cases = &overview.streams[0];
        assert!(cases.exists);
        assert_eq!(cases.messages, 160);
        assert!(
            (cases.growth_per_minute - 60.0).abs() < 1e-9,
            "{}",
            cases.growth_per_minute
        );
        assert_eq!(cases.history.len(), 3);
        let audit = &overview.streams[2];
        assert!(!audit.exists);
    }

    #[test]
    fn overdue_hand_offs_are_oldest_first_and_summed_per_agency() {
        let mut model = Model::new(T0);
        let handoff = |case: &str, agency: &str, due: OffsetDateTime| OverdueHandoff {
            case_id: case.into(),
            handoff_id: "h".into(),
            kind: "SUSPECTED_CRIME_REFERRAL".into(),
            from_office: "customs:ningbo".into(),
            to_agency: agency.into(),
            to_office: String::new(),
            status: "ACKNOWLEDGED".into(),
            requested_at: rfc3339(due - time::Duration::days(3)),
            due_at: rfc3339(due),
            due_unix: due.unix_timestamp(),
            overdue_seconds: 0,
        };
        model.record_overdue(
            "gateway",
            vec![
                handoff("B", "public_security", T0 - time::Duration::days(1)),
                handoff("A", "procuratorate", T0 - time::Duration::days(9)),
                handoff("C", "public_security", T0 - time::Duration::days(4)),
            ],
            T0,
        );
        let overview = model.overview(T0);
        let o = &overview.overdue;
        assert_eq!(o.source, "gateway");
        assert_eq!(o.total, 3);
        let order: Vec<&str> = o.handoffs.iter().map(|h| h.case_id.as_str()).collect();
        assert_eq!(order, ["A", "C", "B"]);
        assert_eq!(o.handoffs[0].overdue_seconds, 9 * 86_400);
        assert_eq!(o.by_agency[0].agency, "procuratorate");
        assert_eq!(o.by_agency[1].agency, "public_security");
        assert_eq!(o.by_agency[1].count, 2);
        assert_eq!(o.by_agency[1].oldest_overdue_seconds, 4 * 86_400);
    }

    #[test]
    fn consumers_keep_a_lag_history_and_name_their_service() {
        let mut model = Model::new(T0);
        let consumer = |pending| ConsumerSample {
            stream: "CASES".into(),
            name: "svc-public_security-ningbo".into(),
            pending,
            ack_pending: 1,
            waiting: 1,
            ..Default::default()
        };
        model.record_consumers(vec![consumer(5)]);
        model.record_consumers(vec![consumer(2)]);
        let overview = model.overview(T0);
        let c = &overview.consumers[0];
        assert_eq!(c.service, "public_security:ningbo");
        assert_eq!(c.lag, 3);
        assert_eq!(c.lag_history, [6, 3]);
        assert!(c.active);
        assert_eq!(service_of_consumer("gw-main"), "gateway gw-main");
    }
}
