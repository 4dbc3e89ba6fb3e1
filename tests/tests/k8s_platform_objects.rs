//! The Kubernetes platform's objects (built by `toygres_controller::platform::kubernetes`) on
//! the real control plane: applied with server-side apply under one field manager and strict
//! field validation (and re-applied without change), they make members whose pods are scheduled
//! with bound volumes and listed by the headless Service; the role-label patch sets and removes
//! a pod's role; deleting the instance's root lets the garbage collector remove everything else,
//! PVCs included when the settings ask for it. (The pods' sidecars need not become ready here.)

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{
    ConfigMap, Namespace, PersistentVolumeClaim, Pod, Secret, Service,
};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Api, Resource};
use serde::de::DeserializeOwned;
use serde::Serialize;
use toygres_common::names::PgAddress;
use toygres_controller::platform::kubernetes::credentials::{instance_secret, InstanceCredentials};
use toygres_controller::platform::kubernetes::disruption::instance_disruption_budget;
use toygres_controller::platform::kubernetes::labels::{role_label_patch, RoleLabel};
use toygres_controller::platform::kubernetes::member::member_stateful_set;
use toygres_controller::platform::kubernetes::root::{
    instance_owner_reference, instance_root_config_map,
};
use toygres_controller::platform::kubernetes::services::{members_service, ro_service, rw_service};
use toygres_controller::platform::kubernetes::{
    member_pg_address, AntiAffinity, InstanceSettings, MemberResources, MemberSettings,
    SidecarSettings, StorageRequest, VolumeRetention,
};
use toygres_controller::platform::{Bootstrap, SecretValue};
use toygres_tests::eventually;
use toygres_tests::k8s::Cluster;

const NS: &str = "db";
const FIELD_MANAGER: &str = "toygres";

