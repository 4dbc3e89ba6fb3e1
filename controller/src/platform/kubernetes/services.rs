//! The instance's Services: `<instance>-rw` leads to the pod labelled primary, `<instance>-ro`
//! to the pods labelled standby that are ready (a standby is ready only while its lag is within
//! the readiness bound), and the headless `<instance>-members` gives every member pod a DNS name
//! whether ready or not, for replication and for the controller.
//!
//! When the routes name no standby for ro, `<instance>-ro` follows the instance's ro fallback as
//! the local proxy does: with `primary` its selector switches to the primary's label (it leads
//! where `-rw` does), with `refuse` it keeps selecting standbys and so has no endpoints (see
//! [`ro_service_role`]). A Service spreads connections by itself (kube-proxy picks an endpoint
//! per connection): the ro rule's `least-connections` balance cannot be had from a ClusterIP
//! Service.

use k8s_openapi::api::core::v1::{Service, ServicePort, ServiceSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use toygres_common::ro_api::RoFallback;

use super::labels::{
    instance_labels, instance_pods_selector, role_pods_selector, Component, RoleLabel,
};
use super::{
    members_service_name, ro_service_name, rw_service_name, InstanceSettings, API_PORT,
    API_PORT_NAME, PG_PORT, PG_PORT_NAME,
};
use crate::platform::EndpointRoutes;

/// `<instance>-rw`: Postgres on the pod labelled `toygres.io/role=primary` (while it is ready).
pub fn rw_service(settings: &InstanceSettings, owner: &OwnerReference) -> Service {
    role_service(
        settings,
        owner,
        rw_service_name(&settings.instance),
        RoleLabel::Primary,
    )
}

/// `<instance>-ro`: Postgres on the ready pods labelled `toygres.io/role=<leads_to>` (see
/// [`ro_service_role`]).
pub fn ro_service(
    settings: &InstanceSettings,
    owner: &OwnerReference,
    leads_to: RoleLabel,
) -> Service {
    role_service(
        settings,
        owner,
        ro_service_name(&settings.instance),
        leads_to,
    )
}

/// The role label `<instance>-ro` selects under `routes`: the standbys routed to ro; with none
/// and the fallback to the primary, the primary; with none and the fallback `refuse`, still
/// the standbys, of which no pod is then labelled, so ro has no endpoints.
pub fn ro_service_role(routes: &EndpointRoutes) -> RoleLabel {
    if routes.ro.is_empty() && routes.ro_fallback == RoFallback::Primary {
        RoleLabel::Primary
    } else {
        RoleLabel::Standby
    }
}

/// A merge patch pointing `<instance>-ro` at the pods labelled `leads_to`.
pub fn ro_selector_patch(instance: &str, leads_to: RoleLabel) -> serde_json::Value {
    serde_json::json!({"spec": {"selector": role_pods_selector(instance, leads_to)}})
}

fn role_service(
    settings: &InstanceSettings,
    owner: &OwnerReference,
    name: String,
    role: RoleLabel,
) -> Service {
    Service {
        metadata: service_metadata(settings, owner, name),
        spec: Some(ServiceSpec {
            type_: Some("ClusterIP".to_string()),
            selector: Some(role_pods_selector(&settings.instance, role)),
            ports: Some(vec![service_port(PG_PORT_NAME, PG_PORT)]),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    }
}

/// `<instance>-members`: headless, every member pod ready or not (`publishNotReadyAddresses`),
/// Postgres and the sidecar API; the StatefulSets' `serviceName`, so member `<instance>-<n>` is
/// `<instance>-<n>-0.<instance>-members.<namespace>.svc`.
pub fn members_service(settings: &InstanceSettings, owner: &OwnerReference) -> Service {
    Service {
        metadata: service_metadata(settings, owner, members_service_name(&settings.instance)),
        spec: Some(ServiceSpec {
            cluster_ip: Some("None".to_string()),
            publish_not_ready_addresses: Some(true),
            selector: Some(instance_pods_selector(&settings.instance)),
            ports: Some(vec![
                service_port(PG_PORT_NAME, PG_PORT),
                service_port(API_PORT_NAME, API_PORT),
            ]),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    }
}

fn service_metadata(
    settings: &InstanceSettings,
    owner: &OwnerReference,
    name: String,
) -> ObjectMeta {
    ObjectMeta {
        name: Some(name),
        namespace: Some(settings.namespace.clone()),
        labels: Some(instance_labels(
            &settings.instance,
            Component::Endpoints,
            &settings.extra_labels,
        )),
        owner_references: Some(vec![owner.clone()]),
        ..ObjectMeta::default()
    }
}

fn service_port(name: &str, port: u16) -> ServicePort {
    ServicePort {
        name: Some(name.to_string()),
        port: i32::from(port),
        target_port: Some(IntOrString::String(name.to_string())),
        protocol: Some("TCP".to_string()),
        ..ServicePort::default()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::collections::BTreeMap;

    use super::*;
    use crate::platform::kubernetes::fixtures;

    fn selector(service: &Service) -> BTreeMap<String, String> {
        service.spec.as_ref().unwrap().selector.clone().unwrap()
    }

    #[test]
    fn rw_and_ro_select_the_instance_pods_by_role() {
        let settings = fixtures::orders();
        let rw = rw_service(&settings, &fixtures::owner());
        assert_eq!(rw.metadata.name.as_deref(), Some("orders-rw"));
        assert_eq!(
            selector(&rw),
            BTreeMap::from([
                (
                    "app.kubernetes.io/component".to_string(),
                    "member".to_string()
                ),
                ("toygres.io/instance".to_string(), "orders".to_string()),
                ("toygres.io/role".to_string(), "primary".to_string()),
            ])
        );
        let ro = ro_service(&settings, &fixtures::owner(), RoleLabel::Standby);
        assert_eq!(ro.metadata.name.as_deref(), Some("orders-ro"));
        assert_eq!(selector(&ro)["toygres.io/role"], "standby");
        for service in [&rw, &ro] {
            let spec = service.spec.as_ref().unwrap();
            assert_eq!(spec.type_.as_deref(), Some("ClusterIP"));
            assert_eq!(spec.publish_not_ready_addresses, None, "only ready pods");
            let port = &spec.ports.as_ref().unwrap()[0];
            assert_eq!(
                (port.port, port.target_port.clone()),
                (5432, Some(IntOrString::String("postgres".into())))
            );
            assert_eq!(
                service.metadata.owner_references.as_ref().unwrap()[0].name,
                "orders-toygres"
            );
            assert_eq!(
                service.metadata.labels.as_ref().unwrap()["app.kubernetes.io/component"],
                "endpoints"
            );
        }
    }

    /// With no standby qualifying, `-ro` follows the fallback: to the primary's pod, or to no
    /// pod at all.
    #[test]
    fn the_ro_service_falls_back_to_the_primary_or_refuses_as_the_rule_says() {
        use toygres_common::ro_api::RoFallback;

        let routes = |ro: &[&str], fallback| EndpointRoutes {
            rw: Some("orders-0".into()),
            ro: ro.iter().map(|m| m.to_string()).collect(),
            ro_fallback: fallback,
            ..EndpointRoutes::default()
        };
        for (ro, fallback, leads_to) in [
            (&["orders-1"][..], RoFallback::Primary, RoleLabel::Standby),
            (&["orders-1"][..], RoFallback::Refuse, RoleLabel::Standby),
            (&[][..], RoFallback::Primary, RoleLabel::Primary),
            (&[][..], RoFallback::Refuse, RoleLabel::Standby),
        ] {
            assert_eq!(
                ro_service_role(&routes(ro, fallback)),
                leads_to,
                "{ro:?} {fallback:?}"
            );
        }
        let patch = ro_selector_patch("orders", RoleLabel::Primary);
        assert_eq!(patch["spec"]["selector"]["toygres.io/role"], "primary");
        assert_eq!(patch["spec"]["selector"]["toygres.io/instance"], "orders");
        let primary_ro = ro_service(&fixtures::orders(), &fixtures::owner(), RoleLabel::Primary);
        assert_eq!(
            selector(&primary_ro),
            serde_json::from_value::<BTreeMap<String, String>>(patch["spec"]["selector"].clone())
                .unwrap()
        );
    }

    #[test]
    fn members_service_is_headless_and_publishes_pods_that_are_not_ready() {
        let members = members_service(&fixtures::orders(), &fixtures::owner());
        assert_eq!(members.metadata.name.as_deref(), Some("orders-members"));
        let spec = members.spec.as_ref().unwrap();
        assert_eq!(spec.cluster_ip.as_deref(), Some("None"));
        assert_eq!(spec.publish_not_ready_addresses, Some(true));
        assert!(!selector(&members).contains_key("toygres.io/role"));
        let ports: Vec<_> = spec
            .ports
            .as_ref()
            .unwrap()
            .iter()
            .map(|p| p.port)
            .collect();
        assert_eq!(ports, [5432, 8008]);
    }
}
