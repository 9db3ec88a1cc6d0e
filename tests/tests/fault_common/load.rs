//! A load of appends through the `Appender`, as a well-behaved client produces it: each
//! worker owns some cases and sends its commands one after another; an append whose
//! outcome is unknown (`Unavailable`) is retried with the same request id until it is
//! acknowledged or a ceiling passes. Every acknowledgement goes into the [`Ledger`] with
//! the time it arrived, so a test can compare what clients were told with what the
//! stream holds, and measure outages from the gaps between acknowledgements.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::task::JoinSet;
use tokio::time::Instant;

use casebus_bus::{AppendError, AppendRequest, Appender};
use casebus_proto::event::v1::payload::Kind;
use casebus_proto::{CaseId, EventId, RequestId};

use super::chain::{note, opened};

/// Ceiling for one command to be acknowledged, retries included: longer than any
/// outage a scenario injects.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(90);

/// One acknowledged command.
#[derive(Debug, Clone)]
pub struct Ack {
    pub case_id: CaseId,
    pub request_id: String,
    pub event_id: EventId,
    pub version: u64,
    pub sequence: u64,
    /// The appender answered "applied before" (a retry whose first attempt was stored).
    pub duplicate: bool,
    /// When the acknowledgement arrived.
    pub at: Instant,
    /// How long the command took, retries included.
    pub latency: Duration,
    /// Attempts that ended with an unknown outcome before this one.
    pub retries: u32,
}

/// Everything the clients were told, in arrival order.
#[derive(Debug, Default)]
pub struct Ledger {
    acks: Mutex<Vec<Ack>>,
    count: AtomicU64,
    retries: AtomicU64,
    /// Commands refused for another reason than an unknown outcome: "case - error".
    pub failures: Mutex<Vec<String>>,
}

impl Ledger {
    pub fn record(&self, ack: Ack) {
        self.retries
            .fetch_add(u64::from(ack.retries), Ordering::Relaxed);
        self.acks.lock().expect("ledger lock").push(ack);
        self.count.fetch_add(1, Ordering::Relaxed);
    }

    /// Acknowledged commands so far.
    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    /// Attempts retried after an unknown outcome so far.
    pub fn retries(&self) -> u64 {
        self.retries.load(Ordering::Relaxed)
    }

    pub fn acks(&self) -> Vec<Ack> {
        self.acks.lock().expect("ledger lock").clone()
    }

    /// The first acknowledgement that arrived after `t`.
    pub fn first_ack_after(&self, t: Instant) -> Option<Instant> {
        self.acks
            .lock()
            .expect("ledger lock")
            .iter()
            .map(|a| a.at)
            .filter(|at| *at > t)
            .min()
    }

    pub fn failures(&self) -> Vec<String> {
        self.failures.lock().expect("ledger lock").clone()
    }
}

/// The shape of a load.
#[derive(Debug, Clone)]
pub struct LoadPlan {
    /// Case ids are `<prefix>-<n>`.
    pub prefix: String,
    pub cases: usize,
    /// Commands per case, the opening included.
    pub events_per_case: usize,
    /// Concurrent clients; each owns every `workers`-th case.
    pub workers: usize,
    /// Bytes of note text per event (the event is about 300 bytes more).
    pub note_bytes: usize,
}

impl LoadPlan {
    pub fn total(&self) -> u64 {
        (self.cases * self.events_per_case) as u64
    }

    pub fn case_id(&self, n: usize) -> CaseId {
        super::case(&format!("{}-{n}", self.prefix))
    }
}

/// Runs `plan` through `appender` until every command is acknowledged or `stop` is set.
/// Each worker goes round its cases, one command per case per round, so every case
/// grows during the whole run.
pub async fn run(
    appender: Arc<Appender>,
    plan: LoadPlan,
    ledger: Arc<Ledger>,
    stop: Arc<AtomicBool>,
) {
    let mut workers = JoinSet::new();
    for w in 0..plan.workers {
        let (appender, plan, ledger, stop) =
            (appender.clone(), plan.clone(), ledger.clone(), stop.clone());
        workers.spawn(async move {
            let cases: Vec<usize> = (w..plan.cases).step_by(plan.workers).collect();
            for round in 0..plan.events_per_case {
                for &n in &cases {
                    if stop.load(Ordering::Relaxed) {
                        return;
                    }
                    let case_id = plan.case_id(n);
                    let request_id = format!("r{round}");
                    let payload = if round == 0 {
                        opened(&format!("load case {n}"))
                    } else {
                        note(&filler(plan.note_bytes, round))
                    };
                    command(&appender, &ledger, &case_id, &request_id, payload).await;
                }
            }
        });
    }
    while let Some(joined) = workers.join_next().await {
        joined.expect("a load worker panicked");
    }
}

/// Sends one command until it is acknowledged (retrying unknown outcomes with the same
/// request id), recording the outcome.
pub async fn command(
    appender: &Appender,
    ledger: &Ledger,
    case_id: &CaseId,
    request_id: &str,
    payload: Kind,
) -> bool {
    let request = AppendRequest {
        case_id: case_id.clone(),
        request_id: RequestId::new(request_id).expect("valid request id"),
        actor: "load".into(),
        occurred_at: None,
        causation_id: None,
        correlation_id: String::new(),
        visibility: None,
        payload,
    };
    let started = Instant::now();
    let deadline = started + COMMAND_TIMEOUT;
    let mut retries = 0;
    loop {
        match appender.append(request.clone()).await {
            Ok(appended) => {
                ledger.record(Ack {
                    case_id: case_id.clone(),
                    request_id: request_id.to_owned(),
                    event_id: appended.event_id,
                    version: appended.case_version,
                    sequence: appended.stream_sequence,
                    duplicate: appended.duplicate,
                    at: Instant::now(),
                    latency: started.elapsed(),
                    retries,
                });
                return true;
            }
            // The outcome is unknown: the documented answer is to retry with the same
            // request id. Contention cannot come from this load (one writer per case),
            // but a publish that timed out and was stored anyway looks like it.
            Err(AppendError::Unavailable { .. } | AppendError::Contention { .. })
                if Instant::now() < deadline =>
            {
                casebus_test_support::retry_pause(retries).await;
                retries += 1;
            }
            Err(e) => {
                ledger
                    .failures
                    .lock()
                    .expect("ledger lock")
                    .push(format!("{case_id} {request_id}: {e}"));
                return false;
            }
        }
    }
}

/// Note text of `bytes` bytes that differs per round.
pub fn filler(bytes: usize, round: usize) -> String {
    let head = format!("round {round} ");
    let mut text = head.clone();
    while text.len() < bytes {
        text.push('x');
    }
    text.truncate(bytes.max(head.len()));
    text
}

/// p50, p99 and max of a set of durations, in milliseconds.
pub fn percentiles(mut samples: Vec<Duration>) -> (f64, f64, f64) {
    if samples.is_empty() {
        return (0.0, 0.0, 0.0);
    }
    samples.sort();
    let at = |q: f64| {
        let i = ((samples.len() as f64 - 1.0) * q).round() as usize;
        samples[i].as_secs_f64() * 1000.0
    };
    (at(0.50), at(0.99), at(1.0))
}
