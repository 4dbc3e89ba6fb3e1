//! Restore through the controller to a transaction id and to a named restore point: the new
//! instance has exactly the rows committed up to that transaction or made before that point;
//! bad ids and names are refused (API 400, CLI error) and record nothing.
//!
//! Every process a test starts is killed when the test ends (see [`Home`]'s `Drop`).

#![allow(clippy::unwrap_used)]

mod support;

use support::archive::*;
use support::*;
use toygres_common::backup_api::{BackupView, RestorePointView};
use toygres_common::controller_api::{InstanceDetail, OperationAccepted};

async fn refused(api: &Api, path: &str, body: serde_json::Value, says: &str) {
    let (got, text) = api
        .send(reqwest::Method::POST, path, Some(body.clone()))
        .await;
    assert_eq!(got, 400, "{body} -> {text}");
    assert!(
        text.contains("\"error\"") && text.contains(says),
        "{body} -> {text}"
    );
}

fn cli_refuses(home: &Home, args: &[&str], says: &str) {
    let out = home.cli(args);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{args:?} succeeded: {out:?}");
    assert!(stderr.contains(says), "{args:?}: {stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restore_to_an_xid_or_a_restore_point_has_exactly_the_rows_before_it() {
    let mut home = Home::new();
    let api = home.start().await;
    let store = home.path().join("backups");
    let accepted: OperationAccepted = api.create("src", 0, "async").await;
    let created = api.wait_operation(&home, &accepted.operation_id).await;
    assert_eq!(created.status, "succeeded", "{created:?}");

    // Rows 1..=100, a base backup, rows 101..=150 in transaction X, rows 151..=200, the
    // restore point, rows 201..=300, archived.
    let src = connect_rw(&api, "src").await;
    src.batch_execute("CREATE TABLE t (v integer PRIMARY KEY)")
        .await
        .unwrap();
    insert_rows(&src, 1, 100).await;
    let out = stdout(&home.cli(&["backup", "create", "src", "-o", "json"]));
    let backup: BackupView = serde_json::from_str(&out).unwrap();
    assert_eq!(backup.status, "succeeded", "{backup:?}");
    let xid: i64 = src
        .query_one(
            "WITH added AS (INSERT INTO t SELECT generate_series(101, 150) RETURNING v) \
             SELECT txid_current()",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    insert_rows(&src, 151, 200).await;
    let out = stdout(&home.cli(&["backup", "restore-point", "src", "before-201", "-o", "json"]));
    let point: RestorePointView = serde_json::from_str(&out).unwrap();
    assert_eq!(point.name, "before-201");
    assert!(point.archived, "{point:?}");
    insert_rows(&src, 201, 300).await;
    archive_now(&src, &store, "src").await;

    // Bad ids, names and combinations are refused, and record nothing.
    let restore = "/v1/instances/src/restore";
    refused(
        &api,
        restore,
        serde_json::json!({"to": "x", "xid": 0}),
        "xid",
    )
    .await;
    refused(
        &api,
        restore,
        serde_json::json!({"to": "x", "xid": -5}),
        "u64",
    )
    .await;
    refused(
        &api,
        restore,
        serde_json::json!({"to": "x", "xid": "12"}),
        "u64",
    )
    .await;
    refused(
        &api,
        restore,
        serde_json::json!({"to": "x", "restore_point": ""}),
        "restore_point",
    )
    .await;
    refused(
        &api,
        restore,
        serde_json::json!({"to": "x", "restore_point": "a\u{7}b"}),
        "restore_point",
    )
    .await;
    refused(
        &api,
        restore,
        serde_json::json!({"to": "x", "restore_point": "p".repeat(64)}),
        "restore_point",
    )
    .await;
    refused(
        &api,
        restore,
        serde_json::json!({"to": "x", "xid": xid, "restore_point": "before-201"}),
        "at most one recovery target",
    )
    .await;
    refused(
        &api,
        restore,
        serde_json::json!({"to": "x", "time": "2026-01-01T00:00:00Z", "xid": xid}),
        "at most one recovery target",
    )
    .await;
    refused(
        &api,
        "/v1/instances/src/backups/restore-points",
        serde_json::json!({"name": "bad\nname"}),
        "restore point name",
    )
    .await;
    let bare = api
        .http
        .post(format!(
            "{}/v1/instances/src/backups/restore-points",
            api.url
        ))
        .json(&serde_json::json!({"name": "anyone"}))
        .send()
        .await
        .unwrap();
    assert_eq!(bare.status(), 401, "a restore point without the token");
    cli_refuses(&home, &["restore", "src", "--to", "x", "--xid", "1"], "xid");
    cli_refuses(
        &home,
        &["restore", "src", "--to", "x", "--xid", "abc"],
        "xid",
    );
    cli_refuses(
        &home,
        &[
            "backup", "restore", "src", "--to", "x", "--xid", "900", "--name", "p",
        ],
        "cannot be used with",
    );
    cli_refuses(
        &home,
        &[
            "backup",
            "restore",
            "src",
            "--to",
            "x",
            "--name",
            &"p".repeat(64),
        ],
        "restore point name",
    );
    cli_refuses(
        &home,
        &["backup", "restore-point", "src", ""],
        "restore point name",
    );
    let (status, _) = api
        .send(reqwest::Method::GET, "/v1/instances/x", None)
        .await;
    assert_eq!(status, 404, "a refused restore recorded an instance");

    // To the transaction, through the API: rows 1..=150.
    let (status, text) = api
        .send(
            reqwest::Method::POST,
            restore,
            Some(serde_json::json!({"to": "atxid", "xid": xid})),
        )
        .await;
    assert_eq!(status, 202, "{text}");
    let accepted: OperationAccepted = serde_json::from_str(&text).unwrap();
    let operation = api.wait_operation(&home, &accepted.operation_id).await;
    assert_eq!(operation.status, "succeeded", "{operation:?}");
    let at_xid = connect_rw(&api, "atxid").await;
    assert_eq!(rows(&at_xid).await, (150, Some(150)));

    // To the restore point, through `backup restore`: rows 1..=200.
    let out = stdout(&home.cli(&[
        "backup",
        "restore",
        "src",
        "--to",
        "atpoint",
        "--name",
        "before-201",
        "-o",
        "json",
    ]));
    let detail: InstanceDetail = serde_json::from_str(&out).unwrap();
    assert_eq!(detail.summary.name, "atpoint");
    let at_point = connect_rw(&api, "atpoint").await;
    assert_eq!(rows(&at_point).await, (200, Some(200)));

    // The source is untouched.
    assert_eq!(rows(&src).await, (300, Some(300)));
    drop((src, at_xid, at_point));
}
