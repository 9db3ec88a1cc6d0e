//! The process definitions of `deploy/`: systemd units, the compose file and the
//! Kubernetes manifests (with the NATS Helm values).
//!
//! What tools can check here is checked with them: `systemd-analyze verify` and
//! `systemd-analyze security` on the units (offline, in a scratch root with stub
//! binaries), and the Kubernetes JSON schemas of the `kubernetes-validate` package
//! (strict: unknown fields are errors) on the manifests. Neither Docker Compose nor
//! Helm runs here, so the rest is structural: every file parses, every secret, file,
//! port and consumer name one file refers to exists where it points, probes and
//! resources are set, one image everywhere, and stop timeouts match the shutdown grace.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde::Deserialize as _;
use serde_json::Value;

use casebus_tests::workspace_root;

/// Every casebus service binary with a process definition, and its short name (the
/// compose service, the Kubernetes workload).
const SERVICES: [(&str, &str); 7] = [
    ("casebus-customs", "customs"),
    ("casebus-ip-center", "ip-center"),
    ("casebus-public-security", "public-security"),
    ("casebus-procuratorate", "procuratorate"),
    ("casebus-court", "court"),
    ("casebus-gateway", "gateway"),
    ("casebus-monitor", "monitor"),
];

/// The agency services (short names): each keeps an inbox snapshot
/// (`--inbox-snapshot`, `CASEBUS_INBOX_SNAPSHOT`, docs/STARTUP.md), which must sit on a
/// writable path that survives a restart, or every restart reads the whole stream again.
const AGENCIES: [&str; 5] = [
    "customs",
    "ip-center",
    "public-security",
    "procuratorate",
    "court",
];

/// The inbox snapshot path an agency service is given: `--inbox-snapshot` in its command
/// (`--inbox-snapshot=P` or `--inbox-snapshot P`), else `CASEBUS_INBOX_SNAPSHOT` in one of
/// its settings.
fn inbox_snapshot<'a>(
    command: impl IntoIterator<Item = &'a str>,
    settings: impl IntoIterator<Item = (&'a str, &'a str)>,
) -> Option<String> {
    let command: Vec<&str> = command.into_iter().collect();
    command
        .iter()
        .enumerate()
        .find_map(|(i, arg)| {
            arg.strip_prefix("--inbox-snapshot=")
                .or_else(|| (*arg == "--inbox-snapshot").then(|| command.get(i + 1).copied())?)
        })
        .or_else(|| {
            settings
                .into_iter()
                .find(|(k, _)| *k == "CASEBUS_INBOX_SNAPSHOT")
                .map(|(_, v)| v)
        })
        .map(str::to_owned)
}

/// Whether `path` lies inside directory `dir`.
fn inside(path: &str, dir: &str) -> bool {
    path.strip_prefix(dir.trim_end_matches('/'))
        .is_some_and(|rest| rest.starts_with('/') && rest.len() > 1)
}

/// Binaries the image holds (the services and the operator CLI).
const BINARIES: [&str; 8] = [
    "casebus",
    "casebus-customs",
    "casebus-ip-center",
    "casebus-public-security",
    "casebus-procuratorate",
    "casebus-court",
    "casebus-gateway",
    "casebus-monitor",
];

/// The image every casebus container runs.
const IMAGE: &str = "casebus:0.1.0";

/// Time a service gets after its shutdown grace to drain NATS before it is killed.
const DRAIN_MARGIN: Duration = Duration::from_secs(10);

fn deploy(path: &str) -> PathBuf {
    workspace_root().join("deploy").join(path)
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

/// Every YAML document of a file, with `<<` merge keys applied, as JSON values.
fn yaml_docs(path: &Path) -> Vec<Value> {
    let text = read(path);
    serde_norway::Deserializer::from_str(&text)
        .map(|doc| {
            let mut value = serde_norway::Value::deserialize(doc)
                .unwrap_or_else(|e| panic!("{} is not valid YAML: {e}", path.display()));
            value
                .apply_merge()
                .unwrap_or_else(|e| panic!("{}: merge keys: {e}", path.display()));
            serde_json::to_value(value)
                .unwrap_or_else(|e| panic!("{}: not JSON-shaped: {e}", path.display()))
        })
        .filter(|v| !v.is_null())
        .collect()
}

fn yaml(path: &Path) -> Value {
    let mut docs = yaml_docs(path);
    assert_eq!(docs.len(), 1, "{} holds one document", path.display());
    docs.remove(0)
}

/// `KEY=VALUE` lines of an env file.
fn env_file(path: &Path) -> BTreeMap<String, String> {
    read(path)
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

fn duration(text: &str) -> Duration {
    humantime_like(text).unwrap_or_else(|| panic!("{text:?} is not a duration like 20s"))
}

/// `20s`, `1m`, `30` (seconds).
fn humantime_like(text: &str) -> Option<Duration> {
    let text = text.trim();
    let (number, unit) = text
        .find(|c: char| !c.is_ascii_digit())
        .map_or((text, "s"), |i| text.split_at(i));
    let n: u64 = number.parse().ok()?;
    match unit {
        "s" => Some(Duration::from_secs(n)),
        "m" | "min" => Some(Duration::from_secs(n * 60)),
        _ => None,
    }
}

/// The shutdown grace every service gets, from the shared systemd settings.
fn shutdown_grace(env: &BTreeMap<String, String>) -> Duration {
    duration(
        env.get("CASEBUS_SHUTDOWN_GRACE")
            .expect("CASEBUS_SHUTDOWN_GRACE is set"),
    )
}

/// Durable consumer names by site.env key prefix (`CUSTOMS`, ..., `GATEWAY`), as the
/// NATS permissions are rendered.
fn nats_consumers() -> BTreeMap<String, String> {
    env_file(&deploy("nats/site.env.example"))
        .into_iter()
        .filter_map(|(k, v)| Some((k.strip_suffix("_CONSUMER")?.to_owned(), v)))
        .collect()
}

/// The site.env key prefix of a short service name.
fn nats_key(short: &str) -> String {
    short.to_uppercase().replace('-', "_")
}

fn tool(name: &str, hint: &str) -> PathBuf {
    let on_path = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default();
    on_path
        .into_iter()
        .chain([PathBuf::from("/usr/bin"), PathBuf::from("/bin")])
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
        .unwrap_or_else(|| panic!("{name} not found; {hint}"))
}

fn output_text(output: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

// ---------------------------------------------------------------------------------------
// systemd

/// The witnesses' template unit; one instance per agency (`casebus-witness@customs`, ...).
const WITNESS_TEMPLATE: &str = "casebus-witness@.service";

fn witness_unit(agency: &str) -> String {
    format!("casebus-witness@{agency}.service")
}

/// `key=value` lines of a unit, in order (repeated keys kept), with lines continued by a
/// trailing backslash joined.
fn unit_settings(text: &str) -> Vec<(String, String)> {
    let mut lines = Vec::new();
    let mut pending = String::new();
    for line in text.lines().map(str::trim) {
        if pending.is_empty() && (line.starts_with('#') || line.starts_with(';')) {
            continue;
        }
        match line.strip_suffix('\\') {
            Some(head) => {
                pending.push_str(head);
                pending.push(' ');
            }
            None => {
                pending.push_str(line);
                lines.push(std::mem::take(&mut pending));
            }
        }
    }
    lines
        .iter()
        .map(|l| l.trim())
        .filter(|l| !l.is_empty() && !l.starts_with('['))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.trim().to_owned()))
        .collect()
}

/// The one value of `key` in a unit's settings.
fn one_value<'a>(unit: &str, settings: &'a [(String, String)], key: &str) -> &'a str {
    let values = unit_values(settings, key);
    assert_eq!(values.len(), 1, "{unit}: one {key}= ({values:?})");
    values[0]
}

