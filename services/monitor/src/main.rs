//! `casebus-monitor`: the administrators' dashboard. Parses the configuration, installs
//! logging, runs the monitor until SIGINT/SIGTERM (a second signal exits at once), and
//! reports start-up failures with their context. Everything else lives in the modules.

mod app;
mod collect;
mod config;
mod metrics;
mod model;
mod overdue;
mod web;

use anyhow::Context as _;
use clap::Parser as _;

use casebus_runtime::{shutdown, telemetry};

use crate::config::Config;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = Config::parse();
    telemetry::init(config.process.log_format);
    let shutdown = shutdown::on_signal();
    app::run(config, shutdown).await.context("casebus-monitor")
}
