//! The harness of the agency end-to-end tests (`agency_*.rs`): a real `nats-server` with
//! provisioned streams, the six offices of `casebus-fixtures` with their key files and a
//! registry file, its token issuer with the trust file, a deadline rules file, and the real agency service
//! binaries started on port 0, each announcing its addresses through `--ready-file`.
//!
//! **Finding the binaries.** `env!("CARGO_BIN_EXE_…")` exists only inside the binary's
//! own package, so this crate looks for them next to its test executable: a test runs
//! from `target/<profile>/deps/`, and `target/<profile>/` holds the binaries of every
//! workspace package built in the same run. `cargo test --workspace` builds them (each
//! service package has an integration test, which makes cargo build its binary); with
//! `cargo test -p casebus-tests` alone, build them first:
//! `cargo build -p casebus-customs -p casebus-ip-center -p casebus-public-security
//! -p casebus-procuratorate -p casebus-court`. `CASEBUS_BIN_DIR` overrides the
//! directory. A missing binary fails the test with that hint.

// Each test binary uses its own part of this module, re-exports included.
#![allow(dead_code, unused_imports)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::process::{Child, Command};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Status};

use casebus_agency::{REASON_METADATA, RULE_METADATA, ReadyFile};
use casebus_bus::{Bus, BusConfig, LoadedCase, StreamSettings};
use casebus_integrity::token::{Audience, IssuerKey, Role};
use casebus_integrity::{CaseReport, verify_case};
use casebus_proto::agency::v1::agency_service_client::AgencyServiceClient;
use casebus_proto::agency::v1::{
    AddNoteRequest, CommandMeta, CommandReply, HandoffDetails, HandoffStatus, InboxItem,
    ListInboxRequest, OpenCaseRequest,
};
use casebus_proto::court::v1::court_service_client::CourtServiceClient;
use casebus_proto::customs::v1::ReferToPublicSecurityRequest;
use casebus_proto::customs::v1::customs_service_client::CustomsServiceClient;
use casebus_proto::event::v1::{CaseOpened, CaseType, NoteAdded};
use casebus_proto::ip_center::v1::ip_center_service_client::IpCenterServiceClient;
use casebus_proto::procuratorate::v1::procuratorate_service_client::ProcuratorateServiceClient;
use casebus_proto::public_security::v1::public_security_service_client::PublicSecurityServiceClient;
use casebus_test_support::{NatsServer, wait_until};

pub use casebus_fixtures::{
    Authed, Bearer, COURT, CUSTOMS, CUSTOMS_SH as CUSTOMS_2, IPC, OFFICES, POLICE, PROC, case,
    office, registry, signer,
};

/// Ceiling for a service binary to start and report ready.
pub const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// Ceiling for an automatic receipt to appear after a hand-off was requested.
pub const RECEIPT_TIMEOUT: Duration = Duration::from_secs(20);
/// Ceiling for one gRPC call.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(30);
/// Ceiling for a service to exit after SIGTERM.
pub const EXIT_TIMEOUT: Duration = Duration::from_secs(20);
/// The NATS request ceiling the services run with, so an outage surfaces quickly.
pub const NATS_REQUEST_TIMEOUT: &str = "2s";

/// The deadline rules every service of the fixture runs with: deliberately not the
/// defaults, so the tests can tell that due times come from the file.
pub const RULES: &str = r#"
[handoff_due]
suspected_crime_referral = "2days"
assistance_request = "5days"
arrest_approval_request = "6days"
prosecution_transfer = "20days"
supplementary_investigation = "25days"
public_prosecution = "4days"
judgment_notice = "8days"

[periods]
appeal = "12days"
"#;

