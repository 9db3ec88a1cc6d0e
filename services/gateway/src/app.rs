//! Starting, running and stopping one gateway: open the projection, connect to NATS,
//! put the durable consumer where the projection stands, serve gRPC (the gateway behind
//! the authenticator, plus health and reflection) and `/metrics`, register on `$SRV`,
//! and on shutdown stop in order (stop accepting and pulling, let in-flight batches and
//! reads finish within the grace period, drain NATS).
//!
//! **The consumer follows the projection, never the other way round.** At start the
//! projection's stored position P decides where the durable consumer resumes: when the
//! consumer's ack floor and delivered sequence are not both P (the database was
//! deleted, restored from a backup, rebuilt offline, or the last run died with
//! deliveries in flight), the consumer is recreated to deliver from P + 1. Redelivering
//! in-flight messages after their ack wait would hand them over behind newer ones.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use time::OffsetDateTime;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use casebus_bus::ops::Ops;
use casebus_bus::provision::provision;
use casebus_bus::service::{ServiceInfo, register};
use casebus_bus::subjects::CASES_STREAM;
use casebus_bus::{Bus, ConsumerConfig, ConsumerCounters, ConsumerRunner, StreamSettings, connect};
use casebus_integrity::OfficeRegistry;
use casebus_integrity::token::Audience;
use casebus_proto::event::v1::Agency;
use casebus_proto::gateway::v1::gateway_server::GatewayServer;
use casebus_proto::{AGENCY_NAMES, agency_name};
use casebus_runtime::grpc;
use casebus_runtime::metrics::{GrpcMetricsLayer, bind, serve_http};

use crate::audit::Auditor;
use crate::checkpoint::{CheckpointMetrics, CheckpointPublisher, CheckpointSettings};
use crate::config::Config;
use crate::error::RunError;
use crate::metrics::GatewayMetrics;
use crate::opening::Openers;
use crate::page_token::PageTokens;
use crate::projector::Projector;
use crate::proofs::ProofLog;
use crate::service::{GatewayService, ServiceSettings};
use crate::store::Store;

/// How often lag and overdue hand-offs are refreshed for the metrics.
const MONITOR_INTERVAL: Duration = Duration::from_secs(10);
/// Ceiling for draining the NATS connection at the end.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);
/// Overdue hand-offs counted for the gauge at most.
const OVERDUE_SCAN: usize = 1000;

/// What a running gateway writes to `--ready-file`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadyInfo {
    /// The bound gRPC address.
    pub grpc: SocketAddr,
    /// The bound metrics address.
    pub metrics: SocketAddr,
    /// The durable consumer.
    pub consumer: String,
    /// The process id.
    pub pid: u32,
}

impl ReadyInfo {
    /// The JSON text of the ready file.
    pub fn to_json(&self) -> String {
        serde_json::json!({
            "grpc": self.grpc.to_string(),
            "metrics": self.metrics.to_string(),
            "consumer": self.consumer,
            "pid": self.pid,
        })
        .to_string()
    }
}

/// Writes the ready file atomically (a temporary file renamed into place), so a reader
/// never sees half of it.
fn write_ready_file(path: &Path, info: &ReadyInfo) -> Result<(), RunError> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = std::path::PathBuf::from(tmp);
    let io = |source| RunError::File {
        path: path.to_owned(),
        source,
    };
    std::fs::write(&tmp, info.to_json()).map_err(io)?;
    std::fs::rename(&tmp, path).map_err(io)
}

