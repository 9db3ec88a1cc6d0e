//! The gateway's reads through the real binary: the visibility matrix (each visibility
//! kind against each agency: clear, stub or NOT_FOUND, checked on the encoded response
//! bytes, with the hash chain over stubs still verifying), the same rule on case views,
//! lists, reference lookups and the feed; WatchTimeline delivering every event exactly
//! once across the catch-up/live switch while events are appended; bad requests
//! refused with INVALID_ARGUMENT while the gateway stays up; health and reflection.

mod gateway_common;

use std::collections::BTreeMap;

use prost::Message as _;
use tonic::Code;

use casebus_integrity::token::Role;
use casebus_integrity::{EventHash, verify_signed};
use casebus_proto::event::v1::payload::Kind;
use casebus_proto::event::v1::{
    Agency, CaseOpened, CaseType, HandoffKind, Party, PartyAdded, PartyRole, ReferenceLinked,
    SignedEvent,
};
use casebus_proto::gateway::v1::{
    FindCaseByReferenceRequest, GetCaseRequest, GetTimelineRequest, ListCasesRequest,
    TimelineEvent, WatchFeedRequest, WatchTimelineRequest, watch_feed_response,
    watch_timeline_response,
};

use gateway_common::catalogue::{ack, declined_case, handoff, note, opened};
use gateway_common::*;

/// Texts that only the recording office may ever receive.
const SEALED_NOTE: &str = "SEALED-INFORMANT-TEXT";
const SEALED_PARTY: &str = "Secret Witness Name";
const SEALED_NUMBER: &str = "NB-SEALED-7";
/// A text only the police (and customs) may receive.
const POLICE_NOTE: &str = "POLICE-ONLY-TEXT";

/// What a viewer should see of each version of the case built by `visibility_case`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Seen {
    Clear,
    Stub,
    SealedStub,
}

/// Opened by customs, referred to the police, assistance asked of the IP center; then a
/// note for all participants (v5), one for the police only (v6), and a sealed note,
/// party and case number (v7-v9), and an open case number (v10).
async fn visibility_case(f: &Fixture) {
    let id = case("VIS-1");
    let opened = Kind::CaseOpened(CaseOpened {
        case_type: CaseType::CounterfeitTrademark as i32,
        title: "Counterfeit earphones at Ningbo port".into(),
        summary: "12,000 earphones".into(),
        ..Default::default()
    });
    f.append(CUSTOMS, &id, opened, None).await;
    f.append(
        CUSTOMS,
        &id,
        handoff(
            "h1",
            HandoffKind::SuspectedCrimeReferral,
            Agency::PublicSecurity,
        ),
        None,
    )
    .await;
    f.append(
        CUSTOMS,
        &id,
        handoff("a1", HandoffKind::AssistanceRequest, Agency::IpCenter),
        None,
    )
    .await;
    f.append(IPC, &id, ack("a1"), None).await;
    f.append(CUSTOMS, &id, note("for every participant"), None)
        .await;
    f.append(
        CUSTOMS,
        &id,
        note(POLICE_NOTE),
        listed(&[Agency::PublicSecurity]),
    )
    .await;
    f.append(CUSTOMS, &id, note(SEALED_NOTE), sealed()).await;
    let witness = Kind::PartyAdded(PartyAdded {
        party: Some(Party {
            party_id: "w1".into(),
            role: PartyRole::Witness as i32,
            name: SEALED_PARTY.into(),
            ..Default::default()
        }),
    });
    f.append(CUSTOMS, &id, witness, sealed()).await;
    let link = |number: &str| {
        Kind::ReferenceLinked(ReferenceLinked {
            agency: Agency::Customs as i32,
            local_case_number: number.into(),
        })
    };
    f.append(CUSTOMS, &id, link(SEALED_NUMBER), sealed()).await;
    f.append(CUSTOMS, &id, link("NB-OPEN-1"), None).await;
}

