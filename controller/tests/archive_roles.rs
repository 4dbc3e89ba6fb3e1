//! WAL archiving across roles, end to end: only the primary archives into the instance's prefix
//! (a standby's Postgres archives nothing), and archiving carries on across a switchover and a
//! failover — each new timeline's history file and segments reach the store from the new
//! primary — so a point in time after both restores.
//!
//! Every process a test starts is killed when the test ends (see [`Home`]'s `Drop`).

#![allow(clippy::unwrap_used)]

mod support;

use support::archive::*;
use support::*;
use toygres_common::backup_api::BackupView;

/// How many files the member's Postgres has archived, and its `archive_mode`.
async fn archiver(client: &tokio_postgres::Client) -> (i64, String) {
    let row = client
        .query_one(
            "SELECT archived_count, current_setting('archive_mode') FROM pg_stat_archiver",
            &[],
        )
        .await
        .unwrap();
    (row.get(0), row.get(1))
}

/// Hands the primary role over (`switchover`, or a forced `failover`) and waits until the
/// instance is whole again under a new primary on a new timeline.
async fn hand_over(api: &Api, home: &Home, how: &str, body: serde_json::Value) -> String {
    let before = primary_of(api, "roles").await.unwrap();
    let (status, text) = api
        .send(
            reqwest::Method::POST,
            &format!("/v1/instances/roles/{how}"),
            Some(body),
        )
        .await;
    assert_eq!(status, 202, "{how}: {text}");
    let accepted: OperationAccepted = serde_json::from_str(&text).unwrap();
    let operation = api.wait_operation(home, &accepted.operation_id).await;
    assert_eq!(operation.status, "succeeded", "{operation:?}");
    wait_all_healthy(api, home, "roles", 2).await;
    let after = primary_of(api, "roles").await.unwrap();
    assert_ne!(before, after, "{how} kept the primary");
    after
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_primary_archives_and_archiving_follows_a_switchover_and_a_failover() {
    let mut home = Home::new();
    let api = home.start_with_env(&[NO_RESTARTS]).await;
    let store = home.path().join("backups");
    let wal = store.join("roles").join("wal");
    let accepted = api.create("roles", 1, "async").await;
    let created = api.wait_operation(&home, &accepted.operation_id).await;
    assert_eq!(created.status, "succeeded", "{created:?}");
    wait_all_healthy(&api, &home, "roles", 2).await;

    let db = connect_rw(&api, "roles").await;
    db.batch_execute("CREATE TABLE t (v integer PRIMARY KEY)")
        .await
        .unwrap();
    insert_rows(&db, 1, 50).await;
    archive_now(&db, &store, "roles").await;
    let out = stdout(&home.cli(&["backup", "create", "roles", "-o", "json"]));
    let backup: BackupView = serde_json::from_str(&out).unwrap();
    assert_eq!(backup.status, "succeeded", "{backup:?}");
    archive_now(&db, &store, "roles").await;

    // The standby streams the same WAL but archives none of it.
    let primary = primary_of(&api, "roles").await.unwrap();
    let status = members(&api, "roles").await;
    let standby = status
        .members
        .iter()
        .find(|m| m.name != primary)
        .unwrap()
        .name
        .clone();
    let (archived, mode) = archiver(&connect_member(&api, "roles", &primary).await).await;
    assert!(archived > 0 && mode == "on", "primary: {archived} {mode}");
    let (archived, mode) = archiver(&connect_member(&api, "roles", &standby).await).await;
    assert_eq!((archived, mode.as_str()), (0, "on"), "the standby archived");

    // A switchover: timeline 2's history file and segments come from the new primary.
    let second = hand_over(&api, &home, "switchover", serde_json::json!({})).await;
    assert_eq!(second, standby);
    let db = connect_rw(&api, "roles").await;
    insert_rows(&db, 51, 100).await;
    let segment = archive_now(&db, &store, "roles").await;
    assert!(segment.starts_with("00000002"), "{segment}");
    assert!(
        files_in(&wal)
            .iter()
            .any(|f| f.starts_with("00000002.history")),
        "{:?}",
        files_in(&wal)
    );
    let (archived, _) = archiver(&connect_member(&api, "roles", &second).await).await;
    assert!(archived > 0, "the new primary archived nothing");

    // A forced failover: timeline 3, archived the same way.
    hand_over(&api, &home, "failover", serde_json::json!({"force": true})).await;
    let db = connect_rw(&api, "roles").await;
    insert_rows(&db, 101, 150).await;
    let target = server_now(&db).await;
    insert_rows(&db, 151, 200).await;
    let segment = archive_now(&db, &store, "roles").await;
    assert!(segment.starts_with("00000003"), "{segment}");
    assert!(
        files_in(&wal)
            .iter()
            .any(|f| f.starts_with("00000003.history")),
        "{:?}",
        files_in(&wal)
    );

    // A point after both changes restores from the backup taken on timeline 1.
    let out = stdout(&home.cli(&[
        "restore", "roles", "--to", "after", "--time", &target, "-o", "json",
    ]));
    assert!(out.contains("\"after\""), "{out}");
    let restored = connect_rw(&api, "after").await;
    assert_eq!(rows(&restored).await, (150, Some(150)));
    drop((db, restored));
}
