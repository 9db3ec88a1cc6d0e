//! `SimConfig`: what the simulator is told, as clap arguments with `CASEBUS_SIMULATOR_*`
//! environment variables, so the `casebus-simulator` binary and `casebus simulate` share
//! one definition (flatten it with `#[command(flatten)]`). [`SimConfig::validate`] checks
//! what clap cannot.
//!
//! No flag here clashes with the `casebus` CLI's global flags (`--nats-url`,
//! `--registry`, `--json`, `--quiet`).

use std::path::PathBuf;
use std::time::Duration;

use casebus_proto::OfficeId;
use casebus_proto::event::v1::Agency;

use crate::SimError;

/// One agency service to drive: the office it records for and its gRPC address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// The office the service records for, e.g. `customs:ningbo`.
    pub office: OfficeId,
    /// Its gRPC URL, e.g. `http://127.0.0.1:50061`.
    pub url: String,
}

impl std::str::FromStr for Target {
    type Err = String;

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        let (office, url) = value.split_once('=').ok_or_else(|| {
            format!("{value:?}: expected OFFICE=URL, e.g. customs:ningbo=http://127.0.0.1:50061")
        })?;
        let office = OfficeId::new(office.trim()).map_err(|e| format!("{value:?}: {e}"))?;
        let url = url.trim();
        let url = if url.contains("://") {
            url.to_owned()
        } else {
            format!("http://{url}")
        };
        let host = url
            .strip_prefix("http://")
            .or_else(|| url.strip_prefix("https://"));
        match host {
            None => return Err(format!("{value:?}: the URL must be http:// or https://")),
            Some("") => return Err(format!("{value:?}: the URL names no host")),
            Some(_) => {}
        }
        Ok(Self { office, url })
    }
}

/// Settings of one simulation run.
#[derive(Debug, Clone, clap::Args)]
pub struct SimConfig {
    /// An agency service to drive, as OFFICE=URL (repeat, or separate with commas in the
    /// environment variable). Every agency needs at least one: customs, ip_center,
    /// public_security, procuratorate and court.
    #[arg(
        long = "target",
        value_name = "OFFICE=URL",
        env = "CASEBUS_SIMULATOR_TARGETS",
        value_delimiter = ',',
        required = true
    )]
    pub targets: Vec<Target>,
    /// Token issuer key (from `casebus issuer generate`) the simulator signs a clerk
    /// token per office with; the services must trust the issuer.
    #[arg(long = "issuer-key", env = "CASEBUS_SIMULATOR_ISSUER_KEY")]
    pub issuer_key: PathBuf,
    /// Commands per second, over all cases together.
    #[arg(long, env = "CASEBUS_SIMULATOR_RATE", default_value_t = 10.0)]
    pub rate: f64,
    /// Cases to simulate; 0 keeps opening new ones until --duration ends or the
    /// simulator is stopped.
    #[arg(long, env = "CASEBUS_SIMULATOR_CASES", default_value_t = 20)]
    pub cases: u64,
    /// Seed of the random choices: the same seed gives the same cases, steps and data.
    #[arg(long, env = "CASEBUS_SIMULATOR_SEED", default_value_t = 1)]
    pub seed: u64,
    /// Stop after this long (e.g. 10m, 2h), even with cases left.
    #[arg(long, env = "CASEBUS_SIMULATOR_DURATION", value_parser = casebus_runtime::args::humantime_duration)]
    pub duration: Option<Duration>,
    /// Cases worked on at the same time.
    #[arg(long, env = "CASEBUS_SIMULATOR_CONCURRENCY", default_value_t = 8)]
    pub concurrency: usize,
    /// Share of cases (0 to 1) recorded as if they happened weeks ago and left waiting
    /// at a hand-off, so that hand-off is overdue.
    #[arg(
        long = "overdue-ratio",
        env = "CASEBUS_SIMULATOR_OVERDUE_RATIO",
        default_value_t = 0.15
    )]
    pub overdue_ratio: f64,
    /// Share of commands (0 to 1) sent twice with the same request id, as a client
    /// retrying after a lost answer does; the services answer the retry as a duplicate.
    #[arg(
        long = "retry-ratio",
        env = "CASEBUS_SIMULATOR_RETRY_RATIO",
        default_value_t = 0.02
    )]
    pub retry_ratio: f64,
    /// Prefix of the case ids (`<prefix>-00001` ...); default `sim<seed>-<start time>`,
    /// so runs never collide.
    #[arg(long = "case-prefix", env = "CASEBUS_SIMULATOR_CASE_PREFIX")]
    pub case_prefix: Option<String>,
    /// Ceiling for one gRPC call.
    #[arg(long = "call-timeout", env = "CASEBUS_SIMULATOR_CALL_TIMEOUT", default_value = "10s", value_parser = casebus_runtime::args::humantime_duration)]
    pub call_timeout: Duration,
    /// How long to wait for the receiving service's automatic receipt before accepting
    /// a hand-off anyway.
    #[arg(long = "receipt-wait", env = "CASEBUS_SIMULATOR_RECEIPT_WAIT", default_value = "3s", value_parser = casebus_runtime::args::humantime_duration)]
    pub receipt_wait: Duration,
}

