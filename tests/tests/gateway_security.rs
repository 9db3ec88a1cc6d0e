//! Who may read, and the record of every read, through the real binary: calls without a
//! token, with an expired token, a token signed by another key or an unknown issuer are
//! UNAUTHENTICATED; a client certificate of an unknown CA never gets through the TLS
//! handshake; none of them leaves an audit record. Every read of every kind leaves
//! exactly one record (one per case for a feed batch), and a read whose record cannot
//! be written fails with UNAVAILABLE and returns nothing.

mod gateway_common;

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
use time::OffsetDateTime;
use tonic::Code;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};

use casebus_bus::StreamSettings;
use casebus_integrity::token::{Audience, IssuerKey, Role};
use casebus_proto::event::v1::Agency;
use casebus_proto::gateway::v1::gateway_client::GatewayClient;
use casebus_proto::gateway::v1::{
    FindCaseByReferenceRequest, GetCaseRequest, GetTimelineRequest, ListCasesRequest,
    WatchFeedRequest, WatchTimelineRequest, watch_feed_response, watch_timeline_response,
};
use casebus_test_support::wait_until;

use gateway_common::catalogue::{declined_case, note, opened};
use gateway_common::*;

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

/// Connects over TLS trusting `ca_pem`, presenting `identity` if given.
async fn tls_channel(
    gateway: &Gateway,
    ca_pem: &str,
    identity: Option<(String, String)>,
) -> Result<Channel, tonic::transport::Error> {
    let mut tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(ca_pem))
        .domain_name("localhost");
    if let Some((cert, key)) = identity {
        tls = tls.identity(Identity::from_pem(cert, key));
    }
    Channel::from_shared(format!("https://{}", gateway.grpc))
        .expect("uri")
        .timeout(CALL_TIMEOUT)
        .tls_config(tls)?
        .connect()
        .await
}

fn timeline_request(case_id: &str) -> GetTimelineRequest {
    GetTimelineRequest {
        case_id: case_id.into(),
        ..Default::default()
    }
}

#[tokio::test]
async fn refused_credentials_are_unauthenticated_and_leave_no_audit_record() {
    let f = Fixture::start().await;
    f.script(&case("AUTH-1"), declined_case()).await;
    let (ca_pem, ca_issuer) = ca("casebus test CA");
    let (server_cert, server_key) = leaf(
        &ca_issuer,
        "localhost",
        vec!["localhost".into(), "127.0.0.1".into()],
    );
    let write = |name: &str, text: &str| {
        let path = f.path(name);
        std::fs::write(&path, text).expect("write pem");
        path.display().to_string()
    };
    let extra = vec![
        "--tls-cert".to_owned(),
        write("server.pem", &server_cert),
        "--tls-key".to_owned(),
        write("server.key", &server_key),
        "--client-ca".to_owned(),
        write("ca.pem", &ca_pem),
    ];
    let mut gateway = f.gateway_with("gw-auth", &f.db("gw-auth"), &extra).await;
    gateway.wait_projected(f.cases_last().await).await;

    let channel = tls_channel(&gateway, &ca_pem, None)
        .await
        .expect("a TLS connection without a client certificate (token callers)");
    let now = OffsetDateTime::now_utc();
    let expired = f
        .issuer
        .issue(
            Audience::Gateway,
            &office(CUSTOMS),
            "officer-7",
            &[Role::Reader],
            now - time::Duration::hours(2),
            time::Duration::hours(1),
        )
        .expect("token");
    let forged = IssuerKey::from_seed("test-issuer", [43; 32])
        .issue(
            Audience::Gateway,
            &office(CUSTOMS),
            "officer-7",
            &[Role::Reader],
            now,
            time::Duration::hours(1),
        )
        .expect("token");
    let unknown_issuer = IssuerKey::from_seed("someone-else", [42; 32])
        .issue(
            Audience::Gateway,
            &office(CUSTOMS),
            "officer-7",
            &[Role::Admin],
            now,
            time::Duration::hours(1),
        )
        .expect("token");
    let before = f.audit_records().await.len();
    for (label, token) in [
        ("no token", None),
        ("expired token", Some(expired.as_str())),
        ("token signed by another key", Some(forged.as_str())),
        ("token of an unknown issuer", Some(unknown_issuer.as_str())),
        ("garbage token", Some("cb1.garbage.garbage")),
    ] {
        let mut client = GatewayClient::with_interceptor(channel.clone(), Bearer::new(token));
        let status = client
            .get_timeline(timeline_request("AUTH-1"))
            .await
            .expect_err(label);
        assert_eq!(status.code(), Code::Unauthenticated, "{label}: {status:?}");
        let status = client
            .watch_feed(WatchFeedRequest { from_position: 0 })
            .await
            .expect_err(label);
        assert_eq!(status.code(), Code::Unauthenticated, "{label}: {status:?}");
    }

    // A certificate of a CA the gateway does not trust fails at the TLS layer.
    let (_, rogue_ca) = ca("rogue CA");
    let rogue = leaf(&rogue_ca, CUSTOMS, vec![]);
    let refused = match tls_channel(&gateway, &ca_pem, Some(rogue)).await {
        Err(_) => true,
        Ok(channel) => GatewayClient::new(channel)
            .get_timeline(timeline_request("AUTH-1"))
            .await
            .is_err(),
    };
    assert!(
        refused,
        "a certificate of an unknown CA must not get through"
    );
    assert_eq!(
        f.audit_records().await.len(),
        before,
        "no refused call left an audit record"
    );

    // A certificate of the trusted CA names the office (clerk and reader roles).
    let trusted = tls_channel(&gateway, &ca_pem, Some(leaf(&ca_issuer, POLICE, vec![])))
        .await
        .expect("handshake with a trusted certificate");
    let page = GatewayClient::new(trusted)
        .get_timeline(timeline_request("AUTH-1"))
        .await
        .expect("a trusted certificate reads")
        .into_inner();
    assert_eq!(page.events.len(), 4);
    // And a valid token over TLS.
    let mut client =
        GatewayClient::with_interceptor(channel, Bearer::new(Some(&f.reader(CUSTOMS))));
    client
        .get_timeline(timeline_request("AUTH-1"))
        .await
        .expect("a valid token reads");
    let records = f.audit_records().await;
    assert_eq!(records.len(), before + 2);
    // A certificate without a `casebus:actor:` name is recorded by its serial number.
    assert_eq!(records[before].office.as_str(), POLICE);
    let serial = records[before]
        .actor
        .strip_prefix("certificate ")
        .unwrap_or_else(|| panic!("actor {:?}", records[before].actor));
    assert!(
        !serial.is_empty()
            && serial
                .split(':')
                .all(|b| b.len() == 2 && b.chars().all(|c| c.is_ascii_hexdigit())),
        "the actor names the certificate's serial: {:?}",
        records[before].actor
    );
    assert_eq!(
        (
            records[before + 1].office.as_str(),
            records[before + 1].actor.as_str()
        ),
        (CUSTOMS, "officer-7")
    );
    assert!(gateway.is_running());
}

