//! Appending and loading against a real nats-server: the whole catalogue round-trips,
//! concurrent writers lose no update, retries are idempotent (also after the duplicate
//! window and after the head cache evicted the case), bad input publishes nothing, and
//! provisioning is idempotent.

mod common;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use async_nats::jetstream::message::PublishMessage;
use prost::Message as _;

use casebus_bus::{AppendError, Appender, AppenderConfig, StreamSettings, subjects};
use casebus_domain::{DeadlineRules, RejectionKind};
use casebus_integrity::OfficeSigner;
use casebus_proto::event::v1::payload::Kind;
use casebus_proto::event::v1::*;
use casebus_proto::{CaseId, EventId, PayloadKind, RequestId, payload_type_name, timestamp_from};
use casebus_test_support::wait_until;

use common::catalogue::{self, handoff, note, opened};
use common::*;

/// Drops the fields the rules fill in, so a stored payload compares with the command.
fn as_submitted(kind: &Kind) -> Kind {
    let mut kind = kind.clone();
    match &mut kind {
        Kind::HandoffRequested(p) => {
            p.due_at = None;
            p.recorded_dues.clear();
        }
        Kind::ClockExtended(p) => p.new_due_at = None,
        Kind::GoodsDetained(p) => p.recorded_dues.clear(),
        Kind::RightsHolderNotified(p) => p.recorded_dues.clear(),
        Kind::RightsHolderApplied(p) => p.recorded_dues.clear(),
        Kind::SuspectDetained(p) => p.recorded_dues.clear(),
        Kind::ArrestApproved(p) => p.recorded_dues.clear(),
        _ => {}
    }
    kind
}

async fn run_script(f: &Fixture, case_id: &CaseId, script: &[(&str, Kind)]) {
    let appenders: Vec<(&str, Appender)> = OFFICES.iter().map(|o| (*o, f.appender(o))).collect();
    for (i, (who, payload)) in script.iter().enumerate() {
        let appender = &appenders.iter().find(|(o, _)| o == who).expect("office").1;
        let done = appender
            .append(request(case_id, payload.clone()))
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "step {i} by {who}: {e}: {:?}",
                    std::error::Error::source(&e)
                )
            });
        assert_eq!(done.case_version, i as u64 + 1, "step {i}");
        assert!(!done.duplicate);
    }
}

#[tokio::test]
async fn append_then_load_round_trips_every_event_type() {
    let f = Fixture::start().await;
    let mut seen = BTreeSet::new();
    for (name, script) in [
        ("MAIN", catalogue::main_case()),
        ("DECLINED", catalogue::declined_case()),
        ("DROPPED", catalogue::dropped_case()),
        ("SUPERVISED", catalogue::supervised_case()),
    ] {
        let case_id = case(name);
        run_script(&f, &case_id, &script).await;
        let loaded = f.bus.load_case(&case_id).await.expect("load");
        assert!(loaded.rejected.is_empty(), "{:?}", loaded.rejected);
        assert_eq!(loaded.events.len(), script.len());
        for (i, (stored, (who, payload))) in loaded.events.iter().zip(&script).enumerate() {
            let ev = &stored.event;
            assert_eq!(ev.version(), i as u64 + 1);
            assert_eq!(ev.office.as_str(), *who, "version {}", i + 1);
            assert_eq!(ev.case_id, case_id);
            let PayloadKind::Known(kind) = ev.payload_kind() else {
                panic!("version {} has no known payload", i + 1)
            };
            assert_eq!(&as_submitted(kind), payload, "version {}", i + 1);
            seen.insert(payload_type_name(kind));
        }
        // Hand-offs carry the due time of the rules.
        for stored in &loaded.events {
            if let PayloadKind::Known(Kind::HandoffRequested(h)) = stored.event.payload_kind() {
                let due = h
                    .due_at
                    .as_ref()
                    .and_then(casebus_proto::datetime_from)
                    .expect("due_at set");
                match DeadlineRules::default().handoff_due(h.kind()) {
                    Some(period) => assert_eq!(due, stored.event.occurred_at + period),
                    // The kinds added with the legal clocks: their decision clock's
                    // recorded due time.
                    None => assert_eq!(
                        h.due_at,
                        h.recorded_dues.last().and_then(|d| d.due_at),
                        "{h:?}"
                    ),
                }
            }
        }
    }
    assert_eq!(
        seen.len(),
        payload_kind_count(),
        "every kind of the catalogue was used: {seen:?}"
    );
}

