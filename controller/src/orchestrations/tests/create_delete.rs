//! *CreateInstance* and *DeleteInstance*: the order of their steps, and a failed create.

#![allow(clippy::unwrap_used)]

use super::*;

#[tokio::test]
async fn create_with_a_sync_standby_waits_for_streaming_then_sync_then_routes_and_records() {
    let harness = Harness::start(&[]).await;
    let status = harness
        .run(
            "op-1",
            names::CREATE_INSTANCE,
            &create_input(1, ReplicationMode::Sync),
        )
        .await;
    let OrchestrationStatus::Completed { output, .. } = status else {
        panic!("create did not complete: {status:?}");
    };
    let output: Value = serde_json::from_str(&output).unwrap();
    assert_eq!(output["sync_standby"], "db-1");
    assert_eq!(output["actor_id"], "actor-db-op-1");

    let order = harness.order();
    let position = |name: &str| order.iter().position(|n| n == name).unwrap();
    assert!(position(act::RECORD_OPERATION_STARTED) < position(act::ENSURE_SECRETS));
    assert!(position(act::ENSURE_SECRETS) < position(act::CREATE_MEMBER));
    assert!(position(act::SET_SYNC_POLICY) < position(act::WAIT_SYNC_STANDBY));
    assert!(position(act::WAIT_SYNC_STANDBY) < position(act::ROUTE_ENDPOINTS));
    assert!(position(act::ROUTE_ENDPOINTS) < position(act::RECORD_INSTANCE_RUNNING));

    let creates = harness.calls_to(act::CREATE_MEMBER);
    assert_eq!(creates[0]["member"], "db-0");
    assert_eq!(creates[0]["bootstrap"]["mode"], "init");
    assert_eq!(creates[1]["member"], "db-1");
    assert_eq!(creates[1]["bootstrap"]["mode"], "standby");
    let waits = harness.calls_to(act::WAIT_MEMBER_READY);
    assert_eq!(waits[1]["role"], "standby");
    assert_eq!(
        harness.calls_to(act::SET_SYNC_POLICY)[0]["policy"],
        json!({"mode": "strict", "method": "first", "num_sync": 1, "standbys": ["db-1"],
               "degrade_timeout_secs": 10})
    );
    let route = &harness.calls_to(act::ROUTE_ENDPOINTS)[0]["routes"];
    assert_eq!(route["rw"], "db-0");
    assert_eq!(route["ro"], json!(["db-1"]));
    let finished = &harness.calls_to(act::RECORD_OPERATION_FINISHED)[0];
    assert_eq!(finished["error"], Value::Null);

    // The actor was started as a detached orchestration.
    let actor = harness
        .client
        .get_orchestration_status("actor-db-op-1")
        .await
        .unwrap();
    assert!(
        matches!(actor, OrchestrationStatus::Running { .. }),
        "{actor:?}"
    );
    // No secret ever went through the history: only references.
    for (_, input) in harness.calls.lock().unwrap().iter() {
        assert!(!input.to_string().contains("password\":\""), "{input}");
    }
    harness.stop().await;
}

#[tokio::test]
async fn async_create_without_replicas_sets_no_synchronous_standby() {
    let harness = Harness::start(&[]).await;
    let status = harness
        .run(
            "op-1",
            names::CREATE_INSTANCE,
            &create_input(0, ReplicationMode::Async),
        )
        .await;
    assert!(
        matches!(status, OrchestrationStatus::Completed { .. }),
        "{status:?}"
    );
    assert!(harness.calls_to(act::SET_SYNC_POLICY).is_empty());
    assert_eq!(harness.calls_to(act::CREATE_MEMBER).len(), 1);
    assert_eq!(
        harness.calls_to(act::ROUTE_ENDPOINTS)[0]["routes"]["ro"],
        json!([])
    );
    harness.stop().await;
}

#[tokio::test]
async fn a_failed_create_records_the_error_and_marks_the_instance_failed() {
    let harness = Harness::start(&["db-1"]).await;
    let status = harness
        .run(
            "op-1",
            names::CREATE_INSTANCE,
            &create_input(1, ReplicationMode::Async),
        )
        .await;
    let OrchestrationStatus::Failed { details, .. } = status else {
        panic!("create should fail: {status:?}");
    };
    assert!(
        details.display_message().contains("db-1"),
        "{}",
        details.display_message()
    );
    let finished = &harness.calls_to(act::RECORD_OPERATION_FINISHED)[0];
    assert!(finished["error"].as_str().unwrap().contains("db-1"));
    assert_eq!(finished["instance_state"], "failed");
    assert!(harness.calls_to(act::ROUTE_ENDPOINTS).is_empty());
    assert!(harness.calls_to(act::RECORD_ACTOR).is_empty());
    // Nothing is left running: both members, the endpoints and the credentials are removed
    // before the failure is recorded.
    let mut deleted: Vec<String> = harness
        .calls_to(act::DELETE_MEMBER)
        .iter()
        .map(|d| d["member"].as_str().unwrap().to_string())
        .collect();
    deleted.sort();
    assert_eq!(deleted, ["db-0", "db-1"]);
    let order = harness.order();
    let position = |name: &str| order.iter().position(|n| n == name).unwrap();
    assert!(position(act::DELETE_ENDPOINTS) < position(act::RECORD_OPERATION_FINISHED));
    assert!(position(act::DELETE_SECRETS) < position(act::RECORD_OPERATION_FINISHED));
    harness.stop().await;
}

#[tokio::test]
async fn delete_stops_the_actor_before_removing_members_endpoints_and_secrets() {
    let harness = Harness::start(&[]).await;
    let input = DeleteInstanceInput {
        operation_id: "op-2".into(),
        instance: "db".into(),
        actor_id: Some("actor-db-op-1".into()),
        keep_data: true,
    };
    let status = harness.run("op-2", names::DELETE_INSTANCE, &input).await;
    assert!(
        matches!(status, OrchestrationStatus::Completed { .. }),
        "{status:?}"
    );
    let order = harness.order();
    let position = |name: &str| order.iter().position(|n| n == name).unwrap();
    assert!(position(act::STOP_ACTOR) < position(act::DELETE_MEMBER));
    assert!(position(act::DELETE_MEMBER) < position(act::DELETE_ENDPOINTS));
    assert!(position(act::DELETE_ENDPOINTS) < position(act::DELETE_SECRETS));
    let deletes = harness.calls_to(act::DELETE_MEMBER);
    assert_eq!(deletes.len(), 2);
    assert!(deletes.iter().all(|d| d["keep_data"] == true));
    let finished = &harness.calls_to(act::RECORD_OPERATION_FINISHED)[0];
    assert_eq!(finished["instance_state"], "deleted");
    harness.stop().await;
}

#[test]
fn the_next_member_name_is_one_past_the_highest() {
    assert_eq!(next_member_name("db", &[]), "db-0");
    assert_eq!(
        next_member_name("db", &["db-0".into(), "db-2".into(), "dbx-9".into()]),
        "db-3"
    );
}
