//! The audit of a stream after a fault: read every message of `CASES` and `CASES_DLQ`,
//! verify each case's chain independently of the loader, and compare the stream with
//! the [`Ledger`] of what clients were told: acknowledged events lost, duplicated, or
//! present more than once, chain failures, dead letters.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use casebus_bus::Bus;
use casebus_bus::ops::{DeadLetter, Ops, ScanStart, StoredMessage};
use casebus_bus::subjects::{CASES_STREAM, DLQ_STREAM, case_of_subject};
use casebus_integrity::{CaseFailure, verify_case};
use casebus_proto::{CaseId, EventId};
use casebus_test_support::wait_until;
use tokio::time::Instant;

use super::load::{Ack, Ledger};

/// Ceiling for reading a whole stream after a fault (the broker may still be settling).
pub const READ_TIMEOUT: Duration = Duration::from_secs(60);

/// Every message of `stream`, in order.
pub async fn read_stream(bus: &Bus, stream: &str) -> Vec<StoredMessage> {
    let ops = Ops::from_bus(bus);
    // Right after a restart or an election the first requests may fail; retry the whole
    // read until it succeeds.
    wait_until(
        READ_TIMEOUT,
        &format!("stream {stream} to be readable"),
        async || {
            let mut scanner = ops
                .scan(stream, None, ScanStart::Sequence(1), 1000)
                .await
                .ok()?;
            let mut out = Vec::new();
            loop {
                let batch = scanner.fetch().await.ok()?;
                if batch.is_empty() {
                    break;
                }
                out.extend(batch);
            }
            scanner.close().await;
            Some(out)
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"))
}

/// The last sequence of `stream` (0 when empty), retried until the broker answers.
pub async fn last_sequence(bus: &Bus, stream: &str) -> u64 {
    let ops = Ops::from_bus(bus);
    wait_until(
        READ_TIMEOUT,
        &format!("status of stream {stream}"),
        async || {
            ops.stream_status(stream)
                .await
                .ok()
                .flatten()
                .map(|s| s.last_sequence)
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"))
}

/// Every dead letter.
pub async fn dead_letters(bus: &Bus) -> Vec<DeadLetter> {
    read_stream(bus, DLQ_STREAM)
        .await
        .into_iter()
        .map(DeadLetter::from)
        .collect()
}

/// What the stream holds compared with what clients were told.
#[derive(Debug, Default)]
pub struct StreamAudit {
    /// Messages in `CASES`.
    pub messages: usize,
    /// Distinct cases.
    pub cases: usize,
    /// Acknowledged commands (distinct request per case).
    pub acknowledged: usize,
    /// Acknowledged commands whose event is not in the stream.
    pub lost: Vec<Ack>,
    /// Event ids stored more than once.
    pub duplicated: Vec<(EventId, usize)>,
    /// Chain or signature failures, per case.
    pub chain_failures: Vec<(CaseId, CaseFailure)>,
    /// Events in the stream no client was told about (a command whose ack was lost in
    /// the crash and that was not retried: legitimate, reported).
    pub unacknowledged_in_stream: usize,
    /// Where each event id is: its sequence.
    pub positions: HashMap<EventId, u64>,
}

impl StreamAudit {
    /// One line for reports.
    pub fn summary(&self) -> String {
        format!(
            "{} messages in {} cases; {} acknowledged, {} lost, {} duplicated, {} chain failures, \
             {} stored without an acknowledgement",
            self.messages,
            self.cases,
            self.acknowledged,
            self.lost.len(),
            self.duplicated.len(),
            self.chain_failures.len(),
            self.unacknowledged_in_stream
        )
    }
}

/// Reads `CASES` and compares it with `ledger`.
pub async fn audit(bus: &Bus, ledger: &Ledger) -> StreamAudit {
    let messages = read_stream(bus, CASES_STREAM).await;
    audit_messages(bus, &messages, &ledger.acks())
}

/// Compares the messages of `CASES` with the acknowledgements.
pub fn audit_messages(bus: &Bus, messages: &[StoredMessage], acks: &[Ack]) -> StreamAudit {
    let mut by_case: BTreeMap<String, Vec<&StoredMessage>> = BTreeMap::new();
    for m in messages {
        by_case.entry(m.subject.clone()).or_default().push(m);
    }
    let mut out = StreamAudit {
        messages: messages.len(),
        cases: by_case.len(),
        ..StreamAudit::default()
    };
    let mut seen: HashMap<EventId, usize> = HashMap::new();
    for (subject, msgs) in &by_case {
        let Some(case_id) = case_of_subject(subject) else {
            continue;
        };
        let report = verify_case(
            &case_id,
            msgs.iter().map(|m| m.payload.as_ref()),
            &bus.registry(),
        );
        // Duplicates are counted over every message that verifies on its own: a second
        // copy of an event fails the chain check, so the chain report would hide it.
        for m in msgs {
            if let Ok(e) = casebus_integrity::verify_signed(&m.payload, &bus.registry()) {
                *seen.entry(e.event_id.clone()).or_default() += 1;
                out.positions.entry(e.event_id).or_insert(m.sequence);
            }
        }
        for failure in report.failures {
            out.chain_failures.push((case_id.clone(), failure));
        }
    }
    out.duplicated = seen
        .iter()
        .filter(|(_, n)| **n > 1)
        .map(|(id, n)| (id.clone(), *n))
        .collect();
    let mut acked: HashMap<&EventId, &Ack> = HashMap::new();
    for ack in acks {
        acked.entry(&ack.event_id).or_insert(ack);
    }
    out.acknowledged = acked.len();
    out.lost = acked
        .values()
        .filter(|a| !out.positions.contains_key(&a.event_id))
        .map(|a| (*a).clone())
        .collect();
    out.lost.sort_by_key(|a| a.at);
    out.unacknowledged_in_stream = out
        .positions
        .keys()
        .filter(|id| !acked.contains_key(id))
        .count();
    out
}

/// Whether every lost acknowledgement arrived shortly before one of the `kills`: the
/// window in which a server that acknowledges before writing can lose it.
pub fn lost_only_near_kills(lost: &[Ack], kills: &[Instant], window: Duration) -> bool {
    lost.iter().all(|a| {
        kills
            .iter()
            .any(|k| a.at <= *k + Duration::from_millis(50) && *k - a.at <= window)
    })
}