/// How many kinds `casebus.event.v1.Payload` has, from the compiled descriptors.
fn payload_kind_count() -> usize {
    let set = prost_types::FileDescriptorSet::decode(casebus_proto::FILE_DESCRIPTOR_SET)
        .expect("descriptor set");
    let payload = set
        .file
        .iter()
        .filter(|f| f.package() == "casebus.event.v1")
        .flat_map(|f| &f.message_type)
        .find(|m| m.name() == "Payload")
        .expect("message Payload");
    payload
        .field
        .iter()
        .filter(|f| f.oneof_index == Some(0))
        .count()
}

#[tokio::test]
async fn concurrent_writers_on_one_case_lose_no_update() {
    let f = Fixture::start().await;
    let case_id = case("CONCURRENT");
    f.appender(CUSTOMS)
        .append(request(&case_id, opened("concurrency")))
        .await
        .expect("open");
    // Two independent appenders (separate caches, as two service instances would have)
    // write 40 notes each at the same time.
    let a = Arc::new(f.appender(CUSTOMS));
    let b = Arc::new(f.appender(CUSTOMS));
    let stats = [a.stats(), b.stats()];
    let mut tasks = Vec::new();
    for (name, appender) in [("a", a), ("b", b)] {
        for i in 0..40 {
            let appender = appender.clone();
            let case_id = case_id.clone();
            tasks.push(tokio::spawn(async move {
                appender
                    .append(request_with_id(
                        &case_id,
                        &format!("{name}-{i}"),
                        note(&format!("{name} {i}")),
                    ))
                    .await
            }));
        }
    }
    let mut versions = BTreeSet::new();
    for task in tasks {
        let done = task
            .await
            .expect("task")
            .expect("every append applies after retries");
        assert!(
            versions.insert(done.case_version),
            "version {} given twice",
            done.case_version
        );
    }
    let loaded = f.bus.load_case(&case_id).await.expect("load");
    assert_eq!(loaded.events.len(), 81);
    let stored: Vec<u64> = loaded.events.iter().map(|e| e.event.version()).collect();
    assert_eq!(
        stored,
        (1..=81).collect::<Vec<_>>(),
        "versions 1..n without gap"
    );
    assert_eq!(versions, (2..=81).collect::<BTreeSet<_>>());
    assert!(loaded.rejected.is_empty());
    // The race shows in the appenders' statistics: refused publishes, each followed by
    // another attempt on a head read again.
    let total = |f: fn(&casebus_bus::AppenderStats) -> &std::sync::atomic::AtomicU64| {
        stats
            .iter()
            .map(|s| f(s).load(Ordering::Relaxed))
            .sum::<u64>()
    };
    let conflicts = total(|s| &s.conflicts);
    assert!(conflicts > 0, "two writers on one case conflicted");
    assert!(total(|s| &s.retries) >= conflicts);
    assert!(total(|s| &s.rereads) >= conflicts);
}

#[tokio::test]
async fn conflicting_concurrent_commands_apply_once_and_reject_the_other_by_rule() {
    let f = Fixture::start().await;
    let case_id = case("CONFLICT");
    let customs = f.appender(CUSTOMS);
    customs
        .append(request(&case_id, opened("conflict")))
        .await
        .expect("open");
    customs
        .append(request(&case_id, catalogue::detain("d1")))
        .await
        .expect("detain");
    let determine = |infringing| {
        Kind::InfringementDetermined(InfringementDetermined {
            detention_id: "d1".into(),
            infringing,
            basis: "examined".into(),
            ..Default::default()
        })
    };
    let (a, b) = (f.appender(CUSTOMS), f.appender(CUSTOMS));
    let (ra, rb) = tokio::join!(
        a.append(request(&case_id, determine(true))),
        b.append(request(&case_id, determine(false)))
    );
    let outcomes = [ra, rb];
    let applied = outcomes.iter().filter(|r| r.is_ok()).count();
    assert_eq!(applied, 1, "{outcomes:?}");
    let rejected = outcomes
        .iter()
        .find_map(|r| r.as_ref().err())
        .expect("one rejected");
    match rejected {
        AppendError::Rejected { rejection, .. } => {
            assert_eq!(rejection.reason_code(), "not_determined_yet")
        }
        other => panic!("expected a rule rejection, got {other}"),
    }
    assert_eq!(f.cases_count().await, 3);
}

