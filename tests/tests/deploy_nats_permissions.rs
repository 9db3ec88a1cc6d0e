//! The NATS deployment configs of `deploy/nats/`, proven on real servers.
//!
//! The configs are rendered for loopback as an administrator would render them for a
//! site: NKeys generated here (with the `nkeys` crate, and once with `gen-nkeys`), the
//! users file made by `render-users` from `site.env.example`, TLS certificates generated
//! here, listen addresses, route URLs and store dirs swapped for loopback and temporary
//! ones. The `sync_interval` block, which nats-server 2.9 refuses, is dropped when the
//! server under test is older than 2.10 (set `NATS_SERVER_BIN` to a newer one to run the
//! shipped configs unmodified).
//!
//! The three-node cluster test then logs in as every user the config defines, each with
//! its own reply-inbox prefix as the deploy files give it, and shows that each can do its
//! job through casebus-bus (append, consume, dead-letter, audit, read state, reset
//! consumers, drop dead letters; only the break-glass provisioner provisions) and that
//! the server refuses, with a permissions violation, everything else it tries: among it
//! every way a day-to-day user could erase the record through a stream change (an update
//! lowering `max_msgs`, `max_age` or `max_bytes`, a stream delete, a purge), after which
//! the streams' config and messages are checked unchanged, and every subscription to
//! another user's replies. The single-node test does the same for `single.conf` in
//! brief; the other tests check the configs with `nats-server -t` and the two scripts
//! that make a site's users file.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use futures::StreamExt as _;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
use tempfile::TempDir;

use casebus_bus::ops::{AuditRecord, Ops, PublishOptions};
use casebus_bus::service::{ServiceInfo, register};
use casebus_bus::subjects::{
    CASES_STREAM, CHECKPOINTS_STREAM, DLQ_STREAM, checkpoint_subject, cosignature_subject,
};
use casebus_bus::{
    AppendRequest, Appender, AppenderConfig, Bus, BusConfig, CancellationToken, Client,
    ConnectConfig, ConsumerConfig, ConsumerRunner, EventHandler, HandlerError, StoredEvent,
    StreamSettings, connect,
};
use casebus_domain::DeadlineRules;
use casebus_integrity::{OfficeRegistry, OfficeSigner};
use casebus_proto::event::v1::payload::Kind;
use casebus_proto::event::v1::{CaseOpened, CaseType, IpRight, IpRightKind};
use casebus_proto::{CaseId, RequestId};
use casebus_test_support::{
    NatsServer, PermissionProbe, ProbeLogin, Probed, find_nats_server, wait_until,
};
use casebus_tests::workspace_root;

/// Ceiling for a fresh cluster to elect a meta leader and place replicated streams.
const CLUSTER_READY_TIMEOUT: Duration = Duration::from_secs(60);
/// Ceiling for a consumer to deliver, or a state change to show, what a step expects.
const STEP_TIMEOUT: Duration = Duration::from_secs(20);
/// JetStream request ceiling of the casebus clients in these tests.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(3);

/// The office the customs user records for.
const CUSTOMS_OFFICE: &str = casebus_fixtures::CUSTOMS;

/// What a user is for; it decides what the config must allow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Job {
    Agency,
    Gateway,
    Monitor,
    Operator,
    /// `casebus witness`: reads checkpoints, publishes cosignatures, nothing else.
    Witness,
    /// The break-glass provisioner: creates and updates the streams, nothing else.
    Provisioner,
}

/// The users of `users.conf.in`: site.env key prefix, gen-nkeys role, job.
const USERS: [(&str, &str, Job); 10] = [
    ("CUSTOMS", "customs", Job::Agency),
    ("IP_CENTER", "ip-center", Job::Agency),
    ("PUBLIC_SECURITY", "public-security", Job::Agency),
    ("PROCURATORATE", "procuratorate", Job::Agency),
    ("COURT", "court", Job::Agency),
    ("GATEWAY", "gateway", Job::Gateway),
    ("MONITOR", "monitor", Job::Monitor),
    ("OPERATOR", "operator", Job::Operator),
    ("WITNESS", "witness", Job::Witness),
    ("PROVISIONER", "provisioner", Job::Provisioner),
];

/// The reply-inbox prefix the deploy files give the user of gen-nkeys role `role`.
fn inbox_prefix_of_role(role: &str) -> String {
    format!("_INBOX_{role}")
}

/// The reply-inbox prefix of the user with site.env key prefix `key`.
fn inbox_prefix(key: &str) -> String {
    let (_, role, _) = USERS
        .iter()
        .find(|(k, _, _)| *k == key)
        .unwrap_or_else(|| panic!("no user {key}"));
    inbox_prefix_of_role(role)
}

fn deploy(path: &str) -> PathBuf {
    workspace_root().join("deploy").join(path)
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

fn write(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
}

/// Everything an administrator prepares for a site: keys, the users file, certificates.
struct Site {
    dir: TempDir,
    /// Rendered `users.conf`.
    users_conf: String,
    /// NKey seed file of each user, by site.env key prefix.
    seed_files: BTreeMap<&'static str, PathBuf>,
    /// Durable consumer of each service, by site.env key prefix (from site.env.example).
    consumers: BTreeMap<String, String>,
}

impl Site {
    fn prepare() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut site_env = read(&deploy("nats/site.env.example"));
        let mut seed_files = BTreeMap::new();
        for (key, role, _) in USERS {
            let pair = nkeys::KeyPair::new_user();
            let seed_file = dir.path().join(format!("{role}.nk"));
            write(&seed_file, &pair.seed().expect("a user key has a seed"));
            site_env.push_str(&format!("{key}_NKEY={}\n", pair.public_key()));
            seed_files.insert(key, seed_file);
        }
        let consumers = site_env
            .lines()
            .filter(|l| !l.starts_with('#'))
            .filter_map(|l| l.split_once('='))
            .filter_map(|(k, v)| Some((k.strip_suffix("_CONSUMER")?.to_owned(), v.to_owned())))
            .collect();
        let site_file = dir.path().join("site.env");
        write(&site_file, &site_env);
        let users_conf =
            render_users(&site_file).expect("render-users accepts a complete site file");
        assert!(
            !users_conf.contains('@'),
            "a placeholder survived rendering:\n{users_conf}"
        );
        let site = Self {
            dir,
            users_conf,
            seed_files,
            consumers,
        };
        site.write_certificates();
        site
    }

    fn tls_dir(&self) -> PathBuf {
        self.dir.path().join("tls")
    }

    fn ca_file(&self) -> PathBuf {
        self.tls_dir().join("ca.pem")
    }

    /// A CA and one certificate for 127.0.0.1, used for the client and the route
    /// listeners (it has no extended key usage, so it serves both as server and client).
    fn write_certificates(&self) {
        let tls = self.tls_dir();
        std::fs::create_dir_all(&tls).expect("tls dir");
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("ca params");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "casebus test CA");
        let ca_key = KeyPair::generate().expect("ca key");
        let ca_cert = ca_params.self_signed(&ca_key).expect("ca certificate");
        let issuer = Issuer::new(ca_params, ca_key);
        let mut params =
            CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])
                .expect("server params");
        params
            .distinguished_name
            .push(DnType::CommonName, "nats.casebus.test");
        let key = KeyPair::generate().expect("server key");
        let cert = params.signed_by(&key, &issuer).expect("server certificate");
        write(&tls.join("ca.pem"), &ca_cert.pem());
        for name in ["server", "route"] {
            write(&tls.join(format!("{name}.pem")), &cert.pem());
            write(&tls.join(format!("{name}-key.pem")), &key.serialize_pem());
        }
    }

    fn consumer(&self, key: &str) -> &str {
        self.consumers
            .get(key)
            .unwrap_or_else(|| panic!("site.env.example names no {key}_CONSUMER"))
    }

    fn seed(&self, key: &str) -> String {
        read(&self.seed_files[key]).trim().to_owned()
    }

    fn connect_config(&self, key: &str, urls: &[String]) -> ConnectConfig {
        let mut config = ConnectConfig::new(urls.join(","), format!("test-{key}"));
        config.nkey_seed_file = Some(self.seed_files[key].clone());
        config.tls_ca_file = Some(self.ca_file());
        config.inbox_prefix = Some(inbox_prefix(key));
        config
    }

    async fn client(&self, key: &str, urls: &[String]) -> Client {
        connect(&self.connect_config(key, urls))
            .await
            .unwrap_or_else(|e| panic!("{key} logs in: {e:?}"))
    }

    async fn probe(&self, key: &str, urls: &[String]) -> PermissionProbe {
        PermissionProbe::connect(&ProbeLogin {
            urls: urls.to_vec(),
            nkey_seed: Some(self.seed(key)),
            tls_ca: Some(self.ca_file()),
            inbox_prefix: Some(inbox_prefix(key)),
        })
        .await
        .unwrap_or_else(|e| panic!("{key} probe logs in: {e}"))
    }
}

