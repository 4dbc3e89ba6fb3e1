//! Making a cluster's files: initdb (a new primary) or pg_basebackup from the primary through
//! this member's replication slot (a new standby, or a re-clone on demotion). The new cluster is
//! made in a sibling directory and renamed into place, so a copy cut short leaves nothing
//! half-made. Which of them a bootstrap runs is [`crate::bootstrap`]'s decision.

use std::ffi::OsStr;

use anyhow::Context;
use toygres_common::names::PgAddress;
use toygres_common::pg_exec::PgBinaries;

use super::files::{self, Layout, ReplicationState};
use super::settings::MemberSettings;
use super::{process, sql};
use crate::owned;

/// Settings a new cluster starts with (the operator may change them later).
const INITIAL_SETTINGS: &str = "
# Toygres defaults, set at bootstrap.
max_wal_senders = 16
max_replication_slots = 16
wal_keep_size = '512MB'
password_encryption = 'scram-sha-256'
log_line_prefix = '%m [%p] %q%u@%d '
";

/// Copies `primary` into the data directory with pg_basebackup and makes it a standby of it.
/// The data directory must be empty or missing.
pub async fn clone_from_primary(
    cfg: &MemberSettings,
    bins: &PgBinaries,
    layout: &Layout,
    primary: &PgAddress,
) -> anyhow::Result<()> {
    sql::ensure_slot_on_primary(cfg, primary).await?;
    let work = fresh_work_dir(bins, layout)?;
    tracing::info!(%primary, "copying the primary with pg_basebackup");
    let slot = cfg.slot_name();
    // The primary's certificate is verified and the replicator's presented: no password.
    let conninfo = format!("--dbname={}", files::replication_conninfo(layout, primary));
    process::run_tool(
        bins,
        "pg_basebackup",
        &[
            OsStr::new("--pgdata"),
            work.as_os_str(),
            OsStr::new(&conninfo),
            OsStr::new("--no-password"),
            OsStr::new("--wal-method=stream"),
            OsStr::new("--checkpoint=fast"),
            OsStr::new("--slot"),
            OsStr::new(&slot),
        ],
        &[],
    )
    .await
    .context("copy the primary")?;
    // The copy carries the primary's own sidecar files; this member's replace them.
    for stale in [
        layout.fence_marker(),
        work.join("toygres.fenced"),
        work.join("toygres.fence-token"),
    ] {
        let _ = std::fs::remove_file(stale);
    }
    move_into_place(layout, &work)?;
    files::set_standby_signal(bins, layout, true)?;
    files::write_config(
        cfg,
        bins,
        layout,
        &ReplicationState {
            primary: Some(primary.clone()),
            synchronous_standby_names: String::new(),
            synchronous_commit: "on".into(),
            // The primary's policy (copied with its files) is not this standby's.
            ..Default::default()
        },
    )?;
    Ok(())
}

pub async fn initdb(
    cfg: &MemberSettings,
    bins: &PgBinaries,
    layout: &Layout,
    work: &std::path::Path,
) -> anyhow::Result<()> {
    let pwfile = layout.run_dir.join("initdb.pw");
    owned::write_file(
        bins,
        &pwfile,
        cfg.secrets.superuser_password()?.as_bytes(),
        0o600,
    )?;
    let result = process::run_tool(
        bins,
        "initdb",
        &[
            OsStr::new("--pgdata"),
            work.as_os_str(),
            OsStr::new("--username=postgres"),
            OsStr::new("--pwfile"),
            pwfile.as_os_str(),
            OsStr::new("--auth-local=trust"),
            OsStr::new("--auth-host=scram-sha-256"),
            OsStr::new("--data-checksums"),
            OsStr::new("--encoding=UTF8"),
            OsStr::new("--locale=C.UTF-8"),
            OsStr::new("--no-instructions"),
        ],
        &[],
    )
    .await;
    let _ = std::fs::remove_file(&pwfile);
    result.context("initdb")?;
    let conf = work.join("postgresql.conf");
    let mut text = std::fs::read_to_string(&conf).context("read postgresql.conf")?;
    text.push_str(INITIAL_SETTINGS);
    owned::write_file(bins, &conf, text.as_bytes(), 0o600)?;
    Ok(())
}

/// An empty directory beside the data directory, owned by the Postgres OS user.
pub fn fresh_work_dir(bins: &PgBinaries, layout: &Layout) -> anyhow::Result<std::path::PathBuf> {
    let work = layout.bootstrap_dir();
    if work.exists() {
        tracing::warn!(dir = %work.display(), "removing a bootstrap that was cut short");
        std::fs::remove_dir_all(&work).with_context(|| format!("remove {}", work.display()))?;
    }
    owned::ensure_private_dir(bins, &work)?;
    Ok(work)
}

/// Replaces the (empty or missing) data directory with the finished bootstrap.
pub fn move_into_place(layout: &Layout, work: &std::path::Path) -> anyhow::Result<()> {
    if layout.data_dir.exists() {
        std::fs::remove_dir_all(&layout.data_dir)
            .with_context(|| format!("remove {}", layout.data_dir.display()))?;
    }
    std::fs::rename(work, &layout.data_dir)
        .with_context(|| format!("move {} into place", work.display()))?;
    Ok(())
}
