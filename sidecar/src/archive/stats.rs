//! Archive counters shared between the short-lived `wal-push`/`wal-fetch` processes and the
//! sidecar's `/metrics`: a small JSON file in the archive state directory, updated under an
//! exclusive `flock` and replaced atomically, so a scrape never reads half a file.
//! The number of segments waiting to be archived is not counted here but read directly from
//! `pg_wal/archive_status`.

use std::io::Write;
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::Context;
use nix::fcntl::{Flock, FlockArg};
use serde::{Deserialize, Serialize};

/// Totals since the state directory was created.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ArchiveStats {
    /// WAL files stored (or found already stored with identical content).
    pub archived_total: u64,
    /// `wal-push` calls that failed (Postgres keeps the file and retries).
    pub archive_failures_total: u64,
    /// Pushes refused because a different object of the same name exists.
    pub archive_conflicts_total: u64,
    /// Bytes of WAL read for archiving.
    pub archived_bytes_total: u64,
    /// Bytes written to the store (after compression).
    pub archived_stored_bytes_total: u64,
    /// The newest WAL file archived.
    pub last_archived: Option<String>,
    /// When it was archived (seconds since the Unix epoch).
    pub last_archived_time: Option<f64>,
    /// Of the files stored, those the sidecar uploaded ahead of Postgres's request
    /// ([`super::ahead`]).
    pub archived_ahead_total: u64,
    /// When the last failure happened.
    pub last_failure_time: Option<f64>,
    /// WAL files `wal-fetch` handed to Postgres.
    pub fetched_total: u64,
    /// Of those, files served from the prefetch directory.
    pub prefetch_hits_total: u64,
    /// `wal-fetch` calls that failed for another reason than a missing file.
    pub fetch_failures_total: u64,
}

impl ArchiveStats {
    /// Counts one WAL file `name` stored by a push: `raw_bytes` read, `stored_bytes` written.
    pub fn count_stored(&mut self, name: &str, raw_bytes: u64, stored_bytes: u64) {
        self.archived_total += 1;
        self.archived_bytes_total += raw_bytes;
        self.archived_stored_bytes_total += stored_bytes;
        // WAL names sort by timeline, then position.
        if self.last_archived.as_deref().is_none_or(|last| name > last) {
            self.last_archived = Some(name.to_string());
        }
        self.last_archived_time = Some(now());
    }
}

const STATS_FILE: &str = "stats.json";
const LOCK_FILE: &str = "stats.lock";

/// Seconds since the Unix epoch.
pub fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// Reads the counters; a missing or unreadable file reads as zeros.
pub fn read(state_dir: &Path) -> ArchiveStats {
    std::fs::read(state_dir.join(STATS_FILE))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default()
}

/// Applies `change` to the counters under the lock and writes them back atomically.
pub fn update(state_dir: &Path, change: impl FnOnce(&mut ArchiveStats)) -> anyhow::Result<()> {
    let lock_path = state_dir.join(LOCK_FILE);
    let lock_file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .or_else(|_| std::fs::File::open(&lock_path))
        .with_context(|| format!("open {}", lock_path.display()))?;
    let _lock = Flock::lock(lock_file, FlockArg::LockExclusive)
        .map_err(|(_, e)| e)
        .with_context(|| format!("lock {}", lock_path.display()))?;
    let mut stats = read(state_dir);
    change(&mut stats);
    let path = state_dir.join(STATS_FILE);
    let tmp = state_dir.join(format!("{STATS_FILE}.{}.tmp", std::process::id()));
    let json = serde_json::to_vec(&stats).context("serialize the archive counters")?;
    {
        let mut f =
            std::fs::File::create(&tmp).with_context(|| format!("create {}", tmp.display()))?;
        f.write_all(&json)
            .with_context(|| format!("write {}", tmp.display()))?;
    }
    std::fs::rename(&tmp, &path).with_context(|| format!("replace {}", path.display()))?;
    Ok(())
}

/// Updates the counters, logging (not failing) when that is impossible: the counters must never
/// turn a successful archive into a failed one.
pub fn record(state_dir: &Path, change: impl FnOnce(&mut ArchiveStats)) {
    if let Err(e) = update(state_dir, change) {
        tracing::warn!("update the archive counters: {e:#}");
    }
}

/// How many WAL files wait to be archived (`.ready` files in `pg_wal/archive_status`).
pub fn ready_count(data_dir: &Path) -> usize {
    std::fs::read_dir(data_dir.join("pg_wal/archive_status"))
        .map(|entries| {
            entries
                .flatten()
                .filter(|e| e.file_name().to_string_lossy().ends_with(".ready"))
                .count()
        })
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn updates_accumulate_and_a_missing_file_reads_as_zero() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(read(dir.path()), ArchiveStats::default());
        update(dir.path(), |s| s.archived_total += 2).unwrap();
        update(dir.path(), |s| {
            s.archived_total += 1;
            s.last_archived = Some("000000010000000000000003".into());
        })
        .unwrap();
        let s = read(dir.path());
        assert_eq!(s.archived_total, 3);
        assert_eq!(s.last_archived.as_deref(), Some("000000010000000000000003"));
    }

    #[test]
    fn ready_files_are_counted() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(ready_count(dir.path()), 0);
        let status = dir.path().join("pg_wal/archive_status");
        std::fs::create_dir_all(&status).unwrap();
        for f in ["A.ready", "B.ready", "C.done"] {
            std::fs::write(status.join(f), b"").unwrap();
        }
        assert_eq!(ready_count(dir.path()), 2);
    }
}
