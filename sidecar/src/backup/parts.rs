//! Base backups in parts: the tar stream is cut into pieces of [`PART_BYTES`], each compressed
//! on its own and stored as its own object (`base.tar.p00000.zst`, `base.tar.p00001.zst` …), so
//! that [`jobs`] cores compress them while the backup runs and decompress them while a restore
//! runs. The pieces are byte ranges of one tar stream, not tars of their own: the restore writes
//! them, in order, into one tar extractor, which is cheap beside decompression.
//!
//! The manifest lists every part with its sizes and SHA-256. A backup written before parts
//! existed lists one object holding the whole stream; it is restored as a stream
//! ([`super::stream::store_to_writer`]), never read into memory whole.

use std::io::{Read, Write};

use anyhow::{bail, Context};
use futures::{StreamExt, TryStreamExt};
use sha2::{Digest, Sha256};
use toygres_common::sidecar_api::BackupObject;

use super::stream::{run_program, Observe, Streamed};
use crate::archive::compression::decompress;
use crate::archive::Compression;
use crate::objstore::{PutOutcome, Store};

/// Raw bytes per part: small enough that a few parts in memory per core are affordable, large
/// enough that a part costs little beside its content (one PUT, one compressor frame).
pub const PART_BYTES: usize = 16 << 20;

/// Parts compressed or decompressed at once: `TOYGRES_BACKUP_JOBS` when set, else the cores
/// this process may use.
pub fn jobs() -> usize {
    std::env::var("TOYGRES_BACKUP_JOBS")
        .ok()
        .and_then(|v| v.trim().parse::<usize>().ok())
        .filter(|n| *n > 0)
        .unwrap_or_else(|| {
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1)
        })
}

/// The key of part `index` of the stream stored under `prefix` (`…/base.tar`).
pub fn part_key(prefix: &str, index: usize, compression: Compression) -> String {
    format!("{prefix}.p{index:05}{}", compression.suffix())
}

/// The manifest's checksum of a backup in parts: SHA-256 of its parts' SHA-256s (hex, one per
/// line, in order).
pub fn combined_sha256(objects: &[BackupObject]) -> String {
    let mut h = Sha256::new();
    for o in objects {
        h.update(o.sha256.as_bytes());
        h.update(b"\n");
    }
    hex::encode(h.finalize())
}

/// Runs `cmd` and stores its stdout, seen by `observe` on the way, as parts under `prefix`,
/// `jobs` of them compressed and uploaded at once. Returns the parts in order, the totals and
/// the observer. When the program fails or an upload does, parts already stored stay: the
/// caller discards the backup's objects.
pub async fn command_to_parts<O: Observe>(
    store: &Store,
    prefix: &str,
    cmd: std::process::Command,
    compression: Compression,
    mut observe: O,
    part_bytes: usize,
    jobs: usize,
) -> anyhow::Result<(Vec<BackupObject>, Streamed, O)> {
    let (tx, rx) = tokio::sync::mpsc::channel::<Vec<u8>>(1);
    let producer = tokio::task::spawn_blocking(move || -> anyhow::Result<O> {
        run_program(cmd, |stdout| {
            let mut part = Vec::with_capacity(part_bytes);
            let mut sent_any = false;
            loop {
                let want = part_bytes - part.len();
                let n = read_some(stdout, &mut part, want)?;
                if n > 0 {
                    let new = part.len() - n;
                    observe.observe(&part[new..]).context("read the stream")?;
                }
                if part.len() == part_bytes || (n == 0 && (!part.is_empty() || !sent_any)) {
                    let full = std::mem::replace(&mut part, Vec::with_capacity(part_bytes));
                    tx.blocking_send(full)
                        .map_err(|_| anyhow::anyhow!("the upload stopped"))?;
                    sent_any = true;
                }
                if n == 0 {
                    return Ok(());
                }
            }
        })?;
        Ok(observe)
    });
    let parts = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|part| (part, rx))
    })
    .enumerate()
    .map(|(index, raw)| {
        let key = part_key(prefix, index, compression);
        async move { store_part(store, key, raw, compression).await }
    })
    .buffered(jobs.max(1))
    .try_collect::<Vec<BackupObject>>()
    .await;
    // A failed upload dropped the receiver: the producer stops and kills the program, so its
    // error then only says so; the upload's own error is the one to report. A failing program
    // ends the parts cleanly, and its error comes next.
    let produced = producer.await.context("join the backup stream task")?;
    let parts = parts?;
    let observe = produced?;
    let streamed = Streamed {
        raw_bytes: parts.iter().map(|p| p.raw_bytes).sum(),
        stored_bytes: parts.iter().map(|p| p.stored_bytes).sum(),
        sha256: combined_sha256(&parts),
    };
    Ok((parts, streamed, observe))
}

