//! `casebus-gateway`: parses the configuration, installs logging, runs the gateway until
//! SIGINT/SIGTERM (a second signal exits at once), and reports start-up failures with
//! their context.

use anyhow::Context as _;
use clap::Parser as _;

use casebus_gateway::config::Config;
use casebus_runtime::{shutdown, telemetry};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = Config::parse();
    telemetry::init(config.process.log_format);
    let shutdown = shutdown::on_signal();
    casebus_gateway::app::run(config, shutdown)
        .await
        .context("casebus-gateway")
}