/// How long the receiver of each kind has under [`RULES`].
pub fn rule_days(kind: casebus_proto::event::v1::HandoffKind) -> i64 {
    use casebus_proto::event::v1::HandoffKind::*;
    match kind {
        SuspectedCrimeReferral => 2,
        AssistanceRequest => 5,
        ArrestApprovalRequest => 6,
        ProsecutionTransfer => 20,
        SupplementaryInvestigation => 25,
        PublicProsecution => 4,
        JudgmentNotice => 8,
        Unspecified => 0,
        ReconsiderationRequest
        | NonFilingExplanationRequest
        | FilingNotice
        | CourtAssistanceNotice => panic!(
            "{kind:?} has no flat duration in the rules: its due_at is its decision clock's due time"
        ),
    }
}

/// The agency service binaries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Binary {
    Customs,
    IpCenter,
    PublicSecurity,
    Procuratorate,
    Court,
}

impl Binary {
    pub fn name(self) -> &'static str {
        match self {
            Self::Customs => "casebus-customs",
            Self::IpCenter => "casebus-ip-center",
            Self::PublicSecurity => "casebus-public-security",
            Self::Procuratorate => "casebus-procuratorate",
            Self::Court => "casebus-court",
        }
    }

    /// The binary serving `office`.
    pub fn of(office: &str) -> Self {
        match office.split_once(':').map(|(a, _)| a) {
            Some("customs") => Self::Customs,
            Some("ip_center") => Self::IpCenter,
            Some("public_security") => Self::PublicSecurity,
            Some("procuratorate") => Self::Procuratorate,
            Some("court") => Self::Court,
            _ => panic!("no agency binary serves {office}"),
        }
    }
}

/// Where the binary `name` is (see the module documentation); a stale one fails the test.
pub fn binary_path(name: &str) -> PathBuf {
    casebus_tests::binaries::service_binary(name, BUILD_HINT)
}

const BUILD_HINT: &str = "Run `cargo test --workspace` (which builds the service binaries), or \
    build them first: `cargo build -p casebus-customs -p casebus-ip-center \
    -p casebus-public-security -p casebus-procuratorate -p casebus-court`";

static NEXT_REQUEST: AtomicU64 = AtomicU64::new(1);

/// A fresh request id.
pub fn fresh_request_id() -> String {
    format!("req-{}", NEXT_REQUEST.fetch_add(1, Ordering::Relaxed))
}

/// Command meta with a fresh request id.
pub fn meta(case_id: &str) -> Option<CommandMeta> {
    meta_with(case_id, &fresh_request_id())
}

/// Command meta with the given request id.
pub fn meta_with(case_id: &str, request_id: &str) -> Option<CommandMeta> {
    Some(CommandMeta {
        case_id: case_id.into(),
        request_id: request_id.into(),
        ..Default::default()
    })
}

/// The test world: a nats-server with the streams, and the files every service reads.
pub struct Fixture {
    pub nats: NatsServer,
    pub dir: tempfile::TempDir,
    pub issuer: IssuerKey,
    pub bus: Bus,
    started: AtomicU64,
}

impl Fixture {
    /// Starts nats-server, provisions the streams and writes keys, registry, trust and
    /// rules files.
    pub async fn start() -> Self {
        Self::start_with(false).await
    }

    /// [`Fixture::start`] with every office's encryption key registered and written
    /// (`casebus_fixtures::encryption_key_file_name`); [`Fixture::decryption_key`] gives
    /// a service its own.
    pub async fn start_sealing() -> Self {
        Self::start_with(true).await
    }

    async fn start_with(sealing: bool) -> Self {
        let nats = NatsServer::start().await.expect("nats-server starts");
        let dir = tempfile::tempdir().expect("temp dir");
        if sealing {
            casebus_fixtures::write_sealing_office_files(dir.path(), &OFFICES, "registry.toml")
        } else {
            casebus_fixtures::write_office_files(dir.path(), &OFFICES, "registry.toml")
        }
        .expect("key and registry files");
        let issuer = casebus_fixtures::issuer();
        casebus_fixtures::write_trust_file(&dir.path().join("trust.toml"), &issuer)
            .expect("trust file");
        std::fs::write(dir.path().join("rules.toml"), RULES).expect("rules file");
        let client = nats.client().await.expect("connect");
        casebus_bus::provision::provision(
            &Bus::context(client.clone(), &BusConfig::default()),
            &StreamSettings::default(),
        )
        .await
        .expect("provision");
        let bus = Bus::open(client, Arc::new(registry()), BusConfig::default())
            .await
            .expect("open bus");
        Self {
            nats,
            dir,
            issuer,
            bus,
            started: AtomicU64::new(0),
        }
    }

