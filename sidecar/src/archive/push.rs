//! `wal-push`: archives one WAL file for Postgres, and the next few waiting ones with it.
//!
//! Success means the store acknowledged a durable write. An object that already exists is
//! compared with the local file (decompressed content, by [`digest`]): identical is success (a
//! retry after a crash, or a file already pushed ahead), different is refused and counted,
//! never overwritten.
//!
//! Look-ahead: while the requested file uploads, up to `concurrency - 1` other files that have a
//! `.ready` status upload beside it. Each one pushed leaves a marker (its digest and the file's
//! identity) in the state directory, so Postgres's later `wal-push` for it only checks the
//! marker and returns.
//! `archive_status` belongs to Postgres: this code reads it and never writes it.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use sha2::{Digest, Sha256};

use super::walname::{WalFileKind, WalFileName};
use super::{claims, compression, decompress, stats, ArchiveSettings, Compression, WalPushArgs};
use crate::objstore::{PutOutcome, Store};

/// A push refused because the store holds a different object under the same name.
#[derive(Debug, thiserror::Error)]
#[error(
    "refusing to overwrite {location}: it holds different content than {name} \
     ({stored} in the store, {local} here); this WAL comes from another server or history"
)]
pub struct ConflictError {
    pub name: String,
    pub location: String,
    pub stored: String,
    pub local: String,
}

/// What one successful push did.
#[derive(Debug, Clone, PartialEq)]
pub struct Pushed {
    pub name: String,
    pub raw_bytes: u64,
    /// Bytes written to the store (0 when the object already existed).
    pub stored_bytes: u64,
    pub already_stored: bool,
    /// [`digest`] of the file's content.
    pub digest: String,
    /// The file's identity while it was read ([`file_identity`]), when it did not change.
    pub identity: Option<String>,
}

/// Device, inode, size and modification and change times of the file at `path`: a rewritten
/// or replaced file does not keep them all, so a marker with the identity of a file read for
/// upload vouches for the same file without hashing it again.
fn file_identity(path: &Path) -> Option<String> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(path).ok()?;
    Some(format!(
        "{} {} {} {}.{} {}.{}",
        m.dev(),
        m.ino(),
        m.size(),
        m.mtime(),
        m.mtime_nsec(),
        m.ctime(),
        m.ctime_nsec()
    ))
}

/// Archives WAL files to one store.
#[derive(Debug, Clone)]
pub struct WalArchiver {
    pub store: Store,
    pub settings: ArchiveSettings,
}

/// The user metadata holding [`digest`] of an archived file's uncompressed content.
pub const DIGEST_METADATA: &str = "xxh3";
/// The user metadata objects archived before [`DIGEST_METADATA`] carry instead: the SHA-256 of
/// the uncompressed content (still compared, computed only then).
pub const SHA256_METADATA: &str = "sha256";

/// What tells one content from another: XXH3-128 of it, as `xxh3:<hex>`. Not a cryptographic
/// hash, and it need not be: it tells a retry of the same file from different content (another
/// server's WAL, which no one crafts to collide; whoever can write the store can replace
/// objects anyway). It costs about 1 ms for a 16 MiB segment, where SHA-256 cost 12 ms, a third
/// of the CPU an archived segment took (BENCHMARKS.md).
pub fn digest(bytes: &[u8]) -> String {
    format!("xxh3:{:032x}", twox_hash::XxHash3_128::oneshot(bytes))
}

/// Reads the file at `path` into a buffer this thread keeps (a segment read into fresh memory
/// costs a page fault and a cleared page for every 4 KiB of it, a twentieth of the CPU of an
/// upload), and returns its size, [`digest`] and content compressed.
fn read_digest_compress(
    path: &Path,
    compression: Compression,
) -> anyhow::Result<(u64, String, Vec<u8>)> {
    use std::io::Read;
    thread_local! {
        static BUFFER: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
    }
    BUFFER.with(|buffer| {
        let mut raw = buffer.borrow_mut();
        raw.clear();
        std::fs::File::open(path)
            .and_then(|mut f| f.read_to_end(&mut raw))
            .with_context(|| format!("read {}", path.display()))?;
        let local = digest(&raw);
        let stored = compression.compress(&raw).context("compress")?;
        let size = raw.len() as u64;
        // Segments of up to 64 MiB are kept for the next one; a larger one is not.
        if raw.capacity() > 64 << 20 {
            *raw = Vec::new();
        }
        Ok((size, local, stored))
    })
}