/// What every unit must do, services and witnesses alike: the sandbox, restarts, the stop
/// timeout of the shutdown grace, the shared settings first and every settings file
/// shipped, and its secrets as credentials handed to it (`%d/<id>` in an `Environment=`
/// or its command) and nothing named in `%d/` that is not one. `instance` fills `%i`.
fn check_unit_basics(
    unit: &str,
    settings: &[(String, String)],
    instance: Option<&str>,
    grace: Duration,
) {
    for (key, value) in [
        ("Type", "exec"),
        ("DynamicUser", "yes"),
        ("NoNewPrivileges", "yes"),
        ("ProtectSystem", "strict"),
        ("ProtectHome", "yes"),
        ("PrivateTmp", "yes"),
        ("PrivateDevices", "yes"),
        ("Restart", "on-failure"),
        ("KillSignal", "SIGTERM"),
        ("CapabilityBoundingSet", ""),
        ("UMask", "0077"),
    ] {
        assert_eq!(one_value(unit, settings, key), value, "{unit}: {key}");
    }
    let files = unit_values(settings, "EnvironmentFile");
    assert_eq!(
        files.first().copied(),
        Some("/etc/casebus/casebus.env"),
        "{unit}: the shared settings first"
    );
    assert!(files.len() >= 2, "{unit}: settings of its own");
    for file in &files {
        let file = instance.map_or_else(|| (*file).to_owned(), |i| file.replace("%i", i));
        let name = file
            .strip_prefix("/etc/casebus/")
            .unwrap_or_else(|| panic!("{unit}: EnvironmentFile={file} is not in /etc/casebus"));
        assert!(
            deploy(&format!("systemd/env/{name}")).is_file(),
            "{unit}: EnvironmentFile={file}, but deploy/systemd/env has no {name}"
        );
    }
    assert_eq!(
        duration(one_value(unit, settings, "TimeoutStopSec")),
        grace + DRAIN_MARGIN,
        "{unit}: TimeoutStopSec is the shutdown grace plus the drain margin"
    );

    // Secrets come as credentials, and the service is told where they are.
    let credentials: BTreeSet<&str> = unit_values(settings, "LoadCredential")
        .into_iter()
        .filter_map(|v| v.split_once(':').map(|(id, _)| id))
        .collect();
    assert!(
        credentials.contains("nats-nkey-seed"),
        "{unit}: its NKey seed"
    );
    let environment = unit_values(settings, "Environment");
    let exec_start = one_value(unit, settings, "ExecStart");
    let handed: Vec<&str> = environment
        .iter()
        .filter_map(|line| line.split_once("=%d/").map(|(_, id)| id))
        .chain(
            exec_start
                .split_whitespace()
                .filter_map(|arg| arg.split_once("=%d/").map(|(_, id)| id)),
        )
        .collect();
    for credential in &credentials {
        assert!(
            handed.contains(credential),
            "{unit}: credential {credential} is handed to the service"
        );
    }
    for id in &handed {
        assert!(
            credentials.contains(id),
            "{unit}: %d/{id} names a credential"
        );
    }
}

fn unit_values<'a>(settings: &'a [(String, String)], key: &str) -> Vec<&'a str> {
    settings
        .iter()
        .filter(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
        .collect()
}

/// The directories a unit may write that outlive a restart: its `StateDirectory=` (as `%S/`
/// and `/var/lib/`) and its `ReadWritePaths=` outside the runtime and temporary
/// directories. Under `ProtectSystem=strict` every other path is read-only.
fn persistent_writable_dirs(settings: &[(String, String)]) -> Vec<String> {
    let mut dirs = Vec::new();
    for value in unit_values(settings, "StateDirectory") {
        for dir in value.split_whitespace() {
            let dir = dir.split(':').next().unwrap_or(dir);
            dirs.push(format!("%S/{dir}"));
            dirs.push(format!("/var/lib/{dir}"));
        }
    }
    for value in unit_values(settings, "ReadWritePaths") {
        for path in value.split_whitespace() {
            let path = path.trim_start_matches(['-', '+']);
            let volatile = ["/run", "/tmp", "/var/tmp", "/dev/shm", "%t", "%T", "%V"]
                .iter()
                .any(|v| path == *v || inside(path, v));
            if !volatile {
                dirs.push(path.to_owned());
            }
        }
    }
    dirs
}

