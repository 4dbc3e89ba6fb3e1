//! The embedded CMS's cluster on disk: its files under `cms/`, their directories and owner, the
//! lock two controllers contend for, the initdb of a new cluster and the port chosen once.

use std::fs;
use std::io::Write as _;
use std::os::unix::fs::{DirBuilderExt as _, MetadataExt as _, OpenOptionsExt as _};
use std::path::{Path, PathBuf};
use std::process::Stdio;

use anyhow::{bail, Context as _};
use nix::fcntl::{Flock, FlockArg};
use rand::RngCore as _;
use toygres_common::pg_exec::{OsUser, PgBinaries};

use crate::home::{can_search, write_file_atomically};
use crate::token::hex;

/// The longest Unix socket path the kernel accepts (`sun_path` less its terminating NUL).
const MAX_SOCKET_PATH: usize = 107;

/// The OS user and role the embedded cluster's superuser is named after.
pub(super) const SUPERUSER: &str = "postgres";

/// The files of the embedded CMS under `$TOYGRES_HOME/cms`.
#[derive(Debug, Clone)]
pub struct CmsPaths {
    pub dir: PathBuf,
    pub data: PathBuf,
    pub run: PathBuf,
    pub port_file: PathBuf,
    pub password_file: PathBuf,
    pub lock_file: PathBuf,
}

impl CmsPaths {
    pub fn new(dir: PathBuf) -> Self {
        Self {
            data: dir.join("data"),
            run: dir.join("run"),
            port_file: dir.join("port"),
            password_file: dir.join("superuser.password"),
            lock_file: dir.join("controller.lock"),
            dir,
        }
    }
}

/// Creates `cms/`, `cms/data` and `cms/run` (mode 0700, owned by the Postgres OS user) and checks
/// that the Postgres OS user can reach them.
pub(super) fn prepare_dirs(paths: &CmsPaths, pg: &PgBinaries) -> anyhow::Result<()> {
    let run_socket = paths.run.join(".s.PGSQL.65535");
    if run_socket.as_os_str().len() > MAX_SOCKET_PATH {
        bail!(
            "the CMS socket path {} is longer than the {MAX_SOCKET_PATH} bytes a Unix socket \
             allows; choose a shorter --home",
            run_socket.display()
        );
    }
    let run = paths.run.to_string_lossy();
    if run.contains([',', '"', '\'', '\\']) {
        bail!(
            "the CMS socket directory {} contains a character Postgres cannot take in \
             unix_socket_directories; choose another --home",
            paths.run.display()
        );
    }
    for dir in [&paths.dir, &paths.data, &paths.run] {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .with_context(|| format!("create {}", dir.display()))?;
        pg.chown(dir)?;
    }
    if let Some(user) = &pg.run_as {
        check_reachable(&paths.data, user)?;
    }
    Ok(())
}

/// Fails with a clear message when `user` cannot search every directory from `/` to `dir`.
fn check_reachable(dir: &Path, user: &OsUser) -> anyhow::Result<()> {
    for ancestor in dir.ancestors() {
        let meta = fs::metadata(ancestor)
            .with_context(|| format!("read the metadata of {}", ancestor.display()))?;
        if !can_search(
            meta.mode(),
            meta.uid(),
            meta.gid(),
            user.uid.as_raw(),
            user.gid.as_raw(),
        ) {
            bail!(
                "the {} OS user, which runs the CMS Postgres, cannot enter {} (mode {:o}); \
                 choose a --home it can reach (for example /var/lib/toygres) or chmod o+x {}",
                user.name,
                ancestor.display(),
                meta.mode() & 0o777,
                ancestor.display()
            );
        }
    }
    Ok(())
}

/// Takes the cluster's lock file, so two controllers never run one cluster.
pub(super) fn lock_cluster(path: &Path) -> anyhow::Result<Flock<fs::File>> {
    let file = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("open {}", path.display()))?;
    Flock::lock(file, FlockArg::LockExclusiveNonblock).map_err(|(_, errno)| {
        if errno == nix::errno::Errno::EWOULDBLOCK {
            anyhow::anyhow!(
                "another controller is running the embedded CMS in {} (it holds {})",
                path.parent().unwrap_or(path).display(),
                path.display()
            )
        } else {
            anyhow::anyhow!("lock {}: {errno}", path.display())
        }
    })
}

