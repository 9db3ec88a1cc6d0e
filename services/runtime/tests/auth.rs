//! Caller authentication over real gRPC on loopback: bearer tokens (valid, missing,
//! expired, forged, from an unknown issuer, for another audience, revoked, sent over
//! plaintext to a non-loopback listener) and TLS client certificates (from the trusted
//! CA, from an unknown CA, naming their actor), in front of the standard health service.

use std::sync::{Arc, Mutex};

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
use time::OffsetDateTime;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity, Server, ServerTlsConfig};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;

use casebus_integrity::token::{Audience, IssuerKey, Role, TrustedIssuers};
use casebus_proto::OfficeId;
use casebus_runtime::args::GrpcArgs;
use casebus_runtime::auth::{Authenticator, Caller, Method};
use casebus_runtime::grpc;

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
    let auth = Authenticator::new(
        Audience::Agency,
        Some(TrustedIssuers::default().with(&issuer)),
        false,
    );
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
            Audience::Agency,
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
            Audience::Agency,
            &office(),
            "li.wei",
            &[Role::Reader],
            now - time::Duration::hours(2),
            time::Duration::hours(1),
        )
        .expect("token");
    let forged = IssuerKey::from_seed("ops#1", [4; 32])
        .issue(
            Audience::Agency,
            &office(),
            "li.wei",
            &[Role::Reader],
            now,
            time::Duration::hours(1),
        )
        .expect("token");
    let foreign = IssuerKey::from_seed("someone-else", [4; 32])
        .issue(
            Audience::Agency,
            &office(),
            "li.wei",
            &[Role::Reader],
            now,
            time::Duration::hours(1),
        )
        .expect("token");
    let for_gateway = issuer
        .issue(
            Audience::Gateway,
            &office(),
            "li.wei",
            &[Role::Reader],
            now,
            time::Duration::hours(1),
        )
        .expect("token");
    for (label, token, needle) in [
        ("no token", None, "missing credentials"),
        (
            "for another audience",
            Some(for_gateway.as_str()),
            "token is for the gateway audience, not agency",
        ),
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
    let auth = Authenticator::new(Audience::Agency, None, true);
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

fn token(issuer: &IssuerKey, audience: Audience) -> String {
    issuer
        .issue(
            audience,
            &office(),
            "li.wei",
            &[Role::Reader],
            OffsetDateTime::now_utc(),
            time::Duration::hours(1),
        )
        .expect("token")
}

async fn plaintext_channel(port: u16) -> Channel {
    Channel::from_shared(format!("http://127.0.0.1:{port}"))
        .expect("uri")
        .connect()
        .await
        .expect("connect")
}

#[tokio::test]
async fn a_revoked_token_is_refused_on_the_next_call_within_a_second_of_the_list_changing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let list = dir.path().join("revoked.txt");
    std::fs::write(&list, "# revoked token ids\n").expect("list");
    let issuer = IssuerKey::from_seed("ops#1", [3; 32]);
    let auth = Authenticator::new(
        Audience::Agency,
        Some(TrustedIssuers::default().with(&issuer)),
        false,
    )
    .with_revocation_list(&list)
    .expect("list loads");
    let shutdown = CancellationToken::new();
    let (port, seen) = serve(auth, None, shutdown.clone()).await;
    let channel = plaintext_channel(port).await;
    let (stolen, other) = (
        token(&issuer, Audience::Agency),
        token(&issuer, Audience::Agency),
    );
    check(channel.clone(), Some(&stolen))
        .await
        .expect("not revoked yet");
    let jti = seen.lock().expect("lock")[0].token_id.clone();
    assert_eq!(jti.len(), 24, "a token id is 12 random bytes in hex");

    std::fs::write(&list, format!("# revoked token ids\n{jti}\n")).expect("list");
    let refused = casebus_test_support::wait_until(
        std::time::Duration::from_secs(5),
        "the revoked token to be refused",
        async || check(channel.clone(), Some(&stolen)).await.err(),
    )
    .await
    .expect("refused within the poll interval");
    assert_eq!(refused.code(), tonic::Code::Unauthenticated);
    assert!(
        refused
            .message()
            .contains(&format!("token {jti} is revoked")),
        "{}",
        refused.message()
    );
    check(channel.clone(), Some(&other))
        .await
        .expect("another token of the same issuer still passes");

    // A list that becomes invalid keeps the last good one: the token stays refused.
    std::fs::write(&list, "not a token id!\n").expect("list");
    let stamp = std::fs::metadata(&list)
        .expect("meta")
        .modified()
        .expect("mtime");
    casebus_test_support::wait_until(
        std::time::Duration::from_secs(5),
        "a second to pass since the change, so the list is re-read",
        async || {
            (std::time::SystemTime::now()
                .duration_since(stamp)
                .unwrap_or_default()
                > std::time::Duration::from_millis(1100))
            .then_some(())
        },
    )
    .await
    .expect("time passes");
    let status = check(channel.clone(), Some(&stolen))
        .await
        .expect_err("still revoked");
    assert!(
        status.message().contains("is revoked"),
        "{}",
        status.message()
    );
    shutdown.cancel();
}

