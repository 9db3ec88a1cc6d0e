//! The harness of the monitor and launcher tests (`monitor_*.rs`, `local_*.rs`):
//!
//! - [`System`]: a real `nats-server` with provisioned streams, the five offices of
//!   `casebus-fixtures` (one per agency) with their keys, its token issuer, and the real binaries (the five agency
//!   services, the gateway, the monitor) started on port 0, each announcing its
//!   addresses through `--ready-file`; traffic comes from the simulator library driving
//!   the agency services over gRPC.
//! - [`http`]: a tiny HTTP/1.1 client over a TCP stream (the dashboard, its JSON API,
//!   chromedriver), so the tests need no HTTP client crate.
//! - [`Browser`] and [`Session`]: headless Chromium driven through `chromedriver` with
//!   the handful of W3C WebDriver calls the tests use (open a URL, run a script, take a
//!   screenshot).
//!
//! **Finding the binaries.** As in the agency harness: next to the test executable
//! (`target/<profile>/`), where `cargo test --workspace` builds every service binary, or
//! in `CASEBUS_BIN_DIR`.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};

use casebus_bus::BusConfig;
use casebus_bus::ops::{Ops, PublishOptions};
use casebus_integrity::token::{Audience, IssuerKey, Role};
use casebus_simulator::{SimConfig, SimReport, Target};
use casebus_test_support::{NatsServer, wait_until};

/// The demo offices, one per agency, with the binary that serves each.
pub const OFFICES: [(&str, &str); 5] = [
    ("customs:ningbo", "casebus-customs"),
    ("ip_center:zhejiang", "casebus-ip-center"),
    ("public_security:ningbo", "casebus-public-security"),
    ("procuratorate:ningbo", "casebus-procuratorate"),
    ("court:hangzhou-ip", "casebus-court"),
];
/// The office administrators' tokens name.
pub const ADMIN_OFFICE: &str = "ip_center:zhejiang";

/// Ceiling for a binary to start and write its ready file.
pub const READY_TIMEOUT: Duration = Duration::from_secs(60);
/// Ceiling for one HTTP exchange.
pub const HTTP_TIMEOUT: Duration = Duration::from_secs(20);
/// Ceiling for the simulated traffic to be recorded.
pub const SIMULATION_TIMEOUT: Duration = Duration::from_secs(240);
/// Ceiling for the monitor to show what was recorded.
pub const MONITOR_TIMEOUT: Duration = Duration::from_secs(90);

/// The workspace's target directory.
pub fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .map(|p| {
            if p.is_absolute() {
                p
            } else {
                casebus_tests::workspace_root().join(p)
            }
        })
        .unwrap_or_else(|| casebus_tests::workspace_root().join("target"))
}

/// The directory of the service binaries (see the module documentation).
pub fn bin_dir() -> PathBuf {
    match std::env::var_os("CASEBUS_BIN_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => {
            let exe = std::env::current_exe().expect("the test knows its own path");
            // target/<profile>/deps/<test> -> target/<profile>
            exe.parent()
                .and_then(Path::parent)
                .map(Path::to_path_buf)
                .expect("the test executable lies in target/<profile>/deps")
        }
    }
}

const BUILD_HINT: &str = "Run `cargo test --workspace` (which builds every service binary), or \
    build them first: `cargo build -p casebus-cli -p casebus-customs -p casebus-ip-center \
    -p casebus-public-security -p casebus-procuratorate -p casebus-court -p casebus-gateway \
    -p casebus-monitor -p casebus-simulator`";

/// The path of binary `name`, or a failure naming how to build it (or saying it is stale).
pub fn binary(name: &str) -> PathBuf {
    casebus_tests::binaries::service_binary(name, BUILD_HINT)
}

// ---- HTTP --------------------------------------------------------------------------

/// An HTTP answer.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }
}

fn dechunk(mut body: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let Some(line_end) = body.windows(2).position(|w| w == b"\r\n") else {
            return out;
        };
        let size_text = String::from_utf8_lossy(&body[..line_end]);
        let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)
            .unwrap_or(0);
        body = &body[line_end + 2..];
        if size == 0 || body.len() < size {
            return out;
        }
        out.extend_from_slice(&body[..size]);
        body = body.get(size + 2..).unwrap_or_default();
    }
}

