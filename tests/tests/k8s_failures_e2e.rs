//! Failures of the Kubernetes platform on the harness's real control plane and process nodes:
//! kill -9 of every process of the primary's pod under continuous writes (the rw Service moves
//! to a new primary, no acknowledged commit is lost, the old pod rejoins as a streaming
//! standby), and the controller SIGKILLed in the middle of a create (a new controller on the
//! same home finishes it, with no object made twice). `bench_k8s_failover_and_switchover`
//! (ignored; `scripts/bench/k8s.sh` runs it) times create, kill -9 failovers and switchovers.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod, Secret, Service};
use kube::{Api, Client};
use toygres_tests::k8s::toygres::{
    self, create_namespace, member_pods, ready_endpoints, rw_primary, Ack, Controller, NS,
};
use toygres_tests::k8s::Cluster;
use toygres_tests::{bin_path, eventually};

const WAIT: Duration = Duration::from_secs(180);
const INSTANCE: &str = "orders";
/// `toygres create` of a three-member sync instance.
const CREATE: [&str; 7] = [
    "create",
    INSTANCE,
    "--replicas",
    "2",
    "--replication",
    "sync",
    "--no-backup",
];

type Acked = Arc<Mutex<Vec<Ack>>>;

/// A three-member sync instance with table `kept`, both standbys in `orders-ro`; returns the
/// superuser password and how long `toygres create` took.
async fn three_member_instance(controller: &Controller, client: &Client) -> (String, Duration) {
    let started = Instant::now();
    controller.cli_ok(&CREATE);
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
async fn whole(client: &Client, password: &str) {
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
async fn streaming(client: &Client, ip: &str, password: &str) -> bool {
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
async fn commits_after(acked: &Acked, after: usize, n: usize, what: &str) {
    eventually(WAIT, what, || async {
        (acked.lock().unwrap().len() >= after + n).then_some(())
    })
    .await;
}

/// kill -9 of every process of the primary's pod under the writer: waits until rw leads to
/// another primary and it has taken 10 commits; returns the time from the kill to the first
/// commit the new primary acknowledged, and the old and new primaries' (name, IP).
async fn kill_the_primary(
    cluster: &Cluster,
    client: &Client,
    acked: &Acked,
) -> (Duration, String, (String, String)) {
    let (primary, _) = rw_primary(client, INSTANCE, None).await;
    let before = acked.lock().unwrap().len();
    let killed_at = Instant::now();
    cluster.kill_pod(NS, &primary);
    let new = rw_primary(client, INSTANCE, Some(&primary)).await;
    commits_after(acked, before, 10, "10 commits after the kill").await;
    let first = eventually(WAIT, "a commit through the new primary", || async {
        acked
            .lock()
            .unwrap()
            .iter()
            .find(|ack| ack.at > killed_at && ack.by == new.1)
            .map(|ack| ack.at - killed_at)
    })
    .await;
    (first, primary, new)
}

/// Waits until `pod` is labelled standby, in `orders-ro` and streaming.
async fn rejoined_as_standby(client: &Client, pod: &str, password: &str) {
    eventually(
        WAIT,
        "the old primary back as a streaming standby",
        || async {
            let pods = member_pods(client, INSTANCE).await;
            let (ip, role, _) = pods.get(pod)?;
            let ro = ready_endpoints(client, "orders-ro").await;
            (role.as_deref() == Some("standby")
                && ro.contains(ip)
                && streaming(client, ip, password).await)
                .then_some(())
        },
    )
    .await;
}

async fn start_writer(
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_of_the_primary_pod_moves_rw_loses_no_commit_and_the_pod_rejoins_as_a_standby() {
    bin_path("toygres-sidecar");
    let cluster = Cluster::start().await;
    let client = cluster.client();
    create_namespace(&client).await;
    let controller = Controller::start(&cluster).await;
    let (password, _) = three_member_instance(&controller, &client).await;
    let (stop, acked, writer) = start_writer(&client, &password).await;

    let (first_commit, old, (new, new_ip)) = kill_the_primary(&cluster, &client, &acked).await;
    eprintln!("kill -9 of {old}: {new} took the first commit {first_commit:?} after the kill");
    stop.store(true, Ordering::SeqCst);
    writer.await.unwrap();
    let acknowledged = acked.lock().unwrap().clone();
    let lost = toygres::lost_commits(&client, INSTANCE, &new_ip, &password, &acknowledged).await;
    assert!(lost.is_empty(), "acknowledged commits lost: {lost:?}");

    rejoined_as_standby(&client, &old, &password).await;
    assert_eq!(
        ready_endpoints(&client, "orders-rw").await,
        [new_ip].into(),
        "rw leads to the new primary alone"
    );
    controller.cli_ok(&["delete", INSTANCE]);
}

/// The sorted names of every object of kind `K` in the namespace.
async fn names<K>(client: &Client) -> Vec<String>
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
{
    toygres::names::<K>(client, None).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_create_the_controller_was_killed_in_the_middle_of_completes_under_a_new_controller() {
    bin_path("toygres-sidecar");
    let cluster = Cluster::start().await;
    let client = cluster.client();
    create_namespace(&client).await;
    let controller = Controller::start(&cluster).await;
    controller.cli_ok(&[&CREATE[..], &["--no-wait"]].concat());
    let sets: Api<StatefulSet> = Api::namespaced(client.clone(), NS);
    eventually(WAIT, "the first member's StatefulSet", || async {
        sets.get_opt("orders-0").await.ok()?.map(|_| ())
    })
    .await;
    let controller = controller.kill_and_restart().await;

    let detail = eventually(
        WAIT,
        "the instance running with three healthy members",
        || async {
            let out = controller.cli(&["get", INSTANCE, "-o", "json"]);
            let detail: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
            let members = detail["members"].as_array()?;
            (detail["state"] == "running"
                && detail["health"] == "healthy"
                && members.len() == 3
                && members.iter().all(|m| m["health"] == "healthy"))
            .then_some(detail)
        },
    )
    .await;
    let members = detail["members"].as_array().unwrap();
    let primaries = members.iter().filter(|m| m["role"] == "primary").count();
    assert_eq!(primaries, 1, "{detail}");

    // Each object once, under the names of the design.
    assert_eq!(
        names::<StatefulSet>(&client).await,
        ["orders-0", "orders-1", "orders-2"]
    );
    assert_eq!(
        names::<Service>(&client).await,
        ["orders-members", "orders-ro", "orders-rw"]
    );
    let secrets: Vec<String> = names::<Secret>(&client)
        .await
        .into_iter()
        .filter(|n| n.starts_with("orders"))
        .collect();
    assert_eq!(
        secrets,
        [
            "orders-0-tls",
            "orders-1-tls",
            "orders-2-tls",
            "orders-ca",
            "orders-credentials"
        ]
    );
    assert_eq!(
        names::<PersistentVolumeClaim>(&client).await,
        ["data-orders-0-0", "data-orders-1-0", "data-orders-2-0"]
    );
    assert_eq!(names::<Pod>(&client).await.len(), 3);
    // The instance works: a write through rw.
    let password = toygres::superuser_password(&client, INSTANCE).await;
    let (_, ip) = rw_primary(&client, INSTANCE, None).await;
    toygres::connect(&client, INSTANCE, &ip, &password)
        .await
        .expect("connect to rw")
        .batch_execute("CREATE TABLE kept (id int PRIMARY KEY); INSERT INTO kept VALUES (1)")
        .await
        .unwrap();
    controller.cli_ok(&["delete", INSTANCE]);
}

fn trials(var: &str, default: usize) -> usize {
    std::env::var(var)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The longest gap between consecutive acknowledged commits in `[from, to]`.
fn longest_pause(acked: &Acked, from: Instant, to: Instant) -> Duration {
    let times: Vec<Instant> = acked
        .lock()
        .unwrap()
        .iter()
        .map(|ack| ack.at)
        .filter(|at| *at >= from && *at <= to)
        .collect();
    let first = times.first().map(|at| *at - from).unwrap_or(to - from);
    times
        .windows(2)
        .map(|w| w[1] - w[0])
        .fold(first, Duration::max)
}

/// Create with two standbys, then TRIALS (10) kill -9 failovers of the primary's pod and
/// SWITCHOVERS (5) switchovers under a single writer through the rw Service's endpoint. Prints
/// `BENCH` lines, per trial.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a benchmark: scripts/bench/k8s.sh"]
async fn bench_k8s_failover_and_switchover() {
    bin_path("toygres-sidecar");
    let cluster = Cluster::start().await;
    let client = cluster.client();
    create_namespace(&client).await;
    let controller = Controller::start(&cluster).await;
    let (password, created_in) = three_member_instance(&controller, &client).await;
    println!(
        "BENCH create replicas=2 seconds={:.2}",
        created_in.as_secs_f64()
    );
    controller.cli_ok(&["ha", "set", INSTANCE, "--cooldown-secs", "0"]);
    let (stop, acked, writer) = start_writer(&client, &password).await;

    let mut failovers = Vec::new();
    for trial in 1..=trials("TRIALS", 10) {
        whole(&client, &password).await;
        let (first, old, (new, _)) = kill_the_primary(&cluster, &client, &acked).await;
        println!(
            "BENCH kill9 trial={trial} {old}->{new} first_commit_ms={}",
            first.as_millis()
        );
        failovers.push(first);
        rejoined_as_standby(&client, &old, &password).await;
    }
    failovers.sort();
    let n = failovers.len();
    let median = (failovers[(n - 1) / 2] + failovers[n / 2]) / 2;
    println!(
        "BENCH kill9 trials={n} median_ms={} max_ms={}",
        median.as_millis(),
        failovers[n - 1].as_millis()
    );

    for trial in 1..=trials("SWITCHOVERS", 5) {
        whole(&client, &password).await;
        let (old, _) = rw_primary(&client, INSTANCE, None).await;
        let before = acked.lock().unwrap().len();
        let started = Instant::now();
        controller.cli_ok(&["replication", "switchover", INSTANCE]);
        let (new, _) = rw_primary(&client, INSTANCE, Some(&old)).await;
        commits_after(&acked, before, 10, "10 commits after the switchover").await;
        let pause = longest_pause(&acked, started, Instant::now());
        println!(
            "BENCH switchover trial={trial} {old}->{new} write_pause_ms={} total_ms={}",
            pause.as_millis(),
            started.elapsed().as_millis()
        );
    }
    stop.store(true, Ordering::SeqCst);
    writer.await.unwrap();
    let acknowledged = acked.lock().unwrap().clone();
    let (_, ip) = rw_primary(&client, INSTANCE, None).await;
    let lost = toygres::lost_commits(&client, INSTANCE, &ip, &password, &acknowledged).await;
    assert!(lost.is_empty(), "acknowledged commits lost: {lost:?}");
    controller.cli_ok(&["delete", INSTANCE]);
}
