//! WAL archiving to object storage and WAL restore from it.
//!
//! Postgres runs the sidecar binary itself as its `archive_command` (`wal-push`, [`push`]) and
//! `restore_command` (`wal-fetch`, [`fetch`]). Those short-lived processes read their settings
//! from a small, non-secret JSON file ([`ArchiveSettings`]) that the sidecar writes into its run
//! directory before Postgres starts; credentials reach them through the environment Postgres
//! inherited from the sidecar, or from the credentials directory the settings name. Objects live at
//! `<instance>/wal/<file>[.gz|.zst|.lz4]` under the store URL ([`compression`]).

pub mod ahead;
pub mod claims;
pub mod compression;
pub mod fetch;
pub mod push;
pub mod stats;
pub mod switch;
pub mod walname;

use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::{Deserialize, Serialize};
use toygres_common::store_url::StoreUrl;

pub use compression::{decompress, Compression};

/// What `wal-push` and `wal-fetch` need to know, written by the sidecar as
/// `<run dir>/archive/config.json`. Holds no secrets.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ArchiveSettings {
    /// The store WAL is archived to.
    pub url: StoreUrl,
    /// The instance whose WAL this is: the first component of every key.
    pub instance: String,
    /// How WAL is compressed.
    pub compression: Compression,
    /// Uploads (and downloads) in flight at once, the requested file included.
    pub concurrency: usize,
    /// The sidecar-owned directory for markers, prefetched WAL and counters.
    pub state_dir: PathBuf,
    /// Postgres's WAL segment size.
    #[serde(default = "default_segment_size")]
    pub wal_segment_size: u64,
    /// Where the store's credentials are kept as files ([`crate::objstore::credentials`]): a
    /// path, never the values.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials_dir: Option<PathBuf>,
}

fn default_segment_size() -> u64 {
    walname::DEFAULT_SEGMENT_SIZE
}

/// The most parallel transfers `--archive-concurrency` allows.
pub const MAX_CONCURRENCY: usize = 64;

impl ArchiveSettings {
    /// The settings file's path inside the state directory.
    pub fn config_file(&self) -> PathBuf {
        self.state_dir.join("config.json")
    }

    /// Reads the settings file `wal-push` and `wal-fetch` are pointed at.
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let bytes = std::fs::read(path)
            .with_context(|| format!("read the archive settings {}", path.display()))?;
        let settings: Self = serde_json::from_slice(&bytes)
            .with_context(|| format!("parse the archive settings {}", path.display()))?;
        settings.validate()?;
        if let Some(dir) = &settings.credentials_dir {
            crate::objstore::credentials::use_dir(dir);
        }
        let ring = settings.encryption_keyring_copy();
        let key = settings.encryption_key_copy();
        if ring.is_dir() {
            crate::objstore::crypt::use_keyring(&ring)?;
        } else if key.exists() {
            crate::objstore::crypt::use_key_file(&key)?;
        }
        Ok(settings)
    }

    /// Checks the values a hand-edited file could get wrong.
    pub fn validate(&self) -> anyhow::Result<()> {
        toygres_common::names::validate_instance_name(&self.instance)
            .context("check the archive instance name")?;
        if !(1..=MAX_CONCURRENCY).contains(&self.concurrency) {
            anyhow::bail!(
                "the archive concurrency must be between 1 and {MAX_CONCURRENCY}, not {}",
                self.concurrency
            );
        }
        if !self.wal_segment_size.is_power_of_two() || self.wal_segment_size < 1 << 20 {
            anyhow::bail!(
                "the WAL segment size {} is not a power of two of at least 1 MiB",
                self.wal_segment_size
            );
        }
        Ok(())
    }

    /// The store key of a WAL file, with the suffix of `compression`.
    pub fn wal_key(&self, name: &str, compression: Compression) -> String {
        format!("{}/wal/{name}{}", self.instance, compression.suffix())
    }

    /// The keys a WAL file may be stored under, the current compression's first (an archive may
    /// hold files written under an earlier setting).
    pub fn wal_keys(&self, name: &str) -> Vec<String> {
        let mut keys = vec![self.wal_key(name, self.compression)];
        for other in compression::ALL {
            if other.suffix() != self.compression.suffix() {
                keys.push(self.wal_key(name, other));
            }
        }
        keys
    }

    /// The copy of the instance's encryption key `wal-push` and `wal-fetch` read (present only
    /// when the instance's backups are encrypted).
    pub fn encryption_key_copy(&self) -> PathBuf {
        self.state_dir.join("encryption-key")
    }

    /// The copy of the instance's key ring `wal-push` and `wal-fetch` read (present only when
    /// the member was given a ring rather than one key file).
    pub fn encryption_keyring_copy(&self) -> PathBuf {
        self.state_dir.join("keyring")
    }

    /// Writes this process's encryption keys where `wal-push` and `wal-fetch` read them (again
    /// after a rotation).
    pub fn copy_keys(&self, bins: &toygres_common::pg_exec::PgBinaries) -> anyhow::Result<()> {
        crate::objstore::crypt::copy_key_for(
            bins,
            &self.encryption_key_copy(),
            &self.encryption_keyring_copy(),
        )
    }

    /// Where markers of files pushed ahead of Postgres's request live.
    pub fn pushed_dir(&self) -> PathBuf {
        self.state_dir.join("pushed")
    }

    /// Where claims on WAL files being uploaded live ([`claims::Claim`]).
    pub fn claims_dir(&self) -> PathBuf {
        self.state_dir.join("claims")
    }

    /// Where WAL fetched ahead of replay waits.
    pub fn prefetch_dir(&self) -> PathBuf {
        self.state_dir.join("prefetch")
    }

    /// Present while a [`fetch::keep_prefetch_window`] runs for these settings.
    pub fn window_marker(&self) -> PathBuf {
        self.state_dir.join("window-active")
    }
}

