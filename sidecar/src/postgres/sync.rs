//! Synchronous replication policies on a primary (`PUT /v1/replication {"sync": …}`).
//!
//! A policy names the candidate standbys, how many must confirm each commit (`FIRST n` or
//! `ANY n`), and what happens when too few of them stream: `strict` keeps commits waiting,
//! `degrade` empties `synchronous_standby_names` once the shortage has lasted longer than the
//! policy's timeout (Postgres then releases the commits waiting for a standby) and restores it
//! as soon as enough of the standbys stream again. The watcher here makes those two moves; the
//! policy and the degraded flag live in the state file, so both survive a sidecar restart.

use std::collections::{BTreeSet, HashSet};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;
use toygres_common::sidecar_api::{SyncMethod, SyncMode, SyncPolicy};

use super::files;
use super::member::{Member, OpError};

/// How often the watcher looks at `pg_stat_replication`.
const TICK: Duration = Duration::from_millis(250);
/// A standby whose last reply is older than this does not count as streaming.
const REPLY_STALE_SECS: f64 = 15.0;
/// Longest `degrade_timeout_secs` accepted (a day).
const MAX_DEGRADE_TIMEOUT_SECS: u64 = 86_400;

/// Checks a policy before it is kept; `own_name` is this member's name, which a primary cannot
/// list as its own synchronous standby.
pub fn validate_policy(policy: &SyncPolicy, own_name: &str) -> Result<(), OpError> {
    let invalid = |m: String| Err(OpError::invalid("invalid_sync_policy", m));
    if policy.num_sync < 1 {
        return invalid("sync.num_sync must be at least 1".into());
    }
    if !policy.standbys.is_empty() && policy.num_sync as usize > policy.standbys.len() {
        return invalid(format!(
            "sync.num_sync is {} but only {} standbys are listed",
            policy.num_sync,
            policy.standbys.len()
        ));
    }
    let mut seen = HashSet::new();
    for name in &policy.standbys {
        if let Err(e) = toygres_common::names::validate_member_name(name) {
            return invalid(format!("sync.standbys: {e}"));
        }
        if name == own_name {
            return invalid(format!(
                "sync.standbys lists {name}, this server itself: a primary cannot confirm its \
                 own commits"
            ));
        }
        if !seen.insert(name.as_str()) {
            return invalid(format!("sync.standbys lists {name} twice"));
        }
    }
    if policy.mode == SyncMode::Degrade
        && !(1..=MAX_DEGRADE_TIMEOUT_SECS).contains(&policy.degrade_timeout_secs)
    {
        return invalid(format!(
            "sync.degrade_timeout_secs must be between 1 and {MAX_DEGRADE_TIMEOUT_SECS}"
        ));
    }
    Ok(())
}

/// The `synchronous_standby_names` a policy asks for: `FIRST n ("a", "b")`, `ANY n (…)`, or
/// empty when it lists no standby. Member names hold no quote, so double-quoting is safe.
pub fn standby_names(policy: &SyncPolicy) -> String {
    if policy.standbys.is_empty() {
        return String::new();
    }
    let method = match policy.method {
        SyncMethod::First => "FIRST",
        SyncMethod::Any => "ANY",
    };
    let names: Vec<String> = policy.standbys.iter().map(|n| format!("\"{n}\"")).collect();
    format!("{method} {} ({})", policy.num_sync, names.join(", "))
}

impl Member {
    /// Watches `pg_stat_replication` for `degrade` policies until shutdown: degrades after the
    /// policy's timeout without enough streaming standbys, restores when enough stream again.
    pub async fn watch_sync(self: Arc<Self>) {
        // The last moment enough of the policy's standbys were streaming (or the watch had
        // nothing to wait for).
        let mut enough_at = Instant::now();
        let mut generation = self.sync.generation.load(Ordering::Relaxed);
        loop {
            tokio::time::sleep(TICK).await;
            if self.is_shutting_down() {
                return;
            }
            let now_generation = self.sync.generation.load(Ordering::Relaxed);
            if now_generation != generation {
                generation = now_generation;
                enough_at = Instant::now();
            }
            if self.layout.is_fenced() || self.layout.is_standby() || self.pid().is_none() {
                enough_at = Instant::now();
                continue;
            }
            let Some(streaming) = self.streaming_candidates().await else {
                continue;
            };
            let Ok(mut ops) = self.ops.try_lock() else {
                continue;
            };
            let Some(policy) = ops.state.sync_policy.clone() else {
                enough_at = Instant::now();
                continue;
            };
            if policy.mode != SyncMode::Degrade || policy.standbys.is_empty() {
                enough_at = Instant::now();
                continue;
            }
            let confirmed = policy
                .standbys
                .iter()
                .filter(|s| streaming.contains(*s))
                .count();
            let enough = confirmed >= policy.num_sync as usize;
            if enough {
                enough_at = Instant::now();
            }
            let timeout = Duration::from_secs(policy.degrade_timeout_secs);
            let (degrade, names) = if enough && ops.state.sync_degraded {
                (false, standby_names(&policy))
            } else if !enough && !ops.state.sync_degraded && enough_at.elapsed() > timeout {
                (true, String::new())
            } else {
                continue;
            };
            let before = ops.state.clone();
            ops.state.synchronous_standby_names = names;
            ops.state.sync_degraded = degrade;
            let applied = match files::write_config(&self.cfg, &self.bins, &self.layout, &ops.state)
            {
                Ok(()) => self.reload().await,
                Err(e) => Err(OpError::from(e)),
            };
            if let Err(e) = applied {
                tracing::error!("apply the synchronous replication change: {e}");
                ops.state = before;
                let _ = files::write_config(&self.cfg, &self.bins, &self.layout, &ops.state);
                continue;
            }
            if degrade {
                self.sync.degrades.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(
                    streaming = confirmed,
                    needed = policy.num_sync,
                    "synchronous replication degraded: too few of the policy's standbys have \
                     streamed for {timeout:?}; commits no longer wait for standbys"
                );
            } else {
                self.sync.restores.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(
                    streaming = confirmed,
                    names = %ops.state.synchronous_standby_names,
                    "synchronous replication restored: enough of the policy's standbys stream again"
                );
            }
        }
    }

