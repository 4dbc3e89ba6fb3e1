//! *Parameters* as a command of the instance's actor: the second roll of a change split in two
//! runs only after the first succeeded; and a roll whose switchover fails is undone.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;

use toygres_common::parameters_api::{ApplyMode, PrimaryUpdate};

use super::*;
use crate::orchestrations::parameters::ParametersInput;
use crate::parameters::plan::Change;
use toygres_common::parameters_api::ParameterCategory;

fn second_roll(operation_id: &str, after: &str) -> ActorCommand {
    ActorCommand::Parameters(ParametersInput {
        operation_id: operation_id.into(),
        instance: "db".into(),
        parameters: BTreeMap::from([("max_connections".to_string(), Some("50".to_string()))]),
        apply: ApplyMode::Immediate,
        changes: Vec::new(),
        confirm: BTreeMap::new(),
        primary_update: PrimaryUpdate::Switchover,
        apply_at_ms: None,
        previous: BTreeMap::from([("max_connections".to_string(), Some("100".to_string()))]),
        ha: None,
        undo_every_restart: true,
        after: Some(after.into()),
    })
}

#[tokio::test]
async fn the_second_roll_of_a_change_does_not_run_when_the_first_failed() {
    let harness = Harness::start(&[]).await;
    harness.start_actor("db", 50).await;
    harness
        .queue("db", &second_roll("op-p2", "failed-first"))
        .await;
    let status = harness
        .client
        .wait_for_orchestration("op-p2", Duration::from_secs(20))
        .await
        .unwrap();
    let OrchestrationStatus::Failed { details, .. } = status else {
        panic!("the second roll did not fail: {status:?}");
    };
    let why = details.display_message();
    assert!(why.contains("not run"), "{why}");
    assert!(why.contains("failed-first"), "{why}");
    // No member was touched; the desired value went back to what it was.
    assert!(harness.calls_to(act::WRITE_PARAMETERS).is_empty());
    assert!(harness.calls_to(act::RESTART_MEMBER).is_empty());
    let desired = harness.calls_to(act::RECORD_DESIRED_PARAMETERS);
    assert_eq!(
        desired,
        [json!({"instance": "db", "parameters": {"max_connections": "100"}})]
    );
    harness.stop().await;
}

#[tokio::test]
async fn the_second_roll_runs_after_a_first_that_succeeded() {
    let harness = Harness::start(&[]).await;
    harness.start_actor("db", 50).await;
    harness.queue("db", &second_roll("op-p3", "op-p1")).await;
    until(&harness, "the change written on the members", |h| {
        !h.calls_to(act::WRITE_PARAMETERS).is_empty()
    })
    .await;
    assert_eq!(
        harness.calls_to(act::OPERATION_STATUS),
        [json!({"operation_id": "op-p1"})]
    );
    harness.stop().await;
}

/// `shared_buffers` 16MB -> 48MB on `instance` (db-0 primary, db-1 standby), the primary by a
/// switchover; the fakes' survey finds db-0 unreachable, so the switchover fails before any
/// promotion and db-0 stays the primary.
async fn roll_whose_switchover_fails(instance: &str) -> (Harness, String) {
    let harness = Harness::start(&[]).await;
    let input = ParametersInput {
        operation_id: format!("op-{instance}"),
        instance: instance.into(),
        parameters: BTreeMap::from([("shared_buffers".to_string(), Some("48MB".to_string()))]),
        apply: ApplyMode::Immediate,
        changes: vec![Change {
            name: "shared_buffers".into(),
            category: ParameterCategory::Restart,
            from: Some(2048),
            to: Some(6144),
        }],
        confirm: BTreeMap::new(),
        primary_update: PrimaryUpdate::Switchover,
        apply_at_ms: None,
        previous: BTreeMap::from([("shared_buffers".to_string(), Some("16MB".to_string()))]),
        ha: None,
        undo_every_restart: true,
        after: None,
    };
    let status = harness
        .run(&input.operation_id, names::APPLY_PARAMETERS, &input)
        .await;
    let OrchestrationStatus::Failed { details, .. } = status else {
        panic!("a roll whose switchover failed did not fail: {status:?}");
    };
    let why = details.display_message();
    assert!(why.contains("rolled back"), "{why}");
    assert!(why.contains("not healthy"), "the switchover's error: {why}");
    // The previous values went back on both members and as the desired parameters.
    let writes = harness.calls_to(act::WRITE_PARAMETERS);
    let previous = json!({"shared_buffers": "16MB"});
    let put_back: Vec<&Value> = writes
        .iter()
        .filter(|w| w["parameters"] == previous)
        .map(|w| &w["member"])
        .collect();
    assert_eq!(put_back, [&json!("db-0"), &json!("db-1")], "{writes:?}");
    assert_eq!(
        harness.calls_to(act::RECORD_DESIRED_PARAMETERS),
        [json!({"instance": instance, "parameters": previous})]
    );
    (harness, why)
}

/// The members `RESTART_MEMBER` was called for, in order.
fn restarted(harness: &Harness) -> Vec<String> {
    harness
        .calls_to(act::RESTART_MEMBER)
        .iter()
        .map(|c| c["member"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test]
async fn a_roll_whose_switchover_fails_is_undone_and_the_updated_standby_restarts_again() {
    let (harness, why) = roll_whose_switchover_fails("db").await;
    // db-1 restarted with the change, then again with the previous values; the primary, which
    // never ran the change, did not restart.
    assert_eq!(restarted(&harness), ["db-1", "db-1"], "{why}");
    assert!(why.contains("db-1 restarted again"), "{why}");
    harness.stop().await;
}

#[tokio::test]
async fn a_primary_the_failed_switchover_left_running_the_change_restarts_first_in_the_undo() {
    let (harness, why) = roll_whose_switchover_fails("unfenced").await;
    // The primary goes back first (a lowered hot-standby setting reaches the primary first),
    // then the standby, once it replayed what the restarted primary wrote.
    assert_eq!(restarted(&harness), ["db-1", "db-0", "db-1"], "{why}");
    assert_eq!(harness.calls_to(act::WAIT_REPLAYED).len(), 1);
    harness.stop().await;
}
