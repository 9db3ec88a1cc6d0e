//! Prometheus metrics of a casebus service: one registry with every metric the
//! dashboards and alert rules use, a tower layer counting gRPC requests by method and
//! code with their latency, and the HTTP endpoint serving `/metrics`, `/healthz` and
//! `/readyz`.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Instant;

use futures::future::BoxFuture;
use prometheus::{
    Encoder as _, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::RuntimeError;

/// Latency buckets in seconds, from 0.5 ms to 10 s.
const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Every metric of a service. Labels are bounded sets (agency, event type, method,
/// code, reason, consumer) — never ids.
#[derive(Clone)]
pub struct Metrics {
    /// The registry to scrape.
    pub registry: Registry,
    /// gRPC requests by service, method and status code.
    pub grpc_requests: IntCounterVec,
    /// gRPC request latency by service and method.
    pub grpc_latency: HistogramVec,
    /// Events appended by agency and event type.
    pub events_appended: IntCounterVec,
    /// Time from loading the case to the publish ack.
    pub append_latency: Histogram,
    /// Attempts after the first of an append (a concurrent writer got there first, or a
    /// cached head had to be confirmed against the stream).
    pub append_retries: IntCounter,
    /// Publishes refused because another writer appended to the case first.
    pub append_conflicts: IntCounter,
    /// Reads of a case from the stream because the head an append had was not enough.
    pub append_rereads: IntCounter,
    /// Case heads evicted from the appender's cache to stay within its bytes.
    pub append_cache_evictions: IntCounter,
    /// Estimated bytes of the case heads in the appender's cache.
    pub append_cache_bytes: IntGauge,
    /// Case heads in the appender's cache.
    pub append_cache_cases: IntGauge,
    /// Messages a consumer was delivered again (the server's delivery count above 1), by
    /// consumer.
    pub consumer_redeliveries: IntCounterVec,
    /// Commands recognised as retries (duplicate request ids).
    pub duplicates: IntCounter,
    /// Commands rejected, by reason (rule name or kind).
    pub rejections: IntCounterVec,
    /// Items of `Import` streams by the code of their outcome.
    pub import_items: IntCounterVec,
    /// Events consumed by consumer, agency and event type.
    pub events_consumed: IntCounterVec,
    /// Messages dead-lettered by consumer.
    pub dead_letters: IntCounterVec,
    /// Messages waiting for a consumer, by consumer.
    pub consumer_pending: IntGaugeVec,
    /// Hand-offs requested, by receiving agency.
    pub handoffs_opened: IntCounterVec,
    /// Hand-offs acknowledged, by receiving agency.
    pub handoffs_acknowledged: IntCounterVec,
    /// Open hand-offs past their due time, by receiving agency.
    pub handoffs_overdue: IntGaugeVec,
    /// Verification failures seen (signature, key, chain), by code.
    pub verification_failures: IntCounterVec,
    /// 1 while the service is ready.
    pub up: IntGauge,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

fn counter(
    r: &Registry,
    name: &str,
    help: &str,
    labels: &[&str],
) -> Result<IntCounterVec, RuntimeError> {
    let c = IntCounterVec::new(Opts::new(name, help), labels).map_err(RuntimeError::Metrics)?;
    r.register(Box::new(c.clone()))
        .map_err(RuntimeError::Metrics)?;
    Ok(c)
}

fn gauge(
    r: &Registry,
    name: &str,
    help: &str,
    labels: &[&str],
) -> Result<IntGaugeVec, RuntimeError> {
    let g = IntGaugeVec::new(Opts::new(name, help), labels).map_err(RuntimeError::Metrics)?;
    r.register(Box::new(g.clone()))
        .map_err(RuntimeError::Metrics)?;
    Ok(g)
}

impl Metrics {
    /// A registry with every metric, each labelled with the constant `service` and
    /// `office` labels.
    ///
    /// # Errors
    /// [`RuntimeError::Metrics`] when a label value is invalid.
    pub fn new(service: &str, office: &str) -> Result<Self, RuntimeError> {
        let mut constant = std::collections::HashMap::new();
        constant.insert("service".to_owned(), service.to_owned());
        constant.insert("office".to_owned(), office.to_owned());
        let r = Registry::new_custom(None, Some(constant)).map_err(RuntimeError::Metrics)?;
        let grpc_latency = HistogramVec::new(
            HistogramOpts::new(
                "casebus_grpc_request_duration_seconds",
                "gRPC request latency",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
            &["method"],
        )
        .map_err(RuntimeError::Metrics)?;
        r.register(Box::new(grpc_latency.clone()))
            .map_err(RuntimeError::Metrics)?;
        let append_latency = Histogram::with_opts(
            HistogramOpts::new(
                "casebus_append_duration_seconds",
                "Append latency: load, decide, sign, publish, ack",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
        )
        .map_err(RuntimeError::Metrics)?;
        r.register(Box::new(append_latency.clone()))
            .map_err(RuntimeError::Metrics)?;
        let append_retries = IntCounter::new(
            "casebus_append_retries_total",
            "Attempts after the first of an append (conflicts, cached heads confirmed against the stream)",
        )
        .map_err(RuntimeError::Metrics)?;
        r.register(Box::new(append_retries.clone()))
            .map_err(RuntimeError::Metrics)?;
        let plain_counter = |name: &str, help: &str| -> Result<IntCounter, RuntimeError> {
            let c = IntCounter::new(name, help).map_err(RuntimeError::Metrics)?;
            r.register(Box::new(c.clone()))
                .map_err(RuntimeError::Metrics)?;
            Ok(c)
        };
        let plain_gauge = |name: &str, help: &str| -> Result<IntGauge, RuntimeError> {
            let g = IntGauge::new(name, help).map_err(RuntimeError::Metrics)?;
            r.register(Box::new(g.clone()))
                .map_err(RuntimeError::Metrics)?;
            Ok(g)
        };
        let append_conflicts = plain_counter(
            "casebus_append_conflicts_total",
            "Appends refused by the stream because another writer appended to the case first",
        )?;
        let append_rereads = plain_counter(
            "casebus_append_rereads_total",
            "Reads of a case from the stream because the head an append had was not enough",
        )?;
        let append_cache_evictions = plain_counter(
            "casebus_append_cache_evictions_total",
            "Case heads evicted from the appender's cache to stay within its bytes",
        )?;
        let append_cache_bytes = plain_gauge(
            "casebus_append_cache_bytes",
            "Estimated bytes of the case heads in the appender's cache",
        )?;
        let append_cache_cases = plain_gauge(
            "casebus_append_cache_cases",
            "Case heads in the appender's cache",
        )?;
        let duplicates = IntCounter::new(
            "casebus_duplicate_commands_total",
            "Commands recognised as retries of applied commands",
        )
        .map_err(RuntimeError::Metrics)?;
        r.register(Box::new(duplicates.clone()))
            .map_err(RuntimeError::Metrics)?;
        let up = IntGauge::new("casebus_up", "1 while the service is ready")
            .map_err(RuntimeError::Metrics)?;
        r.register(Box::new(up.clone()))
            .map_err(RuntimeError::Metrics)?;
        Ok(Self {
            grpc_requests: counter(
                &r,
                "casebus_grpc_requests_total",
                "gRPC requests by method and code",
                &["method", "code"],
            )?,
            grpc_latency,
            events_appended: counter(
                &r,
                "casebus_events_appended_total",
                "Events appended",
                &["agency", "type"],
            )?,
            append_latency,
            append_retries,
            append_conflicts,
            append_rereads,
            append_cache_evictions,
            append_cache_bytes,
            append_cache_cases,
            consumer_redeliveries: counter(
                &r,
                "casebus_consumer_redeliveries_total",
                "Messages delivered to the consumer again (delivery count above 1)",
                &["consumer"],
            )?,
            duplicates,
            rejections: counter(
                &r,
                "casebus_rejections_total",
                "Commands rejected by reason",
                &["reason"],
            )?,
            import_items: counter(
                &r,
                "casebus_import_items_total",
                "Items of Import streams by the gRPC code of their outcome",
                &["code"],
            )?,
            events_consumed: counter(
                &r,
                "casebus_events_consumed_total",
                "Events consumed",
                &["consumer", "agency", "type"],
            )?,
            dead_letters: counter(
                &r,
                "casebus_dead_letters_total",
                "Messages moved to CASES_DLQ",
                &["consumer"],
            )?,
            consumer_pending: gauge(
                &r,
                "casebus_consumer_pending",
                "Messages not yet delivered to the consumer",
                &["consumer"],
            )?,
            handoffs_opened: counter(
                &r,
                "casebus_handoffs_opened_total",
                "Hand-offs requested, by receiving agency",
                &["to_agency"],
            )?,
            handoffs_acknowledged: counter(
                &r,
                "casebus_handoffs_acknowledged_total",
                "Hand-offs acknowledged, by receiving agency",
                &["agency"],
            )?,
            handoffs_overdue: gauge(
                &r,
                "casebus_handoffs_overdue",
                "Open hand-offs past their due time, by receiving agency",
                &["agency"],
            )?,
            verification_failures: counter(
                &r,
                "casebus_verification_failures_total",
                "Messages failing verification, by code",
                &["code"],
            )?,
            up,
            registry: r,
        })
    }

    /// The text exposition of every metric.
    pub fn render(&self) -> String {
        render(&self.registry)
    }
}

/// The text exposition of every metric of `registry`.
pub fn render(registry: &Registry) -> String {
    let mut out = Vec::new();
    // Encoding into a Vec cannot fail for well-formed metric families.
    let _ = TextEncoder::new().encode(&registry.gather(), &mut out);
    String::from_utf8(out).unwrap_or_default()
}

/// The metrics of `casebus witness`, labelled with the constant `service`, `witness`
/// (the witness key's name) and `origin` labels. The counters start from the witness's
/// state file, so `casebus_witness_forks_total > 0` says a fork was ever refused.
#[derive(Clone)]
pub struct WitnessMetrics {
    /// The registry to scrape.
    pub registry: Registry,
    /// The size of the last checkpoint cosigned.
    pub cosigned_size: IntGauge,
    /// The size of the last checkpoint read from `CHECKPOINTS`, cosigned or not.
    pub checkpoint_size: IntGauge,
    /// Unix time of the last cosignature published.
    pub last_cosignature: IntGauge,
    /// Checkpoints cosigned.
    pub cosignatures: IntCounter,
    /// Checkpoints refused as a fork of the log (inconsistent with the last cosigned).
    pub forks: IntCounter,
    /// Checkpoints refused for their signature or form (not of this log).
    pub refused: IntCounter,
    /// 1 while the witness follows the checkpoints.
    pub up: IntGauge,
}

impl std::fmt::Debug for WitnessMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WitnessMetrics").finish_non_exhaustive()
    }
}

impl WitnessMetrics {
    /// A registry with every witness metric.
    ///
    /// # Errors
    /// [`RuntimeError::Metrics`] when a label value is invalid.
    pub fn new(witness: &str, origin: &str) -> Result<Self, RuntimeError> {
        let constant = [
            ("service", "casebus-witness"),
            ("witness", witness),
            ("origin", origin),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        let r = Registry::new_custom(None, Some(constant)).map_err(RuntimeError::Metrics)?;
        let int_gauge = |name: &str, help: &str| -> Result<IntGauge, RuntimeError> {
            let g = IntGauge::new(name, help).map_err(RuntimeError::Metrics)?;
            r.register(Box::new(g.clone()))
                .map_err(RuntimeError::Metrics)?;
            Ok(g)
        };
        let int_counter = |name: &str, help: &str| -> Result<IntCounter, RuntimeError> {
            let c = IntCounter::new(name, help).map_err(RuntimeError::Metrics)?;
            r.register(Box::new(c.clone()))
                .map_err(RuntimeError::Metrics)?;
            Ok(c)
        };
        Ok(Self {
            cosigned_size: int_gauge(
                "casebus_witness_cosigned_size",
                "Size of the last checkpoint the witness cosigned",
            )?,
            checkpoint_size: int_gauge(
                "casebus_witness_checkpoint_size",
                "Size of the last checkpoint the witness read",
            )?,
            last_cosignature: int_gauge(
                "casebus_witness_last_cosignature_timestamp_seconds",
                "Unix time of the last cosignature the witness published",
            )?,
            cosignatures: int_counter(
                "casebus_witness_cosignatures_total",
                "Checkpoints the witness cosigned",
            )?,
            forks: int_counter(
                "casebus_witness_forks_total",
                "Checkpoints refused as inconsistent with the last one cosigned (a fork)",
            )?,
            refused: int_counter(
                "casebus_witness_refused_total",
                "Checkpoints refused as not signed by the log key or malformed",
            )?,
            up: int_gauge("casebus_witness_up", "1 while the witness follows the log")?,
            registry: r,
        })
    }
}

/// The method label of requests on a path that names no method casebus serves.
pub const UNKNOWN_METHOD: &str = "unknown";

/// The gRPC methods any casebus server may serve, as `package.Service/Method`: those of
/// the casebus descriptor set, plus the standard health and reflection services.
pub fn known_methods() -> std::collections::HashSet<String> {
    use prost::Message as _;
    let mut methods: std::collections::HashSet<String> = [
        "grpc.health.v1.Health/Check",
        "grpc.health.v1.Health/Watch",
        "grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
        "grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
    ]
    .into_iter()
    .map(str::to_owned)
    .collect();
    // The descriptor set is built into the binary; one that does not decode is a build
    // defect, and the labels then fall back to `unknown` rather than failing a service.
    if let Ok(set) = prost_types::FileDescriptorSet::decode(casebus_proto::FILE_DESCRIPTOR_SET) {
        for file in &set.file {
            let package = file.package();
            for service in &file.service {
                for method in &service.method {
                    let service_name = if package.is_empty() {
                        service.name().to_owned()
                    } else {
                        format!("{package}.{}", service.name())
                    };
                    methods.insert(format!("{service_name}/{}", method.name()));
                }
            }
        }
    }
    methods
}

/// A tower layer recording every gRPC request in [`Metrics`].
///
/// The method label comes only from the fixed set of [`known_methods`]: a path is chosen
/// by the caller before any authentication, so taking it from the request would let
/// anyone create a new series (and memory in every scraper) per request.
#[derive(Clone, Debug)]
pub struct GrpcMetricsLayer {
    metrics: Metrics,
    methods: Arc<std::collections::HashSet<String>>,
}

impl GrpcMetricsLayer {
    /// The layer for `metrics`.
    pub fn new(metrics: Metrics) -> Self {
        Self {
            metrics,
            methods: Arc::new(known_methods()),
        }
    }
}

impl<S> tower::Layer<S> for GrpcMetricsLayer {
    type Service = GrpcMetrics<S>;
    fn layer(&self, inner: S) -> Self::Service {
        GrpcMetrics {
            inner,
            metrics: self.metrics.clone(),
            methods: self.methods.clone(),
        }
    }
}

/// The service produced by [`GrpcMetricsLayer`].
#[derive(Clone, Debug)]
pub struct GrpcMetrics<S> {
    inner: S,
    metrics: Metrics,
    methods: Arc<std::collections::HashSet<String>>,
}

impl<S, B, R> tower::Service<http::Request<B>> for GrpcMetrics<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<R>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    B: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        // The path is `/package.Service/Method`; anything outside the known set is
        // `unknown`, so the series stay bounded whatever paths callers send.
        let path = request.uri().path().trim_start_matches('/');
        let method = if self.methods.contains(path) {
            path.to_owned()
        } else {
            UNKNOWN_METHOD.to_owned()
        };
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let metrics = self.metrics.clone();
        let start = Instant::now();
        Box::pin(async move {
            let response = inner.call(request).await;
            let code = match &response {
                Ok(r) => r
                    .headers()
                    .get("grpc-status")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse::<i32>().ok())
                    .map_or("OK", |c| code_name(tonic::Code::from_i32(c))),
                Err(_) => "Transport",
            };
            metrics
                .grpc_requests
                .with_label_values(&[&method, code])
                .inc();
            metrics
                .grpc_latency
                .with_label_values(&[&method])
                .observe(start.elapsed().as_secs_f64());
            response
        })
    }
}

/// The canonical name of a gRPC code, for labels.
pub fn code_name(code: tonic::Code) -> &'static str {
    use tonic::Code::*;
    match code {
        Ok => "OK",
        Cancelled => "CANCELLED",
        Unknown => "UNKNOWN",
        InvalidArgument => "INVALID_ARGUMENT",
        DeadlineExceeded => "DEADLINE_EXCEEDED",
        NotFound => "NOT_FOUND",
        AlreadyExists => "ALREADY_EXISTS",
        PermissionDenied => "PERMISSION_DENIED",
        ResourceExhausted => "RESOURCE_EXHAUSTED",
        FailedPrecondition => "FAILED_PRECONDITION",
        Aborted => "ABORTED",
        OutOfRange => "OUT_OF_RANGE",
        Unimplemented => "UNIMPLEMENTED",
        Internal => "INTERNAL",
        Unavailable => "UNAVAILABLE",
        DataLoss => "DATA_LOSS",
        Unauthenticated => "UNAUTHENTICATED",
    }
}

