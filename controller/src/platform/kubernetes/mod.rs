//! The Kubernetes platform's objects: pure builders, with no client and no I/O, of everything an
//! instance is made of on Kubernetes (as Stackable's operators build theirs), so that the shape
//! of every object is unit-tested without a cluster and validated against the API's schema.
//!
//! An instance `<i>` in namespace `<ns>` is:
//!
//! - the root ConfigMap `<i>-toygres` ([`root`]), carrying the instance's settings; every other
//!   object has an owner reference to it, so deleting it lets the garbage collector remove the
//!   rest (the PVCs only when the settings ask for it);
//! - a one-replica StatefulSet `<i>-<n>` per member ([`member`]) running the sidecar image, its
//!   pod `<i>-<n>-0` with the PVC `data-<i>-<n>-0`;
//! - the Services `<i>-rw`, `<i>-ro` and `<i>-members` ([`services`]);
//! - the Secret `<i>-credentials` ([`credentials`]), mounted into every member as files;
//! - the PodDisruptionBudget `<i>` ([`disruption`]).
//!
//! The role label moved at failover and switchover is built by [`labels::role_label_patch`].
//! Applying, waiting and labelling belong to [`platform::KubernetesPlatform`], which serves the
//! [`Platform`](crate::platform::Platform) trait with these builders; [`args`] holds the
//! `toygres controller` flags that select and configure it.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use toygres_common::names::{validate_instance_name, PgAddress};

use super::{validate_member_of, Bootstrap, MemberSpec, PlatformError};

pub mod args;
pub mod credentials;
pub mod disruption;
pub mod labels;
pub mod leader;
pub mod member;
pub mod platform;
pub mod root;
pub mod services;
pub mod tls;

#[cfg(test)]
mod schema_tests;

/// The port Postgres listens on in every member pod.
pub const PG_PORT: u16 = 5432;
/// The port of the sidecar's HTTP API (`/healthz`, `/readyz`, `/metrics`, `/v1/...`).
pub const API_PORT: u16 = 8008;
/// The name of Postgres's port, on the container and the Services.
pub const PG_PORT_NAME: &str = "postgres";
/// The name of the sidecar API's port (probes and the PodMonitor use it).
pub const API_PORT_NAME: &str = "api";

/// Everything about an instance that its Kubernetes objects depend on, as the controller knows it
/// after validating the create request. Holds no credential: those are passed only to
/// [`credentials::instance_secret`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstanceSettings {
    /// The instance's name (a valid instance name).
    pub instance: String,
    /// The namespace every object of the instance lives in.
    pub namespace: String,
    /// The sidecar image (Postgres + `toygres-sidecar`), built from `images/sidecar/Dockerfile`.
    pub sidecar_image: String,
    /// Each member's data volume.
    pub storage: StorageRequest,
    /// Each member's CPU and memory, from the instance's size.
    pub resources: MemberResources,
    /// How strictly members avoid sharing a node.
    pub anti_affinity: AntiAffinity,
    /// What happens to the members' PVCs when a member's StatefulSet is deleted.
    pub volume_retention: VolumeRetention,
    /// Settings passed to every member's sidecar.
    pub sidecar: SidecarSettings,
    /// The operator's own labels, added to every object (the standard labels win a clash).
    #[serde(default)]
    pub extra_labels: BTreeMap<String, String>,
}

impl InstanceSettings {
    /// Checks what the builders rely on: a valid instance name, a namespace that is a DNS
    /// label, and non-empty image, size and resources.
    pub fn validate(&self) -> Result<(), PlatformError> {
        validate_instance_name(&self.instance)?;
        let namespace_is_a_label = !self.namespace.is_empty()
            && self.namespace.len() <= 63
            && self
                .namespace
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !self.namespace.starts_with('-')
            && !self.namespace.ends_with('-');
        if !namespace_is_a_label {
            return Err(PlatformError::Invalid(format!(
                "namespace {:?} is not a DNS label",
                self.namespace
            )));
        }
        for (what, value) in [
            ("sidecar image", &self.sidecar_image),
            ("storage size", &self.storage.size),
            ("CPU", &self.resources.cpu),
            ("memory", &self.resources.memory),
        ] {
            if value.trim().is_empty() {
                return Err(PlatformError::Invalid(format!(
                    "instance {}: the {what} is empty",
                    self.instance
                )));
            }
        }
        Ok(())
    }
}

/// A member's data volume: one PVC per member, from the StatefulSet's claim template.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StorageRequest {
    /// The storage class; `None` uses the cluster's default class.
    pub class: Option<String>,
    /// The requested size as a Kubernetes quantity (`10Gi`).
    pub size: String,
}

/// A member's CPU and memory, as Kubernetes quantities. Both are requested; memory is also the
/// limit (Postgres sizes its caches from it), CPU is not limited (throttling a primary stalls
/// every client).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberResources {
    pub cpu: String,
    pub memory: String,
}

/// How strictly the members of one instance avoid sharing a node.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AntiAffinity {
    /// The scheduler tries to put members on different nodes (the default: a small cluster
    /// still runs every member).
    #[default]
    Preferred,
    /// Members never share a node; a member with no free node stays pending.
    Required,
}

