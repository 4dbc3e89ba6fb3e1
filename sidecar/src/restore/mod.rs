//! Restore from object storage (`run --bootstrap restore`): pick the base backup the target
//! needs, bring it down (download → SHA-256 check → decompress → untar; a backup in parts with
//! several parts downloaded and decompressed at once, see [`crate::backup::parts`]) into the bootstrap
//! directory, and recover it to the target with `restore_command` fetching the *source*
//! instance's WAL. The member archives under its own instance name from then on.

pub mod progress;
pub mod target;
#[cfg(test)]
mod tests;

use std::ffi::OsStr;
use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Context};
use toygres_common::pg_exec::PgBinaries;
use toygres_common::sidecar_api::{BackupKind, BackupManifest};

pub use target::{RecoveryTarget, RestoreSpec, TargetAction};

use crate::archive::fetch::{keep_prefetch_window, WalFetcher};
use crate::archive::{walname, ArchiveSettings, ArchiveSetup, Compression};
use crate::backup::parts;
use crate::backup::stream::store_to_writer;
use crate::backup::tar::{Extract, TarReader};
use crate::backup::Catalog;
use crate::objstore::Store;
use crate::owned;
use crate::postgres::files::{self, Layout, ReplicationState};
use crate::postgres::process::PgChild;
use crate::postgres::settings::MemberSettings;
use crate::postgres::sql;

/// Files a copy may carry that describe the member it was taken on, not the one restored.
const STALE_FILES: &[&str] = &[
    "standby.signal",
    "recovery.signal",
    "toygres.fenced",
    "toygres.state.json",
    "toygres.recovery.conf",
    "postmaster.pid",
    "postmaster.opts",
    "backup_manifest",
];

/// Brings base backup `manifest` from `store` into the empty directory `dest`, checking every
/// object's SHA-256, and hands the files to the Postgres OS user. Returns Postgres's
/// `backup_manifest` of the copy (kept out of the directory).
///
/// A backup in parts has its parts downloaded and decompressed [`parts::jobs`] at once; a
/// backup in one object (as every backup was before parts) is streamed.
pub async fn download_base_backup(
    store: &Store,
    manifest: &BackupManifest,
    dest: &Path,
    bins: &PgBinaries,
) -> anyhow::Result<Vec<u8>> {
    let (object, more) = manifest
        .objects
        .split_first()
        .with_context(|| format!("backup {} lists no object", manifest.id))?;
    let started = std::time::Instant::now();
    let jobs = parts::jobs();
    let reader = progress::Counting(TarReader::new(
        Extract::new(dest, &["backup_manifest"]).flushing_on(jobs),
    ));
    let progress::Counting(reader) = if more.is_empty() {
        store_to_writer(store, &object.key, &object.sha256, reader).await?
    } else {
        parts::parts_to_writer(store, &manifest.objects, reader, jobs).await?
    };
    let written = started.elapsed();
    let extracted = tokio::task::spawn_blocking(move || reader.finish()?.finish())
        .await
        .context("join the unpack task")?
        .with_context(|| format!("unpack {}", store.describe(&object.key)))?;
    let pg_manifest = extracted
        .captured("backup_manifest")
        .map(<[u8]>::to_vec)
        .unwrap_or_default();
    let dest = dest.to_path_buf();
    let bins2 = bins.clone();
    let flushed = started.elapsed();
    tokio::task::spawn_blocking(move || chown_tree(&bins2, &dest))
        .await
        .context("join the chown task")??;
    tracing::info!(
        backup = %manifest.id,
        bytes = manifest.raw_bytes,
        parts = manifest.objects.len(),
        seconds = started.elapsed().as_secs_f64(),
        written_s = written.as_secs_f64(),
        flush_wait_s = (flushed - written).as_secs_f64(),
        "base backup downloaded and unpacked"
    );
    Ok(pg_manifest)
}

