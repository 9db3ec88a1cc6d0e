//! Nobody sees what they may not, checked on the bytes every read surface puts on the
//! wire. Complements the gateway's own tests (`gateway_reads.rs`, `gateway_security.rs`,
//! `gateway_paging.rs`) with what they leave out:
//!
//! - every read RPC of the gateway *and* of every agency service (GetCase, ListInbox,
//!   WatchInbox on the agency side), for every office, read as raw response bytes; the
//!   gateway's lists with every `agency=` filter and paged by 1 and by 7, the union of
//!   every page checked;
//! - watch streams are read until every item the viewer must get has arrived (a stream
//!   that stays empty fails, naming what is missing), then checked;
//! - an event recorded after a watch caught up (the live path) is filtered like the rest;
//! - the refusals of commands on a case with sealed events name no hidden office;
//! - no secret in any process's `/metrics`, in any process's log, or in the `AUDIT`
//!   stream.
//!
//! What is secret, and who may see it, is written down per secret from the scenario
//! (the visibility each event was recorded with), not taken from the code under test:
//!
//! - case `sec-1`: customs (Ningbo) opens it and refers it to the police, who accept
//!   (and do not decide, so it stays in their inbox);
//!   customs adds a sealed party and a sealed reference, a sealed note, a note for the
//!   police only, a note for the court only (not involved), an open note; the police a
//!   sealed note; customs a sealed note after the watches caught up;
//! - case `sec-2`: a second customs office (Shanghai) opens it sealed, with a secret
//!   title, and refers it sealed to the police (who leave it pending in their inbox):
//!   the Shanghai office recorded only sealed events, so its office id must reach no
//!   other office at all;
//! - case `hidden-c3c3`: customs (Ningbo) alone; no other agency may learn its id or
//!   its title.

mod fault_common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use prost::Message as _;
use tonic::Status;
use tonic::codegen::http::uri::PathAndQuery;

use casebus_bus::subjects::{AUDIT_STREAM, CASES_STREAM};
use casebus_bus::{Bus, BusConfig, StreamSettings};
use casebus_integrity::token::Role;
use casebus_proto::agency::v1::agency_service_client::AgencyServiceClient;
use casebus_proto::agency::v1::{
    AcceptHandoffRequest, AddNoteRequest, AddPartyRequest, ChangeVisibilityRequest, CommandMeta,
    GetCaseRequest as AgencyGetCase, HandoffDetails, InboxChange, LinkReferenceRequest,
    ListInboxRequest, OpenCaseRequest, WatchInboxRequest, WatchInboxResponse,
};
use casebus_proto::customs::v1::ReferToPublicSecurityRequest;
use casebus_proto::customs::v1::customs_service_client::CustomsServiceClient;
use casebus_proto::event::v1::{
    Agency, CaseOpened, CaseType, HandoffAccepted, NoteAdded, Party, PartyAdded, PartyRole,
    ReferenceLinked, Visibility, VisibilityChanged, VisibilityKind,
};
use casebus_proto::gateway::v1::{
    FindCaseByReferenceRequest, FindCaseByReferenceResponse, GetCaseRequest, GetTimelineRequest,
    GetTimelineResponse, ListCasesRequest, ListCasesResponse, WatchFeedRequest, WatchFeedResponse,
    WatchTimelineRequest, WatchTimelineResponse, watch_feed_response, watch_timeline_response,
};
use casebus_test_support::wait_until;

use fault_common::audit::{last_sequence, read_stream};
use fault_common::raw_grpc::{RawCodec, fetch};
use fault_common::report::Figures;
use fault_common::services::{Authed, Service, Stage};
use fault_common::{COURT, CUSTOMS, IPC, POLICE, PROC, case, connect, generations};

