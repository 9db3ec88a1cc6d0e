//! Restricted events are sealed on the bus (issue 14): an agency service given its
//! office's decryption key seals every LISTED_AGENCIES and ORIGIN_ONLY event for the
//! offices that may read it. Checked on the bytes JetStream stores, as the operator or
//! any agency service user reads them: no sealed text, name or identity number appears
//! in any stored byte, nor its unsalted hash; each fixture office decrypts exactly what
//! the visibility admits; every chain and signature verifies, and no consumer refused
//! anything. A retried sealed command is recognised (its digest is keyed), a changed
//! one refused; an office whose encryption key is registered cannot record a restricted
//! event without its decryption key.

mod agency_harness;

use prost::Message as _;
use sha2::Digest as _;
use tonic::Code;

use casebus_integrity::seal::{Opener, SealError, open_event};
use casebus_proto::agency::v1::*;
use casebus_proto::event::v1::payload::Kind;
use casebus_proto::event::v1::{
    Agency, Event, Party, PartyAdded, PartyRole, SignedEvent, Visibility, VisibilityKind,
};

use agency_harness::*;

const CASE: &str = "C-SEALED";
const ORIGIN_TEXT: &str = "informant Wang Wu met us at the Beilun pier";
const LISTED_TEXT: &str = "for the court only: the consignee bribed a clerk";
const PERSON: &str = "Li Si";
const ID_NUMBER: &str = "330203198001011234";
const ADDRESS: &str = "12 Zhongshan Road, Ningbo";

fn visibility(kind: VisibilityKind, agencies: &[Agency]) -> Option<Visibility> {
    Some(Visibility {
        kind: kind as i32,
        agencies: agencies.iter().map(|a| *a as i32).collect(),
    })
}

fn meta_visible(request_id: &str, visibility: Option<Visibility>) -> Option<CommandMeta> {
    Some(CommandMeta {
        case_id: CASE.into(),
        request_id: request_id.into(),
        visibility,
        ..Default::default()
    })
}

fn note_request(request_id: &str, text: &str, v: Option<Visibility>) -> AddNoteRequest {
    AddNoteRequest {
        meta: meta_visible(request_id, v),
        note_added: note(text),
    }
}

/// The stored bytes of every message of the case, in order.
async fn stored(fixture: &Fixture) -> Vec<Vec<u8>> {
    stored_of(fixture, CASE).await
}

/// The stored bytes of every message of case `case_id`, in order.
async fn stored_of(fixture: &Fixture, case_id: &str) -> Vec<Vec<u8>> {
    let id = casebus_fixtures::case(case_id);
    let last = fixture.bus.last_sequence(&id).await.expect("last sequence");
    fixture
        .bus
        .read_case_messages(&id, 0, last)
        .await
        .expect("read case")
        .into_iter()
        .map(|m| m.payload.to_vec())
        .collect()
}

