//! Renewed certificates reach Postgres without a restart. The controller replaces the files of
//! `--tls-dir` before they expire (files on the local platform, the member's Secret on
//! Kubernetes); this watcher notices, copies them into the run directory where Postgres and
//! libpq read them, and reloads Postgres, which reads its certificate, key and CA again at a
//! reload. The API needs nothing: it re-reads its certificate at the next handshake.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use toygres_common::tls::{self, https::pair_matches};

use super::settings::TlsMaterial;
use super::{files, Member};

/// How often the directory is compared with what the member holds.
const CHECK_EVERY: Duration = Duration::from_secs(2);

/// Whether each key in `files` belongs to its certificate (a pair caught half replaced does
/// not). An optional pair ([`tls::OPTIONAL_MEMBER_FILES`]) may be absent as a whole.
fn pairs_match(files: &[(&'static str, Vec<u8>)]) -> bool {
    let content = |name: &str| {
        files
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, bytes)| bytes.as_slice())
    };
    std::iter::once((tls::SERVER_CERT, tls::SERVER_KEY))
        .chain(tls::CLIENT_PAIRS)
        .all(|(cert, key)| match (content(cert), content(key)) {
            (None, None) => tls::is_optional(cert) && tls::is_optional(key),
            (cert, key) => pair_matches(cert.unwrap_or_default(), key.unwrap_or_default()),
        })
}

impl Member {
    /// Runs for the sidecar's life: installs the certificates of `dir` whenever they change.
    pub async fn watch_certificates(self: Arc<Self>, dir: PathBuf) {
        loop {
            tokio::time::sleep(CHECK_EVERY).await;
            match self.pick_up_certificates(&dir).await {
                Ok(true) => tracing::info!("installed renewed certificates and reloaded Postgres"),
                Ok(false) => {}
                Err(e) => tracing::warn!("install renewed certificates: {e:#}"),
            }
        }
    }

    /// Installs the files of `dir` when they differ from those held and every pair matches
    /// (else waits for the next look: the controller may be half-way through replacing them);
    /// returns whether it did.
    pub async fn pick_up_certificates(&self, dir: &Path) -> anyhow::Result<bool> {
        let Ok(read) = TlsMaterial::read_files(dir) else {
            return Ok(false);
        };
        if read == self.cfg.tls.files() || !pairs_match(&read) {
            return Ok(false);
        }
        let ops = self.ops.lock().await;
        let previous = self.cfg.tls.files();
        self.cfg.tls.replace(read);
        let installed = match files::write_run_files(&self.cfg, &self.bins, &self.layout) {
            Ok(()) if ops.child.is_some() => self
                .reload()
                .await
                .map_err(|e| anyhow::anyhow!("reload Postgres: {e}")),
            other => other,
        };
        if installed.is_err() {
            // Held back, so the next look tries again.
            self.cfg.tls.replace(previous);
        }
        installed.map(|()| true)
    }
}
