//! The instance's root object and the owner reference to it.
//!
//! The root is a ConfigMap `<instance>-toygres` holding the instance's settings (no credential).
//! It is created first; every other object of the instance names it as its controlling owner,
//! so deleting the root lets the garbage collector delete the StatefulSets (and through them the
//! pods, and the PVCs when [`super::VolumeRetention::Delete`]), the Services, the Secret and the
//! PodDisruptionBudget. A ConfigMap rather than the Secret: the root must exist before the
//! objects pointing at it, carries what `kubectl get cm <instance>-toygres -o yaml` should show
//! an operator, and may be read by people who must not read passwords.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};

use super::labels::{instance_labels, Component};
use super::{root_config_map_name, InstanceSettings};

/// The key of the root ConfigMap holding [`InstanceSettings`] as JSON.
pub const SETTINGS_KEY: &str = "settings.json";

/// The root ConfigMap of the instance, with its settings as JSON under [`SETTINGS_KEY`].
pub fn instance_root_config_map(settings: &InstanceSettings) -> ConfigMap {
    // InstanceSettings holds strings, numbers and maps only: serializing it cannot fail.
    let settings_json = serde_json::to_string_pretty(settings).unwrap_or_default();
    ConfigMap {
        metadata: ObjectMeta {
            name: Some(root_config_map_name(&settings.instance)),
            namespace: Some(settings.namespace.clone()),
            labels: Some(instance_labels(
                &settings.instance,
                Component::Instance,
                &settings.extra_labels,
            )),
            ..ObjectMeta::default()
        },
        data: Some(BTreeMap::from([(SETTINGS_KEY.to_string(), settings_json)])),
        ..ConfigMap::default()
    }
}

/// The owner reference every other object of `instance` carries: its root ConfigMap, whose
/// `uid` the API server assigned when the root was created. `controller: true` marks the root
/// as the managing owner; `blockOwnerDeletion` is left unset, so a plain (background) delete of
/// the root needs no extra permission on it.
pub fn instance_owner_reference(instance: &str, root_uid: &str) -> OwnerReference {
    OwnerReference {
        api_version: "v1".to_string(),
        kind: "ConfigMap".to_string(),
        name: root_config_map_name(instance),
        uid: root_uid.to_string(),
        controller: Some(true),
        block_owner_deletion: None,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::platform::kubernetes::fixtures;
    use crate::platform::kubernetes::labels::{APP_COMPONENT_KEY, INSTANCE_KEY};

    #[test]
    fn the_root_carries_the_settings_and_the_instance_labels() {
        let settings = fixtures::orders();
        let root = instance_root_config_map(&settings);
        assert_eq!(root.metadata.name.as_deref(), Some("orders-toygres"));
        assert_eq!(root.metadata.namespace.as_deref(), Some("db"));
        let labels = root.metadata.labels.as_ref().unwrap();
        assert_eq!(labels[INSTANCE_KEY], "orders");
        assert_eq!(labels[APP_COMPONENT_KEY], "instance");
        assert!(root.metadata.owner_references.is_none());
        let stored: InstanceSettings =
            serde_json::from_str(&root.data.as_ref().unwrap()[SETTINGS_KEY]).unwrap();
        assert_eq!(stored, settings);
    }

    #[test]
    fn owner_reference_names_the_root_as_controller() {
        let owner = instance_owner_reference("orders", "uid-1");
        assert_eq!(owner.kind, "ConfigMap");
        assert_eq!(owner.api_version, "v1");
        assert_eq!(owner.name, "orders-toygres");
        assert_eq!(owner.uid, "uid-1");
        assert_eq!(owner.controller, Some(true));
    }
}
