//! A gRPC client of the gateway's proof RPCs with a bearer token from a file, over
//! plain HTTP/2 or TLS with a given CA: what `casebus witness` and `casebus export
//! --gateway` read proofs with. It owns no retries; callers decide what a failed call
//! means.

use std::path::Path;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};

use casebus_proto::gateway::v1::gateway_client::GatewayClient;

use crate::error::CliError;

/// Adds the bearer token to every call.
#[derive(Clone)]
pub struct Bearer(Arc<RwLock<Option<MetadataValue<Ascii>>>>);

impl Interceptor for Bearer {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(value) = self.0.read().unwrap_or_else(|p| p.into_inner()).clone() {
            request.metadata_mut().insert("authorization", value);
        }
        Ok(request)
    }
}

/// The gateway client.
pub type Client = GatewayClient<InterceptedService<Channel, Bearer>>;

/// A lazily connecting client of `gateway` (`http://` or `https://`) sending the token
/// in `token_file`; an https gateway needs `tls_ca`.
///
/// # Errors
/// A usage error naming the flag (`--gateway`, `--gateway-token-file`) at fault.
pub fn connect(
    gateway: &str,
    token_file: &Path,
    tls_ca: Option<&Path>,
) -> Result<Client, CliError> {
    let bad = |reason: String| CliError::usage(format!("--gateway {gateway}: {reason}"));
    let token = std::fs::read_to_string(token_file).map_err(|e| {
        CliError::usage(format!(
            "--gateway-token-file {}: {e}",
            token_file.display()
        ))
    })?;
    let value: MetadataValue<Ascii> = format!("Bearer {}", token.trim())
        .parse()
        .map_err(|_| CliError::usage("--gateway-token-file: the token is not ASCII"))?;
    let mut endpoint = Endpoint::from_shared(gateway.to_owned())
        .map_err(|e| bad(e.to_string()))?
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(10));
    if gateway.starts_with("https://") {
        let ca = tls_ca.ok_or_else(|| bad("an https gateway needs --gateway-tls-ca".into()))?;
        let pem = std::fs::read(ca).map_err(|e| bad(format!("{}: {e}", ca.display())))?;
        endpoint = endpoint
            .tls_config(ClientTlsConfig::new().ca_certificate(Certificate::from_pem(pem)))
            .map_err(|e| bad(e.to_string()))?;
    }
    Ok(GatewayClient::with_interceptor(
        endpoint.connect_lazy(),
        Bearer(Arc::new(RwLock::new(Some(value)))),
    ))
}