/// What happens to a member's PVC when its StatefulSet is deleted (directly or by the garbage
/// collector after the instance's root is deleted): the StatefulSet's
/// `persistentVolumeClaimRetentionPolicy.whenDeleted`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum VolumeRetention {
    /// The PVC (and the data) stays (the default: data goes only when asked).
    #[default]
    Retain,
    /// The PVC is deleted with the StatefulSet.
    Delete,
}

/// Settings passed to every member's sidecar (as environment variables; see
/// `sidecar/src/config.rs`). `None` keeps the sidecar's default.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SidecarSettings {
    /// `TOYGRES_READY_MAX_LAG_BYTES`: a standby is ready (and in the ro Service) only while its
    /// lag stays within this.
    pub ready_max_lag_bytes: Option<u64>,
    /// `TOYGRES_MAX_SLOT_WAL_KEEP_SIZE`.
    pub max_slot_wal_keep_size: Option<String>,
    /// `TOYGRES_ISOLATION_LEASE_SECS`: an isolated primary fences itself after this long.
    pub isolation_lease_secs: Option<u64>,
    /// `TOYGRES_ARCHIVE_URL`: the object store WAL is archived to. Holds no credential.
    pub archive_url: Option<String>,
    /// `TOYGRES_WAL_COMPRESSION`: how WAL and base backups are compressed.
    #[serde(default)]
    pub wal_compression: Option<String>,
    /// `TOYGRES_NOTIFY_URL`: the controller's API, told at once when a member's Postgres dies,
    /// its WAL receiver loses the primary or it fences itself.
    #[serde(default)]
    pub notify_url: Option<String>,
    /// The ConfigMap whose `ca.crt` verifies an `https` notify URL, mounted read-only at
    /// [`member::NOTIFY_CA_DIR`] (`TOYGRES_NOTIFY_CA_FILE`).
    #[serde(default)]
    pub notify_ca_config_map: Option<String>,
    /// The Secret holding the store's credentials, mounted read-only at
    /// [`member::STORE_CREDENTIALS_DIR`] (`TOYGRES_STORE_CREDENTIALS_DIR`).
    #[serde(default)]
    pub store_credentials_secret: Option<String>,
    /// The store secret holding the key backups are encrypted with: members mount the
    /// instance's key ring Secret ([`backup_keyring_secret_name`], made from it and the keys
    /// it replaced) read-only at [`member::BACKUP_KEYRING_DIR`]
    /// (`TOYGRES_BACKUP_ENCRYPTION_KEYRING`).
    #[serde(default)]
    pub backup_encryption_secret: Option<String>,
}

/// One member's own settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberSettings {
    /// `n` in `<instance>-<n>`.
    pub ordinal: u32,
    /// How the member's empty data directory is created. It matters only the first time: the
    /// platform applies a member's StatefulSet with the bootstrap it was created with, since a
    /// changed pod template restarts the pod.
    pub bootstrap: Bootstrap,
    /// Pins the member to a zone (`topology.kubernetes.io/zone`) when set.
    pub zone: Option<String>,
    /// `TOYGRES_FENCE_TOKEN`: set once the member was killed (a failed-over primary), so its
    /// next start keeps Postgres stopped until the controller rejoins it as a standby. The
    /// platform cannot write into the member's volume as the local platform writes its fence
    /// marker; the sidecar does it on seeing a token it has not seen before.
    #[serde(default)]
    pub fence_token: Option<String>,
}

impl MemberSettings {
    /// The settings of the member a platform-neutral [`MemberSpec`] describes: its ordinal
    /// parsed from `<instance>-<n>`, its bootstrap, and its zone hint.
    pub fn from_spec(spec: &MemberSpec) -> Result<Self, PlatformError> {
        validate_member_of(&spec.instance, &spec.member)?;
        let suffix = &spec.member[spec.instance.len() + 1..];
        let ordinal = suffix
            .parse::<u32>()
            .ok()
            .filter(|n| n.to_string() == suffix)
            .ok_or_else(|| {
                PlatformError::Invalid(format!(
                    "member {:?} does not end in an ordinal (<instance>-<n>)",
                    spec.member
                ))
            })?;
        Ok(Self {
            ordinal,
            bootstrap: spec.bootstrap.clone(),
            zone: spec.placement.zone.clone(),
            fence_token: None,
        })
    }
}

/// The name of member `ordinal` of `instance`, and of its StatefulSet: `<instance>-<n>`.
pub fn member_name(instance: &str, ordinal: u32) -> String {
    format!("{instance}-{ordinal}")
}

/// The name of the one pod of `member`'s StatefulSet: `<member>-0`.
pub fn member_pod_name(member: &str) -> String {
    format!("{member}-0")
}

/// The headless Service giving each member pod a stable DNS name: `<instance>-members`.
pub fn members_service_name(instance: &str) -> String {
    format!("{instance}-members")
}

/// The Service leading to the primary: `<instance>-rw`.
pub fn rw_service_name(instance: &str) -> String {
    format!("{instance}-rw")
}

