//! The gRPC metrics layer over real gRPC on loopback: requests on paths no casebus
//! service serves, sent without credentials as an attacker would, are all counted under
//! the one `unknown` method label, so they cannot grow the series of `/metrics`.

use std::collections::BTreeSet;

use futures::StreamExt as _;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::codegen::http::uri::PathAndQuery;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Server};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;

use casebus_integrity::token::{Audience, IssuerKey, TrustedIssuers};
use casebus_runtime::auth::Authenticator;
use casebus_runtime::metrics::{GrpcMetricsLayer, Metrics, known_methods};

/// The names of the series (metric name and labels) of an exposition.
fn series(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| l.rsplit_once(' ').map(|(name, _)| name.to_owned()))
        .collect()
}

/// A tiny deterministic generator, so a failure names the paths it sent.
fn next(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

#[tokio::test]
async fn ten_thousand_unauthenticated_requests_on_random_paths_leave_the_series_count_unchanged() {
    let metrics = Metrics::new("test", "customs:ningbo").expect("metrics");
    let issuer = IssuerKey::from_seed("ops#1", [3; 32]);
    let auth = Authenticator::new(
        Audience::Agency,
        Some(TrustedIssuers::default().with(&issuer)),
        false,
    );
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let (_reporter, health) = tonic_health::server::health_reporter();
    let shutdown = CancellationToken::new();
    let router = Server::builder()
        .layer(GrpcMetricsLayer::new(metrics.clone()))
        .add_service(InterceptedService::new(health, auth.interceptor()));
    let stop = shutdown.clone();
    tokio::spawn(async move {
        let _ = router
            .serve_with_incoming_shutdown(
                tonic::transport::server::TcpIncoming::from(listener),
                async move { stop.cancelled().await },
            )
            .await;
    });
    let channel = Channel::from_shared(format!("http://127.0.0.1:{port}"))
        .expect("uri")
        .connect()
        .await
        .expect("connect");

    // One call on a real method and one on a random path, so both label values exist.
    let status = HealthClient::new(channel.clone())
        .check(HealthCheckRequest::default())
        .await
        .expect_err("no credentials");
    assert_eq!(status.code(), tonic::Code::Unauthenticated);
    let call = |path: String| {
        let channel = channel.clone();
        async move {
            let mut grpc = tonic::client::Grpc::new(channel);
            grpc.ready().await.expect("ready");
            let codec = tonic_prost::ProstCodec::<(), ()>::default();
            let path = PathAndQuery::try_from(path).expect("path");
            grpc.unary(tonic::Request::new(()), path, codec)
                .await
                .expect_err("no such method")
                .code()
        }
    };
    // A path under a served service reaches its interceptor first (UNAUTHENTICATED),
    // any other path the router (UNIMPLEMENTED): warm both up.
    call("/attacker.v1.Probe/Warmup".into()).await;
    call("/grpc.health.v1.Health/Warmup".into()).await;
    let before = series(&metrics.render());

    let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
    let paths: Vec<String> = (0..10_000)
        .map(|i| match i % 4 {
            0 => format!("/x{:016x}.Svc/M{}", next(&mut seed), i),
            1 => format!("/grpc.health.v1.Health/Check{:x}", next(&mut seed)),
            2 => format!("/casebus.agency.v1.AgencyService/{:x}", next(&mut seed)),
            _ => format!("/{:x}/{:x}/{:x}", next(&mut seed), i, next(&mut seed)),
        })
        .collect();
    let codes: Vec<tonic::Code> = futures::stream::iter(paths.into_iter().map(call))
        .buffer_unordered(32)
        .collect()
        .await;
    assert_eq!(codes.len(), 10_000, "every request was answered");
    let distinct: BTreeSet<String> = codes.iter().map(|c| format!("{c:?}")).collect();
    assert!(
        distinct.is_subset(&BTreeSet::from([
            "Unimplemented".to_owned(),
            "Unauthenticated".to_owned()
        ])),
        "random paths are refused: {distinct:?}"
    );
    let after = series(&metrics.render());
    assert_eq!(
        after.len(),
        before.len(),
        "new series: {:?}",
        after.difference(&before).take(5).collect::<Vec<_>>()
    );
    let unknown: u64 = ["UNIMPLEMENTED", "UNAUTHENTICATED"]
        .iter()
        .map(|code| {
            metrics
                .grpc_requests
                .with_label_values(&["unknown", code])
                .get()
        })
        .sum();
    assert_eq!(unknown, 10_002, "each random path counted under `unknown`");
    let check = metrics
        .grpc_requests
        .with_label_values(&["grpc.health.v1.Health/Check", "UNAUTHENTICATED"])
        .get();
    assert_eq!(check, 1, "a real method keeps its own label");
    shutdown.cancel();
}

#[test]
fn the_known_methods_are_those_of_the_descriptor_set_plus_health_and_reflection() {
    let methods = known_methods();
    for expected in [
        "casebus.agency.v1.AgencyService/OpenCase",
        "casebus.agency.v1.AgencyService/Import",
        "casebus.gateway.v1.Gateway/WatchFeed",
        "grpc.health.v1.Health/Check",
        "grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
    ] {
        assert!(methods.contains(expected), "{expected}");
    }
    assert!(!methods.contains("casebus.agency.v1.AgencyService/DropTables"));
}