fn event_of(bytes: &[u8]) -> Event {
    let signed = SignedEvent::decode(bytes).expect("a signed event");
    Event::decode(signed.event.as_slice()).expect("an event")
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[tokio::test]
async fn restricted_events_are_sealed_in_every_stored_byte_and_each_office_reads_exactly_what_its_visibility_allows()
 {
    let fixture = Fixture::start_sealing().await;
    let customs = fixture.spawn_sealing(CUSTOMS).await;
    let police = fixture.spawn_sealing(POLICE).await;
    open_case(&customs, CASE).await;
    let origin = note_request(
        "n-origin",
        ORIGIN_TEXT,
        visibility(VisibilityKind::OriginOnly, &[]),
    );
    let r = customs.common().add_note(origin.clone()).await;
    ok(&customs, "sealed note", r);
    let r = customs
        .common()
        .add_note(note_request(
            "n-listed",
            LISTED_TEXT,
            visibility(VisibilityKind::ListedAgencies, &[Agency::Court]),
        ))
        .await;
    ok(&customs, "listed note", r);
    let r = customs
        .common()
        .add_party(AddPartyRequest {
            meta: meta_visible(
                "p-suspect",
                visibility(VisibilityKind::ListedAgencies, &[Agency::PublicSecurity]),
            ),
            party_added: Some(PartyAdded {
                party: Some(Party {
                    party_id: "suspect-1".into(),
                    role: PartyRole::Suspect as i32,
                    name: PERSON.into(),
                    organisation: false,
                    identifier: ID_NUMBER.into(),
                    description: ADDRESS.into(),
                }),
            }),
        })
        .await;
    ok(&customs, "restricted party", r);
    refer_to_police(&customs, CASE, "h-1").await;
    let r = police
        .common()
        .accept_handoff(AcceptHandoffRequest {
            meta: meta_visible("accept-h-1", None),
            handoff_accepted: Some(casebus_proto::event::v1::HandoffAccepted {
                handoff_id: "h-1".into(),
                local_case_number: String::new(),
            }),
        })
        .await;
    ok(&police, "accept", r);
    let r = police
        .common()
        .add_note(AddNoteRequest {
            meta: Some(CommandMeta {
                case_id: CASE.into(),
                request_id: "n-police".into(),
                visibility: visibility(VisibilityKind::OriginOnly, &[]),
                ..Default::default()
            }),
            note_added: note("police only: surveillance of the warehouse"),
        })
        .await;
    ok(&police, "police's sealed note", r);

    // A retry of a sealed command is the same event; a changed one is refused.
    let again = ok(&customs, "retry", customs.common().add_note(origin).await);
    assert_eq!(again.case_version, 2);
    let changed = refused(
        customs
            .common()
            .add_note(note_request(
                "n-origin",
                "something else",
                visibility(VisibilityKind::OriginOnly, &[]),
            ))
            .await,
        Code::AlreadyExists,
    );
    assert_eq!(reason(&changed), "request_id_reused");

    // No sealed content in any stored byte, nor the plain hash of the identity number.
    let bytes = stored(&fixture).await;
    let id_hash = sha2::Sha256::digest(ID_NUMBER.as_bytes());
    for (i, message) in bytes.iter().enumerate() {
        for secret in [
            ORIGIN_TEXT,
            LISTED_TEXT,
            PERSON,
            ID_NUMBER,
            ADDRESS,
            "surveillance",
        ] {
            assert!(
                !contains(message, secret.as_bytes()),
                "message {} holds {secret:?}",
                i + 1
            );
        }
        assert!(
            !contains(message, id_hash.as_slice()),
            "message {} holds the hash of the id",
            i + 1
        );
    }

    // Each fixture office opens exactly the sealed events its visibility admits, and
    // what it opens is the full command.
    let events: Vec<Event> = bytes.iter().map(|b| event_of(b)).collect();
    let sealed: Vec<&Event> = events.iter().filter(|e| e.sealed.is_some()).collect();
    assert_eq!(sealed.len(), 4, "the four restricted events are sealed");
    for e in events.iter().filter(|e| e.sealed.is_none()) {
        let restricted = e.visibility.as_ref().is_some_and(|v| {
            v.kind == VisibilityKind::OriginOnly as i32
                || v.kind == VisibilityKind::ListedAgencies as i32
        });
        assert!(
            !restricted,
            "version {} is restricted but in clear",
            e.case_version
        );
    }
    // version -> offices that may read it
    let readers = |version: u64| -> &'static [&'static str] {
        match version {
            2 => &[CUSTOMS], // ORIGIN_ONLY by customs:ningbo
            3 => &[CUSTOMS, casebus_fixtures::CUSTOMS_SH, COURT], // LISTED [COURT] + customs
            4 => &[CUSTOMS, casebus_fixtures::CUSTOMS_SH, POLICE], // LISTED [POLICE] + customs
            _ => &[POLICE],  // ORIGIN_ONLY by the police
        }
    };
    for office in casebus_fixtures::OFFICES {
        let opener = Opener::new(vec![casebus_fixtures::opening_key(office)]);
        for e in &sealed {
            let opened = open_event(&opener, e);
            if readers(e.case_version).contains(&office) {
                let payload = opened.unwrap_or_else(|err| {
                    panic!("{office} opens version {}: {err}", e.case_version)
                });
                match payload.kind {
                    Some(Kind::NoteAdded(n)) => assert!(!n.text.is_empty()),
                    Some(Kind::PartyAdded(p)) => {
                        let party = p.party.expect("party");
                        assert_eq!(
                            (party.name.as_str(), party.identifier.as_str()),
                            (PERSON, ID_NUMBER)
                        );
                    }
                    other => panic!("unexpected {other:?}"),
                }
            } else {
                assert!(
                    matches!(opened, Err(SealError::NotAReader { .. })),
                    "{office} must not open version {}: {opened:?}",
                    e.case_version
                );
            }
        }
    }
    // The readable part every participant folds stays: the party's id and role.
    let Some(Kind::PartyAdded(p)) = events[3].payload.as_ref().and_then(|p| p.kind.clone()) else {
        panic!("version 4 is the party");
    };
    let party = p.party.expect("party");
    assert_eq!(
        (party.party_id.as_str(), party.name.as_str()),
        ("suspect-1", "")
    );

    // Signatures and chain cover the sealed form; no consumer refused anything.
    let report = fixture.verify(CASE).await;
    assert!(report.is_intact(), "{:?}", report.failures);
    assert_eq!(report.events.len(), bytes.len());
    fixture
        .wait_consumer_caught_up("svc-public_security-ningbo")
        .await;
    fixture.assert_no_dead_letters().await;
}

