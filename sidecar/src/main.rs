//! `toygres-sidecar`: the agent inside every Postgres pod.

mod api;
mod archive;
mod backup;
mod bootstrap;
mod config;
mod fleet;
mod notify;
mod objstore;
mod owned;
mod postgres;
mod restore;

use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use clap::{Parser, Subcommand};
use toygres_common::tls::listen::TlsListener;

#[derive(Parser)]
#[command(
    name = "toygres-sidecar",
    version,
    about = "The Toygres pod agent: owns one Postgres"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Bootstrap (when the data directory is empty), supervise Postgres and serve the API.
    Run(Box<config::RunArgs>),
    /// Archive one WAL file to the object store (Postgres's archive_command).
    WalPush(archive::WalPushArgs),
    /// Restore one WAL file from the object store (Postgres's restore_command); exits 1 quietly
    /// when the archive does not hold it.
    WalFetch(archive::WalFetchArgs),
    /// Keep waiting WAL files uploading ahead of Postgres's archive_command, until SIGTERM (what
    /// `run` does beside a primary; for Postgres run with wal-push but without this sidecar).
    WalPushAhead(archive::ahead::WalPushAheadArgs),
    /// A test double: the sidecar API of many simulated members, for fleet benchmarks.
    #[command(hide = true)]
    Fleet(fleet::FleetArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        // Compression (backups, WAL uploaded ahead) runs here beside file I/O: room for both.
        .max_blocking_threads(8)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = match cli.command {
        Command::Run(args) => runtime.block_on(run(*args)),
        Command::Fleet(args) => runtime.block_on(fleet::run(args)),
        Command::WalPush(args) => return runtime.block_on(archive::push::run(args)),
        Command::WalFetch(args) => return runtime.block_on(archive::fetch::wal_fetch(args)),
        Command::WalPushAhead(args) => runtime.block_on(archive::ahead::run_process(args)),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: config::RunArgs) -> anyhow::Result<()> {
    let config::Config {
        api_addr,
        api_token,
        tls_dir,
        member: settings,
        bootstrap,
        notify,
        report_instance,
    } = config::Config::from_args(args)?;
    let socket =
        std::net::TcpListener::bind(api_addr).with_context(|| format!("listen on {api_addr}"))?;
    socket
        .set_nonblocking(true)
        .context("make the API socket non-blocking")?;
    let token: Arc<str> = api_token.0.into();
    let files = toygres_common::tls::MemberTlsFiles::new(tls_dir);
    let tls = toygres_common::tls::https::ServedCert::load(files.server_cert(), files.server_key())
        .map_err(anyhow::Error::msg)
        .context("use the server certificate of --tls-dir for the API")?
        .server_config()
        .context("serve TLS on the API")?;
    tracing::info!(member = %settings.member_name, data_dir = %settings.data_dir.display(), addr = %socket.local_addr()?, "starting");

    // The API serves HTTPS only, with this member's certificate from the instance's CA.
    // Until Postgres is bootstrapped and started, a minimal API answers on the same socket:
    // liveness succeeds (a long pg_basebackup must not get the pod killed), the rest is 503.
    let early = TlsListener::new(
        tokio::net::TcpListener::from_std(socket.try_clone().context("duplicate the API socket")?)?,
        tls.clone(),
    )?;
    let (started_tx, started_rx) = tokio::sync::oneshot::channel::<()>();
    let failure = api::server::BootstrapFailure::default();
    let early_app = api::server::starting_app(failure.clone(), token.clone());
    let early_api = tokio::spawn(async move {
        axum::serve(early, early_app)
            .with_graceful_shutdown(async {
                let _ = started_rx.await;
            })
            .await
    });
    let mut stop = Box::pin(shutdown_signal());
    let member = tokio::select! {
        member = bootstrap::open_member(settings, &bootstrap) => match member {
            Ok(member) => member,
            Err(e) if matches!(bootstrap, bootstrap::BootstrapMode::Restore(_)) => {
                // Retrying would fail the same way (a wrong key, a target the archive does not
                // reach): say why to the controller, which stops waiting, until stopped.
                tracing::error!("the restore failed: {e:#}");
                let _ = failure.set(format!("{e:#}"));
                stop.await;
                return Err(e);
            }
            Err(e) => return Err(e),
        },
        _ = &mut stop => {
            tracing::info!("stop requested while starting");
            return Ok(());
        }
    };
    let _ = started_tx.send(());
    let _ = early_api.await;

    if let Some(notifier) = notify {
        member.set_notifier(notifier);
    }
    tokio::spawn(member.clone().supervise());
    tokio::spawn(member.clone().watch_isolation());
    tokio::spawn(member.clone().watch_upstream());
    tokio::spawn(member.clone().archive_ahead());
    tokio::spawn(member.clone().watch_certificates(files.dir.clone()));
    let state = api::AppState {
        member: member.clone(),
        report_instance: report_instance.into(),
        token,
        api_metrics: Arc::new(api::requests::ApiMetrics::default()),
    };
    tracing::info!("API serving");
    let listener = TlsListener::new(tokio::net::TcpListener::from_std(socket)?, tls)?;
    axum::serve(listener, api::app(state))
        .with_graceful_shutdown(stop)
        .await
        .context("serve the API")?;
    tracing::info!("shutting down: stopping postgres");
    member.shutdown().await;
    tracing::info!("stopped");
    Ok(())
}

/// Resolves on SIGTERM or SIGINT.
async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("install the SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("install the SIGINT handler");
    tokio::select! {
        _ = term.recv() => {},
        _ = int.recv() => {},
    }
}
