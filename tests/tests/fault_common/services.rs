//! The real casebus binaries under fault: agency services and gateways started on port 0
//! against a test broker, with the suite's keys, registry and token issuer in a staging
//! directory; killed with SIGKILL, frozen with SIGSTOP and restarted with the same
//! arguments; their memory read from `/proc`. Also gRPC clients with a bearer token, and
//! each gateway's projection compared with the oracle's fold of the stream
//! (`casebus_tests::oracle`).
//!
//! **Finding the binaries.** Next to the test executable (`target/<profile>/`), where
//! `cargo test --workspace` builds them, or in `CASEBUS_BIN_DIR`. A binary older than
//! the sources it is built from fails the test with the command that rebuilds it, so a
//! stale binary is never what the figures describe.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::process::{Child, Command};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};

use casebus_bus::Bus;
use casebus_integrity::token::{Audience, IssuerKey, Role};
use casebus_test_support::wait_until;
use casebus_tests::oracle::{expected_projection, projection_file_diffs};
use casebus_timeline::Projection;

use super::OFFICES;

/// Ceiling for a binary to start and write its ready file.
pub const READY_TIMEOUT: Duration = Duration::from_secs(60);
/// Ceiling for one gRPC call.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(30);
/// Ceiling for a process to exit after SIGTERM.
pub const EXIT_TIMEOUT: Duration = Duration::from_secs(30);

const BUILD_HINT: &str = "build the binaries first: `cargo build -p casebus-gateway -p casebus-customs \
    -p casebus-ip-center -p casebus-public-security -p casebus-procuratorate -p casebus-court` \
    (or run `cargo test --workspace`)";

/// Where binary `name` is; a stale one fails the test.
pub fn binary_path(name: &str) -> PathBuf {
    casebus_tests::binaries::service_binary(name, BUILD_HINT)
}

/// Keys, registry, trust file and issuer every process of a scenario shares.
pub struct Stage {
    pub dir: tempfile::TempDir,
    pub issuer: IssuerKey,
    pub nats_urls: Vec<String>,
    started: std::sync::atomic::AtomicU64,
}

impl Stage {
    pub fn new(nats_urls: Vec<String>) -> Self {
        Self::with_offices(nats_urls, &OFFICES)
    }

    /// A stage whose registry holds `offices` (e.g. a second office of an agency).
    pub fn with_offices(nats_urls: Vec<String>, offices: &[&str]) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        casebus_fixtures::write_office_files(dir.path(), offices, "registry.toml")
            .expect("key and registry files");
        let issuer = casebus_fixtures::issuer();
        casebus_fixtures::write_trust_file(&dir.path().join("trust.toml"), &issuer)
            .expect("trust file");
        Self {
            dir,
            issuer,
            nats_urls,
            started: std::sync::atomic::AtomicU64::new(0),
        }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// A token of `office_id` with `roles`, valid for a day.
    pub fn token(&self, office_id: &str, roles: &[Role]) -> String {
        // Clerks call the agency services; every other role here reads the gateway.
        let audience = if roles.contains(&Role::Clerk) {
            Audience::Agency
        } else {
            Audience::Gateway
        };
        casebus_fixtures::issue_token(
            &self.issuer,
            audience,
            office_id,
            &format!("clerk of {office_id}"),
            roles,
            time::Duration::days(1),
        )
    }

    fn common_args(&self, ready: &Path) -> Vec<String> {
        self.common_args_with(ready, "registry.toml")
    }

    /// The arguments every process gets, reading the registry file `registry` of the
    /// staging directory.
    fn common_args_with(&self, ready: &Path, registry: &str) -> Vec<String> {
        let p = |p: PathBuf| p.display().to_string();
        vec![
            "--registry".into(),
            p(self.path(registry)),
            "--trusted-issuers".into(),
            p(self.path("trust.toml")),
            "--nats-url".into(),
            self.nats_urls.join(","),
            "--nats-request-timeout".into(),
            "2s".into(),
            "--grpc-listen".into(),
            "127.0.0.1:0".into(),
            "--metrics-listen".into(),
            "127.0.0.1:0".into(),
            "--ready-file".into(),
            p(ready.to_path_buf()),
            "--shutdown-grace".into(),
            "5s".into(),
        ]
    }

    /// Starts the agency service of `office_id` and waits until it is ready.
    pub async fn agency(&self, office_id: &str) -> Service {
        self.agency_instance(office_id, "", "registry.toml", &[])
            .await
    }