#[tokio::test]
async fn a_retried_command_returns_the_same_event_and_adds_nothing() {
    let f = Fixture::start().await;
    let case_id = case("RETRY");
    let customs = f.appender(CUSTOMS);
    let first = customs
        .append(request_with_id(&case_id, "open-1", opened("retry")))
        .await
        .expect("open");
    assert!(!first.duplicate);
    // Same appender (cached) and a fresh one (reads the stream) both recognise it.
    for appender in [&customs, &f.appender(CUSTOMS)] {
        let again = appender
            .append(request_with_id(&case_id, "open-1", opened("retry")))
            .await
            .expect("retry");
        assert!(again.duplicate);
        assert_eq!(again.event_id, first.event_id);
        assert_eq!(again.stream_sequence, first.stream_sequence);
        assert_eq!(again.case_version, 1);
    }
    assert_eq!(f.cases_count().await, 1);
    // The same request id with a different command is refused, not silently deduplicated.
    let err = customs
        .append(request_with_id(&case_id, "open-1", opened("another title")))
        .await
        .expect_err("reused request id");
    assert!(matches!(err, AppendError::RequestIdReused { .. }), "{err}");
    assert_eq!(f.cases_count().await, 1);
}

#[tokio::test]
async fn a_retry_after_the_duplicate_window_expired_is_still_recognised() {
    let window = Duration::from_secs(1);
    let f = Fixture::start_with(StreamSettings {
        duplicate_window: window,
        ..StreamSettings::default()
    })
    .await;
    let case_id = case("LATE-RETRY");
    let first = f
        .appender(CUSTOMS)
        .append(request_with_id(&case_id, "open-1", opened("late retry")))
        .await
        .expect("open");

    // Wait until JetStream itself has forgotten the Msg-Id: a probe publish of the same
    // id onto a scratch stream with the same window stops being reported duplicate.
    let js = f.bus.jetstream().clone();
    js.create_stream(async_nats::jetstream::stream::Config {
        name: "PROBE".into(),
        subjects: vec!["probe".into()],
        duplicate_window: window,
        ..Default::default()
    })
    .await
    .expect("probe stream");
    let probe = |js: async_nats::jetstream::Context| async move {
        js.send_publish(
            "probe",
            PublishMessage::build()
                .payload("x".into())
                .message_id("same"),
        )
        .await
        .expect("publish")
        .await
        .expect("ack")
        .duplicate
    };
    assert!(!probe(js.clone()).await);
    wait_until(
        Duration::from_secs(30),
        "the duplicate window to expire",
        async || !probe(js.clone()).await,
    )
    .await
    .expect("window expires");

    // A fresh appender (empty cache) must find the event in the case, not re-publish.
    let again = f
        .appender(CUSTOMS)
        .append(request_with_id(&case_id, "open-1", opened("late retry")))
        .await
        .expect("retry");
    assert!(again.duplicate);
    assert_eq!(again.event_id, first.event_id);
    assert_eq!(f.cases_count().await, 1);
}

