//! The `toygres` binary: `toygres controller` runs the controller; the other subcommands are
//! clients of its API.

use std::io::IsTerminal as _;
use std::path::Path;
use std::process::ExitCode;

use clap::Parser as _;
use toygres_controller::cli::{self, Cli, Command};
use toygres_controller::config::{load_dotenv, ControllerConfig};
use toygres_controller::controller;
use tracing_subscriber::EnvFilter;

fn main() -> ExitCode {
    // Before any thread exists: this sets environment variables.
    if let Err(e) = load_dotenv(Path::new(".env")) {
        eprintln!("toygres: {e:#}");
        return ExitCode::FAILURE;
    }
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("toygres: start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match cli.command {
        Command::Controller(args) => {
            init_logging();
            let result = ControllerConfig::from_args(args, std::env::var_os("HOME"))
                .map_err(anyhow::Error::from)
                .and_then(|config| runtime.block_on(controller::run(config)));
            match result {
                Ok(()) => {
                    tracing::info!("the controller stopped");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    tracing::error!("{e:#}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::List(args) => finish(runtime.block_on(cli::list::run(args))),
        Command::Create(args) => finish(runtime.block_on(cli::instances::create(args))),
        Command::Get(args) => finish(runtime.block_on(cli::instances::get(args))),
        Command::Delete(args) => finish(runtime.block_on(cli::instances::delete(args))),
        Command::Operation(args) => finish(runtime.block_on(cli::operation::run(args))),
        Command::Replication(args) => finish(runtime.block_on(cli::replication::run(args))),
        Command::Ha(args) => finish(runtime.block_on(cli::ha::run(args))),
        Command::Ro(args) => finish(runtime.block_on(cli::ro::run(args))),
        Command::Stats(args) => finish(runtime.block_on(cli::stats::run(args))),
        Command::Events(args) => finish(runtime.block_on(cli::events::run(args))),
        Command::Backup(args) => finish(runtime.block_on(cli::backup::run(args))),
        Command::Restore(args) => finish(runtime.block_on(cli::backup::restore(args))),
        Command::Secret(args) => finish(runtime.block_on(cli::secret::run(args))),
        Command::Params(args) => finish(runtime.block_on(cli::params::run(args))),
        Command::Psql(args) => finish(runtime.block_on(cli::connect::psql(args))),
        Command::Connect(args) => finish(runtime.block_on(cli::connect::connect(args))),
    }
}

/// The exit code of a client subcommand, printing its error.
fn finish(result: anyhow::Result<()>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("Error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Logs to stderr, filtered by `RUST_LOG` (default `info`).
fn init_logging() {
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("info,sqlx::postgres::notice=warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
}