    /// Starts one more instance of the agency service of `office_id` (`instance` tells
    /// its files apart), reading the registry file `registry` of the staging directory
    /// and given `extra` arguments, and waits until it is ready.
    pub async fn agency_instance(
        &self,
        office_id: &str,
        instance: &str,
        registry: &str,
        extra: &[&str],
    ) -> Service {
        let name = match office_id.split_once(':').map(|(a, _)| a) {
            Some("customs") => "casebus-customs",
            Some("ip_center") => "casebus-ip-center",
            Some("public_security") => "casebus-public-security",
            Some("procuratorate") => "casebus-procuratorate",
            Some("court") => "casebus-court",
            _ => panic!("no agency binary serves {office_id}"),
        };
        let stem = format!("{}{instance}", office_id.replace(':', "_"));
        let mut args = vec![
            "--office".to_owned(),
            office_id.to_owned(),
            "--signing-key".to_owned(),
            key_path(self.dir.path(), office_id).display().to_string(),
        ];
        let ready = self.path(&format!("{stem}.ready"));
        args.extend(self.common_args_with(&ready, registry));
        args.extend(extra.iter().map(|a| (*a).to_owned()));
        self.spawn(
            name,
            &stem,
            args,
            ready,
            self.token(office_id, &[Role::Clerk]),
        )
        .await
    }

    /// Starts a gateway consuming as `gw-<name>` into `<dir>/<name>.sqlite`.
    pub async fn gateway(&self, name: &str) -> Service {
        let db = self.path(&format!("{name}.sqlite"));
        let mut args = vec![
            "--db".to_owned(),
            db.display().to_string(),
            "--consumer-name".to_owned(),
            format!("gw-{name}"),
        ];
        let ready = self.path(&format!("gw-{name}.ready"));
        args.extend(self.common_args(&ready));
        let mut service = self
            .spawn(
                "casebus-gateway",
                &format!("gw-{name}"),
                args,
                ready,
                String::new(),
            )
            .await;
        service.db = Some(db);
        service
    }

    async fn spawn(
        &self,
        binary: &str,
        stem: &str,
        args: Vec<String>,
        ready: PathBuf,
        token: String,
    ) -> Service {
        let mut service = Service {
            binary: binary_path(binary),
            stem: stem.to_owned(),
            args,
            ready,
            dir: self.dir.path().to_path_buf(),
            token,
            child: None,
            log: PathBuf::new(),
            grpc: "0.0.0.0:0".parse().expect("addr"),
            metrics: "0.0.0.0:0".parse().expect("addr"),
            db: None,
            launches: 0,
            counter: self
                .started
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed),
        };
        service.launch().await;
        service
    }
}

fn key_path(dir: &Path, office_id: &str) -> PathBuf {
    dir.join(casebus_fixtures::key_file_name(office_id))
}

/// One casebus process, running or killed.
pub struct Service {
    binary: PathBuf,
    stem: String,
    args: Vec<String>,
    ready: PathBuf,
    dir: PathBuf,
    /// A clerk token of the service's office (empty for a gateway).
    pub token: String,
    child: Option<Child>,
    pub log: PathBuf,
    pub grpc: SocketAddr,
    pub metrics: SocketAddr,
    /// The projection file of a gateway.
    pub db: Option<PathBuf>,
    launches: u32,
    counter: u64,
}