/// The expected sights of the ten versions for a viewer who may see the case.
fn expected(viewer: &str, admin: bool) -> Vec<Seen> {
    use Seen::*;
    let sealed = if viewer == CUSTOMS { Clear } else { SealedStub };
    let police_note = if [CUSTOMS, CUSTOMS_SH, POLICE].contains(&viewer) {
        Clear
    } else {
        Stub
    };
    let mut out = vec![
        Clear,
        Clear,
        Clear,
        Clear,
        Clear,
        police_note,
        sealed,
        sealed,
        sealed,
        Clear,
    ];
    if admin {
        // An admin of an agency without a part in the case sees only metadata.
        for seen in &mut out {
            if *seen == Clear {
                *seen = Stub;
            }
        }
        for seen in &mut out[6..9] {
            *seen = SealedStub;
        }
    }
    out
}

fn seen(event: &TimelineEvent) -> Seen {
    if !event.redacted {
        return Seen::Clear;
    }
    assert!(
        event.event.is_none()
            && event.event_bytes.is_empty()
            && event.signature.is_empty()
            && event.key_id.is_empty()
            && event.event_type.is_empty(),
        "a stub carries no payload: {event:?}"
    );
    if event.office_id.is_empty() {
        assert_eq!(event.agency, 0, "a sealed stub names no agency");
        Seen::SealedStub
    } else {
        Seen::Stub
    }
}

/// Verifies a timeline as a client would: every event links to the one before, and each
/// event in clear hashes to its hash and carries a valid signature of its office.
fn verify_chain(f: &Fixture, events: &[TimelineEvent]) {
    for (i, event) in events.iter().enumerate() {
        assert_eq!(event.case_version, i as u64 + 1, "versions without gaps");
        assert_eq!(event.hash.len(), 32);
        if i == 0 {
            assert!(event.prev_hash.is_empty());
        } else {
            assert_eq!(
                event.prev_hash,
                events[i - 1].hash,
                "version {} links to the one before",
                event.case_version
            );
        }
        if !event.redacted {
            assert_eq!(
                EventHash::of(&event.event_bytes).as_bytes()[..],
                event.hash[..]
            );
            let signed = SignedEvent {
                event: event.event_bytes.clone(),
                signature: event.signature.clone(),
                key_id: event.key_id.clone(),
            };
            let verified =
                verify_signed(&signed.encode_to_vec(), &f.bus.registry()).expect("signature");
            assert_eq!(verified.office.as_str(), event.office_id);
            let decoded = event.event.as_ref().expect("decoded event");
            assert_eq!(decoded.prev_event_hash, event.prev_hash);
            assert_eq!(decoded.case_version, event.case_version);
        }
    }
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w == needle.as_bytes())
}

#[tokio::test]
async fn each_agency_sees_each_event_in_clear_as_a_stub_or_not_at_all() {
    let f = Fixture::start().await;
    visibility_case(&f).await;
    let mut gateway = f.gateway("gw-vis").await;
    gateway.wait_projected(f.cases_last().await).await;

    let viewers: [(&str, bool); 7] = [
        (CUSTOMS, false),
        (CUSTOMS_SH, false),
        (IPC, false),
        (POLICE, false),
        (PROC, false),
        (COURT, false),
        (COURT, true),
    ];
    for (viewer, admin) in viewers {
        let label = format!("{viewer} admin={admin}");
        let roles: &[Role] = if admin {
            &[Role::Admin]
        } else {
            &[Role::Reader]
        };
        let token = f.token(viewer, roles);
        let mut client = gateway.client(Some(&token)).await;
        let answer = client
            .get_timeline(GetTimelineRequest {
                case_id: "VIS-1".into(),
                ..Default::default()
            })
            .await;
        if [PROC, COURT].contains(&viewer) && !admin {
            let status = answer.expect_err(&label);
            assert_eq!(status.code(), Code::NotFound, "{label}");
            assert_eq!(status.message(), "case VIS-1 not found", "{label}");
            let status = client
                .get_case(GetCaseRequest {
                    case_id: "VIS-1".into(),
                })
                .await
                .expect_err(&label);
            assert_eq!(status.code(), Code::NotFound, "{label}");
            continue;
        }
        let timeline = answer.expect(&label).into_inner();
        assert_eq!(timeline.case_version, 10, "{label}");
        assert!(!timeline.has_more, "{label}");
        let sights: Vec<Seen> = timeline.events.iter().map(seen).collect();
        assert_eq!(sights, expected(viewer, admin), "{label}");
        verify_chain(&f, &timeline.events);

        // Nothing sealed or restricted is anywhere in the bytes on the wire.
        let bytes = timeline.encode_to_vec();
        let origin = viewer == CUSTOMS && !admin;
        for secret in [SEALED_NOTE, SEALED_PARTY, SEALED_NUMBER] {
            assert_eq!(contains(&bytes, secret), origin, "{label}: {secret}");
        }
        let reads_police_note = sights[5] == Seen::Clear;
        assert_eq!(contains(&bytes, POLICE_NOTE), reads_police_note, "{label}");

        // The case view leaves out what comes from events the viewer may not read.
        let view = client
            .get_case(GetCaseRequest {
                case_id: "VIS-1".into(),
            })
            .await
            .expect(&label)
            .into_inner();
        let bytes = view.encode_to_vec();
        let summary = view.case.expect("summary");
        for secret in [SEALED_PARTY, SEALED_NUMBER] {
            assert_eq!(contains(&bytes, secret), origin, "{label}: {secret}");
        }
        assert_eq!(summary.version, 10);
        assert_eq!(summary.redacted, !origin, "{label}");
        assert_eq!(
            summary.title.is_empty(),
            admin,
            "{label}: the title follows the CaseOpened event"
        );
        assert!(
            summary
                .participants
                .contains(&(Agency::PublicSecurity as i32)),
            "{label}: the case's structure is shown"
        );
        assert_eq!(summary.handoffs.len(), 2, "{label}");
        let numbers: Vec<&str> = summary
            .references
            .iter()
            .map(|r| r.local_number.as_str())
            .collect();
        assert_eq!(numbers.contains(&"NB-OPEN-1"), !admin, "{label}");
    }
    assert!(gateway.is_running());
}

