//! `casebus-simulator`: runs the workload simulator (the `casebus-simulator` library)
//! against the agency services until its cases are done, `--duration` has passed, or
//! SIGINT/SIGTERM arrives, then prints the report. Exit code 1 when cases failed.

use std::process::ExitCode;

use anyhow::Context as _;
use clap::Parser as _;

use casebus_runtime::args::ProcessArgs;
use casebus_runtime::{shutdown, telemetry};
use casebus_simulator::SimConfig;

/// Drive the casebus agency services with a realistic workload: IP cases moving from
/// customs through the IP center, the police and the procuratorate to the court, with
/// some hand-offs left overdue.
#[derive(Debug, clap::Parser)]
#[command(name = "casebus-simulator", version)]
struct Cli {
    /// The simulation.
    #[command(flatten)]
    sim: SimConfig,
    /// Print the report as JSON.
    #[arg(long, env = "CASEBUS_SIMULATOR_JSON")]
    json: bool,
    /// Logging and shutdown.
    #[command(flatten)]
    process: ProcessArgs,
}

#[tokio::main]
async fn main() -> anyhow::Result<ExitCode> {
    let cli = Cli::parse();
    telemetry::init(cli.process.log_format);
    let stop = shutdown::on_signal();
    let report = casebus_simulator::run(cli.sim, stop)
        .await
        .context("casebus-simulator")?;
    if cli.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&report).context("rendering the report")?
        );
    } else {
        println!("{report}");
    }
    Ok(if report.cases_failed > 0 {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}
