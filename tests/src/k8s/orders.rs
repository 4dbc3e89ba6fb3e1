//! A three-member sync instance `orders` on the Kubernetes platform under a writer through its
//! rw Service: what the end-to-end tests of failures and rolling changes share (create it, wait
//! until it is whole, write, and measure the writer's pauses).

use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod, Secret, Service};
use kube::Client;

use super::toygres::{self, member_pods, names, ready_endpoints, rw_primary, Ack, Controller};
use crate::eventually;

/// How long these helpers wait for the instance to settle.
pub const WAIT: Duration = Duration::from_secs(180);
pub const INSTANCE: &str = "orders";
/// `toygres create` of a three-member sync instance.
pub const CREATE: [&str; 7] = [
    "create",
    INSTANCE,
    "--replicas",
    "2",
    "--replication",
    "sync",
    "--no-backup",
];

/// The commits the writer saw acknowledged.
pub type Acked = Arc<Mutex<Vec<Ack>>>;

/// A three-member sync instance with table `kept`, both standbys in `orders-ro`; returns the
/// superuser password and how long `toygres create` took.
pub async fn three_member_instance(controller: &Controller, client: &Client) -> (String, Duration) {
    created_whole(|| drop(controller.cli_ok(&CREATE)), client).await
}

/// A new cluster with the instances' namespace, a controller on the host and a three-member
/// instance: the cluster, its client, the controller and the superuser password.
pub async fn three_members_on_a_new_cluster() -> (super::Cluster, Client, Controller, String) {
    crate::bin_path("toygres-sidecar");
    let cluster = super::Cluster::start().await;
    let client = cluster.client();
    super::toygres::create_namespace(&client).await;
    let controller = Controller::start(&cluster).await;
    let (password, _) = three_member_instance(&controller, &client).await;
    (cluster, client, controller, password)
}

/// [`three_member_instance`] created by `create` (a `toygres create` of [`CREATE`] against some
/// controller, which must succeed).
pub async fn created_whole(create: impl FnOnce(), client: &Client) -> (String, Duration) {
    let started = Instant::now();
    create();
    let created_in = started.elapsed();
    let password = toygres::superuser_password(client, INSTANCE).await;
    let (_, ip) = rw_primary(client, INSTANCE, None).await;
    toygres::connect(client, INSTANCE, &ip, &password)
        .await
        .expect("connect to rw")
        .batch_execute("CREATE TABLE kept (id int PRIMARY KEY)")
        .await
        .unwrap();
    whole(client, &password).await;
    (password, created_in)
}

/// Waits until the instance is whole: one primary behind `orders-rw`, both standbys labelled,
/// in `orders-ro` and streaming from it.
pub async fn whole(client: &Client, password: &str) {
    eventually(WAIT, "one primary and two streaming standbys", || async {
        let pods = member_pods(client, INSTANCE).await;
        let ro = ready_endpoints(client, "orders-ro").await;
        let standbys: Vec<&String> = pods
            .values()
            .filter(|(_, role, _)| role.as_deref() == Some("standby"))
            .map(|(ip, _, _)| ip)
            .collect();
        if standbys.len() != 2 || ready_endpoints(client, "orders-rw").await.len() != 1 {
            return None;
        }
        for ip in standbys {
            if !ro.contains(ip) || !streaming(client, ip, password).await {
                return None;
            }
        }
        Some(())
    })
    .await;
}

/// Whether the Postgres at `ip` is a standby whose WAL receiver streams.
pub async fn streaming(client: &Client, ip: &str, password: &str) -> bool {
    let Some(pg) = toygres::connect(client, INSTANCE, ip, password).await else {
        return false;
    };
    let status = pg
        .query_opt("SELECT status FROM pg_stat_wal_receiver", &[])
        .await
        .ok()
        .flatten()
        .map(|row| row.get::<_, String>(0));
    status.as_deref() == Some("streaming")
}

/// Waits until the writer has `n` more acknowledged commits than `after`.
pub async fn commits_after(acked: &Acked, after: usize, n: usize, what: &str) {
    eventually(WAIT, what, || async {
        (acked.lock().unwrap().len() >= after + n).then_some(())
    })
    .await;
}