#[tokio::test]
async fn lists_lookups_and_the_feed_follow_the_same_rule() {
    let f = Fixture::start().await;
    visibility_case(&f).await;
    // A case the police take no part in.
    f.script(&case("OTHER-1"), vec![(CUSTOMS, opened("customs only"))])
        .await;
    let mut gateway = f.gateway("gw-rule").await;
    gateway.wait_projected(f.cases_last().await).await;
    let mut origin = gateway.client(Some(&f.reader(CUSTOMS))).await;
    let mut police = gateway.client(Some(&f.reader(POLICE))).await;
    let mut court = gateway.client(Some(&f.reader(COURT))).await;
    let mut admin = gateway.client(Some(&f.token(COURT, &[Role::Admin]))).await;

    // Reference lookups: a sealed link is found only by its origin.
    let find = |number: &str| FindCaseByReferenceRequest {
        agency: Agency::Customs as i32,
        local_number: number.into(),
    };
    let found = origin
        .find_case_by_reference(find(SEALED_NUMBER))
        .await
        .expect("origin finds it")
        .into_inner();
    assert_eq!(found.cases.len(), 1);
    assert_eq!(found.cases[0].case_id, "VIS-1");
    for client in [&mut police, &mut court, &mut admin] {
        let status = client
            .find_case_by_reference(find(SEALED_NUMBER))
            .await
            .expect_err("a sealed link is not found");
        assert_eq!(status.code(), Code::NotFound);
    }
    let found = police
        .find_case_by_reference(find("NB-OPEN-1"))
        .await
        .expect("an open link is found")
        .into_inner();
    assert_eq!(found.cases[0].title, "Counterfeit earphones at Ningbo port");
    let status = court
        .find_case_by_reference(find("NB-OPEN-1"))
        .await
        .expect_err("not the court's case");
    assert_eq!(status.code(), Code::NotFound);

    // Lists: only cases of the viewer's agency (all for admin), and text filters match
    // only what the viewer may read.
    let list = |text: &str| ListCasesRequest {
        text: text.into(),
        ..Default::default()
    };
    let ids = |r: casebus_proto::gateway::v1::ListCasesResponse| -> Vec<String> {
        r.cases.into_iter().map(|c| c.case_id).collect()
    };
    assert_eq!(
        ids(origin
            .list_cases(list(""))
            .await
            .expect("list")
            .into_inner()),
        vec!["VIS-1", "OTHER-1"]
    );
    assert_eq!(
        ids(police
            .list_cases(list(""))
            .await
            .expect("list")
            .into_inner()),
        vec!["VIS-1"]
    );
    assert!(ids(court.list_cases(list("")).await.expect("list").into_inner()).is_empty());
    let all = admin.list_cases(list("")).await.expect("list").into_inner();
    assert_eq!(all.cases.len(), 2);
    assert!(
        all.cases.iter().all(|c| c.redacted && c.title.is_empty()),
        "an admin sees metadata only: {all:?}"
    );
    assert_eq!(
        ids(origin
            .list_cases(list("secret witness"))
            .await
            .expect("list")
            .into_inner()),
        vec!["VIS-1"]
    );
    assert!(
        ids(police
            .list_cases(list("secret witness"))
            .await
            .expect("list")
            .into_inner())
        .is_empty(),
        "a hidden party's name does not select the case"
    );
    assert!(
        ids(admin
            .list_cases(list("earphones"))
            .await
            .expect("list")
            .into_inner())
        .is_empty(),
        "nor does a title the viewer may not read"
    );
    assert_eq!(
        ids(police
            .list_cases(list("EARPHONES"))
            .await
            .expect("list")
            .into_inner()),
        vec!["VIS-1"]
    );

    // The feed: every event of the police's cases (stubs included), nothing else.
    let mut feed = police
        .watch_feed(WatchFeedRequest { from_position: 0 })
        .await
        .expect("feed")
        .into_inner();
    let mut events = Vec::new();
    loop {
        match next_item(&mut feed).await.and_then(|r| r.item) {
            Some(watch_feed_response::Item::Event(event)) => events.push(event),
            Some(watch_feed_response::Item::Checkpoint(checkpoint)) => {
                assert!(checkpoint.caught_up);
                assert_eq!(checkpoint.position, f.cases_last().await);
                break;
            }
            None => panic!("the feed ended"),
        }
    }
    assert!(events.iter().all(|e| e.case_id == "VIS-1"));
    let sights: Vec<Seen> = events.iter().map(seen).collect();
    assert_eq!(sights, expected(POLICE, false));
    assert!(!contains(
        &events
            .iter()
            .flat_map(|e| e.encode_to_vec())
            .collect::<Vec<_>>(),
        SEALED_NOTE
    ));
    // Resumed from a position, it starts there.
    let mut resumed = police
        .watch_feed(WatchFeedRequest {
            from_position: events[5].position,
        })
        .await
        .expect("feed")
        .into_inner();
    match next_item(&mut resumed).await.and_then(|r| r.item) {
        Some(watch_feed_response::Item::Event(event)) => assert_eq!(event.case_version, 6),
        other => panic!("expected version 6, got {other:?}"),
    }
}

