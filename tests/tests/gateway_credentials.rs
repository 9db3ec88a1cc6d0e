//! Credentials at the gateway through the real binary: `WatchTimeline` and `WatchFeed`
//! end with UNAUTHENTICATED when the token that opened them expires, while the same
//! streams opened with a longer-lived token go on; both end when their token is revoked
//! (its id written to the `--revoked-tokens` file), within seconds, not at its expiry;
//! a token for another audience (an
//! agency clerk's, the monitor's sign-in token) is UNAUTHENTICATED on every read.

mod gateway_common;

use std::time::Duration;

use time::OffsetDateTime;
use tonic::Code;

use casebus_integrity::token::{Audience, Role};
use casebus_proto::gateway::v1::{
    GetCaseRequest, ListCasesRequest, WatchFeedRequest, WatchFeedResponse, WatchTimelineRequest,
    WatchTimelineResponse, watch_feed_response, watch_timeline_response,
};

use gateway_common::catalogue::{declined_case, note};
use gateway_common::*;

/// Lifetime of the short-lived token: long enough to open both streams and see them
/// catch up, short enough to wait for.
const SHORT_TTL: time::Duration = time::Duration::seconds(4);
/// Ceiling for a stream to end after its token expired.
const EXPIRY_TIMEOUT: Duration = Duration::from_secs(20);

fn token_for(
    f: &Fixture,
    audience: Audience,
    office_id: &str,
    roles: &[Role],
    ttl: time::Duration,
) -> String {
    f.issuer
        .issue(
            audience,
            &office(office_id),
            "officer-7",
            roles,
            OffsetDateTime::now_utc(),
            ttl,
        )
        .expect("token")
}

/// Reads `stream` until it ends, returning the status it ends with.
async fn end_of<T: std::fmt::Debug>(stream: &mut tonic::Streaming<T>) -> tonic::Status {
    let deadline = tokio::time::Instant::now() + EXPIRY_TIMEOUT;
    loop {
        match tokio::time::timeout_at(deadline, stream.message()).await {
            Err(_) => panic!("the stream did not end within {EXPIRY_TIMEOUT:?}"),
            Ok(Ok(Some(_))) => {}
            Ok(Ok(None)) => panic!("the stream ended without a status"),
            Ok(Err(status)) => return status,
        }
    }
}

/// Opens a timeline watch of `case_id` and the feed with `client`, and reads both until
/// they have caught up.
async fn caught_up_streams(
    client: &mut Client,
    case_id: &str,
) -> (
    tonic::Streaming<WatchTimelineResponse>,
    tonic::Streaming<WatchFeedResponse>,
) {
    let mut timeline = client
        .watch_timeline(WatchTimelineRequest {
            case_id: case_id.into(),
            from_version: 0,
        })
        .await
        .expect("watch")
        .into_inner();
    let mut feed = client
        .watch_feed(WatchFeedRequest { from_position: 0 })
        .await
        .expect("feed")
        .into_inner();
    loop {
        match next_item(&mut timeline).await.and_then(|r| r.item) {
            Some(watch_timeline_response::Item::CaughtUp(_)) => break,
            Some(watch_timeline_response::Item::Event(_)) => {}
            None => panic!("the watch ended"),
        }
    }
    loop {
        match next_item(&mut feed).await.and_then(|r| r.item) {
            Some(watch_feed_response::Item::Checkpoint(_)) => break,
            Some(watch_feed_response::Item::Event(_)) => {}
            None => panic!("the feed ended"),
        }
    }
    (timeline, feed)
}

/// A timeline watch of `case_id` opened with a police reader's hour-long token.
async fn control_watch(
    f: &Fixture,
    gateway: &Gateway,
    case_id: &str,
) -> tonic::Streaming<WatchTimelineResponse> {
    gateway
        .client(Some(&f.reader(POLICE)))
        .await
        .watch_timeline(WatchTimelineRequest {
            case_id: case_id.into(),
            from_version: 0,
        })
        .await
        .expect("watch")
        .into_inner()
}

