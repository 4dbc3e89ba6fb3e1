//! Which standbys the ro endpoint leads to, decided once for both platforms (the local proxies
//! and the Kubernetes `-ro` Service follow the same list): a standby qualifies while it is a
//! healthy, serving standby whose lag is within the instance's bound. Pure decisions, no I/O.
//!
//! - **Bounds**: bytes of WAL (the member's own bound, else the instance's, else the
//!   controller's) and, when set, seconds of replay lag.
//! - **Hysteresis**: a standby leaves ro when its lag goes over a bound, and comes back only
//!   once its lag is at most `reenter_percent` of every bound. A standby hovering around its
//!   bound therefore does not flap in and out at every health round.
//! - **Fallback**: with no standby qualifying, ro leads to the primary (fail-open) or refuses,
//!   as the instance's [`RoFallback`] says.

use std::collections::BTreeMap;

use toygres_common::ro_api::{RoBackend, RoBackendState, RoEndpointView, RoFallback, RoSettings};

use super::breaker::BreakerState;

/// The lag bounds of one standby.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LagBounds {
    /// Bytes of WAL behind the primary.
    pub bytes: u64,
    /// Seconds of replay lag, when bounded.
    pub seconds: Option<u64>,
    /// The re-entry mark, as a percentage of each bound.
    pub reenter_percent: u8,
}

impl LagBounds {
    /// Whether a standby is over its bounds now, given whether it was at the last round: over
    /// a bound to leave, at most the re-entry mark of every bound to come back. An unknown lag
    /// changes nothing.
    pub fn over(&self, was_over: bool, lag_bytes: Option<u64>, lag_seconds: Option<f64>) -> bool {
        if was_over {
            let mark = |bound: u64| bound.saturating_mul(u64::from(self.reenter_percent)) / 100;
            let bytes_back = match lag_bytes {
                Some(lag) => lag <= mark(self.bytes),
                None => return true,
            };
            let seconds_back = match (self.seconds, lag_seconds) {
                (None, _) => true,
                (Some(bound), Some(lag)) => lag <= mark(bound * 1000) as f64 / 1000.0,
                (Some(_), None) => return true,
            };
            !(bytes_back && seconds_back)
        } else {
            lag_bytes.is_some_and(|lag| lag > self.bytes)
                || self
                    .seconds
                    .zip(lag_seconds)
                    .is_some_and(|(bound, lag)| lag > bound as f64)
        }
    }

    /// The bounds in words, for events.
    pub fn describe(&self) -> String {
        match self.seconds {
            Some(seconds) => format!("bound {} bytes or {seconds} s", self.bytes),
            None => format!("bound {} bytes", self.bytes),
        }
    }
}

/// An instance's lag rule: its ro settings, the controller's default bound, and the standbys
/// that have their own bound in bytes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LagRule {
    pub settings: RoSettings,
    /// The controller's bound in bytes, for instances that set none.
    pub default_bytes: u64,
    pub member_bytes: BTreeMap<String, u64>,
}

impl LagRule {
    /// Only a bound in bytes, for every member.
    pub fn bytes(bytes: u64) -> Self {
        Self {
            default_bytes: bytes,
            ..Self::default()
        }
    }

    /// `member`'s bounds.
    pub fn for_member(&self, member: &str) -> LagBounds {
        LagBounds {
            bytes: self
                .member_bytes
                .get(member)
                .copied()
                .or(self.settings.max_lag_bytes)
                .unwrap_or(self.default_bytes),
            seconds: self.settings.max_lag_seconds,
            reenter_percent: self.settings.reenter_percent,
        }
    }
}

/// Where a standby stands with ro, from what the round saw of it: serving as a standby, and
/// whether it is over its lag bounds.
pub fn backend_state(serving_standby: bool, lagging: bool) -> RoBackendState {
    match (serving_standby, lagging) {
        (false, _) => RoBackendState::Unhealthy,
        (true, true) => RoBackendState::LagOverBound,
        (true, false) => RoBackendState::In,
    }
}

/// The ro endpoint as a round leaves it: each standby's state (sorted by member), and whether
/// ro falls back to the primary or refuses because none qualifies.
pub fn endpoint_view(mut backends: Vec<RoBackend>, settings: &RoSettings) -> RoEndpointView {
    backends.sort_by(|a, b| a.member.cmp(&b.member));
    let none_in = !backends.iter().any(|b| b.state == RoBackendState::In);
    RoEndpointView {
        backends,
        fallback_to_primary: none_in && settings.fallback == RoFallback::Primary,
        refusing: none_in && settings.fallback == RoFallback::Refuse,
        settings: settings.clone(),
    }
}

/// `view` as the ro endpoint stands now: a standby the round let in whose breaker is open (or
/// half-open) says so, and the fallback follows; `settings` are the rule in force.
pub fn with_breakers(
    view: RoEndpointView,
    breakers: &BTreeMap<String, BreakerState>,
    settings: &RoSettings,
) -> RoEndpointView {
    let backends = view
        .backends
        .into_iter()
        .map(|mut backend| {
            if backend.state == RoBackendState::In {
                backend.state = match breakers.get(&backend.member) {
                    Some(BreakerState::Open) => RoBackendState::BreakerOpen,
                    Some(BreakerState::HalfOpen) => RoBackendState::HalfOpen,
                    Some(BreakerState::Closed) | None => RoBackendState::In,
                };
            }
            backend
        })
        .collect();
    endpoint_view(backends, settings)
}

