//! WAL archiving and restore against real Postgres servers and real object stores: a `file://`
//! directory, moto's S3 server and Azurite. Under pgbench load every segment reaches the store;
//! during a store outage archiving fails, `.ready` files pile up and nothing is lost, and once
//! the store is back the archive catches up; archived files restore byte for byte with
//! `wal-fetch`; a missing file is a quiet non-zero exit; a different file of the same name is
//! never overwritten.
//!
//! moto and Azurite come from `scripts/install-object-stores.sh`.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use toygres_tests::objstores::{Azurite, Moto, TcpProxy};
use toygres_tests::{bin_path, eventually, Sidecar, SidecarSpec, TestDir, SUPERUSER_PASSWORD};

/// How long archiving may take to catch up (Postgres waits up to a minute between retries).
const CATCH_UP: Duration = Duration::from_secs(180);
const WAIT: Duration = Duration::from_secs(90);

/// The store a scenario archives to, and how to take it down and bring it back.
enum Backend {
    File { root: PathBuf },
    S3 { moto: Moto, proxy: TcpProxy },
    Azure { azurite: Azurite },
}

const BUCKET: &str = "toygres-wal";
const PREFIX: &str = "archive/v1";

impl Backend {
    fn file(dir: &TestDir) -> Backend {
        let root = dir.path().join("store");
        std::fs::create_dir_all(&root).expect("create the store directory");
        // wal-push runs as the Postgres OS user when the tests run as root.
        std::fs::set_permissions(&root, std::fs::Permissions::from_mode(0o777))
            .expect("open the store directory to postgres");
        Backend::File { root }
    }

    async fn s3(dir: &TestDir) -> Backend {
        let moto = Moto::start(dir.path());
        moto.create_bucket(BUCKET).await;
        let proxy = TcpProxy::start(moto.port).await;
        Backend::S3 { moto, proxy }
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
            Backend::S3 { proxy, .. } => Moto::env_for(&proxy.endpoint()),
            Backend::Azure { azurite } => azurite.env(),
        }
    }

    /// Takes the store away (`up == false`) or brings it back with its data.
    fn set_up(&mut self, up: bool) {
        match self {
            // Root ignores permissions, so the store directory is swapped for a plain file.
            Backend::File { root } => {
                let away = root.with_extension("away");
                if up {
                    std::fs::remove_file(&*root).expect("remove the stand-in file");
                    std::fs::rename(&away, &*root).expect("put the store back");
                } else {
                    std::fs::rename(&*root, &away).expect("move the store away");
                    std::fs::write(&*root, b"not a directory").expect("write the stand-in file");
                }
            }
            Backend::S3 { proxy, .. } => proxy.set_up(up),
            Backend::Azure { azurite } => {
                if up {
                    azurite.restart()
                } else {
                    azurite.stop()
                }
            }
        }
    }

    /// The keys under `<instance>/wal/`, relative to the URL's prefix.
    async fn wal_keys(&self, instance: &str) -> Vec<String> {
        let prefix = format!("{instance}/wal/");
        match self {
            Backend::File { root } => {
                let mut keys: Vec<String> = std::fs::read_dir(root.join(&prefix))
                    .map(|entries| {
                        entries
                            .flatten()
                            .map(|e| format!("{prefix}{}", e.file_name().to_string_lossy()))
                            .collect()
                    })
                    .unwrap_or_default();
                keys.sort();
                keys
            }
            Backend::S3 { moto, .. } => strip(
                moto.list(BUCKET, &format!("{PREFIX}/{prefix}")).await,
                PREFIX,
            ),
            Backend::Azure { azurite } => strip(
                azurite.list(BUCKET, &format!("{PREFIX}/{prefix}")).await,
                PREFIX,
            ),
        }
    }
}

fn strip(keys: Vec<String>, prefix: &str) -> Vec<String> {
    let p = format!("{prefix}/");
    keys.into_iter()
        .map(|k| k.strip_prefix(&p).map(str::to_string).unwrap_or(k))
        .collect()
}

fn archive_spec(member: &str, backend: &Backend) -> SidecarSpec {
    let mut spec = SidecarSpec::primary(member);
    spec.extra_args = vec![
        format!("--archive-url={}", backend.url()),
        "--archive-concurrency=4".into(),
    ];
    spec.env = backend.env();
    spec
}