/// Reads `watch` until it delivers the event at `version`.
async fn wait_for_version(watch: &mut tonic::Streaming<WatchTimelineResponse>, version: u64) {
    loop {
        match next_item(watch).await.and_then(|r| r.item) {
            Some(watch_timeline_response::Item::Event(event)) if event.case_version == version => {
                return;
            }
            Some(_) => {}
            None => panic!("the control watch ended"),
        }
    }
}

#[tokio::test]
async fn watch_streams_end_unauthenticated_when_the_token_that_opened_them_expires() {
    let f = Fixture::start().await;
    let id = case("EXPIRE-1");
    f.script(&id, declined_case()).await;
    let mut gateway = f.gateway("gw-expiry").await;
    gateway.wait_projected(f.cases_last().await).await;

    let short = token_for(&f, Audience::Gateway, POLICE, &[Role::Reader], SHORT_TTL);
    let expires_at = OffsetDateTime::now_utc() + SHORT_TTL;
    let mut client = gateway.client(Some(&short)).await;
    let (mut timeline, mut feed) = caught_up_streams(&mut client, "EXPIRE-1").await;
    // A control opened with an hour's token must outlive the short one.
    let mut control = control_watch(&f, &gateway, "EXPIRE-1").await;

    for (name, status) in [
        ("WatchTimeline", end_of(&mut timeline).await),
        ("WatchFeed", end_of(&mut feed).await),
    ] {
        assert_eq!(status.code(), Code::Unauthenticated, "{name}: {status:?}");
        assert!(
            status
                .message()
                .contains("token that opened this stream expired"),
            "{name}: {}",
            status.message()
        );
        assert!(
            !status.message().contains(&short),
            "{name}: the token is not echoed"
        );
    }
    assert!(
        OffsetDateTime::now_utc() >= expires_at - time::Duration::seconds(1),
        "the streams ended at the expiry, not before"
    );

    // The control stream still delivers what is appended after the expiry.
    f.append(CUSTOMS, &id, note("after the expiry"), None).await;
    wait_for_version(&mut control, declined_case().len() as u64 + 1).await;
    // And a new call with the expired token is refused.
    let status = client
        .get_case(GetCaseRequest {
            case_id: "EXPIRE-1".into(),
        })
        .await
        .expect_err("expired");
    assert_eq!(status.code(), Code::Unauthenticated);
}

/// Ceiling for a stream to end after its token was revoked: the revocation list is
/// polled every second.
const REVOCATION_TIMEOUT: Duration = Duration::from_secs(10);

#[tokio::test]
async fn watch_streams_end_unauthenticated_within_seconds_of_their_token_being_revoked() {
    let f = Fixture::start().await;
    let id = case("REVOKE-1");
    f.script(&id, declined_case()).await;
    let list = f.path("revoked.txt");
    std::fs::write(&list, "# revoked token ids\n").expect("revocation list");
    let db = f.db("gw-revoke");
    let mut gateway = f
        .gateway_with(
            "gw-revoke",
            &db,
            &["--revoked-tokens".to_owned(), list.display().to_string()],
        )
        .await;
    gateway.wait_projected(f.cases_last().await).await;

    // A day's token: only its revocation can end the streams within the test.
    let stolen = token_for(
        &f,
        Audience::Gateway,
        POLICE,
        &[Role::Reader],
        time::Duration::days(1),
    );
    let jti = casebus_integrity::token::TrustedIssuers::default()
        .with(&f.issuer)
        .verify(&stolen, Audience::Gateway, OffsetDateTime::now_utc())
        .expect("the token verifies")
        .jti;
    let mut client = gateway.client(Some(&stolen)).await;
    let (mut timeline, mut feed) = caught_up_streams(&mut client, "REVOKE-1").await;
    let mut control = control_watch(&f, &gateway, "REVOKE-1").await;

    std::fs::write(&list, format!("# revoked token ids\n{jti}\n")).expect("revocation list");
    let revoked_at = tokio::time::Instant::now();
    for (name, stream_end) in [
        (
            "WatchTimeline",
            tokio::time::timeout(REVOCATION_TIMEOUT, end_of(&mut timeline)).await,
        ),
        (
            "WatchFeed",
            tokio::time::timeout(REVOCATION_TIMEOUT, end_of(&mut feed)).await,
        ),
    ] {
        let status = stream_end.unwrap_or_else(|_| {
            panic!("{name} did not end within {REVOCATION_TIMEOUT:?} of the revocation")
        });
        assert_eq!(status.code(), Code::Unauthenticated, "{name}: {status:?}");
        assert!(
            status.message().contains(&format!("({jti}) was revoked")),
            "{name}: {}",
            status.message()
        );
        assert!(
            !status.message().contains(&stolen),
            "{name}: the token is not echoed"
        );
    }
    let took = revoked_at.elapsed();
    // A stream of another token still delivers what is appended after the revocation.
    f.append(CUSTOMS, &id, note("after the revocation"), None)
        .await;
    wait_for_version(&mut control, declined_case().len() as u64 + 1).await;
    let status = client
        .get_case(GetCaseRequest {
            case_id: "REVOKE-1".into(),
        })
        .await
        .expect_err("revoked");
    assert_eq!(status.code(), Code::Unauthenticated);
    assert!(
        status.message().contains("is revoked"),
        "{}",
        status.message()
    );
    eprintln!("streams ended {took:?} after the revocation list changed");
}

