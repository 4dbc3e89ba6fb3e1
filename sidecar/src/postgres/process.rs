//! One running Postgres server as the sidecar's child: started with its stderr forwarded into
//! the sidecar's log, watched for exit, and stopped with a fast shutdown that escalates to an
//! immediate one and then to SIGKILL when it takes too long.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use anyhow::Context;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use tokio::io::AsyncBufReadExt;
use tokio::sync::watch;
use toygres_common::pg_exec::PgBinaries;
use toygres_common::poll::poll_until;

use super::files::Layout;

/// A Postgres postmaster the sidecar started.
#[derive(Debug)]
pub struct PgChild {
    pub pid: u32,
    /// Becomes `Some(description)` when the process has exited.
    exit: watch::Receiver<Option<String>>,
}

impl PgChild {
    /// Starts `postgres -D <data dir>`. Returns once the process exists; see
    /// [`super::sql::wait_until_accepting`] for readiness.
    pub fn spawn(bins: &PgBinaries, layout: &Layout) -> anyhow::Result<Self> {
        let mut cmd = bins.command("postgres");
        cmd.arg("-D").arg(&layout.data_dir);
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        set_parent_death_signal(&mut cmd);
        let mut child = tokio::process::Command::from(cmd)
            .kill_on_drop(false)
            .spawn()
            .context("start postgres")?;
        let pid = child.id().context("read the pid of postgres")?;
        if let Some(stderr) = child.stderr.take() {
            tokio::spawn(async move {
                let mut lines = tokio::io::BufReader::new(stderr).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    tracing::info!(target: "postgres", "{line}");
                }
            });
        }
        let (tx, rx) = watch::channel(None);
        tokio::spawn(async move {
            let description = match child.wait().await {
                Ok(status) => status.to_string(),
                Err(e) => format!("wait failed: {e}"),
            };
            let _ = tx.send(Some(description));
        });
        Ok(Self { pid, exit: rx })
    }

    /// How the process exited, if it has.
    pub fn exited(&self) -> Option<String> {
        self.exit.borrow().clone()
    }

    /// Resolves when the process has exited.
    pub async fn wait(&self) -> String {
        let mut rx = self.exit.clone();
        let exit = match rx.wait_for(|v| v.is_some()).await {
            Ok(v) => v.clone().unwrap_or_default(),
            Err(_) => "exit watcher gone".into(),
        };
        exit
    }

    /// Fast shutdown (SIGINT); after `timeout`, immediate shutdown (SIGQUIT); after 5 s more,
    /// SIGKILL. Returns when the process is gone.
    pub async fn stop(&self, timeout: Duration) -> String {
        let pid = Pid::from_raw(self.pid as i32);
        for (signal, wait) in [
            (Signal::SIGINT, timeout),
            (Signal::SIGQUIT, Duration::from_secs(5)),
            (Signal::SIGKILL, Duration::from_secs(30)),
        ] {
            if let Some(done) = self.exited() {
                return done;
            }
            let _ = kill(pid, signal);
            if let Ok(done) = tokio::time::timeout(wait, self.wait()).await {
                return done;
            }
            tracing::warn!(
                pid = self.pid,
                ?signal,
                "postgres did not stop in time; escalating"
            );
        }
        self.exited().unwrap_or_else(|| "did not exit".into())
    }
}

/// Asks the kernel to send Postgres SIGINT (fast shutdown) if the sidecar dies, so a killed
/// sidecar never leaves an unsupervised server behind.
#[allow(unsafe_code)]
fn set_parent_death_signal(cmd: &mut std::process::Command) {
    use std::os::unix::process::CommandExt;
    // SAFETY: the closure runs between fork and exec and only calls async-signal-safe prctl and
    // getppid. The standard library runs it after switching user, which would otherwise reset
    // the setting.
    unsafe {
        cmd.pre_exec(|| {
            nix::sys::prctl::set_pdeathsig(Signal::SIGINT)?;
            if nix::unistd::getppid() == Pid::from_raw(1) {
                return Err(std::io::Error::other(
                    "the sidecar died while starting postgres",
                ));
            }
            Ok(())
        });
    }
}

/// The live postmaster running in this member's data directory, if any.
pub fn live_postmaster(layout: &Layout) -> Option<i32> {
    toygres_common::pg_exec::live_postmaster(&layout.data_dir)
}

/// Stops a postmaster this sidecar did not start (left behind by an earlier sidecar that was
/// killed), so the sidecar can own the server again.
pub async fn stop_stray_postmaster(layout: &Layout, timeout: Duration) -> anyhow::Result<()> {
    let Some(pid) = live_postmaster(layout) else {
        return Ok(());
    };
    tracing::warn!(
        pid,
        "a postmaster from an earlier run is still running; stopping it"
    );
    for (signal, wait) in [
        (Signal::SIGINT, timeout),
        (Signal::SIGQUIT, Duration::from_secs(5)),
        (Signal::SIGKILL, Duration::from_secs(10)),
    ] {
        let _ = kill(Pid::from_raw(pid), signal);
        let exited = poll_until(
            "the stray postmaster exits",
            Duration::from_millis(50),
            wait,
            || std::future::ready((!toygres_common::pg_exec::process_alive(pid)).then_some(())),
        );
        if exited.await.is_ok() {
            return Ok(());
        }
    }
    anyhow::bail!("the stray postmaster {pid} did not stop")
}

/// Runs one of Postgres's programs to completion, logging its output; fails with its stderr.
pub async fn run_tool(
    bins: &PgBinaries,
    program: &str,
    args: &[&std::ffi::OsStr],
    envs: &[(&str, &Path)],
) -> anyhow::Result<String> {
    let mut cmd = bins.command(program);
    cmd.args(args).stdin(Stdio::null());
    for (k, v) in envs {
        cmd.env(k, v);
    }
    // A bootstrap abandoned on shutdown must not leave its tool running.
    let out = tokio::process::Command::from(cmd)
        .kill_on_drop(true)
        .output()
        .await
        .with_context(|| format!("run {program}"))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    for line in stdout.lines().chain(stderr.lines()) {
        tracing::info!(target: "postgres", tool = program, "{line}");
    }
    if !out.status.success() {
        let tail: Vec<&str> = stderr.lines().rev().take(5).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        anyhow::bail!("{program} failed ({}): {}", out.status, tail.join(" / "));
    }
    Ok(format!("{stdout}{stderr}"))
}
