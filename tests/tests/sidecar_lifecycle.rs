//! The sidecar's hold on its Postgres: restarts after a crash, clean exit on SIGTERM, no
//! unsupervised server after the sidecar itself is killed, existing data started as it is, and
//! bad settings refused with a clear message.

use std::process::Stdio;
use std::time::Duration;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use toygres_common::sidecar_api::Role;
use toygres_tests::{
    children_of, eventually, free_port, process_alive, Sidecar, SidecarSpec, TestDir,
};

const WAIT: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_postgres_is_restarted_and_counted() {
    let dir = TestDir::new();
    let s = Sidecar::start(&dir, SidecarSpec::primary("crash-0")).await;
    s.connect()
        .await
        .batch_execute("CREATE TABLE t (x int); INSERT INTO t VALUES (1)")
        .await
        .unwrap();
    let before = s.client().status().await.unwrap();
    let old_pid = before.pid.expect("postmaster pid") as i32;
    assert_eq!(before.postgres_restarts, 0);

    kill(Pid::from_raw(old_pid), Signal::SIGKILL).unwrap();

    let client = s.client();
    let after = eventually(WAIT, "postgres to be restarted", || async {
        let st = client.status().await.ok()?;
        (st.running && st.pid.is_some_and(|p| p as i32 != old_pid)).then_some(st)
    })
    .await;
    assert_eq!(after.postgres_restarts, 1);
    assert_eq!(after.role, Role::Primary);
    let rows: i64 = s
        .connect()
        .await
        .query_one("SELECT count(*) FROM t", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(rows, 1, "committed data survives the crash");
    let metrics = reqwest::get(format!("{}/metrics", s.api_url()))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(metrics.contains("toygres_pg_restarts_total 1"), "{metrics}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_stops_postgres_and_exits_zero_leaving_no_process() {
    let dir = TestDir::new();
    let mut s = Sidecar::start(&dir, SidecarSpec::primary("term-0")).await;
    let sidecar_pid = s.pid().unwrap() as i32;
    let postmaster = s.postmaster_pid().expect("postmaster running");
    let backends = children_of(postmaster);
    assert!(!backends.is_empty(), "postgres has its auxiliary processes");

    assert_eq!(s.stop().await, Some(0), "exit code after SIGTERM");
    assert!(!process_alive(sidecar_pid));
    assert!(
        !process_alive(postmaster),
        "postmaster {postmaster} still running"
    );
    for pid in backends {
        assert!(!process_alive(pid), "postgres process {pid} still running");
    }
    assert!(
        !s.data_dir.join("postmaster.pid").exists(),
        "clean shutdown removes postmaster.pid"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_sidecar_takes_postgres_down_and_a_new_one_takes_over_the_data() {
    let dir = TestDir::new();
    let mut s = Sidecar::start(&dir, SidecarSpec::primary("orphan-0")).await;
    s.connect()
        .await
        .batch_execute("CREATE TABLE t (x int); INSERT INTO t VALUES (42)")
        .await
        .unwrap();
    let postmaster = s.postmaster_pid().unwrap();
    s.signal(Signal::SIGKILL);
    s.wait_exit(WAIT).await;
    // The parent-death signal makes Postgres shut down: no server runs unsupervised.
    eventually(WAIT, "the orphaned postmaster to stop", || async {
        (!process_alive(postmaster)).then_some(())
    })
    .await;

    // A new sidecar on the same data directory starts it as it is: no bootstrap, same data.
    s.restart_process().await;
    let x: i32 = s
        .connect()
        .await
        .query_one("SELECT x FROM t", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(x, 42);
    assert!(s.log_tail(200).contains("existing data directory"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stray_postmaster_is_stopped_before_the_sidecar_starts_its_own() {
    let dir = TestDir::new();
    let mut s = Sidecar::start(&dir, SidecarSpec::primary("stray-0")).await;
    s.stop().await;
    // Start Postgres behind the sidecar's back, as a crashed earlier agent might have left it.
    let bin = std::fs::read_dir("/usr/lib/postgresql")
        .unwrap()
        .flatten()
        .map(|e| e.path().join("bin/postgres"))
        .find(|p| p.exists())
        .expect("postgres binary");
    let mut stray = std::process::Command::new(bin);
    stray
        .arg("-D")
        .arg(&s.data_dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    if nix::unistd::Uid::effective().is_root() {
        use std::os::unix::process::CommandExt;
        let pg = nix::unistd::User::from_name("postgres").unwrap().unwrap();
        stray.uid(pg.uid.as_raw()).gid(pg.gid.as_raw());
    }
    let mut stray = stray.spawn().unwrap();
    let stray_pid = stray.id() as i32;
    // Reap it when it exits, as init would for a real orphan.
    let reaper = std::thread::spawn(move || stray.wait());
    eventually(
        WAIT,
        "the stray postmaster to write its pid file",
        || async { s.postmaster_pid().filter(|p| *p == stray_pid) },
    )
    .await;

    s.restart_process().await;
    reaper.join().unwrap().unwrap();
    assert!(!process_alive(stray_pid));
    let st = s.client().status().await.unwrap();
    assert!(st.running);
    assert_ne!(st.pid, Some(stray_pid as u32));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_settings_exit_non_zero_with_a_clear_message() {
    let dir = TestDir::new();
    let spec = SidecarSpec::primary("bad-0");
    let base = Sidecar::spawn(&dir, spec.clone(), free_port(), free_port());
    let base_cmd = base.command();
    drop(base);

    let run = |mut cmd: std::process::Command| {
        let out = cmd.output().expect("run the sidecar");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };

    // A standby needs a primary.
    let mut cmd = base_cmd;
    cmd.arg("--bootstrap=standby");
    let (code, err) = run(cmd);
    assert_eq!(code, Some(1));
    assert!(err.contains("--primary"), "{err}");

    // A missing token file.
    let probe = Sidecar::spawn(
        &dir,
        SidecarSpec::primary("bad-1"),
        free_port(),
        free_port(),
    );
    let mut cmd = probe.command();
    drop(probe);
    cmd.arg(format!(
        "--token-file={}",
        dir.path().join("missing").display()
    ));
    let (code, err) = run(cmd);
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains("--token-file") && err.contains("missing"),
        "{err}"
    );

    // A non-empty directory that is not a Postgres data directory is never touched.
    let notpg = dir.path().join("bad-2").join("data");
    std::fs::create_dir_all(&notpg).unwrap();
    std::fs::write(notpg.join("precious.txt"), "keep me").unwrap();
    let probe = Sidecar::spawn(
        &dir,
        SidecarSpec::primary("bad-2"),
        free_port(),
        free_port(),
    );
    let cmd = probe.command();
    drop(probe);
    let (code, err) = run(cmd);
    assert_eq!(code, Some(1));
    assert!(err.contains("refusing to touch it"), "{err}");
    assert_eq!(
        std::fs::read_to_string(notpg.join("precious.txt")).unwrap(),
        "keep me"
    );

    // Invalid values of flags are clap errors (exit 2) that name the flag.
    let probe = Sidecar::spawn(
        &dir,
        SidecarSpec::primary("bad-3"),
        free_port(),
        free_port(),
    );
    let mut cmd = probe.command();
    drop(probe);
    cmd.arg("--pg-port=notaport");
    let (code, err) = run(cmd);
    assert_eq!(code, Some(2));
    assert!(err.contains("--pg-port"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fenced_member_stays_stopped_across_a_sidecar_restart_until_unfenced() {
    let dir = TestDir::new();
    let mut s = Sidecar::start(&dir, SidecarSpec::primary("fence-0")).await;
    let client = s.client();
    client.fence().await.unwrap();
    let st = client.status().await.unwrap();
    assert!(st.fenced && !st.running && st.pid.is_none());
    assert!(!client.ready().await.unwrap());
    assert!(
        s.try_connect().await.is_err(),
        "a fenced server accepts no connection"
    );
    // Operations that need a running server are refused with 409.
    assert_eq!(client.promote().await.unwrap_err().status(), Some(409));
    assert_eq!(client.restart().await.unwrap_err().status(), Some(409));

    // A new sidecar process keeps the fence (and so never becomes ready: wait for its API).
    assert_eq!(s.stop().await, Some(0));
    s.relaunch();
    let client = s.client();
    let st = eventually(WAIT, "the restarted sidecar's API", || async {
        client.status().await.ok()
    })
    .await;
    assert!(st.fenced && !st.running);
    assert!(s.postmaster_pid().is_none());

    client.unfence().await.unwrap();
    let st = client.status().await.unwrap();
    assert!(!st.fenced && st.running);
    assert!(client.ready().await.unwrap());
}

/// What the Kubernetes platform relies on to fence an old primary it cannot reach: the pod
/// started again after a kill carries a new `TOYGRES_FENCE_TOKEN`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_fence_token_keeps_a_primary_stopped_once_and_is_then_spent() {
    let dir = TestDir::new();
    let mut s = Sidecar::start(&dir, SidecarSpec::primary("token-0")).await;
    let started_fenced = |s: &Sidecar| {
        let client = s.client();
        async move {
            eventually(WAIT, "the restarted sidecar's API", || async {
                client.status().await.ok()
            })
            .await
        }
    };

    // Killed by the platform, started again with a new token: Postgres stays stopped.
    assert_eq!(s.stop().await, Some(0));
    s.spec.env.push(("TOYGRES_FENCE_TOKEN".into(), "1".into()));
    s.relaunch();
    let st = started_fenced(&s).await;
    assert!(st.fenced && !st.running, "{st:?}");
    assert!(s.postmaster_pid().is_none());
    assert!(
        s.try_connect().await.is_err(),
        "a fenced server accepts no connection"
    );

    // Unfenced (as a rejoin ends); later restarts with the same token start Postgres.
    s.client().unfence().await.unwrap();
    assert_eq!(s.stop().await, Some(0));
    s.restart_process().await;
    let st = s.client().status().await.unwrap();
    assert!(
        !st.fenced && st.running,
        "a spent token fences nothing: {st:?}"
    );

    // Killed again: the next token fences it again.
    assert_eq!(s.stop().await, Some(0));
    s.spec.env.retain(|(k, _)| k != "TOYGRES_FENCE_TOKEN");
    s.spec.env.push(("TOYGRES_FENCE_TOKEN".into(), "2".into()));
    s.relaunch();
    let st = started_fenced(&s).await;
    assert!(st.fenced && !st.running, "{st:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn standby_waits_for_its_primary_while_answering_liveness() {
    let dir = TestDir::new();
    // The primary's port is chosen now, but nothing listens there yet.
    let primary_pg_port = free_port();
    let primary_api_port = free_port();
    let mut spec = SidecarSpec::primary("early-1");
    spec.primary = Some(toygres_common::names::PgAddress {
        host: "127.0.0.1".into(),
        port: primary_pg_port,
    });
    let mut standby = Sidecar::spawn(&dir, spec, free_port(), free_port());
    let client = standby.client();
    let http = reqwest::Client::new();
    eventually(
        WAIT,
        "liveness while the standby waits for its primary",
        || async {
            let r = http
                .get(format!("{}/healthz", standby.api_url()))
                .send()
                .await
                .ok()?;
            (r.status() == 200).then_some(())
        },
    )
    .await;
    assert!(!client.ready().await.unwrap());
    let err = client.status().await.unwrap_err();
    assert_eq!(err.status(), Some(503), "{err}");
    assert!(err.to_string().contains("starting"), "{err}");

    // The primary comes up on that port: the standby copies it and streams.
    let mut primary = Sidecar::spawn(
        &dir,
        SidecarSpec::primary("early-0"),
        primary_pg_port,
        primary_api_port,
    );
    primary.wait_ready(WAIT).await;
    standby.wait_ready(Duration::from_secs(120)).await;
    let st = client.status().await.unwrap();
    assert_eq!(st.role, Role::Standby);
    assert!(standby.log_tail(500).contains("retrying"));
}
