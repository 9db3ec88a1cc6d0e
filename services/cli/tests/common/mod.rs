//! Shared fixture of the CLI tests: a real nats-server with provisioned streams, the five
//! offices of `casebus-fixtures` (one per agency) written to a registry file, helpers to
//! seed cases, to publish raw messages, to run durable consumers that record what they
//! handle, and to run the real `casebus` binary against it all.

// Each test binary uses its own part of this module, re-exports included.
#![allow(dead_code, unused_imports)]

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use prost::Message as _;
use time::OffsetDateTime;

use casebus_bus::ops::{Ops, PublishOptions};
use casebus_bus::{
    AppendRequest, Appended, Appender, AppenderConfig, Bus, BusConfig, CancellationToken,
    ConsumerConfig, ConsumerCounters, ConsumerRunner, EventHandler, HandlerError, StoredEvent,
    StreamSettings,
};
use casebus_domain::DeadlineRules;
use casebus_integrity::{EventHash, OfficeRegistry, OfficeSigner};
use casebus_proto::event::v1::payload::Kind;
use casebus_proto::event::v1::{Event, NoteAdded, Payload};
use casebus_proto::{CaseId, RequestId, timestamp_from};
use casebus_test_support::{NatsServer, wait_until};

pub use casebus_fixtures::catalogue;
pub use casebus_fixtures::{
    COURT, CUSTOMS, IPC, ONE_PER_AGENCY as OFFICES, POLICE, PROC, agency_registry as registry,
    case, office, second_signer, signer,
};

/// Ceiling for a consumer to deliver what the test expects.
pub const DELIVERY_TIMEOUT: Duration = Duration::from_secs(30);
/// Ceiling for one run of the binary.
pub const RUN_TIMEOUT: Duration = Duration::from_secs(60);
/// Ceiling for the server to notice that a consumer's client is gone.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(45);

/// The binary under test.
pub const CASEBUS: &str = env!("CARGO_BIN_EXE_casebus");

/// [`registry`] plus the `k2` key of `id`.
pub fn registry_with_second_key(id: &str) -> OfficeRegistry {
    casebus_fixtures::with_second_key(registry(), id)
}

/// The outcome of one run of the binary.
#[derive(Debug)]
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    /// The whole standard output as one JSON document.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| {
            panic!(
                "stdout is not JSON ({e}): {}\nstderr: {}",
                self.stdout, self.stderr
            )
        })
    }

    /// Standard output as JSON lines.
    pub fn json_lines(&self) -> Vec<serde_json::Value> {
        self.stdout
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
            .collect()
    }

    /// Asserts the exit code, showing the output when it differs.
    #[track_caller]
    pub fn expect_code(&self, code: i32) -> &Self {
        assert_eq!(
            self.code, code,
            "exit code {} (expected {code})\nstdout:\n{}\nstderr:\n{}",
            self.code, self.stdout, self.stderr
        );
        self
    }
}

