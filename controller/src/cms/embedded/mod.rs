//! The embedded CMS: a Postgres cluster the controller runs as its child when no `DATABASE_URL`
//! is given. Its files live under `$TOYGRES_HOME/cms`:
//!
//! ```text
//! cms/data/                 the cluster (initdb'd once, into an empty directory)
//! cms/run/                  the Unix socket directory (mode 0700); the controller connects here
//! cms/port                  the loopback TCP port, chosen once so it stays stable
//! cms/superuser.password    the `postgres` role's password for TCP connections (mode 0600)
//! cms/controller.lock       held (flock) while a controller runs this cluster
//! ```
//!
//! When the controller is root, Postgres runs as the `postgres` OS user, which owns `cms/`.
//! Postgres's log lines are forwarded into the controller's log; it is stopped with SIGINT (fast
//! shutdown) when the controller stops. While the controller runs, [`EmbeddedCms::supervise`]
//! starts Postgres again, with a growing pause between attempts, whenever it dies.

use std::fs;
use std::os::unix::process::CommandExt as _;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use nix::fcntl::Flock;
use nix::sys::signal::Signal;
use nix::unistd::Pid;
use tokio::sync::watch;
use toygres_common::pg_exec::PgBinaries;
use toygres_common::poll::{poll, Attempt, PollError};

mod cluster;
mod processes;

pub use cluster::CmsPaths;
use cluster::{init_cluster, lock_cluster, prepare_dirs, stable_port, SUPERUSER};
use processes::{
    forward_log_lines, read_postmaster_pid, signal_ignoring_gone, stop_orphaned_postmaster,
    STOP_TIMEOUT,
};

/// How long Postgres may take to accept connections after it is started.
pub const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// The pause before the first attempt to start a dead CMS Postgres again; it doubles after each
/// failed attempt, up to [`RESTART_BACKOFF_MAX`].
const RESTART_BACKOFF_MIN: Duration = Duration::from_millis(500);

/// The longest pause between two attempts to start a dead CMS Postgres again.
const RESTART_BACKOFF_MAX: Duration = Duration::from_secs(30);

/// How long Postgres must have run before its next death starts again from the shortest pause.
const RESTART_BACKOFF_RESET: Duration = Duration::from_secs(60);

/// A running embedded CMS: the Postgres child process and what is needed to reach it (and to
/// start it again).
#[derive(Debug)]
pub struct EmbeddedCms {
    paths: CmsPaths,
    port: u16,
    pg: PgBinaries,
    /// The postmaster started last; replaced when [`EmbeddedCms::supervise`] starts a new one.
    current: watch::Sender<Postmaster>,
    /// Held while this controller owns the cluster.
    _lock: Flock<fs::File>,
}

/// One postmaster process this controller started.
#[derive(Debug, Clone)]
struct Postmaster {
    pid: Pid,
    /// Becomes `Some(status)` when the process exits.
    exit: watch::Receiver<Option<String>>,
}

impl Postmaster {
    /// Its exit status, when it has exited.
    fn exit_status(&self) -> Option<String> {
        self.exit.borrow().clone()
    }

    /// Resolves when the process exits, with its exit status.
    async fn exited(&self) -> String {
        let mut exit = self.exit.clone();
        let status = match exit.wait_for(|status| status.is_some()).await {
            Ok(status) => status.clone().unwrap_or_default(),
            Err(_) => "unknown status".to_string(),
        };
        status
    }

    /// Whether it exits within `timeout`.
    async fn exits_within(&self, timeout: Duration) -> bool {
        tokio::time::timeout(timeout, self.exited()).await.is_ok()
    }
}

impl EmbeddedCms {
    /// Prepares `cms_dir` (creating the cluster the first time), stops a Postgres left running
    /// by an earlier controller that was killed, and starts Postgres. It does not wait for
    /// Postgres to accept connections: call [`EmbeddedCms::wait_ready`]. `api_port` is the
    /// controller's own API port, already bound: Postgres never takes it.
    pub async fn start(cms_dir: PathBuf, pg: &PgBinaries, api_port: u16) -> anyhow::Result<Self> {
        let paths = CmsPaths::new(cms_dir);
        prepare_dirs(&paths, pg)?;
        let lock = lock_cluster(&paths.lock_file)?;
        init_cluster(&paths, pg).await?;
        let port = stable_port(&paths.port_file, api_port)?;
        stop_orphaned_postmaster(&paths.data).await?;
        let postmaster = spawn_postmaster(&paths, port, pg)?;
        let (current, _) = watch::channel(postmaster);
        Ok(Self {
            paths,
            port,
            pg: pg.clone(),
            current,
            _lock: lock,
        })
    }

