//! [`Member`]: the sidecar's handle on its Postgres. It starts the server, restarts it with
//! backoff when it dies, and runs each mutating operation (promote, demote, fence, restart,
//! parameter and replication changes) alone, under one lock, so they never interleave with each
//! other or with the supervisor.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::sync::{watch, Mutex};
use tokio::time::Instant;
use tokio_postgres::Client;
use toygres_common::pg_exec::PgBinaries;
use toygres_common::sidecar_api::PromoteResponse;

use super::files::{self, Layout, ReplicationState};
use super::process::{self, PgChild};
use super::settings::MemberSettings;
use super::sql;
use crate::owned;

/// Why an operation was refused or failed; each case maps to an HTTP status.
#[derive(Debug, Clone, thiserror::Error)]
pub enum OpError {
    /// The server's state forbids the operation (409).
    #[error("{0}")]
    Conflict(String),
    /// This standby's history left the new primary's: it cannot follow it without a rewind
    /// (409, code `diverged`). `POST /v1/demote` rewinds it.
    #[error("{0}")]
    Diverged(String),
    /// The request is wrong (400), with a machine-readable code.
    #[error("{message}")]
    Invalid { code: &'static str, message: String },
    /// Something the operation needs cannot be reached (503).
    #[error("{0}")]
    Unavailable(String),
    /// The operation failed (500).
    #[error("{0}")]
    Failed(String),
}

impl From<anyhow::Error> for OpError {
    fn from(e: anyhow::Error) -> Self {
        OpError::Failed(format!("{e:#}"))
    }
}

impl OpError {
    pub fn invalid(code: &'static str, message: impl Into<String>) -> Self {
        OpError::Invalid {
            code,
            message: message.into(),
        }
    }
}

/// State only mutating operations touch, behind [`Member::ops`].
#[derive(Debug)]
pub(super) struct Ops {
    pub child: Option<PgChild>,
    pub state: ReplicationState,
    /// Earliest time the supervisor may start Postgres again.
    next_start: Instant,
    backoff: Duration,
    started_at: Instant,
}

type PromotionResult = Option<Result<PromoteResponse, OpError>>;

/// One member's Postgres, owned by this sidecar.
#[derive(Debug)]
pub struct Member {
    pub cfg: MemberSettings,
    pub bins: PgBinaries,
    pub layout: Layout,
    pub(super) ops: Mutex<Ops>,
    /// The running postmaster's pid, readable without waiting for an operation.
    pid: std::sync::Mutex<Option<u32>>,
    restarts: AtomicU64,
    shutting_down: AtomicBool,
    /// The promotion in flight, which later promote requests join.
    pub(super) promotion: std::sync::Mutex<Option<watch::Receiver<PromotionResult>>>,
    /// A connection for status and metrics queries, opened on demand.
    client: Mutex<Option<Client>>,
    /// Last contact with the controller and standbys, for the isolation lease.
    pub(super) contacts: std::sync::Mutex<super::watchers::Contacts>,
    self_fences: AtomicU64,
    /// Reports to the controller ([`super::report`]).
    pub(super) reporting: super::reporting::Reporting,
    /// What the synchronous replication watcher did.
    pub(super) sync: super::watchers::SyncCounters,
}

const FIRST_BACKOFF: Duration = Duration::from_millis(500);
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// A server that ran this long before dying is restarted without delay growth.
const STABLE_AFTER: Duration = Duration::from_secs(60);

impl Member {
    /// Takes over from a postmaster an earlier sidecar left running, and starts Postgres unless
    /// the member is fenced. The data directory holds a cluster ([`crate::bootstrap`] made sure).
    pub async fn open(
        cfg: MemberSettings,
        bins: PgBinaries,
        layout: Layout,
    ) -> anyhow::Result<Arc<Self>> {
        process::stop_stray_postmaster(&layout, cfg.stop_timeout).await?;
        let state = files::read_state(&layout)?;
        let now = Instant::now();
        let member = Arc::new(Member {
            ops: Mutex::new(Ops {
                child: None,
                state,
                next_start: now,
                backoff: FIRST_BACKOFF,
                started_at: now,
            }),
            pid: std::sync::Mutex::new(None),
            restarts: AtomicU64::new(0),
            shutting_down: AtomicBool::new(false),
            promotion: std::sync::Mutex::new(None),
            client: Mutex::new(None),
            contacts: std::sync::Mutex::new(Default::default()),
            self_fences: AtomicU64::new(0),
            reporting: Default::default(),
            sync: Default::default(),
            cfg,
            bins,
            layout,
        });
        if member.layout.is_fenced() {
            tracing::warn!("this member is fenced: Postgres stays stopped until unfenced");
        } else {
            let mut ops = member.ops.lock().await;
            if let Err(e) = member.start_locked(&mut ops).await {
                tracing::error!("start postgres: {e:#}; the supervisor will retry");
                ops.next_start = Instant::now() + ops.backoff;
            }
        }
        Ok(member)
    }

