//! High availability end to end on the local platform: switchover and automatic failover under
//! continuous writes through the rw endpoint (no acknowledged commit lost, one writer at a time),
//! rejoin of the old primary, manual failover, the switches that keep a failover from happening
//! (disabled, no eligible standby), and a controller killed in the middle of a failover.

#![allow(clippy::unwrap_used)]

mod support;

use std::fs;
use std::time::{Duration, Instant};

use support::*;
use toygres_common::controller_api::{InstanceDetail, Operation, OperationAccepted};

/// How long a failover, with the old primary's rejoin, may take.
const FAILOVER_DEADLINE: Duration = Duration::from_secs(120);

/// The longest time between two consecutive acknowledged commits within `[from, to]`.
fn longest_pause(acks: &[Ack], from: Instant, to: Instant) -> Duration {
    let within: Vec<Instant> = acks
        .iter()
        .map(|a| a.at)
        .filter(|at| *at >= from && *at <= to)
        .collect();
    within
        .windows(2)
        .map(|w| w[1] - w[0])
        .max()
        .unwrap_or_default()
}

/// Polls the instance's events until one of `kind` is there.
async fn wait_event(api: &Api, instance: &str, kind: &str) {
    eventually(FAILOVER_DEADLINE, &format!("a {kind} event"), || async {
        events(api, instance)
            .await
            .events
            .iter()
            .any(|e| e.kind == kind)
            .then_some(())
    })
    .await;
}

/// Starts a controller with `env` and creates an instance from `request`.
async fn start_with_instance(env: &[(&str, &str)], request: serde_json::Value) -> (Home, Api) {
    let mut home = Home::new();
    let api = home.start_with_env(env).await;
    create_and_wait(&api, &home, request).await;
    (home, api)
}

/// Creates an instance from `request` and waits until its creation succeeded.
async fn create_and_wait(api: &Api, home: &Home, request: serde_json::Value) {
    let (status, body) = post(api, "/v1/instances", request).await;
    assert_eq!(status, 202, "{body}");
    let accepted: OperationAccepted = serde_json::from_str(&body).unwrap();
    let created = api.wait_operation(home, &accepted.operation_id).await;
    assert_eq!(created.status, "succeeded", "{created:?}\n{}", home.logs());
}

/// Runs `sql` through the rw endpoint on a fresh connection, again until it succeeds (the
/// endpoint may be moving to a new primary).
async fn write_through(rw: &str, password: &str, sql: &str) {
    eventually(Duration::from_secs(30), "a write through rw", || async {
        let (mut config, tls) = pg_config(rw);
        config
            .password(password)
            .connect_timeout(Duration::from_secs(5));
        let (client, connection) = config.connect(tls).await.ok()?;
        tokio::spawn(connection);
        client.batch_execute(sql).await.ok()
    })
    .await
}

