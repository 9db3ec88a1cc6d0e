//! `casebus-public-security`: the public security agency service. It parses its configuration, installs
//! logging, starts the agency kit with the public security API and serves until SIGINT or
//! SIGTERM. Everything else lives in `casebus-agency`.

use anyhow::Context as _;

use casebus_agency::{AgencyConfig, PublicSecurity, Service};
use casebus_runtime::{shutdown, telemetry};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = AgencyConfig::parse_for::<PublicSecurity>();
    telemetry::init(config.process.log_format);
    let shutdown = shutdown::on_signal();
    let office = config.office.clone();
    let service = Service::start::<PublicSecurity>(config)
        .await
        .with_context(|| format!("starting casebus-public-security for office {office}"))?;
    service
        .run(shutdown)
        .await
        .with_context(|| format!("running casebus-public-security for office {office}"))?;
    Ok(())
}
