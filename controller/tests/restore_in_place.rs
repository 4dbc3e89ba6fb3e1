//! Restoring an instance in place, end to end (real Postgres, the default `file://` store): its
//! data replaced by a restore of its own backup to a time, refused unless confirmed, its
//! standby cloned again, its endpoints following, its archive going on under its own prefix on
//! a new timeline; and a restore that cannot finish puts the instance back as it was.
//!
//! Every process a test starts is killed when the test ends (see [`Home`]'s `Drop`).

#![allow(clippy::unwrap_used)]

mod support;

use std::path::{Path, PathBuf};
use std::time::Duration;

use support::archive::*;
use support::*;
use toygres_common::backup_api::{BackupList, BackupView};
use toygres_common::controller_api::{InstanceDetail, OperationAccepted};
use toygres_common::sidecar_api::RestoreProgress;

/// Data directories an in-place restore set aside and left behind, anywhere under `dir`.
fn set_aside_dirs(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.to_string_lossy().ends_with(".before-restore") {
                found.push(path);
            } else if entry.file_type().is_ok_and(|t| t.is_dir()) && !path.ends_with("data") {
                stack.push(path);
            }
        }
    }
    found
}

async fn state_of(api: &Api, name: &str) -> String {
    let detail: InstanceDetail = api.get(&format!("/v1/instances/{name}")).await;
    detail.summary.state
}

/// Rows 1..=100, a base backup, rows 101..=200, then (returned) the server's time, then rows
/// 201..=300, archived.
async fn rows_around_a_time(home: &Home, api: &Api, name: &str) -> String {
    let client = connect_rw(api, name).await;
    client
        .batch_execute("CREATE TABLE t (v integer PRIMARY KEY)")
        .await
        .unwrap();
    insert_rows(&client, 1, 100).await;
    let out = stdout(&home.cli(&["backup", "create", name, "-o", "json"]));
    let backup: BackupView = serde_json::from_str(&out).unwrap();
    assert_eq!(backup.status, "succeeded", "{backup:?}");
    insert_rows(&client, 101, 200).await;
    let time = server_now(&client).await;
    insert_rows(&client, 201, 300).await;
    archive_now(&client, &home.path().join("backups"), name).await;
    time
}

