//! `wal-fetch`: hands Postgres one archived WAL file (`restore_command`), prefetching the
//! following segments of the same timeline in parallel.
//!
//! A file the archive does not hold is an ordinary answer during recovery (Postgres asks for the
//! next segment, and for timeline history files, until one is missing): it exits with status 1
//! and prints nothing. Other failures print one line and exit with status 2.
//!
//! Prefetch: when the requested segment is not already waiting in the prefetch directory, it is
//! downloaded together with the next `concurrency - 1` segments; those land in the prefetch
//! directory (temp file, rename) and later requests are served from there with a rename.
//!
//! Sliding window: during a restore the sidecar itself runs [`keep_prefetch_window`] beside the
//! recovering Postgres. `wal-fetch` notes each segment asked for; the window keeps the next
//! segments downloading into the prefetch directory while replay runs, instead of in batches
//! that replay waits for. While a window runs, `wal-fetch` fetches only what is asked for.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context;

use super::walname::{WalFileKind, WalFileName};
use super::{decompress, stats, ArchiveSettings, WalFetchArgs};
use crate::objstore::Store;

/// Entry point of `toygres-sidecar wal-fetch`.
pub async fn wal_fetch(args: WalFetchArgs) -> ExitCode {
    let settings = match ArchiveSettings::load(&args.config) {
        Ok(s) => s,
        Err(e) => return failed(&args.name, e, None),
    };
    let state_dir = settings.state_dir.clone();
    let fetcher = match Store::open(&settings.url) {
        Ok(store) => WalFetcher { store, settings },
        Err(e) => return failed(&args.name, e, Some(&state_dir)),
    };
    let dest = match std::path::absolute(&args.path) {
        Ok(p) => p,
        Err(e) => return failed(&args.name, e.into(), Some(&state_dir)),
    };
    match fetcher.fetch(&args.name, &dest).await {
        Ok(Fetched::Missing) => ExitCode::from(1),
        Ok(fetched) => {
            stats::record(&state_dir, |s| {
                s.fetched_total += 1;
                if fetched == Fetched::FromPrefetch {
                    s.prefetch_hits_total += 1;
                }
            });
            ExitCode::SUCCESS
        }
        Err(e) => failed(&args.name, e, Some(&state_dir)),
    }
}

fn failed(name: &str, e: anyhow::Error, state_dir: Option<&Path>) -> ExitCode {
    eprintln!("toygres-sidecar wal-fetch {name}: {e:#}");
    if let Some(dir) = state_dir {
        stats::record(dir, |s| s.fetch_failures_total += 1);
    }
    ExitCode::from(2)
}

/// How a request was answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fetched {
    /// Downloaded now.
    Downloaded,
    /// Already waiting in the prefetch directory.
    FromPrefetch,
    /// The archive does not hold the file.
    Missing,
}

/// Restores WAL files from one store.
#[derive(Debug, Clone)]
pub struct WalFetcher {
    pub store: Store,
    pub settings: ArchiveSettings,
}

impl WalFetcher {
    /// Puts the archived file `name` at `dest` (temp file, rename).
    pub async fn fetch(&self, name: &str, dest: &Path) -> anyhow::Result<Fetched> {
        let name = WalFileName::parse(name)?;
        let prefetch_dir = self.settings.prefetch_dir();
        let windowed = self.settings.window_marker().exists();
        if windowed && matches!(name.kind(), WalFileKind::Segment { .. }) {
            // Best effort: the window follows what replay asks for.
            let _ = write_atomically(&last_request(&self.settings), name.as_str().as_bytes());
        }
        self.forget_passed_prefetches(&name);
        let waiting = prefetch_dir.join(name.as_str());
        if waiting.exists() {
            move_into_place(&waiting, dest)
                .with_context(|| format!("restore {name} from {}", prefetch_dir.display()))?;
            return Ok(Fetched::FromPrefetch);
        }
        let ahead = if windowed {
            Vec::new()
        } else {
            name.following_segments(
                self.settings.wal_segment_size,
                self.settings.concurrency.saturating_sub(1),
            )
        };
        let ahead: Vec<String> = ahead
            .into_iter()
            .filter(|n| !prefetch_dir.join(n).exists())
            .collect();
        let requested = self.download(name.as_str());
        let prefetch_dir = &prefetch_dir;
        let prefetches = futures::future::join_all(ahead.iter().map(|n| async move {
            match self.download(n).await {
                Ok(Some(raw)) => {
                    if let Err(e) = write_atomically(&prefetch_dir.join(n), &raw) {
                        tracing::warn!(file = %n, "keep a prefetched WAL file: {e:#}");
                    }
                }
                Ok(None) => {}
                Err(e) => tracing::debug!(file = %n, "prefetch: {e:#}"),
            }
        }));
        let (requested, _) = tokio::join!(requested, prefetches);
        match requested? {
            Some(raw) => {
                write_atomically(dest, &raw)
                    .with_context(|| format!("write {name} to {}", dest.display()))?;
                Ok(Fetched::Downloaded)
            }
            None => Ok(Fetched::Missing),
        }
    }

