//! Restore through the controller, end to end: a new instance made from another's backups and
//! WAL in the default `file://` store, recovered to a time or a WAL position, while the source
//! carries on untouched; bad targets refused before anything is recorded.
//!
//! Every process a test starts is killed when the test ends (see [`Home`]'s `Drop`).

#![allow(clippy::unwrap_used)]

mod support;

use support::archive::*;
use support::*;
use toygres_common::backup_api::BackupView;
use toygres_common::controller_api::{InstanceDetail, OperationAccepted};

async fn refused(api: &Api, body: serde_json::Value, status: u16, says: &str) {
    let (got, text) = api
        .send(
            reqwest::Method::POST,
            "/v1/instances/src/restore",
            Some(body.clone()),
        )
        .await;
    assert_eq!(got, status, "{body} -> {text}");
    assert!(
        text.contains("\"error\"") && text.contains(says),
        "{body} -> {text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restore_to_a_time_or_lsn_makes_a_new_instance_with_exactly_the_rows_before_it() {
    let mut home = Home::new();
    let api = home.start().await;
    let store = home.path().join("backups");
    let accepted: OperationAccepted = api.create("src", 0, "async").await;
    let created = api.wait_operation(&home, &accepted.operation_id).await;
    assert_eq!(created.status, "succeeded", "{created:?}");

    // Rows 1..=100, a base backup, rows 101..=200, the target (a time and an LSN), then rows
    // 201..=300, archived.
    let src = connect_rw(&api, "src").await;
    src.batch_execute("CREATE TABLE t (v integer PRIMARY KEY)")
        .await
        .unwrap();
    insert_rows(&src, 1, 100).await;
    let before_backup = server_now(&src).await;
    let out = stdout(&home.cli(&["backup", "create", "src", "-o", "json"]));
    let backup: BackupView = serde_json::from_str(&out).unwrap();
    assert_eq!(backup.status, "succeeded", "{backup:?}");
    insert_rows(&src, 101, 200).await;
    let target = src
        .query_one(
            "SELECT to_char(clock_timestamp() AT TIME ZONE 'UTC', \
                            'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"'), \
                    pg_current_wal_lsn()::text",
            &[],
        )
        .await
        .unwrap();
    let (time, lsn): (String, String) = (target.get(0), target.get(1));
    insert_rows(&src, 201, 300).await;
    archive_now(&src, &store, "src").await;

    // Bad targets and names are refused, and record nothing.
    refused(
        &api,
        serde_json::json!({"to": "early", "time": before_backup}),
        400,
        "before the first base backup",
    )
    .await;
    refused(
        &api,
        serde_json::json!({"to": "later", "time": "2999-01-01T00:00:00Z"}),
        400,
        "in the future",
    )
    .await;
    refused(
        &api,
        serde_json::json!({"to": "other", "backup_id": "bk-nosuchbackup"}),
        404,
        "bk-nosuchbackup",
    )
    .await;
    refused(
        &api,
        serde_json::json!({"to": "other", "time": "yesterday"}),
        400,
        "RFC 3339",
    )
    .await;
    refused(
        &api,
        serde_json::json!({"to": "src", "time": time}),
        400,
        "other than the source",
    )
    .await;
    let (status, text) = api
        .send(
            reqwest::Method::POST,
            "/v1/instances/nosuch/restore",
            Some(serde_json::json!({"to": "other"})),
        )
        .await;
    assert_eq!(status, 404, "{text}");
    for name in ["early", "later", "other"] {
        let (status, _) = api
            .send(reqwest::Method::GET, &format!("/v1/instances/{name}"), None)
            .await;
        assert_eq!(status, 404, "a refused restore recorded {name}");
    }
    let out = home.cli(&["restore", "src", "--to", "early", "--time", &before_backup]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("before the first base backup"),
        "{out:?}"
    );

    // To the time, through the CLI, with a standby cloned from the restored primary.
    let out = stdout(&home.cli(&[
        "restore",
        "src",
        "--to",
        "attime",
        "--time",
        &time,
        "--replicas",
        "1",
        "-o",
        "json",
    ]));
    let detail: InstanceDetail = serde_json::from_str(&out).unwrap();
    assert_eq!(detail.members.len(), 2, "{detail:?}");
    let restored = connect_rw(&api, "attime").await;
    assert_eq!(rows(&restored).await, (200, Some(200)));
    assert_ne!(
        password_of(&api, "attime").await,
        password_of(&api, "src").await,
        "the restored instance has its own credentials"
    );

    // It archives under its own name; the source's WAL gets nothing of it (its new timeline's
    // history file included), and the source still has every row and still archives.
    restored
        .batch_execute("INSERT INTO t VALUES (1000)")
        .await
        .unwrap();
    archive_now(&restored, &store, "attime").await;
    assert!(
        !files_in(&store.join("src").join("wal"))
            .iter()
            .any(|f| f.ends_with(".history")),
        "the restored instance archived into the source's WAL"
    );
    assert_eq!(rows(&src).await, (300, Some(300)));
    archive_now(&src, &store, "src").await;

    // To the WAL position, through the API, from the named backup.
    let (status, text) = api
        .send(
            reqwest::Method::POST,
            "/v1/instances/src/restore",
            Some(serde_json::json!({"to": "atlsn", "lsn": lsn, "backup_id": backup.id})),
        )
        .await;
    assert_eq!(status, 202, "{text}");
    let accepted: OperationAccepted = serde_json::from_str(&text).unwrap();
    assert_eq!(accepted.instance, "atlsn");
    let operation = api.wait_operation(&home, &accepted.operation_id).await;
    assert_eq!(operation.status, "succeeded", "{operation:?}");
    let at_lsn = connect_rw(&api, "atlsn").await;
    assert_eq!(rows(&at_lsn).await, (200, Some(200)));
    drop((src, restored, at_lsn));
}
