//! What this member's Postgres is told by `config`: where its files are, how it listens and
//! replicates, its passwords and its WAL archiving. `config` builds it from the flags once; the
//! `postgres` modules, bootstrap, restore and backups read only this, never the whole command line.

use std::path::PathBuf;
use std::time::Duration;

use crate::archive::ArchiveSetup;

/// Replication timeouts every member runs with (in `toygres.conf`). A primary sends its
/// standbys a keepalive once half of `wal_sender_timeout` passed without a reply, so an idle
/// standby still hears from a live primary about every half second: its `last_msg_receipt_time`
/// is fresh evidence that the primary lives, which the controller weighs before a failover
/// (only evidence younger than the instance's `standby_contact_window_ms`, 1 s by default,
/// counts: twice the keepalive period).
/// A standby ends a stream that stayed silent for `wal_receiver_timeout` (the default, 60 s,
/// kept a frozen primary's standbys "streaming" for a minute); CloudNativePG runs both at 5 s.
pub const REPLICATION_TIMEOUTS: &[&str] =
    &["wal_sender_timeout = '1s'", "wal_receiver_timeout = '5s'"];

/// The settings of the Postgres this sidecar owns.
#[derive(Debug, Clone)]
pub struct MemberSettings {
    pub data_dir: PathBuf,
    pub run_dir: PathBuf,
    pub pg_port: u16,
    pub pg_listen: String,
    pub member_name: String,
    pub pg_bin_dir: Option<PathBuf>,
    pub ready_max_lag_bytes: u64,
    pub max_slot_wal_keep_size: String,
    pub stop_timeout: Duration,
    pub start_timeout: Duration,
    pub isolation_lease: Option<Duration>,
    /// `--fence-token`: a platform that cannot reach the data directory fences a member it
    /// stopped by starting it again with a new token (see [`crate::bootstrap`]).
    pub fence_token: Option<String>,
    pub secrets: Passwords,
    /// This member's certificates and keys from its instance's CA (`--tls-dir`).
    pub tls: TlsMaterial,
    /// WAL archiving, when `--archive-url` is set.
    pub archive: Option<ArchiveSetup>,
}

impl MemberSettings {
    /// The replication slot this member streams through.
    pub fn slot_name(&self) -> String {
        toygres_common::names::slot_name_for_member(&self.member_name)
    }
}

/// The database passwords, read from their files at each use: a rotation replaces the file,
/// and the next peer connection, pg_rewind or role check uses the new value without a restart.
/// `Debug` never shows them. Replication has none: standbys authenticate with their client
/// certificate.
#[derive(Clone)]
pub struct Passwords {
    superuser_password_file: PathBuf,
}

impl Passwords {
    /// Reads the superuser's password file once, so a missing or malformed file stops the
    /// sidecar at its start rather than at the first use.
    pub fn from_file(superuser_password_file: PathBuf) -> anyhow::Result<Self> {
        read_secret_file(&superuser_password_file, "--superuser-password-file")?;
        Ok(Self {
            superuser_password_file,
        })
    }

    /// The superuser's password as its file holds it now.
    pub fn superuser_password(&self) -> anyhow::Result<String> {
        read_secret_file(&self.superuser_password_file, "--superuser-password-file")
    }
}

impl std::fmt::Debug for Passwords {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Passwords { <redacted> }")
    }
}

/// Reads a secret file: its content with one trailing newline removed; empty or several lines
/// is an error. `flag` names the file in errors (never its content).
pub fn read_secret_file(path: &std::path::Path, flag: &str) -> anyhow::Result<String> {
    use anyhow::Context as _;
    let text =
        std::fs::read_to_string(path).with_context(|| format!("read {flag} {}", path.display()))?;
    let secret = text.trim_end_matches(['\n', '\r']).to_string();
    if secret.is_empty() {
        anyhow::bail!("{flag} {} is empty", path.display());
    }
    if secret.contains(['\n', '\0']) {
        anyhow::bail!("{flag} {} must hold a single line", path.display());
    }
    Ok(secret)
}

