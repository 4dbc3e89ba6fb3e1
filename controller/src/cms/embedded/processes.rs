//! The CMS Postgres as the OS sees it: its `postmaster.pid`, whether a pid still runs Postgres,
//! signals, stopping one an earlier controller left running, and its log lines forwarded into
//! the controller's log at their severity.

use std::fs;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use tokio::io::{AsyncBufReadExt as _, AsyncRead, BufReader};

/// How long a fast shutdown (SIGINT) may take before an immediate one (SIGQUIT) is asked for.
pub(super) const STOP_TIMEOUT: Duration = Duration::from_secs(60);

/// Reads the pid (line 1) and the status (line 8: `starting`, `ready`, `stopping`) from
/// `postmaster.pid`.
pub(super) fn read_postmaster_pid(data: &Path) -> Option<(i32, String)> {
    let text = fs::read_to_string(data.join("postmaster.pid")).ok()?;
    let mut lines = text.lines();
    let pid = lines.next()?.trim().parse().ok()?;
    let status = lines.nth(6).unwrap_or("").trim().to_string();
    Some((pid, status))
}

/// Stops a postmaster still running in `data` (its controller was killed), so this controller can
/// start its own. Only this controller holds the cluster lock, so such a process has no owner.
pub(super) async fn stop_orphaned_postmaster(data: &Path) -> anyhow::Result<()> {
    let Some((raw_pid, _)) = read_postmaster_pid(data) else {
        return Ok(());
    };
    let pid = Pid::from_raw(raw_pid);
    if !is_running(pid) || !is_postgres(pid) {
        // A stale file: Postgres itself recognises and replaces it.
        return Ok(());
    }
    tracing::warn!(
        pid = raw_pid,
        "a CMS Postgres left by an earlier controller is still running; stopping it"
    );
    for (signal, timeout) in [
        (Signal::SIGINT, STOP_TIMEOUT),
        (Signal::SIGQUIT, Duration::from_secs(10)),
    ] {
        signal_ignoring_gone(pid, signal)?;
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if !is_running(pid) {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    bail!("the CMS Postgres left running (pid {raw_pid}) did not stop")
}

/// Whether `pid` is a live process (a zombie counts as gone).
fn is_running(pid: Pid) -> bool {
    if kill(pid, None).is_err() {
        return false;
    }
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the parenthesised command name: "1234 (postgres) S …".
        Ok(stat) => {
            stat.rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().next())
                != Some("Z")
        }
        Err(_) => true,
    }
}

/// Whether `pid` runs the `postgres` program (when /proc can tell).
fn is_postgres(pid: Pid) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/comm")) {
        Ok(comm) => comm.trim() == "postgres",
        Err(_) => true,
    }
}

pub(super) fn signal_ignoring_gone(pid: Pid, signal: Signal) -> anyhow::Result<()> {
    match kill(pid, signal) {
        Ok(()) | Err(nix::errno::Errno::ESRCH) => Ok(()),
        Err(e) => Err(e).with_context(|| format!("send {signal} to the CMS Postgres (pid {pid})")),
    }
}

/// Logs each line Postgres writes, at a level matching its severity.
pub(super) fn forward_log_lines(stream: impl AsyncRead + Unpin + Send + 'static) {
    tokio::spawn(async move {
        let mut lines = BufReader::new(stream).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            match severity(&line) {
                Severity::Error => tracing::error!(target: "cms_postgres", "{line}"),
                Severity::Warn => tracing::warn!(target: "cms_postgres", "{line}"),
                Severity::Info => tracing::info!(target: "cms_postgres", "{line}"),
            }
        }
    });
}

#[derive(Debug, PartialEq, Eq)]
enum Severity {
    Error,
    Warn,
    Info,
}

fn severity(line: &str) -> Severity {
    if ["PANIC:", "FATAL:"].iter().any(|s| line.contains(s)) {
        Severity::Error
    } else if ["ERROR:", "WARNING:"].iter().any(|s| line.contains(s)) {
        Severity::Warn
    } else {
        Severity::Info
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn postmaster_pid_file_gives_pid_and_status() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(
            dir.path().join("postmaster.pid"),
            "4242\n/data\n1700000000\n5432\n/run\n127.0.0.1\n  1234  5678\nready   \n",
        )
        .unwrap();
        assert_eq!(
            read_postmaster_pid(dir.path()),
            Some((4242, "ready".to_string()))
        );
        fs::write(dir.path().join("postmaster.pid"), "17\n/data\n").unwrap();
        assert_eq!(read_postmaster_pid(dir.path()), Some((17, String::new())));
        fs::remove_file(dir.path().join("postmaster.pid")).unwrap();
        assert_eq!(read_postmaster_pid(dir.path()), None);
    }

    #[test]
    fn log_lines_are_graded_by_postgres_severity() {
        assert_eq!(severity("[12] FATAL:  could not bind"), Severity::Error);
        assert_eq!(severity("[12] WARNING:  checkpoints"), Severity::Warn);
        assert_eq!(
            severity("[12] LOG:  database system is ready"),
            Severity::Info
        );
    }
}
