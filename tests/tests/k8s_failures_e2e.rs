//! Failures of the Kubernetes platform on the harness's real control plane and process nodes:
//! kill -9 of every process of the primary's pod under continuous writes (the rw Service moves
//! to a new primary, no acknowledged commit is lost, the old pod rejoins as a streaming
//! standby), and the controller SIGKILLed in the middle of a create (a new controller on the
//! same home finishes it, with no object made twice). `bench_k8s_failover_and_switchover`
//! (ignored; `scripts/bench/k8s.sh` runs it) times create, kill -9 failovers and switchovers.

use std::collections::BTreeSet;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::{Api, Client};
use toygres_tests::k8s::orders::{
    commits_after, create_under_way, each_object_once, longest_pause,
    running_with_three_healthy_members, start_writer, streaming, three_member_instance,
    three_members_on_a_new_cluster, whole, writes_through_rw, Acked, CREATE, INSTANCE, WAIT,
};
use toygres_tests::k8s::toygres::{
    self, create_namespace, member_pods, ready_endpoints, rw_primary, Controller, NS,
};
use toygres_tests::k8s::Cluster;
use toygres_tests::{bin_path, eventually};

/// kill -9 of every process of the primary's pod under the writer: waits until rw leads to
/// another primary and it has taken 10 commits; returns the time from the kill to the first
/// commit the new primary acknowledged and to when the writer sent that commit, and the old and
/// new primaries' (name, IP).
async fn kill_the_primary(
    cluster: &Cluster,
    client: &Client,
    acked: &Acked,
) -> (Duration, Duration, String, (String, String)) {
    let (primary, _) = rw_primary(client, INSTANCE, None).await;
    let before = acked.lock().unwrap().len();
    let killed_at = Instant::now();
    cluster.kill_pod(NS, &primary);
    let new = rw_primary(client, INSTANCE, Some(&primary)).await;
    commits_after(acked, before, 10, "10 commits after the kill").await;
    let (first, sent) = eventually(WAIT, "a commit through the new primary", || async {
        acked
            .lock()
            .unwrap()
            .iter()
            .find(|ack| ack.at > killed_at && ack.by == new.1)
            .map(|ack| {
                (
                    ack.at - killed_at,
                    ack.sent.saturating_duration_since(killed_at),
                )
            })
    })
    .await;
    (first, sent, primary, new)
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_of_the_primary_pod_moves_rw_loses_no_commit_and_the_pod_rejoins_as_a_standby() {
    let (cluster, client, controller, password) = three_members_on_a_new_cluster().await;
    let (stop, acked, writer) = start_writer(&client, &password).await;

    let (first_commit, _, old, (new, new_ip)) = kill_the_primary(&cluster, &client, &acked).await;
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_create_the_controller_was_killed_in_the_middle_of_completes_under_a_new_controller() {
    bin_path("toygres-sidecar");
    let cluster = Cluster::start().await;
    let client = cluster.client();
    create_namespace(&client).await;
    let controller = Controller::start(&cluster).await;
    controller.cli_ok(&[&CREATE[..], &["--no-wait"]].concat());
    create_under_way(&client).await;
    let controller = controller.kill_and_restart().await;

    running_with_three_healthy_members(|| controller.cli(&["get", INSTANCE, "-o", "json"])).await;
    each_object_once(&client).await;
    // The instance works: a write through rw.
    writes_through_rw(&client).await;
    controller.cli_ok(&["delete", INSTANCE]);
}

fn trials(var: &str, default: usize) -> usize {
    std::env::var(var)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
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

    let (rw_history, rw_watch) = watch_rw(&client);
    let mut failovers = Vec::new();
    for trial in 1..=trials("TRIALS", 10) {
        whole(&client, &password).await;
        let killed_at = SystemTime::now();
        let (first, sent, old, (new, new_ip)) = kill_the_primary(&cluster, &client, &acked).await;
        println!(
            "BENCH kill9 trial={trial} {old}->{new} first_commit_ms={}",
            first.as_millis()
        );
        let steps = failover_steps(&controller, &rw_history, killed_at, &old, &new, &new_ip);
        println!(
            "BENCH kill9-steps trial={trial} {steps} first_commit_sent={} first_commit={}",
            sent.as_millis(),
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

    rw_watch.abort();
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

/// The rw Service's ready endpoint addresses as its EndpointSlice changed, with when.
type RwHistory = Arc<Mutex<Vec<(SystemTime, BTreeSet<String>)>>>;

/// Watches `orders-rw`'s EndpointSlice and records each change of its ready addresses.
fn watch_rw(client: &Client) -> (RwHistory, tokio::task::JoinHandle<()>) {
    use futures::StreamExt as _;
    use kube::runtime::{watcher, WatchStreamExt as _};

    let history = RwHistory::default();
    let slices: Api<EndpointSlice> = Api::namespaced(client.clone(), NS);
    let config =
        watcher::Config::default().labels(&format!("kubernetes.io/service-name={INSTANCE}-rw"));
    let recorded = history.clone();
    let watch = tokio::spawn(async move {
        let mut events =
            std::pin::pin!(watcher(slices, config).default_backoff().applied_objects());
        while let Some(slice) = events.next().await {
            let Ok(slice) = slice else { continue };
            let ready: BTreeSet<String> = slice
                .endpoints
                .iter()
                .flatten()
                .filter(|e| e.conditions.as_ref().and_then(|c| c.ready) == Some(true))
                .flat_map(|e| e.addresses.iter().cloned())
                .collect();
            recorded.lock().unwrap().push((SystemTime::now(), ready));
        }
    });
    (history, watch)
}

/// Where a kill -9 failover's time went, in ms from the kill: the controller's log (the
/// failover started, the old pod deleted, the target promoted, the target labelled primary)
/// and the rw EndpointSlice as watched (the old primary out, the new one in).
fn failover_steps(
    controller: &Controller,
    rw: &RwHistory,
    killed_at: SystemTime,
    old: &str,
    new: &str,
    new_ip: &str,
) -> String {
    let since = |at: SystemTime| -> String {
        at.duration_since(killed_at)
            .map(|d| d.as_millis().to_string())
            .unwrap_or_else(|_| "-".into())
    };
    let log = std::fs::read_to_string(&controller.log).unwrap_or_default();
    let logged: Vec<(SystemTime, &str)> = log
        .lines()
        .filter_map(|line| {
            let (stamp, rest) = line.split_once(' ')?;
            let at = chrono::DateTime::parse_from_rfc3339(stamp).ok()?;
            let at: SystemTime = at.with_timezone(&chrono::Utc).into();
            (at >= killed_at).then_some((at, rest))
        })
        .collect();
    let first_logged = |all: &[&str]| {
        logged
            .iter()
            .find(|(_, line)| all.iter().all(|part| line.contains(part)))
            .map_or("-".to_string(), |(at, _)| since(*at))
    };
    let old_pod = format!("{old}\"");
    let new_pod = format!("{new}\"");
    let history = rw.lock().unwrap();
    let (before, after): (Vec<_>, Vec<_>) = history.iter().partition(|(at, _)| *at < killed_at);
    let serving = before
        .last()
        .map(|(_, ready)| ready.clone())
        .unwrap_or_default();
    let rw_out = after
        .iter()
        .find(|(_, ready)| serving.iter().all(|ip| !ready.contains(ip)))
        .map_or("-".to_string(), |(at, _)| since(*at));
    let rw_new = after
        .iter()
        .find(|(_, ready)| ready.contains(new_ip))
        .map_or("-".to_string(), |(at, _)| since(*at));
    format!(
        "failover_started={} old_unlabelled={} old_pod_deleted={} promoted={} new_labelled={} \
         rw_out={rw_out} rw_new={rw_new}",
        first_logged(&["fencing_primary"]),
        first_logged(&["labelled the pod", &old_pod, "none"]),
        first_logged(&["killed the member's pod"]),
        first_logged(&["updating_routing"]),
        first_logged(&["labelled the pod", &new_pod, "primary"]),
    )
}
