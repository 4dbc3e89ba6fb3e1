//! A tiny dynamic provisioner for the harness's default StorageClass `toygres-local`
//! (WaitForFirstConsumer): for each claim the PV controller hands to it (annotation
//! `volume.kubernetes.io/storage-provisioner`) it creates a PersistentVolume backed by a host
//! directory, pre-bound to the claim; kube-controller-manager's PV binder completes the binding,
//! and the scheduler (waiting in PreBind) then binds the pod. Released volumes are deleted with
//! their directory (reclaim policy Delete).

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::Context;
use futures::StreamExt;
use k8s_openapi::api::core::v1::{
    HostPathVolumeSource, ObjectReference, PersistentVolume, PersistentVolumeClaim,
    PersistentVolumeSpec,
};
use k8s_openapi::api::storage::v1::StorageClass;
use kube::api::{DeleteParams, ObjectMeta, PostParams};
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Api, Client};

/// The default StorageClass's name.
pub const STORAGE_CLASS: &str = "toygres-local";
/// The provisioner name in that class.
pub const PROVISIONER: &str = "toygres.io/process-node";

/// Creates the default StorageClass (idempotent).
pub async fn ensure_storage_class(client: &Client) -> anyhow::Result<()> {
    let classes: Api<StorageClass> = Api::all(client.clone());
    let class = StorageClass {
        metadata: ObjectMeta {
            name: Some(STORAGE_CLASS.into()),
            annotations: Some(BTreeMap::from([(
                "storageclass.kubernetes.io/is-default-class".to_string(),
                "true".to_string(),
            )])),
            ..ObjectMeta::default()
        },
        provisioner: PROVISIONER.into(),
        reclaim_policy: Some("Delete".into()),
        volume_binding_mode: Some("WaitForFirstConsumer".into()),
        ..StorageClass::default()
    };
    match classes.create(&PostParams::default(), &class).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 409 => Ok(()),
        Err(e) => Err(e).context("create the storage class"),
    }
}

fn wants_volume(pvc: &PersistentVolumeClaim) -> bool {
    let annotations = pvc.metadata.annotations.clone().unwrap_or_default();
    let ours = [
        "volume.kubernetes.io/storage-provisioner",
        "volume.beta.kubernetes.io/storage-provisioner",
    ]
    .iter()
    .any(|a| annotations.get(*a).map(String::as_str) == Some(PROVISIONER));
    let unbound = pvc
        .spec
        .as_ref()
        .and_then(|s| s.volume_name.as_deref())
        .is_none_or(str::is_empty);
    ours && unbound && pvc.metadata.deletion_timestamp.is_none()
}

/// The PV for `pvc`, backed by `dir`.
pub fn volume_for(pvc: &PersistentVolumeClaim, dir: PathBuf) -> PersistentVolume {
    let spec = pvc.spec.clone().unwrap_or_default();
    let storage = spec
        .resources
        .as_ref()
        .and_then(|r| r.requests.as_ref())
        .and_then(|r| r.get("storage").cloned())
        .unwrap_or(k8s_openapi::apimachinery::pkg::api::resource::Quantity(
            "1Gi".into(),
        ));
    PersistentVolume {
        metadata: ObjectMeta {
            name: Some(format!(
                "pvc-{}",
                pvc.metadata.uid.clone().unwrap_or_default()
            )),
            annotations: Some(BTreeMap::from([(
                "pv.kubernetes.io/provisioned-by".to_string(),
                PROVISIONER.to_string(),
            )])),
            ..ObjectMeta::default()
        },
        spec: Some(PersistentVolumeSpec {
            capacity: Some(BTreeMap::from([("storage".to_string(), storage)])),
            access_modes: spec.access_modes.clone(),
            persistent_volume_reclaim_policy: Some("Delete".into()),
            storage_class_name: Some(STORAGE_CLASS.into()),
            volume_mode: spec.volume_mode.clone(),
            host_path: Some(HostPathVolumeSource {
                path: dir.display().to_string(),
                type_: Some("DirectoryOrCreate".into()),
            }),
            claim_ref: Some(ObjectReference {
                api_version: Some("v1".into()),
                kind: Some("PersistentVolumeClaim".into()),
                namespace: pvc.metadata.namespace.clone(),
                name: pvc.metadata.name.clone(),
                uid: pvc.metadata.uid.clone(),
                ..ObjectReference::default()
            }),
            ..PersistentVolumeSpec::default()
        }),
        status: None,
    }
}