async fn apply<K>(client: &kube::Client, object: &K) -> K
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + DeserializeOwned
        + Serialize
        + std::fmt::Debug,
{
    let name = object.meta().name.clone().unwrap();
    let api: Api<K> = Api::namespaced(client.clone(), NS);
    api.patch(
        &name,
        &PatchParams::apply(FIELD_MANAGER)
            .force()
            .validation_strict(),
        &Patch::Apply(object),
    )
    .await
    .unwrap_or_else(|e| panic!("apply {} {name}: {e}", K::kind(&())))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn built_objects_apply_strictly_schedule_take_role_labels_and_cascade_from_their_root() {
    let cluster = Cluster::start().await;
    let client = cluster.client();
    let ns: Namespace =
        serde_json::from_value(serde_json::json!({"metadata": {"name": NS}})).unwrap();
    Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &ns)
        .await
        .unwrap();

    let settings = InstanceSettings {
        instance: "orders".into(),
        namespace: NS.into(),
        sidecar_image: "toygres/sidecar:dev".into(),
        storage: StorageRequest {
            class: None,
            size: "1Gi".into(),
        },
        resources: MemberResources {
            cpu: "100m".into(),
            memory: "256Mi".into(),
        },
        anti_affinity: AntiAffinity::Preferred,
        volume_retention: VolumeRetention::Delete,
        sidecar: SidecarSettings::default(),
        extra_labels: BTreeMap::new(),
    };
    settings.validate().unwrap();
    let root = apply(&client, &instance_root_config_map(&settings)).await;
    let owner = instance_owner_reference(&settings.instance, root.metadata.uid.as_deref().unwrap());
    let credentials = InstanceCredentials {
        superuser_password: SecretValue::new("su-password-for-a-test".into()),
        replication_password: SecretValue::new("repl-password-for-a-test".into()),
        sidecar_token: SecretValue::new("sidecar-token-for-a-test-0123".into()),
        app_password: SecretValue::new("app-password-for-a-test".into()),
    };
    apply(
        &client,
        &instance_secret(&settings, &credentials, &owner).into_secret(),
    )
    .await;
    apply(&client, &rw_service(&settings, &owner)).await;
    apply(&client, &ro_service(&settings, &owner)).await;
    apply(&client, &members_service(&settings, &owner)).await;
    apply(&client, &instance_disruption_budget(&settings, &owner)).await;
    let primary: PgAddress = member_pg_address(&settings, "orders-0");
    for ordinal in 0..3 {
        let bootstrap = if ordinal == 0 {
            Bootstrap::Init
        } else {
            Bootstrap::Standby {
                primary: primary.clone(),
            }
        };
        let member = MemberSettings {
            ordinal,
            bootstrap,
            zone: None,
            fence_token: None,
        };
        let set = member_stateful_set(&settings, &member, &owner);
        apply(&client, &set).await;
        // Applying the same object again changes nothing (idempotent under retries).
        let generation = |s: &StatefulSet| s.metadata.generation;
        let again = apply(&client, &set).await;
        assert_eq!(generation(&again), Some(1));
    }

    let pods: Api<Pod> = Api::namespaced(client.clone(), NS);
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), NS);
    for ordinal in 0..3 {
        let pod = format!("orders-{ordinal}-0");
        eventually(
            Duration::from_secs(60),
            "a member pod to be scheduled",
            || async { pods.get(&pod).await.ok()?.spec?.node_name },
        )
        .await;
        let claim = format!("data-orders-{ordinal}-0");
        eventually(
            Duration::from_secs(60),
            "a member's claim to be bound",
            || async {
                let claim = claims.get(&claim).await.ok()?;
                (claim.status?.phase.as_deref() == Some("Bound")).then_some(())
            },
        )
        .await;
    }

    // The role label: the pod carries it after the patch, and loses it with the null patch.
    pods.patch(
        "orders-0-0",
        &PatchParams::default(),
        &Patch::Merge(role_label_patch(Some(RoleLabel::Primary))),
    )
    .await
    .unwrap();
    let labels = pods
        .get("orders-0-0")
        .await
        .unwrap()
        .metadata
        .labels
        .unwrap();
    assert_eq!(labels["toygres.io/role"], "primary");
    // The headless Service lists every member, ready or not.
    let slices: Api<EndpointSlice> = Api::namespaced(client.clone(), NS);
    eventually(
        Duration::from_secs(60),
        "the members Service to list 3 pods",
        || async {
            let list = slices
                .list(&ListParams::default().labels("kubernetes.io/service-name=orders-members"))
                .await
                .ok()?;
            let addresses: usize = list
                .items
                .iter()
                .map(|s| s.endpoints.iter().flatten().count())
                .sum();
            (addresses == 3).then_some(())
        },
    )
    .await;
    pods.patch(
        "orders-0-0",
        &PatchParams::default(),
        &Patch::Merge(role_label_patch(None)),
    )
    .await
    .unwrap();
    let labels = pods
        .get("orders-0-0")
        .await
        .unwrap()
        .metadata
        .labels
        .unwrap();
    assert!(!labels.contains_key("toygres.io/role"), "{labels:?}");

    // Deleting the root deletes the rest.
    Api::<ConfigMap>::namespaced(client.clone(), NS)
        .delete("orders-toygres", &DeleteParams::background())
        .await
        .unwrap();
    let sets: Api<StatefulSet> = Api::namespaced(client.clone(), NS);
    let services: Api<Service> = Api::namespaced(client.clone(), NS);
    let secrets: Api<Secret> = Api::namespaced(client.clone(), NS);
    let budgets: Api<PodDisruptionBudget> = Api::namespaced(client.clone(), NS);
    let instance = ListParams::default().labels("toygres.io/instance=orders");
    eventually(
        Duration::from_secs(120),
        "every object of the instance to be gone",
        || async {
            let left = sets.list(&instance).await.ok()?.items.len()
                + services.list(&instance).await.ok()?.items.len()
                + secrets.list(&instance).await.ok()?.items.len()
                + budgets.list(&instance).await.ok()?.items.len()
                + pods.list(&instance).await.ok()?.items.len()
                + claims.list(&instance).await.ok()?.items.len();
            (left == 0).then_some(())
        },
    )
    .await;
}
