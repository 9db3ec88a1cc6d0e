//! Connecting to NATS the way every casebus process should: a name, optional
//! credentials (a `.creds` file or an NKey seed file), optional TLS trust anchors, an
//! optional reply-inbox prefix of the user's own, bounded connection and request
//! timeouts, unlimited reconnects at most [`ConnectConfig::max_reconnect_delay`] apart,
//! and connection events logged.
//!
//! The inbox prefix matters because every reply (JetStream API answers, publish acks,
//! pulled messages, `$SRV` answers) goes to a subject under it: a deployment that gives
//! each NATS user its own prefix, and lets it subscribe only there, keeps one user from
//! reading another's replies (see `deploy/nats/users.conf.in`).

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
    /// Prefix of the subjects this client receives replies on (`_INBOX_customs`);
    /// `None` keeps the NATS default `_INBOX`. A deployment allows each user to subscribe
    /// only under its own prefix. Checked by [`check_inbox_prefix`] on connect.
    pub inbox_prefix: Option<String>,
    /// Ceiling for the first connection.
    pub connect_timeout: Duration,
    /// Longest wait between two reconnect attempts (the waits double from 1 ms up to
    /// it). The client library's own ceiling is 4 s, so a server back after an outage of
    /// a few seconds was found up to 4 s late; the default of 250 ms finds it within a
    /// quarter of a second, for a handful of connection attempts a second per client
    /// while it is away.
    pub max_reconnect_delay: Duration,
}

/// The default of [`ConnectConfig::max_reconnect_delay`].
pub const DEFAULT_MAX_RECONNECT_DELAY: Duration = Duration::from_millis(250);

/// The wait before reconnect attempt `attempts`: none for the first, then 1 ms doubling
/// up to `max`.
fn reconnect_delay(attempts: usize, max: Duration) -> Duration {
    if attempts <= 1 {
        return Duration::ZERO;
    }
    let exponent = u32::try_from(attempts - 2).unwrap_or(u32::MAX).min(32);
    Duration::from_millis(1u64 << exponent).min(max)
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
            inbox_prefix: None,
            connect_timeout: Duration::from_secs(5),
            max_reconnect_delay: DEFAULT_MAX_RECONNECT_DELAY,
        }
    }
}

/// Checks that `prefix` can serve as a reply-inbox prefix: one or more dot-separated
/// tokens of ASCII letters, digits, `_` and `-`, with no wildcard, space or empty token,
/// at most 64 characters. Returns the prefix unchanged, so it can parse a flag.
///
/// # Errors
/// A text naming the prefix and what is wrong with it.
pub fn check_inbox_prefix(prefix: &str) -> Result<String, String> {
    const MAX_LEN: usize = 64;
    let bad = |reason: &str| Err(format!("inbox prefix {prefix:?} {reason}"));
    if prefix.is_empty() {
        return bad("is empty");
    }
    if prefix.len() > MAX_LEN {
        return bad(&format!("is longer than {MAX_LEN} characters"));
    }
    for token in prefix.split('.') {
        if token.is_empty() {
            return bad("has an empty token (a leading, trailing or doubled '.')");
        }
        if let Some(c) = token
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || *c == '_' || *c == '-'))
        {
            return bad(&format!(
                "contains {c:?}; only letters, digits, '_', '-' and '.' between tokens are allowed"
            ));
        }
    }
    Ok(prefix.to_owned())
}

/// Connects to NATS.
///
/// # Errors
/// [`BusError::Nats`] naming the URL when no server can be reached, the credentials
/// or seed file cannot be read, both a credentials file and a seed file are given, or
/// the inbox prefix is malformed (see [`check_inbox_prefix`]).
pub async fn connect(config: &ConnectConfig) -> Result<async_nats::Client, BusError> {
    let fail = |source: crate::error::NatsError| BusError::Nats {
        what: format!("connection to {}", config.url),
        source,
    };
    let mut options = ConnectOptions::new()
        .name(&config.name)
        .connection_timeout(config.connect_timeout)
        .max_reconnects(None)
        .reconnect_delay_callback({
            let max = config.max_reconnect_delay;
            move |attempts| reconnect_delay(attempts, max)
        })
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
    if let Some(prefix) = &config.inbox_prefix {
        check_inbox_prefix(prefix).map_err(|e| fail(e.into()))?;
        options = options.custom_inbox_prefix(prefix.clone());
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

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::{check_inbox_prefix, reconnect_delay};

    #[test]
    fn reconnect_attempts_wait_longer_up_to_the_ceiling() {
        let max = Duration::from_millis(250);
        assert_eq!(reconnect_delay(1, max), Duration::ZERO);
        assert_eq!(reconnect_delay(2, max), Duration::from_millis(1));
        assert_eq!(reconnect_delay(5, max), Duration::from_millis(8));
        assert_eq!(reconnect_delay(20, max), max);
        assert_eq!(reconnect_delay(usize::MAX, max), max);
    }

    #[test]
    fn an_inbox_prefix_is_dot_separated_tokens_without_wildcards() {
        for good in ["_INBOX_customs", "_INBOX.customs", "_INBOX_ip-center", "a"] {
            assert_eq!(check_inbox_prefix(good).as_deref(), Ok(good));
        }
        for (bad, complaint) in [
            ("", "is empty"),
            ("_INBOX.>", "contains '>'"),
            ("_INBOX.*", "contains '*'"),
            ("_INBOX customs", "contains ' '"),
            ("_INBOX.", "empty token"),
            (".x", "empty token"),
            ("a..b", "empty token"),
        ] {
            let error = check_inbox_prefix(bad).expect_err(bad);
            assert!(
                error.contains(complaint) && error.contains(&format!("{bad:?}")),
                "{bad:?}: {error}"
            );
        }
        let long = "x".repeat(65);
        assert!(check_inbox_prefix(&long).is_err_and(|e| e.contains("longer than 64")));
    }
}
