//! Promotion of this standby. Single-flight: a second request while one runs joins it, and the
//! promotion goes on even when the client that asked hangs up. A standby still streaming from a
//! primary that answers is not promoted unless the request forces it.

use std::sync::Arc;

use tokio::sync::watch;
use tokio::time::Instant;
use toygres_common::names::PgAddress;
use toygres_common::poll::{poll, Attempt, PollError};
use toygres_common::sidecar_api::{PromoteResponse, SyncPolicy};

use super::files;
use super::member::{Member, OpError};

/// How long a promotion may take before it is reported as failed.
const PROMOTE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);
/// Looks at a promotion in progress (5 ms apart, plus the query) between two reloads that
/// wake a startup process asleep in its retry interval: about every 100 ms.
const PROMOTE_NUDGE_EVERY: u32 = 20;

impl Member {
    /// Promotes this standby and returns once it accepts writes. Unless `force`, refuses while
    /// the standby still streams from a primary that answers: that primary is alive and not
    /// fenced, and promoting now would make two. A `sync` policy (validated by the caller) is
    /// in force before the promotion starts. A request that joins a promotion under way gets
    /// that one's outcome.
    pub async fn promote(
        self: &Arc<Self>,
        force: bool,
        sync: Option<SyncPolicy>,
    ) -> Result<PromoteResponse, OpError> {
        if !force {
            if let Some(primary) = self.live_upstream_primary().await {
                return Err(OpError::Conflict(format!(
                    "this standby still streams from {primary}, which is up and a primary: fence \
                     it first, or promote with force"
                )));
            }
        }
        let mut rx = {
            let mut flight = self.promotion.lock().unwrap_or_else(|p| p.into_inner());
            match flight.as_ref() {
                Some(rx) if rx.borrow().is_none() => rx.clone(),
                _ => {
                    let (tx, rx) = watch::channel(None);
                    *flight = Some(rx.clone());
                    let member = Arc::clone(self);
                    tokio::spawn(async move {
                        let result = member.promote_now(sync).await;
                        let _ = tx.send(Some(result));
                    });
                    rx
                }
            }
        };
        let done = rx
            .wait_for(|r| r.is_some())
            .await
            .map_err(|_| OpError::Failed("the promotion task ended without a result".into()))?;
        done.clone()
            .unwrap_or_else(|| Err(OpError::Failed("no promotion result".into())))
    }

    async fn promote_now(&self, sync: Option<SyncPolicy>) -> Result<PromoteResponse, OpError> {
        let began = Instant::now();
        let mut ops = self.ops.lock().await;
        if self.layout.is_fenced() {
            return Err(OpError::Conflict(
                "the member is fenced; unfence it first".into(),
            ));
        }
        if ops.child.is_none() {
            return Err(OpError::Conflict("postgres is not running".into()));
        }
        let client = super::sql::connect_local(&self.cfg)
            .await
            .map_err(|e| OpError::Unavailable(format!("connect to postgres: {e}")))?;
        let in_recovery: bool = client
            .query_one("SELECT pg_is_in_recovery()", &[])
            .await
            .map_err(|e| OpError::Failed(format!("ask whether postgres is in recovery: {e}")))?
            .get(0);
        if !in_recovery {
            return Err(OpError::Conflict("this server is already a primary".into()));
        }
        let sync_set = sync.is_some();
        if sync_set || ops.state.sync_policy.is_some() || ops.state.sync_degraded {
            // A policy kept from this member's days as a primary lists other members, maybe this
            // one: it must not make the new primary's commits wait. The new topology's policy,
            // when the request brings it, holds before the first write can be taken.
            ops.state.forget_sync_policy();
            if let Some(policy) = sync {
                ops.state.synchronous_standby_names = super::sync::standby_names(&policy);
                ops.state.sync_policy = Some(policy);
            }
            files::write_config(&self.cfg, &self.bins, &self.layout, &ops.state)?;
            client
                .execute("SELECT pg_reload_conf()", &[])
                .await
                .map_err(|e| OpError::Failed(format!("reload: {e}")))?;
            self.sync.policy_changed();
            let names = ops.state.synchronous_standby_names.clone();
            self.wait_setting_seen(&names).await?;
            tracing::info!(synchronous_standby_names = %names, "synchronous replication policy set before promotion");
        }
        tracing::warn!("promoting this standby");
        // pg_promote(wait => true) checks only every 100 ms; start the promotion and poll
        // ourselves, which returns as soon as the server leaves recovery.
        let started: bool = client
            .query_one("SELECT pg_promote(false)", &[])
            .await
            .map_err(|e| OpError::Failed(format!("promote: {e}")))?
            .get(0);
        if !started {
            return Err(OpError::Failed(
                "postgres refused to start the promotion".into(),
            ));
        }
        // Postgres 15 can sleep through a promotion: a promote request noticed while the
        // startup process waits for the WAL receiver (whose primary died) sends it to its
        // `wal_retrieve_retry_interval` sleep (5 s) before it looks at the request again, the
        // wake-up already spent (seen: promote asked, "waiting for WAL to become available",
        // redo done 5.0 s later). A reload wakes the startup process (its SIGHUP handler sets
        // its latch): nudge it every 100 ms while it stays in recovery.
        let looks = std::sync::atomic::AtomicU32::new(0);
        poll(
            "the promotion finishes",
            std::time::Duration::from_millis(5),
            PROMOTE_TIMEOUT,
            || async {
                let look = looks.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if look > 0 && look.is_multiple_of(PROMOTE_NUDGE_EVERY) {
                    if let Err(e) = client.execute("SELECT pg_reload_conf()", &[]).await {
                        return Attempt::GiveUp(format!("wake the promotion: {e}"));
                    }
                }
                match client.query_one("SELECT pg_is_in_recovery()", &[]).await {
                    Ok(row) if row.get::<_, bool>(0) => Attempt::NotYet("in recovery".into()),
                    Ok(_) => Attempt::Done(()),
                    Err(e) => Attempt::GiveUp(format!("watch the promotion: {e}")),
                }
            },
        )
        .await
        .map_err(|e| match e {
            PollError::GaveUp(m) => OpError::Failed(m),
            PollError::TimedOut(_) => OpError::Failed(format!(
                "promotion did not finish within {PROMOTE_TIMEOUT:?}"
            )),
        })?;
        // Accepting writes: a transaction id can be assigned.
        let row = client
            .query_one(
                "SELECT pg_current_xact_id()::text, pg_walfile_name(pg_current_wal_lsn()), \
                 pg_current_wal_lsn()::text",
                &[],
            )
            .await
            .map_err(|e| OpError::Failed(format!("check the promoted server takes writes: {e}")))?;
        let walfile: String = row.get(1);
        let lsn: String = row.get(2);
        let timeline = super::sql::timeline_of_walfile(&walfile)
            .ok_or_else(|| OpError::Failed(format!("unexpected WAL file name {walfile}")))?;
        // Postgres removed standby.signal; forget the old primary in the sidecar's files too.
        ops.state.primary = None;
        files::write_config(&self.cfg, &self.bins, &self.layout, &ops.state)?;
        client
            .execute("SELECT pg_reload_conf()", &[])
            .await
            .map_err(|e| OpError::Failed(format!("reload: {e}")))?;
        let duration_ms = began.elapsed().as_millis() as u64;
        tracing::warn!(timeline, %lsn, duration_ms, "promoted: accepting writes");
        // An instance made before pg_rewind had its own role gets it from its first primary
        // that knows it, so the old primary's rejoin needs no superuser password. Not a reason
        // to fail the promotion: a rewind without the role falls back to the superuser.
        let ensured = async {
            let client = super::sql::connect_local(&self.cfg).await?;
            super::sql::ensure_rewind_role(&client).await
        };
        if let Err(e) = ensured.await {
            tracing::warn!("make sure the rewind role exists: {e:#}");
        }
        Ok(PromoteResponse {
            timeline,
            lsn,
            duration_ms,
            sync_set,
        })
    }