    /// The pid of the running postmaster.
    pub fn pid(&self) -> Option<u32> {
        *self.pid.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn set_pid(&self, pid: Option<u32>) {
        *self.pid.lock().unwrap_or_else(|p| p.into_inner()) = pid;
    }

    /// How many times the supervisor restarted Postgres after it died.
    pub fn restarts(&self) -> u64 {
        self.restarts.load(Ordering::Relaxed)
    }

    /// How many times the member fenced itself for isolation.
    pub fn self_fences(&self) -> u64 {
        self.self_fences.load(Ordering::Relaxed)
    }

    /// What the synchronous replication watcher did (degrades and restores).
    pub fn sync_counters(&self) -> &super::watchers::SyncCounters {
        &self.sync
    }

    pub(super) fn count_self_fence(&self) {
        self.self_fences.fetch_add(1, Ordering::Relaxed);
    }

    pub(super) fn is_shutting_down(&self) -> bool {
        self.shutting_down.load(Ordering::SeqCst)
    }

    /// Starts Postgres and waits until it accepts connections. Caller holds the ops lock.
    pub(super) async fn start_locked(&self, ops: &mut Ops) -> anyhow::Result<()> {
        files::prepare_for_start(&self.cfg, &self.bins, &self.layout, &ops.state)?;
        let child = PgChild::spawn(&self.bins, &self.layout)?;
        tracing::info!(
            pid = child.pid,
            standby = self.layout.is_standby(),
            "postgres started"
        );
        let ready =
            sql::wait_until_accepting(&self.cfg, self.cfg.start_timeout, || child.exited()).await;
        if let Err(e) = ready {
            child.stop(self.cfg.stop_timeout).await;
            return Err(e);
        }
        self.set_pid(Some(child.pid));
        ops.child = Some(child);
        ops.started_at = Instant::now();
        *self.client.lock().await = None;
        if !self.layout.is_standby() {
            let client = sql::connect_local(&self.cfg)
                .await
                .context("connect to postgres")?;
            sql::ensure_roles(&client, &self.cfg).await?;
        }
        Ok(())
    }

    /// Stops Postgres (fast shutdown, escalating). Caller holds the ops lock.
    pub(super) async fn stop_locked(&self, ops: &mut Ops) {
        *self.client.lock().await = None;
        if let Some(child) = ops.child.take() {
            let how = child.stop(self.cfg.stop_timeout).await;
            tracing::info!(pid = child.pid, "postgres stopped: {how}");
        }
        self.set_pid(None);
    }

    /// Runs until shutdown: restarts Postgres when it dies, with a growing delay while it keeps
    /// dying. Never runs while an operation holds the lock.
    pub async fn supervise(self: Arc<Self>) {
        // The synchronous replication watcher lives as long as the supervisor.
        tokio::spawn(Arc::clone(&self).watch_sync());
        loop {
            tokio::time::sleep(Duration::from_millis(200)).await;
            if self.shutting_down.load(Ordering::SeqCst) {
                return;
            }
            let Ok(mut ops) = self.ops.try_lock() else {
                continue;
            };
            if self.layout.is_fenced() {
                continue;
            }
            if let Some(exit) = ops.child.as_ref().and_then(|c| c.exited()) {
                self.restarts.fetch_add(1, Ordering::Relaxed);
                self.set_pid(None);
                ops.child = None;
                *self.client.lock().await = None;
                ops.backoff = if ops.started_at.elapsed() > STABLE_AFTER {
                    FIRST_BACKOFF
                } else {
                    (ops.backoff * 2).min(MAX_BACKOFF)
                };
                ops.next_start = Instant::now() + ops.backoff;
                tracing::error!(
                    "postgres died unexpectedly ({exit}); restarting in {:?}",
                    ops.backoff
                );
                self.report(
                    toygres_common::member_report::ReportKind::PostgresDied,
                    format!("postgres died unexpectedly ({exit})"),
                );
            }
            if ops.child.is_none() && Instant::now() >= ops.next_start {
                if let Err(e) = self.start_locked(&mut ops).await {
                    ops.backoff = (ops.backoff * 2).min(MAX_BACKOFF);
                    ops.next_start = Instant::now() + ops.backoff;
                    tracing::error!("restart postgres: {e:#}; next try in {:?}", ops.backoff);
                }
            }
        }
    }

    /// Stops Postgres for good (SIGTERM to the sidecar): waits for any running operation first.
    pub async fn shutdown(&self) {
        self.shutting_down.store(true, Ordering::SeqCst);
        let mut ops = self.ops.lock().await;
        self.stop_locked(&mut ops).await;
    }

    /// A connection for read-only queries, reused across calls.
    pub async fn query_client(&self) -> Result<tokio::sync::MappedMutexGuard<'_, Client>, OpError> {
        let mut guard = self.client.lock().await;
        if guard.as_ref().is_none_or(|c| c.is_closed()) {
            if self.pid().is_none() {
                return Err(OpError::Unavailable("postgres is not running".into()));
            }
            let client = sql::connect_local(&self.cfg)
                .await
                .map_err(|e| OpError::Unavailable(format!("connect to postgres: {e}")))?;
            *guard = Some(client);
        }
        Ok(tokio::sync::MutexGuard::map(guard, |c| {
            c.as_mut().expect("connected just above")
        }))
    }

