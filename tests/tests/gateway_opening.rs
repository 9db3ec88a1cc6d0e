//! Sealed content through the real gateway binary (issue 14, "who reads in clear").
//!
//! Customs records a case whose notes are sealed: one for the police (LISTED_AGENCIES,
//! so every customs office and every police office may read it), one for itself only
//! (ORIGIN_ONLY). The shared gateway holds no key: it serves each note with its readable
//! part only, and the entitled caller's `event_bytes` hold the ciphertext, which that
//! caller opens with its own key. A gateway given customs:ningbo's key
//! (`--decryption-key`) serves customs:ningbo's callers the full notes (`opened`), with
//! the same signed bytes; the police and the other customs office still get the readable
//! part, and the origin-only note stays a stub to the police. Neither gateway's
//! projection file holds a note's text. A key file that is not a key, or a key of an
//! office the registry does not know, stops the start naming the flag.

mod gateway_common;

use casebus_integrity::seal::{Opener, OpeningKey, open_event};
use casebus_proto::CaseId;
use casebus_proto::event::v1::payload::Kind as PayloadKind;
use casebus_proto::event::v1::{Agency, Event, HandoffKind};
use casebus_proto::gateway::v1::{Direction, GetTimelineRequest, TimelineEvent};
use prost::Message as _;

use gateway_common::catalogue::{handoff, note, opened};
use gateway_common::*;

const SHARED_NOTE: &str = "informant Wang Lei, ID 330203198001011234, meets at the Beilun depot";
const OWN_NOTE: &str = "origin only: the container seal was cut before inspection";
/// Where the two notes are in the timeline (after the opening and the referral).
const SHARED: usize = 2;
const OWN: usize = 3;

async fn timeline(gateway: &Gateway, token: &str, case_id: &str) -> Vec<TimelineEvent> {
    gateway
        .client(Some(token))
        .await
        .get_timeline(GetTimelineRequest {
            case_id: case_id.into(),
            from_version: 1,
            direction: Direction::Forward as i32,
            limit: 100,
        })
        .await
        .unwrap_or_else(|e| {
            panic!(
                "GetTimeline: {e}; the gateway's log:\n{}",
                gateway.log_text()
            )
        })
        .into_inner()
        .events
}

/// The note text of a timeline event in clear (empty when only its readable part is
/// shown).
fn note_text(event: &TimelineEvent) -> &str {
    match event
        .event
        .as_ref()
        .and_then(|e| e.payload.as_ref())
        .and_then(|p| p.kind.as_ref())
    {
        Some(PayloadKind::NoteAdded(n)) => &n.text,
        other => panic!("version {}: not a note: {other:?}", event.case_version),
    }
}

/// What the caller's own key opens in the signed bytes of `event`.
fn opened_with(key: OpeningKey, event: &TimelineEvent) -> String {
    let signed = Event::decode(event.event_bytes.as_slice()).expect("the signed event");
    assert!(
        signed.sealed.is_some(),
        "version {} is sealed",
        event.case_version
    );
    match open_event(&Opener::new(vec![key]), &signed)
        .expect("the caller's key opens it")
        .kind
    {
        Some(PayloadKind::NoteAdded(n)) => n.text,
        other => panic!("not a note: {other:?}"),
    }
}

fn file_holds(path: &std::path::Path, needle: &str) -> bool {
    let bytes = std::fs::read(path).unwrap_or_default();
    bytes.windows(needle.len()).any(|w| w == needle.as_bytes())
}

/// Customs opens case `id` titled `title`; the police take part through a referral in
/// clear.
async fn open_with_police(f: &Fixture, id: &CaseId, title: &str) {
    f.append(CUSTOMS, id, opened(title), None).await;
    f.append(
        CUSTOMS,
        id,
        handoff(
            "h1",
            HandoffKind::SuspectedCrimeReferral,
            Agency::PublicSecurity,
        ),
        None,
    )
    .await;
}

