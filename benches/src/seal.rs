//! Issue 14's cost row: appending notes sealed for two readers (LISTED_AGENCIES
//! [COURT] by the benchmark customs office: its own key and the court's) against
//! appending the same notes for every participant, in clear, on one server in one run.

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
