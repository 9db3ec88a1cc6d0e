//! Configuration groups shared by every service, to `#[command(flatten)]` into each
//! service's `Config`. Every flag has an environment variable; secrets arrive as file
//! paths and never appear in `Debug` output beyond the path.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use casebus_bus::{BusConfig, ConnectConfig};

/// How to reach NATS.
#[derive(Debug, Clone, clap::Args)]
pub struct NatsArgs {
    /// NATS server URL(s), comma-separated.
    #[arg(
        long = "nats-url",
        env = "CASEBUS_NATS_URL",
        default_value = "nats://127.0.0.1:4222"
    )]
    pub url: String,
    /// NATS credentials file (.creds) of this service's user, if the server needs one.
    #[arg(long = "nats-creds", env = "CASEBUS_NATS_CREDS")]
    pub creds: Option<PathBuf>,
    /// File holding this service's NKey seed (`SU...`), for servers that list NKey users
    /// (deploy/nats/); instead of --nats-creds.
    #[arg(
        long = "nats-nkey-seed",
        env = "CASEBUS_NATS_NKEY_SEED",
        conflicts_with = "creds"
    )]
    pub nkey_seed: Option<PathBuf>,
    /// PEM CA certificate(s) the NATS server's TLS certificate is checked against (besides
    /// the system roots); setting it requires TLS.
    #[arg(long = "nats-tls-ca", env = "CASEBUS_NATS_TLS_CA")]
    pub tls_ca: Option<PathBuf>,
    /// Prefix of the subjects this service receives its NATS replies on (e.g.
    /// `_INBOX_customs`); the deployment's users file lets each user subscribe only under
    /// its own prefix, so no other user can read its replies. Default: `_INBOX`.
    #[arg(
        long = "nats-inbox-prefix",
        env = "CASEBUS_NATS_INBOX_PREFIX",
        value_parser = casebus_bus::check_inbox_prefix
    )]
    pub inbox_prefix: Option<String>,
    /// Publishes awaiting their JetStream ack at once (backpressure beyond).
    #[arg(
        long = "nats-max-ack-inflight",
        env = "CASEBUS_NATS_MAX_ACK_INFLIGHT",
        default_value_t = 1024
    )]
    pub max_ack_inflight: usize,
    /// Ceiling for one JetStream request or publish acknowledgement; a command whose
    /// append is not confirmed within it fails with UNAVAILABLE (retry with the same
    /// request id).
    #[arg(long = "nats-request-timeout", env = "CASEBUS_NATS_REQUEST_TIMEOUT", default_value = "5s", value_parser = humantime_duration)]
    pub request_timeout: Duration,
    /// How far an event's recorded_at may be from the time the stream stored it; an
    /// event beyond it is dead-lettered (code clock_skew) and left out of every case
    /// loaded. Keep the same value on every service.
    #[arg(long = "max-clock-skew", env = "CASEBUS_MAX_CLOCK_SKEW", default_value = "5m", value_parser = humantime_duration)]
    pub max_clock_skew: Duration,
}

impl NatsArgs {
    /// The connection settings for client `name`.
    pub fn connect_config(&self, name: &str) -> ConnectConfig {
        let mut config = ConnectConfig::new(self.url.clone(), name);
        config.credentials_file = self.creds.clone();
        config.nkey_seed_file = self.nkey_seed.clone();
        config.tls_ca_file = self.tls_ca.clone();
        config.inbox_prefix = self.inbox_prefix.clone();
        config
    }

    /// How the bus uses the connection: ack window and request ceiling.
    pub fn bus_config(&self) -> BusConfig {
        BusConfig {
            max_ack_inflight: self.max_ack_inflight,
            request_timeout: self.request_timeout,
            max_clock_skew: self.max_clock_skew,
        }
    }
}

