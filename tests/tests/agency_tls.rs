//! An agency service serving TLS with client certificates, as the real binary is
//! configured in production: a certificate whose common name is the service's office
//! records events (the actor from the certificate; the `x-casebus-actor` header counts only
//! for a certificate with the URI `casebus:actor:*`), a certificate of another
//! office is refused with PERMISSION_DENIED, a bearer token still works over TLS, and a
//! caller with neither is UNAUTHENTICATED.

mod agency_harness;

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
use tonic::Code;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};

use casebus_proto::agency::v1::agency_service_client::AgencyServiceClient;
use casebus_proto::agency::v1::{AddNoteRequest, CommandReply};

use agency_harness::*;

struct Pki {
    ca_pem: String,
    issuer: Issuer<'static, KeyPair>,
}

fn pki() -> Pki {
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(DnType::CommonName, "casebus test CA");
    let key = KeyPair::generate().expect("key");
    let cert = params.self_signed(&key).expect("self-signed");
    Pki {
        ca_pem: cert.pem(),
        issuer: Issuer::new(params, key),
    }
}

/// A certificate and key (PEM) for `common_name`, signed by the CA.
fn leaf(pki: &Pki, common_name: &str, sans: Vec<String>) -> (String, String) {
    let mut params = CertificateParams::new(sans).expect("params");
    params
        .distinguished_name
        .push(DnType::CommonName, common_name);
    let key = KeyPair::generate().expect("key");
    let cert = params.signed_by(&key, &pki.issuer).expect("signed");
    (cert.pem(), key.serialize_pem())
}

/// A certificate for `common_name` with URI subject alternative names `uris`.
fn leaf_with_uris(pki: &Pki, common_name: &str, uris: &[&str]) -> (String, String) {
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
    params
        .distinguished_name
        .push(DnType::CommonName, common_name);
    for uri in uris {
        params
            .subject_alt_names
            .push(rcgen::SanType::URI((*uri).try_into().expect("ia5")));
    }
    let key = KeyPair::generate().expect("key");
    let cert = params.signed_by(&key, &pki.issuer).expect("signed");
    (cert.pem(), key.serialize_pem())
}

async fn connect(pki: &Pki, running: &Running, identity: Option<(String, String)>) -> Channel {
    let mut tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(&pki.ca_pem))
        .domain_name("localhost");
    if let Some((cert, key)) = identity {
        tls = tls.identity(Identity::from_pem(cert, key));
    }
    Channel::from_shared(format!("https://{}", running.grpc))
        .expect("uri")
        .tls_config(tls)
        .expect("client tls")
        .timeout(CALL_TIMEOUT)
        .connect()
        .await
        .expect("TLS handshake")
}

async fn note(
    channel: Channel,
    token: Option<&str>,
    actor: Option<&str>,
    request_id: &str,
) -> Result<tonic::Response<CommandReply>, tonic::Status> {
    let mut request = tonic::Request::new(AddNoteRequest {
        meta: meta_with("C-TLS", request_id),
        note_added: agency_harness::note("over TLS"),
    });
    if let Some(token) = token {
        request.metadata_mut().insert(
            "authorization",
            format!("Bearer {token}").parse().expect("ascii"),
        );
    }
    if let Some(actor) = actor {
        request
            .metadata_mut()
            .insert("x-casebus-actor", actor.parse().expect("ascii"));
    }
    AgencyServiceClient::new(channel).add_note(request).await
}

#[tokio::test]
async fn a_client_certificate_naming_the_office_records_and_one_of_another_office_is_refused() {
    let f = Fixture::start().await;
    let pki = pki();
    let dir = f.dir.path();
    let (server_cert, server_key) = leaf(&pki, "localhost", vec!["localhost".into()]);
    for (name, text) in [
        ("server.pem", &server_cert),
        ("server.key", &server_key),
        ("ca.pem", &pki.ca_pem),
    ] {
        std::fs::write(dir.join(name), text).expect("write PEM");
    }
    let path = |name: &str| dir.join(name).display().to_string();
    let (cert, key, ca) = (path("server.pem"), path("server.key"), path("ca.pem"));
    let customs = f
        .spawn_tls(
            CUSTOMS,
            &["--tls-cert", &cert, "--tls-key", &key, "--client-ca", &ca],
        )
        .await;

    // The office's own certificate of a back-office system that records for many people
    // (`casebus:actor:*`): the case opens and a note records the header's actor.
    let own = connect(
        &pki,
        &customs,
        Some(leaf_with_uris(&pki, CUSTOMS, &["casebus:actor:*"])),
    )
    .await;
    let mut common = AgencyServiceClient::new(own.clone());
    let mut open = tonic::Request::new(casebus_proto::agency::v1::OpenCaseRequest {
        meta: meta("C-TLS"),
        case_opened: opened("over TLS"),
    });
    open.metadata_mut()
        .insert("x-casebus-actor", "officer-9".parse().expect("ascii"));
    common.open_case(open).await.expect("open over mTLS");
    let reply = note(own, None, Some("officer-9"), "tls-1")
        .await
        .expect("note over mTLS")
        .into_inner();
    let loaded = f.load("C-TLS").await;
    let stored = loaded
        .events
        .iter()
        .find(|e| e.event.event_id.as_str() == reply.event_id)
        .expect("the note is stored");
    assert_eq!(stored.event.event.actor, "officer-9");
    assert_eq!(stored.event.office.as_str(), CUSTOMS);

    // A certificate naming its own actor, and one naming none: the header an attacker adds
    // is ignored and the actor comes from the certificate.
    for (request_id, cert, expected) in [
        (
            "tls-named",
            leaf_with_uris(&pki, CUSTOMS, &["casebus:actor:clerk.zhao"]),
            "clerk.zhao",
        ),
        ("tls-plain", leaf(&pki, CUSTOMS, vec![]), "certificate "),
    ] {
        let channel = connect(&pki, &customs, Some(cert)).await;
        let reply = note(channel, None, Some("chief.judge"), request_id)
            .await
            .expect("note over mTLS")
            .into_inner();
        let loaded = f.load("C-TLS").await;
        let actor = loaded
            .events
            .iter()
            .find(|e| e.event.event_id.as_str() == reply.event_id)
            .map(|e| e.event.event.actor.clone())
            .expect("the note is stored");
        assert!(actor.starts_with(expected), "{request_id}: {actor}");
        assert_ne!(actor, "chief.judge");
    }

    // Another office's certificate from the same CA: authenticated, but not this office.
    let police = connect(&pki, &customs, Some(leaf(&pki, POLICE, vec![]))).await;
    let status = refused(
        note(police, None, None, "tls-2").await,
        Code::PermissionDenied,
    );
    assert_eq!(reason(&status), "wrong_office");

    // No certificate: a token still works over TLS; nothing at all is unauthenticated.
    let anonymous = connect(&pki, &customs, None).await;
    note(anonymous.clone(), Some(&customs.token), None, "tls-3")
        .await
        .expect("a token over TLS");
    refused(
        note(anonymous, None, None, "tls-4").await,
        Code::Unauthenticated,
    );

    assert_eq!(
        f.load("C-TLS").await.state.version,
        5,
        "open and four notes (header, certificate-named, plain certificate, token)"
    );
}
