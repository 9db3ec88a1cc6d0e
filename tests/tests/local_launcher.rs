//! The one-command local system: `deploy/local/up` starts NATS, the five agency services,
//! the gateway, a witness per agency, the monitor and the simulator (here from the
//! already-built debug binaries, on ports the processes pick, in a temporary state
//! directory); the gateway then answers with the simulated cases, the monitor shows the
//! traffic, and every witness has cosigned a checkpoint of the log with no fork; a case
//! exported with its proofs verifies offline against the witness policy `up` wrote. A second
//! `up` stops the first run's processes and starts afresh with the same keys. `down`
//! stops exactly the processes `up` recorded and keeps the data; `down --purge` deletes
//! it.

mod monitor_harness;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tonic::metadata::MetadataValue;
use tonic::transport::Endpoint;

use casebus_proto::gateway::v1::ListCasesRequest;
use casebus_proto::gateway::v1::gateway_client::GatewayClient;
use casebus_test_support::wait_until;

use monitor_harness::{bin_dir, binary, get};

/// Ceiling for one run of `up` or `down`.
const SCRIPT_TIMEOUT: Duration = Duration::from_secs(240);
/// Ceiling for the simulated traffic to reach the gateway and the monitor.
const TRAFFIC_TIMEOUT: Duration = Duration::from_secs(120);
/// The processes `up` starts, by PID file name.
const PROCESSES: [&str; 14] = [
    "nats-server",
    "customs",
    "ip-center",
    "public-security",
    "procuratorate",
    "court",
    "gateway",
    "customs-witness",
    "ip-center-witness",
    "public-security-witness",
    "procuratorate-witness",
    "court-witness",
    "monitor",
    "simulator",
];

fn script(name: &str) -> PathBuf {
    casebus_tests::workspace_root()
        .join("deploy/local")
        .join(name)
}

/// Runs `deploy/local/<name>` against the state directory `dir`.
async fn run(name: &str, dir: &Path, args: &[&str]) -> String {
    let mut command = tokio::process::Command::new("bash");
    command
        .arg(script(name))
        .args(args)
        .env("CASEBUS_LOCAL_DIR", dir)
        .env("CASEBUS_LOCAL_BIN_DIR", bin_dir())
        .env("CASEBUS_LOCAL_SKIP_BUILD", "1")
        .env("CASEBUS_LOCAL_PORT_BASE", "0")
        .env(
            "CASEBUS_LOCAL_SIM_ARGS",
            "--rate 40 --cases 0 --duration 10m --overdue-ratio 0.3",
        )
        .kill_on_drop(true);
    let output = tokio::time::timeout(SCRIPT_TIMEOUT, command.output())
        .await
        .unwrap_or_else(|_| panic!("deploy/local/{name} did not finish in time"))
        .unwrap_or_else(|e| panic!("running deploy/local/{name}: {e}"));
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(
        output.status.success(),
        "deploy/local/{name} failed ({}):\n{stdout}\n{stderr}",
        output.status
    );
    stdout
}

/// The PIDs `up` recorded, by process name.
fn pids(dir: &Path) -> BTreeMap<String, u32> {
    PROCESSES
        .iter()
        .filter_map(|name| {
            let text =
                std::fs::read_to_string(dir.join("pids").join(format!("{name}.pid"))).ok()?;
            let pid = text.split_whitespace().next()?.parse().ok()?;
            Some(((*name).to_owned(), pid))
        })
        .collect()
}

/// Whether `pid` runs (a zombie, killed and not yet reaped by whoever adopted it, does
/// not).
fn running(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| {
            // The state follows the parenthesised command name.
            stat.rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().next().map(|s| s != "Z"))
        })
        .unwrap_or(false)
}

fn env_file(dir: &Path) -> BTreeMap<String, String> {
    std::fs::read_to_string(dir.join("local.env"))
        .expect("up writes local.env")
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

/// Stops whatever `up` started when the test ends early, so no process outlives it.
struct StopOnDrop(PathBuf);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        let _ = std::process::Command::new("bash")
            .arg(script("down"))
            .env("CASEBUS_LOCAL_DIR", &self.0)
            .output();
    }
}

async fn cases_at_gateway(gateway: &str, token: &str) -> Option<usize> {
    Some(case_ids_at_gateway(gateway, token).await?.len())
}

