//! *RestoreInPlace*: the runbook's order (old data set aside before the restore, removed only
//! once the restored primary accepts writes, standbys cloned again), and the put-back when the
//! restore cannot finish.

#![allow(clippy::unwrap_used)]

use super::*;
use crate::orchestrations::restore_in_place::RestoreInPlaceInput;
use crate::platform::RestoreSource;

fn restore_input(instance: &str) -> RestoreInPlaceInput {
    RestoreInPlaceInput {
        operation_id: format!("op-{instance}"),
        instance: instance.into(),
        restore: RestoreSource {
            instance: instance.into(),
            store_url: "file:///tmp/store".into(),
            backup_id: "20261204T130000Z".into(),
            target_time: Some("2026-12-04T14:00:00Z".into()),
            target_lsn: None,
            target_xid: None,
            target_name: None,
            in_place: true,
        },
    }
}

/// The calls that change members, as `name member [detail]`.
fn member_steps(harness: &Harness) -> Vec<String> {
    harness
        .calls
        .lock()
        .unwrap()
        .iter()
        .filter_map(|(name, input)| {
            let member = input["member"].as_str().unwrap_or_default();
            match name.as_str() {
                n if n == act::SET_DATA_ASIDE => Some(format!("aside {member}")),
                n if n == act::END_DATA_ASIDE && input["put_back"] == true => {
                    Some(format!("put back {member}"))
                }
                n if n == act::END_DATA_ASIDE => Some(format!("remove {member}")),
                n if n == act::CREATE_MEMBER => Some(format!(
                    "create {member} {}",
                    input["bootstrap"]["mode"].as_str().unwrap_or_default()
                )),
                n if n == act::WAIT_MEMBER_READY => Some(format!("ready {member}")),
                _ => None,
            }
        })
        .collect()
}

fn finished_state(harness: &Harness, operation_id: &str) -> (Value, Value) {
    let finished = harness.calls_to(act::RECORD_OPERATION_FINISHED);
    let f = finished
        .iter()
        .find(|f| f["operation_id"] == operation_id)
        .unwrap();
    (f["instance_state"].clone(), f["error"].clone())
}

#[tokio::test]
async fn the_old_data_goes_only_once_the_restored_primary_accepts_writes() {
    let harness = Harness::start(&[]).await;
    harness.start_actor("db", 50).await;
    harness
        .queue("db", &ActorCommand::RestoreInPlace(restore_input("db")))
        .await;
    let status = harness
        .client
        .wait_for_orchestration("op-db", Duration::from_secs(20))
        .await
        .unwrap();
    assert!(
        matches!(status, OrchestrationStatus::Completed { .. }),
        "{status:?}"
    );
    assert_eq!(
        member_steps(&harness),
        [
            "aside db-1",
            "aside db-0",
            "create db-0 restore",
            "ready db-0",
            "remove db-0",
            "remove db-1",
            "create db-1 standby",
            "ready db-1",
        ]
    );
    let started = harness.calls_to(act::RECORD_OPERATION_STARTED);
    assert_eq!(started[0]["instance_state"], "restoring");
    let created = harness.calls_to(act::CREATE_MEMBER);
    assert_eq!(created[0]["bootstrap"]["in_place"], true);
    // A sync instance gets its synchronous standby back; the endpoints follow.
    assert_eq!(harness.calls_to(act::SET_SYNC_POLICY).len(), 1);
    let routed = harness.calls_to(act::ROUTE_ENDPOINTS);
    assert_eq!(routed.last().unwrap()["routes"]["rw"], "db-0");
    assert_eq!(routed.last().unwrap()["routes"]["ro"], json!(["db-1"]));
    let (state, error) = finished_state(&harness, "op-db");
    assert_eq!(state, "running");
    assert!(error.is_null(), "{error}");
    harness.stop().await;
}

#[tokio::test]
async fn a_restore_that_cannot_finish_puts_every_member_back() {
    let harness = Harness::start(&[]).await;
    let status = harness
        .run(
            "op-unrestorable",
            names::RESTORE_IN_PLACE,
            &restore_input("unrestorable"),
        )
        .await;
    assert!(
        matches!(status, OrchestrationStatus::Failed { .. }),
        "{status:?}"
    );
    assert_eq!(
        member_steps(&harness),
        [
            "aside db-1",
            "aside db-0",
            "create db-0 restore",
            "ready db-0",
            "put back db-0",
            "create db-0 init",
            "ready db-0",
            "put back db-1",
            "create db-1 standby",
            "ready db-1",
        ]
    );
    let (state, error) = finished_state(&harness, "op-unrestorable");
    assert_eq!(state, "running", "as it was");
    let error = error.as_str().unwrap();
    assert!(
        error.contains("recovery ended before the target") && error.contains("put back as it was"),
        "{error}"
    );
    harness.stop().await;
}

#[tokio::test]
async fn a_primary_that_does_not_start_again_leaves_the_instance_failed() {
    let harness = Harness::start(&["db-0"]).await;
    let status = harness
        .run("op-db", names::RESTORE_IN_PLACE, &restore_input("db"))
        .await;
    assert!(
        matches!(status, OrchestrationStatus::Failed { .. }),
        "{status:?}"
    );
    let steps = member_steps(&harness);
    assert!(
        !steps.iter().any(|s| s.starts_with("remove")),
        "old data removed: {steps:?}"
    );
    assert!(steps.contains(&"put back db-0".to_string()), "{steps:?}");
    let (state, error) = finished_state(&harness, "op-db");
    assert_eq!(state, "failed");
    assert!(
        error.as_str().unwrap().contains("did not start again"),
        "{error}"
    );
    harness.stop().await;
}

#[tokio::test]
async fn the_standbys_follow_a_primary_started_again_at_another_address() {
    let harness = Harness::start(&[]).await;
    // Restored at a new address: the standby is cloned from there.
    let status = harness
        .run("op-moved", names::RESTORE_IN_PLACE, &restore_input("moved"))
        .await;
    assert!(
        matches!(status, OrchestrationStatus::Completed { .. }),
        "{status:?}"
    );
    let standby = harness
        .calls_to(act::CREATE_MEMBER)
        .into_iter()
        .find(|c| c["member"] == "db-1")
        .unwrap();
    assert_eq!(
        standby["bootstrap"]["primary"],
        json!({"host": "10.0.0.9", "port": 5432}),
        "{standby}"
    );
    assert!(harness.calls_to(act::REPOINT_STANDBY).is_empty());

    // Put back, the primary at a new address: the standby, started on its old data (which
    // names the old one), is pointed at it.
    let status = harness
        .run(
            "op-unrestorable-moved",
            names::RESTORE_IN_PLACE,
            &restore_input("unrestorable-moved"),
        )
        .await;
    assert!(
        matches!(status, OrchestrationStatus::Failed { .. }),
        "{status:?}"
    );
    let repointed = harness.calls_to(act::REPOINT_STANDBY);
    assert_eq!(repointed.len(), 1, "{repointed:?}");
    assert_eq!(repointed[0]["member"], "db-1");
    assert_eq!(repointed[0]["primary"], "db-0");
    let (state, error) = finished_state(&harness, "op-unrestorable-moved");
    assert_eq!(state, "running");
    assert!(
        error.as_str().unwrap().contains("put back as it was"),
        "{error}"
    );
    harness.stop().await;
}