/// Serves `/metrics` (every metric of `registry`), `/healthz` (the process is alive) and
/// `/readyz` (`ready` is set) on `listener` until `shutdown`.
pub async fn serve_http(
    listener: TcpListener,
    registry: Registry,
    ready: Arc<AtomicBool>,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    use axum::routing::get;
    let app = axum::Router::new()
        .route(
            "/metrics",
            get(move || {
                let registry = registry.clone();
                async move {
                    (
                        [(http::header::CONTENT_TYPE, "text/plain; version=0.0.4")],
                        render(&registry),
                    )
                }
            }),
        )
        .route("/healthz", get(|| async { "ok" }))
        .route(
            "/readyz",
            get(move || {
                let ready = ready.clone();
                async move {
                    if ready.load(Ordering::Relaxed) {
                        (http::StatusCode::OK, "ready")
                    } else {
                        (http::StatusCode::SERVICE_UNAVAILABLE, "not ready")
                    }
                }
            }),
        );
    axum::serve(listener, app)
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await
}

/// Binds a listener, naming it in the error.
///
/// # Errors
/// [`RuntimeError::Bind`] when the address is taken or not local.
pub async fn bind(
    what: &'static str,
    addr: std::net::SocketAddr,
) -> Result<TcpListener, RuntimeError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| RuntimeError::Bind {
            what,
            addr: addr.to_string(),
            source,
        })
}