/// The Service leading to the ready standbys: `<instance>-ro`.
pub fn ro_service_name(instance: &str) -> String {
    format!("{instance}-ro")
}

/// The Secret holding the instance's credentials: `<instance>-credentials`.
/// The Secret of an encrypted instance's backup key ring (see `platform::keyring`).
pub fn backup_keyring_secret_name(instance: &str) -> String {
    format!("{instance}-backup-keyring")
}

pub fn credentials_secret_name(instance: &str) -> String {
    format!("{instance}-credentials")
}

/// The instance's root object (a ConfigMap): `<instance>-toygres`.
pub fn root_config_map_name(instance: &str) -> String {
    format!("{instance}-toygres")
}

/// The instance's PodDisruptionBudget: `<instance>`.
pub fn disruption_budget_name(instance: &str) -> String {
    instance.to_string()
}

/// Where `member`'s Postgres is reached inside the cluster, ready or not (replication, the
/// controller): its pod's name under the headless Service,
/// `<member>-0.<instance>-members.<namespace>.svc:5432`.
pub fn member_pg_address(settings: &InstanceSettings, member: &str) -> PgAddress {
    PgAddress {
        host: format!(
            "{}.{}.{}.svc",
            member_pod_name(member),
            members_service_name(&settings.instance),
            settings.namespace
        ),
        port: PG_PORT,
    }
}

/// The URL of `member`'s sidecar API inside the cluster.
pub fn member_api_url(settings: &InstanceSettings, member: &str) -> String {
    let pg = member_pg_address(settings, member);
    format!("https://{}:{API_PORT}", pg.host)
}

#[cfg(test)]
pub(crate) mod fixtures {
    //! Settings shared by the builders' tests.

    use super::*;

    /// `orders` in namespace `db`, three members' worth of settings.
    pub fn orders() -> InstanceSettings {
        InstanceSettings {
            instance: "orders".into(),
            namespace: "db".into(),
            sidecar_image: "toygres/sidecar:1.2.3".into(),
            storage: StorageRequest {
                class: Some("fast".into()),
                size: "10Gi".into(),
            },
            resources: MemberResources {
                cpu: "500m".into(),
                memory: "1Gi".into(),
            },
            anti_affinity: AntiAffinity::Preferred,
            volume_retention: VolumeRetention::Retain,
            sidecar: SidecarSettings::default(),
            extra_labels: BTreeMap::from([("team".to_string(), "payments".to_string())]),
        }
    }

    /// The owner reference every object of `orders` gets.
    pub fn owner() -> k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference {
        super::root::instance_owner_reference("orders", "0d1c2b3a-0000-4000-8000-000000000001")
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn names_follow_the_design() {
        let settings = fixtures::orders();
        assert_eq!(member_name("orders", 2), "orders-2");
        assert_eq!(member_pod_name("orders-2"), "orders-2-0");
        assert_eq!(
            member_pg_address(&settings, "orders-1").to_string(),
            "orders-1-0.orders-members.db.svc:5432"
        );
        assert_eq!(
            member_api_url(&settings, "orders-1"),
            "https://orders-1-0.orders-members.db.svc:8008"
        );
        assert_eq!(rw_service_name("orders"), "orders-rw");
        assert_eq!(ro_service_name("orders"), "orders-ro");
        assert_eq!(members_service_name("orders"), "orders-members");
        assert_eq!(credentials_secret_name("orders"), "orders-credentials");
        assert_eq!(root_config_map_name("orders"), "orders-toygres");
    }

    #[test]
    fn member_settings_come_from_a_member_spec_named_instance_dash_ordinal() {
        use crate::platform::{Placement, SecretRefs};
        let spec = |member: &str| MemberSpec {
            instance: "orders".into(),
            member: member.into(),
            bootstrap: Bootstrap::Init,
            secrets: SecretRefs::for_instance("orders"),
            placement: Placement {
                zone: Some("zone-b".into()),
                size: None,
            },
            archive: None,
        };
        let settings = MemberSettings::from_spec(&spec("orders-12")).unwrap();
        assert_eq!(settings.ordinal, 12);
        assert_eq!(settings.zone.as_deref(), Some("zone-b"));
        assert_eq!(settings.bootstrap, Bootstrap::Init);
        for bad in ["orders-x", "orders-01", "orders-1a", "other-1"] {
            assert!(MemberSettings::from_spec(&spec(bad)).is_err(), "{bad}");
        }
    }

    #[test]
    fn settings_with_bad_names_or_empty_values_are_refused() {
        fixtures::orders().validate().unwrap();
        let mut bad = fixtures::orders();
        bad.namespace = "Db".into();
        assert!(matches!(bad.validate(), Err(PlatformError::Invalid(_))));
        let mut bad = fixtures::orders();
        bad.instance = "Orders".into();
        assert!(matches!(bad.validate(), Err(PlatformError::InvalidName(_))));
        let mut bad = fixtures::orders();
        bad.storage.size = " ".into();
        assert!(bad
            .validate()
            .unwrap_err()
            .to_string()
            .contains("storage size"));
    }
}
