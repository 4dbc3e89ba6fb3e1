//! The read-only endpoint's rule per instance, as the operator API carries it: how far behind a
//! standby may be and still take ro connections (bytes and/or seconds), the lower mark it must
//! fall under to come back (hysteresis, so a standby near its bound does not flap), what ro does
//! when no standby qualifies, and how connections are spread. Also what `GET
//! /v1/instances/{name}` shows of each ro backend.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::request::InvalidRequest;

/// The largest lag bound in bytes accepted (1 TiB).
pub const MAX_RO_LAG_BYTES: u64 = 1 << 40;

/// The largest lag bound in seconds accepted (a day).
pub const MAX_RO_LAG_SECONDS: u64 = 86_400;

/// What ro does when no standby qualifies.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RoFallback {
    /// Lead ro to the primary (fail-open): reads keep working, on the primary.
    #[default]
    Primary,
    /// Refuse ro connections until a standby qualifies again.
    Refuse,
}

/// How ro spreads new connections over the standbys that qualify.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RoBalance {
    /// Each new connection starts at the next standby.
    #[default]
    RoundRobin,
    /// Each new connection goes to the standby with the fewest open ro connections.
    LeastConnections,
}

/// An instance's ro rule (`GET/PUT /v1/instances/{name}/ro`).
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct RoSettings {
    /// A standby further behind than this many bytes of WAL leaves ro. `None`: the controller's
    /// bound (16 MiB unless configured). A standby added with its own bound keeps that one.
    pub max_lag_bytes: Option<u64>,
    /// A standby whose replay is further behind than this many seconds leaves ro. `None`: no
    /// bound in seconds.
    pub max_lag_seconds: Option<u64>,
    /// A standby that left ro comes back once its lag is at most this percentage of each bound
    /// (0 to 100; 50 by default).
    pub reenter_percent: u8,
    /// What ro does when no standby qualifies.
    pub fallback: RoFallback,
    /// How ro spreads connections.
    pub balance: RoBalance,
}

impl Default for RoSettings {
    fn default() -> Self {
        Self {
            max_lag_bytes: None,
            max_lag_seconds: None,
            reenter_percent: 50,
            fallback: RoFallback::Primary,
            balance: RoBalance::RoundRobin,
        }
    }
}

/// `PUT /v1/instances/{name}/ro` (and `ro` of a create request): the settings to change; the
/// others stay. A bound of 0 removes it.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoSettingsPatch {
    /// Bytes; 0 goes back to the controller's bound.
    pub max_lag_bytes: Option<u64>,
    /// Seconds; 0 removes the bound in seconds.
    pub max_lag_seconds: Option<u64>,
    pub reenter_percent: Option<u8>,
    pub fallback: Option<RoFallback>,
    pub balance: Option<RoBalance>,
}

impl RoSettings {
    /// Whether these are the defaults (left out of serialized requests).
    pub fn is_default(&self) -> bool {
        *self == Self::default()
    }

    /// These settings with `patch` applied, checked.
    pub fn patched(&self, patch: &RoSettingsPatch) -> Result<RoSettings, InvalidRequest> {
        let bound = |given: Option<u64>, current: Option<u64>| match given {
            None => current,
            Some(0) => None,
            Some(n) => Some(n),
        };
        let next = RoSettings {
            max_lag_bytes: bound(patch.max_lag_bytes, self.max_lag_bytes),
            max_lag_seconds: bound(patch.max_lag_seconds, self.max_lag_seconds),
            reenter_percent: patch.reenter_percent.unwrap_or(self.reenter_percent),
            fallback: patch.fallback.unwrap_or(self.fallback),
            balance: patch.balance.unwrap_or(self.balance),
        };
        next.validate()?;
        Ok(next)
    }

    /// Checks every value's range.
    pub fn validate(&self) -> Result<(), InvalidRequest> {
        if let Some(bytes) = self.max_lag_bytes {
            if !(1..=MAX_RO_LAG_BYTES).contains(&bytes) {
                return Err(InvalidRequest::new(
                    "max_lag_bytes",
                    format!(
                        "must be between 1 and {MAX_RO_LAG_BYTES} (0: the default), not {bytes}"
                    ),
                ));
            }
        }
        if let Some(seconds) = self.max_lag_seconds {
            if !(1..=MAX_RO_LAG_SECONDS).contains(&seconds) {
                return Err(InvalidRequest::new(
                    "max_lag_seconds",
                    format!("must be between 1 and {MAX_RO_LAG_SECONDS} (0: none), not {seconds}"),
                ));
            }
        }
        if self.reenter_percent > 100 {
            return Err(InvalidRequest::new(
                "reenter_percent",
                format!("must be between 0 and 100, not {}", self.reenter_percent),
            ));
        }
        Ok(())
    }
}

