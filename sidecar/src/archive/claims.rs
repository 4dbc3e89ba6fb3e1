//! Claims that keep two processes from uploading the same WAL file.
//!
//! A claim is a file in the archive state directory's `claims/` holding the pid of the process
//! uploading a WAL file. `wal-push` waits for a live claim on the file it is asked for (then
//! finds the marker) and skips claimed files in its look-ahead; the sidecar's uploader
//! ([`super::ahead`]) skips claimed files too. A claim whose process is gone is taken over. Two
//! uploads of one file would still be safe (the store's create-if-absent and the content
//! comparison make the second a no-op); claims only save the work.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::time::Instant;

use super::ArchiveSettings;

/// A claim older than this is taken over even when its pid is alive (a pid reused).
const STALE_CLAIM: Duration = Duration::from_secs(600);
/// How long `wal-push` waits for another process's upload of the file it is asked for.
pub const CLAIM_WAIT: Duration = Duration::from_secs(120);
/// How often a waiting `wal-push` looks again.
const CLAIM_POLL: Duration = Duration::from_millis(10);

/// This process's claim on one WAL file; dropping it releases the claim.
#[derive(Debug)]
pub struct Claim {
    path: Option<PathBuf>,
}

impl Claim {
    /// Claims `name` for this process. `None` when a live process (this one included) holds it;
    /// a claim whose process is gone is taken over. Where no claim can be written (no claims
    /// directory and no right to make one), the work goes on unclaimed.
    pub fn take(settings: &ArchiveSettings, name: &str) -> Option<Claim> {
        let dir = settings.claims_dir();
        let path = dir.join(name);
        for _ in 0..2 {
            let created = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&path);
            match created {
                Ok(mut f) => {
                    let _ = write!(f, "{}", std::process::id());
                    return Some(Claim { path: Some(path) });
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    if holder_alive(&path) {
                        return None;
                    }
                    let _ = std::fs::remove_file(&path);
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    if std::fs::create_dir_all(&dir).is_err() {
                        return Some(Claim { path: None });
                    }
                }
                Err(_) => return Some(Claim { path: None }),
            }
        }
        None
    }
}

impl Drop for Claim {
    fn drop(&mut self) {
        if let Some(path) = &self.path {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// Whether a live process holds the claim at `path`.
fn holder_alive(path: &Path) -> bool {
    let Ok(pid) = std::fs::read_to_string(path) else {
        // Gone, or being written this instant: only a readable, dead holder is stale.
        return path.exists();
    };
    let Ok(pid) = pid.trim().parse::<u32>() else {
        // Created, its pid not yet written.
        return true;
    };
    let young = std::fs::metadata(path)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.elapsed().ok())
        .is_none_or(|age| age < STALE_CLAIM);
    young && Path::new("/proc").join(pid.to_string()).exists()
}

/// Whether another live process holds a claim on `name`.
pub fn claimed(settings: &ArchiveSettings, name: &str) -> bool {
    let path = settings.claims_dir().join(name);
    path.exists() && holder_alive(&path)
}

/// Waits (at most [`CLAIM_WAIT`]) while another process uploads `name`.
pub async fn wait_for_claim(settings: &ArchiveSettings, name: &str) {
    let deadline = Instant::now() + CLAIM_WAIT;
    while claimed(settings, name) && Instant::now() < deadline {
        tokio::time::sleep(CLAIM_POLL).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::archive::push::tests::fixture;
    use crate::archive::Compression;

    #[tokio::test]
    async fn a_live_claim_keeps_others_off_and_a_dead_holders_is_taken_over() {
        let f = fixture(Compression::None, 2);
        let s = &f.archiver.settings;
        let claim = Claim::take(s, "A").unwrap();
        assert!(claimed(s, "A"));
        assert!(Claim::take(s, "A").is_none(), "claimed twice");
        drop(claim);
        assert!(!claimed(s, "A"));
        // A claim whose process has exited.
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let dead = child.id();
        child.wait().unwrap();
        std::fs::write(s.claims_dir().join("B"), dead.to_string()).unwrap();
        assert!(!claimed(s, "B"));
        assert!(Claim::take(s, "B").is_some());
    }
}
