//! Parameter changes on the Kubernetes platform through failures and under load (issue 15): a
//! restart-class change (`shared_buffers`) rolls through a three-member sync instance under
//! continuous writes through its rw Service, with no acknowledged commit lost and at most one
//! write pause of switchover size; and a change scheduled with `--apply at TIME` applies at its
//! time, once, although the controller was SIGKILLed while it waited.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use kube::Client;
use toygres_tests::k8s::orders::{
    commits_after, pauses, start_writer, three_members_on_a_new_cluster, INSTANCE, WAIT,
};
use toygres_tests::k8s::toygres::{
    self, create_namespace, member_pods, rw_primary, Controller, NS,
};
use toygres_tests::k8s::Cluster;
use toygres_tests::{bin_path, eventually};

/// A write pause at least this long is one of switchover size (the switchover's own measured
/// 1.6-1.8 s on this loaded machine; commits otherwise come every few tens of milliseconds).
const SWITCHOVER_SIZED: Duration = Duration::from_secs(1);

/// `SHOW setting` on every member of `orders`, by pod name (`None` while one does not answer).
async fn shown_everywhere(
    client: &Client,
    password: &str,
    setting: &str,
) -> Option<Vec<(String, String)>> {
    let mut shown = Vec::new();
    for (name, (ip, _, _)) in member_pods(client, INSTANCE).await {
        let pg = toygres::connect(client, INSTANCE, &ip, password).await?;
        let row = pg.query_one(&format!("SHOW {setting}"), &[]).await.ok()?;
        shown.push((name, row.get::<_, String>(0)));
    }
    Some(shown)
}

