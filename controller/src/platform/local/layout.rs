//! Where the local platform keeps things under `$TOYGRES_HOME`, and the directory modes that let
//! the `postgres` OS user reach a member's data directory when the controller runs as root.
//!
//! ```text
//! instances/<name>/secrets/<key>             credentials (directory 0700, files 0600)
//! store-secrets/<name>/<SETTING>             registered object-store credentials (0700/0600)
//! instances/<name>/endpoints.json            the endpoints' ports and routes
//! instances/<name>/<member>/member.json      the member's record: ports, pid, spec
//! instances/<name>/<member>/data/            the Postgres data directory (the sidecar's)
//! instances/<name>/<member>/run/             Postgres's socket and the sidecar's runtime files
//! instances/<name>/<member>/sidecar.log      the sidecar's (and Postgres's) output
//! run/<member>/                              the runtime directory instead, when the one above
//!                                            would make the socket path too long
//! ```

use std::fs;
use std::os::unix::fs::{DirBuilderExt as _, MetadataExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _};

use crate::home::can_search;
use crate::platform::SecretName;

/// The longest Unix socket path Postgres's socket may have here (the sidecar's own bound).
const MAX_SOCKET_PATH: usize = 100;

/// The local platform's paths under one `$TOYGRES_HOME`.
#[derive(Debug, Clone)]
pub struct LocalLayout {
    home: PathBuf,
    /// Directories must be searchable by others (the controller is root and Postgres runs as the
    /// `postgres` OS user).
    shared: bool,
}

impl LocalLayout {
    /// The layout under `home`; `shared` when the directories must be traversable (0711).
    pub fn new(home: PathBuf, shared: bool) -> Self {
        Self { home, shared }
    }

    /// `$TOYGRES_HOME` itself.
    pub fn home(&self) -> &Path {
        &self.home
    }

    /// The directory holding every instance.
    pub fn instances_dir(&self) -> PathBuf {
        self.home.join("instances")
    }

    /// `$TOYGRES_HOME/backups`: the default backup store (WAL and backups of every instance,
    /// each under its own name).
    pub fn backups_dir(&self) -> PathBuf {
        self.home.join("backups")
    }

    /// The registered store secrets: `store-secrets/<name>/<SETTING>` (directories 0700, files
    /// 0600).
    pub fn store_secrets_dir(&self) -> PathBuf {
        self.home.join("store-secrets")
    }

    /// One store secret's directory (what a member's `--store-credentials-dir` names).
    pub fn store_secret_dir(&self, name: &str) -> PathBuf {
        self.store_secrets_dir().join(name)
    }

    /// One instance's directory.
    pub fn instance_dir(&self, instance: &str) -> PathBuf {
        self.instances_dir().join(instance)
    }

    /// The instance's backup encryption key ring (its members' `--backup-encryption-keyring`).
    pub fn keyring_dir(&self, instance: &str) -> PathBuf {
        self.instance_dir(instance).join("keyring")
    }

    /// The instance's credentials.
    pub fn secrets_dir(&self, instance: &str) -> PathBuf {
        self.instance_dir(instance).join("secrets")
    }

    /// One credential's file.
    pub fn secret_file(&self, instance: &str, name: SecretName) -> PathBuf {
        self.secrets_dir(instance).join(name.key())
    }

    /// The record of the instance's endpoints.
    pub fn endpoints_record(&self, instance: &str) -> PathBuf {
        self.instance_dir(instance).join("endpoints.json")
    }

    /// One member's directory.
    pub fn member_dir(&self, instance: &str, member: &str) -> PathBuf {
        self.instance_dir(instance).join(member)
    }

    /// The member's record.
    pub fn member_record(&self, instance: &str, member: &str) -> PathBuf {
        self.member_dir(instance, member).join("member.json")
    }

    /// The member's data directory.
    pub fn data_dir(&self, instance: &str, member: &str) -> PathBuf {
        self.member_dir(instance, member).join("data")
    }

    /// The member's sidecar log.
    pub fn log_file(&self, instance: &str, member: &str) -> PathBuf {
        self.member_dir(instance, member).join("sidecar.log")
    }

    /// The member's runtime directory: `<member>/run`, or `run/<member>` under the home when
    /// the first would make Postgres's socket path (for `pg_port`) too long.
    pub fn run_dir(&self, instance: &str, member: &str, pg_port: u16) -> anyhow::Result<PathBuf> {
        let fits = |dir: &Path| {
            dir.join(format!(".s.PGSQL.{pg_port}")).as_os_str().len() <= MAX_SOCKET_PATH
        };
        let beside = self.member_dir(instance, member).join("run");
        if fits(&beside) {
            return Ok(beside);
        }
        let short = self.home.join("run").join(member);
        if fits(&short) {
            return Ok(short);
        }
        bail!(
            "the socket path of member {member} under {} is longer than {MAX_SOCKET_PATH} bytes; \
             choose a shorter TOYGRES_HOME",
            self.home.display()
        )
    }

