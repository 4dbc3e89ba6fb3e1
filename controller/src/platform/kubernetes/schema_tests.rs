//! Every object the builders make, serialized as the client would send it and validated
//! strictly (unknown fields are errors) against the Kubernetes 1.36 schema by the
//! `kubernetes-validate` that `scripts/k8s/build.sh` builds. The test fails, saying how to
//! build it, when the tool is missing.

#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::Command;

use super::credentials::{instance_secret, tests::credentials};
use super::disruption::instance_disruption_budget;
use super::labels::RoleLabel;
use super::member::member_stateful_set;
use super::root::instance_root_config_map;
use super::services::{members_service, ro_service, rw_service};
use super::{
    fixtures, member_pg_address, AntiAffinity, MemberSettings, SidecarSettings, VolumeRetention,
};
use crate::platform::Bootstrap;

/// The Kubernetes version the test control plane runs (`scripts/k8s/go.mod`).
const KUBERNETES_VERSION: &str = "1.36.5";

/// The `kubernetes-validate` built by `scripts/k8s/build.sh`.
fn validator() -> PathBuf {
    validator_in_cache(None)
}

/// The `kubernetes-validate` in the tools cache `cache` (default: build.sh's own default,
/// `$TOYGRES_K8S_CACHE` or `~/.cache/toygres-k8s`); panics saying how to build it when absent.
fn validator_in_cache(cache: Option<&Path>) -> PathBuf {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut command = Command::new("bash");
    command
        .arg(repo.join("scripts/k8s/build.sh"))
        .arg("--print-bin-dir");
    if let Some(cache) = cache {
        command.env("TOYGRES_K8S_CACHE", cache);
    }
    let output = command
        .output()
        .expect("run bash scripts/k8s/build.sh --print-bin-dir");
    let bin_dir = String::from_utf8_lossy(&output.stdout).trim().to_string();
    let validator = Path::new(&bin_dir).join("kubernetes-validate");
    assert!(
        output.status.success() && validator.is_file(),
        "kubernetes-validate is not built (looked in {bin_dir:?}); run `bash scripts/k8s/build.sh` \
         once on this machine, then run the tests again"
    );
    validator
}

/// Validates each object (as JSON) strictly; returns the validator's output on failure.
fn validate(objects: &[(String, serde_json::Value)]) -> Result<(), String> {
    let dir = tempfile::tempdir().unwrap();
    let mut files = Vec::new();
    for (i, (name, object)) in objects.iter().enumerate() {
        let file = dir.path().join(format!("{i:02}-{name}.json"));
        std::fs::write(&file, serde_json::to_vec_pretty(object).unwrap()).unwrap();
        files.push(file);
    }
    let output = Command::new(validator())
        .args(["--strict", "--quiet", "-k", KUBERNETES_VERSION])
        .args(&files)
        .output()
        .expect("run kubernetes-validate");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    // Without a schema for a kind, the validator only warns: that must fail too.
    if output.status.success() && !text.contains("WARN") && !text.contains("ERROR") {
        Ok(())
    } else {
        Err(text)
    }
}

/// Every object of a three-member instance, with every optional setting used somewhere.
fn every_object() -> Vec<(String, serde_json::Value)> {
    let mut settings = fixtures::orders();
    let owner = fixtures::owner();
    let mut objects = vec![
        (
            "root".to_string(),
            json(&instance_root_config_map(&settings)),
        ),
        (
            "secret".to_string(),
            json(&instance_secret(&settings, &credentials(), &owner).into_secret()),
        ),
        ("rw".to_string(), json(&rw_service(&settings, &owner))),
        (
            "ro".to_string(),
            json(&ro_service(&settings, &owner, RoleLabel::Standby)),
        ),
        (
            "members".to_string(),
            json(&members_service(&settings, &owner)),
        ),
        (
            "pdb".to_string(),
            json(&instance_disruption_budget(&settings, &owner)),
        ),
    ];
    let primary = MemberSettings {
        ordinal: 0,
        bootstrap: Bootstrap::Init,
        zone: Some("zone-a".into()),
        fence_token: None,
    };
    objects.push((
        "member-0".into(),
        json(&member_stateful_set(&settings, &primary, &owner)),
    ));
    settings.anti_affinity = AntiAffinity::Required;
    settings.volume_retention = VolumeRetention::Delete;
    settings.storage.class = None;
    settings.sidecar = SidecarSettings {
        ready_max_lag_bytes: Some(1 << 20),
        max_slot_wal_keep_size: Some("1GB".into()),
        isolation_lease_secs: Some(30),
        archive_url: Some("s3://bucket/prefix".into()),
        wal_compression: Some("zstd".into()),
        notify_url: Some("https://toygres.db.svc:8080".into()),
        notify_ca_config_map: Some("toygres-ca".into()),
        store_credentials_secret: Some("s3-creds".into()),
        backup_encryption_secret: Some("enc-key".into()),
    };
    for ordinal in [1, 2] {
        let standby = MemberSettings {
            ordinal,
            bootstrap: Bootstrap::Standby {
                primary: member_pg_address(&settings, "orders-0"),
            },
            zone: None,
            // A member started again after it was killed carries a fence token.
            fence_token: (ordinal == 2).then(|| "1765000000000".to_string()),
        };
        objects.push((
            format!("member-{ordinal}"),
            json(&member_stateful_set(&settings, &standby, &owner)),
        ));
    }
    objects
}

/// An object as the client would send it.
fn json<T: serde::Serialize>(object: &T) -> serde_json::Value {
    serde_json::to_value(object).unwrap()
}

#[test]
fn every_built_object_validates_strictly_against_kubernetes_1_36() {
    let objects = every_object();
    let kinds: Vec<_> = objects
        .iter()
        .map(|(_, o)| o["kind"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        kinds,
        [
            "ConfigMap",
            "Secret",
            "Service",
            "Service",
            "Service",
            "PodDisruptionBudget",
            "StatefulSet",
            "StatefulSet",
            "StatefulSet"
        ]
    );
    if let Err(output) = validate(&objects) {
        panic!("the built objects do not validate:\n{output}");
    }
}

#[test]
fn the_validation_catches_an_unknown_field() {
    let mut objects = every_object();
    let (_, set) = objects
        .iter_mut()
        .find(|(name, _)| name == "member-1")
        .unwrap();
    set["spec"]["template"]["spec"]["containers"][0]["bogusField"] = serde_json::json!(true);
    let output = validate(&objects).expect_err("an unknown field must fail strict validation");
    assert!(output.contains("bogusField"), "{output}");
}

#[test]
#[should_panic(expected = "kubernetes-validate is not built")]
fn a_missing_validator_fails_the_test_and_says_how_to_build_it() {
    let empty_cache = tempfile::tempdir().unwrap();
    validator_in_cache(Some(empty_cache.path()));
}
