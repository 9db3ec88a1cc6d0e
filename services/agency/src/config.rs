//! `AgencyConfig`: the configuration every agency binary parses once in `main`. The five
//! binaries share it, so its environment variables carry no service name
//! (`CASEBUS_OFFICE`, not `CASEBUS_CUSTOMS_OFFICE`): one office's service is configured
//! the same way whatever its agency.

use std::path::PathBuf;

use clap::{CommandFactory as _, FromArgMatches as _};

use casebus_proto::{OfficeId, agency_name};
use casebus_runtime::args::{GrpcArgs, MetricsArgs, NatsArgs, ProcessArgs};
use casebus_runtime::clocks::ClockArgs;

use crate::agencies::AgencyApi;

/// Configuration of an agency service. Every flag has an environment variable; secrets
/// (signing key, TLS key, NATS credentials) arrive as file paths.
#[derive(Debug, Clone, clap::Parser)]
#[command(version)]
pub struct AgencyConfig {
    /// The office this service records for, `<agency>:<code>` (e.g. `customs:ningbo`).
    /// It signs every event with this office's key and serves only callers of this
    /// office.
    #[arg(long, env = "CASEBUS_OFFICE")]
    pub office: OfficeId,
    /// The office's secret signing key file (TOML with key_id, office_id, secret_key;
    /// mode 0600). Reloaded without a restart on SIGHUP or when the file changes (see
    /// --key-reload-interval); the new key must be in the registry by then.
    #[arg(long = "signing-key", env = "CASEBUS_SIGNING_KEY")]
    pub signing_key: PathBuf,
    /// The office's secret encryption key files (`casebus keys generate --kind
    /// encryption`, mode 0600), current and retired; repeat the flag, or separate paths
    /// with commas in the variable. Given, the service seals every restricted event
    /// (LISTED_AGENCIES, ORIGIN_ONLY) for the offices that may read it; one of the keys
    /// must be registered as the office's encryption key. Without it, an office that
    /// has an encryption key registered cannot record restricted events (FAILED_PRECONDITION),
    /// and one that has none records them in clear (docs/CONFIDENTIALITY.md).
    #[arg(
        long = "decryption-key",
        env = "CASEBUS_DECRYPTION_KEYS",
        value_delimiter = ','
    )]
    pub decryption_keys: Vec<PathBuf>,
    /// The office registry file (TOML): every office and its public keys, used to verify
    /// what other offices signed. Reloaded without a restart on SIGHUP or when the file
    /// changes.
    #[arg(long, env = "CASEBUS_REGISTRY")]
    pub registry: PathBuf,
    /// How often the registry and signing key files are checked for a change (their
    /// modification time, length and inode); a changed file is reloaded, and so is
    /// everything on SIGHUP. A command is refused (UNAVAILABLE, reason
    /// signing_key_not_valid) while the signing key is not valid.
    #[arg(
        long = "key-reload-interval",
        env = "CASEBUS_KEY_RELOAD_INTERVAL",
        default_value = "5s",
        value_parser = casebus_runtime::args::humantime_duration
    )]
    pub key_reload_interval: std::time::Duration,
    /// Deadline rules and holiday calendar.
    #[command(flatten)]
    pub clocks: ClockArgs,
    /// Name of the durable consumer that issues automatic receipts; every instance of
    /// this office's service must use the same one. Default: `svc-<agency>-<code>`.
    #[arg(long, env = "CASEBUS_CONSUMER")]
    pub consumer: Option<String>,
    /// Memory for the cache of case heads the service appends with, in MiB. It is an
    /// estimate: a cached case counts its events' encoded size plus a fixed overhead
    /// per event. Beyond it arbitrary cases are evicted and read from the stream again
    /// on their next command (`casebus_append_cache_evictions_total`); the size in use
    /// is `casebus_append_cache_bytes`.
    #[arg(
        long = "append-cache-mib",
        env = "CASEBUS_APPEND_CACHE_MIB",
        default_value_t = 64,
        value_parser = clap::value_parser!(u64).range(1..=1_048_576)
    )]
    pub append_cache_mib: u64,
    /// Create (or check and update) the CASES, CASES_DLQ and AUDIT streams at start.
    #[arg(long, env = "CASEBUS_PROVISION")]
    pub provision: bool,
    /// Replicas of the streams created by --provision: 1 (single server) or 3 (cluster).
    #[arg(
        long = "stream-replicas",
        env = "CASEBUS_STREAM_REPLICAS",
        default_value_t = 1
    )]
    pub stream_replicas: usize,
    /// The inbox snapshot file of this instance (docs/STARTUP.md). Given, the service
    /// resumes its inbox from it at start when it verifies against the stream (else it
    /// logs `inbox snapshot refused`, counts `casebus_inbox_snapshot_refused_total`, and
    /// rebuilds from the first message), and writes it (a sibling file, then a rename)
    /// once caught up, every 30 s or 10,000 messages while the inbox moves, and at
    /// shutdown. Without it the inbox is rebuilt from the first message at every start.
    #[arg(long = "inbox-snapshot", env = "CASEBUS_INBOX_SNAPSHOT")]
    pub inbox_snapshot: Option<PathBuf>,
    /// File to write once the service is ready: JSON with the bound gRPC and metrics
    /// addresses (useful with `--grpc-listen 127.0.0.1:0`). Removed at shutdown.
    #[arg(long = "ready-file", env = "CASEBUS_READY_FILE")]
    pub ready_file: Option<PathBuf>,
    /// NATS connection.
    #[command(flatten)]
    pub nats: NatsArgs,
    /// gRPC listener, TLS and caller authentication.
    #[command(flatten)]
    pub grpc: GrpcArgs,
    /// Metrics and health over HTTP.
    #[command(flatten)]
    pub metrics: MetricsArgs,
    /// Logging and shutdown.
    #[command(flatten)]
    pub process: ProcessArgs,
}

