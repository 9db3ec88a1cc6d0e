//! What every command may need, obtained lazily from the global flags: the NATS
//! connection (only commands that talk to NATS connect), the office registry (only
//! commands that verify load it), the bus and the operator operations.

use std::path::Path;
use std::sync::Arc;

use casebus_bus::ops::Ops;
use casebus_bus::{Bus, BusConfig, BusError, Client, ConnectConfig, connect};
use casebus_integrity::OfficeRegistry;

use crate::cli::GlobalArgs;
use crate::error::CliError;
use crate::output::Output;

/// The global flags and output settings of one run.
#[derive(Debug)]
pub struct Ctx {
    /// The global flags.
    pub global: GlobalArgs,
    /// Where results go.
    pub out: Output,
}

impl Ctx {
    /// The context of a run.
    pub fn new(global: GlobalArgs) -> Self {
        let out = Output::new(global.json, global.quiet);
        Self { global, out }
    }

    /// Connects to NATS.
    ///
    /// # Errors
    /// A runtime error naming the URL when no server answers.
    pub async fn client(&self) -> Result<Client, CliError> {
        let mut config = ConnectConfig::new(self.global.nats_url.clone(), "casebus-cli");
        config.credentials_file = self.global.nats_creds.clone();
        config.nkey_seed_file = self.global.nats_nkey_seed.clone();
        config.tls_ca_file = self.global.nats_tls_ca.clone();
        config.inbox_prefix = self.global.nats_inbox_prefix.clone();
        connect(&config).await.map_err(|e| {
            CliError::caused(format!("cannot reach NATS at {}", self.global.nats_url), e)
        })
    }

    /// Operator operations on a fresh connection.
    ///
    /// # Errors
    /// As [`Ctx::client`].
    pub async fn ops(&self) -> Result<Ops, CliError> {
        Ok(Ops::new(self.client().await?, &BusConfig::default()))
    }

    /// The path of the registry, required for `what`.
    ///
    /// # Errors
    /// A usage error when no `--registry` was given.
    pub fn registry_path(&self, what: &str) -> Result<&Path, CliError> {
        self.global.registry.as_deref().ok_or_else(|| {
            CliError::usage(format!(
                "--registry (or CASEBUS_REGISTRY) is required {what}"
            ))
        })
    }

    /// The office registry, required for `what`.
    ///
    /// # Errors
    /// A usage error when no `--registry` was given; a runtime error when it cannot be
    /// read or is invalid.
    pub fn registry(&self, what: &str) -> Result<Arc<OfficeRegistry>, CliError> {
        let path = self.registry_path(what)?;
        load_registry(path).map(Arc::new)
    }

    /// The office registry if one was given.
    ///
    /// # Errors
    /// A runtime error when the file given cannot be read or is invalid.
    pub fn optional_registry(&self) -> Result<Option<Arc<OfficeRegistry>>, CliError> {
        self.global
            .registry
            .as_deref()
            .map(|p| load_registry(p).map(Arc::new))
            .transpose()
    }

    /// The bus, verifying with `registry`.
    ///
    /// # Errors
    /// A runtime error when NATS is unreachable or the streams are not provisioned.
    pub async fn bus(&self, registry: Arc<OfficeRegistry>) -> Result<Bus, CliError> {
        let client = self.client().await?;
        Bus::open(client, registry, BusConfig::default())
            .await
            .map_err(|e| match e {
                BusError::StreamMissing { .. } => CliError::runtime(e.to_string()),
                other => CliError::from_source(other),
            })
    }
}

/// Loads a registry file.
///
/// # Errors
/// A runtime error naming the file.
pub fn load_registry(path: &Path) -> Result<OfficeRegistry, CliError> {
    OfficeRegistry::load(path).map_err(CliError::from_source)
}
