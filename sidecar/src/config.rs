//! The sidecar's settings: flags and environment variables, validated once into a [`Config`]
//! made of per-concern settings that are handed down — the API's address and token, this
//! member's Postgres ([`MemberSettings`], with its archive settings) and how to bootstrap it
//! ([`BootstrapMode`]). Nothing below `main` sees the whole `Config`. Secrets (passwords, the API
//! token) come from files and never from the command line.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::{bail, Context};
use toygres_common::names::{validate_member_name, PgAddress};
use toygres_common::store_url::StoreUrl;

use crate::archive::{ArchiveSettings, ArchiveSetup, Compression};
use crate::bootstrap::BootstrapMode;
use crate::postgres::settings::{read_secret_file as read_secret, MemberSettings, Passwords};

/// How the data directory is created when it is empty (`--bootstrap`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum BootstrapKind {
    /// initdb: a new primary.
    Init,
    /// pg_basebackup from `--primary`: a new standby.
    Standby,
    /// A base backup from object storage (`--restore-*`), recovered to an optional target.
    Restore,
}

/// `toygres-sidecar run` flags. Every flag can also be set through the environment variable
/// named beside it.
#[derive(Debug, Clone, clap::Args)]
pub struct RunArgs {
    /// The Postgres data directory. Bootstrap happens only when it is empty or missing.
    #[arg(long, env = "TOYGRES_DATA_DIR")]
    pub data_dir: PathBuf,
    /// The port Postgres listens on.
    #[arg(long, env = "TOYGRES_PG_PORT", default_value_t = 5432)]
    pub pg_port: u16,
    /// Postgres's `listen_addresses`.
    #[arg(long, env = "TOYGRES_PG_LISTEN", default_value = "127.0.0.1")]
    pub pg_listen: String,
    /// Where the HTTP API listens.
    #[arg(long, env = "TOYGRES_API_ADDR", default_value = "127.0.0.1:8008")]
    pub api_addr: SocketAddr,
    /// A file holding the bearer token the API requires.
    #[arg(long, env = "TOYGRES_TOKEN_FILE")]
    pub token_file: PathBuf,
    /// This member's name (`<instance>-<n>`): the standby's application_name and slot.
    #[arg(long, env = "TOYGRES_MEMBER_NAME")]
    pub member_name: String,
    /// How to create an empty data directory.
    #[arg(long, env = "TOYGRES_BOOTSTRAP", value_enum, default_value = "init")]
    pub bootstrap: BootstrapKind,
    /// The primary to copy and follow (`--bootstrap standby`), as HOST:PORT.
    #[arg(long, env = "TOYGRES_PRIMARY")]
    pub primary: Option<PgAddress>,
    /// Where Postgres's programs are (found automatically when omitted).
    #[arg(long, env = "TOYGRES_PG_BIN_DIR")]
    pub pg_bin_dir: Option<PathBuf>,
    /// A file holding the password of the `postgres` superuser.
    #[arg(long, env = "TOYGRES_SUPERUSER_PASSWORD_FILE")]
    pub superuser_password_file: PathBuf,
    /// Not used any more (replication authenticates with client certificates, see
    /// `--tls-dir`); accepted so launchers that still pass it keep working.
    #[arg(long, env = "TOYGRES_REPLICATION_PASSWORD_FILE", hide = true)]
    pub replication_password_file: Option<PathBuf>,
    /// A directory holding this member's TLS files from its instance's CA: `ca.crt`,
    /// `server.crt`/`server.key`, and the client certificates `replicator.crt`/`.key`,
    /// `superuser.crt`/`.key` and `rewind.crt`/`.key` (pg_rewind's role `toygres_rewind`;
    /// optional: without it pg_rewind runs as the superuser). Postgres serves TLS only,
    /// replication and pg_rewind authenticate with their client certificates, and this member
    /// connects to another only after verifying it.
    #[arg(long, env = "TOYGRES_TLS_DIR")]
    pub tls_dir: PathBuf,
    /// Directory for Postgres's socket and the sidecar's runtime files (default: `<data-dir>.run`).
    #[arg(long, env = "TOYGRES_RUN_DIR")]
    pub run_dir: Option<PathBuf>,
    /// A standby is ready only while its replay lag stays within this many bytes.
    #[arg(long, env = "TOYGRES_READY_MAX_LAG_BYTES", default_value_t = 16 * 1024 * 1024)]
    pub ready_max_lag_bytes: u64,
    /// Postgres's `max_slot_wal_keep_size`: the most WAL a lost standby's slot may hold back.
    #[arg(long, env = "TOYGRES_MAX_SLOT_WAL_KEEP_SIZE", default_value = "4GB")]
    pub max_slot_wal_keep_size: String,
    /// Seconds a fast shutdown may take before it becomes an immediate one.
    #[arg(long, env = "TOYGRES_STOP_TIMEOUT_SECS", default_value_t = 30)]
    pub stop_timeout_secs: u64,
    /// Seconds Postgres may take to accept connections after a start (crash recovery included).
    #[arg(long, env = "TOYGRES_START_TIMEOUT_SECS", default_value_t = 300)]
    pub start_timeout_secs: u64,
    /// A primary that hears from neither the controller (an authenticated request) nor a
    /// streaming standby for this many seconds fences itself. 0 (the default) disables it; it
    /// arms at the first authenticated request.
    #[arg(long, env = "TOYGRES_ISOLATION_LEASE_SECS", default_value_t = 0)]
    pub isolation_lease_secs: u64,
    /// The controller's API (`https://HOST:PORT`), told at once when Postgres dies, the WAL
    /// receiver loses the primary, or the member fences itself. The reports are authenticated
    /// with a token derived from the API token. No reports when absent.
    #[arg(long, env = "TOYGRES_NOTIFY_URL")]
    pub notify_url: Option<String>,
    /// A token the platform changes each time it stops this member for good (a failed-over
    /// primary). The first start that sees a new token keeps an existing primary's Postgres
    /// stopped (fenced) until the controller makes it a standby; later starts with the same
    /// token change nothing. For platforms that cannot write the fence marker into the data
    /// directory themselves (Kubernetes).
    #[arg(long, env = "TOYGRES_FENCE_TOKEN")]
    pub fence_token: Option<String>,
    /// The CA certificate (PEM) the controller's certificate must come from, for an `https://`
    /// `--notify-url`: reports go only to a controller that proves who it is.
    #[arg(long, env = "TOYGRES_NOTIFY_CA_FILE")]
    pub notify_ca_file: Option<PathBuf>,
    /// Object store WAL is archived to and restored from: `file:///path`, `s3://bucket/prefix`,
    /// `az://container/prefix` or `gs://bucket/prefix`, with credentials from the environment.
    /// No archiving when absent.
    #[arg(long, env = "TOYGRES_ARCHIVE_URL")]
    pub archive_url: Option<StoreUrl>,
    /// A directory of files holding the store's credentials, one per setting, named like the
    /// provider's environment variable (`AWS_SECRET_ACCESS_KEY`, …): a mounted Secret. Never the
    /// values themselves on the command line or in the environment.
    #[arg(long, env = "TOYGRES_STORE_CREDENTIALS_DIR")]
    pub store_credentials_dir: Option<PathBuf>,
    /// A file holding the key (64 hex digits) every object written to the store is encrypted
    /// with, and objects read from it (a restore's source too) are decrypted with: a mounted
    /// secret, never the key itself.
    #[arg(long, env = "TOYGRES_BACKUP_ENCRYPTION_KEY_FILE")]
    pub backup_encryption_key_file: Option<PathBuf>,
    /// A key ring directory (wins over `--backup-encryption-key-file`): `current.key` encrypts
    /// what is written, every `*.key` (64 hex digits each) decrypts what it encrypted, so a
    /// rotated key leaves older objects readable. Read at start and again on
    /// `POST /v1/encryption/reload`.
    #[arg(long, env = "TOYGRES_BACKUP_ENCRYPTION_KEYRING")]
    pub backup_encryption_keyring: Option<PathBuf>,
    /// The instance name archived WAL is stored under (default: the member name without its
    /// trailing `-<n>`).
    #[arg(long, env = "TOYGRES_INSTANCE_NAME")]
    pub instance_name: Option<String>,
    /// WAL and base backup compression: `zstd` (level 1) or `zstd:LEVEL`, `lz4`, `gzip` (level
    /// 6), `gzip:LEVEL` or a bare gzip level 0-9, or `none`. zstd 1 compresses pgbench WAL
    /// smaller than gzip 1 at a fraction of its CPU; objects written with another setting stay
    /// readable (each object's name says how it was compressed).
    #[arg(long, env = "TOYGRES_WAL_COMPRESSION", default_value = "zstd")]
    pub wal_compression: Compression,
    /// WAL files uploaded (and prefetched) in parallel.
    #[arg(long, env = "TOYGRES_ARCHIVE_CONCURRENCY", default_value_t = 4)]
    pub archive_concurrency: usize,
    /// `--bootstrap restore`: the store holding the source's backups and WAL (default: the
    /// archive URL).
    #[arg(long, env = "TOYGRES_RESTORE_FROM")]
    pub restore_from: Option<StoreUrl>,
    /// `--bootstrap restore`: the instance whose backup is restored.
    #[arg(long, env = "TOYGRES_RESTORE_INSTANCE")]
    pub restore_instance: Option<String>,
    /// `--bootstrap restore`: the base backup to restore (default: the latest one complete
    /// before the recovery target).
    #[arg(long, env = "TOYGRES_RESTORE_BACKUP_ID")]
    pub restore_backup_id: Option<String>,
    /// `--bootstrap restore`: the restore replaces the data of the instance it restores (an
    /// in-place restore, the old data set aside by the platform): this member may then archive
    /// into that instance's WAL (on the new timeline its promotion starts), which is otherwise
    /// refused.
    #[arg(
        long,
        env = "TOYGRES_RESTORE_IN_PLACE",
        default_value_t = false,
        action = clap::ArgAction::Set
    )]
    pub restore_in_place: bool,
    /// Recover up to this time (with a zone: `2026-11-23 06:15:00+00`).
    #[arg(long, env = "TOYGRES_RECOVERY_TARGET_TIME")]
    pub recovery_target_time: Option<String>,
    /// Recover up to this WAL position (`0/3000060`).
    #[arg(long, env = "TOYGRES_RECOVERY_TARGET_LSN")]
    pub recovery_target_lsn: Option<String>,
    /// Recover up to the commit of this transaction.
    #[arg(long, env = "TOYGRES_RECOVERY_TARGET_XID")]
    pub recovery_target_xid: Option<String>,
    /// Recover up to this restore point (`pg_create_restore_point`).
    #[arg(long, env = "TOYGRES_RECOVERY_TARGET_NAME")]
    pub recovery_target_name: Option<String>,
    /// What to do at the recovery target.
    #[arg(
        long,
        env = "TOYGRES_RECOVERY_TARGET_ACTION",
        value_enum,
        default_value = "promote"
    )]
    pub recovery_target_action: crate::restore::TargetAction,
}

