//! Parameters through the controller (issue 15): the instance's catalog from its own
//! `pg_settings` (API and `toygres params describe`), and changes validated all or nothing, then
//! applied to every member: reload-class without a restart, restart-class rolled through the
//! members, hot-standby settings raised and lowered.

#![allow(clippy::unwrap_used)]

mod support;

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
