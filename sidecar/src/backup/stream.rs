//! The two pipes backups are made of, neither of which ever holds a whole backup:
//!
//! - upload: a program's stdout (pg_basebackup, pg_dump) → an observer (the tar scanner) →
//!   compression → SHA-256 → a multipart upload;
//! - download: an object → SHA-256 → decompression → a writer (the tar extractor, pg_restore's
//!   stdin).
//!
//! The CPU-bound middle runs on a blocking thread; chunks cross to and from the async side
//! through bounded channels, so a slow store slows the program down instead of filling memory.

use std::io::{Read, Write};
use std::process::Stdio;

use anyhow::Context;
use bytes::Bytes;
use sha2::{Digest, Sha256};

use crate::archive::compression::{Encoder, Format};
use crate::archive::Compression;
use crate::objstore::Store;

/// Bytes handed to the uploader at a time.
const CHUNK: usize = 1024 * 1024;
/// Chunks waiting between the two sides.
const QUEUE: usize = 8;

/// What one streamed object came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Streamed {
    pub raw_bytes: u64,
    pub stored_bytes: u64,
    /// SHA-256 of the stored bytes, hex.
    pub sha256: String,
}

/// Collects compressed output into chunks for the uploader, hashing it on the way.
struct ChunkSink {
    buf: Vec<u8>,
    tx: tokio::sync::mpsc::Sender<Bytes>,
    hasher: Sha256,
    stored: u64,
}

impl ChunkSink {
    fn send(&mut self) -> std::io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK));
        self.hasher.update(&chunk);
        self.stored += chunk.len() as u64;
        self.tx
            .blocking_send(Bytes::from(chunk))
            .map_err(|_| std::io::Error::other("the upload stopped"))
    }
}

impl Write for ChunkSink {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(data);
        if self.buf.len() >= CHUNK {
            self.send()?;
        }
        Ok(data.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Sees every byte of a program's output on its way to the store.
pub trait Observe: Send + 'static {
    fn observe(&mut self, bytes: &[u8]) -> std::io::Result<()>;
}

/// Sees nothing.
impl Observe for () {
    fn observe(&mut self, _: &[u8]) -> std::io::Result<()> {
        Ok(())
    }
}

impl<H: super::tar::TarHandler + Send + 'static> Observe for super::tar::TarReader<H> {
    fn observe(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.feed(bytes)
    }
}

/// Runs `cmd`, streaming its stdout through `observe` and `compression` into a new object
/// `key`. The object exists only if the program succeeded and the upload completed. Returns the
/// sizes and checksum, and the observer (with whatever it gathered).
pub async fn command_to_store<O>(
    store: &Store,
    key: &str,
    cmd: std::process::Command,
    compression: Compression,
    mut observe: O,
) -> anyhow::Result<(Streamed, O)>
where
    O: Observe,
{
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(QUEUE);
    let producer = tokio::task::spawn_blocking(move || -> anyhow::Result<(Streamed, O)> {
        let mut encoder = Encoder::new(
            ChunkSink {
                buf: Vec::with_capacity(CHUNK),
                tx,
                hasher: Sha256::new(),
                stored: 0,
            },
            compression,
        )
        .context("start compressing")?;
        let mut raw = 0u64;
        let sink = run_program(cmd, |stdout| {
            let mut buf = vec![0u8; 256 * 1024];
            loop {
                let n = match stdout.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => n,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                    Err(e) => return Err(e).context("read the program's output"),
                };
                raw += n as u64;
                observe.observe(&buf[..n]).context("read the stream")?;
                encoder.write_all(&buf[..n]).context("compress")?;
            }
            let mut sink = encoder.finish().context("compress")?;
            sink.send().context("compress")?;
            Ok(sink)
        })?;
        Ok((
            Streamed {
                raw_bytes: raw,
                stored_bytes: sink.stored,
                sha256: hex::encode(sink.hasher.finalize()),
            },
            observe,
        ))
    });
    let done = async { producer.await.context("join the backup stream task")? };
    let (_, out) = store.put_stream(key, rx, done).await?;
    Ok(out)
}

/// Runs `cmd` with its stdout piped into `pump` (on this thread; its stderr is logged). The
/// program is killed when `pump` fails; a program that fails is an error naming the last lines
/// of its stderr, whatever `pump` returned.
pub fn run_program<T>(
    mut cmd: std::process::Command,
    pump: impl FnOnce(&mut std::process::ChildStdout) -> anyhow::Result<T>,
) -> anyhow::Result<T> {
    let program = cmd.get_program().to_string_lossy().into_owned();
    let program = program.rsplit('/').next().unwrap_or(&program).to_string();
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().with_context(|| format!("start {program}"))?;
    let mut stdout = child.stdout.take().context("take the program's stdout")?;
    let mut stderr = child.stderr.take().context("take the program's stderr")?;
    let errors = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text);
        text
    });
    let pumped = pump(&mut stdout);
    if pumped.is_err() {
        let _ = child.kill();
    }
    drop(stdout);
    let status = child
        .wait()
        .with_context(|| format!("wait for {program}"))?;
    let stderr = errors.join().unwrap_or_default();
    for line in stderr.lines() {
        tracing::info!(target: "postgres", tool = %program, "{line}");
    }
    if !status.success() {
        let tail: Vec<&str> = stderr.lines().rev().take(5).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        anyhow::bail!("{program} failed ({status}): {}", tail.join(" / "));
    }
    pumped
}

