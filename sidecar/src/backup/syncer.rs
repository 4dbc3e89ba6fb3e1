//! Flushing extracted files to disk on worker threads: the extractor hands each file over once
//! written and goes on with the next, so the disk works on several files while decompression
//! continues; a restore still waits for every flush before it uses the directory.

use std::fs::File;
use std::io;
use std::sync::{mpsc, Arc, Mutex};
use std::thread::JoinHandle;

/// Files waiting for a worker (each an open descriptor: bounded well under any fd limit).
const WAITING: usize = 64;

/// `sync_all` (`fsync`) of the files handed to it, on a few threads.
///
/// A full `fsync`, not `fdatasync`: a restored copy was taken from a running server, so
/// Postgres's first start `fsync`s every file of it before recovery. After only `fdatasync`,
/// that pass took 1.1-3.3 s while other processes wrote to the same file system (0.07-1.5 s
/// after `fsync`; BENCHMARKS.md), likely because each file's times were still to commit, one
/// journal commit per file.
pub struct Syncer {
    tx: mpsc::SyncSender<File>,
    workers: Vec<JoinHandle<io::Result<()>>>,
}

impl std::fmt::Debug for Syncer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Syncer({} threads)", self.workers.len())
    }
}

impl Syncer {
    pub fn new(threads: usize) -> Self {
        let (tx, rx) = mpsc::sync_channel::<File>(WAITING);
        let rx = Arc::new(Mutex::new(rx));
        let workers = (0..threads.max(1))
            .map(|_| {
                let rx = Arc::clone(&rx);
                std::thread::spawn(move || loop {
                    let next = rx.lock().map_err(|_| io::Error::other("poisoned"))?.recv();
                    match next {
                        Ok(file) => file.sync_all()?,
                        Err(_) => return Ok(()),
                    }
                })
            })
            .collect();
        Self { tx, workers }
    }

    /// Queues `file` to be flushed (waits while many are queued).
    pub fn sync(&self, file: File) -> io::Result<()> {
        self.tx
            .send(file)
            .map_err(|_| io::Error::other("flushing files to disk failed"))
    }

    /// Waits until every file queued is flushed; the first failure, if any.
    pub fn finish(self) -> io::Result<()> {
        drop(self.tx);
        let mut first = Ok(());
        for worker in self.workers {
            let done = worker
                .join()
                .unwrap_or_else(|_| Err(io::Error::other("a flushing thread panicked")));
            if first.is_ok() {
                first = done;
            }
        }
        first
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_file_is_flushed_and_finish_waits() {
        let dir = tempfile::tempdir().unwrap();
        let syncer = Syncer::new(2);
        for i in 0..200 {
            let path = dir.path().join(format!("f{i}"));
            std::fs::write(&path, b"x").unwrap();
            syncer
                .sync(File::options().write(true).open(&path).unwrap())
                .unwrap();
        }
        syncer.finish().unwrap();
    }
}
