//! `casebus`, the operator tool of the casebus record: inspect, verify, replay and repair
//! the streams, export evidence bundles, manage keys and tokens. Every subcommand has
//! `--help` with an example; `--json` gives machine output; the exit codes (0 ok, 1
//! problems found, 2 bad arguments, 3 NATS unavailable or runtime error) are documented
//! in `--help` and the README.
//!
//! This file only parses the command line, sets up logging and the runtime, and maps
//! the outcome to an exit code; the commands live in `commands/`.

mod bundle;
mod cli;
mod commands;
mod context;
mod decode;
mod error;
mod gateway_client;
mod output;
mod proofs;
mod times;
mod verifier;

use std::process::ExitCode;

use clap::Parser as _;

use crate::cli::Cli;
use crate::context::Ctx;
use crate::error::{EXIT_RUNTIME, ErrorKind};

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            // clap prints usage errors to stderr (exit 2) and --help/--version to
            // stdout (exit 0).
            let _ = e.print();
            return ExitCode::from(u8::try_from(e.exit_code()).unwrap_or(2));
        }
    };
    init_logging();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(EXIT_RUNTIME);
        }
    };
    let ctx = Ctx::new(cli.global.clone());
    let result = runtime.block_on(commands::run(&ctx, cli.command));
    // Whatever is still in flight (a scan consumer's deletion) may go.
    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
    match result {
        Ok(outcome) => ExitCode::from(outcome.exit_code()),
        Err(e) => {
            if e.kind() != ErrorKind::BrokenPipe {
                eprintln!("error: {e}");
            }
            ExitCode::from(e.exit_code())
        }
    }
}

/// Logs go to standard error, silent unless `RUST_LOG` asks (`RUST_LOG=debug casebus
/// ...` shows the NATS traffic of the library).
fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("off"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .try_init();
}