/// Puts the durable consumer `name` where the projection stands (see the module docs).
///
/// # Errors
/// [`RunError::AheadOfStream`] when the projection is beyond the stream's end;
/// [`RunError::Consumer`] when the consumer cannot be read, created or reset.
async fn reposition(
    bus: &Bus,
    runner: &ConsumerRunner,
    name: &str,
    position: u64,
    db: &Path,
) -> Result<(), RunError> {
    let failed = |source: Box<dyn std::error::Error + Send + Sync>| RunError::Consumer {
        consumer: name.to_owned(),
        source,
    };
    runner
        .ensure_consumer()
        .await
        .map_err(|e| failed(Box::new(e)))?;
    let ops = Ops::from_bus(bus);
    let stream_last = ops
        .stream_status(CASES_STREAM)
        .await
        .map_err(|e| failed(Box::new(e)))?
        .map_or(0, |s| s.last_sequence);
    if position > stream_last {
        return Err(RunError::AheadOfStream {
            path: db.to_owned(),
            position,
            stream_last,
        });
    }
    let status = ops
        .consumer(CASES_STREAM, name)
        .await
        .map_err(|e| failed(Box::new(e)))?;
    if status.ack_floor_sequence == position && status.delivered_sequence == position {
        tracing::info!(
            consumer = name,
            position,
            "consumer resumes where the projection stands"
        );
        return Ok(());
    }
    if status.waiting > 0 {
        tracing::warn!(
            consumer = name,
            waiting = status.waiting,
            "the consumer has pull requests waiting: another process may use this consumer name; each gateway needs its own"
        );
    }
    tracing::info!(
        consumer = name,
        position,
        ack_floor = status.ack_floor_sequence,
        delivered = status.delivered_sequence,
        "repositioning the consumer to the projection"
    );
    ops.reset_consumer(CASES_STREAM, name, position + 1)
        .await
        .map_err(|e| failed(Box::new(e)))?;
    Ok(())
}

/// Refreshes the consumer-lag and overdue gauges.
async fn refresh_gauges(ops: &Ops, store: &Arc<Store>, metrics: &GatewayMetrics) {
    match ops.consumer(CASES_STREAM, &metrics.consumer).await {
        Ok(status) => metrics
            .base
            .consumer_pending
            .with_label_values(&[metrics.consumer.as_str()])
            .set(i64::try_from(status.pending).unwrap_or(i64::MAX)),
        Err(e) => tracing::debug!(error = %e, "consumer status unavailable"),
    }
    let now = OffsetDateTime::now_utc();
    match store
        .read(move |p| Ok(p.overdue_handoffs(now, OVERDUE_SCAN)?))
        .await
    {
        Ok(overdue) => {
            let mut per_agency: HashMap<Agency, i64> = HashMap::new();
            for o in &overdue {
                *per_agency.entry(o.handoff.to_agency).or_default() += 1;
            }
            for name in AGENCY_NAMES {
                let count = per_agency
                    .iter()
                    .find(|(a, _)| agency_name(**a) == name)
                    .map_or(0, |(_, n)| *n);
                metrics
                    .base
                    .handoffs_overdue
                    .with_label_values(&[name])
                    .set(count);
            }
        }
        Err(e) => tracing::debug!(error = %e, "overdue hand-offs unavailable"),
    }
}

fn stats(
    store: Arc<Store>,
    counters: Arc<ConsumerCounters>,
    metrics: GatewayMetrics,
    grpc: SocketAddr,
) -> casebus_bus::service::StatsFn {
    Arc::new(move || {
        let load = |c: &std::sync::atomic::AtomicU64| c.load(Ordering::Relaxed);
        serde_json::json!({
            "consumer": metrics.consumer,
            "grpc": grpc.to_string(),
            "position": store.position(),
            "handled": load(&counters.handled),
            "dead_lettered": load(&counters.dead_lettered),
            "retries": load(&counters.retries),
            "watch_streams": metrics.watch_streams.get(),
        })
    })
}

