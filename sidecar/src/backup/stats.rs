//! Backup outcomes for `/metrics`: backups taken and failed by kind, and the last successful
//! one's completion time, size and duration. Kept in the sidecar process (the API takes the
//! backups), so the counters start again at zero when the sidecar restarts, as Prometheus
//! counters may.

use std::sync::Mutex;
use std::time::Duration;

use toygres_common::sidecar_api::{BackupKind, BackupManifest};

use super::clock;

/// The last successful backup of one kind.
#[derive(Debug, Clone, PartialEq)]
pub struct LastBackup {
    /// When it completed, in seconds since the Unix epoch.
    pub finished_unix_seconds: f64,
    /// Bytes in the store.
    pub stored_bytes: u64,
    /// Bytes before compression.
    pub raw_bytes: u64,
    pub duration_seconds: f64,
}

/// Outcomes of one kind of backup.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct KindStats {
    pub succeeded_total: u64,
    pub failed_total: u64,
    pub last_success: Option<LastBackup>,
}

/// Outcomes by kind: base, then logical.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct BackupStats {
    pub base: KindStats,
    pub logical: KindStats,
}

impl BackupStats {
    const fn new() -> Self {
        Self {
            base: KindStats {
                succeeded_total: 0,
                failed_total: 0,
                last_success: None,
            },
            logical: KindStats {
                succeeded_total: 0,
                failed_total: 0,
                last_success: None,
            },
        }
    }

    fn of(&mut self, kind: BackupKind) -> &mut KindStats {
        match kind {
            BackupKind::Base => &mut self.base,
            BackupKind::Logical => &mut self.logical,
        }
    }

    /// Counts one backup of `kind` that took `took`: its manifest when it succeeded.
    pub fn record(&mut self, kind: BackupKind, took: Duration, done: Option<&BackupManifest>) {
        let stats = self.of(kind);
        match done {
            Some(manifest) => {
                stats.succeeded_total += 1;
                stats.last_success = Some(LastBackup {
                    finished_unix_seconds: clock::now_micros() as f64 / 1e6,
                    stored_bytes: manifest.stored_bytes,
                    raw_bytes: manifest.raw_bytes,
                    duration_seconds: took.as_secs_f64(),
                });
            }
            None => stats.failed_total += 1,
        }
    }
}

static STATS: Mutex<BackupStats> = Mutex::new(BackupStats::new());

/// Records the outcome of a backup this process took.
pub fn record(kind: BackupKind, took: Duration, done: Option<&BackupManifest>) {
    STATS
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .record(kind, took, done);
}

/// The outcomes so far.
pub fn snapshot() -> BackupStats {
    STATS.lock().unwrap_or_else(|p| p.into_inner()).clone()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn successes_and_failures_are_counted_by_kind() {
        let mut s = BackupStats::new();
        s.record(BackupKind::Base, Duration::from_secs(1), None);
        let manifest = BackupManifest {
            id: "x".into(),
            kind: BackupKind::Base,
            instance: "db".into(),
            member: "db-0".into(),
            from_standby: false,
            start_lsn: None,
            stop_lsn: None,
            timeline: None,
            start_time: String::new(),
            stop_time: String::new(),
            next_xid: None,
            raw_bytes: 100,
            stored_bytes: 10,
            compression: "1".into(),
            pg_version: "15".into(),
            system_identifier: "1".into(),
            sha256: String::new(),
            objects: Vec::new(),
        };
        s.record(
            BackupKind::Base,
            Duration::from_millis(2500),
            Some(&manifest),
        );
        assert_eq!((s.base.succeeded_total, s.base.failed_total), (1, 1));
        let last = s.base.last_success.clone().unwrap();
        assert_eq!((last.stored_bytes, last.raw_bytes), (10, 100));
        assert_eq!(last.duration_seconds, 2.5);
        assert!(last.finished_unix_seconds > 1.7e9);
        assert_eq!(s.logical, KindStats::default());
    }
}