/// `toygres-sidecar wal-push`: Postgres's `archive_command`.
#[derive(Debug, Clone, clap::Args)]
pub struct WalPushArgs {
    /// The archive settings file the sidecar wrote.
    #[arg(long, env = "TOYGRES_ARCHIVE_CONFIG")]
    pub config: PathBuf,
    /// The WAL file to archive (`%p`: a path relative to the data directory).
    pub path: PathBuf,
}

/// `toygres-sidecar wal-fetch`: Postgres's `restore_command`.
#[derive(Debug, Clone, clap::Args)]
pub struct WalFetchArgs {
    /// The archive settings file the sidecar wrote.
    #[arg(long, env = "TOYGRES_ARCHIVE_CONFIG")]
    pub config: PathBuf,
    /// The WAL file Postgres wants (`%f`).
    pub name: String,
    /// Where to put it (`%p`).
    pub path: PathBuf,
}

/// The sidecar's archive setup: the settings plus the binary Postgres runs as its hooks.
#[derive(Debug, Clone)]
pub struct ArchiveSetup {
    pub settings: ArchiveSettings,
    /// The running sidecar binary's absolute path.
    pub exe: PathBuf,
}

/// Quotes `value` for `/bin/sh` (Postgres runs the commands through the shell).
fn sh_quote(value: &str) -> String {
    if !value.is_empty()
        && value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "/._-+=:,@".contains(c))
    {
        value.to_string()
    } else {
        format!("'{}'", value.replace('\'', "'\\''"))
    }
}

impl ArchiveSetup {
    fn hook(&self, subcommand: &str, args: &str) -> String {
        // `%` introduces Postgres's placeholders: a literal one in a path is doubled.
        let exe = sh_quote(&self.exe.display().to_string()).replace('%', "%%");
        let config =
            sh_quote(&self.settings.config_file().display().to_string()).replace('%', "%%");
        format!("{exe} {subcommand} --config {config} {args}")
    }

    /// `archive_command`: pushes `%p`.
    pub fn archive_command(&self) -> String {
        self.hook("wal-push", "%p")
    }

    /// `restore_command`: fetches `%f` into `%p`.
    pub fn restore_command(&self) -> String {
        self.hook("wal-fetch", "%f %p")
    }

    /// The lines `toygres.conf` gets (values quoted with `quote`).
    pub fn conf_lines(&self, quote: impl Fn(&str) -> String) -> Vec<String> {
        vec![
            "archive_mode = on".into(),
            format!("archive_command = {}", quote(&self.archive_command())),
            format!("restore_command = {}", quote(&self.restore_command())),
        ]
    }

    /// Creates the state directory (owned by the Postgres OS user, like the run directory),
    /// empties the prefetch directory, and writes the settings file `wal-push` and `wal-fetch`
    /// read. Runs before every start of Postgres.
    pub fn write_files(&self, bins: &toygres_common::pg_exec::PgBinaries) -> anyhow::Result<()> {
        let s = &self.settings;
        for dir in [
            s.state_dir.clone(),
            s.pushed_dir(),
            s.claims_dir(),
            s.prefetch_dir(),
        ] {
            crate::owned::ensure_private_dir(bins, &dir)?;
        }
        // WAL prefetched for an earlier run may belong to a timeline this one never replays:
        // start with an empty prefetch directory so it cannot pile up.
        if let Ok(entries) = std::fs::read_dir(s.prefetch_dir()) {
            for e in entries.flatten() {
                let _ = std::fs::remove_file(e.path());
            }
        }
        // Nor a prefetch window's marker that a crash left behind: no window runs yet.
        let _ = std::fs::remove_file(s.window_marker());
        // A local store directory the sidecar creates belongs to the Postgres OS user, who runs
        // wal-push; an existing one is left as its owner set it up.
        if let toygres_common::store_url::StoreLocation::File { root } = &s.url.location {
            if !root.exists() {
                std::fs::create_dir_all(root)
                    .with_context(|| format!("create the store directory {}", root.display()))?;
                bins.chown(root)?;
            }
            // The sidecar itself writes backups into the same tree (as root, when it runs as
            // root): the instance's WAL directory must exist, owned by the Postgres OS user,
            // before a backup creates the instance directory as root.
            let wal_dir = root.join(&s.instance).join("wal");
            if !wal_dir.exists() {
                std::fs::create_dir_all(&wal_dir)
                    .with_context(|| format!("create the WAL directory {}", wal_dir.display()))?;
                bins.chown(&root.join(&s.instance))?;
                bins.chown(&wal_dir)?;
            }
        }
        // wal-push and wal-fetch run as the Postgres OS user: they read a copy of the store's
        // credentials that this user owns, refreshed before every start.
        let mut written = s.clone();
        if let Some(source) = &s.credentials_dir {
            let copy = s.state_dir.join("credentials");
            copy_credentials(bins, source, &copy)?;
            written.credentials_dir = Some(copy);
        }
        s.copy_keys(bins)?;
        let json = serde_json::to_vec_pretty(&written).context("serialize the archive settings")?;
        crate::owned::write_file(bins, &s.config_file(), &json, 0o600)
    }
}

