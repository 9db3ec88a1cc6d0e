//! Figures 5 and 6, through the real gateway binary: GetTimeline of a 50-event case with
//! 32 concurrent callers against a bare tonic echo of the response's size, and the
//! latency from a command's answer at an agency service to the event's arrival on a
//! WatchTimeline stream, at a steady 1,000 commands per second.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt as _;
use hdrhistogram::Histogram;
use prost::Message as _;

use casebus_bus::Bus;
use casebus_integrity::token::Role;
use casebus_proto::agency::v1::agency_service_client::AgencyServiceClient;
use casebus_proto::agency::v1::{AddNoteRequest, CommandMeta, OpenCaseRequest};
use casebus_proto::bench::v1::EchoMessage;
use casebus_proto::bench::v1::echo_service_client::EchoServiceClient;
use casebus_proto::event::v1::payload::Kind;
use casebus_proto::gateway::v1::gateway_client::GatewayClient;
use casebus_proto::gateway::v1::{
    Direction, GetTimelineRequest, WatchTimelineRequest, watch_timeline_response,
};

use crate::grpc::{self, Credentials, Process};
use crate::report::{Measurement, Row};
use crate::{append, fixture};

/// Concurrent callers, as in the figure.
pub(crate) const CALLERS: usize = 32;

/// Starts the gateway binary on `nats_url` with the credentials in `creds`.
pub async fn start_gateway(creds: &Credentials, nats_url: &str) -> anyhow::Result<Process> {
    start_gateway_with(creds, nats_url, "gw-bench", &[]).await
}

/// Starts the gateway binary with durable consumer `consumer` and `extra` arguments.
pub async fn start_gateway_with(
    creds: &Credentials,
    nats_url: &str,
    consumer: &str,
    extra: &[String],
) -> anyhow::Result<Process> {
    let mut args: Vec<String> = vec![
        "--db".into(),
        creds.path("gateway.db").display().to_string(),
        "--consumer-name".into(),
        consumer.into(),
        "--registry".into(),
        creds.path("registry.toml").display().to_string(),
        "--trusted-issuers".into(),
        creds.path("issuers.toml").display().to_string(),
        "--grpc-listen".into(),
        "127.0.0.1:0".into(),
        "--metrics-listen".into(),
        "127.0.0.1:0".into(),
        "--nats-url".into(),
        nats_url.into(),
    ];
    args.extend_from_slice(extra);
    grpc::start("casebus-gateway", &args, &creds.path("gateway.ready")).await
}

pub(crate) fn timeline_request(
    case: &str,
    bearer: &tonic::metadata::MetadataValue<tonic::metadata::Ascii>,
) -> tonic::Request<GetTimelineRequest> {
    let mut request = tonic::Request::new(GetTimelineRequest {
        case_id: case.into(),
        from_version: 1,
        direction: Direction::Forward as i32,
        limit: 50,
    });
    request
        .metadata_mut()
        .insert("authorization", bearer.clone());
    request
}