/// One HTTP/1.1 exchange with `Connection: close`.
pub async fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> std::io::Result<Reply> {
    let exchange = async {
        let mut stream = TcpStream::connect(addr).await?;
        let mut request = format!(
            "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
            body.len()
        );
        for (name, value) in headers {
            request.push_str(&format!("{name}: {value}\r\n"));
        }
        request.push_str("\r\n");
        stream.write_all(request.as_bytes()).await?;
        stream.write_all(body).await?;
        // Read the head, then as much body as it announces: not every server closes
        // the connection after its answer (chromedriver keeps it open).
        let mut raw = Vec::new();
        let mut chunk = [0u8; 8192];
        let split = loop {
            if let Some(at) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
                break at;
            }
            let n = stream.read(&mut chunk).await?;
            if n == 0 {
                return Err(std::io::Error::other(
                    "connection closed before the headers ended",
                ));
            }
            raw.extend_from_slice(&chunk[..n]);
        };
        let head = String::from_utf8_lossy(&raw[..split]).into_owned();
        let mut lines = head.split("\r\n");
        let status = lines
            .next()
            .and_then(|l| l.split(' ').nth(1))
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| std::io::Error::other(format!("bad status line in {head:?}")))?;
        let headers: Vec<(String, String)> = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(n, v)| (n.trim().to_owned(), v.trim().to_owned()))
            .collect();
        let mut body = raw[split + 4..].to_vec();
        let length = headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case("content-length"))
            .and_then(|(_, v)| v.parse::<usize>().ok());
        let chunked = headers.iter().any(|(n, v)| {
            n.eq_ignore_ascii_case("transfer-encoding") && v.eq_ignore_ascii_case("chunked")
        });
        loop {
            let complete = match length {
                Some(length) => body.len() >= length,
                None if chunked => body.windows(5).any(|w| w == b"0\r\n\r\n"),
                None => false,
            };
            if complete {
                break;
            }
            let n = stream.read(&mut chunk).await?;
            if n == 0 {
                break;
            }
            body.extend_from_slice(&chunk[..n]);
        }
        if let Some(length) = length {
            body.truncate(length);
        } else if chunked {
            body = dechunk(&body);
        }
        Ok(Reply {
            status,
            headers,
            body,
        })
    };
    tokio::time::timeout(HTTP_TIMEOUT, exchange)
        .await
        .unwrap_or_else(|_| Err(std::io::Error::other(format!("{method} {path}: no answer"))))
}

/// GET with an optional bearer token.
pub async fn get(addr: SocketAddr, path: &str, token: Option<&str>) -> std::io::Result<Reply> {
    let auth = token.map(|t| format!("Bearer {t}"));
    let headers: Vec<(&str, &str)> = auth
        .as_deref()
        .map(|a| vec![("Authorization", a)])
        .unwrap_or_default();
    http(addr, "GET", path, &headers, b"").await
}

// ---- the system ----------------------------------------------------------------------

/// A running binary.
pub struct Process {
    pub name: String,
    pub child: Child,
    pub log: PathBuf,
    /// The ready file's JSON.
    pub ready: serde_json::Value,
}

impl Process {
    /// An address the process announced in its ready file.
    pub fn addr(&self, key: &str) -> SocketAddr {
        self.ready[key]
            .as_str()
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| panic!("{} announced no {key} address: {}", self.name, self.ready))
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// Starts `binary` with `args`, logging to `<dir>/<name>.log`, and waits for the JSON
/// ready file `<dir>/<name>.ready` that `ready_flag` names.
pub async fn spawn_ready(
    dir: &Path,
    name: &str,
    binary_name: &str,
    args: &[String],
    ready_flag: &str,
) -> Process {
    let ready_file = dir.join(format!("{name}.ready"));
    let log = dir.join(format!("{name}.log"));
    let out = std::fs::File::create(&log).expect("log file");
    let err = out.try_clone().expect("log file");
    let mut child = Command::new(binary(binary_name))
        .args(args)
        .arg(ready_flag)
        .arg(&ready_file)
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::from(out))
        .stderr(Stdio::from(err))
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| panic!("starting {binary_name}: {e}"));
    let what = format!("{name} to write its ready file");
    let ready = wait_until(READY_TIMEOUT, &what, async || {
        if let Ok(Some(status)) = child.try_wait() {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            panic!("{name} exited with {status} before it was ready:\n{text}");
        }
        std::fs::read(&ready_file)
            .ok()
            .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
    })
    .await
    .unwrap_or_else(|e| {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        panic!("{e}\n{text}")
    });
    Process {
        name: name.to_owned(),
        child,
        log,
        ready,
    }
}