/// The standby's rows, once it has replayed `expected`.
async fn standby_has(api: &Api, name: &str, standby: &str, expected: (i64, Option<i32>)) {
    let client = connect_member(api, name, standby).await;
    let in_recovery: bool = client
        .query_one("SELECT pg_is_in_recovery()", &[])
        .await
        .unwrap()
        .get(0);
    assert!(in_recovery, "{standby} is a standby");
    eventually(
        Duration::from_secs(30),
        &format!("{standby} to have {expected:?}"),
        || {
            let client = &client;
            async move { (rows(client).await == expected).then_some(()) }
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_in_place_restore_is_refused_unconfirmed_then_keeps_exactly_the_rows_before_the_time() {
    let mut home = Home::new();
    let api = home.start().await;
    let store = home.path().join("backups");
    // Every backup of the day is kept (the default keeps a day's newest only).
    let (status, text) = api
        .send(
            reqwest::Method::POST,
            "/v1/instances",
            Some(
                serde_json::json!({"name": "db", "replicas": 1, "replication": "async",
                "backup": {"retention": {"window_days": 1}}}),
            ),
        )
        .await;
    assert_eq!(status, 202, "{text}");
    let accepted: OperationAccepted = serde_json::from_str(&text).unwrap();
    let created = api.wait_operation(&home, &accepted.operation_id).await;
    assert_eq!(created.status, "succeeded", "{created:?}");
    let time = rows_around_a_time(&home, &api, "db").await;
    // A backup after the time: the restore goes back before it, so it is left behind.
    let out = stdout(&home.cli(&["backup", "create", "db", "-o", "json"]));
    let left_behind: BackupView = serde_json::from_str(&out).unwrap();
    assert_eq!(left_behind.status, "succeeded", "{left_behind:?}");

    // Unconfirmed (or confirmed with another name): refused, and nothing changes.
    let restore = "/v1/instances/db/restore";
    for body in [
        serde_json::json!({"in_place": true, "time": time}),
        serde_json::json!({"in_place": true, "confirm": "other", "time": time}),
    ] {
        let (status, text) = api
            .send(reqwest::Method::POST, restore, Some(body.clone()))
            .await;
        assert_eq!(status, 400, "{body} -> {text}");
        assert!(
            text.contains("\"error\"") && text.contains("confirm"),
            "{body} -> {text}"
        );
    }
    for args in [
        vec!["restore", "db", "--in-place", "--time", &time],
        vec![
            "backup",
            "restore",
            "db",
            "--in-place",
            "--confirm",
            "dbx",
            "--time",
            &time,
        ],
    ] {
        let out = home.cli(&args);
        assert!(!out.status.success(), "{args:?} succeeded: {out:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("--confirm db"), "{args:?}: {stderr}");
    }
    let cms = home.cms_client().await;
    let recorded: i64 = cms
        .query_one(
            "SELECT count(*) FROM toygres.operations WHERE kind = 'restore-in-place'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(recorded, 0, "a refused restore recorded an operation");
    assert_eq!(state_of(&api, "db").await, "running");
    let before = connect_rw(&api, "db").await;
    assert_eq!(rows(&before).await, (300, Some(300)));
    drop(before);

    let listed: BackupList =
        serde_json::from_str(&stdout(&home.cli(&["backup", "list", "db", "-o", "json"]))).unwrap();
    let backup_sizes: std::collections::BTreeMap<String, u64> = listed
        .backups
        .iter()
        .filter_map(|b| {
            Some((
                b.store_path.as_deref()?.rsplit('/').next()?.to_string(),
                b.raw_bytes?,
            ))
        })
        .collect();

    // Confirmed, through the CLI: the instance says `restoring` while it runs.
    let mut cli = home.command();
    cli.args([
        "restore",
        "db",
        "--in-place",
        "--confirm",
        "db",
        "--time",
        &time,
        "-o",
        "json",
    ]);
    let running = tokio::task::spawn_blocking(move || cli.output().unwrap());
    let mut states = Vec::new();
    // What the operation says of the restore while the primary recovers.
    let mut restore_seen: Vec<RestoreProgress> = Vec::new();
    while !running.is_finished() {
        let detail: InstanceDetail = api.get("/v1/instances/db").await;
        if states.last() != Some(&detail.summary.state) {
            states.push(detail.summary.state);
        }
        if let Some(id) = detail.last_operation {
            let operation: Operation = api.get(&format!("/v1/operations/{id}")).await;
            if let Some(restore) = operation.progress.and_then(|p| p.restore) {
                restore_seen.push(restore);
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let out = running.await.unwrap();
    let detail: InstanceDetail = serde_json::from_str(&stdout(&out)).unwrap();
    assert!(
        states.iter().any(|s| s == "restoring"),
        "never seen restoring: {states:?}"
    );
    // Replay was followed by position, from where the base backup ends; the download by bytes
    // of the backup's size.
    let replay: Vec<&RestoreProgress> = restore_seen
        .iter()
        .filter(|r| r.phase == "replay")
        .collect();
    assert!(
        !replay.is_empty(),
        "no replay progress seen: {restore_seen:?}"
    );
    for r in &restore_seen {
        assert_eq!(r.bytes_total, backup_sizes.get(&r.backup).copied(), "{r:?}");
        assert!(r.bytes_done <= r.bytes_total.unwrap_or(0), "{r:?}");
        assert!(r.target.contains("time"), "{r:?}");
    }
    for r in &replay {
        assert_eq!(
            r.bytes_done,
            r.bytes_total.unwrap_or(0),
            "unpacked in full before replay: {r:?}"
        );
        assert!(r.start_lsn.is_some(), "{r:?}");
        assert!(r.line().contains("WAL replay at"), "{}", r.line());
    }
    assert_eq!(detail.summary.state, "running", "{detail:?}");
    let operation: Operation = api
        .get(&format!(
            "/v1/operations/{}",
            detail.last_operation.clone().unwrap()
        ))
        .await;
    assert_eq!(operation.kind, "restore-in-place", "{operation:?}");
    let done = operation.progress.unwrap().message;
    assert!(done.contains("restored in place"), "{done}");

    // Exactly the rows before the time, through the rw endpoint; the standby streams them.
    let restored = connect_rw(&api, "db").await;
    assert_eq!(rows(&restored).await, (200, Some(200)));
    wait_all_healthy(&api, &home, "db", 2).await;
    standby_has(&api, "db", "db-1", (200, Some(200))).await;
    restored
        .batch_execute("INSERT INTO t VALUES (1000)")
        .await
        .unwrap();
    standby_has(&api, "db", "db-1", (201, Some(1000))).await;
    let after_restore = server_now(&restored).await;
    assert!(
        set_aside_dirs(&home.path().join("instances")).is_empty(),
        "the old data was kept: {:?}",
        set_aside_dirs(&home.path().join("instances"))
    );

    // It archives on under its own prefix, on a new timeline: a later backup and a restore of
    // it (to a new instance) work.
    let segment = archive_now(&restored, &store, "db").await;
    assert!(
        !segment.starts_with("00000001"),
        "still timeline 1: {segment}"
    );
    assert!(
        files_in(&store.join("db").join("wal"))
            .iter()
            .any(|f| f.contains(".history")),
        "no new timeline's history archived"
    );
    let out = stdout(&home.cli(&["backup", "create", "db", "-o", "json"]));
    let backup: BackupView = serde_json::from_str(&out).unwrap();
    assert_eq!(backup.status, "succeeded", "{backup:?}");
    restored
        .batch_execute("INSERT INTO t VALUES (1001)")
        .await
        .unwrap();
    archive_now(&restored, &store, "db").await;
    let out = stdout(&home.cli(&["restore", "db", "--to", "copy", "-o", "json"]));
    let copy: InstanceDetail = serde_json::from_str(&out).unwrap();
    assert_eq!(copy.summary.state, "running");
    let copy = connect_rw(&api, "copy").await;
    assert_eq!(rows(&copy).await, (202, Some(1001)));

    // The backup taken after the time lies past the fork: it is listed as abandoned, and a
    // restore to a time after the in-place restore starts from the first backup (the newest
    // one on the timeline history), not from it.
    let out = stdout(&home.cli(&["backup", "list", "db", "-o", "json"]));
    let listed: BackupList = serde_json::from_str(&out).unwrap();
    let abandoned: Vec<&str> = listed
        .backups
        .iter()
        .filter(|b| b.abandoned)
        .map(|b| b.id.as_str())
        .collect();
    assert_eq!(abandoned, [left_behind.id.as_str()], "{listed:?}");
    // `backup get` says so too, and of the backup the restores start from, that it is not.
    let got = |id: &str| -> BackupView {
        serde_json::from_str(&stdout(&home.cli(&["backup", "get", id, "-o", "json"]))).unwrap()
    };
    assert!(got(&left_behind.id).abandoned);
    assert!(!got(&backup.id).abandoned);
    let out = stdout(&home.cli(&[
        "restore",
        "db",
        "--to",
        "copy2",
        "--time",
        &after_restore,
        "-o",
        "json",
    ]));
    let copy2: InstanceDetail = serde_json::from_str(&out).unwrap();
    assert_eq!(copy2.summary.state, "running", "{copy2:?}");
    let copy2 = connect_rw(&api, "copy2").await;
    assert_eq!(rows(&copy2).await, (201, Some(1000)));
    drop((restored, copy, copy2, cms));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_in_place_restore_that_cannot_finish_puts_the_instance_back_as_it_was() {
    let mut home = Home::new();
    let api = home.start().await;
    let accepted: OperationAccepted = api.create("db", 1, "async").await;
    let created = api.wait_operation(&home, &accepted.operation_id).await;
    assert_eq!(created.status, "succeeded", "{created:?}");
    rows_around_a_time(&home, &api, "db").await;
    let before: InstanceDetail = api.get("/v1/instances/db").await;

    // A transaction that never happened: recovery replays the whole archive without reaching
    // it, and Postgres gives up.
    let operation = api
        .run_operation(
            &home,
            "/v1/instances/db/restore",
            serde_json::json!({"in_place": true, "confirm": "db", "xid": 2_000_000_000u64}),
        )
        .await;
    assert_eq!(operation.status, "failed", "{operation:?}");
    let error = operation.error.clone().unwrap_or_default();
    assert!(error.contains("put back as it was"), "{error}");

    // As it was: running, every row, the standby streaming from the same primary, writes
    // taken, nothing left aside.
    assert_eq!(state_of(&api, "db").await, "running");
    wait_all_healthy(&api, &home, "db", 2).await;
    let after: InstanceDetail = api.get("/v1/instances/db").await;
    let roles = |d: &InstanceDetail| -> Vec<(String, String)> {
        d.members
            .iter()
            .map(|m| (m.name.clone(), m.role.clone()))
            .collect()
    };
    assert_eq!(roles(&after), roles(&before));
    let client = connect_rw(&api, "db").await;
    let timeline: i32 = client
        .query_one("SELECT timeline_id FROM pg_control_checkpoint()", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(timeline, 1, "the old data was promoted again");
    assert_eq!(rows(&client).await, (300, Some(300)));
    client
        .batch_execute("INSERT INTO t VALUES (301)")
        .await
        .unwrap();
    standby_has(&api, "db", "db-1", (301, Some(301))).await;
    assert!(
        set_aside_dirs(&home.path().join("instances")).is_empty(),
        "old data left aside: {:?}",
        set_aside_dirs(&home.path().join("instances"))
    );
    drop(client);
}
