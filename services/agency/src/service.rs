//! `Service`: an agency service's life. [`Service::start`] loads the files (signing key,
//! office registry, deadline rules, TLS), connects to NATS (provisioning the streams if
//! asked), and binds the gRPC and metrics listeners, so every configuration mistake
//! surfaces before anything runs. [`Service::run`] then serves until shutdown:
//!
//! - gRPC: the common `AgencyService` and the agency's own service (both authenticated),
//!   standard health (NOT_SERVING until the inbox caught up with the stream) and
//!   reflection, every call counted by the metrics layer;
//! - `/metrics`, `/healthz`, `/readyz` over HTTP;
//! - the inbox, following `CASES` from the start, or from its snapshot
//!   (`--inbox-snapshot`, checked against the stream first), which it keeps written;
//! - the durable consumer issuing automatic receipts;
//! - the key reload: the registry and signing key files again on SIGHUP or a change;
//! - the registration as a NATS service (`$SRV.PING/INFO/STATS`);
//! - a once-a-second sweep: overdue hand-offs (metric and watchers), consumer gauges.
//!
//! Shutdown runs in the workspace's order: the token is cancelled; gRPC stops accepting
//! and the consumer and inbox stop pulling; in-flight calls and appends finish; the task
//! tracker is closed and awaited, bounded by `--shutdown-grace`; the NATS connection is
//! drained; the ready file is removed.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use time::OffsetDateTime;
use tokio::net::TcpListener;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tonic::service::RoutesBuilder;
use tonic::transport::Server;
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;

use casebus_bus::ops::Ops;
use casebus_bus::service::{ServiceInfo, StatsFn};
use casebus_bus::subjects::CASES_STREAM;
use casebus_bus::{
    Appender, AppenderConfig, AppenderStats, Bus, ConsumeError, ConsumerConfig, ConsumerCounters,
    ConsumerRunner, StreamSettings, connect,
};
use casebus_integrity::token::Audience;
use casebus_integrity::{OfficeRegistry, OfficeSigner};
use casebus_proto::{OfficeId, agency_name};
use casebus_runtime::RuntimeError;
use casebus_runtime::grpc;
use casebus_runtime::metrics::{self, GrpcMetricsLayer, Metrics};

use crate::agencies::{AgencyApi, register_common};
use crate::config::AgencyConfig;
use crate::error::AgencyError;
use crate::inbox::{self, Inbox};
use crate::keys::{Hangup, KeyReload};
use crate::kit::Kit;
use crate::receipts::Receipts;
use crate::snapshot;
use crate::stats::Stats;

/// How often overdue hand-offs are looked for and gauges refreshed.
const SWEEP_INTERVAL: Duration = Duration::from_secs(1);
/// Consumer gauges are read from the server every this many sweeps.
const CONSUMER_POLL_SWEEPS: u64 = 5;
/// Name of the common gRPC service, for health.
const COMMON_GRPC_SERVICE: &str = "casebus.agency.v1.AgencyService";

/// What a service writes to its `--ready-file` once it is ready: where it listens.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ReadyFile {
    /// The service name, e.g. `casebus-customs`.
    pub service: String,
    /// The office it records for.
    pub office: String,
    /// The bound gRPC address.
    pub grpc: SocketAddr,
    /// The bound metrics address.
    pub metrics: SocketAddr,
    /// The process id.
    pub pid: u32,
}