    /// The postmaster started last.
    fn postmaster(&self) -> Postmaster {
        self.current.borrow().clone()
    }

    /// The files of this CMS.
    pub fn paths(&self) -> &CmsPaths {
        &self.paths
    }

    /// The loopback TCP port Postgres listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The process id of the postmaster started last.
    pub fn pid(&self) -> i32 {
        self.postmaster().pid.as_raw()
    }

    /// How to connect to database `dbname` as the superuser over the Unix socket (trusted, so no
    /// password).
    pub fn connect_config(&self, dbname: &str) -> tokio_postgres::Config {
        let mut config = tokio_postgres::Config::new();
        config
            .host_path(&self.paths.run)
            .port(self.port)
            .user(SUPERUSER)
            .dbname(dbname)
            .application_name("toygres-controller")
            .connect_timeout(Duration::from_secs(5));
        config
    }

    /// Waits until Postgres reports itself ready in `postmaster.pid` and accepts a connection,
    /// failing when it exits first or `timeout` passes.
    pub async fn wait_ready(&self, timeout: Duration) -> anyhow::Result<()> {
        let postmaster = self.postmaster();
        let config = self.connect_config("postgres");
        let client = poll(
            "the CMS Postgres accepts connections",
            Duration::from_millis(100),
            timeout,
            || async {
                if let Some(status) = postmaster.exit_status() {
                    return Attempt::GiveUp(anyhow::anyhow!(
                        "the CMS Postgres exited while starting ({status}); see its log lines above"
                    ));
                }
                let ready = matches!(
                    read_postmaster_pid(&self.paths.data),
                    Some((pid, status)) if pid == postmaster.pid.as_raw() && status == "ready"
                );
                if !ready {
                    return Attempt::NotYet("it has not reported itself ready".into());
                }
                match super::connect(&config).await {
                    Ok(client) => Attempt::Done(client),
                    Err(e) => Attempt::NotYet(e.to_string()),
                }
            },
        )
        .await
        .map_err(|e| match e {
            PollError::GaveUp(e) => e,
            PollError::TimedOut(t) => anyhow::anyhow!(
                "the CMS Postgres did not accept connections within {timeout:?}: {}",
                t.last.unwrap_or_default()
            ),
        })?;
        client
            .simple_query("SELECT 1")
            .await
            .context("query the CMS Postgres")?;
        Ok(())
    }

    /// Creates database `name` when it does not exist yet.
    pub async fn ensure_database(&self, name: &str) -> anyhow::Result<()> {
        let client = super::connect(&self.connect_config("postgres"))
            .await
            .context("connect to the CMS Postgres")?;
        let exists = client
            .query_opt("SELECT 1 FROM pg_database WHERE datname = $1", &[&name])
            .await
            .context("look up the CMS database")?
            .is_some();
        if exists {
            return Ok(());
        }
        let create = format!("CREATE DATABASE {}", quote_ident(name));
        match client.batch_execute(&create).await {
            Ok(()) => {
                tracing::info!("created database {name} in the embedded CMS");
                Ok(())
            }
            // Another process created it between our check and our CREATE.
            Err(e) if e.code() == Some(&tokio_postgres::error::SqlState::DUPLICATE_DATABASE) => {
                Ok(())
            }
            Err(e) => Err(e).with_context(|| format!("create database {name}")),
        }
    }

    /// Watches Postgres and, whenever it dies, starts it again (same cluster, port and socket, so
    /// every client reconnects to it unchanged), pausing [`RESTART_BACKOFF_MIN`] before the first
    /// attempt and twice as long after each failed one, up to [`RESTART_BACKOFF_MAX`]. Never
    /// returns: drop the future to stop supervising, before [`EmbeddedCms::stop`].
    pub async fn supervise(&self) -> std::convert::Infallible {
        let mut backoff = RESTART_BACKOFF_MIN;
        loop {
            let postmaster = self.postmaster();
            let watched_since = Instant::now();
            let status = postmaster.exited().await;
            if watched_since.elapsed() >= RESTART_BACKOFF_RESET {
                backoff = RESTART_BACKOFF_MIN;
            }
            tracing::error!(
                pid = postmaster.pid.as_raw(),
                "the embedded CMS Postgres exited unexpectedly ({status}); starting it again in \
                 {backoff:?}"
            );
            loop {
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(RESTART_BACKOFF_MAX);
                match self.restart().await {
                    Ok(()) => break,
                    Err(e) => tracing::error!(
                        "start the embedded CMS Postgres again: {e:#}; next attempt in {backoff:?}"
                    ),
                }
            }
            tracing::info!(
                pid = self.pid(),
                "the embedded CMS Postgres is running again"
            );
        }
    }