#[tokio::test]
async fn watch_timeline_delivers_every_event_exactly_once_across_the_live_switch() {
    let f = Fixture::start().await;
    let id = case("WATCH-1");
    f.script(&id, declined_case()).await;
    for i in 0..30 {
        f.append(CUSTOMS, &id, note(&format!("backlog {i}")), None)
            .await;
    }
    let mut gateway = f.gateway("gw-watch").await;
    gateway.wait_projected(f.cases_last().await).await;

    let mut client = gateway.client(Some(&f.reader(POLICE))).await;
    // Appends run while the watch catches up and after it went live.
    let appender = f.appender(CUSTOMS);
    let writer_case = id.clone();
    let writer = tokio::spawn(async move {
        for i in 0..80 {
            appender
                .append(request(&writer_case, note(&format!("live {i}")), None))
                .await
                .expect("append");
        }
    });
    let mut stream = client
        .watch_timeline(WatchTimelineRequest {
            case_id: "WATCH-1".into(),
            from_version: 0,
        })
        .await
        .expect("watch")
        .into_inner();
    let total = 4 + 30 + 80;
    let mut versions = Vec::new();
    let mut caught_up = 0;
    while versions.last() != Some(&total) {
        match next_item(&mut stream).await.and_then(|r| r.item) {
            Some(watch_timeline_response::Item::Event(event)) => versions.push(event.case_version),
            Some(watch_timeline_response::Item::CaughtUp(_)) => caught_up += 1,
            None => panic!("the watch ended"),
        }
    }
    writer.await.expect("writer");
    assert_eq!(
        versions,
        (1..=total).collect::<Vec<_>>(),
        "each version once, in order"
    );
    assert_eq!(caught_up, 1, "one switch to live");

    // Resumable by version: from 100 it delivers 100.. and then whatever comes live.
    let mut resumed = client
        .watch_timeline(WatchTimelineRequest {
            case_id: "WATCH-1".into(),
            from_version: 100,
        })
        .await
        .expect("watch")
        .into_inner();
    let mut again = Vec::new();
    loop {
        match next_item(&mut resumed).await.and_then(|r| r.item) {
            Some(watch_timeline_response::Item::Event(event)) => again.push(event.case_version),
            Some(watch_timeline_response::Item::CaughtUp(_)) => break,
            None => panic!("the watch ended"),
        }
    }
    assert_eq!(again, (100..=total).collect::<Vec<_>>());
    f.append(CUSTOMS, &id, note("one more"), None).await;
    match next_item(&mut resumed).await.and_then(|r| r.item) {
        Some(watch_timeline_response::Item::Event(event)) => {
            assert_eq!(event.case_version, total + 1);
        }
        other => panic!("expected the live event, got {other:?}"),
    }

    // A watch wakes only for its own case: another case's batches pass it by, and its
    // case's next event still arrives, once.
    let other = case("WATCH-2");
    f.script(&other, declined_case()).await;
    f.append(CUSTOMS, &other, note("elsewhere"), None).await;
    f.append(CUSTOMS, &id, note("after another case"), None)
        .await;
    match next_item(&mut resumed).await.and_then(|r| r.item) {
        Some(watch_timeline_response::Item::Event(event)) => {
            assert_eq!(
                (event.case_id.as_str(), event.case_version),
                ("WATCH-1", total + 2)
            );
        }
        other => panic!("expected the live event, got {other:?}"),
    }

    // A stopping gateway ends its watches with UNAVAILABLE, so clients resume elsewhere.
    gateway.stop().await;
    let end = tokio::time::timeout(CALL_TIMEOUT, resumed.message())
        .await
        .expect("the stream ends");
    assert!(
        matches!(&end, Err(status) if status.code() == Code::Unavailable),
        "{end:?}"
    );
}

