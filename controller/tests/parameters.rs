//! Parameters through the controller (issue 15): the instance's catalog from its own
//! `pg_settings` (API and `toygres params describe`), and changes validated all or nothing, then
//! applied to every member: reload-class without a restart, restart-class rolled through the
//! members, hot-standby settings raised and lowered.

#![allow(clippy::unwrap_used)]

mod support;

use std::time::{Duration, Instant};

use support::*;
use toygres_common::parameters_api::{
    AppliedState, InstanceParameters, ParameterCatalog, ParameterCategory,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_catalog_comes_from_the_instance_and_says_what_users_may_set() {
    let mut home = Home::new();
    let api = home.start().await;
    let accepted = api.create("cat", 0, "async").await;
    let created = api.wait_operation(&home, &accepted.operation_id).await;
    assert_eq!(created.status, "succeeded", "{created:?}\n{}", home.logs());

    let catalog: ParameterCatalog = api.get("/v1/instances/cat/parameters/catalog").await;
    assert!(catalog.postgres_version.starts_with("15"));
    let work_mem = catalog.get("work_mem").unwrap();
    assert_eq!(work_mem.category, ParameterCategory::Dynamic);
    assert!(work_mem.modifiable);
    let port = catalog.get("port").unwrap();
    assert_eq!(port.category, ParameterCategory::Immutable);
    assert!(!port.modifiable && port.reason.is_some());

    // Unknown and invalid instance names.
    let (status, body) = api
        .send(
            reqwest::Method::GET,
            "/v1/instances/nope/parameters/catalog",
            None,
        )
        .await;
    assert_eq!(status, 404, "{body}");
    let (status, body) = api
        .send(
            reqwest::Method::GET,
            "/v1/instances/Bad_Name/parameters/catalog",
            None,
        )
        .await;
    assert_eq!(status, 400, "{body}");

    // The CLI: one setting in full, the table, and a clear error for a name that is none.
    let out = home.cli(&["params", "describe", "cat", "shared_preload_libraries"]);
    assert!(out.status.success(), "{out:?}");
    let text = stdout(&out);
    assert!(text.contains("category         restart"), "{text}");
    assert!(text.contains("modifiable       false"), "{text}");
    assert!(text.contains("library"), "{text}");
    let out = home.cli(&["params", "describe", "cat", "--modifiable"]);
    assert!(out.status.success(), "{out:?}");
    let text = stdout(&out);
    assert!(text.contains("\nwork_mem "), "{text}");
    assert!(!text.contains("\nport "), "{text}");
    let out = home.cli(&["params", "describe", "cat", "no_such_setting"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no_such_setting"), "{err}");
}

/// The postmasters of an instance (their pids change when a member restarts).
fn postmasters(home: &Home, instance: &str) -> Vec<i32> {
    let mut pids: Vec<i32> = home
        .instance_processes(instance)
        .into_iter()
        .filter(|pid| is_postmaster(*pid))
        .collect();
    pids.sort_unstable();
    pids
}

/// Sets `settings` through the API and waits for the operation to succeed.
async fn set_and_wait(home: &Home, api: &Api, instance: &str, settings: serde_json::Value) {
    let (status, body) = api
        .send(
            reqwest::Method::PUT,
            &format!("/v1/instances/{instance}/parameters"),
            Some(serde_json::json!({ "parameters": settings })),
        )
        .await;
    assert_eq!(status, 202, "{body}");
    let accepted: OperationAccepted = serde_json::from_str(&body).unwrap();
    let done = api.wait_operation(home, &accepted.operation_id).await;
    assert_eq!(done.status, "succeeded", "{done:?}\n{}", home.logs());
}

/// Asserts that every member of the instance runs `value` for `name`.
async fn assert_applied_everywhere(api: &Api, instance: &str, name: &str, members: usize) {
    let got: InstanceParameters = api
        .get(&format!("/v1/instances/{instance}/parameters"))
        .await;
    let p = got
        .parameters
        .iter()
        .find(|p| p.name == name)
        .unwrap_or_else(|| panic!("{name} not desired: {got:?}"));
    assert_eq!(p.members.len(), members, "{got:?}");
    for m in &p.members {
        assert_eq!(
            m.state,
            AppliedState::Applied,
            "{name} on {}: {got:?}",
            m.member
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_are_validated_then_reach_every_member_in_a_safe_order() {
    let mut home = Home::new();
    let api = home.start().await;
    let accepted = api.create("tune", 2, "sync").await;
    let created = api.wait_operation(&home, &accepted.operation_id).await;
    assert_eq!(created.status, "succeeded", "{created:?}\n{}", home.logs());

    // A bad request names each bad setting, and nothing is recorded.
    let (status, body) = api
        .send(
            reqwest::Method::PUT,
            "/v1/instances/tune/parameters",
            Some(serde_json::json!({"parameters": {
                "work_mem": "bogus",
                "shared_preload_libraries": "evil",
                "port": "6000",
                "no_such_setting": "1",
                "max_wal_senders": "0",
            }})),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    for name in [
        "work_mem",
        "shared_preload_libraries",
        "port",
        "no_such_setting",
        "max_wal_senders",
    ] {
        assert!(body.contains(name), "{name}: {body}");
    }
    let got: InstanceParameters = api.get("/v1/instances/tune/parameters").await;
    assert!(got.parameters.is_empty(), "{got:?}");

    // Reload class: every member runs it, and no Postgres restarted.
    let before = postmasters(&home, "tune");
    assert_eq!(before.len(), 3, "{before:?}");
    set_and_wait(&home, &api, "tune", serde_json::json!({"work_mem": "48MB"})).await;
    assert_applied_everywhere(&api, "tune", "work_mem", 3).await;
    assert_eq!(postmasters(&home, "tune"), before, "a member restarted");

    // Restart class: rolls through every member.
    set_and_wait(
        &home,
        &api,
        "tune",
        serde_json::json!({"shared_buffers": "64MB"}),
    )
    .await;
    assert_applied_everywhere(&api, "tune", "shared_buffers", 3).await;

    // Hot-standby settings: raised (standbys first) and lowered (primary first) both complete.
    set_and_wait(
        &home,
        &api,
        "tune",
        serde_json::json!({"max_connections": "150"}),
    )
    .await;
    assert_applied_everywhere(&api, "tune", "max_connections", 3).await;
    set_and_wait(
        &home,
        &api,
        "tune",
        serde_json::json!({"max_connections": "90"}),
    )
    .await;
    assert_applied_everywhere(&api, "tune", "max_connections", 3).await;

    // The CLI shows the state per member; a reset removes the setting.
    let out = home.cli(&["params", "get", "tune"]);
    let text = stdout(&out);
    assert!(text.contains("work_mem"), "{text}");
    assert!(text.contains("applied"), "{text}");
    let out = home.cli(&["params", "reset", "tune", "work_mem"]);
    assert!(out.status.success(), "{out:?}");
    let got: InstanceParameters = api.get("/v1/instances/tune/parameters").await;
    assert!(
        got.parameters.iter().all(|p| p.name != "work_mem"),
        "{got:?}"
    );
    let out = home.cli(&["params", "set", "tune", "archive_command=id"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("archive_command"));
}

/// The longest gap between acknowledged commits from `from` on.
fn longest_pause(acks: &[Ack], from: Instant) -> Duration {
    let times: Vec<Instant> = acks.iter().map(|a| a.at).filter(|at| *at >= from).collect();
    times
        .windows(2)
        .map(|w| w[1] - w[0])
        .max()
        .unwrap_or_default()
}

/// A three-member sync instance `name`, with `writers` clients inserting through rw into a
/// table `acked`, once a first commit is acknowledged: its home, API, rw URL and password.
async fn sync_instance_under_writes(
    name: &str,
    writers: i64,
) -> (Home, Api, String, String, Writers) {
    let mut home = Home::new();
    let api = home.start().await;
    let accepted = api.create(name, 2, "sync").await;
    let created = api.wait_operation(&home, &accepted.operation_id).await;
    assert_eq!(created.status, "succeeded", "{created:?}\n{}", home.logs());
    wait_all_healthy(&api, &home, name, 3).await;
    let (rw, password) = connection(&api, name).await;
    connect(&rw, &password)
        .await
        .batch_execute("CREATE TABLE acked (id bigint PRIMARY KEY)")
        .await
        .unwrap();
    let writers = Writers::start(writers, &rw, &password);
    writers
        .acked_after(Instant::now(), None, "a first write")
        .await;
    (home, api, rw, password, writers)
}

/// Sets `body` (a whole `PUT …/parameters` request) and waits for the operation's end.
async fn change(home: &Home, api: &Api, instance: &str, body: serde_json::Value) -> Operation {
    let (status, text) = api
        .send(
            reqwest::Method::PUT,
            &format!("/v1/instances/{instance}/parameters"),
            Some(body),
        )
        .await;
    assert_eq!(status, 202, "{text}");
    let accepted: OperationAccepted = serde_json::from_str(&text).unwrap();
    api.wait_operation(home, &accepted.operation_id).await
}

/// What one member runs for `name` and its state there.
async fn member_state(api: &Api, instance: &str, name: &str, member: &str) -> AppliedState {
    let got: InstanceParameters = api
        .get(&format!("/v1/instances/{instance}/parameters"))
        .await;
    got.parameters
        .iter()
        .find(|p| p.name == name)
        .and_then(|p| p.members.iter().find(|m| m.member == member))
        .map(|m| m.state)
        .unwrap_or_else(|| panic!("{name} on {member}: {got:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_class_changes_reach_the_primary_by_switchover_restart_or_the_operator() {
    let (home, api, rw, password, writers) = sync_instance_under_writes("roll", 2).await;

    // Switchover (the default): the standbys restart, an updated standby takes over, the old
    // primary comes back as a standby running the new value.
    let first = primary_of(&api, "roll").await.unwrap();
    let began = Instant::now();
    let done = change(
        &home,
        &api,
        "roll",
        serde_json::json!({"parameters": {"shared_buffers": "64MB"}}),
    )
    .await;
    assert_eq!(done.status, "succeeded", "{done:?}\n{}", home.logs());
    writers
        .acked_after(Instant::now(), None, "a write after the roll")
        .await;
    let switchover_pause = longest_pause(&writers.acks(), began);
    let second = primary_of(&api, "roll").await.unwrap();
    assert_ne!(second, first, "the primary was not switched over");
    assert_applied_everywhere(&api, "roll", "shared_buffers", 3).await;
    eprintln!(
        "BENCH params restart-class roll, switchover: {:.1} s, longest write pause {:.2} s",
        (Instant::now() - began).as_secs_f64(),
        switchover_pause.as_secs_f64()
    );

    // Restart in place: the primary stays where it is.
    wait_all_healthy(&api, &home, "roll", 3).await;
    let began = Instant::now();
    let done = change(
        &home,
        &api,
        "roll",
        serde_json::json!({"parameters": {"shared_buffers": "80MB"}, "primary_update": "restart"}),
    )
    .await;
    assert_eq!(done.status, "succeeded", "{done:?}\n{}", home.logs());
    writers
        .acked_after(Instant::now(), None, "a write after the restart")
        .await;
    let restart_pause = longest_pause(&writers.acks(), began);
    assert_eq!(primary_of(&api, "roll").await.as_deref(), Some(&*second));
    assert_applied_everywhere(&api, "roll", "shared_buffers", 3).await;
    eprintln!(
        "BENCH params restart-class roll, restart: {:.1} s, longest write pause {:.2} s",
        (Instant::now() - began).as_secs_f64(),
        restart_pause.as_secs_f64()
    );

    // Supervised: the standbys take it, the primary waits for the operator's switchover.
    wait_all_healthy(&api, &home, "roll", 3).await;
    let done = change(
        &home,
        &api,
        "roll",
        serde_json::json!({"parameters": {"shared_buffers": "96MB"}, "primary_update": "supervised"}),
    )
    .await;
    assert_eq!(done.status, "succeeded", "{done:?}\n{}", home.logs());
    let message = done.progress.map(|p| p.message).unwrap_or_default();
    assert!(message.contains("switchover"), "{message}");
    assert_eq!(primary_of(&api, "roll").await.as_deref(), Some(&*second));
    assert_eq!(
        member_state(&api, "roll", "shared_buffers", &second).await,
        AppliedState::PendingRestart
    );
    let (status, body) = api
        .send(
            reqwest::Method::POST,
            "/v1/instances/roll/switchover",
            Some(serde_json::json!({})),
        )
        .await;
    assert_eq!(status, 202, "{body}");
    let accepted: OperationAccepted = serde_json::from_str(&body).unwrap();
    let switched = api.wait_operation(&home, &accepted.operation_id).await;
    assert_eq!(
        switched.status,
        "succeeded",
        "{switched:?}\n{}",
        home.logs()
    );
    wait_all_healthy(&api, &home, "roll", 3).await;
    eventually(
        Duration::from_secs(60),
        "the old primary restarted",
        || async {
            (member_state(&api, "roll", "shared_buffers", &second).await == AppliedState::Applied)
                .then_some(())
        },
    )
    .await;
    assert_applied_everywhere(&api, "roll", "shared_buffers", 3).await;

    // No acknowledged commit was lost through the three rolls.
    let acks = writers.stop().await;
    let lost = lost_commits(&rw, &password, &acks).await;
    assert!(lost.is_empty(), "acknowledged commits lost: {lost:?}");
    assert!(acks.len() > 100, "only {} writes acknowledged", acks.len());
    eprintln!("BENCH params acknowledged writes={} lost=0", acks.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parameters_at_create_are_checked_applied_and_inherited_by_new_members() {
    let mut home = Home::new();
    let api = home.start().await;

    // A bad setting anywhere refuses the whole create, and nothing is recorded.
    let (status, body) = api
        .send(
            reqwest::Method::POST,
            "/v1/instances",
            Some(
                serde_json::json!({"name": "boot", "replicas": 1, "parameters": {
                    "work_mem": "32MB",
                    "shared_preload_libraries": "evil",
                    "max_connections": "5",
                }}),
            ),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("shared_preload_libraries"), "{body}");
    assert!(body.contains("max_connections"), "{body}");
    let (status, _) = api
        .send(reqwest::Method::GET, "/v1/instances/boot", None)
        .await;
    assert_eq!(status, 404);
    let (status, body) = api
        .send(
            reqwest::Method::POST,
            "/v1/instances",
            Some(serde_json::json!({"name": "boot", "profile": "oltp"})),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    let out = home.cli(&[
        "create",
        "boot",
        "--profile",
        "fast",
        "--memory",
        "1GB",
        "--cpus",
        "2",
    ]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("unknown profile"),
        "{out:?}"
    );

    // A profile sized to the instance, with one value of our own over it, from the CLI.
    let out = home.cli(&[
        "create",
        "boot",
        "--replicas",
        "1",
        "--profile",
        "development",
        "--memory",
        "1GB",
        "--cpus",
        "2",
        "--param",
        "work_mem=24MB",
    ]);
    assert!(out.status.success(), "{out:?}\n{}", home.logs());
    // development: shared_buffers is a sixteenth of the memory (64MB), max_connections 20.
    assert_applied_everywhere(&api, "boot", "shared_buffers", 2).await;
    assert_applied_everywhere(&api, "boot", "max_connections", 2).await;
    assert_applied_everywhere(&api, "boot", "work_mem", 2).await;
    let got: InstanceParameters = api.get("/v1/instances/boot/parameters").await;
    let value = |name: &str| {
        got.parameters
            .iter()
            .find(|p| p.name == name)
            .map(|p| p.value.clone())
            .unwrap_or_default()
    };
    assert_eq!(value("shared_buffers"), "65536kB");
    assert_eq!(value("work_mem"), "24MB");
    // The declared size shows in `toygres get`.
    let out = home.cli(&["get", "boot"]);
    let shown = String::from_utf8_lossy(&out.stdout);
    assert!(
        shown.contains("Size:         1024 MiB memory, 2 CPUs, ssd storage"),
        "{shown}"
    );

    // A new member starts with the instance's parameters.
    let (status, body) = api
        .send(
            reqwest::Method::POST,
            "/v1/instances/boot/replicas",
            Some(serde_json::json!({})),
        )
        .await;
    assert_eq!(status, 202, "{body}");
    let accepted: OperationAccepted = serde_json::from_str(&body).unwrap();
    let added = api.wait_operation(&home, &accepted.operation_id).await;
    assert_eq!(added.status, "succeeded", "{added:?}\n{}", home.logs());
    for name in ["shared_buffers", "max_connections", "work_mem"] {
        assert_applied_everywhere(&api, "boot", name, 3).await;
    }

    // Profiles later: a dry run shows the diff against what the instance runs (sized to the
    // size it declared), and without --dry-run the values are applied.
    let out = home.cli(&["params", "profile", "boot", "oltp", "--dry-run"]);
    assert!(out.status.success(), "{out:?}");
    let text = stdout(&out);
    // oltp: a quarter of 1GB.
    assert!(text.contains("shared_buffers"), "{text}");
    assert!(
        text.contains("65536kB") && text.contains("262144kB"),
        "{text}"
    );
    let out = home.cli(&[
        "params",
        "profile",
        "boot",
        "development",
        "work_mem=24MB",
        "--dry-run",
    ]);
    assert!(out.status.success(), "{out:?}");
    assert!(stdout(&out).contains("already runs"), "{}", stdout(&out));
    let out = home.cli(&["params", "profile", "boot", "development", "work_mem=20MB"]);
    assert!(out.status.success(), "{out:?}\n{}", home.logs());
    assert_applied_everywhere(&api, "boot", "work_mem", 3).await;
    let out = home.cli(&["params", "profile", "boot", "fast", "--dry-run"]);
    assert!(!out.status.success());

    // A scheduled change waits for its time on a durable timer; a cancelled one never applies.
    let at = (chrono::Utc::now() + chrono::TimeDelta::seconds(6)).to_rfc3339();
    let asked = Instant::now();
    let done = change(
        &home,
        &api,
        "boot",
        serde_json::json!({"parameters": {"work_mem": "40MB"}, "apply_at": at}),
    )
    .await;
    assert_eq!(done.status, "succeeded", "{done:?}");
    assert!(
        asked.elapsed() >= Duration::from_secs(5),
        "{:?}",
        asked.elapsed()
    );
    assert_applied_everywhere(&api, "boot", "work_mem", 3).await;
    let at = (chrono::Utc::now() + chrono::TimeDelta::hours(1)).to_rfc3339();
    let out = home.cli(&[
        "params",
        "set",
        "boot",
        "work_mem=44MB",
        "--apply",
        "at",
        &at,
        "--no-wait",
    ]);
    assert!(out.status.success(), "{out:?}");
    let id = stdout(&out)
        .trim()
        .trim_start_matches("operation ")
        .to_string();
    eventually(
        Duration::from_secs(30),
        "the change waiting for its time",
        || async {
            let op: Operation = api.get(&format!("/v1/operations/{id}")).await;
            op.progress
                .filter(|p| p.message.starts_with("scheduled"))
                .map(|_| ())
        },
    )
    .await;
    let out = home.cli(&["operation", "cancel", &id]);
    assert!(out.status.success(), "{out:?}");
    let cancelled = api.wait_operation(&home, &id).await;
    assert_eq!(cancelled.status, "cancelled", "{cancelled:?}");
    // Nothing changed: the desired value is the one before, and every member runs it.
    let got: InstanceParameters = api.get("/v1/instances/boot/parameters").await;
    let work_mem = got
        .parameters
        .iter()
        .find(|p| p.name == "work_mem")
        .unwrap();
    assert_eq!(work_mem.value, "40MB", "{got:?}");
    assert_applied_everywhere(&api, "boot", "work_mem", 3).await;
    // A value that passes every check but does not start (more shared memory than the machine
    // has): proved on the first member, which falls back; the change is undone everywhere.
    let primary = primary_of(&api, "boot").await.unwrap();
    let primary_pid = |home: &Home| {
        let pid = home
            .path()
            .join("instances/boot")
            .join(&primary)
            .join("data/postmaster.pid");
        std::fs::read_to_string(pid)
            .unwrap()
            .lines()
            .next()
            .unwrap()
            .to_string()
    };
    let pid_before = primary_pid(&home);
    let failed = change(
        &home,
        &api,
        "boot",
        serde_json::json!({"parameters": {"shared_buffers": "1TB"}}),
    )
    .await;
    assert_eq!(failed.status, "failed", "{failed:?}");
    let error = failed.error.clone().unwrap_or_default();
    assert!(error.contains("rolled back"), "{error}");
    assert_eq!(primary_pid(&home), pid_before, "the primary restarted");
    assert_applied_everywhere(&api, "boot", "shared_buffers", 3).await;
    let got: InstanceParameters = api.get("/v1/instances/boot/parameters").await;
    let value = got
        .parameters
        .iter()
        .find(|p| p.name == "shared_buffers")
        .map(|p| p.value.clone());
    assert_eq!(value.as_deref(), Some("65536kB"), "{got:?}");
    wait_all_healthy(&api, &home, "boot", 3).await;

    // A time in the past, or a malformed one, is refused.
    for at in ["2001-01-01T00:00:00Z", "tomorrow"] {
        let (status, body) = api
            .send(
                reqwest::Method::PUT,
                "/v1/instances/boot/parameters",
                Some(serde_json::json!({"parameters": {"work_mem": "8MB"}, "apply_at": at})),
            )
            .await;
        assert_eq!(status, 400, "{at}: {body}");
    }
}

/// The benchmark of `scripts/bench/params.sh` (ignored by the suite): on a three-member sync
/// instance under continuous writes through rw, ROUNDS times each: a reload-class change
/// (`work_mem`) until every member runs it, and a restart-class roll (`shared_buffers`) by
/// switchover and by restart, with each roll's longest write pause.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a benchmark: scripts/bench/params.sh"]
async fn bench_parameter_changes() {
    let rounds: u32 = std::env::var("ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(3);
    let (home, api, rw, password, writers) = sync_instance_under_writes("bench", 1).await;
    for round in 0..rounds {
        let began = Instant::now();
        let body = serde_json::json!({"parameters": {"work_mem": format!("{}MB", 16 + round)}});
        let done = change(&home, &api, "bench", body).await;
        assert_eq!(done.status, "succeeded", "{done:?}");
        eprintln!(
            "BENCH reload-class change confirmed on 3 members: {:.2} s",
            began.elapsed().as_secs_f64()
        );
        for method in ["switchover", "restart"] {
            wait_all_healthy(&api, &home, "bench", 3).await;
            let began = Instant::now();
            // A new value every time (a value already running rolls nothing).
            let size = if method == "switchover" { 64 } else { 80 } + 32 * round;
            let body = serde_json::json!({"parameters": {"shared_buffers": format!("{size}MB")},
                                          "primary_update": method});
            let done = change(&home, &api, "bench", body).await;
            assert_eq!(done.status, "succeeded", "{done:?}");
            let total = began.elapsed();
            writers
                .acked_after(Instant::now(), None, "a write after the roll")
                .await;
            eprintln!(
                "BENCH restart-class roll by {method}: {:.1} s, longest write pause {:.2} s",
                total.as_secs_f64(),
                longest_pause(&writers.acks(), began).as_secs_f64()
            );
        }
    }
    let acks = writers.stop().await;
    let lost = lost_commits(&rw, &password, &acks).await.len();
    eprintln!("BENCH acknowledged writes={} lost={lost}", acks.len());
    assert_eq!(lost, 0);
}
