//! Caller authentication over real gRPC on loopback: bearer tokens (valid, missing,
//! expired, forged, from an unknown issuer) and TLS client certificates (from the
//! trusted CA, from an unknown CA), in front of the standard health service.

use std::sync::{Arc, Mutex};

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
use time::OffsetDateTime;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity, Server, ServerTlsConfig};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;

use casebus_integrity::token::{IssuerKey, Role, TrustedIssuers};
use casebus_proto::OfficeId;
use casebus_runtime::auth::{Authenticator, Caller, Method};

struct Pki {
    ca_pem: String,
    server_cert: String,
    server_key: String,
    issuer: Issuer<'static, KeyPair>,
}

fn ca(name: &str) -> (String, Issuer<'static, KeyPair>) {
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    let key = KeyPair::generate().expect("key");
    let cert = params.self_signed(&key).expect("self-signed");
    (cert.pem(), Issuer::new(params, key))
}

fn leaf(
    issuer: &Issuer<'static, KeyPair>,
    common_name: &str,
    sans: Vec<String>,
) -> (String, String) {
    let mut params = CertificateParams::new(sans).expect("params");
    params
        .distinguished_name
        .push(DnType::CommonName, common_name);
    let key = KeyPair::generate().expect("key");
    let cert = params.signed_by(&key, issuer).expect("signed");
    (cert.pem(), key.serialize_pem())
}

fn pki() -> Pki {
    let (ca_pem, issuer) = ca("casebus test CA");
    let (server_cert, server_key) = leaf(&issuer, "localhost", vec!["localhost".into()]);
    Pki {
        ca_pem,
        server_cert,
        server_key,
        issuer,
    }
}

/// Serves the health service behind the authenticator; returns the port and the callers seen.
async fn serve(
    auth: Authenticator,
    tls: Option<ServerTlsConfig>,
    shutdown: CancellationToken,
) -> (u16, Arc<Mutex<Vec<Caller>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let record = seen.clone();
    let mut intercept = auth.interceptor();
    let (_reporter, health) = tonic_health::server::health_reporter();
    let service = InterceptedService::new(health, move |request| {
        let request = intercept(request)?;
        if let Some(caller) = request.extensions().get::<Caller>() {
            record.lock().expect("lock").push(caller.clone());
        }
        Ok(request)
    });
    let mut server = Server::builder();
    if let Some(tls) = tls {
        server = server.tls_config(tls).expect("tls config");
    }
    let router = server.add_service(service);
    tokio::spawn(async move {
        let _ = router
            .serve_with_incoming_shutdown(
                tonic::transport::server::TcpIncoming::from(listener),
                async move { shutdown.cancelled().await },
            )
            .await;
    });
    (port, seen)
}

async fn check(channel: Channel, token: Option<&str>) -> Result<(), tonic::Status> {
    let mut request = tonic::Request::new(HealthCheckRequest {
        service: String::new(),
    });
    if let Some(token) = token {
        request.metadata_mut().insert(
            "authorization",
            format!("Bearer {token}").parse().expect("ascii"),
        );
    }
    HealthClient::new(channel).check(request).await.map(|_| ())
}

fn office() -> OfficeId {
    OfficeId::new("customs:ningbo").expect("valid")
}

