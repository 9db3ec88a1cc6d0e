//! `casebus-bench`: measures casebus against the physical limits of its design — raw
//! JetStream through async-nats and a bare tonic unary call — back to back in one run on
//! one machine, and prints a table plus a JSON file with every figure, the ratio, the
//! machine, the NATS version and the git commit. Every figure is followed by a
//! correctness check that what was counted is really in the stream or projection.
//!
//! `cargo run --release -p casebus-bench -- --quick` (about 3 minutes) or without
//! `--quick` for the full run.

mod append;
mod fixture;
mod gateway;
mod grpc;
mod import;
mod ingest;
mod rebuild;
mod replay;
mod report;
mod seal;
mod startup;
mod tlog;

use std::path::PathBuf;

use clap::Parser;

use report::Report;

/// Benchmarks casebus against raw JetStream and bare tonic.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// Small sizes: the whole run takes a few minutes.
    #[arg(long, env = "CASEBUS_BENCH_QUICK")]
    quick: bool,
    /// Where to write the JSON results.
    #[arg(
        long,
        env = "CASEBUS_BENCH_OUT",
        default_value = "target/bench/results.json"
    )]
    out: PathBuf,
    /// Where to write the Markdown table.
    #[arg(
        long,
        env = "CASEBUS_BENCH_TABLE",
        default_value = "target/bench/results.md"
    )]
    table: PathBuf,
    /// Run only these rows (repeatable): append, rebuild, ingest, import, timeline,
    /// watch, growth, replay, seal, tlog, startup. The rebuild row reuses the append
    /// row's stream, so it runs the append figure too.
    #[arg(long, value_enum)]
    only: Vec<Figure>,
    /// Keep the started service binaries' logs, as `<name>-<n>.log` in this directory
    /// (for profiling), at the level `RUST_LOG` gives (warnings otherwise); without it
    /// their output is discarded.
    #[arg(long, env = "CASEBUS_BENCH_SERVICE_LOG", value_name = "DIR")]
    service_log: Option<PathBuf>,
    /// Cases of the append and rebuild rows instead of the mode's (200 quick, 2,000
    /// full), for measuring one lever on a busy machine; the rows then say their size.
    #[arg(long, value_name = "N")]
    cases: Option<usize>,
    /// Events per case of the append and rebuild rows instead of the mode's (50 quick,
    /// 500 full).
    #[arg(long, value_name = "N")]
    events_per_case: Option<usize>,
    /// Adds the 10M-event size to the start-up rows (about ten minutes to fill on
    /// two cores, and as long again to measure); ignored with `--quick`.
    #[arg(long, env = "CASEBUS_BENCH_HUGE")]
    huge: bool,
}

