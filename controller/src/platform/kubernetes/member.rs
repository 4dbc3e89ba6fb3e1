//! A member's StatefulSet: one replica of the sidecar image (which runs Postgres as its child),
//! its data on a PVC from the claim template, its credentials as files from the instance's
//! Secret, probes on the sidecar's `/healthz` and `/readyz`, a non-root security context, and
//! the scheduling rules that spread an instance's members over nodes and zones.
//!
//! The container runs exactly what `images/sidecar/Dockerfile` runs: its entrypoint as the
//! command, and every environment variable the image sets with the same value (a test checks
//! both against the Dockerfile), so a process node that runs the pod spec without the image's
//! config behaves like the image. Passwords and the token are never in the environment or the
//! command line: the sidecar reads them from the files named by `TOYGRES_*_FILE`.
//!
//! Probe timings: the sidecar answers `/healthz` from its first second, during a bootstrap too
//! (a minimal API runs until Postgres is up), so the startup probe only guards against a
//! sidecar that never listens, and a long `pg_basebackup` never gets the pod killed; liveness
//! restarts a sidecar that stops answering for a minute; readiness (`/readyz`: Postgres accepts
//! connections, and on a standby the lag is within `TOYGRES_READY_MAX_LAG_BYTES`) decides
//! whether the `-rw`/`-ro` Services lead to the pod, so it reacts within ~10 s.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{
    StatefulSet, StatefulSetPersistentVolumeClaimRetentionPolicy, StatefulSetSpec,
    StatefulSetUpdateStrategy,
};
use k8s_openapi::api::core::v1::{
    Affinity, Capabilities, Container, ContainerPort, EmptyDirVolumeSource, EnvVar, HTTPGetAction,
    KeyToPath, PersistentVolumeClaim, PersistentVolumeClaimSpec, PodAffinityTerm, PodAntiAffinity,
    PodSecurityContext, PodSpec, PodTemplateSpec, Probe, ResourceRequirements, SeccompProfile,
    SecretVolumeSource, SecurityContext, TopologySpreadConstraint, Volume, VolumeMount,
    VolumeResourceRequirements, WeightedPodAffinityTerm,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::labels::{instance_pods_selector, label_selector, member_labels, member_pod_selector};
use super::{
    credentials_secret_name, member_name, members_service_name, AntiAffinity, InstanceSettings,
    MemberSettings, VolumeRetention, API_PORT, API_PORT_NAME, PG_PORT, PG_PORT_NAME,
};
use crate::platform::{Bootstrap, SecretName};

/// The image's entrypoint (`ENTRYPOINT` in `images/sidecar/Dockerfile`), run as the command.
pub const SIDECAR_COMMAND: [&str; 2] = ["toygres-sidecar", "run"];
/// The uid and gid the image runs as (`postgres`, fixed in the Dockerfile).
pub const POSTGRES_UID: i64 = 999;
/// Where the PVC is mounted.
pub const DATA_VOLUME_MOUNT: &str = "/var/lib/postgresql/data";
/// The data directory: a subdirectory of the mount, which may hold `lost+found`.
pub const DATA_DIR: &str = "/var/lib/postgresql/data/pgdata";
/// Where Postgres's programs are in the image.
pub const PG_BIN_DIR: &str = "/usr/lib/postgresql/15/bin";
/// Where the instance's Secret is mounted; a file per [`SecretName::key`].
pub const CREDENTIALS_DIR: &str = "/etc/toygres/secrets";
/// Postgres's default socket directory in the image (writable: the root filesystem is not).
pub const SOCKET_DIR: &str = "/var/run/postgresql";
/// Where Postgres listens: every address of the pod.
pub const PG_LISTEN: &str = "*";
/// Where the sidecar API listens: every address of the pod (probes, the controller, metrics).
pub const API_ADDR: &str = "0.0.0.0:8008";
/// Seconds the sidecar gives a fast shutdown before an immediate one (`TOYGRES_STOP_TIMEOUT_SECS`).
pub const STOP_TIMEOUT_SECS: i64 = 30;
/// The pod's termination grace: the sidecar's stop timeout and a margin for its own exit.
pub const TERMINATION_GRACE_SECS: i64 = STOP_TIMEOUT_SECS + 30;
/// The name of the sidecar container.
pub const SIDECAR_CONTAINER: &str = "sidecar";
/// The name of the PVC template (the PVC is `data-<member>-0`).
pub const DATA_VOLUME: &str = "data";
/// The name of the credentials volume.
pub const CREDENTIALS_VOLUME: &str = "credentials";
/// Where the member's TLS Secret (`<member>-tls`, see [`super::tls`]) is mounted.
pub const TLS_DIR: &str = "/etc/toygres/tls";
/// The name of the TLS volume.
pub const TLS_VOLUME: &str = "tls";
/// Where a member mounts its instance's store secret (the object store's credentials).
pub const STORE_CREDENTIALS_DIR: &str = "/etc/toygres/store-credentials";
/// The volume of the store secret.
pub const STORE_CREDENTIALS_VOLUME: &str = "store-credentials";
/// Where a member mounts the store secret holding its backup encryption key.
pub const BACKUP_KEY_DIR: &str = "/etc/toygres/backup-encryption";
/// The volume of the backup encryption key's secret.
pub const BACKUP_KEY_VOLUME: &str = "backup-encryption";

/// A volume of the Secret `secret` (a store secret), its files readable by owner and group.
fn secret_volume(name: &str, secret: &str) -> Volume {
    Volume {
        name: name.to_string(),
        secret: Some(SecretVolumeSource {
            secret_name: Some(secret.to_string()),
            default_mode: Some(CREDENTIAL_FILE_MODE),
            optional: Some(false),
            ..SecretVolumeSource::default()
        }),
        ..Volume::default()
    }
}

/// Files of a Secret volume: readable by the owner (root) and the group (`fsGroup`, the
/// postgres group), by no one else.
const CREDENTIAL_FILE_MODE: i32 = 0o440;

/// The file holding `secret` inside a member pod.
pub fn credential_file(secret: SecretName) -> String {
    format!("{CREDENTIALS_DIR}/{}", secret.key())
}

/// The StatefulSet of member `member_settings.ordinal` of the instance, owned by `owner` (the
/// instance's root, see [`super::root::instance_owner_reference`]).
pub fn member_stateful_set(
    settings: &InstanceSettings,
    member_settings: &MemberSettings,
    owner: &OwnerReference,
) -> StatefulSet {
    let member = member_name(&settings.instance, member_settings.ordinal);
    let labels = member_labels(&settings.instance, &member, &settings.extra_labels);
    let when_deleted = match settings.volume_retention {
        VolumeRetention::Retain => "Retain",
        VolumeRetention::Delete => "Delete",
    };
    StatefulSet {
        metadata: ObjectMeta {
            name: Some(member.clone()),
            namespace: Some(settings.namespace.clone()),
            labels: Some(labels.clone()),
            owner_references: Some(vec![owner.clone()]),
            ..ObjectMeta::default()
        },
        spec: Some(StatefulSetSpec {
            replicas: Some(1),
            selector: label_selector(member_pod_selector(&settings.instance, &member)),
            service_name: Some(members_service_name(&settings.instance)),
            // One replica: the policy only decides that a deleted pod is re-created at once.
            pod_management_policy: Some("Parallel".to_string()),
            update_strategy: Some(StatefulSetUpdateStrategy {
                type_: Some("RollingUpdate".to_string()),
                ..StatefulSetUpdateStrategy::default()
            }),
            revision_history_limit: Some(3),
            persistent_volume_claim_retention_policy: Some(
                StatefulSetPersistentVolumeClaimRetentionPolicy {
                    when_deleted: Some(when_deleted.to_string()),
                    when_scaled: Some("Retain".to_string()),
                },
            ),
            volume_claim_templates: Some(vec![data_claim_template(settings, labels.clone())]),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels),
                    ..ObjectMeta::default()
                }),
                spec: Some(member_pod_spec(settings, member_settings, &member)),
            },
            ..StatefulSetSpec::default()
        }),
        ..StatefulSet::default()
    }
}

