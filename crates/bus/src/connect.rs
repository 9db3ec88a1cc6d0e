//! Connecting to NATS the way every casebus process should: a name, optional
//! credentials file, bounded connection and request timeouts, unlimited reconnects, and
//! connection events logged.

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
            name: name.into(),
            connect_timeout: Duration::from_secs(5),
        }
    }
}

/// Connects to NATS.
///
/// # Errors
/// [`BusError::Nats`] naming the URL when no server can be reached or the credentials
/// file cannot be read.
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
    if let Some(path) = &config.credentials_file {
        options = options
            .credentials_file(path)
            .await
            .map_err(|e| fail(Box::new(e)))?;
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
