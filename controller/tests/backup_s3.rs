//! Backups into S3 (moto) through the controller, with the store's credentials registered as a
//! store secret and named by reference: archiving, a base backup and a restore to a point in
//! time all reach the store through the secret, whose key shows up nowhere (controller and
//! sidecar logs, every CMS table including the orchestration history, the command line and
//! environment of every process). A store outage makes a backup fail clearly; archiving catches
//! up once the store is back and nothing is lost.
//!
//! Every process a test starts is killed when the test ends ([`Home`]'s and the emulators'
//! `Drop`).

#![allow(clippy::unwrap_used)]

mod support;

use std::time::Duration;

use support::archive::*;
use support::*;
use toygres_common::backup_api::BackupView;
use toygres_tests::objstores::{Moto, TcpProxy};

const BUCKET: &str = "toygres";

/// The WAL files of `instance` in the bucket (names only).
async fn wal_in_bucket(moto: &Moto, instance: &str) -> Vec<String> {
    moto.list(BUCKET, &format!("pfx/{instance}/wal/"))
        .await
        .into_iter()
        .filter_map(|k| k.rsplit('/').next().map(str::to_string))
        .collect()
}

/// Switches WAL on `client`'s server and waits until the segment is in the bucket.
async fn archived_in_bucket(client: &tokio_postgres::Client, moto: &Moto, instance: &str) {
    let segment: String = client
        .query_one("SELECT pg_walfile_name(pg_switch_wal())", &[])
        .await
        .unwrap()
        .get(0);
    eventually(
        Duration::from_secs(90),
        &format!("{segment} archived in the bucket"),
        || async {
            wal_in_bucket(moto, instance)
                .await
                .iter()
                .any(|f| f.starts_with(&segment))
                .then_some(())
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_s3_store_by_secret_reference_archives_backs_up_restores_and_rides_out_an_outage() {
    let emulators = tempfile::tempdir().unwrap();
    let moto = Moto::start(emulators.path());
    moto.create_bucket(BUCKET).await;
    let proxy = TcpProxy::start(moto.port).await;
    let mut home = Home::new();
    let api = home.start().await;

    // The secret: its key is a value found nowhere else.
    let key = format!("tgkey{}", hex::encode(rand::random::<[u8; 12]>()));
    let env_file = emulators.path().join("s3.env");
    std::fs::write(
        &env_file,
        format!(
            "# moto behind a proxy\nAWS_ACCESS_KEY_ID=toygres\nAWS_SECRET_ACCESS_KEY={key}\n\
             AWS_REGION=us-east-1\nAWS_ENDPOINT_URL={}\nAWS_ALLOW_HTTP=true\n",
            proxy.endpoint()
        ),
    )
    .unwrap();
    let out = home.cli(&[
        "secret",
        "set",
        "s3-creds",
        "--from-env-file",
        &env_file.to_string_lossy(),
    ]);
    assert!(out.status.success(), "{out:?}");
    assert!(stdout(&out).contains("AWS_SECRET_ACCESS_KEY"));
    std::fs::remove_file(&env_file).unwrap();
    let (status, text) = api
        .send(reqwest::Method::GET, "/v1/secrets/s3-creds", None)
        .await;
    assert_eq!(status, 200, "{text}");
    assert!(
        text.contains("AWS_ENDPOINT_URL") && !text.contains(&key),
        "{text}"
    );
    let (status, text) = api
        .send(
            reqwest::Method::PUT,
            "/v1/secrets/s3-creds",
            Some(serde_json::json!({"values": {"PATH": "/bin"}})),
        )
        .await;
    assert_eq!(status, 400, "{text}");

    // A secret that does not exist is refused before anything is recorded.
    let out = home.cli(&[
        "create",
        "nosecret",
        "--backup-store",
        &format!("s3://{BUCKET}/pfx"),
        "--backup-credentials",
        "no-such-secret",
    ]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no store secret no-such-secret"),
        "{out:?}"
    );

    let out = home.cli(&[
        "create",
        "src",
        "--backup-store",
        &format!("s3://{BUCKET}/pfx"),
        "--backup-credentials",
        "s3-creds",
    ]);
    assert!(out.status.success(), "{out:?}\n{}", home.logs());
    let (status, text) = api
        .send(reqwest::Method::DELETE, "/v1/secrets/s3-creds", None)
        .await;
    assert_eq!(status, 409, "a secret in use cannot go: {text}");

    // Rows 1..=100, a base backup into the bucket, rows 101..=200, the target, 201..=300.
    let src = connect_rw(&api, "src").await;
    src.batch_execute("CREATE TABLE t (v integer PRIMARY KEY)")
        .await
        .unwrap();
    insert_rows(&src, 1, 100).await;
    let out = stdout(&home.cli(&["backup", "create", "src", "-o", "json"]));
    let backup: BackupView = serde_json::from_str(&out).unwrap();
    assert_eq!(backup.status, "succeeded", "{backup:?}\n{}", home.logs());
    let base = moto.list(BUCKET, "pfx/src/base/").await;
    assert!(!base.is_empty(), "the base backup is in the bucket");
    insert_rows(&src, 101, 200).await;
    let target = server_now(&src).await;
    insert_rows(&src, 201, 300).await;
    archived_in_bucket(&src, &moto, "src").await;

    let out = home.cli(&["restore", "src", "--to", "dst", "--time", &target]);
    assert!(out.status.success(), "{out:?}\n{}", home.logs());
    let dst = connect_rw(&api, "dst").await;
    assert_eq!(rows(&dst).await, (200, Some(200)), "restored to the target");
    // It archives under its own name, through the same secret.
    archived_in_bucket(&dst, &moto, "dst").await;

    // The store goes down: a backup fails and says why; WAL waits in pg_wal.
    proxy.set_up(false);
    let out = home.cli(&["backup", "create", "src"]);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success(), "{out:?}");
    let list: toygres_common::backup_api::BackupList = api.get("/v1/instances/src/backups").await;
    let failed = &list.backups[0];
    assert_eq!(failed.status, "failed", "{failed:?}");
    let error = failed.error.clone().unwrap_or_default();
    assert!(
        error.contains(&format!("s3://{BUCKET}/pfx")) && stderr.contains(&format!("s3://{BUCKET}")),
        "the error names the store: {error}; the CLI said: {stderr}"
    );
    insert_rows(&src, 301, 400).await;
    let pending: String = src
        .query_one("SELECT pg_walfile_name(pg_switch_wal())", &[])
        .await
        .unwrap()
        .get(0);
    eventually(
        Duration::from_secs(60),
        "archiving fails while the store is down",
        || async {
            let failed: i64 = src
                .query_one("SELECT failed_count FROM pg_stat_archiver", &[])
                .await
                .unwrap()
                .get(0);
            (failed > 0).then_some(())
        },
    )
    .await;
    assert!(
        !wal_in_bucket(&moto, "src")
            .await
            .iter()
            .any(|f| f.starts_with(&pending)),
        "nothing reached the store while it was down"
    );

    // Back up: the waiting segment is archived, and a restore to the end has every row.
    proxy.set_up(true);
    eventually(
        Duration::from_secs(120),
        &format!("{pending} archived after the outage"),
        || async {
            wal_in_bucket(&moto, "src")
                .await
                .iter()
                .any(|f| f.starts_with(&pending))
                .then_some(())
        },
    )
    .await;
    let out = home.cli(&["restore", "src", "--to", "after"]);
    assert!(out.status.success(), "{out:?}\n{}", home.logs());
    let after = connect_rw(&api, "after").await;
    assert_eq!(rows(&after).await, (400, Some(400)), "nothing was lost");

    // The key is nowhere: logs, CMS, processes.
    let mut logs = String::new();
    for run in 1..=home.runs {
        logs.push_str(&std::fs::read_to_string(home.log_path(run)).unwrap());
    }
    for log in find_files(&home.path().join("instances"), "sidecar.log") {
        logs.push_str(&std::fs::read_to_string(log).unwrap());
    }
    assert!(logs.contains("s3-creds"), "the logs name the secret");
    assert!(!logs.contains(&key), "the key is in a log");
    let dump = cms_dump(&home).await;
    assert!(dump.contains("s3-creds"), "the CMS names the secret");
    assert!(!dump.contains(&key), "the key is in the CMS");
    assert_eq!(processes_holding(&key), Vec::<String>::new());
}
