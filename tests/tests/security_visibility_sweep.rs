//! Nobody sees what they may not, checked on the bytes every read surface puts on the
//! wire, with the case rules' own `sight` as the oracle. Complements the gateway's own
//! tests (`gateway_reads.rs`, `gateway_security.rs`: GetTimeline, GetCase, lists,
//! lookups and the feed per agency, tokens, certificates, audit) with what they leave
//! out:
//!
//! - every read RPC of the gateway *and* of every agency service (GetCase, ListInbox,
//!   WatchInbox on the agency side; WatchTimeline's catch-up and live phase on the
//!   gateway), for every office, read as raw response bytes;
//! - an event recorded after a watch started (the live path) is filtered like the rest;
//! - no secret in any process's `/metrics`, in any process's log, or in the `AUDIT`
//!   stream.
//!
//! The case: customs opens it and refers it to the police (whose service issues the
//! receipt), then records a sealed note, a note for the police only, a note for the
//! court only (not involved in the case), and an open note; the police records a sealed
//! note of its own. Each note carries a unique marker.

mod fault_common;

use std::collections::BTreeMap;
use std::time::Duration;

use prost::Message as _;

use casebus_bus::subjects::{AUDIT_STREAM, CASES_STREAM};
use casebus_domain::{CaseState, Sight, sight};
use casebus_integrity::token::Role;
use casebus_integrity::verify_case;
use casebus_proto::agency::v1::agency_service_client::AgencyServiceClient;
use casebus_proto::agency::v1::{
    AcceptHandoffRequest, AddNoteRequest, CommandMeta, GetCaseRequest as AgencyGetCase,
    HandoffDetails, ListInboxRequest, OpenCaseRequest, WatchInboxRequest,
};
use casebus_proto::customs::v1::ReferToPublicSecurityRequest;
use casebus_proto::customs::v1::customs_service_client::CustomsServiceClient;
use casebus_proto::event::v1::payload::Kind;
use casebus_proto::event::v1::{
    Agency, CaseOpened, CaseType, HandoffAccepted, NoteAdded, Visibility, VisibilityKind,
};
use casebus_proto::gateway::v1::{
    GetCaseRequest, GetTimelineRequest, ListCasesRequest, WatchFeedRequest, WatchTimelineRequest,
};
use casebus_test_support::wait_until;

use fault_common::audit::{last_sequence, read_stream};
use fault_common::raw_grpc::fetch;
use fault_common::report::Figures;
use fault_common::services::{Service, Stage};
use fault_common::{CUSTOMS, OFFICES, POLICE, case, generations, office, open_bus};

const CASE: &str = "sec-1";
/// What one read returned: the raw answers, or the refusal.
type Fetched = Result<Vec<Vec<u8>>, tonic::Status>;
/// How long a watch is listened to.
const LISTEN: Duration = Duration::from_secs(2);
/// Ceiling for receipts and projection.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(60);

fn meta(request_id: &str, visibility: Option<Visibility>) -> Option<CommandMeta> {
    Some(CommandMeta {
        case_id: CASE.into(),
        request_id: request_id.into(),
        visibility,
        ..Default::default()
    })
}

fn vis(kind: VisibilityKind, agencies: &[Agency]) -> Option<Visibility> {
    Some(Visibility {
        kind: kind as i32,
        agencies: agencies.iter().map(|a| *a as i32).collect(),
    })
}

