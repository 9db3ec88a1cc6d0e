//! Offices, keys and payloads for benchmark runs: deterministic, so two runs write
//! byte-for-byte comparable events.

use std::sync::Arc;

use time::macros::datetime;

use casebus_bus::{AppendRequest, Appender, AppenderConfig, Bus, BusConfig, StreamSettings};
use casebus_domain::DeadlineRules;
use casebus_integrity::{OfficeEntry, OfficeRegistry, OfficeSigner};
use casebus_proto::event::v1::payload::Kind;
use casebus_proto::event::v1::{CaseOpened, CaseType, NoteAdded};
use casebus_proto::{CaseId, OfficeId, RequestId};
use casebus_test_support::NatsServer;

/// The office every benchmark writes as.
pub const OFFICE: &str = "customs:bench";

/// The benchmark office's signer.
pub fn signer() -> anyhow::Result<OfficeSigner> {
    Ok(OfficeSigner::from_seed(
        OfficeId::new(OFFICE)?,
        "k1",
        [11; 32],
    )?)
}

/// A registry with the benchmark office.
pub fn registry() -> anyhow::Result<OfficeRegistry> {
    let mut registry = OfficeRegistry::default();
    registry.insert_office(OfficeEntry {
        id: OfficeId::new(OFFICE)?,
        name: "Benchmark customs office".into(),
        keys: vec![signer()?.key_entry(datetime!(2020-01-01 0:00 UTC))],
        encryption_keys: Vec::new(),
    })?;
    Ok(registry)
}

/// The court office a sealed benchmark note is also sealed for.
pub const READER: &str = "court:bench";

/// The encryption key of `office` (deterministic).
pub fn opening_key(office: &str) -> anyhow::Result<casebus_integrity::seal::OpeningKey> {
    Ok(casebus_integrity::seal::OpeningKey::derive(
        OfficeId::new(office)?,
        "e1",
        &[office.len() as u8; 32],
    )?)
}

/// [`registry`] with encryption keys for the benchmark office and [`READER`].
pub fn sealing_registry() -> anyhow::Result<OfficeRegistry> {
    let mut registry = registry()?;
    let from = datetime!(2020-01-01 0:00 UTC);
    registry.add_encryption_key(
        &OfficeId::new(OFFICE)?,
        opening_key(OFFICE)?.key_entry(from),
    )?;
    registry.insert_office(OfficeEntry {
        id: OfficeId::new(READER)?,
        name: "Benchmark court".into(),
        keys: Vec::new(),
        encryption_keys: vec![opening_key(READER)?.key_entry(from)],
    })?;
    Ok(registry)
}

/// A started server with provisioned streams, and a bus on it.
pub async fn start() -> anyhow::Result<(NatsServer, Bus)> {
    start_with(registry()?).await
}

/// [`start`] with the bus verifying against `registry`.
pub async fn start_with(registry: OfficeRegistry) -> anyhow::Result<(NatsServer, Bus)> {
    let server = NatsServer::start().await?;
    let client = server.client().await?;
    let config = BusConfig::default();
    casebus_bus::provision::provision(
        &Bus::context(client.clone(), &config),
        &StreamSettings::default(),
    )
    .await?;
    let bus = Bus::open(client, Arc::new(registry), config).await?;
    Ok((server, bus))
}

/// An appender for the benchmark office.
pub fn appender(bus: &Bus) -> anyhow::Result<Appender> {
    appender_caching(bus, 0)
}

/// The benchmark office's appender, with room for at least `cases` case heads of up
/// to 64 KiB each.
pub fn appender_caching(bus: &Bus, cases: usize) -> anyhow::Result<Appender> {
    let defaults = AppenderConfig::default();
    Ok(Appender::new(
        bus.clone(),
        signer()?,
        Arc::new(DeadlineRules::default()),
        AppenderConfig {
            cache_bytes: defaults.cache_bytes.max(cases.saturating_mul(64 * 1024)),
            ..defaults
        },
    )?)
}

/// The case id of benchmark case `i`.
pub fn case(i: usize) -> anyhow::Result<CaseId> {
    Ok(CaseId::new(&format!("BENCH-{i:07}"))?)
}

/// A request with id `request` for `payload` on `case`.
pub fn request(case: &CaseId, request: &str, payload: Kind) -> anyhow::Result<AppendRequest> {
    Ok(AppendRequest {
        case_id: case.clone(),
        request_id: RequestId::new(request)?,
        actor: "bench".into(),
        occurred_at: None,
        causation_id: None,
        correlation_id: String::new(),
        visibility: None,
        payload,
    })
}

/// The payload that opens a benchmark case.
pub fn opened(i: usize) -> Kind {
    Kind::CaseOpened(CaseOpened {
        case_type: CaseType::CounterfeitTrademark as i32,
        title: format!("Benchmark case {i}"),
        summary: "counterfeit goods detained at the border".into(),
        ..Default::default()
    })
}

/// A note of about the size of a typical command payload.
pub fn note(i: usize, j: usize) -> Kind {
    Kind::NoteAdded(NoteAdded {
        text: format!(
            "case {i} note {j}: inspection of the consignment found 120 cartons of earphones bearing the registered mark"
        ),
    })
}