    /// Starts a new postmaster after the last one died and waits until it accepts connections;
    /// stops it again when it does not.
    async fn restart(&self) -> anyhow::Result<()> {
        // The dead postmaster's backends notice its death and exit on their own; one still
        // attached to the shared memory makes the new postmaster refuse to start, and the next
        // attempt tries again.
        stop_orphaned_postmaster(&self.paths.data).await?;
        let postmaster = spawn_postmaster(&self.paths, self.port, &self.pg)?;
        self.current.send_replace(postmaster.clone());
        if let Err(e) = self.wait_ready(READY_TIMEOUT).await {
            if postmaster.exit_status().is_none() {
                signal_ignoring_gone(postmaster.pid, Signal::SIGQUIT)?;
                if !postmaster.exits_within(Duration::from_secs(10)).await {
                    signal_ignoring_gone(postmaster.pid, Signal::SIGKILL)?;
                }
            }
            return Err(e);
        }
        Ok(())
    }

    /// Stops Postgres with a fast shutdown (SIGINT) and waits for it to exit; asks for an
    /// immediate shutdown (SIGQUIT) if it is still running after a minute.
    pub async fn stop(self) -> anyhow::Result<()> {
        let postmaster = self.postmaster();
        if let Some(status) = postmaster.exit_status() {
            tracing::warn!("the CMS Postgres had already exited ({status})");
            return Ok(());
        }
        tracing::info!(
            pid = postmaster.pid.as_raw(),
            "stopping the embedded CMS Postgres"
        );
        signal_ignoring_gone(postmaster.pid, Signal::SIGINT)?;
        if !postmaster.exits_within(STOP_TIMEOUT).await {
            tracing::warn!(
                "the CMS Postgres did not stop within {STOP_TIMEOUT:?}; sending SIGQUIT"
            );
            signal_ignoring_gone(postmaster.pid, Signal::SIGQUIT)?;
            if !postmaster.exits_within(Duration::from_secs(10)).await {
                bail!("the CMS Postgres (pid {}) did not stop", postmaster.pid);
            }
        }
        let status = postmaster.exit_status().unwrap_or_default();
        tracing::info!("the embedded CMS Postgres stopped ({status})");
        Ok(())
    }
}

/// Starts the cluster's postmaster as a child, forwarding its output into the log.
fn spawn_postmaster(paths: &CmsPaths, port: u16, pg: &PgBinaries) -> anyhow::Result<Postmaster> {
    let mut cmd = pg.command("postgres");
    cmd.arg("-D")
        .arg(&paths.data)
        .args(["-c", "listen_addresses=127.0.0.1"])
        .args(["-c", &format!("port={port}")])
        .arg("-c")
        .arg(format!("unix_socket_directories={}", paths.run.display()))
        .args(["-c", "unix_socket_permissions=0700"])
        // The controller's log lines already carry a timestamp.
        .args(["-c", "log_line_prefix=[%p] "])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Its own process group: a ctrl-c in the terminal reaches only the controller,
        // which then stops Postgres in order.
        .process_group(0);
    let mut child = tokio::process::Command::from(cmd)
        .spawn()
        .with_context(|| format!("start {}", pg.program("postgres").display()))?;
    let raw_pid = child
        .id()
        .context("read the pid of the CMS Postgres")?
        .try_into()
        .context("read the pid of the CMS Postgres")?;
    if let Some(stdout) = child.stdout.take() {
        forward_log_lines(stdout);
    }
    if let Some(stderr) = child.stderr.take() {
        forward_log_lines(stderr);
    }
    let (exit_tx, exit) = watch::channel(None);
    tokio::spawn(async move {
        let status = match child.wait().await {
            Ok(status) => status.to_string(),
            Err(e) => format!("unknown status (wait failed: {e})"),
        };
        exit_tx.send_replace(Some(status));
    });
    tracing::info!(
        pid = raw_pid,
        port,
        "started the embedded CMS Postgres in {}",
        paths.data.display()
    );
    Ok(Postmaster {
        pid: Pid::from_raw(raw_pid),
        exit,
    })
}

fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers_are_quoted() {
        assert_eq!(quote_ident("toygres"), "\"toygres\"");
        assert_eq!(quote_ident("a\"b"), "\"a\"\"b\"");
    }
}
