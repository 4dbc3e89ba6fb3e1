#![allow(clippy::unwrap_used)]

use super::*;
use crate::platform::kubernetes::fixtures;
use crate::platform::kubernetes::labels::{APP_COMPONENT_KEY, INSTANCE_KEY, MEMBER_KEY, ROLE_KEY};
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

    // The instance's key ring Secret (made from the key's store secret): mounted read-only,
    // its directory named, never a key's value.
    settings.sidecar.backup_encryption_secret = Some("enc-key".into());
    let set = member_stateful_set(&settings, &standby(1), &fixtures::owner());
    let pod = pod_spec(&set);
    let volume = volume_named(pod, BACKUP_KEY_VOLUME);
    assert_eq!(
        volume.secret.as_ref().unwrap().secret_name.as_deref(),
        Some("orders-backup-keyring")
    );
    let mount = mount_named(&pod.containers[0], BACKUP_KEY_VOLUME);
    assert_eq!(mount.mount_path, BACKUP_KEYRING_DIR);
    assert_eq!(mount.read_only, Some(true));
    let env = env_of(&set);
    assert_eq!(env["TOYGRES_BACKUP_ENCRYPTION_KEYRING"], BACKUP_KEYRING_DIR);
    assert!(!env.contains_key("TOYGRES_BACKUP_ENCRYPTION_KEY_FILE"));
}

#[test]
fn members_verify_an_https_controller_with_the_ca_from_its_config_map() {
    let mut settings = fixtures::orders();
    settings.sidecar.notify_url = Some("https://toygres.db.svc:7700".into());
    settings.sidecar.notify_ca_config_map = Some("toygres-ca".into());
    let set = member_stateful_set(&settings, &standby(1), &fixtures::owner());
    let pod = pod_spec(&set);
    let config_map = volume_named(pod, NOTIFY_CA_VOLUME)
        .config_map
        .as_ref()
        .unwrap();
    assert_eq!(config_map.name, "toygres-ca");
    let items = config_map.items.as_ref().unwrap();
    assert_eq!((items[0].key.as_str(), items.len()), ("ca.crt", 1));
    let mount = mount_named(&pod.containers[0], NOTIFY_CA_VOLUME);
    assert_eq!(
        (mount.mount_path.as_str(), mount.read_only),
        (NOTIFY_CA_DIR, Some(true))
    );
    let env = env_of(&set);
    assert_eq!(env["TOYGRES_NOTIFY_URL"], "https://toygres.db.svc:7700");
    assert_eq!(
        env["TOYGRES_NOTIFY_CA_FILE"],
        format!("{NOTIFY_CA_DIR}/ca.crt")
    );

    // A plain-HTTP controller needs no CA: nothing is mounted.
    settings.sidecar.notify_url = Some("http://toygres.db.svc:7700".into());
    let set = member_stateful_set(&settings, &standby(1), &fixtures::owner());
    let pod = pod_spec(&set);
    let volumes = pod.volumes.as_ref().unwrap();
    assert!(volumes.iter().all(|v| v.name != NOTIFY_CA_VOLUME));
    assert!(!env_of(&set).contains_key("TOYGRES_NOTIFY_CA_FILE"));
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
    let dockerfile = include_str!("../../../../../images/sidecar/Dockerfile");
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

#[test]
fn an_in_place_restore_gives_the_member_a_new_data_volume_and_mount() {
    assert_eq!(next_data_volume(DATA_VOLUME), "data-1");
    assert_eq!(next_data_volume("data-1"), "data-2");
    assert_eq!(next_data_volume("data-41"), "data-42");
    let mut set = member_stateful_set(&fixtures::orders(), &primary(), &fixtures::owner());
    assert_eq!(data_volume_of(&set), DATA_VOLUME);
    use_data_volume(&mut set, "data-1");
    assert_eq!(data_volume_of(&set), "data-1");
    let mount = mount_named(&pod_spec(&set).containers[0], "data-1");
    assert_eq!(mount.mount_path, DATA_VOLUME_MOUNT);
    assert!(
        pod_spec(&set).containers[0]
            .volume_mounts
            .as_ref()
            .unwrap()
            .iter()
            .all(|m| m.name != DATA_VOLUME),
        "the old volume is still mounted"
    );
    use_data_volume(&mut set, DATA_VOLUME);
    assert_eq!(data_volume_of(&set), DATA_VOLUME);
    assert_eq!(
        mount_named(&pod_spec(&set).containers[0], DATA_VOLUME).mount_path,
        DATA_VOLUME_MOUNT
    );
}