/// Reads up to `want` bytes from `from` onto the end of `into`; 0 at the end of the stream.
fn read_some(from: &mut impl Read, into: &mut Vec<u8>, want: usize) -> anyhow::Result<usize> {
    let start = into.len();
    into.resize(start + want.min(256 * 1024), 0);
    loop {
        match from.read(&mut into[start..]) {
            Ok(n) => {
                into.truncate(start + n);
                return Ok(n);
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => {
                into.truncate(start);
                return Err(e).context("read the program's output");
            }
        }
    }
}

/// Compresses one part on a blocking thread and stores it as a new object.
async fn store_part(
    store: &Store,
    key: String,
    raw: Vec<u8>,
    compression: Compression,
) -> anyhow::Result<BackupObject> {
    let raw_bytes = raw.len() as u64;
    let (stored, sha256) = tokio::task::spawn_blocking(move || -> anyhow::Result<_> {
        let stored = compression.compress(&raw)?;
        let sha = hex::encode(Sha256::digest(&stored));
        Ok((stored, sha))
    })
    .await
    .context("join a compression task")??;
    let stored_bytes = stored.len() as u64;
    if store.put_new(&key, stored, &[]).await? == PutOutcome::AlreadyExists {
        bail!("{} exists already", store.describe(&key));
    }
    Ok(BackupObject {
        key,
        database: None,
        raw_bytes,
        stored_bytes,
        sha256,
    })
}

/// Downloads `parts`, `jobs` at once, checks each against its SHA-256, decompresses them on
/// blocking threads and writes their content, in order, into `sink` on another one. Returns
/// the sink once everything is written.
pub async fn parts_to_writer<W>(
    store: &Store,
    parts: &[BackupObject],
    sink: W,
    jobs: usize,
) -> anyhow::Result<W>
where
    W: Write + Send + 'static,
{
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Vec<u8>>(1);
    let writer = tokio::task::spawn_blocking(move || -> anyhow::Result<W> {
        let mut sink = sink;
        while let Some(raw) = rx.blocking_recv() {
            sink.write_all(&raw).context("unpack")?;
        }
        Ok(sink)
    });
    let mut fetched = futures::stream::iter(parts.iter().cloned())
        .map(|part| fetch_part(store, part))
        .buffered(jobs.max(1));
    let mut failed = None;
    while let Some(raw) = fetched.next().await {
        match raw {
            Ok(raw) => {
                if tx.send(raw).await.is_err() {
                    break;
                }
            }
            Err(e) => {
                failed = Some(e);
                break;
            }
        }
    }
    drop(fetched);
    drop(tx);
    let written = writer.await.context("join the unpack task")?;
    if let Some(e) = failed {
        return Err(e);
    }
    written
}

/// One part, downloaded, checked and decompressed.
async fn fetch_part(store: &Store, part: BackupObject) -> anyhow::Result<Vec<u8>> {
    let what = store.describe(&part.key);
    let stored = store
        .get(&part.key)
        .await?
        .with_context(|| format!("{what} is missing"))?;
    tokio::task::spawn_blocking(move || {
        let sha = hex::encode(Sha256::digest(&stored));
        if sha != part.sha256 {
            bail!(
                "{what} is corrupted: its SHA-256 is {sha}, the manifest says {}",
                part.sha256
            );
        }
        let raw = decompress(&part.key, stored).with_context(|| format!("unpack {what}"))?;
        if raw.len() as u64 != part.raw_bytes {
            bail!(
                "{what} unpacked to {} bytes, the manifest says {}",
                raw.len(),
                part.raw_bytes
            );
        }
        Ok(raw)
    })
    .await
    .context("join a decompression task")?
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file_store(dir: &tempfile::TempDir) -> Store {
        let url = format!("file://{}/s", dir.path().display())
            .parse()
            .unwrap();
        Store::open(&url).unwrap()
    }

    fn seq(n: u32) -> std::process::Command {
        let mut cmd = std::process::Command::new("sh");
        cmd.arg("-c").arg(format!("seq 1 {n}"));
        cmd
    }

    #[tokio::test]
    async fn every_compressor_stores_parts_that_come_back_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let store = file_store(&dir);
        for c in [
            Compression::Zstd(1),
            Compression::Lz4,
            Compression::Gzip(6),
            Compression::None,
        ] {
            let prefix = format!("x{}/base.tar", c.suffix());
            // 2_688_895 bytes in parts of 1 MB: 3 parts, the last one short.
            let (parts, total, ()) =
                command_to_parts(&store, &prefix, seq(400_000), c, (), 1_000_000, 2)
                    .await
                    .unwrap();
            assert_eq!(parts.len(), 3, "{c}");
            assert_eq!(total.raw_bytes, 2_688_895, "{c}");
            assert_eq!(parts[2].key, part_key(&prefix, 2, c));
            assert_eq!(total.sha256, combined_sha256(&parts));
            let raw = parts_to_writer(&store, &parts, Vec::new(), 3)
                .await
                .unwrap();
            let expected = (1..=400_000).map(|i| format!("{i}\n")).collect::<String>();
            assert!(
                raw == expected.as_bytes(),
                "{c}: the parts came back changed"
            );
        }
    }

    #[tokio::test]
    async fn an_empty_stream_is_one_empty_part_and_a_failure_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        let store = file_store(&dir);
        let mut cmd = std::process::Command::new("true");
        cmd.arg("x");
        let (parts, _, ()) =
            command_to_parts(&store, "e/base.tar", cmd, Compression::Lz4, (), 1000, 2)
                .await
                .unwrap();
        assert_eq!(parts.len(), 1);
        assert_eq!(parts[0].raw_bytes, 0);

        let mut cmd = std::process::Command::new("sh");
        cmd.arg("-c").arg("seq 1 100000; echo boom >&2; exit 3");
        let err = command_to_parts(&store, "f/base.tar", cmd, Compression::Lz4, (), 1000, 2)
            .await
            .unwrap_err();
        assert!(format!("{err:#}").contains("boom"), "{err:#}");
    }

    #[tokio::test]
    async fn a_damaged_or_missing_part_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let store = file_store(&dir);
        let c = Compression::Zstd(1);
        let (mut parts, _, ()) =
            command_to_parts(&store, "d/base.tar", seq(200_000), c, (), 300_000, 2)
                .await
                .unwrap();
        assert!(parts.len() > 3);
        let path = dir.path().join("s").join(&parts[1].key);
        let mut bytes = std::fs::read(&path).unwrap();
        let mid = bytes.len() / 2;
        bytes[mid] ^= 0xff;
        std::fs::write(&path, bytes).unwrap();
        let err = parts_to_writer(&store, &parts, Vec::new(), 2)
            .await
            .unwrap_err();
        let err = format!("{err:#}");
        assert!(
            err.contains("corrupted") && err.contains(".p00001.zst"),
            "{err}"
        );

        std::fs::remove_file(dir.path().join("s").join(&parts[2].key)).unwrap();
        parts.remove(1);
        let err = parts_to_writer(&store, &parts, Vec::new(), 2)
            .await
            .unwrap_err();
        assert!(format!("{err:#}").contains("is missing"), "{err:#}");
    }
}
