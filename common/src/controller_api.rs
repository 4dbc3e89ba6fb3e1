//! Requests and responses of the controller's operator API (`/v1/...`), shared by the controller,
//! its CLI and the tests. Requests are validated once, at the boundary, into `Validated…` types
//! the rest of the controller trusts.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::names::validate_instance_name;

/// The most standbys an instance may have.
pub const MAX_REPLICAS: u32 = 5;

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

/// A request value that was refused, with the field it came from.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct InvalidRequest {
    pub field: &'static str,
    pub message: String,
}

impl InvalidRequest {
    pub fn new(field: &'static str, message: impl Into<String>) -> Self {
        Self {
            field,
            message: message.into(),
        }
    }
}

/// `POST /v1/instances`.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreateInstanceRequest {
    pub name: String,
    /// Standbys besides the primary, 0 to [`MAX_REPLICAS`].
    #[serde(default)]
    pub replicas: i64,
    /// `sync` or `async` (the default).
    #[serde(default)]
    pub replication: Option<String>,
}

/// A [`CreateInstanceRequest`] whose values were checked.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ValidatedCreateInstance {
    pub name: String,
    pub replicas: u32,
    pub replication: ReplicationMode,
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
        Ok(Self {
            name: request.name,
            replicas,
            replication,
        })
    }
}

/// `POST /v1/instances/{name}/replicas`: add a standby.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AddReplicaRequest {
    /// The new member's name, `<instance>-<n>`; the next free one when left out.
    #[serde(default)]
    pub name: Option<String>,
    /// Placement hint: the zone to run in.
    #[serde(default)]
    pub zone: Option<String>,
    /// Placement hint: the size (resources) of the pod.
    #[serde(default)]
    pub size: Option<String>,
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

/// The answer to a request that started an operation (`202 Accepted`).
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OperationAccepted {
    pub operation_id: String,
    pub kind: String,
    pub instance: String,
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
}

/// How clients reach an instance. Never holds the password: it says where to read it.
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn request(name: &str, replicas: i64, replication: Option<&str>) -> CreateInstanceRequest {
        CreateInstanceRequest {
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