#[tokio::test]
async fn an_office_with_a_registered_encryption_key_cannot_record_a_restricted_event_without_its_decryption_key()
 {
    let fixture = Fixture::start_sealing().await;
    let customs = fixture.spawn(CUSTOMS).await;
    open_case(&customs, CASE).await;
    let before = stored(&fixture).await.len();
    let status = refused(
        customs
            .common()
            .add_note(note_request(
                "n-1",
                ORIGIN_TEXT,
                visibility(VisibilityKind::OriginOnly, &[]),
            ))
            .await,
        Code::FailedPrecondition,
    );
    assert_eq!(reason(&status), "cannot_seal");
    assert!(
        !status.message().contains("#e1"),
        "no key id for callers: {}",
        status.message()
    );
    assert!(
        customs.log_text().contains("--decryption-key"),
        "the operator is told what is missing"
    );
    assert_eq!(stored(&fixture).await.len(), before, "nothing was recorded");
    // What is not restricted is recorded as before.
    ok(
        &customs,
        "a note for all",
        add_note(&customs, CASE, "n-2", "open note").await,
    );

    // A key of another office is refused at start, naming the flag.
    let mut wrong = fixture.launch_unready(
        CUSTOMS,
        &fixture
            .decryption_key(POLICE)
            .each_ref()
            .map(String::as_str),
    );
    let status = wrong.wait_exit().await;
    assert!(!status.success());
    let log = wrong.log_text();
    assert!(
        log.contains("--decryption-key") && log.contains("public_security:ningbo"),
        "{log}"
    );
}

/// An event of case `case_id` recorded by customs at `version`, chained on `prev`.
fn customs_event(
    case_id: &str,
    version: u64,
    prev: Option<casebus_integrity::EventHash>,
    payload: Kind,
    visibility: Option<Visibility>,
) -> Event {
    let office = casebus_fixtures::office(CUSTOMS);
    let case = casebus_fixtures::case(case_id);
    let request = casebus_proto::RequestId::new(&format!("forged-{version}")).expect("request id");
    let now = casebus_proto::timestamp_from(time::OffsetDateTime::now_utc());
    Event {
        event_id: casebus_proto::EventId::derive(&office, &case, &request).to_string(),
        case_id: case_id.into(),
        case_version: version,
        office_id: office.to_string(),
        agency: office.agency() as i32,
        actor: "officer-1".into(),
        occurred_at: Some(now),
        recorded_at: Some(now),
        visibility: visibility.clone(),
        prev_event_hash: prev.map(|h| h.0.to_vec()).unwrap_or_default(),
        request_id: request.to_string(),
        command_digest: casebus_bus::command_digest(&case, &payload, visibility.as_ref()).to_vec(),
        payload: Some(casebus_proto::event::v1::Payload {
            kind: Some(payload),
        }),
        sealed: None,
        ..Default::default()
    }
}

