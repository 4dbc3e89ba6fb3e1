//! `GET /v1/stats` (`toygres stats`): the fleet at a glance.

use serde::{Deserialize, Serialize};

/// A standby's lag, among the fleet's largest.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberLag {
    pub instance: String,
    pub member: String,
    pub lag_bytes: i64,
}

/// The fleet summary.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FleetStats {
    /// Live instances by health (`healthy`, `degraded`, `unavailable`, `unknown`).
    pub instances_by_health: Vec<(String, i64)>,
    /// Changes of primary (switchovers and failovers) in the last 24 hours.
    pub failovers_24h: i64,
    /// Backups finished in the last 24 hours, by status (`succeeded`, `failed`).
    pub backups_24h: Vec<(String, i64)>,
    /// The largest standby lags (at most 5), largest first.
    pub largest_lags: Vec<MemberLag>,
}