/// The second customs office: it records only sealed events.
const CUSTOMS_SH: &str = casebus_fixtures::CUSTOMS_SH;
/// Every viewer: one office per agency and the second customs office.
const VIEWERS: [&str; 6] = [CUSTOMS, CUSTOMS_SH, IPC, POLICE, PROC, COURT];
const CASE: &str = "sec-1";
const SEALED_CASE: &str = "sec-2";
const HIDDEN_CASE: &str = "hidden-c3c3";
const LIVE_NOTE: &str = "SECRET-LIVE-e1e1";
const SEALED_REF: &str = "SECRET-REF-8a8a";
/// Which cases each agency takes part in (a track or a hand-off addressed to it).
const INVOLVED: [(&str, &[Agency]); 3] = [
    (CASE, &[Agency::Customs, Agency::PublicSecurity]),
    (SEALED_CASE, &[Agency::Customs, Agency::PublicSecurity]),
    (HIDDEN_CASE, &[Agency::Customs]),
];
/// One read: the raw answers, or the refusal.
type Fetched = Result<Vec<Vec<u8>>, Status>;
/// How long a watch may take to deliver what the viewer must get.
const WATCH_DEADLINE: Duration = Duration::from_secs(30);
/// Ceiling for receipts and projection.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(60);
const GATEWAY: &str = "casebus.gateway.v1.Gateway";
const AGENCY: &str = "casebus.agency.v1.AgencyService";

/// A string that only `seen_by` may receive.
struct Secret {
    text: &'static str,
    what: &'static str,
    seen_by: &'static [&'static str],
    /// Payload text, so also checked in logs, metrics and the audit stream.
    payload: bool,
}

const CUSTOMS_BOTH: &[&str] = &[CUSTOMS, CUSTOMS_SH];

const SECRETS: &[Secret] = &[
    Secret {
        text: "SECRET-SEALED-7f3a",
        what: "customs' sealed note",
        seen_by: &[CUSTOMS],
        payload: true,
    },
    Secret {
        text: "SECRET-POLICE-91c2",
        what: "a note listed for the police (and the recording agency)",
        seen_by: &[CUSTOMS, CUSTOMS_SH, POLICE],
        payload: true,
    },
    Secret {
        text: "SECRET-COURT-55d1",
        what: "a note listed for the court, which takes no part",
        seen_by: CUSTOMS_BOTH,
        payload: true,
    },
    Secret {
        text: "OPEN-NOTE-0c0c",
        what: "an open note (participants only)",
        seen_by: &[CUSTOMS, CUSTOMS_SH, POLICE],
        payload: true,
    },
    Secret {
        text: "SECRET-POLICESEAL-3b9e",
        what: "the police's sealed note",
        seen_by: &[POLICE],
        payload: true,
    },
    Secret {
        text: LIVE_NOTE,
        what: "customs' sealed note recorded while the watches were live",
        seen_by: &[CUSTOMS],
        payload: true,
    },
    Secret {
        text: "SECRET-PARTY-4d4d",
        what: "the name of a sealed party",
        seen_by: &[CUSTOMS],
        payload: true,
    },
    Secret {
        text: SEALED_REF,
        what: "a sealed reference number",
        seen_by: &[CUSTOMS],
        payload: true,
    },
    Secret {
        text: "SECRET-TITLE-2b2b",
        what: "the title of a case opened sealed",
        seen_by: &[CUSTOMS_SH],
        payload: true,
    },
    Secret {
        text: "SECRET-REASON-5e5e",
        what: "the reason of a sealed hand-off",
        seen_by: &[CUSTOMS_SH],
        payload: true,
    },
    Secret {
        text: CUSTOMS_SH,
        what: "the office of sealed events only",
        seen_by: &[CUSTOMS_SH],
        payload: false,
    },
    Secret {
        text: HIDDEN_CASE,
        what: "the id of a case only customs takes part in",
        seen_by: CUSTOMS_BOTH,
        payload: false,
    },
    Secret {
        text: "SECRET-HIDDENTITLE-9e9e",
        what: "the title of a case only customs takes part in",
        seen_by: CUSTOMS_BOTH,
        payload: true,
    },
];

