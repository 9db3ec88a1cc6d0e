//! Soak: a constant rate of gRPC commands through the real customs service (with the
//! police service issuing receipts and a gateway projecting everything) for a set time,
//! sampling every process's resident memory, the consumers' backlog and the command
//! latency per window.
//!
//! It proves: the planned number of commands was sent and acknowledged (the rate times
//! the load's duration, within 5 %); over the last third of the run the resident memory
//! of every casebus process grows no faster than its caches fill (its least-squares
//! slope against the commands acknowledged stays under [`MAX_SLOPE_KIB_PER_COMMAND`] (the gateway: [`MAX_GATEWAY_SLOPE_KIB_PER_COMMAND`]),
//! with no absolute allowance; see the assertion); the consumers' backlog stays
//! bounded; p99 command latency stays stable (the p99 of the last half's commands
//! within a bound of the first half's); every command is acknowledged; and the gateway's projection equals the fold
//! of the stream at the end.
//! The curve goes to `target/reliability/soak-<server>.csv` and `.md`.
//!
//! `CASEBUS_SOAK_SECS` sets the duration (default 20 s, for CI; the documented run is
//! 600 s or more), `CASEBUS_SOAK_RATE` the commands per second (default 100).

mod fault_common;

use std::fmt::Write as _;
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
use fault_common::procs::rss_kib;
use fault_common::report::{Figures, dir};
use fault_common::services::Stage;
use fault_common::{CUSTOMS, POLICE, generations, open_bus};