/// Runs `deploy/nats/render-users SITE_FILE`; its output, or its error text.
fn render_users(site_file: &Path) -> Result<String, String> {
    let output = Command::new("sh")
        .arg(deploy("nats/render-users"))
        .arg(site_file)
        .output()
        .expect("sh runs render-users");
    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    } else {
        Err(String::from_utf8_lossy(&output.stderr).into_owned())
    }
}

/// `(major, minor)` of the nats-server under test.
fn server_version() -> (u32, u32) {
    let binary = find_nats_server(None).expect("nats-server is installed");
    let output = Command::new(&binary)
        .arg("--version")
        .output()
        .expect("nats-server --version runs");
    let text = String::from_utf8_lossy(&output.stdout);
    let version = text
        .split_whitespace()
        .find_map(|w| w.strip_prefix('v'))
        .unwrap_or_else(|| panic!("no version in {text:?}"));
    let mut parts = version.split('.').map(|p| p.parse::<u32>().unwrap_or(0));
    (parts.next().unwrap_or(0), parts.next().unwrap_or(0))
}

/// The server under test accepts `jetstream { sync_interval }` (2.10 and later).
fn server_knows_sync_interval() -> bool {
    server_version() >= (2, 10)
}

const SYNC_BEGIN: &str = "# BEGIN nats-server >= 2.10";
const SYNC_END: &str = "# END nats-server >= 2.10";

/// The config without its block for nats-server 2.10 and later.
fn without_sync_block(config: &str) -> String {
    let mut out = String::new();
    let mut inside = false;
    for line in config.lines() {
        if line.trim_start().starts_with(SYNC_BEGIN) {
            inside = true;
        }
        if !inside {
            out.push_str(line);
            out.push('\n');
        }
        if line.trim_start().starts_with(SYNC_END) {
            inside = false;
        }
    }
    out
}

/// Replaces `from` by `to`, insisting that `from` is there: a config edit that breaks
/// the rendering must fail the test, not silently test something else.
fn swap(text: &str, from: &str, to: &str) -> String {
    assert!(
        text.contains(from),
        "the config no longer contains {from:?}"
    );
    text.replace(from, to)
}

/// A shipped node config rendered for loopback: node `dir` holds its store, TLS files
/// come from the site, client and monitoring ports are picked by the server, and route
/// `i` listens on `route_ports[i]`.
fn render_node(
    template: &str,
    site: &Site,
    dir: &Path,
    route_ports: &[u16],
    node: usize,
) -> String {
    let mut text = swap(
        template,
        "/etc/nats/tls/",
        &format!("{}/", site.tls_dir().display()),
    );
    text = swap(
        &text,
        "\"/var/lib/nats\"",
        &format!("\"{}\"", dir.join("store").display()),
    );
    text = swap(&text, "listen: 0.0.0.0:4222", "listen: 127.0.0.1:-1");
    text = swap(&text, "http: 127.0.0.1:8222", "http: 127.0.0.1:-1");
    if !route_ports.is_empty() {
        text = swap(
            &text,
            "listen: 0.0.0.0:6222",
            &format!("listen: 127.0.0.1:{}", route_ports[node]),
        );
        for (i, port) in route_ports.iter().enumerate() {
            text = swap(
                &text,
                &format!("nats-route://nats-{}.casebus.internal:6222", i + 1),
                &format!("nats-route://127.0.0.1:{port}"),
            );
        }
    }
    assert!(text.contains(SYNC_BEGIN) && text.contains(SYNC_END));
    if server_knows_sync_interval() {
        text
    } else {
        without_sync_block(&text)
    }
}

/// Free loopback ports for the routes, held together so they differ, then released.
fn reserve_route_ports(count: usize) -> Vec<u16> {
    let listeners: Vec<_> = (0..count)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0").expect("bind a free port"))
        .collect();
    listeners
        .iter()
        .map(|l| l.local_addr().expect("bound address").port())
        .collect()
}

async fn start_node(template: String, site: &Site, route_ports: &[u16], node: usize) -> NatsServer {
    let users = site.users_conf.clone();
    let ports = route_ports.to_vec();
    NatsServer::start_from_config(None, move |dir| {
        std::fs::write(dir.join("users.conf"), users)?;
        Ok(render_node(&template, site, dir, &ports, node))
    })
    .await
    .unwrap_or_else(|e| panic!("node {} starts: {e}", node + 1))
}

/// Logs in as the break-glass provisioner and provisions the streams once JetStream can
/// place them; returns the day-to-day operator's operations.
async fn provision_as_provisioner(site: &Site, urls: &[String], replicas: usize) -> Ops {
    let client = site.client("PROVISIONER", urls).await;
    let ops = Ops::new(client, &bus_config());
    let settings = StreamSettings {
        replicas,
        ..StreamSettings::default()
    };
    wait_until(
        CLUSTER_READY_TIMEOUT,
        "the provisioner to provision the streams",
        async || ops.provision(&settings).await.is_ok(),
    )
    .await
    .expect("the provisioner provisions CASES, CASES_DLQ and AUDIT");
    Ops::new(site.client("OPERATOR", urls).await, &bus_config())
}

fn bus_config() -> BusConfig {
    BusConfig {
        request_timeout: REQUEST_TIMEOUT,
        ..BusConfig::default()
    }
}

