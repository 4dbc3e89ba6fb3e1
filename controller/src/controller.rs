//! `toygres controller`: starts the embedded CMS (or connects to the one `DATABASE_URL` names),
//! brings its schema up to date, takes over the local platform's pods and endpoints, starts the
//! durable engine (its store in the CMS database), serves the API until SIGTERM or SIGINT, then
//! stops the API, the engine, the endpoints and the embedded CMS in that order. The instances'
//! pods keep running: a controller stop never stops an instance.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use tokio::net::TcpListener;
use toygres_common::pg_exec::PgBinaries;

use crate::api::{self, ApiState};
use crate::cms::embedded::{EmbeddedCms, READY_TIMEOUT};
use crate::cms::{self, migrate, Cms};
use crate::config::{describe_cms, CmsLocation, ControllerConfig};
use crate::engine::{open_store, Engine, EngineSettings};
use crate::home::{listen_url, remove_addr_file, write_file_atomically};
use crate::metrics::ControllerMetrics;
use crate::orchestrations::instance_actor::ActorSettings;
use crate::platform::fleet_sim::FleetSimPlatform;
use crate::platform::kubernetes::args::PlatformKind;
use crate::platform::kubernetes::leader::{self, LeaderLease, Leadership};
use crate::platform::kubernetes::platform::{cluster_client, KubernetesPlatform};
use crate::platform::local::{LocalPlatform, LocalPlatformConfig, NotifySetting};
use crate::platform::Platform;
use crate::shutdown::ShutdownSignals;
use crate::token::ApiToken;

/// How long in-flight requests may take to finish once shutdown starts.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// How often the controller checks that every running instance has a live actor.
const ACTOR_WATCH_INTERVAL: Duration = Duration::from_secs(30);

/// How long running orchestration steps may take to finish once shutdown starts.
const ENGINE_STOP_TIMEOUT: Duration = Duration::from_secs(5);

/// Runs the controller until a shutdown signal (returns `Ok`) or a failure (returns the error).
pub async fn run(config: ControllerConfig) -> anyhow::Result<()> {
    let mut signals = ShutdownSignals::install().context("listen for shutdown signals")?;
    // The API's port is taken first, before the embedded CMS chooses its own: a port freed just
    // before (one a caller picked for --listen) cannot go to Postgres in between.
    let listener = bind_api(config.listen)?;
    match &config.cms {
        CmsLocation::External(cms_config) => {
            // Root runs Postgres as the postgres OS user, which must reach the members' data.
            config
                .home
                .create(nix::unistd::Uid::effective().is_root())?;
            let token = ApiToken::load_or_create(&config.token_file)?;
            tracing::info!("using the CMS at {}", describe_cms(cms_config));
            let Some(url) = config.database_url.clone() else {
                anyhow::bail!("an external CMS needs DATABASE_URL");
            };
            let store_url = url.expose().to_string();
            serve(
                &config,
                (**cms_config).clone(),
                store_url,
                token,
                &mut signals,
                listener,
                None,
            )
            .await
        }
        CmsLocation::Embedded { pg_bin_dir } => {
            let pg = PgBinaries::locate(pg_bin_dir.as_deref())?;
            config.home.create(pg.run_as.is_some())?;
            let token = ApiToken::load_or_create(&config.token_file)?;
            let api_port = listener
                .local_addr()
                .context("read the API's address")?
                .port();
            let cms = EmbeddedCms::start(config.home.cms_dir(), &pg, api_port).await?;
            let result = run_with_embedded(&config, &cms, token, &mut signals, listener).await;
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
    listener: std::net::TcpListener,
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
    let store_url = socket_url(&cms.paths().run, cms.port(), cms::DATABASE);
    serve(
        config,
        cms_config,
        store_url,
        token,
        signals,
        listener,
        Some(cms),
    )
    .await
}

/// Binds the API's address (non-blocking, for tokio).
fn bind_api(listen: std::net::SocketAddr) -> anyhow::Result<std::net::TcpListener> {
    let listener =
        std::net::TcpListener::bind(listen).with_context(|| format!("listen on {listen}"))?;
    listener
        .set_nonblocking(true)
        .with_context(|| format!("listen on {listen}"))?;
    Ok(listener)
}

/// A `postgres://` URL for sqlx (the duroxide store) that reaches `dbname` as the superuser over
/// the Unix socket in `socket_dir` (trusted: no password in the URL).
pub fn socket_url(socket_dir: &std::path::Path, port: u16, dbname: &str) -> String {
    let mut host = String::new();
    for byte in socket_dir.as_os_str().as_encoded_bytes() {
        match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'/' | b'_' | b'.' | b'-' => {
                host.push(char::from(*byte))
            }
            other => host.push_str(&format!("%{other:02X}")),
        }
    }
    format!("postgres://postgres@localhost:{port}/{dbname}?host={host}")
}

/// Makes sure every running instance has its actor: at once, then every [`ACTOR_WATCH_INTERVAL`]
/// (an actor that ended for any reason gets a successor).
fn spawn_actor_watch(engine: Arc<Engine>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval(ACTOR_WATCH_INTERVAL);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            if let Err(e) = engine.ensure_actors().await {
                tracing::error!("make sure every instance has its actor: {e:#}");
            }
            if let Err(e) = engine.ensure_backup_schedules().await {
                tracing::error!("make sure every instance has its backup schedule: {e:#}");
            }
        }
    })
}