/// The bearer token the API requires, read from its file. `Debug` never shows it.
#[derive(Clone)]
pub struct ApiToken(pub String);

impl std::fmt::Debug for ApiToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ApiToken(<redacted>)")
    }
}

/// Validated settings, by concern.
#[derive(Debug, Clone)]
pub struct Config {
    pub api_addr: SocketAddr,
    pub api_token: ApiToken,
    /// `--tls-dir`: the API serves its `server.crt`/`server.key`, re-read when renewed.
    pub tls_dir: PathBuf,
    /// This member's Postgres.
    pub member: MemberSettings,
    /// How to make the data directory when it is empty.
    pub bootstrap: BootstrapMode,
    /// Where to report what happens to the member (`--notify-url`).
    pub notify: Option<crate::notify::Notifier>,
    /// The instance reports name (`--instance-name`, else the member's name without its
    /// number), also when the controller points the reports elsewhere (`PUT /v1/notify`).
    pub report_instance: String,
}

impl Config {
    /// Checks every setting and reads the secret files; any problem is a clear error.
    pub fn from_args(args: RunArgs) -> anyhow::Result<Self> {
        validate_member_name(&args.member_name).context("check --member-name")?;
        if args.bootstrap == BootstrapKind::Standby && args.primary.is_none() {
            bail!("--bootstrap standby needs --primary HOST:PORT");
        }
        if args.pg_port == 0 {
            bail!("--pg-port must not be 0");
        }
        if args.pg_listen.is_empty()
            || !args.pg_listen.chars().all(|c| {
                c.is_ascii_alphanumeric() || matches!(c, '.' | ':' | ',' | '*' | '-' | ' ')
            })
        {
            bail!(
                "--pg-listen {:?} is not a list of addresses",
                args.pg_listen
            );
        }
        if !args
            .max_slot_wal_keep_size
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-')
        {
            bail!(
                "--max-slot-wal-keep-size {:?} is not a size",
                args.max_slot_wal_keep_size
            );
        }
        let data_dir = std::path::absolute(&args.data_dir)?;
        let run_dir = match args.run_dir.clone() {
            Some(dir) => std::path::absolute(&dir)?,
            None => {
                let mut name = data_dir
                    .file_name()
                    .context("--data-dir has no final component")?
                    .to_os_string();
                name.push(".run");
                data_dir.with_file_name(name)
            }
        };
        // Postgres's socket path must fit in sun_path (108 bytes).
        let socket = run_dir.join(format!(".s.PGSQL.{}", args.pg_port));
        if socket.as_os_str().len() > 100 {
            bail!(
                "the socket path {} is too long for a Unix socket; pass a shorter --run-dir",
                socket.display()
            );
        }
        let api_token = ApiToken(read_secret(&args.token_file, "--token-file")?);
        let secrets = Passwords::from_file(std::path::absolute(&args.superuser_password_file)?)?;
        let tls = crate::postgres::settings::TlsMaterial::read(&args.tls_dir)
            .context("read the TLS files of --tls-dir")?;
        if api_token.0.len() < 16 {
            bail!("the API token in --token-file must be at least 16 characters");
        }
        if let Some(dir) = &args.store_credentials_dir {
            if !dir.is_dir() {
                bail!(
                    "--store-credentials-dir {} is not a directory",
                    dir.display()
                );
            }
            // Every store this process opens (archive, backups, restores) uses them.
            crate::objstore::credentials::use_dir(dir);
        }
        if let Some(dir) = &args.backup_encryption_keyring {
            // Every store this process opens encrypts with its current key.
            crate::objstore::crypt::use_keyring(dir).context("read --backup-encryption-keyring")?;
        } else if let Some(file) = &args.backup_encryption_key_file {
            // Every store this process opens encrypts with it.
            crate::objstore::crypt::use_key_file(file)
                .context("read --backup-encryption-key-file")?;
        }
        let archive = match args.archive_url.clone() {
            None => None,
            Some(url) => {
                let instance = match args.instance_name.clone() {
                    Some(name) => name,
                    None => instance_of_member(&args.member_name),
                };
                let settings = ArchiveSettings {
                    url,
                    instance,
                    compression: args.wal_compression,
                    concurrency: args.archive_concurrency,
                    state_dir: run_dir.join("archive"),
                    wal_segment_size: crate::archive::walname::DEFAULT_SEGMENT_SIZE,
                    credentials_dir: args.store_credentials_dir.clone(),
                };
                settings
                    .validate()
                    .context("check --instance-name and --archive-concurrency")?;
                let exe = std::env::current_exe()
                    .context("find the sidecar binary (Postgres runs it to archive WAL)")?;
                Some(ArchiveSetup { settings, exe })
            }
        };
        let bootstrap = bootstrap_mode(&args, archive.as_ref())?;
        let report_instance = args
            .instance_name
            .clone()
            .unwrap_or_else(|| instance_of_member(&args.member_name));
        let notify = match &args.notify_url {
            None => None,
            Some(url) => {
                let ca = args
                    .notify_ca_file
                    .as_deref()
                    .map(|file| {
                        std::fs::read(file).with_context(|| format!("read {}", file.display()))
                    })
                    .transpose()?;
                Some(
                    crate::notify::Notifier::new(
                        url,
                        &report_instance,
                        &args.member_name,
                        &api_token.0,
                        ca.as_deref(),
                    )
                    .context("check --notify-url and --notify-ca-file")?,
                )
            }
        };
        Ok(Config {
            api_addr: args.api_addr,
            api_token,
            tls_dir: args.tls_dir.clone(),
            member: MemberSettings {
                data_dir,
                run_dir,
                pg_port: args.pg_port,
                pg_listen: args.pg_listen,
                member_name: args.member_name,
                pg_bin_dir: args.pg_bin_dir,
                ready_max_lag_bytes: args.ready_max_lag_bytes,
                max_slot_wal_keep_size: args.max_slot_wal_keep_size,
                stop_timeout: std::time::Duration::from_secs(args.stop_timeout_secs),
                start_timeout: std::time::Duration::from_secs(args.start_timeout_secs),
                isolation_lease: (args.isolation_lease_secs > 0)
                    .then(|| std::time::Duration::from_secs(args.isolation_lease_secs)),
                fence_token: args.fence_token.filter(|token| !token.is_empty()),
                secrets,
                tls,
                archive,
            },
            bootstrap,
            notify,
            report_instance,
        })
    }
}

