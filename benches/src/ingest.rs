//! Figure 2: commands through a real agency service binary (unary gRPC, 32 concurrent
//! callers on one channel: authenticate, decide, sign, publish, answer) against a bare
//! tonic unary echo of a message of the same size, same concurrency.

use prost::Message as _;

use casebus_bus::Bus;
use casebus_integrity::token::Role;
use casebus_proto::agency::v1::agency_service_client::AgencyServiceClient;
use casebus_proto::agency::v1::{AddNoteRequest, CommandMeta, OpenCaseRequest};
use casebus_proto::bench::v1::EchoMessage;
use casebus_proto::bench::v1::echo_service_client::EchoServiceClient;
use casebus_proto::event::v1::payload::Kind;

use crate::grpc::{self, Credentials};
use crate::report::Row;
use crate::{append, fixture};

/// Concurrent callers, as in the figure.
const CALLERS: usize = 32;

fn note_request(case: usize, n: usize) -> AddNoteRequest {
    let Kind::NoteAdded(note) = fixture::note(case, n) else {
        unreachable!("fixture::note builds a NoteAdded")
    };
    AddNoteRequest {
        meta: Some(CommandMeta {
            case_id: format!("INGEST-{case:05}"),
            request_id: format!("note-{case}-{n}"),
            ..Default::default()
        }),
        note_added: Some(note),
    }
}

/// Starts the real `casebus-customs` binary for the benchmark office on `nats_url`.
pub async fn start_customs(creds: &Credentials, nats_url: &str) -> anyhow::Result<grpc::Process> {
    grpc::start(
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
    .await
}

/// Runs figure 2 with `commands` notes over `cases` cases.
pub async fn run(bus: &Bus, nats_url: &str, cases: usize, commands: usize) -> anyhow::Result<Row> {
    let creds = Credentials::write()?;
    let service = start_customs(&creds, nats_url).await?;
    let bearer = creds.bearer(&[Role::Clerk])?;
    let channel = grpc::channel(service.grpc()?).await?;
    let before = append::stream_count(
        &casebus_bus::Bus::context(bus.client().clone(), &Default::default()),
        "CASES",
    )
    .await?;

    // Open the cases first (not timed): the figure is about steady ingest.
    for case in 0..cases {
        let mut request = tonic::Request::new(OpenCaseRequest {
            meta: Some(CommandMeta {
                case_id: format!("INGEST-{case:05}"),
                request_id: format!("open-{case}"),
                ..Default::default()
            }),
            case_opened: match fixture::opened(case) {
                Kind::CaseOpened(c) => Some(c),
                _ => None,
            },
        });
        request
            .metadata_mut()
            .insert("authorization", bearer.clone());
        AgencyServiceClient::new(channel.clone())
            .open_case(request)
            .await?;
    }

    let (client_channel, client_bearer) = (channel.clone(), bearer.clone());
    let casebus = grpc::drive("commands/s", CALLERS, commands, move |i| {
        let mut client = AgencyServiceClient::new(client_channel.clone());
        let mut request = tonic::Request::new(note_request(i % cases, i / cases + 1));
        request
            .metadata_mut()
            .insert("authorization", client_bearer.clone());
        async move {
            client.add_note(request).await?;
            Ok(())
        }
    })
    .await?;

    let size = note_request(0, 1).encoded_len();
    let (echo_addr, echo_task) = grpc::start_echo().await?;
    let echo_channel = grpc::channel(echo_addr).await?;
    let payload = bytes::Bytes::from(vec![7u8; size]);
    let baseline = grpc::drive("rps", CALLERS, commands, move |_| {
        let mut client = EchoServiceClient::new(echo_channel.clone());
        let message = EchoMessage {
            payload: payload.to_vec(),
        };
        async move {
            client.echo(message).await?;
            Ok(())
        }
    })
    .await?;
    echo_task.abort();

    let after = append::stream_count(
        &casebus_bus::Bus::context(bus.client().clone(), &Default::default()),
        "CASES",
    )
    .await?;
    let stored = after - before;
    let expected = (cases + commands) as u64;
    anyhow::ensure!(
        stored == expected,
        "CASES gained {stored} events, {expected} commands were answered"
    );
    let p99_ok = match (casebus.p99_ms, baseline.p99_ms) {
        (Some(c), Some(b)) => c <= 2.0 * b,
        _ => false,
    };
    let mut row = Row::ratio(
        &format!("ingest through casebus-customs, unary gRPC, {CALLERS} callers"),
        casebus,
        baseline,
        0.5,
        format!(
            "CASES gained exactly {expected} events for {expected} answered commands ({cases} opens + {commands} notes)"
        ),
    );
    row.target = ">= 0.5x rps; p99 <= 2x echo's".into();
    row.met = row.met && p99_ok;
    drop(service);
    Ok(row)
}