async fn post(api: &Api, path: &str, body: serde_json::Value) -> (u16, String) {
    api.send(reqwest::Method::POST, path, Some(body)).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_mode_switchover_and_ten_kill_failovers_lose_no_acknowledged_commit() {
    // No cooldown: the kills follow each other as soon as the instance is whole again.
    let (home, api) = start_with_instance(
        &[NO_RESTARTS],
        serde_json::json!({"name": "ha", "replicas": 2, "replication": "sync",
                           "ha": {"cooldown_secs": 0}}),
    )
    .await;
    let (rw, password) = connection(&api, "ha").await;
    connect(&rw, &password)
        .await
        .batch_execute("CREATE TABLE acked (id bigint PRIMARY KEY)")
        .await
        .unwrap();
    let writer = Writers::start(1, &rw, &password);
    writer
        .acked_after(Instant::now(), None, "the first acknowledged write")
        .await;

    // Switchover under writes: the primary hands over to a standby, nothing is lost.
    let before = primary_of(&api, "ha").await.unwrap();
    let began = Instant::now();
    let (status, body) = post(&api, "/v1/instances/ha/switchover", serde_json::json!({})).await;
    assert_eq!(status, 202, "{body}");
    let id = serde_json::from_str::<serde_json::Value>(&body).unwrap()["operation_id"]
        .as_str()
        .unwrap()
        .to_string();
    let switchover = api.wait_operation(&home, &id).await;
    assert_eq!(
        switchover.status,
        "succeeded",
        "{switchover:?}\n{}",
        home.logs()
    );
    let progress = switchover.progress.clone().unwrap();
    assert_eq!(progress.state.as_deref(), Some("completed"));
    let handover = progress.handover.unwrap();
    assert_eq!(handover.old_primary.as_deref(), Some(before.as_str()));
    assert_eq!(handover.data_loss_bytes, Some(0));
    let after = primary_of(&api, "ha").await.unwrap();
    assert_ne!(after, before);
    writer
        .acked_after(Instant::now(), None, "a write after the switchover")
        .await;
    let pause = longest_pause(&writer.acks(), began, Instant::now());
    eprintln!("switchover: longest write pause {pause:?}");
    wait_all_healthy(&api, &home, "ha", 3).await;
    let old = members(&api, "ha").await;
    assert!(
        old.members
            .iter()
            .any(|m| m.name == before && m.role == "standby"),
        "the old primary did not rejoin as a standby"
    );

    // Ten times: kill -9 the primary's sidecar and Postgres while writes go on.
    let mut failover_times = Vec::new();
    for round in 1..=10 {
        let primary = primary_of(&api, "ha").await.unwrap();
        let port = pg_port(&api, "ha", &primary).await;
        let killed = Instant::now();
        kill_member(&home, "ha", &primary);
        let next = eventually(FAILOVER_DEADLINE, "a new primary", || async {
            primary_of(&api, "ha").await.filter(|p| *p != primary)
        })
        .await;
        let first_write = writer
            .acked_after(killed, Some(port), "a write through rw after the failover")
            .await;
        failover_times.push(first_write - killed);
        eprintln!(
            "failover {round}: {primary} -> {next}, first write after {:?}",
            first_write - killed
        );
        wait_all_healthy(&api, &home, "ha", 3).await;
    }
    let acks = writer.stop().await;

    // Every acknowledged commit is there. One writer at a time: in commit order, the server
    // that took the writes changes once per change of primary (a switchover and ten
    // failovers), never back and forth.
    assert!(acks.len() > 100, "only {} writes acknowledged", acks.len());
    assert_no_commit_lost(&rw, &password, &acks, 11).await;
    let handovers: Vec<_> = events(&api, "ha")
        .await
        .events
        .into_iter()
        .filter(|e| e.kind == "failover-automatic")
        .collect();
    assert_eq!(handovers.len(), 10, "{handovers:?}");
    // Only the old primaries rejoined (one per change of primary): the standby left behind by
    // each failover followed the new primary as it was, without a rewind or a re-clone.
    let rejoined: Vec<_> = events(&api, "ha")
        .await
        .events
        .into_iter()
        .filter(|e| e.kind == "rejoined")
        .map(|e| e.message)
        .collect();
    assert_eq!(rejoined.len(), 11, "{rejoined:#?}");
    failover_times.sort();
    eprintln!(
        "failover to first write: median {:?}, max {:?}",
        failover_times[failover_times.len() / 2],
        failover_times.last().unwrap()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failover_is_held_back_when_disabled_or_impossible_and_survives_a_controller_kill() {
    let (mut home, api) = start_with_instance(
        &[NO_RESTARTS],
        serde_json::json!({"name": "solo", "replicas": 1, "replication": "async"}),
    )
    .await;

    // A manual failover of a healthy primary is refused; a switchover is what that is.
    wait_all_healthy(&api, &home, "solo", 2).await;
    let (status, body) = post(&api, "/v1/instances/solo/failover", serde_json::json!({})).await;
    assert_eq!(status, 409, "{body}");
    assert!(body.contains("switchover"), "{body}");
    let (status, body) = post(
        &api,
        "/v1/instances/solo/switchover",
        serde_json::json!({"old_primary_action": "explode"}),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    let (status, body) = post(
        &api,
        "/v1/instances/solo/failover",
        serde_json::json!({"to": "solo-7"}),
    )
    .await;
    assert_eq!(status, 404, "{body}");
    let (status, body) = api
        .send(
            reqwest::Method::PUT,
            "/v1/instances/solo/ha",
            Some(serde_json::json!({"failure_threshold": 0})),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    let (status, body) = post(
        &api,
        "/v1/instances/solo/replicas",
        serde_json::json!({"mode": "sync"}),
    )
    .await;
    assert_eq!(status, 409, "a sync standby in an async instance: {body}");

    // A custom health query: false marks the members as failing it, the instance degraded.
    stdout(&home.cli(&["ha", "set", "solo", "--health-query", "SELECT 1 = 2"]));
    eventually(Duration::from_secs(60), "a check-failed event", || async {
        let detail: InstanceDetail = api.get("/v1/instances/solo").await;
        let failed = events(&api, "solo")
            .await
            .events
            .iter()
            .any(|e| e.kind == "check-failed");
        (failed && detail.summary.health == "degraded").then_some(())
    })
    .await;
    stdout(&home.cli(&["ha", "set", "solo", "--health-query", ""]));
    eventually(Duration::from_secs(60), "a check-ok event", || async {
        let detail: InstanceDetail = api.get("/v1/instances/solo").await;
        let ok = events(&api, "solo")
            .await
            .events
            .iter()
            .any(|e| e.kind == "check-ok");
        (ok && detail.summary.health == "healthy").then_some(())
    })
    .await;

    // Disabled: the primary dies, the actor says so once and promotes nobody.
    let out = stdout(&home.cli(&["ha", "set", "solo", "--failover-enabled", "false"]));
    assert!(out.contains("failover_enabled      false"), "{out}");
    kill_member(&home, "solo", "solo-0");
    wait_event(&api, "solo", "failover-disabled").await;
    let status = members(&api, "solo").await;
    assert_eq!(primary_of(&api, "solo").await.as_deref(), Some("solo-0"));
    assert!(status
        .members
        .iter()
        .any(|m| m.name == "solo-1" && m.role == "standby" && m.health == "healthy"));

    // The operator fails over by hand; the controller is killed while it runs and finishes it
    // after a restart.
    let accepted =
        stdout(&home.cli(&["replication", "failover", "solo", "--no-wait", "-o", "json"]));
    let id = serde_json::from_str::<serde_json::Value>(&accepted).unwrap()["operation_id"]
        .as_str()
        .unwrap()
        .to_string();
    // Killed once it has surveyed the members and chosen (past its check that the primary is
    // down): the restarted controller's platform starts the dead primary's processes again,
    // and a survey after that would rightly find a healthy primary and refuse.
    eventually(
        Duration::from_secs(60),
        "the failover to choose",
        || async {
            let (status, body) = api
                .send(reqwest::Method::GET, &format!("/v1/operations/{id}"), None)
                .await;
            let operation =
                (status == 200).then(|| serde_json::from_str::<Operation>(&body).unwrap())?;
            let chosen = operation
                .progress
                .as_ref()
                .and_then(|p| p.handover.as_ref())
                .is_some_and(|h| h.new_primary.is_some());
            (chosen || operation.is_finished()).then_some(())
        },
    )
    .await;
    home.kill_controller();
    let api = home.start_with_env(&[NO_RESTARTS]).await;
    let failover = api.wait_operation(&home, &id).await;
    assert_eq!(
        failover.status,
        "succeeded",
        "{failover:?}\n{}",
        home.logs()
    );
    // Async: what the new primary may lack is bounded by the lag bound it was chosen under.
    let handover = failover.progress.clone().unwrap().handover.unwrap();
    assert!(
        handover.data_loss_bytes.unwrap() <= 16 * 1024 * 1024,
        "{handover:?}"
    );
    assert_eq!(primary_of(&api, "solo").await.as_deref(), Some("solo-1"));
    let (rw, password) = connection(&api, "solo").await;
    write_through(
        &rw,
        &password,
        "CREATE TABLE IF NOT EXISTS after_failover (x int)",
    )
    .await;
    // The old primary came back as a standby of the new one.
    wait_all_healthy(&api, &home, "solo", 2).await;

    // No eligible standby: the standby is down when the primary dies. An alert, no failover.
    let out = stdout(&home.cli(&["ha", "set", "solo", "--failover-enabled", "true"]));
    assert!(out.contains("failover_enabled      true"), "{out}");
    kill_member(&home, "solo", "solo-0");
    kill_member(&home, "solo", "solo-1");
    wait_event(&api, "solo", "ha-alert").await;
    assert_eq!(primary_of(&api, "solo").await.as_deref(), Some("solo-1"));
    let metrics = api
        .http
        .get(format!("{}/metrics", api.url))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("toygres_controller_ha_events_total{kind=\"ha-alert\"}"),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn degrade_mode_keeps_writing_without_the_sync_standby_and_restores_it() {
    // The platform restarts the killed standby within 4 s (the test's default supervisor).
    let (home, api) = start_with_instance(
        &[],
        serde_json::json!({"name": "deg", "replicas": 1, "replication": "sync",
                           "ha": {"sync_mode": "degrade", "degrade_timeout_secs": 1}}),
    )
    .await;
    wait_all_healthy(&api, &home, "deg", 2).await;
    let (rw, password) = connection(&api, "deg").await;
    let client = connect(&rw, &password).await;
    client
        .batch_execute("CREATE TABLE t (x int)")
        .await
        .unwrap();

    // The only synchronous standby dies: after the degrade timeout the commit goes through.
    kill_member(&home, "deg", "deg-1");
    tokio::time::timeout(
        Duration::from_secs(60),
        client.batch_execute("INSERT INTO t VALUES (1)"),
    )
    .await
    .expect("the commit still waits: the primary did not degrade")
    .unwrap();
    wait_event(&api, "deg", "sync-degraded").await;
    // Back (restarted by the platform), it is synchronous again.
    wait_event(&api, "deg", "sync-restored").await;
    wait_all_healthy(&api, &home, "deg", 2).await;
    let metrics = api
        .http
        .get(format!("{}/metrics", api.url))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("toygres_controller_ha_events_total{kind=\"sync-degraded\"}"),
        "{metrics}"
    );

    // A standby added with --mode async streams but never confirms commits.
    stdout(&home.cli(&[
        "replication",
        "add",
        "deg",
        "--mode",
        "async",
        "--max-lag-bytes",
        "1048576",
    ]));
    eventually(
        Duration::from_secs(60),
        "deg-2 streaming as async",
        || async {
            let status = members(&api, "deg").await;
            let added = status.members.iter().find(|m| m.name == "deg-2")?;
            (!added.sync_candidate
                && added.max_lag_bytes == Some(1_048_576)
                && added.sync_state.as_deref() == Some("async"))
            .then_some(())
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quorum_switchover_actions_and_a_forced_failover() {
    let (home, api) = start_with_instance(
        &[NO_RESTARTS],
        serde_json::json!({"name": "sw", "replicas": 2, "replication": "sync",
                           "ha": {"quorum": true, "num_sync": 1}}),
    )
    .await;
    // ANY 1 of the two standbys: Postgres reports both as quorum standbys.
    eventually(Duration::from_secs(60), "two quorum standbys", || async {
        let status = members(&api, "sw").await;
        (status
            .members
            .iter()
            .filter(|m| m.sync_state.as_deref() == Some("quorum"))
            .count()
            == 2)
            .then_some(())
    })
    .await;
    let (rw, password) = connection(&api, "sw").await;
    let client = connect(&rw, &password).await;
    client
        .batch_execute("CREATE TABLE t (x int)")
        .await
        .unwrap();
    drop(client);
    let write = |value: i32| {
        let (rw, password) = (rw.clone(), password.clone());
        async move { write_through(&rw, &password, &format!("INSERT INTO t VALUES ({value})")).await }
    };
    write(1).await;

    // stop_and_retain: the old primary stays fenced with its data, out of the endpoints.
    let out = stdout(&home.cli(&[
        "replication",
        "switchover",
        "sw",
        "--to",
        "sw-1",
        "--old-primary-action",
        "stop_and_retain",
    ]));
    assert!(out.contains("sw-0 -> sw-1"), "{out}");
    assert!(out.contains("data loss 0 B"), "{out}");
    let status = members(&api, "sw").await;
    let old = status.members.iter().find(|m| m.name == "sw-0").unwrap();
    assert_eq!(
        (old.role.as_str(), old.state.as_str()),
        ("standby", "fenced")
    );
    assert!(home
        .path()
        .join("instances/sw/sw-0/data/PG_VERSION")
        .exists());
    write(2).await;

    // A forced failover of a healthy primary: fenced first, then the standby takes over, and
    // the fenced one rejoins.
    let out = stdout(&home.cli(&["replication", "failover", "sw", "--to", "sw-2", "--force"]));
    assert!(out.contains("sw-1 -> sw-2"), "{out}");
    write(3).await;
    eventually(FAILOVER_DEADLINE, "sw-1 to rejoin", || async {
        let status = members(&api, "sw").await;
        status
            .members
            .iter()
            .any(|m| m.name == "sw-1" && m.role == "standby" && m.health == "healthy")
            .then_some(())
    })
    .await;

    // terminate would leave sw-1 without a synchronous standby (sw-0 is kept fenced):
    // refused before anything is touched.
    let refused = home.cli(&[
        "replication",
        "switchover",
        "sw",
        "--to",
        "sw-1",
        "--old-primary-action",
        "terminate",
    ]);
    assert!(!refused.status.success());
    let message = String::from_utf8_lossy(&refused.stderr).to_string();
    assert!(
        message.contains("without a synchronous standby"),
        "{message}"
    );
    assert_eq!(primary_of(&api, "sw").await.as_deref(), Some("sw-2"));

    // With one more standby it goes through: the old primary is deleted with its data.
    stdout(&home.cli(&["replication", "add", "sw"]));
    let out = stdout(&home.cli(&[
        "replication",
        "switchover",
        "sw",
        "--to",
        "sw-1",
        "--old-primary-action",
        "terminate",
    ]));
    assert!(out.contains("sw-2 -> sw-1"), "{out}");
    assert!(!home.path().join("instances/sw/sw-2").exists());
    assert!(home.instance_processes("sw").iter().all(|pid| {
        !fs::read_to_string(format!("/proc/{pid}/cmdline"))
            .unwrap_or_default()
            .contains("sw-2/")
    }));
    write(4).await;
    let client = connect(&rw, &password).await;
    let rows: Vec<i32> = client
        .query("SELECT x FROM t ORDER BY x", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(rows, [1, 2, 3, 4]);
    let names: Vec<String> = members(&api, "sw")
        .await
        .members
        .into_iter()
        .map(|m| m.name)
        .collect();
    assert_eq!(names, ["sw-0", "sw-1", "sw-3"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_failure_within_the_cooldown_is_not_failed_over() {
    let (home, api) = start_with_instance(
        &[NO_RESTARTS],
        serde_json::json!({"name": "cool", "replicas": 2, "replication": "async",
                           "ha": {"cooldown_secs": 600}}),
    )
    .await;
    wait_all_healthy(&api, &home, "cool", 3).await;

    // The first failure is failed over automatically.
    kill_member(&home, "cool", "cool-0");
    let first = eventually(FAILOVER_DEADLINE, "an automatic failover", || async {
        primary_of(&api, "cool").await.filter(|p| p != "cool-0")
    })
    .await;
    wait_all_healthy(&api, &home, "cool", 3).await;

    // The new primary dies within the cooldown: an event says why nothing happens.
    kill_member(&home, "cool", &first);
    wait_event(&api, "cool", "failover-cooldown").await;
    assert_eq!(primary_of(&api, "cool").await, Some(first.clone()));
    let automatic = events(&api, "cool")
        .await
        .events
        .iter()
        .filter(|e| e.kind == "failover-automatic")
        .count();
    assert_eq!(automatic, 1);
}

/// The HA benchmark (`scripts/bench/failover.sh`): with the controller's default health and HA
/// settings, `TRIALS` kill -9 failovers and `SWITCHOVERS` switchovers of a three-member sync
/// instance under continuous writes through rw; prints the time from each kill to the first
/// write acknowledged by the new primary, and each switchover's longest write pause. Ignored in
/// the test suite.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a benchmark: run scripts/bench/failover.sh"]
async fn bench_failover_and_switchover() {
    let trials: usize = std::env::var("TRIALS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    let switchovers: usize = std::env::var("SWITCHOVERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10);
    let mode = std::env::var("REPLICATION").unwrap_or_else(|_| "sync".into());
    let mut home = Home::new();
    // The controller's own defaults (health every second), no supervisor restarts racing the
    // failover: every trial is a failover.
    let api = home
        .start_with_env(&[("TOYGRES_HEALTH_INTERVAL_MS", "1000"), NO_RESTARTS])
        .await;
    create_and_wait(
        &api,
        &home,
        serde_json::json!({"name": "bench", "replicas": 2, "replication": mode,
                           "ha": {"cooldown_secs": 0}}),
    )
    .await;
    let (rw, password) = connection(&api, "bench").await;
    connect(&rw, &password)
        .await
        .batch_execute("CREATE TABLE acked (id bigint PRIMARY KEY)")
        .await
        .unwrap();
    let writer = Writers::start(1, &rw, &password);
    writer
        .acked_after(Instant::now(), None, "a first write")
        .await;
    wait_all_healthy(&api, &home, "bench", 3).await;

    let mut pauses = Vec::new();
    for _ in 0..switchovers {
        let began = Instant::now();
        let (status, body) = post(
            &api,
            "/v1/instances/bench/switchover",
            serde_json::json!({}),
        )
        .await;
        assert_eq!(status, 202, "{body}");
        let id = serde_json::from_str::<serde_json::Value>(&body).unwrap()["operation_id"]
            .as_str()
            .unwrap()
            .to_string();
        let done = api.wait_operation(&home, &id).await;
        assert_eq!(done.status, "succeeded", "{done:?}");
        writer
            .acked_after(Instant::now(), None, "a write after the switchover")
            .await;
        pauses.push(longest_pause(&writer.acks(), began, Instant::now()));
        wait_all_healthy(&api, &home, "bench", 3).await;
    }
    let mut failovers = Vec::new();
    for trial in 0..trials {
        let primary = primary_of(&api, "bench").await.unwrap();
        let port = pg_port(&api, "bench", &primary).await;
        // A crash does not wait for the health loop: spread the kills over the health interval
        // (wait_all_healthy returns just after a round, which would put every kill at the
        // same, worst, phase).
        let phase = u64::try_from(trial * 379 % 1000).unwrap();
        tokio::time::sleep(Duration::from_millis(phase)).await;
        let killed = Instant::now();
        let killed_at = chrono::Utc::now();
        kill_member(&home, "bench", &primary);
        let first = writer
            .acked_after(killed, Some(port), "a write after the failover")
            .await;
        failovers.push(first - killed);
        // When, on the logs' clock, for the per-step timeline.
        println!(
            "BENCH trial {}: killed {primary} at {} first commit on the new primary after {:.0} ms",
            trial + 1,
            killed_at.format("%H:%M:%S%.3f"),
            (first - killed).as_secs_f64() * 1000.0
        );
        wait_all_healthy(&api, &home, "bench", 3).await;
    }
    // A standby that had to be rewound or re-cloned to follow the new primary rejoins too:
    // more rejoins than failovers (and switchovers) says how many did.
    let rejoins = events(&api, "bench")
        .await
        .events
        .iter()
        .filter(|e| e.kind == "rejoined")
        .count();
    println!(
        "BENCH rejoins={rejoins} (one per failover and switchover: {})",
        trials + switchovers
    );
    if let Some(dir) = std::env::var_os("BENCH_LOG_DIR") {
        home.save_logs(std::path::Path::new(&dir));
    }
    let acks = writer.stop().await;
    let client = connect(&rw, &password).await;
    let present: std::collections::BTreeSet<i64> = client
        .query("SELECT id FROM acked", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    let lost = acks.iter().filter(|a| !present.contains(&a.id)).count();
    let ms = |d: &Duration| d.as_secs_f64() * 1000.0;
    let summary = |name: &str, values: &mut Vec<Duration>| {
        values.sort();
        if values.is_empty() {
            return;
        }
        println!(
            "BENCH {name}: n={} median={:.0}ms min={:.0}ms max={:.0}ms all=[{}]",
            values.len(),
            ms(&values[values.len() / 2]),
            ms(&values[0]),
            ms(values.last().unwrap()),
            values
                .iter()
                .map(|v| format!("{:.0}", ms(v)))
                .collect::<Vec<_>>()
                .join(",")
        );
    };
    summary("switchover write pause", &mut pauses);
    summary("failover kill-to-first-write", &mut failovers);
    println!(
        "BENCH acknowledged writes={} lost={lost} replication={mode}",
        acks.len()
    );
}