#[tokio::test]
async fn unknown_offices_are_rejected_and_nothing_is_published() {
    let f = Fixture::start().await;
    let case_id = case("UNKNOWN-OFFICE");
    // A signer whose office is not registered cannot even build an appender.
    let stranger = OfficeSigner::from_seed(office("customs:nowhere"), "k1", [42; 32]).expect("key");
    let err = Appender::new(
        f.bus.clone(),
        stranger,
        Arc::new(DeadlineRules::default()),
        AppenderConfig::default(),
    )
    .expect_err("unregistered signer");
    assert!(err.to_string().contains("customs:nowhere"), "{err}");
    // A registered office with a key the registry does not know is refused too.
    let wrong_key = OfficeSigner::from_seed(office(CUSTOMS), "k1", [42; 32]).expect("key");
    assert!(matches!(
        Appender::new(
            f.bus.clone(),
            wrong_key,
            Arc::new(DeadlineRules::default()),
            AppenderConfig::default()
        ),
        Err(AppendError::UnknownSigner { .. })
    ));

    let customs = f.appender(CUSTOMS);
    customs
        .append(request(&case_id, opened("unknown office")))
        .await
        .expect("open");
    let mut to_stranger = handoff(
        "h1",
        HandoffKind::SuspectedCrimeReferral,
        Agency::PublicSecurity,
    );
    if let Kind::HandoffRequested(p) = &mut to_stranger {
        p.to_office_id = "public_security:nowhere".into();
    }
    let err = customs
        .append(request(&case_id, to_stranger))
        .await
        .expect_err("unknown office");
    let AppendError::Rejected { rejection, .. } = &err else {
        panic!("{err}")
    };
    assert_eq!(
        rejection.to_string(),
        "unknown office public_security:nowhere: it is not in the office registry"
    );
    assert_eq!(rejection.kind(), RejectionKind::Invalid);
    assert_eq!(f.cases_count().await, 1, "nothing was published");
}

#[tokio::test]
async fn invalid_ids_and_illegal_commands_publish_nothing() {
    let f = Fixture::start().await;
    for bad in ["a.b", "*", ">", "a b", "", &"x".repeat(65), "案件"] {
        let err = CaseId::new(bad).expect_err("invalid case id");
        assert!(err.to_string().starts_with("case id"), "{err}");
    }
    assert!(RequestId::new("has space").is_err());

    let customs = f.appender(CUSTOMS);
    let case_id = case("ILLEGAL");
    // Acting on a case that does not exist.
    let err = customs
        .append(request(&case_id, catalogue::detain("d1")))
        .await
        .expect_err("no case");
    assert!(
        matches!(&err, AppendError::Rejected { rejection, .. } if rejection.kind() == RejectionKind::NotFound)
    );
    // Another agency's action.
    customs
        .append(request(&case_id, opened("illegal")))
        .await
        .expect("open");
    let err = customs
        .append(request(&case_id, catalogue::file_investigation()))
        .await
        .expect_err("not police");
    assert!(
        matches!(&err, AppendError::Rejected { rejection, .. } if rejection.kind() == RejectionKind::NotPermitted)
    );
    // A field the rules refuse.
    let err = customs
        .append(request(&case_id, note("")))
        .await
        .expect_err("empty note");
    assert!(err.to_string().contains("command rejected"));
    // An oversized event.
    let err = customs
        .append(request(&case_id, note(&"x".repeat(19_000))))
        .await;
    assert!(err.is_ok(), "a 19k note is within limits");
    let small = Appender::new(
        f.bus.clone(),
        signer(CUSTOMS),
        Arc::new(DeadlineRules::default()),
        AppenderConfig {
            max_event_bytes: 1024,
            ..AppenderConfig::default()
        },
    )
    .expect("appender");
    let err = small
        .append(request(&case_id, note(&"y".repeat(2000))))
        .await
        .expect_err("too large");
    assert!(matches!(err, AppendError::TooLarge { .. }), "{err}");
    assert_eq!(
        f.cases_count().await,
        2,
        "only the accepted commands were published"
    );
}

