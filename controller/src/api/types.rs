//! The bodies of the operator API. (They move to `toygres-common` once another crate needs them.)

use serde::{Deserialize, Serialize};

/// One instance as listed by `GET /v1/instances`.
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
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct InstanceList {
    pub instances: Vec<InstanceSummary>,
}