use casebus_fixtures::office;

/// The test world.
pub struct System {
    pub nats: NatsServer,
    pub dir: tempfile::TempDir,
    pub issuer: IssuerKey,
    pub agencies: Vec<(String, Process)>,
    pub gateway: Option<Process>,
    pub monitor: Option<Process>,
}

impl System {
    /// Starts nats-server, provisions the streams, writes keys, registry, issuer and
    /// trust files, and starts the five agency services.
    pub async fn start() -> Self {
        let nats = NatsServer::start().await.expect("nats-server starts");
        let dir = tempfile::tempdir().expect("temp dir");
        let ids = OFFICES.map(|(id, _)| id);
        casebus_fixtures::write_office_files(dir.path(), &ids, "registry.toml")
            .expect("key and registry files");
        let issuer = casebus_fixtures::issuer();
        issuer
            .save(&dir.path().join("issuer.key"))
            .expect("issuer key file");
        casebus_fixtures::write_trust_file(&dir.path().join("trust.toml"), &issuer)
            .expect("trust file");
        let client = nats.client().await.expect("connect");
        Ops::new(client, &BusConfig::default())
            .provision(&casebus_bus::StreamSettings::default())
            .await
            .expect("provision");
        let mut system = Self {
            nats,
            dir,
            issuer,
            agencies: Vec::new(),
            gateway: None,
            monitor: None,
        };
        for (id, binary_name) in OFFICES {
            let mut args = system.common_args();
            args.extend([
                "--office".into(),
                id.into(),
                "--signing-key".into(),
                system.path(&casebus_fixtures::key_file_name(id)),
                "--grpc-listen".into(),
                "127.0.0.1:0".into(),
            ]);
            let name = binary_name.trim_start_matches("casebus-").to_owned();
            let process =
                spawn_ready(system.dir.path(), &name, binary_name, &args, "--ready-file").await;
            system.agencies.push((id.to_owned(), process));
        }
        system
    }

    pub fn path(&self, name: &str) -> String {
        self.dir.path().join(name).display().to_string()
    }

    fn common_args(&self) -> Vec<String> {
        vec![
            "--registry".into(),
            self.path("registry.toml"),
            "--trusted-issuers".into(),
            self.path("trust.toml"),
            "--nats-url".into(),
            self.nats.url(),
            "--metrics-listen".into(),
            "127.0.0.1:0".into(),
            "--shutdown-grace".into(),
            "5s".into(),
        ]
    }

    /// A token for the monitor (signing in) of `office_id` with `roles`, valid for an hour.
    pub fn token(&self, office_id: &str, roles: &[Role]) -> String {
        self.token_for(Audience::Monitor, office_id, roles)
    }

    /// A token for `audience` of `office_id` with `roles`, valid for an hour.
    pub fn token_for(&self, audience: Audience, office_id: &str, roles: &[Role]) -> String {
        casebus_fixtures::issue_token(
            &self.issuer,
            audience,
            office_id,
            "monitor-test",
            roles,
            time::Duration::hours(1),
        )
    }

    /// Starts the gateway.
    pub async fn start_gateway(&mut self) {
        let mut args = self.common_args();
        args.extend([
            "--db".into(),
            self.path("gateway.sqlite"),
            "--consumer-name".into(),
            "gw-test".into(),
            "--grpc-listen".into(),
            "127.0.0.1:0".into(),
        ]);
        self.gateway = Some(
            spawn_ready(
                self.dir.path(),
                "gateway",
                "casebus-gateway",
                &args,
                "--ready-file",
            )
            .await,
        );
    }

    /// Starts the monitor, reading the gateway when one runs.
    pub async fn start_monitor(&mut self) {
        let monitor = self.spawn_monitor("monitor", true).await;
        self.monitor = Some(monitor);
    }

