//! Demotion: this server becomes a standby of a given primary. It is stopped, rewound with
//! pg_rewind when its history diverged from the primary's (re-cloned only when asked), and
//! started as a standby that streams through its slot on the new primary. A fenced member
//! (an old primary after a failover) can be demoted too: that is how it rejoins.

use std::ffi::OsStr;
use std::time::Duration;

use tokio::time::Instant;
use toygres_common::poll::{poll, Attempt, PollError};
use toygres_common::sidecar_api::{DemoteRequest, DemoteResponse};
use toygres_common::tls;

use super::files;
use super::member::{Member, OpError};
use super::{create, process, sql};

/// How long a demoted server may take to start streaming from its new primary.
const STREAMING_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a running standby given a new primary may take to stream from it: short enough
/// that the caller (the controller waits 30 s) hears the answer.
pub(super) const REPOINT_TIMEOUT: Duration = Duration::from_secs(20);

impl Member {
    /// Makes this server a standby of `req.primary`.
    pub async fn demote(&self, req: &DemoteRequest) -> Result<DemoteResponse, OpError> {
        let began = Instant::now();
        let mut ops = self.ops.lock().await;
        // A fenced member is what a failover leaves behind: the old primary, stopped. It may be
        // demoted: Postgres stays stopped until it starts as a standby (which cannot take
        // writes), and only then is the fence lifted.
        let fenced = self.layout.is_fenced();
        if req.primary.port == self.cfg.pg_port
            && (is_loopback(&req.primary.host)
                || self
                    .cfg
                    .pg_listen
                    .split(',')
                    .any(|listen| listen.trim() == req.primary.host))
        {
            return Err(OpError::invalid(
                "invalid_primary",
                "a server cannot follow itself",
            ));
        }
        // The new primary must be reachable and really a primary before anything is stopped.
        let remote = sql::connect_remote(&self.cfg, &req.primary)
            .await
            .map_err(|e| {
                OpError::Unavailable(format!("connect to the new primary {}: {e:#}", req.primary))
            })?;
        let primary_timeline = sql::primary_timeline(&remote)
            .await
            .map_err(|e| OpError::Unavailable(format!("{e:#}")))?
            .ok_or_else(|| OpError::Conflict(format!("{} is not a primary", req.primary)))?;
        // pg_rewind reads the source's timeline from its control file, which a just-promoted
        // server updates only at its first checkpoint: without one, pg_rewind would wrongly
        // find "no rewind required".
        remote
            .batch_execute("CHECKPOINT")
            .await
            .map_err(|e| OpError::Unavailable(format!("checkpoint the new primary: {e}")))?;
        sql::ensure_slot(&self.cfg, &remote).await?;
        drop(remote);

        tracing::warn!(primary = %req.primary, fenced, "demoting: stopping postgres");
        self.stop_locked(&mut ops).await;
        // pg_rewind (PostgreSQL 13 and later) first runs crash recovery in single-user mode on a
        // data directory that was not shut down cleanly, such as a primary killed with -9.
        let method = match self.rewind(&req.primary).await {
            Ok(rewound) => {
                if rewound {
                    "rewind"
                } else {
                    "none"
                }
            }
            Err(e) if req.reclone_if_needed => {
                tracing::warn!("pg_rewind failed ({e:#}); re-cloning from the primary as asked");
                self.reclone(&req.primary).await?;
                "reclone"
            }
            Err(e) => {
                // Never come back as a primary: keep the server a (non-streaming) standby.
                files::set_standby_signal(&self.bins, &self.layout, true)?;
                ops.state.primary = Some(req.primary.clone());
                ops.state.forget_sync_policy();
                files::write_config(&self.cfg, &self.bins, &self.layout, &ops.state)?;
                if fenced {
                    return Err(OpError::Failed(format!(
                        "{e:#}; the member stays fenced (stopped, now marked a standby); \
                         retry with reclone_if_needed to copy the primary afresh"
                    )));
                }
                let _ = self.start_locked(&mut ops).await;
                return Err(OpError::Failed(format!(
                    "{e:#}; the server was started as a standby but cannot stream; \
                     retry with reclone_if_needed to copy the primary afresh"
                )));
            }
        };
        files::set_standby_signal(&self.bins, &self.layout, true)?;
        ops.state.primary = Some(req.primary.clone());
        // The policy described this member's standbys when it was the primary.
        ops.state.forget_sync_policy();
        files::write_config(&self.cfg, &self.bins, &self.layout, &ops.state)?;
        self.sync.policy_changed();
        self.start_locked(&mut ops).await?;
        if fenced {
            // Running as a standby now: it cannot take writes, so the fence has done its job.
            match std::fs::remove_file(self.layout.fence_marker()) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    return Err(OpError::Failed(format!("remove the fence marker: {e}")))
                }
                _ => tracing::warn!("fence lifted: this member is a standby now"),
            }
        }
        self.wait_streaming(Some(primary_timeline), STREAMING_TIMEOUT)
            .await?;
        let duration_ms = began.elapsed().as_millis() as u64;
        tracing::warn!(method, duration_ms, primary = %req.primary, "demoted: streaming");
        Ok(DemoteResponse {
            method: method.into(),
            duration_ms,
        })
    }

    /// Runs pg_rewind against the primary; `Ok(false)` when no rewind was needed. It reads the
    /// primary as [`tls::REWIND_ROLE`] with that role's client certificate, and no password.
    /// A member issued its certificates before the role existed has none, and a primary whose
    /// sidecar predates the role refuses it: both rewind as the superuser, as before, with a
    /// warning (its password in a pgpass file that exists only for the rewind).
    async fn rewind(&self, primary: &toygres_common::names::PgAddress) -> anyhow::Result<bool> {
        let target = format!("--target-pgdata={}", self.layout.data_dir.display());
        if self.cfg.tls.has(tls::REWIND_CERT) {
            let source = format!(
                "--source-server={}",
                files::rewind_conninfo(&self.layout, primary)
            );
            let rewound = process::run_tool(
                &self.bins,
                "pg_rewind",
                &[OsStr::new(&target), OsStr::new(&source)],
                &[],
            )
            .await;
            match rewound {
                Ok(out) => {
                    tracing::info!(
                        role = tls::REWIND_ROLE,
                        "pg_rewind read the primary as {} with its client certificate",
                        tls::REWIND_ROLE
                    );
                    return Ok(!out.contains("no rewind required"));
                }
                Err(e) if refused_connection(&e) => tracing::warn!(
                    "the primary refused pg_rewind as {} ({e:#}); its sidecar may predate \
                     that role: rewinding as the superuser",
                    tls::REWIND_ROLE
                ),
                Err(e) => return Err(e),
            }
        } else {
            tracing::warn!(
                "this member has no certificate for the {} role (issued before it existed; the \
                 next renewal brings it): rewinding as the superuser",
                tls::REWIND_ROLE
            );
        }
        // The superuser's password may have been rotated since this sidecar started.
        files::write_pgpass(&self.cfg, &self.bins, &self.layout)?;
        let source = format!(
            "--source-server={}",
            files::superuser_conninfo(&self.layout, primary)
        );
        let out = process::run_tool(
            &self.bins,
            "pg_rewind",
            &[OsStr::new(&target), OsStr::new(&source)],
            &[("PGPASSFILE", self.layout.pgpass().as_path())],
        )
        .await;
        if let Err(e) = files::remove_pgpass(&self.layout) {
            tracing::warn!("{e:#}");
        }
        Ok(!out?.contains("no rewind required"))
    }

    /// Throws the data directory away and copies the primary afresh. The old directory is kept
    /// aside until the copy has succeeded.
    async fn reclone(&self, primary: &toygres_common::names::PgAddress) -> Result<(), OpError> {
        let aside = self.layout.discarded_dir();
        let _ = std::fs::remove_dir_all(&aside);
        std::fs::rename(&self.layout.data_dir, &aside)
            .map_err(|e| OpError::Failed(format!("set the old data directory aside: {e}")))?;
        match create::clone_from_primary(&self.cfg, &self.bins, &self.layout, primary).await {
            Ok(()) => {
                let _ = std::fs::remove_dir_all(&aside);
                Ok(())
            }
            Err(e) => {
                let _ = std::fs::remove_dir_all(&self.layout.data_dir);
                let _ = std::fs::rename(&aside, &self.layout.data_dir);
                Err(OpError::Failed(format!("re-clone from {primary}: {e:#}")))
            }
        }
    }

    /// Polls until the WAL receiver streams (on `timeline` or later, when given), or fails after
    /// `timeout`.
    pub(super) async fn wait_streaming(
        &self,
        timeline: Option<u32>,
        timeout: Duration,
    ) -> Result<(), OpError> {
        let attempt = || async {
            let client = match sql::connect_local(&self.cfg).await {
                Ok(client) => client,
                Err(e) => return Attempt::<(), std::convert::Infallible>::NotYet(e.to_string()),
            };
            match client
                .query_opt("SELECT status, received_tli FROM pg_stat_wal_receiver", &[])
                .await
            {
                Ok(Some(row)) => {
                    let status: String = row.get(0);
                    let tli: Option<i32> = row.get(1);
                    let tli = tli.unwrap_or(0) as u32;
                    if status == "streaming" && timeline.is_none_or(|t| tli >= t) {
                        return Attempt::Done(());
                    }
                    Attempt::NotYet(format!("WAL receiver {status} on timeline {tli}"))
                }
                Ok(None) => Attempt::NotYet("no WAL receiver".into()),
                Err(e) => Attempt::NotYet(e.to_string()),
            }
        };
        poll(
            "the WAL receiver streams",
            Duration::from_millis(100),
            timeout,
            attempt,
        )
        .await
        .map_err(|e| {
            let last = match e {
                PollError::TimedOut(t) => t.last.unwrap_or_default(),
                PollError::GaveUp(never) => match never {},
            };
            OpError::Failed(format!(
                "started as a standby but not streaming after {timeout:?}: {last}"
            ))
        })
    }
}

/// Whether pg_rewind failed because it could not connect to the source server (rather than
/// while rewinding): only then is another way of connecting worth a try.
fn refused_connection(e: &anyhow::Error) -> bool {
    let message = format!("{e:#}");
    message.contains("connection to server at") || message.contains("could not connect to server")
}

fn is_loopback(host: &str) -> bool {
    host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .map(|ip| ip.is_loopback())
            .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_refused_connection_leads_to_the_superuser_fallback() {
        let refused = anyhow::anyhow!(
            "pg_rewind failed (exit status: 1): pg_rewind: error: connection to server at \
             \"127.0.0.1\", port 5433 failed: FATAL:  role \"toygres_rewind\" does not exist"
        );
        assert!(refused_connection(&refused));
        let failed = anyhow::anyhow!(
            "pg_rewind failed (exit status: 1): pg_rewind: error: could not find common \
             ancestor of the source and target cluster's timelines"
        );
        assert!(!refused_connection(&failed));
    }
}
