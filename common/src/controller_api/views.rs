//! What the API answers about instances, their members, operations and events.

use serde::{Deserialize, Serialize};

use super::ha::yes;
use super::instances::InstanceSize;
use crate::request::InvalidRequest;

/// `GET /v1/instances/{name}/replicas`: the members and how replication goes.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ReplicationStatus {
    pub instance: String,
    pub replication_mode: String,
    pub replicas: u32,
    pub members: Vec<MemberView>,
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
    /// A restore (a create from a backup, an in-place restore) while its member recovers:
    /// bytes unpacked, then the WAL position replay has reached, as its sidecar says now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restore: Option<crate::sidecar_api::RestoreProgress>,
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
    /// `creating`, `running`, `restoring` (in place), `deleting`, `deleted` or `failed`.
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
