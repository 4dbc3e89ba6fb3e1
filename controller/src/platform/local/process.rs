//! The processes of a local member: starting its sidecar detached (a session and process group of
//! its own, so it outlives the controller and a terminal's signals), telling whether a pid is
//! still that sidecar, and stopping it — gently, or hard — along with any Postgres it left.

use std::ffi::OsString;
use std::fs;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use nix::sys::signal::{kill, killpg, Signal};
use nix::unistd::Pid;

/// How long a postmaster left behind may take to stop after SIGQUIT before it is killed.
const POSTMASTER_QUIT_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a killed process may take to disappear.
const KILL_TIMEOUT: Duration = Duration::from_secs(10);

/// The command line of one sidecar.
#[derive(Debug, Clone)]
pub struct SidecarCommand {
    pub program: PathBuf,
    pub args: Vec<OsString>,
    /// The only environment the sidecar gets (the controller's may hold secrets, and `TOYGRES_*`
    /// variables the sidecar would read as flags).
    pub env: Vec<(OsString, OsString)>,
    pub log_file: PathBuf,
    pub working_dir: PathBuf,
}

/// Starts the sidecar detached and returns its pid. The child is reaped in the background when
/// it exits while this controller runs; once the controller is gone, init reaps it.
pub fn spawn_detached(member: &str, command: &SidecarCommand) -> anyhow::Result<i32> {
    let log = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(&command.log_file)
        .with_context(|| format!("open {}", command.log_file.display()))?;
    let log_err = log
        .try_clone()
        .with_context(|| format!("open {}", command.log_file.display()))?;
    let mut cmd = std::process::Command::new(&command.program);
    cmd.args(&command.args)
        .env_clear()
        .envs(command.env.iter().map(|(k, v)| (k, v)))
        .current_dir(&command.working_dir)
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(log_err);
    new_session(&mut cmd);
    let mut child = tokio::process::Command::from(cmd)
        .kill_on_drop(false)
        .spawn()
        .with_context(|| format!("start {}", command.program.display()))?;
    let pid = child
        .id()
        .and_then(|id| i32::try_from(id).ok())
        .context("read the pid of the new sidecar")?;
    let member = member.to_string();
    tokio::spawn(async move {
        match child.wait().await {
            Ok(status) => tracing::info!(member, pid, "the sidecar exited ({status})"),
            Err(e) => tracing::warn!(member, pid, "wait for the sidecar: {e}"),
        }
    });
    Ok(pid)
}

/// Makes the child the leader of a new session (and process group), detached from the
/// controller's terminal and its signals.
#[allow(unsafe_code)]
fn new_session(cmd: &mut std::process::Command) {
    use std::os::unix::process::CommandExt as _;
    // SAFETY: the closure runs between fork and exec and calls only setsid(2), which is
    // async-signal-safe; it touches no memory shared with the parent.
    unsafe {
        cmd.pre_exec(|| {
            nix::unistd::setsid()?;
            Ok(())
        });
    }
}

pub use toygres_common::pg_exec::{live_postmaster, process_alive as is_alive};

/// The `--data-dir=` argument a sidecar for `data_dir` runs with.
pub fn data_dir_arg(data_dir: &Path) -> OsString {
    let mut arg = OsString::from("--data-dir=");
    arg.push(data_dir);
    arg
}

/// Whether `pid` is alive and is the sidecar of `data_dir` (its command line holds
/// `--data-dir=<data_dir>`), not some other process that reused the pid.
pub fn is_sidecar_of(pid: i32, data_dir: &Path) -> bool {
    if !is_alive(pid) {
        return false;
    }
    let Ok(cmdline) = fs::read(format!("/proc/{pid}/cmdline")) else {
        return false;
    };
    let wanted = data_dir_arg(data_dir);
    cmdline_has_arg(&cmdline, wanted.as_encoded_bytes())
}

fn cmdline_has_arg(cmdline: &[u8], wanted: &[u8]) -> bool {
    cmdline.split(|b| *b == 0).any(|arg| arg == wanted)
}

/// A live sidecar of `data_dir`, found by scanning `/proc` (for a sidecar started by a
/// controller that died before recording its pid).
pub fn find_sidecar_of(data_dir: &Path) -> Option<i32> {
    let entries = fs::read_dir("/proc").ok()?;
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .find(|pid| is_sidecar_of(*pid, data_dir))
}

