//! Base and logical backups, restore and point-in-time recovery, verification and retention,
//! against real sidecars and real object stores (a `file://` directory always; moto's S3 server
//! and Azurite for the base backup + PITR path).
//!
//! The PITR tests write numbered rows and record, between two commits, a wall-clock time, a WAL
//! position, a transaction id and a restore point; a restore to each target must hold exactly
//! the rows committed before it (with the target's own transaction, for an xid).

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use toygres_tests::objstores::{Azurite, Moto};
use toygres_tests::sidecar_api::{
    BackupKind, BackupManifest, BackupRequest, LogicalRestoreRequest, RetentionRequest,
};
use toygres_tests::{eventually, Sidecar, SidecarSpec, TestDir};

const WAIT: Duration = Duration::from_secs(120);
const BUCKET: &str = "toygres-backups";
const PREFIX: &str = "pitr/v1";

/// The store a scenario backs up to.
enum Backend {
    File { root: PathBuf },
    S3 { moto: Moto },
    Azure { azurite: Azurite },
}

impl Backend {
    fn file(dir: &TestDir) -> Backend {
        let root = dir.path().join("store");
        std::fs::create_dir_all(&root).expect("create the store directory");
        // wal-push and wal-fetch run as the Postgres OS user when the tests run as root.
        std::fs::set_permissions(&root, std::fs::Permissions::from_mode(0o777))
            .expect("open the store directory to postgres");
        Backend::File { root }
    }

    async fn s3(dir: &TestDir) -> Backend {
        let moto = Moto::start(dir.path());
        moto.create_bucket(BUCKET).await;
        Backend::S3 { moto }
    }

    async fn azure(dir: &TestDir) -> Backend {
        let azurite = Azurite::start(dir.path());
        azurite.create_container(BUCKET).await;
        Backend::Azure { azurite }
    }

    fn url(&self) -> String {
        match self {
            Backend::File { root } => format!("file://{}", root.display()),
            Backend::S3 { .. } => format!("s3://{BUCKET}/{PREFIX}"),
            Backend::Azure { .. } => format!("az://{BUCKET}/{PREFIX}"),
        }
    }

    fn env(&self) -> Vec<(String, String)> {
        match self {
            Backend::File { .. } => Vec::new(),
            Backend::S3 { moto } => Moto::env_for(&moto.endpoint()),
            Backend::Azure { azurite } => azurite.env(),
        }
    }

    /// Every key under `prefix`, relative to the URL's prefix, sorted.
    async fn keys(&self, prefix: &str) -> Vec<String> {
        match self {
            Backend::File { root } => {
                let mut out = Vec::new();
                walk(root, root, &mut out);
                out.retain(|k| k.starts_with(prefix));
                out.sort();
                out
            }
            Backend::S3 { moto } => strip(moto.list(BUCKET, &format!("{PREFIX}/{prefix}")).await),
            Backend::Azure { azurite } => {
                strip(azurite.list(BUCKET, &format!("{PREFIX}/{prefix}")).await)
            }
        }
    }
}

fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) {
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            walk(root, &path, out);
        } else if let Ok(rel) = path.strip_prefix(root) {
            out.push(rel.display().to_string());
        }
    }
}

fn strip(keys: Vec<String>) -> Vec<String> {
    let p = format!("{PREFIX}/");
    keys.into_iter()
        .map(|k| k.strip_prefix(&p).map(str::to_string).unwrap_or(k))
        .collect()
}

/// A primary archiving to `backend` (instance: the member name without `-0`), with the default
/// compression (zstd).
fn source_spec(member: &str, backend: &Backend) -> SidecarSpec {
    let mut spec = SidecarSpec::primary(member);
    spec.extra_args = vec![format!("--archive-url={}", backend.url())];
    spec.env = backend.env();
    spec
}

/// A member restored from `source`'s backups, archiving under its own name.
fn restored_spec(member: &str, backend: &Backend, source: &str, extra: &[String]) -> SidecarSpec {
    let mut spec = source_spec(member, backend);
    spec.extra_args.push("--bootstrap=restore".into());
    spec.extra_args.push(format!("--restore-instance={source}"));
    spec.extra_args.extend(extra.iter().cloned());
    spec
}