impl ReadyFile {
    /// Reads a ready file; `Ok(None)` while it does not exist yet.
    ///
    /// # Errors
    /// The I/O error when it cannot be read, or `InvalidData` when it is not a ready file.
    pub fn read(path: &Path) -> std::io::Result<Option<Self>> {
        match std::fs::read(path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Writes the file atomically (a temporary file renamed into place), so a reader
    /// never sees half of it.
    fn write(&self, path: &Path) -> std::io::Result<()> {
        let json = serde_json::to_vec_pretty(self)
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?;
        let mut temporary = path.as_os_str().to_owned();
        temporary.push(".tmp");
        let temporary = PathBuf::from(temporary);
        std::fs::write(&temporary, json)?;
        std::fs::rename(&temporary, path)
    }
}

/// How long the server waits for the receipts consumer to ack a message before it
/// gives the message to another instance. Short, so that the hand-offs a killed
/// instance had pulled get their receipts from another within seconds; the runner keeps
/// every message it holds alive with progress acks, so a slow handler (or a long queue
/// behind one) is never mistaken for a dead one. An existing consumer with another ack
/// wait (30 s before) is updated in place at start.
pub const RECEIPTS_ACK_WAIT: Duration = Duration::from_secs(3);

/// A started agency service: files loaded, NATS connected, listeners bound.
pub struct Service {
    config: AgencyConfig,
    service_name: &'static str,
    grpc_service: &'static str,
    register: fn(&Kit, &mut RoutesBuilder),
    kit: Kit,
    inbox: Arc<Inbox>,
    bus: Bus,
    server: Server,
    grpc_listener: TcpListener,
    metrics_listener: TcpListener,
    grpc_addr: SocketAddr,
    metrics_addr: SocketAddr,
    consumer: String,
    stop: CancellationToken,
    tracker: TaskTracker,
    started_at: OffsetDateTime,
    hangup: Hangup,
    /// The office's decryption keys, when given (`--decryption-key`).
    opener: Option<Arc<casebus_integrity::seal::Opener>>,
}

impl std::fmt::Debug for Service {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Service")
            .field("service", &self.service_name)
            .field("office", self.kit.office())
            .field("grpc", &self.grpc_addr)
            .finish_non_exhaustive()
    }
}

fn config_error(key: &'static str, reason: impl Into<String>) -> AgencyError {
    AgencyError::Config {
        key,
        reason: reason.into(),
    }
}

fn local_addr(what: &'static str, listener: &TcpListener) -> Result<SocketAddr, AgencyError> {
    listener.local_addr().map_err(|source| {
        AgencyError::Runtime(RuntimeError::Bind {
            what,
            addr: "(bound listener)".into(),
            source,
        })
    })
}

impl Service {
    /// Loads the configuration's files, connects to NATS and binds the listeners for the
    /// service of agency `A`.
    ///
    /// # Errors
    /// - [`AgencyError::Config`] when the office is not of agency `A`, the key file is
    ///   another office's, the office is not in the registry, or the consumer name is
    ///   not one token;
    /// - [`AgencyError::Key`], [`AgencyError::Registry`] when a file cannot be loaded,
    ///   [`AgencyError::Runtime`] when the deadline rules or the calendar cannot (naming
    ///   the file, line and field);
    /// - [`AgencyError::Runtime`] for TLS files, caller authentication (neither tokens
    ///   nor client certificates configured), metrics, or a listener that cannot bind;
    /// - [`AgencyError::Bus`] when NATS cannot be reached or the streams are missing
    ///   (pass `--provision`); [`AgencyError::Provision`] when provisioning fails;
    /// - [`AgencyError::Signer`] when the signing key is not registered for the office.
    pub async fn start<A: AgencyApi>(config: AgencyConfig) -> Result<Self, AgencyError> {
        let office = config.office.clone();
        if office.agency() != A::AGENCY {
            return Err(config_error(
                "--office",
                format!(
                    "{office} is not an office of {}; {} serves {} offices only",
                    agency_name(A::AGENCY),
                    A::SERVICE_NAME,
                    agency_name(A::AGENCY)
                ),
            ));
        }
        // A bad rules file or calendar refuses the start before anything else, naming
        // the file, line and field.
        let clocks = config.clocks.load()?;
        tracing::info!(digest = %clocks.digest, years = clocks.calendar.years().count(), "deadline rules and calendar loaded");
        let signer = OfficeSigner::load(&config.signing_key).map_err(AgencyError::Key)?;
        if signer.office() != &office {
            return Err(config_error(
                "--signing-key",
                format!(
                    "the key file signs for {}, not for {office}",
                    signer.office()
                ),
            ));
        }
        let registry = OfficeRegistry::load(&config.registry).map_err(AgencyError::Registry)?;
        if !registry.contains(&office) {
            return Err(config_error(
                "--registry",
                format!("office {office} is not in the office registry"),
            ));
        }
        let consumer = config.consumer_name();
        if casebus_proto::validate_local_id("consumer name", &consumer).is_err() {
            return Err(config_error(
                "--consumer",
                format!("{consumer:?} must be 1-64 chars of [A-Za-z0-9_-]"),
            ));
        }
        let auth = grpc::authenticator(&config.grpc, Audience::Agency)?;
        let server = grpc::server(&config.grpc)?;
        let metrics = Metrics::new(A::SERVICE_NAME, office.as_str())?;

        let client_name = format!("{} {office}", A::SERVICE_NAME);
        let client = connect(&config.nats.connect_config(&client_name))
            .await
            .map_err(AgencyError::Bus)?;
        let bus_config = config.nats.bus_config();
        if config.provision {
            let settings = StreamSettings {
                replicas: config.stream_replicas,
                ..StreamSettings::default()
            };
            casebus_bus::provision::provision(
                &Bus::context(client.clone(), &bus_config),
                &settings,
            )
            .await
            .map_err(AgencyError::Provision)?;
        }
        let bus = Bus::open(client, Arc::new(registry), bus_config)
            .await
            .map_err(AgencyError::Bus)?;
        let cache_bytes = config.append_cache_mib.saturating_mul(1024 * 1024);
        let appender = Appender::new(
            bus.clone(),
            signer,
            Arc::new(clocks.rules.clone()),
            AppenderConfig {
                cache_bytes: usize::try_from(cache_bytes).unwrap_or(usize::MAX),
                calendar: Arc::new(clocks.calendar.clone()),
                ..AppenderConfig::default()
            },
        )
        .map_err(AgencyError::Signer)?;
        let opener = if config.decryption_keys.is_empty() {
            None
        } else {
            let mut keys = Vec::new();
            for path in &config.decryption_keys {
                let key = casebus_integrity::seal::OpeningKey::load(path)
                    .map_err(AgencyError::DecryptionKey)?;
                if key.office() != &office {
                    return Err(config_error(
                        "--decryption-key",
                        format!(
                            "{} is a key of {}, not of {office}",
                            path.display(),
                            key.office()
                        ),
                    ));
                }
                keys.push(key);
            }
            Some(Arc::new(casebus_integrity::seal::Opener::new(keys)))
        };
        let appender = match &opener {
            None => appender,
            Some(opener) => appender
                .seal_with(opener.clone())
                .map_err(|e| config_error("--decryption-key", e.to_string()))?,
        };
        tracing::info!(
            seals = appender.seals(),
            "restricted events are {}",
            if appender.seals() {
                "sealed for their readers"
            } else {
                "recorded in clear unless the office has an encryption key registered"
            }
        );
        // Installed now, so that a SIGHUP from here on reloads the keys rather than
        // ending the process.
        let hangup = Hangup::install().map_err(AgencyError::Signal)?;

        let grpc_listener = metrics::bind("gRPC", config.grpc.listen).await?;
        let metrics_listener = metrics::bind("metrics", config.metrics.listen).await?;
        let grpc_addr = local_addr("gRPC", &grpc_listener)?;
        let metrics_addr = local_addr("metrics", &metrics_listener)?;

        let stop = CancellationToken::new();
        let tracker = TaskTracker::new();
        let inbox = Arc::new(Inbox::new(office.clone(), Arc::new(clocks.clone())));
        let kit = Kit::new(
            office,
            A::SERVICE_NAME,
            Arc::new(appender),
            inbox.clone(),
            metrics,
            Arc::new(Stats::default()),
            auth,
            tracker.clone(),
            stop.clone(),
            opener.clone(),
        );
        Ok(Self {
            config,
            service_name: A::SERVICE_NAME,
            grpc_service: A::GRPC_SERVICE,
            register: A::register,
            kit,
            inbox,
            bus,
            server,
            grpc_listener,
            metrics_listener,
            grpc_addr,
            metrics_addr,
            consumer,
            stop,
            tracker,
            started_at: OffsetDateTime::now_utc(),
            hangup,
            opener,
        })
    }