/// The claim template of the member's data volume.
fn data_claim_template(
    settings: &InstanceSettings,
    labels: BTreeMap<String, String>,
) -> PersistentVolumeClaim {
    PersistentVolumeClaim {
        metadata: ObjectMeta {
            name: Some(DATA_VOLUME.to_string()),
            labels: Some(labels),
            ..ObjectMeta::default()
        },
        spec: Some(PersistentVolumeClaimSpec {
            access_modes: Some(vec!["ReadWriteOnce".to_string()]),
            storage_class_name: settings.storage.class.clone(),
            resources: Some(VolumeResourceRequirements {
                requests: Some(BTreeMap::from([(
                    "storage".to_string(),
                    Quantity(settings.storage.size.clone()),
                )])),
                ..VolumeResourceRequirements::default()
            }),
            ..PersistentVolumeClaimSpec::default()
        }),
        ..PersistentVolumeClaim::default()
    }
}

fn member_pod_spec(
    settings: &InstanceSettings,
    member_settings: &MemberSettings,
    member: &str,
) -> PodSpec {
    PodSpec {
        containers: vec![sidecar_container(settings, member_settings, member)],
        security_context: Some(PodSecurityContext {
            run_as_non_root: Some(true),
            run_as_user: Some(POSTGRES_UID),
            run_as_group: Some(POSTGRES_UID),
            fs_group: Some(POSTGRES_UID),
            fs_group_change_policy: Some("OnRootMismatch".to_string()),
            seccomp_profile: Some(SeccompProfile {
                type_: "RuntimeDefault".to_string(),
                ..SeccompProfile::default()
            }),
            ..PodSecurityContext::default()
        }),
        volumes: Some(
            vec![
                Volume {
                    name: CREDENTIALS_VOLUME.to_string(),
                    secret: Some(SecretVolumeSource {
                        secret_name: Some(credentials_secret_name(&settings.instance)),
                        items: Some(
                            SecretName::ALL
                                .iter()
                                .map(|secret| KeyToPath {
                                    key: secret.key().to_string(),
                                    path: secret.key().to_string(),
                                    mode: None,
                                })
                                .collect(),
                        ),
                        default_mode: Some(CREDENTIAL_FILE_MODE),
                        optional: Some(false),
                    }),
                    ..Volume::default()
                },
                Volume {
                    name: TLS_VOLUME.to_string(),
                    secret: Some(SecretVolumeSource {
                        secret_name: Some(super::tls::member_tls_secret_name(member)),
                        default_mode: Some(CREDENTIAL_FILE_MODE),
                        optional: Some(false),
                        ..SecretVolumeSource::default()
                    }),
                    ..Volume::default()
                },
                empty_dir_volume("tmp", None),
                empty_dir_volume("run", None),
                // Postgres's dynamic shared memory (parallel queries): a container runtime's default
                // /dev/shm is 64 MiB; this one is bounded by the memory limit instead.
                empty_dir_volume("shm", Some("Memory")),
            ]
            .into_iter()
            .chain(
                settings
                    .sidecar
                    .store_credentials_secret
                    .as_ref()
                    .map(|secret| secret_volume(STORE_CREDENTIALS_VOLUME, secret)),
            )
            .chain(
                settings
                    .sidecar
                    .backup_encryption_secret
                    .as_ref()
                    .map(|secret| secret_volume(BACKUP_KEY_VOLUME, secret)),
            )
            .collect(),
        ),
        affinity: Some(member_affinity(settings)),
        topology_spread_constraints: Some(vec![TopologySpreadConstraint {
            max_skew: 1,
            topology_key: ZONE_LABEL.to_string(),
            when_unsatisfiable: "ScheduleAnyway".to_string(),
            label_selector: Some(label_selector(instance_pods_selector(&settings.instance))),
            ..TopologySpreadConstraint::default()
        }]),
        node_selector: member_settings
            .zone
            .as_ref()
            .map(|zone| BTreeMap::from([(ZONE_LABEL.to_string(), zone.clone())])),
        termination_grace_period_seconds: Some(TERMINATION_GRACE_SECS),
        // The sidecar talks to no Kubernetes API, and needs no Service variables.
        automount_service_account_token: Some(false),
        enable_service_links: Some(false),
        ..PodSpec::default()
    }
}