/// The ids of the latest cases the gateway lists (up to 50, the last updated first).
async fn case_ids_at_gateway(gateway: &str, token: &str) -> Option<Vec<String>> {
    let channel = Endpoint::from_shared(format!("http://{gateway}"))
        .ok()?
        .connect()
        .await
        .ok()?;
    let auth: MetadataValue<_> = format!("Bearer {token}").parse().ok()?;
    let mut client = GatewayClient::with_interceptor(channel, move |mut r: tonic::Request<()>| {
        r.metadata_mut().insert("authorization", auth.clone());
        Ok(r)
    });
    let page = client
        .list_cases(ListCasesRequest {
            limit: 50,
            ..Default::default()
        })
        .await
        .ok()?
        .into_inner();
    Some(page.cases.into_iter().map(|c| c.case_id).collect())
}

/// Runs the CLI built beside the services, with `envs`.
async fn cli(args: &[&str], envs: &[(&str, &str)]) -> std::process::Output {
    tokio::process::Command::new(binary("casebus"))
        .args(args)
        .envs(envs.iter().copied())
        .kill_on_drop(true)
        .output()
        .await
        .expect("run casebus")
}

/// Exports a case the local system recorded, with its proofs read from the local
/// gateway, and checks the bundle offline (no NATS) against the witness policy `up`
/// wrote: signatures, chain, inclusion proofs, case head, and a quorum of the local
/// witnesses' cosignatures.
async fn export_and_verify_offline(dir: &Path) {
    let env = env_file(dir);
    let token_file = &env["CASEBUS_LOCAL_GATEWAY_ADMIN_TOKEN_FILE"];
    let token = std::fs::read_to_string(token_file).expect("token");
    let gateway = env["CASEBUS_LOCAL_GATEWAY"].clone();
    let bundle = dir.join("exported.bundle.json");
    let bundle_text = bundle.display().to_string();
    let operator_vkey = format!("{}.vkey", env["CASEBUS_LOCAL_OPERATOR_KEY"]);
    // The least recently updated case listed, so the simulator is unlikely to append to
    // it before the next checkpoint covers it; export refuses (writing nothing) until
    // the checkpoint covers the case's last event and carries the witnesses' quorum.
    let exported = wait_until(
        TRAFFIC_TIMEOUT,
        "an export with proofs of a simulated case",
        async || {
            let ids = case_ids_at_gateway(&gateway, token.trim()).await?;
            let case = ids.last()?.clone();
            let run = cli(
                &[
                    "--json",
                    "--nats-url",
                    &env["CASEBUS_LOCAL_NATS_URL"],
                    "--registry",
                    &env["CASEBUS_LOCAL_REGISTRY"],
                    "export",
                    "--case",
                    &case,
                    "--out",
                    &bundle_text,
                    "--gateway",
                    &format!("http://{gateway}"),
                    "--gateway-token-file",
                    token_file,
                    "--operator-key",
                    &env["CASEBUS_LOCAL_OPERATOR_KEY"],
                    // The local policy's quorum: three witnesses.
                    "--min-cosignatures",
                    "3",
                ],
                &[],
            )
            .await;
            run.status.success().then_some(case)
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}; logs in {}", dir.join("logs").display()));
    let run = cli(
        &[
            "--json",
            "--registry",
            &env["CASEBUS_LOCAL_REGISTRY"],
            "verify",
            "--bundle",
            &bundle_text,
            "--policy",
            &env["CASEBUS_LOCAL_POLICY"],
            "--operator-vkey",
            &operator_vkey,
        ],
        // Offline: no NATS server is reachable there.
        &[("CASEBUS_NATS_URL", "nats://127.0.0.1:1")],
    )
    .await;
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(
        run.status.success(),
        "the bundle of {exported} verifies offline with the local policy: {stdout}\n{}",
        String::from_utf8_lossy(&run.stderr)
    );
}

async fn wait_for_traffic(dir: &Path) {
    let env = env_file(dir);
    let gateway_token = std::fs::read_to_string(&env["CASEBUS_LOCAL_GATEWAY_ADMIN_TOKEN_FILE"])
        .expect("gateway admin token")
        .trim()
        .to_owned();
    let token = std::fs::read_to_string(&env["CASEBUS_LOCAL_ADMIN_TOKEN_FILE"])
        .expect("admin token")
        .trim()
        .to_owned();
    let gateway = env["CASEBUS_LOCAL_GATEWAY"].clone();
    wait_until(
        TRAFFIC_TIMEOUT,
        "the gateway to list simulated cases",
        async || {
            cases_at_gateway(&gateway, &gateway_token)
                .await
                .filter(|n| *n > 0)
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}; logs in {}", dir.join("logs").display()));
    let monitor: std::net::SocketAddr = env["CASEBUS_LOCAL_MONITOR"]
        .trim_start_matches("http://")
        .parse()
        .expect("monitor address");
    wait_until(
        TRAFFIC_TIMEOUT,
        "the monitor to show traffic and every service",
        async || {
            let o = get(monitor, "/api/overview", Some(&token))
                .await
                .ok()?
                .json();
            let events = o["throughput"]["total_last_hour"].as_u64()?;
            let services = o["services"]["instances"].as_array()?.len();
            (events > 0 && services >= 6).then_some(())
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}; logs in {}", dir.join("logs").display()));
    for name in WITNESSES {
        let state = dir.join("witness").join(format!("{name}.json"));
        wait_until(
            TRAFFIC_TIMEOUT,
            &format!("the {name} witness to cosign a checkpoint"),
            async || {
                let text = std::fs::read_to_string(&state).ok()?;
                let s: serde_json::Value = serde_json::from_str(&text).ok()?;
                (s["size"].as_u64()? > 0).then_some(s)
            },
        )
        .await
        .map(|s| assert_eq!(s["forks"], 0, "{name}: no fork in {s}"))
        .unwrap_or_else(|e| panic!("{e}; logs in {}", dir.join("logs").display()));
    }
}

/// The agencies whose witnesses `up` starts (state files `witness/<name>.json`).
const WITNESSES: [&str; 5] = [
    "customs",
    "ip-center",
    "public-security",
    "procuratorate",
    "court",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn up_starts_the_whole_system_again_with_the_same_keys_and_down_stops_all_of_it() {
    for name in [
        "casebus",
        "casebus-customs",
        "casebus-gateway",
        "casebus-monitor",
        "casebus-simulator",
    ] {
        binary(name);
    }
    let state = tempfile::tempdir().expect("state dir");
    let dir = state.path().join("local");
    let _guard = StopOnDrop(dir.clone());

    let printed = run("up", &dir, &[]).await;
    for expected in [
        "/login#token=cb1.",
        "grpcurl",
        "Gateway/ListCases",
        "deploy/local/down",
    ] {
        assert!(
            printed.contains(expected),
            "up did not print {expected}:\n{printed}"
        );
    }
    let first = pids(&dir);
    assert_eq!(first.len(), PROCESSES.len(), "{first:?}");
    for (name, pid) in &first {
        assert!(running(*pid), "{name} (pid {pid}) is not running");
    }
    wait_for_traffic(&dir).await;
    let key = dir.join("keys/customs-ningbo.key");
    let key_before = std::fs::read(&key).expect("customs key");
    let registry_before = std::fs::read(dir.join("registry.toml")).expect("registry");

    // Again: the first run's processes stop, new ones start, keys stay.
    let printed = run("up", &dir, &[]).await;
    assert!(
        printed.contains("stopping the previous local run"),
        "{printed}"
    );
    let second = pids(&dir);
    assert_eq!(second.len(), PROCESSES.len(), "{second:?}");
    for (name, pid) in &first {
        assert!(
            !running(*pid),
            "{name} of the first run (pid {pid}) still runs"
        );
    }
    for (name, pid) in &second {
        assert!(running(*pid), "{name} (pid {pid}) is not running");
    }
    assert_eq!(
        std::fs::read(&key).expect("customs key"),
        key_before,
        "keys are reused"
    );
    assert_eq!(
        std::fs::read(dir.join("registry.toml")).expect("registry"),
        registry_before
    );
    wait_for_traffic(&dir).await;
    export_and_verify_offline(&dir).await;

    let printed = run("down", &dir, &[]).await;
    for name in PROCESSES {
        assert!(printed.contains(&format!("stopped {name}")), "{printed}");
    }
    for (name, pid) in &second {
        assert!(!running(*pid), "{name} (pid {pid}) still runs after down");
    }
    assert!(pids(&dir).is_empty(), "down removes the PID files");
    assert!(key.is_file(), "down keeps the data");

    run("down", &dir, &["--purge"]).await;
    assert!(!dir.exists(), "--purge deletes the state directory");
}
