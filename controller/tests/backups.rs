//! Backups through the controller, end to end: the real `toygres` controller (embedded CMS,
//! duroxide, the local platform with real sidecars and Postgres) and its default `file://`
//! store under `$TOYGRES_HOME/backups`.
//!
//! Every process a test starts is killed when the test ends (see [`Home`]'s `Drop`).

#![allow(clippy::unwrap_used)]

mod support;

use std::time::Duration;

use support::archive::*;
use support::*;
use toygres_common::backup_api::{
    BackupAccepted, BackupList, BackupScheduleView, BackupView, CleanupPlan,
};
use toygres_common::controller_api::{InstanceDetail, OperationAccepted};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_archives_wal_by_default_and_takes_base_backups_from_its_standby() {
    let mut home = Home::new();
    let api = home.start().await;
    let accepted: OperationAccepted = api.create("orders", 1, "async").await;
    let created = api.wait_operation(&home, &accepted.operation_id).await;
    assert_eq!(created.status, "succeeded", "{created:?}");

    // The configuration the CMS keeps names the default store, and no credential.
    let cms = home.cms_client().await;
    let config: serde_json::Value = cms
        .query_one(
            "SELECT backup FROM toygres.instances WHERE name = 'orders'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    let store = home.path().join("backups");
    assert_eq!(
        config["store_url"],
        format!("file://{}", store.display()),
        "{config}"
    );

    // WAL is archived under the instance's name once a segment is switched out.
    let rw = connect_rw(&api, "orders").await;
    rw.batch_execute("CREATE TABLE t AS SELECT generate_series(1, 1000) AS v")
        .await
        .unwrap();
    let segment: String = rw
        .query_one("SELECT pg_walfile_name(pg_switch_wal())", &[])
        .await
        .unwrap()
        .get(0);
    let wal_dir = store.join("orders").join("wal");
    eventually(
        Duration::from_secs(60),
        &format!("{segment} archived in {}", wal_dir.display()),
        || {
            let found = files_in(&wal_dir).iter().any(|f| f.starts_with(&segment));
            async move { found.then_some(()) }
        },
    )
    .await;

    // Bad input is refused before anything is queued; an unknown backup is not found.
    let path = "/v1/instances/orders/backups";
    let (status, body) = api
        .send(
            reqwest::Method::POST,
            path,
            Some(serde_json::json!({"kind": "full"})),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body.contains("\"error\"") && body.contains("kind"),
        "{body}"
    );
    let (status, body) = api
        .send(reqwest::Method::GET, "/v1/backups/bk-nosuchbackup", None)
        .await;
    assert_eq!(status, 404, "{body}");

    // A base backup waits for a healthy standby, and is taken there.
    eventually(Duration::from_secs(60), "orders-1 healthy", || async {
        let detail: InstanceDetail = api.get("/v1/instances/orders").await;
        detail
            .members
            .iter()
            .any(|m| m.name == "orders-1" && m.health == "healthy")
            .then_some(())
    })
    .await;
    let (status, body) = api
        .send(
            reqwest::Method::POST,
            path,
            Some(serde_json::json!({"kind": "base", "label": "first"})),
        )
        .await;
    assert_eq!(status, 202, "{body}");
    let accepted: BackupAccepted = serde_json::from_str(&body).unwrap();
    let operation = api.wait_operation(&home, &accepted.operation_id).await;
    assert_eq!(operation.status, "succeeded", "{operation:?}");
    let backup: BackupView = api
        .get(&format!("/v1/backups/{}", accepted.backup_id))
        .await;
    assert_eq!(backup.status, "succeeded", "{backup:?}");
    assert_eq!(backup.kind, "base");
    assert_eq!(backup.label.as_deref(), Some("first"));
    assert_eq!(backup.member.as_deref(), Some("orders-1"));
    assert!(backup.from_standby, "{backup:?}");
    assert!(backup.raw_bytes.unwrap() > 0 && backup.stored_bytes.unwrap() > 0);
    assert!(
        backup.start_lsn.is_some() && backup.stop_lsn.is_some(),
        "{backup:?}"
    );
    assert_eq!(backup.timeline, Some(1));
    assert!(backup.finished_at.is_some());
    let folder = store.join(backup.store_path.clone().unwrap());
    assert!(
        files_in(&folder).iter().any(|f| f.starts_with("base.tar")),
        "no base tar in {}",
        folder.display()
    );

    // Listed, through the API and the CLI.
    let list: BackupList = api.get(path).await;
    assert_eq!(list.backups, std::slice::from_ref(&backup));
    let out = stdout(&home.cli(&["backup", "list", "orders", "-o", "json"]));
    let listed: BackupList = serde_json::from_str(&out).unwrap();
    assert_eq!(listed.backups[0].id, backup.id);
    let out = stdout(&home.cli(&["backup", "get", &backup.id]));
    assert!(
        out.contains("orders-1") && out.contains("succeeded"),
        "{out}"
    );

    // A logical backup through the CLI is taken on the primary.
    let out = stdout(&home.cli(&[
        "backup", "create", "orders", "--kind", "logical", "-o", "json",
    ]));
    let logical: BackupView = serde_json::from_str(&out).unwrap();
    assert_eq!(logical.status, "succeeded", "{logical:?}");
    assert_eq!(logical.kind, "logical");
    assert_eq!(logical.member.as_deref(), Some("orders-0"));
    drop(rw);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_created_without_backups_archives_nothing_and_refuses_a_backup() {
    let mut home = Home::new();
    let api = home.start().await;
    stdout(&home.cli(&["create", "plain", "--no-backup"]));

    let (status, body) = api
        .send(
            reqwest::Method::POST,
            "/v1/instances/plain/backups",
            Some(serde_json::json!({})),
        )
        .await;
    assert_eq!(status, 409, "{body}");
    assert!(body.contains("backups off"), "{body}");

    let cms = home.cms_client().await;
    let off: bool = cms
        .query_one(
            "SELECT backup IS NULL FROM toygres.instances WHERE name = 'plain'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(off);
    let rw = connect_rw(&api, "plain").await;
    let mode: String = rw.query_one("SHOW archive_mode", &[]).await.unwrap().get(0);
    assert_eq!(mode, "off");
    rw.query_one("SELECT pg_switch_wal()", &[]).await.unwrap();
    assert!(
        files_in(&home.path().join("backups").join("plain").join("wal")).is_empty(),
        "WAL archived for an instance without backups"
    );
    let list: BackupList = api.get("/v1/instances/plain/backups").await;
    assert!(list.backups.is_empty());
    drop(rw);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scheduled_backups_fire_on_durable_timers_and_carry_on_after_a_controller_kill() {
    let mut home = Home::new();
    home.start().await;
    stdout(&home.cli(&["create", "timed", "--backup-schedule", "*/4 * * * * *"]));
    let out = stdout(&home.cli(&["backup", "schedule", "timed", "-o", "json"]));
    let view: BackupScheduleView = serde_json::from_str(&out).unwrap();
    assert_eq!(view.base_schedule, "*/4 * * * * *");
    assert!(!view.suspended && view.next_run.is_some(), "{view:?}");

    let before = eventually(Duration::from_secs(90), "a scheduled backup", || async {
        let (succeeded, _) = scheduled_backups(&home, "timed", "base").await;
        (succeeded >= 1).then_some(succeeded)
    })
    .await;

    // SIGKILL the controller: the schedule's timers are durable, so backups carry on after the
    // restart, and no run is taken twice (each label names the run's due time).
    home.kill_controller();
    let api = home.start().await;
    eventually(
        Duration::from_secs(90),
        "a scheduled backup after the restart",
        || async {
            let (succeeded, _) = scheduled_backups(&home, "timed", "base").await;
            (succeeded > before).then_some(())
        },
    )
    .await;
    let (_, mut labels) = scheduled_backups(&home, "timed", "base").await;
    let all = labels.len();
    labels.sort();
    labels.dedup();
    assert_eq!(
        labels.len(),
        all,
        "a scheduled run was taken twice: {labels:?}"
    );

    // Suspended: no next run; a bad expression is refused and changes nothing.
    let out = stdout(&home.cli(&["backup", "schedule", "timed", "--suspend", "-o", "json"]));
    let view: BackupScheduleView = serde_json::from_str(&out).unwrap();
    assert!(view.suspended && view.next_run.is_none(), "{view:?}");
    let (status, body) = api
        .send(
            reqwest::Method::PUT,
            "/v1/instances/timed/backups/schedule",
            Some(serde_json::json!({"base_schedule": "61 * * * *"})),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("invalid cron expression"), "{body}");
    let view: BackupScheduleView = api.get("/v1/instances/timed/backups/schedule").await;
    assert_eq!(view.base_schedule, "*/4 * * * * *");
    let out = stdout(&home.cli(&["backup", "schedule", "timed", "--resume", "@daily"]));
    assert!(out.contains("@daily (active)"), "{out}");

    // The retention policy (7 daily by default) was applied after each backup: of today's base
    // backups only the newest is left, in the CMS and in the store; the others' records live on
    // in events.
    let base = home.path().join("backups").join("timed").join("base");
    let kept = eventually(
        Duration::from_secs(60),
        "retention applied after the last backup",
        || async {
            let list: BackupList = api.get("/v1/instances/timed/backups").await;
            // (A `file://` store leaves a deleted backup's empty folder behind.)
            let stored: Vec<String> = files_in(&base)
                .into_iter()
                .filter(|id| !files_in(&base.join(id)).is_empty())
                .collect();
            match list.backups.as_slice() {
                [only] if only.status == "succeeded" && stored.len() == 1 => {
                    assert!(
                        only.store_path.as_deref().unwrap().ends_with(&stored[0]),
                        "{stored:?} {only:?}"
                    );
                    Some(only.clone())
                }
                _ => None,
            }
        },
    )
    .await;
    let deleted = events(&api, "timed").await;
    assert!(
        deleted.events.iter().any(|e| e.kind == "backups-deleted"),
        "{deleted:?}"
    );

    // A dry run keeps the newest and deletes nothing more; a cleanup now has nothing to do.
    let out = stdout(&home.cli(&["backup", "cleanup", "timed", "--dry-run", "-o", "json"]));
    let plan: CleanupPlan = serde_json::from_str(&out).unwrap();
    assert!(plan.keep.iter().any(|k| k.id == kept.id), "{plan:?}");
    assert!(plan.delete.is_empty(), "{plan:?}");
    let out = stdout(&home.cli(&["backup", "cleanup", "timed"]));
    assert!(out.contains("nothing to delete"), "{out}");
}
