//! `casebus-procuratorate`: the procuratorate agency service. It parses its configuration, installs
//! logging, starts the agency kit with the procuratorate API and serves until SIGINT or
//! SIGTERM. Everything else lives in `casebus-agency`.

use anyhow::Context as _;

use casebus_agency::{AgencyConfig, Procuratorate, Service};
use casebus_runtime::{shutdown, telemetry};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = AgencyConfig::parse_for::<Procuratorate>();
    telemetry::init(config.process.log_format);
    let shutdown = shutdown::on_signal();
    let office = config.office.clone();
    let service = Service::start::<Procuratorate>(config)
        .await
        .with_context(|| format!("starting casebus-procuratorate for office {office}"))?;
    service
        .run(shutdown)
        .await
        .with_context(|| format!("running casebus-procuratorate for office {office}"))?;
    Ok(())
}
