//! *Parameters* as a command of the instance's actor: the second roll of a change split in two
//! runs only after the first succeeded.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;

use toygres_common::parameters_api::{ApplyMode, PrimaryUpdate};

use super::*;
use crate::orchestrations::parameters::ParametersInput;

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
