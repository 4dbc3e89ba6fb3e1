//! High availability: switchover and failover requests and an instance's HA settings.

use std::str::FromStr;

use serde::{Deserialize, Serialize};

use super::replication::MAX_REPLICAS;
use crate::request::InvalidRequest;

/// What a switchover does with the old primary once the new one serves.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OldPrimaryAction {
    /// Rewound if needed, and streaming from the new primary (the default).
    #[default]
    ConvertToReplica,
    /// Stopped and fenced, its data kept, out of the instance's endpoints.
    StopAndRetain,
    /// Deleted with its data.
    Terminate,
}

impl FromStr for OldPrimaryAction {
    type Err = InvalidRequest;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "convert_to_replica" => Ok(Self::ConvertToReplica),
            "stop_and_retain" => Ok(Self::StopAndRetain),
            "terminate" => Ok(Self::Terminate),
            other => Err(InvalidRequest::new(
                "old_primary_action",
                format!("must be convert_to_replica, stop_and_retain or terminate, not {other:?}"),
            )),
        }
    }
}

/// The longest a switchover may wait for its target to catch up.
pub const MAX_SYNC_TIMEOUT_SECS: u64 = 3600;

/// `POST /v1/instances/{name}/switchover`: hand the primary role to a standby, planned.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SwitchoverRequest {
    /// The standby to promote; the most caught-up eligible one when left out.
    #[serde(default)]
    pub to: Option<String>,
    /// Wait until the target has caught up before writes are held (default true).
    #[serde(default)]
    pub wait_for_sync: Option<bool>,
    /// How long to wait for that, in seconds (default 60).
    #[serde(default)]
    pub sync_timeout_secs: Option<u64>,
    /// `convert_to_replica` (default), `stop_and_retain` or `terminate`.
    #[serde(default)]
    pub old_primary_action: Option<String>,
}

/// A [`SwitchoverRequest`] whose values were checked.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ValidatedSwitchover {
    pub to: Option<String>,
    pub wait_for_sync: bool,
    pub sync_timeout_secs: u64,
    pub old_primary_action: OldPrimaryAction,
}

impl TryFrom<SwitchoverRequest> for ValidatedSwitchover {
    type Error = InvalidRequest;

    fn try_from(request: SwitchoverRequest) -> Result<Self, Self::Error> {
        if let Some(to) = &request.to {
            crate::names::validate_member_name(to)
                .map_err(|e| InvalidRequest::new("to", e.to_string()))?;
        }
        let sync_timeout_secs = request.sync_timeout_secs.unwrap_or(60);
        if !(1..=MAX_SYNC_TIMEOUT_SECS).contains(&sync_timeout_secs) {
            return Err(InvalidRequest::new(
                "sync_timeout_secs",
                format!("must be between 1 and {MAX_SYNC_TIMEOUT_SECS}, not {sync_timeout_secs}"),
            ));
        }
        Ok(Self {
            to: request.to,
            wait_for_sync: request.wait_for_sync.unwrap_or(true),
            sync_timeout_secs,
            old_primary_action: match request.old_primary_action.as_deref() {
                None => OldPrimaryAction::default(),
                Some(action) => action.parse()?,
            },
        })
    }
}

/// `POST /v1/instances/{name}/failover`: promote a standby because the primary is down.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FailoverRequest {
    /// The standby to promote; the most caught-up eligible one when left out.
    #[serde(default)]
    pub to: Option<String>,
    /// Fail over even though the primary answers (it is fenced first), and accept a target
    /// outside the lag bound.
    #[serde(default)]
    pub force: bool,
}

impl FailoverRequest {
    /// Checks the target's name.
    pub fn validate(&self) -> Result<(), InvalidRequest> {
        if let Some(to) = &self.to {
            crate::names::validate_member_name(to)
                .map_err(|e| InvalidRequest::new("to", e.to_string()))?;
        }
        Ok(())
    }
}

/// How an instance's synchronous replication behaves when standbys are missing.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SyncModeSetting {
    /// Writes wait rather than commit without a synchronous standby (no acknowledged commit is
    /// ever lost).
    #[default]
    Strict,
    /// After `degrade_timeout_secs` without a synchronous standby, commits stop waiting until one
    /// is back.
    Degrade,
}

/// High-availability settings of an instance: automatic failover and synchronous replication.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct HaSettings {
    /// Automatic failover on or off.
    pub failover_enabled: bool,
    /// Milliseconds between two checks of a primary that stopped answering.
    pub check_interval_ms: u64,
    /// Failed checks in a row before the primary counts as down.
    pub failure_threshold: u32,
    /// Milliseconds one check may take.
    pub check_timeout_ms: u64,
    /// A standby holds back an automatic failover only if it heard from the primary within
    /// this many milliseconds (older evidence, or a standby that cannot be asked, does not).
    pub standby_contact_window_ms: u64,
    /// Async mode: the most WAL (bytes) a standby may miss to be promoted automatically.
    pub max_lag_bytes: u64,
    /// Seconds after a failover during which no other automatic failover happens.
    pub cooldown_secs: u64,
    /// Sync mode: `strict` or `degrade`.
    pub sync_mode: SyncModeSetting,
    /// Sync mode: how many standbys confirm each commit.
    pub num_sync: u32,
    /// Sync mode: `false` for the first `num_sync` standbys in order (`FIRST n`), `true` for any
    /// `num_sync` of them (`ANY n`, quorum).
    pub quorum: bool,
    /// Sync mode `degrade`: seconds without enough standbys before commits stop waiting.
    pub degrade_timeout_secs: u64,
    /// A query every health round runs on every member (as the superuser, within the check
    /// timeout). A member whose query fails, or returns `false` in its first column, is marked
    /// as failing its check: an event, and the instance counts as degraded. It does not by
    /// itself cause a failover.
    pub health_query: Option<String>,
}

