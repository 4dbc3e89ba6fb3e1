//! Archiving ahead of Postgres's requests.
//!
//! Postgres asks for one file at a time and waits for each `archive_command`. A `wal-push`
//! uploads its file with up to `concurrency - 1` waiting ones beside it, but it must wait for all
//! of them before it exits, so every batch ends with idle slots while the slowest upload
//! finishes, and Postgres's next call waits for that. [`PushAhead`] runs in the sidecar (which
//! outlives every `wal-push`) while its member is a running primary: it keeps `concurrency`
//! uploads of waiting files going at all times and leaves a marker for each one stored, so
//! Postgres's request for it only checks the marker. `wal-push` alone still archives everything
//! when no sidecar runs (a stopped sidecar, a bench without one).
//!
//! Both claim the files they upload ([`super::claims`]), so no two processes upload one file.

use std::path::PathBuf;
use std::time::Duration;

use tokio::task::JoinSet;
use tokio::time::Instant;

use super::claims::Claim;
use super::push::{Pushed, WalArchiver};
use super::{stats, ArchiveSettings};

/// After a failed upload ahead, the pusher leaves the files to `wal-push` this long (a store
/// that is down is not hammered; Postgres's own retries report the failure).
const PAUSE_AFTER_FAILURE: Duration = Duration::from_secs(5);

/// Keeps up to `concurrency` waiting WAL files uploading, ahead of Postgres's requests.
pub struct PushAhead {
    archiver: WalArchiver,
    wal_dir: PathBuf,
    running: JoinSet<(String, anyhow::Result<Pushed>)>,
    paused_until: Option<Instant>,
}

impl PushAhead {
    /// For the cluster whose WAL directory is `wal_dir` (`<data>/pg_wal`).
    pub fn new(archiver: WalArchiver, wal_dir: PathBuf) -> Self {
        Self {
            archiver,
            wal_dir,
            running: JoinSet::new(),
            paused_until: None,
        }
    }

    /// Uploads in flight.
    #[cfg(test)]
    fn in_flight(&self) -> usize {
        self.running.len()
    }

    /// Collects the uploads that ended and starts new ones for waiting files, up to
    /// `concurrency` at once. Call it often (the sidecar: every few tens of milliseconds).
    pub fn tick(&mut self) {
        while let Some(done) = self.running.try_join_next() {
            self.ended(done);
        }
        if self.paused_until.is_some_and(|t| Instant::now() < t) {
            return;
        }
        let free = self
            .archiver
            .settings
            .concurrency
            .saturating_sub(self.running.len());
        if free == 0 {
            return;
        }
        for (path, name) in self.archiver.waiting_files(&self.wal_dir, None, free) {
            let Some(claim) = Claim::take(&self.archiver.settings, name.as_str()) else {
                continue;
            };
            // The key as it is now: a rotation reaches the next upload.
            let archiver = WalArchiver {
                store: self.archiver.store.clone().with_current_key(),
                settings: self.archiver.settings.clone(),
            };
            self.running.spawn(async move {
                let result = archiver.push_file(&path, &name).await;
                if let Ok(pushed) = &result {
                    // The marker before the claim goes: a wal-push waiting on the claim then
                    // finds it.
                    archiver.write_marker(pushed);
                    // One already stored was most likely archived a moment ago (Postgres
                    // had not yet marked it done): counted then.
                    if !pushed.already_stored {
                        stats::record(&archiver.settings.state_dir, |s| {
                            s.count_stored(&pushed.name, pushed.raw_bytes, pushed.stored_bytes);
                            s.archived_ahead_total += 1;
                        });
                    }
                }
                drop(claim);
                (name.to_string(), result)
            });
        }
    }

    /// Takes note of an upload that ended: a failure pauses the uploads ahead.
    fn ended(&mut self, done: Result<(String, anyhow::Result<Pushed>), tokio::task::JoinError>) {
        match done {
            Ok((_, Ok(_))) => {}
            Ok((name, Err(e))) => {
                tracing::info!(
                    file = %name,
                    "archiving ahead paused for {}s: {e:#}",
                    PAUSE_AFTER_FAILURE.as_secs()
                );
                self.paused_until = Some(Instant::now() + PAUSE_AFTER_FAILURE);
            }
            Err(e) => tracing::warn!("an upload ahead ended abnormally: {e}"),
        }
    }

    /// Runs [`PushAhead::tick`] every `every`, and at once whenever an upload ends (its slot
    /// would otherwise stay empty until the next tick), until `keep_going` says stop; then the
    /// uploads in flight are abandoned (their claims released; Postgres asks for those files
    /// again).
    pub async fn run(mut self, every: Duration, keep_going: impl Fn() -> bool) {
        while keep_going() {
            self.tick();
            if self.running.is_empty() {
                tokio::time::sleep(every).await;
                continue;
            }
            tokio::select! {
                _ = tokio::time::sleep(every) => {}
                Some(done) = self.running.join_next() => self.ended(done),
            }
        }
        self.running.abort_all();
        while self.running.join_next().await.is_some() {}
    }
}

/// `toygres-sidecar wal-push-ahead`: what the sidecar runs beside a primary, as a process of
/// its own (for a benchmark that runs Postgres with `wal-push` but without a sidecar). Stops on
/// SIGTERM or SIGINT.
#[derive(Debug, Clone, clap::Args)]
pub struct WalPushAheadArgs {
    /// The archive settings file (as for `wal-push`).
    #[arg(long)]
    pub config: PathBuf,
    /// The cluster's WAL directory (`<data>/pg_wal`).
    #[arg(long)]
    pub wal_dir: PathBuf,
}