#[tokio::test]
async fn tokens_of_a_trusted_issuer_pass_and_every_bad_token_is_unauthenticated() {
    let issuer = IssuerKey::from_seed("ops#1", [3; 32]);
    let auth = Authenticator::new(Some(TrustedIssuers::default().with(&issuer)), false);
    let shutdown = CancellationToken::new();
    let (port, seen) = serve(auth, None, shutdown.clone()).await;
    let channel = Channel::from_shared(format!("http://127.0.0.1:{port}"))
        .expect("uri")
        .connect()
        .await
        .expect("connect");
    let now = OffsetDateTime::now_utc();

    let good = issuer
        .issue(
            &office(),
            "li.wei",
            &[Role::Reader],
            now,
            time::Duration::hours(1),
        )
        .expect("token");
    check(channel.clone(), Some(&good))
        .await
        .expect("a valid token passes");
    let callers = seen.lock().expect("lock").clone();
    assert_eq!(callers.len(), 1);
    assert_eq!(
        (
            callers[0].office.clone(),
            callers[0].actor.as_str(),
            callers[0].method
        ),
        (office(), "li.wei", Method::Token)
    );

    let expired = issuer
        .issue(
            &office(),
            "li.wei",
            &[Role::Reader],
            now - time::Duration::hours(2),
            time::Duration::hours(1),
        )
        .expect("token");
    let forged = IssuerKey::from_seed("ops#1", [4; 32])
        .issue(
            &office(),
            "li.wei",
            &[Role::Reader],
            now,
            time::Duration::hours(1),
        )
        .expect("token");
    let foreign = IssuerKey::from_seed("someone-else", [4; 32])
        .issue(
            &office(),
            "li.wei",
            &[Role::Reader],
            now,
            time::Duration::hours(1),
        )
        .expect("token");
    for (label, token, needle) in [
        ("no token", None, "missing credentials"),
        ("expired", Some(expired.as_str()), "expired"),
        ("signed by another key", Some(forged.as_str()), "signature"),
        ("unknown issuer", Some(foreign.as_str()), "unknown issuer"),
        ("garbage", Some("not-a-token"), "malformed"),
    ] {
        let status = check(channel.clone(), token).await.expect_err(label);
        assert_eq!(status.code(), tonic::Code::Unauthenticated, "{label}");
        assert!(
            status.message().contains(needle),
            "{label}: {}",
            status.message()
        );
        assert!(
            !status.message().contains(token.unwrap_or("\u{0}")),
            "{label}: the token is not echoed"
        );
    }
    assert_eq!(
        seen.lock().expect("lock").len(),
        1,
        "no refused call reached the service"
    );
    shutdown.cancel();
}

#[tokio::test]
async fn a_client_certificate_of_the_trusted_ca_names_the_office_and_one_of_an_unknown_ca_is_refused()
 {
    let pki = pki();
    let auth = Authenticator::new(None, true);
    let tls = ServerTlsConfig::new()
        .identity(Identity::from_pem(&pki.server_cert, &pki.server_key))
        .client_ca_root(Certificate::from_pem(&pki.ca_pem))
        .client_auth_optional(true);
    let shutdown = CancellationToken::new();
    let (port, seen) = serve(auth, Some(tls), shutdown.clone()).await;

    let connect = |cert: Option<(String, String)>| {
        let ca_pem = pki.ca_pem.clone();
        async move {
            let mut tls = ClientTlsConfig::new()
                .ca_certificate(Certificate::from_pem(ca_pem))
                .domain_name("localhost");
            if let Some((cert, key)) = cert {
                tls = tls.identity(Identity::from_pem(cert, key));
            }
            Channel::from_shared(format!("https://127.0.0.1:{port}"))
                .expect("uri")
                .tls_config(tls)
                .expect("client tls")
                .connect()
                .await
        }
    };

    let office_cert = leaf(&pki.issuer, "customs:ningbo", vec![]);
    let channel = connect(Some(office_cert))
        .await
        .expect("handshake with a trusted certificate");
    check(channel, None)
        .await
        .expect("a trusted certificate passes");
    let callers = seen.lock().expect("lock").clone();
    assert_eq!(
        (callers[0].office.clone(), callers[0].method),
        (office(), Method::Certificate)
    );

    // No certificate and no token: the handshake succeeds (certificates are optional for
    // token callers) but the call is unauthenticated.
    let anonymous = connect(None)
        .await
        .expect("handshake without a certificate");
    let status = check(anonymous, None).await.expect_err("anonymous");
    assert_eq!(status.code(), tonic::Code::Unauthenticated);

    // A certificate whose common name is not an office id is unauthenticated.
    let odd = connect(Some(leaf(&pki.issuer, "not an office", vec![])))
        .await
        .expect("handshake");
    let status = check(odd, None).await.expect_err("bad common name");
    assert_eq!(status.code(), tonic::Code::Unauthenticated);
    assert!(
        status.message().contains("common name"),
        "{}",
        status.message()
    );

    // A certificate from an unknown CA is refused by the TLS layer itself: the call never
    // reaches the service.
    let (_, rogue_ca) = ca("rogue CA");
    let rogue = leaf(&rogue_ca, "customs:ningbo", vec![]);
    let refused = match connect(Some(rogue)).await {
        Err(_) => true,
        Ok(channel) => check(channel, None).await.is_err(),
    };
    assert!(
        refused,
        "a certificate of an unknown CA must not get through"
    );
    assert_eq!(
        seen.lock().expect("lock").len(),
        1,
        "only the trusted caller reached the service"
    );
    shutdown.cancel();
}
