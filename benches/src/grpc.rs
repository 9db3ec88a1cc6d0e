//! The gRPC figures: a bare tonic unary echo (the baseline of every gRPC figure),
//! starting the real service binaries with keys, registry and tokens, and driving
//! many concurrent callers over one channel while recording latencies.

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use tokio::net::TcpListener;
use tonic::transport::Channel;

use casebus_integrity::token::{Audience, IssuerKey, Role, TrustedIssuers};
use casebus_proto::OfficeId;
use casebus_proto::bench::v1::EchoMessage;
use casebus_proto::bench::v1::echo_service_server::{EchoService, EchoServiceServer};

use crate::report::Measurement;

/// The echo baseline.
#[derive(Debug, Default)]
struct Echo;

#[tonic::async_trait]
impl EchoService for Echo {
    async fn echo(
        &self,
        request: tonic::Request<EchoMessage>,
    ) -> Result<tonic::Response<EchoMessage>, tonic::Status> {
        Ok(tonic::Response::new(request.into_inner()))
    }
}

/// Serves the echo on a loopback port until the returned guard is dropped.
pub async fn start_echo() -> anyhow::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let task = tokio::spawn(async move {
        let _ = tonic::transport::Server::builder()
            .add_service(EchoServiceServer::new(Echo))
            // TCP_NODELAY as bare tonic sets it when it binds the address itself.
            .serve_with_incoming(
                tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true)),
            )
            .await;
    });
    Ok((addr, task))
}

/// A channel to `addr`.
pub async fn channel(addr: SocketAddr) -> anyhow::Result<Channel> {
    Ok(Channel::from_shared(format!("http://{addr}"))?
        .connect()
        .await?)
}

/// Runs `total` calls of `call(i)` from `callers` concurrent tasks; returns the rate and
/// latency percentiles.
pub async fn drive<F, Fut>(
    unit: &'static str,
    callers: usize,
    total: usize,
    call: F,
) -> anyhow::Result<Measurement>
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = anyhow::Result<()>> + Send,
{
    let call = Arc::new(call);
    let start = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..callers {
        let call = call.clone();
        tasks.push(tokio::spawn(async move {
            let mut hist = Histogram::<u64>::new(3)?;
            for i in (c..total).step_by(callers) {
                let t = Instant::now();
                call(i).await?;
                hist.record(t.elapsed().as_micros() as u64)?;
            }
            anyhow::Ok(hist)
        }));
    }
    let mut hist = Histogram::<u64>::new(3)?;
    for task in tasks {
        hist.add(task.await??)?;
    }
    Ok(Measurement::rate(unit, total as u64, start.elapsed()).with_latency(&hist))
}

/// Files a service needs: its key, the registry, the issuer trust file.
pub struct Credentials {
    /// Directory holding the files.
    pub dir: tempfile::TempDir,
    /// The issuer of every token.
    pub issuer: IssuerKey,
}

impl Credentials {
    /// Writes the benchmark office's key, the registry and a trust file.
    pub fn write() -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        crate::fixture::signer()?.save(&dir.path().join("office.key"))?;
        crate::fixture::registry()?.save(&dir.path().join("registry.toml"))?;
        let issuer = IssuerKey::from_seed("bench#1", [21; 32]);
        std::fs::write(
            dir.path().join("issuers.toml"),
            TrustedIssuers::default().with(&issuer).to_toml(),
        )?;
        Ok(Self { dir, issuer })
    }

    /// A path inside the directory.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// A bearer header value for the benchmark office with `roles`.
    pub fn bearer(
        &self,
        roles: &[Role],
    ) -> anyhow::Result<tonic::metadata::MetadataValue<tonic::metadata::Ascii>> {
        // Clerks call the agency services; readers call the gateway.
        let audience = if roles.contains(&Role::Clerk) {
            Audience::Agency
        } else {
            Audience::Gateway
        };
        let token = self.issuer.issue(
            audience,
            &OfficeId::new(crate::fixture::OFFICE)?,
            "bench",
            roles,
            time::OffsetDateTime::now_utc(),
            time::Duration::hours(2),
        )?;
        Ok(format!("Bearer {token}").parse()?)
    }
}

/// A started service binary, killed on drop.
pub struct Process {
    child: tokio::process::Child,
    /// Its ready file's JSON.
    pub ready: serde_json::Value,
}

impl Process {
    /// The gRPC address from the ready file.
    pub fn grpc(&self) -> anyhow::Result<SocketAddr> {
        Ok(self.ready["grpc"]
            .as_str()
            .ok_or_else(|| anyhow::anyhow!("ready file has no grpc address"))?
            .parse()?)
    }
}

impl Process {
    /// The peak resident set size of the process so far (VmHWM), in bytes.
    pub fn peak_rss(&self) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()?)).ok()?;
        let kb = status
            .lines()
            .find(|l| l.starts_with("VmHWM:"))?
            .split_whitespace()
            .nth(1)?
            .parse::<u64>()
            .ok()?;
        Some(kb * 1024)
    }
}

impl Process {
    /// Stops the process with SIGTERM (a graceful shutdown) and waits (30 s at most)
    /// until it exited successfully.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        let pid = self
            .child
            .id()
            .ok_or_else(|| anyhow::anyhow!("the process already exited"))?;
        let status = std::process::Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()?;
        anyhow::ensure!(status.success(), "kill -TERM {pid} failed");
        let exit = tokio::time::timeout(Duration::from_secs(30), self.child.wait()).await??;
        anyhow::ensure!(exit.success(), "the process exited with {exit}");
        Ok(())
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}

/// The directory of the benchmark binary, where the service binaries are built too.
pub fn bin_dir() -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    Ok(exe
        .parent()
        .ok_or_else(|| anyhow::anyhow!("no binary directory"))?
        .to_owned())
}

/// Where the started binaries log, when `--service-log` asks for it.
static SERVICE_LOG: OnceLock<PathBuf> = OnceLock::new();

/// Numbers the log files of started binaries, so a second start does not overwrite.
static STARTED: AtomicUsize = AtomicUsize::new(0);

/// Keeps the logs of every binary started from now on in `dir`.
pub fn set_service_log(dir: PathBuf) {
    let _ = SERVICE_LOG.set(dir);
}

/// Starts binary `name` with `args` plus `--ready-file`, and waits (30 s at most) until it
/// wrote the file.
pub async fn start(name: &str, args: &[String], ready_file: &Path) -> anyhow::Result<Process> {
    let bin = bin_dir()?.join(name);
    anyhow::ensure!(
        bin.exists(),
        "{} is missing; build it with `cargo build --release -p {name}`",
        bin.display()
    );
    let (level, stdout, stderr) = match SERVICE_LOG.get() {
        Some(dir) => {
            let n = STARTED.fetch_add(1, Ordering::Relaxed);
            let file = std::fs::File::create(dir.join(format!("{name}-{n}.log")))?;
            let level = std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into());
            (level, Stdio::from(file.try_clone()?), Stdio::from(file))
        }
        None => ("warn".into(), Stdio::null(), Stdio::null()),
    };
    let child = tokio::process::Command::new(&bin)
        .args(args)
        .arg("--ready-file")
        .arg(ready_file)
        .env("RUST_LOG", level)
        .stdout(stdout)
        .stderr(stderr)
        .kill_on_drop(true)
        .spawn()?;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(bytes) = std::fs::read(ready_file)
            && let Ok(ready) = serde_json::from_slice::<serde_json::Value>(&bytes)
        {
            return Ok(Process { child, ready });
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "{name} did not become ready within 30 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