#[tokio::test]
async fn an_agency_gateway_opens_what_is_sealed_for_its_office_and_the_shared_one_opens_nothing() {
    let f = Fixture::start_sealing().await;
    let id = case("OPEN-1");
    open_with_police(&f, &id, "sealed notes").await;
    f.append(
        CUSTOMS,
        &id,
        note(SHARED_NOTE),
        listed(&[Agency::PublicSecurity]),
    )
    .await;
    f.append(CUSTOMS, &id, note(OWN_NOTE), sealed()).await;
    let last = f.cases_last().await;

    let mut shared = f.gateway("gw-shared").await;
    shared.wait_projected(last).await;
    let key_file = f.path(&casebus_fixtures::encryption_key_file_name(CUSTOMS));
    let mut own = f
        .gateway_with(
            "gw-customs",
            &f.db("gw-customs"),
            &[
                "--decryption-key".to_owned(),
                key_file.display().to_string(),
            ],
        )
        .await;
    own.wait_projected(last).await;

    // The shared gateway: readable parts only; customs opens the bytes itself.
    let events = timeline(&shared, &f.reader(CUSTOMS), "OPEN-1").await;
    assert_eq!(events.len(), 4);
    for event in &events[SHARED..] {
        assert!(!event.redacted && !event.opened, "v{}", event.case_version);
        assert_eq!(
            note_text(event),
            "",
            "v{}: only the readable part",
            event.case_version
        );
    }
    assert_eq!(
        opened_with(casebus_fixtures::opening_key(CUSTOMS), &events[SHARED]),
        SHARED_NOTE
    );
    assert_eq!(
        opened_with(casebus_fixtures::opening_key(CUSTOMS), &events[OWN]),
        OWN_NOTE
    );
    let shared_police = timeline(&shared, &f.reader(POLICE), "OPEN-1").await;
    assert_eq!(
        opened_with(
            casebus_fixtures::opening_key(POLICE),
            &shared_police[SHARED]
        ),
        SHARED_NOTE,
        "the police open the note sealed for them with their own key"
    );
    assert!(
        shared_police[OWN].redacted,
        "the origin-only note is a stub"
    );

    // Customs' own gateway: the full notes for customs:ningbo, the same signed bytes.
    let own_events = timeline(&own, &f.reader(CUSTOMS), "OPEN-1").await;
    for event in &own_events[..SHARED] {
        assert!(!event.opened, "v{} is not sealed", event.case_version);
    }
    for (mine, theirs) in own_events[SHARED..].iter().zip(&events[SHARED..]) {
        assert!(mine.opened, "v{} is opened", mine.case_version);
        assert_eq!(
            mine.event_bytes, theirs.event_bytes,
            "the signed form is unchanged"
        );
        assert_eq!(mine.hash, theirs.hash);
    }
    assert_eq!(note_text(&own_events[SHARED]), SHARED_NOTE);
    assert_eq!(note_text(&own_events[OWN]), OWN_NOTE);

    // Its key is customs:ningbo's: other callers get what the shared gateway gives.
    for reader in [POLICE, CUSTOMS_SH] {
        let seen = timeline(&own, &f.reader(reader), "OPEN-1").await;
        assert!(!seen[SHARED].redacted, "{reader} may read the shared note");
        assert!(
            !seen[SHARED].opened,
            "{reader}: not opened with another office's key"
        );
        assert_eq!(
            note_text(&seen[SHARED]),
            "",
            "{reader}: the readable part only"
        );
    }
    let police = timeline(&own, &f.reader(POLICE), "OPEN-1").await;
    assert!(police[OWN].redacted, "the origin-only note stays a stub");
    assert!(police[OWN].event_bytes.is_empty() && !police[OWN].opened);

    for (gateway, consumer) in [(&mut shared, "gw-shared"), (&mut own, "gw-customs")] {
        gateway.stop().await;
        for secret in [SHARED_NOTE, OWN_NOTE, "330203198001011234"] {
            assert!(
                !file_holds(&f.db(consumer), secret),
                "{consumer}'s projection file holds {secret:?}"
            );
        }
    }
}

#[tokio::test]
async fn a_decryption_key_that_is_no_key_or_of_an_unknown_office_stops_the_start() {
    let f = Fixture::start_sealing().await;
    let not_a_key = f.path("not-a-key.enc.key");
    std::fs::write(&not_a_key, "this is not a key").expect("write");
    let stranger = f.path("stranger.enc.key");
    OpeningKey::derive(office("customs:xiamen"), "e1", &[99; 32])
        .expect("a key")
        .save(&stranger)
        .expect("key file");
    for (file, expected) in [
        (&not_a_key, "not-a-key.enc.key".to_owned()),
        (
            &stranger,
            "a key of customs:xiamen, which the office registry does not know".to_owned(),
        ),
    ] {
        let output = std::process::Command::new(gateway_binary())
            .args(f.gateway_args("gw-bad-key", &f.db("gw-bad-key"), &f.path("bad.ready")))
            .args(["--decryption-key", file.to_str().expect("utf-8")])
            .output()
            .expect("run the gateway");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{stderr}");
        assert!(stderr.contains("--decryption-key"), "{stderr}");
        assert!(stderr.contains(&expected), "{stderr}");
        assert!(!f.path("bad.ready").exists(), "no ready file");
    }
}