#[tokio::test]
async fn provisioning_is_idempotent_and_the_record_cannot_be_deleted() {
    let f = Fixture::start().await;
    let js = f.bus.jetstream().clone();
    // Running it again changes nothing and does not fail.
    casebus_bus::provision::provision(&js, &StreamSettings::default())
        .await
        .expect("again");
    let mut cases = js.get_stream(subjects::CASES_STREAM).await.expect("CASES");
    let config = cases.info().await.expect("info").config.clone();
    assert!(config.deny_delete && config.deny_purge && config.allow_direct);
    assert_eq!(config.max_age, Duration::ZERO);
    assert_eq!(
        config.storage,
        async_nats::jetstream::stream::StorageType::File
    );
    assert_eq!(config.subjects, vec!["case.*".to_owned()]);
    for name in [subjects::DLQ_STREAM, subjects::AUDIT_STREAM] {
        js.get_stream(name).await.expect("stream exists");
    }
    let audit = js
        .get_stream(subjects::AUDIT_STREAM)
        .await
        .expect("AUDIT")
        .cached_info()
        .config
        .clone();
    assert!(audit.deny_delete);
    let checkpoints = js
        .get_stream(subjects::CHECKPOINTS_STREAM)
        .await
        .expect("CHECKPOINTS")
        .cached_info()
        .config
        .clone();
    assert!(checkpoints.deny_delete && checkpoints.deny_purge && checkpoints.allow_direct);
    assert_eq!(checkpoints.subjects, ["checkpoint.*", "cosignature.*.*"]);

    f.appender(CUSTOMS)
        .append(request(&case("NODELETE"), opened("x")))
        .await
        .expect("open");
    assert!(cases.delete_message(1).await.is_err(), "deny_delete holds");
    assert!(cases.purge().await.is_err(), "deny_purge holds");
    assert_eq!(f.cases_count().await, 1);

    // Bad settings are refused before anything is touched.
    let err = casebus_bus::provision::provision(
        &js,
        &StreamSettings {
            replicas: 2,
            ..StreamSettings::default()
        },
    )
    .await
    .expect_err("replicas 2");
    assert!(err.to_string().contains("replicas"), "{err}");
}

#[tokio::test]
async fn a_payload_kind_from_a_newer_producer_is_kept_and_shown_as_unknown() {
    let f = Fixture::start().await;
    let case_id = case("NEWER");
    let customs = f.appender(CUSTOMS);
    let opened_ev = customs
        .append(request(&case_id, opened("newer producer")))
        .await
        .expect("open");

    // Version 2 from a "v2" producer: a payload kind at field 900 this build lacks.
    let signer = signer(CUSTOMS);
    let request_id = RequestId::new("v2-event").expect("valid");
    let envelope = Event {
        event_id: EventId::derive(signer.office(), &case_id, &request_id).to_string(),
        case_id: case_id.to_string(),
        case_version: 2,
        office_id: CUSTOMS.into(),
        agency: Agency::Customs as i32,
        actor: "v2".into(),
        occurred_at: Some(timestamp_from(now())),
        recorded_at: Some(timestamp_from(now())),
        prev_event_hash: opened_ev.hash.0.to_vec(),
        request_id: request_id.to_string(),
        ..Default::default()
    };
    let mut bytes = envelope.encode_to_vec();
    let mut payload = Vec::new();
    prost::encoding::bytes::encode(900, &b"\x0a\x03new".to_vec(), &mut payload);
    prost::encoding::bytes::encode(15, &payload, &mut bytes);
    let (signed, _) = signer.sign_bytes(bytes);
    f.bus
        .jetstream()
        .send_publish(
            subjects::case_subject(&case_id),
            PublishMessage::build()
                .payload(signed.encode_to_vec().into())
                .expected_last_subject_sequence(opened_ev.stream_sequence),
        )
        .await
        .expect("publish")
        .await
        .expect("ack");

    let loaded = f.bus.load_case(&case_id).await.expect("load");
    assert!(loaded.rejected.is_empty(), "{:?}", loaded.rejected);
    assert_eq!(loaded.events.len(), 2);
    match loaded.events[1].event.payload_kind() {
        PayloadKind::Unknown {
            field_number,
            bytes,
        } => {
            assert_eq!(field_number, 900);
            assert_eq!(bytes, b"\x0a\x03new");
        }
        other => panic!("expected an unknown kind, got {other:?}"),
    }
    assert_eq!(loaded.events[1].event.type_name(), "Unknown(900)");
    assert_eq!(loaded.state.version, 2);
    assert_eq!(loaded.state.unknown_events, 1);
    // The case goes on: the next event chains to the unknown one.
    let next = customs
        .append(request(&case_id, note("after v2")))
        .await
        .expect("append after");
    assert_eq!(next.case_version, 3);
}