/// The downloaded chunks as a reader, hashing them as they are read.
struct ChunkReader {
    rx: tokio::sync::mpsc::Receiver<Bytes>,
    current: Bytes,
    hasher: Sha256,
}

impl Read for ChunkReader {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        while self.current.is_empty() {
            match self.rx.blocking_recv() {
                Some(chunk) => {
                    self.hasher.update(&chunk);
                    self.current = chunk;
                }
                None => return Ok(0),
            }
        }
        let n = out.len().min(self.current.len());
        out[..n].copy_from_slice(&self.current.split_to(n));
        Ok(n)
    }
}

impl ChunkReader {
    /// Hashes whatever the decompressor left unread; the SHA-256 of everything received.
    fn finish(mut self) -> String {
        while let Some(chunk) = self.rx.blocking_recv() {
            self.hasher.update(&chunk);
        }
        hex::encode(self.hasher.finalize())
    }
}

/// Downloads `key`, checks it against `expected_sha256` (of the stored bytes), decompresses it
/// as its name's suffix says, and writes the content into `sink` on a blocking thread.
/// Returns the sink once everything is written and the checksum matched.
pub async fn store_to_writer<W>(
    store: &Store,
    key: &str,
    expected_sha256: &str,
    sink: W,
) -> anyhow::Result<W>
where
    W: Write + Send + 'static,
{
    use futures::StreamExt;
    let mut stream = store
        .get_stream(key)
        .await?
        .with_context(|| format!("{} is missing", store.describe(key)))?;
    let format = Format::of_key(key);
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(QUEUE);
    let what = store.describe(key);
    let expected = expected_sha256.to_string();
    let consumer = tokio::task::spawn_blocking(move || -> anyhow::Result<W> {
        let mut sink = sink;
        let mut reader = ChunkReader {
            rx,
            current: Bytes::new(),
            hasher: Sha256::new(),
        };
        let unpacked = format
            .reader(&mut reader)
            .and_then(|mut r| std::io::copy(&mut r, &mut sink));
        // Whatever the outcome, hash the rest: a corrupted object is reported as such, not as
        // whatever the damage did to the decompressor.
        let sha = reader.finish();
        if sha != expected {
            anyhow::bail!(
                "{what} is corrupted: its SHA-256 is {sha}, the manifest says {expected}"
            );
        }
        unpacked.with_context(|| format!("unpack {what}"))?;
        Ok(sink)
    });
    let mut sent = Ok(());
    while let Some(chunk) = stream.next().await {
        match chunk {
            Ok(c) => {
                if tx.send(c).await.is_err() {
                    break;
                }
            }
            Err(e) => {
                sent = Err(e);
                break;
            }
        }
    }
    drop(tx);
    let unpacked = consumer.await.context("join the restore stream task")?;
    sent?;
    unpacked
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn every_compressor_streams_into_the_store_and_back() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("file://{}/s", dir.path().display())
            .parse()
            .unwrap();
        let store = Store::open(&url).unwrap();
        for c in [Compression::Zstd(1), Compression::Lz4, Compression::Gzip(6)] {
            let key = format!("x/obj{}", c.suffix());
            let mut cmd = std::process::Command::new("sh");
            cmd.arg("-c").arg("seq 1 400000");
            let (out, _) = command_to_store(&store, &key, cmd, c, ()).await.unwrap();
            assert!(out.stored_bytes < out.raw_bytes * 3 / 4, "{c}: {out:?}");
            let raw = store_to_writer(&store, &key, &out.sha256, Vec::new())
                .await
                .unwrap();
            assert_eq!(raw.len() as u64, out.raw_bytes, "{c}");
            assert!(raw.ends_with(b"399999\n400000\n"), "{c}");
        }
    }

    #[tokio::test]
    async fn a_command_streams_into_the_store_and_back() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("file://{}/s", dir.path().display())
            .parse()
            .unwrap();
        let store = Store::open(&url).unwrap();
        let mut cmd = std::process::Command::new("sh");
        cmd.arg("-c").arg("head -c 3000000 /dev/zero; echo tail");
        let (out, _) = command_to_store(&store, "x/obj.gz", cmd, Compression::Gzip(1), ())
            .await
            .unwrap();
        assert_eq!(out.raw_bytes, 3_000_005);
        assert!(out.stored_bytes < 100_000, "{out:?}");
        let raw = store_to_writer(&store, "x/obj.gz", &out.sha256, Vec::new())
            .await
            .unwrap();
        assert_eq!(raw.len(), 3_000_005);
        assert!(raw.ends_with(b"tail\n"));

        // A flipped byte is reported as corruption.
        let path = dir.path().join("s/x/obj.gz");
        let mut bytes = std::fs::read(&path).unwrap();
        let mid = bytes.len() / 2;
        bytes[mid] ^= 0xff;
        std::fs::write(&path, bytes).unwrap();
        let err = store_to_writer(&store, "x/obj.gz", &out.sha256, Vec::new())
            .await
            .unwrap_err();
        assert!(format!("{err:#}").contains("corrupted"), "{err:#}");

        // A failing program leaves no object behind.
        let mut cmd = std::process::Command::new("sh");
        cmd.arg("-c").arg("echo partial; echo boom >&2; exit 3");
        let err = command_to_store(&store, "x/failed", cmd, Compression::None, ())
            .await
            .unwrap_err();
        assert!(format!("{err:#}").contains("boom"), "{err:#}");
        assert!(!store.exists("x/failed").await.unwrap());
    }
}