/// A scratch root for `systemd-analyze --root`: the system's own units (for targets such
/// as network-online.target), ours, and stub executables where ExecStart points.
fn scratch_root() -> tempfile::TempDir {
    let root = tempfile::tempdir().expect("temp dir");
    let system_units = ["/usr/lib/systemd/system", "/lib/systemd/system"]
        .into_iter()
        .map(Path::new)
        .find(|p| p.is_dir())
        .expect("the systemd package installs its units");
    let lib = root.path().join("usr/lib/systemd");
    std::fs::create_dir_all(&lib).expect("mkdir");
    let copied = Command::new("cp")
        .arg("-a")
        .arg(system_units)
        .arg(lib.join("system"))
        .output()
        .expect("cp runs");
    assert!(copied.status.success(), "{}", output_text(&copied));
    let etc = root.path().join("etc/systemd/system");
    let bin = root.path().join("usr/local/bin");
    std::fs::create_dir_all(&etc).expect("mkdir");
    std::fs::create_dir_all(&bin).expect("mkdir");
    let units = SERVICES
        .iter()
        .map(|(name, _)| (format!("{name}.service"), *name))
        .chain([(WITNESS_TEMPLATE.to_owned(), "casebus")]);
    for (unit, binary) in units {
        std::fs::copy(deploy(&format!("systemd/{unit}")), etc.join(&unit)).expect("copy unit");
        let stub = bin.join(binary);
        std::fs::write(&stub, "#!/bin/sh\n").expect("stub");
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(&stub, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    }
    root
}

#[test]
fn every_unit_passes_systemd_analyze_verify_and_its_security_review() {
    let analyze = tool(
        "systemd-analyze",
        "install Debian's systemd package (apt-get install -y systemd) or run scripts/test",
    );
    let root = scratch_root();
    // The witness template is checked through its instances (verify of the bare template
    // loads no settings).
    let units: Vec<String> = SERVICES
        .iter()
        .map(|(n, _)| format!("{n}.service"))
        .chain(AGENCIES.iter().map(|agency| witness_unit(agency)))
        .collect();
    let verify = Command::new(&analyze)
        .arg("verify")
        .arg(format!("--root={}", root.path().display()))
        .args(&units)
        .output()
        .expect("systemd-analyze runs");
    // verify exits 0 on unknown keys and bad values, which it only prints: any output
    // is a finding.
    let text = output_text(&verify);
    assert!(
        verify.status.success() && text.trim().is_empty(),
        "systemd-analyze verify:\n{text}"
    );
    for unit in &units {
        // Exposure 0-10 scaled by 10: 20 means "2.0 OK" or better.
        let security = Command::new(&analyze)
            .args(["security", "--offline=yes", "--threshold=20", "--no-pager"])
            .arg(format!("--root={}", root.path().display()))
            .arg(unit)
            .output()
            .expect("systemd-analyze runs");
        assert!(
            security.status.success(),
            "{unit} is exposed more than 2.0:\n{}",
            output_text(&security)
        );
    }
}

#[test]
fn every_unit_is_sandboxed_restarted_and_given_its_settings_and_secrets() {
    let shared = env_file(&deploy("systemd/env/casebus.env"));
    let grace = shutdown_grace(&shared);
    let consumers = nats_consumers();
    let mut units_on_disk: BTreeSet<String> = std::fs::read_dir(deploy("systemd"))
        .expect("deploy/systemd")
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.ends_with(".service"))
        .collect();
    for (name, short) in SERVICES {
        let unit = format!("{name}.service");
        assert!(units_on_disk.remove(&unit), "no {unit}");
        let settings = unit_settings(&read(&deploy(&format!("systemd/{unit}"))));
        let one = |key: &str| -> &str { one_value(&unit, &settings, key) };
        assert_eq!(
            one("ExecStart").split_whitespace().next(),
            Some(format!("/usr/local/bin/{name}").as_str()),
            "{unit}"
        );
        check_unit_basics(&unit, &settings, None, grace);
        assert_eq!(
            unit_values(&settings, "EnvironmentFile"),
            vec![
                "/etc/casebus/casebus.env".to_owned(),
                format!("/etc/casebus/{name}.env")
            ],
            "{unit}: shared then own settings"
        );
        let environment: Vec<&str> = unit_values(&settings, "Environment");

        let own = env_file(&deploy(&format!("systemd/env/{name}.env")));
        let consumer = own
            .get("CASEBUS_CONSUMER")
            .or(own.get("CASEBUS_GATEWAY_CONSUMER_NAME"));
        match consumers.get(&nats_key(short)) {
            Some(expected) => assert_eq!(
                consumer,
                Some(expected),
                "{unit}: its consumer is the one the NATS user may use"
            ),
            None => assert!(consumer.is_none(), "{unit}: no consumer of its own"),
        }
        if short == "gateway" {
            assert_eq!(one("StateDirectory"), "casebus-gateway");
            for (setting, what) in [
                ("CASEBUS_GATEWAY_DB", "the projection"),
                ("CASEBUS_GATEWAY_TLOG_FILE", "the transparency log"),
            ] {
                assert!(
                    environment
                        .iter()
                        .any(|e| e.starts_with(&format!("{setting}=%S/casebus-gateway/"))),
                    "{what} lives in the state directory"
                );
            }
            assert!(
                environment.contains(&"CASEBUS_GATEWAY_LOG_KEY=%d/log-key"),
                "the gateway signs checkpoints for the witnesses with its log key"
            );
        }
        if AGENCIES.contains(&short) {
            // EnvironmentFile= settings override Environment= ones.
            let snapshot = inbox_snapshot(
                one("ExecStart").split_whitespace(),
                own.iter()
                    .map(|(k, v)| (k.as_str(), v.as_str()))
                    .chain(environment.iter().filter_map(|e| e.split_once('='))),
            )
            .unwrap_or_else(|| {
                panic!("{unit}: no --inbox-snapshot or CASEBUS_INBOX_SNAPSHOT (docs/STARTUP.md)")
            });
            let writable = persistent_writable_dirs(&settings);
            assert!(
                writable.iter().any(|dir| inside(&snapshot, dir)),
                "{unit}: the inbox snapshot {snapshot} is in neither its StateDirectory= nor a \
                 persistent ReadWritePaths= ({writable:?}): under ProtectSystem=strict it cannot \
                 be written, or it is lost at a restart"
            );
        }
    }
    assert!(
        units_on_disk.remove(WITNESS_TEMPLATE),
        "no {WITNESS_TEMPLATE}"
    );
    assert!(
        units_on_disk.is_empty(),
        "units not checked: {units_on_disk:?}"
    );
}

