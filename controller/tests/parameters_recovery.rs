//! Parameter changes through failures (issue 15): a change scheduled with `--apply at` waits
//! outside the instance's queue (a switchover asked after it completes first), survives a
//! SIGKILL of the controller and applies once, at its time (also when the controller died
//! before its wait started); a restart-class change that a
//! later member cannot start with is undone on the members restarted before it; and a profile
//! that raises some hot-standby settings and lowers others applies to a running instance.

#![allow(clippy::unwrap_used)]

mod support;

use std::time::Duration;

use support::*;
use toygres_common::parameters_api::InstanceParameters;

/// What each member's own Postgres shows for `name`, by member.
async fn shown(api: &Api, instance: &str, name: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for member in members(api, instance).await.members {
        let client = connect_member(api, instance, &member.name).await;
        let row = client.query_one(&format!("SHOW {name}"), &[]).await;
        out.push((member.name, row.map(|r| r.get(0)).unwrap_or_default()));
    }
    out
}

/// Whether the member's Postgres answers `SHOW name` with `value` (false while it is down).
async fn member_shows(api: &Api, instance: &str, member: &str, name: &str, value: &str) -> bool {
    let (rw, password) = connection(api, instance).await;
    let (head, tail) = rw.rsplit_once(':').unwrap();
    let path = tail.split_once('/').map_or("", |(_, db)| db);
    let port = pg_port(api, instance, member).await;
    let (mut config, tls) = pg_config(&format!("{head}:{port}/{path}"));
    config
        .password(&password)
        .connect_timeout(Duration::from_secs(5));
    let Ok((client, connection)) = config.connect(tls).await else {
        return false;
    };
    tokio::spawn(connection);
    let row = client.query_one(&format!("SHOW {name}"), &[]).await;
    row.is_ok_and(|r| r.get::<_, String>(0) == value)
}

/// Sends a request the API must accept (202); returns the operation's id.
async fn queued_id(
    api: &Api,
    method: reqwest::Method,
    path: &str,
    body: serde_json::Value,
) -> String {
    let (status, text) = api.send(method, path, Some(body)).await;
    assert_eq!(status, 202, "{text}");
    serde_json::from_str::<OperationAccepted>(&text)
        .unwrap()
        .operation_id
}

/// Queues a switchover and waits for it to succeed.
async fn switch_over(home: &Home, api: &Api, instance: &str) {
    let path = format!("/v1/instances/{instance}/switchover");
    let id = queued_id(api, reqwest::Method::POST, &path, serde_json::json!({})).await;
    let done = api.wait_operation(home, &id).await;
    assert_eq!(done.status, "succeeded", "{done:?}\n{}", home.logs());
}

/// A controller with an async instance `name` of `replicas` standbys, every member healthy.
async fn instance_of(name: &str, replicas: i64) -> (Home, Api) {
    let mut home = Home::new();
    let api = home.start().await;
    let accepted = api.create(name, replicas, "async").await;
    let created = api.wait_operation(&home, &accepted.operation_id).await;
    assert_eq!(created.status, "succeeded", "{created:?}\n{}", home.logs());
    let members = usize::try_from(replicas).unwrap() + 1;
    wait_all_healthy(&api, &home, name, members).await;
    (home, api)
}

/// Schedules `work_mem = value` on `instance` `secs` ahead and waits until the change waits
/// for its time; returns its operation's id and the time.
async fn schedule_work_mem(
    api: &Api,
    instance: &str,
    value: &str,
    secs: i64,
) -> (String, chrono::DateTime<chrono::Utc>) {
    let at = chrono::Utc::now() + chrono::TimeDelta::seconds(secs);
    let id = queued_id(
        api,
        reqwest::Method::PUT,
        &format!("/v1/instances/{instance}/parameters"),
        serde_json::json!({
            "parameters": {"work_mem": value},
            "apply_at": at.to_rfc3339(),
        }),
    )
    .await;
    eventually(Duration::from_secs(30), "the change waiting", || async {
        let op: Operation = api.get(&format!("/v1/operations/{id}")).await;
        op.progress
            .filter(|p| p.message.starts_with("scheduled"))
            .map(|_| ())
    })
    .await;
    (id, at)
}

