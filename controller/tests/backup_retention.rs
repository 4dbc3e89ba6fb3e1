//! Retention through the controller, end to end: with a small keep policy, each backup that
//! succeeds deletes the ones the policy drops — their objects and the archived WAL only they
//! needed leave the `file://` store, their records leave the CMS for a `backups-deleted` event —
//! and what is kept still restores to a point in time. Backups deleted by id; deletes refused
//! (unknown, running, the only base backup); a restore to a time after the last archived
//! segment (the source switches WAL first), refused while the source is down; the
//! recoverability window.
//!
//! Every process a test starts is killed when the test ends (see [`Home`]'s `Drop`).

#![allow(clippy::unwrap_used)]

mod support;

use std::path::Path;
use std::time::Duration;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use support::archive::*;
use support::*;
use toygres_common::backup_api::{BackupAccepted, BackupView, RecoverabilityWindow};
use toygres_common::controller_api::InstanceDetail;

/// The segment (timeline, segment number) of a WAL file in the store, `None` for history
/// files.
fn segment_of(file: &str) -> Option<(u32, u64)> {
    let name = file.get(..24)?;
    if !name.chars().all(|c| c.is_ascii_hexdigit()) {
        return None;
    }
    let tli = u32::from_str_radix(&name[..8], 16).ok()?;
    let log = u64::from_str_radix(&name[8..16], 16).ok()?;
    let seg = u64::from_str_radix(&name[16..24], 16).ok()?;
    Some((tli, (log << 8) | seg))
}

/// The segment number a backup starts in (16 MiB segments: 256 a log file).
fn start_segment(backup: &BackupView) -> u64 {
    let (hi, lo) = backup
        .start_lsn
        .as_deref()
        .unwrap()
        .split_once('/')
        .unwrap();
    let lsn = (u64::from_str_radix(hi, 16).unwrap() << 32) | u64::from_str_radix(lo, 16).unwrap();
    lsn / (16 * 1024 * 1024)
}

/// Takes a base backup through the CLI and returns it (succeeded).
fn backup_now(home: &Home, name: &str) -> BackupView {
    let out = stdout(&home.cli(&["backup", "create", name, "-o", "json"]));
    let backup: BackupView = serde_json::from_str(&out).unwrap();
    assert_eq!(backup.status, "succeeded", "{backup:?}");
    backup
}

/// Waits until backup `id` is gone from the CMS (404).
async fn gone(api: &Api, id: &str) {
    eventually(
        Duration::from_secs(60),
        &format!("{id} deleted"),
        || async {
            let (status, _) = api
                .send(reqwest::Method::GET, &format!("/v1/backups/{id}"), None)
                .await;
            (status == 404).then_some(())
        },
    )
    .await;
}