#[tokio::test]
async fn tokens_for_the_agency_services_or_the_monitor_open_no_gateway_read() {
    let f = Fixture::start().await;
    f.script(&case("AUD-1"), declined_case()).await;
    let mut gateway = f.gateway("gw-audience").await;
    gateway.wait_projected(f.cases_last().await).await;
    let hour = time::Duration::hours(1);
    for (label, audience, roles) in [
        (
            "an agency clerk's token",
            Audience::Agency,
            vec![Role::Clerk, Role::Reader],
        ),
        (
            "the monitor's sign-in token",
            Audience::Monitor,
            vec![Role::Admin],
        ),
    ] {
        let token = token_for(&f, audience, CUSTOMS, &roles, hour);
        let mut client = gateway.client(Some(&token)).await;
        let refusals = [
            client
                .get_case(GetCaseRequest {
                    case_id: "AUD-1".into(),
                })
                .await
                .map(|_| ())
                .expect_err(label),
            client
                .list_cases(ListCasesRequest::default())
                .await
                .map(|_| ())
                .expect_err(label),
            client
                .watch_feed(WatchFeedRequest { from_position: 0 })
                .await
                .map(|_| ())
                .expect_err(label),
        ];
        for status in refusals {
            assert_eq!(status.code(), Code::Unauthenticated, "{label}");
            assert!(
                status.message().contains(&format!(
                    "token is for the {audience} audience, not gateway"
                )),
                "{label}: {}",
                status.message()
            );
        }
    }
    // The same office with a gateway token reads.
    let mut client = gateway.client(Some(&f.reader(CUSTOMS))).await;
    client
        .get_case(GetCaseRequest {
            case_id: "AUD-1".into(),
        })
        .await
        .expect("a gateway token reads");
}

#[tokio::test]
async fn with_reflection_off_health_still_answers_without_credentials_and_reflection_is_unimplemented()
 {
    use casebus_proto::gateway::v1::gateway_server::SERVICE_NAME as GATEWAY_SERVICE_NAME;
    use tonic_health::pb::health_client::HealthClient;
    use tonic_health::pb::{HealthCheckRequest, health_check_response::ServingStatus};
    use tonic_reflection::pb::v1::ServerReflectionRequest;
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;

    let f = Fixture::start().await;
    let extra = ["--grpc-reflection".to_owned(), "false".to_owned()];
    let gateway = f
        .gateway_with("gw-noreflect", &f.db("gw-noreflect"), &extra)
        .await;
    let channel = gateway.channel().await;
    let health = HealthClient::new(channel.clone())
        .check(HealthCheckRequest {
            service: GATEWAY_SERVICE_NAME.into(),
        })
        .await
        .expect("health needs no credentials")
        .into_inner();
    assert_eq!(health.status, ServingStatus::Serving as i32);

    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let outcome = match ServerReflectionClient::new(channel)
        .server_reflection_info(futures::stream::iter(vec![request]))
        .await
    {
        Err(status) => status,
        Ok(response) => response
            .into_inner()
            .message()
            .await
            .expect_err("no reflection answer"),
    };
    assert_eq!(outcome.code(), Code::Unimplemented, "{outcome:?}");
}