impl AgencyConfig {
    /// Parses the command line and environment for the binary of agency `A`, whose name
    /// and description `--help` shows. Exits with usage on bad input, like any clap
    /// parser.
    pub fn parse_for<A: AgencyApi>() -> Self {
        Self::parse_from_for::<A, _, _>(std::env::args_os())
    }

    /// Like [`AgencyConfig::parse_for`], from the given arguments (the first is the
    /// program name).
    pub fn parse_from_for<A, I, T>(args: I) -> Self
    where
        A: AgencyApi,
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        let command = Self::command()
            .name(A::SERVICE_NAME)
            .bin_name(A::SERVICE_NAME)
            .about(A::ABOUT);
        let matches = command.get_matches_from(args);
        Self::from_arg_matches(&matches).unwrap_or_else(|e| e.exit())
    }

    /// The durable consumer name: `--consumer`, or `svc-<agency>-<code>`.
    pub fn consumer_name(&self) -> String {
        self.consumer.clone().unwrap_or_else(|| {
            format!(
                "svc-{}-{}",
                agency_name(self.office.agency()),
                self.office.code()
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use crate::agencies::PublicSecurity;

    use super::*;

    fn parse(extra: &[&str]) -> AgencyConfig {
        let mut args = vec![
            "casebus-public-security",
            "--office",
            "public_security:ningbo",
            "--signing-key",
            "/k",
            "--registry",
            "/r",
        ];
        args.extend_from_slice(extra);
        AgencyConfig::parse_from_for::<PublicSecurity, _, _>(args)
    }

    #[test]
    fn the_consumer_name_defaults_to_the_office_in_one_subject_token() {
        assert_eq!(parse(&[]).consumer_name(), "svc-public_security-ningbo");
        assert_eq!(
            parse(&["--consumer", "svc-police"]).consumer_name(),
            "svc-police"
        );
    }
}
