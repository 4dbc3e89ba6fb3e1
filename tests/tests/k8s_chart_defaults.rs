//! `helm install` of the chart with no values at all, on the real control plane: the controller
//! runs its CMS embedded, so it is a one-replica StatefulSet whose volume claim is bound (by the
//! harness's default StorageClass) and whose pod is scheduled onto a process node.

use std::process::{Command, Output};
use std::time::Duration;

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{Namespace, PersistentVolumeClaim, Pod};
use kube::api::PostParams;
use kube::Api;
use toygres_tests::eventually;
use toygres_tests::k8s::binaries::workspace_root;
use toygres_tests::k8s::Cluster;

const NS: &str = "toygres";

fn run(mut cmd: Command, what: &str) -> Output {
    let out = cmd.output().unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(
        out.status.success(),
        "{what} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn helm_install_with_no_values_schedules_a_controller_stateful_set_with_its_cms_on_a_bound_volume(
) {
    let cluster = Cluster::start().await;
    let ns: Namespace =
        serde_json::from_value(serde_json::json!({"metadata": {"name": NS}})).unwrap();
    Api::<Namespace>::all(cluster.client())
        .create(&PostParams::default(), &ns)
        .await
        .unwrap();

    let chart = workspace_root().join("charts/toygres");
    let mut cmd = cluster.helm();
    cmd.args(["install", "toygres"])
        .arg(&chart)
        .args(["--namespace", NS]);
    run(cmd, "helm install with no values");

    let sets: Api<StatefulSet> = Api::namespaced(cluster.client(), NS);
    let set = sets.get("toygres").await.unwrap();
    let spec = set.spec.unwrap();
    assert_eq!(spec.replicas, Some(1));
    let claim = &spec.volume_claim_templates.unwrap()[0];
    assert_eq!(claim.metadata.name.as_deref(), Some("home"));
    let env = &spec.template.spec.unwrap().containers[0]
        .env
        .clone()
        .unwrap();
    assert!(
        env.iter().all(|e| e.name != "DATABASE_URL"),
        "no external CMS"
    );

    let claims: Api<PersistentVolumeClaim> = Api::namespaced(cluster.client(), NS);
    eventually(
        Duration::from_secs(60),
        "the controller's volume claim to be bound",
        || async {
            let claim = claims.get("home-toygres-0").await.ok()?;
            (claim.status?.phase.as_deref() == Some("Bound")).then_some(())
        },
    )
    .await;
    let pods: Api<Pod> = Api::namespaced(cluster.client(), NS);
    let node = eventually(
        Duration::from_secs(60),
        "the controller pod to be scheduled",
        || async { pods.get("toygres-0").await.ok()?.spec?.node_name },
    )
    .await;
    assert!(node.starts_with("node-"), "{node}");
}
