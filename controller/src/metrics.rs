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
    /// High-availability events by kind (failover decisions, alerts).
    ha_events: Mutex<BTreeMap<String, u64>>,
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
