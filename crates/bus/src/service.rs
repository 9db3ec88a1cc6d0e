//! Registration as a NATS micro-service, so `$SRV.PING`, `$SRV.INFO` and `$SRV.STATS`
//! discover every casebus process with its name, version, office and counters. The one
//! endpoint, `casebus.status.<service name>`, answers with the same counters as JSON;
//! instances of one service share it (a request reaches one of them).

use std::collections::HashMap;
use std::sync::Arc;

use async_nats::service::ServiceExt as _;
use futures::StreamExt as _;
use tokio_util::sync::CancellationToken;

use crate::error::BusError;

/// What a process says about itself.
#[derive(Debug, Clone)]
pub struct ServiceInfo {
    /// Service name (`[A-Za-z0-9_-]`), e.g. `casebus-customs`.
    pub name: String,
    /// Semantic version.
    pub version: String,
    /// One sentence.
    pub description: String,
    /// Extra metadata shown in `$SRV.INFO` (office, started_at, grpc address, ...).
    pub metadata: HashMap<String, String>,
}

/// Produces the custom statistics attached to `$SRV.STATS` and the `status` endpoint.
pub type StatsFn = Arc<dyn Fn() -> serde_json::Value + Send + Sync>;

/// Registers the service and answers its `status` endpoint until `shutdown`.
///
/// # Errors
/// [`BusError::Nats`] when the registration is refused.
pub async fn register(
    client: async_nats::Client,
    info: ServiceInfo,
    stats: StatsFn,
    shutdown: CancellationToken,
) -> Result<tokio::task::JoinHandle<()>, BusError> {
    let handler_stats = stats.clone();
    let service = client
        .service_builder()
        .description(&info.description)
        .metadata(info.metadata.clone())
        .stats_handler(move |_endpoint, _stats| handler_stats())
        .start(&info.name, &info.version)
        .await
        .map_err(|source| BusError::Nats {
            what: format!("service registration of {}", info.name),
            source,
        })?;
    let mut status = service
        .group("casebus.status")
        .endpoint(&info.name)
        .await
        .map_err(|source| BusError::Nats {
            what: format!("status endpoint of {}", info.name),
            source,
        })?;
    let name = info.name.clone();
    Ok(tokio::spawn(async move {
        loop {
            tokio::select! {
                () = shutdown.cancelled() => break,
                request = status.next() => {
                    let Some(request) = request else { break };
                    let body = serde_json::to_vec(&stats()).unwrap_or_default();
                    if let Err(e) = request.respond(Ok(body.into())).await {
                        tracing::warn!(service = %name, error = %e, "status reply failed");
                    }
                }
            }
        }
        if let Err(e) = service.stop().await {
            tracing::warn!(service = %name, error = %e, "service deregistration failed");
        }
    }))
}