/// The gRPC listener and its security.
#[derive(Debug, Clone, clap::Args)]
pub struct GrpcArgs {
    /// Address the gRPC server listens on.
    #[arg(
        id = "grpc_listen",
        long = "grpc-listen",
        value_name = "ADDR",
        env = "CASEBUS_GRPC_LISTEN",
        default_value = "127.0.0.1:50051"
    )]
    pub listen: SocketAddr,
    /// PEM certificate chain of this server (enables TLS).
    #[arg(long = "tls-cert", env = "CASEBUS_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of this server.
    #[arg(long = "tls-key", env = "CASEBUS_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// PEM CA certificate(s) whose client certificates are accepted; the certificate's
    /// common name must be the caller's office id (e.g. `customs:ningbo`).
    #[arg(long = "client-ca", env = "CASEBUS_CLIENT_CA", requires = "tls_cert")]
    pub client_ca: Option<PathBuf>,
    /// Trust file of token issuers: per `[[issuer]]` its `key_id`, `public_key`, the
    /// `offices` (patterns such as `customs:*`) and `roles` it may sign for, optionally
    /// `audiences` and `max_ttl`.
    #[arg(long = "trusted-issuers", env = "CASEBUS_TRUSTED_ISSUERS")]
    pub trusted_issuers: Option<PathBuf>,
    /// File of revoked token ids, one a line (`#` comments); checked on every call and
    /// reloaded within a second of a change.
    #[arg(long = "revoked-tokens", env = "CASEBUS_REVOKED_TOKENS")]
    pub revoked_tokens: Option<PathBuf>,
    /// Accept bearer tokens over plaintext gRPC on a non-loopback address (only behind a
    /// TLS-terminating proxy); without it such tokens are refused, since they would cross
    /// the network in clear.
    #[arg(
        long = "allow-plaintext-tokens",
        env = "CASEBUS_ALLOW_PLAINTEXT_TOKENS"
    )]
    pub allow_plaintext_tokens: bool,
    /// Serve gRPC server reflection (`true` or `false`), which lists every method and
    /// message without credentials: convenient with grpcurl locally; production
    /// deployments turn it off.
    #[arg(
        long = "grpc-reflection",
        env = "CASEBUS_GRPC_REFLECTION",
        default_value_t = true,
        action = clap::ArgAction::Set,
        value_name = "BOOL"
    )]
    pub reflection: bool,
}

/// Metrics and health over HTTP.
#[derive(Debug, Clone, clap::Args)]
pub struct MetricsArgs {
    /// Address of the HTTP endpoint serving `/metrics`, `/healthz` and `/readyz`.
    #[arg(
        id = "metrics_listen",
        long = "metrics-listen",
        value_name = "ADDR",
        env = "CASEBUS_METRICS_LISTEN",
        default_value = "127.0.0.1:9464"
    )]
    pub listen: SocketAddr,
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines (local use).
    Text,
    /// One JSON object per line (production).
    Json,
}

/// Logging and shutdown.
#[derive(Debug, Clone, clap::Args)]
pub struct ProcessArgs {
    /// Log format; the level comes from RUST_LOG (default `info`).
    #[arg(
        long = "log-format",
        env = "CASEBUS_LOG_FORMAT",
        value_enum,
        default_value = "text"
    )]
    pub log_format: LogFormat,
    /// How long in-flight work may take to finish after SIGTERM.
    #[arg(long = "shutdown-grace", env = "CASEBUS_SHUTDOWN_GRACE", default_value = "10s", value_parser = humantime_duration)]
    pub shutdown_grace: Duration,
}

/// Parses `10s`, `2m`, `1h 30m` (humantime syntax).
///
/// # Errors
/// A message naming the value when it is not a duration.
pub fn humantime_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s)
        .map_err(|e| format!("{s:?} is not a duration like 10s, 2m or 1h30m: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_in_the_documented_forms() {
        assert_eq!(humantime_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(humantime_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(humantime_duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert!(humantime_duration("soon").is_err());
        assert!(humantime_duration("").is_err());
    }
}