/// The base backups with objects in the store (a `file://` store leaves a deleted backup's
/// empty folder behind).
fn stored_base_backups(store: &Path, name: &str) -> Vec<String> {
    let base = store.join(name).join("base");
    files_in(&base)
        .into_iter()
        .filter(|id| !files_in(&base.join(id)).is_empty())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_deletes_dropped_backups_with_their_wal_and_the_kept_ones_still_restore() {
    let mut home = Home::new();
    // No supervisor restarts: the end of the test takes the instance down.
    let api = home.start_with_env(&[NO_RESTARTS]).await;
    let store = home.path().join("backups");
    // One daily backup kept: of today's backups, only the newest.
    let (status, text) = api
        .send(
            reqwest::Method::POST,
            "/v1/instances",
            Some(serde_json::json!({
                "name": "kept", "replicas": 0,
                "backup": {"retention": {"daily": 1, "weekly": 0, "monthly": 0}},
            })),
        )
        .await;
    assert_eq!(status, 202, "{text}");
    let accepted: OperationAccepted = serde_json::from_str(&text).unwrap();
    let created = api.wait_operation(&home, &accepted.operation_id).await;
    assert_eq!(created.status, "succeeded", "{created:?}");

    let db = connect_rw(&api, "kept").await;
    db.batch_execute("CREATE TABLE t (v integer PRIMARY KEY)")
        .await
        .unwrap();
    insert_rows(&db, 1, 50).await;
    archive_now(&db, &store, "kept").await;
    let first = backup_now(&home, "kept");
    insert_rows(&db, 51, 100).await;
    archive_now(&db, &store, "kept").await;
    let wal_before = files_in(&store.join("kept").join("wal"));

    // The second backup drops the first: its objects, its record, and the WAL before the
    // second one's start leave; the WAL from there on stays.
    let second = backup_now(&home, "kept");
    gone(&api, &first.id).await;
    let stored = stored_base_backups(&store, "kept");
    assert_eq!(stored.len(), 1, "{stored:?}");
    assert!(second.store_path.as_deref().unwrap().ends_with(&stored[0]));
    let from = start_segment(&second);
    let wal_after = files_in(&store.join("kept").join("wal"));
    let old: Vec<&String> = wal_after
        .iter()
        .filter(|f| segment_of(f).is_some_and(|(_, seg)| seg < from))
        .collect();
    assert!(old.is_empty(), "WAL no kept backup needs is left: {old:?}");
    assert!(
        wal_before
            .iter()
            .any(|f| segment_of(f).is_some_and(|(_, seg)| seg < from)),
        "the test archived no WAL before the second backup: {wal_before:?}"
    );
    assert!(
        wal_after
            .iter()
            .any(|f| segment_of(f).is_some_and(|(_, seg)| seg >= from)),
        "the kept backup's WAL is gone: {wal_after:?}"
    );
    let log = events(&api, "kept").await;
    assert!(
        log.events
            .iter()
            .any(|e| e.kind == "backups-deleted" && e.message.contains(&first.id)),
        "{log:?}"
    );

    // Deletes refused: an unknown backup, the only base backup, a running one.
    let (status, body) = api
        .send(reqwest::Method::DELETE, "/v1/backups/bk-nosuchbackup", None)
        .await;
    assert_eq!(status, 404, "{body}");
    let (status, body) = api
        .send(
            reqwest::Method::DELETE,
            &format!("/v1/backups/{}", second.id),
            None,
        )
        .await;
    assert_eq!(status, 409, "{body}");
    assert!(body.contains("only base backup"), "{body}");
    let out = home.cli(&["backup", "delete", &second.id]);
    assert!(!out.status.success(), "{out:?}");
    db.batch_execute("CREATE TABLE ballast AS SELECT generate_series(1, 2000000) AS v")
        .await
        .unwrap();
    let (status, body) = api
        .send(
            reqwest::Method::POST,
            "/v1/instances/kept/backups",
            Some(serde_json::json!({"label": "third"})),
        )
        .await;
    assert_eq!(status, 202, "{body}");
    let third: BackupAccepted = serde_json::from_str(&body).unwrap();
    let path = format!("/v1/backups/{}", third.backup_id);
    eventually(
        Duration::from_secs(60),
        "the third backup running",
        || async {
            let (status, body) = api.send(reqwest::Method::GET, &path, None).await;
            (status == 200 && body.contains("\"running\"")).then_some(())
        },
    )
    .await;
    let (status, body) = api.send(reqwest::Method::DELETE, &path, None).await;
    assert_eq!(status, 409, "{body}");
    assert!(body.contains("still running"), "{body}");
    let operation = api.wait_operation(&home, &third.operation_id).await;
    assert_eq!(operation.status, "succeeded", "{operation:?}");
    gone(&api, &second.id).await;

    // A logical backup deleted by id through the CLI: its dump leaves the store.
    let out = stdout(&home.cli(&[
        "backup", "create", "kept", "--kind", "logical", "-o", "json",
    ]));
    let logical: BackupView = serde_json::from_str(&out).unwrap();
    let dumps = || files_in(&store.join("kept").join("logical"));
    assert!(
        dumps().iter().any(|f| f.ends_with(".dump")),
        "{:?}",
        dumps()
    );
    let out = stdout(&home.cli(&["backup", "delete", &logical.id]));
    assert!(out.contains(&logical.id), "{out}");
    let (status, _) = api
        .send(
            reqwest::Method::GET,
            &format!("/v1/backups/{}", logical.id),
            None,
        )
        .await;
    assert_eq!(status, 404);
    assert!(dumps().is_empty(), "{:?}", dumps());

    // A restore to a time after the last archived segment: the source's primary switches WAL
    // and waits for it to be archived first, so what is kept restores to that point.
    let kept: BackupView = api.get(&format!("/v1/backups/{}", third.backup_id)).await;
    insert_rows(&db, 101, 150).await;
    let target = server_now(&db).await;
    insert_rows(&db, 151, 200).await;
    let written: String = db
        .query_one("SELECT pg_walfile_name(pg_current_wal_lsn())", &[])
        .await
        .unwrap()
        .get(0);
    let out = stdout(&home.cli(&[
        "restore", "kept", "--to", "back", "--time", &target, "-o", "json",
    ]));
    let detail: InstanceDetail = serde_json::from_str(&out).unwrap();
    assert_eq!(detail.summary.name, "back");
    let restored = connect_rw(&api, "back").await;
    assert_eq!(rows(&restored).await, (150, Some(150)));

    // The window starts at the end of the one base backup kept and reaches the last archived
    // WAL (the segment the switch closed at least); `toygres get` shows it.
    let window: RecoverabilityWindow = api.get("/v1/instances/kept/backups/window").await;
    assert_eq!(window.earliest_backup_id.as_deref(), Some(kept.id.as_str()));
    assert!(window.earliest_restorable.is_some(), "{window:?}");
    let archived = window.archived_wal.clone().unwrap();
    assert!(
        archived.as_str() >= written.as_str() && window.archived_at.is_some(),
        "{window:?}: the segment of the last rows, {written}, is not archived"
    );
    let out = stdout(&home.cli(&["get", "kept"]));
    assert!(
        out.contains("restorable from") && out.contains(&kept.id) && out.contains(&archived),
        "{out}"
    );

    // The source down: nobody can switch its WAL or say how far its archive reaches, so a time
    // target is refused before anything is made.
    let late = server_now(&db).await;
    drop((db, restored));
    for pid in home.instance_processes("kept") {
        let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
    }
    eventually(Duration::from_secs(30), "kept's processes gone", || async {
        home.instance_processes("kept").is_empty().then_some(())
    })
    .await;
    let (status, body) = api
        .send(
            reqwest::Method::POST,
            "/v1/instances/kept/restore",
            Some(serde_json::json!({"to": "late", "time": late})),
        )
        .await;
    assert_eq!(status, 409, "{body}");
    assert!(body.contains("end of the archive"), "{body}");
    let (status, _) = api
        .send(reqwest::Method::GET, "/v1/instances/late", None)
        .await;
    assert_eq!(status, 404, "a refused restore recorded its instance");
}

/// A restore into a new instance holds on to its base backup: while it runs, deleting that
/// backup by id is refused (409) and the cleanup after another backup keeps it; once the
/// restore has ended, a cleanup deletes it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_restore_keeps_its_base_backup_from_deletion_and_cleanup() {
    let mut home = Home::new();
    let api = home.start().await;
    create_with_backup(
        &api,
        &home,
        "held",
        serde_json::json!({"retention": {"daily": 1, "weekly": 0, "monthly": 0}}),
    )
    .await;
    let db = connect_rw(&api, "held").await;
    db.batch_execute("CREATE TABLE t (v integer PRIMARY KEY)")
        .await
        .unwrap();
    insert_rows(&db, 1, 50).await;
    let first = backup_now(&home, "held");
    insert_rows(&db, 51, 100).await;

    // A restore from the first backup.
    let (status, text) = api
        .send(
            reqwest::Method::POST,
            "/v1/instances/held/restore",
            Some(serde_json::json!({"to": "copy", "backup_id": first.id, "replicas": 0})),
        )
        .await;
    assert_eq!(status, 202, "{text}");
    let restore: toygres_common::controller_api::OperationAccepted =
        serde_json::from_str(&text).unwrap();
    let (status, text) = api
        .send(
            reqwest::Method::DELETE,
            &format!("/v1/backups/{}", first.id),
            None,
        )
        .await;
    assert_eq!(status, 409, "{text}");
    assert!(text.contains("being restored"), "{text}");
    // A second backup: its cleanup (one daily kept) would drop the first, but the restore
    // still uses it.
    let second = backup_now(&home, "held");
    let (status, text) = api
        .send(
            reqwest::Method::GET,
            &format!("/v1/operations/{}", restore.operation_id),
            None,
        )
        .await;
    assert_eq!(status, 200, "{text}");
    assert!(
        text.contains("\"running\"") || text.contains("\"pending\""),
        "the restore ended before the cleanup ran; the test proves nothing: {text}"
    );
    let (status, _) = api
        .send(
            reqwest::Method::GET,
            &format!("/v1/backups/{}", first.id),
            None,
        )
        .await;
    assert_eq!(
        status, 200,
        "the cleanup deleted a backup a restore was using"
    );

    let restored = api.wait_operation(&home, &restore.operation_id).await;
    assert_eq!(restored.status, "succeeded", "{restored:?}");
    let copy = connect_rw(&api, "copy").await;
    assert_eq!(rows(&copy).await, (100, Some(100)));

    // The restore is over: a cleanup now deletes the first backup, and keeps the second.
    let out = home.cli(&["backup", "cleanup", "held"]);
    assert!(out.status.success(), "{out:?}");
    gone(&api, &first.id).await;
    let (status, _) = api
        .send(
            reqwest::Method::GET,
            &format!("/v1/backups/{}", second.id),
            None,
        )
        .await;
    assert_eq!(status, 200);
}
