//! Connecting to NATS the way every casebus process should: a name, optional
//! credentials (a `.creds` file or an NKey seed file), optional TLS trust anchors, bounded
//! connection and request timeouts, unlimited reconnects, and connection events logged.

use std::path::PathBuf;
use std::time::Duration;

use async_nats::{ConnectOptions, Event};

use crate::error::BusError;

/// How to reach NATS.
#[derive(Debug, Clone)]
pub struct ConnectConfig {
    /// One or more server URLs, comma-separated (`nats://127.0.0.1:4222,...`).
    pub url: String,
    /// A `.creds` file (JWT + NKey) for the user, if the server requires one.
    pub credentials_file: Option<PathBuf>,
    /// A file holding the user's NKey seed (`SU...`), for servers that list NKey users
    /// in their config (see `deploy/nats/`). Exclusive with `credentials_file`.
    pub nkey_seed_file: Option<PathBuf>,
    /// PEM CA certificate(s) to trust for the server's TLS certificate, in addition to
    /// the system roots; setting it also requires TLS.
    pub tls_ca_file: Option<PathBuf>,
    /// Client name shown in the server's connection list.
    pub name: String,
    /// Ceiling for the first connection.
    pub connect_timeout: Duration,
}

impl ConnectConfig {
    /// Defaults for `url` and client `name`.
    pub fn new(url: impl Into<String>, name: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            credentials_file: None,
            nkey_seed_file: None,
            tls_ca_file: None,
            name: name.into(),
            connect_timeout: Duration::from_secs(5),
        }
    }
}

/// Connects to NATS.
///
/// # Errors
/// [`BusError::Nats`] naming the URL when no server can be reached, the credentials
/// or seed file cannot be read, or both a credentials file and a seed file are given.
pub async fn connect(config: &ConnectConfig) -> Result<async_nats::Client, BusError> {
    let fail = |source: crate::error::NatsError| BusError::Nats {
        what: format!("connection to {}", config.url),
        source,
    };
    let mut options = ConnectOptions::new()
        .name(&config.name)
        .connection_timeout(config.connect_timeout)
        .max_reconnects(None)
        .event_callback(|event| async move {
            match event {
                Event::Connected => tracing::info!("nats connected"),
                Event::Disconnected => tracing::warn!("nats disconnected; reconnecting"),
                other => tracing::debug!(event = %other, "nats event"),
            }
        });
    if config.credentials_file.is_some() && config.nkey_seed_file.is_some() {
        return Err(fail(
            "give either a credentials file or an nkey seed file, not both".into(),
        ));
    }
    if let Some(path) = &config.credentials_file {
        options = options
            .credentials_file(path)
            .await
            .map_err(|e| fail(Box::new(e)))?;
    }
    if let Some(path) = &config.nkey_seed_file {
        let seed = tokio::fs::read_to_string(path)
            .await
            .map_err(|e| fail(format!("reading nkey seed file {}: {e}", path.display()).into()))?;
        options = options.nkey(seed.trim().to_owned());
    }
    if let Some(path) = &config.tls_ca_file {
        options = options
            .add_root_certificates(path.clone())
            .require_tls(true);
    }
    let addrs: Vec<async_nats::ServerAddr> = config
        .url
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| s.parse::<async_nats::ServerAddr>())
        .collect::<Result<_, _>>()
        .map_err(|e| fail(Box::new(e)))?;
    options.connect(addrs).await.map_err(|e| fail(Box::new(e)))
}
