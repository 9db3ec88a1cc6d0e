//! Issue 14's cost rows: appending notes sealed for two readers (LISTED_AGENCIES
//! [COURT] by the benchmark customs office: its own key and the court's) against
//! appending the same notes for every participant, in clear, on one server in one run;
//! and GetTimeline of a 50-event case whose notes are sealed, served opened by the
//! customs office's own gateway (`--decryption-key`), against the same case in clear
//! from that gateway, in one run.

use std::sync::Arc;
use std::time::{Duration, Instant};

use casebus_integrity::seal::{Opener, open_event};
use casebus_proto::event::v1::{Agency, Event, SignedEvent, Visibility, VisibilityKind};
use prost::Message as _;

use crate::append::{Size, appends_with};
use crate::fixture;
use crate::report::{Measurement, Row};

/// Runs the row at `size` (each of the four blocks writes its own `size.cases` cases).
pub async fn run(size: Size) -> anyhow::Result<Row> {
    let (_server, bus) = fixture::start_with(fixture::sealing_registry()?).await?;
    let clear = Arc::new(fixture::appender_caching(&bus, size.cases)?);
    let sealing = Arc::new(
        fixture::appender_caching(&bus, size.cases)?.seal_with(Arc::new(Opener::new(vec![
            fixture::opening_key(fixture::OFFICE)?,
        ])))?,
    );
    let to_court = Visibility {
        kind: VisibilityKind::ListedAgencies as i32,
        agencies: vec![Agency::Court as i32],
    };
    // The notes for every participant, in clear, and the same notes restricted by an
    // appender that seals, each on cases of their own, in the order clear, sealed,
    // sealed, clear, so neither kind always meets the fuller stream.
    let mut plain_count = 0;
    let mut sealed_count = 0;
    let mut plain_time = Duration::ZERO;
    let mut sealed_time = Duration::ZERO;
    for (block, seals) in [false, true, true, false].into_iter().enumerate() {
        let started = Instant::now();
        if seals {
            let (_, n) = appends_with(
                sealing.clone(),
                size,
                block * size.cases,
                Some(to_court.clone()),
            )
            .await?;
            sealed_count += n;
            sealed_time += started.elapsed();
        } else {
            let (_, n) = appends_with(clear.clone(), size, block * size.cases, None).await?;
            plain_count += n;
            plain_time += started.elapsed();
        }
    }
    let plain = Measurement::rate("events/s", plain_count, plain_time);
    let sealed = Measurement::rate("events/s", sealed_count, sealed_time);
    let court = Opener::new(vec![fixture::opening_key(fixture::READER)?]);
    let mut opened = 0;
    for i in [size.cases, size.cases + size.cases / 2, 3 * size.cases - 1] {
        let case = fixture::case(i)?;
        let last = bus.last_sequence(&case).await?;
        for message in bus.read_case_messages(&case, 0, last).await? {
            let event = Event::decode(
                SignedEvent::decode(message.payload.as_ref())?
                    .event
                    .as_slice(),
            )?;
            if event.case_version > 1 {
                anyhow::ensure!(
                    event.sealed.is_some(),
                    "case {i} v{} is not sealed",
                    event.case_version
                );
                open_event(&court, &event)?;
                opened += 1;
            }
        }
    }
    anyhow::ensure!(
        plain_count == sealed_count,
        "both halves append as many events"
    );
    Ok(Row::ratio(
        &format!(
            "append path, notes sealed for two readers, {} cases, {} writers",
            size.cases, size.writers
        ),
        sealed,
        plain,
        0.8,
        format!(
            "{sealed_count} sealed and {plain_count} clear events appended; {opened} sealed notes of 3 sampled cases open for the court and agree with their readable part"
        ),
    ))
}

