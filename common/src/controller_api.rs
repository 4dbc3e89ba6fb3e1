//! Requests and responses of the controller's operator API (`/v1/...`), shared by the controller,
//! its CLI and the tests. Requests are validated once, at the boundary, into `Validated…` types
//! the rest of the controller trusts.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::backup_api::{BackupConfig, BackupConfigRequest};
use crate::names::validate_instance_name;
pub use crate::request::{InvalidRequest, OperationAccepted};

/// The most standbys an instance may have.
pub const MAX_REPLICAS: u32 = 5;

/// The most operations one instance's actor holds, queued and running: one more is answered
/// `429 Too Many Requests`.
pub const MAX_QUEUED_OPERATIONS: i64 = 8;

/// How standbys acknowledge commits.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ReplicationMode {
    /// Commits return once the primary has them; standbys follow as fast as they can.
    #[default]
    Async,
    /// Commits return once the synchronous standby has flushed them too.
    Sync,
}

impl ReplicationMode {
    /// `async` or `sync`.
    pub fn as_str(self) -> &'static str {
        match self {
            ReplicationMode::Async => "async",
            ReplicationMode::Sync => "sync",
        }
    }
}

impl fmt::Display for ReplicationMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for ReplicationMode {
    type Err = InvalidRequest;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "async" => Ok(ReplicationMode::Async),
            "sync" => Ok(ReplicationMode::Sync),
            other => Err(InvalidRequest::new(
                "replication",
                format!("must be \"sync\" or \"async\", not {other:?}"),
            )),
        }
    }
}

/// `POST /v1/instances`.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateInstanceRequest {
    /// A DNS-1123 label: lowercase letters, digits and `-`, starting with a letter, at most 40.
    #[cfg_attr(
        feature = "openapi",
        schema(
            pattern = r"^[a-z]([a-z0-9-]{0,38}[a-z0-9])?$",
            min_length = 1,
            max_length = 40
        )
    )]
    pub name: String,
    /// Standbys besides the primary, 0 to [`MAX_REPLICAS`].
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(minimum = 0, maximum = 5))]
    pub replicas: i64,
    /// `sync` or `async` (the default).
    #[serde(default)]
    pub replication: Option<String>,
    /// HA settings other than the defaults (automatic failover, sync mode …).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ha: Option<HaSettingsPatch>,
    /// Backups and WAL archiving: on with the platform's defaults when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup: Option<BackupConfigRequest>,
    /// The application database (the instance's name when left out).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub database: Option<String>,
    /// The application database's owner role (the instance's name when left out).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    /// The ro endpoint's rule other than the defaults (lag bounds, fallback, balancing).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ro: Option<crate::ro_api::RoSettingsPatch>,
    /// Postgres parameters the instance starts with (name to value), checked like a change of
    /// `/v1/instances/{name}/parameters`: all or nothing, before anything is recorded.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub parameters: BTreeMap<String, String>,
    /// A tuning profile sized to `size`: `oltp`, `analytics`, `general` or `development`
    /// (`parameters` override its values).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub profile: Option<String>,
    /// What the instance declares about its size (what profiles are computed from).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<InstanceSize>,
}

/// An instance's declared size.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InstanceSize {
    /// Memory in MiB, at least 256.
    #[cfg_attr(feature = "openapi", schema(minimum = 256))]
    pub memory_mb: u64,
    /// CPUs, 1 to 256.
    #[cfg_attr(feature = "openapi", schema(minimum = 1, maximum = 256))]
    pub cpus: u32,
    /// `ssd` (the default), `hdd` or `san`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage: Option<String>,
}

impl InstanceSize {
    /// Checks the ranges and the storage type.
    pub fn validate(&self) -> Result<(), InvalidRequest> {
        if self.memory_mb < 256 {
            return Err(InvalidRequest::new(
                "size.memory_mb",
                format!("must be at least 256, not {}", self.memory_mb),
            ));
        }
        if !(1..=256).contains(&self.cpus) {
            return Err(InvalidRequest::new(
                "size.cpus",
                format!("must be between 1 and 256, not {}", self.cpus),
            ));
        }
        match self.storage.as_deref() {
            None | Some("ssd" | "hdd" | "san") => Ok(()),
            Some(other) => Err(InvalidRequest::new(
                "size.storage",
                format!("must be ssd, hdd or san, not {other:?}"),
            )),
        }
    }
}

