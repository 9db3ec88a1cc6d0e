//! `RuntimeError`: what can go wrong while a service starts.

use std::path::PathBuf;

/// Errors setting up the runtime of a service.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RuntimeError {
    /// A file named by the configuration could not be read.
    #[error("{what} file {path}")]
    File {
        /// What the file is for (e.g. "TLS certificate").
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A configuration value is invalid.
    #[error("invalid configuration {key}: {reason}")]
    Config {
        /// The flag or environment variable.
        key: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// The gRPC transport refused its configuration.
    #[error("grpc transport")]
    Transport(#[source] tonic::transport::Error),
    /// Binding a listener failed.
    #[error("binding {what} on {addr}")]
    Bind {
        /// The listener.
        what: &'static str,
        /// The address.
        addr: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The metrics registry refused a metric.
    #[error("metrics registry")]
    Metrics(#[source] prometheus::Error),
}
