//! The controller's own counters, kept in memory and rendered by `GET /metrics`: operations by
//! kind and result with their durations, and health checks by result. (Gauges such as instances by
//! state and health are read from the CMS at scrape time.)

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

/// Counts of finished operations and of health checks since the controller started.
#[derive(Debug, Default)]
pub struct ControllerMetrics {
    /// `(kind, result)` → (count, summed seconds).
    operations: Mutex<BTreeMap<(String, String), (u64, f64)>>,
    health_checks_ok: AtomicU64,
    health_checks_failed: AtomicU64,
    /// The health fast path's wake-ups of actors: sent, withheld (one was queued or a round
    /// ran), and probes that timed out in an overloaded pass held for a second look.
    wakeups_sent: AtomicU64,
    wakeups_withheld: AtomicU64,
    wakeups_uncorroborated: AtomicU64,
    /// High-availability events by kind (failover decisions, alerts).
    ha_events: Mutex<BTreeMap<String, u64>>,
}

/// What the health fast path did about an instance whose actor it would wake.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wakeup {
    /// A `CheckNow` was queued on the actor.
    Sent,
    /// None was: one is still queued, or the actor's round runs (it is owed after).
    Withheld,
    /// A probe timed out while the prober itself ran late: not taken as a failure before a
    /// second pass says so too.
    Uncorroborated,
}

/// A snapshot of the operation counters: `(kind, result, count, summed seconds)`.
pub type OperationCounts = Vec<(String, String, u64, f64)>;

impl ControllerMetrics {
    /// Counts one finished operation.
    pub fn record_operation(&self, kind: &str, result: &str, duration_ms: u64) {
        let mut operations = match self.operations.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        };
        let entry = operations
            .entry((kind.to_string(), result.to_string()))
            .or_default();
        entry.0 += 1;
        entry.1 += duration_ms as f64 / 1000.0;
    }

    /// Counts one health check.
    pub fn record_health_check(&self, ok: bool) {
        let counter = if ok {
            &self.health_checks_ok
        } else {
            &self.health_checks_failed
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts what the health fast path did about one instance that needed its actor.
    pub fn record_wakeup(&self, outcome: Wakeup) {
        let counter = match outcome {
            Wakeup::Sent => &self.wakeups_sent,
            Wakeup::Withheld => &self.wakeups_withheld,
            Wakeup::Uncorroborated => &self.wakeups_uncorroborated,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// The fast path's wake-ups so far: (sent, withheld, uncorroborated).
    pub fn wakeups(&self) -> (u64, u64, u64) {
        (
            self.wakeups_sent.load(Ordering::Relaxed),
            self.wakeups_withheld.load(Ordering::Relaxed),
            self.wakeups_uncorroborated.load(Ordering::Relaxed),
        )
    }

    /// Counts one high-availability event (`failover-*`, `ha-alert`, `sync-*`) by kind; other
    /// kinds are not counted.
    pub fn record_ha_event(&self, kind: &str) {
        let counted = ["failover", "switchover", "ha-", "sync-", "rejoin"];
        if !counted.iter().any(|prefix| kind.starts_with(prefix)) {
            return;
        }
        let mut events = match self.ha_events.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        };
        *events.entry(kind.to_string()).or_default() += 1;
    }

    /// The HA event counters, sorted by kind.
    pub fn ha_events(&self) -> Vec<(String, u64)> {
        let events = match self.ha_events.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        };
        events.iter().map(|(k, v)| (k.clone(), *v)).collect()
    }

    /// The operation counters, sorted.
    pub fn operations(&self) -> OperationCounts {
        let operations = match self.operations.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        };
        operations
            .iter()
            .map(|((kind, result), (count, seconds))| {
                (kind.clone(), result.clone(), *count, *seconds)
            })
            .collect()
    }

    /// Health checks so far: (ok, failed).
    pub fn health_checks(&self) -> (u64, u64) {
        (
            self.health_checks_ok.load(Ordering::Relaxed),
            self.health_checks_failed.load(Ordering::Relaxed),
        )
    }
}