#[tokio::test]
async fn an_append_while_nats_is_down_is_unavailable_and_its_retry_applies_once() {
    let mut f = Fixture::start().await;
    let case_id = case("OUTAGE");
    let customs = f.appender(CUSTOMS);
    customs
        .append(request(&case_id, opened("outage")))
        .await
        .expect("open");
    // A graceful stop: nats-server 2.9 acks before its flusher writes, so a kill -9 here
    // could lose the acknowledged open event itself (the fault-injection suite covers that).
    f.server.stop().await.expect("stop nats-server");
    let err = customs
        .append(request_with_id(
            &case_id,
            "during-outage",
            note("written during an outage"),
        ))
        .await
        .expect_err("nats is down");
    assert!(matches!(err, AppendError::Unavailable { .. }), "{err}");
    f.server.restart().await.expect("restart");
    let retried = wait_until(
        Duration::from_secs(30),
        "the client to reconnect and the retry to apply",
        async || {
            customs
                .append(request_with_id(
                    &case_id,
                    "during-outage",
                    note("written during an outage"),
                ))
                .await
                .ok()
        },
    )
    .await
    .expect("retry applies");
    assert_eq!(retried.case_version, 2);
    let again = customs
        .append(request_with_id(
            &case_id,
            "during-outage",
            note("written during an outage"),
        ))
        .await
        .expect("second retry");
    assert!(again.duplicate);
    let loaded = f.bus.load_case(&case_id).await.expect("load");
    assert_eq!(loaded.events.len(), 2, "exactly once");
}

#[tokio::test]
async fn a_stale_cache_never_causes_a_wrong_rejection_or_a_lost_update() {
    let f = Fixture::start().await;
    let case_id = case("STALE");
    let a = f.appender(CUSTOMS);
    let b = f.appender(CUSTOMS);
    a.append(request(&case_id, opened("stale cache")))
        .await
        .expect("open");
    // B caches the case at version 2.
    b.append(request(&case_id, note("b caches")))
        .await
        .expect("b note");
    // A moves the case on behind B's back.
    a.append(request(&case_id, catalogue::detain("d1")))
        .await
        .expect("detain");
    // On B's stale head detention d1 does not exist; B must re-read, not refuse.
    let determined = b
        .append(request(
            &case_id,
            Kind::InfringementDetermined(InfringementDetermined {
                outcome: DeterminationOutcome::Infringing as i32,
                detention_id: "d1".into(),
                infringing: true,
                basis: "identical mark".into(),
            }),
        ))
        .await
        .expect("decided on the current state");
    assert_eq!(determined.case_version, 4);
    // And a command valid on both states is placed after A's event, not over it.
    let noted = b
        .append(request(&case_id, note("after")))
        .await
        .expect("note");
    assert_eq!(noted.case_version, 5);
    let loaded = f.bus.load_case(&case_id).await.expect("load");
    assert_eq!(loaded.events.len(), 5);
    assert!(loaded.rejected.is_empty());
}

#[tokio::test]
async fn more_cases_than_the_head_cache_holds_all_go_on_and_retries_stay_recognised() {
    let f = Fixture::start().await;
    // Room for about two heads for five cases written round robin: most appends find
    // their case evicted and read it from the stream again.
    let customs = Appender::new(
        f.bus.clone(),
        signer(CUSTOMS),
        Arc::new(DeadlineRules::default()),
        AppenderConfig {
            cache_bytes: CACHE_BYTES,
            ..AppenderConfig::default()
        },
    )
    .expect("appender");
    let stats = customs.stats();
    let cases: Vec<CaseId> = (0..5).map(|i| case(&format!("EVICT-{i}"))).collect();
    let mut firsts = Vec::new();
    for round in 0..4u64 {
        for (i, case_id) in cases.iter().enumerate() {
            let payload = if round == 0 {
                opened(&format!("evict {i}"))
            } else {
                note(&format!("round {round}"))
            };
            let done = customs
                .append(request_with_id(case_id, &format!("r{round}"), payload))
                .await
                .unwrap_or_else(|e| panic!("{case_id} round {round}: {e}"));
            assert_eq!(done.case_version, round + 1, "{case_id} round {round}");
            assert!(!done.duplicate);
            if round == 0 {
                firsts.push(done);
            }
        }
    }
    // Every first command, retried after its head was evicted, is its original event.
    for (case_id, first) in cases.iter().zip(&firsts) {
        let again = customs
            .append(request_with_id(case_id, "r0", opened("evict retried")))
            .await;
        // The title differs, so the retry is a reused request id, recognised as such
        // from the stream; the same command is the original, flagged duplicate.
        assert!(
            matches!(again, Err(AppendError::RequestIdReused { .. })),
            "{again:?}"
        );
        let i = cases.iter().position(|c| c == case_id).expect("case");
        let same = customs
            .append(request_with_id(
                case_id,
                "r0",
                opened(&format!("evict {i}")),
            ))
            .await
            .expect("retry");
        assert!(same.duplicate);
        assert_eq!(same.event_id, first.event_id);
        assert_eq!(same.stream_sequence, first.stream_sequence);
    }
    assert_eq!(f.cases_count().await, 20);
    for case_id in &cases {
        let loaded = f.bus.load_case(case_id).await.expect("load");
        assert_eq!(loaded.events.len(), 4, "{case_id}");
        assert!(loaded.rejected.is_empty(), "{case_id}");
    }
    // The cache stayed within its bytes, and said how often it had to evict.
    let evictions = stats.evictions.load(Ordering::Relaxed);
    assert!(evictions >= 10, "evictions: {evictions}");
    let bytes = stats.cache_bytes.load(Ordering::Relaxed);
    assert!(
        bytes > 0 && bytes <= CACHE_BYTES as u64,
        "cache bytes: {bytes}"
    );
    assert!(stats.cache_cases.load(Ordering::Relaxed) <= 2);
    // No writer competed: nothing conflicted.
    assert_eq!(stats.conflicts.load(Ordering::Relaxed), 0);
}

