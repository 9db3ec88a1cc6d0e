//! Slow consumer: the gateway is frozen (SIGSTOP) for a long time while a constant load
//! of commands goes on through the customs service, then thawed. Its durable consumer
//! falls behind by everything appended meanwhile, and its unacknowledged messages are
//! redelivered when the stall outlasts the ack wait.
//!
//! It proves: the load is not slowed by the stalled consumer; after the thaw the gateway
//! catches up without loss or duplicate (its projection equals the fold of the stream);
//! its memory after catching up stays within a bound of what it was before the stall
//! (the backlog waits in the stream, not in the consumer); the measured backlog and the
//! catch-up time are reported.
//!
//! `CASEBUS_STALL_SECS` sets the stall (default 12 s for CI; the documented run uses
//! 180 s, past the 30 s ack wait several times).

mod fault_common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::time::Instant;

use casebus_bus::ops::Ops;
use casebus_bus::subjects::CASES_STREAM;
use casebus_test_support::wait_until;

use fault_common::audit::{audit, dead_letters, last_sequence};
use fault_common::grpc_load::{run_paced, target};
use fault_common::load::{Ledger, percentiles};
use fault_common::report::{Figures, ms};
use fault_common::services::Stage;
use fault_common::{CUSTOMS, POLICE, generations, open_bus};

