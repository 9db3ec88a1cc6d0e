//! The casebus workload simulator: realistic intellectual-property cases moving through
//! customs, the IP center, public security, the procuratorate and the court, recorded by
//! calling the agency services' gRPC APIs exactly as back-office systems do. That is what
//! exercises the whole system: commands, case rules, signing, the stream, automatic
//! receipts, the gateway's projection and the monitor.
//!
//! - [`SimConfig`]: targets (`OFFICE=URL`), issuer key, `--rate`, `--cases`, `--seed`,
//!   `--duration` and the shares of overdue cases and client retries; clap arguments
//!   shared by the `casebus-simulator` binary and `casebus simulate`.
//! - [`run`]: runs the simulation until the cases are done, the duration ends or the
//!   shutdown token is cancelled, and returns a [`SimReport`].
//!
//! Every case follows one seeded script (see `scenario`): a customs detention assessed by
//! the IP center, then either an administrative end (release or confiscation) or a
//! criminal referral through investigation, arrest approval, prosecution and judgment; or
//! an IP-center complaint with a patent pre-examination and mediation. A share of the
//! cases is recorded as if it happened weeks ago and left waiting at a hand-off, so the
//! hand-off is overdue under any deadline rules up to 30 days.
//!
//! **Boundary:** the simulator only calls the agency services' public gRPC APIs; it never
//! writes to NATS and knows no case rules beyond what a clerk would.

mod client;
mod config;
mod rng;
mod scenario;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::task::JoinSet;

use casebus_integrity::token::{IssuerError, IssuerKey};

pub use crate::config::{AGENCIES, SimConfig, Target};
/// Re-exported so callers can stop a run without naming tokio-util.
pub use tokio_util::sync::CancellationToken;

use crate::client::Offices;
use crate::scenario::{CaseRun, Outcome};

/// How often a running simulation logs its progress.
const PROGRESS_EVERY: Duration = Duration::from_secs(10);

/// Why a simulation could not run.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SimError {
    /// A setting is invalid.
    #[error("invalid {key}: {reason}")]
    Config {
        /// The flag.
        key: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// The issuer key file cannot be read.
    #[error("cannot load the issuer key")]
    IssuerKey(#[source] IssuerError),
    /// The issuer refused to sign a token.
    #[error("cannot issue a token")]
    Token(#[source] IssuerError),
}

/// What a simulation did.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct SimReport {
    /// The prefix of the case ids of this run.
    pub case_prefix: String,
    /// The seed.
    pub seed: u64,
    /// Cases opened.
    pub cases_started: u64,
    /// Cases that ran to the end of their script.
    pub cases_finished: u64,
    /// Cases left waiting at a hand-off that is overdue.
    pub cases_overdue: u64,
    /// Cases abandoned after a command failed for good.
    pub cases_failed: u64,
    /// Cases cut short by the end of the run.
    pub cases_interrupted: u64,
    /// Commands recorded (each once, retries not counted).
    pub commands: u64,
    /// Commands re-sent with the same request id and answered as duplicates.
    pub duplicates: u64,
    /// Re-sends after a transient error (UNAVAILABLE, ABORTED, a timeout).
    pub retries: u64,
    /// Commands recorded per agency.
    pub commands_by_agency: BTreeMap<String, u64>,
    /// Failed commands per gRPC code.
    pub errors: BTreeMap<String, u64>,
    /// Wall time of the run, in seconds.
    pub elapsed_seconds: f64,
}

impl std::fmt::Display for SimReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "simulated {} cases ({}-*, seed {}) in {:.1}s: {} finished, {} left overdue, {} failed, {} interrupted",
            self.cases_started,
            self.case_prefix,
            self.seed,
            self.elapsed_seconds,
            self.cases_finished,
            self.cases_overdue,
            self.cases_failed,
            self.cases_interrupted
        )?;
        let per_second = if self.elapsed_seconds > 0.0 {
            self.commands as f64 / self.elapsed_seconds
        } else {
            0.0
        };
        write!(
            f,
            "{} commands ({per_second:.1}/s), {} duplicates answered, {} retries",
            self.commands, self.duplicates, self.retries
        )?;
        for (agency, n) in &self.commands_by_agency {
            write!(f, "\n  {agency}: {n} commands")?;
        }
        for (code, n) in &self.errors {
            write!(f, "\n  error {code}: {n}")?;
        }
        Ok(())
    }
}

