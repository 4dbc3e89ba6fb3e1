//! Operations of the controller on the Kubernetes platform, as users run them: parameters set
//! through `toygres params` reach every member's Postgres (a reload-class value without a
//! restart, a restart-class one rolled through the members without restarting a pod,
//! `max_connections` raised and lowered in the order hot standbys need), a setting that could
//! take the database down is refused; and the `-ro` Service leaves a
//! standby that falls behind its bound, leads to the primary while none qualifies, and takes
//! the standby back once it catches up.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::api::ListParams;
use kube::{Api, Client};
use toygres_tests::k8s::toygres::{
    self, create_namespace, member_pods, ready_endpoints, Controller, NS,
};
use toygres_tests::k8s::Cluster;
use toygres_tests::{bin_path, eventually};

const WAIT: Duration = Duration::from_secs(120);

/// How often the containers of the instance's pods have restarted, in all.
async fn pod_restarts(client: &Client, instance: &str) -> i32 {
    let pods: Api<Pod> = Api::namespaced(client.clone(), NS);
    let list = pods
        .list(&ListParams::default().labels(&format!("toygres.io/instance={instance}")))
        .await
        .unwrap();
    list.items
        .iter()
        .flat_map(|p| {
            p.status
                .iter()
                .flat_map(|s| s.container_statuses.iter().flatten())
        })
        .map(|c| c.restart_count)
        .sum()
}

/// The name and IP of the pod labelled `role`.
fn pod_with_role(
    pods: &BTreeMap<String, (String, Option<String>, String)>,
    role: &str,
) -> (String, String) {
    pods.iter()
        .find(|(_, (_, r, _))| r.as_deref() == Some(role))
        .map(|(name, (ip, _, _))| (name.clone(), ip.clone()))
        .unwrap()
}

/// `SHOW setting` on every member, by pod name.
async fn shown_everywhere(client: &Client, setting: &str) -> Option<Vec<(String, String)>> {
    let password = toygres::superuser_password(client, "orders").await;
    let mut shown = Vec::new();
    for (name, (ip, _, _)) in member_pods(client, "orders").await {
        let pg = toygres::connect(client, "orders", &ip, &password).await?;
        let row = pg.query_one(&format!("SHOW {setting}"), &[]).await.ok()?;
        shown.push((name, row.get::<_, String>(0)));
    }
    Some(shown)
}