fn customs_signer() -> OfficeSigner {
    casebus_fixtures::signer(CUSTOMS_OFFICE)
}

fn registry() -> Arc<OfficeRegistry> {
    Arc::new(casebus_fixtures::registry_of(&[CUSTOMS_OFFICE]).expect("customs registry"))
}

fn open_case(case_id: &CaseId) -> AppendRequest {
    AppendRequest {
        case_id: case_id.clone(),
        request_id: RequestId::new("open-1").expect("request id"),
        actor: "officer-1".into(),
        occurred_at: None,
        causation_id: None,
        correlation_id: String::new(),
        visibility: None,
        payload: Kind::CaseOpened(CaseOpened {
            case_type: CaseType::CounterfeitTrademark as i32,
            title: "counterfeit earphones".into(),
            rights: vec![IpRight {
                kind: IpRightKind::Trademark as i32,
                registration_number: "TM-10086".into(),
                holder: "Acme Audio Co.".into(),
                title: "ACME".into(),
            }],
            parties: vec![],
            summary: "12,000 earphones bearing the ACME mark".into(),
            local_case_number: "NB-CUS-1".into(),
        }),
    }
}

/// Accepts every event; the runner's counters tell what it handled.
struct Accept;

impl EventHandler for Accept {
    async fn handle(&self, _event: &StoredEvent) -> Result<(), HandlerError> {
        Ok(())
    }
}

/// Runs a durable consumer on `bus` until the returned token is cancelled.
fn run_consumer(
    bus: &Bus,
    name: &str,
) -> (
    Arc<casebus_bus::ConsumerCounters>,
    CancellationToken,
    tokio::task::JoinHandle<()>,
) {
    let runner = ConsumerRunner::new(bus.clone(), ConsumerConfig::named(name));
    let counters = runner.counters();
    let stop = CancellationToken::new();
    let token = stop.clone();
    let name = name.to_owned();
    let task = tokio::spawn(async move {
        runner
            .run(Accept, token)
            .await
            .unwrap_or_else(|e| panic!("consumer {name} runs: {e:?}"));
    });
    (counters, stop, task)
}