fn sha256_hex(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

/// Entry point of `toygres-sidecar wal-push`: a failure is one line on stderr, which Postgres
/// puts in its log beside its own "archive command failed".
pub async fn run(args: WalPushArgs) -> ExitCode {
    let file = args.path.display().to_string();
    match wal_push(args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("toygres-sidecar wal-push {file}: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Archives the file `args` names (with look-ahead), updating the counters.
pub async fn wal_push(args: WalPushArgs) -> anyhow::Result<()> {
    let settings = ArchiveSettings::load(&args.config)?;
    let state_dir = settings.state_dir.clone();
    // A file a look-ahead already pushed needs no store: answer before opening one (an S3 or
    // Azure client loads the TLS trust roots, which costs more CPU than the check itself).
    if let Ok((path, name)) = wal_path(&args) {
        if pushed_ahead(&settings, &path, &name).await {
            tracing::debug!(file = %name, "already pushed ahead");
            return Ok(());
        }
        // The sidecar may be uploading it this moment: wait for that rather than upload twice.
        if claims::claimed(&settings, name.as_str()) {
            claims::wait_for_claim(&settings, name.as_str()).await;
            if pushed_ahead(&settings, &path, &name).await {
                return Ok(());
            }
        }
    }
    match prepare(&args, settings) {
        Ok((archiver, path, name)) => archiver.push_with_look_ahead(&path, &name).await,
        Err(e) => {
            stats::record(&state_dir, |s| {
                s.archive_failures_total += 1;
                s.last_failure_time = Some(stats::now());
            });
            Err(e)
        }
    }
}

/// Opens the store and checks the file name.
fn prepare(
    args: &WalPushArgs,
    settings: ArchiveSettings,
) -> anyhow::Result<(WalArchiver, PathBuf, WalFileName)> {
    let (path, name) = wal_path(args)?;
    let store = Store::open(&settings.url)?;
    Ok((WalArchiver { store, settings }, path, name))
}

/// The file Postgres asks for, as an absolute path, and its checked name.
fn wal_path(args: &WalPushArgs) -> anyhow::Result<(PathBuf, WalFileName)> {
    let path = if args.path.is_absolute() {
        args.path.clone()
    } else {
        std::env::current_dir()
            .context("read the current directory")?
            .join(&args.path)
    };
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .with_context(|| format!("{} names no file", path.display()))?;
    let name = WalFileName::parse(&name)?;
    Ok((path, name))
}

/// The marker a look-ahead leaves for `name` in the state directory.
fn marker_path(settings: &ArchiveSettings, name: &str) -> PathBuf {
    settings.pushed_dir().join(name)
}

/// Whether a look-ahead already pushed exactly this file (its marker holds the SHA-256 of the
/// file's content as it was pushed); consumes the marker.
async fn pushed_ahead(settings: &ArchiveSettings, path: &Path, name: &WalFileName) -> bool {
    let marker = marker_path(settings, name.as_str());
    let Ok(recorded) = std::fs::read_to_string(&marker) else {
        return false;
    };
    let _ = std::fs::remove_file(&marker);
    let mut lines = recorded.lines();
    let expected = lines.next().unwrap_or_default().trim().to_string();
    if let Some(identity) = lines.next() {
        if file_identity(path).as_deref() == Some(identity.trim()) {
            return true;
        }
    }
    let path = path.to_path_buf();
    let local = tokio::task::spawn_blocking(move || std::fs::read(path).map(|b| digest(&b)))
        .await
        .ok()
        .and_then(|r| r.ok());
    local.as_deref() == Some(expected.as_str())
}

impl WalArchiver {
    /// Pushes `path` (and, beside it, other waiting files); records the outcome in the counters.
    pub async fn push_with_look_ahead(
        &self,
        path: &Path,
        name: &WalFileName,
    ) -> anyhow::Result<()> {
        let state_dir = &self.settings.state_dir;
        if pushed_ahead(&self.settings, path, name).await {
            tracing::debug!(file = %name, "already pushed ahead");
            return Ok(());
        }
        // Claimed while they upload, so the sidecar's pusher leaves them alone (the requested
        // file is pushed even when another process holds it: Postgres is waiting).
        let _claim = claims::Claim::take(&self.settings, name.as_str());
        let want = self.settings.concurrency.saturating_sub(1);
        let wal_dir = path.parent().unwrap_or(Path::new("."));
        let others: Vec<_> = self
            .waiting_files(wal_dir, Some(name), want)
            .into_iter()
            .filter_map(|(p, n)| Some((claims::Claim::take(&self.settings, n.as_str())?, p, n)))
            .collect();
        let ahead_names: Vec<WalFileName> = others.iter().map(|(_, _, n)| n.clone()).collect();
        let main = self.push_file(path, name);
        let ahead = futures::future::join_all(others.iter().map(|(_, p, n)| async move {
            let result = self.push_file(p, n).await;
            if let Ok(pushed) = &result {
                self.write_marker(pushed);
            }
            result
        }));
        let (main_result, ahead_results) = tokio::join!(main, ahead);
        // Files pushed ahead count once stored; their failures do not: Postgres asks for each
        // of them in turn, and that request's outcome is the one that counts.
        let mut stored: Vec<&Pushed> = ahead_results.iter().flatten().collect();
        if let Ok(p) = &main_result {
            stored.push(p);
        }
        stats::record(state_dir, |s| {
            for p in &stored {
                s.count_stored(&p.name, p.raw_bytes, p.stored_bytes);
            }
            if let Err(e) = &main_result {
                s.archive_failures_total += 1;
                s.last_failure_time = Some(stats::now());
                if e.downcast_ref::<ConflictError>().is_some() {
                    s.archive_conflicts_total += 1;
                }
            }
        });
        drop(others);
        for (r, n) in ahead_results.iter().zip(&ahead_names) {
            if let Err(e) = r {
                tracing::debug!(file = %n, "push ahead: {e:#}");
            }
        }
        main_result.map(|p| {
            tracing::debug!(file = %p.name, bytes = p.stored_bytes, "archived");
        })
    }

    /// Archives one file: compress, create-if-absent, and compare when it already exists.
    pub async fn push_file(&self, path: &Path, name: &WalFileName) -> anyhow::Result<Pushed> {
        let identity = file_identity(path);
        let compression = self.settings.compression;
        let file = path.to_path_buf();
        let (raw_bytes, local, stored) =
            tokio::task::spawn_blocking(move || read_digest_compress(&file, compression))
                .await
                .context("join the compression task")?
                .with_context(|| format!("archive {name}"))?;
        let identity = identity.filter(|before| file_identity(path).as_ref() == Some(before));
        let key = self.settings.wal_key(name.as_str(), compression);
        let pushed = |stored_bytes: u64, already_stored: bool, digest: String| Pushed {
            name: name.to_string(),
            raw_bytes,
            stored_bytes,
            already_stored,
            digest,
            identity: identity.clone(),
        };
        // The file may exist under another compression's name only if this archive was written
        // with another setting: look there only then (one request per file otherwise).
        let mut existing = None;
        for other in self.other_suffixes_in_use() {
            let k = format!(
                "{}{other}",
                self.settings.wal_key(name.as_str(), Compression::None)
            );
            if let Some(metadata) = self.store.metadata(&k).await? {
                existing = Some((k, metadata));
                break;
            }
        }
        if existing.is_none() {
            let stored_len = stored.len() as u64;
            let metadata = [(DIGEST_METADATA, local.clone())];
            // Create-if-absent: the store refuses the write when the object exists (S3 and
            // Azure `If-None-Match: *`, GCS `ifGenerationMatch=0`, a file store's hard link),
            // so a new file costs one request, and only an existing one is looked at.
            match self
                .store
                .put_new(&key, stored, &metadata)
                .await
                .with_context(|| format!("upload {name} to {}", self.store.describe(&key)))?
            {
                PutOutcome::Created => {
                    self.note_suffix_in_use(compression.suffix(), name.as_str());
                    return Ok(pushed(stored_len, false, local));
                }
                PutOutcome::AlreadyExists => {
                    let metadata = self.store.metadata(&key).await?.unwrap_or_default();
                    existing = Some((key.clone(), metadata));
                }
            }
        }
        let (existing, metadata) = existing.unwrap_or_else(|| (key.clone(), Default::default()));
        // The store recorded the content's digest at upload (an older version: its SHA-256):
        // no need to download the object.
        let recorded = match (metadata.get(DIGEST_METADATA), metadata.get(SHA256_METADATA)) {
            (Some(stored), _) => Some((stored.clone(), local.clone())),
            (None, Some(stored)) => {
                let file = path.to_path_buf();
                let raw = tokio::task::spawn_blocking(move || std::fs::read(file))
                    .await
                    .context("join the hashing task")?
                    .with_context(|| format!("read {}", path.display()))?;
                Some((format!("sha256:{stored}"), sha256_hex(&raw)))
            }
            (None, None) => None,
        };
        match recorded {
            Some((stored, here)) if stored == here => {}
            Some((stored, here)) => {
                return Err(ConflictError {
                    name: name.to_string(),
                    location: self.store.describe(&existing),
                    stored,
                    local: here,
                }
                .into())
            }
            None => self.compare_with_stored(name, &existing, &local).await?,
        }
        Ok(pushed(0, true, local))
    }

    /// Succeeds when the object at `key` holds the content whose [`digest`] is `local`.
    async fn compare_with_stored(
        &self,
        name: &WalFileName,
        key: &str,
        local: &str,
    ) -> anyhow::Result<()> {
        let location = self.store.describe(key);
        let stored = self
            .store
            .get(key)
            .await?
            .with_context(|| format!("{location} vanished while comparing it with {name}"))?;
        let key_owned = key.to_string();
        let stored_digest = tokio::task::spawn_blocking(move || {
            decompress(&key_owned, stored).map(|raw| digest(&raw))
        })
        .await
        .context("join the comparison task")?
        .unwrap_or_else(|e| format!("unreadable ({e:#})"));
        if stored_digest == local {
            return Ok(());
        }
        Err(ConflictError {
            name: name.to_string(),
            location,
            stored: stored_digest,
            local: local.to_string(),
        }
        .into())
    }

    /// The file listing the name suffixes (compressions) this member has archived with.
    fn suffixes_file(&self) -> PathBuf {
        self.settings.state_dir.join("compressions")
    }

    /// The suffixes other than the current compression's that objects of this archive may
    /// have: those this member wrote before, or all of them when it has no record (an archive
    /// written by a version that kept none, or a first push).
    fn other_suffixes_in_use(&self) -> Vec<&'static str> {
        let current = self.settings.compression.suffix();
        let recorded = std::fs::read_to_string(self.suffixes_file()).ok();
        compression::ALL
            .iter()
            .map(|c| c.suffix())
            .filter(|s| *s != current)
            .filter(|s| {
                recorded
                    .as_deref()
                    .is_none_or(|r| r.lines().any(|l| l == format!("+{s}")))
            })
            .collect()
    }

    /// Records that this member has written objects with `suffix` (temp file, rename).
    fn note_suffix_in_use(&self, suffix: &str, pushed: &str) {
        let file = self.suffixes_file();
        let recorded = std::fs::read_to_string(&file).unwrap_or_default();
        let line = format!("+{suffix}");
        if recorded.lines().any(|l| l == line) {
            return;
        }
        // Look-ahead pushes may get here at once: each writes its own temp file.
        let tmp = file.with_extension(format!("{pushed}.tmp"));
        let result = std::fs::write(&tmp, format!("{recorded}{line}\n"))
            .and_then(|()| std::fs::rename(&tmp, &file));
        if let Err(e) = result {
            tracing::warn!("record the compression in use: {e}");
        }
    }

    fn marker_path(&self, name: &str) -> PathBuf {
        marker_path(&self.settings, name)
    }

    /// Records that `pushed` is in the store (temp file, rename).
    pub(crate) fn write_marker(&self, pushed: &Pushed) {
        let marker = self.marker_path(&pushed.name);
        let tmp = marker.with_extension("tmp");
        let mut content = pushed.digest.clone();
        if let Some(identity) = &pushed.identity {
            content = format!("{content}\n{identity}\n");
        }
        let result = std::fs::write(&tmp, content).and_then(|()| std::fs::rename(&tmp, &marker));
        if let Err(e) = result {
            tracing::warn!(file = %pushed.name, "record a file pushed ahead: {e}");
        }
    }

    /// The oldest files waiting in `wal_dir` besides `except` (history files first, as
    /// Postgres orders them), at most `want`, skipping those already pushed ahead and those
    /// another process is uploading. Also drops markers whose file no longer waits.
    pub(crate) fn waiting_files(
        &self,
        wal_dir: &Path,
        except: Option<&WalFileName>,
        want: usize,
    ) -> Vec<(PathBuf, WalFileName)> {
        let Ok(entries) = std::fs::read_dir(wal_dir.join("archive_status")) else {
            return Vec::new();
        };
        let mut ready: Vec<WalFileName> = entries
            .flatten()
            .filter_map(|e| {
                let file = e.file_name().to_string_lossy().into_owned();
                WalFileName::parse(file.strip_suffix(".ready")?).ok()
            })
            .collect();
        ready.sort_by_key(|n| {
            (
                !matches!(n.kind(), WalFileKind::History),
                n.as_str().to_string(),
            )
        });
        if let Ok(markers) = std::fs::read_dir(self.settings.pushed_dir()) {
            for m in markers.flatten() {
                let file = m.file_name().to_string_lossy().into_owned();
                // A marker being written (another process's temp file) is left alone.
                if !file.ends_with(".tmp") && !ready.iter().any(|r| r.as_str() == file) {
                    let _ = std::fs::remove_file(m.path());
                }
            }
        }
        ready
            .into_iter()
            .filter(|n| Some(n) != except && !self.marker_path(n.as_str()).exists())
            .filter(|n| !claims::claimed(&self.settings, n.as_str()))
            .take(want)
            .map(|n| (wal_dir.join(n.as_str()), n))
            .collect()
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::archive::Compression;

    /// A WAL directory, a state directory and a file store in one temp dir.
    pub(crate) struct Fixture {
        pub(crate) _dir: tempfile::TempDir,
        pub(crate) wal: PathBuf,
        pub(crate) archiver: WalArchiver,
        pub(crate) store_root: PathBuf,
    }

    pub(crate) fn fixture(compression: Compression, concurrency: usize) -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let wal = dir.path().join("pg_wal");
        std::fs::create_dir_all(wal.join("archive_status")).unwrap();
        let state_dir = dir.path().join("state");
        std::fs::create_dir_all(state_dir.join("pushed")).unwrap();
        let store_root = dir.path().join("store");
        let settings = ArchiveSettings {
            url: format!("file://{}", store_root.display()).parse().unwrap(),
            instance: "db".into(),
            compression,
            concurrency,
            state_dir,
            wal_segment_size: crate::archive::walname::DEFAULT_SEGMENT_SIZE,
            credentials_dir: None,
        };
        let store = Store::open(&settings.url).unwrap();
        Fixture {
            _dir: dir,
            wal,
            archiver: WalArchiver { store, settings },
            store_root,
        }
    }

    pub(crate) fn segment(n: u32) -> String {
        format!("0000000100000000{n:08X}")
    }

    impl Fixture {
        pub(crate) fn write_ready(&self, n: u32, fill: u8) -> (PathBuf, WalFileName) {
            let name = segment(n);
            let path = self.wal.join(&name);
            std::fs::write(&path, vec![fill; 64 * 1024]).unwrap();
            std::fs::write(self.wal.join(format!("archive_status/{name}.ready")), b"").unwrap();
            (path, WalFileName::parse(&name).unwrap())
        }
        pub(crate) fn stored(&self, name: &str) -> Option<Vec<u8>> {
            std::fs::read(self.store_root.join("db/wal").join(name)).ok()
        }
    }

    #[tokio::test]
    async fn identical_repush_succeeds_and_different_content_is_refused() {
        let f = fixture(Compression::Gzip(1), 1);
        let (path, name) = f.write_ready(1, 7);
        f.archiver.push_with_look_ahead(&path, &name).await.unwrap();
        let stored = f.stored(&format!("{name}.gz")).unwrap();
        assert_eq!(
            decompress("x.gz", stored.clone()).unwrap(),
            vec![7; 64 * 1024]
        );
        // Same content again: success, object untouched.
        f.archiver.push_with_look_ahead(&path, &name).await.unwrap();
        // Different content under the same name: refused, object untouched, counted.
        std::fs::write(&path, vec![8u8; 64 * 1024]).unwrap();
        let err = f
            .archiver
            .push_with_look_ahead(&path, &name)
            .await
            .unwrap_err();
        assert!(err.downcast_ref::<ConflictError>().is_some(), "{err:#}");
        assert!(err.to_string().contains("refusing to overwrite"), "{err}");
        assert_eq!(f.stored(&format!("{name}.gz")).unwrap(), stored);
        let s = stats::read(&f.archiver.settings.state_dir);
        assert_eq!(s.archived_total, 2);
        assert_eq!(s.archive_failures_total, 1);
        assert_eq!(s.archive_conflicts_total, 1);
        assert_eq!(s.last_archived.as_deref(), Some(name.as_str()));
    }

    #[tokio::test]
    async fn objects_are_compared_by_the_digest_they_were_stored_with() {
        let mut f = fixture(Compression::Zstd(1), 1);
        f.archiver.store = Store::in_memory(&"s3://bucket/p".parse().unwrap());
        let c = Compression::Zstd(1);
        let key = |n: &WalFileName| f.archiver.settings.wal_key(n.as_str(), c);
        // An object an older version archived: its SHA-256 (bare hex) in the metadata.
        let (p1, n1) = f.write_ready(1, 7);
        let raw = std::fs::read(&p1).unwrap();
        let old = hex::encode(Sha256::digest(&raw));
        let metadata = [(SHA256_METADATA, old)];
        let stored = c.compress(&raw).unwrap();
        f.archiver
            .store
            .put_new(&key(&n1), stored, &metadata)
            .await
            .unwrap();
        let pushed = f.archiver.push_file(&p1, &n1).await.unwrap();
        assert!(pushed.already_stored);
        std::fs::write(&p1, vec![8u8; 64 * 1024]).unwrap();
        let err = f.archiver.push_file(&p1, &n1).await.unwrap_err();
        let conflict = err.downcast_ref::<ConflictError>().unwrap();
        assert!(conflict.stored.starts_with("sha256:"), "{err}");
        assert!(conflict.local.starts_with("sha256:"), "{err}");
        assert_ne!(conflict.stored, conflict.local);
        // A new object records its XXH3 digest, and is compared by it.
        let (p2, n2) = f.write_ready(2, 9);
        assert!(!f.archiver.push_file(&p2, &n2).await.unwrap().already_stored);
        let recorded = f.archiver.store.metadata(&key(&n2)).await.unwrap().unwrap();
        assert_eq!(
            recorded.get(DIGEST_METADATA),
            Some(&digest(&vec![9u8; 64 * 1024]))
        );
        assert!(f.archiver.push_file(&p2, &n2).await.unwrap().already_stored);
        std::fs::write(&p2, vec![10u8; 64 * 1024]).unwrap();
        let err = f.archiver.push_file(&p2, &n2).await.unwrap_err();
        let conflict = err.downcast_ref::<ConflictError>().unwrap();
        assert!(conflict.stored.starts_with("xxh3:"), "{err}");
        assert_eq!(conflict.local, digest(&vec![10u8; 64 * 1024]));
    }

    #[tokio::test]
    async fn an_object_stored_under_another_compression_is_compared_too() {
        let f = fixture(Compression::None, 1);
        let (path, name) = f.write_ready(1, 1);
        f.archiver.push_with_look_ahead(&path, &name).await.unwrap();
        assert!(f.stored(name.as_str()).is_some());
        let mut gz = f.archiver.clone();
        gz.settings.compression = Compression::Gzip(6);
        gz.push_with_look_ahead(&path, &name).await.unwrap();
        assert!(f.stored(&format!("{name}.gz")).is_none(), "stored twice");
        std::fs::write(&path, b"other").unwrap();
        assert!(gz.push_with_look_ahead(&path, &name).await.is_err());
    }

    #[tokio::test]
    async fn other_compressions_names_are_looked_at_only_after_a_change_of_setting() {
        let f = fixture(Compression::Zstd(1), 1);
        // No record yet (a first push, or an archive older than the record): every other name.
        assert_eq!(f.archiver.other_suffixes_in_use(), [".gz", "", ".lz4"]);
        let (path, name) = f.write_ready(1, 3);
        f.archiver.push_with_look_ahead(&path, &name).await.unwrap();
        assert!(f.stored(&format!("{name}.zst")).is_some());
        // From then on a new file is one create-if-absent, nothing looked up first.
        assert!(f.archiver.other_suffixes_in_use().is_empty());
        // The setting changes to gzip: the zstd name is looked at, the object not doubled.
        let mut gz = f.archiver.clone();
        gz.settings.compression = Compression::Gzip(1);
        assert_eq!(gz.other_suffixes_in_use(), [".zst"]);
        gz.push_with_look_ahead(&path, &name).await.unwrap();
        assert!(f.stored(&format!("{name}.gz")).is_none(), "stored twice");
        std::fs::write(&path, vec![4u8; 64 * 1024]).unwrap();
        let err = gz.push_with_look_ahead(&path, &name).await.unwrap_err();
        assert!(err.downcast_ref::<ConflictError>().is_some(), "{err:#}");
        let (p2, n2) = f.write_ready(2, 5);
        gz.push_with_look_ahead(&p2, &n2).await.unwrap();
        assert_eq!(
            decompress("x.gz", f.stored(&format!("{n2}.gz")).unwrap()).unwrap(),
            vec![5u8; 64 * 1024]
        );
        assert_eq!(gz.other_suffixes_in_use(), [".zst"]);
        assert_eq!(f.archiver.other_suffixes_in_use(), [".gz"]);
    }

    #[tokio::test]
    async fn look_ahead_pushes_waiting_files_and_leaves_markers() {
        let f = fixture(Compression::Gzip(1), 3);
        let (p1, n1) = f.write_ready(1, 1);
        for n in 2..=5 {
            f.write_ready(n, n as u8);
        }
        f.archiver.push_with_look_ahead(&p1, &n1).await.unwrap();
        // 1 plus the two oldest others.
        for n in 1..=3 {
            assert!(f.stored(&format!("{}.gz", segment(n))).is_some(), "{n}");
        }
        assert!(f.stored(&format!("{}.gz", segment(4))).is_none());
        let pushed = f.archiver.settings.pushed_dir();
        assert!(pushed.join(segment(2)).exists());
        assert!(pushed.join(segment(3)).exists());
        // Postgres never got .done from us.
        assert!(f
            .wal
            .join(format!("archive_status/{}.ready", segment(2)))
            .exists());
        // Postgres marks 1 done and asks for 2: answered from the marker, which is consumed.
        std::fs::remove_file(f.wal.join(format!("archive_status/{}.ready", segment(1)))).unwrap();
        let (p2, n2) = (
            f.wal.join(segment(2)),
            WalFileName::parse(&segment(2)).unwrap(),
        );
        f.archiver.push_with_look_ahead(&p2, &n2).await.unwrap();
        assert!(!pushed.join(segment(2)).exists());
        let s = stats::read(&f.archiver.settings.state_dir);
        assert_eq!(s.archived_total, 3, "the marker hit is not counted twice");
        assert_eq!(s.last_archived.as_deref(), Some(segment(3).as_str()));
        // A marker whose content no longer matches is not trusted.
        std::fs::write(pushed.join(segment(3)), "0000").unwrap();
        let (p3, n3) = (
            f.wal.join(segment(3)),
            WalFileName::parse(&segment(3)).unwrap(),
        );
        f.archiver.push_with_look_ahead(&p3, &n3).await.unwrap();
        // Nor a marker whose file was rewritten after the upload (same size, other bytes): the
        // identity it recorded no longer holds, the content is compared, and the push refused.
        let (p4, n4) = (
            f.wal.join(segment(4)),
            WalFileName::parse(&segment(4)).unwrap(),
        );
        for n in 2..=3 {
            std::fs::remove_file(f.wal.join(format!("archive_status/{}.ready", segment(n))))
                .unwrap();
        }
        let (p5, n5) = (
            f.wal.join(segment(5)),
            WalFileName::parse(&segment(5)).unwrap(),
        );
        f.archiver.push_with_look_ahead(&p5, &n5).await.unwrap();
        assert!(pushed.join(segment(4)).exists(), "4 not pushed ahead");
        std::fs::write(&p4, vec![99u8; 64 * 1024]).unwrap();
        let err = f.archiver.push_with_look_ahead(&p4, &n4).await.unwrap_err();
        assert!(err.downcast_ref::<ConflictError>().is_some(), "{err:#}");
    }

    #[tokio::test]
    async fn a_conflict_ahead_is_left_alone_until_postgres_asks_for_that_file() {
        let f = fixture(Compression::Gzip(1), 3);
        let (p2, n2) = f.write_ready(2, 2);
        f.archiver.push_file(&p2, &n2).await.unwrap();
        std::fs::write(&p2, vec![9u8; 64 * 1024]).unwrap();
        let (p1, n1) = f.write_ready(1, 1);
        f.archiver.push_with_look_ahead(&p1, &n1).await.unwrap();
        assert!(!f.archiver.settings.pushed_dir().join(segment(2)).exists());
        let stored = f.stored(&format!("{}.gz", segment(2))).unwrap();
        assert_eq!(decompress("x.gz", stored).unwrap(), vec![2u8; 64 * 1024]);
        assert_eq!(
            stats::read(&f.archiver.settings.state_dir).archive_failures_total,
            0
        );
        let err = f.archiver.push_with_look_ahead(&p2, &n2).await.unwrap_err();
        assert!(err.downcast_ref::<ConflictError>().is_some(), "{err:#}");
        assert_eq!(
            stats::read(&f.archiver.settings.state_dir).archive_conflicts_total,
            1
        );
    }

    #[tokio::test]
    async fn a_missing_file_fails_and_is_counted() {
        let f = fixture(Compression::Gzip(1), 2);
        let name = WalFileName::parse(&segment(9)).unwrap();
        let err = f
            .archiver
            .push_with_look_ahead(&f.wal.join(segment(9)), &name)
            .await
            .unwrap_err();
        assert!(format!("{err:#}").contains("read "), "{err:#}");
        assert_eq!(
            stats::read(&f.archiver.settings.state_dir).archive_failures_total,
            1
        );
    }
}
