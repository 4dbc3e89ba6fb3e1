//! Creating an instance and its standbys: the requests and their checks.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::ha::{HaSettings, HaSettingsPatch};
use super::replication::{ReplicationMode, MAX_REPLICAS};
use crate::backup_api::{BackupConfig, BackupConfigRequest};
use crate::names::validate_instance_name;
use crate::request::InvalidRequest;

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

/// `DELETE /v1/instances/{name}` query.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeleteInstanceQuery {
    /// Keep the members' data directories.
    #[serde(default)]
    pub keep_data: bool,
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