/// Spaces commands evenly at the configured rate, over all cases.
#[derive(Debug)]
pub(crate) struct Limiter {
    interval: Duration,
    next: Mutex<tokio::time::Instant>,
}

impl Limiter {
    fn new(rate: f64) -> Self {
        Self {
            interval: Duration::from_secs_f64(1.0 / rate),
            next: Mutex::new(tokio::time::Instant::now()),
        }
    }

    /// Waits for the next slot.
    pub async fn acquire(&self) {
        let at = {
            let mut next = self.next.lock().unwrap_or_else(|p| p.into_inner());
            let now = tokio::time::Instant::now();
            // A limiter idle for a while must not burst: slots do not accumulate.
            let at = (*next).max(now);
            *next = at + self.interval;
            at
        };
        tokio::time::sleep_until(at).await;
    }
}

/// Counters shared by every case of a run.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub commands: AtomicU64,
    pub duplicates: AtomicU64,
    pub retries: AtomicU64,
    pub by_agency: Mutex<BTreeMap<String, u64>>,
    pub errors: Mutex<BTreeMap<String, u64>>,
}

impl Counters {
    pub fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub fn count_in(map: &Mutex<BTreeMap<String, u64>>, key: &str) {
        let mut map = map.lock().unwrap_or_else(|p| p.into_inner());
        *map.entry(key.to_owned()).or_default() += 1;
    }
}

/// What every case of a run shares.
#[derive(Debug)]
pub(crate) struct Shared {
    pub config: SimConfig,
    pub offices: Offices,
    pub limiter: Limiter,
    pub counters: Counters,
    pub stop: CancellationToken,
}