/// Ceiling for the consumers to settle after the load.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(120);
const GATEWAY: &str = "soak";
/// Slope of resident memory over the last third of the run allowed per command
/// acknowledged, in KiB (see the assertion), while the caches fill. Measured at the CI
/// settings (20 s, 100/s, nats-server 2.9), on a quiet machine: customs 1.34, police
/// 1.18 at `08b69fc`; customs 1.52 to 1.64, police 1.33 to 1.45 in five of six runs at
/// `e41f99f`, which adds the recorded due times (each hand-off keeps its two due times
/// and the rules digest in every folded case state). The bound leaves that room and
/// still catches a leak of whole events or requests (several KiB each, as for the
/// gateway below).
const MAX_SLOPE_KIB_PER_COMMAND: f64 = 2.0;
/// The same for the gateway, whose SQLite page cache fills as well: measured 1.3 to 1.5
/// KiB per command at the CI settings on a loaded machine, so the bound leaves room for
/// that noise and still catches a leak of whole events (several KiB each with their rows).
const MAX_GATEWAY_SLOPE_KIB_PER_COMMAND: f64 = 2.5;
/// Concurrent load clients.
const WORKERS: usize = 16;
/// Share of the planned commands that must have been sent and acknowledged.
const MIN_SENT_SHARE: f64 = 0.95;
/// Samples per run (at least one every 30 s).
const WINDOWS: u64 = 20;

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// One sample of the curve.
#[derive(Debug, Clone)]
struct Sample {
    at_s: f64,
    acked: u64,
    rate: f64,
    p50_ms: f64,
    p99_ms: f64,
    rss_customs: u64,
    rss_police: u64,
    rss_gateway: u64,
    rss_nats: u64,
    backlog_gateway: u64,
    backlog_police: u64,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn constant_load_keeps_memory_flat_backlog_bounded_and_latency_stable() {
    let secs: u64 = env_or("CASEBUS_SOAK_SECS", 20);
    let rate: f64 = env_or("CASEBUS_SOAK_RATE", 100.0);
    let generation = generations().remove(0);
    let server = generation.start_server().await;
    let urls = vec![server.url()];
    let bus = open_bus(&urls, "soak", 1).await;
    let stage = Stage::new(urls.clone());
    let gateway = stage.gateway(GATEWAY).await;
    let police = stage.agency(POLICE).await;
    let customs = stage.agency(CUSTOMS).await;
    let ops = Ops::from_bus(&bus);

    let ledger = Arc::new(Ledger::default());
    let stop = Arc::new(AtomicBool::new(false));
    let load = tokio::spawn(run_paced(
        target(&customs),
        ledger.clone(),
        "soak".into(),
        WORKERS,
        rate,
        stop.clone(),
    ));
    let started = Instant::now();
    let window = Duration::from_secs_f64((secs as f64 / WINDOWS as f64).clamp(1.0, 30.0));
    let mut tick = tokio::time::interval_at(started + window, window);
    let mut samples: Vec<Sample> = Vec::new();
    let mut seen = 0usize;
    let backlog = async |name: &str| {
        ops.consumer(CASES_STREAM, name)
            .await
            .map_or(0, |c| c.pending + c.ack_pending)
    };
    while started.elapsed() < Duration::from_secs(secs) {
        tick.tick().await;
        let acks = ledger.acks();
        let fresh: Vec<Duration> = acks[seen..].iter().map(|a| a.latency).collect();
        seen = acks.len();
        let (p50, p99, _) = percentiles(fresh.clone());
        samples.push(Sample {
            at_s: started.elapsed().as_secs_f64(),
            acked: acks.len() as u64,
            rate: fresh.len() as f64 / window.as_secs_f64(),
            p50_ms: p50,
            p99_ms: p99,
            rss_customs: customs.rss_kib().unwrap_or(0),
            rss_police: police.rss_kib().unwrap_or(0),
            rss_gateway: gateway.rss_kib().unwrap_or(0),
            rss_nats: rss_kib(server.pid()).unwrap_or(0),
            backlog_gateway: backlog("gw-soak").await,
            backlog_police: backlog("svc-public_security-ningbo").await,
        });
    }
    stop.store(true, Ordering::Relaxed);
    let load_secs = started.elapsed().as_secs_f64();
    load.await.expect("the load stops");
    let planned = rate * load_secs;

    // Settle, then compare the projection with the stream.
    let last = wait_until(
        SETTLE_TIMEOUT,
        "the gateway and the police consumer to settle",
        async || {
            let last = last_sequence(&bus, CASES_STREAM).await;
            let consumers = ops.consumers(CASES_STREAM).await.ok()?;
            let settled = consumers
                .iter()
                .all(|c| c.ack_floor_sequence >= last && c.pending == 0 && c.ack_pending == 0);
            (settled && gateway.position() >= last).then_some(last)
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    let (projection_diffs, _) = gateway.projection_diffs(&bus, "gw-soak").await;
    let projection_equal = projection_diffs.is_empty();
    let audit = audit(&bus, &ledger).await;
    let letters = dead_letters(&bus).await;

    // The curve.
    let mut csv = String::from(
        "seconds,acknowledged,commands_per_s,p50_ms,p99_ms,rss_customs_kib,rss_police_kib,rss_gateway_kib,rss_nats_kib,backlog_gateway,backlog_police\n",
    );
    let mut md = String::from(
        "| s | acked | cmd/s | p50 ms | p99 ms | RSS customs MiB | RSS police MiB | RSS gateway MiB | RSS nats MiB | backlog gateway | backlog police |\n|---|---|---|---|---|---|---|---|---|---|---|\n",
    );
    for s in &samples {
        let _ = writeln!(
            csv,
            "{:.1},{},{:.1},{:.2},{:.2},{},{},{},{},{},{}",
            s.at_s,
            s.acked,
            s.rate,
            s.p50_ms,
            s.p99_ms,
            s.rss_customs,
            s.rss_police,
            s.rss_gateway,
            s.rss_nats,
            s.backlog_gateway,
            s.backlog_police
        );
        let mib = |k: u64| format!("{:.1}", k as f64 / 1024.0);
        let _ = writeln!(
            md,
            "| {:.0} | {} | {:.0} | {:.1} | {:.1} | {} | {} | {} | {} | {} | {} |",
            s.at_s,
            s.acked,
            s.rate,
            s.p50_ms,
            s.p99_ms,
            mib(s.rss_customs),
            mib(s.rss_police),
            mib(s.rss_gateway),
            mib(s.rss_nats),
            s.backlog_gateway,
            s.backlog_police
        );
    }
    let tag = generation.tag();
    let _ = std::fs::write(dir().join(format!("soak-{tag}.csv")), &csv);

    let warm = samples.len() / 4;
    let after_warmup = &samples[warm.min(samples.len() - 1)..];
    let growth = |f: fn(&Sample) -> u64| {
        let first = f(&after_warmup[0]) as f64;
        let last = f(after_warmup.last().expect("samples")) as f64;
        (first, last)
    };
    // The last third, as (commands acknowledged, resident KiB) per sample.
    let last_third = &samples[(samples.len() * 2 / 3).min(samples.len().saturating_sub(3))..];
    let slope_of = |f: fn(&Sample) -> u64| {
        slope(
            &last_third
                .iter()
                .map(|s| (s.acked as f64, f(s) as f64))
                .collect::<Vec<_>>(),
        )
    };
    // Each half's p99 over all the commands acknowledged in it, pooled. (The largest
    // p99 of one window is the latency of one or two commands, so a single stall of
    // the machine, one command in a thousand, would decide it; a slowdown that lasts
    // moves the pooled figure.)
    let half = samples.len() / 2;
    let acks = ledger.acks();
    let counted = |s: &Sample| {
        usize::try_from(s.acked)
            .unwrap_or(usize::MAX)
            .min(acks.len())
    };
    let split = counted(&samples[half.max(1) - 1]);
    let end = samples.last().map_or(split, counted);
    let latencies = |r: std::ops::Range<usize>| -> Vec<Duration> {
        acks[r].iter().map(|a| a.latency).collect()
    };
    let (_, p99_first, _) = percentiles(latencies(0..split));
    let (_, p99_last, _) = percentiles(latencies(split..end.max(split)));
    let max_backlog = samples
        .iter()
        .map(|s| s.backlog_gateway.max(s.backlog_police))
        .max()
        .unwrap_or(0);
    let mut figures = Figures::new(
        &format!("soak {secs} s at {rate} commands/s"),
        &generation.label,
    );
    figures
        .row(
            "commands planned / acknowledged",
            format!("{planned:.0} / {}", ledger.count()),
        )
        .row("commands acknowledged", ledger.count())
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
            "p99 first half / second half",
            format!("{p99_first:.1} / {p99_last:.1} ms"),
        )
        .row("largest consumer backlog", max_backlog);
    for (name, f) in [
        (
            "RSS customs after warm-up, first / last (KiB)",
            (|s: &Sample| s.rss_customs) as fn(&Sample) -> u64,
        ),
        (
            "RSS police after warm-up, first / last (KiB)",
            |s: &Sample| s.rss_police,
        ),
        (
            "RSS gateway after warm-up, first / last (KiB)",
            |s: &Sample| s.rss_gateway,
        ),
        (
            "RSS nats-server after warm-up, first / last (KiB)",
            |s: &Sample| s.rss_nats,
        ),
    ] {
        let (a, b) = growth(f);
        let acked = (after_warmup.last().expect("samples").acked - after_warmup[0].acked).max(1);
        let per_command = slope_of(f);
        figures.row(
            name,
            format!(
                "{a:.0} / {b:.0} ({:.2} KiB per command; last third's slope {per_command:.3} KiB per command, {:.0} MiB/h at this rate)",
                (b - a) / acked as f64,
                per_command * rate * 3600.0 / 1024.0
            ),
        );
    }
    figures.notes = format!("Curve (also in `target/reliability/soak-{tag}.csv`):\n\n{md}");
    figures.write();

    assert!(
        ledger.failures().is_empty(),
        "commands failed: {:?}",
        ledger.failures()
    );
    // The load sent what it planned: a client that stalls, or a pacing bug, would make
    // every other assertion hold over a fraction of the load. Each client's first tick
    // fires at once, hence at most one command per client above the plan.
    let sent = ledger.count() as f64;
    assert!(
        sent >= planned * MIN_SENT_SHARE && sent <= planned + WORKERS as f64,
        "{sent} commands acknowledged, {planned:.0} planned ({rate}/s for {load_secs:.1} s)"
    );
    assert!(
        audit.lost.is_empty() && audit.duplicated.is_empty() && audit.chain_failures.is_empty(),
        "{}",
        audit.summary()
    );
    assert!(letters.is_empty(), "dead letters: {letters:?}");
    assert!(
        projection_equal,
        "the gateway's projection differs from the fold of the stream:\n{}",
        projection_diffs.join("\n")
    );
    // Flat memory over the last third. The agency services keep a cache of case heads
    // (every event id of its cases, up to 64 MiB, see `AppenderConfig::cache_bytes`) and every
    // consumer a chain tip per case (up to 100,000), and the gateway's SQLite its page
    // cache: while a run keeps opening new cases (one per ten commands) these fill until
    // their caps, which a run at 100 commands/s reaches only after about 17 minutes. So
    // at the CI settings memory is not yet flat, and the bound is the fill rate measured
    // (see the constant); a leak that keeps whole requests or events costs more per
    // command. The slope is fitted over the last third's samples, so one jump of the
    // allocator does not decide it, and no absolute allowance hides a leak in a short run.
    for (name, f, bound) in [
        (
            "customs",
            (|s: &Sample| s.rss_customs) as fn(&Sample) -> u64,
            MAX_SLOPE_KIB_PER_COMMAND,
        ),
        (
            "police",
            |s: &Sample| s.rss_police,
            MAX_SLOPE_KIB_PER_COMMAND,
        ),
        (
            "gateway",
            |s: &Sample| s.rss_gateway,
            MAX_GATEWAY_SLOPE_KIB_PER_COMMAND,
        ),
    ] {
        let per_command = slope_of(f);
        assert!(
            per_command <= bound,
            "{name}'s memory grew by {per_command:.3} KiB per command over the last third ({:?} KiB)",
            last_third.iter().map(f).collect::<Vec<_>>()
        );
    }
    // Bounded backlog: the consumers never fall more than ten seconds of load behind.
    assert!(
        (max_backlog as f64) <= rate * 10.0,
        "a consumer fell {max_backlog} messages behind at {rate} commands/s"
    );
    // Stable latency: the second half's p99 (over its commands) within three times the
    // first's plus 50 ms.
    assert!(
        p99_last <= p99_first * 3.0 + 50.0,
        "p99 went from {p99_first:.1} ms to {p99_last:.1} ms"
    );
}

/// Least-squares slope of `y` over `x`; 0 when `x` does not vary.
fn slope(points: &[(f64, f64)]) -> f64 {
    let n = points.len() as f64;
    let mean_x = points.iter().map(|p| p.0).sum::<f64>() / n;
    let mean_y = points.iter().map(|p| p.1).sum::<f64>() / n;
    let sxx: f64 = points.iter().map(|p| (p.0 - mean_x).powi(2)).sum();
    let sxy: f64 = points.iter().map(|p| (p.0 - mean_x) * (p.1 - mean_y)).sum();
    if sxx == 0.0 { 0.0 } else { sxy / sxx }
}