/// Provisions claims until aborted.
pub async fn run_claims(client: Client, volumes_dir: PathBuf) {
    let claims: Api<PersistentVolumeClaim> = Api::all(client.clone());
    let volumes: Api<PersistentVolume> = Api::all(client.clone());
    let mut events = watcher(claims, watcher::Config::default())
        .default_backoff()
        .boxed();
    while let Some(event) = events.next().await {
        let pvc = match event {
            Ok(watcher::Event::Apply(p) | watcher::Event::InitApply(p)) => p,
            _ => continue,
        };
        if !wants_volume(&pvc) {
            continue;
        }
        let dir = volumes_dir.join(format!(
            "pvc-{}",
            pvc.metadata.uid.clone().unwrap_or_default()
        ));
        if let Err(e) = std::fs::create_dir_all(&dir) {
            tracing::warn!("create {}: {e}", dir.display());
            continue;
        }
        match volumes
            .create(&PostParams::default(), &volume_for(&pvc, dir))
            .await
        {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 409 => {}
            Err(e) => tracing::warn!("create a persistent volume: {e}"),
        }
    }
}

/// Deletes released volumes of ours (and their directories) until aborted.
pub async fn run_reclaim(client: Client) {
    let volumes: Api<PersistentVolume> = Api::all(client);
    let mut events = watcher(volumes.clone(), watcher::Config::default())
        .default_backoff()
        .boxed();
    while let Some(event) = events.next().await {
        let pv = match event {
            Ok(watcher::Event::Apply(p) | watcher::Event::InitApply(p)) => p,
            _ => continue,
        };
        let ours = pv
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get("pv.kubernetes.io/provisioned-by"))
            .map(String::as_str)
            == Some(PROVISIONER);
        let released = pv.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Released");
        if !(ours && released) {
            continue;
        }
        if let Some(path) = pv
            .spec
            .as_ref()
            .and_then(|s| s.host_path.as_ref())
            .map(|h| h.path.clone())
        {
            let _ = std::fs::remove_dir_all(path);
        }
        let name = pv.metadata.name.clone().unwrap_or_default();
        if let Err(e) = volumes.delete(&name, &DeleteParams::default()).await {
            tracing::warn!("delete released volume {name}: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{PersistentVolumeClaimSpec, VolumeResourceRequirements};
    use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

    fn claim(annotation: Option<&str>, volume: Option<&str>) -> PersistentVolumeClaim {
        PersistentVolumeClaim {
            metadata: ObjectMeta {
                name: Some("data-web-0".into()),
                namespace: Some("ns".into()),
                uid: Some("u1".into()),
                annotations: annotation.map(|a| {
                    BTreeMap::from([(
                        "volume.kubernetes.io/storage-provisioner".to_string(),
                        a.to_string(),
                    )])
                }),
                ..ObjectMeta::default()
            },
            spec: Some(PersistentVolumeClaimSpec {
                access_modes: Some(vec!["ReadWriteOnce".into()]),
                volume_name: volume.map(String::from),
                resources: Some(VolumeResourceRequirements {
                    requests: Some(BTreeMap::from([(
                        "storage".to_string(),
                        Quantity("2Gi".into()),
                    )])),
                    ..VolumeResourceRequirements::default()
                }),
                ..PersistentVolumeClaimSpec::default()
            }),
            status: None,
        }
    }

    #[test]
    fn only_unbound_claims_handed_to_us_get_a_volume() {
        assert!(wants_volume(&claim(Some(PROVISIONER), None)));
        assert!(!wants_volume(&claim(Some("other.io/csi"), None)));
        assert!(!wants_volume(&claim(None, None)));
        assert!(!wants_volume(&claim(Some(PROVISIONER), Some("pvc-u1"))));
    }

    #[test]
    fn the_volume_is_prebound_to_its_claim_with_the_requested_size() {
        let pv = volume_for(&claim(Some(PROVISIONER), None), "/v/pvc-u1".into());
        let spec = pv.spec.expect("spec");
        let claim_ref = spec.claim_ref.expect("claim ref");
        assert_eq!(pv.metadata.name.as_deref(), Some("pvc-u1"));
        assert_eq!(claim_ref.uid.as_deref(), Some("u1"));
        assert_eq!(claim_ref.name.as_deref(), Some("data-web-0"));
        assert_eq!(spec.capacity.expect("capacity")["storage"].0, "2Gi");
        assert_eq!(spec.host_path.expect("host path").path, "/v/pvc-u1");
        assert_eq!(spec.storage_class_name.as_deref(), Some(STORAGE_CLASS));
    }
}
