//! A control-plane process (etcd, kube-apiserver, …) in its own process group, its output in a
//! log file, started through `setpriv --pdeathsig KILL` so that it dies with the test process
//! even when that is killed outright (no unsafe `pre_exec` needed); dropping it kills the group by pid with SIGKILL (test components keep nothing worth
//! a graceful shutdown: etcd's data lives in the harness's temp dir).

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use anyhow::Context;
use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;

/// A child process that is stopped (with its whole process group) when dropped.
#[derive(Debug)]
pub struct ManagedProcess {
    name: String,
    child: Child,
    log: PathBuf,
}

impl ManagedProcess {
    /// Starts `command` in a new process group, stdout and stderr appended to `<log_dir>/<name>.log`.
    pub fn spawn(name: &str, command: Command, log_dir: &Path) -> anyhow::Result<Self> {
        let mut command = with_parent_death_signal(command);
        let log = log_dir.join(format!("{name}.log"));
        let file = std::fs::File::create(&log).context("create the log file")?;
        command
            .stdin(Stdio::null())
            .stdout(file.try_clone().context("clone the log file")?)
            .stderr(file)
            .process_group(0);
        let child = command
            .spawn()
            .with_context(|| format!("start {name} ({command:?})"))?;
        Ok(Self {
            name: name.to_string(),
            child,
            log,
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Fails (with the end of its log) when the process has exited.
    pub fn check_running(&mut self) -> anyhow::Result<()> {
        if let Some(status) = self.child.try_wait().context("wait")? {
            anyhow::bail!(
                "{} exited with {status}; end of {}:\n{}",
                self.name,
                self.log.display(),
                self.log_tail(40)
            );
        }
        Ok(())
    }

    /// The last `lines` lines of its log.
    pub fn log_tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        // Skip the flag dump components print at start-up.
        let all: Vec<&str> = text.lines().filter(|l| !l.contains("FLAG: --")).collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }
}

impl Drop for ManagedProcess {
    fn drop(&mut self) {
        // The whole group: also children the component started.
        let _ = killpg(Pid::from_raw(self.child.id() as i32), Signal::SIGKILL);
        let _ = self.child.wait();
    }
}

/// `command` run through `setpriv --pdeathsig KILL` (when util-linux's setpriv is installed):
/// the kernel kills it when the thread that started it exits.
fn with_parent_death_signal(command: Command) -> Command {
    let Some(setpriv) = ["/usr/bin/setpriv", "/bin/setpriv"]
        .into_iter()
        .find(|p| Path::new(p).is_file())
    else {
        return command;
    };
    let mut wrapped = Command::new(setpriv);
    wrapped
        .args(["--pdeathsig", "KILL", "--"])
        .arg(command.get_program())
        .args(command.get_args());
    for (key, value) in command.get_envs() {
        match value {
            Some(v) => wrapped.env(key, v),
            None => wrapped.env_remove(key),
        };
    }
    if let Some(dir) = command.get_current_dir() {
        wrapped.current_dir(dir);
    }
    wrapped
}