/// The rows of the table, for `--only`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Figure {
    /// Figure 1: the append path.
    Append,
    /// Figure 4: the projection rebuild.
    Rebuild,
    /// Figure 2: ingest through an agency service.
    Ingest,
    /// Figure 3: bulk ingest through an Import stream.
    Import,
    /// Figure 5: GetTimeline.
    Timeline,
    /// Figure 6: command answered to WatchTimeline delivery.
    Watch,
    /// Figure 7: growth.
    Growth,
    /// Replayed copies of stored events through one consumer.
    Replay,
    /// Appending sealed events against appending clear ones (issue 14).
    Seal,
    /// The transparency log's cost: projection with and without it, inclusion proofs
    /// (issue 15).
    Tlog,
    /// Start-up of an agency service with and without its inbox snapshot, and of the
    /// gateway on its projection and on a fresh one (issue 18).
    Startup,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let runs = |figure: Figure| args.only.is_empty() || args.only.contains(&figure);
    if let Some(dir) = &args.service_log {
        std::fs::create_dir_all(dir)?;
        grpc::set_service_log(dir.clone());
    }
    let started_at = time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default();
    let bin = casebus_test_support::find_nats_server(None)?;
    let mut report = Report {
        started_at,
        commit: report::commit(),
        nats_version: report::nats_version(&bin),
        machine: report::machine(),
        mode: if args.quick { "quick" } else { "full" },
        rows: Vec::new(),
    };
    let size = if args.quick {
        append::Size {
            cases: 200,
            rounds: 49,
            writers: 128,
        }
    } else {
        append::Size {
            cases: 2000,
            rounds: 499,
            writers: 256,
        }
    };

    let size = append::Size {
        cases: args.cases.unwrap_or(size.cases).max(1),
        rounds: args.events_per_case.map_or(size.rounds, |n| n.max(1) - 1),
        writers: size.writers.min(args.cases.unwrap_or(usize::MAX).max(1)),
    };

    if runs(Figure::Replay) {
        eprintln!("== replay: copies of stored events through one consumer");
        for row in replay::run().await? {
            eprintln!("{} -> {}", row.figure, row.verified);
            report.rows.push(row);
        }
    }

    if runs(Figure::Seal) {
        eprintln!("== sealed appends vs clear appends");
        let seal_size = append::Size {
            cases: 200,
            rounds: 49,
            writers: 128,
        };
        let row = tokio::time::timeout(append::FIGURE_TIMEOUT, seal::run(seal_size)).await??;
        eprintln!("{} -> {:.2}x", row.figure, row.ratio.unwrap_or(0.0));
        report.rows.push(row);
        eprintln!("== GetTimeline of sealed notes opened vs the same case in clear");
        let calls = if args.quick { 4_000 } else { 20_000 };
        let row = tokio::time::timeout(append::FIGURE_TIMEOUT, seal::timeline(calls)).await??;
        eprintln!("{} -> {:.2}x", row.figure, row.ratio.unwrap_or(0.0));
        report.rows.push(row);
    }

    if runs(Figure::Tlog) {
        eprintln!("== transparency log: projection with and without it, inclusion proofs");
        let rows = tokio::time::timeout(append::FIGURE_TIMEOUT, tlog::run(args.quick)).await??;
        for row in rows {
            eprintln!("{} -> {:?}x, met {}", row.figure, row.ratio, row.met);
            report.rows.push(row);
        }
    }

    if runs(Figure::Startup) {
        eprintln!("== start-up: agency with and without the inbox snapshot, gateway");
        let sizes: &[u64] = if args.quick {
            &[10_000, 100_000]
        } else if args.huge {
            &[10_000, 100_000, 1_000_000, 10_000_000]
        } else {
            &[10_000, 100_000, 1_000_000]
        };
        let timeout = if args.huge && !args.quick { 8 } else { 2 } * append::FIGURE_TIMEOUT;
        let rows = tokio::time::timeout(timeout, startup::run(sizes)).await??;
        for row in rows {
            eprintln!("{} -> {:?}x, met {}", row.figure, row.ratio, row.met);
            report.rows.push(row);
        }
    }

    if runs(Figure::Append) || runs(Figure::Rebuild) {
        eprintln!("== figure 1: append path vs raw publish");
        let (server, bus) = fixture::start().await?;
        let (row, _size) =
            tokio::time::timeout(append::FIGURE_TIMEOUT, append::run(&bus, size)).await??;
        eprintln!("{} -> {:.2}x", row.figure, row.ratio.unwrap_or(0.0));
        report.rows.push(row);

        if runs(Figure::Rebuild) {
            eprintln!("== figure 4: projection rebuild vs raw pull consume");
            let count = (size.cases * (size.rounds + 1)) as u64;
            let row =
                tokio::time::timeout(append::FIGURE_TIMEOUT, rebuild::run(&bus, count)).await??;
            eprintln!("{} -> {:.2}x", row.figure, row.ratio.unwrap_or(0.0));
            report.rows.push(row);
        }
        drop(bus);
        drop(server);
    }

    if runs(Figure::Ingest) {
        ingest_row(&mut report, args.quick).await?;
    }
    if runs(Figure::Import) {
        import_row(&mut report, args.quick).await?;
    }
    if runs(Figure::Timeline) {
        timeline_row(&mut report, args.quick).await?;
    }
    if runs(Figure::Watch) {
        watch_row(&mut report, args.quick).await?;
    }
    if runs(Figure::Growth) {
        growth_row(&mut report, args.quick).await?;
    }

    let table = report.to_markdown();
    println!("{table}");
    if let Some(dir) = args.out.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(&args.out, serde_json::to_vec_pretty(&report)?)?;
    if let Some(dir) = args.table.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(&args.table, &table)?;
    eprintln!(
        "results written to {} and {}",
        args.out.display(),
        args.table.display()
    );
    Ok(())
}

async fn ingest_row(report: &mut Report, quick: bool) -> anyhow::Result<()> {
    eprintln!("== figure 2: ingest through an agency service vs bare tonic echo");
    let (server, bus) = fixture::start().await?;
    let (cases, commands) = if quick { (64, 5_000) } else { (256, 50_000) };
    let row = tokio::time::timeout(
        append::FIGURE_TIMEOUT,
        ingest::run(&bus, &server.url(), cases, commands),
    )
    .await??;
    eprintln!("{} -> {:.2}x", row.figure, row.ratio.unwrap_or(0.0));
    report.rows.push(row);
    drop(bus);
    drop(server);
    Ok(())
}