/// The node label naming a node's zone.
pub const ZONE_LABEL: &str = "topology.kubernetes.io/zone";
/// The node label naming a node.
pub const HOSTNAME_LABEL: &str = "kubernetes.io/hostname";

/// Members of one instance avoid sharing a node, preferably or strictly.
fn member_affinity(settings: &InstanceSettings) -> Affinity {
    let term = PodAffinityTerm {
        label_selector: Some(label_selector(instance_pods_selector(&settings.instance))),
        topology_key: HOSTNAME_LABEL.to_string(),
        ..PodAffinityTerm::default()
    };
    let anti_affinity = match settings.anti_affinity {
        AntiAffinity::Preferred => PodAntiAffinity {
            preferred_during_scheduling_ignored_during_execution: Some(vec![
                WeightedPodAffinityTerm {
                    weight: 100,
                    pod_affinity_term: term,
                },
            ]),
            ..PodAntiAffinity::default()
        },
        AntiAffinity::Required => PodAntiAffinity {
            required_during_scheduling_ignored_during_execution: Some(vec![term]),
            ..PodAntiAffinity::default()
        },
    };
    Affinity {
        pod_anti_affinity: Some(anti_affinity),
        ..Affinity::default()
    }
}

fn empty_dir_volume(name: &str, medium: Option<&str>) -> Volume {
    Volume {
        name: name.to_string(),
        empty_dir: Some(EmptyDirVolumeSource {
            medium: medium.map(str::to_string),
            ..EmptyDirVolumeSource::default()
        }),
        ..Volume::default()
    }
}

fn sidecar_container(
    settings: &InstanceSettings,
    member_settings: &MemberSettings,
    member: &str,
) -> Container {
    let resources = &settings.resources;
    Container {
        name: SIDECAR_CONTAINER.to_string(),
        image: Some(settings.sidecar_image.clone()),
        command: Some(SIDECAR_COMMAND.iter().map(|s| s.to_string()).collect()),
        env: Some(
            sidecar_env(settings, member_settings, member)
                .into_iter()
                .map(|(name, value)| EnvVar {
                    name,
                    value: Some(value),
                    ..EnvVar::default()
                })
                .collect(),
        ),
        ports: Some(vec![
            container_port(PG_PORT_NAME, PG_PORT),
            container_port(API_PORT_NAME, API_PORT),
        ]),
        startup_probe: Some(http_probe("/healthz", 5, 5, 60)),
        liveness_probe: Some(http_probe("/healthz", 10, 5, 6)),
        readiness_probe: Some(http_probe("/readyz", 5, 3, 2)),
        resources: Some(ResourceRequirements {
            requests: Some(BTreeMap::from([
                ("cpu".to_string(), Quantity(resources.cpu.clone())),
                ("memory".to_string(), Quantity(resources.memory.clone())),
            ])),
            limits: Some(BTreeMap::from([(
                "memory".to_string(),
                Quantity(resources.memory.clone()),
            )])),
            ..ResourceRequirements::default()
        }),
        security_context: Some(SecurityContext {
            run_as_non_root: Some(true),
            run_as_user: Some(POSTGRES_UID),
            run_as_group: Some(POSTGRES_UID),
            allow_privilege_escalation: Some(false),
            read_only_root_filesystem: Some(true),
            capabilities: Some(Capabilities {
                drop: Some(vec!["ALL".to_string()]),
                ..Capabilities::default()
            }),
            ..SecurityContext::default()
        }),
        volume_mounts: Some(
            vec![
                volume_mount(DATA_VOLUME, DATA_VOLUME_MOUNT, false),
                volume_mount(CREDENTIALS_VOLUME, CREDENTIALS_DIR, true),
                volume_mount(TLS_VOLUME, TLS_DIR, true),
                volume_mount("tmp", "/tmp", false),
                volume_mount("run", SOCKET_DIR, false),
                volume_mount("shm", "/dev/shm", false),
            ]
            .into_iter()
            .chain(
                settings
                    .sidecar
                    .store_credentials_secret
                    .as_ref()
                    .map(|_| volume_mount(STORE_CREDENTIALS_VOLUME, STORE_CREDENTIALS_DIR, true)),
            )
            .chain(
                settings
                    .sidecar
                    .backup_encryption_secret
                    .as_ref()
                    .map(|_| volume_mount(BACKUP_KEY_VOLUME, BACKUP_KEY_DIR, true)),
            )
            .collect(),
        ),
        ..Container::default()
    }
}