/// Copies the visible files of the credentials directory `source` into `copy` (0700, files
/// 0600, owned by the Postgres OS user), removing files `source` no longer has.
fn copy_credentials(
    bins: &toygres_common::pg_exec::PgBinaries,
    source: &Path,
    copy: &Path,
) -> anyhow::Result<()> {
    crate::owned::ensure_private_dir(bins, copy)?;
    let mut kept = std::collections::BTreeSet::new();
    let entries = std::fs::read_dir(source)
        .with_context(|| format!("read the store credentials directory {}", source.display()))?;
    for entry in entries {
        let entry = entry.with_context(|| format!("list {}", source.display()))?;
        let name = entry.file_name();
        let path = entry.path();
        if name.to_string_lossy().starts_with('.') || !path.is_file() {
            continue;
        }
        let value = std::fs::read(&path).with_context(|| format!("read {}", path.display()))?;
        crate::owned::write_file(bins, &copy.join(&name), &value, 0o600)?;
        kept.insert(name);
    }
    for entry in std::fs::read_dir(copy)
        .with_context(|| format!("list {}", copy.display()))?
        .flatten()
    {
        if !kept.contains(&entry.file_name()) {
            let _ = std::fs::remove_file(entry.path());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(compression: Compression) -> ArchiveSettings {
        ArchiveSettings {
            url: "s3://bucket/pfx".parse().unwrap(),
            instance: "db".into(),
            compression,
            concurrency: 4,
            state_dir: "/run/db 1/archive".into(),
            wal_segment_size: walname::DEFAULT_SEGMENT_SIZE,
            credentials_dir: None,
        }
    }

    #[test]
    fn keys_follow_the_layout() {
        let s = settings(Compression::Gzip(1));
        assert_eq!(
            s.wal_keys("000000010000000000000001"),
            [
                "db/wal/000000010000000000000001.gz",
                "db/wal/000000010000000000000001",
                "db/wal/000000010000000000000001.zst",
                "db/wal/000000010000000000000001.lz4",
            ]
        );
        let s = settings(Compression::Zstd(1));
        assert_eq!(
            s.wal_keys("00000002.history"),
            [
                "db/wal/00000002.history.zst",
                "db/wal/00000002.history.gz",
                "db/wal/00000002.history",
                "db/wal/00000002.history.lz4",
            ]
        );
        let s = settings(Compression::None);
        assert_eq!(s.wal_keys("00000002.history")[0], "db/wal/00000002.history");
    }

    #[test]
    fn settings_file_round_trips_and_is_validated() {
        let s = settings(Compression::Gzip(3));
        let json = serde_json::to_string(&s).unwrap();
        assert!(json.contains("\"compression\":\"3\""), "{json}");
        let back: ArchiveSettings = serde_json::from_str(&json).unwrap();
        assert_eq!(back, s);
        let mut bad = s.clone();
        bad.concurrency = 0;
        assert!(bad.validate().is_err());
        bad.concurrency = 4;
        bad.instance = "Bad".into();
        assert!(bad.validate().is_err());
    }

    #[test]
    fn hooks_quote_paths_for_the_shell_and_postgres() {
        let setup = ArchiveSetup {
            settings: settings(Compression::Gzip(1)),
            exe: "/opt/toy gres/bin/toygres-sidecar".into(),
        };
        assert_eq!(
            setup.archive_command(),
            "'/opt/toy gres/bin/toygres-sidecar' wal-push --config '/run/db 1/archive/config.json' %p"
        );
        assert!(setup.restore_command().ends_with(" %f %p"));
        let mut pct = setup.clone();
        pct.exe = "/opt/100%/sidecar".into();
        assert!(pct
            .archive_command()
            .starts_with("'/opt/100%%/sidecar' wal-push"));
        assert_eq!(sh_quote("it's"), "'it'\\''s'");
        let lines = setup.conf_lines(|v| format!("<{v}>"));
        assert_eq!(lines[0], "archive_mode = on");
        assert!(lines[1].starts_with("archive_command = <"));
    }
}