#[tokio::test]
async fn every_read_leaves_exactly_one_audit_record() {
    let f = Fixture::start().await;
    f.script(&case("AUDIT-1"), declined_case()).await;
    f.script(&case("AUDIT-2"), vec![(CUSTOMS, opened("second"))])
        .await;
    let mut gateway = f.gateway("gw-audit").await;
    gateway.wait_projected(f.cases_last().await).await;
    let mut client = gateway.client(Some(&f.reader(CUSTOMS))).await;
    let mut count = f.audit_records().await.len();
    assert_eq!(count, 0);

    async fn one_more(
        f: &Fixture,
        count: &mut usize,
        method: &str,
    ) -> casebus_bus::ops::AuditRecord {
        let records = f.audit_records().await;
        assert_eq!(
            records.len(),
            *count + 1,
            "{method} left exactly one record"
        );
        *count += 1;
        let record = records.last().expect("a record").clone();
        assert_eq!(record.method, method);
        assert_eq!(record.office, CUSTOMS);
        assert_eq!(record.actor, "officer-7");
        assert!((OffsetDateTime::now_utc() - record.at).abs() < time::Duration::minutes(1));
        record
    }

    client
        .get_timeline(timeline_request("AUDIT-1"))
        .await
        .expect("timeline");
    let record = one_more(&f, &mut count, "GetTimeline").await;
    assert_eq!(
        (record.case_id.as_str(), record.versions.clone()),
        ("AUDIT-1", vec![1, 2, 3, 4])
    );

    client
        .get_case(GetCaseRequest {
            case_id: "AUDIT-1".into(),
        })
        .await
        .expect("case");
    let record = one_more(&f, &mut count, "GetCase").await;
    assert_eq!(record.case_id, "AUDIT-1");

    client
        .list_cases(ListCasesRequest::default())
        .await
        .expect("list");
    let record = one_more(&f, &mut count, "ListCases").await;
    assert!(
        record
            .detail
            .as_deref()
            .unwrap_or_default()
            .contains("AUDIT-1,AUDIT-2")
    );

    client
        .find_case_by_reference(FindCaseByReferenceRequest {
            agency: Agency::Customs as i32,
            local_number: "NB-CUS-1".into(),
        })
        .await
        .expect("found");
    one_more(&f, &mut count, "FindCaseByReference").await;

    let status = client
        .get_timeline(timeline_request("NO-SUCH-CASE"))
        .await
        .expect_err("unknown");
    assert_eq!(status.code(), Code::NotFound);
    let record = one_more(&f, &mut count, "GetTimeline").await;
    assert_eq!(record.case_id, "NO-SUCH-CASE");
    assert!(
        record
            .detail
            .as_deref()
            .is_some_and(|d| d.starts_with("not found")),
        "{record:?}"
    );

    // A watch: one record for the catch-up batch, one per live batch.
    let mut watch = client
        .watch_timeline(WatchTimelineRequest {
            case_id: "AUDIT-2".into(),
            from_version: 0,
        })
        .await
        .expect("watch")
        .into_inner();
    loop {
        match next_item(&mut watch).await.and_then(|r| r.item) {
            Some(watch_timeline_response::Item::CaughtUp(_)) => break,
            Some(_) => {}
            None => panic!("the watch ended"),
        }
    }
    let record = one_more(&f, &mut count, "WatchTimeline").await;
    assert_eq!(
        (record.case_id.as_str(), record.versions.clone()),
        ("AUDIT-2", vec![1])
    );
    f.append(CUSTOMS, &case("AUDIT-2"), note("live"), None)
        .await;
    match next_item(&mut watch).await.and_then(|r| r.item) {
        Some(watch_timeline_response::Item::Event(event)) => assert_eq!(event.case_version, 2),
        other => panic!("expected version 2, got {other:?}"),
    }
    let record = one_more(&f, &mut count, "WatchTimeline").await;
    assert_eq!(record.versions, vec![2]);
    drop(watch);

    // A feed batch over two cases: one record per case.
    let mut feed = client
        .watch_feed(WatchFeedRequest { from_position: 0 })
        .await
        .expect("feed")
        .into_inner();
    loop {
        match next_item(&mut feed).await.and_then(|r| r.item) {
            Some(watch_feed_response::Item::Checkpoint(_)) => break,
            Some(_) => {}
            None => panic!("the feed ended"),
        }
    }
    let records = f.audit_records().await;
    let feed_records: Vec<(String, Vec<u64>)> = records[count..]
        .iter()
        .map(|r| {
            assert_eq!(r.method, "WatchFeed");
            (r.case_id.clone(), r.versions.clone())
        })
        .collect();
    let mut sorted = feed_records.clone();
    sorted.sort();
    assert_eq!(
        sorted,
        vec![
            ("AUDIT-1".to_owned(), vec![1, 2, 3, 4]),
            ("AUDIT-2".to_owned(), vec![1, 2])
        ]
    );
    assert!(gateway.is_running());
}