/// Hands every file under `root` to the Postgres OS user (no-op unless we are root).
fn chown_tree(bins: &PgBinaries, root: &Path) -> anyhow::Result<()> {
    let Some(user) = &bins.run_as else {
        return Ok(());
    };
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        nix::unistd::fchownat(
            None,
            &dir,
            Some(user.uid),
            Some(user.gid),
            nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
        )
        .with_context(|| format!("change the owner of {}", dir.display()))?;
        if dir.is_symlink() || !dir.is_dir() {
            continue;
        }
        for entry in std::fs::read_dir(&dir).with_context(|| format!("read {}", dir.display()))? {
            stack.push(entry?.path());
        }
    }
    Ok(())
}

/// The base backups to try, in order (see [`target::candidate_backups`]), from the source's
/// catalog.
pub async fn find_backups(
    spec: &RestoreSpec,
    store: &Store,
) -> anyhow::Result<Vec<BackupManifest>> {
    let catalog = Catalog::new(store.clone(), &spec.instance);
    let backups: Vec<BackupManifest> = catalog
        .list()
        .await?
        .into_iter()
        .filter(|b| b.kind == BackupKind::Base)
        .collect();
    target::candidate_backups(&backups, spec.target.as_ref(), spec.backup_id.as_deref())
        .map(|found| found.into_iter().cloned().collect())
        .with_context(|| {
            format!(
                "choose a base backup of {} in {}",
                spec.instance,
                store.describe("")
            )
        })
}

/// The settings `wal-fetch` reads the source's WAL with.
fn source_fetch(cfg: &MemberSettings, spec: &RestoreSpec) -> anyhow::Result<ArchiveSetup> {
    let settings = ArchiveSettings {
        url: spec.url.clone(),
        instance: spec.instance.clone(),
        // wal-fetch tries both names of each file whatever this says.
        compression: Compression::Gzip(1),
        concurrency: cfg
            .archive
            .as_ref()
            .map(|a| a.settings.concurrency)
            .unwrap_or(4),
        state_dir: cfg.run_dir.join("restore-fetch"),
        wal_segment_size: walname::DEFAULT_SEGMENT_SIZE,
        credentials_dir: crate::objstore::credentials::dir(),
    };
    settings.validate()?;
    let exe = std::env::current_exe()
        .context("find the sidecar binary (Postgres runs it to fetch WAL)")?;
    Ok(ArchiveSetup { settings, exe })
}

/// `toygres.recovery.conf`: where WAL comes from and where recovery stops.
fn recovery_conf(fetch: &ArchiveSetup, spec: &RestoreSpec) -> String {
    let mut lines = vec![
        "# Written by toygres-sidecar for a restore: recovery from the source's archive."
            .to_string(),
        format!(
            "restore_command = {}",
            files::conf_quote(&fetch.restore_command())
        ),
    ];
    if let Some(target) = &spec.target {
        lines.extend(target.conf_lines());
        lines.push(format!(
            "recovery_target_action = '{}'",
            spec.action.as_str()
        ));
    }
    lines.push(String::new());
    lines.join("\n")
}