/// The rows of `t`, in order.
async fn rows(s: &Sidecar) -> Vec<i32> {
    let c = s.connect().await;
    c.query("SELECT x FROM t ORDER BY x", &[])
        .await
        .expect("read t")
        .iter()
        .map(|r| r.get(0))
        .collect()
}

/// Commits row `x` to `t`.
async fn write_row(c: &tokio_postgres::Client, x: i32) {
    c.execute("INSERT INTO t VALUES ($1)", &[&x])
        .await
        .expect("insert a row");
}

/// Switches WAL and waits until the completed segment is archived.
async fn archive_everything(s: &Sidecar) {
    let c = s.connect().await;
    let segment: String = c
        .query_one("SELECT pg_walfile_name(pg_switch_wal())", &[])
        .await
        .expect("switch WAL")
        .get(0);
    let what = format!("{} to archive {segment}", s.member);
    eventually(WAIT, &what, || async {
        let c = s.try_connect().await.ok()?;
        let last: Option<String> = c
            .query_one("SELECT last_archived_wal FROM pg_stat_archiver", &[])
            .await
            .ok()?
            .get(0);
        (last.as_deref() >= Some(segment.as_str())).then_some(())
    })
    .await
}

async fn base_backup(s: &Sidecar) -> BackupManifest {
    s.client()
        .backup(&BackupRequest {
            kind: BackupKind::Base,
            databases: Vec::new(),
        })
        .await
        .unwrap_or_else(|e| panic!("base backup on {}: {e}", s.member))
}

/// The value of the sample `series` (name and labels, as exposed) in `s`'s `/metrics`.
async fn metric(s: &Sidecar, series: &str) -> Option<f64> {
    let text = s
        .http()
        .get(format!("{}/metrics", s.api_url()))
        .send()
        .await
        .expect("scrape /metrics")
        .text()
        .await
        .expect("read /metrics");
    text.lines().find_map(|line| {
        let (name, value) = line.rsplit_once(' ')?;
        (name == series).then(|| value.parse().expect("a sample's value"))
    })
}

async fn is_primary(s: &Sidecar) -> bool {
    let c = s.connect().await;
    !c.query_one("SELECT pg_is_in_recovery()", &[])
        .await
        .expect("ask about recovery")
        .get::<_, bool>(0)
}

/// Restores `source` to one target into a new member, checks the rows, that the member is a
/// writable primary archiving under its own name, and that the Postgres which recovered the
/// copy before it was in place listened on its socket only; stops it. Returns its log.
async fn restore_and_check(
    dir: &TestDir,
    backend: &Backend,
    source: &str,
    member: &str,
    target: &[String],
    expected: &[i32],
) -> String {
    let mut restored = Sidecar::start(dir, restored_spec(member, backend, source, target)).await;
    assert_eq!(rows(&restored).await, expected, "{member}: restored rows");
    assert!(is_primary(&restored).await, "{member} is not a primary");
    let c = restored.connect().await;
    write_row(&c, 1000).await;
    archive_everything(&restored).await;
    let instance = member.trim_end_matches("-0");
    let own = backend.keys(&format!("{instance}/wal/")).await;
    assert!(
        own.iter().any(|k| k.contains("/wal/00000002")),
        "{member} archived nothing of its new timeline under its own name: {own:?}"
    );
    restored.stop().await;
    let log = std::fs::read_to_string(&restored.log_path).expect("read the sidecar's log");
    let starts = log.matches("listening on Unix socket").count();
    let tcp = log.matches("listening on IPv4 address").count();
    assert!(starts >= 2, "{member}: {starts} Postgres starts in the log");
    assert_eq!(
        tcp, 1,
        "{member}: Postgres listened on TCP {tcp} times in {starts} starts: only the copy in \
         place may"
    );
    log
}

