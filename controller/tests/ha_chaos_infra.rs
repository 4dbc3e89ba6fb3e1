//! Chaos cases in what an instance depends on, end to end on the local platform, each under
//! writes from several clients through rw (every write records the server that took it):
//!
//! - the embedded CMS Postgres killed (SIGKILL of its postmaster): the controller starts it
//!   again, writes go on through rw meanwhile, no failover is triggered, health checks resume
//!   and the actor carries out a switchover after;
//! - the object store unavailable (the instance's `file://` prefix made read-only for the
//!   archiver): writes go on, the archiver's failure count rises, and once the store is back
//!   the archive catches up;
//! - the primary's disk filling up (each member's directory on a tmpfs of its own, the
//!   primary's filled): a standby takes over.
//!
//! After each: no acknowledged commit lost, and in commit order the server changed at most once
//! per failover (never two servers acknowledging). Each prints a `chaos |` row for
//! `scripts/chaos/run.sh`.

#![allow(clippy::unwrap_used)]

mod support;

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use support::archive::{archive_now, connect_rw, files_in};
use support::*;
use toygres_common::controller_api::ReplicationStatus;

/// How long writes may pause while the CMS restarts (rw does not depend on it).
const CMS_BUDGET: Duration = Duration::from_secs(5);

/// The automatic failovers the CMS records for `instance`.
async fn auto_failovers(home: &Home, instance: &str) -> i64 {
    home.cms_client()
        .await
        .query_one(
            "SELECT count(*) FROM toygres.operations WHERE instance = $1 AND kind = 'auto-failover'",
            &[&instance],
        )
        .await
        .unwrap()
        .get(0)
}

fn postmaster_pid(data: &Path) -> Option<i32> {
    fs::read_to_string(data.join("postmaster.pid"))
        .ok()?
        .lines()
        .next()?
        .trim()
        .parse()
        .ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_go_on_while_the_cms_postgres_is_killed_and_restarted() {
    let (home, api) = start_ha(&[], "cm", serde_json::json!({})).await;
    let (rw, password) = connection(&api, "cm").await;
    let writers = Writers::start(3, &rw, &password);
    writers.acked_after(Instant::now(), None, "a write").await;
    let primary = primary_of(&api, "cm").await.unwrap();
    let port = pg_port(&api, "cm", &primary).await;
    let cms_data = home.path().join("cms/data");
    let old = postmaster_pid(&cms_data).unwrap();

    kill(Pid::from_raw(old), Signal::SIGKILL).unwrap();
    let fault_at = Instant::now();
    // Writes go on while the CMS is down (rw does not ask it).
    let resumed = writers
        .acked_after(
            fault_at + Duration::from_millis(200),
            None,
            "a commit while the CMS restarts",
        )
        .await;
    // The controller starts it again.
    eventually(Duration::from_secs(60), "the CMS Postgres again", || {
        let pid = postmaster_pid(&cms_data).filter(|pid| *pid != old && alive(*pid));
        async move { pid }
    })
    .await;
    let back_at = Instant::now();
    // Health checks resume: a member checked after the CMS came back (the API answers 503
    // while the CMS recovers).
    eventually(
        Duration::from_secs(60),
        "a health check after the restart",
        || {
            let api = &api;
            async move {
                let (status, body) = api
                    .send(reqwest::Method::GET, "/v1/instances/cm/replicas", None)
                    .await;
                let replicas: ReplicationStatus = serde_json::from_str(&body).ok()?;
                let age = replicas
                    .members
                    .iter()
                    .filter_map(|m| m.last_check_age_seconds)
                    .fold(f64::INFINITY, f64::min);
                (status == 200 && age < back_at.elapsed().as_secs_f64()).then_some(())
            }
        },
    )
    .await;
    // Some seconds more: no failover is decided late.
    let until = Instant::now() + Duration::from_secs(5);
    tokio::time::sleep_until(until.into()).await;
    let stall = longest_pause(&writers.acks(), fault_at, until);
    eprintln!(
        "CMS killed: first commit {:?} after, back after {:?}, longest pause {stall:?}",
        resumed - fault_at,
        back_at - fault_at
    );
    assert!(stall <= CMS_BUDGET, "commits stalled {stall:?}");
    assert_eq!(auto_failovers(&home, "cm").await, 0, "{}", home.logs());
    assert_eq!(
        primary_of(&api, "cm").await.as_deref(),
        Some(primary.as_str())
    );
    // The actor resumed: it carries out a switchover.
    let (status, body) = api
        .send(
            reqwest::Method::POST,
            "/v1/instances/cm/switchover",
            Some(serde_json::json!({})),
        )
        .await;
    assert_eq!(status, 202, "{body}");
    let id = serde_json::from_str::<serde_json::Value>(&body).unwrap()["operation_id"]
        .as_str()
        .unwrap()
        .to_string();
    let switchover = api.wait_operation(&home, &id).await;
    assert_eq!(switchover.status, "succeeded", "{switchover:?}");
    writers
        .acked_after(Instant::now(), Some(port), "a write after the switchover")
        .await;
    let acks = writers.stop().await;
    assert_no_commit_lost(&rw, &password, &acks, 1).await;
    assert!(
        acks.iter().filter(|a| a.at < until).all(|a| a.port == port),
        "a write left {primary} before the switchover"
    );
    chaos_row(
        "CMS Postgres kill -9 (restarted by the controller)",
        "writes go on, no failover; checks and the actor resume (a switchover after)",
        stall,
        acks.len(),
    );
}

/// A store prefix made unavailable to every writer, root included (the sidecar, which uploads
/// WAL ahead of Postgres, runs as root here): the directory is moved aside and a plain file
/// takes its name, so anything written under it fails. It comes back when this drops, also
/// when the test fails.
struct Unavailable {
    root: PathBuf,
    aside: PathBuf,
}

impl Unavailable {
    fn make(root: &Path) -> Self {
        let mut aside = root.as_os_str().to_owned();
        aside.push(".outage");
        let aside = PathBuf::from(aside);
        fs::rename(root, &aside).unwrap();
        fs::write(root, b"the store is down\n").unwrap();
        Self {
            root: root.to_path_buf(),
            aside,
        }
    }
}

impl Drop for Unavailable {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.root);
        let _ = fs::rename(&self.aside, &self.root);
    }
}

