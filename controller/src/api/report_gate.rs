//! How often members' reports may wake an instance's actor ([`super::member_report`]), kept
//! apart so that the API's state can hold it without importing the route.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// When each instance's actor was last asked to check because of a report.
#[derive(Debug, Default)]
pub struct ReportGate {
    last: Mutex<HashMap<String, Instant>>,
}

impl ReportGate {
    /// Whether a check may be asked for `instance` at `now`: none was within `spacing`.
    pub fn admit(&self, instance: &str, now: Instant, spacing: Duration) -> bool {
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        if last
            .get(instance)
            .is_some_and(|at| now.saturating_duration_since(*at) < spacing)
        {
            return false;
        }
        // Forget instances not heard from for a while, so the map stays small.
        last.retain(|_, at| now.saturating_duration_since(*at) < Duration::from_secs(600));
        last.insert(instance.to_string(), now);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_ask_for_a_check_at_most_once_per_spacing_per_instance() {
        let gate = ReportGate::default();
        let t0 = Instant::now();
        let spacing = Duration::from_millis(250);
        assert!(gate.admit("a", t0, spacing));
        assert!(!gate.admit("a", t0 + Duration::from_millis(100), spacing));
        assert!(gate.admit("b", t0 + Duration::from_millis(100), spacing));
        assert!(gate.admit("a", t0 + Duration::from_millis(250), spacing));
        assert!(!gate.admit("a", t0 + Duration::from_millis(400), spacing));
    }
}