/// Waits until every member of `orders` shows `value` for `setting`.
async fn wait_everywhere(client: &Client, setting: &str, value: &str) {
    eventually(
        WAIT,
        &format!("{setting} = {value} on every member"),
        || async {
            let shown = shown_everywhere(client, setting).await?;
            (shown.len() == 2 && shown.iter().all(|(_, v)| v == value)).then_some(())
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parameters_reach_every_member_and_a_restart_class_change_rolls_without_restarting_a_pod() {
    bin_path("toygres-sidecar");
    let cluster = Cluster::start().await;
    let client = cluster.client();
    create_namespace(&client).await;
    let controller = Controller::start(&cluster).await;
    controller.cli_ok(&["create", "orders", "--replicas", "1", "--no-backup"]);

    // Reload class: every member, no restart.
    controller.cli_ok(&["params", "set", "orders", "work_mem=8MB"]);
    wait_everywhere(&client, "work_mem", "8MB").await;
    let shown: serde_json::Value =
        serde_json::from_str(&controller.cli_ok(&["params", "get", "orders", "-o", "json"]))
            .unwrap();
    assert!(shown.to_string().contains("work_mem"), "{shown}");

    // Refused: a library that would stop Postgres from starting; nothing changes.
    let refused = controller.cli(&["params", "set", "orders", "shared_preload_libraries=evil"]);
    let message = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success(), "{message}");
    assert!(message.contains("shared_preload_libraries"), "{message}");
    wait_everywhere(&client, "shared_preload_libraries", "").await;

    // Restart class: rolled through the standby, then the primary by switchover. Postgres
    // restarts inside its pod (the sidecar restarts it); no pod restarts.
    let (old_primary, _) = pod_with_role(&member_pods(&client, "orders").await, "primary");
    controller.cli_ok(&["params", "set", "orders", "shared_buffers=48MB"]);
    wait_everywhere(&client, "shared_buffers", "48MB").await;
    assert_eq!(pod_restarts(&client, "orders").await, 0, "no pod restarted");
    let (new_primary, rw_ip) = pod_with_role(&member_pods(&client, "orders").await, "primary");
    assert_ne!(
        new_primary, old_primary,
        "the primary took the change by switchover to the updated standby"
    );
    // The rw Service follows the new primary.
    eventually(WAIT, "orders-rw to lead to the new primary", || async {
        (ready_endpoints(&client, "orders-rw").await == BTreeSet::from([rw_ip.clone()]))
            .then_some(())
    })
    .await;

    // A hot-standby-sensitive setting raised (standbys first) and lowered (primary first):
    // both complete, so no standby ever refused to start with less than its primary.
    controller.cli_ok(&["params", "set", "orders", "max_connections=130"]);
    wait_everywhere(&client, "max_connections", "130").await;
    controller.cli_ok(&["params", "set", "orders", "max_connections=110"]);
    wait_everywhere(&client, "max_connections", "110").await;
    assert_eq!(pod_restarts(&client, "orders").await, 0, "no pod restarted");

    controller.cli_ok(&["delete", "orders"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ro_service_leaves_a_lagging_standby_falls_back_to_the_primary_and_takes_it_back() {
    bin_path("toygres-sidecar");
    let cluster = Cluster::start().await;
    let client = cluster.client();
    create_namespace(&client).await;
    let controller = Controller::start(&cluster).await;
    controller.cli_ok(&[
        "create",
        "orders",
        "--replicas",
        "1",
        "--no-backup",
        "--ro-max-lag-bytes",
        "65536",
    ]);
    let pods = member_pods(&client, "orders").await;
    let ((_, primary_ip), (_, standby_ip)) = (
        pod_with_role(&pods, "primary"),
        pod_with_role(&pods, "standby"),
    );
    eventually(WAIT, "orders-ro to lead to the standby", || async {
        (ready_endpoints(&client, "orders-ro").await == BTreeSet::from([standby_ip.clone()]))
            .then_some(())
    })
    .await;

    // The standby stops replaying while the primary writes well past the bound.
    let password = toygres::superuser_password(&client, "orders").await;
    let standby = toygres::connect(&client, "orders", &standby_ip, &password)
        .await
        .unwrap();
    standby
        .execute("SELECT pg_wal_replay_pause()", &[])
        .await
        .unwrap();
    let primary = toygres::connect(&client, "orders", &primary_ip, &password)
        .await
        .unwrap();
    primary
        .batch_execute(
            "CREATE TABLE filler AS SELECT g, repeat('x', 200) AS pad \
             FROM generate_series(1, 20000) g",
        )
        .await
        .unwrap();
    eventually(
        WAIT,
        "orders-ro to fall back to the primary while the standby lags",
        || async {
            (ready_endpoints(&client, "orders-ro").await == BTreeSet::from([primary_ip.clone()]))
                .then_some(())
        },
    )
    .await;
    // `toygres get` says where ro leads and why the standby is out.
    eventually(WAIT, "get to show the fallback and why", || async {
        let detail: serde_json::Value =
            serde_json::from_str(&controller.cli_ok(&["get", "orders", "-o", "json"])).ok()?;
        let ro = &detail["ro"];
        let standby_out = ro["backends"]
            .as_array()?
            .iter()
            .any(|b| b["state"] == "lag-over-bound");
        (ro["fallback_to_primary"] == true && standby_out).then_some(())
    })
    .await;

    // Replay resumes: the standby catches up and ro leads to it again.
    standby
        .execute("SELECT pg_wal_replay_resume()", &[])
        .await
        .unwrap();
    eventually(WAIT, "orders-ro to take the standby back", || async {
        (ready_endpoints(&client, "orders-ro").await == BTreeSet::from([standby_ip.clone()]))
            .then_some(())
    })
    .await;

    controller.cli_ok(&["delete", "orders"]);
}