impl Service {
    async fn launch(&mut self) {
        self.launches += 1;
        let _ = std::fs::remove_file(&self.ready);
        self.log = self.dir.join(format!(
            "{}-{}-{}.log",
            self.stem, self.counter, self.launches
        ));
        let out = std::fs::File::create(&self.log).expect("log file");
        let err = out.try_clone().expect("log file");
        let child = Command::new(&self.binary)
            .args(&self.args)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::from(out))
            .stderr(Stdio::from(err))
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", self.binary.display()));
        self.child = Some(child);
        let ready = self.ready.clone();
        let log = self.log.clone();
        let child = self.child.as_mut().expect("just spawned");
        let outcome = wait_until(
            READY_TIMEOUT,
            &format!("{} to be ready", self.stem),
            async || {
                if let Ok(Some(status)) = child.try_wait() {
                    return Some(Err(status));
                }
                let text = std::fs::read_to_string(&ready).ok()?;
                let value: serde_json::Value = serde_json::from_str(&text).ok()?;
                let addr = |key: &str| -> Option<SocketAddr> { value[key].as_str()?.parse().ok() };
                Some(Ok((addr("grpc")?, addr("metrics")?)))
            },
        )
        .await;
        let text = || std::fs::read_to_string(&log).unwrap_or_default();
        match outcome {
            Ok(Ok((grpc, metrics))) => {
                self.grpc = grpc;
                self.metrics = metrics;
            }
            Ok(Err(status)) => panic!(
                "{} exited with {status} before it was ready:\n{}",
                self.stem,
                text()
            ),
            Err(e) => panic!("{e}:\n{}", text()),
        }
    }

    pub fn pid(&self) -> u32 {
        self.child
            .as_ref()
            .and_then(Child::id)
            .expect("the process runs")
    }

    /// Whether the process still runs (a frozen one counts as running).
    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// The log of the current (or last) run.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Every log of every run so far.
    pub fn all_logs(&self) -> String {
        (1..=self.launches)
            .map(|n| {
                let path = self
                    .dir
                    .join(format!("{}-{}-{n}.log", self.stem, self.counter));
                std::fs::read_to_string(path).unwrap_or_default()
            })
            .collect::<Vec<_>>()
            .join("\n--- restart ---\n")
    }

    /// SIGKILL, and wait for the exit.
    pub async fn kill_hard(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().await.expect("SIGKILL");
        }
    }

    /// Starts the process again with the same arguments (and projection file).
    pub async fn restart(&mut self) {
        assert!(!self.is_running(), "{} still runs", self.stem);
        self.launch().await;
    }

    fn signal(&self, signal: rustix::process::Signal) {
        let pid = rustix::process::Pid::from_raw(i32::try_from(self.pid()).expect("pid fits"))
            .expect("a live pid is positive");
        rustix::process::kill_process(pid, signal).expect("signal the process");
    }

    /// SIGSTOP: the process keeps its sockets but does nothing.
    pub fn freeze(&self) {
        self.signal(rustix::process::Signal::STOP);
    }

    /// SIGCONT.
    pub fn thaw(&self) {
        self.signal(rustix::process::Signal::CONT);
    }

    /// SIGTERM, then wait for a clean exit.
    pub async fn stop(&mut self) -> std::process::ExitStatus {
        self.signal(rustix::process::Signal::TERM);
        let mut child = self.child.take().expect("the process runs");
        tokio::time::timeout(EXIT_TIMEOUT, child.wait())
            .await
            .unwrap_or_else(|_| panic!("{} did not exit:\n{}", self.stem, self.log_text()))
            .expect("wait")
    }

    /// A plaintext channel to the service's gRPC port, connected lazily. A restart binds
    /// a new port: take a new channel after it.
    pub fn channel(&self) -> Channel {
        Endpoint::from_shared(format!("http://{}", self.grpc))
            .expect("endpoint")
            .timeout(CALL_TIMEOUT)
            .connect_timeout(Duration::from_secs(2))
            .connect_lazy()
    }

    /// The channel with `token` on every call.
    pub fn authed(&self, token: Option<&str>) -> Authed {
        InterceptedService::new(self.channel(), Bearer::new(token))
    }

    /// The stored position of a gateway's projection (0 while unreadable).
    pub fn position(&self) -> u64 {
        let Some(db) = &self.db else { return 0 };
        if !db.is_file() {
            return 0;
        }
        Projection::open(db).and_then(|p| p.position()).unwrap_or(0)
    }

    /// The comparison dump of a gateway's projection.
    pub fn dump(&self) -> String {
        Projection::open(self.db.as_ref().expect("a gateway"))
            .expect("open projection")
            .dump_for_comparison()
            .expect("dump")
    }

    /// Every difference between this gateway's projection, consuming as `consumer`, and
    /// the oracle's fold of the stream as it is now (`casebus_tests::oracle`), with the
    /// stream position the oracle expects. No differences: the projection is right.
    pub async fn projection_diffs(&self, bus: &Bus, consumer: &str) -> (Vec<String>, u64) {
        let expected = expected_projection(bus, consumer).await;
        let db = self.db.as_ref().expect("a gateway");
        (projection_file_diffs(&expected, db), expected.position)
    }

    /// Resident memory in KiB.
    pub fn rss_kib(&self) -> Option<u64> {
        super::procs::rss_kib(self.pid())
    }
}

pub use casebus_fixtures::{Authed, Bearer};
