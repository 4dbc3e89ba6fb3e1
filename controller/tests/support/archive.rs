//! What the backup and restore tests share: a superuser connection to an instance's rw
//! endpoint, rows numbered one transaction each, and WAL switched out and waited for in the
//! `file://` store.

use std::fs;
use std::path::Path;
use std::time::Duration;

use toygres_common::controller_api::InstanceDetail;

use super::{connect, eventually, Api};

/// The files directly in `dir` (none when it does not exist).
pub fn files_in(dir: &Path) -> Vec<String> {
    fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect()
}

/// Creates instance `name` (a primary only) with the backup configuration `backup` (the
/// `"backup"` of `POST /v1/instances`) and waits until it runs.
pub async fn create_with_backup(
    api: &Api,
    home: &super::Home,
    name: &str,
    backup: serde_json::Value,
) {
    let (status, text) = api
        .send(
            reqwest::Method::POST,
            "/v1/instances",
            Some(serde_json::json!({"name": name, "replicas": 0, "backup": backup})),
        )
        .await;
    assert_eq!(status, 202, "{text}");
    let accepted: toygres_common::controller_api::OperationAccepted =
        serde_json::from_str(&text).unwrap();
    let created = api.wait_operation(home, &accepted.operation_id).await;
    assert_eq!(created.status, "succeeded", "{created:?}");
}

/// The instance's superuser password, from the file its connection info names.
pub async fn password_of(api: &Api, name: &str) -> String {
    let detail: InstanceDetail = api.get(&format!("/v1/instances/{name}")).await;
    let location = detail.connection.unwrap().password_location.unwrap();
    fs::read_to_string(location).unwrap().trim().to_string()
}

/// A superuser connection to the instance's rw endpoint.
pub async fn connect_rw(api: &Api, name: &str) -> tokio_postgres::Client {
    let detail: InstanceDetail = api.get(&format!("/v1/instances/{name}")).await;
    let rw = detail.connection.unwrap().rw;
    connect(&rw, &password_of(api, name).await).await
}

/// Inserts the rows `from..=to` into `t`, one transaction each (so each has its commit time).
pub async fn insert_rows(client: &tokio_postgres::Client, from: i32, to: i32) {
    for v in from..=to {
        client
            .execute("INSERT INTO t VALUES ($1)", &[&v])
            .await
            .unwrap();
    }
}

/// How many rows `t` holds, and the largest.
pub async fn rows(client: &tokio_postgres::Client) -> (i64, Option<i32>) {
    let row = client
        .query_one("SELECT count(*), max(v) FROM t", &[])
        .await
        .unwrap();
    (row.get(0), row.get(1))
}

/// The server's clock now, as an RFC 3339 UTC time to the microsecond (a restore target).
pub async fn server_now(client: &tokio_postgres::Client) -> String {
    client
        .query_one(
            "SELECT to_char(clock_timestamp() AT TIME ZONE 'UTC', \
                            'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')",
            &[],
        )
        .await
        .unwrap()
        .get(0)
}

/// Switches the WAL segment out and waits until it is archived under `name`'s prefix; returns
/// the segment's name.
pub async fn archive_now(client: &tokio_postgres::Client, store: &Path, name: &str) -> String {
    let segment: String = client
        .query_one("SELECT pg_walfile_name(pg_switch_wal())", &[])
        .await
        .unwrap()
        .get(0);
    let wal = store.join(name).join("wal");
    eventually(
        Duration::from_secs(60),
        &format!("{segment} archived in {}", wal.display()),
        || {
            let found = files_in(&wal).iter().any(|f| f.starts_with(&segment));
            async move { found.then_some(()) }
        },
    )
    .await;
    segment
}

/// Every row of every table of the CMS (the toygres schema and the orchestration history), as
/// text.
pub async fn cms_dump(home: &super::Home) -> String {
    let cms = home.cms_client().await;
    let tables = cms
        .query(
            "SELECT quote_ident(table_schema) || '.' || quote_ident(table_name) \
             FROM information_schema.tables \
             WHERE table_schema NOT IN ('pg_catalog', 'information_schema') \
               AND table_type = 'BASE TABLE'",
            &[],
        )
        .await
        .unwrap();
    assert!(tables.len() > 5, "the CMS has tables");
    let mut dump = String::new();
    for table in tables {
        let table: String = table.get(0);
        let text: Option<String> = cms
            .query_one(
                &format!("SELECT string_agg(t::text, E'\\n') FROM {table} t"),
                &[],
            )
            .await
            .unwrap()
            .get(0);
        dump.push_str(&text.unwrap_or_default());
    }
    dump
}

/// The pids whose command line or environment holds `needle`.
pub fn processes_holding(needle: &str) -> Vec<String> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if !name.chars().all(|c| c.is_ascii_digit()) {
            continue;
        }
        for file in ["cmdline", "environ"] {
            let bytes = std::fs::read(entry.path().join(file)).unwrap_or_default();
            if String::from_utf8_lossy(&bytes).contains(needle) {
                found.push(format!("{name} ({file})"));
            }
        }
    }
    found
}

/// Every scheduled backup of `kind` (`base`, `logical`) of the instance ever recorded (those the
/// retention policy deleted live on in their `backups-deleted` event): how many succeeded, and
/// their labels.
pub async fn scheduled_backups(home: &super::Home, name: &str, kind: &str) -> (usize, Vec<String>) {
    let cms = home.cms_client().await;
    let rows = cms
        .query(
            "SELECT label, status FROM toygres.backups
              WHERE instance = $1 AND kind = $2 AND label LIKE 'scheduled%'
             UNION ALL
             SELECT b->>'label', b->>'status'
               FROM toygres.events e, jsonb_array_elements(e.details->'backups') b
              WHERE e.instance = $1 AND e.kind = 'backups-deleted'
                AND b->>'kind' = $2 AND b->>'label' LIKE 'scheduled%'",
            &[&name, &kind],
        )
        .await
        .unwrap();
    let succeeded = rows
        .iter()
        .filter(|r| r.get::<_, String>(1) == "succeeded")
        .count();
    (succeeded, rows.iter().map(|r| r.get(0)).collect())
}
