//! The harness of the gateway end-to-end tests (`gateway_*.rs`): a real `nats-server`
//! with provisioned streams, the six offices of `casebus-fixtures` in a registry file, its
//! token issuer with the trust file, and the real `casebus-gateway` binary started on
//! port 0, announcing its addresses through `--ready-file`.
//!
//! **Finding the binary.** `env!("CARGO_BIN_EXE_…")` exists only inside the binary's own
//! package, so the harness runs `cargo build -p casebus-gateway` once per test binary
//! (a no-op when it is up to date, and it keeps `cargo test -p casebus-tests` from
//! running a stale gateway) into the target directory of the test executable
//! (`target/<profile>/deps/<test>`), then starts `target/<profile>/casebus-gateway`.
//! `CASEBUS_BIN_DIR` names a directory holding a prebuilt binary instead.
//!
//! The gateway logs at `info` into a file per process, shown when a test fails;
//! `CASEBUS_TEST_GATEWAY_LOG` sets another `RUST_LOG` filter for it.
//!
//! It also compares a projection file with the oracle's fold of the stream
//! (`casebus_tests::oracle`), and reads the `AUDIT` stream.

// Each test binary uses its own part of this module, re-exports included.
#![allow(dead_code, unused_imports)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use tokio::process::{Child, Command};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};

use casebus_bus::ops::{AuditRecord, Ops, ScanStart};
use casebus_bus::subjects::{AUDIT_STREAM, CASES_STREAM};
use casebus_bus::{
    AppendRequest, Appended, Appender, AppenderConfig, Bus, BusConfig, StreamSettings,
};
use casebus_domain::DeadlineRules;
use casebus_integrity::token::{Audience, IssuerKey, Role};
use casebus_proto::event::v1::payload::Kind;
use casebus_proto::event::v1::{Agency, Visibility};
use casebus_proto::gateway::v1::gateway_client::GatewayClient;
use casebus_proto::{CaseId, RequestId};
use casebus_test_support::{NatsServer, wait_until};
use casebus_tests::oracle::{expected_projection, projection_file_diffs};
use casebus_tests::workspace_root;
use casebus_timeline::Projection;

pub use casebus_fixtures::catalogue;
pub use casebus_fixtures::{
    Bearer, COURT, CUSTOMS, CUSTOMS_SH, IPC, OFFICES, POLICE, PROC, case, office, registry, signer,
};

/// Ceiling for the gateway to start and report ready.
pub const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// Ceiling for the gateway to project what the test appended.
pub const PROJECTION_TIMEOUT: Duration = Duration::from_secs(60);
/// Ceiling for one gRPC call, and for one item of a watch stream.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(20);
/// Ceiling for the gateway to exit after SIGTERM.
pub const EXIT_TIMEOUT: Duration = Duration::from_secs(20);

/// The binary under test.
const GATEWAY: &str = "casebus-gateway";

/// Visibility for an append: origin only (sealed).
pub fn sealed() -> Option<Visibility> {
    Some(catalogue::origin_only())
}

/// Visibility for an append: the listed agencies (plus the recording agency).
pub fn listed(agencies: &[Agency]) -> Option<Visibility> {
    Some(catalogue::listed(agencies))
}

static NEXT_REQUEST: AtomicU64 = AtomicU64::new(1);

/// A request with a fresh request id.
pub fn request(case_id: &CaseId, payload: Kind, visibility: Option<Visibility>) -> AppendRequest {
    let n = NEXT_REQUEST.fetch_add(1, Ordering::Relaxed);
    AppendRequest {
        case_id: case_id.clone(),
        request_id: RequestId::new(&format!("req-{n}")).expect("valid request id"),
        actor: "officer-1".into(),
        occurred_at: None,
        causation_id: None,
        correlation_id: String::new(),
        visibility,
        payload,
    }
}