    /// Creates `dir` and its parents up to the home (0711 when shared, else 0700), setting the
    /// mode of those that exist too.
    pub fn create_dir(&self, dir: &Path) -> anyhow::Result<()> {
        let mode = if self.shared { 0o711 } else { 0o700 };
        fs::DirBuilder::new()
            .recursive(true)
            .mode(mode)
            .create(dir)
            .with_context(|| format!("create {}", dir.display()))?;
        for ancestor in dir.ancestors() {
            if !ancestor.starts_with(&self.home) {
                break;
            }
            let meta = fs::metadata(ancestor)
                .with_context(|| format!("read the metadata of {}", ancestor.display()))?;
            let current = meta.permissions().mode() & 0o7777;
            let wanted = if self.shared {
                current | 0o011
            } else {
                current
            };
            if wanted != current {
                fs::set_permissions(ancestor, fs::Permissions::from_mode(wanted))
                    .with_context(|| format!("make {} traversable", ancestor.display()))?;
            }
        }
        Ok(())
    }

    /// Fails with a clear message when the OS user `uid`:`gid` cannot search every directory
    /// from `/` down to the home.
    pub fn check_reachable_by(&self, user: &str, uid: u32, gid: u32) -> anyhow::Result<()> {
        for ancestor in self.home.ancestors() {
            let meta = match fs::metadata(ancestor) {
                Ok(meta) => meta,
                // Not created yet: create_dir gives it the right mode.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => {
                    return Err(e)
                        .with_context(|| format!("read the metadata of {}", ancestor.display()))
                }
            };
            if ancestor == self.home {
                // create_dir makes the home itself traversable.
                continue;
            }
            if !can_search(meta.mode(), meta.uid(), meta.gid(), uid, gid) {
                bail!(
                    "the {user} OS user, which runs Postgres, cannot enter {} (mode {:o}); choose \
                     a TOYGRES_HOME it can reach (for example /var/lib/toygres) or chmod o+x {}",
                    ancestor.display(),
                    meta.mode() & 0o777,
                    ancestor.display()
                );
            }
        }
        Ok(())
    }
}

/// Removes `path` (a file or a directory tree); succeeds when it is already gone.
pub fn remove_path(path: &Path) -> anyhow::Result<()> {
    let result = match fs::symlink_metadata(path) {
        Ok(meta) if meta.is_dir() => fs::remove_dir_all(path),
        Ok(_) => fs::remove_file(path),
        Err(e) => Err(e),
    };
    match result {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e).with_context(|| format!("remove {}", path.display())),
    }
}

/// Removes `dir` when it is empty; leaves it otherwise.
pub fn remove_dir_if_empty(dir: &Path) {
    // Fails on a non-empty or missing directory, both of which are fine.
    let _ = fs::remove_dir(dir);
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn shared_directories_are_traversable_up_to_the_home() {
        let dir = tempfile::tempdir().unwrap();
        let home = dir.path().join("home");
        let layout = LocalLayout::new(home.clone(), true);
        let data_parent = layout.member_dir("db", "db-0");
        layout.create_dir(&data_parent).unwrap();
        for path in [
            &home,
            &layout.instances_dir(),
            &layout.instance_dir("db"),
            &data_parent,
        ] {
            let mode = fs::metadata(path).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o711, "{}", path.display());
        }
        let private = LocalLayout::new(dir.path().join("private"), false);
        private.create_dir(&private.instance_dir("db")).unwrap();
        let mode = fs::metadata(private.instance_dir("db"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o700);
    }

    #[test]
    fn run_dir_moves_under_the_home_when_the_socket_path_is_too_long() {
        let layout = LocalLayout::new(PathBuf::from("/h"), false);
        assert_eq!(
            layout.run_dir("db", "db-0", 5432).unwrap(),
            PathBuf::from("/h/instances/db/db-0/run")
        );
        let long = "a".repeat(40);
        let member = format!("{long}-0");
        assert_eq!(
            layout.run_dir(&long, &member, 5432).unwrap(),
            PathBuf::from(format!("/h/run/{member}"))
        );
        let deep = LocalLayout::new(PathBuf::from(format!("/{}", "d".repeat(90))), false);
        assert!(deep.run_dir(&long, &member, 5432).is_err());
    }
}