    /// The decompressed content of `name`, under whichever compression it was archived with.
    pub(crate) async fn download(&self, name: &str) -> anyhow::Result<Option<Vec<u8>>> {
        for key in self.settings.wal_keys(name) {
            if let Some(stored) = self.store.get(&key).await? {
                let raw = tokio::task::spawn_blocking(move || decompress(&key, stored))
                    .await
                    .context("join the decompression task")??;
                return Ok(Some(raw));
            }
        }
        Ok(None)
    }

    /// Removes prefetched files replay has moved past (older segments, other timelines) and
    /// temp files of interrupted downloads.
    fn forget_passed_prefetches(&self, current: &WalFileName) {
        let Ok(entries) = std::fs::read_dir(self.settings.prefetch_dir()) else {
            return;
        };
        for e in entries.flatten() {
            let file = e.file_name().to_string_lossy().into_owned();
            let stale = match WalFileName::parse(&file) {
                Ok(n) => n.is_behind(current),
                Err(_) => file.ends_with(".tmp"),
            };
            if stale {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }
}

/// The file `wal-fetch` writes the last segment asked for into, while a window runs.
fn last_request(settings: &ArchiveSettings) -> PathBuf {
    settings.state_dir.join("last-request")
}

/// Keeps the `ahead` segments that follow the one Postgres last asked for downloaded into the
/// prefetch directory, at most `parallel` downloads at a time, handing each file to the
/// Postgres OS user (`bins`). Runs until its task is aborted; the caller then removes
/// [`ArchiveSettings::window_marker`]. A segment the archive does not hold is tried again after a second (the
/// end of the archive, usually, which a live source may still extend).
pub async fn keep_prefetch_window(
    fetcher: WalFetcher,
    ahead: usize,
    parallel: usize,
    bins: toygres_common::pg_exec::PgBinaries,
) {
    let settings = &fetcher.settings;
    if let Err(e) = std::fs::write(settings.window_marker(), b"") {
        tracing::warn!("start the WAL prefetch window: {e:#}");
        return;
    }
    // A request left by an earlier attempt says nothing about this one.
    let _ = std::fs::remove_file(last_request(settings));
    let prefetch_dir = settings.prefetch_dir();
    let mut running = tokio::task::JoinSet::new();
    let mut in_flight: HashSet<String> = HashSet::new();
    let mut fetched: HashSet<String> = HashSet::new();
    let mut missing: HashMap<String, Instant> = HashMap::new();
    loop {
        while let Some(done) = running.try_join_next() {
            let Ok((name, outcome)) = done else { continue };
            in_flight.remove(&name);
            match outcome {
                Ok(true) => {
                    fetched.insert(name);
                }
                Ok(false) => {
                    missing.insert(name, Instant::now());
                }
                Err(e) => tracing::debug!(file = %name, "prefetch window: {e:#}"),
            }
        }
        let requested = std::fs::read_to_string(last_request(settings))
            .ok()
            .and_then(|n| WalFileName::parse(n.trim()).ok());
        if let Some(requested) = requested {
            for name in requested.following_segments(settings.wal_segment_size, ahead) {
                if running.len() >= parallel.max(1) {
                    break;
                }
                let recently_missing = missing
                    .get(&name)
                    .is_some_and(|at| at.elapsed() < Duration::from_secs(1));
                if in_flight.contains(&name)
                    || fetched.contains(&name)
                    || recently_missing
                    || prefetch_dir.join(&name).exists()
                {
                    continue;
                }
                in_flight.insert(name.clone());
                let (fetcher, bins, path) =
                    (fetcher.clone(), bins.clone(), prefetch_dir.join(&name));
                running.spawn(async move {
                    let outcome = match fetcher.download(&name).await {
                        Ok(Some(raw)) => write_owned(&path, &raw, &bins).map(|()| true),
                        Ok(None) => Ok(false),
                        Err(e) => Err(e),
                    };
                    (name, outcome)
                });
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Like [`write_atomically`], with the file handed to the Postgres OS user before it appears.
fn write_owned(
    path: &Path,
    content: &[u8],
    bins: &toygres_common::pg_exec::PgBinaries,
) -> anyhow::Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(format!(".{}.tmp", std::process::id()));
    let tmp = PathBuf::from(tmp);
    std::fs::write(&tmp, content).with_context(|| format!("write {}", tmp.display()))?;
    let placed = bins
        .chown(&tmp)
        .map_err(anyhow::Error::from)
        .and_then(|()| {
            std::fs::rename(&tmp, path)
                .with_context(|| format!("rename {} into place", tmp.display()))
        });
    if placed.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    placed
}

/// Writes `content` to a temp file beside `path`, then renames it into place.
fn write_atomically(path: &Path, content: &[u8]) -> anyhow::Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(format!(".{}.tmp", std::process::id()));
    let tmp = PathBuf::from(tmp);
    std::fs::write(&tmp, content).with_context(|| format!("write {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| {
        let _ = std::fs::remove_file(&tmp);
        format!("rename {} into place", tmp.display())
    })
}

/// Renames `from` to `to`, copying when they are on different filesystems.
fn move_into_place(from: &Path, to: &Path) -> anyhow::Result<()> {
    match std::fs::rename(from, to) {
        Ok(()) => Ok(()),
        Err(e) if e.raw_os_error() == Some(libc::EXDEV) => {
            let content =
                std::fs::read(from).with_context(|| format!("read {}", from.display()))?;
            write_atomically(to, &content)?;
            let _ = std::fs::remove_file(from);
            Ok(())
        }
        Err(e) => Err(e).with_context(|| format!("move {} to {}", from.display(), to.display())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::archive::push::WalArchiver;
    use crate::archive::Compression;

    fn segment(n: u32) -> String {
        format!("0000000100000000{n:08X}")
    }

    /// Settings archiving into a `file://` store in a new temp dir (returned: it must live).
    fn file_settings(
        compression: Compression,
        concurrency: usize,
    ) -> (tempfile::TempDir, ArchiveSettings) {
        let dir = tempfile::tempdir().unwrap();
        let state_dir = dir.path().join("state");
        std::fs::create_dir_all(state_dir.join("prefetch")).unwrap();
        std::fs::create_dir_all(state_dir.join("pushed")).unwrap();
        let settings = ArchiveSettings {
            url: format!("file://{}/store", dir.path().display())
                .parse()
                .unwrap(),
            instance: "db".into(),
            compression,
            concurrency,
            state_dir,
            wal_segment_size: crate::archive::walname::DEFAULT_SEGMENT_SIZE,
            credentials_dir: None,
        };
        (dir, settings)
    }

    #[tokio::test]
    async fn files_archived_under_every_compression_are_fetched_whatever_the_setting() {
        let (dir, settings) = file_settings(Compression::Zstd(1), 1);
        let store = Store::open(&settings.url).unwrap();
        let src = dir.path().join("src");
        std::fs::create_dir_all(&src).unwrap();
        let written = [
            Compression::Gzip(1),
            Compression::None,
            Compression::Zstd(3),
            Compression::Lz4,
        ];
        for (n, c) in (1..).zip(written) {
            let mut s = settings.clone();
            s.compression = c;
            let p = src.join(segment(n));
            std::fs::write(&p, vec![n as u8; 10_000]).unwrap();
            WalArchiver {
                store: store.clone(),
                settings: s,
            }
            .push_file(&p, &WalFileName::parse(&segment(n)).unwrap())
            .await
            .unwrap();
            let key = settings.wal_key(&segment(n), c);
            assert!(store.get(&key).await.unwrap().is_some(), "{key}");
        }
        let fetcher = WalFetcher { store, settings };
        let dest = dir.path().join("RECOVERYXLOG");
        for n in 1..=4u32 {
            let _ = std::fs::remove_file(&dest);
            assert_ne!(
                fetcher.fetch(&segment(n), &dest).await.unwrap(),
                Fetched::Missing
            );
            assert_eq!(std::fs::read(&dest).unwrap(), vec![n as u8; 10_000], "{n}");
        }
    }

    #[tokio::test]
    async fn fetch_restores_pushed_files_and_prefetches_the_next_segments() {
        let (dir, settings) = file_settings(Compression::Gzip(1), 3);
        let store = Store::open(&settings.url).unwrap();
        let archiver = WalArchiver {
            store: store.clone(),
            settings: settings.clone(),
        };
        let src = dir.path().join("src");
        std::fs::create_dir_all(&src).unwrap();
        for n in 1..=4u32 {
            let p = src.join(segment(n));
            std::fs::write(&p, vec![n as u8; 10_000]).unwrap();
            archiver
                .push_file(&p, &WalFileName::parse(&segment(n)).unwrap())
                .await
                .unwrap();
        }
        let fetcher = WalFetcher { store, settings };
        let dest = dir.path().join("RECOVERYXLOG");
        assert_eq!(
            fetcher.fetch(&segment(1), &dest).await.unwrap(),
            Fetched::Downloaded
        );
        assert_eq!(std::fs::read(&dest).unwrap(), vec![1u8; 10_000]);
        // 2 and 3 were prefetched; 2 is served from there.
        assert_eq!(
            fetcher.fetch(&segment(2), &dest).await.unwrap(),
            Fetched::FromPrefetch
        );
        assert_eq!(std::fs::read(&dest).unwrap(), vec![2u8; 10_000]);
        // Jumping to 4 forgets 3, which replay no longer needs.
        assert_eq!(
            fetcher.fetch(&segment(4), &dest).await.unwrap(),
            Fetched::Downloaded
        );
        assert!(!fetcher.settings.prefetch_dir().join(segment(3)).exists());
        // The end of the archive: a quiet miss.
        assert_eq!(
            fetcher.fetch(&segment(5), &dest).await.unwrap(),
            Fetched::Missing
        );
        assert_eq!(
            fetcher.fetch("00000002.history", &dest).await.unwrap(),
            Fetched::Missing
        );
        assert!(fetcher.fetch("../etc/passwd", &dest).await.is_err());

        // A sliding window: once 5 is asked for, 6 and 7 are downloaded ahead of replay (only
        // 6 and 7 exist), and wal-fetch then serves them from the prefetch directory.
        for n in 6..=7u32 {
            let p = src.join(segment(n));
            std::fs::write(&p, vec![n as u8; 10_000]).unwrap();
            WalArchiver {
                store: fetcher.store.clone(),
                settings: fetcher.settings.clone(),
            }
            .push_file(&p, &WalFileName::parse(&segment(n)).unwrap())
            .await
            .unwrap();
        }
        let bins = toygres_common::pg_exec::PgBinaries {
            bin_dir: PathBuf::from("/nonexistent"),
            run_as: None,
        };
        let window = tokio::spawn(keep_prefetch_window(fetcher.clone(), 4, 2, bins));
        let marker = fetcher.settings.window_marker();
        toygres_common::poll::poll_until(
            "the window starts",
            Duration::from_millis(10),
            Duration::from_secs(10),
            || std::future::ready(marker.exists().then_some(())),
        )
        .await
        .expect("the window did not start");
        assert_eq!(
            fetcher.fetch(&segment(5), &dest).await.unwrap(),
            Fetched::Missing
        );
        let prefetched = |n: u32| fetcher.settings.prefetch_dir().join(segment(n)).exists();
        toygres_common::poll::poll_until(
            "the window fetches ahead",
            Duration::from_millis(10),
            Duration::from_secs(10),
            || std::future::ready((prefetched(6) && prefetched(7)).then_some(())),
        )
        .await
        .expect("the window fetched nothing ahead");
        for n in 6..=7u32 {
            assert_eq!(
                fetcher.fetch(&segment(n), &dest).await.unwrap(),
                Fetched::FromPrefetch
            );
            assert_eq!(std::fs::read(&dest).unwrap(), vec![n as u8; 10_000]);
        }
        window.abort();
        let _ = window.await;
    }
}
