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
    Affinity, Capabilities, ConfigMapVolumeSource, Container, ContainerPort, EmptyDirVolumeSource,
    EnvVar, HTTPGetAction, KeyToPath, PersistentVolumeClaim, PersistentVolumeClaimSpec,
    PodAffinityTerm, PodAntiAffinity, PodSecurityContext, PodSpec, PodTemplateSpec, Probe,
    ResourceRequirements, SeccompProfile, SecretVolumeSource, SecurityContext,
    TopologySpreadConstraint, Volume, VolumeMount, VolumeResourceRequirements,
    WeightedPodAffinityTerm,
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
/// Where the CA that verifies the controller's API is mounted (from a ConfigMap).
pub const NOTIFY_CA_DIR: &str = "/etc/toygres/notify-ca";
/// Its volume's name.
pub const NOTIFY_CA_VOLUME: &str = "notify-ca";
/// Where a member mounts its instance's backup key ring Secret (a key ring directory).
pub const BACKUP_KEYRING_DIR: &str = "/etc/toygres/backup-keyring";
/// The volume of the key ring's Secret.
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

/// The name of the claim template (and pod volume) holding `set`'s data: [`DATA_VOLUME`] until
/// an in-place restore gives the member a fresh one (`data-1`, `data-2`, …; the claim template
/// of a StatefulSet cannot change, so the StatefulSet is made again with the new name).
pub fn data_volume_of(set: &StatefulSet) -> String {
    set.spec
        .as_ref()
        .map_or_else(|| DATA_VOLUME.to_string(), data_volume_of_spec)
}

/// The annotation on a member's StatefulSet naming the claim template whose PVC holds the data
/// an in-place restore set aside (`data` for `data-<member>-0`).
pub const DATA_ASIDE_ANNOTATION: &str = "toygres.io/data-set-aside";

/// The claim template whose PVC holds the data set aside, if any.
pub fn volume_set_aside(set: &StatefulSet) -> Option<String> {
    set.metadata
        .annotations
        .as_ref()?
        .get(DATA_ASIDE_ANNOTATION)
        .filter(|v| !v.is_empty())
        .cloned()
}

/// The data volume after `current`: `data` → `data-1` → `data-2` …
pub fn next_data_volume(current: &str) -> String {
    let n = current
        .strip_prefix(DATA_VOLUME)
        .and_then(|rest| rest.strip_prefix('-'))
        .and_then(|n| n.parse::<u32>().ok())
        .unwrap_or(0);
    format!("{DATA_VOLUME}-{}", n + 1)
}

/// Renames `set`'s data claim template and the sidecar's mount of it to `volume` (the PVC is
/// then `<volume>-<member>-0`).
pub fn use_data_volume(set: &mut StatefulSet, volume: &str) {
    let Some(spec) = set.spec.as_mut() else {
        return;
    };
    let old = data_volume_of_spec(spec);
    for claim in spec.volume_claim_templates.iter_mut().flatten() {
        if claim.metadata.name.as_deref() == Some(old.as_str()) {
            claim.metadata.name = Some(volume.to_string());
        }
    }
    let containers = spec
        .template
        .spec
        .iter_mut()
        .flat_map(|p| &mut p.containers);
    for mount in containers.flat_map(|c| c.volume_mounts.iter_mut().flatten()) {
        if mount.name == old {
            mount.name = volume.to_string();
        }
    }
}

fn data_volume_of_spec(spec: &StatefulSetSpec) -> String {
    spec.volume_claim_templates
        .as_ref()
        .and_then(|t| t.first())
        .and_then(|c| c.metadata.name.clone())
        .unwrap_or_else(|| DATA_VOLUME.to_string())
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
            .chain(settings.sidecar.backup_encryption_secret.as_ref().map(|_| {
                let ring = super::backup_keyring_secret_name(&settings.instance);
                secret_volume(BACKUP_KEY_VOLUME, &ring)
            }))
            .chain(notify_ca_config_map(settings).map(|name| Volume {
                name: NOTIFY_CA_VOLUME.to_string(),
                config_map: Some(ConfigMapVolumeSource {
                    name: name.to_string(),
                    items: Some(vec![KeyToPath {
                        key: "ca.crt".to_string(),
                        path: "ca.crt".to_string(),
                        mode: None,
                    }]),
                    optional: Some(false),
                    ..ConfigMapVolumeSource::default()
                }),
                ..Volume::default()
            }))
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
                notify_ca_config_map(settings)
                    .map(|_| volume_mount(NOTIFY_CA_VOLUME, NOTIFY_CA_DIR, true)),
            )
            .chain(
                settings
                    .sidecar
                    .backup_encryption_secret
                    .as_ref()
                    .map(|_| volume_mount(BACKUP_KEY_VOLUME, BACKUP_KEYRING_DIR, true)),
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
    if let Some(compression) = &sidecar.wal_compression {
        env.push(("TOYGRES_WAL_COMPRESSION", compression.clone()));
    }
    if sidecar.store_credentials_secret.is_some() {
        env.push((
            "TOYGRES_STORE_CREDENTIALS_DIR",
            STORE_CREDENTIALS_DIR.into(),
        ));
    }
    if sidecar.backup_encryption_secret.is_some() {
        env.push((
            "TOYGRES_BACKUP_ENCRYPTION_KEYRING",
            BACKUP_KEYRING_DIR.to_string(),
        ));
    }
    if let Some(url) = &sidecar.notify_url {
        env.push(("TOYGRES_NOTIFY_URL", url.clone()));
    }
    if notify_ca_config_map(settings).is_some() {
        env.push(("TOYGRES_NOTIFY_CA_FILE", format!("{NOTIFY_CA_DIR}/ca.crt")));
    }
    if let Some(token) = &member_settings.fence_token {
        env.push(("TOYGRES_FENCE_TOKEN", token.clone()));
    }
    env.into_iter()
        .map(|(name, value)| (name.to_string(), value))
        .collect()
}

/// The ConfigMap holding the controller's CA, when members report to it over HTTPS.
fn notify_ca_config_map(settings: &InstanceSettings) -> Option<&str> {
    let sidecar = &settings.sidecar;
    let https = sidecar.notify_url.as_deref()?.starts_with("https://");
    sidecar.notify_ca_config_map.as_deref().filter(|_| https)
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
mod tests;
