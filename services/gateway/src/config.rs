//! `Config`: every setting of `casebus-gateway`, as flags with environment variables
//! (`CASEBUS_GATEWAY_*`, or the shared `CASEBUS_*` names of the runtime groups), and its
//! validation into typed values. Parsed once in `main`.

use std::path::PathBuf;

use casebus_runtime::args::{GrpcArgs, MetricsArgs, NatsArgs, ProcessArgs};
use casebus_runtime::clocks::ClockArgs;
use casebus_runtime::registry::RegistryArgs;

use crate::error::RunError;

/// Prefix of every gateway's durable consumer name.
pub const CONSUMER_PREFIX: &str = "gw-";

/// The gateway's command line.
#[derive(Debug, Clone, clap::Parser)]
#[command(
    name = "casebus-gateway",
    version,
    about = "The casebus query gateway: projects the CASES stream into a SQLite file and serves \
each agency the shared case timeline it may see over gRPC (with health and reflection), \
auditing every read.",
    long_about = None,
    after_help = "Several gateways may run side by side: give each its own --consumer-name and its \
own --db. Deleting the --db file (while the gateway is stopped) rebuilds it from the stream at \
the next start."
)]
pub struct Config {
    /// The SQLite projection file (created if missing; delete it to rebuild from the
    /// stream). One file per gateway: a lock file `<db>.lock` keeps a second gateway off.
    #[arg(long, env = "CASEBUS_GATEWAY_DB")]
    pub db: PathBuf,
    /// This gateway's durable consumer on CASES: `gw-<name>`, unique per gateway.
    #[arg(
        long = "consumer-name",
        env = "CASEBUS_GATEWAY_CONSUMER_NAME",
        default_value = "gw-main"
    )]
    pub consumer_name: String,
    /// The office registry, reloaded on change.
    #[command(flatten)]
    pub registry: RegistryArgs,
    /// Create or update the CASES, CASES_DLQ and AUDIT streams at start.
    #[arg(long, env = "CASEBUS_GATEWAY_PROVISION")]
    pub provision: bool,
    /// Replicas of the streams when provisioning: 1 (single node) or 3 (cluster).
    #[arg(long, env = "CASEBUS_GATEWAY_REPLICAS", default_value_t = 1)]
    pub replicas: usize,
    /// Most events projected in one SQLite transaction (1 to 1000).
    #[arg(long, env = "CASEBUS_GATEWAY_BATCH", default_value_t = 500)]
    pub batch: usize,
    /// Reader connections to the projection serving gRPC reads (1 to 32).
    #[arg(long, env = "CASEBUS_GATEWAY_READERS", default_value_t = 4)]
    pub readers: usize,
    /// WatchTimeline and WatchFeed streams open at once at most; more are refused with
    /// RESOURCE_EXHAUSTED.
    #[arg(long, env = "CASEBUS_GATEWAY_MAX_WATCHES", default_value_t = 1024)]
    pub max_watches: usize,
    /// Work one ListCases call may cause, in SQLite virtual-machine steps over the
    /// caller's own cases (200,000,000 is a few hundred milliseconds of one core); a
    /// listing that would take more is refused with RESOURCE_EXHAUSTED, asking the
    /// caller to narrow it by date.
    #[arg(long, env = "CASEBUS_GATEWAY_LIST_WORK_BUDGET", default_value_t = casebus_timeline::DEFAULT_LIST_WORK_BUDGET)]
    pub list_work_budget: u64,
    /// Secret encryption key files of the offices this gateway serves in clear
    /// (`casebus keys generate --kind encryption`, mode 0600); repeat the flag, or
    /// separate paths with commas in the variable. Only for a gateway an agency runs for
    /// itself: what is sealed for one of these offices is opened for callers of that
    /// office (`TimelineEvent.opened`). A shared gateway takes none (docs/CONFIDENTIALITY.md).
    #[arg(
        long = "decryption-key",
        env = "CASEBUS_GATEWAY_DECRYPTION_KEYS",
        value_delimiter = ','
    )]
    pub decryption_keys: Vec<PathBuf>,
    /// Keep a transparency log (RFC 9162 Merkle tree over every message of CASES, in
    /// stream order) in this SQLite file, beside the projection; a missing file is
    /// rebuilt from the stream (docs/PROOFS.md).
    #[arg(long = "tlog-file", env = "CASEBUS_GATEWAY_TLOG_FILE")]
    pub tlog_file: Option<PathBuf>,
    /// Longest wait for the next message of CASES before the log follower looks at
    /// shutdown again, and its pause after a failed read.
    #[arg(
        long = "tlog-interval",
        env = "CASEBUS_GATEWAY_TLOG_INTERVAL",
        default_value = "1s",
        value_parser = casebus_runtime::args::humantime_duration
    )]
    pub tlog_interval: std::time::Duration,
    /// Sign and publish checkpoints of the transparency log with this log key (a file
    /// written by `casebus keys generate --kind log`; not an office key), on the
    /// CHECKPOINTS stream. Needs --tlog-file.
    #[arg(
        long = "log-key",
        env = "CASEBUS_GATEWAY_LOG_KEY",
        requires = "tlog_file"
    )]
    pub log_key: Option<PathBuf>,
    /// The log's origin, the first line of every checkpoint (e.g.
    /// `casebus.example/cases`); the log key's name when not given.
    #[arg(
        long = "log-origin",
        env = "CASEBUS_GATEWAY_LOG_ORIGIN",
        requires = "log_key"
    )]
    pub log_origin: Option<String>,
    /// Publish a checkpoint once the log has grown by this many entries.
    #[arg(
        long = "checkpoint-every",
        env = "CASEBUS_GATEWAY_CHECKPOINT_EVERY",
        default_value_t = 1000
    )]
    pub checkpoint_every: u64,
    /// Publish a checkpoint once this much time has passed since the last round and the
    /// log has grown at all.
    #[arg(
        long = "checkpoint-interval",
        env = "CASEBUS_GATEWAY_CHECKPOINT_INTERVAL",
        default_value = "10s",
        value_parser = casebus_runtime::args::humantime_duration
    )]
    pub checkpoint_interval: std::time::Duration,
    /// Responses buffered per watch stream before it waits for its client.
    #[arg(long, env = "CASEBUS_GATEWAY_WATCH_BUFFER", default_value_t = 64)]
    pub watch_buffer: usize,
    /// Key of the ListCases page tokens: a file holding 64 hex digits (32 random bytes,
    /// e.g. `openssl rand -hex 32`; keep it mode 0600). Without it a key is generated at
    /// start, and every page token handed out dies with the process. Gateways a client
    /// may switch between need the same key file.
    #[arg(long = "page-token-key", env = "CASEBUS_GATEWAY_PAGE_TOKEN_KEY")]
    pub page_token_key: Option<PathBuf>,
    /// Write the bound gRPC and metrics addresses here as JSON once serving (for
    /// launchers and tests using port 0); removed on a clean stop.
    #[arg(long, env = "CASEBUS_GATEWAY_READY_FILE")]
    pub ready_file: Option<PathBuf>,
    /// Deadline rules and holiday calendar the hand-offs' legal clocks are counted with.
    #[command(flatten)]
    pub clocks: ClockArgs,
    /// NATS connection.
    #[command(flatten)]
    pub nats: NatsArgs,
    /// gRPC listener, TLS and caller authentication.
    #[command(flatten)]
    pub grpc: GrpcArgs,
    /// Metrics endpoint.
    #[command(flatten)]
    pub metrics: MetricsArgs,
    /// Logging and shutdown.
    #[command(flatten)]
    pub process: ProcessArgs,
}

