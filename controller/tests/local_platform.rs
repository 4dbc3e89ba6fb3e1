//! The local platform with real `toygres-sidecar` processes and real Postgres: members created,
//! served through the rw and ro endpoints, rerouted, re-adopted after a "controller restart",
//! restarted after a kill, and deleted without leaving a process, a port or a data directory.
//!
//! Every process a test starts is stopped when the test ends, even when it fails: see
//! [`TestHome`]'s `Drop`, which stops every process whose command line names the test's home.

#![allow(clippy::unwrap_used)]

use std::fs;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use toygres_common::names::PgAddress;
use toygres_common::SidecarClient;
use toygres_controller::endpoints::EndpointRole;
use toygres_controller::platform::local::{Adoption, LocalPlatform, LocalPlatformConfig};
use toygres_controller::platform::{
    Bootstrap, EndpointRoutes, MemberSpec, MemberState, Placement, Platform, SecretRefs,
};

/// How long a member may take to become ready (initdb or pg_basebackup included).
const READY_TIMEOUT: Duration = Duration::from_secs(120);

/// A temporary `$TOYGRES_HOME`. Dropping it stops every process whose command line mentions it
/// (sidecars by their `--data-dir`, postmasters by their `-D`).
struct TestHome {
    dir: tempfile::TempDir,
}

impl TestHome {
    fn new() -> Self {
        let dir = tempfile::Builder::new().prefix("tgp").tempdir().unwrap();
        // The postgres OS user (the tests run as root) must be able to traverse it.
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o711)).unwrap();
        Self { dir }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn platform(&self) -> LocalPlatform {
        let mut config = LocalPlatformConfig::new(self.path().to_path_buf());
        config.sidecar_bin = Some(sidecar_bin());
        config.stop_timeout = Duration::from_secs(10);
        LocalPlatform::new(config).unwrap()
    }

    /// Live processes whose command line mentions this home.
    fn processes(&self) -> Vec<i32> {
        processes_mentioning(&self.path().to_string_lossy())
    }

    fn assert_no_processes(&self) {
        let left = self.processes();
        assert!(left.is_empty(), "processes left running: {left:?}");
    }

    fn log_tails(&self) -> String {
        let mut out = String::new();
        for log in find_files(self.path(), "sidecar.log") {
            let text = fs::read_to_string(&log).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            out.push_str(&format!("---- {} ----\n", log.display()));
            out.push_str(&lines[lines.len().saturating_sub(40)..].join("\n"));
            out.push('\n');
        }
        out
    }
}

impl Drop for TestHome {
    fn drop(&mut self) {
        if std::thread::panicking() || std::env::var_os("TOYGRES_TEST_LOGS").is_some() {
            eprintln!("{}", self.log_tails());
        }
        // Sidecars stop their Postgres on SIGTERM; postmasters do an immediate shutdown on
        // SIGQUIT (which also ends their backends, whose titles no longer name the home).
        for pid in self.processes() {
            let signal = if is_postmaster(pid) {
                Signal::SIGQUIT
            } else {
                Signal::SIGTERM
            };
            let _ = kill(Pid::from_raw(pid), signal);
        }
        let deadline = Instant::now() + Duration::from_secs(20);
        while !self.processes().is_empty() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(100));
        }
        for pid in self.processes() {
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
    }
}

fn sidecar_bin() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    // target/<profile>/deps/<test> → target/<profile>/toygres-sidecar
    let path = exe
        .parent()
        .and_then(Path::parent)
        .unwrap()
        .join("toygres-sidecar");
    assert!(
        path.is_file(),
        "{} not found: cargo build -p toygres-sidecar --bin toygres-sidecar",
        path.display()
    );
    path
}

fn is_postmaster(pid: i32) -> bool {
    fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim() == "postgres")
}

fn alive(pid: i32) -> bool {
    if kill(Pid::from_raw(pid), None).is_err() {
        return false;
    }
    fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        !stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z'))
    })
}

fn processes_mentioning(needle: &str) -> Vec<i32> {
    let mut pids = Vec::new();
    for entry in fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        if let Ok(cmdline) = fs::read(format!("/proc/{pid}/cmdline")) {
            if String::from_utf8_lossy(&cmdline).contains(needle) && alive(pid) {
                pids.push(pid);
            }
        }
    }
    pids
}

