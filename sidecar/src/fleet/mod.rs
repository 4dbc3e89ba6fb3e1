//! `toygres-sidecar fleet`: a test double that answers the sidecar API for many simulated
//! members from one process, so a controller can create, health-check and fail over hundreds of
//! instances on one machine (issue 17's benchmark). Nothing runs Postgres: each member is a few
//! fields ([`sim`]) that behave as a real member would (a promoted standby is a primary on a new
//! timeline, a fenced primary stops, a standby streams from whoever it follows).
//!
//! One listener serves every member: member `db-0`'s API is at `/m/db-0` (so its `GET
//! /v1/status` is `/m/db-0/v1/status`), behind the instance's sidecar token. The controller's
//! `fleet-sim` platform registers members under `/fleet/members` (loopback only; unauthenticated,
//! as a test tool).

mod routes;
pub mod sim;

use std::net::SocketAddr;

use anyhow::Context as _;

/// `toygres-sidecar fleet`.
#[derive(Debug, Clone, clap::Args)]
pub struct FleetArgs {
    /// Where the simulated members' APIs listen (a loopback address)
    #[arg(long, default_value = "127.0.0.1:0")]
    pub listen: SocketAddr,
    /// Write the listening URL to this file once serving
    #[arg(long, value_name = "FILE")]
    pub url_file: Option<std::path::PathBuf>,
}

pub use sim::SharedFleet;

/// Serves the simulated fleet until SIGTERM or Ctrl-C.
pub async fn run(args: FleetArgs) -> anyhow::Result<()> {
    if !args.listen.ip().is_loopback() {
        anyhow::bail!(
            "the simulated fleet listens on loopback only, not {}",
            args.listen
        );
    }
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("listen on {}", args.listen))?;
    let url = format!("http://{}", listener.local_addr()?);
    if let Some(path) = &args.url_file {
        std::fs::write(path, format!("{url}\n"))
            .with_context(|| format!("write {}", path.display()))?;
    }
    tracing::info!("the simulated fleet listens on {url}");
    let fleet = SharedFleet::default();
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    axum::serve(listener, routes::app(fleet))
        .with_graceful_shutdown(async move {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        })
        .await
        .context("serve the simulated fleet")
}