/// The PITR story on one store: three writes apart by a time, an LSN and a restore point. With
/// `gzip`, the source writes its backup and WAL as gzip (what sidecars did before zstd became
/// the default) and the restored members, on the default, read them.
async fn back_up_restore_and_prune(
    dir: &TestDir,
    backend: &Backend,
    source: &str,
    all: bool,
    gzip: bool,
) {
    let mut spec = source_spec(&format!("{source}-0"), backend);
    if gzip {
        spec.extra_args.push("--wal-compression=1".into());
    }
    let primary = Sidecar::start(dir, spec).await;
    let c = primary.connect().await;
    c.batch_execute("CREATE TABLE t (x int PRIMARY KEY)")
        .await
        .expect("create t");
    write_row(&c, 1).await;
    let backup = base_backup(&primary).await;
    assert_eq!(backup.kind, BackupKind::Base);
    assert_eq!(backup.instance, source);
    assert_eq!(backup.timeline, Some(1));
    assert!(!backup.from_standby);
    assert!(backup.start_lsn.is_some() && backup.stop_lsn.is_some());
    assert_eq!(backup.sha256.len(), 64);
    assert!(backup.stored_bytes < backup.raw_bytes, "{backup:?}");
    let keys = backend.keys(&format!("{source}/base/{}/", backup.id)).await;
    // The tar in parts, each compressed on its own, listed in order in the manifest.
    let part = if gzip {
        "base.tar.p00000.gz"
    } else {
        "base.tar.p00000.zst"
    };
    assert_eq!(
        backup.objects[0].key,
        format!("{source}/base/{}/{part}", backup.id)
    );
    assert!(backup.objects.iter().all(|o| keys.contains(&o.key)));
    for name in [part, "backup_manifest", "manifest.json"] {
        assert!(
            keys.contains(&format!("{source}/base/{}/{name}", backup.id)),
            "{name} missing: {keys:?}"
        );
    }
    let listed = primary.client().backups().await.expect("list backups");
    assert_eq!(listed.backups, vec![backup.clone()]);
    // The backup shows in the metrics: one base backup, its size, when and how long.
    assert_eq!(
        metric(&primary, r#"toygres_backups_total{kind="base"}"#).await,
        Some(1.0)
    );
    assert_eq!(
        metric(&primary, r#"toygres_backup_failures_total{kind="base"}"#).await,
        Some(0.0)
    );
    assert_eq!(
        metric(&primary, r#"toygres_backups_total{kind="logical"}"#).await,
        Some(0.0)
    );
    assert_eq!(
        metric(&primary, r#"toygres_last_backup_stored_bytes{kind="base"}"#).await,
        Some(backup.stored_bytes as f64)
    );
    assert_eq!(
        metric(&primary, r#"toygres_last_backup_raw_bytes{kind="base"}"#).await,
        Some(backup.raw_bytes as f64)
    );
    let took = metric(
        &primary,
        r#"toygres_last_backup_duration_seconds{kind="base"}"#,
    )
    .await
    .expect("the last backup's duration");
    assert!(took > 0.0 && took < WAIT.as_secs_f64(), "{took}");
    let finished = metric(
        &primary,
        r#"toygres_last_backup_success_timestamp_seconds{kind="base"}"#,
    )
    .await
    .expect("the last backup's time");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("the clock")
        .as_secs_f64();
    assert!(
        finished <= now && now - finished < WAIT.as_secs_f64(),
        "{finished} vs {now}"
    );
    assert_eq!(
        metric(
            &primary,
            r#"toygres_last_backup_stored_bytes{kind="logical"}"#
        )
        .await,
        None,
        "no logical backup yet"
    );

    write_row(&c, 2).await;
    // Read after row 2 committed and before row 3 is written: between the two commits.
    let between: String = c
        .query_one(
            "SELECT to_char(clock_timestamp() AT TIME ZONE 'UTC', \
                            'YYYY-MM-DD HH24:MI:SS.US') || '+00'",
            &[],
        )
        .await
        .expect("read the clock")
        .get(0);
    let xid_3: String = c
        .query_one(
            "WITH w AS (INSERT INTO t VALUES (3) RETURNING 1) \
             SELECT txid_current()::text FROM w",
            &[],
        )
        .await
        .expect("insert row 3 and read its transaction id")
        .get(0);
    let after_3: String = c
        .query_one("SELECT pg_current_wal_insert_lsn()::text", &[])
        .await
        .expect("read the WAL position")
        .get(0);
    write_row(&c, 4).await;
    c.query_one("SELECT pg_create_restore_point('before-5')", &[])
        .await
        .expect("create a restore point");
    write_row(&c, 5).await;
    archive_everything(&primary).await;

    restore_and_check(
        dir,
        backend,
        source,
        &format!("{source}time-0"),
        &[format!("--recovery-target-time={between}")],
        &[1, 2],
    )
    .await;
    if all {
        let targets = [
            (
                "lsn",
                format!("--recovery-target-lsn={after_3}"),
                &[1, 2, 3][..],
            ),
            (
                "xid",
                format!("--recovery-target-xid={xid_3}"),
                &[1, 2, 3][..],
            ),
            (
                "name",
                "--recovery-target-name=before-5".to_string(),
                &[1, 2, 3, 4][..],
            ),
        ];
        for (kind, target, rows) in targets {
            restore_and_check(
                dir,
                backend,
                source,
                &format!("{source}{kind}-0"),
                &[target],
                rows,
            )
            .await;
        }
        // Paused at the target: a read-only standby until promoted, then a writable primary.
        let paused_spec = restored_spec(
            &format!("{source}pause-0"),
            backend,
            source,
            &[
                "--recovery-target-name=before-5".to_string(),
                "--recovery-target-action=pause".to_string(),
            ],
        );
        let paused = Sidecar::spawn(
            dir,
            paused_spec,
            toygres_tests::free_port(),
            toygres_tests::free_port(),
        );
        // The API answers once the restore is in place (recovery runs in a bootstrap directory
        // that is renamed into place, with a restart, after the target is reached).
        let client = paused.client();
        eventually(WAIT, "the paused restore's API", || async {
            client.status().await.ok()
        })
        .await;
        let rows_seen = eventually(WAIT, "the paused restore to answer", || async {
            let c = paused.try_connect().await.ok()?;
            let rows = c.query("SELECT x FROM t ORDER BY x", &[]).await.ok()?;
            Some(rows.iter().map(|r| r.get::<_, i32>(0)).collect::<Vec<_>>())
        })
        .await;
        assert_eq!(rows_seen, vec![1, 2, 3, 4]);
        assert!(
            !is_primary(&paused).await,
            "the paused restore is not in recovery"
        );
        client.promote().await.expect("promote the paused restore");
        assert!(is_primary(&paused).await);
        write_row(&paused.connect().await, 6).await;
        assert_eq!(rows(&paused).await, vec![1, 2, 3, 4, 6]);
        drop(paused);

        // No target: everything archived.
        restore_and_check(
            dir,
            backend,
            source,
            &format!("{source}all-0"),
            &[],
            &[1, 2, 3, 4, 5],
        )
        .await;
        // The restores archived under their own names, never into the source's WAL.
        let source_wal = backend.keys(&format!("{source}/wal/")).await;
        assert!(
            !source_wal.iter().any(|k| k.contains("/wal/00000002")),
            "a restore archived into the source's WAL: {source_wal:?}"
        );
    }

    // A newer backup verifies; retention keeping only it deletes the first one and the WAL
    // before its start, in this store.
    let second = base_backup(&primary).await;
    archive_everything(&primary).await;
    if all {
        // Restore points and two backups: one made after the newest backup is reached from it;
        // one that predates it is not, and the restore falls back to the older backup.
        write_row(&c, 6).await;
        c.query_one("SELECT pg_create_restore_point('after-second')", &[])
            .await
            .expect("create a restore point");
        write_row(&c, 7).await;
        archive_everything(&primary).await;
        let log = restore_and_check(
            dir,
            backend,
            source,
            &format!("{source}newest-0"),
            &["--recovery-target-name=after-second".to_string()],
            &[1, 2, 3, 4, 5, 6],
        )
        .await;
        assert!(
            !log.contains("trying the next older backup"),
            "a restore point after the newest backup was not reached from it"
        );
        let log = restore_and_check(
            dir,
            backend,
            source,
            &format!("{source}older-0"),
            &["--recovery-target-name=before-5".to_string()],
            &[1, 2, 3, 4],
        )
        .await;
        assert!(
            log.contains("trying the next older backup"),
            "a restore point before the newest backup was reached without falling back"
        );
        let first_try = log
            .lines()
            .find(|l| l.contains("restoring base backup"))
            .expect("a restore in the log");
        assert!(
            first_try.contains(&second.id),
            "the newest backup was not tried first: {first_try}"
        );
    }
    let verdict = primary
        .client()
        .verify_backup(&second.id)
        .await
        .expect("verify");
    assert!(verdict.ok, "a good backup failed verification: {verdict:?}");
    let wal_before = backend.keys(&format!("{source}/wal/")).await;
    let retention = primary
        .client()
        .apply_retention(&RetentionRequest {
            keep: vec![second.id.clone()],
        })
        .await
        .expect("apply retention");
    assert_eq!(retention.deleted_backups, vec![backup.id.clone()]);
    assert!(!retention.deleted_wal.is_empty(), "{wal_before:?}");
    let wal_after = backend.keys(&format!("{source}/wal/")).await;
    assert_eq!(
        wal_after.len(),
        wal_before.len() - retention.deleted_wal.len()
    );
    assert!(retention.deleted_wal.iter().all(|k| !wal_after.contains(k)));
    assert!(backend
        .keys(&format!("{source}/base/{}/", backup.id))
        .await
        .is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_pitr_restores_exactly_the_rows_before_a_time_an_lsn_an_xid_and_a_restore_point() {
    let dir = TestDir::new();
    let backend = Backend::file(&dir);
    back_up_restore_and_prune(&dir, &backend, "pitr", true, false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_base_backup_restores_to_a_point_in_time_and_retention_prunes_the_store() {
    let dir = TestDir::new();
    let backend = Backend::s3(&dir).await;
    back_up_restore_and_prune(&dir, &backend, "pitrs3", false, true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn azure_base_backup_restores_to_a_point_in_time_and_retention_prunes_the_store() {
    let dir = TestDir::new();
    let backend = Backend::azure(&dir).await;
    back_up_restore_and_prune(&dir, &backend, "pitraz", false, false).await;
}

/// Without an object store there is nowhere to back up to: 409, and nothing is listed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backups_without_an_object_store_are_refused() {
    let dir = TestDir::new();
    let primary = Sidecar::start(&dir, SidecarSpec::primary("nostore-0")).await;
    let err = primary
        .client()
        .backup(&BackupRequest {
            kind: BackupKind::Base,
            databases: Vec::new(),
        })
        .await
        .expect_err("a backup without a store is refused");
    assert_eq!(err.status(), Some(409), "{err}");
    // A backup asked for and not made counts as failed.
    assert_eq!(
        metric(&primary, r#"toygres_backup_failures_total{kind="base"}"#).await,
        Some(1.0)
    );
    assert_eq!(
        metric(&primary, r#"toygres_backups_total{kind="base"}"#).await,
        Some(0.0)
    );
    let err = primary
        .client()
        .backups()
        .await
        .expect_err("no store to list");
    assert_eq!(err.status(), Some(409), "{err}");
}

/// A base backup taken on a standby restores (with every row the primary archived after it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backup_taken_from_a_standby_restores() {
    let dir = TestDir::new();
    let backend = Backend::file(&dir);
    let primary = Sidecar::start(&dir, source_spec("stb-0", &backend)).await;
    let mut standby_spec = source_spec("stb-1", &backend);
    standby_spec.primary = Some(primary.pg_address());
    let standby = Sidecar::start(&dir, standby_spec).await;
    let c = primary.connect().await;
    c.batch_execute("CREATE TABLE t (x int PRIMARY KEY)")
        .await
        .expect("create t");
    write_row(&c, 1).await;
    eventually(WAIT, "the standby to replay row 1", || async {
        let s = standby.try_connect().await.ok()?;
        let n: i64 = s
            .query_one("SELECT count(*) FROM t", &[])
            .await
            .ok()?
            .get(0);
        (n == 1).then_some(())
    })
    .await;
    let backup = base_backup(&standby).await;
    assert!(backup.from_standby, "{backup:?}");
    assert_eq!(backup.member, "stb-1");
    assert_eq!(backup.instance, "stb");
    write_row(&c, 2).await;
    archive_everything(&primary).await;
    let mut restored = Sidecar::start(
        &dir,
        restored_spec(
            "stbcopy-0",
            &backend,
            "stb",
            &[format!("--restore-backup-id={}", backup.id)],
        ),
    )
    .await;
    assert_eq!(rows(&restored).await, vec![1, 2]);
    assert!(is_primary(&restored).await);
    restored.stop().await;
}

/// A logical backup of one database restores into a new database and over the original.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logical_dump_restores_into_a_new_and_the_original_database() {
    let dir = TestDir::new();
    let backend = Backend::file(&dir);
    let primary = Sidecar::start(&dir, source_spec("lgc-0", &backend)).await;
    let c = primary.connect().await;
    c.batch_execute("CREATE DATABASE app")
        .await
        .expect("create app");
    let app = connect_db(&primary, "app").await;
    app.batch_execute(
        "CREATE TABLE items (id int PRIMARY KEY, name text); \
         INSERT INTO items SELECT g, 'item ' || g FROM generate_series(1, 500) g",
    )
    .await
    .expect("fill app");
    let client = primary.client();
    let backup = client
        .backup(&BackupRequest {
            kind: BackupKind::Logical,
            databases: vec!["app".into()],
        })
        .await
        .expect("logical backup");
    assert_eq!(backup.kind, BackupKind::Logical);
    assert_eq!(backup.objects.len(), 1);
    let key = format!("lgc/logical/{}-app.dump", backup.id);
    assert_eq!(backup.objects[0].key, key);
    assert!(backend.keys("lgc/logical/").await.contains(&key));
    let missing = client
        .backup(&BackupRequest {
            kind: BackupKind::Logical,
            databases: vec!["nosuchdb".into()],
        })
        .await
        .expect_err("a missing database is refused");
    assert_eq!(missing.status(), Some(400), "{missing}");

    // Nothing to copy while Postgres is stopped: 409.
    client.fence().await.expect("fence");
    let stopped = client
        .backup(&BackupRequest {
            kind: BackupKind::Logical,
            databases: vec!["app".into()],
        })
        .await
        .expect_err("a backup of a stopped server is refused");
    assert_eq!(stopped.status(), Some(409), "{stopped}");
    client.unfence().await.expect("unfence");
    let app = connect_db(&primary, "app").await;

    // Damage the original, then restore into a copy and over the original.
    app.batch_execute("DELETE FROM items WHERE id > 10; ALTER TABLE items ADD COLUMN junk int")
        .await
        .expect("damage app");
    client
        .restore_logical(&LogicalRestoreRequest {
            backup_id: backup.id.clone(),
            database: "app".into(),
            target_database: Some("app_copy".into()),
        })
        .await
        .expect("restore into app_copy");
    client
        .restore_logical(&LogicalRestoreRequest {
            backup_id: backup.id.clone(),
            database: "app".into(),
            target_database: None,
        })
        .await
        .expect("restore over app");
    for db in ["app_copy", "app"] {
        let c = connect_db(&primary, db).await;
        let row = c
            .query_one(
                "SELECT count(*), sum(id), \
                        (SELECT count(*) FROM information_schema.columns \
                          WHERE table_name = 'items') FROM items",
                &[],
            )
            .await
            .expect("read items");
        assert_eq!(
            (
                row.get::<_, i64>(0),
                row.get::<_, i64>(1),
                row.get::<_, i64>(2)
            ),
            (500, 125_250, 2),
            "{db}"
        );
    }
}

async fn connect_db(s: &Sidecar, db: &str) -> tokio_postgres::Client {
    s.try_connect_db(db)
        .await
        .unwrap_or_else(|e| panic!("connect to {db}: {e}"))
}

/// Verification passes on a good backup and fails, saying why, once a byte of the stored
/// object is flipped. Retention keeping only the second backup deletes the first and exactly
/// the WAL before the second's start; the second still restores with every row.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verification_catches_corruption_and_retention_deletes_only_unneeded_wal() {
    let dir = TestDir::new();
    let backend = Backend::file(&dir);
    let Backend::File { root } = &backend else {
        unreachable!()
    };
    let primary = Sidecar::start(&dir, source_spec("ret-0", &backend)).await;
    let c = primary.connect().await;
    c.batch_execute("CREATE TABLE t (x int PRIMARY KEY)")
        .await
        .expect("create t");
    write_row(&c, 1).await;
    let first = base_backup(&primary).await;
    for x in 2..=3 {
        write_row(&c, x).await;
        archive_everything(&primary).await;
    }
    let second = base_backup(&primary).await;
    write_row(&c, 4).await;
    archive_everything(&primary).await;

    let client = primary.client();
    let verdict = client.verify_backup(&second.id).await.expect("verify");
    assert!(verdict.ok, "a good backup failed verification: {verdict:?}");

    let wal_before = backend.keys("ret/wal/").await;
    let start_segment = segment_number(&lsn_segment_name(second.start_lsn.as_deref().unwrap()));
    let retention = client
        .apply_retention(&RetentionRequest {
            keep: vec![second.id.clone()],
        })
        .await
        .expect("apply retention");
    assert_eq!(retention.deleted_backups, vec![first.id.clone()]);
    let expected_deleted: Vec<String> = wal_before
        .iter()
        .filter(|k| {
            let file = k.trim_start_matches("ret/wal/");
            !file.contains(".history") && segment_number(file) < start_segment
        })
        .cloned()
        .collect();
    assert!(
        !expected_deleted.is_empty(),
        "no WAL before the second backup: {wal_before:?}"
    );
    let mut deleted = retention.deleted_wal.clone();
    deleted.sort();
    assert_eq!(deleted, expected_deleted);
    let wal_after = backend.keys("ret/wal/").await;
    assert_eq!(wal_after.len(), wal_before.len() - expected_deleted.len());
    assert!(backend
        .keys(&format!("ret/base/{}/", first.id))
        .await
        .is_empty());
    let listed = client.backups().await.expect("list");
    assert_eq!(
        listed
            .backups
            .iter()
            .map(|b| b.id.clone())
            .collect::<Vec<_>>(),
        vec![second.id.clone()]
    );
    let unknown = client
        .apply_retention(&RetentionRequest {
            keep: vec!["20000101T000000Z".into()],
        })
        .await
        .expect_err("an unknown backup id is refused");
    assert_eq!(unknown.status(), Some(400));

    // The kept backup still restores, with every row: nothing it needs was deleted.
    let mut restored = Sidecar::start(&dir, restored_spec("retcopy-0", &backend, "ret", &[])).await;
    assert_eq!(rows(&restored).await, vec![1, 2, 3, 4]);
    restored.stop().await;

    // Flip bytes in the middle of the stored tar's last part: every part is checked.
    assert!(second.objects.len() > 1, "{second:?}");
    let object = root.join(&second.objects.last().unwrap().key);
    let mut bytes = std::fs::read(&object).expect("read the stored backup");
    let mid = bytes.len() / 2;
    for b in &mut bytes[mid..mid + 16] {
        *b ^= 0x5a;
    }
    std::fs::write(&object, bytes).expect("corrupt the stored backup");
    let verdict = client.verify_backup(&second.id).await.expect("verify");
    assert!(!verdict.ok, "a corrupted backup passed verification");
    assert!(verdict.message.contains("corrupted"), "{verdict:?}");
}

/// The WAL file name holding `lsn` on timeline 1.
fn lsn_segment_name(lsn: &str) -> String {
    let (hi, lo) = lsn.split_once('/').expect("an LSN");
    let pos = (u64::from_str_radix(hi, 16).expect("hex") << 32)
        | u64::from_str_radix(lo, 16).expect("hex");
    let seg = pos / (16 << 20);
    format!("00000001{:08X}{:08X}", seg / 256, seg % 256)
}

/// The segment number of a WAL file name (any suffix).
fn segment_number(file: &str) -> u64 {
    let log = u64::from_str_radix(&file[8..16], 16).expect("hex");
    let seg = u64::from_str_radix(&file[16..24], 16).expect("hex");
    log * 256 + seg
}
