//! Shared fixture of the bus tests: a real nats-server, provisioned streams, the five
//! offices of `casebus-fixtures` (one per agency) with their deterministic keys, and
//! helpers to build commands.

// Each test binary uses its own part of this module, re-exports included.
#![allow(dead_code, unused_imports)]

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::message::PublishMessage;
use time::OffsetDateTime;

use casebus_bus::{AppendRequest, Appender, AppenderConfig, Bus, BusConfig, StreamSettings};
use casebus_domain::DeadlineRules;
use casebus_proto::event::v1::payload::Kind;
use casebus_proto::{CaseId, RequestId};
use casebus_test_support::NatsServer;

pub use casebus_fixtures::catalogue;
pub use casebus_fixtures::{
    COURT, CUSTOMS, IPC, ONE_PER_AGENCY as OFFICES, POLICE, PROC, agency_registry as registry,
    case, office, signer,
};

/// Ceiling for a consumer to deliver what the test expects.
pub const DELIVERY_TIMEOUT: Duration = Duration::from_secs(20);

pub struct Fixture {
    pub server: NatsServer,
    pub bus: Bus,
}

impl Fixture {
    /// Publishes `bytes` on the case's subject as they are, with no casebus header (as a
    /// foreign or hostile publisher would), and returns the stream sequence.
    pub async fn publish_raw(&self, case_id: &str, bytes: Vec<u8>) -> u64 {
        self.bus
            .jetstream()
            .send_publish(
                format!("case.{case_id}"),
                PublishMessage::build().payload(bytes.into()),
            )
            .await
            .expect("publish")
            .await
            .expect("ack")
            .sequence
    }

    pub async fn start() -> Self {
        Self::start_with(StreamSettings::default()).await
    }

    pub async fn start_with(settings: StreamSettings) -> Self {
        let server = NatsServer::start().await.expect("nats-server starts");
        let client = server.client().await.expect("connect");
        let js = Bus::context(client.clone(), &BusConfig::default());
        casebus_bus::provision::provision(&js, &settings)
            .await
            .expect("provision");
        let bus = Bus::open(client, Arc::new(registry()), BusConfig::default())
            .await
            .expect("open bus");
        Self { server, bus }
    }

    pub fn appender(&self, office_id: &str) -> Appender {
        Appender::new(
            self.bus.clone(),
            signer(office_id),
            Arc::new(DeadlineRules::default()),
            AppenderConfig::default(),
        )
        .expect("appender")
    }

    /// Number of messages in `CASES`.
    pub async fn cases_count(&self) -> u64 {
        let mut stream = self.bus.cases().clone();
        stream.info().await.expect("stream info").state.messages
    }
}

static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

/// A request with a fresh request id.
pub fn request(case_id: &CaseId, payload: Kind) -> AppendRequest {
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    request_with_id(case_id, &format!("req-{n}"), payload)
}

pub fn request_with_id(case_id: &CaseId, request_id: &str, payload: Kind) -> AppendRequest {
    AppendRequest {
        case_id: case_id.clone(),
        request_id: RequestId::new(request_id).expect("valid request id"),
        actor: "officer-1".into(),
        occurred_at: None,
        causation_id: None,
        correlation_id: String::new(),
        visibility: None,
        payload,
    }
}

pub fn now() -> OffsetDateTime {
    OffsetDateTime::now_utc()
}