/// A VisibilityChanged of `target` to `visibility`.
fn change_visibility(
    target: u64,
    visibility: Option<casebus_proto::event::v1::Visibility>,
) -> PayloadKind {
    PayloadKind::VisibilityChanged(casebus_proto::event::v1::VisibilityChanged {
        target_version: target,
        visibility,
        reason: "the police take over the investigation".into(),
        wrapped_keys: Vec::new(),
    })
}

#[tokio::test]
async fn widening_a_sealed_note_wraps_its_key_for_the_new_readers_and_their_gateway_opens_the_original()
 {
    let f = Fixture::start_sealing().await;
    let id = case("WIDEN-1");
    open_with_police(&f, &id, "a note widened").await;
    f.append(CUSTOMS, &id, note(OWN_NOTE), sealed()).await;
    let police_key = f.path(&casebus_fixtures::encryption_key_file_name(POLICE));
    let mut police_gateway = f
        .gateway_with(
            "gw-police",
            &f.db("gw-police"),
            &[
                "--decryption-key".to_owned(),
                police_key.display().to_string(),
            ],
        )
        .await;
    police_gateway.wait_projected(f.cases_last().await).await;
    const NOTE: usize = 2;
    let before = timeline(&police_gateway, &f.reader(POLICE), "WIDEN-1").await;
    assert!(
        before[NOTE].redacted && !before[NOTE].opened,
        "origin only: a stub"
    );
    let customs_before = timeline(&police_gateway, &f.reader(CUSTOMS), "WIDEN-1").await;
    let original = customs_before[NOTE].event_bytes.clone();
    let sealed_event = Event::decode(original.as_slice()).expect("the note");
    assert!(
        matches!(
            open_event(
                &Opener::new(vec![casebus_fixtures::opening_key(POLICE)]),
                &sealed_event
            ),
            Err(casebus_integrity::seal::SealError::NotAReader { .. })
        ),
        "the police cannot open it"
    );

    // Customs widens it to the police.
    let widened = f
        .append(
            CUSTOMS,
            &id,
            change_visibility(3, listed(&[Agency::PublicSecurity])),
            None,
        )
        .await;
    police_gateway.wait_projected(widened.stream_sequence).await;
    let loaded = f.bus.load_case(&id).await.expect("load");
    assert!(loaded.rejected.is_empty(), "{:?}", loaded.rejected);
    assert_eq!(loaded.events.len(), 4);
    let Some(PayloadKind::VisibilityChanged(change)) = loaded.events[3]
        .event
        .event
        .payload
        .as_ref()
        .and_then(|p| p.kind.clone())
    else {
        panic!("v4 is the change");
    };
    let mut wrapped_for: Vec<&str> = change
        .wrapped_keys
        .iter()
        .map(|w| w.key_id.as_str())
        .collect();
    wrapped_for.sort_unstable();
    let police_key_id = casebus_fixtures::opening_key(POLICE).key_id().to_owned();
    let customs_sh_key_id = casebus_fixtures::opening_key(CUSTOMS_SH)
        .key_id()
        .to_owned();
    assert_eq!(
        wrapped_for,
        [customs_sh_key_id.as_str(), police_key_id.as_str()],
        "wrapped for the offices the widening adds, and only those"
    );
    assert_eq!(
        loaded.events[2].event.signed.event, original,
        "the original's stored bytes are unchanged"
    );

    // The police's gateway opens the original with the key from the change.
    let after = timeline(&police_gateway, &f.reader(POLICE), "WIDEN-1").await;
    assert!(!after[NOTE].redacted, "the police may read it now");
    assert!(after[NOTE].opened, "and their gateway opens it");
    assert_eq!(note_text(&after[NOTE]), OWN_NOTE);
    assert_eq!(
        after[NOTE].event_bytes, original,
        "served as the same signed bytes"
    );
    // So does the police's back-office, from the shared gateway's bytes and the change.
    let opener = Opener::new(vec![casebus_fixtures::opening_key(POLICE)]);
    let full =
        casebus_integrity::seal::open_event_with(&opener, &sealed_event, &change.wrapped_keys)
            .expect("the police open it with the widened key");
    assert!(matches!(full.kind, Some(PayloadKind::NoteAdded(n)) if n.text == OWN_NOTE));
    // A court office, which the widening does not add, still cannot.
    assert!(
        casebus_integrity::seal::open_event_with(
            &Opener::new(vec![casebus_fixtures::opening_key(COURT)]),
            &sealed_event,
            &change.wrapped_keys,
        )
        .is_err()
    );

    police_gateway.stop().await;
    assert!(
        !file_holds(&f.db("gw-police"), OWN_NOTE),
        "the projection file holds no opened note"
    );
}