#[tokio::test]
async fn a_sealed_event_that_does_not_open_or_disagrees_with_its_readable_part_is_dead_lettered_by_a_reader_with_its_reason()
 {
    use casebus_integrity::seal::{OpeningKey, Sealer, seal_event};
    const FORGED: &str = "C-FORGED";
    let fixture = Fixture::start_sealing().await;
    let registry =
        casebus_fixtures::sealing_registry_of(&casebus_fixtures::OFFICES).expect("registry");
    let now = time::OffsetDateTime::now_utc();
    let readers = registry.reader_keys(now, |o| {
        o.agency() == Agency::Customs || o.agency() == Agency::PublicSecurity
    });
    let to_police = visibility(VisibilityKind::ListedAgencies, &[Agency::PublicSecurity]);
    let sealer = Sealer::default();
    let customs = casebus_fixtures::signer(CUSTOMS);
    let mut prev = None;
    let mut messages = Vec::new();
    let push = |event: Event,
                prev: &mut Option<casebus_integrity::EventHash>,
                messages: &mut Vec<Vec<u8>>| {
        let (signed, hash) = customs.sign(&event);
        *prev = Some(hash);
        messages.push(signed.encode_to_vec());
    };
    push(
        customs_event(
            FORGED,
            1,
            None,
            Kind::CaseOpened(casebus_proto::event::v1::CaseOpened {
                case_type: casebus_proto::event::v1::CaseType::CounterfeitTrademark as i32,
                title: "forged".into(),
                ..Default::default()
            }),
            None,
        ),
        &mut prev,
        &mut messages,
    );
    let sealed_note = |version: u64, prev, readers: &[casebus_integrity::seal::ReaderKey]| {
        let mut event = customs_event(
            FORGED,
            version,
            prev,
            Kind::NoteAdded(casebus_proto::event::v1::NoteAdded {
                text: format!("sealed note {version}"),
            }),
            to_police.clone(),
        );
        seal_event(&sealer, &mut event, readers).expect("seal");
        event
    };
    // 2: the ciphertext altered after sealing (and signed so).
    let mut tampered = sealed_note(2, prev, &readers);
    tampered.sealed.as_mut().expect("sealed").ciphertext[5] ^= 1;
    push(tampered, &mut prev, &mut messages);
    // 3: the police's wrapped key made for another key under the police's key id.
    let impostor =
        OpeningKey::derive(casebus_fixtures::office(POLICE), "e1", &[99; 32]).expect("key");
    let mut wrong: Vec<_> = readers
        .iter()
        .filter(|k| !k.key_id().starts_with("public_security:"))
        .cloned()
        .collect();
    wrong.push(impostor.reader_key());
    push(sealed_note(3, prev, &wrong), &mut prev, &mut messages);
    // 4: the readable part shows a text the sealed payload does not hold.
    let mut disagreeing = sealed_note(4, prev, &readers);
    disagreeing.payload = Some(casebus_proto::event::v1::Payload {
        kind: Some(Kind::NoteAdded(casebus_proto::event::v1::NoteAdded {
            text: "shown in clear".into(),
        })),
    });
    push(disagreeing, &mut prev, &mut messages);
    // 5: a good one, and 6: one sealed for customs only (the police cannot open it).
    push(sealed_note(5, prev, &readers), &mut prev, &mut messages);
    let customs_only: Vec<_> = readers
        .iter()
        .filter(|k| k.key_id().starts_with("customs:"))
        .cloned()
        .collect();
    push(
        sealed_note(6, prev, &customs_only),
        &mut prev,
        &mut messages,
    );
    let subject = casebus_bus::subjects::case_subject(&casebus_fixtures::case(FORGED));
    for bytes in messages {
        fixture
            .bus
            .jetstream()
            .publish(subject.clone(), bytes.into())
            .await
            .expect("publish")
            .await
            .expect("stored");
    }

    let _police = fixture.spawn_sealing(POLICE).await;
    fixture
        .wait_consumer_caught_up("svc-public_security-ningbo")
        .await;
    let ops = casebus_bus::ops::Ops::from_bus(&fixture.bus);
    let status = ops
        .stream_status(casebus_bus::subjects::DLQ_STREAM)
        .await
        .expect("status")
        .expect("dlq");
    let mut letters = Vec::new();
    for seq in status.first_sequence..=status.last_sequence {
        if let Ok(Some(m)) = ops
            .get_message(casebus_bus::subjects::DLQ_STREAM, seq)
            .await
        {
            letters.push(casebus_bus::ops::DeadLetter::from(m));
        }
    }
    let seen: Vec<(Option<u64>, &str, &str)> = letters
        .iter()
        .map(|l| (l.original_sequence, l.code.as_str(), l.reason.as_str()))
        .collect();
    assert_eq!(letters.len(), 3, "{seen:?}");
    let expect = [
        (2, "does not decrypt"),
        (3, "does not open"),
        (4, "disagrees with the event's readable payload"),
    ];
    for ((sequence, code, reason), (want_sequence, want_reason)) in seen.iter().zip(expect) {
        assert_eq!(*sequence, Some(want_sequence));
        assert_eq!(*code, "sealed");
        assert!(
            reason.contains(want_reason),
            "sequence {want_sequence}: {reason}"
        );
        assert!(
            !reason.contains("sealed note"),
            "no content in the reason: {reason}"
        );
    }
}