    /// The bound gRPC address.
    pub fn grpc_addr(&self) -> SocketAddr {
        self.grpc_addr
    }

    /// The bound metrics address.
    pub fn metrics_addr(&self) -> SocketAddr {
        self.metrics_addr
    }

    /// The service's kit.
    pub fn kit(&self) -> &Kit {
        &self.kit
    }

    /// Serves until `shutdown` is cancelled, then shuts down in order (see the module
    /// documentation).
    ///
    /// # Errors
    /// [`AgencyError::Register`] when the NATS service registration is refused (nothing
    /// was started); [`AgencyError::Runtime`] when the gRPC server fails;
    /// [`AgencyError::Consumer`] when the receipts consumer cannot run; the service has
    /// shut down in order in every case.
    pub async fn run(self, shutdown: CancellationToken) -> Result<(), AgencyError> {
        let Self {
            config,
            service_name,
            grpc_service,
            register,
            kit,
            inbox,
            bus,
            server,
            grpc_listener,
            metrics_listener,
            grpc_addr,
            metrics_addr,
            opener,
            consumer,
            stop,
            tracker,
            started_at,
            hangup,
        } = self;
        let office = kit.office().clone();
        let metrics = kit.metrics().clone();
        let grace = config.process.shutdown_grace;
        let health_names = ["", COMMON_GRPC_SERVICE, grpc_service];
        let refused = snapshot_refused_counter(&metrics)?;

        let (health, health_service) = tonic_health::server::health_reporter();
        set_health(&health, &health_names, ServingStatus::NotServing).await;
        let mut routes = RoutesBuilder::default();
        register_common(&kit, &mut routes);
        register(&kit, &mut routes);
        routes.add_service(health_service);
        if let Some(reflection) = grpc::reflection_if_enabled(&config.grpc)? {
            routes.add_service(reflection);
        }
        let router = server
            .layer(GrpcMetricsLayer::new(metrics.clone()))
            .add_routes(routes.routes());

        let runner = ConsumerRunner::new(
            bus.clone(),
            ConsumerConfig {
                ack_wait: RECEIPTS_ACK_WAIT,
                opener: opener.clone(),
                ..ConsumerConfig::named(consumer.clone())
            },
        );
        let counters = runner.counters();
        let info = service_info(
            service_name,
            &office,
            &consumer,
            grpc_addr,
            metrics_addr,
            started_at,
            &inbox.clocks().digest,
        );
        let stats = stats_fn(kit.clone(), inbox.clone(), counters.clone(), &consumer);
        let registration =
            casebus_bus::service::register(bus.client().clone(), info, stats, stop.clone())
                .await
                .map_err(AgencyError::Register)?;

        // The external token stops everything; so does a component that fails.
        tracker.spawn({
            let stop = stop.clone();
            async move {
                tokio::select! {
                    () = shutdown.cancelled() => stop.cancel(),
                    () = stop.cancelled() => {}
                }
            }
        });
        let ready = Arc::new(AtomicBool::new(false));
        tracker.spawn({
            let (metrics, ready, stop) = (metrics.clone(), ready.clone(), stop.clone());
            async move {
                if let Err(error) = metrics::serve_http(
                    metrics_listener,
                    metrics.registry.clone(),
                    ready,
                    stop.clone(),
                )
                .await
                {
                    tracing::error!(error = %error, "metrics endpoint failed");
                }
            }
        });
        let snapshot_path = config.inbox_snapshot.clone();
        tracker.spawn({
            let (inbox, bus, metrics, stop, path) = (
                inbox.clone(),
                bus.clone(),
                metrics.clone(),
                stop.clone(),
                snapshot_path.clone(),
            );
            async move {
                if let Some(path) = &path {
                    snapshot::resume(&inbox, &bus, path, &refused, &stop).await;
                }
                inbox::follow(&inbox, &bus, &metrics, &stop).await;
            }
        });
        if let Some(path) = snapshot_path {
            let (inbox, bus, stop) = (inbox.clone(), bus.clone(), stop.clone());
            tracker.spawn(async move { snapshot::keep(&inbox, &bus, &path, &stop).await });
        }
        let consumer_failure: Arc<Mutex<Option<ConsumeError>>> = Arc::default();
        tracker.spawn({
            let (handler, stop, failure) = (
                Receipts::new(kit.clone(), consumer.clone()),
                stop.clone(),
                consumer_failure.clone(),
            );
            let consumer = consumer.clone();
            async move {
                if let Err(error) = runner.run(handler, stop.clone()).await {
                    tracing::error!(consumer = %consumer, error = %error, "receipts consumer failed; stopping");
                    if let Ok(mut slot) = failure.lock() {
                        *slot = Some(error);
                    }
                    stop.cancel();
                }
            }
        });
        tracker.spawn({
            let announce = Announce {
                health: health.clone(),
                names: health_names,
                ready: ready.clone(),
                metrics: metrics.clone(),
                ready_file: config.ready_file.clone(),
                contents: ReadyFile {
                    service: service_name.to_owned(),
                    office: office.to_string(),
                    grpc: grpc_addr,
                    metrics: metrics_addr,
                    pid: std::process::id(),
                },
            };
            let (inbox, stop) = (inbox.clone(), stop.clone());
            async move {
                tokio::select! {
                    () = stop.cancelled() => {}
                    () = inbox.wait_ready() => announce.ready(&stop).await,
                }
            }
        });
        tracker.spawn(
            KeyReload {
                office: office.clone(),
                registry: config.registry.clone(),
                signing_key: config.signing_key.clone(),
                interval: config.key_reload_interval,
                bus: bus.clone(),
                appender: kit.appender().clone(),
            }
            .run(hangup, stop.clone()),
        );
        tracker.spawn(sweep(
            inbox.clone(),
            metrics.clone(),
            Counted {
                consumer: counters,
                appender: kit.appender().stats(),
            },
            Ops::from_bus(&bus),
            consumer.clone(),
            agency_name(office.agency()),
            stop.clone(),
        ));

        tracing::info!(
            office = %office,
            grpc = %grpc_addr,
            metrics = %metrics_addr,
            consumer = %consumer,
            "agency service started"
        );
        let serve = grpc::serve(router, grpc_listener, stop.clone());
        tokio::pin!(serve);
        let mut deadline = None;
        let served = tokio::select! {
            result = &mut serve => result,
            () = stop.cancelled() => {
                tracing::info!("shutting down: stopped accepting, finishing in-flight calls");
                let at = Instant::now() + grace;
                deadline = Some(at);
                match tokio::time::timeout_at(at, &mut serve).await {
                    Ok(result) => result,
                    Err(_) => {
                        tracing::warn!("in-flight calls did not finish within the shutdown grace");
                        Ok(())
                    }
                }
            }
        };
        stop.cancel();
        let deadline = deadline.unwrap_or_else(|| Instant::now() + grace);
        ready.store(false, Ordering::Relaxed);
        metrics.up.set(0);
        set_health(&health, &health_names, ServingStatus::NotServing).await;

        tracker.close();
        if tokio::time::timeout_at(deadline, tracker.wait())
            .await
            .is_err()
        {
            tracing::warn!("background work did not finish within the shutdown grace");
        }
        if tokio::time::timeout_at(deadline, registration)
            .await
            .is_err()
        {
            tracing::warn!("nats service deregistration did not finish within the shutdown grace");
        }
        match tokio::time::timeout(grace, bus.drain()).await {
            Ok(Ok(())) => {}
            Ok(Err(error)) => tracing::warn!(error = %error, "draining the nats connection failed"),
            Err(_) => tracing::warn!(
                "draining the nats connection did not finish within the shutdown grace"
            ),
        }
        if let Some(path) = &config.ready_file
            && let Err(error) = std::fs::remove_file(path)
            && error.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!(path = %path.display(), error = %error, "removing the ready file failed");
        }
        tracing::info!("agency service stopped");

