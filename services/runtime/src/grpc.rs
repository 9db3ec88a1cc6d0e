//! gRPC serving: TLS from configured files (client certificates optional, so token
//! callers work too), the authenticator, standard health and reflection services, and
//! serving on an already-bound listener until shutdown.

use std::path::Path;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::transport::server::{Router, TcpIncoming};
use tonic::transport::{Certificate, Identity, Server, ServerTlsConfig};

use casebus_integrity::token::{Audience, TrustedIssuers};

use crate::RuntimeError;
use crate::args::GrpcArgs;
use crate::auth::Authenticator;

fn read(what: &'static str, path: &Path) -> Result<Vec<u8>, RuntimeError> {
    std::fs::read(path).map_err(|source| RuntimeError::File {
        what,
        path: path.to_owned(),
        source,
    })
}

/// The TLS configuration of the server, if `--tls-cert` is set.
///
/// # Errors
/// [`RuntimeError::File`] when a certificate or key file cannot be read.
pub fn tls_config(args: &GrpcArgs) -> Result<Option<ServerTlsConfig>, RuntimeError> {
    let (Some(cert), Some(key)) = (&args.tls_cert, &args.tls_key) else {
        return Ok(None);
    };
    let identity = Identity::from_pem(read("TLS certificate", cert)?, read("TLS key", key)?);
    let mut config = ServerTlsConfig::new().identity(identity);
    if let Some(ca) = &args.client_ca {
        config = config
            .client_ca_root(Certificate::from_pem(read("client CA", ca)?))
            // Token callers need no certificate; certificate callers are verified.
            .client_auth_optional(true);
    }
    Ok(Some(config))
}

/// The authenticator for the configured methods, accepting tokens for `audience`.
///
/// Bearer tokens are refused when the listener is plaintext on an address other than
/// loopback, unless `--allow-plaintext-tokens` says a TLS proxy is in front.
///
/// # Errors
/// [`RuntimeError::Config`] when neither tokens nor client certificates are configured
/// (every call must be authenticated), or the trust file or revocation list is invalid.
pub fn authenticator(args: &GrpcArgs, audience: Audience) -> Result<Authenticator, RuntimeError> {
    let issuers = match &args.trusted_issuers {
        Some(path) => Some(
            TrustedIssuers::load(path).map_err(|e| RuntimeError::Config {
                key: "--trusted-issuers",
                reason: e.to_string(),
            })?,
        ),
        None => None,
    };
    let mut auth = Authenticator::new(audience, issuers, args.client_ca.is_some());
    if let Some(path) = &args.revoked_tokens {
        auth = auth.with_revocation_list(path)?;
    }
    if args.tls_cert.is_none() && !args.listen.ip().is_loopback() && !args.allow_plaintext_tokens {
        tracing::warn!(listen = %args.listen, "plaintext gRPC on a non-loopback address: bearer tokens are refused");
        auth = auth.refuse_tokens(&format!(
            "bearer tokens are refused over plaintext gRPC on {}: the server must serve TLS (--tls-cert), or run behind a TLS proxy with --allow-plaintext-tokens",
            args.listen
        ));
    }
    if !auth.is_configured() {
        return Err(RuntimeError::Config {
            key: "--trusted-issuers / --client-ca",
            reason: "every call must be authenticated: configure token issuers, client certificates, or both".into(),
        });
    }
    Ok(auth)
}

/// A server builder with TLS applied.
///
/// # Errors
/// [`RuntimeError::Transport`] when tonic refuses the TLS configuration.
pub fn server(args: &GrpcArgs) -> Result<Server, RuntimeError> {
    let mut server = Server::builder();
    if let Some(tls) = tls_config(args)? {
        server = server.tls_config(tls).map_err(RuntimeError::Transport)?;
    }
    Ok(server)
}

/// The standard reflection service over every casebus proto, if `--grpc-reflection` is
/// on (health is always served: callers and orchestrators probe it without credentials,
/// as the gRPC convention expects).
///
/// # Errors
/// [`RuntimeError::Config`] when the descriptor set is unusable (a build problem).
pub fn reflection_if_enabled(
    args: &GrpcArgs,
) -> Result<
    Option<
        tonic_reflection::server::v1::ServerReflectionServer<
            impl tonic_reflection::server::v1::ServerReflection,
        >,
    >,
    RuntimeError,
> {
    if args.reflection {
        reflection().map(Some)
    } else {
        Ok(None)
    }
}

/// The standard reflection service over every casebus proto.
///
/// # Errors
/// [`RuntimeError::Config`] when the descriptor set is unusable (a build problem).
pub fn reflection() -> Result<
    tonic_reflection::server::v1::ServerReflectionServer<
        impl tonic_reflection::server::v1::ServerReflection,
    >,
    RuntimeError,
> {
    tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(casebus_proto::FILE_DESCRIPTOR_SET)
        .build_v1()
        .map_err(|e| RuntimeError::Config {
            key: "reflection",
            reason: e.to_string(),
        })
}

/// Serves `router` on `listener` until `shutdown`; in-flight calls finish first.
///
/// # Errors
/// [`RuntimeError::Transport`] when the server fails.
pub async fn serve<L>(
    router: Router<L>,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> Result<(), RuntimeError>
where
    L: tower::Layer<tonic::service::Routes> + Clone,
    L::Service: tower::Service<
            http::Request<tonic::body::Body>,
            Response = http::Response<tonic::body::Body>,
        > + Clone
        + Send
        + 'static,
    <L::Service as tower::Service<http::Request<tonic::body::Body>>>::Future: Send + 'static,
    <L::Service as tower::Service<http::Request<tonic::body::Body>>>::Error:
        Into<Box<dyn std::error::Error + Send + Sync>> + Send,
{
    // TCP_NODELAY, as tonic sets it when it binds the address itself (it ignores its
    // own setting for an incoming stream handed to it). With Nagle's algorithm on, a
    // small write (one event of a watch stream, the trailers of an answer) waits for
    // the peer's delayed ack of the previous one: tens of milliseconds each time.
    let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
    router
        .serve_with_incoming_shutdown(incoming, async move { shutdown.cancelled().await })
        .await
        .map_err(RuntimeError::Transport)
}