/// Migrates the CMS, takes over the platform, starts the engine, and serves the API on
/// `listener` until a signal, supervising the embedded CMS (if any) meanwhile.
async fn serve(
    config: &ControllerConfig,
    cms_config: tokio_postgres::Config,
    store_url: String,
    token: ApiToken,
    signals: &mut ShutdownSignals,
    listener: std::net::TcpListener,
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

    if let Some(lifetime) = config.cert_lifetime {
        toygres_common::tls::pki::set_leaf_lifetime(lifetime);
    }
    let tls = crate::api_tls::prepare(&config.api_tls, &config.home, config.listen)?;
    let _api_cert_renewal = crate::api_tls::spawn_renewal(
        &config.api_tls,
        &config.home,
        config.listen,
        config.supervise_interval,
    );
    let lease = match become_active(config, tls.as_ref(), signals, &listener).await? {
        Standing::Stopped => return Ok(()),
        Standing::Alone => None,
        Standing::Active(lease, leadership) => Some((lease, leadership)),
    };
    let (lease, lease_holder, lease_lost) = match lease {
        Some((lease, leadership)) => {
            let (holder, lost) = leader::spawn_holder(Arc::clone(&lease), leadership);
            (Some(lease), Some(holder), Some(lost))
        }
        None => (None, None, None),
    };

    let platform = start_platform(config, tls.as_ref()).await?;

    let cms = Arc::new(Cms::with_connections(
        cms_config,
        config.capacity.cms_connections,
    ));
    let metrics = Arc::new(ControllerMetrics::default());
    let capacity = &config.capacity;
    tracing::info!(
        orchestration_slots = capacity.orchestration_slots,
        activity_slots = capacity.activity_slots,
        store_pool_max = capacity.store_pool_max,
        cms_connections = capacity.cms_connections,
        "durable capacity"
    );
    let store = open_store(&store_url).await?;
    let settings = EngineSettings {
        poll_interval: config.poll_interval,
        actor: ActorSettings {
            health_interval_ms: u64::try_from(config.health_interval.as_millis()).unwrap_or(5000),
            ..ActorSettings::default()
        },
        probe_timeout: config.health_timeout,
        fast_path: config.health_fast_path,
        default_backup: config.default_backup.clone(),
        orchestration_slots: config.capacity.orchestration_slots,
        activity_slots: config.capacity.activity_slots,
    };
    let dyn_platform: Arc<dyn Platform> = platform.shared();
    let engine = Arc::new(
        Engine::start(
            store,
            Arc::clone(&dyn_platform),
            Arc::clone(&cms),
            Arc::clone(&metrics),
            settings,
        )
        .await?,
    );
    if let Err(e) = engine.resume_pending_operations().await {
        tracing::error!("resume the pending operations: {e:#}");
    }
    let actor_watch = spawn_actor_watch(Arc::clone(&engine));

    let listener =
        TcpListener::from_std(listener).with_context(|| format!("listen on {}", config.listen))?;
    let url = listen_url(
        listener
            .local_addr()
            .context("read the API's listening address")?,
        tls.is_some(),
    );
    let addr_file = config.home.addr_file();
    write_file_atomically(&addr_file, &format!("{url}\n"), 0o644)?;
    tracing::info!("the controller API listens on {url}");

    let state = ApiState {
        cms,
        token: Arc::new(token),
        engine: Some(Arc::clone(&engine)),
        platform: Some(dyn_platform),
        metrics,
        endpoint_host: "127.0.0.1".into(),
        reports: Default::default(),
    };
    let (drain_tx, drain_rx) = tokio::sync::oneshot::channel::<()>();
    let mut server = tokio::spawn(crate::api_tls::serve(
        listener,
        tls.as_ref(),
        api::app(state),
        async {
            let _ = drain_rx.await;
        },
    )?);
    // The embedded CMS is started again whenever it dies; the API and the engine ride out the
    // gap (their connections reopen), and /healthz answers 503 meanwhile.
    let cms_supervision = async {
        match embedded {
            Some(cms) => cms.supervise().await,
            None => std::future::pending().await,
        }
    };
    let outcome = tokio::select! {
        signal = signals.recv() => {
            tracing::info!("{signal} received; shutting down");
            Ok(())
        }
        never = cms_supervision => match never {},
        why = async {
            match lease_lost {
                Some(lost) => lost.await,
                None => std::future::pending().await,
            }
        } => Err(match why {
            Ok(why) => why.context("this controller is no longer the active one; stopping so that one acts at a time"),
            Err(_) => anyhow::anyhow!("the lease holder stopped"),
        }),
        served = &mut server => Err(match served {
            Ok(Ok(())) => anyhow::anyhow!("the API server stopped unexpectedly"),
            Ok(Err(e)) => anyhow::Error::new(e).context("serve the API"),
            Err(e) => anyhow::Error::new(e).context("serve the API"),
        }),
    };
    actor_watch.abort();
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
    engine.shutdown(ENGINE_STOP_TIMEOUT).await;
    platform.shutdown().await;
    if let Some(holder) = lease_holder {
        holder.abort();
    }
    // A clean stop hands over at once; after a lost lease there is nothing to release.
    if let (Some(lease), Ok(())) = (lease, &outcome) {
        lease.release().await;
    }
    outcome
}