        served?;
        let failure = consumer_failure
            .lock()
            .ok()
            .and_then(|mut slot| slot.take());
        if let Some(source) = failure {
            return Err(AgencyError::Consumer { consumer, source });
        }
        Ok(())
    }
}

/// `casebus_inbox_snapshot_refused_total{reason}`: snapshots not resumed from, by why.
fn snapshot_refused_counter(metrics: &Metrics) -> Result<prometheus::IntCounterVec, AgencyError> {
    let counter = prometheus::IntCounterVec::new(
        prometheus::Opts::new(
            "casebus_inbox_snapshot_refused_total",
            "Inbox snapshots refused at start (the inbox was rebuilt from the first message), by reason.",
        ),
        &["reason"],
    )
    .map_err(|e| AgencyError::Runtime(RuntimeError::Metrics(e)))?;
    metrics
        .registry
        .register(Box::new(counter.clone()))
        .map_err(|e| AgencyError::Runtime(RuntimeError::Metrics(e)))?;
    Ok(counter)
}

async fn set_health(health: &HealthReporter, names: &[&str], status: ServingStatus) {
    for name in names {
        health.set_service_status(name, status).await;
    }
}

/// What becomes true when the service is ready.
struct Announce {
    health: HealthReporter,
    names: [&'static str; 3],
    ready: Arc<AtomicBool>,
    metrics: Metrics,
    ready_file: Option<PathBuf>,
    contents: ReadyFile,
}

impl Announce {
    async fn ready(self, stop: &CancellationToken) {
        set_health(&self.health, &self.names, ServingStatus::Serving).await;
        self.ready.store(true, Ordering::Relaxed);
        self.metrics.up.set(1);
        if let Some(path) = &self.ready_file
            && let Err(error) = self.contents.write(path)
        {
            // A supervisor waiting for the file would wait forever: better stop.
            let error = AgencyError::ReadyFile {
                path: path.clone(),
                source: error,
            };
            tracing::error!(error = %error, cause = ?std::error::Error::source(&error), "cannot announce readiness; stopping");
            stop.cancel();
            return;
        }
        tracing::info!(grpc = %self.contents.grpc, "agency service ready");
    }
}

fn service_info(
    service_name: &str,
    office: &OfficeId,
    consumer: &str,
    grpc_addr: SocketAddr,
    metrics_addr: SocketAddr,
    started_at: OffsetDateTime,
    rules_digest: &str,
) -> ServiceInfo {
    let started = started_at
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default();
    let metadata = HashMap::from([
        ("office".to_owned(), office.to_string()),
        ("agency".to_owned(), agency_name(office.agency()).to_owned()),
        ("version".to_owned(), env!("CARGO_PKG_VERSION").to_owned()),
        ("grpc".to_owned(), grpc_addr.to_string()),
        ("metrics".to_owned(), metrics_addr.to_string()),
        ("consumer".to_owned(), consumer.to_owned()),
        ("started_at".to_owned(), started),
        // What it counts clocks and records due times with: the monitor flags
        // services whose digests differ.
        ("rules_digest".to_owned(), rules_digest.to_owned()),
    ]);
    ServiceInfo {
        name: service_name.to_owned(),
        version: env!("CARGO_PKG_VERSION").to_owned(),
        description: format!(
            "casebus {} service of office {office}",
            agency_name(office.agency())
        ),
        metadata,
    }
}

fn stats_fn(
    kit: Kit,
    inbox: Arc<Inbox>,
    counters: Arc<ConsumerCounters>,
    consumer: &str,
) -> StatsFn {
    let consumer = consumer.to_owned();
    Arc::new(move || {
        let (pending, overdue) = inbox.counts(OffsetDateTime::now_utc());
        let get = |c: &std::sync::atomic::AtomicU64| c.load(Ordering::Relaxed);
        let mut value = kit.stats().to_json();
        if let Some(map) = value.as_object_mut() {
            map.insert("office".into(), kit.office().to_string().into());
            map.insert(
                "inbox".into(),
                serde_json::json!({
                    "ready": inbox.is_ready(),
                    "pending": pending,
                    "overdue": overdue,
                    "position": inbox.position(),
                }),
            );
            map.insert(
                "consumer".into(),
                serde_json::json!({
                    "name": consumer,
                    "handled": get(&counters.handled),
                    "dead_lettered": get(&counters.dead_lettered),
                    "retries": get(&counters.retries),
                    "redelivered": get(&counters.redelivered),
                    "last_sequence": get(&counters.last_sequence),
                }),
            );
            let appender = kit.appender().stats();
            map.insert(
                "appender".into(),
                serde_json::json!({
                    "conflicts": get(&appender.conflicts),
                    "retries": get(&appender.retries),
                    "rereads": get(&appender.rereads),
                    "cache_evictions": get(&appender.evictions),
                    "cache_bytes": get(&appender.cache_bytes),
                    "cache_cases": get(&appender.cache_cases),
                }),
            );
        }
        value
    })
}

/// What the consumer and the appender count as they run, carried into the metrics.
struct Counted {
    consumer: Arc<ConsumerCounters>,
    appender: Arc<AppenderStats>,
}

/// The last values of [`Counted`] carried into the metrics, so each sweep adds only
/// what is new.
#[derive(Default)]
struct Carried {
    dead_letters: u64,
    redeliveries: u64,
    conflicts: u64,
    retries: u64,
    rereads: u64,
    evictions: u64,
}

/// What `now` has beyond `seen` (remembered as seen from now on).
fn delta(seen: &mut u64, now: &AtomicU64) -> u64 {
    let now = now.load(Ordering::Relaxed);
    let new = now.saturating_sub(*seen);
    *seen = now.max(*seen);
    new
}

/// A count or size as a gauge value.
fn level(v: &AtomicU64) -> i64 {
    i64::try_from(v.load(Ordering::Relaxed)).unwrap_or(i64::MAX)
}

impl Counted {
    fn carry(&self, metrics: &Metrics, consumer: &str, carried: &mut Carried) {
        let (c, a) = (&self.consumer, &self.appender);
        metrics
            .dead_letters
            .with_label_values(&[consumer])
            .inc_by(delta(&mut carried.dead_letters, &c.dead_lettered));
        metrics
            .consumer_redeliveries
            .with_label_values(&[consumer])
            .inc_by(delta(&mut carried.redeliveries, &c.redelivered));
        metrics
            .append_conflicts
            .inc_by(delta(&mut carried.conflicts, &a.conflicts));
        metrics
            .append_retries
            .inc_by(delta(&mut carried.retries, &a.retries));
        metrics
            .append_rereads
            .inc_by(delta(&mut carried.rereads, &a.rereads));
        metrics
            .append_cache_evictions
            .inc_by(delta(&mut carried.evictions, &a.evictions));
        metrics.append_cache_bytes.set(level(&a.cache_bytes));
        metrics.append_cache_cases.set(level(&a.cache_cases));
    }
}

/// Once a second: announce newly overdue hand-offs and set the overdue gauge; carry the
/// consumer's dead letters and redeliveries and the appender's conflicts, retries,
/// re-reads, evictions and cache size into the metrics; every few seconds read the
/// consumer's backlog from the server.
async fn sweep(
    inbox: Arc<Inbox>,
    metrics: Metrics,
    counted: Counted,
    ops: Ops,
    consumer: String,
    agency: &'static str,
    stop: CancellationToken,
) {
    let mut tick = tokio::time::interval(SWEEP_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut carried = Carried::default();
    let mut sweeps: u64 = 0;
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        sweeps += 1;
        if inbox.is_ready() {
            let (overdue, _) = inbox.sweep(OffsetDateTime::now_utc());
            metrics
                .handoffs_overdue
                .with_label_values(&[agency])
                .set(i64::try_from(overdue).unwrap_or(i64::MAX));
        }
        counted.carry(&metrics, &consumer, &mut carried);
        if sweeps.is_multiple_of(CONSUMER_POLL_SWEEPS) {
            match ops.consumer(CASES_STREAM, &consumer).await {
                Ok(status) => metrics
                    .consumer_pending
                    .with_label_values(&[&consumer])
                    .set(i64::try_from(status.pending).unwrap_or(i64::MAX)),
                Err(error) => {
                    tracing::debug!(consumer = %consumer, error = %error, "reading the consumer state failed");
                }
            }
        }
    }
}