fn find_files(dir: &Path, name: &str) -> Vec<PathBuf> {
    let mut found = Vec::new();
    for entry in fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() && !path.ends_with("data") {
            found.extend(find_files(&path, name));
        } else if path.file_name().is_some_and(|n| n == name) {
            found.push(path);
        }
    }
    found
}

/// The process group and session of `pid`, from `/proc/<pid>/stat`.
fn group_and_session(pid: i32) -> (i32, i32) {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // After the parenthesised command name: state, ppid, pgrp, session, …
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .unwrap()
        .1
        .split_whitespace()
        .collect();
    (fields[2].parse().unwrap(), fields[3].parse().unwrap())
}

fn postmaster_pid(data_dir: &Path) -> Option<i32> {
    let text = fs::read_to_string(data_dir.join("postmaster.pid")).ok()?;
    text.lines().next()?.trim().parse().ok()
}

async fn eventually<T, F, Fut>(timeout: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn spec(instance: &str, member: &str, bootstrap: Bootstrap, secrets: &SecretRefs) -> MemberSpec {
    MemberSpec {
        instance: instance.into(),
        member: member.into(),
        bootstrap,
        secrets: secrets.clone(),
        placement: Placement::default(),
        archive: None,
    }
}

/// Waits until the member's sidecar answers `/readyz` with 200.
async fn wait_ready(platform: &LocalPlatform, instance: &str, member: &str) {
    let address = platform.member_address(instance, member).await.unwrap();
    let ca = platform.instance_ca(instance).await.unwrap();
    let client = SidecarClient::new(
        &address.api_url,
        "unused",
        ca.as_bytes(),
        Duration::from_secs(5),
    )
    .unwrap();
    eventually(READY_TIMEOUT, &format!("{member} to be ready"), || {
        let client = client.clone();
        async move { client.ready().await.unwrap_or(false).then_some(()) }
    })
    .await;
}

async fn password(platform: &LocalPlatform, secrets: &SecretRefs) -> String {
    platform
        .read_secret(&secrets.superuser_password)
        .await
        .unwrap()
        .expose()
        .to_string()
}

/// A superuser connection through `address` (scram-sha-256), over TLS verified against the CAs
/// of the home's instances.
async fn try_connect(
    home: &TestHome,
    address: &PgAddress,
    password: &str,
) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
    let mut cas = Vec::new();
    for entry in fs::read_dir(home.path().join("instances"))
        .unwrap()
        .flatten()
    {
        if let Ok(pem) = fs::read(entry.path().join("secrets/tls/ca.crt")) {
            cas.extend(pem);
        }
    }
    let tls = toygres_common::tls::pg::PgTls::new(&cas, None).unwrap();
    let mut config = tokio_postgres::Config::new();
    let (client, connection) = toygres_common::tls::pg::PgTls::require(&mut config)
        .host(&address.host)
        .port(address.port)
        .user("postgres")
        .password(password)
        .dbname("postgres")
        .connect_timeout(Duration::from_secs(5))
        .connect(tls)
        .await?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(client)
}

async fn connect(home: &TestHome, address: &PgAddress, password: &str) -> tokio_postgres::Client {
    try_connect(home, address, password)
        .await
        .unwrap_or_else(|e| panic!("connect to {address}: {e}"))
}

async fn in_recovery(client: &tokio_postgres::Client) -> bool {
    client
        .query_one("SELECT pg_is_in_recovery()", &[])
        .await
        .unwrap()
        .get(0)
}

fn routes(rw: Option<&str>, ro: &[&str]) -> EndpointRoutes {
    EndpointRoutes {
        rw: rw.map(String::from),
        ro: ro.iter().map(|m| m.to_string()).collect(),
        ..Default::default()
    }
}