/// A [`CreateInstanceRequest`] whose values were checked.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ValidatedCreateInstance {
    pub name: String,
    pub replicas: u32,
    pub replication: ReplicationMode,
    #[serde(default)]
    pub ha: HaSettings,
    /// `None`: backups off (also what an older request in an orchestration's history reads as).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup: Option<BackupConfig>,
    /// The application database and owner; `None` in an older request of an orchestration's
    /// history (made before instances had one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app: Option<crate::app_access::AppAccess>,
    /// The ro endpoint's rule (left out when it is the default, as in older requests).
    #[serde(default, skip_serializing_if = "crate::ro_api::RoSettings::is_default")]
    pub ro: crate::ro_api::RoSettings,
    /// The parameters the instance starts with (a profile's values with the request's own over
    /// them); checked by the controller before the instance is recorded.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub parameters: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub profile: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<InstanceSize>,
}

impl TryFrom<CreateInstanceRequest> for ValidatedCreateInstance {
    type Error = InvalidRequest;

    fn try_from(request: CreateInstanceRequest) -> Result<Self, Self::Error> {
        validate_instance_name(&request.name)
            .map_err(|e| InvalidRequest::new("name", e.to_string()))?;
        let replicas = u32::try_from(request.replicas)
            .ok()
            .filter(|r| *r <= MAX_REPLICAS)
            .ok_or_else(|| {
                InvalidRequest::new(
                    "replicas",
                    format!(
                        "must be between 0 and {MAX_REPLICAS}, not {}",
                        request.replicas
                    ),
                )
            })?;
        let replication = match request.replication.as_deref() {
            None => ReplicationMode::Async,
            Some(mode) => mode.parse()?,
        };
        if replication == ReplicationMode::Sync && replicas == 0 {
            return Err(InvalidRequest::new(
                "replication",
                "sync replication needs at least one replica",
            ));
        }
        let ha = match &request.ha {
            Some(patch) => HaSettings::default().patched(patch)?,
            None => HaSettings::default(),
        };
        let backup = BackupConfig::from_request(request.backup)?;
        let app = crate::app_access::AppAccess::from_request(
            &request.name,
            request.database.as_deref(),
            request.owner.as_deref(),
        )?;
        let ro = match &request.ro {
            Some(patch) => crate::ro_api::RoSettings::default().patched(patch)?,
            None => crate::ro_api::RoSettings::default(),
        };
        if let Some(size) = &request.size {
            size.validate()?;
        }
        if request.profile.is_some() && request.size.is_none() {
            return Err(InvalidRequest::new(
                "profile",
                "a profile is computed from the instance's size: give size too",
            ));
        }
        Ok(Self {
            name: request.name,
            replicas,
            replication,
            ha,
            backup,
            app: Some(app),
            ro,
            parameters: request.parameters,
            profile: request.profile,
            size: request.size,
        })
    }
}

/// `POST /v1/instances/{name}/replicas`: add a standby.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AddReplicaRequest {
    /// The new member's name, `<instance>-<n>`; the next free one when left out.
    #[serde(default)]
    #[cfg_attr(
        feature = "openapi",
        schema(
            pattern = r"^[a-z]([a-z0-9-]{0,38}[a-z0-9])?-[0-9]+$",
            min_length = 3,
            max_length = 63
        )
    )]
    pub name: Option<String>,
    /// Placement hint: the zone to run in.
    #[serde(default)]
    pub zone: Option<String>,
    /// Placement hint: the size (resources) of the pod.
    #[serde(default)]
    pub size: Option<String>,
    /// `sync` (the default in a sync instance: it may confirm commits) or `async` (never a
    /// synchronous standby).
    #[serde(default)]
    pub mode: Option<String>,
    /// This standby's own lag bound: beyond it, it leaves the ro endpoint.
    #[serde(default)]
    pub max_lag_bytes: Option<u64>,
}

/// `GET /v1/instances/{name}/replicas`: the members and how replication goes.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ReplicationStatus {
    pub instance: String,
    pub replication_mode: String,
    pub replicas: u32,
    pub members: Vec<MemberView>,
}