#[tokio::test]
async fn bearer_tokens_over_plaintext_grpc_are_refused_unless_the_listener_is_loopback_or_allowed()
{
    let dir = tempfile::tempdir().expect("tempdir");
    let issuer = IssuerKey::from_seed("ops#1", [3; 32]);
    let trust = dir.path().join("trust.toml");
    std::fs::write(&trust, TrustedIssuers::default().with(&issuer).to_toml()).expect("trust");
    let args = |listen: &str, allow: bool| GrpcArgs {
        listen: listen.parse().expect("addr"),
        tls_cert: None,
        tls_key: None,
        client_ca: None,
        trusted_issuers: Some(trust.clone()),
        revoked_tokens: None,
        allow_plaintext_tokens: allow,
        reflection: true,
    };
    let good = token(&issuer, Audience::Agency);
    for (listen, allow, accepted) in [
        ("0.0.0.0:50051", false, false),
        ("10.1.2.3:50051", false, false),
        ("[::]:50051", false, false),
        ("0.0.0.0:50051", true, true),
        ("127.0.0.1:50051", false, true),
        ("[::1]:50051", false, true),
    ] {
        let auth = grpc::authenticator(&args(listen, allow), Audience::Agency).expect("auth");
        let shutdown = CancellationToken::new();
        let (port, seen) = serve(auth, None, shutdown.clone()).await;
        let outcome = check(plaintext_channel(port).await, Some(&good)).await;
        match (accepted, outcome) {
            (true, Ok(())) => {}
            (false, Err(status)) => {
                assert_eq!(status.code(), tonic::Code::Unauthenticated, "{listen}");
                assert!(
                    status
                        .message()
                        .contains("bearer tokens are refused over plaintext gRPC"),
                    "{listen}: {}",
                    status.message()
                );
                assert!(!status.message().contains(&good));
                assert!(seen.lock().expect("lock").is_empty(), "{listen}");
            }
            (expected, outcome) => {
                panic!("{listen} allow={allow}: expected accepted={expected}, got {outcome:?}")
            }
        }
        shutdown.cancel();
    }
}

#[tokio::test]
async fn a_certificate_callers_actor_comes_from_its_certificate_and_the_header_only_where_it_allows()
 {
    let pki = pki();
    let auth = Authenticator::new(Audience::Agency, None, true);
    let tls = ServerTlsConfig::new()
        .identity(Identity::from_pem(&pki.server_cert, &pki.server_key))
        .client_ca_root(Certificate::from_pem(&pki.ca_pem))
        .client_auth_optional(true);
    let shutdown = CancellationToken::new();
    let (port, seen) = serve(auth, Some(tls), shutdown.clone()).await;
    let with_uris = |uris: &[&str]| {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
        params
            .distinguished_name
            .push(DnType::CommonName, "customs:ningbo");
        params.serial_number = Some(rcgen::SerialNumber::from(vec![0x0a, 0x1b]));
        for uri in uris {
            params
                .subject_alt_names
                .push(rcgen::SanType::URI((*uri).try_into().expect("ia5")));
        }
        let key = KeyPair::generate().expect("key");
        let cert = params.signed_by(&key, &pki.issuer).expect("signed");
        (cert.pem(), key.serialize_pem())
    };
    let call_as = |cert: (String, String), header: Option<&'static str>| {
        let ca_pem = pki.ca_pem.clone();
        async move {
            let tls = ClientTlsConfig::new()
                .ca_certificate(Certificate::from_pem(ca_pem))
                .domain_name("localhost")
                .identity(Identity::from_pem(cert.0, cert.1));
            let channel = Channel::from_shared(format!("https://127.0.0.1:{port}"))
                .expect("uri")
                .tls_config(tls)
                .expect("client tls")
                .connect()
                .await
                .expect("handshake");
            let mut request = tonic::Request::new(HealthCheckRequest {
                service: String::new(),
            });
            if let Some(actor) = header {
                request
                    .metadata_mut()
                    .insert("x-casebus-actor", actor.parse().expect("ascii"));
            }
            HealthClient::new(channel)
                .check(request)
                .await
                .expect("a trusted certificate passes");
        }
    };
    // An attacker holding a plain office certificate claims to be the chief judge.
    call_as(with_uris(&[]), Some("chief.judge")).await;
    call_as(
        with_uris(&["casebus:actor:clerk.zhao"]),
        Some("chief.judge"),
    )
    .await;
    call_as(
        with_uris(&["casebus:actor:*", "casebus:actor:intake"]),
        Some("officer.qian"),
    )
    .await;
    call_as(
        with_uris(&["casebus:actor:*", "casebus:actor:intake"]),
        None,
    )
    .await;
    let actors: Vec<String> = seen
        .lock()
        .expect("lock")
        .iter()
        .map(|c| c.actor.clone())
        .collect();
    assert_eq!(
        actors,
        ["certificate 0a:1b", "clerk.zhao", "officer.qian", "intake"],
        "the header counts only for a certificate that delegates"
    );
    let expiry = seen.lock().expect("lock")[0].expires_at;
    assert!(
        expiry.is_some_and(|at| at > OffsetDateTime::now_utc()),
        "a certificate caller carries its certificate's notAfter"
    );
    shutdown.cancel();
}
