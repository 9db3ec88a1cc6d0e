//! Starting and stopping the monitor: load the trusted issuers, bind both listeners,
//! connect to NATS, start the collectors and the two HTTP servers (dashboard and
//! metrics), announce the addresses, then on shutdown stop in order: HTTP servers stop
//! accepting, collectors close their read consumers, the NATS connection drains.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use time::OffsetDateTime;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use casebus_bus::ops::Ops;
use casebus_integrity::token::{IssuerError, TrustedIssuers};
use casebus_integrity::{OfficeRegistry, RegistryError};
use casebus_runtime::RuntimeError;
use casebus_runtime::metrics::bind;
use casebus_runtime::shutdown::Hangup;

use crate::collect::{
    OverdueSource, SharedModel, SharedRegistry, discover_services, follow_cases,
    follow_dead_letters, read_overdue, sample_streams,
};
use crate::config::Config;
use crate::metrics::MonitorMetrics;
use crate::model::Model;
use crate::overdue::{GatewayError, GatewayReader, HandoffFold};
use crate::web::{Web, metrics_router, router};

/// How often the page asks for new data at most.
const PAGE_REFRESH: Duration = Duration::from_secs(2);

/// Why the monitor could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RunError {
    /// A setting is invalid.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// The trusted issuers file cannot be loaded.
    #[error("loading the trusted issuers")]
    Issuers(#[source] IssuerError),
    /// The office registry cannot be loaded, or lists no office.
    #[error("loading the office registry")]
    Registry(#[source] RegistryError),
    /// The SIGHUP handler cannot be installed.
    #[error("installing the SIGHUP handler")]
    Signal(#[source] std::io::Error),
    /// A listener or the metrics registry failed.
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    /// NATS cannot be reached.
    #[error("connecting to NATS")]
    Nats(#[source] casebus_bus::BusError),
    /// The gateway settings are unusable.
    #[error(transparent)]
    Gateway(#[from] GatewayError),
    /// The ready file cannot be written.
    #[error("writing the ready file {path}")]
    ReadyFile {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The dashboard server failed.
    #[error("serving the dashboard")]
    Serve(#[source] std::io::Error),
}

fn write_ready_file(path: &Path, http: SocketAddr, metrics: SocketAddr) -> Result<(), RunError> {
    let body = serde_json::json!({
        "service": "casebus-monitor",
        "http": http.to_string(),
        "metrics": metrics.to_string(),
        "pid": std::process::id(),
    });
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let io = |source| RunError::ReadyFile {
        path: path.to_owned(),
        source,
    };
    std::fs::write(&tmp, body.to_string()).map_err(io)?;
    // A rename is atomic: a reader never sees a half-written file.
    std::fs::rename(&tmp, path).map_err(io)
}

/// Runs the monitor described by `config` until `shutdown` is cancelled.
///
/// # Errors
/// Any [`RunError`] of start-up, or [`RunError::Serve`] when the dashboard server fails.
pub async fn run(config: Config, shutdown: CancellationToken) -> Result<(), RunError> {
    config.validate().map_err(RunError::Config)?;
    // A bad rules file or calendar refuses the start, naming the file, line and field.
    let clocks = Arc::new(config.clocks.load()?);
    let issuers = TrustedIssuers::load(&config.trusted_issuers).map_err(RunError::Issuers)?;
    let registry = OfficeRegistry::load(&config.registry.path).map_err(RunError::Registry)?;
    if registry.offices().next().is_none() {
        return Err(RunError::Config(format!(
            "the office registry {} lists no office: no event could be verified",
            config.registry.path.display()
        )));
    }
    let registry: SharedRegistry = Arc::new(RwLock::new(Arc::new(registry)));
    // Installed before anything slow, so that a SIGHUP from then on reloads the
    // registry instead of ending the process.
    let hangup = Hangup::install().map_err(RunError::Signal)?;
    let metrics = MonitorMetrics::new()?;
    let http_listener = bind("dashboard", config.listen).await?;
    let metrics_listener = bind("metrics", config.metrics.listen).await?;
    let http_addr = http_listener.local_addr().map_err(RunError::Serve)?;
    let metrics_addr = metrics_listener.local_addr().map_err(RunError::Serve)?;

    let client = casebus_bus::connect(&config.nats.connect_config("casebus-monitor"))
        .await
        .map_err(RunError::Nats)?;
    let ops = Ops::new(client.clone(), &config.nats.bus_config());
    let model: SharedModel = Arc::new(Mutex::new(Model::new(OffsetDateTime::now_utc())));
    let (overdue, fold) = match (&config.gateway_url, &config.gateway_token_file) {
        (Some(url), Some(token)) => {
            let reader = GatewayReader::new(url, config.gateway_tls_ca.as_deref(), token.clone())?;
            (OverdueSource::Gateway(Box::new(reader)), None)
        }
        _ => {
            let fold = Arc::new(Mutex::new(HandoffFold::new(clocks)));
            (OverdueSource::Fold(fold.clone()), Some(fold))
        }
    };

    let ready = Arc::new(AtomicBool::new(false));
    let tracker = TaskTracker::new();
    tracker.spawn(casebus_runtime::registry::watch(
        config.registry.path.clone(),
        config.registry.reload_interval,
        {
            let registry = registry.clone();
            move |fresh| *registry.write().unwrap_or_else(|p| p.into_inner()) = fresh
        },
        hangup,
        shutdown.clone(),
    ));
    tracker.spawn(follow_cases(
        ops.clone(),
        model.clone(),
        registry,
        fold,
        metrics.clone(),
        shutdown.clone(),
    ));
    tracker.spawn(follow_dead_letters(
        ops.clone(),
        model.clone(),
        config.dlq_backlog,
        metrics.clone(),
        shutdown.clone(),
    ));
    tracker.spawn(sample_streams(
        ops,
        model.clone(),
        config.refresh,
        ready.clone(),
        metrics.clone(),
        shutdown.clone(),
    ));
    tracker.spawn(discover_services(
        client.clone(),
        model.clone(),
        config.refresh,
        config.discovery_window,
        metrics.clone(),
        shutdown.clone(),
    ));
    let overdue_every = if config.gateway_url.is_some() {
        config.gateway_interval
    } else {
        config.refresh
    };
    tracker.spawn(read_overdue(
        overdue,
        model.clone(),
        overdue_every,
        metrics.clone(),
        shutdown.clone(),
    ));
    {
        let router = metrics_router(metrics.clone(), ready.clone());
        let stop = shutdown.clone();
        tracker.spawn(async move {
            let served = axum::serve(metrics_listener, router)
                .with_graceful_shutdown({
                    let stop = stop.clone();
                    async move { stop.cancelled().await }
                })
                .await;
            if let Err(e) = served {
                tracing::error!(error = %e, "metrics endpoint failed");
                stop.cancel();
            }
        });
    }
    let web = Web {
        model,
        issuers: Arc::new(issuers),
        secure_cookie: config.secure_cookie,
        page_refresh_ms: u64::try_from(config.refresh.min(PAGE_REFRESH).as_millis())
            .unwrap_or(2000),
        metrics,
    };
    let server = {
        let stop = shutdown.clone();
        tracker.spawn(async move {
            let result = axum::serve(http_listener, router(web))
                .with_graceful_shutdown({
                    let stop = stop.clone();
                    async move { stop.cancelled().await }
                })
                .await;
            if let Err(e) = &result {
                tracing::error!(error = %e, "dashboard server failed");
                stop.cancel();
            }
            result
        })
    };
    if let Some(path) = &config.ready_file {
        write_ready_file(path, http_addr, metrics_addr)?;
    }
    tracing::info!(dashboard = %http_addr, metrics = %metrics_addr, "monitor serving");

    shutdown.cancelled().await;
    tracing::info!("monitor stopping");
    tracker.close();
    if tokio::time::timeout(config.process.shutdown_grace, tracker.wait())
        .await
        .is_err()
    {
        tracing::warn!("collectors did not stop within the shutdown grace");
    }
    if let Err(e) = client.drain().await {
        tracing::debug!(error = %e, "nats drain failed");
    }
    if let Some(path) = &config.ready_file {
        let _ = std::fs::remove_file(path);
    }
    tracing::info!("monitor stopped");
    if !server.is_finished() {
        return Ok(());
    }
    match server.await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(RunError::Serve(e)),
        Err(e) => Err(RunError::Serve(std::io::Error::other(e))),
    }
}
