//! Running PostgreSQL's programs: finding their directory, and running them as the `postgres`
//! OS user when this process is root (Postgres refuses to run as root).

use std::path::{Path, PathBuf};

use std::os::unix::process::CommandExt;

use nix::unistd::{Gid, Uid, User};

/// Where Postgres's programs live and which OS user runs them.
#[derive(Debug, Clone)]
pub struct PgBinaries {
    pub bin_dir: PathBuf,
    /// Set when this process is root: the user Postgres runs as.
    pub run_as: Option<OsUser>,
}

/// An OS user that owns Postgres's files and processes.
#[derive(Debug, Clone)]
pub struct OsUser {
    pub name: String,
    pub uid: Uid,
    pub gid: Gid,
    pub home: PathBuf,
}

/// Why the Postgres programs could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum PgExecError {
    #[error("no PostgreSQL programs found (looked for initdb in {0}); pass --pg-bin-dir")]
    NotFound(String),
    #[error("running as root, but there is no {0:?} OS user to run Postgres as")]
    NoPostgresUser(String),
    #[error("look up OS user {user:?}: {source}")]
    UserLookup { user: String, source: nix::Error },
    #[error("change owner of {path}: {source}")]
    Chown { path: String, source: nix::Error },
}

impl PgBinaries {
    /// Finds Postgres's programs in `bin_dir`, or, when it is not given, in `pg_config --bindir`,
    /// then the newest `/usr/lib/postgresql/<v>/bin`, then `$PATH`.
    pub fn locate(bin_dir: Option<&Path>) -> Result<Self, PgExecError> {
        let bin_dir = match bin_dir {
            Some(dir) if dir.join("initdb").exists() => dir.to_path_buf(),
            Some(dir) => return Err(PgExecError::NotFound(dir.display().to_string())),
            None => find_bin_dir().ok_or_else(|| {
                PgExecError::NotFound("pg_config --bindir, /usr/lib/postgresql/*/bin, $PATH".into())
            })?,
        };
        let run_as = if Uid::effective().is_root() {
            let name = "postgres".to_string();
            let user = User::from_name(&name)
                .map_err(|source| PgExecError::UserLookup {
                    user: name.clone(),
                    source,
                })?
                .ok_or_else(|| PgExecError::NoPostgresUser(name.clone()))?;
            Some(OsUser {
                name,
                uid: user.uid,
                gid: user.gid,
                home: user.dir,
            })
        } else {
            None
        };
        Ok(Self { bin_dir, run_as })
    }

    /// The path of one of Postgres's programs.
    pub fn program(&self, name: &str) -> PathBuf {
        self.bin_dir.join(name)
    }

    /// A command for one of Postgres's programs, run as the Postgres OS user when we are root.
    pub fn command(&self, name: &str) -> std::process::Command {
        let mut cmd = std::process::Command::new(self.program(name));
        if let Some(user) = &self.run_as {
            cmd.uid(user.uid.as_raw()).gid(user.gid.as_raw());
            cmd.env("HOME", &user.home).env("USER", &user.name);
        }
        // Messages in English whatever the machine's locale, so callers can match them.
        cmd.env("LC_MESSAGES", "C");
        cmd
    }

    /// Hands `path` to the Postgres OS user (no-op when not root).
    pub fn chown(&self, path: &Path) -> Result<(), PgExecError> {
        if let Some(user) = &self.run_as {
            nix::unistd::chown(path, Some(user.uid), Some(user.gid)).map_err(|source| {
                PgExecError::Chown {
                    path: path.display().to_string(),
                    source,
                }
            })?;
        }
        Ok(())
    }

    /// The major version of these programs (`15`), read from `postgres --version`.
    pub fn major_version(&self) -> Option<u32> {
        let out = std::process::Command::new(self.program("postgres"))
            .arg("--version")
            .output()
            .ok()?;
        let text = String::from_utf8_lossy(&out.stdout);
        let version = text.split_whitespace().last()?;
        version.split('.').next()?.parse().ok()
    }
}

fn find_bin_dir() -> Option<PathBuf> {
    if let Ok(out) = std::process::Command::new("pg_config")
        .arg("--bindir")
        .output()
    {
        if out.status.success() {
            let dir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
            if dir.join("initdb").exists() {
                return Some(dir);
            }
        }
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let v: u32 = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").exists().then_some((v, bin))
        })
        .collect();
    versions.sort();
    if let Some((_, bin)) = versions.pop() {
        return Some(bin);
    }
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .find(|p| p.join("initdb").exists() && p.join("postgres").exists())
    })
}

/// Whether `pid` is a live process (a zombie, exited but not yet reaped, is not).
pub fn process_alive(pid: i32) -> bool {
    // kill(0) and kill(-n) address process groups, not one process.
    if pid <= 0 || nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None).is_err() {
        return false;
    }
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|stat| {
            !stat
                .rsplit_once(')')
                .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z'))
        })
        .unwrap_or(false)
}

/// The pid of a live postmaster running in `data_dir`, from its `postmaster.pid`.
pub fn live_postmaster(data_dir: &Path) -> Option<i32> {
    let text = std::fs::read_to_string(data_dir.join("postmaster.pid")).ok()?;
    let pid: i32 = text.lines().next()?.trim().parse().ok()?;
    let is_postgres = std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .is_ok_and(|comm| matches!(comm.trim(), "postgres" | "postmaster"));
    (process_alive(pid) && is_postgres).then_some(pid)
}
