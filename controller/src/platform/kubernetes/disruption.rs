//! The instance's PodDisruptionBudget: a voluntary disruption (a node drain, an eviction) takes
//! at most one member at a time.

use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::labels::{instance_labels, instance_pods_selector, label_selector, Component};
use super::{disruption_budget_name, InstanceSettings};

/// `maxUnavailable: 1` over the instance's member pods. A pod that is not ready (a lagging or
/// bootstrapping standby) may always be evicted (`unhealthyPodEvictionPolicy: AlwaysAllow`),
/// so it cannot block a node drain; healthy members go one at a time.
pub fn instance_disruption_budget(
    settings: &InstanceSettings,
    owner: &OwnerReference,
) -> PodDisruptionBudget {
    PodDisruptionBudget {
        metadata: ObjectMeta {
            name: Some(disruption_budget_name(&settings.instance)),
            namespace: Some(settings.namespace.clone()),
            labels: Some(instance_labels(
                &settings.instance,
                Component::Instance,
                &settings.extra_labels,
            )),
            owner_references: Some(vec![owner.clone()]),
            ..ObjectMeta::default()
        },
        spec: Some(PodDisruptionBudgetSpec {
            max_unavailable: Some(IntOrString::Int(1)),
            selector: Some(label_selector(instance_pods_selector(&settings.instance))),
            unhealthy_pod_eviction_policy: Some("AlwaysAllow".to_string()),
            ..PodDisruptionBudgetSpec::default()
        }),
        ..PodDisruptionBudget::default()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::platform::kubernetes::fixtures;

    #[test]
    fn at_most_one_member_of_the_instance_is_disrupted_at_a_time() {
        let budget = instance_disruption_budget(&fixtures::orders(), &fixtures::owner());
        assert_eq!(budget.metadata.name.as_deref(), Some("orders"));
        assert_eq!(
            budget.metadata.owner_references.as_ref().unwrap()[0].name,
            "orders-toygres"
        );
        let spec = budget.spec.as_ref().unwrap();
        assert_eq!(spec.max_unavailable, Some(IntOrString::Int(1)));
        assert!(spec.min_available.is_none());
        let selector = spec
            .selector
            .as_ref()
            .unwrap()
            .match_labels
            .as_ref()
            .unwrap();
        assert_eq!(selector["toygres.io/instance"], "orders");
        assert!(!selector.contains_key("toygres.io/role"));
    }
}