/// Waits until `pid` is gone; `false` when it is still alive at the deadline.
async fn wait_gone(pid: i32, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if !is_alive(pid) {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn signal(pid: i32, signal: Signal) {
    // ESRCH (already gone) is what we want; nothing else can fail for root or the owner.
    let _ = kill(Pid::from_raw(pid), signal);
}

fn signal_group(pgid: i32, signal: Signal) {
    let _ = killpg(Pid::from_raw(pgid), signal);
}

/// Stops the sidecar `pid` (which leads its own process group) of `data_dir`: SIGTERM, which
/// makes it stop Postgres cleanly; after `timeout`, SIGKILL to its whole process group. Then
/// stops any postmaster still running in `data_dir`.
pub async fn stop_member(
    pid: Option<i32>,
    data_dir: &Path,
    timeout: Duration,
) -> anyhow::Result<()> {
    if let Some(pid) = pid.filter(|pid| is_sidecar_of(*pid, data_dir)) {
        signal(pid, Signal::SIGTERM);
        if !wait_gone(pid, timeout).await {
            tracing::warn!(
                pid,
                "the sidecar did not stop within {timeout:?} of SIGTERM; killing its process group"
            );
            signal_group(pid, Signal::SIGKILL);
            if !wait_gone(pid, KILL_TIMEOUT).await {
                anyhow::bail!("the sidecar (pid {pid}) survived SIGKILL");
            }
        }
        stop_postmaster(data_dir).await?;
        // Anything else left in its group (a pg_basebackup, say).
        signal_group(pid, Signal::SIGKILL);
        return Ok(());
    }
    stop_postmaster(data_dir).await
}

/// Stops the member at once, all of it: SIGKILL to the sidecar and its process group (so it
/// restarts nothing), then SIGKILL to every Postgres process of the data directory. Not an
/// immediate shutdown: a frozen (SIGSTOPped) postmaster never acts on SIGQUIT, and its backends,
/// each the leader of its own session, are in no group of the sidecar's; SIGKILL works on
/// stopped processes too.
pub async fn kill_member(pid: Option<i32>, data_dir: &Path) -> anyhow::Result<()> {
    if let Some(pid) = pid.filter(|pid| is_sidecar_of(*pid, data_dir)) {
        signal(pid, Signal::SIGKILL);
        signal_group(pid, Signal::SIGKILL);
        if !wait_gone(pid, KILL_TIMEOUT).await {
            anyhow::bail!("the sidecar (pid {pid}) survived SIGKILL");
        }
    }
    kill_postgres(data_dir).await
}

/// SIGKILLs every process of the Postgres of `data_dir`: the postmaster, its descendants, and
/// any process still working in the data directory (a backend orphaned by a postmaster that
/// died first), and waits until they are gone.
pub async fn kill_postgres(data_dir: &Path) -> anyhow::Result<()> {
    let mut victims = postgres_processes(data_dir);
    if let Some(postmaster) = live_postmaster(data_dir) {
        victims.push(postmaster);
    }
    victims.sort_unstable();
    victims.dedup();
    if !victims.is_empty() {
        tracing::info!(
            ?victims,
            "killing the Postgres processes of {}",
            data_dir.display()
        );
    }
    for pid in &victims {
        signal(*pid, Signal::SIGKILL);
    }
    for pid in &victims {
        if !wait_gone(*pid, KILL_TIMEOUT).await {
            anyhow::bail!(
                "the Postgres process {pid} of {} survived SIGKILL",
                data_dir.display()
            );
        }
    }
    // A killed postmaster leaves its lock files behind (postmaster.pid, and the socket's
    // `.s.PGSQL.<port>.lock`), and until whoever inherited it reaps the zombie, the next
    // postmaster takes the pid in them for a live one and refuses to start. Every process of
    // the data directory is gone now, so the locks guard nothing.
    let lock = data_dir.join("postmaster.pid");
    let mut stale = Vec::new();
    if let Ok(text) = fs::read_to_string(&lock) {
        // postmaster.pid: pid, data directory, start time, port, socket directory, …
        let lines: Vec<&str> = text.lines().collect();
        if let (Some(port), Some(dir)) = (lines.get(3), lines.get(4)) {
            let (port, dir) = (port.trim(), dir.trim());
            if !port.is_empty() && !dir.is_empty() {
                stale.push(Path::new(dir).join(format!(".s.PGSQL.{port}.lock")));
            }
        }
    }
    stale.push(lock);
    for file in stale {
        match fs::remove_file(&file) {
            Ok(()) => tracing::info!("removed the stale {}", file.display()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e).with_context(|| format!("remove {}", file.display())),
        }
    }
    Ok(())
}

/// The processes of `data_dir`'s Postgres: the postmaster's descendants (read before anything
/// is killed, while they are still its children) and every process whose working directory is
/// the data directory (Postgres processes run there; orphans keep it).
fn postgres_processes(data_dir: &Path) -> Vec<i32> {
    let Ok(entries) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    let canonical = fs::canonicalize(data_dir).unwrap_or_else(|_| data_dir.to_path_buf());
    let mut deleted = canonical.clone().into_os_string();
    deleted.push(" (deleted)");
    let table: Vec<(i32, i32, bool)> = entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter_map(|pid| {
            let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            let parent = parent_in_stat(&stat)?;
            let in_dir = fs::read_link(format!("/proc/{pid}/cwd"))
                .is_ok_and(|cwd| cwd == canonical || cwd.as_os_str() == deleted);
            Some((pid, parent, in_dir))
        })
        .collect();
    let mut found: Vec<i32> = table
        .iter()
        .filter(|(_, _, in_dir)| *in_dir)
        .map(|(pid, _, _)| *pid)
        .collect();
    if let Some(postmaster) = live_postmaster(data_dir) {
        found.push(postmaster);
    }
    // Descendants of everything found so far.
    let mut i = 0;
    while i < found.len() {
        let parent = found[i];
        for (pid, _, _) in table.iter().filter(|(_, ppid, _)| *ppid == parent) {
            if !found.contains(pid) {
                found.push(*pid);
            }
        }
        i += 1;
    }
    let me = i32::try_from(std::process::id()).unwrap_or(0);
    found.retain(|pid| *pid != me);
    found
}

/// The parent pid in a `/proc/<pid>/stat` line (`pid (comm) state ppid …`; `comm` may hold
/// spaces and parentheses, so the fields are read after its last `)`).
fn parent_in_stat(stat: &str) -> Option<i32> {
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(1)?.parse().ok()
}

/// Stops a postmaster running in `data_dir` with an immediate shutdown (SIGQUIT), then SIGKILL.
pub async fn stop_postmaster(data_dir: &Path) -> anyhow::Result<()> {
    let Some(pid) = live_postmaster(data_dir) else {
        return Ok(());
    };
    tracing::info!(
        pid,
        "stopping the postmaster left in {}",
        data_dir.display()
    );
    signal(pid, Signal::SIGQUIT);
    if wait_gone(pid, POSTMASTER_QUIT_TIMEOUT).await {
        return Ok(());
    }
    signal(pid, Signal::SIGKILL);
    if wait_gone(pid, KILL_TIMEOUT).await {
        return Ok(());
    }
    anyhow::bail!(
        "the postmaster (pid {pid}) in {} survived SIGKILL",
        data_dir.display()
    )
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn the_data_dir_argument_must_match_whole() {
        let cmdline = b"/bin/toygres-sidecar\0run\0--data-dir=/h/db-0/data\0--pg-port=1\0";
        assert!(cmdline_has_arg(cmdline, b"--data-dir=/h/db-0/data"));
        assert!(!cmdline_has_arg(cmdline, b"--data-dir=/h/db-0/dat"));
        assert!(!cmdline_has_arg(cmdline, b"--data-dir=/h/db-0/data/x"));
    }

    #[test]
    fn the_parent_is_read_after_the_command_name() {
        assert_eq!(
            parent_in_stat("42 (postgres: db-0: walsender (x) ) T 17 42 42 0"),
            Some(17)
        );
        assert_eq!(parent_in_stat("garbage"), None);
    }

    #[test]
    fn this_process_is_alive_and_not_a_sidecar() {
        let me = i32::try_from(std::process::id()).unwrap();
        assert!(is_alive(me));
        assert!(!is_sidecar_of(me, Path::new("/nowhere")));
        assert!(!is_alive(0));
        assert!(live_postmaster(Path::new("/nowhere")).is_none());
    }
}