#[test]
fn the_witness_template_runs_one_witness_per_agency_with_its_state_kept() {
    let shared = env_file(&deploy("systemd/env/casebus.env"));
    let grace = shutdown_grace(&shared);
    let unit = WITNESS_TEMPLATE;
    let settings = unit_settings(&read(&deploy(&format!("systemd/{unit}"))));
    let exec_start = one_value(unit, &settings, "ExecStart");
    let args: Vec<&str> = exec_start.split_whitespace().collect();
    assert_eq!(
        args[..2],
        ["/usr/local/bin/casebus", "witness"],
        "{unit}: runs casebus witness"
    );
    let flag = |name: &str| -> &str {
        args.iter()
            .find_map(|a| a.strip_prefix(&format!("--{name}=")))
            .unwrap_or_else(|| panic!("{unit}: no --{name}="))
    };
    assert!(!args.contains(&"--once"), "{unit}: follows, not --once");

    // Its state (what it cosigned) persists in its own state directory; its ready file
    // goes in its runtime directory; its keys are credentials; public files in /etc.
    assert_eq!(
        one_value(unit, &settings, "StateDirectory"),
        "casebus-witness-%i",
        "{unit}: a state directory per instance"
    );
    let state = flag("state");
    let writable = persistent_writable_dirs(&settings);
    assert!(
        writable.iter().any(|dir| inside(state, dir)),
        "{unit}: --state={state} is in neither its StateDirectory= nor a persistent \
         ReadWritePaths= ({writable:?})"
    );
    let runtime = one_value(unit, &settings, "RuntimeDirectory");
    assert!(
        inside(flag("ready-file"), &format!("%t/{runtime}")),
        "{unit}: the ready file is in its RuntimeDirectory="
    );
    for name in ["witness-key", "gateway-token-file"] {
        assert!(
            flag(name).starts_with("%d/"),
            "{unit}: --{name} is a credential"
        );
    }
    for name in ["log-vkey", "gateway-tls-ca"] {
        assert!(
            flag(name).starts_with("/etc/casebus/"),
            "{unit}: --{name} is a public file in /etc/casebus"
        );
    }
    assert!(
        unit_values(&settings, "Environment").contains(&"CASEBUS_NATS_INBOX_PREFIX=_INBOX_witness"),
        "{unit}: the witness user's reply inbox"
    );

    // Every instance: the basics of every unit, and every ${VAR} of its command set by
    // its settings files.
    let gateway = env_file(&deploy("systemd/env/casebus-gateway.env"));
    let mut ports = BTreeMap::new();
    for agency in AGENCIES {
        let instance = witness_unit(agency);
        check_unit_basics(&instance, &settings, Some(agency), grace);
        let mut env = BTreeMap::new();
        for file in unit_values(&settings, "EnvironmentFile") {
            let name = file.replace("%i", agency);
            let name = name.trim_start_matches("/etc/casebus/");
            env.extend(env_file(&deploy(&format!("systemd/env/{name}"))));
        }
        for arg in &args {
            for (_, rest) in arg.match_indices("${").map(|(i, _)| arg.split_at(i + 2)) {
                let var = rest.split('}').next().unwrap_or_default();
                assert!(
                    env.get(var).is_some_and(|v| !v.is_empty()),
                    "{instance}: {arg} needs {var}, which its settings do not set"
                );
            }
        }
        assert_eq!(
            env.get("CASEBUS_WITNESS_ORIGIN"),
            gateway.get("CASEBUS_GATEWAY_LOG_ORIGIN"),
            "{instance}: witnesses the origin the gateway's checkpoints carry"
        );
        let listen = env.get("CASEBUS_METRICS_LISTEN").expect("metrics listen");
        let port = listen.rsplit(':').next().expect("a port").to_owned();
        assert!(
            ports.insert(port.clone(), instance.clone()).is_none(),
            "{instance}: metrics port {port} is another witness's"
        );
    }
    // One host may run them all: no witness takes a service's metrics port.
    for (name, _) in SERVICES {
        let own = env_file(&deploy(&format!("systemd/env/{name}.env")));
        if let Some(port) = own
            .get("CASEBUS_METRICS_LISTEN")
            .and_then(|l| l.rsplit(':').next())
        {
            assert!(
                !ports.contains_key(port),
                "{name} and {} share metrics port {port}",
                ports[port]
            );
        }
    }
}

// ---------------------------------------------------------------------------------------
// compose

/// The directories the image creates owned by the casebus user (`install -d -o 10001`
/// in deploy/docker/Dockerfile): a named volume mounted on one starts out writable by
/// the user every container runs as; on any other path Docker creates it owned by root.
fn image_state_dirs() -> BTreeSet<String> {
    let dockerfile = read(&deploy("docker/Dockerfile")).replace("\\\n", " ");
    dockerfile
        .split("&&")
        .map(str::trim)
        .filter(|command| command.starts_with("install -d -o 10001 -g 10001 "))
        .flat_map(str::split_whitespace)
        .filter(|word| word.starts_with('/'))
        .map(str::to_owned)
        .collect()
}