/// Waits until each of the `members` members of `orders` shows `value` for `setting`.
async fn shown_on_every_member(
    client: &Client,
    password: &str,
    setting: &str,
    value: &str,
    members: usize,
    within: Duration,
) {
    eventually(
        within,
        &format!("{setting} = {value} on every member"),
        || async {
            let shown = shown_everywhere(client, password, setting).await?;
            (shown.len() == members && shown.iter().all(|(_, v)| v == value)).then_some(())
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_class_change_rolls_through_three_sync_members_under_writes_losing_no_commit() {
    let (_cluster, client, controller, password) = three_members_on_a_new_cluster().await;
    let before = shown_everywhere(&client, &password, "shared_buffers")
        .await
        .expect("every member answers");
    assert!(before.iter().all(|(_, v)| v != "48MB"), "{before:?}");
    let (old_primary, _) = rw_primary(&client, INSTANCE, None).await;
    let (stop, acked, writer) = start_writer(&client, &password).await;

    // The roll: each standby restarts (caught up before the next), then the primary hands over
    // to an updated standby by switchover. The command returns once the operation ended.
    let started = Instant::now();
    controller.cli_ok(&["params", "set", INSTANCE, "shared_buffers=48MB"]);
    let rolled_in = started.elapsed();
    let after = acked.lock().unwrap().len();
    commits_after(&acked, after, 20, "20 commits after the roll").await;
    let ended = Instant::now();
    stop.store(true, Ordering::SeqCst);
    writer.await.unwrap();

    shown_on_every_member(&client, &password, "shared_buffers", "48MB", 3, WAIT).await;
    let (new_primary, new_ip) = rw_primary(&client, INSTANCE, None).await;
    assert_ne!(
        new_primary, old_primary,
        "the primary took the change by a switchover"
    );
    let acknowledged = acked.lock().unwrap().clone();
    let lost = toygres::lost_commits(&client, INSTANCE, &new_ip, &password, &acknowledged).await;
    assert!(lost.is_empty(), "acknowledged commits lost: {lost:?}");

    let gaps = pauses(&acked, started, ended);
    let long: Vec<Duration> = gaps
        .iter()
        .copied()
        .filter(|g| *g >= SWITCHOVER_SIZED)
        .collect();
    eprintln!(
        "BENCH k8s params roll: {:.1} s for the operation, {} commits, longest write pause \
         {} ms, pauses of a second or more: {long:?}, the next longest {:?}",
        rolled_in.as_secs_f64(),
        acknowledged.len(),
        gaps[0].as_millis(),
        &gaps[1..gaps.len().min(4)]
    );
    assert!(
        long.len() <= 1,
        "more than one write pause of switchover size: {long:?}"
    );
    assert!(
        gaps[0] < Duration::from_secs(10),
        "the longest pause {:?} is not of switchover size",
        gaps[0]
    );
    controller.cli_ok(&["delete", INSTANCE]);
}

/// The operation `id`'s JSON, as `toygres operation get` shows it.
fn operation(controller: &Controller, id: &str) -> Option<serde_json::Value> {
    let out = controller.cli(&["operation", "get", id, "-o", "json"]);
    serde_json::from_slice(&out.stdout).ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scheduled_change_applies_once_at_its_time_although_the_controller_was_killed_before() {
    bin_path("toygres-sidecar");
    let cluster = Cluster::start().await;
    let client = cluster.client();
    create_namespace(&client).await;
    let controller = Controller::start(&cluster).await;
    controller.cli_ok(&["create", INSTANCE, "--replicas", "1", "--no-backup"]);
    let password = toygres::superuser_password(&client, INSTANCE).await;
    let before = eventually(WAIT, "both members to answer", || async {
        shown_everywhere(&client, &password, "work_mem")
            .await
            .filter(|s| s.len() == 2)
    })
    .await;
    assert!(before.iter().all(|(_, v)| v != "40MB"), "{before:?}");

    // Scheduled a minute ahead: room for the controller's kill and restart on a loaded machine.
    let at = chrono::Utc::now() + chrono::TimeDelta::seconds(60);
    let accepted: serde_json::Value = serde_json::from_str(&controller.cli_ok(&[
        "params",
        "set",
        INSTANCE,
        "work_mem=40MB",
        "--apply",
        "at",
        &at.to_rfc3339(),
        "--no-wait",
        "-o",
        "json",
    ]))
    .unwrap();
    let id = accepted["operation_id"].as_str().unwrap().to_string();
    eventually(WAIT, "the change waiting for its time", || async {
        let op = operation(&controller, &id)?;
        op["progress"]["message"]
            .as_str()?
            .starts_with("scheduled")
            .then_some(())
    })
    .await;

    // SIGKILL the controller while the change waits; a new one on the same home carries on.
    let controller = controller.kill_and_restart().await;
    assert!(
        chrono::Utc::now() < at,
        "the controller came back only after the change's time"
    );
    let now = shown_everywhere(&client, &password, "work_mem").await;
    assert_eq!(now, Some(before), "applied before its time");

    let applied_at = eventually(
        Duration::from_secs(60 + 180),
        "every member running the change",
        || async {
            let shown = shown_everywhere(&client, &password, "work_mem").await?;
            (shown.len() == 2 && shown.iter().all(|(_, v)| v == "40MB")).then(chrono::Utc::now)
        },
    )
    .await;
    assert!(applied_at >= at, "applied at {applied_at}, before {at}");
    let done = eventually(WAIT, "the operation to end", || async {
        let op = operation(&controller, &id)?;
        (op["status"] != "pending" && op["status"] != "running").then_some(op)
    })
    .await;
    assert_eq!(done["status"], "succeeded", "{done}");
    eprintln!(
        "BENCH k8s params scheduled change seen on every member {:.1} s after its time \
         (controller SIGKILLed before it)",
        (applied_at - at).num_milliseconds() as f64 / 1000.0
    );

    // Once: each member's sidecar wrote one parameter change in all.
    for pod in member_pods(&client, INSTANCE).await.keys() {
        let log = cluster.container_log(NS, pod, "sidecar").await;
        assert_eq!(
            log.matches("parameters changed").count(),
            1,
            "{pod} wrote the change other than once"
        );
    }
    controller.cli_ok(&["delete", INSTANCE]);
}