async fn archive_failures(client: &tokio_postgres::Client) -> i64 {
    client
        .query_one("SELECT failed_count FROM pg_stat_archiver", &[])
        .await
        .unwrap()
        .get(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_go_on_while_the_object_store_is_unavailable_and_the_archive_catches_up() {
    let (home, api) = start_ha(&[], "os", serde_json::json!({})).await;
    let (rw, password) = connection(&api, "os").await;
    let store = home.path().join("backups");
    let db = connect_rw(&api, "os").await;
    archive_now(&db, &store, "os").await;
    let writers = Writers::start(3, &rw, &password);
    writers.acked_after(Instant::now(), None, "a write").await;
    let primary = primary_of(&api, "os").await.unwrap();
    let port = pg_port(&api, "os", &primary).await;
    let failures_before = archive_failures(&db).await;

    let outage = Unavailable::make(&store.join("os"));
    let fault_at = Instant::now();
    let segment: String = db
        .query_one("SELECT pg_walfile_name(pg_switch_wal())", &[])
        .await
        .unwrap()
        .get(0);
    // The archiver fails (and counts it) while writes go on.
    let failures = eventually(Duration::from_secs(60), "archive failures", || {
        let db = &db;
        async move {
            let now = archive_failures(db).await;
            (now > failures_before).then_some(now)
        }
    })
    .await;
    writers
        .acked_after(Instant::now(), None, "a commit during the outage")
        .await;
    let wal = store.join("os").join("wal");
    // Looked for where the archive's objects are kept meanwhile.
    let held = files_in(&outage.aside.join("wal"));
    assert!(
        !held.is_empty(),
        "no archive under {}",
        outage.aside.display()
    );
    assert!(
        !held.iter().any(|f| f.starts_with(&segment)),
        "{segment} was archived during the outage"
    );
    let until = Instant::now() + Duration::from_secs(3);
    tokio::time::sleep_until(until.into()).await;
    let stall = longest_pause(&writers.acks(), fault_at, until);
    drop(outage);
    let back_at = Instant::now();
    // The archive catches up: the segment held back, then a new one.
    eventually(Duration::from_secs(60), "the held segment archived", || {
        let found = files_in(&wal).iter().any(|f| f.starts_with(&segment));
        async move { found.then_some(()) }
    })
    .await;
    archive_now(&db, &store, "os").await;
    let caught_up = back_at.elapsed();
    eprintln!(
        "store outage: {} archive failures, longest commit pause {stall:?}, caught up {caught_up:?} \
         after the store came back",
        failures - failures_before
    );
    assert!(stall <= CMS_BUDGET, "commits stalled {stall:?}");
    assert_eq!(auto_failovers(&home, "os").await, 0, "{}", home.logs());
    let acks = writers.stop().await;
    assert_no_commit_lost(&rw, &password, &acks, 0).await;
    assert!(
        acks.iter().all(|a| a.port == port),
        "a write left {primary}"
    );
    chaos_row(
        "object store unavailable (file store read-only)",
        &format!("writes go on, archive failures rise, caught up {caught_up:.1?} after"),
        stall,
        acks.len(),
    );
}

/// How big each member's own file system is in the disk test.
const MEMBER_DISK: &str = "size=512m";

/// How long the instance may take to commit again once the primary's disk is full (a failover,
/// or the primary once space is freed).
const DISK_BUDGET: Duration = Duration::from_secs(60);

/// Tmpfs file systems mounted for a test under `root`, lazily unmounted when this drops (after
/// the processes that use them are stopped, when it is declared after them in a struct); then
/// `root` is removed, whose own removal stopped at the mount points.
struct Mounts {
    dirs: Vec<PathBuf>,
    root: PathBuf,
}

impl Mounts {
    /// A tmpfs of [`MEMBER_DISK`] on each directory; `None` where mounting is not allowed.
    fn tmpfs(root: &Path, dirs: &[PathBuf]) -> Option<Self> {
        let mut mounts = Mounts {
            dirs: Vec::new(),
            root: root.to_path_buf(),
        };
        for dir in dirs {
            fs::create_dir_all(dir).unwrap();
            let mounted = std::process::Command::new("mount")
                .args(["-t", "tmpfs", "-o", MEMBER_DISK, "tmpfs"])
                .arg(dir)
                .status()
                .is_ok_and(|s| s.success());
            if !mounted {
                return None;
            }
            mounts.dirs.push(dir.clone());
        }
        Some(mounts)
    }
}

impl Drop for Mounts {
    fn drop(&mut self) {
        for dir in &self.dirs {
            let _ = std::process::Command::new("umount")
                .arg("-l")
                .arg(dir)
                .status();
        }
        let _ = fs::remove_dir_all(&self.root);
    }
}

/// The home, then the file systems its members use: fields drop in this order, so the members
/// are stopped before their file systems go.
struct OnTmpfs {
    home: Home,
    api: Api,
    _mounts: Mounts,
}

/// Fills the file system of `dir` with a file of zeros until no byte is left.
fn fill(dir: &Path) -> PathBuf {
    use std::io::Write as _;
    let path = dir.join("ballast");
    let mut file = fs::File::create(&path).unwrap();
    let chunk = vec![0u8; 1 << 20];
    loop {
        if file.write_all(&chunk).is_err() {
            break;
        }
    }
    let _ = file.write_all(&chunk[..4096]);
    let _ = file.sync_all();
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_primary_whose_disk_fills_up_loses_no_acknowledged_commit() {
    let mut home = Home::new();
    let instance = home.path().join("instances").join("df");
    let dirs: Vec<PathBuf> = (0..3).map(|i| instance.join(format!("df-{i}"))).collect();
    let Some(mounts) = Mounts::tmpfs(home.path(), &dirs) else {
        eprintln!("skipped: mounting a tmpfs needs root (CAP_SYS_ADMIN)");
        return;
    };
    let api = home.start_with_env(&[]).await;
    let t = OnTmpfs {
        home,
        api,
        _mounts: mounts,
    };
    create_ha(
        &t.home,
        &t.api,
        "df",
        serde_json::json!({"cooldown_secs": 0}),
    )
    .await;
    let (rw, password) = connection(&t.api, "df").await;
    let writers = Writers::start(3, &rw, &password);
    writers.acked_after(Instant::now(), None, "a write").await;
    let primary = primary_of(&t.api, "df").await.unwrap();
    let port = pg_port(&t.api, "df", &primary).await;

    let ballast = fill(&instance.join(&primary));
    let full_at = Instant::now();
    // Commits stop on the full primary (Postgres cannot extend its WAL or tables).
    let stopped = eventually(Duration::from_secs(60), "commits to stop", || {
        let acks = writers.acks();
        async move {
            let last = acks.iter().map(|a| a.at).max()?;
            (last.elapsed() >= Duration::from_secs(2)).then_some(last)
        }
    })
    .await;
    // Either a standby takes over, or the primary commits again once space is freed: give the
    // controller its chance first.
    let elsewhere = tokio::time::timeout(
        Duration::from_secs(20),
        writers.acked_after(full_at, Some(port), "a write on another server"),
    )
    .await
    .ok();
    let freed_at = Instant::now();
    fs::remove_file(&ballast).unwrap();
    let resumed = writers
        .acked_after(freed_at.max(stopped), None, "a write after the disk filled")
        .await;
    let took = match elsewhere {
        Some(first) => first - full_at,
        None => resumed - full_at,
    };
    let outcome = match elsewhere {
        Some(_) => "failover".to_string(),
        None => format!(
            "no failover; commits again {:.1?} after the space was freed",
            resumed - freed_at
        ),
    };
    eprintln!("disk full on {primary}: {outcome}; first commit {took:?} after it filled");
    assert!(
        took <= DISK_BUDGET,
        "commits stopped for {took:?}\n{}",
        t.home.logs()
    );
    let acks = writers.stop().await;
    let changes = usize::from(elsewhere.is_some());
    assert_no_commit_lost(&rw, &password, &acks, changes).await;
    let servers: std::collections::BTreeSet<i32> = acks.iter().map(|a| a.port).collect();
    assert!(servers.len() <= 1 + changes, "writes taken by {servers:?}");
    chaos_row(
        "primary's disk full (tmpfs of 512 MiB filled)",
        &outcome,
        took,
        acks.len(),
    );
}
