//! *Backup* as a command of the instance's actor: the member it picks, what it records, and how
//! a failed backup is recorded.

#![allow(clippy::unwrap_used)]

use super::*;
use crate::orchestrations::backup::BackupInput;
use toygres_common::sidecar_api::BackupKind;

fn backup_input(instance: &str, operation_id: &str) -> BackupInput {
    BackupInput {
        operation_id: operation_id.into(),
        instance: instance.into(),
        backup_id: format!("bk-{operation_id}"),
        kind: BackupKind::Base,
        label: Some("nightly".into()),
        databases: Vec::new(),
    }
}

#[tokio::test]
async fn a_queued_base_backup_is_taken_on_the_healthy_standby_and_recorded() {
    let harness = Harness::start(&[]).await;
    harness.start_actor("db", 50).await;
    harness
        .queue("db", &ActorCommand::Backup(backup_input("db", "op-b1")))
        .await;
    let status = harness
        .client
        .wait_for_orchestration("op-b1", Duration::from_secs(20))
        .await
        .unwrap();
    let OrchestrationStatus::Completed { output, .. } = status else {
        panic!("the backup did not complete: {status:?}");
    };
    assert_eq!(output.trim_matches('"'), "bk-op-b1");

    let started = harness.calls_to(act::RECORD_BACKUP_STARTED);
    assert_eq!(started.len(), 1);
    assert_eq!(started[0]["member"], "db-1");
    assert_eq!(started[0]["label"], "nightly");
    let taken = harness.calls_to(act::TAKE_BACKUP);
    assert_eq!(taken.len(), 1, "a backup is taken once");
    assert_eq!(taken[0]["member"], "db-1");
    let finished = harness.calls_to(act::RECORD_BACKUP_FINISHED);
    assert_eq!(finished[0]["manifest"]["stop_lsn"], "0/2000100");
    assert!(finished[0]["error"].is_null());
    let recorded = harness.calls_to(act::RECORD_OPERATION_FINISHED);
    assert!(recorded
        .iter()
        .any(|f| f["operation_id"] == "op-b1" && f["kind"] == "backup" && f["error"].is_null()));
    harness.stop().await;
}

#[tokio::test]
async fn a_failed_backup_is_recorded_failed_with_its_error() {
    let harness = Harness::start(&[]).await;
    let status = harness
        .run("op-b2", names::BACKUP, &backup_input("broken", "op-b2"))
        .await;
    assert!(
        matches!(status, OrchestrationStatus::Failed { .. }),
        "{status:?}"
    );
    let finished = harness.calls_to(act::RECORD_BACKUP_FINISHED);
    assert_eq!(finished.len(), 1);
    assert!(finished[0]["manifest"].is_null());
    assert!(finished[0]["error"]
        .as_str()
        .unwrap()
        .contains("the store is full"));
    let recorded = harness.calls_to(act::RECORD_OPERATION_FINISHED);
    assert!(recorded[0]["error"]
        .as_str()
        .unwrap()
        .contains("the store is full"));
    harness.stop().await;
}
