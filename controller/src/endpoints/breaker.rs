//! Circuit breakers of the ro endpoint's standbys: after [`BreakerSettings::failures_to_open`]
//! connection attempts in a row fail (the port refuses, or does not answer in time), a standby
//! is left out of new ro connections for a cool-off; then it is *half-open*: one connection may
//! try it, and its outcome closes the breaker again or re-opens it for another cool-off. The
//! health loop's routing takes a minute's worth of probes to notice a dead standby; the breaker
//! stops sending clients to it from the next connection (pgdog's replica bans play this part).
//!
//! Pure state and decisions over an injected clock, so the whole cycle is tested without
//! waiting.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::Serialize;

/// When a breaker opens and for how long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BreakerSettings {
    /// Failed attempts in a row that open the breaker.
    pub failures_to_open: u32,
    /// How long an open breaker keeps its standby out before a trial.
    pub cool_off: Duration,
}

impl Default for BreakerSettings {
    fn default() -> Self {
        Self {
            failures_to_open: 2,
            cool_off: Duration::from_secs(5),
        }
    }
}

/// Where one standby's breaker is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum BreakerState {
    /// Connections go to it.
    Closed,
    /// Left out after repeated failures, until the cool-off ends.
    Open,
    /// One trial connection is under way; the others keep away until it ends.
    HalfOpen,
}

#[derive(Debug, Clone, Copy)]
enum Phase {
    Closed { failures: u32 },
    Open { until: Instant },
    HalfOpen,
}

/// The breakers of one endpoint's backends, by address.
#[derive(Debug, Default)]
pub struct Breakers {
    settings: BreakerSettings,
    phases: Mutex<HashMap<SocketAddr, Phase>>,
}

impl Breakers {
    pub fn new(settings: BreakerSettings) -> Self {
        Self {
            settings,
            phases: Mutex::default(),
        }
    }

    fn phases(&self) -> std::sync::MutexGuard<'_, HashMap<SocketAddr, Phase>> {
        match self.phases.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    /// Whether a new connection may try `backend` now. An open breaker past its cool-off turns
    /// half-open and admits this one connection as its trial.
    pub fn admit(&self, backend: SocketAddr, now: Instant) -> bool {
        let mut phases = self.phases();
        let phase = phases
            .entry(backend)
            .or_insert(Phase::Closed { failures: 0 });
        match *phase {
            Phase::Closed { .. } => true,
            Phase::Open { until } if now >= until => {
                *phase = Phase::HalfOpen;
                true
            }
            Phase::Open { .. } | Phase::HalfOpen => false,
        }
    }

    /// A connection to `backend` succeeded: its breaker closes.
    pub fn succeeded(&self, backend: SocketAddr) {
        self.phases().insert(backend, Phase::Closed { failures: 0 });
    }

    /// A connection to `backend` failed: one more failure in a row, or a failed trial. Returns
    /// whether the breaker opened with it.
    pub fn failed(&self, backend: SocketAddr, now: Instant) -> bool {
        let mut phases = self.phases();
        let phase = phases
            .entry(backend)
            .or_insert(Phase::Closed { failures: 0 });
        let open = Phase::Open {
            until: now + self.settings.cool_off,
        };
        match *phase {
            Phase::Closed { failures } if failures + 1 >= self.settings.failures_to_open => {
                *phase = open;
                true
            }
            Phase::Closed { failures } => {
                *phase = Phase::Closed {
                    failures: failures + 1,
                };
                false
            }
            Phase::HalfOpen => {
                *phase = open;
                true
            }
            // A connection admitted before the breaker opened failed too.
            Phase::Open { .. } => false,
        }
    }

    /// Where `backend`'s breaker is (closed when never tried).
    pub fn state(&self, backend: SocketAddr, now: Instant) -> BreakerState {
        match self.phases().get(&backend) {
            None | Some(Phase::Closed { .. }) => BreakerState::Closed,
            // Past its cool-off it admits the next connection: say so.
            Some(Phase::Open { until }) if now >= *until => BreakerState::HalfOpen,
            Some(Phase::Open { .. }) => BreakerState::Open,
            Some(Phase::HalfOpen) => BreakerState::HalfOpen,
        }
    }

    /// Forgets the backends that are no longer targets.
    pub fn retain(&self, backends: &[SocketAddr]) {
        self.phases().retain(|addr, _| backends.contains(addr));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    #[test]
    fn a_breaker_opens_after_failures_in_a_row_and_half_opens_after_the_cool_off() {
        let breakers = Breakers::new(BreakerSettings {
            failures_to_open: 2,
            cool_off: Duration::from_secs(10),
        });
        let (dead, good) = (addr(1), addr(2));
        let t0 = Instant::now();
        assert!(breakers.admit(dead, t0));
        assert!(!breakers.failed(dead, t0));
        // A success in between resets the count.
        breakers.succeeded(dead);
        assert!(!breakers.failed(dead, t0));
        assert_eq!(breakers.state(dead, t0), BreakerState::Closed);
        assert!(breakers.failed(dead, t0));
        assert_eq!(breakers.state(dead, t0), BreakerState::Open);
        assert!(!breakers.admit(dead, t0 + Duration::from_secs(9)));
        assert!(breakers.admit(good, t0), "other backends are not affected");

        // After the cool-off: one trial, the others wait for it.
        let t1 = t0 + Duration::from_secs(10);
        assert_eq!(breakers.state(dead, t1), BreakerState::HalfOpen);
        assert!(breakers.admit(dead, t1));
        assert!(!breakers.admit(dead, t1));
        // The trial fails: open for another cool-off.
        assert!(breakers.failed(dead, t1));
        assert!(!breakers.admit(dead, t1 + Duration::from_secs(5)));
        // The next trial succeeds: closed.
        let t2 = t1 + Duration::from_secs(10);
        assert!(breakers.admit(dead, t2));
        breakers.succeeded(dead);
        assert_eq!(breakers.state(dead, t2), BreakerState::Closed);
        assert!(breakers.admit(dead, t2));

        breakers.retain(&[good]);
        assert_eq!(breakers.phases().len(), 1);
    }
}