/// Where the gateway binary is (see the module documentation). Built at most once per
/// test binary.
pub fn gateway_binary() -> PathBuf {
    static BINARY: OnceLock<PathBuf> = OnceLock::new();
    BINARY
        .get_or_init(|| {
            if let Some(dir) = std::env::var_os("CASEBUS_BIN_DIR") {
                let path = PathBuf::from(dir).join(GATEWAY);
                assert!(
                    path.is_file(),
                    "{} not found (CASEBUS_BIN_DIR)",
                    path.display()
                );
                return path;
            }
            let exe = std::env::current_exe().expect("the test knows its own path");
            // target/<profile>/deps/<test> -> target/<profile>
            let profile_dir = exe
                .parent()
                .and_then(Path::parent)
                .expect("the test executable lies in target/<profile>/deps")
                .to_path_buf();
            let target_dir = profile_dir
                .parent()
                .expect("target/<profile> has a parent")
                .to_path_buf();
            let profile = profile_dir
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or("debug")
                .to_owned();
            let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
            let mut build = std::process::Command::new(cargo);
            build
                .current_dir(workspace_root())
                .env("CARGO_TARGET_DIR", &target_dir)
                .args([
                    "build",
                    "--quiet",
                    "--offline",
                    "-p",
                    GATEWAY,
                    "--bin",
                    GATEWAY,
                ]);
            match profile.as_str() {
                "debug" => {}
                "release" => {
                    build.arg("--release");
                }
                other => {
                    build.args(["--profile", other]);
                }
            }
            let status = build.status();
            let path = profile_dir.join(GATEWAY);
            assert!(
                status.as_ref().is_ok_and(|s| s.success()) && path.is_file(),
                "building {GATEWAY} failed ({status:?}); build it with `cargo build -p {GATEWAY}` \
                 and point CASEBUS_BIN_DIR at the directory holding it"
            );
            path
        })
        .clone()
}

/// A real nats-server with provisioned streams, the registry and trust files.
pub struct Fixture {
    pub server: NatsServer,
    pub bus: Bus,
    pub dir: tempfile::TempDir,
    pub issuer: IssuerKey,
    pub registry_path: PathBuf,
    pub issuers_path: PathBuf,
    appenders: std::sync::Mutex<HashMap<String, Arc<Appender>>>,
    /// Whether every office has an encryption key registered and its appender seals
    /// restricted events ([`Fixture::start_sealing`]).
    seals: bool,
}

impl Fixture {
    pub async fn start() -> Self {
        Self::start_with(registry(), false).await
    }

    /// A fixture whose offices all have their `e1` encryption key registered (the key
    /// files are written as `casebus_fixtures::encryption_key_file_name` in its
    /// directory) and whose appenders seal every restricted event for its readers.
    pub async fn start_sealing() -> Self {
        let registry = casebus_fixtures::sealing_registry_of(&OFFICES).expect("registry");
        let fixture = Self::start_with(registry, true).await;
        for id in OFFICES {
            casebus_fixtures::opening_key(id)
                .save(&fixture.path(&casebus_fixtures::encryption_key_file_name(id)))
                .expect("encryption key file");
        }
        fixture
    }

    async fn start_with(registry: casebus_integrity::OfficeRegistry, seals: bool) -> Self {
        let server = NatsServer::start().await.expect("nats-server starts");
        let client = server.client().await.expect("connect");
        let js = Bus::context(client.clone(), &BusConfig::default());
        casebus_bus::provision::provision(&js, &StreamSettings::default())
            .await
            .expect("provision");
        let dir = tempfile::tempdir().expect("tempdir");
        let registry_path = dir.path().join("offices.toml");
        std::fs::write(&registry_path, registry.to_toml()).expect("registry file");
        let issuer = casebus_fixtures::issuer();
        let issuers_path = dir.path().join("issuers.toml");
        casebus_fixtures::write_trust_file(&issuers_path, &issuer).expect("trust file");
        let bus = Bus::open(client, Arc::new(registry), BusConfig::default())
            .await
            .expect("open bus");
        Self {
            server,
            bus,
            dir,
            issuer,
            registry_path,
            issuers_path,
            appenders: std::sync::Mutex::new(HashMap::new()),
            seals,
        }
    }