impl Default for HaSettings {
    fn default() -> Self {
        Self {
            failover_enabled: true,
            check_interval_ms: 250,
            failure_threshold: 3,
            check_timeout_ms: 500,
            standby_contact_window_ms: 1000,
            max_lag_bytes: 16 * 1024 * 1024,
            cooldown_secs: 60,
            sync_mode: SyncModeSetting::Strict,
            num_sync: 1,
            quorum: false,
            degrade_timeout_secs: 10,
            health_query: None,
        }
    }
}

/// The longest custom health query accepted.
pub const MAX_HEALTH_QUERY_LEN: usize = 4096;

/// `PUT /v1/instances/{name}/ha`: the settings to change; the others stay.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HaSettingsPatch {
    pub failover_enabled: Option<bool>,
    pub check_interval_ms: Option<u64>,
    pub failure_threshold: Option<u32>,
    pub check_timeout_ms: Option<u64>,
    pub standby_contact_window_ms: Option<u64>,
    pub max_lag_bytes: Option<u64>,
    pub cooldown_secs: Option<u64>,
    pub sync_mode: Option<SyncModeSetting>,
    pub num_sync: Option<u32>,
    pub quorum: Option<bool>,
    pub degrade_timeout_secs: Option<u64>,
    /// `""` removes the query.
    pub health_query: Option<String>,
}

impl HaSettings {
    /// These settings with `patch` applied, checked.
    pub fn patched(&self, patch: &HaSettingsPatch) -> Result<HaSettings, InvalidRequest> {
        let next = HaSettings {
            failover_enabled: patch.failover_enabled.unwrap_or(self.failover_enabled),
            check_interval_ms: patch.check_interval_ms.unwrap_or(self.check_interval_ms),
            failure_threshold: patch.failure_threshold.unwrap_or(self.failure_threshold),
            check_timeout_ms: patch.check_timeout_ms.unwrap_or(self.check_timeout_ms),
            standby_contact_window_ms: patch
                .standby_contact_window_ms
                .unwrap_or(self.standby_contact_window_ms),
            max_lag_bytes: patch.max_lag_bytes.unwrap_or(self.max_lag_bytes),
            cooldown_secs: patch.cooldown_secs.unwrap_or(self.cooldown_secs),
            sync_mode: patch.sync_mode.unwrap_or(self.sync_mode),
            num_sync: patch.num_sync.unwrap_or(self.num_sync),
            quorum: patch.quorum.unwrap_or(self.quorum),
            degrade_timeout_secs: patch
                .degrade_timeout_secs
                .unwrap_or(self.degrade_timeout_secs),
            health_query: match &patch.health_query {
                None => self.health_query.clone(),
                Some(q) if q.trim().is_empty() => None,
                Some(q) => Some(q.trim().to_string()),
            },
        };
        next.validate()?;
        Ok(next)
    }

    /// Checks every value's range.
    pub fn validate(&self) -> Result<(), InvalidRequest> {
        let range = |field: &'static str, value: u64, min: u64, max: u64| {
            if (min..=max).contains(&value) {
                Ok(())
            } else {
                Err(InvalidRequest::new(
                    field,
                    format!("must be between {min} and {max}, not {value}"),
                ))
            }
        };
        range("check_interval_ms", self.check_interval_ms, 50, 60_000)?;
        range("failure_threshold", self.failure_threshold.into(), 1, 100)?;
        range("check_timeout_ms", self.check_timeout_ms, 50, 60_000)?;
        range(
            "standby_contact_window_ms",
            self.standby_contact_window_ms,
            100,
            600_000,
        )?;
        range("cooldown_secs", self.cooldown_secs, 0, 86_400)?;
        range("num_sync", self.num_sync.into(), 1, u64::from(MAX_REPLICAS))?;
        range("degrade_timeout_secs", self.degrade_timeout_secs, 1, 3600)?;
        if let Some(query) = &self.health_query {
            if query.len() > MAX_HEALTH_QUERY_LEN {
                return Err(InvalidRequest::new(
                    "health_query",
                    format!("must be at most {MAX_HEALTH_QUERY_LEN} bytes"),
                ));
            }
            if query.contains('\0') {
                return Err(InvalidRequest::new("health_query", "must not contain NUL"));
            }
        }
        Ok(())
    }
}

/// serde's default for a setting that is on unless said otherwise.
pub(super) fn yes() -> bool {
    true
}