async fn note(service: &Service, request_id: &str, text: &str, visibility: Option<Visibility>) {
    AgencyServiceClient::new(service.authed(Some(&service.token)))
        .add_note(AddNoteRequest {
            meta: meta(request_id, visibility),
            note_added: Some(NoteAdded { text: text.into() }),
        })
        .await
        .unwrap_or_else(|s| panic!("note {text}: {s:?}"));
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w == needle.as_bytes())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_read_surface_log_metric_or_audit_record_carries_a_payload_its_reader_may_not_see() {
    let generation = generations().remove(0);
    let server = generation.start_server().await;
    let urls = vec![server.url()];
    let bus = open_bus(&urls, "security-sweep", 1).await;
    let stage = Stage::new(urls.clone());
    let mut agencies: BTreeMap<&'static str, Service> = BTreeMap::new();
    for o in OFFICES {
        agencies.insert(o, stage.agency(o).await);
    }
    let gateway = stage.gateway("sec").await;
    let customs = &agencies[CUSTOMS];
    let police = &agencies[POLICE];

    AgencyServiceClient::new(customs.authed(Some(&customs.token)))
        .open_case(OpenCaseRequest {
            meta: meta("open", None),
            case_opened: Some(CaseOpened {
                case_type: CaseType::CounterfeitTrademark as i32,
                title: "visibility sweep".into(),
                ..Default::default()
            }),
        })
        .await
        .expect("open");
    CustomsServiceClient::new(customs.authed(Some(&customs.token)))
        .refer_to_public_security(ReferToPublicSecurityRequest {
            meta: meta("refer", None),
            handoff: Some(HandoffDetails {
                handoff_id: "h1".into(),
                to_office_id: POLICE.into(),
                reason: "suspected crime".into(),
                evidence_ids: vec![],
            }),
        })
        .await
        .expect("refer");
    wait_until(SETTLE_TIMEOUT, "the police receipt", async || {
        bus.load_case(&case(CASE)).await.is_ok_and(|c| {
            c.events
                .iter()
                .any(|e| e.event.type_name() == "HandoffAcknowledged")
        })
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    AgencyServiceClient::new(police.authed(Some(&police.token)))
        .accept_handoff(AcceptHandoffRequest {
            meta: meta("accept", None),
            handoff_accepted: Some(HandoffAccepted {
                handoff_id: "h1".into(),
                local_case_number: "NB-PS-1".into(),
            }),
        })
        .await
        .expect("the police accept");
    note(
        customs,
        "sealed",
        "SECRET-SEALED-7f3a",
        vis(VisibilityKind::OriginOnly, &[]),
    )
    .await;
    note(
        customs,
        "police-only",
        "SECRET-POLICE-91c2",
        vis(VisibilityKind::ListedAgencies, &[Agency::PublicSecurity]),
    )
    .await;
    note(
        customs,
        "court-only",
        "SECRET-COURT-55d1",
        vis(VisibilityKind::ListedAgencies, &[Agency::Court]),
    )
    .await;
    note(customs, "open-note", "OPEN-NOTE-0c0c", None).await;
    note(
        police,
        "police-sealed",
        "SECRET-POLICESEAL-3b9e",
        vis(VisibilityKind::OriginOnly, &[]),
    )
    .await;

    // Watches started now see the next event live.
    let mut live_watches = Vec::new();
    for o in OFFICES {
        let token = stage.token(o, &[Role::Reader]);
        let channel = gateway.authed(Some(&token));
        let body = WatchTimelineRequest {
            case_id: CASE.into(),
            from_version: 0,
        }
        .encode_to_vec();
        live_watches.push((
            o,
            tokio::spawn(fetch(
                channel,
                "casebus.gateway.v1.Gateway",
                "WatchTimeline",
                body,
                true,
                Duration::from_secs(6),
            )),
        ));
    }
    // Give the watches time to catch up before the live event: wait until the gateway has
    // projected everything so far, then record it.
    let before_live = last_sequence(&bus, CASES_STREAM).await;
    wait_until(
        SETTLE_TIMEOUT,
        "the gateway to project the case",
        async || gateway.position() >= before_live,
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    note(
        customs,
        "sealed-live",
        "SECRET-LIVE-e1e1",
        vis(VisibilityKind::OriginOnly, &[]),
    )
    .await;
    let last = last_sequence(&bus, CASES_STREAM).await;
    wait_until(
        SETTLE_TIMEOUT,
        "the gateway to project the live note",
        async || gateway.position() >= last,
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"));

    // The oracle: the case rules' own sight over the folded case.
    let loaded = bus.load_case(&case(CASE)).await.expect("load");
    let report = verify_case(
        &case(CASE),
        loaded
            .events
            .iter()
            .map(|e| e.event.signed.encode_to_vec())
            .collect::<Vec<_>>()
            .iter()
            .map(Vec::as_slice),
        &bus.registry(),
    );
    assert!(report.is_intact());
    let state = CaseState::fold(loaded.events.iter().map(|e| e.recorded()));
    let secrets: Vec<(u64, String)> = loaded
        .events
        .iter()
        .filter_map(
            |e| match e.event.event.payload.as_ref().and_then(|p| p.kind.as_ref()) {
                Some(Kind::NoteAdded(n)) => Some((e.event.version(), n.text.clone())),
                _ => None,
            },
        )
        .collect();

    let mut checked = 0;
    let mut leaks = Vec::new();
    let mut controls = BTreeMap::new();
    for o in OFFICES {
        let viewer = office(o);
        let token = stage.token(o, &[Role::Reader]);
        let gw = gateway.authed(Some(&token));
        let own = &agencies[o];
        let own_channel = own.authed(Some(&own.token));
        let reads: Vec<(&str, Fetched)> = vec![
            (
                "gateway GetTimeline",
                fetch(
                    gw.clone(),
                    "casebus.gateway.v1.Gateway",
                    "GetTimeline",
                    GetTimelineRequest {
                        case_id: CASE.into(),
                        ..Default::default()
                    }
                    .encode_to_vec(),
                    false,
                    LISTEN,
                )
                .await,
            ),
            (
                "gateway WatchTimeline",
                fetch(
                    gw.clone(),
                    "casebus.gateway.v1.Gateway",
                    "WatchTimeline",
                    WatchTimelineRequest {
                        case_id: CASE.into(),
                        from_version: 0,
                    }
                    .encode_to_vec(),
                    true,
                    LISTEN,
                )
                .await,
            ),
            (
                "gateway GetCase",
                fetch(
                    gw.clone(),
                    "casebus.gateway.v1.Gateway",
                    "GetCase",
                    GetCaseRequest {
                        case_id: CASE.into(),
                    }
                    .encode_to_vec(),
                    false,
                    LISTEN,
                )
                .await,
            ),
            (
                "gateway ListCases",
                fetch(
                    gw.clone(),
                    "casebus.gateway.v1.Gateway",
                    "ListCases",
                    ListCasesRequest::default().encode_to_vec(),
                    false,
                    LISTEN,
                )
                .await,
            ),
            (
                "gateway WatchFeed",
                fetch(
                    gw.clone(),
                    "casebus.gateway.v1.Gateway",
                    "WatchFeed",
                    WatchFeedRequest { from_position: 0 }.encode_to_vec(),
                    true,
                    LISTEN,
                )
                .await,
            ),
            (
                "agency GetCase",
                fetch(
                    own_channel.clone(),
                    "casebus.agency.v1.AgencyService",
                    "GetCase",
                    AgencyGetCase {
                        case_id: CASE.into(),
                    }
                    .encode_to_vec(),
                    false,
                    LISTEN,
                )
                .await,
            ),
            (
                "agency ListInbox",
                fetch(
                    own_channel.clone(),
                    "casebus.agency.v1.AgencyService",
                    "ListInbox",
                    ListInboxRequest::default().encode_to_vec(),
                    false,
                    LISTEN,
                )
                .await,
            ),
            (
                "agency WatchInbox",
                fetch(
                    own_channel.clone(),
                    "casebus.agency.v1.AgencyService",
                    "WatchInbox",
                    WatchInboxRequest::default().encode_to_vec(),
                    true,
                    LISTEN,
                )
                .await,
            ),
        ];
        for (surface, result) in reads {
            // A refusal carries nothing; but its message must not either.
            let bytes: Vec<u8> = match result {
                Ok(items) => items.concat(),
                Err(status) => status.message().as_bytes().to_vec(),
            };
            checked += 1;
            for (version, secret) in &secrets {
                let clear = sight(&state, *version, &viewer) == Sight::Clear;
                let seen = contains(&bytes, secret);
                if seen && !clear {
                    leaks.push(format!("{o} read {secret} (v{version}) through {surface}"));
                }
                if seen {
                    *controls.entry((o, secret.clone())).or_insert(0) += 1;
                }
            }
        }
    }
    for (o, handle) in live_watches {
        let items = handle
            .await
            .expect("watch task")
            .unwrap_or_default()
            .concat();
        if contains(&items, "SECRET-LIVE-e1e1") && o != CUSTOMS {
            leaks.push(format!(
                "{o} read the live sealed note through a WatchTimeline started before it"
            ));
        }
        if o == CUSTOMS {
            controls.insert(
                (o, "live".into()),
                usize::from(contains(&items, "SECRET-LIVE-e1e1")),
            );
        }
    }

    // Metrics, logs and the audit trail carry no payload text at all.
    let mut elsewhere = Vec::new();
    let audit: Vec<u8> = read_stream(&bus, AUDIT_STREAM)
        .await
        .into_iter()
        .flat_map(|m| m.payload.to_vec())
        .collect();
    let mut processes: Vec<(&str, &Service)> = agencies.iter().map(|(o, s)| (*o, s)).collect();
    processes.push(("gateway", &gateway));
    for (_, secret) in &secrets {
        if contains(&audit, secret) {
            elsewhere.push(format!("{secret} in the AUDIT stream"));
        }
        for (who, service) in &processes {
            if service.all_logs().contains(secret.as_str()) {
                elsewhere.push(format!("{secret} in the log of {who}"));
            }
            let metrics = metrics_text(service).await;
            if metrics.contains(secret.as_str()) || metrics.contains(CASE) {
                elsewhere.push(format!("{secret} or the case id in the metrics of {who}"));
            }
        }
    }

    let mut figures = Figures::new(
        "visibility sweep over every read surface",
        &generation.label,
    );
    figures
        .row("offices x read surfaces checked", checked)
        .row("secrets (one per note) x visibility kinds", format!("{} notes: sealed, listed, listed to an uninvolved agency, open, the other agency's sealed, live sealed", secrets.len()))
        .row("payloads seen by a reader the rules deny", leaks.len())
        .row("secrets in metrics, logs or the audit stream", elsewhere.len());
    figures.notes = [leaks.clone(), elsewhere.clone()]
        .concat()
        .iter()
        .map(|l| format!("- {l}"))
        .collect::<Vec<_>>()
        .join("\n");
    figures.write();

    // Positive controls: the test can see a secret where the rules allow it.
    assert!(
        controls.contains_key(&(CUSTOMS, "SECRET-SEALED-7f3a".to_owned())),
        "customs never saw its own sealed note: the sweep proves nothing"
    );
    assert!(
        controls.contains_key(&(POLICE, "SECRET-POLICE-91c2".to_owned())),
        "the police never saw the note listed for it"
    );
    assert_eq!(
        controls.get(&(CUSTOMS, "live".to_owned())),
        Some(&1),
        "customs' live watch did not see its live note"
    );
    assert!(leaks.is_empty(), "leaks:\n{}", leaks.join("\n"));
    assert!(
        elsewhere.is_empty(),
        "secrets elsewhere:\n{}",
        elsewhere.join("\n")
    );
}

/// The `/metrics` text of a process.
async fn metrics_text(service: &Service) -> String {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let Ok(mut stream) = tokio::net::TcpStream::connect(service.metrics).await else {
        return String::new();
    };
    let request = format!(
        "GET /metrics HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
        service.metrics
    );
    if stream.write_all(request.as_bytes()).await.is_err() {
        return String::new();
    }
    let mut out = String::new();
    let _ = stream.read_to_string(&mut out).await;
    out
}
