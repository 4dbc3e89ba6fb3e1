//! Verifying backups through the controller, end to end: `toygres backup verify ID` queues a
//! verification on the instance's actor; a member restores the base backup aside and queries
//! it; the result is recorded on the backup (`backup get` shows it). A corrupted backup fails
//! verification and says why; a logical or unknown backup is refused. `toygres get -o json`
//! carries the recoverability window.
//!
//! Every process a test starts is killed when the test ends (see [`Home`]'s `Drop`).

#![allow(clippy::unwrap_used)]

mod support;

use std::io::{Seek, SeekFrom, Write};

use support::archive::*;
use support::*;
use toygres_common::backup_api::BackupView;

fn backup_now(home: &Home, args: &[&str]) -> BackupView {
    let mut all = vec!["backup", "create"];
    all.extend_from_slice(args);
    all.extend_from_slice(&["-o", "json"]);
    let out = home.cli(&all);
    let backup: BackupView = serde_json::from_str(&stdout(&out))
        .unwrap_or_else(|e| panic!("{e}: {out:?}\n{}", home.logs()));
    assert_eq!(backup.status, "succeeded", "{backup:?}");
    backup
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verification_is_an_operation_recorded_on_the_backup_and_catches_corruption() {
    let mut home = Home::new();
    let api = home.start().await;
    // Keep every backup of the last day: retention must not take the two base backups.
    create_with_backup(
        &api,
        &home,
        "ver",
        serde_json::json!({"retention": {"daily": 0, "weekly": 0, "monthly": 0, "window_days": 1}}),
    )
    .await;
    let db = connect_rw(&api, "ver").await;
    db.batch_execute("CREATE TABLE t (v integer PRIMARY KEY)")
        .await
        .unwrap();
    insert_rows(&db, 1, 50).await;
    let good = backup_now(&home, &["ver"]);
    let bad = backup_now(&home, &["ver"]);
    let logical = backup_now(&home, &["ver", "--kind", "logical"]);

    // A good backup verifies; the result is on its row and in `backup get`.
    let out = home.cli(&["backup", "verify", &good.id]);
    assert!(out.status.success(), "{out:?}\n{}", home.logs());
    let verified: BackupView = api.get(&format!("/v1/backups/{}", good.id)).await;
    let v = verified
        .verification
        .clone()
        .expect("a verification recorded");
    assert_eq!(v["ok"], true, "{v}");
    assert!(v["duration_ms"].as_u64().unwrap() > 0, "{v}");
    assert!(v["member"].as_str().unwrap().starts_with("ver-"), "{v}");
    let shown = stdout(&home.cli(&["backup", "get", &good.id]));
    assert!(shown.contains("verified      ok at"), "{shown}");

    // Refusals: a logical backup, an unknown one.
    let (status, text) = api
        .send(
            reqwest::Method::POST,
            &format!("/v1/backups/{}/verify", logical.id),
            None,
        )
        .await;
    assert_eq!(status, 409, "{text}");
    assert!(text.contains("only a succeeded base backup"), "{text}");
    let (status, text) = api
        .send(reqwest::Method::POST, "/v1/backups/bk-nosuch/verify", None)
        .await;
    assert_eq!(status, 404, "{text}");

    // Corrupt the other backup's data in the store: verification fails, says so, and records it.
    let dir = home
        .path()
        .join("backups")
        .join(bad.store_path.as_deref().unwrap());
    let tar = files_in(&dir)
        .into_iter()
        .find(|f| f.starts_with("base.tar"))
        .unwrap_or_else(|| panic!("no base tar in {}", dir.display()));
    let path = dir.join(tar);
    let len = std::fs::metadata(&path).unwrap().len();
    let mut file = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    file.seek(SeekFrom::Start(len / 2)).unwrap();
    file.write_all(&[0x5a; 64]).unwrap();
    drop(file);
    let out = home.cli(&["backup", "verify", &bad.id]);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success(), "{out:?}");
    assert!(stderr.contains("failed verification"), "{stderr}");
    let failed: BackupView = api.get(&format!("/v1/backups/{}", bad.id)).await;
    let v = failed
        .verification
        .clone()
        .expect("a verification recorded");
    assert_eq!(v["ok"], false, "{v}");
    let shown = stdout(&home.cli(&["backup", "get", &bad.id]));
    assert!(shown.contains("verified      FAILED at"), "{shown}");
    assert!(v["message"].as_str().unwrap().len() > 10, "{v}");

    // `toygres get -o json` carries the window from the oldest base backup.
    let json: serde_json::Value =
        serde_json::from_str(&stdout(&home.cli(&["get", "ver", "-o", "json"]))).unwrap();
    let window = &json["recoverability_window"];
    assert_eq!(window["earliest_backup_id"], good.id.as_str(), "{json}");
    assert!(window["archived_wal"].is_string(), "{json}");
    assert!(
        json["backup_schedule"]["base_schedule"].is_string(),
        "{json}"
    );
}