/// Restores into the bootstrap directory `work` and recovers it there to the target, then
/// moves it into place with `move_into_place`: a restore cut short (or a target recovery cannot
/// reach) leaves no data directory behind. Postgres is stopped again when this returns: a
/// promoted restore is an ordinary primary; a paused one comes up as a read-only standby paused
/// at the target until it is promoted.
///
/// When there are several candidate backups (a restore point: [`target::candidate_backups`]),
/// each is tried in turn, newest first, until recovery from one reaches the target.
///
/// While it recovers in the bootstrap directory, Postgres listens on its socket only: nothing
/// can connect over TCP to a copy that is not in place yet (and may still be thrown away).
pub async fn restore_and_recover(
    cfg: &MemberSettings,
    bins: &PgBinaries,
    layout: &Layout,
    work: &Path,
    spec: &RestoreSpec,
    move_into_place: impl FnOnce(&Path) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let store = Store::open(&spec.url)?;
    let candidates = find_backups(spec, &store).await?;
    let mut failures = Vec::new();
    for (i, backup) in candidates.iter().enumerate() {
        if i > 0 {
            empty_directory(work)?;
        }
        match restore_one(cfg, bins, layout, work, spec, &store, backup).await {
            Ok(()) => return move_into_place(work),
            Err(e) if i + 1 < candidates.len() => {
                tracing::warn!(
                    backup = %backup.id,
                    "recovery from this backup did not reach the target ({e:#}); trying the \
                     next older backup"
                );
                failures.push(format!("{}: {e:#}", backup.id));
            }
            Err(e) if failures.is_empty() => return Err(e),
            Err(e) => {
                failures.push(format!("{}: {e:#}", backup.id));
                bail!(
                    "no base backup reached the target; tried, newest first: {}",
                    failures.join("; ")
                );
            }
        }
    }
    bail!("there is no base backup to restore")
}

/// Removes everything inside `dir` (a failed attempt's files), keeping `dir` itself.
fn empty_directory(dir: &Path) -> anyhow::Result<()> {
    for entry in std::fs::read_dir(dir).with_context(|| format!("read {}", dir.display()))? {
        let path = entry?.path();
        let removed = if path.is_dir() && !path.is_symlink() {
            std::fs::remove_dir_all(&path)
        } else {
            std::fs::remove_file(&path)
        };
        removed.with_context(|| format!("remove {}", path.display()))?;
    }
    Ok(())
}

/// Restores `backup` into `work` and recovers it to the target there; Postgres is stopped
/// when this returns.
async fn restore_one(
    cfg: &MemberSettings,
    bins: &PgBinaries,
    layout: &Layout,
    work: &Path,
    spec: &RestoreSpec,
    store: &Store,
    backup: &BackupManifest,
) -> anyhow::Result<()> {
    tracing::info!(
        backup = %backup.id,
        source = %spec.instance,
        target = ?spec.target,
        "restoring base backup"
    );
    progress::begin(
        &backup.id,
        Some(backup.raw_bytes),
        backup.stop_lsn.clone(),
        spec.target
            .as_ref()
            .map_or_else(|| "the end of the archive".to_string(), |t| t.describe()),
    );
    download_base_backup(store, backup, work, bins).await?;
    progress::replaying(None);
    for name in STALE_FILES {
        let _ = std::fs::remove_file(work.join(name));
    }
    let staged = Layout {
        data_dir: work.to_path_buf(),
        run_dir: layout.run_dir.clone(),
    };
    let fetch = source_fetch(cfg, spec)?;
    owned::ensure_private_dir(bins, &layout.run_dir)?;
    fetch.write_files(bins)?;
    let recovery = recovery_conf(&fetch, spec);
    // Included last: wins over toygres.conf's listen_addresses while the copy recovers here.
    let socket_only = format!("{recovery}listen_addresses = ''\n");
    owned::write_file(bins, &staged.recovery_conf(), socket_only.as_bytes(), 0o600)?;
    owned::write_file(bins, &work.join("recovery.signal"), b"", 0o600)?;
    let state = ReplicationState {
        synchronous_commit: "on".into(),
        ..Default::default()
    };
    files::prepare_for_start(cfg, bins, &staged, &state)?;

    let child = PgChild::spawn(bins, &staged)?;
    // Sliding-window prefetch beside replay (none with --archive-concurrency=1).
    let parallel = fetch.settings.concurrency.saturating_sub(1);
    let window = (parallel > 0).then(|| {
        let fetcher = WalFetcher {
            store: store.clone(),
            settings: fetch.settings.clone(),
        };
        tokio::spawn(keep_prefetch_window(
            fetcher,
            2 * parallel,
            parallel,
            bins.clone(),
        ))
    });
    let outcome = wait_for_target(cfg, &child, spec).await;
    if let Some(window) = window {
        window.abort();
        let _ = window.await;
        let _ = std::fs::remove_file(fetch.settings.window_marker());
    }
    let how = child.stop(cfg.stop_timeout).await;
    tracing::info!("recovery server stopped: {how}");
    outcome?;

    match (&spec.target, spec.action) {
        (Some(_), TargetAction::Pause) => {
            files::set_standby_signal(bins, &staged, true)?;
            let _ = std::fs::remove_file(work.join("recovery.signal"));
            owned::write_file(bins, &staged.recovery_conf(), recovery.as_bytes(), 0o600)?;
        }
        _ => {
            let _ = std::fs::remove_file(staged.recovery_conf());
        }
    }
    files::write_config(cfg, bins, &staged, &state)
}

