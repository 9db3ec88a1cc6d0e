//! Figure 3: bulk ingest through the real `casebus-customs` binary's `Import` stream (a
//! few concurrent import streams, each opening its share of the cases and adding notes,
//! items of its cases interleaved), against raw async-nats JetStream publishing of
//! messages of the stored events' size, the baseline of figure 1.

use std::time::Instant;

use futures::StreamExt as _;

use casebus_bus::{Bus, BusConfig};
use casebus_integrity::token::Role;
use casebus_proto::CaseId;
use casebus_proto::agency::v1::agency_service_client::AgencyServiceClient;
use casebus_proto::agency::v1::import_request::Command;
use casebus_proto::agency::v1::import_response::Outcome;
use casebus_proto::agency::v1::{AddNoteRequest, CommandMeta, ImportRequest, OpenCaseRequest};
use casebus_proto::event::v1::payload::Kind;

use crate::grpc::{self, Credentials};
use crate::report::{Measurement, Row};
use crate::{append, fixture, ingest};

/// Size of the figure.
#[derive(Debug, Clone, Copy)]
pub struct Size {
    /// Cases imported (each opened by the import).
    pub cases: usize,
    /// Items per case: the opening, then notes.
    pub items_per_case: usize,
    /// Concurrent import streams, each with its own connection and a share of the cases.
    pub streams: usize,
}

/// Cases of one stream interleaved at a time: the service's window of 256 items in
/// flight per stream is full of distinct cases.
const GROUP: usize = 256;

fn case_id(case: usize) -> String {
    format!("IMPORT-{case:06}")
}

/// Item `round` of `case`: the opening for round 0, then notes.
fn item(case: usize, round: usize) -> ImportRequest {
    let meta = |request_id: String| {
        Some(CommandMeta {
            case_id: case_id(case),
            request_id,
            ..Default::default()
        })
    };
    let command = match (round, fixture::opened(case), fixture::note(case, round)) {
        (0, Kind::CaseOpened(opened), _) => Command::OpenCase(OpenCaseRequest {
            meta: meta(format!("open-{case}")),
            case_opened: Some(opened),
        }),
        (_, _, Kind::NoteAdded(note)) => Command::AddNote(AddNoteRequest {
            meta: meta(format!("note-{case}-{round}")),
            note_added: Some(note),
        }),
        _ => unreachable!("the fixture builds an opening and a note"),
    };
    ImportRequest {
        command: Some(command),
    }
}

/// Runs one import stream over the cases `first, first + step, ...` below `cases`;
/// returns the number of items recorded, failing on any refused item.
async fn one_stream(
    addr: std::net::SocketAddr,
    bearer: tonic::metadata::MetadataValue<tonic::metadata::Ascii>,
    size: Size,
    first: usize,
) -> anyhow::Result<u64> {
    let channel = grpc::channel(addr).await?;
    let mine: Vec<usize> = (first..size.cases).step_by(size.streams).collect();
    let items_per_case = size.items_per_case;
    // As an export of historical records would send them: case after case, a group of
    // cases at a time interleaved so that the service has many cases in flight (rounds
    // outer, cases inner within a group), each case's items depending on the one
    // before (a note needs the opening).
    let requests = futures::stream::iter(
        mine.chunks(GROUP)
            .map(<[usize]>::to_vec)
            .collect::<Vec<_>>(),
    )
    .flat_map(move |group| {
        futures::stream::iter(
            (0..items_per_case)
                .flat_map(move |round| group.clone().into_iter().map(move |c| item(c, round))),
        )
    });
    let mut request = tonic::Request::new(requests);
    request.metadata_mut().insert("authorization", bearer);
    let mut answers = AgencyServiceClient::new(channel)
        .import(request)
        .await?
        .into_inner();
    let mut recorded = 0u64;
    while let Some(answer) = answers.next().await {
        let answer = answer?;
        match answer.outcome {
            Some(Outcome::Recorded(_)) => recorded += 1,
            other => anyhow::bail!(
                "item {} ({}) was not recorded: {other:?}",
                answer.index,
                answer.request_id
            ),
        }
    }
    Ok(recorded)
}

/// Runs figure 3 on `bus` (a fresh server at `nats_url`).
pub async fn run(bus: &Bus, nats_url: &str, size: Size) -> anyhow::Result<Row> {
    let creds = Credentials::write()?;
    let service = ingest::start_customs(&creds, nats_url).await?;
    let bearer = creds.bearer(&[Role::Clerk])?;
    let addr = service.grpc()?;
    let js = Bus::context(bus.client().clone(), &BusConfig::default());
    let before = append::stream_count(&js, "CASES").await?;

    let start = Instant::now();
    let streams: Vec<_> = (0..size.streams)
        .map(|s| tokio::spawn(one_stream(addr, bearer.clone(), size, s)))
        .collect();
    let mut count = 0;
    for stream in streams {
        count += stream.await??;
    }
    let casebus = Measurement::rate("events/s", count, start.elapsed());

    // Correctness: CASES gained exactly the events answered, and sampled cases verify
    // completely with every item in place.
    let stored = append::stream_count(&js, "CASES").await? - before;
    let expected = (size.cases * size.items_per_case) as u64;
    anyhow::ensure!(
        count == expected,
        "{count} items recorded, {expected} were sent"
    );
    anyhow::ensure!(
        stored == count,
        "CASES gained {stored} events, {count} items were answered as recorded"
    );
    for case in [0, size.cases / 2, size.cases - 1] {
        let loaded = bus.load_case(&CaseId::new(&case_id(case))?).await?;
        anyhow::ensure!(
            loaded.rejected.is_empty() && loaded.events.len() == size.items_per_case,
            "case {case} does not verify completely"
        );
    }

    // The baseline of figure 1: raw publishes of messages as large as the stored events.
    let bytes = js.get_stream("CASES").await?.info().await?.state.bytes;
    let total = append::stream_count(&js, "CASES").await?;
    let event_size = usize::try_from(bytes / total.max(1))
        .unwrap_or(400)
        .saturating_sub(40)
        .max(64);
    let baseline = append::raw_publishes(&js, count, event_size, size.cases).await?;
    drop(service);
    Ok(Row::ratio(
        &format!(
            "bulk ingest through casebus-customs, {} Import streams, {} cases",
            size.streams, size.cases
        ),
        casebus,
        baseline,
        0.3,
        format!(
            "CASES gained exactly {count} events for {count} items answered as recorded ({} cases x {} items); 3 sampled cases verify (chain + signatures) with {} events each",
            size.cases, size.items_per_case, size.items_per_case
        ),
    ))
}