#[tokio::test]
async fn bad_requests_get_invalid_argument_and_the_gateway_stays_up() {
    let f = Fixture::start().await;
    f.script(&case("OK-1"), declined_case()).await;
    let mut gateway = f.gateway("gw-bad").await;
    gateway.wait_projected(f.cases_last().await).await;
    let mut client = gateway.client(Some(&f.reader(CUSTOMS))).await;

    let timeline = |case_id: &str, limit: i32, direction: i32| GetTimelineRequest {
        case_id: case_id.into(),
        limit,
        direction,
        from_version: 0,
    };
    let mut refusals: BTreeMap<String, tonic::Status> = BTreeMap::new();
    for (label, request) in [
        ("empty case id", timeline("", 10, 0)),
        ("case id with a space", timeline("bad id!", 10, 0)),
        ("case id too long", timeline(&"x".repeat(65), 10, 0)),
        ("case id a subject wildcard", timeline("*", 10, 0)),
        ("negative limit", timeline("OK-1", -1, 0)),
        ("huge limit", timeline("OK-1", 5000, 0)),
        ("unknown direction", timeline("OK-1", 10, 9)),
    ] {
        refusals.insert(
            label.into(),
            client.get_timeline(request).await.expect_err(label),
        );
    }
    let list = ListCasesRequest::default;
    for (label, request) in [
        (
            "unknown track status",
            ListCasesRequest {
                track_status: 7,
                ..list()
            },
        ),
        (
            "unknown case type",
            ListCasesRequest {
                case_type: 99,
                ..list()
            },
        ),
        (
            "unknown agency",
            ListCasesRequest {
                agency: 42,
                ..list()
            },
        ),
        (
            "forged page token",
            ListCasesRequest {
                page_token: "garbage".into(),
                ..list()
            },
        ),
        (
            "overlong text",
            ListCasesRequest {
                text: "x".repeat(201),
                ..list()
            },
        ),
        (
            "negative list limit",
            ListCasesRequest {
                limit: -5,
                ..list()
            },
        ),
        (
            "invalid timestamp",
            ListCasesRequest {
                opened_from: Some(casebus_proto::Timestamp {
                    seconds: 0,
                    nanos: -1,
                }),
                ..list()
            },
        ),
    ] {
        refusals.insert(
            label.into(),
            client.list_cases(request).await.expect_err(label),
        );
    }
    for (label, request) in [
        (
            "unspecified agency",
            FindCaseByReferenceRequest {
                agency: 0,
                local_number: "N-1".into(),
            },
        ),
        (
            "empty number",
            FindCaseByReferenceRequest {
                agency: 4,
                local_number: String::new(),
            },
        ),
    ] {
        refusals.insert(
            label.into(),
            client
                .find_case_by_reference(request)
                .await
                .expect_err(label),
        );
    }
    refusals.insert(
        "watch with a bad case id".into(),
        client
            .watch_timeline(WatchTimelineRequest {
                case_id: "a/b".into(),
                from_version: 0,
            })
            .await
            .expect_err("bad case id"),
    );
    refusals.insert(
        "case view with a bad case id".into(),
        client
            .get_case(GetCaseRequest {
                case_id: "a.b".into(),
            })
            .await
            .expect_err("bad case id"),
    );
    for (label, status) in &refusals {
        assert_eq!(status.code(), Code::InvalidArgument, "{label}: {status:?}");
        assert!(
            status.message().starts_with("invalid "),
            "{label}: {}",
            status.message()
        );
    }
    assert!(refusals["huge limit"].message().contains("1 to 1000"));
    assert!(
        refusals["unknown direction"]
            .message()
            .contains("direction")
    );
    assert!(
        refusals["forged page token"]
            .message()
            .contains("page_token")
    );

    // Still up, still answering.
    assert!(gateway.is_running());
    let page = client
        .get_timeline(timeline("OK-1", 2, 0))
        .await
        .expect("a good request works")
        .into_inner();
    assert_eq!(page.events.len(), 2);
    assert!(page.has_more);
    assert_eq!(page.next_from_version, 3);
    let back = client
        .get_timeline(timeline("OK-1", 3, 2))
        .await
        .expect("backwards")
        .into_inner();
    let versions: Vec<u64> = back.events.iter().map(|e| e.case_version).collect();
    assert_eq!(versions, vec![4, 3, 2]);
    assert_eq!((back.has_more, back.next_from_version), (true, 1));

    // Unknown cases are NOT_FOUND; a token without the reader role is refused.
    let status = client
        .get_case(GetCaseRequest {
            case_id: "NO-SUCH".into(),
        })
        .await
        .expect_err("unknown");
    assert_eq!(status.code(), Code::NotFound);
    let mut clerk = gateway
        .client(Some(&f.token(CUSTOMS, &[Role::Clerk])))
        .await;
    let status = clerk
        .get_case(GetCaseRequest {
            case_id: "OK-1".into(),
        })
        .await
        .expect_err("clerk only");
    assert_eq!(status.code(), Code::PermissionDenied);
}