    /// Starts a monitor named `name`; with `use_gateway` it reads overdue hand-offs from
    /// the gateway (when one runs), otherwise it folds them from the stream.
    pub async fn spawn_monitor(&self, name: &str, use_gateway: bool) -> Process {
        let mut args = vec![
            "--registry".into(),
            self.path("registry.toml"),
            "--trusted-issuers".into(),
            self.path("trust.toml"),
            "--nats-url".into(),
            self.nats.url(),
            "--listen".into(),
            "127.0.0.1:0".into(),
            "--metrics-listen".into(),
            "127.0.0.1:0".into(),
            "--refresh".into(),
            "500ms".into(),
            "--discovery-window".into(),
            "300ms".into(),
            "--gateway-interval".into(),
            "1s".into(),
        ];
        if let (true, Some(gateway)) = (use_gateway, &self.gateway) {
            let token = self.token_for(Audience::Gateway, ADMIN_OFFICE, &[Role::Admin]);
            std::fs::write(self.dir.path().join("monitor-gateway.token"), token)
                .expect("token file");
            args.extend([
                "--gateway-url".into(),
                format!("http://{}", gateway.addr("grpc")),
                "--gateway-token-file".into(),
                self.path("monitor-gateway.token"),
            ]);
        }
        spawn_ready(
            self.dir.path(),
            name,
            "casebus-monitor",
            &args,
            "--ready-file",
        )
        .await
    }

    /// The monitor's dashboard address.
    pub fn dashboard(&self) -> SocketAddr {
        self.monitor
            .as_ref()
            .expect("the monitor runs")
            .addr("http")
    }

    /// Runs the simulator against the agency services and returns its report.
    pub async fn simulate(&self, cases: u64, overdue_ratio: f64, seed: u64) -> SimReport {
        let targets = self
            .agencies
            .iter()
            .map(|(id, p)| Target {
                office: office(id),
                url: format!("http://{}", p.addr("grpc")),
            })
            .collect();
        let mut config = SimConfig::new(targets, self.dir.path().join("issuer.key"));
        config.cases = cases;
        config.seed = seed;
        config.rate = 200.0;
        config.concurrency = 6;
        config.overdue_ratio = overdue_ratio;
        config.retry_ratio = 0.05;
        config.receipt_wait = Duration::from_secs(2);
        config.case_prefix = Some(format!("mon{seed}"));
        tokio::time::timeout(
            SIMULATION_TIMEOUT,
            casebus_simulator::run(config, casebus_simulator::CancellationToken::new()),
        )
        .await
        .expect("the simulation ends in time")
        .expect("the simulation runs")
    }

    /// Publishes bytes that are no signed event on `case.<case_id>`, as a broken or
    /// hostile producer would: every consumer must dead-letter it.
    pub async fn inject_poison(&self, case_id: &str) -> u64 {
        let client = self.nats.client().await.expect("connect");
        Ops::new(client, &BusConfig::default())
            .publish(
                &format!("case.{case_id}"),
                bytes_of(b"this is not a signed casebus event"),
                &[],
                &PublishOptions::default(),
            )
            .await
            .expect("publish")
            .sequence
    }

    /// Every log, for failure messages.
    pub fn logs(&self) -> String {
        let mut out = String::new();
        for p in self
            .agencies
            .iter()
            .map(|(_, p)| p)
            .chain(self.gateway.iter())
            .chain(self.monitor.iter())
        {
            let text = p.log_text();
            let tail: Vec<&str> = text.lines().rev().take(15).collect();
            out.push_str(&format!("---- {} (last lines)\n", p.name));
            for line in tail.into_iter().rev() {
                out.push_str(line);
                out.push('\n');
            }
        }
        out
    }
}

fn bytes_of(b: &'static [u8]) -> bytes::Bytes {
    bytes::Bytes::from_static(b)
}

// ---- the browser ---------------------------------------------------------------------

const BROWSER_HINT: &str = "the browser tests need Chromium and its driver: \
    apt-get install -y chromium chromium-driver (scripts/test installs them when run as root); \
    CHROMIUM_BIN and CHROMEDRIVER_BIN may point at other builds";

fn find_program(env: &str, names: &[&str]) -> Option<PathBuf> {
    if let Some(path) = std::env::var_os(env) {
        return Some(PathBuf::from(path));
    }
    let dirs = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default();
    names.iter().find_map(|name| {
        dirs.iter()
            .chain(
                [
                    PathBuf::from("/usr/bin"),
                    PathBuf::from("/usr/lib/chromium"),
                ]
                .iter(),
            )
            .map(|d| d.join(name))
            .find(|p| p.is_file())
    })
}

/// Where Chromium and chromedriver are.
pub struct Browser {
    pub chromium: PathBuf,
    pub chromedriver: PathBuf,
}

