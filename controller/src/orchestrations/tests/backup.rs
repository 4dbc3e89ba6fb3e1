//! *Backup* as a command of the instance's actor: the member it picks, what it records, how a
//! failed backup is recorded, and the retention policy applied after a backup that succeeded;
//! *DeleteBackups* as a command of its own.

#![allow(clippy::unwrap_used)]

use super::*;
use crate::orchestrations::backup::BackupInput;
use crate::orchestrations::backup_cleanup::DeleteBackupsInput;
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

    // Then the retention policy, as an operation of its own: what it chose leaves the store
    // and the CMS (a failed backup left nothing in the store to delete).
    let planned = harness.calls_to(act::PLAN_BACKUP_DELETION);
    assert_eq!(planned.len(), 1);
    assert!(planned[0]["backup_ids"].is_null(), "{planned:?}");
    let deleted = harness.calls_to(act::DELETE_BACKUP_OBJECTS);
    assert_eq!(deleted[0]["store_ids"], json!(["20261201T000000Z"]));
    assert_eq!(deleted[0]["member"], "db-0");
    let forgotten = harness.calls_to(act::FORGET_DELETED_BACKUPS);
    assert_eq!(forgotten[0]["backup_ids"], json!(["bk-old", "bk-failed"]));
    assert_eq!(forgotten[0]["wal_files"], 3);
    assert!(recorded.iter().any(|f| f["kind"] == "backup-cleanup"
        && f["operation_id"] != "op-b1"
        && f["error"].is_null()));
    harness.stop().await;
}

#[tokio::test]
async fn a_scheduled_backup_delivered_twice_is_taken_once() {
    let harness = Harness::start(&[]).await;
    harness.start_actor("db", 50).await;
    // The queueing activity ran twice: the same command (one operation id) is in the queue
    // twice, then another backup behind it.
    let twice = ActorCommand::Backup(backup_input("db", "op-s1"));
    harness.queue("db", &twice).await;
    harness.queue("db", &twice).await;
    harness
        .queue("db", &ActorCommand::Backup(backup_input("db", "op-s2")))
        .await;
    // The queue is FIFO: once the last backup is done, both copies were taken.
    for id in ["op-s1", "op-s2"] {
        let status = harness
            .client
            .wait_for_orchestration(id, Duration::from_secs(20))
            .await
            .unwrap();
        assert!(
            matches!(status, OrchestrationStatus::Completed { .. }),
            "{id}: {status:?}"
        );
    }
    let started: Vec<String> = harness
        .calls_to(act::RECORD_BACKUP_STARTED)
        .iter()
        .map(|c| c["backup_id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        started,
        ["bk-op-s1", "bk-op-s2"],
        "one backup per operation"
    );
    assert_eq!(harness.calls_to(act::TAKE_BACKUP).len(), 2);
    let finished = harness.calls_to(act::RECORD_OPERATION_FINISHED);
    assert_eq!(
        finished
            .iter()
            .filter(|f| f["operation_id"] == "op-s1")
            .count(),
        1,
        "{finished:?}"
    );
    // The actor goes on after the refused copy: it still takes commands.
    harness
        .queue("db", &ActorCommand::Backup(backup_input("db", "op-s3")))
        .await;
    let status = harness
        .client
        .wait_for_orchestration("op-s3", Duration::from_secs(20))
        .await
        .unwrap();
    assert!(
        matches!(status, OrchestrationStatus::Completed { .. }),
        "{status:?}"
    );
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
    assert!(
        harness.calls_to(act::PLAN_BACKUP_DELETION).is_empty(),
        "no retention after a failed backup"
    );
    harness.stop().await;
}

#[tokio::test]
async fn a_named_backup_is_deleted_through_the_actor_and_nothing_to_delete_is_no_error() {
    let harness = Harness::start(&[]).await;
    harness.start_actor("db", 50).await;
    let input = DeleteBackupsInput {
        operation_id: "op-d1".into(),
        instance: "db".into(),
        backup_ids: Some(vec!["bk-old".into()]),
    };
    harness
        .queue("db", &ActorCommand::DeleteBackups(input))
        .await;
    let status = harness
        .client
        .wait_for_orchestration("op-d1", Duration::from_secs(20))
        .await
        .unwrap();
    let OrchestrationStatus::Completed { output, .. } = status else {
        panic!("the deletion did not complete: {status:?}");
    };
    assert!(output.contains("deleted bk-old, bk-failed"), "{output}");
    assert_eq!(
        harness.calls_to(act::PLAN_BACKUP_DELETION)[0]["backup_ids"],
        json!(["bk-old"])
    );
    let recorded = harness.calls_to(act::RECORD_OPERATION_FINISHED);
    assert!(recorded
        .iter()
        .any(|f| f["operation_id"] == "op-d1" && f["kind"] == "backup-delete"));

    // An instance with nothing to delete: no store is touched.
    let status = harness
        .run(
            "op-d2",
            names::DELETE_BACKUPS,
            &DeleteBackupsInput {
                operation_id: "op-d2".into(),
                instance: "tidy".into(),
                backup_ids: None,
            },
        )
        .await;
    let OrchestrationStatus::Completed { output, .. } = status else {
        panic!("the cleanup did not complete: {status:?}");
    };
    assert!(output.contains("nothing to delete"), "{output}");
    assert_eq!(harness.calls_to(act::DELETE_BACKUP_OBJECTS).len(), 1);
    harness.stop().await;
}
