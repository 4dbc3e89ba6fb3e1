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
    if !matches!(cli.command, Command::Controller(_)) {
        end_quietly_when_stdout_closes();
    }
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
                .and_then(|config| {
                    // duroxide-pg reads its pool size only from the environment. Set here,
                    // before the controller starts anything on the (still idle) runtime.
                    std::env::set_var(
                        "DUROXIDE_PG_POOL_MAX",
                        config.capacity.store_pool_max.to_string(),
                    );
                    runtime.block_on(controller::run(config))
                });
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
        Command::Credentials(args) => finish(runtime.block_on(cli::credentials::run(args))),
    }
}

/// The exit status of a program killed by SIGPIPE, as shells report it (128 + 13).
const BROKEN_PIPE_STATUS: i32 = 141;

/// A client's output going to a reader that stopped reading (`toygres get X | head -1`) ends
/// the client quietly with status 141, as SIGPIPE ends other tools, instead of a panic
/// message. Rust ignores SIGPIPE, so `println!` panics on the broken pipe; this hook catches
/// exactly that panic (stdout, `EPIPE`) and leaves every other panic to the default hook. Only
/// the client subcommands get it: the controller's handling of closed sockets stays as it is.
fn end_quietly_when_stdout_closes() {
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let message = info
            .payload()
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| info.payload().downcast_ref::<&str>().copied())
            .unwrap_or_default();
        if is_broken_stdout(message) {
            std::process::exit(BROKEN_PIPE_STATUS);
        }
        default_hook(info);
    }));
}

/// Whether a panic message is `print!`'s on a closed stdout (the OS error number, not its
/// text, which could be localized).
fn is_broken_stdout(message: &str) -> bool {
    message.starts_with("failed printing to stdout")
        && message.contains(&format!("(os error {})", nix::libc::EPIPE))
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
