//! Results of a benchmark run: one row per figure with the casebus measurement, the
//! baseline measured in the same run, their ratio and the target; printed as a table
//! and written as JSON with the machine, the NATS version and the git commit.

use std::path::Path;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;

/// One measurement.
#[derive(Debug, Clone, Serialize)]
pub struct Measurement {
    /// What was counted per second ("events/s", "rps").
    pub unit: &'static str,
    /// Operations per second; milliseconds for a time ([`Measurement::time`]).
    pub rate: f64,
    /// Operations counted.
    pub count: u64,
    /// Wall time in seconds.
    pub seconds: f64,
    /// Median latency in milliseconds, when latencies were recorded.
    pub p50_ms: Option<f64>,
    /// 99th percentile latency in milliseconds, when latencies were recorded.
    pub p99_ms: Option<f64>,
}

impl Measurement {
    /// A rate measurement of `count` operations in `elapsed`.
    pub fn rate(unit: &'static str, count: u64, elapsed: Duration) -> Self {
        let seconds = elapsed.as_secs_f64().max(1e-9);
        Self {
            unit,
            rate: count as f64 / seconds,
            count,
            seconds,
            p50_ms: None,
            p99_ms: None,
        }
    }

    /// A time measurement: `elapsed` in milliseconds as the `rate` (lower is better),
    /// over `count` (what the time grows with, e.g. the stream's events).
    pub fn time(unit: &'static str, count: u64, elapsed: Duration) -> Self {
        Self {
            unit,
            rate: elapsed.as_secs_f64() * 1000.0,
            count,
            seconds: elapsed.as_secs_f64(),
            p50_ms: None,
            p99_ms: None,
        }
    }

    /// Adds latency percentiles from a histogram of microseconds.
    pub fn with_latency(mut self, micros: &Histogram<u64>) -> Self {
        if !micros.is_empty() {
            self.p50_ms = Some(micros.value_at_quantile(0.50) as f64 / 1000.0);
            self.p99_ms = Some(micros.value_at_quantile(0.99) as f64 / 1000.0);
        }
        self
    }
}

/// One figure of the table.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    /// The figure, as in the table.
    pub figure: String,
    /// casebus's measurement.
    pub casebus: Measurement,
    /// The baseline's measurement, if the figure has one.
    pub baseline: Option<Measurement>,
    /// casebus rate / baseline rate.
    pub ratio: Option<f64>,
    /// The target, in words.
    pub target: String,
    /// Whether the target was met.
    pub met: bool,
    /// What was checked for correctness after the run.
    pub verified: String,
}

impl Row {
    /// A row comparing `casebus` with `baseline` against a minimum rate ratio.
    pub fn ratio(
        figure: &str,
        casebus: Measurement,
        baseline: Measurement,
        min_ratio: f64,
        verified: String,
    ) -> Self {
        let ratio = casebus.rate / baseline.rate.max(1e-9);
        Self {
            figure: figure.to_owned(),
            target: format!(">= {min_ratio}x"),
            met: ratio >= min_ratio,
            ratio: Some(ratio),
            casebus,
            baseline: Some(baseline),
            verified,
        }
    }
}

/// The whole run.
#[derive(Debug, Serialize)]
pub struct Report {
    /// When the run started (RFC 3339).
    pub started_at: String,
    /// `git rev-parse HEAD`, if available.
    pub commit: String,
    /// `nats-server --version`.
    pub nats_version: String,
    /// CPU model, cores, memory.
    pub machine: String,
    /// Quick or full.
    pub mode: &'static str,
    /// The figures.
    pub rows: Vec<Row>,
}

fn command_output(cmd: &str, args: &[&str]) -> String {
    std::process::Command::new(cmd)
        .args(args)
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default()
}

/// A description of this machine.
pub fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|s| s.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown cpu".into());
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    let mem = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .next()
                .map(|l| l.split_whitespace().nth(1).unwrap_or("0").to_owned())
        })
        .and_then(|kb| kb.parse::<u64>().ok())
        .map_or_else(String::new, |kb| {
            format!("{:.1} GiB", kb as f64 / 1024.0 / 1024.0)
        });
    format!("{cpu}, {cores} cores, {mem}")
}

/// The git commit of the working tree.
pub fn commit() -> String {
    command_output("git", &["rev-parse", "--short=12", "HEAD"])
}

/// The version of the nats-server binary at `bin`.
pub fn nats_version(bin: &Path) -> String {
    command_output(&bin.display().to_string(), &["--version"])
}

fn fmt_rate(m: &Measurement) -> String {
    let latency = match (m.p50_ms, m.p99_ms) {
        (Some(p50), Some(p99)) => format!(" (p50 {p50:.2} ms, p99 {p99:.2} ms)"),
        _ => String::new(),
    };
    format!("{:.0} {}{latency}", m.rate, m.unit)
}

impl Report {
    /// The table as Markdown.
    pub fn to_markdown(&self) -> String {
        let mut out = format!(
            "Run {} ({} mode) at commit {} on {}; {}.\n\n| figure | casebus | baseline | ratio | target | met |\n|---|---|---|---|---|---|\n",
            self.started_at, self.mode, self.commit, self.machine, self.nats_version
        );
        for row in &self.rows {
            out.push_str(&format!(
                "| {} | {} | {} | {} | {} | {} |\n",
                row.figure,
                fmt_rate(&row.casebus),
                row.baseline
                    .as_ref()
                    .map_or_else(|| "—".to_owned(), fmt_rate),
                row.ratio
                    .map_or_else(|| "—".to_owned(), |r| format!("{r:.2}x")),
                row.target,
                if row.met { "yes" } else { "no" },
            ));
        }
        out.push_str("\nCorrectness checks:\n");
        for row in &self.rows {
            out.push_str(&format!("- {}: {}\n", row.figure, row.verified));
        }
        out
    }
}
