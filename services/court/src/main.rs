//! `casebus-court`: the court agency service. It parses its configuration, installs
//! logging, starts the agency kit with the court API and serves until SIGINT or
//! SIGTERM. Everything else lives in `casebus-agency`.

use anyhow::Context as _;

use casebus_agency::{AgencyConfig, Court, Service};
use casebus_runtime::{shutdown, telemetry};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = AgencyConfig::parse_for::<Court>();
    telemetry::init(config.process.log_format);
    let shutdown = shutdown::on_signal();
    let office = config.office.clone();
    let service = Service::start::<Court>(config)
        .await
        .with_context(|| format!("starting casebus-court for office {office}"))?;
    service
        .run(shutdown)
        .await
        .with_context(|| format!("running casebus-court for office {office}"))?;
    Ok(())
}
