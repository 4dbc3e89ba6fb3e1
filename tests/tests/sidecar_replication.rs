//! Bootstrap, streaming replication, promotion, demotion with pg_rewind and re-pointing standbys,
//! all against real Postgres servers run by real sidecars.

use std::time::Duration;

use toygres_common::sidecar_api::{
    DemoteRequest, PromoteRequest, ReplicationRequest, Role, SyncMethod, SyncMode, SyncPolicy,
};
use toygres_tests::{eventually, Sidecar, SidecarSpec, TestDir};

const WAIT: Duration = Duration::from_secs(60);

async fn rows(s: &Sidecar) -> Vec<i32> {
    s.connect()
        .await
        .query("SELECT x FROM t ORDER BY x", &[])
        .await
        .expect("read t")
        .iter()
        .map(|r| r.get(0))
        .collect()
}

async fn wait_rows(s: &Sidecar, want: &[i32]) {
    let what = format!("{} to hold rows {want:?}", s.member);
    eventually(WAIT, &what, || async {
        let c = s.try_connect().await.ok()?;
        let got: Vec<i32> = c
            .query("SELECT x FROM t ORDER BY x", &[])
            .await
            .ok()?
            .iter()
            .map(|r| r.get(0))
            .collect();
        (got == want).then_some(())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn primary_bootstraps_with_checksums_scram_and_a_replicator_role() {
    let dir = TestDir::new();
    let primary = Sidecar::start(&dir, SidecarSpec::primary("boot-0")).await;
    let status = primary.client().status().await.unwrap();
    assert_eq!(status.role, Role::Primary);
    assert!(status.running);
    assert_eq!(status.timeline, Some(1));
    assert!(status.system_identifier.is_some());
    let disk = status.disk.expect("disk space in the status");
    assert!(
        disk.total_bytes > 0 && disk.available_bytes <= disk.total_bytes,
        "{disk:?}"
    );

    let c = primary.connect().await;
    let row = c
        .query_one(
            "SELECT current_setting('data_checksums'), current_setting('wal_level'), \
                    current_setting('password_encryption'), \
                    (SELECT rolreplication FROM pg_roles WHERE rolname = 'replicator'), \
                    (SELECT rolpassword IS NULL FROM pg_authid WHERE rolname = 'replicator'), \
                    current_setting('ssl')",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "on");
    assert_eq!(row.get::<_, String>(1), "replica");
    assert_eq!(row.get::<_, String>(2), "scram-sha-256");
    assert!(row.get::<_, bool>(3));
    assert!(row.get::<_, bool>(4), "replicator has a password");
    assert_eq!(row.get::<_, String>(5), "on");
    // Over TCP only TLS lines exist; replication authenticates with certificates alone.
    let hba = c
        .query(
            "SELECT type, database::text, user_name::text, auth_method FROM pg_hba_file_rules \
             WHERE type <> 'local'",
            &[],
        )
        .await
        .unwrap();
    assert!(!hba.is_empty());
    for rule in &hba {
        let (kind, database, users, method): (String, String, String, String) =
            (rule.get(0), rule.get(1), rule.get(2), rule.get(3));
        assert_eq!(
            kind, "hostssl",
            "a TCP rule without TLS: {database} {users} {method}"
        );
        if database.contains("replication") {
            assert_eq!(method, "cert", "replication with a password: {users}");
        }
        assert!(
            !["trust", "password", "md5"].contains(&method.as_str()),
            "{method}"
        );
    }

    // TCP never trusts: a wrong password is refused, and replicator may not log into databases.
    let mut wrong = tokio_postgres::Config::new();
    wrong
        .host("127.0.0.1")
        .port(primary.pg_port)
        .user("postgres")
        .password("wrong")
        .dbname("postgres");
    let wrong = toygres_tests::connect_tls(wrong, &dir.ca_file()).await;
    assert!(wrong.is_err(), "a wrong password was accepted");
    let mut replicator = tokio_postgres::Config::new();
    replicator
        .host("127.0.0.1")
        .port(primary.pg_port)
        .user("replicator")
        .password(toygres_tests::REPLICATION_PASSWORD)
        .dbname("postgres");
    let replicator = toygres_tests::connect_tls(replicator, &dir.ca_file()).await;
    assert!(replicator.is_err(), "replicator logged into a database");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn standby_streams_through_its_slot_and_replicates_writes() {
    let dir = TestDir::new();
    let primary = Sidecar::start(&dir, SidecarSpec::primary("repl-0")).await;
    let standby = Sidecar::start(&dir, SidecarSpec::standby("repl-1", &primary)).await;

    let p = primary.connect().await;
    p.batch_execute("CREATE TABLE t (x int); INSERT INTO t VALUES (1), (2)")
        .await
        .unwrap();
    wait_rows(&standby, &[1, 2]).await;

    // The primary sees the standby streaming under its member name, through its slot.
    let pc = primary.client();
    let seen = eventually(WAIT, "the standby in the primary's status", || async {
        let s = pc.status().await.ok()?;
        s.standbys.into_iter().find(|st| {
            st.application_name == "repl-1" && st.state == "streaming" && st.lag_bytes.is_some()
        })
    })
    .await;
    assert_eq!(seen.sync_state, "async");
    assert_eq!(seen.client_addr.as_deref(), Some("127.0.0.1"));
    let slot_active: bool = p
        .query_one(
            "SELECT active FROM pg_replication_slots WHERE slot_name = 'repl_1'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(slot_active);

    let s = standby.client().status().await.unwrap();
    assert_eq!(s.role, Role::Standby);
    assert_eq!(s.wal_receiver_status.as_deref(), Some("streaming"));
    assert_eq!(s.primary, Some(primary.pg_address()));
    assert!(s.lag_bytes.is_some() && s.lag_seconds.is_some());
    let heard = s
        .primary_last_contact_seconds
        .expect("contact with the primary");
    assert!((0.0..30.0).contains(&heard), "{heard}");
    assert!(s.archive.is_none(), "no store configured, no archive state");
    assert_eq!(
        s.system_identifier,
        pc.status().await.unwrap().system_identifier
    );

    // A standby refuses writes.
    let err = standby
        .connect()
        .await
        .batch_execute("INSERT INTO t VALUES (3)")
        .await
        .unwrap_err();
    let message = err
        .as_db_error()
        .map(|e| e.message().to_string())
        .unwrap_or_default();
    assert!(message.contains("read-only"), "{err:?}");

    // Synchronous replication through the API: the standby becomes the sync standby.
    primary
        .client()
        .set_replication(&ReplicationRequest {
            synchronous_standby_names: Some("FIRST 1 (\"repl-1\")".into()),
            synchronous_commit: Some("remote_apply".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    eventually(WAIT, "the standby to be synchronous", || async {
        let s = pc.status().await.ok()?;
        s.standbys
            .iter()
            .any(|st| st.sync_state == "sync")
            .then_some(())
    })
    .await;
    // remote_apply: once the commit returns, the standby shows the row.
    p.batch_execute("INSERT INTO t VALUES (3)").await.unwrap();
    assert_eq!(rows(&standby).await, vec![1, 2, 3]);

    // An unparsable value is refused with a message, and nothing changes.
    let err = pc
        .set_replication(&ReplicationRequest {
            synchronous_standby_names: Some("ANY 1 (repl-1".into()),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.status(), Some(400), "{err}");
    assert!(
        err.to_string().contains("synchronous_standby_names"),
        "{err}"
    );
    let s = pc.status().await.unwrap();
    assert_eq!(
        s.synchronous_standby_names.as_deref(),
        Some("FIRST 1 (\"repl-1\")")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn promotion_then_demotion_with_rewind_rejoins_the_old_primary() {
    let dir = TestDir::new();
    let old = Sidecar::start(&dir, SidecarSpec::primary("fo-0")).await;
    let new = Sidecar::start(&dir, SidecarSpec::standby("fo-1", &old)).await;
    let other = Sidecar::start(&dir, SidecarSpec::standby("fo-2", &old)).await;
    old.connect()
        .await
        .batch_execute("CREATE TABLE t (x int); INSERT INTO t VALUES (1)")
        .await
        .unwrap();
    wait_rows(&new, &[1]).await;
    wait_rows(&other, &[1]).await;

    // The runbook: fence the old primary (a fast shutdown sends the standbys all its WAL), then
    // promote. Two concurrent promote requests share one promotion.
    old.client().fence().await.unwrap();
    let fenced = old.client().status().await.unwrap();
    assert!(fenced.fenced && !fenced.running);
    let (c1, c2) = (new.client(), new.client());
    let (a, b) = tokio::join!(c1.promote(), c2.promote());
    let (a, b) = (a.unwrap(), b.unwrap());
    assert_eq!(a, b, "a concurrent promote joins the one in flight");
    assert_eq!(a.timeline, 2);
    let again = new.client().promote().await.unwrap_err();
    assert_eq!(again.status(), Some(409), "{again}");
    new.connect()
        .await
        .batch_execute("INSERT INTO t VALUES (2)")
        .await
        .unwrap();
    let st = new.client().status().await.unwrap();
    assert_eq!((st.role, st.timeline), (Role::Primary, Some(2)));

    // Re-point the other standby at the new primary; it follows onto timeline 2.
    other
        .client()
        .set_replication(&ReplicationRequest {
            primary: Some(new.pg_address()),
            ..Default::default()
        })
        .await
        .unwrap();
    wait_rows(&other, &[1, 2]).await;

    // Unfenced, the old primary comes back on its own files as a primary and takes a write the
    // new timeline never sees: its history diverged. (A fenced member can be demoted too; see
    // sidecar_rejoin.rs.)
    old.client().unfence().await.unwrap();
    old.connect()
        .await
        .batch_execute("INSERT INTO t VALUES (99)")
        .await
        .unwrap();

    // Demote the old primary: it must be rewound (its row 99 never reached the new timeline).
    let demoted = old
        .client()
        .demote(&DemoteRequest {
            primary: new.pg_address(),
            reclone_if_needed: false,
        })
        .await
        .unwrap();
    assert_eq!(demoted.method, "rewind");

    new.connect()
        .await
        .batch_execute("INSERT INTO t VALUES (3)")
        .await
        .unwrap();
    wait_rows(&old, &[1, 2, 3]).await;
    wait_rows(&other, &[1, 2, 3]).await;
    let st = old.client().status().await.unwrap();
    assert_eq!(st.role, Role::Standby);
    assert_eq!(st.timeline, Some(2));
    assert_eq!(st.primary, Some(new.pg_address()));
    let primary_view = new.client().status().await.unwrap();
    let mut names: Vec<_> = primary_view
        .standbys
        .iter()
        .map(|s| s.application_name.clone())
        .collect();
    names.sort();
    assert_eq!(names, vec!["fo-0", "fo-2"]);

    // Demoting a standby that already follows the primary needs no rewind.
    let again = old
        .client()
        .demote(&DemoteRequest {
            primary: new.pg_address(),
            reclone_if_needed: false,
        })
        .await
        .unwrap();
    assert_eq!(again.method, "none");
    // Following a server that is not a primary is refused before anything is stopped.
    let err = other
        .client()
        .demote(&DemoteRequest {
            primary: old.pg_address(),
            reclone_if_needed: false,
        })
        .await
        .unwrap_err();
    assert_eq!(err.status(), Some(409), "{err}");
    assert!(other.client().status().await.unwrap().running);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demote_reclones_when_asked_and_rewind_is_impossible() {
    let dir = TestDir::new();
    // Two unrelated clusters: pg_rewind cannot work across them.
    let a = Sidecar::start(&dir, SidecarSpec::primary("rc-0")).await;
    let b = Sidecar::start(&dir, SidecarSpec::primary("rc-1")).await;
    a.connect()
        .await
        .batch_execute("CREATE TABLE t (x int); INSERT INTO t VALUES (7)")
        .await
        .unwrap();
    let req = DemoteRequest {
        primary: a.pg_address(),
        reclone_if_needed: false,
    };
    let err = b.client().demote(&req).await.unwrap_err();
    assert_eq!(err.status(), Some(500), "{err}");
    assert!(err.to_string().contains("reclone_if_needed"), "{err}");
    // Refused rewind leaves b a standby, never a second primary.
    let st = eventually(WAIT, "b running as a standby", || async {
        let s = b.client().status().await.ok()?;
        (s.running && s.role == Role::Standby).then_some(s)
    })
    .await;
    assert_ne!(
        st.system_identifier,
        a.client().status().await.unwrap().system_identifier
    );

    let done = b
        .client()
        .demote(&DemoteRequest {
            reclone_if_needed: true,
            ..req
        })
        .await
        .unwrap();
    assert_eq!(done.method, "reclone");
    wait_rows(&b, &[7]).await;
    assert_eq!(
        b.client().status().await.unwrap().system_identifier,
        a.client().status().await.unwrap().system_identifier
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn standby_is_unready_while_replay_lags_beyond_the_bound() {
    let dir = TestDir::new();
    let primary = Sidecar::start(&dir, SidecarSpec::primary("lag-0")).await;
    let mut spec = SidecarSpec::standby("lag-1", &primary);
    spec.extra_args.push("--ready-max-lag-bytes=65536".into());
    let standby = Sidecar::start(&dir, spec).await;
    let sc = standby.client();
    assert!(sc.ready().await.unwrap());

    // Replay paused: WAL keeps arriving but is not applied, so the lag grows past the bound.
    standby
        .connect()
        .await
        .batch_execute("SELECT pg_wal_replay_pause()")
        .await
        .unwrap();
    primary
        .connect()
        .await
        .batch_execute("CREATE TABLE t AS SELECT g AS x FROM generate_series(1, 20000) g")
        .await
        .unwrap();
    let lag = eventually(
        WAIT,
        "the standby to report lag beyond the bound",
        || async {
            let st = sc.status().await.ok()?;
            st.lag_bytes.filter(|lag| *lag > 65536)
        },
    )
    .await;
    assert!(!sc.ready().await.unwrap(), "ready with {lag} bytes of lag");

    standby
        .connect()
        .await
        .batch_execute("SELECT pg_wal_replay_resume()")
        .await
        .unwrap();
    eventually(WAIT, "the standby to be ready again", || async {
        sc.ready().await.ok().filter(|r| *r)
    })
    .await;
    wait_rows_count(&standby, 20000).await;
}

async fn wait_rows_count(s: &Sidecar, want: i64) {
    eventually(WAIT, "rows to replicate", || async {
        let c = s.try_connect().await.ok()?;
        let n: i64 = c
            .query_one("SELECT count(*) FROM t", &[])
            .await
            .ok()?
            .get(0);
        (n == want).then_some(())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_departed_standbys_slot_can_be_dropped_but_not_while_it_streams() {
    let dir = TestDir::new();
    let primary = Sidecar::start(&dir, SidecarSpec::primary("slot-0")).await;
    let mut standby = Sidecar::start(&dir, SidecarSpec::standby("slot-1", &primary)).await;
    let pc = primary.client();
    let slot_exists = || async {
        primary
            .connect()
            .await
            .query_opt(
                "SELECT 1 FROM pg_replication_slots WHERE slot_name = 'slot_1'",
                &[],
            )
            .await
            .unwrap()
            .is_some()
    };
    eventually(WAIT, "the standby to stream", || async {
        let st = pc.status().await.ok()?;
        (!st.standbys.is_empty()).then_some(())
    })
    .await;

    let err = pc.drop_slot("slot-1").await.unwrap_err();
    assert_eq!(err.status(), Some(409), "{err}");
    assert!(slot_exists().await);
    let err = pc.drop_slot("Not_A_Member").await.unwrap_err();
    assert_eq!(err.status(), Some(400), "{err}");

    // The standby is removed: its slot would hold WAL on the primary forever.
    assert_eq!(standby.stop().await, Some(0));
    let dropped = eventually(WAIT, "the slot to become droppable", || async {
        pc.drop_slot("slot-1").await.ok()
    })
    .await;
    assert_eq!(dropped.message, "slot dropped");
    assert!(!slot_exists().await);
    assert_eq!(
        pc.drop_slot("slot-1").await.unwrap().message,
        "no such slot"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn promote_refuses_while_the_primary_still_serves_unless_forced() {
    let dir = TestDir::new();
    let primary = Sidecar::start(&dir, SidecarSpec::primary("pf-0")).await;
    let standby = Sidecar::start(&dir, SidecarSpec::standby("pf-1", &primary)).await;
    let sc = standby.client();
    eventually(WAIT, "the standby to stream", || async {
        let st = sc.status().await.ok()?;
        (st.wal_receiver_status.as_deref() == Some("streaming")).then_some(())
    })
    .await;

    // The primary is up and the standby streams from it: promoting would make two primaries.
    let err = sc.promote().await.unwrap_err();
    assert_eq!(err.status(), Some(409), "{err}");
    assert!(err.to_string().contains("force"), "{err}");
    assert_eq!(sc.status().await.unwrap().role, Role::Standby);
    let resp = standby
        .http()
        .post(format!("{}/v1/promote", standby.api_url()))
        .bearer_auth(toygres_tests::API_TOKEN)
        .json(&serde_json::json!({"force": "yes"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 400);
    assert_eq!(sc.status().await.unwrap().role, Role::Standby);

    // A policy naming the standby itself is refused before anything happens.
    let own = SyncPolicy {
        standbys: vec!["pf-1".into()],
        ..strict_first_one("pf-0")
    };
    let err = sc
        .promote_with(&PromoteRequest {
            force: true,
            sync: Some(own),
        })
        .await
        .unwrap_err();
    assert_eq!(err.status(), Some(400), "{err}");
    assert_eq!(sc.status().await.unwrap().role, Role::Standby);

    // Forced, it goes ahead, with the synchronous policy it was given in force before its first
    // write: pf-0 no longer streams from it, so that write waits for a synchronous standby.
    let promoted = sc
        .promote_with(&PromoteRequest {
            force: true,
            sync: Some(strict_first_one("pf-0")),
        })
        .await
        .unwrap();
    assert_eq!(promoted.timeline, 2);
    assert!(promoted.sync_set);
    let names: String = standby
        .connect()
        .await
        .query_one("SHOW synchronous_standby_names", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(names, "FIRST 1 (\"pf-0\")");
    let writer = standby.connect().await;
    let write =
        tokio::spawn(async move { writer.batch_execute("CREATE TABLE forced (x int)").await });
    let observer = standby.connect().await;
    eventually(
        WAIT,
        "the first write to wait for a synchronous standby",
        || async {
            let waiting: i64 = observer
                .query_one(
                    "SELECT count(*) FROM pg_stat_activity WHERE wait_event = 'SyncRep'",
                    &[],
                )
                .await
                .ok()?
                .get(0);
            (waiting == 1).then_some(())
        },
    )
    .await;
    assert!(
        !write.is_finished(),
        "a commit was acknowledged without a synchronous standby"
    );
    write.abort();
}

/// `FIRST 1 (standby)`, strict.
fn strict_first_one(standby: &str) -> SyncPolicy {
    SyncPolicy {
        mode: SyncMode::Strict,
        method: SyncMethod::First,
        num_sync: 1,
        standbys: vec![standby.into()],
        degrade_timeout_secs: 0,
    }
}