fn meta(case_id: &str, request_id: &str, visibility: Option<Visibility>) -> Option<CommandMeta> {
    Some(CommandMeta {
        case_id: case_id.into(),
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

fn sealed() -> Option<Visibility> {
    vis(VisibilityKind::OriginOnly, &[])
}

fn client(service: &Service) -> AgencyServiceClient<Authed> {
    AgencyServiceClient::new(service.authed(Some(&service.token)))
}

async fn note(service: &Service, request_id: &str, text: &str, visibility: Option<Visibility>) {
    client(service)
        .add_note(AddNoteRequest {
            meta: meta(CASE, request_id, visibility),
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

fn agency_of(office: &str) -> Agency {
    casebus_fixtures::office(office).agency()
}

/// The cases `office`'s agency takes part in, from the scenario.
fn involved_cases(office: &str) -> Vec<&'static str> {
    let agency = agency_of(office);
    INVOLVED
        .iter()
        .filter(|(_, agencies)| agencies.contains(&agency))
        .map(|(c, _)| *c)
        .collect()
}

/// An open server stream, read item by item until what the viewer must get arrived.
struct Watch {
    what: String,
    stream: tonic::Streaming<Vec<u8>>,
    items: Vec<Vec<u8>>,
}

impl Watch {
    async fn open(
        channel: Authed,
        service: &str,
        method: &str,
        body: Vec<u8>,
        what: String,
    ) -> Result<Self, Status> {
        let path = PathAndQuery::try_from(format!("/{service}/{method}")).expect("a valid path");
        let mut grpc = tonic::client::Grpc::new(channel);
        grpc.ready()
            .await
            .map_err(|e| Status::unavailable(e.to_string()))?;
        let stream = tokio::time::timeout(
            WATCH_DEADLINE,
            grpc.server_streaming(tonic::Request::new(body), path, RawCodec),
        )
        .await
        .unwrap_or_else(|_| panic!("{what}: no answer within {WATCH_DEADLINE:?}"))?
        .into_inner();
        Ok(Self {
            what,
            stream,
            items: Vec::new(),
        })
    }

    /// Reads until `missing` (what has not arrived yet, given the items so far) is
    /// empty. A refusal before the first item is returned; a stream that ends or stays
    /// silent first fails the test with what is missing.
    async fn until(&mut self, missing: impl Fn(&[Vec<u8>]) -> Vec<String>) -> Result<(), Status> {
        let deadline = tokio::time::Instant::now() + WATCH_DEADLINE;
        loop {
            let left = missing(&self.items);
            if left.is_empty() {
                return Ok(());
            }
            match tokio::time::timeout_at(deadline, self.stream.message()).await {
                Ok(Ok(Some(item))) => self.items.push(item),
                Ok(Err(status)) if self.items.is_empty() => return Err(status),
                Ok(Err(status)) => {
                    panic!("{}: failed with {status:?}; missing {left:?}", self.what)
                }
                Ok(Ok(None)) => panic!("{}: ended; missing {left:?}", self.what),
                Err(_) => panic!(
                    "{}: after {WATCH_DEADLINE:?} still missing {left:?}",
                    self.what
                ),
            }
        }
    }

    /// Opens, reads until nothing is missing, and returns what arrived.
    async fn read(
        channel: Authed,
        service: &str,
        method: &str,
        body: Vec<u8>,
        what: String,
        missing: impl Fn(&[Vec<u8>]) -> Vec<String>,
    ) -> Fetched {
        let mut watch = Self::open(channel, service, method, body, what).await?;
        watch.until(missing).await?;
        Ok(watch.items)
    }
}

/// What a WatchTimeline delivered: versions, and whether it said it caught up.
fn timeline_seen(items: &[Vec<u8>]) -> (BTreeSet<u64>, bool) {
    let mut versions = BTreeSet::new();
    let mut caught_up = false;
    for item in items {
        match WatchTimelineResponse::decode(item.as_slice())
            .expect("a WatchTimelineResponse")
            .item
        {
            Some(watch_timeline_response::Item::Event(e)) => {
                versions.insert(e.case_version);
            }
            Some(watch_timeline_response::Item::CaughtUp(_)) => caught_up = true,
            None => {}
        }
    }
    (versions, caught_up)
}

/// What is missing from a WatchTimeline that must deliver versions `1..=last`.
fn timeline_missing(items: &[Vec<u8>], last: u64) -> Vec<String> {
    let (versions, caught_up) = timeline_seen(items);
    let mut out: Vec<String> = (1..=last)
        .filter(|v| !versions.contains(v))
        .map(|v| format!("version {v}"))
        .collect();
    if !caught_up {
        out.push("the caught-up marker".into());
    }
    out
}

/// One sweep result: the bytes a viewer received through a surface.
struct Read {
    viewer: &'static str,
    surface: String,
    bytes: Vec<u8>,
}

fn bytes_of(result: Fetched) -> Vec<u8> {
    // A refusal carries nothing; but its message must not either.
    match result {
        Ok(items) => items.concat(),
        Err(status) => status.message().as_bytes().to_vec(),
    }
}

/// Every page of a ListCases query, following `next_page_token`.
async fn list_pages(gw: &Authed, mut request: ListCasesRequest, surface: &str) -> Fetched {
    let mut pages = Vec::new();
    loop {
        let page = fetch(
            gw.clone(),
            GATEWAY,
            "ListCases",
            request.encode_to_vec(),
            false,
            Duration::ZERO,
        )
        .await?
        .concat();
        let decoded = ListCasesResponse::decode(page.as_slice()).expect("a ListCasesResponse");
        pages.push(page);
        if decoded.next_page_token.is_empty() {
            return Ok(pages);
        }
        assert!(pages.len() < 100, "{surface}: more than 100 pages");
        request.page_token = decoded.next_page_token;
    }
}

/// Every page of a GetTimeline, following `next_from_version`.
async fn timeline_pages(gw: &Authed, case_id: &str, limit: i32) -> Fetched {
    let mut pages = Vec::new();
    let mut from_version = 0;
    loop {
        let page = fetch(
            gw.clone(),
            GATEWAY,
            "GetTimeline",
            GetTimelineRequest {
                case_id: case_id.into(),
                from_version,
                limit,
                ..Default::default()
            }
            .encode_to_vec(),
            false,
            Duration::ZERO,
        )
        .await?
        .concat();
        let decoded = GetTimelineResponse::decode(page.as_slice()).expect("a GetTimelineResponse");
        pages.push(page);
        if !decoded.has_more {
            return Ok(pages);
        }
        assert!(
            pages.len() < 100,
            "GetTimeline {case_id}: more than 100 pages"
        );
        from_version = decoded.next_from_version;
    }
}

async fn open_bus(urls: &[String]) -> Bus {
    let client = connect(urls, "security-sweep").await;
    let js = Bus::context(client.clone(), &BusConfig::default());
    casebus_bus::provision::provision(&js, &StreamSettings::default())
        .await
        .expect("provision the streams");
    // The full fixture registry: it knows the second customs office.
    Bus::open(
        client,
        Arc::new(casebus_fixtures::registry()),
        BusConfig::default(),
    )
    .await
    .expect("open the bus")
}

async fn wait_for_receipt(bus: &Bus, case_id: &str) {
    wait_until(SETTLE_TIMEOUT, "the police receipt", async || {
        bus.load_case(&case(case_id)).await.is_ok_and(|c| {
            c.events
                .iter()
                .any(|e| e.event.type_name() == "HandoffAcknowledged")
        })
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_read_surface_log_metric_or_audit_record_carries_a_payload_its_reader_may_not_see() {
    let generation = generations().remove(0);
    let server = generation.start_server().await;
    let urls = vec![server.url()];
    let bus = open_bus(&urls).await;
    let stage = Stage::with_offices(urls.clone(), &VIEWERS);
    let mut agencies: BTreeMap<&'static str, Service> = BTreeMap::new();
    for o in VIEWERS {
        agencies.insert(o, stage.agency(o).await);
    }
    let gateway = stage.gateway("sec").await;
    let customs = &agencies[CUSTOMS];
    let shanghai = &agencies[CUSTOMS_SH];
    let police = &agencies[POLICE];

    // sec-1.
    client(customs)
        .open_case(OpenCaseRequest {
            meta: meta(CASE, "open", None),
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
            meta: meta(CASE, "refer", None),
            handoff: Some(HandoffDetails {
                handoff_id: "h1".into(),
                to_office_id: POLICE.into(),
                reason: "suspected crime".into(),
                evidence_ids: vec![],
            }),
        })
        .await
        .expect("refer");
    wait_for_receipt(&bus, CASE).await;
    client(police)
        .accept_handoff(AcceptHandoffRequest {
            meta: meta(CASE, "accept", None),
            handoff_accepted: Some(HandoffAccepted {
                handoff_id: "h1".into(),
                local_case_number: "NB-PS-1".into(),
            }),
        })
        .await
        .expect("the police accept");
    client(customs)
        .add_party(AddPartyRequest {
            meta: meta(CASE, "party", sealed()),
            party_added: Some(PartyAdded {
                party: Some(Party {
                    party_id: "p1".into(),
                    role: PartyRole::Suspect as i32,
                    name: "SECRET-PARTY-4d4d".into(),
                    ..Default::default()
                }),
            }),
        })
        .await
        .expect("sealed party");
    client(customs)
        .link_reference(LinkReferenceRequest {
            meta: meta(CASE, "reference", sealed()),
            reference_linked: Some(ReferenceLinked {
                agency: Agency::Customs as i32,
                local_case_number: SEALED_REF.into(),
            }),
        })
        .await
        .expect("sealed reference");
    note(customs, "sealed", "SECRET-SEALED-7f3a", sealed()).await;
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
    note(police, "police-sealed", "SECRET-POLICESEAL-3b9e", sealed()).await;

    // sec-2: only sealed events of the Shanghai office; the police leave it pending.
    client(shanghai)
        .open_case(OpenCaseRequest {
            meta: meta(SEALED_CASE, "open", sealed()),
            case_opened: Some(CaseOpened {
                case_type: CaseType::CounterfeitTrademark as i32,
                title: "SECRET-TITLE-2b2b".into(),
                ..Default::default()
            }),
        })
        .await
        .expect("open sealed");
    CustomsServiceClient::new(shanghai.authed(Some(&shanghai.token)))
        .refer_to_public_security(ReferToPublicSecurityRequest {
            meta: meta(SEALED_CASE, "refer", sealed()),
            handoff: Some(HandoffDetails {
                handoff_id: "h2".into(),
                to_office_id: String::new(),
                reason: "SECRET-REASON-5e5e".into(),
                evidence_ids: vec![],
            }),
        })
        .await
        .expect("sealed refer");
    wait_for_receipt(&bus, SEALED_CASE).await;

    // hidden-c3c3: customs alone.
    client(customs)
        .open_case(OpenCaseRequest {
            meta: meta(HIDDEN_CASE, "open", None),
            case_opened: Some(CaseOpened {
                case_type: CaseType::CounterfeitTrademark as i32,
                title: "SECRET-HIDDENTITLE-9e9e".into(),
                ..Default::default()
            }),
        })
        .await
        .expect("open hidden");

    // Watches that caught up before the live note see it live.
    let before_live = last_sequence(&bus, CASES_STREAM).await;
    wait_until(
        SETTLE_TIMEOUT,
        "the gateway to project the cases",
        async || gateway.position() >= before_live,
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    let versions_before = bus.load_case(&case(CASE)).await.expect("load").events.len() as u64;
    let mut live_watches = Vec::new();
    for o in VIEWERS {
        let channel = gateway.authed(Some(&stage.token(o, &[Role::Reader])));
        let what = format!("{o} gateway WatchTimeline {CASE} (live)");
        let body = WatchTimelineRequest {
            case_id: CASE.into(),
            from_version: 0,
        }
        .encode_to_vec();
        let watch = Watch::open(channel, GATEWAY, "WatchTimeline", body, what).await;
        let watch = match watch {
            Ok(mut w) => w
                .until(|items| timeline_missing(items, versions_before))
                .await
                .map(|()| w),
            Err(status) => Err(status),
        };
        live_watches.push((o, watch));
    }
    note(customs, "sealed-live", LIVE_NOTE, sealed()).await;
    let live_version = versions_before + 1;
    let last = last_sequence(&bus, CASES_STREAM).await;
    wait_until(
        SETTLE_TIMEOUT,
        "the gateway to project the live note",
        async || gateway.position() >= last,
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"));

    let mut last_version = BTreeMap::new();
    for (c, _) in INVOLVED {
        let loaded = bus.load_case(&case(c)).await.expect("load");
        last_version.insert(c, loaded.events.len() as u64);
    }
    assert_eq!(last_version[CASE], live_version);

    let mut reads: Vec<Read> = Vec::new();
    let mut wrong = Vec::new();
    for (o, watch) in live_watches {
        let surface = format!("gateway WatchTimeline {CASE} (live)");
        let involved = involved_cases(o).contains(&CASE);
        let result = match watch {
            Ok(mut w) => w
                .until(|items| timeline_missing(items, live_version))
                .await
                .map(|()| w.items),
            Err(status) => Err(status),
        };
        if involved != result.is_ok() {
            wrong.push(format!(
                "{o} {surface}: involved {involved}, got {result:?}"
            ));
        }
        reads.push(Read {
            viewer: o,
            surface,
            bytes: bytes_of(result),
        });
    }

    for o in VIEWERS {
        let token = stage.token(o, &[Role::Reader]);
        let gw = gateway.authed(Some(&token));
        let own = &agencies[o];
        let own_channel = own.authed(Some(&own.token));
        let involved = involved_cases(o);
        let mut push = |surface: String, result: Fetched| {
            reads.push(Read {
                viewer: o,
                surface,
                bytes: bytes_of(result),
            });
        };

        for c in [CASE, SEALED_CASE] {
            let is_involved = involved.contains(&c);
            for limit in [0, 1, 7] {
                push(
                    format!("gateway GetTimeline {c} limit {limit}"),
                    timeline_pages(&gw, c, limit).await,
                );
            }
            let last = last_version[c];
            let result = Watch::read(
                gw.clone(),
                GATEWAY,
                "WatchTimeline",
                WatchTimelineRequest {
                    case_id: c.into(),
                    from_version: 0,
                }
                .encode_to_vec(),
                format!("{o} gateway WatchTimeline {c}"),
                |items| timeline_missing(items, last),
            )
            .await;
            if is_involved != result.is_ok() {
                wrong.push(format!(
                    "{o} gateway WatchTimeline {c}: involved {is_involved}, got {result:?}"
                ));
            }
            push(format!("gateway WatchTimeline {c}"), result);
            push(
                format!("gateway GetCase {c}"),
                fetch(
                    gw.clone(),
                    GATEWAY,
                    "GetCase",
                    GetCaseRequest { case_id: c.into() }.encode_to_vec(),
                    false,
                    Duration::ZERO,
                )
                .await,
            );
            push(
                format!("agency GetCase {c}"),
                fetch(
                    own_channel.clone(),
                    AGENCY,
                    "GetCase",
                    AgencyGetCase { case_id: c.into() }.encode_to_vec(),
                    false,
                    Duration::ZERO,
                )
                .await,
            );
        }

        // ListCases: no filter and every agency filter, whole, by 1 and by 7.
        let filters = std::iter::once(None).chain(
            [
                Agency::Customs,
                Agency::IpCenter,
                Agency::PublicSecurity,
                Agency::Procuratorate,
                Agency::Court,
            ]
            .map(Some),
        );
        for agency in filters {
            for limit in [0, 1, 7] {
                let surface = format!("gateway ListCases agency={agency:?} limit {limit}");
                let request = ListCasesRequest {
                    agency: agency.map_or(0, |a| a as i32),
                    limit,
                    ..Default::default()
                };
                let result = list_pages(&gw, request, &surface).await;
                push(surface, result);
            }
        }
        // A text search for a secret finds nothing for a viewer who may not see it.
        for secret in SECRETS.iter().filter(|s| s.payload) {
            let surface = format!("gateway ListCases text={}", secret.text);
            let request = ListCasesRequest {
                text: secret.text.into(),
                ..Default::default()
            };
            let pages = list_pages(&gw, request, &surface).await;
            let found: usize = pages.as_ref().map_or(0, |pages| {
                pages
                    .iter()
                    .map(|p| ListCasesResponse::decode(p.as_slice()).map_or(0, |r| r.cases.len()))
                    .sum()
            });
            if found > 0 && !secret.seen_by.contains(&o) {
                wrong.push(format!(
                    "{o} found {found} case(s) by searching for {} ({})",
                    secret.text, secret.what
                ));
            }
        }
        for (agency, number) in [
            (Agency::Customs, SEALED_REF),
            (Agency::PublicSecurity, "NB-PS-1"),
        ] {
            let surface = format!("gateway FindCaseByReference {agency:?} {number}");
            let result = fetch(
                gw.clone(),
                GATEWAY,
                "FindCaseByReference",
                FindCaseByReferenceRequest {
                    agency: agency as i32,
                    local_number: number.into(),
                }
                .encode_to_vec(),
                false,
                Duration::ZERO,
            )
            .await;
            let found = result.as_ref().map_or(0, |items| {
                FindCaseByReferenceResponse::decode(items.concat().as_slice())
                    .map_or(0, |r| r.cases.len())
            });
            let may = if number == SEALED_REF {
                o == CUSTOMS
            } else {
                involved.contains(&CASE)
            };
            if (found > 0) != may {
                wrong.push(format!("{o} {surface}: found {found}, may see it: {may}"));
            }
            // A refusal may repeat the number the caller asked for: that is no leak.
            let result = result.map_err(|status| {
                Status::new(status.code(), status.message().replace(number, "<asked>"))
            });
            push(surface, result);
        }

        // WatchFeed: every event of every case the viewer takes part in, then live.
        let expected_feed: BTreeSet<(String, u64)> = involved
            .iter()
            .flat_map(|c| (1..=last_version[c]).map(|v| ((*c).to_owned(), v)))
            .collect();
        let result = Watch::read(
            gw.clone(),
            GATEWAY,
            "WatchFeed",
            WatchFeedRequest { from_position: 0 }.encode_to_vec(),
            format!("{o} gateway WatchFeed"),
            |items| {
                let mut seen = BTreeSet::new();
                let mut caught_up = false;
                for item in items {
                    match WatchFeedResponse::decode(item.as_slice())
                        .expect("a WatchFeedResponse")
                        .item
                    {
                        Some(watch_feed_response::Item::Event(e)) => {
                            seen.insert((e.case_id, e.case_version));
                        }
                        Some(watch_feed_response::Item::Checkpoint(c)) => {
                            caught_up |= c.caught_up;
                        }
                        None => {}
                    }
                }
                let mut out: Vec<String> = expected_feed
                    .difference(&seen)
                    .map(|(c, v)| format!("{c} v{v}"))
                    .collect();
                if !caught_up {
                    out.push("the caught-up checkpoint".into());
                }
                out
            },
        )
        .await;
        push("gateway WatchFeed".into(), result);

        // The agency service's inbox: the police hold the pending sealed hand-off h2, and
        // h1, accepted but not decided (its filing clock runs).
        let expected_inbox: BTreeSet<(String, String)> = if o == POLICE {
            [
                (CASE.to_owned(), "h1".to_owned()),
                (SEALED_CASE.to_owned(), "h2".to_owned()),
            ]
            .into()
        } else {
            BTreeSet::new()
        };
        let listed = fetch(
            own_channel.clone(),
            AGENCY,
            "ListInbox",
            ListInboxRequest::default().encode_to_vec(),
            false,
            Duration::ZERO,
        )
        .await;
        let listed_items: BTreeSet<(String, String)> = listed
            .as_ref()
            .map(|items| {
                casebus_proto::agency::v1::ListInboxResponse::decode(items.concat().as_slice())
                    .expect("a ListInboxResponse")
                    .items
                    .into_iter()
                    .map(|i| (i.case_id, i.handoff_id))
                    .collect()
            })
            .unwrap_or_default();
        if listed_items != expected_inbox {
            wrong.push(format!(
                "{o} agency ListInbox: {listed_items:?}, expected {expected_inbox:?}"
            ));
        }
        push("agency ListInbox".into(), listed);
        let result = Watch::read(
            own_channel.clone(),
            AGENCY,
            "WatchInbox",
            WatchInboxRequest::default().encode_to_vec(),
            format!("{o} agency WatchInbox"),
            |items| {
                let mut seen = BTreeSet::new();
                let mut caught_up = false;
                for item in items {
                    let r =
                        WatchInboxResponse::decode(item.as_slice()).expect("a WatchInboxResponse");
                    if r.change == InboxChange::CaughtUp as i32 {
                        caught_up = true;
                    }
                    if let Some(i) = r.item {
                        seen.insert((i.case_id, i.handoff_id));
                    }
                }
                let mut out: Vec<String> = expected_inbox
                    .difference(&seen)
                    .map(|(c, h)| format!("hand-off {h} of {c}"))
                    .collect();
                if !caught_up {
                    out.push("CAUGHT_UP".into());
                }
                out
            },
        )
        .await;
        push("agency WatchInbox".into(), result);
    }

    // Refusals on a case with sealed events: the police and the other customs office
    // try to change the visibility of the Shanghai office's sealed events, the police
    // act without a track and answer a hand-off that does not exist.
    let mut refusals: Vec<(&str, String, Result<tonic::Response<_>, Status>)> = Vec::new();
    for o in [POLICE, CUSTOMS] {
        let service = &agencies[o];
        for target in [1, 2] {
            let r = client(service)
                .change_visibility(ChangeVisibilityRequest {
                    meta: meta(SEALED_CASE, &format!("vis-{target}"), None),
                    visibility_changed: Some(VisibilityChanged {
                        target_version: target,
                        visibility: vis(VisibilityKind::Participants, &[]),
                        reason: "unseal".into(),
                        wrapped_keys: Vec::new(),
                    }),
                })
                .await;
            refusals.push((o, format!("ChangeVisibility of v{target}"), r));
        }
    }
    let r = client(police)
        .add_note(AddNoteRequest {
            meta: meta(SEALED_CASE, "note-without-track", None),
            note_added: Some(NoteAdded {
                text: "no track".into(),
            }),
        })
        .await;
    refusals.push((POLICE, "AddNote".into(), r));
    let r = client(police)
        .accept_handoff(AcceptHandoffRequest {
            meta: meta(SEALED_CASE, "accept-unknown", None),
            handoff_accepted: Some(HandoffAccepted {
                handoff_id: "h9".into(),
                local_case_number: String::new(),
            }),
        })
        .await;
    refusals.push((POLICE, "AcceptHandoff".into(), r));
    // A control: the office of a visible event is named in the same refusal.
    let visible = client(police)
        .change_visibility(ChangeVisibilityRequest {
            meta: meta(CASE, "vis-visible", None),
            visibility_changed: Some(VisibilityChanged {
                target_version: 1,
                visibility: sealed(),
                reason: "seal it".into(),
                wrapped_keys: Vec::new(),
            }),
        })
        .await
        .expect_err("the police may not change customs' event");
    assert!(
        visible.message().contains(CUSTOMS),
        "the refusal on a visible event names its office: {}",
        visible.message()
    );
    for (o, command, r) in refusals {
        match r {
            Ok(reply) => wrong.push(format!(
                "{o} agency {command} on {SEALED_CASE} was accepted: {reply:?}"
            )),
            Err(status) => reads.push(Read {
                viewer: o,
                surface: format!("agency {command} refusal on {SEALED_CASE}"),
                bytes: status.message().as_bytes().to_vec(),
            }),
        }
    }

    let mut leaks = Vec::new();
    let mut seen_by_allowed: BTreeSet<&str> = BTreeSet::new();
    for read in &reads {
        for secret in SECRETS {
            if !contains(&read.bytes, secret.text) {
                continue;
            }
            if secret.seen_by.contains(&read.viewer) {
                seen_by_allowed.insert(secret.text);
            } else {
                leaks.push(format!(
                    "{} read {} ({}) through {}",
                    read.viewer, secret.text, secret.what, read.surface
                ));
            }
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
    let mut metrics = Vec::new();
    for (who, service) in &processes {
        metrics.push((*who, metrics_text(service).await, service.all_logs()));
    }
    for secret in SECRETS.iter().filter(|s| s.payload) {
        // The gateway audits a reference lookup with the number asked (the sweep asks
        // for the sealed one); any other payload text in the audit is a leak.
        if secret.text != SEALED_REF && contains(&audit, secret.text) {
            elsewhere.push(format!("{} in the AUDIT stream", secret.text));
        }
        for (who, metrics, logs) in &metrics {
            if logs.contains(secret.text) {
                elsewhere.push(format!("{} in the log of {who}", secret.text));
            }
            if metrics.contains(secret.text) {
                elsewhere.push(format!("{} in the metrics of {who}", secret.text));
            }
        }
    }
    for (who, metrics, _) in &metrics {
        for c in [CASE, SEALED_CASE, HIDDEN_CASE] {
            if metrics.contains(c) {
                elsewhere.push(format!("the case id {c} in the metrics of {who}"));
            }
        }
    }

    let mut figures = Figures::new(
        "visibility sweep over every read surface",
        &generation.label,
    );
    figures
        .row(
            "offices x read surfaces (pages and filters) checked",
            reads.len(),
        )
        .row(
            "secrets (notes, party, reference, titles, reason, office, case id)",
            SECRETS.len(),
        )
        .row("secrets seen by a reader the rules deny", leaks.len())
        .row("answers that are not what the scenario says", wrong.len())
        .row(
            "secrets in metrics, logs or the audit stream",
            elsewhere.len(),
        );
    figures.notes = [leaks.clone(), wrong.clone(), elsewhere.clone()]
        .concat()
        .iter()
        .map(|l| format!("- {l}"))
        .collect::<Vec<_>>()
        .join("\n");
    figures.write();

    // Positive control: every secret reached a viewer allowed to see it, so the sweep
    // can see each one where the rules allow it.
    let never: Vec<String> = SECRETS
        .iter()
        .filter(|s| !seen_by_allowed.contains(s.text))
        .map(|s| format!("{} ({}), for {:?}", s.text, s.what, s.seen_by))
        .collect();
    assert!(
        never.is_empty(),
        "never seen by anyone allowed to, so the sweep proves nothing for:\n{}",
        never.join("\n")
    );
    assert!(
        wrong.is_empty(),
        "answers unlike the scenario:\n{}",
        wrong.join("\n")
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