/// The GetTimeline row: `calls` reads of a 50-event case of sealed notes, opened for the
/// caller's office by a gateway given its key, against `calls` reads of the same case in
/// clear from the same gateway, interleaved in four blocks (clear, sealed, sealed, clear).
pub async fn timeline(calls: usize) -> anyhow::Result<Row> {
    use casebus_integrity::token::Role;
    use casebus_proto::gateway::v1::gateway_client::GatewayClient;

    use crate::gateway::{CALLERS, start_gateway_with, timeline_request};
    use crate::grpc::{self, Credentials};

    let registry = fixture::sealing_registry()?;
    let (server, bus) = fixture::start_with(registry.clone()).await?;
    let creds = Credentials::write()?;
    registry.save(&creds.path("registry.toml"))?;
    let key_file = creds.path("office.enc.key");
    fixture::opening_key(fixture::OFFICE)?.save(&key_file)?;
    let appender =
        fixture::appender(&bus)?.seal_with(Arc::new(Opener::new(vec![fixture::opening_key(
            fixture::OFFICE,
        )?])))?;
    let to_court = Visibility {
        kind: VisibilityKind::ListedAgencies as i32,
        agencies: vec![Agency::Court as i32],
    };
    let plain_case = fixture::case(9_100_000)?;
    let sealed_case = fixture::case(9_100_001)?;
    for (case, visibility) in [(&plain_case, None), (&sealed_case, Some(to_court))] {
        appender
            .append(fixture::request(case, "open", fixture::opened(0))?)
            .await?;
        for n in 1..50 {
            let mut request = fixture::request(case, &format!("n{n}"), fixture::note(0, n))?;
            request.visibility.clone_from(&visibility);
            appender.append(request).await?;
        }
    }
    let gateway = start_gateway_with(
        &creds,
        &server.url(),
        "gw-seal-bench",
        &["--decryption-key".into(), key_file.display().to_string()],
    )
    .await?;
    let bearer = creds.bearer(&[Role::Reader])?;
    let channel = grpc::channel(gateway.grpc()?).await?;
    let deadline = Instant::now() + Duration::from_secs(60);
    for case in [&plain_case, &sealed_case] {
        loop {
            let response = GatewayClient::new(channel.clone())
                .get_timeline(timeline_request(case.as_str(), &bearer))
                .await
                .map(tonic::Response::into_inner);
            if response.is_ok_and(|r| r.events.len() == 50) {
                break;
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "the gateway did not project case {case} within 60 s"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    // Each answer is checked: 49 notes opened for a sealed case, none for the clear one.
    let read = |case: &casebus_proto::CaseId, sealed: bool| {
        let (c, b, id) = (channel.clone(), bearer.clone(), case.to_string());
        grpc::drive("rps", CALLERS, calls / 2, move |_| {
            let mut client = GatewayClient::new(c.clone());
            let request = timeline_request(&id, &b);
            async move {
                let events = client.get_timeline(request).await?.into_inner().events;
                anyhow::ensure!(
                    events.len() == 50,
                    "a timeline came back with {} events",
                    events.len()
                );
                let opened = events.iter().filter(|e| e.opened).count();
                let expected = if sealed { 49 } else { 0 };
                anyhow::ensure!(
                    opened == expected,
                    "{opened} events opened, expected {expected}"
                );
                Ok(())
            }
        })
    };
    let mut plain = Vec::new();
    let mut sealed = Vec::new();
    for seals in [false, true, true, false] {
        if seals {
            sealed.push(read(&sealed_case, true).await?);
        } else {
            plain.push(read(&plain_case, false).await?);
        }
    }
    // Both halves over their two blocks: calls over seconds; p99 the worse block's.
    let combined = |m: &[Measurement]| {
        let count = m.iter().map(|m| m.count).sum();
        let seconds = m.iter().map(|m| m.seconds).sum();
        let mut out = Measurement::rate("rps", count, Duration::from_secs_f64(seconds));
        out.p50_ms = m.iter().filter_map(|m| m.p50_ms).reduce(f64::max);
        out.p99_ms = m.iter().filter_map(|m| m.p99_ms).reduce(f64::max);
        out
    };
    let sealed_m = combined(&sealed);
    let plain_m = combined(&plain);
    drop(gateway);
    drop(bus);
    drop(server);
    Ok(Row::ratio(
        &format!(
            "GetTimeline of a 50-event case with 49 sealed notes, opened by the office's own gateway, {CALLERS} callers"
        ),
        sealed_m,
        plain_m,
        0.9,
        format!(
            "every answer carried the 50 events; each of the {calls} sealed reads had its 49 notes opened, no clear read had any"
        ),
    ))
}