/// `DELETE /v1/instances/{name}` query.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeleteInstanceQuery {
    /// Keep the members' data directories.
    #[serde(default)]
    pub keep_data: bool,
}

/// `GET /v1/operations/{id}`.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Operation {
    pub id: String,
    /// `create`, `delete`, `add-replica`, `remove-replica`.
    pub kind: String,
    pub instance: String,
    /// `pending`, `running`, `succeeded`, `failed` or `cancelled`.
    pub status: String,
    /// The operation's progress, as its orchestration reports it.
    pub progress: Option<Progress>,
    pub error: Option<String>,
    /// RFC 3339, UTC.
    pub created_at: String,
    pub finished_at: Option<String>,
    /// Seconds from creation to the end (or to now while it runs).
    pub elapsed_seconds: f64,
}

impl Operation {
    /// Whether the operation has ended.
    pub fn is_finished(&self) -> bool {
        matches!(self.status.as_str(), "succeeded" | "failed" | "cancelled")
    }
}

/// An operation's progress: a step out of a known number, and what it is doing.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Progress {
    pub step: u32,
    pub steps: u32,
    pub message: String,
    /// Switchover and failover: the state they are in (`waiting_for_sync`, `fencing_primary`,
    /// `promoting_replica`, `updating_routing`, `cleaning_up_old_primary`, `completed`,
    /// `failed`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
    /// Switchover and failover: what they measured and decided.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub handover: Option<Handover>,
}

/// What a switchover or failover did: from whom to whom, and what it cost.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Handover {
    pub old_primary: Option<String>,
    pub new_primary: Option<String>,
    /// How far the new primary was behind the old one when the operation began (bytes of WAL).
    pub lag_bytes_at_start: Option<u64>,
    /// WAL the old primary had that the new one never received (bytes): commits possibly lost.
    /// Zero for every switchover, and for failovers in sync mode.
    pub data_loss_bytes: Option<u64>,
    /// Why this standby was chosen, or why nothing was done.
    pub reason: Option<String>,
}

/// One instance as listed by `GET /v1/instances`.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct InstanceSummary {
    pub name: String,
    /// `creating`, `running`, `deleting`, `deleted` or `failed`.
    pub state: String,
    /// `unknown`, `healthy`, `degraded` or `unavailable`.
    pub health: String,
    /// `async` or `sync`.
    pub replication_mode: String,
    /// The read-write endpoint's port, once assigned.
    pub rw_port: Option<u16>,
    /// The read-only endpoint's port, once assigned.
    pub ro_port: Option<u16>,
    /// RFC 3339, UTC.
    pub created_at: String,
    /// RFC 3339, UTC.
    pub updated_at: String,
}

/// The body of `GET /v1/instances`.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct InstanceList {
    pub instances: Vec<InstanceSummary>,
}

/// `GET /v1/instances/{name}`.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct InstanceDetail {
    #[serde(flatten)]
    pub summary: InstanceSummary,
    /// Standbys asked for.
    pub replicas: u32,
    pub members: Vec<MemberView>,
    /// How to connect, once the endpoints exist.
    pub connection: Option<ConnectionInfo>,
    /// The newest operation on the instance.
    pub last_operation: Option<String>,
    /// Where the ro endpoint leads and why, as the last health round decided.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ro: Option<crate::ro_api::RoEndpointView>,
    /// The size the instance declared at create (what profiles are computed from).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<InstanceSize>,
}

/// One member of an instance, as last observed.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct MemberView {
    pub name: String,
    /// `primary`, `standby` or `unknown`.
    pub role: String,
    /// `creating`, `running`, …
    pub state: String,
    /// `unknown`, `healthy` or `unhealthy`.
    pub health: String,
    /// `host:port` of its Postgres.
    pub address: Option<String>,
    pub timeline: Option<i64>,
    pub lag_bytes: Option<i64>,
    /// As the primary reports it: `sync`, `potential`, `async`.
    pub sync_state: Option<String>,
    pub last_error: Option<String>,
    /// RFC 3339, UTC.
    pub last_check_at: Option<String>,
    /// Seconds since the last health check.
    pub last_check_age_seconds: Option<f64>,
    /// It may be a synchronous standby.
    #[serde(default = "yes")]
    pub sync_candidate: bool,
    /// Its own lag bound for the ro endpoint, if any.
    #[serde(default)]
    pub max_lag_bytes: Option<i64>,
}