/// Figure 5: `calls` GetTimeline calls of a 50-event case.
pub async fn get_timeline(bus: &Bus, nats_url: &str, calls: usize) -> anyhow::Result<Row> {
    let creds = Credentials::write()?;
    let appender = fixture::appender(bus)?;
    let case = fixture::case(9_000_000)?;
    appender
        .append(fixture::request(&case, "open", fixture::opened(0))?)
        .await?;
    for n in 1..50 {
        appender
            .append(fixture::request(
                &case,
                &format!("n{n}"),
                fixture::note(0, n),
            )?)
            .await?;
    }
    let gateway = start_gateway(&creds, nats_url).await?;
    let bearer = creds.bearer(&[Role::Reader])?;
    let channel = grpc::channel(gateway.grpc()?).await?;
    let deadline = Instant::now() + Duration::from_secs(60);
    let size = loop {
        // NOT_FOUND until the gateway has projected the case.
        let response = GatewayClient::new(channel.clone())
            .get_timeline(timeline_request(case.as_str(), &bearer))
            .await
            .map(tonic::Response::into_inner);
        if let Ok(response) = response
            && response.events.len() == 50
        {
            break response.encoded_len();
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "the gateway did not project the case within 60 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let js = Bus::context(bus.client().clone(), &Default::default());
    let audits_before = append::stream_count(&js, "AUDIT").await?;

    let (c, b, id) = (channel.clone(), bearer.clone(), case.to_string());
    let casebus = grpc::drive("rps", CALLERS, calls, move |_| {
        let mut client = GatewayClient::new(c.clone());
        let request = timeline_request(&id, &b);
        async move {
            let events = client
                .get_timeline(request)
                .await?
                .into_inner()
                .events
                .len();
            anyhow::ensure!(events == 50, "a timeline came back with {events} events");
            Ok(())
        }
    })
    .await?;
    let audits = append::stream_count(&js, "AUDIT").await? - audits_before;

    let (echo_addr, echo_task) = grpc::start_echo().await?;
    let echo_channel = grpc::channel(echo_addr).await?;
    let payload = vec![7u8; size];
    let baseline = grpc::drive("rps", CALLERS, calls, move |_| {
        let mut client = EchoServiceClient::new(echo_channel.clone());
        let message = EchoMessage {
            payload: payload.clone(),
        };
        async move {
            client.echo(message).await?;
            Ok(())
        }
    })
    .await?;
    echo_task.abort();
    anyhow::ensure!(
        audits == calls as u64,
        "AUDIT gained {audits} records for {calls} reads"
    );
    let p99_ok = casebus.p99_ms.is_some_and(|p| p < 5.0);
    let mut row = Row::ratio(
        &format!("GetTimeline of a 50-event case ({size} bytes), {CALLERS} callers"),
        casebus,
        baseline,
        0.5,
        format!(
            "every answer carried the 50 events, and AUDIT gained exactly one record per read ({calls})"
        ),
    );
    row.target = ">= 0.5x rps; p99 < 5 ms".into();
    row.met = row.met && p99_ok;
    Ok(row)
}

/// Figure 6: `seconds` of commands at `rate` per second over `cases` cases, each event
/// timed from the command's answer to its arrival on WatchTimeline.
pub async fn watch_latency(
    nats_url: &str,
    rate: u64,
    seconds: u64,
    cases: usize,
) -> anyhow::Result<Row> {
    let creds = Credentials::write()?;
    let customs = grpc::start(
        "casebus-customs",
        &[
            "--office".into(),
            fixture::OFFICE.into(),
            "--signing-key".into(),
            creds.path("office.key").display().to_string(),
            "--registry".into(),
            creds.path("registry.toml").display().to_string(),
            "--trusted-issuers".into(),
            creds.path("issuers.toml").display().to_string(),
            "--grpc-listen".into(),
            "127.0.0.1:0".into(),
            "--metrics-listen".into(),
            "127.0.0.1:0".into(),
            "--nats-url".into(),
            nats_url.into(),
        ],
        &creds.path("customs.ready"),
    )
    .await?;
    let gateway = start_gateway(&creds, nats_url).await?;
    let clerk = creds.bearer(&[Role::Clerk])?;
    let reader = creds.bearer(&[Role::Reader])?;
    let service = grpc::channel(customs.grpc()?).await?;
    let gw = grpc::channel(gateway.grpc()?).await?;

    let case_id = |i: usize| format!("WATCH-{i:04}");
    for i in 0..cases {
        let mut request = tonic::Request::new(OpenCaseRequest {
            meta: Some(CommandMeta {
                case_id: case_id(i),
                request_id: "open".into(),
                ..Default::default()
            }),
            case_opened: match fixture::opened(i) {
                Kind::CaseOpened(c) => Some(c),
                _ => None,
            },
        });
        request
            .metadata_mut()
            .insert("authorization", clerk.clone());
        AgencyServiceClient::new(service.clone())
            .open_case(request)
            .await?;
    }

    // A case the gateway has not projected yet is NOT_FOUND: wait for every opening.
    let deadline = Instant::now() + Duration::from_secs(60);
    for i in 0..cases {
        loop {
            let mut request = timeline_request(&case_id(i), &reader);
            request.get_mut().limit = 1;
            if GatewayClient::new(gw.clone())
                .get_timeline(request)
                .await
                .is_ok()
            {
                break;
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "the gateway did not project case {i} within 60 s"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    // Arrival times by (case, version), recorded by one watcher per case.
    let arrivals: Arc<Mutex<HashMap<(usize, u64), Instant>>> = Arc::default();
    let mut watchers = Vec::new();
    for i in 0..cases {
        let mut request = tonic::Request::new(WatchTimelineRequest {
            case_id: case_id(i),
            from_version: 2,
        });
        request
            .metadata_mut()
            .insert("authorization", reader.clone());
        let mut stream = GatewayClient::new(gw.clone())
            .watch_timeline(request)
            .await?
            .into_inner();
        let arrivals = arrivals.clone();
        watchers.push(tokio::spawn(async move {
            while let Some(Ok(item)) = stream.next().await {
                if let Some(watch_timeline_response::Item::Event(event)) = item.item
                    && let Ok(mut map) = arrivals.lock()
                {
                    map.insert((i, event.case_version), Instant::now());
                }
            }
        }));
    }

    let answers: Arc<Mutex<HashMap<(usize, u64), Instant>>> = Arc::default();
    let total = rate * seconds;
    let mut ticker = tokio::time::interval(Duration::from_micros(1_000_000 / rate));
    let limit = Arc::new(tokio::sync::Semaphore::new(256));
    let mut calls = Vec::new();
    for n in 0..total as usize {
        ticker.tick().await;
        let case = n % cases;
        let permit = limit.clone().acquire_owned().await?;
        let (service, clerk, answers) = (service.clone(), clerk.clone(), answers.clone());
        let Kind::NoteAdded(note) = fixture::note(case, n) else {
            unreachable!("a note")
        };
        let mut request = tonic::Request::new(AddNoteRequest {
            meta: Some(CommandMeta {
                case_id: case_id(case),
                request_id: format!("n{n}"),
                ..Default::default()
            }),
            note_added: Some(note),
        });
        request.metadata_mut().insert("authorization", clerk);
        calls.push(tokio::spawn(async move {
            let reply = AgencyServiceClient::new(service).add_note(request).await;
            let at = Instant::now();
            drop(permit);
            let reply = reply?.into_inner();
            if let Ok(mut map) = answers.lock() {
                map.insert((case, reply.case_version), at);
            }
            anyhow::Ok(())
        }));
    }
    for call in calls {
        call.await??;
    }
    // Wait (bounded) until every answered event arrived on its watch.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let done = {
            let (a, w) = (
                answers.lock().map(|m| m.len()).unwrap_or(0),
                arrivals.lock().map(|m| m.len()).unwrap_or(0),
            );
            w >= a && a == total as usize
        };
        if done || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for w in watchers {
        w.abort();
    }
    let answers = answers.lock().map(|m| m.clone()).unwrap_or_default();
    let arrivals = arrivals.lock().map(|m| m.clone()).unwrap_or_default();
    let mut hist = Histogram::<u64>::new(3)?;
    let mut missing = 0;
    for (key, answered) in &answers {
        match arrivals.get(key) {
            // An event may reach the watcher before the command's answer reaches the
            // client; that counts as zero latency.
            Some(arrived) => {
                hist.record(arrived.saturating_duration_since(*answered).as_micros() as u64)?
            }
            None => missing += 1,
        }
    }
    anyhow::ensure!(
        missing == 0,
        "{missing} answered events never arrived on WatchTimeline within 30 s"
    );
    let measurement = Measurement::rate(
        "events/s",
        answers.len() as u64,
        Duration::from_secs(seconds),
    )
    .with_latency(&hist);
    let met = measurement.p99_ms.is_some_and(|p| p < 20.0);
    drop(customs);
    drop(gateway);
    Ok(Row {
        figure: format!(
            "command answered -> event on WatchTimeline, {rate} commands/s over {cases} cases"
        ),
        casebus: measurement,
        baseline: None,
        ratio: None,
        target: "p99 < 20 ms".into(),
        met,
        verified: format!(
            "all {} answered events arrived on their watch streams exactly at their versions",
            answers.len()
        ),
    })
}

/// Figure 7: with `events` events in the store (cases of 50 events), how fast a fresh
/// gateway projects them, its peak RSS, and GetTimeline p99 on a 50-event case.
pub async fn growth(events: u64) -> anyhow::Result<Growth> {
    let (server, bus) = fixture::start().await?;
    let cases = (events / 50).max(1) as usize;
    let size = append::Size {
        cases,
        rounds: 49,
        writers: 256.min(cases),
    };
    let (_, count) = append::casebus_appends(&bus, size, 0).await?;
    // The baseline: a raw durable pull consumer reading (and acking) the same stream.
    let js = Bus::context(bus.client().clone(), &Default::default());
    let raw = crate::rebuild::raw_consume(&js, "CASES", count).await?;
    let creds = Credentials::write()?;
    let start = Instant::now();
    let gateway = start_gateway(&creds, &server.url()).await?;
    let bearer = creds.bearer(&[Role::Reader])?;
    let channel = grpc::channel(gateway.grpc()?).await?;
    // Cases are written round robin, so the last case completes last.
    let last = fixture::case(cases - 1)?.to_string();
    let deadline = Instant::now() + Duration::from_secs(1200);
    loop {
        let response = GatewayClient::new(channel.clone())
            .get_timeline(timeline_request(&last, &bearer))
            .await;
        if response.is_ok_and(|r| r.into_inner().events.len() == 50) {
            break;
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "the gateway did not catch up with {count} events"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let caught_up = start.elapsed();
    let first = fixture::case(0)?.to_string();
    let (c, b) = (channel.clone(), bearer.clone());
    let reads = grpc::drive("rps", CALLERS, 2_000, move |_| {
        let mut client = GatewayClient::new(c.clone());
        let request = timeline_request(&first, &b);
        async move {
            client.get_timeline(request).await?;
            Ok(())
        }
    })
    .await?;
    let rss = gateway.peak_rss().unwrap_or(0);
    drop(gateway);
    drop(bus);
    drop(server);
    Ok(Growth {
        projected: Measurement::rate("events/s projected", count, caught_up),
        raw,
        rss,
        p99_ms: reads.p99_ms.unwrap_or(f64::NAN),
    })
}

/// What the growth figure measured at one size.
pub struct Growth {
    /// A fresh gateway catching up the whole stream, from its start until the last
    /// case's 50 events are served.
    pub projected: Measurement,
    /// A raw pull consumer reading and acking the same stream.
    pub raw: Measurement,
    /// The gateway's peak resident set size, bytes.
    pub rss: u64,
    /// GetTimeline p99 of 32 callers afterwards.
    pub p99_ms: f64,
}