#[tokio::test]
async fn a_read_whose_audit_record_cannot_be_written_fails_unavailable() {
    let f = Fixture::start().await;
    f.script(&case("NOAUDIT-1"), declined_case()).await;
    let mut gateway = f.gateway("gw-noaudit").await;
    gateway.wait_projected(f.cases_last().await).await;
    let mut client = gateway.client(Some(&f.reader(CUSTOMS))).await;
    client
        .get_timeline(timeline_request("NOAUDIT-1"))
        .await
        .expect("reads while the audit trail is there");

    let js = f.server.jetstream().await.expect("jetstream");
    js.delete_stream("AUDIT").await.expect("delete AUDIT");
    let status = client
        .get_timeline(timeline_request("NOAUDIT-1"))
        .await
        .expect_err("no audit, no read");
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert!(status.message().contains("audit"), "{}", status.message());
    assert!(status.details().is_empty());
    let status = client
        .get_case(GetCaseRequest {
            case_id: "NOAUDIT-1".into(),
        })
        .await
        .expect_err("no audit, no read");
    assert_eq!(status.code(), Code::Unavailable);

    // Once the stream is back, reads work again; the gateway never went down.
    casebus_bus::provision::provision(f.bus.jetstream(), &StreamSettings::default())
        .await
        .expect("provision again");
    wait_until(CALL_TIMEOUT, "reads to work again", async || {
        client
            .get_timeline(timeline_request("NOAUDIT-1"))
            .await
            .is_ok()
    })
    .await
    .expect("reads again");
    assert!(gateway.is_running());
    assert_eq!(f.audit_records().await.len(), 1);
}