#[test]
fn the_compose_file_wires_every_service_to_existing_files_secrets_and_nats_users() {
    let dir = deploy("compose");
    let compose = yaml(&dir.join("compose.yaml"));
    let services = compose["services"].as_object().expect("services");
    let shared = env_file(&dir.join("casebus.env"));
    let grace = shutdown_grace(&shared);
    let consumers = nats_consumers();
    let declared_secrets = compose["secrets"].as_object().expect("secrets");
    let declared_volumes = compose["volumes"].as_object().expect("volumes");
    let image_dirs = image_state_dirs();
    let mut snapshots = BTreeSet::new();

    for name in ["nats", "provision", "prometheus", "grafana"]
        .into_iter()
        .chain(SERVICES.iter().map(|(_, short)| *short))
    {
        assert!(services.contains_key(name), "compose has no service {name}");
    }
    for (name, service) in services {
        // Every file a service mounts exists in the repository or is site-provided
        // (./config, ./secrets), and every named volume is declared.
        for volume in service["volumes"].as_array().into_iter().flatten() {
            let spec = volume.as_str().expect("short volume syntax");
            let source = spec.split(':').next().unwrap_or_default();
            if let Some(relative) = source.strip_prefix("../") {
                assert!(
                    deploy(relative).exists(),
                    "{name} mounts {source}, which does not exist"
                );
            } else if !source.starts_with("./") {
                assert!(
                    declared_volumes.contains_key(source),
                    "{name}: volume {source} is not declared"
                );
            }
        }
        for dependency in match &service["depends_on"] {
            Value::Object(map) => map.keys().cloned().collect::<Vec<_>>(),
            Value::Array(list) => list
                .iter()
                .filter_map(|v| v.as_str())
                .map(str::to_owned)
                .collect(),
            _ => vec![],
        } {
            assert!(
                services.contains_key(&dependency),
                "{name} depends on unknown {dependency}"
            );
        }
        let secrets: BTreeSet<&str> = service["secrets"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        for secret in &secrets {
            assert!(
                declared_secrets.contains_key(*secret),
                "{name}: secret {secret} not declared"
            );
        }
        // Paths under /run/secrets name a secret the service has.
        for (key, value) in service["environment"].as_object().into_iter().flatten() {
            if let Some(secret) = value.as_str().and_then(|v| v.strip_prefix("/run/secrets/")) {
                assert!(
                    secrets.contains(secret),
                    "{name}: {key} reads secret {secret} it lacks"
                );
            }
        }

        let Some(image) = service["image"].as_str() else {
            continue;
        };
        if !image.contains("casebus") {
            continue;
        }
        assert_eq!(
            image,
            format!("${{CASEBUS_IMAGE:-{IMAGE}}}"),
            "{name}: the casebus image"
        );
        let command = service["command"][0].as_str().expect("a command");
        assert!(
            BINARIES.contains(&command),
            "{name} runs {command}, not a casebus binary"
        );
        assert_eq!(service["read_only"], true, "{name}: read-only root");
        assert_eq!(service["user"], "10001:10001", "{name}: the casebus user");
        if name != "provision" {
            assert_eq!(
                duration(
                    service["stop_grace_period"]
                        .as_str()
                        .expect("stop_grace_period")
                ),
                grace + DRAIN_MARGIN,
                "{name}: stop_grace_period is the shutdown grace plus the drain margin"
            );
            assert!(
                secrets.iter().any(|s| s.ends_with("-nkey")),
                "{name}: logs in to NATS with its own NKey"
            );
        }
        let environment = &service["environment"];
        let consumer = environment["CASEBUS_CONSUMER"]
            .as_str()
            .or(environment["CASEBUS_GATEWAY_CONSUMER_NAME"].as_str());
        if let Some(expected) = consumers.get(&nats_key(name)) {
            assert_eq!(
                consumer,
                Some(expected.as_str()),
                "{name}: the consumer its NATS user may use"
            );
        }

        // Named volumes of the casebus user (`name:/path`, writable): the image owns the
        // path for it.
        let writable: Vec<&str> = service["volumes"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .filter_map(|spec| {
                let mut parts = spec.split(':');
                let (source, target) = (parts.next()?, parts.next()?);
                let read_only = parts.any(|option| option.split(',').any(|o| o == "ro"));
                (declared_volumes.contains_key(source) && !read_only).then_some(target)
            })
            .collect();
        for target in &writable {
            assert!(
                image_dirs.contains(*target),
                "{name}: volume at {target}, which the Dockerfile does not create for uid \
                 10001 ({image_dirs:?}): Docker would make it root's, not writable"
            );
        }
        if AGENCIES.contains(&name.as_str()) {
            let command = service["command"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str);
            let settings = environment
                .as_object()
                .into_iter()
                .flatten()
                .filter_map(|(k, v)| Some((k.as_str(), v.as_str()?)))
                .chain(shared.iter().map(|(k, v)| (k.as_str(), v.as_str())));
            let snapshot = inbox_snapshot(command, settings).unwrap_or_else(|| {
                panic!("{name}: no --inbox-snapshot or CASEBUS_INBOX_SNAPSHOT (docs/STARTUP.md)")
            });
            assert!(
                writable.iter().any(|target| inside(&snapshot, target)),
                "{name}: the inbox snapshot {snapshot} is on no writable named volume \
                 ({writable:?}): the root is read-only and anything else is lost with the \
                 container"
            );
            assert!(
                snapshots.insert(snapshot.clone()),
                "{name}: {snapshot} is another service's snapshot too"
            );
        }
    }
    assert_eq!(
        snapshots.len(),
        AGENCIES.len(),
        "every agency keeps a snapshot"
    );
    assert_eq!(
        services["nats"]["volumes"][0], "../nats/single.conf:/etc/nats/nats-server.conf:ro",
        "NATS runs the shipped single-node config"
    );
    for secret in declared_secrets.values() {
        let file = secret["file"].as_str().expect("file secrets");
        assert!(
            file.starts_with("./secrets/"),
            "secrets live under ./secrets: {file}"
        );
    }
    // Prometheus scrapes every casebus service by its compose name on its metrics port.
    let metrics_port = shared["CASEBUS_METRICS_LISTEN"]
        .rsplit(':')
        .next()
        .expect("a port")
        .to_owned();
    let scrape = yaml(&deploy("prometheus/prometheus.yml"));
    let targets: BTreeSet<String> = scrape["scrape_configs"]
        .as_array()
        .expect("scrape_configs")
        .iter()
        .flat_map(|job| job["static_configs"].as_array().into_iter().flatten())
        .flat_map(|c| c["targets"].as_array().into_iter().flatten())
        .filter_map(|t| t.as_str().map(str::to_owned))
        .collect();
    for (_, short) in SERVICES {
        let target = format!("{short}:{metrics_port}");
        assert!(
            targets.contains(&target),
            "prometheus.yml does not scrape {target}"
        );
    }
    for target in &targets {
        let host = target.split(':').next().unwrap_or_default();
        assert!(
            services.contains_key(host),
            "prometheus.yml scrapes {target}, not a compose service"
        );
    }
}

// ---------------------------------------------------------------------------------------
// Kubernetes

/// Every Kubernetes object of the manifests kustomization.yaml applies, by file.
fn k8s_objects() -> Vec<(String, Value)> {
    let kustomization = yaml(&deploy("k8s/kustomization.yaml"));
    kustomization["resources"]
        .as_array()
        .expect("resources")
        .iter()
        .map(|r| r.as_str().expect("a file"))
        .flat_map(|file| {
            yaml_docs(&deploy(&format!("k8s/{file}")))
                .into_iter()
                .map(move |doc| (file.to_owned(), doc))
        })
        .collect()
}

fn site_objects() -> Vec<Value> {
    yaml_docs(&deploy("k8s/secrets.example.yaml"))
}

#[test]
fn the_kubernetes_manifests_pass_the_strict_api_schemas() {
    let python = tool("python3", "python3 runs the kubernetes-validate schemas");
    let probe = Command::new(&python)
        .args(["-c", "import kubernetes_validate"])
        .output()
        .expect("python3 runs");
    assert!(
        probe.status.success(),
        "kubernetes-validate is missing; install it with `python3 -m pip install \
         kubernetes-validate` or run scripts/test, which does"
    );
    let kustomization = yaml(&deploy("k8s/kustomization.yaml"));
    let mut files: Vec<PathBuf> = kustomization["resources"]
        .as_array()
        .expect("resources")
        .iter()
        .map(|r| deploy(&format!("k8s/{}", r.as_str().expect("a file"))))
        .collect();
    files.push(deploy("k8s/secrets.example.yaml"));
    let output = Command::new(&python)
        .args([
            "-m",
            "kubernetes_validate",
            "--strict",
            "--quiet",
            "-k",
            "1.30.0",
        ])
        .args(&files)
        .output()
        .expect("kubernetes-validate runs");
    assert!(output.status.success(), "{}", output_text(&output));
}

#[test]
fn the_kustomization_lists_every_manifest_and_one_image() {
    let kustomization = yaml(&deploy("k8s/kustomization.yaml"));
    let listed: BTreeSet<String> = kustomization["resources"]
        .as_array()
        .expect("resources")
        .iter()
        .filter_map(|r| r.as_str().map(str::to_owned))
        .collect();
    let on_disk: BTreeSet<String> = std::fs::read_dir(deploy("k8s"))
        .expect("deploy/k8s")
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.ends_with(".yaml"))
        .filter(|n| {
            ![
                "kustomization.yaml",
                "nats-values.yaml",
                "secrets.example.yaml",
            ]
            .contains(&n.as_str())
        })
        .collect();
    assert_eq!(listed, on_disk, "kustomization.yaml lists every manifest");
    let (name, tag) = IMAGE.split_once(':').expect("name:tag");
    assert_eq!(kustomization["images"][0]["name"], name);
    assert_eq!(kustomization["images"][0]["newTag"], tag);
}

/// The pod template of a workload, if the object is one.
/// Where a StatefulSet's container mounts the claim of its first volume claim template.
fn claim_mount<'a>(object: &Value, container: &'a Value) -> &'a str {
    let claim = object["spec"]["volumeClaimTemplates"][0]["metadata"]["name"]
        .as_str()
        .expect("a volume claim template");
    container["volumeMounts"]
        .as_array()
        .expect("mounts")
        .iter()
        .find(|m| m["name"] == claim)
        .and_then(|m| m["mountPath"].as_str())
        .expect("the claim is mounted")
}

