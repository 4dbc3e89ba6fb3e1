//! Self-fencing of an isolated primary. A primary that has lost both the controller (no
//! authenticated API request) and every standby (none streaming) for longer than the isolation
//! lease stops Postgres and fences itself: cut off from everyone, it cannot know whether a
//! standby has been promoted meanwhile, and it must not keep taking writes that would be lost.
//!
//! The lease is off unless configured, and it arms only after the first authenticated request
//! and the first streaming standby: a sidecar nobody manages, or a primary that never had a
//! standby (nobody could take its place), never fences itself.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::member::Member;
use super::watchers::Contacts;

impl Member {
    /// Records a request from the controller (any authenticated API call).
    pub fn touch_controller(&self) {
        self.contacts().controller = Some(Instant::now());
    }

    fn contacts(&self) -> std::sync::MutexGuard<'_, Contacts> {
        self.contacts.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Watches the lease until shutdown; returns at once when no lease is configured.
    pub async fn watch_isolation(self: Arc<Self>) {
        let Some(lease) = self.cfg.isolation_lease else {
            return;
        };
        let tick = (lease / 4).clamp(Duration::from_millis(200), Duration::from_secs(1));
        loop {
            tokio::time::sleep(tick).await;
            if self.is_shutting_down() || self.layout.is_fenced() || self.layout.is_standby() {
                continue;
            }
            if self.streaming_standbys().await > 0 {
                self.contacts().standby = Some(Instant::now());
            }
            let last = {
                let c = self.contacts();
                match (c.controller, c.standby) {
                    // Not armed: nobody has managed this member yet.
                    (None, _) => continue,
                    // Never had a standby: nothing can have been promoted in its place, so
                    // stopping would only turn a lost controller into an outage.
                    (Some(_), None) => continue,
                    (Some(ctl), Some(standby)) => standby.max(ctl),
                }
            };
            let silent = last.elapsed();
            if silent > lease {
                tracing::error!(
                    "isolated for {silent:?} (no controller request, no streaming standby; lease \
                     {lease:?}): fencing this primary so it takes no more writes"
                );
                // Counted when decided: the fence is visible (marker, readiness) before Postgres
                // has finished stopping.
                self.count_self_fence();
                if let Err(e) = self.fence().await {
                    tracing::error!("self-fence: {e}");
                }
            }
        }
    }

    async fn streaming_standbys(&self) -> i64 {
        let Ok(client) = self.query_client().await else {
            return 0;
        };
        let query = client.query_one(
            "SELECT count(*) FROM pg_stat_replication WHERE state = 'streaming'",
            &[],
        );
        match tokio::time::timeout(Duration::from_secs(2), query).await {
            Ok(Ok(row)) => row.get(0),
            _ => 0,
        }
    }
}
