//! Keeps the CMS bounded (issue 17): every minute the health-check history loses what is beyond
//! its count per member or older than its age, and every hour the duroxide store loses the
//! finished operations (root orchestrations and their children) older than
//! [`FINISHED_RETENTION`]; the instance actors prune their own old executions.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use duroxide::{Client, InstanceFilter};

use crate::cms::health::HEALTH_HISTORY_MAX_AGE;
use crate::cms::Cms;

/// How often the health-check history is pruned.
const HEALTH_SWEEP_EVERY: Duration = Duration::from_secs(60);
/// How often finished orchestrations are deleted.
const STORE_SWEEP_EVERY: Duration = Duration::from_secs(3600);
/// How long a finished operation's orchestration (its progress in `toygres operation get`) is
/// kept in the duroxide store.
pub const FINISHED_RETENTION: Duration = Duration::from_secs(7 * 24 * 3600);
/// Finished orchestrations deleted per statement.
const STORE_BATCH: u32 = 500;

/// Starts the sweeps; they run until the task is aborted.
pub fn spawn(cms: Arc<Cms>, client: Client) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval(HEALTH_SWEEP_EVERY);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut store_swept: Option<tokio::time::Instant> = None;
        loop {
            ticks.tick().await;
            match cms.prune_health_history(HEALTH_HISTORY_MAX_AGE).await {
                Ok(n) if n > 0 => tracing::debug!("pruned {n} health checks"),
                Ok(_) => {}
                Err(e) => tracing::warn!("prune the health-check history: {e}"),
            }
            if store_swept.is_none_or(|t| t.elapsed() >= STORE_SWEEP_EVERY) {
                store_swept = Some(tokio::time::Instant::now());
                delete_finished(&client).await;
            }
        }
    })
}

/// Deletes the finished root orchestrations older than [`FINISHED_RETENTION`], in batches.
async fn delete_finished(client: &Client) {
    let Some(before) = SystemTime::now()
        .checked_sub(FINISHED_RETENTION)
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
    else {
        return;
    };
    let before = u64::try_from(before.as_millis()).unwrap_or(u64::MAX);
    loop {
        let filter = InstanceFilter {
            completed_before: Some(before),
            limit: Some(STORE_BATCH),
            ..InstanceFilter::default()
        };
        match client.delete_instance_bulk(filter).await {
            Ok(done) => {
                if done.instances_deleted > 0 {
                    tracing::info!(
                        "deleted {} finished orchestrations from the store",
                        done.instances_deleted
                    );
                }
                if done.instances_deleted < u64::from(STORE_BATCH) {
                    return;
                }
            }
            Err(e) => {
                tracing::warn!("delete finished orchestrations: {e}");
                return;
            }
        }
    }
}