#[tokio::test]
async fn health_and_reflection_are_served() {
    use casebus_proto::gateway::v1::gateway_server::SERVICE_NAME as GATEWAY_SERVICE_NAME;
    use tonic_health::pb::health_client::HealthClient;
    use tonic_health::pb::{HealthCheckRequest, health_check_response::ServingStatus};
    use tonic_reflection::pb::v1::ServerReflectionRequest;
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;

    let f = Fixture::start().await;
    let gateway = f.gateway("gw-health").await;
    let channel = gateway.channel().await;
    let health = HealthClient::new(channel.clone())
        .check(HealthCheckRequest {
            service: GATEWAY_SERVICE_NAME.into(),
        })
        .await
        .expect("health")
        .into_inner();
    assert_eq!(health.status, ServingStatus::Serving as i32);

    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut answers = ServerReflectionClient::new(channel)
        .server_reflection_info(futures::stream::iter(vec![request]))
        .await
        .expect("reflection")
        .into_inner();
    let answer = next_item(&mut answers).await.expect("an answer");
    let Some(MessageResponse::ListServicesResponse(list)) = answer.message_response else {
        panic!("expected a service list, got {answer:?}");
    };
    let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    assert!(
        names.contains(&GATEWAY_SERVICE_NAME.to_owned()),
        "{names:?}"
    );
}
