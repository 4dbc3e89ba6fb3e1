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
        if let Some(token) = &cfg.fence_token {
            apply_fence_token(layout, token)?;
        }
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

/// Applies the platform's fence token to an existing data directory: the first start that sees
/// a new token fences a primary (its Postgres stays stopped until the controller demotes it);
/// a standby has nothing to fence. Either way the token is then spent, so the member's later
/// restarts (as whatever role it has by then) start normally.
fn apply_fence_token(layout: &Layout, token: &str) -> anyhow::Result<()> {
    let file = layout.fence_token_file();
    let seen = std::fs::read_to_string(&file).unwrap_or_default();
    if seen.trim() == token {
        return Ok(());
    }
    if !layout.is_standby() && !layout.is_fenced() {
        tracing::warn!("a new fence token: this primary stays stopped until it is made a standby");
        std::fs::write(layout.fence_marker(), b"")
            .with_context(|| format!("write {}", layout.fence_marker().display()))?;
    }
    std::fs::write(&file, token).with_context(|| format!("write {}", file.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn cluster(standby: bool) -> (tempfile::TempDir, Layout) {
        let dir = tempfile::tempdir().unwrap();
        let layout = Layout {
            data_dir: dir.path().join("data"),
            run_dir: dir.path().join("run"),
        };
        std::fs::create_dir_all(&layout.data_dir).unwrap();
        std::fs::write(layout.pg_version_file(), "15\n").unwrap();
        if standby {
            std::fs::write(layout.standby_signal(), "").unwrap();
        }
        (dir, layout)
    }

    #[test]
    fn a_new_fence_token_fences_a_primary_once() {
        let (_dir, layout) = cluster(false);
        apply_fence_token(&layout, "1").unwrap();
        assert!(
            layout.is_fenced(),
            "the first start with a new token fences"
        );
        // Rejoined: the demotion removes the marker and leaves a standby.
        std::fs::remove_file(layout.fence_marker()).unwrap();
        std::fs::write(layout.standby_signal(), "").unwrap();
        apply_fence_token(&layout, "1").unwrap();
        assert!(!layout.is_fenced(), "a spent token changes nothing");
        // Promoted later and restarted with the same token: still not fenced.
        std::fs::remove_file(layout.standby_signal()).unwrap();
        apply_fence_token(&layout, "1").unwrap();
        assert!(!layout.is_fenced());
        // Stopped for good again: a new token fences it again.
        apply_fence_token(&layout, "2").unwrap();
        assert!(layout.is_fenced());
    }

    #[test]
    fn a_standby_spends_a_new_token_without_being_fenced() {
        let (_dir, layout) = cluster(true);
        apply_fence_token(&layout, "7").unwrap();
        assert!(!layout.is_fenced());
        std::fs::remove_file(layout.standby_signal()).unwrap();
        apply_fence_token(&layout, "7").unwrap();
        assert!(
            !layout.is_fenced(),
            "promoted since: the token was spent as a standby"
        );
    }
}