    /// Waits until a new session sees `synchronous_standby_names` as `names` (the postmaster
    /// has read the reloaded configuration, so every session it starts from now on has it).
    async fn wait_setting_seen(&self, names: &str) -> Result<(), OpError> {
        poll(
            "the reloaded synchronous_standby_names",
            std::time::Duration::from_millis(5),
            std::time::Duration::from_secs(10),
            || async {
                let client = match super::sql::connect_local(&self.cfg).await {
                    Ok(client) => client,
                    Err(e) => return Attempt::GiveUp(format!("connect to postgres: {e}")),
                };
                match client
                    .query_one("SHOW synchronous_standby_names", &[])
                    .await
                {
                    Ok(row) if row.get::<_, String>(0) == names => Attempt::Done(()),
                    Ok(row) => Attempt::NotYet(format!("still {:?}", row.get::<_, String>(0))),
                    Err(e) => Attempt::GiveUp(format!("read synchronous_standby_names: {e}")),
                }
            },
        )
        .await
        .map_err(|e| match e {
            PollError::GaveUp(m) => OpError::Failed(m),
            PollError::TimedOut(t) => OpError::Failed(t.to_string()),
        })
    }
}

impl Member {
    /// The primary this standby streams from, when its WAL receiver is streaming and that
    /// server answers as a primary within [`LIVENESS_TIMEOUT`]. A primary that is down, fenced
    /// or unreachable (or a standby upstream) gives `None`.
    async fn live_upstream_primary(&self) -> Option<PgAddress> {
        let streaming = {
            let client = self.query_client().await.ok()?;
            let row = client
                .query_opt("SELECT status FROM pg_stat_wal_receiver", &[])
                .await
                .ok()??;
            row.get::<_, Option<String>>(0).as_deref() == Some("streaming")
        };
        if !streaming {
            return None;
        }
        let state = match self.ops.try_lock() {
            Ok(ops) => ops.state.clone(),
            Err(_) => files::read_state(&self.layout).ok()?,
        };
        let primary = state.primary?;
        let ask = async {
            let remote = super::sql::connect_remote(&self.cfg, &primary).await.ok()?;
            let in_recovery: bool = remote
                .query_one("SELECT pg_is_in_recovery()", &[])
                .await
                .ok()?
                .get(0);
            Some(in_recovery)
        };
        match tokio::time::timeout(LIVENESS_TIMEOUT, ask).await {
            Ok(Some(false)) => Some(primary),
            _ => None,
        }
    }
}

/// How long the pre-promotion check waits for the upstream primary to answer.
const LIVENESS_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(1);

#[cfg(test)]
mod tests {
    #[test]
    fn timelines_come_from_wal_file_names() {
        assert_eq!(
            crate::postgres::sql::timeline_of_walfile("00000002000000000000000A"),
            Some(2)
        );
        assert_eq!(
            crate::postgres::sql::timeline_of_walfile("0000001F0000000100000003"),
            Some(31)
        );
        assert_eq!(crate::postgres::sql::timeline_of_walfile("xyz"), None);
    }
}