/// The head cache of the eviction test: room for about two heads of a few events.
const CACHE_BYTES: usize = 4_000;

#[tokio::test]
async fn a_long_case_is_read_whole_and_in_windows_past_the_direct_reads() {
    // Longer than the direct gets read before an ordered consumer reads on, and
    // interleaved with another case, so each window must pick out its own subject.
    let f = Fixture::start().await;
    let (long, other) = (case("LONG-1"), case("LONG-2"));
    let customs = f.appender(CUSTOMS);
    let mut sequences = Vec::new();
    sequences.push(
        customs
            .append(request(&long, opened("long")))
            .await
            .expect("open")
            .stream_sequence,
    );
    customs
        .append(request(&other, opened("other")))
        .await
        .expect("open other");
    for i in 0..(3 * casebus_bus::DIRECT_READS) {
        sequences.push(
            customs
                .append(request(&long, note(&format!("n{i}"))))
                .await
                .expect("note")
                .stream_sequence,
        );
        customs
            .append(request(&other, note(&format!("o{i}"))))
            .await
            .expect("other note");
    }
    let last = *sequences.last().expect("appended");

    let loaded = f.bus.load_case(&long).await.expect("load");
    let versions: Vec<u64> = loaded.events.iter().map(|e| e.event.version()).collect();
    assert_eq!(versions, (1..=sequences.len() as u64).collect::<Vec<_>>());
    let stored: Vec<u64> = loaded.events.iter().map(|e| e.sequence).collect();
    assert_eq!(
        stored, sequences,
        "every event of the case, at its sequence"
    );
    assert!(loaded.rejected.is_empty());
    assert_eq!(loaded.last_sequence, last);

    // Windows starting before, at and after the switch, ending inside the case, at
    // its end and beyond it; each is exactly the case's sequences in (after, until].
    for (after, until) in [
        (0, last),
        (0, sequences[20]),
        (sequences[3], sequences[40]),
        (sequences[16], last + 100),
        (sequences[30], sequences[30] + 1),
        (last, last + 10),
    ] {
        let read: Vec<u64> = f
            .bus
            .read_case_messages(&long, after, until)
            .await
            .expect("read")
            .iter()
            .map(|m| m.sequence)
            .collect();
        let expected: Vec<u64> = sequences
            .iter()
            .copied()
            .filter(|s| *s > after && *s <= until)
            .collect();
        assert_eq!(read, expected, "window ({after}, {until}]");
    }
    let until_middle = f
        .bus
        .load_case_until(&long, sequences[35])
        .await
        .expect("load until");
    assert_eq!(until_middle.events.len(), 36);
    assert_eq!(until_middle.last_sequence, sequences[35]);
}