async fn wait_for_count(what: &str, counter: &std::sync::atomic::AtomicU64, at_least: u64) {
    wait_until(STEP_TIMEOUT, what, async || {
        counter.load(Ordering::Relaxed) >= at_least
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"));
}

/// How to try one operation.
enum Try {
    /// A request; allowed means the server routes it (an answer or no responders).
    Request(String, &'static str),
    /// A publish without reply; only refusals can be observed this way.
    Publish(String),
    /// A subscription; only refusals can be observed this way.
    Subscribe(String),
}

/// One operation of the permission matrix and whether the user may do it.
struct Attempt {
    what: &'static str,
    try_: Try,
    allowed: bool,
}

/// Every operation tried for a user, with what the config must answer. Requests carry
/// bodies that leave the system as it is when they are allowed (unknown names, empty or
/// mismatching configs), because the point is the permission, not the operation.
fn attempts(site: &Site, key: &str, job: Job) -> Vec<Attempt> {
    use Job::*;
    let own = site.consumers.get(key).cloned();
    // Another service's durable consumer: customs' (which exists, so the operator's
    // allowed pull gets an answer), or the court's for customs.
    let other_key = if key == "CUSTOMS" { "COURT" } else { "CUSTOMS" };
    let other = site.consumer(other_key).to_owned();
    let is = |jobs: &[Job]| jobs.contains(&job);
    let mut list = vec![
        Attempt {
            what: "publish a case event",
            try_: Try::Request(
                format!("case.matrix-{}", key.to_lowercase()),
                "not an event",
            ),
            allowed: is(&[Agency, Operator]),
        },
        Attempt {
            what: "write an audit record for an office",
            try_: Try::Request("audit.customs:ningbo".into(), "{}"),
            allowed: is(&[Gateway]),
        },
        Attempt {
            what: "write an operator audit record",
            try_: Try::Request("audit.operator".into(), "{}"),
            allowed: is(&[Operator]),
        },
        Attempt {
            what: "dead-letter under another consumer's name",
            try_: Try::Request(format!("dlq.{other}"), "poison"),
            allowed: false,
        },
        Attempt {
            what: "read CASES by direct get",
            try_: Try::Request(format!("$JS.API.DIRECT.GET.{CASES_STREAM}"), r#"{"seq":1}"#),
            allowed: !is(&[Provisioner, Witness]),
        },
        Attempt {
            what: "read CASES stream info",
            try_: Try::Request(format!("$JS.API.STREAM.INFO.{CASES_STREAM}"), ""),
            allowed: !is(&[Witness]),
        },
        Attempt {
            what: "read account info",
            try_: Try::Request("$JS.API.INFO".into(), ""),
            allowed: is(&[Monitor, Operator, Provisioner]),
        },
        Attempt {
            what: "list streams",
            try_: Try::Request("$JS.API.STREAM.NAMES".into(), ""),
            allowed: is(&[Monitor, Operator, Provisioner]),
        },
        Attempt {
            what: "read a dead letter",
            try_: Try::Request(
                format!("$JS.API.STREAM.MSG.GET.{DLQ_STREAM}"),
                r#"{"seq":1}"#,
            ),
            allowed: is(&[Monitor, Operator]),
        },
        Attempt {
            what: "open a reader on the dead letters",
            try_: Try::Request(format!("$JS.API.CONSUMER.CREATE.{DLQ_STREAM}"), "{}"),
            allowed: is(&[Monitor, Operator]),
        },
        Attempt {
            what: "read AUDIT by direct get",
            try_: Try::Request("$JS.API.DIRECT.GET.AUDIT".into(), r#"{"seq":1}"#),
            allowed: is(&[Operator]),
        },
        Attempt {
            what: "delete a consumer",
            try_: Try::Request(
                format!("$JS.API.CONSUMER.DELETE.{CASES_STREAM}.no-such-consumer"),
                "",
            ),
            allowed: is(&[Operator]),
        },
        Attempt {
            what: "reset (recreate) another service's consumer",
            try_: Try::Request(
                format!("$JS.API.CONSUMER.DURABLE.CREATE.{CASES_STREAM}.{other}"),
                "{}",
            ),
            allowed: is(&[Operator]),
        },
        Attempt {
            what: "create or change another service's consumer",
            try_: Try::Request(
                format!("$JS.API.CONSUMER.CREATE.{CASES_STREAM}.{other}.case.*"),
                "{}",
            ),
            allowed: is(&[Operator]),
        },
        Attempt {
            what: "pull from another service's consumer",
            try_: Try::Request(
                format!("$JS.API.CONSUMER.MSG.NEXT.{CASES_STREAM}.{other}"),
                r#"{"batch":1,"no_wait":true}"#,
            ),
            allowed: is(&[Operator]),
        },
        Attempt {
            what: "delete a dead letter",
            // The operator dropped the first dead letter before; a clustered 2.9 server
            // does not answer a delete beyond the last sequence.
            try_: Try::Request(
                format!("$JS.API.STREAM.MSG.DELETE.{DLQ_STREAM}"),
                r#"{"seq":1}"#,
            ),
            allowed: is(&[Operator]),
        },
        Attempt {
            // Dead letters are dropped one by one, each drop recorded (casebus dlq drop).
            what: "purge the dead letters",
            try_: Try::Request(
                format!("$JS.API.STREAM.PURGE.{DLQ_STREAM}"),
                r#"{"filter":"dlq.nobody"}"#,
            ),
            allowed: false,
        },
        Attempt {
            what: "create another stream",
            // Overlaps CASES, so a wrongly allowed request would still create nothing.
            try_: Try::Request(
                "$JS.API.STREAM.CREATE.EVIL".into(),
                r#"{"name":"EVIL","subjects":["case.*"]}"#,
            ),
            allowed: false,
        },
        Attempt {
            what: "create the CASES stream",
            // A name mismatch, so even the provisioner's allowed request creates nothing.
            try_: Try::Request(
                format!("$JS.API.STREAM.CREATE.{CASES_STREAM}"),
                r#"{"name":"NOT_CASES"}"#,
            ),
            allowed: is(&[Provisioner]),
        },
        Attempt {
            what: "change the CASES stream",
            // A name mismatch, so even the provisioner's allowed request changes nothing.
            try_: Try::Request(
                format!("$JS.API.STREAM.UPDATE.{CASES_STREAM}"),
                r#"{"name":"NOT_CASES"}"#,
            ),
            allowed: is(&[Provisioner]),
        },
        Attempt {
            what: "change the AUDIT stream",
            try_: Try::Request(
                "$JS.API.STREAM.UPDATE.AUDIT".into(),
                r#"{"name":"NOT_AUDIT"}"#,
            ),
            allowed: is(&[Provisioner]),
        },
        Attempt {
            what: "remove a CASES replica",
            try_: Try::Request(
                format!("$JS.API.STREAM.PEER.REMOVE.{CASES_STREAM}"),
                r#"{"peer":"nobody"}"#,
            ),
            allowed: false,
        },
        Attempt {
            what: "purge CASES",
            try_: Try::Request(format!("$JS.API.STREAM.PURGE.{CASES_STREAM}"), ""),
            allowed: false,
        },
        Attempt {
            what: "delete a CASES message",
            try_: Try::Request(
                format!("$JS.API.STREAM.MSG.DELETE.{CASES_STREAM}"),
                r#"{"seq":1}"#,
            ),
            allowed: false,
        },
        Attempt {
            what: "delete the CASES stream",
            try_: Try::Request(format!("$JS.API.STREAM.DELETE.{CASES_STREAM}"), ""),
            allowed: false,
        },
        Attempt {
            what: "delete the AUDIT stream",
            try_: Try::Request("$JS.API.STREAM.DELETE.AUDIT".into(), ""),
            allowed: false,
        },
        Attempt {
            what: "purge AUDIT",
            try_: Try::Request("$JS.API.STREAM.PURGE.AUDIT".into(), ""),
            allowed: false,
        },
        Attempt {
            // Into a subject no origin uses, so an allowed publish misleads no reader.
            what: "publish a transparency log checkpoint",
            try_: Try::Request("checkpoint.matrix".into(), "not a checkpoint"),
            allowed: is(&[Gateway]),
        },
        Attempt {
            what: "publish a witness cosignature",
            try_: Try::Request("cosignature.matrix.matrix".into(), "not a cosignature"),
            allowed: is(&[Witness]),
        },
        Attempt {
            what: "read CHECKPOINTS by direct get",
            try_: Try::Request("$JS.API.DIRECT.GET.CHECKPOINTS".into(), r#"{"seq":1}"#),
            allowed: is(&[Gateway, Operator, Witness]),
        },
        Attempt {
            what: "change the CHECKPOINTS stream",
            try_: Try::Request(
                "$JS.API.STREAM.UPDATE.CHECKPOINTS".into(),
                r#"{"name":"NOT_CHECKPOINTS"}"#,
            ),
            allowed: is(&[Provisioner]),
        },
        Attempt {
            what: "delete a CHECKPOINTS message",
            try_: Try::Request(
                "$JS.API.STREAM.MSG.DELETE.CHECKPOINTS".into(),
                r#"{"seq":1}"#,
            ),
            allowed: false,
        },
        Attempt {
            what: "purge CHECKPOINTS",
            try_: Try::Request("$JS.API.STREAM.PURGE.CHECKPOINTS".into(), ""),
            allowed: false,
        },
        Attempt {
            what: "delete the CHECKPOINTS stream",
            try_: Try::Request("$JS.API.STREAM.DELETE.CHECKPOINTS".into(), ""),
            allowed: false,
        },
        Attempt {
            what: "ping the services",
            try_: Try::Request("$SRV.PING".into(), ""),
            allowed: is(&[Monitor, Operator]),
        },
        Attempt {
            what: "acknowledge for another service's consumer",
            try_: Try::Publish(format!("$JS.ACK.{CASES_STREAM}.{other}.1.1.1.1.0")),
            allowed: false,
        },
        Attempt {
            what: "answer on an inbox it was not asked on",
            try_: Try::Publish("_INBOX.not-a-reply".into()),
            allowed: false,
        },
        Attempt {
            what: "listen to case events outside JetStream",
            try_: Try::Subscribe("case.>".into()),
            allowed: false,
        },
        Attempt {
            what: "listen to the JetStream API",
            try_: Try::Subscribe("$JS.API.>".into()),
            allowed: false,
        },
        Attempt {
            what: "listen to audit records",
            try_: Try::Subscribe("audit.>".into()),
            allowed: false,
        },
    ];
    list.push(Attempt {
        what: "open a named reader (as ordered readers do when they recreate themselves)",
        try_: Try::Request(
            format!("$JS.API.CONSUMER.CREATE.{CASES_STREAM}.reader-x_1.case.*"),
            "{}",
        ),
        allowed: !is(&[Provisioner, Witness]),
    });
    // Replies are private: nobody listens to the default inbox, to every subject, or to
    // another user's inbox prefix (where its JetStream answers, acks and pulled messages
    // arrive). Its own prefix is allowed: every allowed request above is answered there.
    for subject in ["_INBOX.>", ">", "*.>"] {
        list.push(Attempt {
            what: "listen to replies meant for others",
            try_: Try::Subscribe(subject.into()),
            allowed: false,
        });
    }
    for (other_key, other_role, _) in USERS {
        if other_key != key {
            list.push(Attempt {
                what: "listen to another user's replies",
                try_: Try::Subscribe(format!("{}.>", inbox_prefix_of_role(other_role))),
                allowed: false,
            });
        }
    }
    if let (Some(own), Agency) = (&own, job) {
        // The gateway may reset its own consumer (its job step does); agencies may not.
        list.push(Attempt {
            what: "delete its own consumer",
            try_: Try::Request(format!("$JS.API.CONSUMER.DELETE.{CASES_STREAM}.{own}"), ""),
            allowed: false,
        });
        list.push(Attempt {
            what: "recreate its own consumer",
            try_: Try::Request(
                format!("$JS.API.CONSUMER.DURABLE.CREATE.{CASES_STREAM}.{own}"),
                "{}",
            ),
            allowed: false,
        });
    }
    match &own {
        Some(own) => list.push(Attempt {
            what: "dead-letter under its own consumer's name",
            try_: Try::Request(format!("dlq.{own}"), "poison"),
            allowed: true,
        }),
        None => list.push(Attempt {
            what: "dead-letter anything",
            try_: Try::Request("dlq.anything".into(), "poison"),
            allowed: false,
        }),
    }
    if matches!(job, Monitor | Operator | Witness | Provisioner) {
        list.push(Attempt {
            what: "register as a NATS service",
            try_: Try::Subscribe("$SRV.>".into()),
            allowed: false,
        });
    }
    list
}

/// Tries every attempt as `key`; returns what came out differently from the config's
/// promise.
async fn check_matrix(site: &Site, urls: &[String], key: &str, job: Job) -> Vec<String> {
    let mut probe = site.probe(key, urls).await;
    let mut wrong = Vec::new();
    for attempt in attempts(site, key, job) {
        let (subject, verdict) = match &attempt.try_ {
            Try::Request(subject, body) => {
                let verdict = match probe.request(subject, body).await {
                    Ok(Probed::Refused) => Ok(false),
                    Ok(Probed::Answered(_) | Probed::NoResponders) => Ok(true),
                    Err(e) => Err(e.to_string()),
                };
                (subject, verdict)
            }
            Try::Publish(subject) => {
                assert!(!attempt.allowed, "only refusals of a bare publish show");
                let verdict = match probe.publish_is_refused(subject, "x").await {
                    Ok(()) => Ok(false),
                    Err(e) => Err(e.to_string()),
                };
                (subject, verdict)
            }
            Try::Subscribe(subject) => {
                assert!(!attempt.allowed, "only refusals of a subscription show");
                let verdict = match probe.subscribe_is_refused(subject).await {
                    Ok(()) => Ok(false),
                    Err(e) => Err(e.to_string()),
                };
                (subject, verdict)
            }
        };
        match verdict {
            Ok(allowed) if allowed == attempt.allowed => {}
            Ok(allowed) => wrong.push(format!(
                "{key} may {}{} ({subject})",
                if allowed { "" } else { "not " },
                attempt.what
            )),
            Err(e) => wrong.push(format!("{key}: {} ({subject}): {e}", attempt.what)),
        }
    }
    wrong
}

/// The streams whose loss or shrinking would erase the record (or its dead letters).
const GUARDED_STREAMS: [&str; 4] = [CASES_STREAM, DLQ_STREAM, "AUDIT", CHECKPOINTS_STREAM];

/// What must not change about a stream: its whole config and what it holds.
#[derive(Debug, PartialEq)]
struct StreamSnapshot {
    config: serde_json::Value,
    messages: u64,
    bytes: u64,
    first_seq: u64,
    last_seq: u64,
}

/// The stream info the server gives `probe` for `stream`, as JSON.
async fn stream_info(probe: &mut PermissionProbe, stream: &str) -> serde_json::Value {
    match probe
        .request(&format!("$JS.API.STREAM.INFO.{stream}"), "")
        .await
        .unwrap_or_else(|e| panic!("stream info of {stream}: {e}"))
    {
        Probed::Answered(text) => {
            let info: serde_json::Value =
                serde_json::from_str(&text).unwrap_or_else(|e| panic!("{text}: {e}"));
            assert!(
                info.get("error").is_none(),
                "stream info of {stream}: {text}"
            );
            info
        }
        other => panic!("stream info of {stream}: {other:?}"),
    }
}

async fn snapshot(probe: &mut PermissionProbe, stream: &str) -> StreamSnapshot {
    let info = stream_info(probe, stream).await;
    let state = |field: &str| {
        info["state"][field]
            .as_u64()
            .unwrap_or_else(|| panic!("{stream} state has no {field}: {info}"))
    };
    StreamSnapshot {
        config: info["config"].clone(),
        messages: state("messages"),
        bytes: state("bytes"),
        first_seq: state("first_seq"),
        last_seq: state("last_seq"),
    }
}

/// Update requests that would make the server discard `stream`'s events: its current
/// config with `max_msgs`, `max_age` or `max_bytes` lowered to almost nothing.
fn lowering_updates(stream: &str, config: &serde_json::Value) -> Vec<(String, String)> {
    [
        ("max_msgs", serde_json::json!(1)),
        // Nanoseconds: one second.
        ("max_age", serde_json::json!(1_000_000_000_u64)),
        ("max_bytes", serde_json::json!(1)),
    ]
    .into_iter()
    .map(|(field, value)| {
        let mut lowered = config.clone();
        lowered[field] = value.clone();
        if field == "max_age" {
            // The server requires the duplicate window to fit within the age limit.
            lowered["duplicate_window"] = value;
        }
        (format!("lower {field} of {stream}"), lowered.to_string())
    })
    .collect()
}

/// Tries, as `key`, every way to erase a guarded stream through the JetStream API: each
/// lowering update (day-to-day users only; the provisioner may update), the stream
/// delete and the purge. Returns what the server did not refuse.
async fn try_to_erase(
    site: &Site,
    urls: &[String],
    key: &str,
    job: Job,
    configs: &BTreeMap<&str, serde_json::Value>,
) -> Vec<String> {
    let mut probe = site.probe(key, urls).await;
    let mut tries = Vec::new();
    for stream in GUARDED_STREAMS {
        if job != Job::Provisioner {
            for (what, body) in lowering_updates(stream, &configs[stream]) {
                tries.push((what, format!("$JS.API.STREAM.UPDATE.{stream}"), body));
            }
        }
        tries.push((
            format!("delete {stream}"),
            format!("$JS.API.STREAM.DELETE.{stream}"),
            String::new(),
        ));
        tries.push((
            format!("purge {stream}"),
            format!("$JS.API.STREAM.PURGE.{stream}"),
            String::new(),
        ));
    }
    let mut wrong = Vec::new();
    for (what, subject, body) in tries {
        match probe.request(&subject, &body).await {
            Ok(Probed::Refused) => {}
            Ok(other) => wrong.push(format!("{key} may {what} ({subject}): {other:?}")),
            Err(e) => wrong.push(format!("{key}: {what} ({subject}): {e}")),
        }
    }
    wrong
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_service_user_of_the_cluster_config_can_do_its_job_and_nothing_else() {
    let site = Site::prepare();
    let route_ports = reserve_route_ports(3);
    let mut nodes = Vec::new();
    for node in 0..3 {
        let template = read(&deploy(&format!("nats/cluster/n{}.conf", node + 1)));
        nodes.push(start_node(template, &site, &route_ports, node).await);
    }
    let urls: Vec<String> = nodes.iter().map(NatsServer::url).collect();

    // Operator: provisions replicated streams once the cluster has formed over TLS routes.
    let operator = provision_as_provisioner(&site, &urls, 3).await;
    let cases = operator
        .stream_status(CASES_STREAM)
        .await
        .expect("stream status")
        .expect("CASES exists");
    assert_eq!(cases.replicas, 3, "CASES is replicated on the three nodes");

    // Customs: reads the stream, appends a signed event with the optimistic-concurrency
    // and idempotency headers, registers as a NATS service, consumes with its durable
    // consumer, dead-letters a poison message under its own name, and tails the stream.
    let customs_consumer = site.consumer("CUSTOMS").to_owned();
    let customs_client = site.client("CUSTOMS", &urls).await;
    let customs_bus = Bus::open(customs_client.clone(), registry(), bus_config())
        .await
        .expect("customs opens the bus");
    let appender = Appender::new(
        customs_bus.clone(),
        customs_signer(),
        Arc::new(DeadlineRules::default()),
        AppenderConfig::default(),
    )
    .expect("appender");
    let case_id = CaseId::new("NB-2026-0001").expect("case id");
    let appended = appender
        .append(open_case(&case_id))
        .await
        .expect("customs appends a case event");
    assert_eq!(appended.case_version, 1);
    let loaded = customs_bus
        .load_case(&case_id)
        .await
        .expect("customs reads the case");
    assert_eq!(loaded.events.len(), 1, "the case holds the appended event");

    let services_stop = CancellationToken::new();
    let _service = register(
        customs_client.clone(),
        ServiceInfo {
            name: "casebus-customs".into(),
            version: "0.0.0".into(),
            description: "customs service under test".into(),
            metadata: Default::default(),
        },
        Arc::new(|| serde_json::json!({ "handled": 0 })),
        services_stop.clone(),
    )
    .await
    .expect("customs registers as a NATS service");

    let customs_ops = Ops::new(customs_client.clone(), &bus_config());
    customs_ops
        .publish(
            "case.NB-2026-0002",
            b"not a signed event".to_vec().into(),
            &[],
            &PublishOptions {
                message_id: Some("poison-1".into()),
                expected_last_subject_sequence: Some(0),
            },
        )
        .await
        .expect("customs may publish to case.*");
    // A consumer of an older deployment (30 s ack wait) is updated in place by the
    // service user itself, as the agency services do at start.
    let older = ConsumerRunner::new(
        customs_bus.clone(),
        ConsumerConfig {
            ack_wait: std::time::Duration::from_secs(30),
            ..ConsumerConfig::named(customs_consumer.clone())
        },
    );
    older
        .ensure_consumer()
        .await
        .expect("customs creates its consumer");
    let current = ConsumerRunner::new(
        customs_bus.clone(),
        ConsumerConfig {
            ack_wait: casebus_agency::RECEIPTS_ACK_WAIT,
            ..ConsumerConfig::named(customs_consumer.clone())
        },
    );
    let updated = current
        .ensure_consumer()
        .await
        .expect("customs updates its consumer in place");
    assert_eq!(
        updated.cached_info().config.ack_wait,
        casebus_agency::RECEIPTS_ACK_WAIT
    );
    let (counters, customs_stop, customs_task) = run_consumer(&customs_bus, &customs_consumer);
    wait_for_count("customs to handle the case event", &counters.handled, 1).await;
    wait_for_count(
        "customs to dead-letter the poison message",
        &counters.dead_lettered,
        1,
    )
    .await;
    let mut tail = customs_bus
        .tail(1, None)
        .await
        .expect("customs tails CASES");
    let first = tokio::time::timeout(STEP_TIMEOUT, tail.next())
        .await
        .expect("the tail delivers")
        .expect("the tail is open")
        .expect("the first message");
    assert_eq!(first.sequence, appended.stream_sequence);
    drop(tail);

    // Gateway: consumes CASES with its own durable consumer and writes an audit record.
    let gateway_consumer = site.consumer("GATEWAY").to_owned();
    let gateway_client = site.client("GATEWAY", &urls).await;
    let gateway_bus = Bus::open(gateway_client.clone(), registry(), bus_config())
        .await
        .expect("the gateway opens the bus");
    let (gw_counters, gateway_stop, gateway_task) = run_consumer(&gateway_bus, &gateway_consumer);
    wait_for_count(
        "the gateway to project the case event",
        &gw_counters.handled,
        1,
    )
    .await;
    let audit = Ops::new(gateway_client.clone(), &bus_config())
        .publish_audit(
            &AuditRecord {
                office: CUSTOMS_OFFICE.into(),
                actor: "officer-1".into(),
                case_id: case_id.to_string(),
                versions: vec![1],
                at: time::OffsetDateTime::now_utc(),
                method: "GetTimeline".into(),
                detail: None,
            },
            Some("read-1"),
        )
        .await
        .expect("the gateway writes an audit record");
    assert_eq!(audit.stream, "AUDIT");
    // The gateway publishes a checkpoint of its origin, only onto an empty subject
    // (optimistic concurrency, as its publisher does), and reads the last one back.
    let gateway_ops = Ops::new(gateway_client.clone(), &bus_config());
    let subject = checkpoint_subject("casebus.example/permissions");
    let published = gateway_ops
        .publish(
            &subject,
            b"a checkpoint".to_vec().into(),
            &[],
            &PublishOptions {
                message_id: None,
                expected_last_subject_sequence: Some(0),
            },
        )
        .await
        .expect("the gateway publishes a checkpoint");
    assert_eq!(published.stream, CHECKPOINTS_STREAM);
    let last = gateway_ops
        .last_on_subject(CHECKPOINTS_STREAM, &subject)
        .await
        .expect("the gateway reads the last checkpoint")
        .expect("one is there");
    assert_eq!(last.sequence, published.sequence);
    // A witness reads that checkpoint and publishes its cosignature.
    let witness_ops = Ops::new(site.client("WITNESS", &urls).await, &bus_config());
    let seen = witness_ops
        .last_on_subject(CHECKPOINTS_STREAM, &subject)
        .await
        .expect("the witness reads the last checkpoint")
        .expect("one is there");
    assert_eq!(seen.sequence, published.sequence);
    let cosigned = witness_ops
        .publish(
            &cosignature_subject("casebus.example/permissions", "witness.example/test"),
            b"a cosignature".to_vec().into(),
            &[],
            &PublishOptions::default(),
        )
        .await
        .expect("the witness publishes a cosignature");
    assert_eq!(cosigned.stream, CHECKPOINTS_STREAM);

    // Monitor: reads stream and consumer state and dead letters, and finds the services.
    let monitor = Ops::new(site.client("MONITOR", &urls).await, &bus_config());
    let dlq = monitor
        .stream_status(DLQ_STREAM)
        .await
        .expect("the monitor reads the DLQ state")
        .expect("CASES_DLQ exists");
    assert!(dlq.messages >= 1, "the poison message is in the DLQ");
    let consumers = monitor
        .consumers(CASES_STREAM)
        .await
        .expect("the monitor lists the consumers");
    for name in [&customs_consumer, &gateway_consumer] {
        assert!(
            consumers.iter().any(|c| &c.name == name),
            "{name} in {consumers:?}"
        );
    }
    // The acks landed (a refused ack would be dropped silently, leaving the floor behind).
    for name in [&customs_consumer, &gateway_consumer] {
        wait_until(
            STEP_TIMEOUT,
            "both messages to be acknowledged",
            async || {
                monitor
                    .consumer(CASES_STREAM, name)
                    .await
                    .is_ok_and(|c| c.ack_floor_sequence >= 2 && c.ack_pending == 0)
            },
        )
        .await
        .unwrap_or_else(|e| panic!("{name}: {e}"));
    }
    let dead_letter = monitor
        .get_message(DLQ_STREAM, dlq.first_sequence)
        .await
        .expect("the monitor reads a dead letter")
        .expect("the dead letter is stored");
    // Customs dead-lettered the poison message first; the gateway may have since.
    assert_eq!(dead_letter.subject, format!("dlq.{customs_consumer}"));
    let mut monitor_probe = site.probe("MONITOR", &urls).await;
    match monitor_probe
        .request("$SRV.PING", "")
        .await
        .expect("the monitor pings")
    {
        Probed::Answered(pong) => assert!(pong.contains("casebus-customs"), "{pong}"),
        other => panic!("the customs service does not answer $SRV.PING: {other:?}"),
    }

    // A user that is not the operator cannot drop a dead letter, even through the API.
    assert!(
        customs_ops
            .delete_message(DLQ_STREAM, dlq.first_sequence)
            .await
            .is_err(),
        "customs may not delete a dead letter"
    );

    // Operator: resets a stopped consumer, deletes another, drops the dead letter.
    customs_stop.cancel();
    gateway_stop.cancel();
    customs_task.await.expect("customs consumer stops");
    gateway_task.await.expect("gateway consumer stops");
    // The gateway repositions its own consumer (as it does when its projection file was
    // deleted); a pull the stopped runner left waiting ends with the deleted consumer.
    let repositioned = Ops::new(gateway_client.clone(), &bus_config())
        .reset_consumer(CASES_STREAM, &gateway_consumer, 1)
        .await
        .expect("the gateway resets its own consumer");
    assert_eq!(repositioned.ack_floor_sequence, 0);
    let reset = operator
        .reset_consumer(CASES_STREAM, &customs_consumer, 1)
        .await
        .expect("the operator resets a consumer");
    assert_eq!(reset.name, customs_consumer);
    let mut operator_probe = site.probe("OPERATOR", &urls).await;
    match operator_probe
        .request(
            &format!("$JS.API.CONSUMER.DELETE.{CASES_STREAM}.{gateway_consumer}"),
            "",
        )
        .await
        .expect("the operator deletes a consumer")
    {
        Probed::Answered(reply) => assert!(reply.contains("\"success\":true"), "{reply}"),
        other => panic!("consumer delete: {other:?}"),
    }
    assert!(
        operator
            .delete_message(DLQ_STREAM, dlq.first_sequence)
            .await
            .expect("the operator drops a dead letter"),
        "the dead letter was there to drop"
    );

    // An ephemeral-reader request cannot be used to create a durable consumer.
    let mut customs_probe = site.probe("CUSTOMS", &urls).await;
    let body = format!(
        r#"{{"stream_name":"{CASES_STREAM}","config":{{"durable_name":"sneaky","ack_policy":"explicit"}}}}"#
    );
    match customs_probe
        .request(&format!("$JS.API.CONSUMER.CREATE.{CASES_STREAM}"), &body)
        .await
        .expect("the server answers")
    {
        Probed::Answered(reply) => assert!(reply.contains("\"error\""), "{reply}"),
        other => panic!("ephemeral create with a durable name: {other:?}"),
    }

    // Then every operation, per user, against what the config promises.
    let mut wrong = Vec::new();
    for (key, _, job) in USERS {
        wrong.extend(check_matrix(&site, &urls, key, job).await);
    }
    assert!(
        wrong.is_empty(),
        "permissions differ from the design:\n  {}",
        wrong.join("\n  ")
    );

    // Nobody erases the record through a stream change, and everything stays as it was.
    let mut before = BTreeMap::new();
    let mut configs = BTreeMap::new();
    for stream in GUARDED_STREAMS {
        let snap = snapshot(&mut operator_probe, stream).await;
        configs.insert(stream, snap.config.clone());
        before.insert(stream, snap);
    }
    assert!(
        before[CASES_STREAM].messages >= 2 && before["AUDIT"].messages >= 1,
        "the streams hold what the jobs above wrote: {before:?}"
    );
    let mut erased = Vec::new();
    for (key, _, job) in USERS {
        erased.extend(try_to_erase(&site, &urls, key, job, &configs).await);
    }
    assert!(
        erased.is_empty(),
        "a stream could be changed, deleted or purged:\n  {}",
        erased.join("\n  ")
    );
    for stream in GUARDED_STREAMS {
        assert_eq!(
            snapshot(&mut operator_probe, stream).await,
            before[stream],
            "{stream} is unchanged after the refused attempts"
        );
    }

    // Nobody logs in without a listed key, or without trusting the servers' CA.
    let stranger = nkeys::KeyPair::new_user();
    assert!(
        PermissionProbe::connect(&ProbeLogin {
            urls: urls.clone(),
            nkey_seed: Some(stranger.seed().expect("seed")),
            tls_ca: Some(site.ca_file()),
            inbox_prefix: None,
        })
        .await
        .is_err(),
        "an unknown NKey is refused"
    );
    assert!(
        PermissionProbe::connect(&ProbeLogin {
            urls: urls.clone(),
            nkey_seed: Some(site.seed("OPERATOR")),
            tls_ca: None,
            inbox_prefix: Some(inbox_prefix("OPERATOR")),
        })
        .await
        .is_err(),
        "a client that does not trust the site CA cannot connect"
    );
    services_stop.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_single_node_config_serves_tls_clients_with_nkey_users() {
    let site = Site::prepare();
    let template = read(&deploy("nats/single.conf"));
    let server = start_node(template, &site, &[], 0).await;
    let urls = vec![server.url()];
    let operator = provision_as_provisioner(&site, &urls, 1).await;
    let customs_client = site.client("CUSTOMS", &urls).await;
    let bus = Bus::open(customs_client, registry(), bus_config())
        .await
        .expect("customs opens the bus");
    let appender = Appender::new(
        bus,
        customs_signer(),
        Arc::new(DeadlineRules::default()),
        AppenderConfig::default(),
    )
    .expect("appender");
    let case_id = CaseId::new("NB-2026-0001").expect("case id");
    appender
        .append(open_case(&case_id))
        .await
        .expect("customs appends");
    let cases = operator
        .stream_status(CASES_STREAM)
        .await
        .expect("status")
        .expect("CASES exists");
    assert_eq!(cases.messages, 1);
    let mut monitor = site.probe("MONITOR", &urls).await;
    assert_eq!(
        monitor
            .request("case.NB-2026-0001", "forged")
            .await
            .expect("the server answers"),
        Probed::Refused,
        "the monitor may not publish events"
    );

    // A lowering update is a real way to erase events: refused to the day-to-day users,
    // it is carried out for the break-glass provisioner, and the stream empties.
    appender
        .append(open_case(&CaseId::new("NB-2026-0002").expect("case id")))
        .await
        .expect("customs appends a second case");
    let mut operator_probe = site.probe("OPERATOR", &urls).await;
    let before = snapshot(&mut operator_probe, CASES_STREAM).await;
    assert_eq!(before.messages, 2);
    // max_age, because it expires events whatever the discard policy: CASES discards
    // new messages, so on newer servers a lowered max_msgs or max_bytes keeps the stored
    // events and refuses every later append instead (no erasure, but no record either).
    let (_, body) = lowering_updates(CASES_STREAM, &before.config)
        .into_iter()
        .find(|(what, _)| what.contains("max_age"))
        .expect("a max_age update");
    let update = format!("$JS.API.STREAM.UPDATE.{CASES_STREAM}");
    for key in ["OPERATOR", "CUSTOMS", "GATEWAY", "MONITOR"] {
        assert_eq!(
            site.probe(key, &urls)
                .await
                .request(&update, &body)
                .await
                .expect("the server answers"),
            Probed::Refused,
            "{key} may not lower max_age of CASES"
        );
    }
    assert_eq!(snapshot(&mut operator_probe, CASES_STREAM).await, before);
    match site
        .probe("PROVISIONER", &urls)
        .await
        .request(&update, &body)
        .await
        .expect("the server answers")
    {
        Probed::Answered(reply) => assert!(!reply.contains("\"error\""), "{reply}"),
        other => panic!("the provisioner's update: {other:?}"),
    }
    // The server expires the events once they are older than the new max_age (1 s).
    let shrunk = tokio::sync::Mutex::new(operator_probe);
    wait_until(
        STEP_TIMEOUT,
        "the allowed update to expire the stored events",
        async || {
            snapshot(&mut *shrunk.lock().await, CASES_STREAM)
                .await
                .messages
                == 0
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"));
}

/// `nats-server -t` on a config rendered like the tests render it; its output on
/// failure.
fn check_config(name: &str, text: &str, site: &Site) -> Result<(), String> {
    let dir = tempfile::tempdir().expect("temp dir");
    write(&dir.path().join("users.conf"), &site.users_conf);
    let path = dir.path().join(name);
    write(&path, text);
    let binary = find_nats_server(None).expect("nats-server is installed");
    let output = Command::new(binary)
        .arg("-c")
        .arg(&path)
        .arg("-t")
        .output()
        .expect("nats-server -t runs");
    if output.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ))
    }
}

#[test]
fn every_shipped_config_is_valid_and_needs_a_newer_server_only_for_sync_interval() {
    let site = Site::prepare();
    let dir = tempfile::tempdir().expect("temp dir");
    let modern = server_knows_sync_interval();
    for name in [
        "single.conf",
        "cluster/n1.conf",
        "cluster/n2.conf",
        "cluster/n3.conf",
    ] {
        let template = read(&deploy(&format!("nats/{name}")));
        assert!(
            template.contains("sync_interval: always"),
            "{name} sets sync_interval: always"
        );
        let routes = if name.starts_with("cluster") {
            vec![16222, 16223, 16224]
        } else {
            vec![]
        };
        let file = name.replace('/', "-");
        // The paths and ports only, everything else as shipped.
        let mut as_shipped = swap(
            &template,
            "/etc/nats/tls/",
            &format!("{}/", site.tls_dir().display()),
        );
        as_shipped = swap(
            &as_shipped,
            "\"/var/lib/nats\"",
            &format!("\"{}\"", dir.path().join("store").display()),
        );
        match check_config(&file, &as_shipped, &site) {
            Ok(()) => assert!(modern, "a 2.9 server accepted sync_interval in {name}"),
            Err(output) if modern => panic!("{name} is invalid:\n{output}"),
            Err(output) => assert!(
                output.contains("sync_interval"),
                "{name} fails on 2.9 for another reason than sync_interval:\n{output}"
            ),
        }
        let rendered = render_node(&template, &site, dir.path(), &routes, 0);
        if let Err(output) = check_config(&file, &rendered, &site) {
            panic!("{name} rendered for the tests is invalid:\n{output}");
        }
    }
}

#[test]
fn render_users_refuses_a_site_file_with_a_missing_or_malformed_value() {
    let dir = tempfile::tempdir().expect("temp dir");
    let incomplete = deploy("nats/site.env.example");
    let error = render_users(&incomplete).expect_err("the example lacks the public keys");
    assert!(
        error.contains("@CUSTOMS_NKEY@") && error.contains("@OPERATOR_NKEY@"),
        "{error}"
    );

    let mut site_env = read(&incomplete);
    for (key, _, _) in USERS {
        site_env.push_str(&format!(
            "{key}_NKEY={}\n",
            nkeys::KeyPair::new_user().public_key()
        ));
    }
    let good = dir.path().join("good.env");
    write(&good, &site_env);
    render_users(&good).expect("a complete site file renders");

    for (bad_line, complaint) in [
        (
            format!(
                "CUSTOMS_NKEY={}\n",
                nkeys::KeyPair::new_account().public_key()
            ),
            "not an NKey user public key",
        ),
        ("GATEWAY_CONSUMER=gw 1\n".to_owned(), "one token"),
        ("GATEWAY_CONSUMER=gw.1\n".to_owned(), "one token"),
        ("this is not a setting\n".to_owned(), "expected KEY=VALUE"),
    ] {
        let bad = dir.path().join("bad.env");
        write(&bad, &format!("{site_env}{bad_line}"));
        let error = render_users(&bad).expect_err("a malformed value is refused");
        assert!(error.contains(complaint), "{bad_line:?}: {error}");
    }
}

#[test]
fn gen_nkeys_writes_private_seeds_whose_public_keys_it_prints_and_keeps_them() {
    use std::os::unix::fs::PermissionsExt as _;

    let dir = tempfile::tempdir().expect("temp dir");
    let run = || {
        let output = Command::new("python3")
            .arg(deploy("nats/gen-nkeys"))
            .arg(dir.path())
            .output()
            .expect("python3 runs gen-nkeys (python3 and openssl are needed)");
        assert!(
            output.status.success(),
            "gen-nkeys fails: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    };
    let first = run();
    let lines: Vec<&str> = first.lines().collect();
    assert_eq!(lines.len(), USERS.len(), "{first}");
    for (key, role, _) in USERS {
        let printed = lines
            .iter()
            .find_map(|l| l.strip_prefix(&format!("{key}_NKEY=")))
            .unwrap_or_else(|| panic!("no {key}_NKEY in {first}"));
        let seed_file = dir.path().join(format!("{role}.nk"));
        let mode = std::fs::metadata(&seed_file)
            .expect("seed file")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "{role}.nk is private");
        let pair = nkeys::KeyPair::from_seed(read(&seed_file).trim()).expect("a valid seed");
        assert_eq!(
            pair.public_key(),
            printed,
            "{role}: seed and public key match"
        );
        assert!(printed.starts_with('U'), "{role}: a user key");
    }
    assert_eq!(run(), first, "a second run keeps the keys");
}
