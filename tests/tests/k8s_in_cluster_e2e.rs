//! The controller as the chart runs it, in its pod on the real control plane, through failures
//! of its own (issue 12): the controller pod SIGKILLed in the middle of a create (the node
//! restarts its container; the create completes, with one primary and each object once); and,
//! with an external CMS and two replicas, the active replica killed while the other waits on
//! the coordination Lease, under continuous writes to an instance: the other takes over through
//! the Lease and then handles a failover.

use std::net::Ipv4Addr;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Pod, Secret};
use kube::api::{DeleteParams, ListParams, PostParams};
use kube::{Api, Client};
use toygres_tests::k8s::in_cluster::{helm_install, is_ready, restarts, InCluster, POD};
use toygres_tests::k8s::orders::{
    commits_after, create_under_way, created_whole, each_object_once, pauses, start_writer, whole,
    writes_through_rw, CREATE, INSTANCE, WAIT,
};
use toygres_tests::k8s::toygres::{self, create_namespace, rw_primary, Controller, NS};
use toygres_tests::k8s::Cluster;
use toygres_tests::objstores::TcpProxy;
use toygres_tests::{bin_path, eventually};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_controller_pod_killed_in_the_middle_of_a_create_completes_it_once_its_container_restarts(
) {
    bin_path("toygres-sidecar");
    let cluster = Cluster::start().await;
    let client = cluster.client();
    create_namespace(&client).await;
    let controller = InCluster::install(&cluster).await;
    controller
        .cli_ok(&cluster, &[&CREATE[..], &["--no-wait"]].concat())
        .await;
    create_under_way(&client).await;

    // Every process of the controller's pod (the controller and its embedded CMS) SIGKILLed.
    let pods: Api<Pod> = Api::namespaced(client.clone(), NS);
    let before = restarts(&pods.get(POD).await.unwrap());
    let killed_at = Instant::now();
    cluster.kill_pod(NS, POD);
    eventually(WAIT, "the controller's container restarted", || async {
        (restarts(&pods.get(POD).await.ok()?) > before).then_some(())
    })
    .await;
    InCluster::wait_ready(&cluster, Duration::from_secs(300)).await;
    let ready_in = killed_at.elapsed();

    // The create completes: its operation succeeded, the instance runs three members, one of
    // them the primary. (Their health as this controller sees it is not asked: through the
    // chart's controller on the harness, members' status probes read "Postgres is not
    // running" now and then although Postgres runs; see the report.)
    let detail = eventually(WAIT, "the create to complete", || async {
        let detail: serde_json::Value =
            serde_json::from_slice(&controller.cli(&["get", INSTANCE, "-o", "json"]).stdout)
                .ok()?;
        let op = detail["last_operation"].as_str()?.to_string();
        let op: serde_json::Value = serde_json::from_slice(
            &controller
                .cli(&["operation", "get", &op, "-o", "json"])
                .stdout,
        )
        .ok()?;
        (op["kind"] == "create" && op["status"] == "succeeded" && detail["state"] == "running")
            .then_some(detail)
    })
    .await;
    let members = detail["members"].as_array().unwrap();
    assert_eq!(members.len(), 3, "{detail}");
    let primaries = members.iter().filter(|m| m["role"] == "primary").count();
    assert_eq!(primaries, 1, "{detail}");
    eprintln!(
        "the controller pod was ready again {:.1} s after the kill; the create complete {:.1} s \
         after it",
        ready_in.as_secs_f64(),
        killed_at.elapsed().as_secs_f64()
    );
    each_object_once(&client).await;
    // It works: a write through rw, and both standbys stream from the primary.
    let password = writes_through_rw(&client).await;
    whole(&client, &password).await;
    controller.cli_ok(&cluster, &["delete", INSTANCE]).await;
}

/// The holder named in Lease `toygres-controller`, if any.
async fn lease_holder(client: &Client) -> Option<String> {
    Api::<Lease>::namespaced(client.clone(), NS)
        .get_opt("toygres-controller")
        .await
        .ok()??
        .spec?
        .holder_identity
}

/// The chart's controller pods not being deleted.
async fn controller_pods(client: &Client) -> Vec<Pod> {
    Api::<Pod>::namespaced(client.clone(), NS)
        .list(&ListParams::default().labels("app.kubernetes.io/component=controller"))
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .collect()
}

/// Waits until the Lease names a controller pod other than `not` that is ready; returns it.
async fn active_pod(client: &Client, not: Option<&str>) -> Pod {
    eventually(WAIT, "a ready controller holding the Lease", || async {
        let holder = lease_holder(client).await?;
        let pods = controller_pods(client).await;
        pods.into_iter().find(|p| {
            p.metadata.name.as_deref() == Some(holder.as_str())
                && Some(holder.as_str()) != not
                && is_ready(p)
        })
    })
    .await
}

/// The chart's controller in `pod` (a Deployment's: its home, with its API token, is an
/// emptyDir under the pod's directory on its process node).
async fn reach(cluster: &Cluster, pod: &Pod) -> InCluster {
    let uid = pod.metadata.uid.clone().unwrap();
    let token = cluster
        .dir()
        .join("pods")
        .join(uid)
        .join("volumes/home/controller.token");
    InCluster::reach(cluster, pod, token).await
}