/// Runs the gateway described by `config` until `shutdown` is cancelled (or a part of
/// it fails, which cancels `shutdown` too).
///
/// # Errors
/// Any [`RunError`] of start-up; [`RunError::Failed`] when the consumer or the gRPC
/// server failed while running.
pub async fn run(config: Config, shutdown: CancellationToken) -> Result<(), RunError> {
    config.validate()?;
    // A bad rules file or calendar refuses the start, naming the file, line and field.
    let clocks = config.clocks.load().map_err(RunError::Runtime)?;
    tracing::info!(digest = %clocks.digest, years = clocks.calendar.years().count(), "deadline rules and calendar loaded");
    let rules_digest = clocks.digest.clone();
    // Every call must be authenticated: refuse to start before touching anything else.
    let auth = grpc::authenticator(&config.grpc, Audience::Gateway).map_err(RunError::Runtime)?;
    let name = config.consumer_name.clone();
    let registry = OfficeRegistry::load(&config.registry.path).map_err(RunError::Registry)?;
    let openers = Openers::load(&config.decryption_keys, &registry)?;
    if !openers.offices().is_empty() {
        tracing::info!(
            offices = ?openers.offices(),
            "sealed content is opened for callers of these offices (--decryption-key)"
        );
    }
    // Opened before anything slow, so a file that is not a log stops the start.
    let tlog = config
        .tlog_file
        .as_ref()
        .map(casebus_timeline::LogStore::open)
        .transpose()
        .map_err(RunError::Tlog)?;
    let log_key = config
        .log_key
        .as_deref()
        .map(casebus_runtime::tlog_keys::load_log_key)
        .transpose()
        .map_err(RunError::LogKey)?;
    // Installed before anything slow, so that a SIGHUP from then on reloads the
    // registry instead of ending the process.
    let hangup = casebus_runtime::shutdown::Hangup::install().map_err(RunError::Signal)?;
    let metrics = GatewayMetrics::new(&name).map_err(RunError::Runtime)?;
    let page_tokens = Arc::new(match &config.page_token_key {
        Some(path) => PageTokens::from_file(path)?,
        None => {
            tracing::info!("no page token key given; page tokens end with this process");
            PageTokens::generate()?
        }
    });

    let (db, readers, store_name) = (config.db.clone(), config.readers, name.clone());
    let store = tokio::task::spawn_blocking(move || {
        let store = Store::open(&db, readers, &store_name)?;
        let recounted = store.set_clocks(clocks.rules, clocks.calendar)?;
        if recounted > 0 {
            tracing::info!(
                cases = recounted,
                "hand-offs' running clocks recounted with these rules and calendar"
            );
        }
        Ok::<_, RunError>(store)
    })
    .await
    .map_err(|_| RunError::Task)??;
    store.set_list_work_budget(config.list_work_budget);
    let store = Arc::new(store);
    metrics
        .position
        .set(i64::try_from(store.position()).unwrap_or(i64::MAX));
    tracing::info!(path = %config.db.display(), position = store.position(), consumer = %name, "projection opened");

    let client = connect(
        &config
            .nats
            .connect_config(&format!("casebus-gateway {name}")),
    )
    .await
    .map_err(RunError::Nats)?;
    // The same path as the agency services and the monitor take, so every NATS flag the
    // gateway accepts (the ack window, the request ceiling and the clock skew) reaches the bus.
    let bus_config = config.nats.bus_config();
    if config.provision {
        let settings = StreamSettings {
            replicas: config.replicas,
            ..StreamSettings::default()
        };
        provision(&Bus::context(client.clone(), &bus_config), &settings)
            .await
            .map_err(RunError::Provision)?;
    }
    let bus = Bus::open(client.clone(), Arc::new(registry), bus_config)
        .await
        .map_err(RunError::Nats)?;
    let consumer_config = ConsumerConfig {
        batch: config.batch,
        // Room for a few batches in flight beyond the one being committed.
        max_ack_pending: i64::try_from(config.batch * 4).unwrap_or(4000).max(1024),
        ..ConsumerConfig::named(name.clone())
    };
    let runner = ConsumerRunner::new(bus.clone(), consumer_config);
    reposition(&bus, &runner, &name, store.position(), &config.db).await?;
    let counters = runner.counters();

    let grpc_listener = bind("gRPC", config.grpc.listen)
        .await
        .map_err(RunError::Runtime)?;
    let metrics_listener = bind("metrics", config.metrics.listen)
        .await
        .map_err(RunError::Runtime)?;
    let local = |l: &tokio::net::TcpListener, addr: SocketAddr| l.local_addr().unwrap_or(addr);
    let grpc_addr = local(&grpc_listener, config.grpc.listen);
    let metrics_addr = local(&metrics_listener, config.metrics.listen);

    let server = grpc::server(&config.grpc).map_err(RunError::Runtime)?;
    let reflection = grpc::reflection_if_enabled(&config.grpc).map_err(RunError::Runtime)?;
    let (health, health_service) = tonic_health::server::health_reporter();
    let gateway_name = <GatewayServer<GatewayService> as tonic::server::NamedService>::NAME;
    health
        .set_service_status(gateway_name, tonic_health::ServingStatus::Serving)
        .await;
    let tracker = TaskTracker::new();
    let log_origin = log_key.as_ref().map(|signer| {
        config
            .log_origin
            .clone()
            .unwrap_or_else(|| signer.name().to_owned())
    });
    // The proofs read the log on a connection of their own, beside the follower's.
    let proofs = match (&config.tlog_file, &log_key, &log_origin) {
        (Some(path), Some(signer), Some(origin)) => {
            let reader = casebus_timeline::LogStore::open(path).map_err(RunError::Tlog)?;
            Some(Arc::new(ProofLog::new(
                reader,
                Ops::from_bus(&bus),
                origin.clone(),
                signer.verifier(),
            )))
        }
        _ => None,
    };
    if let Some(proofs) = &proofs {
        tracker.spawn(proofs.clone().watch(shutdown.clone()));
    }
    let service = GatewayService::new(
        store.clone(),
        Auditor::new(Ops::from_bus(&bus), &name),
        metrics.clone(),
        &ServiceSettings {
            max_watches: config.max_watches,
            watch_buffer: config.watch_buffer,
            page_tokens: page_tokens.clone(),
            auth: auth.clone(),
            proofs: proofs.clone(),
            openers: openers.clone(),
        },
        tracker.clone(),
        shutdown.clone(),
    );
    let router = server
        .layer(GrpcMetricsLayer::new(metrics.base.clone()))
        .add_service(health_service)
        .add_optional_service(reflection)
        .add_service(GatewayServer::with_interceptor(service, auth.interceptor()));

    let consumer_task = tracker.spawn({
        let projector = Projector::new(store.clone(), metrics.clone());
        let (batch, stop) = (config.batch, shutdown.clone());
        async move {
            let result = runner.run_batched(projector, batch, stop.clone()).await;
            if let Err(e) = &result {
                tracing::error!(error = %e, "consumer failed; stopping the gateway");
                stop.cancel();
            }
            result.map_err(|e| e.to_string())
        }
    });
    let grpc_task = tracker.spawn({
        let stop = shutdown.clone();
        async move {
            let result = grpc::serve(router, grpc_listener, stop.clone()).await;
            if let Err(e) = &result {
                tracing::error!(error = %e, "grpc server failed; stopping the gateway");
                stop.cancel();
            }
            result.map_err(|e| e.to_string())
        }
    });
    tracker.spawn(casebus_runtime::registry::watch(
        config.registry.path.clone(),
        config.registry.reload_interval,
        {
            let bus = bus.clone();
            move |registry| bus.replace_registry(registry)
        },
        hangup,
        shutdown.clone(),
    ));
    if let Some(log) = tlog {
        let publisher = log_key.zip(log_origin).map(|(signer, origin)| {
            let publisher = CheckpointPublisher::new(
                Ops::from_bus(&bus),
                CheckpointSettings {
                    signer,
                    origin,
                    every: config.checkpoint_every,
                    interval: config.checkpoint_interval,
                },
                CheckpointMetrics {
                    size: metrics.checkpoint_size.clone(),
                    refusals: metrics.checkpoint_refusals.clone(),
                },
            );
            tracing::info!(
                subject = publisher.subject(),
                "publishing signed checkpoints"
            );
            publisher
        });
        let follower = crate::tlog::follow(
            Ops::from_bus(&bus),
            log,
            publisher,
            config.tlog_interval,
            config.batch,
            metrics.tlog_entries.clone(),
            shutdown.clone(),
        );
        tracker.spawn(async move {
            if let Err(e) = follower.await {
                tracing::error!(error = %e, "transparency log follower failed");
            }
        });
    }
    let ready = Arc::new(AtomicBool::new(false));
    tracker.spawn({
        let (metrics, ready, stop) = (metrics.base.clone(), ready.clone(), shutdown.clone());
        async move {
            if let Err(e) =
                serve_http(metrics_listener, metrics.registry.clone(), ready, stop).await
            {
                tracing::error!(error = %e, "metrics endpoint failed");
            }
        }
    });
    tracker.spawn({
        let (ops, store, metrics, stop) = (
            Ops::from_bus(&bus),
            store.clone(),
            metrics.clone(),
            shutdown.clone(),
        );
        async move {
            let mut tick = tokio::time::interval(MONITOR_INTERVAL);
            loop {
                tokio::select! {
                    () = stop.cancelled() => break,
                    _ = tick.tick() => refresh_gauges(&ops, &store, &metrics).await,
                }
            }
        }
    });
    let registration = register(
        client.clone(),
        ServiceInfo {
            name: "casebus-gateway".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            description: "casebus query gateway: shared case timelines over gRPC".into(),
            metadata: HashMap::from([
                ("consumer".to_owned(), name.clone()),
                ("grpc".to_owned(), grpc_addr.to_string()),
                // What it counts clocks with; the monitor flags a difference.
                ("rules_digest".to_owned(), rules_digest),
                (
                    "started_at".to_owned(),
                    OffsetDateTime::now_utc().to_string(),
                ),
            ]),
        },
        stats(store.clone(), counters, metrics.clone(), grpc_addr),
        shutdown.clone(),
    )
    .await;
    let registration = match registration {
        Ok(handle) => Some(handle),
        Err(e) => {
            // Discovery is for operators; the gateway serves without it.
            tracing::warn!(error = %e, "$SRV registration failed; serving without it");
            None
        }
    };

    ready.store(true, Ordering::Relaxed);
    metrics.base.up.set(1);
    if let Some(path) = &config.ready_file {
        write_ready_file(
            path,
            &ReadyInfo {
                grpc: grpc_addr,
                metrics: metrics_addr,
                consumer: name.clone(),
                pid: std::process::id(),
            },
        )?;
    }
    tracing::info!(grpc = %grpc_addr, metrics = %metrics_addr, consumer = %name, "gateway ready");

    shutdown.cancelled().await;
    tracing::info!("gateway stopping");
    ready.store(false, Ordering::Relaxed);
    metrics.base.up.set(0);
    for service in ["", gateway_name] {
        health
            .set_service_status(service, tonic_health::ServingStatus::NotServing)
            .await;
    }
    tracker.close();
    if tokio::time::timeout(config.process.shutdown_grace, tracker.wait())
        .await
        .is_err()
    {
        tracing::warn!(grace = ?config.process.shutdown_grace, "in-flight work did not finish within the grace period");
    }
    if let Some(handle) = registration {
        let _ = tokio::time::timeout(DRAIN_TIMEOUT, handle).await;
    }
    if tokio::time::timeout(DRAIN_TIMEOUT, client.drain())
        .await
        .is_err()
    {
        tracing::warn!("nats drain did not finish in time");
    }
    if let Some(path) = &config.ready_file {
        let _ = std::fs::remove_file(path);
    }
    tracing::info!("gateway stopped");

    for (part, task) in [("consumer", consumer_task), ("grpc server", grpc_task)] {
        if task.is_finished()
            && let Ok(Err(reason)) = task.await
        {
            return Err(RunError::Failed { part, reason });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ready_file_names_both_addresses() {
        let info = ReadyInfo {
            grpc: "127.0.0.1:5000".parse().expect("addr"),
            metrics: "127.0.0.1:5001".parse().expect("addr"),
            consumer: "gw-a".into(),
            pid: 7,
        };
        let value: serde_json::Value = serde_json::from_str(&info.to_json()).expect("json");
        assert_eq!(value["grpc"], "127.0.0.1:5000");
        assert_eq!(value["metrics"], "127.0.0.1:5001");
        assert_eq!(value["consumer"], "gw-a");
    }

    #[test]
    fn the_ready_file_is_written_whole() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("ready.json");
        let info = ReadyInfo {
            grpc: "127.0.0.1:1".parse().expect("addr"),
            metrics: "127.0.0.1:2".parse().expect("addr"),
            consumer: "gw-a".into(),
            pid: 1,
        };
        write_ready_file(&path, &info).expect("written");
        assert_eq!(
            std::fs::read_to_string(&path).expect("read"),
            info.to_json()
        );
        assert!(!dir.path().join("ready.json.tmp").exists());
    }
}