/// Runs the simulation described by `config` until every case is done, `--duration`
/// has passed, or `shutdown` is cancelled, and reports what it did. Failed commands do
/// not end the run: the case is abandoned and counted.
///
/// # Errors
/// [`SimError::Config`] for invalid settings; [`SimError::IssuerKey`] when the issuer
/// key cannot be loaded; [`SimError::Token`] when it cannot sign.
pub async fn run(config: SimConfig, shutdown: CancellationToken) -> Result<SimReport, SimError> {
    config.validate()?;
    let issuer = IssuerKey::load(&config.issuer_key).map_err(SimError::IssuerKey)?;
    let offices = Offices::new(&config.targets, issuer)?;
    let started = Instant::now();
    let prefix = config.case_prefix.clone().unwrap_or_else(|| {
        let secs = time::OffsetDateTime::now_utc().unix_timestamp();
        format!(
            "sim{}-{}",
            config.seed,
            base36(u64::try_from(secs).unwrap_or(0))
        )
    });
    let stop = shutdown.child_token();
    let shared = Arc::new(Shared {
        limiter: Limiter::new(config.rate),
        counters: Counters::default(),
        offices,
        stop: stop.clone(),
        config,
    });
    let deadline = shared
        .config
        .duration
        .map(|d| tokio::time::Instant::now() + d);
    tracing::info!(
        case_prefix = %prefix,
        seed = shared.config.seed,
        rate = shared.config.rate,
        cases = shared.config.cases,
        "simulation started"
    );

    let mut report = SimReport {
        case_prefix: prefix.clone(),
        seed: shared.config.seed,
        ..Default::default()
    };
    let mut cases: JoinSet<Outcome> = JoinSet::new();
    let mut progress = tokio::time::interval(PROGRESS_EVERY);
    progress.tick().await;
    let mut next_case: u64 = 1;
    loop {
        let more = shared.config.cases == 0 || next_case <= shared.config.cases;
        let room = cases.len() < shared.config.concurrency;
        if !more && cases.is_empty() {
            break;
        }
        tokio::select! {
            () = stop.cancelled() => break,
            () = async {
                match deadline {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            } => {
                tracing::info!("simulation duration reached");
                stop.cancel();
                break;
            }
            _ = progress.tick() => log_progress(&report, &shared),
            Some(done) = cases.join_next(), if !cases.is_empty() => {
                tally(&mut report, done);
            }
            () = std::future::ready(()), if more && room => {
                let case_id = format!("{prefix}-{next_case:05}");
                let run = CaseRun::new(shared.clone(), next_case, case_id);
                cases.spawn(run.run());
                report.cases_started += 1;
                next_case += 1;
            }
        }
    }
    // Cases still running see the cancelled token at their next step and end.
    stop.cancel();
    while let Some(done) = cases.join_next().await {
        tally(&mut report, done);
    }
    let counters = &shared.counters;
    report.commands = counters.commands.load(Ordering::Relaxed);
    report.duplicates = counters.duplicates.load(Ordering::Relaxed);
    report.retries = counters.retries.load(Ordering::Relaxed);
    report.commands_by_agency = counters
        .by_agency
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    report.errors = counters
        .errors
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    report.elapsed_seconds = started.elapsed().as_secs_f64();
    tracing::info!(
        cases = report.cases_started,
        finished = report.cases_finished,
        overdue = report.cases_overdue,
        failed = report.cases_failed,
        commands = report.commands,
        "simulation ended"
    );
    Ok(report)
}

fn tally(report: &mut SimReport, done: Result<Outcome, tokio::task::JoinError>) {
    match done {
        Ok(Outcome::Finished) => report.cases_finished += 1,
        Ok(Outcome::Overdue) => report.cases_overdue += 1,
        Ok(Outcome::Failed) => report.cases_failed += 1,
        Ok(Outcome::Interrupted) => report.cases_interrupted += 1,
        Err(e) => {
            tracing::error!(error = %e, "a simulated case panicked");
            report.cases_failed += 1;
        }
    }
}

fn log_progress(report: &SimReport, shared: &Shared) {
    tracing::info!(
        cases = report.cases_started,
        finished = report.cases_finished,
        overdue = report.cases_overdue,
        failed = report.cases_failed,
        commands = shared.counters.commands.load(Ordering::Relaxed),
        "simulation progress"
    );
}

fn base36(mut n: u64) -> String {
    const DIGITS: &[u8; 36] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    let mut out = Vec::new();
    loop {
        out.push(DIGITS[usize::try_from(n % 36).unwrap_or_default()]);
        n /= 36;
        if n == 0 {
            break;
        }
    }
    out.reverse();
    String::from_utf8(out).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base36_is_short_and_exact() {
        assert_eq!(base36(0), "0");
        assert_eq!(base36(35), "z");
        assert_eq!(base36(36), "10");
        assert_eq!(base36(1_772_000_000).len(), 6);
    }

    #[tokio::test(start_paused = true)]
    async fn the_limiter_spaces_commands_at_the_rate() {
        let limiter = Limiter::new(10.0);
        let start = tokio::time::Instant::now();
        for _ in 0..5 {
            limiter.acquire().await;
        }
        // The first slot is immediate, the next four come 100 ms apart.
        let elapsed = start.elapsed();
        assert!(
            elapsed >= Duration::from_millis(400) && elapsed < Duration::from_millis(500),
            "{elapsed:?}"
        );
    }

    #[test]
    fn the_report_reads_as_a_summary() {
        let report = SimReport {
            case_prefix: "sim1-x".into(),
            seed: 1,
            cases_started: 3,
            cases_finished: 2,
            cases_overdue: 1,
            commands: 40,
            elapsed_seconds: 4.0,
            errors: BTreeMap::from([("UNAVAILABLE".to_owned(), 1)]),
            ..Default::default()
        };
        let text = report.to_string();
        assert!(text.contains("simulated 3 cases"), "{text}");
        assert!(text.contains("1 left overdue"), "{text}");
        assert!(text.contains("10.0/s"), "{text}");
        assert!(text.contains("error UNAVAILABLE: 1"), "{text}");
    }
}