/// An external CMS the pods reach: another controller's embedded Postgres (a local-platform
/// controller running nothing), in a database of its own, through a proxy on the host's
/// bridge address; its URL in Secret `toygres-cms`, as the chart's `databaseUrl` asks.
async fn external_cms(cluster: &Cluster) -> (Controller, TcpProxy) {
    let cms = Controller::launch(Ipv4Addr::LOCALHOST, &[], &[], true).await;
    let (port, password) = cms.cms_database("leaders").await;
    let proxy = TcpProxy::start_on(cluster.bridge().host_ip().into(), port).await;
    let url = format!(
        "postgres://postgres:{password}@{}:{}/leaders",
        cluster.bridge().host_ip(),
        proxy.port
    );
    let secret: Secret = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "toygres-cms"},
        "stringData": {"database-url": url}
    }))
    .unwrap();
    Api::<Secret>::namespaced(cluster.client(), NS)
        .create(&PostParams::default(), &secret)
        .await
        .unwrap();
    (cms, proxy)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_active_controller_replica_killed_under_writes_the_other_takes_over_and_handles_a_failover(
) {
    bin_path("toygres-sidecar");
    let cluster = Cluster::start().await;
    let client = cluster.client();
    create_namespace(&client).await;
    let (_cms, _proxy) = external_cms(&cluster).await;
    helm_install(
        &cluster,
        &[
            "databaseUrl.existingSecret=toygres-cms",
            "controller.replicas=2",
        ],
    );
    let first = active_pod(&client, None).await;
    let first_name = first.metadata.name.clone().unwrap();
    // The other replica runs and waits: alive, not ready.
    let waiting = eventually(WAIT, "the other replica running", || async {
        controller_pods(&client).await.into_iter().find(|p| {
            p.metadata.name != first.metadata.name
                && p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running")
        })
    })
    .await;
    assert!(!is_ready(&waiting), "the waiting replica is not ready");
    let controller = reach(&cluster, &first).await;
    let (password, _) = created_whole(
        || {
            let out = controller.cli(&CREATE);
            assert!(
                out.status.success(),
                "create through {first_name} failed:\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
        },
        &client,
    )
    .await;
    let (stop, acked, writer) = start_writer(&client, &password).await;

    // The active replica dies for good: its processes SIGKILLed and its pod deleted at once
    // (as when its node is lost), so its own restart cannot take the Lease back.
    let killed_at = Instant::now();
    cluster.kill_pod(NS, &first_name);
    Api::<Pod>::namespaced(client.clone(), NS)
        .delete(&first_name, &DeleteParams::default().grace_period(0))
        .await
        .unwrap();
    eventually(WAIT, "the Lease taken by another replica", || async {
        lease_holder(&client)
            .await
            .filter(|h| *h != first_name)
            .map(|_| ())
    })
    .await;
    let lease_in = killed_at.elapsed();
    let second = active_pod(&client, Some(&first_name)).await;
    let ready_in = killed_at.elapsed();
    let second_name = second.metadata.name.clone().unwrap();
    assert_eq!(
        second.metadata.name, waiting.metadata.name,
        "the replica that waited took over"
    );
    let before = acked.lock().unwrap().len();
    commits_after(&acked, before, 10, "10 commits after the takeover").await;
    let takeover_pause = pauses(&acked, killed_at, Instant::now())[0];
    eprintln!(
        "BENCH k8s controller takeover: Lease taken {:.1} s after the kill, the new active \
         ready {:.1} s after it; longest write pause meanwhile {} ms",
        lease_in.as_secs_f64(),
        ready_in.as_secs_f64(),
        takeover_pause.as_millis()
    );

    // The new active one handles a failover: kill -9 of the primary's pod.
    let controller = reach(&cluster, &second).await;
    let (old_primary, _) = rw_primary(&client, INSTANCE, None).await;
    let before = acked.lock().unwrap().len();
    let failed_at = Instant::now();
    cluster.kill_pod(NS, &old_primary);
    let (new_primary, new_ip) = rw_primary(&client, INSTANCE, Some(&old_primary)).await;
    commits_after(&acked, before, 10, "10 commits after the failover").await;
    eprintln!(
        "{second_name} failed {old_primary} over to {new_primary}; rw moved {:.1} s after the \
         kill",
        failed_at.elapsed().as_secs_f64()
    );
    stop.store(true, Ordering::SeqCst);
    writer.await.unwrap();
    let acknowledged = acked.lock().unwrap().clone();
    let lost = toygres::lost_commits(&client, INSTANCE, &new_ip, &password, &acknowledged).await;
    assert!(lost.is_empty(), "acknowledged commits lost: {lost:?}");
    let events = controller.cli_ok(&cluster, &["events", INSTANCE]).await;
    assert!(events.to_lowercase().contains("failover"), "{events}");
    controller.cli_ok(&cluster, &["delete", INSTANCE]).await;
}