/// The sidecar's environment, in order: everything `toygres-sidecar run` reads for this member
/// (see `sidecar/src/config.rs`), none of it secret.
pub fn sidecar_env(
    settings: &InstanceSettings,
    member_settings: &MemberSettings,
    member: &str,
) -> Vec<(String, String)> {
    let mut env: Vec<(&str, String)> = vec![
        ("LANG", "C.UTF-8".into()),
        ("TOYGRES_PG_BIN_DIR", PG_BIN_DIR.into()),
        ("TOYGRES_DATA_DIR", DATA_DIR.into()),
        ("TOYGRES_PG_PORT", PG_PORT.to_string()),
        ("TOYGRES_PG_LISTEN", PG_LISTEN.into()),
        ("TOYGRES_API_ADDR", API_ADDR.into()),
        (
            "TOYGRES_TOKEN_FILE",
            credential_file(SecretName::SidecarToken),
        ),
        (
            "TOYGRES_SUPERUSER_PASSWORD_FILE",
            credential_file(SecretName::SuperuserPassword),
        ),
        (
            "TOYGRES_REPLICATION_PASSWORD_FILE",
            credential_file(SecretName::ReplicationPassword),
        ),
        ("TOYGRES_TLS_DIR", TLS_DIR.into()),
        ("TOYGRES_MEMBER_NAME", member.to_string()),
        ("TOYGRES_INSTANCE_NAME", settings.instance.clone()),
        ("TOYGRES_STOP_TIMEOUT_SECS", STOP_TIMEOUT_SECS.to_string()),
    ];
    match &member_settings.bootstrap {
        Bootstrap::Init => env.push(("TOYGRES_BOOTSTRAP", "init".into())),
        Bootstrap::Standby { primary } => {
            env.push(("TOYGRES_BOOTSTRAP", "standby".into()));
            env.push(("TOYGRES_PRIMARY", primary.to_string()));
        }
        Bootstrap::Restore(source) => {
            env.push(("TOYGRES_BOOTSTRAP", "restore".into()));
            for (_, var, value) in source.sidecar_settings() {
                env.push((var, value));
            }
        }
    }
    let sidecar = &settings.sidecar;
    if let Some(bytes) = sidecar.ready_max_lag_bytes {
        env.push(("TOYGRES_READY_MAX_LAG_BYTES", bytes.to_string()));
    }
    if let Some(size) = &sidecar.max_slot_wal_keep_size {
        env.push(("TOYGRES_MAX_SLOT_WAL_KEEP_SIZE", size.clone()));
    }
    if let Some(secs) = sidecar.isolation_lease_secs {
        env.push(("TOYGRES_ISOLATION_LEASE_SECS", secs.to_string()));
    }
    if let Some(url) = &sidecar.archive_url {
        env.push(("TOYGRES_ARCHIVE_URL", url.clone()));
    }
    if sidecar.store_credentials_secret.is_some() {
        env.push((
            "TOYGRES_STORE_CREDENTIALS_DIR",
            STORE_CREDENTIALS_DIR.into(),
        ));
    }
    if sidecar.backup_encryption_secret.is_some() {
        env.push((
            "TOYGRES_BACKUP_ENCRYPTION_KEY_FILE",
            format!(
                "{BACKUP_KEY_DIR}/{}",
                toygres_common::store_secret_api::ENCRYPTION_KEY_SETTING
            ),
        ));
    }
    if let Some(url) = &sidecar.notify_url {
        env.push(("TOYGRES_NOTIFY_URL", url.clone()));
    }
    if let Some(token) = &member_settings.fence_token {
        env.push(("TOYGRES_FENCE_TOKEN", token.clone()));
    }
    env.into_iter()
        .map(|(name, value)| (name.to_string(), value))
        .collect()
}

