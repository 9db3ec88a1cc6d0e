//! `casebus-customs`: the customs agency service. It parses its configuration, installs
//! logging, starts the agency kit with the customs API and serves until SIGINT or
//! SIGTERM. Everything else lives in `casebus-agency`.

use anyhow::Context as _;

use casebus_agency::{AgencyConfig, Customs, Service};
use casebus_runtime::{shutdown, telemetry};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = AgencyConfig::parse_for::<Customs>();
    telemetry::init(config.process.log_format);
    let shutdown = shutdown::on_signal();
    let office = config.office.clone();
    let service = Service::start::<Customs>(config)
        .await
        .with_context(|| format!("starting casebus-customs for office {office}"))?;
    service
        .run(shutdown)
        .await
        .with_context(|| format!("running casebus-customs for office {office}"))?;
    Ok(())
}