/// Waits up to `secs` until both members of `instance` run `work_mem = value`; returns when.
async fn every_member_runs(
    api: &Api,
    instance: &str,
    value: &str,
    secs: u64,
) -> chrono::DateTime<chrono::Utc> {
    eventually(
        Duration::from_secs(secs),
        "every member running the change",
        || async {
            let now = shown(api, instance, "work_mem").await;
            (now.len() == 2 && now.iter().all(|(_, v)| v == value)).then(chrono::Utc::now)
        },
    )
    .await
}

/// How many changes each member's sidecar wrote (its log's "parameters changed" lines).
fn writes_per_member(home: &Home, instance: &str) -> Vec<(String, usize)> {
    let dir = home.path().join("instances").join(instance);
    let mut out: Vec<(String, usize)> = find_files(&dir, "sidecar.log")
        .into_iter()
        .map(|log| {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            let member = log
                .strip_prefix(&dir)
                .unwrap()
                .components()
                .next()
                .unwrap()
                .as_os_str()
                .to_string_lossy()
                .to_string();
            (member, text.matches("parameters changed").count())
        })
        .collect();
    out.sort();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scheduled_change_waits_outside_the_queue_and_survives_a_controller_kill() {
    let (mut home, api) = instance_of("sched", 1).await;
    let before = shown(&api, "sched", "work_mem").await;
    assert!(before.iter().all(|(_, v)| v != "40MB"), "{before:?}");

    // Scheduled 90 s ahead (a minute, and room for a slow switchover on a loaded machine).
    let (id, at) = schedule_work_mem(&api, "sched", "40MB", 90).await;

    // A switchover asked after it does not wait for its time.
    let primary = primary_of(&api, "sched").await.unwrap();
    switch_over(&home, &api, "sched").await;
    assert!(
        chrono::Utc::now() < at,
        "the switchover ended only after the change's time"
    );
    assert_ne!(primary_of(&api, "sched").await.unwrap(), primary);
    let waiting: Operation = api.get(&format!("/v1/operations/{id}")).await;
    assert_eq!(waiting.status, "pending", "{waiting:?}");
    let now = shown(&api, "sched", "work_mem").await;
    assert_eq!(now, before, "applied before its time");

    // SIGKILL the controller while the change waits, and start another on the same CMS.
    home.kill_controller();
    let api = home.start().await;
    let applied_at = every_member_runs(&api, "sched", "40MB", 90 + 120).await;
    assert!(applied_at >= at, "applied at {applied_at}, before {at}");
    let done = api.wait_operation(&home, &id).await;
    assert_eq!(done.status, "succeeded", "{done:?}\n{}", home.logs());
    eprintln!(
        "BENCH params scheduled change applied {:.1} s after its time (controller killed before)",
        (applied_at - at).num_milliseconds() as f64 / 1000.0
    );

    // Exactly once: a switchover queued now runs after any second copy of the change would
    // have, and each member's sidecar wrote the change once.
    switch_over(&home, &api, "sched").await;
    let writes = writes_per_member(&home, "sched");
    assert_eq!(writes.len(), 2, "{writes:?}");
    assert!(writes.iter().all(|(_, n)| *n == 1), "{writes:?}");
    let cms = home.cms_client().await;
    let row = cms
        .query_one(
            "SELECT count(*) FROM toygres.operations WHERE instance = 'sched' AND kind = 'parameters'",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, i64>(0), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_a_later_member_cannot_start_with_is_undone_on_the_members_before_it() {
    let (home, api) = instance_of("undo", 2).await;
    let primary = primary_of(&api, "undo").await.unwrap();
    // The standbys restart in name order: the second one is broken, the first restarts fine.
    let mut standbys: Vec<String> = members(&api, "undo")
        .await
        .members
        .into_iter()
        .map(|m| m.name)
        .filter(|m| *m != primary)
        .collect();
    standbys.sort();
    let (first, second) = (standbys[0].clone(), standbys[1].clone());
    let previous = shown(&api, "undo", "shared_buffers").await;
    let old = previous[0].1.clone();
    assert!(
        old != "64MB" && previous.iter().all(|(_, v)| *v == old),
        "{previous:?}"
    );
    let first_pid = postmaster_of(&home, "undo", &first);
    let primary_pid = postmaster_of(&home, "undo", &primary);

    // A hand edit gone wrong in the second standby's postgresql.conf: the running server keeps
    // going (a reload refuses the file), but no start can read it.
    let conf = home
        .path()
        .join("instances/undo")
        .join(&second)
        .join("data/postgresql.conf");
    let good = std::fs::read_to_string(&conf).unwrap();
    std::fs::write(&conf, format!("{good}\nthis line is not a setting\n")).unwrap();

    let id = queued_id(
        &api,
        reqwest::Method::PUT,
        "/v1/instances/undo/parameters",
        serde_json::json!({
            "parameters": {"shared_buffers": "64MB"},
            "primary_update": "restart",
        }),
    )
    .await;
    let failed = api.wait_operation(&home, &id).await;
    assert_eq!(failed.status, "failed", "{failed:?}\n{}", home.logs());
    let error = failed.error.clone().unwrap_or_default();
    assert!(error.contains("rolled back"), "{error}");
    assert!(error.contains(&second), "{error}");
    assert!(
        error.contains(&format!("{first} restarted again")),
        "{error}"
    );

    // The first standby restarted with the change and again with the previous value; the
    // primary never restarted; the desired parameters are as before.
    assert_ne!(postmaster_of(&home, "undo", &first), first_pid);
    assert!(member_shows(&api, "undo", &first, "shared_buffers", &old).await);
    assert_eq!(postmaster_of(&home, "undo", &primary), primary_pid);
    assert!(member_shows(&api, "undo", &primary, "shared_buffers", &old).await);
    let got: InstanceParameters = api.get("/v1/instances/undo/parameters").await;
    assert!(
        got.parameters.iter().all(|p| p.name != "shared_buffers"),
        "{got:?}"
    );

    // Repaired, the second standby starts again, with the previous value.
    std::fs::write(&conf, good).unwrap();
    eventually(
        Duration::from_secs(120),
        "the repaired standby running the previous value",
        || async {
            member_shows(&api, "undo", &second, "shared_buffers", &old)
                .await
                .then_some(())
        },
    )
    .await;
    wait_all_healthy(&api, &home, "undo", 3).await;

    // The whole instance healthy again takes a profile that raises max_connections and lowers
    // max_worker_processes (oltp on 4 CPUs): two rolls, raises first, no 400.
    let id = queued_id(
        &api,
        reqwest::Method::POST,
        "/v1/instances/undo/parameters/profile",
        serde_json::json!({
            "profile": "oltp",
            "size": {"memory_mb": 512, "cpus": 4},
            "primary_update": "restart",
        }),
    )
    .await;
    let done = api.wait_operation(&home, &id).await;
    assert_eq!(done.status, "succeeded", "{done:?}\n{}", home.logs());
    for (name, value) in [("max_connections", "300"), ("max_worker_processes", "4")] {
        let now = shown(&api, "undo", name).await;
        assert!(
            now.len() == 3 && now.iter().all(|(_, v)| v == value),
            "{name}: {now:?}"
        );
    }
}

/// Forgets the durable orchestration `id` in the controller's store, as if it had never been
/// started (the controller must be stopped).
async fn forget_orchestration(home: &Home, id: &str) {
    let port = std::fs::read_to_string(home.path().join("cms/port")).unwrap();
    let url = format!(
        "postgres://postgres@localhost:{}/toygres?host={}",
        port.trim(),
        home.path().join("cms/run").display()
    );
    let store = toygres_controller::engine::open_store(&url).await.unwrap();
    let client = duroxide::Client::new(store);
    client.delete_instance(id, true).await.unwrap();
    assert!(matches!(
        client.get_orchestration_status(id).await.unwrap(),
        duroxide::OrchestrationStatus::NotFound
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scheduled_change_whose_wait_never_started_is_resumed_by_the_next_controller() {
    let (mut home, api) = instance_of("resume", 1).await;

    // The controller dies between recording the operation and starting its wait: killed once
    // the wait runs, and the wait removed from the store.
    let (id, at) = schedule_work_mem(&api, "resume", "24MB", 20).await;
    home.kill_controller();
    forget_orchestration(&home, &format!("{id}-at")).await;

    let api = home.start().await;
    let applied_at = every_member_runs(&api, "resume", "24MB", 20 + 120).await;
    assert!(applied_at >= at, "applied at {applied_at}, before {at}");
    let done = api.wait_operation(&home, &id).await;
    assert_eq!(done.status, "succeeded", "{done:?}\n{}", home.logs());
}
