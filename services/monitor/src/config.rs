//! `Config`: every setting of `casebus-monitor`, as flags with environment variables
//! (`CASEBUS_MONITOR_*`, or the shared `CASEBUS_*` names of the runtime groups). Parsed
//! once in `main`; secrets (tokens) arrive as file paths.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use casebus_runtime::args::{MetricsArgs, NatsArgs, ProcessArgs, humantime_duration};
use casebus_runtime::clocks::ClockArgs;
use casebus_runtime::registry::RegistryArgs;

/// The monitor's command line.
#[derive(Debug, Clone, clap::Parser)]
#[command(
    name = "casebus-monitor",
    version,
    about = "The casebus monitoring dashboard for administrators: throughput per agency, consumer \
lag, stream size and growth, dead letters, verification failures, overdue hand-offs and the \
health of every service, live in the browser and as JSON.",
    long_about = None,
    after_help = "Administrators sign in with a bearer token for the monitor carrying the admin role \
(casebus token issue --audience monitor --roles admin ...), sent as `Authorization: Bearer <token>` or entered once on the sign-in \
page, which keeps it in an HttpOnly cookie. The monitor reads NATS and the gateway; it writes \
nothing to the streams."
)]
pub struct Config {
    /// Address of the dashboard and its JSON API.
    #[arg(
        long,
        env = "CASEBUS_MONITOR_LISTEN",
        default_value = "127.0.0.1:8080",
        value_name = "ADDR"
    )]
    pub listen: SocketAddr,
    /// Trust file of token issuer public keys; administrators' tokens must be signed by
    /// one of them and carry the `admin` role.
    #[arg(long = "trusted-issuers", env = "CASEBUS_TRUSTED_ISSUERS")]
    pub trusted_issuers: PathBuf,
    /// The query gateway (`http://host:port`, or `https://` with --gateway-tls-ca), read
    /// for overdue hand-offs. Without it they are folded from the CASES stream.
    #[arg(long = "gateway-url", env = "CASEBUS_MONITOR_GATEWAY_URL")]
    pub gateway_url: Option<String>,
    /// File holding the bearer token (audience `gateway`, role `admin`) the monitor reads
    /// the gateway with; read again before every refresh, so it can be renewed in place.
    #[arg(
        long = "gateway-token-file",
        env = "CASEBUS_MONITOR_GATEWAY_TOKEN_FILE",
        requires = "gateway_url"
    )]
    pub gateway_token_file: Option<PathBuf>,
    /// PEM CA certificate(s) the gateway's TLS certificate is checked against.
    #[arg(long = "gateway-tls-ca", env = "CASEBUS_MONITOR_GATEWAY_TLS_CA")]
    pub gateway_tls_ca: Option<PathBuf>,
    /// How often the overdue hand-offs are read from the gateway.
    #[arg(long = "gateway-interval", env = "CASEBUS_MONITOR_GATEWAY_INTERVAL", default_value = "15s", value_parser = humantime_duration)]
    pub gateway_interval: Duration,
    /// How often streams, consumers and services are sampled.
    #[arg(long, env = "CASEBUS_MONITOR_REFRESH", default_value = "5s", value_parser = humantime_duration)]
    pub refresh: Duration,
    /// Dead letters read back from CASES_DLQ at start (the newest ones).
    #[arg(
        long = "dlq-backlog",
        env = "CASEBUS_MONITOR_DLQ_BACKLOG",
        default_value_t = 1000
    )]
    pub dlq_backlog: u64,
    /// How long to collect `$SRV` answers of the services on each refresh.
    #[arg(long = "discovery-window", env = "CASEBUS_MONITOR_DISCOVERY_WINDOW", default_value = "750ms", value_parser = humantime_duration)]
    pub discovery_window: Duration,
    /// Mark the sign-in cookie `Secure`: set it when the dashboard is served over HTTPS
    /// (behind a TLS-terminating proxy), so the browser never sends it in clear.
    #[arg(long = "secure-cookie", env = "CASEBUS_MONITOR_SECURE_COOKIE")]
    pub secure_cookie: bool,
    /// File to write once serving: JSON with the bound dashboard and metrics addresses
    /// (useful with port 0). Removed at shutdown.
    #[arg(long = "ready-file", env = "CASEBUS_MONITOR_READY_FILE")]
    pub ready_file: Option<PathBuf>,
    /// The office registry every event's signature is verified with before it is
    /// counted: throughput is attributed from verified content, never from a message's
    /// unsigned headers. Reloaded on change and on SIGHUP.
    #[command(flatten)]
    pub registry: RegistryArgs,
    /// Deadline rules and holiday calendar the hand-offs' legal clocks are counted with
    /// when the monitor folds the stream itself (without a gateway).
    #[command(flatten)]
    pub clocks: ClockArgs,
    /// NATS connection.
    #[command(flatten)]
    pub nats: NatsArgs,
    /// Metrics and health endpoint.
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
    /// A message naming the flag and what is wrong.
    pub fn validate(&self) -> Result<(), String> {
        if self.gateway_url.is_some() && self.gateway_token_file.is_none() {
            return Err(
                "--gateway-url needs --gateway-token-file (a token with the admin role)".into(),
            );
        }
        if let Some(url) = &self.gateway_url
            && !(url.starts_with("http://") || url.starts_with("https://"))
        {
            return Err(format!(
                "--gateway-url {url:?} must start with http:// or https://"
            ));
        }
        for (flag, d) in [
            ("--refresh", self.refresh),
            ("--gateway-interval", self.gateway_interval),
            ("--discovery-window", self.discovery_window),
        ] {
            if d < Duration::from_millis(100) || d > Duration::from_secs(3600) {
                return Err(format!("{flag} must be between 100ms and 1h"));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser as _;

    use super::*;

    fn parse(extra: &[&str]) -> Result<Config, String> {
        let mut args = vec![
            "casebus-monitor",
            "--trusted-issuers",
            "trust.toml",
            "--registry",
            "registry.toml",
        ];
        args.extend_from_slice(extra);
        let config = Config::try_parse_from(args).map_err(|e| e.to_string())?;
        config.validate()?;
        Ok(config)
    }

    #[test]
    fn defaults_listen_on_loopback_without_a_gateway() {
        let config = parse(&[]).expect("valid");
        assert_eq!(config.listen.to_string(), "127.0.0.1:8080");
        assert!(config.gateway_url.is_none());
        assert!(!config.secure_cookie);
    }

    #[test]
    fn a_gateway_needs_a_token_file_and_an_http_url() {
        assert!(parse(&["--gateway-url", "http://127.0.0.1:1"]).is_err());
        assert!(parse(&["--gateway-url", "127.0.0.1:1", "--gateway-token-file", "t"]).is_err());
        parse(&[
            "--gateway-url",
            "http://127.0.0.1:1",
            "--gateway-token-file",
            "t",
        ])
        .expect("valid");
        assert!(parse(&["--refresh", "1ms"]).is_err());
    }
}
