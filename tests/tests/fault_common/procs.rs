//! Processes under test: resident memory read from `/proc/<pid>/status`, and a consumer
//! inside the test that records every event it is handed (the reference every service
//! and gateway is compared with).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use casebus_bus::{
    Bus, CancellationToken, ConsumerConfig, ConsumerCounters, ConsumerRunner, EventHandler,
    HandlerError, StoredEvent,
};
use casebus_proto::EventId;

/// Resident set size of `pid` in KiB (`VmRSS`), or `None` when the process is gone.
pub fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// What a [`Recorder`] saw.
#[derive(Debug)]
pub struct Recorded {
    /// How many times each event was handed over (redeliveries count).
    pub deliveries: Mutex<HashMap<EventId, u32>>,
    /// Per case, the versions in the order they were handed over (first delivery only).
    pub order: Mutex<HashMap<String, Vec<u64>>>,
    /// Events handed over, first deliveries only.
    pub distinct: AtomicU64,
    /// While set, the handler refuses every event transiently (a stalled consumer).
    pub stalled: AtomicBool,
    /// While `true`, the handler waits before handling anything (the messages pulled
    /// meanwhile stay in the client's buffer).
    pub hold: tokio::sync::watch::Sender<bool>,
}

impl Default for Recorded {
    fn default() -> Self {
        Self {
            deliveries: Mutex::default(),
            order: Mutex::default(),
            distinct: AtomicU64::default(),
            stalled: AtomicBool::default(),
            hold: tokio::sync::watch::Sender::new(false),
        }
    }
}

impl Recorded {
    /// Every event id handed over at least once.
    pub fn ids(&self) -> Vec<EventId> {
        self.deliveries
            .lock()
            .expect("lock")
            .keys()
            .cloned()
            .collect()
    }

    /// Cases whose versions were not handed over as 1, 2, 3, ... without a gap or
    /// a repeat.
    pub fn out_of_order(&self) -> Vec<(String, Vec<u64>)> {
        self.order
            .lock()
            .expect("lock")
            .iter()
            .filter(|(_, v)| {
                v.iter()
                    .enumerate()
                    .any(|(i, version)| *version != i as u64 + 1)
            })
            .map(|(c, v)| (c.clone(), v.clone()))
            .collect()
    }
}

/// An `EventHandler` that records what it is handed.
#[derive(Clone)]
pub struct Recorder(pub Arc<Recorded>);

impl EventHandler for Recorder {
    async fn handle(&self, event: &StoredEvent) -> Result<(), HandlerError> {
        let mut hold = self.0.hold.subscribe();
        let _ = hold.wait_for(|held| !held).await;
        if self.0.stalled.load(Ordering::Relaxed) {
            return Err(HandlerError::Transient("stalled by the test".into()));
        }
        let first = {
            let mut deliveries = self.0.deliveries.lock().expect("lock");
            let n = deliveries.entry(event.event.event_id.clone()).or_default();
            *n += 1;
            *n == 1
        };
        if first {
            self.0
                .order
                .lock()
                .expect("lock")
                .entry(event.event.case_id.to_string())
                .or_default()
                .push(event.event.version());
            self.0.distinct.fetch_add(1, Ordering::Relaxed);
        }
        Ok(())
    }
}

/// A recording consumer running in the test until its token is cancelled.
pub struct RecordingConsumer {
    pub recorded: Arc<Recorded>,
    pub counters: Arc<ConsumerCounters>,
    pub shutdown: CancellationToken,
    pub task: tokio::task::JoinHandle<()>,
}

impl RecordingConsumer {
    pub fn start(bus: &Bus, name: &str) -> Self {
        Self::start_with(bus, ConsumerConfig::named(name))
    }

    pub fn start_with(bus: &Bus, config: ConsumerConfig) -> Self {
        let recorded = Arc::new(Recorded::default());
        let runner = ConsumerRunner::new(bus.clone(), config);
        let counters = runner.counters();
        let shutdown = CancellationToken::new();
        let handler = Recorder(recorded.clone());
        let token = shutdown.clone();
        let task = tokio::spawn(async move {
            runner
                .run(handler, token)
                .await
                .expect("the recording consumer runs");
        });
        Self {
            recorded,
            counters,
            shutdown,
            task,
        }
    }

    /// Stream sequence of the last message the consumer acked.
    pub fn last_sequence(&self) -> u64 {
        self.counters.last_sequence.load(Ordering::Relaxed)
    }

    pub async fn stop(self) {
        self.shutdown.cancel();
        let _ = self.task.await;
    }
}