    /// Stops Postgres and keeps it stopped (also across sidecar restarts) until unfenced.
    pub async fn fence(&self) -> Result<(), OpError> {
        let mut ops = self.ops.lock().await;
        owned::write_file(&self.bins, &self.layout.fence_marker(), b"", 0o600)?;
        self.stop_locked(&mut ops).await;
        tracing::warn!("fenced: postgres stopped");
        Ok(())
    }

    /// Lets Postgres run again after a fence, and starts it.
    pub async fn unfence(&self) -> Result<(), OpError> {
        let mut ops = self.ops.lock().await;
        if !self.layout.is_fenced() && ops.child.is_some() {
            return Ok(());
        }
        match std::fs::remove_file(self.layout.fence_marker()) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(OpError::Failed(format!("remove the fence marker: {e}")))
            }
            _ => {}
        }
        if ops.child.is_none() {
            self.start_locked(&mut ops).await?;
        }
        tracing::info!("unfenced: postgres running");
        Ok(())
    }

    /// Restarts Postgres (fast shutdown, then start), applying settings that wait for a restart.
    /// When it does not start with its configuration and `fallback` is not
    /// empty, writes those values into `postgresql.auto.conf` (`None` removes a setting), starts
    /// it again and returns why the first start failed (`None`: it started as configured).
    pub async fn restart_with_fallback(
        &self,
        fallback: &std::collections::BTreeMap<String, Option<String>>,
    ) -> Result<Option<String>, OpError> {
        let mut ops = self.ops.lock().await;
        if self.layout.is_fenced() {
            return Err(OpError::Conflict(
                "the member is fenced; unfence it first".into(),
            ));
        }
        self.stop_locked(&mut ops).await;
        match self.start_locked(&mut ops).await {
            Ok(()) => Ok(None),
            Err(e) if !fallback.is_empty() => {
                let why = format!("{e:#}");
                tracing::warn!("postgres did not start with its new configuration ({why}); restoring the previous values");
                super::auto_conf::rewrite_auto_conf(&self.layout.data_dir, fallback)?;
                self.start_locked(&mut ops).await?;
                Ok(Some(why))
            }
            Err(e) => Err(e.into()),
        }
    }
}