/// How often the recovering server is asked how far it is: a short end of recovery (a few
/// segments) takes a few hundred milliseconds, which a coarser poll would add to every restore.
/// One query on a connection kept open, so cheap even during a long replay.
const RECOVERY_POLL: Duration = Duration::from_millis(20);
/// How often a connection is tried while the server does not accept one yet.
const RECONNECT_POLL: Duration = Duration::from_millis(100);

/// Polls the recovering server until it has reached the target: promoted (out of recovery), or
/// paused at it. Fails when Postgres exits (a target recovery cannot reach is fatal to it).
async fn wait_for_target(
    cfg: &MemberSettings,
    child: &PgChild,
    spec: &RestoreSpec,
) -> anyhow::Result<()> {
    let pause = spec.target.is_some() && spec.action == TargetAction::Pause;
    let started = std::time::Instant::now();
    let mut last_note = std::time::Instant::now();
    let mut client = None;
    loop {
        if let Some(exit) = child.exited() {
            bail!(
                "postgres stopped during recovery ({exit}): the target may be unreachable from \
                 this backup or the WAL it needs missing; see the log above"
            );
        }
        if client.is_none() {
            client = sql::connect_local(cfg).await.ok();
        }
        if let Some(connected) = &client {
            let row = connected
                .query_one(
                    "SELECT pg_is_in_recovery(), \
                            CASE WHEN pg_is_in_recovery() \
                                 THEN pg_get_wal_replay_pause_state() END, \
                            pg_last_wal_replay_lsn()::text",
                    &[],
                )
                .await;
            if let Ok(row) = row {
                let in_recovery: bool = row.get(0);
                let pause_state: Option<String> = row.get(1);
                progress::replaying(row.get(2));
                if !pause && !in_recovery {
                    progress::done();
                    tracing::info!(
                        seconds = started.elapsed().as_secs_f64(),
                        "recovery reached its end and the server was promoted"
                    );
                    return Ok(());
                }
                if pause && pause_state.as_deref() == Some("paused") {
                    progress::done();
                    let lsn: Option<String> = row.get(2);
                    tracing::info!(?lsn, "recovery paused at the target");
                    return Ok(());
                }
                if last_note.elapsed() > Duration::from_secs(10) {
                    let lsn: Option<String> = row.get(2);
                    tracing::info!(?lsn, "recovering");
                    last_note = std::time::Instant::now();
                }
            } else {
                // Connect again next time (the server may have closed this connection).
                client = None;
            }
        }
        // Each refused connection costs the server a process: try those less often.
        let next = if client.is_some() {
            RECOVERY_POLL
        } else {
            RECONNECT_POLL
        };
        tokio::time::sleep(next).await;
    }
}

/// Runs `pg_verifybackup` on a restored directory against Postgres's manifest of it.
pub async fn verify_directory(
    bins: &PgBinaries,
    dir: &Path,
    pg_manifest: &Path,
) -> anyhow::Result<String> {
    crate::postgres::process::run_tool(
        bins,
        "pg_verifybackup",
        &[
            OsStr::new("--manifest-path"),
            pg_manifest.as_os_str(),
            OsStr::new("--quiet"),
            dir.as_os_str(),
        ],
        &[],
    )
    .await
}
