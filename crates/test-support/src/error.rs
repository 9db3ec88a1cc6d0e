//! The harness error type, [`HarnessError`].

use std::path::PathBuf;
use std::process::ExitStatus;
use std::time::Duration;

/// A boxed error from a client library, kept as the source of [`HarnessError::Nats`].
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Why starting, stopping or probing a test server failed.
#[derive(Debug, thiserror::Error)]
pub enum HarnessError {
    /// No `nats-server` executable was found; the message carries the install hint.
    #[error("nats-server binary not found (looked at: {}); {}", format_paths(.searched), crate::INSTALL_HINT)]
    BinaryNotFound {
        /// Every path that was tried, in order.
        searched: Vec<PathBuf>,
    },

    /// A file system or process operation failed.
    #[error("{context}: {source}")]
    Io {
        /// What the harness was doing.
        context: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },

    /// The server process exited while the harness waited for it to become ready.
    #[error("nats-server (pid {pid}) exited during startup with {status}; its output:\n{output}")]
    Exited {
        /// Process id of the server that died.
        pid: u32,
        /// How it exited.
        status: ExitStatus,
        /// The tail of what it wrote to stdout and stderr.
        output: String,
    },

    /// A condition did not hold before its deadline.
    #[error("timed out after {after:?} waiting for {what}")]
    Timeout {
        /// What was awaited, in words.
        what: String,
        /// The deadline that passed.
        after: Duration,
    },

    /// The server was still starting when its deadline passed; the message carries its output.
    #[error("timed out after {after:?} waiting for {what}; nats-server output:\n{output}")]
    NotReady {
        /// What was awaited, in words.
        what: String,
        /// The deadline that passed.
        after: Duration,
        /// The tail of what the server wrote to stdout and stderr.
        output: String,
    },

    /// An operation needs a running server and the process is stopped.
    #[error("nats-server is not running (last pid {pid}); call restart() first")]
    NotRunning {
        /// Process id of the last process.
        pid: u32,
    },

    /// `restart` was called while the process still runs.
    #[error("nats-server (pid {pid}) is still running; kill_hard() or stop() it before restart()")]
    StillRunning {
        /// Process id of the running process.
        pid: u32,
    },

    /// The harness was asked for something it cannot build, such as a cluster of zero nodes.
    #[error("invalid harness request: {0}")]
    Invalid(String),

    /// A NATS client call failed.
    #[error("{context}: {source}")]
    Nats {
        /// What the harness was doing.
        context: String,
        /// The client error.
        #[source]
        source: BoxError,
    },
}

impl HarnessError {
    /// Wraps an I/O error with what the harness was doing.
    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Self::Io {
            context: context.into(),
            source,
        }
    }

    /// Wraps a client error with what the harness was doing.
    pub(crate) fn nats(context: impl Into<String>, source: impl Into<BoxError>) -> Self {
        Self::Nats {
            context: context.into(),
            source: source.into(),
        }
    }
}

fn format_paths(paths: &[PathBuf]) -> String {
    if paths.is_empty() {
        return "nothing".to_owned();
    }
    paths
        .iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(", ")
}