/// Where this controller stands before it may act.
enum Standing {
    /// No election (the local platform, or `--leader-election=false`).
    Alone,
    /// It holds the Lease.
    Active(Arc<LeaderLease>, Leadership),
    /// A shutdown signal came while it waited.
    Stopped,
}

/// On Kubernetes with leader election, waits until this controller holds the Lease, serving
/// the standby API on the listen address meanwhile.
async fn become_active(
    config: &ControllerConfig,
    tls: Option<&crate::api_tls::ServingTls>,
    signals: &mut ShutdownSignals,
    listener: &std::net::TcpListener,
) -> anyhow::Result<Standing> {
    if config.platform.kind != PlatformKind::Kubernetes || !config.platform.leader_election {
        return Ok(Standing::Alone);
    }
    let settings = config.platform.kubernetes_config(None);
    let (client, namespace) = cluster_client(&settings).await?;
    let lease = Arc::new(LeaderLease::new(
        client,
        &namespace,
        &config.platform.lease_name,
        &leader::default_identity(),
    ));
    tracing::info!(
        lease = %config.platform.lease_name,
        identity = lease.identity(),
        "waiting for the controller lease"
    );
    // The standby API serves on a second handle of the same socket: the port stays bound when
    // it stops, and the active API takes over the connections still queued.
    let listener = listener
        .try_clone()
        .and_then(TcpListener::from_std)
        .with_context(|| format!("listen on {}", config.listen))?;
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let standby = tokio::spawn(crate::api_tls::serve(
        listener,
        tls,
        api::standby_app(config.platform.lease_name.clone()),
        async {
            let _ = stop_rx.await;
        },
    )?);
    let standing = tokio::select! {
        leadership = lease.acquire() => Standing::Active(Arc::clone(&lease), leadership),
        signal = signals.recv() => {
            tracing::info!("{signal} received while waiting for the lease; stopping");
            Standing::Stopped
        }
    };
    let _ = stop_tx.send(());
    let _ = standby.await;
    Ok(standing)
}

/// The platform the controller runs on, with what must stop with it.
enum RunningPlatform {
    /// The local platform and its supervisor (which restarts dead sidecars).
    Local(Arc<LocalPlatform>, tokio::task::JoinHandle<()>),
    /// The Kubernetes platform (the cluster restarts pods itself), its relabeler (which gives
    /// re-created pods their role labels back) and its certificate renewer.
    Kubernetes(Arc<KubernetesPlatform>, [tokio::task::JoinHandle<()>; 2]),
    /// The local platform with simulated members (benchmarks), and the local supervisor.
    FleetSim(Arc<FleetSimPlatform>, tokio::task::JoinHandle<()>),
}