fn port_listening(port: u16) -> bool {
    std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endpoints_lead_to_primary_and_standby_and_follow_reroutes() {
    let home = TestHome::new();
    let platform = home.platform();
    let secrets = platform.ensure_instance_secrets("db").await.unwrap();
    let password = password(&platform, &secrets).await;

    let primary = platform
        .create_member(&spec("db", "db-0", Bootstrap::Init, &secrets))
        .await
        .unwrap();
    // Idempotent: the same member, not a second one.
    let again = platform
        .create_member(&spec("db", "db-0", Bootstrap::Init, &secrets))
        .await
        .unwrap();
    assert_eq!(primary, again);
    wait_ready(&platform, "db", "db-0").await;
    platform
        .create_member(&spec(
            "db",
            "db-1",
            Bootstrap::Standby {
                primary: primary.address.pg.clone(),
            },
            &secrets,
        ))
        .await
        .unwrap();
    wait_ready(&platform, "db", "db-1").await;

    let endpoints = platform.ensure_endpoints("db").await.unwrap();
    assert_eq!(platform.ensure_endpoints("db").await.unwrap(), endpoints);
    platform
        .route_endpoint("db", &routes(Some("db-0"), &["db-1"]))
        .await
        .unwrap();

    // A write through rw is read back through ro.
    let rw = connect(&home, &endpoints.rw, &password).await;
    assert!(!in_recovery(&rw).await);
    rw.batch_execute("CREATE TABLE t (v text); INSERT INTO t VALUES ('through rw')")
        .await
        .unwrap();
    let ro = connect(&home, &endpoints.ro, &password).await;
    assert!(in_recovery(&ro).await);
    let value: String = eventually(Duration::from_secs(30), "the row on the standby", || {
        let ro = &ro;
        async move {
            let row = ro.query_opt("SELECT v FROM t", &[]).await.ok()??;
            Some(row.get(0))
        }
    })
    .await;
    assert_eq!(value, "through rw");

    // Rerouting rw away from db-0 closes the connection held to it; new ones reach db-1.
    platform
        .route_endpoint("db", &routes(Some("db-1"), &[]))
        .await
        .unwrap();
    eventually(
        Duration::from_secs(10),
        "the old rw connection to close",
        || {
            let rw = &rw;
            async move { rw.simple_query("SELECT 1").await.is_err().then_some(()) }
        },
    )
    .await;
    let moved = connect(&home, &endpoints.rw, &password).await;
    assert!(in_recovery(&moved).await, "rw should now lead to db-1");
    // The credentials appear in no record and no log.
    for file in [
        "db-0/member.json",
        "db-0/sidecar.log",
        "db-1/sidecar.log",
        "endpoints.json",
    ] {
        let text = fs::read_to_string(home.path().join("instances/db").join(file)).unwrap();
        assert!(!text.contains(&password), "{file} holds the password");
    }
    let stats = platform.endpoint_stats("db", EndpointRole::Rw).unwrap();
    assert!(stats.closed_by_reroute >= 1, "{stats:?}");
    assert!(stats.total >= 2, "{stats:?}");

    // No standby routed: ro falls back to the primary.
    platform
        .route_endpoint("db", &routes(Some("db-0"), &[]))
        .await
        .unwrap();
    let fallback = connect(&home, &endpoints.ro, &password).await;
    assert!(!in_recovery(&fallback).await, "ro should fall back to db-0");

    // No primary: rw refuses new connections at once.
    platform
        .route_endpoint("db", &routes(None, &["db-1"]))
        .await
        .unwrap();
    let started = Instant::now();
    assert!(try_connect(&home, &endpoints.rw, &password).await.is_err());
    assert!(started.elapsed() < Duration::from_secs(3));

    // Routing to a member that does not exist is refused.
    let err = platform
        .route_endpoint("db", &routes(Some("db-7"), &[]))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("db-7"), "{err}");

    for member in ["db-1", "db-0"] {
        platform.delete_member("db", member, false).await.unwrap();
    }
    platform.delete_endpoints("db").await.unwrap();
    platform.delete_instance_secrets("db").await.unwrap();
    assert!(!home.path().join("instances/db").exists());
    home.assert_no_processes();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_survive_a_controller_restart_and_adopt_restarts_a_killed_sidecar() {
    let home = TestHome::new();
    let platform = home.platform();
    let secrets = platform.ensure_instance_secrets("kept").await.unwrap();
    let password = password(&platform, &secrets).await;
    platform
        .create_member(&spec("kept", "kept-0", Bootstrap::Init, &secrets))
        .await
        .unwrap();
    wait_ready(&platform, "kept", "kept-0").await;
    let endpoints = platform.ensure_endpoints("kept").await.unwrap();
    platform
        .route_endpoint("kept", &routes(Some("kept-0"), &[]))
        .await
        .unwrap();
    connect(&home, &endpoints.rw, &password)
        .await
        .batch_execute("CREATE TABLE t (v int); INSERT INTO t VALUES (1)")
        .await
        .unwrap();
    let before = platform.member_record("kept", "kept-0").await.unwrap();
    let sidecar_pid = before.pid.unwrap();
    // Detached: the leader of its own session and process group.
    assert_eq!(group_and_session(sidecar_pid), (sidecar_pid, sidecar_pid));
    // With none of the controller's environment (which may hold DATABASE_URL or TOYGRES_*).
    let environ = fs::read(format!("/proc/{sidecar_pid}/environ")).unwrap();
    let mut names: Vec<String> = environ
        .split(|b| *b == 0)
        .filter(|v| !v.is_empty())
        .map(|v| {
            String::from_utf8_lossy(v)
                .split('=')
                .next()
                .unwrap()
                .to_string()
        })
        .collect();
    names.sort();
    assert_eq!(names, ["PATH", "RUST_LOG"]);

    // "Controller restart": the platform goes away, the member keeps running.
    platform.shutdown().await;
    drop(platform);
    assert!(alive(sidecar_pid));
    assert!(try_connect(&home, &endpoints.rw, &password).await.is_err());
    let direct = PgAddress {
        host: "127.0.0.1".into(),
        port: before.pg_port,
    };
    connect(&home, &direct, &password).await;

    let platform = Arc::new(home.platform());
    let report = platform.adopt().await.unwrap();
    assert_eq!(
        report.members,
        vec![(
            "kept".to_string(),
            "kept-0".to_string(),
            Adoption::Adopted { pid: sidecar_pid }
        )]
    );
    assert_eq!(report.endpoints, vec!["kept".to_string()]);
    assert_eq!(platform.ensure_endpoints("kept").await.unwrap(), endpoints);
    assert_eq!(
        platform.member_record("kept", "kept-0").await.unwrap(),
        before
    );
    // The routes survived too.
    let rw = connect(&home, &endpoints.rw, &password).await;
    let count: i64 = rw
        .query_one("SELECT count(*) FROM t", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(count, 1);

    // A killed sidecar is noticed and restarted on the same ports, with its data.
    kill(Pid::from_raw(sidecar_pid), Signal::SIGKILL).unwrap();
    eventually(Duration::from_secs(10), "the sidecar to die", || async {
        (!alive(sidecar_pid)).then_some(())
    })
    .await;
    let members = platform.list_members("kept").await.unwrap();
    assert_eq!(members[0].state, MemberState::Down);
    let report = platform.adopt().await.unwrap();
    let new_pid = match &report.members[0].2 {
        Adoption::Restarted { pid } => *pid,
        other => panic!("expected a restart, got {other:?}"),
    };
    assert_ne!(new_pid, sidecar_pid);
    wait_ready(&platform, "kept", "kept-0").await;
    let after = platform.member_record("kept", "kept-0").await.unwrap();
    assert_eq!(
        (after.pg_port, after.api_port),
        (before.pg_port, before.api_port)
    );
    assert_eq!(after.pid, Some(new_pid));
    let rw = connect(&home, &endpoints.rw, &password).await;
    let count: i64 = rw
        .query_one("SELECT count(*) FROM t", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(count, 1);

    // kill_member stops it hard and for good: adopt leaves it down until created again, and
    // it comes back fenced (Postgres kept stopped) until its sidecar is told otherwise.
    let postmaster = postmaster_pid(&after.data_dir).unwrap();
    platform.kill_member("kept", "kept-0").await.unwrap();
    assert!(!alive(new_pid));
    assert!(!alive(postmaster));
    assert_eq!(
        platform.list_members("kept").await.unwrap()[0].state,
        MemberState::Stopped
    );
    let report = platform.adopt().await.unwrap();
    assert_eq!(report.members[0].2, Adoption::LeftStopped);
    platform
        .create_member(&spec("kept", "kept-0", Bootstrap::Init, &secrets))
        .await
        .unwrap();
    let sidecar = toygres_controller::platform::sidecar_client(
        platform.as_ref(),
        "kept",
        "kept-0",
        Duration::from_secs(30),
    )
    .await
    .unwrap();
    let status = eventually(READY_TIMEOUT, "the restarted sidecar to answer", || {
        let sidecar = sidecar.clone();
        async move { sidecar.status().await.ok() }
    })
    .await;
    assert!(status.fenced && !status.running, "{status:?}");
    sidecar.unfence().await.unwrap();
    wait_ready(&platform, "kept", "kept-0").await;
    assert_eq!(
        platform.list_members("kept").await.unwrap()[0].state,
        MemberState::Running
    );

    // The supervisor restarts a sidecar that dies without being asked.
    let supervisor = platform.spawn_supervisor(Duration::from_millis(200));
    let killed = platform
        .member_record("kept", "kept-0")
        .await
        .unwrap()
        .pid
        .unwrap();
    kill(Pid::from_raw(killed), Signal::SIGKILL).unwrap();
    eventually(
        Duration::from_secs(30),
        "the supervisor to restart the sidecar",
        || {
            let platform = &platform;
            async move {
                let pid = platform.member_record("kept", "kept-0").await.ok()?.pid?;
                (pid != killed && alive(pid)).then_some(())
            }
        },
    )
    .await;
    wait_ready(&platform, "kept", "kept-0").await;
    supervisor.abort();

    platform
        .delete_member("kept", "kept-0", false)
        .await
        .unwrap();
    platform.delete_endpoints("kept").await.unwrap();
    platform.delete_instance_secrets("kept").await.unwrap();
    home.assert_no_processes();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_member_leaves_no_process_port_or_data_unless_keep_data() {
    let home = TestHome::new();
    let platform = home.platform();
    let secrets = platform.ensure_instance_secrets("gone").await.unwrap();
    for member in ["gone-0", "gone-1"] {
        platform
            .create_member(&spec("gone", member, Bootstrap::Init, &secrets))
            .await
            .unwrap();
    }
    for member in ["gone-0", "gone-1"] {
        wait_ready(&platform, "gone", member).await;
    }
    let endpoints = platform.ensure_endpoints("gone").await.unwrap();

    // Without keep_data: nothing is left.
    let record = platform.member_record("gone", "gone-0").await.unwrap();
    let member_dir = record.data_dir.parent().unwrap().to_path_buf();
    let sidecar = record.pid.unwrap();
    let postmaster = postmaster_pid(&record.data_dir).unwrap();
    assert!(port_listening(record.pg_port) && port_listening(record.api_port));
    platform
        .delete_member("gone", "gone-0", false)
        .await
        .unwrap();
    assert!(!alive(sidecar), "the sidecar still runs");
    assert!(!alive(postmaster), "the postmaster still runs");
    assert!(!port_listening(record.pg_port), "Postgres's port is open");
    assert!(!port_listening(record.api_port), "the API port is open");
    assert!(!member_dir.exists(), "{} is left", member_dir.display());
    assert!(!record.run_dir.exists());
    let members = platform.list_members("gone").await.unwrap();
    assert_eq!(
        members
            .iter()
            .map(|m| m.member.as_str())
            .collect::<Vec<_>>(),
        ["gone-1"]
    );
    // Idempotent.
    platform
        .delete_member("gone", "gone-0", false)
        .await
        .unwrap();

    // With keep_data: the processes go, the data stays (shut down cleanly).
    let record = platform.member_record("gone", "gone-1").await.unwrap();
    let sidecar = record.pid.unwrap();
    let postmaster = postmaster_pid(&record.data_dir).unwrap();
    platform
        .delete_member("gone", "gone-1", true)
        .await
        .unwrap();
    assert!(!alive(sidecar) && !alive(postmaster));
    assert!(!port_listening(record.pg_port) && !port_listening(record.api_port));
    assert!(record.data_dir.join("PG_VERSION").is_file());
    assert!(!record.data_dir.join("postmaster.pid").exists());
    assert!(platform.list_members("gone").await.unwrap().is_empty());
    // Deleting it again without keep_data removes what was kept.
    platform
        .delete_member("gone", "gone-1", false)
        .await
        .unwrap();
    assert!(!record.data_dir.exists());

    platform.delete_endpoints("gone").await.unwrap();
    assert!(!port_listening(endpoints.rw.port) && !port_listening(endpoints.ro.port));
    platform.delete_instance_secrets("gone").await.unwrap();
    assert!(!home.path().join("instances/gone").exists());
    home.assert_no_processes();
}
