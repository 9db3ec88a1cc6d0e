//! `AgencyError`: what can stop an agency service from starting or make it stop. Errors
//! of single requests never get here; they become gRPC statuses (see `status`).

use std::path::PathBuf;

use casebus_bus::{AppendError, BusError, ConsumeError, ProvisionError};
use casebus_integrity::{KeyError, RegistryError};
use casebus_runtime::RuntimeError;

/// Errors starting or running an agency service.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AgencyError {
    /// A configuration value is invalid or inconsistent with the others.
    #[error("invalid configuration {key}: {reason}")]
    Config {
        /// The flag.
        key: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// The signing key file could not be loaded.
    #[error("signing key")]
    Key(#[source] KeyError),
    /// A decryption key file could not be loaded.
    #[error("decryption key")]
    DecryptionKey(#[source] casebus_integrity::seal::SealError),
    /// The office registry could not be loaded.
    #[error("office registry")]
    Registry(#[source] RegistryError),
    /// The shared runtime refused its part (TLS files, listeners, metrics, serving).
    #[error("service runtime")]
    Runtime(#[from] RuntimeError),
    /// NATS could not be reached, or the streams are missing.
    #[error("nats")]
    Bus(#[source] BusError),
    /// Provisioning the streams failed.
    #[error("provisioning the streams")]
    Provision(#[source] ProvisionError),
    /// The signing key is not registered for the office (its events would be
    /// dead-lettered everywhere).
    #[error("signing key not usable")]
    Signer(#[source] AppendError),
    /// The durable consumer of automatic receipts could not run.
    #[error("durable consumer {consumer}")]
    Consumer {
        /// The consumer.
        consumer: String,
        /// What failed.
        #[source]
        source: ConsumeError,
    },
    /// The SIGHUP listener (key reload) could not be installed.
    #[error("installing the sighup listener")]
    Signal(#[source] std::io::Error),
    /// The registration as a NATS service was refused.
    #[error("nats service registration")]
    Register(#[source] BusError),
    /// The ready file could not be written.
    #[error("ready file {path}")]
    ReadyFile {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
}