async fn import_row(report: &mut Report, quick: bool) -> anyhow::Result<()> {
    eprintln!("== figure 3: bulk ingest through an Import stream vs raw publish");
    let (server, bus) = fixture::start().await?;
    let size = import::Size {
        cases: if quick { 1_000 } else { 10_000 },
        items_per_case: 10,
        streams: 4,
    };
    let row = tokio::time::timeout(
        append::FIGURE_TIMEOUT,
        import::run(&bus, &server.url(), size),
    )
    .await??;
    eprintln!("{} -> {:.2}x", row.figure, row.ratio.unwrap_or(0.0));
    report.rows.push(row);
    drop(bus);
    drop(server);
    Ok(())
}

async fn timeline_row(report: &mut Report, quick: bool) -> anyhow::Result<()> {
    eprintln!("== figure 5: GetTimeline vs bare tonic echo");
    let (server, bus) = fixture::start().await?;
    let calls = if quick { 3_000 } else { 30_000 };
    let row = tokio::time::timeout(
        append::FIGURE_TIMEOUT,
        gateway::get_timeline(&bus, &server.url(), calls),
    )
    .await??;
    eprintln!("{} -> {:.2}x", row.figure, row.ratio.unwrap_or(0.0));
    report.rows.push(row);
    drop(bus);
    drop(server);
    Ok(())
}

async fn watch_row(report: &mut Report, quick: bool) -> anyhow::Result<()> {
    eprintln!("== figure 6: command answered -> WatchTimeline delivery");
    let (server, bus) = fixture::start().await?;
    let seconds = if quick { 3 } else { 20 };
    let row = tokio::time::timeout(
        append::FIGURE_TIMEOUT,
        gateway::watch_latency(&server.url(), 1000, seconds, 20),
    )
    .await??;
    eprintln!("{}: p99 {:?} ms", row.figure, row.casebus.p99_ms);
    report.rows.push(row);
    drop(bus);
    drop(server);
    Ok(())
}

async fn growth_row(report: &mut Report, quick: bool) -> anyhow::Result<()> {
    eprintln!("== figure 7: growth");
    let sizes: &[u64] = if quick {
        &[10_000, 50_000]
    } else {
        &[10_000, 100_000, 1_000_000]
    };
    let mut growth = Vec::new();
    for &events in sizes {
        let g = gateway::growth(events).await?;
        eprintln!(
            "{events} events: projection {:.0}/s (raw consume {:.0}/s), peak RSS {} MB, GetTimeline p99 {:.2} ms",
            g.projected.rate,
            g.raw.rate,
            g.rss / 1_000_000,
            g.p99_ms
        );
        growth.push((events, g));
    }
    let smallest = growth.first().map(|(_, g)| g.projected.rate);
    for (events, g) in &growth {
        let ratio = g.projected.rate / g.raw.rate.max(1e-9);
        report.rows.push(report::Row {
            figure: format!(
                "gateway catching up {events} events from a fresh start vs raw pull consume"
            ),
            casebus: g.projected.clone(),
            baseline: Some(g.raw.clone()),
            ratio: Some(ratio),
            target: ">= 0.4x raw pull consume; flat within 1.5x of the smallest size".into(),
            met: ratio >= 0.4 && smallest.is_some_and(|s| s <= 1.5 * g.projected.rate),
            verified: format!(
                "the last case's 50 events served by GetTimeline; the raw consumer saw all {events}"
            ),
        });
    }
    if let (Some((first_n, first)), Some((last_n, last))) = (growth.first(), growth.last()) {
        let detail: Vec<String> = growth
            .iter()
            .map(|(n, g)| {
                format!(
                    "{n} events: projection {:.0} events/s, peak RSS {:.0} MB, GetTimeline p99 {:.2} ms",
                    g.projected.rate,
                    g.rss as f64 / 1e6,
                    g.p99_ms
                )
            })
            .collect();
        report.rows.push(report::Row {
            figure: format!("growth {first_n} -> {last_n} events"),
            casebus: report::Measurement {
                unit: "events/s projected",
                rate: last.projected.rate,
                count: *last_n,
                seconds: last.projected.seconds,
                p50_ms: None,
                p99_ms: Some(last.p99_ms),
            },
            baseline: None,
            ratio: Some(last.p99_ms / first.p99_ms.max(1e-9)),
            target: "GetTimeline p99 within 1.5x of the smallest; RSS <= 150 MB at 1M".into(),
            met: last.p99_ms <= 1.5 * first.p99_ms && last.rss <= 150_000_000,
            verified: detail.join("; "),
        });
    }

    Ok(())
}