/// How `--bootstrap` makes the data directory, checked: the primary to copy, or the restore
/// (`--restore-*`, `--recovery-target-*`) to perform.
fn bootstrap_mode(args: &RunArgs, archive: Option<&ArchiveSetup>) -> anyhow::Result<BootstrapMode> {
    let target = crate::restore::RecoveryTarget::from_flags(
        args.recovery_target_time.as_deref(),
        args.recovery_target_lsn.as_deref(),
        args.recovery_target_xid.as_deref(),
        args.recovery_target_name.as_deref(),
    )?;
    if args.bootstrap != BootstrapKind::Restore {
        if target.is_some()
            || args.restore_instance.is_some()
            || args.restore_backup_id.is_some()
            || args.restore_in_place
        {
            bail!("--restore-* and --recovery-target-* apply only to --bootstrap restore");
        }
        return Ok(match (args.bootstrap, &args.primary) {
            (BootstrapKind::Standby, Some(primary)) => BootstrapMode::Standby {
                primary: primary.clone(),
            },
            (BootstrapKind::Standby, None) => {
                bail!("--bootstrap standby needs --primary HOST:PORT")
            }
            _ => BootstrapMode::Init,
        });
    }
    let url = match (&args.restore_from, archive) {
        (Some(url), _) => url.clone(),
        (None, Some(a)) => a.settings.url.clone(),
        (None, None) => bail!("--bootstrap restore needs --restore-from or --archive-url"),
    };
    let instance = args
        .restore_instance
        .clone()
        .context("--bootstrap restore needs --restore-instance (the source instance)")?;
    toygres_common::names::validate_instance_name(&instance).context("check --restore-instance")?;
    if let Some(a) = archive {
        if a.settings.url == url && a.settings.instance == instance && !args.restore_in_place {
            bail!(
                "this member would archive into the WAL of the instance it restores ({instance});                  give it its own --instance-name"
            );
        }
    }
    if let Some(id) = &args.restore_backup_id {
        crate::backup::check_id(id).context("check --restore-backup-id")?;
    }
    Ok(BootstrapMode::Restore(crate::restore::RestoreSpec {
        url,
        instance,
        backup_id: args.restore_backup_id.clone(),
        target,
        action: args.recovery_target_action,
    }))
}