const GATEWAY: &str = "slow";
/// Commands per second during the stall.
const RATE: f64 = 100.0;
/// Ceiling for the gateway to catch up after the thaw.
const CATCH_UP_TIMEOUT: Duration = Duration::from_secs(300);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_stalled_under_load_catches_up_without_loss_and_with_bounded_memory() {
    let stall: u64 = std::env::var("CASEBUS_STALL_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(12);
    let generation = generations().remove(0);
    let server = generation.start_server().await;
    let urls = vec![server.url()];
    let bus = open_bus(&urls, "slow-consumer", 1).await;
    let stage = Stage::new(urls.clone());
    let mut gateway = stage.gateway(GATEWAY).await;
    let _police = stage.agency(POLICE).await;
    let customs = stage.agency(CUSTOMS).await;
    let ops = Ops::from_bus(&bus);
    let consumer = format!("gw-{GATEWAY}");

    let ledger = Arc::new(Ledger::default());
    let stop = Arc::new(AtomicBool::new(false));
    let load = tokio::spawn(run_paced(
        target(&customs),
        ledger.clone(),
        "slow".into(),
        16,
        RATE,
        stop.clone(),
    ));
    // Warm up: a few hundred commands projected.
    wait_until(
        Duration::from_secs(60),
        "the gateway to project the warm-up",
        async || ledger.count() >= 300 && gateway.position() >= 300,
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    let rss_before = gateway.rss_kib().expect("gateway memory");
    let acked_before = ledger.count();

    gateway.freeze();
    let frozen_at = Instant::now();
    let mut peak_backlog = 0;
    // The stall: the load goes on; sample the backlog until the stall is over.
    wait_until(
        Duration::from_secs(stall + 60),
        "the stall to last its time",
        async || {
            if let Ok(c) = ops.consumer(CASES_STREAM, &consumer).await {
                peak_backlog = peak_backlog.max(c.pending + c.ack_pending);
            }
            frozen_at.elapsed() >= Duration::from_secs(stall)
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    let acked_during = ledger.count() - acked_before;
    let redelivered_before = ops
        .consumer(CASES_STREAM, &consumer)
        .await
        .map_or(0, |c| c.redelivered);
    gateway.thaw();
    let thawed_at = Instant::now();
    stop.store(true, Ordering::Relaxed);
    load.await.expect("the load stops");

    let last = last_sequence(&bus, CASES_STREAM).await;
    let mut rss_peak = 0;
    wait_until(
        CATCH_UP_TIMEOUT,
        "the gateway to catch up after the thaw",
        async || {
            rss_peak = rss_peak.max(gateway.rss_kib().unwrap_or(0));
            gateway.position() >= last
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", gateway.log_text()));
    let caught_up_after = thawed_at.elapsed();
    // Receipts may still be appending: settle, then compare.
    let last = wait_until(CATCH_UP_TIMEOUT, "every consumer to settle", async || {
        let last = last_sequence(&bus, CASES_STREAM).await;
        let consumers = ops.consumers(CASES_STREAM).await.ok()?;
        let settled = consumers
            .iter()
            .all(|c| c.ack_floor_sequence >= last && c.pending == 0 && c.ack_pending == 0);
        (settled && gateway.position() >= last).then_some(last)
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    let rss_after = gateway.rss_kib().expect("gateway memory");
    let (projection_diffs, _) = gateway.projection_diffs(&bus, &consumer).await;
    let projection_equal = projection_diffs.is_empty();
    let audit = audit(&bus, &ledger).await;
    let letters = dead_letters(&bus).await;
    let latencies: Vec<Duration> = ledger.acks().iter().map(|a| a.latency).collect();
    let (p50, p99, max) = percentiles(latencies);

    let mut figures = Figures::new(
        &format!("slow consumer: gateway frozen {stall} s under {RATE} commands/s"),
        &generation.label,
    );
    figures
        .row("commands acknowledged during the stall", acked_during)
        .row("peak backlog of the frozen consumer", peak_backlog)
        .row("redelivered (stall past the ack wait)", redelivered_before)
        .row("thaw to caught up", ms(caught_up_after))
        .row(
            "gateway RSS before / peak while catching up / after (KiB)",
            format!("{rss_before} / {rss_peak} / {rss_after}"),
        )
        .row(
            "acknowledged but lost / duplicated / chain failures",
            format!(
                "{} / {} / {}",
                audit.lost.len(),
                audit.duplicated.len(),
                audit.chain_failures.len()
            ),
        )
        .row("dead letters", letters.len())
        .row(
            "gateway projection equals the fold of the stream",
            projection_equal,
        )
        .row("stream end", last)
        .row(
            "command latency p50 / p99 / max (the stall does not slow appends)",
            format!("{p50:.1} / {p99:.1} / {max:.1} ms"),
        );
    figures.write();

    assert!(
        ledger.failures().is_empty(),
        "commands failed: {:?}",
        ledger.failures()
    );
    if !letters.is_empty() {
        eprintln!(
            "gateway log:\n{}",
            gateway
                .all_logs()
                .lines()
                .filter(|l| l.contains("WARN") || l.contains("ERROR"))
                .take(30)
                .collect::<Vec<_>>()
                .join("\n")
        );
    }
    assert!(
        audit.lost.is_empty() && audit.duplicated.is_empty() && audit.chain_failures.is_empty(),
        "{}",
        audit.summary()
    );
    assert!(
        letters.is_empty(),
        "dead letters: {:?}",
        letters
            .iter()
            .take(5)
            .map(|l| format!(
                "{} {} seq {:?} {}: {}",
                l.consumer, l.original_subject, l.original_sequence, l.code, l.reason
            ))
            .collect::<Vec<_>>()
    );
    assert!(
        projection_equal,
        "the gateway's projection differs from the fold of the stream:\n{}",
        projection_diffs.join("\n")
    );
    assert!(gateway.is_running(), "the gateway died");
    // The backlog waits in the stream: catching up costs at most a bounded amount of
    // memory (batches and SQLite's cache), not memory in proportion to the backlog.
    assert!(
        rss_peak <= rss_before * 2 + 64 * 1024,
        "the gateway grew from {rss_before} KiB to {rss_peak} KiB catching up {peak_backlog} messages"
    );
    // A consumer's stall never slows the writers.
    assert!(
        p99 < 1000.0,
        "appends slowed down during the stall: p99 {p99:.1} ms"
    );
}