impl Config {
    /// Checks the values clap cannot check.
    ///
    /// # Errors
    /// [`RunError::Config`] naming the flag and what is wrong.
    pub fn validate(&self) -> Result<(), RunError> {
        let invalid = |key: &'static str, reason: String| RunError::Config { key, reason };
        let suffix = self
            .consumer_name
            .strip_prefix(CONSUMER_PREFIX)
            .unwrap_or_default();
        if suffix.is_empty()
            || self.consumer_name.len() > 64
            || !suffix
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return Err(invalid(
                "--consumer-name",
                format!(
                    "{:?} must be gw-<name> with <name> of [A-Za-z0-9_-], at most 64 characters in all",
                    self.consumer_name
                ),
            ));
        }
        if !(1..=1000).contains(&self.batch) {
            return Err(invalid(
                "--batch",
                format!("{} is not in 1..=1000", self.batch),
            ));
        }
        if !(1..=32).contains(&self.readers) {
            return Err(invalid(
                "--readers",
                format!("{} is not in 1..=32", self.readers),
            ));
        }
        if self.max_watches == 0 {
            return Err(invalid("--max-watches", "must be at least 1".into()));
        }
        if self.list_work_budget < 100 {
            return Err(invalid(
                "--list-work-budget",
                format!(
                    "{} is below the least budget, 100 steps",
                    self.list_work_budget
                ),
            ));
        }
        if self.checkpoint_every == 0 {
            return Err(invalid("--checkpoint-every", "must be at least 1".into()));
        }
        if let Some(origin) = &self.log_origin
            && (origin.is_empty() || origin.contains('\n') || origin.chars().any(char::is_control))
        {
            return Err(invalid(
                "--log-origin",
                format!("{origin:?} must be one non-empty line of text"),
            ));
        }
        if !(1..=4096).contains(&self.watch_buffer) {
            return Err(invalid(
                "--watch-buffer",
                format!("{} is not in 1..=4096", self.watch_buffer),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser as _;

    use super::*;

    fn parse(extra: &[&str]) -> Config {
        let mut args = vec![
            "casebus-gateway",
            "--db",
            "/tmp/gw.sqlite",
            "--registry",
            "offices.toml",
            "--trusted-issuers",
            "issuers.toml",
        ];
        args.extend_from_slice(extra);
        Config::try_parse_from(args).expect("parses")
    }

    #[test]
    fn defaults_are_valid() {
        let config = parse(&[]);
        assert_eq!(config.consumer_name, "gw-main");
        config.validate().expect("valid");
    }

    #[test]
    fn consumer_names_must_be_gw_tokens() {
        for good in ["gw-a", "gw-east_1"] {
            parse(&["--consumer-name", good]).validate().expect(good);
        }
        for bad in ["a", "gw-", "gw-a.b", "gw-a b", "GW-a"] {
            let err = parse(&["--consumer-name", bad]).validate().expect_err(bad);
            assert!(err.to_string().contains("--consumer-name"), "{err}");
        }
    }

    #[test]
    fn batch_and_readers_are_bounded() {
        assert!(parse(&["--batch", "0"]).validate().is_err());
        assert!(parse(&["--batch", "1001"]).validate().is_err());
        assert!(parse(&["--readers", "0"]).validate().is_err());
        parse(&["--batch", "1", "--readers", "32"])
            .validate()
            .expect("bounds are inclusive");
    }

    #[test]
    fn a_list_work_budget_below_a_hundred_steps_is_refused_naming_the_flag() {
        let err = parse(&["--list-work-budget", "10"])
            .validate()
            .expect_err("too small");
        assert_eq!(
            err.to_string(),
            "invalid configuration --list-work-budget: 10 is below the least budget, 100 steps"
        );
        parse(&["--list-work-budget", "100"])
            .validate()
            .expect("the least budget");
    }
}
