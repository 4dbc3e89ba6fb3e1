//! Backups through the controller, end to end: the real `toygres` controller (embedded CMS,
//! duroxide, the local platform with real sidecars and Postgres) and its default `file://`
//! store under `$TOYGRES_HOME/backups`.
//!
//! Every process a test starts is killed when the test ends (see [`Home`]'s `Drop`).

#![allow(clippy::unwrap_used)]

mod support;

use std::fs;
use std::time::Duration;

use support::*;
use toygres_common::backup_api::{BackupAccepted, BackupList, BackupView};
use toygres_common::controller_api::{InstanceDetail, OperationAccepted};

/// The files directly in `dir` (none when it does not exist).
fn files_in(dir: &std::path::Path) -> Vec<String> {
    fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect()
}

/// A superuser connection to the instance's rw endpoint.
async fn connect_rw(api: &Api, name: &str) -> tokio_postgres::Client {
    let detail: InstanceDetail = api.get(&format!("/v1/instances/{name}")).await;
    let connection = detail.connection.unwrap();
    let password = fs::read_to_string(connection.password_location.unwrap()).unwrap();
    connect(&connection.rw, password.trim()).await
}

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