/// The agencies a simulation needs, in the order cases meet them.
pub const AGENCIES: [Agency; 5] = [
    Agency::Customs,
    Agency::IpCenter,
    Agency::PublicSecurity,
    Agency::Procuratorate,
    Agency::Court,
];

impl SimConfig {
    /// A configuration with the defaults of the command line.
    pub fn new(targets: Vec<Target>, issuer_key: PathBuf) -> Self {
        Self {
            targets,
            issuer_key,
            rate: 10.0,
            cases: 20,
            seed: 1,
            duration: None,
            concurrency: 8,
            overdue_ratio: 0.15,
            retry_ratio: 0.02,
            case_prefix: None,
            call_timeout: Duration::from_secs(10),
            receipt_wait: Duration::from_secs(3),
        }
    }

    /// Checks the values clap cannot check.
    ///
    /// # Errors
    /// [`SimError::Config`] naming the flag and what is wrong.
    pub fn validate(&self) -> Result<(), SimError> {
        let bad = |key: &'static str, reason: String| Err(SimError::Config { key, reason });
        if !(self.rate > 0.0 && self.rate <= 10_000.0) {
            return bad("--rate", format!("{} is not in (0, 10000]", self.rate));
        }
        if !(1..=256).contains(&self.concurrency) {
            return bad(
                "--concurrency",
                format!("{} is not in 1..=256", self.concurrency),
            );
        }
        for (key, ratio) in [
            ("--overdue-ratio", self.overdue_ratio),
            ("--retry-ratio", self.retry_ratio),
        ] {
            if !(0.0..=1.0).contains(&ratio) {
                return bad(key, format!("{ratio} is not in [0, 1]"));
            }
        }
        if let Some(prefix) = &self.case_prefix
            && (prefix.is_empty()
                || prefix.len() > 40
                || !prefix
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'))
        {
            return bad(
                "--case-prefix",
                format!("{prefix:?} must be 1-40 chars of [A-Za-z0-9_-]"),
            );
        }
        for agency in AGENCIES {
            if !self.targets.iter().any(|t| t.office.agency() == agency) {
                return bad(
                    "--target",
                    format!(
                        "no {} service given; every agency needs one",
                        casebus_proto::agency_name(agency)
                    ),
                );
            }
        }
        let mut offices: Vec<&OfficeId> = self.targets.iter().map(|t| &t.office).collect();
        offices.sort();
        if let Some(w) = offices.windows(2).find(|w| w[0] == w[1]) {
            return bad("--target", format!("office {} is given twice", w[0]));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn targets() -> Vec<Target> {
        [
            "customs:ningbo=127.0.0.1:1",
            "ip_center:zhejiang=http://127.0.0.1:2",
            "public_security:ningbo=http://127.0.0.1:3",
            "procuratorate:ningbo=http://127.0.0.1:4",
            "court:hangzhou-ip=http://127.0.0.1:5",
        ]
        .iter()
        .map(|t| t.parse().expect("target"))
        .collect()
    }

    #[test]
    fn a_target_is_an_office_and_a_url_with_http_assumed() {
        let t: Target = "customs:ningbo=127.0.0.1:50061".parse().expect("target");
        assert_eq!(t.office.as_str(), "customs:ningbo");
        assert_eq!(t.url, "http://127.0.0.1:50061");
        assert!("customs:ningbo".parse::<Target>().is_err());
        assert!("nobody=http://x".parse::<Target>().is_err());
        assert!("customs:ningbo=ftp://x".parse::<Target>().is_err());
        assert!("customs:ningbo=http://".parse::<Target>().is_err());
    }

    #[test]
    fn every_agency_needs_a_target() {
        let mut config = SimConfig::new(targets(), "issuer.key".into());
        config.validate().expect("valid");
        config.targets.pop();
        let err = config.validate().expect_err("court missing");
        assert!(err.to_string().contains("court"), "{err}");
    }

    #[test]
    fn rates_ratios_and_prefixes_are_bounded() {
        let base = SimConfig::new(targets(), "issuer.key".into());
        let mut c = base.clone();
        c.rate = 0.0;
        assert!(c.validate().is_err());
        let mut c = base.clone();
        c.overdue_ratio = 1.5;
        assert!(c.validate().is_err());
        let mut c = base.clone();
        c.case_prefix = Some("a.b".into());
        assert!(c.validate().is_err());
        let mut c = base;
        c.targets
            .push("customs:ningbo=http://x:1".parse().expect("target"));
        assert!(c.validate().is_err());
    }
}