fn container_port(name: &str, port: u16) -> ContainerPort {
    ContainerPort {
        name: Some(name.to_string()),
        container_port: i32::from(port),
        protocol: Some("TCP".to_string()),
        ..ContainerPort::default()
    }
}

fn http_probe(path: &str, period: i32, timeout: i32, failures: i32) -> Probe {
    Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.to_string()),
            port: IntOrString::String(API_PORT_NAME.to_string()),
            // The sidecar serves HTTPS only; probes (as the kubelet runs them) skip verification.
            scheme: Some("HTTPS".to_string()),
            ..HTTPGetAction::default()
        }),
        period_seconds: Some(period),
        timeout_seconds: Some(timeout),
        failure_threshold: Some(failures),
        success_threshold: Some(1),
        ..Probe::default()
    }
}

fn volume_mount(name: &str, path: &str, read_only: bool) -> VolumeMount {
    VolumeMount {
        name: name.to_string(),
        mount_path: path.to_string(),
        read_only: read_only.then_some(true),
        ..VolumeMount::default()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::platform::kubernetes::fixtures;
    use crate::platform::kubernetes::labels::{
        APP_COMPONENT_KEY, INSTANCE_KEY, MEMBER_KEY, ROLE_KEY,
    };
    use crate::platform::kubernetes::member_pg_address;

    fn standby(ordinal: u32) -> MemberSettings {
        MemberSettings {
            ordinal,
            bootstrap: Bootstrap::Standby {
                primary: member_pg_address(&fixtures::orders(), "orders-0"),
            },
            zone: None,
            fence_token: None,
        }
    }

    fn primary() -> MemberSettings {
        MemberSettings {
            ordinal: 0,
            bootstrap: Bootstrap::Init,
            zone: Some("zone-a".into()),
            fence_token: None,
        }
    }

    fn pod_spec(set: &StatefulSet) -> &PodSpec {
        set.spec.as_ref().unwrap().template.spec.as_ref().unwrap()
    }

    fn volume_named<'a>(pod: &'a PodSpec, name: &str) -> &'a Volume {
        pod.volumes
            .as_ref()
            .unwrap()
            .iter()
            .find(|v| v.name == name)
            .unwrap_or_else(|| panic!("no volume {name}"))
    }

    fn mount_named<'a>(container: &'a Container, name: &str) -> &'a VolumeMount {
        container
            .volume_mounts
            .as_ref()
            .unwrap()
            .iter()
            .find(|m| m.name == name)
            .unwrap_or_else(|| panic!("no mount {name}"))
    }

    fn env_of(set: &StatefulSet) -> BTreeMap<String, String> {
        pod_spec(set).containers[0]
            .env
            .as_ref()
            .unwrap()
            .iter()
            .map(|e| (e.name.clone(), e.value.clone().unwrap()))
            .collect()
    }

    #[test]
    fn a_member_is_a_one_replica_stateful_set_selecting_its_own_pod_by_instance_and_member() {
        let set = member_stateful_set(&fixtures::orders(), &standby(1), &fixtures::owner());
        assert_eq!(set.metadata.name.as_deref(), Some("orders-1"));
        assert_eq!(set.metadata.namespace.as_deref(), Some("db"));
        assert_eq!(
            set.metadata.owner_references.as_ref().unwrap()[0].name,
            "orders-toygres"
        );
        let spec = set.spec.as_ref().unwrap();
        assert_eq!(spec.replicas, Some(1));
        assert_eq!(spec.service_name.as_deref(), Some("orders-members"));
        let selector = spec.selector.match_labels.as_ref().unwrap();
        assert_eq!(selector[INSTANCE_KEY], "orders");
        assert_eq!(selector[MEMBER_KEY], "orders-1");
        assert!(
            !selector.contains_key(ROLE_KEY),
            "the selector is immutable"
        );
        let pod_labels = spec
            .template
            .metadata
            .as_ref()
            .unwrap()
            .labels
            .as_ref()
            .unwrap();
        for (key, value) in selector {
            assert_eq!(&pod_labels[key], value, "the template matches the selector");
        }
        assert_eq!(pod_labels[APP_COMPONENT_KEY], "member");
        assert_eq!(pod_labels["team"], "payments");
        assert!(!pod_labels.contains_key(ROLE_KEY), "a new pod has no role");
    }

    #[test]
    fn the_data_volume_comes_from_a_claim_template_kept_unless_asked() {
        let mut settings = fixtures::orders();
        let set = member_stateful_set(&settings, &primary(), &fixtures::owner());
        let spec = set.spec.as_ref().unwrap();
        let claim = &spec.volume_claim_templates.as_ref().unwrap()[0];
        assert_eq!(claim.metadata.name.as_deref(), Some(DATA_VOLUME));
        let claim_spec = claim.spec.as_ref().unwrap();
        assert_eq!(claim_spec.storage_class_name.as_deref(), Some("fast"));
        assert_eq!(
            claim_spec
                .resources
                .as_ref()
                .unwrap()
                .requests
                .as_ref()
                .unwrap()["storage"],
            Quantity("10Gi".into())
        );
        let retention = spec
            .persistent_volume_claim_retention_policy
            .as_ref()
            .unwrap();
        assert_eq!(retention.when_deleted.as_deref(), Some("Retain"));
        settings.volume_retention = VolumeRetention::Delete;
        let set = member_stateful_set(&settings, &primary(), &fixtures::owner());
        let retention = set
            .spec
            .unwrap()
            .persistent_volume_claim_retention_policy
            .unwrap();
        assert_eq!(retention.when_deleted.as_deref(), Some("Delete"));
    }

    #[test]
    fn probes_use_the_sidecar_endpoints_and_a_long_bootstrap_is_never_killed() {
        let set = member_stateful_set(&fixtures::orders(), &primary(), &fixtures::owner());
        let container = &pod_spec(&set).containers[0];
        let path = |probe: &Option<Probe>| {
            let get = probe.as_ref().unwrap().http_get.as_ref().unwrap();
            assert_eq!(get.port, IntOrString::String("api".into()));
            assert_eq!(get.scheme.as_deref(), Some("HTTPS"));
            get.path.clone().unwrap()
        };
        assert_eq!(path(&container.startup_probe), "/healthz");
        assert_eq!(path(&container.liveness_probe), "/healthz");
        assert_eq!(path(&container.readiness_probe), "/readyz");
        // The startup probe allows 5 minutes for the sidecar to listen at all; the bootstrap
        // (pg_basebackup) happens behind a /healthz that already answers.
        let startup = container.startup_probe.as_ref().unwrap();
        assert!(startup.period_seconds.unwrap() * startup.failure_threshold.unwrap() >= 300);
        let ports: Vec<_> = container
            .ports
            .as_ref()
            .unwrap()
            .iter()
            .map(|p| (p.name.clone().unwrap(), p.container_port))
            .collect();
        assert_eq!(ports, [("postgres".into(), 5432), ("api".into(), 8008)]);
    }

    #[test]
    fn the_pod_runs_as_postgres_without_privileges() {
        let set = member_stateful_set(&fixtures::orders(), &primary(), &fixtures::owner());
        let pod = pod_spec(&set);
        let pod_security = pod.security_context.as_ref().unwrap();
        assert_eq!(pod_security.run_as_user, Some(999));
        assert_eq!(pod_security.run_as_group, Some(999));
        assert_eq!(pod_security.fs_group, Some(999));
        assert_eq!(pod_security.run_as_non_root, Some(true));
        let security = pod.containers[0].security_context.as_ref().unwrap();
        assert_eq!(security.allow_privilege_escalation, Some(false));
        assert_eq!(security.read_only_root_filesystem, Some(true));
        assert_eq!(
            security.capabilities.as_ref().unwrap().drop.as_deref(),
            Some(&["ALL".to_string()][..])
        );
        assert_eq!(pod.automount_service_account_token, Some(false));
        let resources = pod.containers[0].resources.as_ref().unwrap();
        assert_eq!(
            resources.requests.as_ref().unwrap()["cpu"],
            Quantity("500m".into())
        );
        assert_eq!(
            resources.limits.as_ref().unwrap()["memory"],
            Quantity("1Gi".into())
        );
        assert!(!resources.limits.as_ref().unwrap().contains_key("cpu"));
        // The root filesystem is read-only: these are the writable paths.
        let mounts: Vec<_> = pod.containers[0]
            .volume_mounts
            .as_ref()
            .unwrap()
            .iter()
            .filter(|m| m.read_only != Some(true))
            .map(|m| m.mount_path.as_str())
            .collect();
        assert_eq!(
            mounts,
            [DATA_VOLUME_MOUNT, "/tmp", "/var/run/postgresql", "/dev/shm"]
        );
    }

    #[test]
    fn the_store_secret_is_mounted_read_only_and_named_only_by_its_directory() {
        let plain = member_stateful_set(&fixtures::orders(), &standby(1), &fixtures::owner());
        assert!(!env_of(&plain).contains_key("TOYGRES_STORE_CREDENTIALS_DIR"));
        assert!(pod_spec(&plain)
            .volumes
            .as_ref()
            .unwrap()
            .iter()
            .all(|v| v.name != STORE_CREDENTIALS_VOLUME));

        let mut settings = fixtures::orders();
        settings.sidecar.archive_url = Some("s3://bucket/orders".into());
        settings.sidecar.store_credentials_secret = Some("s3-creds".into());
        let set = member_stateful_set(&settings, &standby(1), &fixtures::owner());
        let pod = pod_spec(&set);
        let volume = volume_named(pod, STORE_CREDENTIALS_VOLUME);
        let secret = volume.secret.as_ref().unwrap();
        assert_eq!(secret.secret_name.as_deref(), Some("s3-creds"));
        assert_eq!(secret.default_mode, Some(0o440));
        let mount = mount_named(&pod.containers[0], STORE_CREDENTIALS_VOLUME);
        assert_eq!(mount.mount_path, STORE_CREDENTIALS_DIR);
        assert_eq!(mount.read_only, Some(true));
        let env = env_of(&set);
        assert_eq!(env["TOYGRES_STORE_CREDENTIALS_DIR"], STORE_CREDENTIALS_DIR);
        assert_eq!(env["TOYGRES_ARCHIVE_URL"], "s3://bucket/orders");
        assert!(!env.contains_key("TOYGRES_BACKUP_ENCRYPTION_KEY_FILE"));

        // The encryption key's secret: mounted read-only, its file named, never its value.
        settings.sidecar.backup_encryption_secret = Some("enc-key".into());
        let set = member_stateful_set(&settings, &standby(1), &fixtures::owner());
        let pod = pod_spec(&set);
        let volume = volume_named(pod, BACKUP_KEY_VOLUME);
        assert_eq!(
            volume.secret.as_ref().unwrap().secret_name.as_deref(),
            Some("enc-key")
        );
        let mount = mount_named(&pod.containers[0], BACKUP_KEY_VOLUME);
        assert_eq!(mount.mount_path, BACKUP_KEY_DIR);
        assert_eq!(mount.read_only, Some(true));
        assert_eq!(
            env_of(&set)["TOYGRES_BACKUP_ENCRYPTION_KEY_FILE"],
            format!("{BACKUP_KEY_DIR}/TOYGRES_BACKUP_ENCRYPTION_KEY")
        );
    }

    #[test]
    fn credentials_are_files_from_the_instance_secret_and_never_values_in_env_or_argv() {
        let set = member_stateful_set(&fixtures::orders(), &standby(2), &fixtures::owner());
        let pod = pod_spec(&set);
        let container = &pod.containers[0];
        assert_eq!(
            container.command.as_deref(),
            Some(&["toygres-sidecar".to_string(), "run".to_string()][..])
        );
        assert!(container.args.is_none());
        for var in container.env.as_ref().unwrap() {
            assert!(
                var.value_from.is_none(),
                "{} comes from elsewhere",
                var.name
            );
            assert!(!var.name.contains("PASSWORD") || var.name.ends_with("_FILE"));
            assert!(!var.name.contains("TOKEN") || var.name.ends_with("_FILE"));
        }
        let env = env_of(&set);
        assert_eq!(
            env["TOYGRES_TOKEN_FILE"],
            "/etc/toygres/secrets/sidecar-token"
        );
        assert_eq!(
            env["TOYGRES_SUPERUSER_PASSWORD_FILE"],
            "/etc/toygres/secrets/superuser-password"
        );
        assert_eq!(
            env["TOYGRES_REPLICATION_PASSWORD_FILE"],
            "/etc/toygres/secrets/replication-password"
        );
        let volume = volume_named(pod, CREDENTIALS_VOLUME);
        let secret = volume.secret.as_ref().unwrap();
        assert_eq!(secret.secret_name.as_deref(), Some("orders-credentials"));
        assert_eq!(secret.default_mode, Some(0o440));
        let keys: Vec<_> = secret
            .items
            .as_ref()
            .unwrap()
            .iter()
            .map(|i| i.key.as_str())
            .collect();
        assert_eq!(
            keys,
            [
                "superuser-password",
                "replication-password",
                "sidecar-token",
                "app-password"
            ]
        );
        let mount = mount_named(container, CREDENTIALS_VOLUME);
        assert_eq!(mount.mount_path, CREDENTIALS_DIR);
        assert_eq!(mount.read_only, Some(true));
    }

    #[test]
    fn a_standby_bootstraps_from_the_primary_by_its_stable_name() {
        let env = env_of(&member_stateful_set(
            &fixtures::orders(),
            &standby(1),
            &fixtures::owner(),
        ));
        assert_eq!(env["TOYGRES_MEMBER_NAME"], "orders-1");
        assert_eq!(env["TOYGRES_INSTANCE_NAME"], "orders");
        assert_eq!(env["TOYGRES_BOOTSTRAP"], "standby");
        assert_eq!(
            env["TOYGRES_PRIMARY"],
            "orders-0-0.orders-members.db.svc:5432"
        );
        assert_eq!(env["TOYGRES_PG_LISTEN"], "*");
        assert_eq!(env["TOYGRES_API_ADDR"], "0.0.0.0:8008");
        let env = env_of(&member_stateful_set(
            &fixtures::orders(),
            &primary(),
            &fixtures::owner(),
        ));
        assert_eq!(env["TOYGRES_BOOTSTRAP"], "init");
        assert!(!env.contains_key("TOYGRES_PRIMARY"));
    }

    #[test]
    fn a_killed_member_starts_again_with_its_fence_token() {
        let env = env_of(&member_stateful_set(
            &fixtures::orders(),
            &primary(),
            &fixtures::owner(),
        ));
        assert!(!env.contains_key("TOYGRES_FENCE_TOKEN"));
        let mut killed = primary();
        killed.fence_token = Some("1765000000000".into());
        let env = env_of(&member_stateful_set(
            &fixtures::orders(),
            &killed,
            &fixtures::owner(),
        ));
        assert_eq!(env["TOYGRES_FENCE_TOKEN"], "1765000000000");
    }

    #[test]
    fn members_avoid_each_other_preferably_or_strictly_and_spread_over_zones() {
        let mut settings = fixtures::orders();
        let set = member_stateful_set(&settings, &standby(1), &fixtures::owner());
        let pod = pod_spec(&set);
        let anti = pod
            .affinity
            .as_ref()
            .unwrap()
            .pod_anti_affinity
            .as_ref()
            .unwrap();
        assert!(anti
            .required_during_scheduling_ignored_during_execution
            .is_none());
        let preferred = &anti
            .preferred_during_scheduling_ignored_during_execution
            .as_ref()
            .unwrap()[0];
        assert_eq!(preferred.pod_affinity_term.topology_key, HOSTNAME_LABEL);
        assert_eq!(
            preferred
                .pod_affinity_term
                .label_selector
                .as_ref()
                .unwrap()
                .match_labels
                .as_ref()
                .unwrap()[INSTANCE_KEY],
            "orders"
        );
        let spread = &pod.topology_spread_constraints.as_ref().unwrap()[0];
        assert_eq!(spread.topology_key, "topology.kubernetes.io/zone");
        assert_eq!(spread.max_skew, 1);
        assert!(pod.node_selector.is_none());

        settings.anti_affinity = AntiAffinity::Required;
        let set = member_stateful_set(&settings, &primary(), &fixtures::owner());
        let pod = pod_spec(&set);
        let anti = pod
            .affinity
            .as_ref()
            .unwrap()
            .pod_anti_affinity
            .as_ref()
            .unwrap();
        assert!(anti
            .preferred_during_scheduling_ignored_during_execution
            .is_none());
        assert_eq!(
            anti.required_during_scheduling_ignored_during_execution
                .as_ref()
                .unwrap()[0]
                .topology_key,
            HOSTNAME_LABEL
        );
        assert_eq!(pod.node_selector.as_ref().unwrap()[ZONE_LABEL], "zone-a");
    }

    /// `KEY=VALUE` pairs of the Dockerfile's `ENV` instructions (continuations joined, quotes
    /// removed) and its `ENTRYPOINT`.
    fn dockerfile_env_and_entrypoint(dockerfile: &str) -> (BTreeMap<String, String>, Vec<String>) {
        let joined = dockerfile.replace("\\\n", " ");
        let mut env = BTreeMap::new();
        let mut entrypoint = Vec::new();
        for line in joined.lines() {
            if let Some(pairs) = line.strip_prefix("ENV ") {
                for pair in pairs.split_whitespace() {
                    let (key, value) = pair.split_once('=').unwrap();
                    env.insert(key.to_string(), value.trim_matches('"').to_string());
                }
            } else if let Some(array) = line.strip_prefix("ENTRYPOINT ") {
                entrypoint = serde_json::from_str(array).unwrap();
            }
        }
        (env, entrypoint)
    }

    #[test]
    fn the_member_reads_its_own_tls_secret_as_files_and_never_the_ca_key() {
        let spec = standby(2);
        let set = member_stateful_set(&fixtures::orders(), &spec, &fixtures::owner());
        let pod = pod_spec(&set);
        assert_eq!(env_of(&set)["TOYGRES_TLS_DIR"], TLS_DIR);
        let volume = volume_named(pod, TLS_VOLUME);
        let secret = volume.secret.as_ref().unwrap();
        let member = set.metadata.name.as_deref().unwrap();
        assert_eq!(
            secret.secret_name.as_deref(),
            Some(format!("{member}-tls").as_str())
        );
        assert_eq!(secret.default_mode, Some(0o440));
        let mount = mount_named(&pod.containers[0], TLS_VOLUME);
        assert_eq!(
            (mount.mount_path.as_str(), mount.read_only),
            (TLS_DIR, Some(true))
        );
        // No volume of the pod comes from the instance's CA Secret.
        for volume in pod.volumes.as_ref().unwrap() {
            let name = volume
                .secret
                .as_ref()
                .and_then(|s| s.secret_name.as_deref());
            assert_ne!(name, Some("orders-ca"));
        }
    }

    #[test]
    fn the_container_runs_what_the_sidecar_image_runs() {
        let dockerfile = include_str!("../../../../images/sidecar/Dockerfile");
        let (image_env, entrypoint) = dockerfile_env_and_entrypoint(dockerfile);
        assert_eq!(entrypoint, SIDECAR_COMMAND);
        let set = member_stateful_set(&fixtures::orders(), &primary(), &fixtures::owner());
        let env = env_of(&set);
        // PATH only helps a shell find Postgres's programs; the sidecar uses TOYGRES_PG_BIN_DIR.
        for (key, value) in image_env.iter().filter(|(key, _)| key.as_str() != "PATH") {
            assert_eq!(env.get(key), Some(value), "{key} differs from the image's");
        }
        for key in [
            "TOYGRES_PG_LISTEN",
            "TOYGRES_API_ADDR",
            "TOYGRES_TOKEN_FILE",
            "TOYGRES_SUPERUSER_PASSWORD_FILE",
            "TOYGRES_REPLICATION_PASSWORD_FILE",
        ] {
            assert!(image_env.contains_key(key), "the image does not set {key}");
        }
        assert!(image_env["TOYGRES_DATA_DIR"].starts_with(DATA_VOLUME_MOUNT));
        assert!(dockerfile.contains("USER 999:999"));
    }
}