fn pod_spec(object: &Value) -> Option<&Value> {
    match object["kind"].as_str()? {
        "Deployment" | "StatefulSet" | "Job" => Some(&object["spec"]["template"]["spec"]),
        _ => None,
    }
}

#[test]
fn every_workload_has_probes_resources_a_sandbox_and_the_secrets_it_reads() {
    let objects = k8s_objects();
    let site = site_objects();
    let find = |kind: &str, name: &str| -> Option<Value> {
        site.iter()
            .chain(objects.iter().map(|(_, o)| o))
            .find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
            .cloned()
    };
    let keys_of = |object: &Value| -> BTreeSet<String> {
        ["data", "stringData"]
            .iter()
            .flat_map(|field| object[*field].as_object().into_iter().flatten())
            .map(|(k, _)| k.clone())
            .collect()
    };
    let env = find("ConfigMap", "casebus-env").expect("ConfigMap casebus-env");
    let grace = duration(
        env["data"]["CASEBUS_SHUTDOWN_GRACE"]
            .as_str()
            .expect("grace"),
    );
    let consumers = nats_consumers();
    let mut seen = BTreeSet::new();
    let mut witnesses = 0;

    for (file, object) in &objects {
        let Some(pod) = pod_spec(object) else {
            continue;
        };
        let name = object["metadata"]["name"].as_str().unwrap_or("?");
        let what = format!("{file}: {} {name}", object["kind"].as_str().unwrap_or("?"));
        let is_job = object["kind"] == "Job";
        assert_eq!(
            pod["securityContext"]["runAsNonRoot"], true,
            "{what}: non-root"
        );
        assert_eq!(
            pod["automountServiceAccountToken"], false,
            "{what}: no API token"
        );
        if !is_job {
            assert_eq!(
                pod["terminationGracePeriodSeconds"].as_u64(),
                Some((grace + DRAIN_MARGIN).as_secs()),
                "{what}: terminationGracePeriodSeconds is the shutdown grace plus the drain margin"
            );
        }

        // Files each pod can read, by mount path.
        let mut mounted: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        let volumes = pod["volumes"].as_array().expect("volumes");
        let containers = pod["containers"].as_array().expect("containers");
        assert_eq!(containers.len(), 1, "{what}: one container");
        let container = &containers[0];
        for mount in container["volumeMounts"].as_array().into_iter().flatten() {
            let volume_name = mount["name"].as_str().expect("mount name");
            let path = mount["mountPath"].as_str().expect("mount path").to_owned();
            let volume = volumes
                .iter()
                .find(|v| v["name"] == volume_name)
                .or_else(|| {
                    object["spec"]["volumeClaimTemplates"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .find(|c| c["metadata"]["name"] == volume_name)
                })
                .unwrap_or_else(|| panic!("{what}: mount of unknown volume {volume_name}"));
            let mut keys = BTreeSet::new();
            let mut sources = Vec::new();
            if let Some(secret) = volume["secret"]["secretName"].as_str() {
                sources.push(("Secret", secret.to_owned()));
            }
            for source in volume["projected"]["sources"]
                .as_array()
                .into_iter()
                .flatten()
            {
                if let Some(n) = source["configMap"]["name"].as_str() {
                    sources.push(("ConfigMap", n.to_owned()));
                }
                if let Some(n) = source["secret"]["name"].as_str() {
                    sources.push(("Secret", n.to_owned()));
                }
            }
            for (kind, source) in sources {
                let found = find(kind, &source).unwrap_or_else(|| {
                    panic!("{what}: {kind} {source} is in no manifest or the site layout")
                });
                keys.extend(keys_of(&found));
            }
            mounted.insert(path, keys);
        }
        // Every file path in the settings is a key of what is mounted there.
        let mut settings: Vec<(String, String)> = container["env"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|e| {
                Some((
                    e["name"].as_str()?.to_owned(),
                    e["value"].as_str()?.to_owned(),
                ))
            })
            .collect();
        settings.extend(
            env["data"]
                .as_object()
                .expect("data")
                .iter()
                .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_owned()))),
        );
        for (key, value) in &settings {
            let Some((dir, file)) = value.rsplit_once('/') else {
                continue;
            };
            if let Some(keys) = mounted.get(dir)
                && !keys.is_empty()
            {
                assert!(
                    keys.contains(file),
                    "{what}: {key}={value}, but {dir} has no {file}"
                );
            } else if dir.starts_with("/run/secrets") || dir == "/etc/casebus" {
                panic!("{what}: {key}={value}, but nothing is mounted at {dir}");
            }
        }

        let image = container["image"].as_str().expect("image");
        assert_eq!(image, IMAGE, "{what}: the casebus image");
        let binary = container["command"][0].as_str().expect("a command");
        assert!(BINARIES.contains(&binary), "{what}: runs {binary}");
        let security = &container["securityContext"];
        assert_eq!(
            security["readOnlyRootFilesystem"], true,
            "{what}: read-only root"
        );
        assert_eq!(
            security["allowPrivilegeEscalation"], false,
            "{what}: no escalation"
        );
        for (kind, resource) in [
            ("requests", "cpu"),
            ("requests", "memory"),
            ("limits", "cpu"),
            ("limits", "memory"),
        ] {
            assert!(
                container["resources"][kind][resource].is_string(),
                "{what}: resources.{kind}.{resource}"
            );
        }
        if is_job {
            continue;
        }
        let ports: BTreeSet<&str> = container["ports"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|p| p["name"].as_str())
            .collect();
        for (probe, path) in [("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")] {
            let get = &container[probe]["httpGet"];
            assert_eq!(get["path"], path, "{what}: {probe} on {path}");
            let port = get["port"].as_str().expect("a named port");
            assert!(
                ports.contains(port),
                "{what}: {probe} port {port} is declared"
            );
        }
        if binary == "casebus" {
            // A witness: one replica, its state on a claim of its own, its metrics served.
            let args: Vec<&str> = container["command"]
                .as_array()
                .expect("command")
                .iter()
                .filter_map(Value::as_str)
                .collect();
            assert_eq!(
                args.get(1),
                Some(&"witness"),
                "{what}: the CLI runs a witness"
            );
            assert_eq!(object["kind"], "StatefulSet", "{what}: keeps its state");
            assert_eq!(
                object["spec"]["replicas"], 1,
                "{what}: one writer of its state"
            );
            let state = args
                .iter()
                .find_map(|a| a.strip_prefix("--state="))
                .expect("--state");
            let mount = claim_mount(object, container);
            assert!(
                state.starts_with(&format!("{mount}/")),
                "{what}: the state {state} is on the claim"
            );
            for (flag, dir) in [
                ("--witness-key=", "/run/secrets/casebus"),
                ("--gateway-token-file=", "/run/secrets/casebus"),
                ("--log-vkey=", "/etc/casebus"),
            ] {
                let path = args
                    .iter()
                    .find_map(|a| a.strip_prefix(flag))
                    .unwrap_or_else(|| panic!("{what}: {flag}"));
                let file = path
                    .strip_prefix(&format!("{dir}/"))
                    .unwrap_or_else(|| panic!("{what}: {flag}{path} is not under {dir}"));
                assert!(
                    mounted.get(dir).is_some_and(|keys| keys.contains(file)),
                    "{what}: {flag}{path}, but {dir} has no {file}"
                );
            }
            assert!(
                args.contains(&"--metrics-listen=0.0.0.0:9464"),
                "{what}: serves its metrics and probes"
            );
            witnesses += 1;
            continue;
        }
        seen.insert(binary.to_owned());
        let short = SERVICES
            .iter()
            .find(|(b, _)| *b == binary)
            .map(|(_, s)| *s)
            .expect("a service binary");
        let consumer = settings
            .iter()
            .find(|(k, _)| k == "CASEBUS_CONSUMER" || k == "CASEBUS_GATEWAY_CONSUMER_NAME")
            .map(|(_, v)| v.as_str());
        if let Some(expected) = consumers.get(&nats_key(short)) {
            assert_eq!(
                consumer,
                Some(expected.as_str()),
                "{what}: the consumer its NATS user may use"
            );
        }
        if AGENCIES.contains(&short) {
            assert_eq!(
                object["kind"], "StatefulSet",
                "{what}: each replica keeps its inbox snapshot on a claim of its own"
            );
            let command = container["command"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str);
            let snapshot = inbox_snapshot(
                command,
                settings.iter().map(|(k, v)| (k.as_str(), v.as_str())),
            )
            .unwrap_or_else(|| {
                panic!("{what}: no --inbox-snapshot or CASEBUS_INBOX_SNAPSHOT (docs/STARTUP.md)")
            });
            let mount = claim_mount(object, container);
            assert!(
                inside(&snapshot, mount),
                "{what}: the inbox snapshot {snapshot} is not on the claim mounted at {mount}"
            );
            let read_only = container["volumeMounts"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|m| m["mountPath"] == mount && m["readOnly"] == true);
            assert!(!read_only, "{what}: the claim at {mount} is writable");
        }
        if short == "gateway" {
            assert_eq!(
                object["kind"], "StatefulSet",
                "the gateway keeps its projection on a volume"
            );
            let db = settings
                .iter()
                .find(|(k, _)| k == "CASEBUS_GATEWAY_DB")
                .map(|(_, v)| v.clone())
                .expect("CASEBUS_GATEWAY_DB");
            let mount = claim_mount(object, container);
            assert!(
                db.starts_with(&format!("{mount}/")),
                "the projection {db} is on the claim"
            );
        }
    }
    let expected: BTreeSet<String> = SERVICES.iter().map(|(b, _)| (*b).to_owned()).collect();
    assert_eq!(seen, expected, "one workload per service");
    assert_eq!(witnesses, 5, "one witness per agency");
}