    /// The `--decryption-key` arguments of `office_id`'s service (its encryption key
    /// file, written by [`Fixture::start_sealing`]).
    pub fn decryption_key(&self, office_id: &str) -> [String; 2] {
        let path = self
            .dir
            .path()
            .join(casebus_fixtures::encryption_key_file_name(office_id));
        ["--decryption-key".into(), path.display().to_string()]
    }

    /// A token of `office` with `roles`, valid for an hour.
    pub fn token(&self, office_id: &str, roles: &[Role]) -> String {
        casebus_fixtures::issue_token(
            &self.issuer,
            Audience::Agency,
            office_id,
            &format!("clerk of {office_id}"),
            roles,
            time::Duration::hours(1),
        )
    }

    /// A gateway token of a reader of `office`, valid for an hour.
    pub fn gateway_reader_token(&self, office_id: &str) -> String {
        casebus_fixtures::issue_token(
            &self.issuer,
            Audience::Gateway,
            office_id,
            "officer-7",
            &[Role::Reader],
            time::Duration::hours(1),
        )
    }

    /// The arguments every service gets: its office's files, the fixture's NATS, port 0,
    /// and the deadline rules file `rules` (a file name in the fixture directory).
    pub fn args(&self, office_id: &str, ready_file: &Path, rules: &str) -> Vec<String> {
        let dir = self.dir.path();
        let path = |p: &Path| p.display().to_string();
        vec![
            "--office".into(),
            office_id.into(),
            "--signing-key".into(),
            path(&key_path(dir, office_id)),
            "--registry".into(),
            path(&dir.join("registry.toml")),
            "--deadline-rules".into(),
            path(&dir.join(rules)),
            "--trusted-issuers".into(),
            path(&dir.join("trust.toml")),
            "--nats-url".into(),
            self.nats.url(),
            "--nats-request-timeout".into(),
            NATS_REQUEST_TIMEOUT.into(),
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

    /// Starts the service of `office_id` and waits until it is ready.
    pub async fn spawn(&self, office_id: &str) -> Running {
        self.spawn_with(office_id, &[]).await
    }

    /// Starts the service of `office_id` with extra arguments and waits until it is ready.
    pub async fn spawn_with(&self, office_id: &str, extra: &[&str]) -> Running {
        self.start_service(office_id, extra, "rules.toml").await
    }

    /// Starts the service of `office_id` given its own decryption key (a fixture of
    /// [`Fixture::start_sealing`]) and waits until it is ready.
    pub async fn spawn_sealing(&self, office_id: &str) -> Running {
        let key = self.decryption_key(office_id);
        self.spawn_with(office_id, &key.each_ref().map(String::as_str))
            .await
    }

    /// Starts the service of `office_id` with its own deadline rules and waits until it
    /// is ready.
    pub async fn spawn_with_rules(&self, office_id: &str, rules: &str) -> Running {
        let n = self.started.load(Ordering::Relaxed);
        let file = format!("rules-{n}.toml");
        std::fs::write(self.dir.path().join(&file), rules).expect("rules file");
        self.start_service(office_id, &[], &file).await
    }

    /// Starts the service of `office_id` serving TLS (the `extra` arguments name the
    /// certificate files) and waits until it is ready; the test connects itself.
    pub async fn spawn_tls(&self, office_id: &str, extra: &[&str]) -> Running {
        let mut running = self.launch(office_id, extra, "rules.toml");
        running.wait_ready(false).await;
        running
    }

    async fn start_service(&self, office_id: &str, extra: &[&str], rules: &str) -> Running {
        let mut running = self.launch(office_id, extra, rules);
        running.wait_ready(true).await;
        running
    }

    /// Starts the service of `office_id` with extra arguments without waiting for it
    /// (for a start that must fail).
    pub fn launch_unready(&self, office_id: &str, extra: &[&str]) -> Running {
        self.launch(office_id, extra, "rules.toml")
    }

    fn launch(&self, office_id: &str, extra: &[&str], rules: &str) -> Running {
        let binary = Binary::of(office_id);
        let n = self.started.fetch_add(1, Ordering::Relaxed);
        let stem = format!("{}-{n}", binary.name());
        let ready_file = self.dir.path().join(format!("{stem}.ready"));
        let log = self.dir.path().join(format!("{stem}.log"));
        let mut args = self.args(office_id, &ready_file, rules);
        args.extend(extra.iter().map(|s| (*s).to_owned()));
        let out = std::fs::File::create(&log).expect("log file");
        let err = out.try_clone().expect("log file");
        let child = Command::new(binary_path(binary.name()))
            .args(&args)
            .env("RUST_LOG", "info,casebus_agency=debug")
            .stdin(Stdio::null())
            .stdout(Stdio::from(out))
            .stderr(Stdio::from(err))
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", binary.name()));
        Running {
            child,
            binary,
            office: office_id.to_owned(),
            ready_file,
            log,
            grpc: "0.0.0.0:0".parse().expect("addr"),
            metrics: "0.0.0.0:0".parse().expect("addr"),
            token: self.token(office_id, &[Role::Clerk]),
            channel: None,
        }
    }

    /// The case as stored, loaded and verified by the bus.
    pub async fn load(&self, case_id: &str) -> LoadedCase {
        self.bus.load_case(&case(case_id)).await.expect("load case")
    }

    /// Every message of the case verified independently of the loader (signatures,
    /// keys, envelope, chain).
    pub async fn verify(&self, case_id: &str) -> CaseReport {
        let id = case(case_id);
        let last = self.bus.last_sequence(&id).await.expect("last sequence");
        let messages = self
            .bus
            .read_case_messages(&id, 0, last)
            .await
            .expect("read case");
        verify_case(
            &id,
            messages.iter().map(|m| m.payload.as_ref()),
            &self.bus.registry(),
        )
    }
}

/// Ceiling for a durable consumer to work through the stream.
pub const CATCH_UP_TIMEOUT: Duration = Duration::from_secs(30);

impl Fixture {
    /// Waits until durable consumer `consumer` has acknowledged every message in `CASES`.
    pub async fn wait_consumer_caught_up(&self, consumer: &str) {
        let ops = casebus_bus::ops::Ops::from_bus(&self.bus);
        let stream = casebus_bus::subjects::CASES_STREAM;
        wait_until(
            CATCH_UP_TIMEOUT,
            &format!("consumer {consumer} to handle the whole stream"),
            async || {
                let Ok(Some(status)) = ops.stream_status(stream).await else {
                    return false;
                };
                ops.consumer(stream, consumer).await.is_ok_and(|c| {
                    c.ack_floor_sequence >= status.last_sequence && c.ack_pending == 0
                })
            },
        )
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    }

    /// Fails when anything was dead-lettered: every event the services wrote is valid, so
    /// no consumer may have refused one.
    pub async fn assert_no_dead_letters(&self) {
        let status = casebus_bus::ops::Ops::from_bus(&self.bus)
            .stream_status(casebus_bus::subjects::DLQ_STREAM)
            .await
            .expect("dead-letter stream status")
            .expect("the dead-letter stream exists");
        assert_eq!(status.messages, 0, "dead letters: {status:?}");
    }
}

fn key_path(dir: &Path, office_id: &str) -> PathBuf {
    dir.join(casebus_fixtures::key_file_name(office_id))
}

/// One running agency service process.
pub struct Running {
    pub child: Child,
    pub binary: Binary,
    pub office: String,
    pub ready_file: PathBuf,
    pub log: PathBuf,
    pub grpc: SocketAddr,
    pub metrics: SocketAddr,
    /// A clerk token of the service's office.
    pub token: String,
    channel: Option<Channel>,
}

impl Running {
    /// Waits for the ready file; connects a plaintext channel when `connect`.
    async fn wait_ready(&mut self, connect: bool) {
        let what = format!("{} of {} to be ready", self.binary.name(), self.office);
        let child = &mut self.child;
        let ready_file = &self.ready_file;
        let outcome = wait_until(READY_TIMEOUT, &what, async || {
            if let Ok(Some(status)) = child.try_wait() {
                return Some(Err(status));
            }
            ReadyFile::read(ready_file).ok().flatten().map(Ok)
        })
        .await;
        let ready = match outcome {
            Ok(Ok(ready)) => ready,
            Ok(Err(status)) => panic!(
                "{} exited with {status} before it was ready:\n{}",
                self.binary.name(),
                self.log_text()
            ),
            Err(e) => panic!("{e}:\n{}", self.log_text()),
        };
        self.grpc = ready.grpc;
        self.metrics = ready.metrics;
        if !connect {
            return;
        }
        let channel = Endpoint::from_shared(format!("http://{}", ready.grpc))
            .expect("endpoint")
            .timeout(CALL_TIMEOUT)
            .connect()
            .await
            .expect("connect to the service");
        self.channel = Some(channel);
    }

    /// The service's log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn channel(&self) -> Channel {
        self.channel.clone().expect("the service is ready")
    }

    fn authed(&self, token: Option<&str>) -> Authed {
        InterceptedService::new(self.channel(), Bearer::new(token))
    }

    /// `AgencyService` as the office's clerk.
    pub fn common(&self) -> AgencyServiceClient<Authed> {
        self.common_as(Some(&self.token))
    }

    /// `AgencyService` with another credential (or none).
    pub fn common_as(&self, token: Option<&str>) -> AgencyServiceClient<Authed> {
        AgencyServiceClient::new(self.authed(token))
    }

    pub fn customs(&self) -> CustomsServiceClient<Authed> {
        CustomsServiceClient::new(self.authed(Some(&self.token)))
    }

    pub fn customs_as(&self, token: Option<&str>) -> CustomsServiceClient<Authed> {
        CustomsServiceClient::new(self.authed(token))
    }

    pub fn ip_center(&self) -> IpCenterServiceClient<Authed> {
        IpCenterServiceClient::new(self.authed(Some(&self.token)))
    }

    pub fn police(&self) -> PublicSecurityServiceClient<Authed> {
        PublicSecurityServiceClient::new(self.authed(Some(&self.token)))
    }

    pub fn procuratorate(&self) -> ProcuratorateServiceClient<Authed> {
        ProcuratorateServiceClient::new(self.authed(Some(&self.token)))
    }

    pub fn court(&self) -> CourtServiceClient<Authed> {
        CourtServiceClient::new(self.authed(Some(&self.token)))
    }

    /// The inbox item for hand-off `handoff_id` of `case_id`, once it satisfies `ready`.
    pub async fn wait_inbox(
        &self,
        case_id: &str,
        handoff_id: &str,
        what: &str,
        ready: impl Fn(&InboxItem) -> bool,
    ) -> InboxItem {
        let mut client = self.common();
        let found = wait_until(RECEIPT_TIMEOUT, what, async || {
            let response = client
                .list_inbox(ListInboxRequest {
                    case_id: case_id.into(),
                    overdue_only: false,
                })
                .await
                .ok()?;
            response
                .into_inner()
                .items
                .into_iter()
                .find(|i| i.handoff_id == handoff_id && ready(i))
        })
        .await;
        found.unwrap_or_else(|e| panic!("{e}\n{}", self.log_text()))
    }

    /// Sends SIGTERM.
    pub fn terminate(&self) {
        let pid = self.child.id().expect("the service runs");
        let pid = rustix::process::Pid::from_raw(i32::try_from(pid).expect("pid fits"))
            .expect("a live pid is positive");
        rustix::process::kill_process(pid, rustix::process::Signal::TERM).expect("SIGTERM");
    }

    /// Waits for the process to exit after [`Running::terminate`].
    pub async fn wait_exit(&mut self) -> std::process::ExitStatus {
        tokio::time::timeout(EXIT_TIMEOUT, self.child.wait())
            .await
            .unwrap_or_else(|_| panic!("{} did not exit:\n{}", self.binary.name(), self.log_text()))
            .expect("wait for the service")
    }
}

/// The reply of a command that must succeed, with the service's log on failure.
pub fn ok(
    agency: &Running,
    step: &str,
    result: Result<tonic::Response<CommandReply>, Status>,
) -> CommandReply {
    match result {
        Ok(reply) => reply.into_inner(),
        Err(status) => panic!(
            "{step} by {}: {:?} {}\n{}",
            agency.office,
            status.code(),
            status.message(),
            agency.log_text()
        ),
    }
}

/// The status of a call that must fail with `code`.
pub fn refused<T: std::fmt::Debug>(
    result: Result<tonic::Response<T>, Status>,
    code: Code,
) -> Status {
    match result {
        Ok(reply) => panic!("expected {code:?}, got {reply:?}"),
        Err(status) => {
            assert_eq!(status.code(), code, "{}", status.message());
            status
        }
    }
}

/// The `x-casebus-reason` trailer of a refusal.
pub fn reason(status: &Status) -> String {
    status
        .metadata()
        .get(REASON_METADATA)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned()
}

/// The `x-casebus-rule` trailer of a FAILED_PRECONDITION.
pub fn rule(status: &Status) -> String {
    status
        .metadata()
        .get(RULE_METADATA)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned()
}

/// A minimal case opening.
pub fn opened(title: &str) -> Option<CaseOpened> {
    Some(CaseOpened {
        case_type: CaseType::CounterfeitTrademark as i32,
        title: title.into(),
        ..Default::default()
    })
}

pub fn note(text: &str) -> Option<NoteAdded> {
    Some(NoteAdded { text: text.into() })
}

/// Opens `case_id` through `agency`'s service (which must succeed).
pub async fn open_case(agency: &Running, case_id: &str) -> CommandReply {
    let r = agency
        .common()
        .open_case(OpenCaseRequest {
            meta: meta(case_id),
            case_opened: opened("test case"),
        })
        .await;
    ok(agency, "open case", r)
}

/// Adds a note with the given request id.
pub async fn add_note(
    agency: &Running,
    case_id: &str,
    request_id: &str,
    text: &str,
) -> Result<tonic::Response<CommandReply>, Status> {
    agency
        .common()
        .add_note(AddNoteRequest {
            meta: meta_with(case_id, request_id),
            note_added: note(text),
        })
        .await
}

/// Customs refers the case to the police office of the fixture (which must succeed).
pub async fn refer_to_police(customs: &Running, case_id: &str, handoff_id: &str) -> CommandReply {
    let r = customs
        .customs()
        .refer_to_public_security(ReferToPublicSecurityRequest {
            meta: meta(case_id),
            handoff: Some(HandoffDetails {
                handoff_id: handoff_id.into(),
                to_office_id: POLICE.into(),
                reason: "suspected crime".into(),
                evidence_ids: vec![],
            }),
        })
        .await;
    ok(customs, "refer to the police", r)
}

/// Whether an inbox item has its automatic receipt.
pub fn acknowledged(item: &InboxItem) -> bool {
    item.status == HandoffStatus::Acknowledged as i32
}

/// How many events of `kind` answer hand-off `handoff_id` in a loaded case.
pub fn count_for_handoff(loaded: &LoadedCase, kind: &str, handoff_id: &str) -> usize {
    use casebus_proto::event::v1::payload::Kind;
    loaded
        .events
        .iter()
        .filter(|e| e.event.type_name() == kind)
        .filter(
            |e| match e.event.event.payload.as_ref().and_then(|p| p.kind.as_ref()) {
                Some(Kind::HandoffAcknowledged(a)) => a.handoff_id == handoff_id,
                Some(Kind::HandoffRequested(r)) => r.handoff_id == handoff_id,
                Some(Kind::HandoffAccepted(a)) => a.handoff_id == handoff_id,
                _ => false,
            },
        )
        .count()
}

/// `GET path` on `addr` over plain HTTP/1.1; the whole response, which must be 200.
pub async fn http_get(addr: SocketAddr, path: &str) -> String {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut stream = tokio::net::TcpStream::connect(addr)
        .await
        .expect("connect to the metrics endpoint");
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream
        .write_all(request.as_bytes())
        .await
        .expect("send request");
    let mut response = String::new();
    stream
        .read_to_string(&mut response)
        .await
        .expect("read response");
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    response
}

/// Whether a Prometheus exposition has a sample of `name` for the office with `value`
/// (label order is not fixed).
pub fn has_sample(
    metrics: &str,
    name: &str,
    office_id: &str,
    labels: &[&str],
    value: &str,
) -> bool {
    metrics.lines().any(|l| {
        l.starts_with(&format!("{name}{{"))
            && l.contains(&format!("office=\"{office_id}\""))
            && labels.iter().all(|label| l.contains(label))
            && l.ends_with(&format!(" {value}"))
    })
}

/// The gateway binary, started on the fixture's NATS and files.
pub struct Gateway {
    /// Killed on drop.
    child: Child,
    log: PathBuf,
    grpc: SocketAddr,
}

pub type GatewayReader = casebus_proto::gateway::v1::gateway_client::GatewayClient<
    InterceptedService<Channel, casebus_fixtures::Bearer>,
>;

impl Gateway {
    /// Starts it and waits until it wrote its ready file (a gateway that exits first
    /// fails the test with its log).
    pub async fn start(f: &Fixture) -> Self {
        let dir = f.dir.path();
        let ready = dir.join("gateway.ready");
        let log = dir.join("gateway.log");
        let out = std::fs::File::create(&log).expect("log file");
        let err = out.try_clone().expect("log file");
        let binary = casebus_tests::binaries::service_binary(
            "casebus-gateway",
            "build it first: `cargo build -p casebus-gateway`",
        );
        let path = |name: &str| dir.join(name).display().to_string();
        let mut child = Command::new(binary)
            .args(["--db", &path("gateway.sqlite")])
            .args(["--registry", &path("registry.toml")])
            .args(["--trusted-issuers", &path("trust.toml")])
            .args(["--nats-url", &f.nats.url()])
            .args([
                "--grpc-listen",
                "127.0.0.1:0",
                "--metrics-listen",
                "127.0.0.1:0",
            ])
            .args(["--ready-file", &ready.display().to_string()])
            .env_remove("CASEBUS_DEADLINE_RULES")
            .env_remove("CASEBUS_CALENDAR_DIR")
            .stdin(Stdio::null())
            .stdout(Stdio::from(out))
            .stderr(Stdio::from(err))
            .kill_on_drop(true)
            .spawn()
            .expect("start casebus-gateway");
        let grpc = casebus_test_support::wait_until(
            READY_TIMEOUT,
            "the gateway to be ready",
            async || {
                if let Ok(Some(status)) = child.try_wait() {
                    panic!(
                        "the gateway exited with {status}:\n{}",
                        std::fs::read_to_string(&log).unwrap_or_default()
                    );
                }
                let text = std::fs::read_to_string(&ready).ok()?;
                let value: serde_json::Value = serde_json::from_str(&text).ok()?;
                value["grpc"].as_str()?.parse::<SocketAddr>().ok()
            },
        )
        .await
        .expect("the gateway gets ready");
        Self { child, log, grpc }
    }

    /// A client sending `token` as its bearer.
    pub async fn client(&self, token: &str) -> GatewayReader {
        let channel = Endpoint::from_shared(format!("http://{}", self.grpc))
            .expect("endpoint")
            .connect()
            .await
            .expect("connect to the gateway");
        casebus_proto::gateway::v1::gateway_client::GatewayClient::with_interceptor(
            channel,
            casebus_fixtures::Bearer::new(Some(token)),
        )
    }

    /// What it logged so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}