/// Runs initdb into `cms/data` when it holds no cluster yet.
pub(super) async fn init_cluster(paths: &CmsPaths, pg: &PgBinaries) -> anyhow::Result<()> {
    if paths.data.join("PG_VERSION").exists() {
        return Ok(());
    }
    let not_empty = fs::read_dir(&paths.data)
        .with_context(|| format!("read {}", paths.data.display()))?
        .next()
        .is_some();
    if not_empty {
        bail!(
            "{} is not empty but holds no Postgres cluster (no PG_VERSION); refusing to initdb \
             into it, move its contents away",
            paths.data.display()
        );
    }
    tracing::info!(
        "creating the embedded CMS cluster in {} with {}",
        paths.data.display(),
        pg.program("initdb").display()
    );
    let password = {
        let mut bytes = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut bytes);
        hex(&bytes)
    };
    write_file_atomically(&paths.password_file, &format!("{password}\n"), 0o600)?;

    // initdb reads the password from a file only the Postgres OS user can read, deleted after.
    let pwfile = PasswordFile::create(paths.dir.join("initdb.pwfile"), &password, pg)?;
    let mut cmd = pg.command("initdb");
    cmd.arg("-D")
        .arg(&paths.data)
        .args([
            "--auth-local=trust",
            "--auth-host=scram-sha-256",
            "-U",
            SUPERUSER,
            "--encoding=UTF8",
            "--locale=C",
        ])
        .arg(format!("--pwfile={}", pwfile.path.display()))
        .stdin(Stdio::null());
    let output = tokio::process::Command::from(cmd)
        .output()
        .await
        .with_context(|| format!("run {}", pg.program("initdb").display()))?;
    drop(pwfile);
    for line in String::from_utf8_lossy(&output.stdout).lines() {
        tracing::debug!(target: "cms_postgres", "initdb: {line}");
    }
    if !output.status.success() {
        bail!(
            "initdb of the CMS cluster failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(())
}

/// A file holding a password, owned by the Postgres OS user, mode 0600, removed on drop.
struct PasswordFile {
    path: PathBuf,
}

impl PasswordFile {
    fn create(path: PathBuf, password: &str, pg: &PgBinaries) -> anyhow::Result<Self> {
        // A leftover from a crash would make create_new fail.
        let _ = fs::remove_file(&path);
        let mut file = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .with_context(|| format!("create {}", path.display()))?;
        let this = Self { path };
        file.write_all(format!("{password}\n").as_bytes())
            .with_context(|| format!("write {}", this.path.display()))?;
        pg.chown(&this.path)?;
        Ok(this)
    }
}

impl Drop for PasswordFile {
    fn drop(&mut self) {
        if let Err(e) = fs::remove_file(&self.path) {
            tracing::warn!("remove {}: {e}", self.path.display());
        }
    }
}

/// The port in `port_file`, or a free loopback port, recorded there for next time. A recorded
/// port that is `taken` (the controller's API took it while Postgres was down) is replaced.
pub(super) fn stable_port(port_file: &Path, taken: u16) -> anyhow::Result<u16> {
    match fs::read_to_string(port_file) {
        Ok(text) => {
            let port = text
                .trim()
                .parse::<u16>()
                .ok()
                .filter(|p| *p != 0)
                .with_context(|| {
                    format!(
                        "{} does not hold a port number (1-65535); fix or delete it",
                        port_file.display()
                    )
                })?;
            if port != taken {
                return Ok(port);
            }
            tracing::warn!(
                "the CMS port {port} recorded in {} is the API's now; choosing another",
                port_file.display()
            );
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("read {}", port_file.display())),
    }
    let port = std::net::TcpListener::bind(("127.0.0.1", 0))
        .and_then(|listener| listener.local_addr())
        .context("find a free loopback port for the CMS")?
        .port();
    write_file_atomically(port_file, &format!("{port}\n"), 0o644)?;
    Ok(port)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn port_is_chosen_once_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("port");
        let first = stable_port(&file, 0).unwrap();
        assert_ne!(first, 0);
        assert_eq!(stable_port(&file, 0).unwrap(), first);
        // The API took the recorded port: another is chosen and recorded.
        let api = std::net::TcpListener::bind(("127.0.0.1", first)).unwrap();
        let second = stable_port(&file, first).unwrap();
        assert_ne!(second, first);
        assert_eq!(stable_port(&file, first).unwrap(), second);
        drop(api);
        fs::write(&file, "not a port\n").unwrap();
        let err = stable_port(&file, 0).unwrap_err();
        assert!(err.to_string().contains("does not hold a port"), "{err}");
    }

    #[test]
    fn second_lock_on_a_cluster_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("controller.lock");
        let _held = lock_cluster(&path).unwrap();
        let err = lock_cluster(&path).unwrap_err();
        assert!(err.to_string().contains("another controller"), "{err}");
    }
}