#[test]
fn every_service_selects_pods_and_ports_that_exist() {
    let objects = k8s_objects();
    let mut gateway_service = false;
    for (file, service) in objects.iter().filter(|(_, o)| o["kind"] == "Service") {
        let name = service["metadata"]["name"].as_str().unwrap_or("?");
        let selector = service["spec"]["selector"].as_object().expect("a selector");
        let workload = objects
            .iter()
            .filter_map(|(_, o)| Some((o, pod_spec(o)?)))
            .find(|(o, _)| {
                selector
                    .iter()
                    .all(|(k, v)| &o["spec"]["template"]["metadata"]["labels"][k] == v)
            })
            .unwrap_or_else(|| panic!("{file}: Service {name} selects no pods"));
        let ports: BTreeSet<&str> = workload.1["containers"][0]["ports"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|p| p["name"].as_str())
            .collect();
        for port in service["spec"]["ports"].as_array().expect("ports") {
            let target = port["targetPort"].as_str().expect("a named target port");
            assert!(
                ports.contains(target),
                "{file}: Service {name} targets unknown port {target}"
            );
        }
        gateway_service |= name == "gateway";
    }
    assert!(gateway_service, "the gateway has a Service");
}

#[test]
fn the_nats_helm_values_ask_for_a_durable_tls_jetstream_cluster_with_the_casebus_users() {
    let values = yaml(&deploy("k8s/nats-values.yaml"));
    let config = &values["config"];
    assert_eq!(config["cluster"]["enabled"], true);
    assert_eq!(config["cluster"]["replicas"], 3, "three nodes");
    assert_eq!(config["cluster"]["tls"]["enabled"], true, "route TLS");
    assert_eq!(
        config["cluster"]["tls"]["merge"]["verify"], true,
        "mutual route TLS"
    );
    assert_eq!(config["nats"]["tls"]["enabled"], true, "client TLS");
    let jetstream = &config["jetstream"];
    assert_eq!(jetstream["enabled"], true);
    assert_eq!(jetstream["fileStore"]["enabled"], true, "file storage");
    assert_eq!(
        jetstream["fileStore"]["pvc"]["enabled"], true,
        "on persistent volumes"
    );
    assert_eq!(
        jetstream["merge"]["sync_interval"], "always",
        "fsync before ack"
    );
    assert_eq!(config["merge"]["$include"], "./casebus/users.conf");
    assert!(
        values["container"]["image"]["tag"].is_null(),
        "the chart's image (>= 2.10.23) is kept"
    );
    assert!(
        values["podTemplate"]["topologySpreadConstraints"]["topology.kubernetes.io/zone"]
            .is_object(),
        "nodes spread across zones"
    );
    let site = site_objects();
    let secret_names: BTreeSet<&str> = site
        .iter()
        .filter(|o| o["kind"] == "Secret")
        .filter_map(|o| o["metadata"]["name"].as_str())
        .collect();
    for secret in [
        values["tlsCA"]["secretName"].as_str(),
        config["cluster"]["tls"]["secretName"].as_str(),
        config["nats"]["tls"]["secretName"].as_str(),
        values["podTemplate"]["patch"][0]["value"]["secret"]["secretName"].as_str(),
    ] {
        let secret = secret.expect("a secret name");
        assert!(
            secret_names.contains(secret),
            "Secret {secret} is in secrets.example.yaml"
        );
    }
    assert_eq!(
        values["container"]["patch"][0]["value"]["mountPath"], "/etc/nats-config/casebus",
        "the users file is mounted where the include points"
    );
}