/// Entry point of `toygres-sidecar wal-push-ahead`.
pub async fn run_process(args: WalPushAheadArgs) -> anyhow::Result<()> {
    let settings = ArchiveSettings::load(&args.config)?;
    let store = crate::objstore::Store::open(&settings.url)?;
    let ahead = PushAhead::new(WalArchiver { store, settings }, args.wal_dir);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = stop.clone();
    tokio::spawn(async move {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("install a SIGTERM handler");
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
        flag.store(true, std::sync::atomic::Ordering::SeqCst);
    });
    ahead
        .run(TICK, || !stop.load(std::sync::atomic::Ordering::SeqCst))
        .await;
    Ok(())
}

/// How often the pusher looks for waiting files.
pub const TICK: Duration = Duration::from_millis(25);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::archive::push::tests::{fixture, segment, Fixture};
    use crate::archive::{Compression, WalPushArgs};

    /// Ticks `ahead` until `done` holds (at most 20 s).
    async fn tick_until(ahead: &mut PushAhead, done: impl Fn() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while !done() {
            assert!(Instant::now() < deadline, "the pusher did not get there");
            ahead.tick();
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    fn marker(f: &Fixture, n: u32) -> PathBuf {
        f.archiver.settings.pushed_dir().join(segment(n))
    }

    #[tokio::test]
    async fn the_pusher_uploads_waiting_files_and_wal_push_then_only_checks_them() {
        let f = fixture(Compression::Zstd(1), 2);
        let files: Vec<_> = (1..=5).map(|n| f.write_ready(n, n as u8)).collect();
        let mut ahead = PushAhead::new(f.archiver.clone(), f.wal.clone());
        tick_until(&mut ahead, || (1..=5).all(|n| marker(&f, n).exists())).await;
        for n in 1..=5 {
            assert!(f.stored(&format!("{}.zst", segment(n))).is_some());
        }
        assert_eq!(
            stats::read(&f.archiver.settings.state_dir).archived_total,
            5
        );
        // Postgres's requests find the markers: nothing is uploaded or counted twice.
        for (path, name) in &files {
            f.archiver.push_with_look_ahead(path, name).await.unwrap();
            let consumed = !f
                .archiver
                .settings
                .pushed_dir()
                .join(name.as_str())
                .exists();
            assert!(consumed, "{name}'s marker is still there");
        }
        let s = stats::read(&f.archiver.settings.state_dir);
        assert_eq!(s.archived_total, 5);
        assert_eq!(s.last_archived.as_deref(), Some(segment(5).as_str()));
        assert!(
            std::fs::read_dir(f.archiver.settings.claims_dir())
                .map(|d| d.count())
                .unwrap_or(0)
                == 0,
            "a claim was left behind"
        );
    }

    #[tokio::test]
    async fn the_pusher_leaves_claimed_files_to_their_holder() {
        let f = fixture(Compression::None, 4);
        f.write_ready(1, 1);
        f.write_ready(2, 2);
        let held = Claim::take(&f.archiver.settings, &segment(1)).unwrap();
        let mut ahead = PushAhead::new(f.archiver.clone(), f.wal.clone());
        tick_until(&mut ahead, || marker(&f, 2).exists()).await;
        tick_until(&mut ahead, || ahead_idle(&f)).await;
        assert!(f.stored(&segment(1)).is_none(), "uploaded a claimed file");
        drop(held);
        tick_until(&mut ahead, || marker(&f, 1).exists()).await;
    }

    fn ahead_idle(f: &Fixture) -> bool {
        std::fs::read_dir(f.archiver.settings.claims_dir())
            .map(|d| d.count() <= 1)
            .unwrap_or(true)
    }

    #[tokio::test]
    async fn wal_push_waits_for_the_upload_another_process_claimed() {
        let f = fixture(Compression::None, 1);
        let (path, name) = f.write_ready(1, 9);
        let settings = f.archiver.settings.clone();
        std::fs::write(
            settings.config_file(),
            serde_json::to_vec(&settings).unwrap(),
        )
        .unwrap();
        let claim = Claim::take(&settings, name.as_str()).unwrap();
        // The holder finishes a moment later, marker first.
        let archiver = f.archiver.clone();
        let (p, n) = (path.clone(), name.clone());
        let holder = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(300)).await;
            let pushed = archiver.push_file(&p, &n).await.unwrap();
            archiver.write_marker(&pushed);
            drop(claim);
        });
        let args = WalPushArgs {
            config: settings.config_file(),
            path: path.clone(),
        };
        crate::archive::push::wal_push(args).await.unwrap();
        holder.await.unwrap();
        // Stored once (by the holder), and wal-push consumed its marker rather than upload.
        assert!(f.stored(name.as_str()).is_some());
        assert!(!marker(&f, 1).exists());
        assert_eq!(stats::read(&settings.state_dir).archived_total, 0);
    }

    #[tokio::test]
    async fn after_a_failed_upload_the_pusher_pauses() {
        let f = fixture(Compression::None, 2);
        f.write_ready(1, 1);
        // The store's directory becomes a plain file: every upload fails.
        std::fs::remove_dir_all(&f.store_root).unwrap();
        std::fs::write(&f.store_root, b"not a directory").unwrap();
        let mut ahead = PushAhead::new(f.archiver.clone(), f.wal.clone());
        ahead.tick();
        assert_eq!(ahead.in_flight(), 1);
        let deadline = Instant::now() + Duration::from_secs(20);
        while ahead.paused_until.is_none() {
            assert!(Instant::now() < deadline, "the upload never failed");
            tokio::time::sleep(Duration::from_millis(5)).await;
            ahead.tick();
        }
        ahead.tick();
        assert_eq!(
            ahead.in_flight(),
            0,
            "uploading again at once after a failure"
        );
        assert!(!marker(&f, 1).exists());
    }
}