    pub fn appender(&self, office_id: &str) -> Arc<Appender> {
        self.appenders
            .lock()
            .expect("lock")
            .entry(office_id.to_owned())
            .or_insert_with(|| {
                let appender = Appender::new(
                    self.bus.clone(),
                    signer(office_id),
                    Arc::new(DeadlineRules::default()),
                    AppenderConfig::default(),
                )
                .expect("appender");
                Arc::new(if self.seals {
                    appender
                        .seal_with(Arc::new(casebus_integrity::seal::Opener::new(vec![
                            casebus_fixtures::opening_key(office_id),
                        ])))
                        .expect("a sealing appender")
                } else {
                    appender
                })
            })
            .clone()
    }

    /// Appends one event as `office_id`.
    pub async fn append(
        &self,
        office_id: &str,
        case_id: &CaseId,
        payload: Kind,
        visibility: Option<Visibility>,
    ) -> Appended {
        self.appender(office_id)
            .append(request(case_id, payload, visibility))
            .await
            .unwrap_or_else(|e| panic!("append by {office_id} to {case_id}: {e:?}"))
    }

    /// Appends a scripted history; returns the last event.
    pub async fn script(&self, case_id: &CaseId, script: Vec<(&'static str, Kind)>) -> Appended {
        let mut last = None;
        for (office_id, payload) in script {
            last = Some(self.append(office_id, case_id, payload, None).await);
        }
        last.expect("a script has events")
    }

    /// A token for `office_id` with `roles`, valid for an hour.
    pub fn token(&self, office_id: &str, roles: &[Role]) -> String {
        casebus_fixtures::issue_token(
            &self.issuer,
            Audience::Gateway,
            office_id,
            "officer-7",
            roles,
            time::Duration::hours(1),
        )
    }

    /// A reader token for `office_id`.
    pub fn reader(&self, office_id: &str) -> String {
        self.token(office_id, &[Role::Reader])
    }

    /// The last sequence of `CASES`.
    pub async fn cases_last(&self) -> u64 {
        Ops::from_bus(&self.bus)
            .stream_status(CASES_STREAM)
            .await
            .expect("stream status")
            .map_or(0, |s| s.last_sequence)
    }

    /// Every record of the `AUDIT` stream, in order.
    pub async fn audit_records(&self) -> Vec<AuditRecord> {
        let ops = Ops::from_bus(&self.bus);
        let mut scanner = ops
            .scan(AUDIT_STREAM, None, ScanStart::Sequence(1), 500)
            .await
            .expect("scan audit");
        let mut out = Vec::new();
        loop {
            let batch = scanner.fetch().await.expect("read audit");
            if batch.is_empty() {
                break;
            }
            for message in batch {
                out.push(AuditRecord::from_json(&message.payload).expect("audit record"));
            }
        }
        scanner.close().await;
        out
    }

    /// Every difference between the projection file at `db`, consuming as `consumer`,
    /// and the oracle's fold of `CASES` as it is now (`casebus_tests::oracle`): every
    /// message verified as the consumer does, each case folded with the domain's rules,
    /// the projection read through its queries only. Empty when the projection is right.
    pub async fn projection_diffs(&self, consumer: &str, db: &Path) -> Vec<String> {
        let expected = expected_projection(&self.bus, consumer).await;
        projection_file_diffs(&expected, db)
    }

    /// Fails, naming every difference, unless the projection file at `db` holds exactly
    /// what the oracle folds from the stream for `consumer`.
    pub async fn assert_projection_right(&self, consumer: &str, db: &Path) {
        let diffs = self.projection_diffs(consumer, db).await;
        assert!(
            diffs.is_empty(),
            "the projection of {consumer} differs from the fold of the stream:\n{}",
            diffs.join("\n")
        );
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// The arguments every gateway of the fixture runs with.
    pub fn gateway_args(&self, consumer: &str, db: &Path, ready_file: &Path) -> Vec<String> {
        let path = |p: &Path| p.display().to_string();
        vec![
            "--db".into(),
            path(db),
            "--consumer-name".into(),
            consumer.into(),
            "--registry".into(),
            path(&self.registry_path),
            "--trusted-issuers".into(),
            path(&self.issuers_path),
            "--nats-url".into(),
            self.server.url(),
            "--grpc-listen".into(),
            "127.0.0.1:0".into(),
            "--metrics-listen".into(),
            "127.0.0.1:0".into(),
            "--ready-file".into(),
            path(ready_file),
            "--shutdown-grace".into(),
            "5s".into(),
        ]
    }

    /// Starts a gateway consuming as `consumer` into `<dir>/<consumer>.sqlite`.
    pub async fn gateway(&self, consumer: &str) -> Gateway {
        self.gateway_with(consumer, &self.db(consumer), &[]).await
    }

    /// The default projection file of `consumer`.
    pub fn db(&self, consumer: &str) -> PathBuf {
        self.path(&format!("{consumer}.sqlite"))
    }

    /// Starts a gateway with extra arguments and waits until it is ready.
    pub async fn gateway_with(&self, consumer: &str, db: &Path, extra: &[String]) -> Gateway {
        static STARTED: AtomicU64 = AtomicU64::new(1);
        let n = STARTED.fetch_add(1, Ordering::Relaxed);
        let ready_file = self.path(&format!("{consumer}-{n}.ready"));
        let log = self.path(&format!("{consumer}-{n}.log"));
        let mut args = self.gateway_args(consumer, db, &ready_file);
        args.extend(extra.iter().cloned());
        let out = std::fs::File::create(&log).expect("log file");
        let err = out.try_clone().expect("log file");
        let child = Command::new(gateway_binary())
            .args(&args)
            .env(
                "RUST_LOG",
                std::env::var("CASEBUS_TEST_GATEWAY_LOG").unwrap_or_else(|_| "info".into()),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::from(out))
            .stderr(Stdio::from(err))
            .kill_on_drop(true)
            .spawn()
            .expect("start casebus-gateway");
        let mut gateway = Gateway {
            child,
            consumer: consumer.to_owned(),
            db: db.to_owned(),
            ready_file,
            log,
            grpc: "0.0.0.0:0".parse().expect("addr"),
            metrics: "0.0.0.0:0".parse().expect("addr"),
        };
        gateway.wait_ready().await;
        gateway
    }
}

/// A gateway client sending a bearer token.
pub type Client = GatewayClient<InterceptedService<Channel, Bearer>>;

/// One running gateway process.
pub struct Gateway {
    pub child: Child,
    pub consumer: String,
    pub db: PathBuf,
    pub ready_file: PathBuf,
    pub log: PathBuf,
    pub grpc: SocketAddr,
    pub metrics: SocketAddr,
}

impl Gateway {
    async fn wait_ready(&mut self) {
        let what = format!("gateway {} to be ready", self.consumer);
        let child = &mut self.child;
        let ready_file = &self.ready_file;
        let outcome = wait_until(READY_TIMEOUT, &what, async || {
            if let Ok(Some(status)) = child.try_wait() {
                return Some(Err(status));
            }
            let text = std::fs::read_to_string(ready_file).ok()?;
            let value: serde_json::Value = serde_json::from_str(&text).ok()?;
            let addr = |key: &str| -> Option<SocketAddr> { value[key].as_str()?.parse().ok() };
            Some(Ok((addr("grpc")?, addr("metrics")?)))
        })
        .await;
        match outcome {
            Ok(Ok((grpc, metrics))) => {
                self.grpc = grpc;
                self.metrics = metrics;
            }
            Ok(Err(status)) => panic!(
                "gateway {} exited with {status} before it was ready:\n{}",
                self.consumer,
                self.log_text()
            ),
            Err(e) => panic!("{e}:\n{}", self.log_text()),
        }
    }

    /// The gateway's log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn pid(&self) -> u32 {
        self.child.id().expect("running")
    }

    /// Whether the process still runs.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// A plaintext channel to the gateway.
    pub async fn channel(&self) -> Channel {
        Endpoint::from_shared(format!("http://{}", self.grpc))
            .expect("endpoint")
            .timeout(CALL_TIMEOUT)
            .connect()
            .await
            .expect("connect to the gateway")
    }

    /// A client sending `token` (or no token).
    pub async fn client(&self, token: Option<&str>) -> Client {
        GatewayClient::with_interceptor(self.channel().await, Bearer::new(token))
    }

    /// Kills the process with SIGKILL, at once.
    pub async fn kill_hard(&mut self) {
        self.child.kill().await.expect("SIGKILL the gateway");
    }

    /// Stops the process with SIGTERM and waits for a clean exit.
    pub async fn stop(&mut self) {
        let pid = rustix::process::Pid::from_raw(self.pid() as i32).expect("pid");
        rustix::process::kill_process(pid, rustix::process::Signal::TERM).expect("SIGTERM");
        let status = tokio::time::timeout(EXIT_TIMEOUT, self.child.wait())
            .await
            .unwrap_or_else(|_| panic!("the gateway did not exit:\n{}", self.log_text()))
            .expect("wait");
        assert!(
            status.success(),
            "the gateway exited with {status}:\n{}",
            self.log_text()
        );
    }

    /// Waits until the projection has accounted for `sequence`, failing fast if the
    /// process dies.
    pub async fn wait_projected(&mut self, sequence: u64) {
        let what = format!("gateway {} to project up to {sequence}", self.consumer);
        let (db, child) = (self.db.clone(), &mut self.child);
        let outcome = wait_until(PROJECTION_TIMEOUT, &what, async || {
            if let Ok(Some(status)) = child.try_wait() {
                return Some(Err(status));
            }
            (position(&db) >= sequence).then_some(Ok(()))
        })
        .await;
        match outcome {
            Ok(Ok(())) => {}
            Ok(Err(status)) => panic!("the gateway exited with {status}:\n{}", self.log_text()),
            Err(e) => panic!("{e}:\n{}", self.log_text()),
        }
    }
}

/// The text of an HTTP GET on the gateway's metrics listener (`/metrics`, `/readyz`).
pub async fn http_get(addr: SocketAddr, path: &str) -> String {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut stream = tokio::net::TcpStream::connect(addr)
        .await
        .expect("connect to the metrics listener");
    stream
        .write_all(format!("GET {path} HTTP/1.0\r\nHost: gateway\r\n\r\n").as_bytes())
        .await
        .expect("request");
    let mut answer = String::new();
    tokio::time::timeout(CALL_TIMEOUT, stream.read_to_string(&mut answer))
        .await
        .expect("an answer in time")
        .expect("read");
    answer
}

/// The stored position of the projection at `db` (0 when it cannot be read yet).
pub fn position(db: &Path) -> u64 {
    if !db.is_file() {
        return 0;
    }
    Projection::open(db).and_then(|p| p.position()).unwrap_or(0)
}

/// The comparison dump of the projection file at `db`.
pub fn dump(db: &Path) -> String {
    Projection::open(db)
        .expect("open projection")
        .dump_for_comparison()
        .expect("dump")
}

/// Removes a projection file and its journal files.
pub fn delete_projection(db: &Path) {
    for suffix in ["", "-wal", "-shm"] {
        let mut name = db.as_os_str().to_owned();
        name.push(suffix);
        let _ = std::fs::remove_file(PathBuf::from(name));
    }
}

/// Waits for the next item of a stream under [`CALL_TIMEOUT`].
pub async fn next_item<T>(stream: &mut tonic::Streaming<T>) -> Option<T> {
    tokio::time::timeout(CALL_TIMEOUT, stream.message())
        .await
        .expect("a stream item in time")
        .expect("a stream item, not an error")
}
