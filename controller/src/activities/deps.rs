//! What every activity reaches (the platform, the CMS, the metrics and the timing settings),
//! and how an activity's error is written into the history.

use std::sync::Arc;
use std::time::Duration;

use crate::cms::Cms;
use crate::metrics::ControllerMetrics;
use crate::platform::Platform;

/// What the activities reach.
#[derive(Debug)]
pub struct ActivityDeps {
    pub platform: Arc<dyn Platform>,
    pub cms: Arc<Cms>,
    pub metrics: Arc<ControllerMetrics>,
    /// How often the waiting activities poll a sidecar.
    pub poll_interval: Duration,
    /// How long one health probe of a member may take.
    pub probe_timeout: Duration,
    /// The health interval this controller runs with (its `--health-interval-ms`): running
    /// actors pick it up from their next round, so a restart with a new value reaches them.
    pub health_interval_ms: u64,
    /// The fast path runs: actors of quiet instances sleep between its wake-ups.
    pub fast_path: bool,
    /// The running instances the fast path watched in its last pass (their quiet actors'
    /// safety-net rounds are spread wider as the fleet grows).
    pub watched_instances: std::sync::atomic::AtomicUsize,
}

/// An activity's error: the whole chain of causes, as text (it goes into the history).
pub(crate) fn describe(e: impl Into<anyhow::Error>) -> String {
    format!("{:#}", e.into())
}