impl RunningPlatform {
    fn shared(&self) -> Arc<dyn Platform> {
        match self {
            RunningPlatform::Local(platform, _) => platform.clone(),
            RunningPlatform::Kubernetes(platform, _) => platform.clone(),
            RunningPlatform::FleetSim(platform, _) => platform.clone(),
        }
    }

    async fn shutdown(self) {
        match self {
            // The supervisor holds a weak reference: it ends once the platform is gone.
            RunningPlatform::Local(platform, _supervisor) => platform.shutdown().await,
            RunningPlatform::Kubernetes(_, tasks) => tasks.iter().for_each(|t| t.abort()),
            RunningPlatform::FleetSim(platform, _supervisor) => platform.local().shutdown().await,
        }
    }
}

/// How often the Kubernetes platform looks for certificates due for renewal: a thirtieth of
/// their lifetime, at most a minute (one read per member each time) and no more often than the
/// supervise interval.
fn renewal_check_interval(config: &ControllerConfig) -> std::time::Duration {
    let minute = std::time::Duration::from_secs(60);
    config
        .cert_lifetime
        .map_or(minute, |lifetime| (lifetime / 30).min(minute))
        .max(config.supervise_interval)
}

/// Sets up the platform `--platform` names: the local one takes over its members and endpoints;
/// the Kubernetes one connects to the cluster.
async fn start_platform(
    config: &ControllerConfig,
    tls: Option<&crate::api_tls::ServingTls>,
) -> anyhow::Result<RunningPlatform> {
    if config.platform.kind == PlatformKind::Kubernetes {
        let settings = config
            .platform
            .kubernetes_config(config.isolation_lease.map(|lease| lease.as_secs()));
        let platform = KubernetesPlatform::connect(settings)
            .await
            .context("set up the Kubernetes platform")?;
        tracing::info!(
            namespace = platform.namespace(),
            "instances run on Kubernetes"
        );
        let platform = Arc::new(platform);
        let tasks = [
            platform.spawn_relabeler(config.supervise_interval),
            platform.spawn_certificate_renewer(renewal_check_interval(config)),
        ];
        return Ok(RunningPlatform::Kubernetes(platform, tasks));
    }
    let mut platform_config = LocalPlatformConfig::new(config.home.root().to_path_buf());
    platform_config.sidecar_bin = config.sidecar_bin.clone();
    platform_config.pg_bin_dir = config.pg_bin_dir.clone();
    platform_config.member_networks = config.local_member_networks.clone();
    // Sidecars push what happens to their members to this API (over HTTPS, verifying it with
    // the CA that issued its certificate).
    let notify_ca = tls.map(|tls| tls.ca_file.clone());
    match notify_ca {
        _ if config.listen.port() == 0 => {}
        Some(None) => tracing::warn!(
            "sidecars cannot report to the API: its certificate's CA is unknown (--tls-dir with a ca.crt gives it)"
        ),
        Some(Some(ca)) => {
            platform_config.notify = Some(NotifySetting {
                url: listen_url(config.listen, true),
                ca_file: Some(ca),
            });
        }
        None => {
            platform_config.notify = Some(NotifySetting {
                url: listen_url(config.listen, false),
                ca_file: None,
            })
        }
    }
    if let Some(lease) = config.isolation_lease {
        platform_config
            .extra_sidecar_args
            .push(format!("--isolation-lease-secs={}", lease.as_secs()));
    }
    let platform =
        Arc::new(LocalPlatform::new(platform_config).context("set up the local platform")?);
    let adopted = platform
        .adopt()
        .await
        .context("take over the local members")?;
    tracing::info!(
        members = adopted.members.len(),
        endpoints = adopted.endpoints.len(),
        "took over the local platform"
    );
    let supervisor = platform.spawn_supervisor(config.supervise_interval);
    if config.platform.kind == PlatformKind::FleetSim {
        let url = config
            .platform
            .fleet_sim_url
            .as_deref()
            .context("--platform fleet-sim needs --fleet-sim-url")?;
        tracing::warn!(
            url,
            "members are simulated by a fleet double (benchmarks only)"
        );
        let simulated = Arc::new(FleetSimPlatform::new(platform, url));
        return Ok(RunningPlatform::FleetSim(simulated, supervisor));
    }
    Ok(RunningPlatform::Local(platform, supervisor))
}