/// Runs pgbench against `s` with `args`, killing it if it outlives its deadline.
async fn pgbench(s: &Sidecar, args: &[&str]) {
    let mut cmd = tokio::process::Command::new("pgbench");
    cmd.args(["-h", "127.0.0.1", "-U", "postgres", "-p"])
        .arg(s.pg_port.to_string())
        .args(args)
        .arg("postgres")
        .env("PGPASSWORD", SUPERUSER_PASSWORD)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let child = cmd
        .spawn()
        .expect("start pgbench (/usr/bin/pgbench, from postgresql-client)");
    let out = tokio::time::timeout(Duration::from_secs(300), child.wait_with_output())
        .await
        .expect("pgbench finished within 5 minutes")
        .expect("wait for pgbench");
    assert!(
        out.status.success(),
        "pgbench {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The segment the server writes now.
async fn current_segment(c: &tokio_postgres::Client) -> String {
    c.query_one("SELECT pg_walfile_name(pg_current_wal_lsn())", &[])
        .await
        .expect("read the current WAL file")
        .get(0)
}

/// Writes a row and switches WAL: returns the segment that was just completed.
async fn switch_wal(c: &tokio_postgres::Client) -> String {
    c.batch_execute(
        "CREATE TABLE IF NOT EXISTS marks (at timestamptz); INSERT INTO marks VALUES (now())",
    )
    .await
    .expect("write a row");
    c.query_one("SELECT pg_walfile_name(pg_switch_wal())", &[])
        .await
        .expect("switch WAL")
        .get(0)
}

/// Every segment name from `first` to `last` on timeline 1 (16 MiB segments).
fn segments_between(first: &str, last: &str) -> Vec<String> {
    let number = |name: &str| {
        let log = u64::from_str_radix(&name[8..16], 16).expect("hex");
        let seg = u64::from_str_radix(&name[16..24], 16).expect("hex");
        log * 256 + seg
    };
    (number(first)..=number(last))
        .map(|n| format!("00000001{:08X}{:08X}", n / 256, n % 256))
        .collect()
}

/// A sample's value from the sidecar's `/metrics`.
async fn metric(s: &Sidecar, name: &str) -> Option<f64> {
    let text = s
        .http()
        .get(format!("{}/metrics", s.api_url()))
        .send()
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

async fn archiver_state(c: &tokio_postgres::Client) -> (i64, i64, Option<String>) {
    let row = c
        .query_one(
            "SELECT archived_count, failed_count, last_archived_wal FROM pg_stat_archiver",
            &[],
        )
        .await
        .expect("read pg_stat_archiver");
    (row.get(0), row.get(1), row.get(2))
}

/// Waits until Postgres reports `segment` (and so everything before it) archived and nothing
/// waits any more.
async fn wait_archived(s: &Sidecar, segment: &str) {
    let what = format!("{} to archive everything up to {segment}", s.member);
    eventually(CATCH_UP, &what, || async {
        let c = s.try_connect().await.ok()?;
        let (_, _, last) = archiver_state(&c).await;
        let ready = metric(s, "toygres_wal_archive_ready_files").await?;
        (last.as_deref() >= Some(segment) && ready == 0.0).then_some(())
    })
    .await
}

/// A copy of the sidecar's archive settings with its own state directory, for running the
/// archive subcommands by hand without touching the sidecar's files.
fn settings_copy(s: &Sidecar, dir: &Path) -> PathBuf {
    let run_dir = s.data_dir.with_file_name("data.run");
    let text = std::fs::read_to_string(run_dir.join("archive/config.json"))
        .expect("the sidecar wrote its archive settings");
    let mut json: serde_json::Value = serde_json::from_str(&text).expect("parse the settings");
    let state = dir.join("manual-state");
    std::fs::create_dir_all(state.join("prefetch")).expect("create a state directory");
    std::fs::create_dir_all(state.join("pushed")).expect("create a state directory");
    json["state_dir"] = serde_json::Value::String(state.display().to_string());
    let path = dir.join("manual-archive.json");
    std::fs::write(&path, json.to_string()).expect("write the settings copy");
    path
}

/// Runs `toygres-sidecar <args>` with the store's environment; returns (code, stdout, stderr).
async fn sidecar_cmd(backend: &Backend, args: &[&str]) -> (i32, String, String) {
    let out = tokio::process::Command::new(bin_path("toygres-sidecar"))
        .args(args)
        .envs(backend.env())
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output()
        .await
        .expect("run toygres-sidecar");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The whole story on one store: load, outage, catch-up, completeness, restore.
async fn archive_under_load_through_an_outage(dir: &TestDir, mut backend: Backend, member: &str) {
    let instance = member.rsplit_once('-').map(|(i, _)| i).unwrap_or(member);
    let primary = Sidecar::start(dir, archive_spec(member, &backend)).await;
    let c = primary.connect().await;
    let settings: String = c
        .query_one(
            "SELECT current_setting('archive_mode') || ' ' || current_setting('archive_command')",
            &[],
        )
        .await
        .expect("read the archive settings")
        .get(0);
    assert!(settings.starts_with("on "), "{settings}");
    assert!(settings.contains("wal-push --config"), "{settings}");
    assert!(
        !settings.contains("testing"),
        "a credential leaked into the settings"
    );
    let first = current_segment(&c).await;

    // Load: pgbench's initial load and a short run; then a switch makes one more segment.
    pgbench(&primary, &["-i", "-s", "10", "-q"]).await;
    pgbench(&primary, &["-T", "5", "-c", "2", "-j", "2"]).await;
    let switched = switch_wal(&c).await;
    wait_archived(&primary, &switched).await;
    let keys = backend.wal_keys(instance).await;
    assert!(
        keys.contains(&format!("{instance}/wal/{switched}.zst")),
        "pg_switch_wal's segment {switched} is not in the store: {keys:?}"
    );
    let archived_before = metric(&primary, "toygres_wal_archive_success_total")
        .await
        .expect("the success counter");
    assert!(
        archived_before >= segments_between(&first, &switched).len() as f64,
        "{archived_before} archived"
    );

    // Outage in the middle of load: archiving fails, WAL waits in pg_wal.
    let failures_before = metric(&primary, "toygres_wal_archive_failures_total")
        .await
        .expect("the failure counter");
    backend.set_up(false);
    pgbench(&primary, &["-T", "4", "-c", "2", "-j", "2"]).await;
    switch_wal(&c).await;
    let during = switch_wal(&c).await;
    eventually(
        WAIT,
        "archiving to fail and .ready files to pile up",
        || async {
            let failures = metric(&primary, "toygres_wal_archive_failures_total").await?;
            let ready = metric(&primary, "toygres_wal_archive_ready_files").await?;
            (failures > failures_before && ready >= 2.0).then_some(())
        },
    )
    .await;
    let (_, failed, last) = archiver_state(&c).await;
    assert!(failed > 0, "pg_stat_archiver saw no failure");
    assert!(
        last.as_deref() < Some(during.as_str()),
        "{last:?} archived during the outage"
    );
    assert!(
        primary.data_dir.join("pg_wal").join(&during).exists(),
        "Postgres dropped {during} while it was not archived"
    );

    // The store returns: everything catches up, with no gap from the first segment on.
    backend.set_up(true);
    let last = switch_wal(&c).await;
    wait_archived(&primary, &last).await;
    let keys = backend.wal_keys(instance).await;
    let missing: Vec<String> = segments_between(&first, &last)
        .into_iter()
        .filter(|s| !keys.contains(&format!("{instance}/wal/{s}.zst")))
        .collect();
    assert!(
        missing.is_empty(),
        "segments missing from the store: {missing:?}"
    );
    // The sidecar uploaded some of them ahead of Postgres's requests (while one upload ran,
    // and the files piled up in the outage).
    let ahead = metric(&primary, "toygres_wal_archive_ahead_total")
        .await
        .expect("the ahead counter");
    assert!(ahead > 0.0, "the sidecar uploaded nothing ahead");
    let age = metric(&primary, "toygres_wal_archive_last_success_age_seconds")
        .await
        .expect("the last-success age");
    assert!(age < CATCH_UP.as_secs_f64(), "{age}");
    // /v1/status tells the same story as the metrics.
    let archive = primary
        .client()
        .status()
        .await
        .expect("status")
        .archive
        .expect("archive state in the status");
    assert_eq!(archive.instance, instance);
    assert!(
        archive.archived_total > 0 && archive.failures_total > 0,
        "{archive:?}"
    );
    assert!(archive.last_archived_wal.is_some() && archive.last_failure_age_seconds.is_some());

    // Restore: wal-fetch hands back the exact bytes of an archived segment.
    let config = settings_copy(&primary, dir.path());
    let config = config.to_str().expect("a UTF-8 path");
    let original = std::fs::read(primary.data_dir.join("pg_wal").join(&last))
        .expect("read the segment from pg_wal");
    let restored = dir.path().join("RESTORED");
    let restored_str = restored.to_str().expect("a UTF-8 path");
    let (code, _, err) = sidecar_cmd(
        &backend,
        &["wal-fetch", "--config", config, &last, restored_str],
    )
    .await;
    assert_eq!(code, 0, "wal-fetch {last}: {err}");
    assert!(
        std::fs::read(&restored).expect("read the restored file") == original,
        "the restored {last} differs from the original"
    );

    // A file the archive does not hold: exit 1, and not a word.
    for name in ["00000001000000FF00000000", "00000009.history"] {
        let (code, out, err) = sidecar_cmd(
            &backend,
            &["wal-fetch", "--config", config, name, restored_str],
        )
        .await;
        assert_eq!(code, 1, "wal-fetch of missing {name}: {err}");
        assert!(out.is_empty() && err.is_empty(), "{name}: {out}{err}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_archive_keeps_every_segment_under_load_and_through_an_outage() {
    let dir = TestDir::new();
    let backend = Backend::file(&dir);
    archive_under_load_through_an_outage(&dir, backend, "arcfile-0").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_archive_keeps_every_segment_under_load_and_through_an_outage() {
    let dir = TestDir::new();
    let backend = Backend::s3(&dir).await;
    archive_under_load_through_an_outage(&dir, backend, "arcs3-0").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn azure_archive_keeps_every_segment_under_load_and_through_an_outage() {
    let dir = TestDir::new();
    let backend = Backend::azure(&dir).await;
    archive_under_load_through_an_outage(&dir, backend, "arcaz-0").await;
}

/// wal-push straight from the command line, as Postgres runs it, on all three stores: an
/// identical re-push succeeds, a different file of the same name is refused and left alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wal_push_accepts_identical_and_refuses_different_content() {
    let dir = TestDir::new();
    let backends = [
        Backend::file(&dir),
        Backend::s3(&dir).await,
        Backend::azure(&dir).await,
    ];
    for (i, backend) in backends.iter().enumerate() {
        let work = dir.path().join(format!("push-{i}"));
        let wal = work.join("pg_wal");
        std::fs::create_dir_all(wal.join("archive_status")).expect("create pg_wal");
        let state = work.join("state");
        std::fs::create_dir_all(state.join("pushed")).expect("create the state directory");
        let config = work.join("archive.json");
        let settings = serde_json::json!({
            "url": backend.url(),
            "instance": "manual",
            "compression": "6",
            "concurrency": 2,
            "state_dir": state,
        });
        std::fs::write(&config, settings.to_string()).expect("write the settings");
        let config = config.to_str().expect("a UTF-8 path");
        let name = "000000010000000000000007";
        let segment = wal.join(name);
        let content: Vec<u8> = (0..16u32 << 16).map(|i| (i % 251) as u8).collect();
        std::fs::write(&segment, &content).expect("write a segment");
        let seg = segment.to_str().expect("a UTF-8 path");
        let url = backend.url();

        let (code, _, err) = sidecar_cmd(backend, &["wal-push", "--config", config, seg]).await;
        assert_eq!(code, 0, "{url}: first push: {err}");
        let (code, _, err) = sidecar_cmd(backend, &["wal-push", "--config", config, seg]).await;
        assert_eq!(code, 0, "{url}: identical re-push: {err}");

        std::fs::write(&segment, b"different content").expect("rewrite the segment");
        let (code, _, err) = sidecar_cmd(backend, &["wal-push", "--config", config, seg]).await;
        assert_ne!(code, 0, "{url}: a different file was accepted");
        assert!(err.contains("refusing to overwrite"), "{url}: {err}");

        let stats: serde_json::Value = serde_json::from_slice(
            &std::fs::read(state.join("stats.json")).expect("read the counters"),
        )
        .expect("parse the counters");
        assert_eq!(stats["archive_conflicts_total"], 1, "{url}: {stats}");
        assert_eq!(stats["archived_total"], 2, "{url}: {stats}");

        // The stored object is still the first file.
        let restored = work.join("RESTORED");
        let restored = restored.to_str().expect("a UTF-8 path");
        let (code, _, err) =
            sidecar_cmd(backend, &["wal-fetch", "--config", config, name, restored]).await;
        assert_eq!(code, 0, "{url}: fetch: {err}");
        assert!(
            std::fs::read(restored).expect("read the restored file") == content,
            "{url}: the stored segment changed"
        );
        assert_eq!(
            backend.wal_keys("manual").await,
            vec![format!("manual/wal/{name}.gz")],
            "{url}"
        );

        // The default changes to zstd: the gzip object (written before) is still the one
        // compared with, and read back; nothing is stored twice.
        let zstd = serde_json::json!({
            "url": backend.url(),
            "instance": "manual",
            "compression": "zstd",
            "concurrency": 2,
            "state_dir": state,
        });
        std::fs::write(config, zstd.to_string()).expect("write the settings");
        std::fs::write(&segment, &content).expect("restore the segment");
        let (code, _, err) = sidecar_cmd(backend, &["wal-push", "--config", config, seg]).await;
        assert_eq!(code, 0, "{url}: re-push under zstd: {err}");
        std::fs::write(&segment, b"different again").expect("rewrite the segment");
        let (code, _, err) = sidecar_cmd(backend, &["wal-push", "--config", config, seg]).await;
        assert!(
            code != 0 && err.contains("refusing to overwrite"),
            "{url}: {err}"
        );
        std::fs::remove_file(restored).expect("remove the restored file");
        let (code, _, err) =
            sidecar_cmd(backend, &["wal-fetch", "--config", config, name, restored]).await;
        assert_eq!(code, 0, "{url}: fetch under zstd: {err}");
        assert!(
            std::fs::read(restored).expect("read the restored file") == content,
            "{url}: the gzip segment did not read back under zstd"
        );
        assert_eq!(
            backend.wal_keys("manual").await,
            vec![format!("manual/wal/{name}.gz")],
            "{url}: stored twice"
        );
        // A new segment is stored as zstd, in one request.
        let next = "000000010000000000000008";
        let segment8 = wal.join(next);
        std::fs::write(&segment8, &content).expect("write a segment");
        let seg8 = segment8.to_str().expect("a UTF-8 path");
        let (code, _, err) = sidecar_cmd(backend, &["wal-push", "--config", config, seg8]).await;
        assert_eq!(code, 0, "{url}: zstd push: {err}");
        assert_eq!(
            backend.wal_keys("manual").await,
            vec![
                format!("manual/wal/{name}.gz"),
                format!("manual/wal/{next}.zst")
            ],
            "{url}"
        );

        // Not a WAL file name: refused before anything is uploaded.
        let bogus = work.join("notwal");
        std::fs::write(&bogus, b"x").expect("write a file");
        let (code, _, err) = sidecar_cmd(
            backend,
            &[
                "wal-push",
                "--config",
                config,
                bogus.to_str().expect("utf-8"),
            ],
        )
        .await;
        assert_ne!(code, 0);
        assert!(err.contains("not a WAL file name"), "{url}: {err}");
    }
}

/// How many rows `t` holds on `s`, once it answers.
async fn row_count(s: &Sidecar) -> Option<i64> {
    let c = s.try_connect().await.ok()?;
    let row = c.query_one("SELECT count(*) FROM t", &[]).await.ok()?;
    Some(row.get(0))
}

/// A standby that cannot reach its primary replays WAL from the archive through
/// `restore_command` (`wal-fetch`, with prefetch) and sees every write archived meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn standby_without_its_primary_replays_archived_wal_through_restore_command() {
    let dir = TestDir::new();
    let backend = Backend::file(&dir);
    let mut primary = Sidecar::start(&dir, archive_spec("fetch-0", &backend)).await;
    let mut standby_spec = archive_spec("fetch-1", &backend);
    standby_spec.primary = Some(primary.pg_address());
    let mut standby = Sidecar::start(&dir, standby_spec.clone()).await;
    let p = primary.connect().await;
    p.batch_execute("CREATE TABLE t (x int); INSERT INTO t VALUES (1)")
        .await
        .expect("write on the primary");
    eventually(WAIT, "the standby to stream the first row", || async {
        (row_count(&standby).await == Some(1)).then_some(())
    })
    .await;

    // The standby goes away; the primary writes several segments' worth, archives them, stops.
    standby.stop().await;
    p.batch_execute("INSERT INTO t SELECT generate_series(2, 1000)")
        .await
        .expect("write more");
    pgbench(&primary, &["-i", "-s", "4", "-q"]).await;
    let last = switch_wal(&p).await;
    wait_archived(&primary, &last).await;
    drop(p);
    primary.stop().await;

    // The standby comes back with no primary to stream from: only the archive has the WAL.
    let standby_again = Sidecar::spawn(&dir, standby_spec, standby.pg_port, standby.api_port);
    eventually(
        CATCH_UP,
        "the standby to replay the archived rows",
        || async { (row_count(&standby_again).await == Some(1000)).then_some(()) },
    )
    .await;
    // The sidecar's API may come up after Postgres answers: wait for its counters.
    let (fetched, hits) = eventually(WAIT, "the standby's WAL fetch counters", || async {
        let fetched = metric(&standby_again, "toygres_wal_fetch_total").await?;
        let hits = metric(&standby_again, "toygres_wal_fetch_prefetch_hits_total").await?;
        Some((fetched, hits))
    })
    .await;
    assert!(fetched >= 3.0, "only {fetched} WAL files fetched");
    assert!(
        hits >= 1.0,
        "no fetch was served from the prefetch directory"
    );
}