impl Browser {
    /// Finds both programs, or fails the test saying how to install them.
    pub fn find() -> Self {
        let chromium = find_program(
            "CHROMIUM_BIN",
            &["chromium", "chromium-browser", "google-chrome", "chrome"],
        )
        .unwrap_or_else(|| panic!("chromium not found; {BROWSER_HINT}"));
        let chromedriver = find_program("CHROMEDRIVER_BIN", &["chromedriver"])
            .unwrap_or_else(|| panic!("chromedriver not found; {BROWSER_HINT}"));
        Self {
            chromium,
            chromedriver,
        }
    }

    /// Starts chromedriver on a free loopback port and opens a headless session.
    pub async fn open(&self, profile: &Path) -> Session {
        let port = {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
            listener.local_addr().expect("addr").port()
        };
        let addr: SocketAddr = ([127, 0, 0, 1], port).into();
        let log = profile.join("chromedriver.log");
        let mut driver = Command::new(&self.chromedriver)
            .arg(format!("--port={port}"))
            .arg(format!("--log-path={}", log.display()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "starting {}: {e}; {BROWSER_HINT}",
                    self.chromedriver.display()
                )
            });
        wait_until(
            READY_TIMEOUT,
            "chromedriver to answer /status",
            async || {
                if let Ok(Some(status)) = driver.try_wait() {
                    panic!(
                        "chromedriver exited with {status}:\n{}",
                        std::fs::read_to_string(&log).unwrap_or_default()
                    );
                }
                match get(addr, "/status", None).await {
                    Ok(reply) if reply.status == 200 => reply.json()["value"]["ready"].as_bool(),
                    _ => None,
                }
                .filter(|ready| *ready)
                .map(|_| ())
            },
        )
        .await
        .expect("chromedriver starts");
        let capabilities = serde_json::json!({
            "capabilities": {
                "alwaysMatch": {
                    "browserName": "chrome",
                    "goog:chromeOptions": {
                        "binary": self.chromium.display().to_string(),
                        "args": [
                            "--headless=new",
                            "--no-sandbox",
                            "--disable-gpu",
                            "--disable-dev-shm-usage",
                            "--no-first-run",
                            "--window-size=1400,3000",
                            format!("--user-data-dir={}", profile.join("profile").display()),
                        ]
                    }
                }
            }
        });
        let reply = webdriver(addr, "POST", "/session", Some(&capabilities)).await;
        let id = reply["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no session: {reply}"))
            .to_owned();
        Session {
            addr,
            id,
            _driver: driver,
        }
    }
}

async fn webdriver(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: Option<&serde_json::Value>,
) -> serde_json::Value {
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let reply = http(
        addr,
        method,
        path,
        &[("Content-Type", "application/json; charset=utf-8")],
        body.as_bytes(),
    )
    .await
    .unwrap_or_else(|e| panic!("chromedriver {method} {path}: {e}"));
    let json = reply.json();
    assert!(
        reply.status == 200,
        "chromedriver {method} {path} answered {}: {json}",
        reply.status
    );
    json["value"].clone()
}

/// A browser session.
pub struct Session {
    addr: SocketAddr,
    id: String,
    _driver: Child,
}

impl Session {
    pub async fn goto(&self, url: &str) {
        webdriver(
            self.addr,
            "POST",
            &format!("/session/{}/url", self.id),
            Some(&serde_json::json!({ "url": url })),
        )
        .await;
    }

    /// Runs `script` (a function body; `return` its result) in the page.
    pub async fn execute(&self, script: &str) -> serde_json::Value {
        webdriver(
            self.addr,
            "POST",
            &format!("/session/{}/execute/sync", self.id),
            Some(&serde_json::json!({ "script": script, "args": [] })),
        )
        .await
    }

    /// A PNG of the window.
    pub async fn screenshot(&self) -> Vec<u8> {
        use base64::Engine as _;
        let value = webdriver(
            self.addr,
            "GET",
            &format!("/session/{}/screenshot", self.id),
            None,
        )
        .await;
        base64::engine::general_purpose::STANDARD
            .decode(value.as_str().expect("base64 screenshot"))
            .expect("screenshot decodes")
    }

    pub async fn close(self) {
        webdriver(self.addr, "DELETE", &format!("/session/{}", self.id), None).await;
    }
}