/// Opens `case_id` through `agency`'s service with `visibility` and `title`.
async fn open_case_visible(
    agency: &Running,
    case_id: &str,
    title: &str,
    visibility: Option<Visibility>,
) -> CommandReply {
    let r = agency
        .common()
        .open_case(OpenCaseRequest {
            meta: Some(CommandMeta {
                case_id: case_id.into(),
                request_id: format!("open-{case_id}"),
                visibility,
                ..Default::default()
            }),
            case_opened: opened(title),
        })
        .await;
    ok(agency, "open a restricted case", r)
}

/// The title and case type `agency`'s `GetCase` shows of `case_id`.
async fn case_title(agency: &Running, case_id: &str) -> (String, i32) {
    let r = agency
        .common()
        .get_case(GetCaseRequest {
            case_id: case_id.into(),
        })
        .await;
    let case = r
        .unwrap_or_else(|e| panic!("get case {case_id}: {e}\n{}", agency.log_text()))
        .into_inner()
        .case
        .expect("a case view");
    (case.title, case.case_type)
}

#[tokio::test]
async fn get_case_opens_a_sealed_opening_for_the_office_it_is_sealed_for_and_shows_others_its_readable_part()
 {
    const FOR_POLICE: &str = "C-TITLE-POLICE";
    const FOR_COURT: &str = "C-TITLE-COURT";
    const TITLE_POLICE: &str = "counterfeit Moutai, informant Zhao Liu";
    const TITLE_COURT: &str = "sealed for the court: bribery of a port clerk";
    let fixture = Fixture::start_sealing().await;
    let customs = fixture.spawn_sealing(CUSTOMS).await;
    let police = fixture.spawn_sealing(POLICE).await;
    open_case_visible(
        &customs,
        FOR_POLICE,
        TITLE_POLICE,
        visibility(VisibilityKind::ListedAgencies, &[Agency::PublicSecurity]),
    )
    .await;
    open_case_visible(
        &customs,
        FOR_COURT,
        TITLE_COURT,
        visibility(VisibilityKind::ListedAgencies, &[Agency::Court]),
    )
    .await;
    refer_to_police(&customs, FOR_POLICE, "h-1").await;
    refer_to_police(&customs, FOR_COURT, "h-1").await;
    let counterfeit = casebus_proto::event::v1::CaseType::CounterfeitTrademark as i32;

    // Both openings are sealed on the bus: the title is in no stored byte.
    for (case_id, title) in [(FOR_POLICE, TITLE_POLICE), (FOR_COURT, TITLE_COURT)] {
        let first = stored_of(&fixture, case_id).await;
        let bytes = &first[0];
        assert!(event_of(bytes).sealed.is_some(), "{case_id} v1 is sealed");
        assert!(
            !contains(bytes, title.as_bytes()),
            "{case_id} v1 holds its title"
        );
    }

    // The recording office reads both titles, opened with its own key.
    assert_eq!(
        case_title(&customs, FOR_POLICE).await,
        (TITLE_POLICE.to_owned(), counterfeit)
    );
    assert_eq!(
        case_title(&customs, FOR_COURT).await,
        (TITLE_COURT.to_owned(), counterfeit)
    );
    // The police read the title sealed for them, and nothing of the one for the court.
    assert_eq!(
        case_title(&police, FOR_POLICE).await,
        (TITLE_POLICE.to_owned(), counterfeit)
    );
    assert_eq!(case_title(&police, FOR_COURT).await, (String::new(), 0));
    fixture
        .wait_consumer_caught_up("svc-public_security-ningbo")
        .await;
    fixture.assert_no_dead_letters().await;
}

