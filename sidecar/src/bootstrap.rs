//! Bootstrap: everything that happens before this member's Postgres can be supervised. It
//! prepares the run directory, makes the data directory when it holds no cluster — initdb, a
//! copy of the primary ([`crate::postgres::create`]) or a restore from object storage
//! ([`crate::restore`]) — and then opens the [`Member`]. It sits above `postgres` and `restore`
//! and composes them; neither knows about the other's part.

use std::sync::Arc;

use anyhow::{bail, Context};
use toygres_common::names::PgAddress;
use toygres_common::pg_exec::PgBinaries;

use crate::postgres::files::{self, Layout, ReplicationState};
use crate::postgres::settings::MemberSettings;
use crate::postgres::{create, Member};
use crate::restore::{self, RestoreSpec};

/// How the data directory is made when it is empty.
#[derive(Debug, Clone)]
pub enum BootstrapMode {
    /// initdb: a new primary.
    Init,
    /// pg_basebackup from `primary`: a new standby.
    Standby { primary: PgAddress },
    /// A base backup from object storage, recovered to an optional target.
    Restore(RestoreSpec),
}

/// Bootstraps the data directory when it is empty, takes over from a postmaster an earlier
/// sidecar left running, and starts Postgres unless the member is fenced.
pub async fn open_member(cfg: MemberSettings, mode: &BootstrapMode) -> anyhow::Result<Arc<Member>> {
    let bins = PgBinaries::locate(cfg.pg_bin_dir.as_deref()).context("find PostgreSQL")?;
    let layout = Layout::new(&cfg);
    files::write_run_files(&cfg, &bins, &layout)?;
    bootstrap_if_needed(&cfg, mode, &bins, &layout)
        .await
        .context("bootstrap the data directory")?;
    Member::open(cfg, bins, layout).await
}

/// Bootstraps the data directory when it holds no cluster; leaves an existing one as it is.
async fn bootstrap_if_needed(
    cfg: &MemberSettings,
    mode: &BootstrapMode,
    bins: &PgBinaries,
    layout: &Layout,
) -> anyhow::Result<()> {
    let aside = layout.discarded_dir();
    if !layout.is_initialized() && aside.join("PG_VERSION").exists() {
        // A re-clone was cut short after setting the old data aside: put it back.
        tracing::warn!(dir = %aside.display(), "restoring the data directory a re-clone set aside");
        let _ = std::fs::remove_dir_all(&layout.data_dir);
        std::fs::rename(&aside, &layout.data_dir)
            .context("restore the data directory set aside")?;
        // It was being demoted: it must never come back as a primary.
        files::set_standby_signal(bins, layout, true)?;
    }
    if layout.is_initialized() {
        tracing::info!(data_dir = %layout.data_dir.display(), "existing data directory: starting it as it is");
        return Ok(());
    }
    if let Ok(mut entries) = std::fs::read_dir(&layout.data_dir) {
        if entries.next().is_some() {
            bail!(
                "{} is not empty but holds no Postgres cluster (no PG_VERSION); refusing to touch it",
                layout.data_dir.display()
            );
        }
    }
    match mode {
        BootstrapMode::Init => {
            let work = create::fresh_work_dir(bins, layout)?;
            create::initdb(cfg, bins, layout, &work).await?;
            create::move_into_place(layout, &work)?;
            files::write_config(
                cfg,
                bins,
                layout,
                &ReplicationState {
                    synchronous_commit: "on".into(),
                    ..Default::default()
                },
            )?;
        }
        BootstrapMode::Restore(spec) => {
            let work = create::fresh_work_dir(bins, layout)?;
            restore::restore_and_recover(cfg, bins, layout, &work, spec, |work| {
                create::move_into_place(layout, work)
            })
            .await
            .context("restore from object storage")?;
        }
        BootstrapMode::Standby { primary } => {
            // The primary may not be up yet (pods start in any order): keep trying.
            let mut delay = std::time::Duration::from_secs(1);
            while let Err(e) = create::clone_from_primary(cfg, bins, layout, primary).await {
                tracing::warn!("copy the primary {primary}: {e:#}; retrying in {delay:?}");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(std::time::Duration::from_secs(15));
            }
        }
    }
    Ok(())
}