/// Starts the writer on `orders` and waits for its first 20 commits.
pub async fn start_writer(
    client: &Client,
    password: &str,
) -> (Arc<AtomicBool>, Acked, tokio::task::JoinHandle<()>) {
    let stop = Arc::new(AtomicBool::new(false));
    let acked: Acked = Arc::new(Mutex::new(Vec::new()));
    let writer = toygres::spawn_writer(
        client.clone(),
        INSTANCE,
        password.to_string(),
        stop.clone(),
        acked.clone(),
    );
    commits_after(&acked, 0, 20, "20 commits before the failure").await;
    (stop, acked, writer)
}

/// The gaps between consecutive acknowledged commits in `[from, to]` (the first counted from
/// `from`), longest first.
pub fn pauses(acked: &Acked, from: Instant, to: Instant) -> Vec<Duration> {
    let times: Vec<Instant> = acked
        .lock()
        .unwrap()
        .iter()
        .map(|ack| ack.at)
        .filter(|at| *at >= from && *at <= to)
        .collect();
    let first = times.first().map(|at| *at - from).unwrap_or(to - from);
    let mut gaps: Vec<Duration> = std::iter::once(first)
        .chain(times.windows(2).map(|w| w[1] - w[0]))
        .collect();
    gaps.sort_by(|a, b| b.cmp(a));
    gaps
}

/// The longest gap between consecutive acknowledged commits in `[from, to]`.
pub fn longest_pause(acked: &Acked, from: Instant, to: Instant) -> Duration {
    pauses(acked, from, to)[0]
}

/// Waits until `get` (`toygres get orders -o json` against some controller) shows the instance
/// running with three healthy members, one of them the primary; returns what it showed.
pub async fn running_with_three_healthy_members(
    get: impl Fn() -> std::process::Output,
) -> serde_json::Value {
    let deadline = Instant::now() + WAIT;
    let detail = loop {
        let out = get();
        let detail: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        let members = detail["members"].as_array().cloned().unwrap_or_default();
        if detail["state"] == "running"
            && detail["health"] == "healthy"
            && members.len() == 3
            && members.iter().all(|m| m["health"] == "healthy")
        {
            break detail;
        }
        assert!(
            Instant::now() < deadline,
            "the instance is not running with three healthy members after {WAIT:?}; `toygres \
             get` showed:\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let members = detail["members"].as_array().unwrap();
    let primaries = members.iter().filter(|m| m["role"] == "primary").count();
    assert_eq!(primaries, 1, "{detail}");
    detail
}

/// The sorted names of the namespace's objects of kind `K` that start with `prefix`.
async fn starting_with<K>(client: &Client, prefix: &str) -> Vec<String>
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
{
    let mut all = names::<K>(client, None).await;
    all.retain(|n| n.starts_with(prefix));
    all
}

/// Asserts that each of the instance's objects exists once, under the names of the design.
pub async fn each_object_once(client: &Client) {
    assert_eq!(
        starting_with::<StatefulSet>(client, "orders").await,
        ["orders-0", "orders-1", "orders-2"]
    );
    assert_eq!(
        starting_with::<Service>(client, "orders").await,
        ["orders-members", "orders-ro", "orders-rw"]
    );
    assert_eq!(
        starting_with::<Secret>(client, "orders").await,
        [
            "orders-0-tls",
            "orders-1-tls",
            "orders-2-tls",
            "orders-ca",
            "orders-credentials"
        ]
    );
    assert_eq!(
        starting_with::<PersistentVolumeClaim>(client, "data-orders").await,
        ["data-orders-0-0", "data-orders-1-0", "data-orders-2-0"]
    );
    assert_eq!(starting_with::<Pod>(client, "orders").await.len(), 3);
}

/// Waits until the create under way has made the first member's StatefulSet: the middle of
/// the create, where the failure tests kill the controller.
pub async fn create_under_way(client: &Client) {
    let sets: kube::Api<StatefulSet> = kube::Api::namespaced(client.clone(), super::toygres::NS);
    eventually(WAIT, "the first member's StatefulSet", || async {
        sets.get_opt("orders-0").await.ok()?.map(|_| ())
    })
    .await;
}

/// The instance takes a write through rw (table `kept`, one row); returns the superuser
/// password.
pub async fn writes_through_rw(client: &Client) -> String {
    let password = toygres::superuser_password(client, INSTANCE).await;
    let (_, ip) = rw_primary(client, INSTANCE, None).await;
    toygres::connect(client, INSTANCE, &ip, &password)
        .await
        .expect("connect to rw")
        .batch_execute("CREATE TABLE kept (id int PRIMARY KEY); INSERT INTO kept VALUES (1)")
        .await
        .unwrap();
    password
}