/// Where one standby stands with the ro endpoint.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RoBackendState {
    /// It takes ro connections.
    In,
    /// Out: its lag is over the bound (or has not yet fallen under the re-entry mark).
    LagOverBound,
    /// Out: its breaker is open after failed connects, until the cool-off ends.
    BreakerOpen,
    /// Its breaker's cool-off ended: the next connection tries it.
    HalfOpen,
    /// Out: it is down, not a streaming standby, or not running.
    Unhealthy,
}

impl RoBackendState {
    /// Every state, for metrics (one series per state).
    pub const ALL: [RoBackendState; 5] = [
        RoBackendState::In,
        RoBackendState::LagOverBound,
        RoBackendState::BreakerOpen,
        RoBackendState::HalfOpen,
        RoBackendState::Unhealthy,
    ];

    /// The kebab-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            RoBackendState::In => "in",
            RoBackendState::LagOverBound => "lag-over-bound",
            RoBackendState::BreakerOpen => "breaker-open",
            RoBackendState::HalfOpen => "half-open",
            RoBackendState::Unhealthy => "unhealthy",
        }
    }

    /// How `toygres get` says it.
    pub fn describe(self) -> &'static str {
        match self {
            RoBackendState::In => "in",
            RoBackendState::LagOverBound => "out: lag over bound",
            RoBackendState::BreakerOpen => "out: breaker open",
            RoBackendState::HalfOpen => "half-open (one trial)",
            RoBackendState::Unhealthy => "out: unhealthy",
        }
    }
}

impl fmt::Display for RoBackendState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One standby of the ro endpoint.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RoBackend {
    pub member: String,
    pub state: RoBackendState,
    /// Its lag when last checked (bytes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lag_bytes: Option<u64>,
    /// Its replay lag when last checked (seconds).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lag_seconds: Option<f64>,
}

/// Where the ro endpoint leads, as the last health round decided (`ro` of
/// `GET /v1/instances/{name}`).
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RoEndpointView {
    /// Each standby and where it stands.
    pub backends: Vec<RoBackend>,
    /// No standby qualifies and ro leads to the primary (fail-open).
    pub fallback_to_primary: bool,
    /// No standby qualifies and ro refuses connections (`fallback: refuse`).
    #[serde(default)]
    pub refusing: bool,
    /// The rule in force.
    pub settings: RoSettings,
}

impl RoEndpointView {
    /// Whether some standby takes ro connections.
    pub fn any_in(&self) -> bool {
        self.backends
            .iter()
            .any(|b| matches!(b.state, RoBackendState::In | RoBackendState::HalfOpen))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn a_patch_changes_only_what_it_names_and_zero_removes_a_bound() {
        let set = RoSettings::default()
            .patched(&RoSettingsPatch {
                max_lag_bytes: Some(65536),
                max_lag_seconds: Some(30),
                fallback: Some(RoFallback::Refuse),
                ..Default::default()
            })
            .unwrap();
        assert_eq!(set.max_lag_bytes, Some(65536));
        assert_eq!(set.max_lag_seconds, Some(30));
        assert_eq!(set.reenter_percent, 50);
        assert_eq!(set.fallback, RoFallback::Refuse);
        let cleared = set
            .patched(&RoSettingsPatch {
                max_lag_seconds: Some(0),
                balance: Some(RoBalance::LeastConnections),
                ..Default::default()
            })
            .unwrap();
        assert_eq!(cleared.max_lag_seconds, None);
        assert_eq!(cleared.max_lag_bytes, Some(65536));
        assert_eq!(cleared.balance, RoBalance::LeastConnections);
    }

    #[test]
    fn out_of_range_values_name_their_field() {
        let field =
            |patch: RoSettingsPatch| RoSettings::default().patched(&patch).unwrap_err().field;
        assert_eq!(
            field(RoSettingsPatch {
                reenter_percent: Some(101),
                ..Default::default()
            }),
            "reenter_percent"
        );
        assert_eq!(
            field(RoSettingsPatch {
                max_lag_seconds: Some(MAX_RO_LAG_SECONDS + 1),
                ..Default::default()
            }),
            "max_lag_seconds"
        );
        assert_eq!(
            field(RoSettingsPatch {
                max_lag_bytes: Some(MAX_RO_LAG_BYTES + 1),
                ..Default::default()
            }),
            "max_lag_bytes"
        );
        let unknown = serde_json::from_str::<RoSettingsPatch>(r#"{"max_lag":1}"#);
        assert!(unknown.is_err());
    }
}
