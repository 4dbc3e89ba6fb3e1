//! How far this member's restore has come (`GET /v1/restore/progress`), kept in the process
//! while it bootstraps: the bytes of the base backup unpacked so far (counted as the unpacker
//! takes them), then the position WAL replay has reached.

use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Instant;

use toygres_common::sidecar_api::RestoreProgress;

struct Tracker {
    progress: RestoreProgress,
    started: Instant,
}

static TRACKER: Mutex<Option<Tracker>> = Mutex::new(None);
static BYTES: AtomicU64 = AtomicU64::new(0);

fn update(f: impl FnOnce(&mut RestoreProgress)) {
    if let Ok(mut tracker) = TRACKER.lock() {
        if let Some(t) = tracker.as_mut() {
            f(&mut t.progress);
        }
    }
}

/// A restore of `backup` starts (or starts again from another backup): `total` bytes to
/// unpack, replay from about `start_lsn` towards `target`.
pub fn begin(backup: &str, total: Option<u64>, start_lsn: Option<String>, target: String) {
    BYTES.store(0, Ordering::Relaxed);
    if let Ok(mut tracker) = TRACKER.lock() {
        *tracker = Some(Tracker {
            progress: RestoreProgress {
                phase: "download".into(),
                backup: backup.to_string(),
                bytes_total: total,
                start_lsn,
                target,
                ..RestoreProgress::default()
            },
            started: Instant::now(),
        });
    }
}

/// The base backup is unpacked; recovery replays WAL, now at `lsn`.
pub fn replaying(lsn: Option<String>) {
    update(|p| {
        p.phase = "replay".into();
        if lsn.is_some() {
            p.replay_lsn = lsn;
        }
    });
}

/// The restore reached its target.
pub fn done() {
    update(|p| p.phase = "done".into());
}

/// What the restore has done so far; `None` when this process restores nothing.
pub fn snapshot() -> Option<RestoreProgress> {
    let tracker = TRACKER.lock().ok()?;
    let t = tracker.as_ref()?;
    let mut progress = t.progress.clone();
    progress.bytes_done = BYTES.load(Ordering::Relaxed);
    progress.seconds = t.started.elapsed().as_secs();
    Some(progress)
}

/// A writer that counts the bytes it passes on to the unpacker.
pub struct Counting<W>(pub W);

impl<W: Write> Write for Counting<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.0.write(buf)?;
        BYTES.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.0.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_counts_unpacked_bytes_then_follows_replay() {
        begin(
            "20261205T100000Z",
            Some(10),
            Some("0/3000100".into()),
            "the end".into(),
        );
        let mut sink = Counting(Vec::new());
        sink.write_all(b"0123456").unwrap();
        let p = snapshot().unwrap();
        assert_eq!(
            (p.phase.as_str(), p.bytes_done, p.bytes_total),
            ("download", 7, Some(10))
        );
        assert!(p.line().contains("(70 %)"), "{}", p.line());
        replaying(Some("0/5000060".into()));
        replaying(None);
        let p = snapshot().unwrap();
        assert_eq!(p.phase, "replay");
        assert_eq!(p.replay_lsn.as_deref(), Some("0/5000060"));
        assert!(
            p.line()
                .contains("at 0/5000060 (from 0/3000100) towards the end"),
            "{}",
            p.line()
        );
        done();
        assert_eq!(snapshot().unwrap().phase, "done");
    }
}