/// Runs the binary with `args`, the given environment, and no CASEBUS_* variables
/// inherited from the machine.
pub async fn run_with_env(args: &[&str], env: &[(&str, &str)]) -> Run {
    let mut command = tokio::process::Command::new(CASEBUS);
    command.args(args);
    for (name, _) in std::env::vars() {
        if name.starts_with("CASEBUS_") {
            command.env_remove(name);
        }
    }
    command.env_remove("RUST_LOG");
    for (name, value) in env {
        command.env(name, value);
    }
    command.kill_on_drop(true);
    let output = tokio::time::timeout(RUN_TIMEOUT, command.output())
        .await
        .unwrap_or_else(|_| panic!("casebus {args:?} did not finish within {RUN_TIMEOUT:?}"))
        .expect("casebus runs");
    Run {
        code: output.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// Runs the binary without NATS or registry settings.
pub async fn run_offline(args: &[&str]) -> Run {
    run_with_env(args, &[("CASEBUS_NATS_URL", "nats://127.0.0.1:1")]).await
}

/// Records what a consumer handles: (case, version, sequence).
#[derive(Clone, Default)]
pub struct Recorder {
    seen: Arc<Mutex<Vec<(String, u64, u64)>>>,
}

impl Recorder {
    pub fn seen(&self) -> Vec<(String, u64, u64)> {
        self.seen.lock().expect("lock").clone()
    }

    pub fn sequences(&self) -> Vec<u64> {
        self.seen().into_iter().map(|(_, _, s)| s).collect()
    }
}

impl EventHandler for Recorder {
    async fn handle(&self, event: &StoredEvent) -> Result<(), HandlerError> {
        self.seen.lock().expect("lock").push((
            event.event.case_id.to_string(),
            event.event.version(),
            event.sequence,
        ));
        Ok(())
    }
}

/// A durable consumer running in the background on its own connection.
pub struct RunningConsumer {
    pub recorder: Recorder,
    pub counters: Arc<ConsumerCounters>,
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<()>,
    client: casebus_bus::Client,
}

impl RunningConsumer {
    /// Stops pulling, waits for the runner to end and closes its connection, so the
    /// server forgets its pull requests.
    pub async fn stop(self) {
        self.shutdown.cancel();
        let _ = self.task.await;
        let _ = self.client.drain().await;
    }

    /// Waits until the consumer has handled `n` events in all.
    pub async fn wait_handled(&self, n: u64) {
        let counters = self.counters.clone();
        wait_until(
            DELIVERY_TIMEOUT,
            &format!("{n} events handled"),
            async || counters.handled.load(std::sync::atomic::Ordering::Relaxed) >= n,
        )
        .await
        .expect("events handled");
    }

    /// Waits until the consumer has dead-lettered `n` messages in all.
    pub async fn wait_dead_lettered(&self, n: u64) {
        let counters = self.counters.clone();
        wait_until(
            DELIVERY_TIMEOUT,
            &format!("{n} messages dead-lettered"),
            async || {
                counters
                    .dead_lettered
                    .load(std::sync::atomic::Ordering::Relaxed)
                    >= n
            },
        )
        .await
        .expect("messages dead-lettered");
    }
}

pub struct Fixture {
    pub server: NatsServer,
    pub bus: Bus,
    pub ops: Ops,
    pub dir: tempfile::TempDir,
    pub registry_path: PathBuf,
}

impl Fixture {
    /// A server with provisioned streams; the registry file holds [`registry`].
    pub async fn start() -> Self {
        Self::start_with_registry(registry()).await
    }

    /// As [`Fixture::start`], with the appenders verifying against `registry` (which is
    /// also what the registry file holds).
    pub async fn start_with_registry(registry: OfficeRegistry) -> Self {
        let server = NatsServer::start().await.expect("nats-server starts");
        let client = server.client().await.expect("connect");
        let ops = Ops::new(client.clone(), &BusConfig::default());
        ops.provision(&StreamSettings::default())
            .await
            .expect("provision");
        let dir = tempfile::tempdir().expect("tempdir");
        let registry_path = dir.path().join("offices.toml");
        registry.save(&registry_path).expect("write registry");
        let bus = Bus::open(client, Arc::new(registry), BusConfig::default())
            .await
            .expect("open bus");
        Self {
            server,
            bus,
            ops,
            dir,
            registry_path,
        }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Writes `registry` to a file of the test's directory.
    pub fn write_registry(&self, name: &str, registry: &OfficeRegistry) -> PathBuf {
        let path = self.path(name);
        registry.save(&path).expect("write registry");
        path
    }

    pub fn appender(&self, office_id: &str) -> Appender {
        self.appender_with(signer(office_id), DeadlineRules::default())
    }

    pub fn appender_with(&self, signer: OfficeSigner, rules: DeadlineRules) -> Appender {
        Appender::new(
            self.bus.clone(),
            signer,
            Arc::new(rules),
            AppenderConfig::default(),
        )
        .expect("appender")
    }

    /// Runs the binary against this server, with the fixture's registry file.
    pub async fn cli(&self, args: &[&str]) -> Run {
        self.cli_with_registry(&self.registry_path, args).await
    }

    /// Runs the binary against this server with another registry file.
    pub async fn cli_with_registry(&self, registry: &Path, args: &[&str]) -> Run {
        let url = self.server.url();
        let registry = registry.display().to_string();
        run_with_env(
            args,
            &[
                ("CASEBUS_NATS_URL", url.as_str()),
                ("CASEBUS_REGISTRY", registry.as_str()),
                ("CASEBUS_ACTOR", "test-operator"),
            ],
        )
        .await
    }

    /// Publishes raw bytes on a subject, as a misbehaving producer would.
    pub async fn publish_raw(&self, subject: &str, bytes: Vec<u8>) -> u64 {
        self.ops
            .publish(subject, bytes.into(), &[], &PublishOptions::default())
            .await
            .expect("raw publish")
            .sequence
    }

    /// Starts a durable consumer `name` on its own connection, verifying with
    /// `registry`.
    pub async fn start_consumer(&self, name: &str, registry: OfficeRegistry) -> RunningConsumer {
        let client = self.server.client().await.expect("connect");
        let bus = Bus::open(client.clone(), Arc::new(registry), BusConfig::default())
            .await
            .expect("open bus");
        let mut config = ConsumerConfig::named(name);
        config.batch = 16;
        let runner = ConsumerRunner::new(bus, config);
        let counters = runner.counters();
        let recorder = Recorder::default();
        let shutdown = CancellationToken::new();
        let handler = recorder.clone();
        let token = shutdown.clone();
        let task = tokio::spawn(async move {
            runner.run(handler, token).await.expect("consumer runs");
        });
        RunningConsumer {
            recorder,
            counters,
            shutdown,
            task,
            client,
        }
    }

    /// Waits until no client pulls from consumer `name`.
    pub async fn wait_idle(&self, name: &str) {
        let ops = self.ops.clone();
        wait_until(IDLE_TIMEOUT, &format!("consumer {name} idle"), async || {
            ops.consumer(casebus_bus::subjects::CASES_STREAM, name)
                .await
                .is_ok_and(|c| c.waiting == 0)
        })
        .await
        .expect("consumer idle");
    }
}

static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

/// A request with a fresh request id.
pub fn request(case_id: &CaseId, payload: Kind) -> AppendRequest {
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    AppendRequest {
        case_id: case_id.clone(),
        request_id: RequestId::new(&format!("req-{n}")).expect("valid request id"),
        actor: "officer-1".into(),
        occurred_at: None,
        causation_id: None,
        correlation_id: String::new(),
        visibility: None,
        payload,
    }
}

/// Appends `payload` to `case_id` as `appender`'s office.
pub async fn append(appender: &Appender, case_id: &CaseId, payload: Kind) -> Appended {
    appender
        .append(request(case_id, payload))
        .await
        .expect("append")
}

/// An event of `case_id` at `version` with `payload`, occurred at `at` and recorded
/// now, linking to `prev` and signed by `signer`, built by hand (not through the rules), as
/// raw stored bytes and its hash.
pub fn hand_made(
    signer: &OfficeSigner,
    case_id: &str,
    version: u64,
    prev: Option<EventHash>,
    at: OffsetDateTime,
    payload: Kind,
) -> (Vec<u8>, EventHash) {
    let event = Event {
        event_id: format!("{:032x}", 0xdef0_0000_u64 + version),
        case_id: case_id.into(),
        case_version: version,
        office_id: signer.office().to_string(),
        agency: signer.office().agency() as i32,
        actor: "hand".into(),
        occurred_at: Some(timestamp_from(at)),
        recorded_at: Some(timestamp_from(OffsetDateTime::now_utc())),
        prev_event_hash: prev.map(|h| h.0.to_vec()).unwrap_or_default(),
        request_id: format!("hand-{version}"),
        payload: Some(Payload {
            kind: Some(payload),
        }),
        ..Default::default()
    };
    let (signed, hash) = signer.sign(&event);
    (signed.encode_to_vec(), hash)
}

/// A NoteAdded event of `case_id` at `version` linking to `prev`, signed by `signer`,
/// built by hand (not through the rules), as raw stored bytes and its hash.
pub fn hand_made_note(
    signer: &OfficeSigner,
    case_id: &str,
    version: u64,
    prev: Option<EventHash>,
    text: &str,
) -> (Vec<u8>, EventHash) {
    let now = timestamp_from(OffsetDateTime::now_utc());
    let event = Event {
        event_id: format!("{:032x}", 0xabc0_0000_u64 + version),
        case_id: case_id.into(),
        case_version: version,
        office_id: signer.office().to_string(),
        agency: signer.office().agency() as i32,
        actor: "hand".into(),
        occurred_at: Some(now),
        recorded_at: Some(now),
        prev_event_hash: prev.map(|h| h.0.to_vec()).unwrap_or_default(),
        request_id: format!("hand-{version}"),
        payload: Some(Payload {
            kind: Some(Kind::NoteAdded(NoteAdded { text: text.into() })),
        }),
        ..Default::default()
    };
    let (signed, hash) = signer.sign(&event);
    (signed.encode_to_vec(), hash)
}
