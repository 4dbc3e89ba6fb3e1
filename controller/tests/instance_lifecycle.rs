//! Instances end to end: the real `toygres` controller (embedded CMS, duroxide on it, the local
//! platform with real sidecars and Postgres) driven through its CLI and API.
//!
//! Every process a test starts is killed when the test ends, even when it fails: the
//! controllers by pid, then every process whose command line names the test's home (sidecars by
//! their `--data-dir`, postmasters by their `-D`). See [`Home`]'s `Drop`.

#![allow(clippy::unwrap_used)]

mod support;

use std::fs;
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use support::*;
use toygres_common::controller_api::{
    EventList, InstanceDetail, OperationAccepted, ReplicationStatus,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sync_instance_serves_writes_on_rw_reads_on_ro_notices_a_dead_standby_and_deletes_cleanly(
) {
    let mut home = Home::new();
    let api = home.start().await;

    // Create through the CLI: it waits, then prints the endpoints and where the password is.
    let started = Instant::now();
    let out = stdout(&home.cli(&[
        "create",
        "orders",
        "--replicas",
        "1",
        "--replication",
        "sync",
    ]));
    let create_seconds = started.elapsed().as_secs_f64();
    eprintln!("create with one sync standby took {create_seconds:.1} s");
    assert!(
        out.contains("Read-write:  postgresql://orders@127.0.0.1:"),
        "{out}"
    );
    assert!(out.contains("target_session_attrs=read-write"), "{out}");
    let detail: InstanceDetail = api.get("/v1/instances/orders").await;
    let connection = detail.connection.clone().unwrap();
    let password_file = connection.password_location.clone().unwrap();
    let password = fs::read_to_string(&password_file)
        .unwrap()
        .trim()
        .to_string();
    assert!(!out.contains(&password), "the CLI printed the password");
    assert_eq!(detail.summary.state, "running");
    assert_eq!(detail.summary.replication_mode, "sync");
    let roles: Vec<(&str, &str)> = detail
        .members
        .iter()
        .map(|m| (m.name.as_str(), m.role.as_str()))
        .collect();
    assert_eq!(roles, [("orders-0", "primary"), ("orders-1", "standby")]);
    // The password is nowhere in the CMS: not in the orchestration history, not in the records.
    assert_nowhere_in_cms(&home, &password).await;

    // A write through rw is read back through ro (from the standby).
    let rw = connect(&connection.rw, &password).await;
    rw.batch_execute("CREATE TABLE t (v text); INSERT INTO t VALUES ('through rw')")
        .await
        .unwrap();
    let ro = connect(&connection.ro, &password).await;
    let in_recovery: bool = ro
        .query_one("SELECT pg_is_in_recovery()", &[])
        .await
        .unwrap()
        .get(0);
    assert!(in_recovery, "ro should lead to the standby");
    let value: String = eventually(Duration::from_secs(30), "the row on ro", || {
        let ro = &ro;
        async move { Some(ro.query_opt("SELECT v FROM t", &[]).await.ok()??.get(0)) }
    })
    .await;
    assert_eq!(value, "through rw");
    // Sync mode: the standby is confirmed synchronous, and the health loop (whose first round
    // may come after create returns) reports the instance healthy.
    let synced = eventually(
        Duration::from_secs(30),
        "orders-1 reported sync and the instance healthy",
        || async {
            let detail: InstanceDetail = api.get("/v1/instances/orders").await;
            let sync = detail
                .members
                .iter()
                .any(|m| m.name == "orders-1" && m.sync_state.as_deref() == Some("sync"));
            (sync && detail.summary.health == "healthy").then_some(detail)
        },
    )
    .await;
    assert_eq!(synced.summary.health, "healthy");
    let get = stdout(&home.cli(&["get", "orders"]));
    assert!(
        get.contains("seconds ago") || get.contains("second ago"),
        "{get}"
    );
    drop((rw, ro));

    // The actor notices a standby whose sidecar dies. (The platform restarts it within the
    // supervise interval; should that beat the health round, kill it again.)
    let member_json = home.path().join("instances/orders/orders-1/member.json");
    eventually(Duration::from_secs(60), "a member-down event", || async {
        let record: serde_json::Value =
            serde_json::from_str(&fs::read_to_string(&member_json).unwrap()).unwrap();
        if let Some(pid) = record["pid"].as_i64() {
            let _ = kill(Pid::from_raw(i32::try_from(pid).unwrap()), Signal::SIGKILL);
        }
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let events: EventList = api.get("/v1/instances/orders/events").await;
        events
            .events
            .iter()
            .any(|e| e.kind == "member-down" && e.member.as_deref() == Some("orders-1"))
            .then_some(())
    })
    .await;
    // The same round took the dead standby out of the ro endpoint (to the primary).
    let events: EventList = api.get("/v1/instances/orders/events").await;
    assert!(
        events
            .events
            .iter()
            .any(|e| e.kind == "ro-routes" && e.message.contains("leads to the primary")),
        "{events:?}"
    );
    // … and records it comes back once the platform restarts it.
    eventually(Duration::from_secs(60), "a member-up event", || async {
        let events: EventList = api.get("/v1/instances/orders/events").await;
        events
            .events
            .iter()
            .any(|e| e.kind == "member-up" && e.member.as_deref() == Some("orders-1"))
            .then_some(())
    })
    .await;

    // Delete: no process, no port, no data directory is left.
    let addresses: Vec<String> = detail
        .members
        .iter()
        .filter_map(|m| m.address.clone())
        .chain([
            connection
                .rw
                .split('@')
                .nth(1)
                .unwrap()
                .split('/')
                .next()
                .unwrap()
                .to_string(),
            connection
                .ro
                .split('@')
                .nth(1)
                .unwrap()
                .split('/')
                .next()
                .unwrap()
                .to_string(),
        ])
        .collect();
    let out = stdout(&home.cli(&["delete", "orders"]));
    assert!(out.contains("deleted"), "{out}");
    assert!(
        home.instance_processes("orders").is_empty(),
        "processes left: {:?}",
        home.instance_processes("orders")
    );
    for address in &addresses {
        assert!(!port_listening(address), "{address} still listens");
    }
    assert!(!home.path().join("instances/orders").exists());
    let detail: InstanceDetail = api.get("/v1/instances/orders").await;
    assert_eq!(detail.summary.state, "deleted");
    let list = stdout(&home.cli(&["list", "-o", "json"]));
    assert!(!list.contains("orders"), "{list}");
    let metrics = api
        .http
        .get(format!("{}/metrics", api.url))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for line in [
        "toygres_controller_operations_total{kind=\"create\",result=\"succeeded\"} 1\n",
        "toygres_controller_operations_total{kind=\"delete\",result=\"succeeded\"} 1\n",
        "toygres_controller_instances{state=\"deleted\"} 1\n",
    ] {
        assert!(metrics.contains(line), "{line} missing from:\n{metrics}");
    }
    assert!(
        !metrics.contains("toygres_controller_health_checks_total{result=\"ok\"} 0\n"),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn creates_and_replica_adds_interrupted_by_a_controller_kill_complete_after_restart() {
    let mut home = Home::new();
    let api = home.start().await;
    let accepted = api.create("crashy", 1, "async").await;
    // Kill the controller while the primary is being created.
    eventually(Duration::from_secs(60), "the primary's record", || async {
        home.path()
            .join("instances/crashy/crashy-0/member.json")
            .exists()
            .then_some(())
    })
    .await;
    home.kill_controller();

    let api = home.start().await;
    let operation = api.wait_operation(&home, &accepted.operation_id).await;
    assert_eq!(operation.status, "succeeded", "{operation:?}");
    let detail: InstanceDetail = api.get("/v1/instances/crashy").await;
    assert_eq!(detail.summary.state, "running");
    let names: Vec<&str> = detail.members.iter().map(|m| m.name.as_str()).collect();
    assert_eq!(names, ["crashy-0", "crashy-1"]);
    // The instance serves through its endpoint after the controller's restart.
    let connection = detail.connection.clone().unwrap();
    let password = fs::read_to_string(connection.password_location.as_deref().unwrap())
        .unwrap()
        .trim()
        .to_string();
    let rw = connect(&connection.rw, &password).await;
    rw.batch_execute("CREATE TABLE survived (v int)")
        .await
        .unwrap();
    drop(rw);
    // Exactly one sidecar per member: none started twice, none orphaned.
    let sidecars: Vec<i32> = home
        .instance_processes("crashy")
        .into_iter()
        .filter(|pid| !is_postmaster(*pid))
        .collect();
    assert_eq!(sidecars.len(), 2, "sidecars: {sidecars:?}");

    // Add a replica through the actor's queue, and kill the controller while it is copied.
    let (status, text) = api
        .send(
            reqwest::Method::POST,
            "/v1/instances/crashy/replicas",
            Some(serde_json::json!({"zone": "z1"})),
        )
        .await;
    assert_eq!(status, 202, "{text}");
    let accepted: OperationAccepted = serde_json::from_str(&text).unwrap();
    eventually(Duration::from_secs(60), "crashy-2's record", || async {
        home.path()
            .join("instances/crashy/crashy-2/member.json")
            .exists()
            .then_some(())
    })
    .await;
    home.kill_controller();
    let api = home.start().await;
    let operation = api.wait_operation(&home, &accepted.operation_id).await;
    assert_eq!(operation.status, "succeeded", "{operation:?}");
    let status: ReplicationStatus = api.get("/v1/instances/crashy/replicas").await;
    let names: Vec<&str> = status.members.iter().map(|m| m.name.as_str()).collect();
    assert_eq!(names, ["crashy-0", "crashy-1", "crashy-2"]);
    assert_eq!(status.replicas, 2);

    // Remove a replica: its process and data go.
    let out = stdout(&home.cli(&["replication", "remove", "crashy", "crashy-1"]));
    assert!(out.contains("succeeded"), "{out}");
    assert!(!home.path().join("instances/crashy/crashy-1").exists());
    let status: ReplicationStatus = api.get("/v1/instances/crashy/replicas").await;
    let names: Vec<&str> = status.members.iter().map(|m| m.name.as_str()).collect();
    assert_eq!(names, ["crashy-0", "crashy-2"]);
    // Its slot went with it: the primary keeps no WAL for a standby that is gone.
    let rw = connect(&connection.rw, &password).await;
    let slots: Vec<String> = rw
        .query(
            "SELECT slot_name::text FROM pg_replication_slots ORDER BY 1",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(slots, ["crashy_2"]);
    drop(rw);
    // The primary cannot be removed.
    let (status, text) = api
        .send(
            reqwest::Method::DELETE,
            "/v1/instances/crashy/replicas/crashy-0",
            None,
        )
        .await;
    assert_eq!(status, 409, "{text}");

    let (status, text) = api
        .send(reqwest::Method::DELETE, "/v1/instances/crashy", None)
        .await;
    assert_eq!(status, 202, "{text}");
    let accepted: OperationAccepted = serde_json::from_str(&text).unwrap();
    let operation = api.wait_operation(&home, &accepted.operation_id).await;
    assert_eq!(operation.status, "succeeded", "{operation:?}");
    assert!(home.instance_processes("crashy").is_empty());
    assert!(!home.path().join("instances/crashy").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_refuses_bad_input_with_4xx_and_no_token_with_401() {
    let mut home = Home::new();
    let api = home.start().await;
    let cases = [
        (serde_json::json!({"name": "Bad_Name"}), "name"),
        (serde_json::json!({"name": "a".repeat(41)}), "name"),
        (serde_json::json!({"name": "ok", "replicas": 6}), "replicas"),
        (
            serde_json::json!({"name": "ok", "replicas": -1}),
            "replicas",
        ),
        (
            serde_json::json!({"name": "ok", "replicas": 1, "replication": "semi"}),
            "replication",
        ),
        (serde_json::json!({"replicas": 1}), "name"),
    ];
    for (body, field) in cases {
        let (status, text) = api
            .send(reqwest::Method::POST, "/v1/instances", Some(body.clone()))
            .await;
        assert_eq!(status, 400, "{body}: {text}");
        assert!(text.contains(field), "{body}: {text}");
    }
    let (status, _) = api
        .send(reqwest::Method::GET, "/v1/instances/nope", None)
        .await;
    assert_eq!(status, 404);
    let (status, _) = api
        .send(reqwest::Method::GET, "/v1/operations/op-0000", None)
        .await;
    assert_eq!(status, 404);
    let (status, _) = api
        .send(reqwest::Method::DELETE, "/v1/instances/nope", None)
        .await;
    assert_eq!(status, 404);
    let response = api
        .http
        .post(format!("{}/v1/instances", api.url))
        .json(&serde_json::json!({"name": "ok"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 401);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_controller_on_an_external_cms_runs_instances_and_never_logs_the_cms_password() {
    // Another controller's embedded Postgres plays the operator's database server.
    let mut server = Home::new();
    let _server_api = server.start().await;
    server
        .cms_client()
        .await
        .batch_execute("CREATE DATABASE external_cms")
        .await
        .unwrap();
    let read = |name: &str| {
        fs::read_to_string(server.path().join("cms").join(name))
            .unwrap()
            .trim()
            .to_string()
    };
    let (password, port) = (read("superuser.password"), read("port"));
    let url = format!("postgres://postgres:{password}@127.0.0.1:{port}/external_cms");

    let mut home = Home::new();
    let api = home.start_with_env(&[("DATABASE_URL", &url)]).await;
    assert!(
        !home.path().join("cms").exists(),
        "no embedded CMS expected"
    );
    let accepted = api.create("ext", 0, "async").await;
    let operation = api.wait_operation(&home, &accepted.operation_id).await;
    assert_eq!(operation.status, "succeeded", "{operation:?}");
    let (status, text) = api
        .send(reqwest::Method::DELETE, "/v1/instances/ext", None)
        .await;
    assert_eq!(status, 202, "{text}");
    let accepted: OperationAccepted = serde_json::from_str(&text).unwrap();
    let operation = api.wait_operation(&home, &accepted.operation_id).await;
    assert_eq!(operation.status, "succeeded", "{operation:?}");

    let log = fs::read_to_string(home.log_path(1)).unwrap();
    assert!(log.contains("using the CMS at 127.0.0.1"), "{log}");
    assert!(!log.contains(&password), "the CMS password is in the log");
}