/// The members ro leads to: the backends that are in.
pub fn qualified(view: &RoEndpointView) -> Vec<String> {
    view.backends
        .iter()
        .filter(|b| b.state == RoBackendState::In)
        .map(|b| b.member.clone())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bounds(bytes: u64, seconds: Option<u64>) -> LagBounds {
        LagBounds {
            bytes,
            seconds,
            reenter_percent: 50,
        }
    }

    #[test]
    fn a_standby_leaves_over_the_bound_and_comes_back_only_under_the_reentry_mark() {
        let b = bounds(1000, None);
        // (was over, lag) -> over now
        let cases = [
            (false, Some(0), false),
            (false, Some(1000), false),
            (false, Some(1001), true),
            (true, Some(1001), true),
            // Under the bound but over the mark: still out (no flapping).
            (true, Some(900), true),
            (true, Some(501), true),
            (true, Some(500), false),
            (true, Some(0), false),
            // Unknown lag changes nothing.
            (false, None, false),
            (true, None, true),
        ];
        for (was, lag, want) in cases {
            assert_eq!(b.over(was, lag, None), want, "was {was}, lag {lag:?}");
        }
    }

    #[test]
    fn a_bound_in_seconds_counts_too_and_both_must_be_under_their_marks() {
        let b = bounds(1 << 30, Some(10));
        assert!(!b.over(false, Some(0), Some(10.0)));
        assert!(b.over(false, Some(0), Some(10.5)));
        assert!(b.over(true, Some(0), Some(6.0)));
        assert!(!b.over(true, Some(0), Some(5.0)));
        assert!(
            b.over(true, Some(600 << 20), Some(0.0)),
            "bytes still over the mark"
        );
        // Seconds bounded but not reported: a standby that is out stays out.
        assert!(b.over(true, Some(0), None));
        assert_eq!(b.describe(), "bound 1073741824 bytes or 10 s");
    }

    #[test]
    fn a_member_bound_beats_the_instance_bound_which_beats_the_controller_default() {
        let mut rule = LagRule::bytes(16 << 20);
        assert_eq!(rule.for_member("db-1").bytes, 16 << 20);
        rule.settings.max_lag_bytes = Some(65536);
        assert_eq!(rule.for_member("db-1").bytes, 65536);
        rule.member_bytes.insert("db-2".into(), 1024);
        assert_eq!(rule.for_member("db-2").bytes, 1024);
        assert_eq!(rule.for_member("db-1").bytes, 65536);
    }

    fn backend(member: &str, state: RoBackendState) -> RoBackend {
        RoBackend {
            member: member.into(),
            state,
            lag_bytes: None,
            lag_seconds: None,
        }
    }

    #[test]
    fn with_no_standby_in_ro_falls_back_or_refuses_as_configured() {
        assert_eq!(backend_state(false, false), RoBackendState::Unhealthy);
        assert_eq!(backend_state(true, true), RoBackendState::LagOverBound);
        assert_eq!(backend_state(true, false), RoBackendState::In);

        let mut settings = RoSettings::default();
        let view = endpoint_view(
            vec![
                backend("db-2", RoBackendState::In),
                backend("db-1", RoBackendState::LagOverBound),
            ],
            &settings,
        );
        assert_eq!(qualified(&view), ["db-2"]);
        assert_eq!(view.backends[0].member, "db-1");
        assert!(!view.fallback_to_primary && !view.refusing);

        let out = vec![backend("db-1", RoBackendState::LagOverBound)];
        let view = endpoint_view(out.clone(), &settings);
        assert!(view.fallback_to_primary && !view.refusing);
        assert!(qualified(&view).is_empty());
        settings.fallback = RoFallback::Refuse;
        let view = endpoint_view(out, &settings);
        assert!(!view.fallback_to_primary && view.refusing);
    }

    #[test]
    fn an_open_breaker_takes_a_standby_out_and_the_fallback_follows() {
        let settings = RoSettings::default();
        let view = endpoint_view(
            vec![
                backend("db-1", RoBackendState::In),
                backend("db-2", RoBackendState::Unhealthy),
            ],
            &settings,
        );
        let open = BTreeMap::from([("db-1".to_string(), BreakerState::Open)]);
        let now = with_breakers(view.clone(), &open, &settings);
        assert_eq!(now.backends[0].state, RoBackendState::BreakerOpen);
        assert_eq!(now.backends[1].state, RoBackendState::Unhealthy);
        assert!(now.fallback_to_primary);
        let half = BTreeMap::from([("db-1".to_string(), BreakerState::HalfOpen)]);
        let now = with_breakers(view.clone(), &half, &settings);
        assert_eq!(now.backends[0].state, RoBackendState::HalfOpen);
        let closed = with_breakers(view, &BTreeMap::new(), &settings);
        assert_eq!(closed.backends[0].state, RoBackendState::In);
        assert!(!closed.fallback_to_primary);
    }
}