    /// Standbys Postgres would accept as synchronous right now: streaming (caught up, past
    /// the `catchup` phase) and reporting a flush position, and heard from recently (a standby
    /// replies at least every `wal_receiver_status_interval`, 10 s by default; one cut off by
    /// the network keeps its WAL sender until `wal_sender_timeout`, 60 s, and must not count
    /// meanwhile). `None` when Postgres does not answer.
    async fn streaming_candidates(&self) -> Option<BTreeSet<String>> {
        let client = self.query_client().await.ok()?;
        let query = client.query(
            "SELECT application_name FROM pg_stat_replication \
             WHERE state = 'streaming' AND flush_lsn IS NOT NULL \
               AND (reply_time IS NULL OR reply_time > now() - make_interval(secs => $1))",
            &[&REPLY_STALE_SECS],
        );
        let rows = tokio::time::timeout(Duration::from_secs(2), query)
            .await
            .ok()?
            .ok()?;
        Some(rows.iter().map(|r| r.get::<_, String>(0)).collect())
    }

    /// Makes Postgres read its configuration files again.
    pub(super) async fn reload(&self) -> Result<(), OpError> {
        let client = self.query_client().await?;
        client
            .execute("SELECT pg_reload_conf()", &[])
            .await
            .map_err(|e| OpError::Failed(format!("reload: {e}")))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(method: SyncMethod, num_sync: u32, standbys: &[&str]) -> SyncPolicy {
        SyncPolicy {
            mode: SyncMode::Strict,
            method,
            num_sync,
            standbys: standbys.iter().map(|s| s.to_string()).collect(),
            degrade_timeout_secs: 10,
        }
    }

    #[test]
    fn policies_render_as_first_or_any_with_quoted_names() {
        assert_eq!(
            standby_names(&policy(SyncMethod::First, 1, &["db-1", "db-2"])),
            "FIRST 1 (\"db-1\", \"db-2\")"
        );
        assert_eq!(
            standby_names(&policy(SyncMethod::Any, 2, &["db-1", "db-2", "db-3"])),
            "ANY 2 (\"db-1\", \"db-2\", \"db-3\")"
        );
        assert_eq!(standby_names(&policy(SyncMethod::Any, 1, &[])), "");
    }

    #[test]
    fn bad_policies_are_refused() {
        let ok = policy(SyncMethod::First, 1, &["db-1"]);
        assert!(validate_policy(&ok, "db-0").is_ok());
        assert!(validate_policy(&policy(SyncMethod::First, 1, &[]), "db-0").is_ok());
        for (bad, why) in [
            (policy(SyncMethod::First, 0, &["db-1"]), "num_sync"),
            (policy(SyncMethod::Any, 3, &["db-1", "db-2"]), "num_sync"),
            (policy(SyncMethod::First, 1, &["Db_1"]), "standbys"),
            (policy(SyncMethod::First, 1, &["db-1\""]), "standbys"),
            (policy(SyncMethod::First, 1, &["db-0"]), "itself"),
            (policy(SyncMethod::First, 1, &["db-1", "db-1"]), "twice"),
            (
                SyncPolicy {
                    mode: SyncMode::Degrade,
                    degrade_timeout_secs: 0,
                    ..ok.clone()
                },
                "degrade_timeout_secs",
            ),
        ] {
            match validate_policy(&bad, "db-0") {
                Err(OpError::Invalid { message, .. }) => {
                    assert!(message.contains(why), "{bad:?}: {message}")
                }
                other => panic!("{bad:?} was not refused: {other:?}"),
            }
        }
    }
}