/// The instance a member belongs to: its name without the trailing `-<n>`.
fn instance_of_member(member: &str) -> String {
    match member.rsplit_once('-') {
        Some((instance, n)) if !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()) => {
            instance.to_string()
        }
        _ => member.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        run: RunArgs,
    }

    fn args(dir: &Path, extra: &[&str]) -> RunArgs {
        for (name, content) in [
            ("token", "0123456789abcdef0123\n"),
            ("su", "pw1\n"),
            ("repl", "pw2"),
        ] {
            std::fs::write(dir.join(name), content).unwrap();
        }
        std::fs::create_dir_all(dir.join("tls")).unwrap();
        for (name, _) in toygres_common::tls::MEMBER_FILES {
            std::fs::write(dir.join("tls").join(name), "-----BEGIN X-----\n").unwrap();
        }
        let mut argv = vec![
            "x".to_string(),
            format!("--data-dir={}", dir.join("data").display()),
            format!("--token-file={}", dir.join("token").display()),
            format!("--superuser-password-file={}", dir.join("su").display()),
            format!("--replication-password-file={}", dir.join("repl").display()),
            format!("--tls-dir={}", dir.join("tls").display()),
            "--member-name=db-0".into(),
        ];
        argv.extend(extra.iter().map(|s| s.to_string()));
        Cli::try_parse_from(argv).unwrap().run
    }

    #[test]
    fn secrets_are_read_from_files_and_redacted() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = Config::from_args(args(dir.path(), &[])).unwrap();
        assert_eq!(cfg.member.secrets.superuser_password().unwrap(), "pw1");
        assert!(!format!("{cfg:?}").contains("pw1"));
        assert!(!format!("{cfg:?}").contains("BEGIN"));
        assert_eq!(cfg.member.tls.file("ca.crt"), b"-----BEGIN X-----\n");
        assert_eq!(cfg.member.run_dir, dir.path().join("data.run"));
        assert_eq!(cfg.member.slot_name(), "db_0");
    }

    #[test]
    fn standby_without_primary_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let err = Config::from_args(args(dir.path(), &["--bootstrap=standby"])).unwrap_err();
        assert!(err.to_string().contains("--primary"), "{err}");
    }

    #[test]
    fn archiving_is_off_by_default_and_configured_from_flags() {
        let dir = tempfile::tempdir().unwrap();
        assert!(Config::from_args(args(dir.path(), &[]))
            .unwrap()
            .member
            .archive
            .is_none());
        let cfg = Config::from_args(args(
            dir.path(),
            &["--archive-url=s3://bucket/p", "--wal-compression=none"],
        ))
        .unwrap();
        let archive = cfg.member.archive.unwrap();
        assert_eq!(archive.settings.instance, "db");
        assert_eq!(archive.settings.compression, Compression::None);
        assert_eq!(archive.settings.concurrency, 4);
        assert_eq!(
            archive.settings.state_dir,
            dir.path().join("data.run/archive")
        );
        assert!(archive.exe.is_absolute());
        let cfg = Config::from_args(args(
            dir.path(),
            &["--archive-url=file:///tmp/x", "--instance-name=other"],
        ))
        .unwrap();
        assert_eq!(cfg.member.archive.unwrap().settings.instance, "other");
    }

    #[test]
    fn bad_archive_settings_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        args(dir.path(), &[]);
        let parse = |extra: &[&str]| {
            let mut argv = vec![
                "x".to_string(),
                "--data-dir=/d".into(),
                "--token-file=/t".into(),
                "--superuser-password-file=/s".into(),
                "--replication-password-file=/r".into(),
                "--tls-dir=/tls".into(),
                "--member-name=db-0".into(),
            ];
            argv.extend(extra.iter().map(|s| s.to_string()));
            Cli::try_parse_from(argv)
                .map(|_| ())
                .unwrap_err()
                .to_string()
        };
        assert!(parse(&["--archive-url=http://x/y"]).contains("unsupported scheme"));
        assert!(parse(&["--wal-compression=11"]).contains("expected none, gzip"));
        let err = Config::from_args(args(
            dir.path(),
            &["--archive-url=file:///tmp/x", "--archive-concurrency=0"],
        ))
        .unwrap_err();
        assert!(format!("{err:#}").contains("concurrency"), "{err:#}");
        let err = Config::from_args(args(
            dir.path(),
            &["--archive-url=file:///tmp/x", "--instance-name=Bad"],
        ))
        .unwrap_err();
        assert!(format!("{err:#}").contains("instance name"), "{err:#}");
    }

    #[test]
    fn restore_flags_are_checked_and_never_archive_into_the_source() {
        use crate::restore::{RecoveryTarget, TargetAction};
        let dir = tempfile::tempdir().unwrap();
        let cfg = Config::from_args(args(
            dir.path(),
            &[
                "--archive-url=file:///tmp/store",
                "--instance-name=copy",
                "--bootstrap=restore",
                "--restore-instance=db",
                "--recovery-target-lsn=0/3000060",
                "--recovery-target-action=pause",
            ],
        ))
        .unwrap();
        let BootstrapMode::Restore(spec) = cfg.bootstrap else {
            panic!("not a restore: {:?}", cfg.bootstrap)
        };
        assert_eq!(spec.url.to_string(), "file:///tmp/store");
        assert_eq!(spec.instance, "db");
        assert_eq!(spec.action, TargetAction::Pause);
        assert!(matches!(spec.target, Some(RecoveryTarget::Lsn { .. })));
        let refused = |extra: &[&str]| {
            format!(
                "{:#}",
                Config::from_args(args(dir.path(), extra)).unwrap_err()
            )
        };
        // Member db-0 archives as "db": restoring db into it would archive into db's WAL.
        assert!(refused(&[
            "--archive-url=file:///tmp/store",
            "--bootstrap=restore",
            "--restore-instance=db"
        ])
        .contains("own --instance-name"));
        // Unless the restore replaces db's own data (in place): then it archives on as db.
        let in_place = Config::from_args(args(
            dir.path(),
            &[
                "--archive-url=file:///tmp/store",
                "--bootstrap=restore",
                "--restore-instance=db",
                "--restore-in-place=true",
            ],
        ))
        .unwrap();
        assert!(matches!(in_place.bootstrap, BootstrapMode::Restore(_)));
        assert!(refused(&["--restore-in-place=true"]).contains("only to --bootstrap restore"));
        assert!(refused(&["--bootstrap=restore", "--restore-instance=db"])
            .contains("--restore-from or --archive-url"));
        assert!(
            refused(&["--archive-url=file:///tmp/s", "--bootstrap=restore"])
                .contains("--restore-instance")
        );
        assert!(refused(&["--recovery-target-name=x"]).contains("only to --bootstrap restore"));
        assert!(refused(&[
            "--restore-from=file:///tmp/s",
            "--bootstrap=restore",
            "--restore-instance=db",
            "--recovery-target-name=x",
            "--recovery-target-xid=5"
        ])
        .contains("at most one"));
    }

    #[test]
    fn instance_is_the_member_name_without_its_ordinal() {
        assert_eq!(instance_of_member("orders-0"), "orders");
        assert_eq!(instance_of_member("my-db-12"), "my-db");
        assert_eq!(instance_of_member("solo"), "solo");
        assert_eq!(instance_of_member("db-x"), "db-x");
    }

    #[test]
    fn bad_member_names_and_short_tokens_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let mut a = args(dir.path(), &[]);
        a.member_name = "Bad_Name".into();
        assert!(Config::from_args(a).is_err());
        let a = args(dir.path(), &[]);
        std::fs::write(dir.path().join("token"), "short").unwrap();
        let err = Config::from_args(a).unwrap_err();
        assert!(err.to_string().contains("16 characters"), "{err}");
    }
}
