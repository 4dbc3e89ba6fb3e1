//! `toygres controller`: starts the embedded CMS (or connects to the one `DATABASE_URL` names),
//! brings its schema up to date, serves the API until SIGTERM or SIGINT, then stops the API and
//! the embedded CMS in that order.

use std::future::IntoFuture as _;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use tokio::net::TcpListener;
use toygres_common::pg_exec::PgBinaries;

use crate::api::{self, ApiState};
use crate::cms::embedded::{EmbeddedCms, READY_TIMEOUT};
use crate::cms::{self, migrate, Cms};
use crate::config::{describe_cms, CmsLocation, ControllerConfig};
use crate::home::{listen_url, remove_addr_file, write_file_atomically};
use crate::shutdown::ShutdownSignals;
use crate::token::ApiToken;

/// How long in-flight requests may take to finish once shutdown starts.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// Runs the controller until a shutdown signal (returns `Ok`) or a failure (returns the error).
pub async fn run(config: ControllerConfig) -> anyhow::Result<()> {
    let mut signals = ShutdownSignals::install().context("listen for shutdown signals")?;
    match &config.cms {
        CmsLocation::External(cms_config) => {
            config.home.create(false)?;
            let token = ApiToken::load_or_create(&config.token_file)?;
            tracing::info!("using the CMS at {}", describe_cms(cms_config));
            serve(&config, (**cms_config).clone(), token, &mut signals, None).await
        }
        CmsLocation::Embedded { pg_bin_dir } => {
            let pg = PgBinaries::locate(pg_bin_dir.as_deref())?;
            config.home.create(pg.run_as.is_some())?;
            let token = ApiToken::load_or_create(&config.token_file)?;
            let cms = EmbeddedCms::start(config.home.cms_dir(), &pg).await?;
            let result = run_with_embedded(&config, &cms, token, &mut signals).await;
            let stopped = cms.stop().await;
            match (result, stopped) {
                (Err(e), Err(stop_error)) => {
                    tracing::error!("stop the embedded CMS: {stop_error:#}");
                    Err(e)
                }
                (result, stopped) => result.and(stopped),
            }
        }
    }
}

async fn run_with_embedded(
    config: &ControllerConfig,
    cms: &EmbeddedCms,
    token: ApiToken,
    signals: &mut ShutdownSignals,
) -> anyhow::Result<()> {
    tokio::select! {
        ready = cms.wait_ready(READY_TIMEOUT) => ready?,
        signal = signals.recv() => {
            tracing::info!("{signal} received while the CMS was starting; stopping");
            return Ok(());
        }
    }
    cms.ensure_database(cms::DATABASE).await?;
    let cms_config = cms.connect_config(cms::DATABASE);
    serve(config, cms_config, token, signals, Some(cms)).await
}

/// Migrates the CMS, binds the API, and serves it until a signal or the embedded CMS's death.
async fn serve(
    config: &ControllerConfig,
    cms_config: tokio_postgres::Config,
    token: ApiToken,
    signals: &mut ShutdownSignals,
    embedded: Option<&EmbeddedCms>,
) -> anyhow::Result<()> {
    let mut client = cms::connect(&cms_config)
        .await
        .with_context(|| format!("connect to the CMS at {}", describe_cms(&cms_config)))?;
    let applied = migrate::apply(&mut client).await?;
    if applied.is_empty() {
        tracing::info!("the CMS schema is up to date");
    }
    drop(client);

    let listener = TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("listen on {}", config.listen))?;
    let url = listen_url(
        listener
            .local_addr()
            .context("read the API's listening address")?,
    );
    let addr_file = config.home.addr_file();
    write_file_atomically(&addr_file, &format!("{url}\n"), 0o644)?;
    tracing::info!("the controller API listens on {url}");

    let state = ApiState {
        cms: Arc::new(Cms::new(cms_config)),
        token: Arc::new(token),
    };
    let (drain_tx, drain_rx) = tokio::sync::oneshot::channel::<()>();
    let mut server = tokio::spawn(
        axum::serve(listener, api::app(state))
            .with_graceful_shutdown(async {
                let _ = drain_rx.await;
            })
            .into_future(),
    );
    let cms_exited = async {
        match embedded {
            Some(cms) => cms.exited().await,
            None => std::future::pending().await,
        }
    };
    let outcome = tokio::select! {
        signal = signals.recv() => {
            tracing::info!("{signal} received; shutting down");
            Ok(())
        }
        status = cms_exited => Err(anyhow::anyhow!("the embedded CMS Postgres exited unexpectedly ({status})")),
        served = &mut server => Err(match served {
            Ok(Ok(())) => anyhow::anyhow!("the API server stopped unexpectedly"),
            Ok(Err(e)) => anyhow::Error::new(e).context("serve the API"),
            Err(e) => anyhow::Error::new(e).context("serve the API"),
        }),
    };
    let _ = drain_tx.send(());
    if !server.is_finished() {
        match tokio::time::timeout(DRAIN_TIMEOUT, &mut server).await {
            Ok(_) => {}
            Err(_) => {
                tracing::warn!("requests still running after {DRAIN_TIMEOUT:?}; dropping them");
                server.abort();
            }
        }
    }
    remove_addr_file(&addr_file, &url);
    outcome
}