/// How clients reach an instance. Never holds a password: it says where to read it.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ConnectionInfo {
    pub user: String,
    pub database: String,
    /// Where the password is (a file in local mode).
    pub password_location: Option<String>,
    /// The read-write endpoint, `postgresql://user@host:port/db`.
    pub rw: String,
    /// The read-only endpoint.
    pub ro: String,
    /// Every member, for clients that find the primary themselves
    /// (`target_session_attrs=read-write`).
    pub multi_host: String,
    /// The superuser's libpq password file (local mode), for `toygres psql --superuser`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub passfile: Option<String>,
    /// How applications connect: as the owner of the application database, with URIs that work
    /// as printed. The fields above are the platform superuser's, for operators. `None` for an
    /// instance created before instances had an application database.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app: Option<crate::app_access::AppConnection>,
}

/// `GET /v1/instances/{name}/events`.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct EventList {
    pub events: Vec<Event>,
}

/// One entry of an instance's events log.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Event {
    pub id: i64,
    /// RFC 3339, UTC.
    pub at: String,
    pub kind: String,
    pub member: Option<String>,
    pub operation_id: Option<String>,
    pub message: String,
}

/// The most events one `GET /v1/instances/{name}/events` answers.
pub const MAX_EVENTS_PAGE: u32 = 1000;

/// `GET /v1/instances/{name}/events?limit=&since=`: without `since`, the newest `limit` events;
/// with it, the first `limit` events after the event `since` (paging forward). Oldest first.
#[cfg_attr(feature = "openapi", derive(utoipa::IntoParams))]
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventsQuery {
    /// 1 to 1000; 200 when left out.
    #[serde(default)]
    #[cfg_attr(feature = "openapi", param(minimum = 1, maximum = 1000))]
    pub limit: Option<u32>,
    /// An event id: only the events after it.
    #[serde(default)]
    #[cfg_attr(feature = "openapi", param(minimum = 0))]
    pub since: Option<i64>,
}

impl EventsQuery {
    /// The page size, checked.
    pub fn page(&self) -> Result<i64, InvalidRequest> {
        match self.limit {
            None => Ok(200),
            Some(n) if (1..=MAX_EVENTS_PAGE).contains(&n) => Ok(i64::from(n)),
            Some(n) => Err(InvalidRequest::new(
                "limit",
                format!("must be between 1 and {MAX_EVENTS_PAGE}, not {n}"),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn request(name: &str, replicas: i64, replication: Option<&str>) -> CreateInstanceRequest {
        CreateInstanceRequest {
            ha: None,
            backup: None,
            database: None,
            owner: None,
            ro: None,
            parameters: BTreeMap::new(),
            profile: None,
            size: None,
            name: name.into(),
            replicas,
            replication: replication.map(String::from),
        }
    }

    #[test]
    fn a_create_request_is_validated_field_by_field() {
        let ok = ValidatedCreateInstance::try_from(request("orders", 2, Some("sync"))).unwrap();
        assert_eq!(ok.replicas, 2);
        assert_eq!(ok.replication, ReplicationMode::Sync);
        let ok = ValidatedCreateInstance::try_from(request("orders", 0, None)).unwrap();
        assert_eq!(ok.replication, ReplicationMode::Async);

        let field =
            |r: CreateInstanceRequest| ValidatedCreateInstance::try_from(r).unwrap_err().field;
        assert_eq!(field(request("Orders", 1, None)), "name");
        assert_eq!(field(request(&"a".repeat(41), 1, None)), "name");
        assert_eq!(field(request("orders", 6, None)), "replicas");
        assert_eq!(field(request("orders", -1, None)), "replicas");
        assert_eq!(field(request("orders", 1, Some("semi"))), "replication");
        assert_eq!(field(request("orders", 0, Some("sync"))), "replication");
    }
}

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
            standby_contact_window_ms: 1500,
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

fn yes() -> bool {
    true
}
