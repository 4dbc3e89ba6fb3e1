//! The labels every object of an instance carries, the selectors built from them, and the role
//! label: the one label the controller moves at failover and switchover, which the `-rw` and
//! `-ro` Services select on.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use serde_json::json;

/// `app.kubernetes.io/name` of every object of an instance.
pub const APP_NAME: &str = "postgresql";
/// `app.kubernetes.io/managed-by`: the field manager and the manager label.
pub const MANAGED_BY: &str = "toygres";
/// `app.kubernetes.io/part-of`.
pub const PART_OF: &str = "toygres";

/// `app.kubernetes.io/name`.
pub const APP_NAME_KEY: &str = "app.kubernetes.io/name";
/// `app.kubernetes.io/instance`: the Toygres instance's name.
pub const APP_INSTANCE_KEY: &str = "app.kubernetes.io/instance";
/// `app.kubernetes.io/component`: what part of the instance the object is (see [`Component`]).
pub const APP_COMPONENT_KEY: &str = "app.kubernetes.io/component";
/// `app.kubernetes.io/managed-by`.
pub const APP_MANAGED_BY_KEY: &str = "app.kubernetes.io/managed-by";
/// `app.kubernetes.io/part-of`.
pub const APP_PART_OF_KEY: &str = "app.kubernetes.io/part-of";
/// `toygres.io/instance`: the instance an object belongs to; every selector includes it.
pub const INSTANCE_KEY: &str = "toygres.io/instance";
/// `toygres.io/member`: the member (`<instance>-<n>`) a StatefulSet, pod or PVC belongs to.
pub const MEMBER_KEY: &str = "toygres.io/member";
/// `toygres.io/role`: `primary` or `standby` on a member's pod, absent while it has no role.
pub const ROLE_KEY: &str = "toygres.io/role";

/// What part of an instance an object is: the value of `app.kubernetes.io/component`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Component {
    /// A member's StatefulSet, pod and PVC: Postgres with its sidecar.
    Member,
    /// The `-rw`, `-ro` and `-members` Services.
    Endpoints,
    /// The credentials Secret.
    Credentials,
    /// The root ConfigMap, the PodDisruptionBudget: the instance as a whole.
    Instance,
}

impl Component {
    /// The label value.
    pub fn label_value(self) -> &'static str {
        match self {
            Component::Member => "member",
            Component::Endpoints => "endpoints",
            Component::Credentials => "credentials",
            Component::Instance => "instance",
        }
    }
}

/// The role a member's pod is labelled with, which decides which Service leads to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RoleLabel {
    /// Selected by `<instance>-rw`.
    Primary,
    /// Selected by `<instance>-ro` (while ready).
    Standby,
}

impl RoleLabel {
    /// The label value.
    pub fn label_value(self) -> &'static str {
        match self {
            RoleLabel::Primary => "primary",
            RoleLabel::Standby => "standby",
        }
    }
}

/// The labels of an object of `instance` that is the `component` part of it, with the
/// operator's `extra` labels under them (the standard labels win a clash).
pub fn instance_labels(
    instance: &str,
    component: Component,
    extra: &BTreeMap<String, String>,
) -> BTreeMap<String, String> {
    let mut labels = extra.clone();
    for (key, value) in [
        (APP_NAME_KEY, APP_NAME),
        (APP_INSTANCE_KEY, instance),
        (APP_COMPONENT_KEY, component.label_value()),
        (APP_MANAGED_BY_KEY, MANAGED_BY),
        (APP_PART_OF_KEY, PART_OF),
        (INSTANCE_KEY, instance),
    ] {
        labels.insert(key.to_string(), value.to_string());
    }
    labels
}

/// The labels of `member`'s objects (StatefulSet, pod template, PVC): the instance's labels
/// and `toygres.io/member`. Never the role: a pod gets its role from the controller (see
/// [`role_label_patch`]), so a re-created pod serves nothing until the controller says so.
pub fn member_labels(
    instance: &str,
    member: &str,
    extra: &BTreeMap<String, String>,
) -> BTreeMap<String, String> {
    let mut labels = instance_labels(instance, Component::Member, extra);
    labels.insert(MEMBER_KEY.to_string(), member.to_string());
    labels
}

/// Selects every member pod of `instance` (anti-affinity, spread, the PodDisruptionBudget,
/// the headless Service).
pub fn instance_pods_selector(instance: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (INSTANCE_KEY.to_string(), instance.to_string()),
        (
            APP_COMPONENT_KEY.to_string(),
            Component::Member.label_value().to_string(),
        ),
    ])
}

/// Selects the pods of `instance` that carry `role` (the `-rw` and `-ro` Services).
pub fn role_pods_selector(instance: &str, role: RoleLabel) -> BTreeMap<String, String> {
    let mut selector = instance_pods_selector(instance);
    selector.insert(ROLE_KEY.to_string(), role.label_value().to_string());
    selector
}

/// Selects the one pod of `member`: the StatefulSet's selector (immutable, so it never holds
/// the role).
pub fn member_pod_selector(instance: &str, member: &str) -> BTreeMap<String, String> {
    let mut selector = instance_pods_selector(instance);
    selector.insert(MEMBER_KEY.to_string(), member.to_string());
    selector
}

/// `match_labels` as a [`LabelSelector`].
pub fn label_selector(match_labels: BTreeMap<String, String>) -> LabelSelector {
    LabelSelector {
        match_labels: Some(match_labels),
        ..LabelSelector::default()
    }
}

/// The JSON merge patch (`application/merge-patch+json`) of a pod's labels that gives it
/// `role`, or removes its role label when `None`. Failover applies `None` to the old primary
/// before anything is promoted (so the rw Service leads nowhere), then `Some(Primary)` to the
/// promoted member. Only the role label is touched.
pub fn role_label_patch(role: Option<RoleLabel>) -> serde_json::Value {
    let value = match role {
        Some(role) => json!(role.label_value()),
        None => serde_json::Value::Null,
    };
    json!({ "metadata": { "labels": { ROLE_KEY: value } } })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn role_patch_sets_or_removes_only_the_role_label() {
        assert_eq!(
            role_label_patch(Some(RoleLabel::Primary)).to_string(),
            r#"{"metadata":{"labels":{"toygres.io/role":"primary"}}}"#
        );
        assert_eq!(
            role_label_patch(Some(RoleLabel::Standby)).to_string(),
            r#"{"metadata":{"labels":{"toygres.io/role":"standby"}}}"#
        );
        // null deletes the key in a JSON merge patch (RFC 7396).
        assert_eq!(
            role_label_patch(None).to_string(),
            r#"{"metadata":{"labels":{"toygres.io/role":null}}}"#
        );
    }

    #[test]
    fn standard_labels_win_over_extra_labels() {
        let extra = BTreeMap::from([
            ("team".to_string(), "db".to_string()),
            (INSTANCE_KEY.to_string(), "other".to_string()),
        ]);
        let labels = member_labels("orders", "orders-1", &extra);
        assert_eq!(labels["team"], "db");
        assert_eq!(labels[INSTANCE_KEY], "orders");
        assert_eq!(labels[APP_INSTANCE_KEY], "orders");
        assert_eq!(labels[MEMBER_KEY], "orders-1");
        assert_eq!(labels[APP_COMPONENT_KEY], "member");
        assert_eq!(labels[APP_MANAGED_BY_KEY], "toygres");
        assert_eq!(labels[APP_PART_OF_KEY], "toygres");
        assert_eq!(labels[APP_NAME_KEY], "postgresql");
        assert!(!labels.contains_key(ROLE_KEY));
    }
}