/// This member's TLS files (named as in [`toygres_common::tls::MEMBER_FILES`]), read from
/// `--tls-dir` at start and again when the controller renews them ([`super::tls_renewal`]).
/// The sidecar copies them into its run directory, owned by the Postgres OS user, where
/// Postgres and libpq read them. Clones share one set, so a renewal reaches every holder.
/// `Debug` shows the file names only.
#[derive(Clone)]
pub struct TlsMaterial {
    files: std::sync::Arc<std::sync::RwLock<TlsFiles>>,
}

/// Each TLS file's name and content.
pub type TlsFiles = Vec<(&'static str, Vec<u8>)>;

impl TlsMaterial {
    /// Reads every file of `dir`; a missing, empty or non-PEM file is an error.
    pub fn read(dir: &std::path::Path) -> anyhow::Result<Self> {
        Ok(Self::from_files(Self::read_files(dir)?))
    }

    fn from_files(files: TlsFiles) -> Self {
        Self {
            files: std::sync::Arc::new(std::sync::RwLock::new(files)),
        }
    }

    /// Every file of `dir` with its content. The optional files
    /// ([`toygres_common::tls::OPTIONAL_MEMBER_FILES`], the rewind role's certificate and key)
    /// are left out unless both are there: a member issued its files before that role existed
    /// has neither, and rewinds as the superuser until its next renewal brings them.
    pub fn read_files(dir: &std::path::Path) -> anyhow::Result<TlsFiles> {
        use anyhow::Context as _;
        use toygres_common::tls::{is_optional, OPTIONAL_MEMBER_FILES};
        let optional_present = OPTIONAL_MEMBER_FILES
            .iter()
            .all(|name| dir.join(name).is_file());
        let mut files = Vec::new();
        for (name, _) in toygres_common::tls::MEMBER_FILES {
            if is_optional(name) && !optional_present {
                continue;
            }
            let path = dir.join(name);
            let bytes = std::fs::read(&path).with_context(|| format!("read {}", path.display()))?;
            if !bytes.starts_with(b"-----BEGIN ") {
                anyhow::bail!("{} is not a PEM file", path.display());
            }
            files.push((name, bytes));
        }
        Ok(files)
    }

    /// Whether file `name` is held (the optional ones may not be).
    pub fn has(&self, name: &str) -> bool {
        self.files
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .any(|(n, _)| *n == name)
    }

    /// The content of file `name`.
    pub fn file(&self, name: &str) -> Vec<u8> {
        self.files()
            .into_iter()
            .find(|(n, _)| *n == name)
            .map(|(_, bytes)| bytes)
            .unwrap_or_default()
    }

    /// Every file with its content, as held now.
    pub fn files(&self) -> TlsFiles {
        self.files.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Holds `files` from now on (every clone sees them).
    pub fn replace(&self, files: TlsFiles) {
        *self.files.write().unwrap_or_else(|e| e.into_inner()) = files;
    }
}

impl std::fmt::Debug for TlsMaterial {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.files().iter().map(|(name, _)| *name))
            .finish()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use toygres_common::tls::{MEMBER_FILES, REWIND_CERT, REWIND_KEY};

    use super::*;

    #[test]
    fn the_rewind_certificate_is_optional_but_only_as_a_pair() {
        let dir = tempfile::tempdir().unwrap();
        for (name, _) in MEMBER_FILES {
            std::fs::write(dir.path().join(name), format!("-----BEGIN {name}")).unwrap();
        }
        let all = TlsMaterial::read(dir.path()).unwrap();
        assert!(all.has(REWIND_CERT) && all.has(REWIND_KEY));
        assert_eq!(all.files().len(), MEMBER_FILES.len());
        // Issued before the role existed: neither file; or caught half-way: one of them.
        std::fs::remove_file(dir.path().join(REWIND_KEY)).unwrap();
        let older = TlsMaterial::read(dir.path()).unwrap();
        assert!(!older.has(REWIND_CERT) && !older.has(REWIND_KEY));
        assert_eq!(older.files().len(), MEMBER_FILES.len() - 2);
        std::fs::remove_file(dir.path().join(REWIND_CERT)).unwrap();
        assert_eq!(TlsMaterial::read(dir.path()).unwrap().files().len(), 7);
        // The others stay required.
        std::fs::remove_file(dir.path().join(toygres_common::tls::SUPERUSER_KEY)).unwrap();
        assert!(TlsMaterial::read(dir.path()).is_err());
    }
}