#[tokio::test]
async fn widening_a_sealed_opening_lets_the_new_readers_service_open_it_and_leaves_the_original_bytes_as_they_are()
 {
    const WIDENED: &str = "C-WIDEN";
    const TITLE: &str = "origin only: the informant is a port clerk";
    let fixture = Fixture::start_sealing().await;
    let customs = fixture.spawn_sealing(CUSTOMS).await;
    let police = fixture.spawn_sealing(POLICE).await;
    open_case_visible(
        &customs,
        WIDENED,
        TITLE,
        visibility(VisibilityKind::OriginOnly, &[]),
    )
    .await;
    refer_to_police(&customs, WIDENED, "h-1").await;
    let counterfeit = casebus_proto::event::v1::CaseType::CounterfeitTrademark as i32;
    assert_eq!(case_title(&police, WIDENED).await, (String::new(), 0));
    let before = fixture.load(WIDENED).await;
    let original = before.events[0].event.signed.event.clone();
    let police_opener = Opener::new(vec![casebus_fixtures::opening_key(POLICE)]);
    assert!(matches!(
        open_event(&police_opener, &before.events[0].event.event),
        Err(SealError::NotAReader { .. })
    ));

    // A caller cannot supply wrapped keys itself.
    let change = |wrapped_keys| ChangeVisibilityRequest {
        meta: Some(CommandMeta {
            case_id: WIDENED.into(),
            request_id: "widen-1".into(),
            ..Default::default()
        }),
        visibility_changed: Some(casebus_proto::event::v1::VisibilityChanged {
            target_version: 1,
            visibility: visibility(VisibilityKind::Participants, &[]),
            reason: "the police lead the case now".into(),
            wrapped_keys,
        }),
    };
    let forged = before.events[0]
        .event
        .event
        .sealed
        .as_ref()
        .expect("sealed")
        .wrapped_keys
        .clone();
    let status = refused(
        customs.common().change_visibility(change(forged)).await,
        Code::InvalidArgument,
    );
    assert!(
        status.message().contains("visibility_changed.wrapped_keys"),
        "{}",
        status.message()
    );

    // Customs widens the opening to every participant: the police's service opens it.
    ok(
        &customs,
        "widen",
        customs.common().change_visibility(change(Vec::new())).await,
    );
    assert_eq!(
        case_title(&police, WIDENED).await,
        (TITLE.to_owned(), counterfeit)
    );
    assert_eq!(
        case_title(&customs, WIDENED).await,
        (TITLE.to_owned(), counterfeit)
    );
    let after = fixture.load(WIDENED).await;
    assert_eq!(
        after.events[0].event.signed.event, original,
        "the original's stored bytes are unchanged"
    );
    assert!(
        casebus_integrity::seal::open_event_with(
            &police_opener,
            &after.events[0].event.event,
            after.state.widened_keys(1),
        )
        .is_ok()
    );
    // The change's wrapped keys are for encryption keys, never the content in clear.
    for message in stored_of(&fixture, WIDENED).await {
        assert!(!contains(&message, TITLE.as_bytes()));
    }
    let report = fixture.verify(WIDENED).await;
    assert!(report.is_intact(), "{:?}", report.failures);
    fixture
        .wait_consumer_caught_up("svc-public_security-ningbo")
        .await;
    fixture.assert_no_dead_letters().await;
}
