//! Rejoin after a failover: the old primary was killed with -9 (sidecar and Postgres), fenced by
//! a marker in its data directory, and a standby was promoted. Started again, the old member stays
//! stopped; demoted to the new primary it is rewound, streams, and its fence is lifted.
//! pg_rewind reads the new primary as `toygres_rewind`, with its client certificate and no
//! password; a member without that certificate (issued before the role existed) still rewinds,
//! as the superuser.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use toygres_common::sidecar_api::{
    DemoteRequest, ReplicationRequest, Role, SyncMethod, SyncMode, SyncPolicy,
};
use toygres_common::tls::{self, pg::PgTls, REWIND_ROLE};
use toygres_tests::{eventually, Sidecar, SidecarSpec, TestDir};

const WAIT: Duration = Duration::from_secs(60);

/// The pgpass file a rewind as the superuser writes into the member's run directory.
fn pgpass_of(s: &Sidecar) -> PathBuf {
    s.data_dir.with_file_name("data.run").join("pgpass")
}

/// Connects to `s` over TLS as `user` to `dbname`, with `password` and the client
/// certificate in `client` (a member's TLS directory and the certificate's file names) when
/// given.
async fn connect_as(
    dir: &TestDir,
    s: &Sidecar,
    user: &str,
    dbname: &str,
    password: Option<&str>,
    client: Option<(&Path, &str, &str)>,
) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
    let ca = std::fs::read(dir.ca_file()).unwrap();
    let pair = client.map(|(d, cert, key)| {
        (
            std::fs::read(d.join(cert)).unwrap(),
            std::fs::read(d.join(key)).unwrap(),
        )
    });
    let tls = PgTls::new(
        &ca,
        pair.as_ref().map(|(c, k)| (c.as_slice(), k.as_slice())),
    )
    .unwrap();
    let mut config = tokio_postgres::Config::new();
    config
        .host("127.0.0.1")
        .port(s.pg_port)
        .user(user)
        .dbname(dbname)
        .connect_timeout(Duration::from_secs(5));
    if let Some(password) = password {
        config.password(password);
    }
    let (client, conn) = PgTls::require(&mut config).connect(tls).await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(client)
}

/// What `toygres_rewind` is on `s`: (exists, superuser, has a password, may execute every
/// function pg_rewind calls).
async fn rewind_role(s: &Sidecar) -> (bool, bool, bool, bool) {
    let row = s
        .connect()
        .await
        .query_opt(
            "SELECT rolsuper, rolpassword IS NOT NULL, \
               has_function_privilege(rolname, 'pg_ls_dir(text,boolean,boolean)', 'EXECUTE') \
               AND has_function_privilege(rolname, 'pg_stat_file(text,boolean)', 'EXECUTE') \
               AND has_function_privilege(rolname, 'pg_read_binary_file(text)', 'EXECUTE') \
               AND has_function_privilege(rolname, \
                 'pg_read_binary_file(text,bigint,bigint,boolean)', 'EXECUTE') \
             FROM pg_authid WHERE rolname = $1",
            &[&REWIND_ROLE],
        )
        .await
        .unwrap();
    match row {
        None => (false, false, false, false),
        Some(r) => (true, r.get(0), r.get(1), r.get(2)),
    }
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
async fn killed_and_fenced_old_primary_rejoins_as_a_standby_after_failover() {
    let dir = TestDir::new();
    let mut old = Sidecar::start(&dir, SidecarSpec::primary("rj-0")).await;
    let new = Sidecar::start(&dir, SidecarSpec::standby("rj-1", &old)).await;
    let p = old.connect().await;
    p.batch_execute("CREATE TABLE t (x int); INSERT INTO t VALUES (1), (2)")
        .await
        .unwrap();
    // The primary makes the rewind role at its start: no superuser, no password, the grants.
    eventually(WAIT, "the rewind role on rj-0", || async {
        (rewind_role(&old).await == (true, false, false, true)).then_some(())
    })
    .await;
    // An instance made before that role existed has none: the promoted member makes it.
    p.batch_execute(&format!(
        "DROP OWNED BY {REWIND_ROLE}; DROP ROLE {REWIND_ROLE}"
    ))
    .await
    .unwrap();
    // Synchronous: every acknowledged commit is on the standby before the crash.
    old.client()
        .set_replication(&ReplicationRequest {
            sync: Some(SyncPolicy {
                mode: SyncMode::Strict,
                method: SyncMethod::First,
                num_sync: 1,
                standbys: vec!["rj-1".into()],
                degrade_timeout_secs: 10,
            }),
            ..Default::default()
        })
        .await
        .unwrap();
    let oc = old.client();
    eventually(WAIT, "rj-1 to be synchronous", || async {
        let st = oc.status().await.ok()?;
        st.standbys
            .iter()
            .any(|s| s.sync_state == "sync")
            .then_some(())
    })
    .await;
    p.batch_execute("INSERT INTO t VALUES (3)").await.unwrap();
    drop(p);

    // The node dies: sidecar and postmaster killed with -9, then fenced by the platform.
    let postmaster = old.postmaster_pid().expect("the old primary's postmaster");
    old.kill_hard().await;
    assert!(!toygres_tests::process_alive(postmaster));
    std::fs::write(old.data_dir.join("toygres.fenced"), b"").unwrap();

    eventually(WAIT, "the role's drop to reach rj-1", || async {
        (!rewind_role(&new).await.0).then_some(())
    })
    .await;
    let promoted = new.client().promote().await.unwrap();
    assert_eq!(promoted.timeline, 2);
    let st = new.client().status().await.unwrap();
    assert_eq!(st.sync_policy, None, "the new primary inherited a policy");
    wait_rows(&new, &[1, 2, 3]).await;
    assert_eq!(rewind_role(&new).await, (true, false, false, true));
    // The new primary logs who connects, so the rewind's login shows.
    let c = new.connect().await;
    c.batch_execute("ALTER SYSTEM SET log_connections = on")
        .await
        .unwrap();
    c.batch_execute("SELECT pg_reload_conf()").await.unwrap();
    drop(c);
    new.connect()
        .await
        .batch_execute("INSERT INTO t VALUES (4)")
        .await
        .unwrap();

    // The old member's sidecar comes back on its data directory: fenced, Postgres stopped, and
    // still answering status.
    old.relaunch();
    let st = eventually(WAIT, "the old member's status", || async {
        oc.status().await.ok()
    })
    .await;
    assert_eq!(
        (st.role, st.running, st.fenced),
        (Role::Primary, false, true),
        "{st:?}"
    );
    // And it stays that way (the supervisor does not start a fenced member).
    let until = Instant::now() + Duration::from_secs(2);
    while Instant::now() < until {
        assert!(
            old.postmaster_pid().is_none(),
            "a fenced member started Postgres"
        );
        assert!(!oc.ready().await.unwrap());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(old.try_connect().await.is_err());

    // Rejoin: demoted to the new primary while fenced.
    let demoted = oc
        .demote(&DemoteRequest {
            primary: new.pg_address(),
            reclone_if_needed: false,
        })
        .await
        .unwrap();
    assert!(
        ["rewind", "none"].contains(&demoted.method.as_str()),
        "{demoted:?}"
    );
    {
        // pg_rewind logged in as toygres_rewind, with its certificate (also to find that no
        // rewind was needed): no superuser password was written for it, and it did not fall
        // back to the superuser.
        let login = format!("connection authorized: user={REWIND_ROLE} database=postgres");
        eventually(
            WAIT,
            "the rewind's login in the new primary's log",
            || async {
                std::fs::read_to_string(&new.log_path)
                    .unwrap_or_default()
                    .contains(&login)
                    .then_some(())
            },
        )
        .await;
        let log = std::fs::read_to_string(&old.log_path).unwrap();
        assert!(
            log.contains(&format!("pg_rewind read the primary as {REWIND_ROLE}")),
            "{}",
            old.log_tail(40)
        );
        assert!(
            !log.contains("rewinding as the superuser"),
            "{}",
            old.log_tail(40)
        );
    }
    assert!(!pgpass_of(&old).exists(), "a pgpass file was written");
    let st = oc.status().await.unwrap();
    assert_eq!(st.role, Role::Standby);
    assert!(st.running && !st.fenced, "{st:?}");
    assert_eq!(st.wal_receiver_status.as_deref(), Some("streaming"));
    assert_eq!(st.primary, Some(new.pg_address()));
    assert_eq!(st.timeline, Some(2));
    assert_eq!(st.sync_policy, None, "a standby kept its old policy");
    assert!(!old.data_dir.join("toygres.fenced").exists());
    wait_rows(&old, &[1, 2, 3, 4]).await;
    new.connect()
        .await
        .batch_execute("INSERT INTO t VALUES (5)")
        .await
        .unwrap();
    wait_rows(&old, &[1, 2, 3, 4, 5]).await;

    // A standby takes no writes.
    let err = old
        .connect()
        .await
        .batch_execute("INSERT INTO t VALUES (6)")
        .await
        .unwrap_err();
    let message = err
        .as_db_error()
        .map(|e| e.message().to_string())
        .unwrap_or_default();
    assert!(message.contains("read-only"), "{err:?}");
    let names: Vec<String> = new
        .client()
        .status()
        .await
        .unwrap()
        .standbys
        .into_iter()
        .map(|s| s.application_name)
        .collect();
    assert_eq!(names, vec!["rj-0"]);

    // toygres_rewind never logs in with a password, even one it was given, nor without TLS's
    // client certificate; with it, it reaches only the `postgres` database, as no superuser.
    let admin = new.connect().await;
    admin
        .batch_execute(&format!("ALTER ROLE {REWIND_ROLE} PASSWORD 'guessable'"))
        .await
        .unwrap();
    let refused = connect_as(&dir, &new, REWIND_ROLE, "postgres", Some("guessable"), None)
        .await
        .unwrap_err();
    let message = refused
        .as_db_error()
        .map(|e| e.message().to_string())
        .unwrap_or_default();
    assert!(message.contains("certificate"), "{refused:?}");
    admin
        .batch_execute(&format!("ALTER ROLE {REWIND_ROLE} PASSWORD NULL"))
        .await
        .unwrap();
    let own = dir.member_tls("rj-0");
    let rewind_cert = Some((own.as_path(), tls::REWIND_CERT, tls::REWIND_KEY));
    let c = connect_as(&dir, &new, REWIND_ROLE, "postgres", None, rewind_cert)
        .await
        .unwrap();
    let denied = c
        .query_one("SELECT pg_read_file('postgresql.conf')", &[])
        .await
        .unwrap_err();
    let message = denied
        .as_db_error()
        .map(|e| e.message().to_string())
        .unwrap_or_default();
    assert!(message.contains("permission denied"), "{denied:?}");
    assert!(
        connect_as(&dir, &new, REWIND_ROLE, "template1", None, rewind_cert)
            .await
            .is_err()
    );
}

/// A standby that received more WAL than the one promoted cannot follow it. Re-pointing it is
/// refused at once as `diverged` (rather than left waiting for streaming that never starts), and
/// a demotion rewinds it onto the new primary's timeline.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_standby_ahead_of_the_promoted_one_is_refused_as_diverged_then_rewound() {
    let dir = TestDir::new();
    let mut primary = Sidecar::start(&dir, SidecarSpec::primary("dv-0")).await;
    let mut behind = Sidecar::start(&dir, SidecarSpec::standby("dv-1", &primary)).await;
    // dv-2's certificates were issued before the rewind role existed: it has none for it.
    let full = dir.member_tls("dv-2");
    let before = dir.path().join("tls").join("dv-2-before-rewind-role");
    std::fs::create_dir_all(&before).unwrap();
    for (name, _) in tls::MEMBER_FILES {
        if !tls::is_optional(name) {
            std::fs::copy(full.join(name), before.join(name)).unwrap();
        }
    }
    let mut spec = SidecarSpec::standby("dv-2", &primary);
    spec.env
        .push(("TOYGRES_TLS_DIR".into(), before.display().to_string()));
    let ahead = Sidecar::start(&dir, spec).await;
    let p = primary.connect().await;
    p.batch_execute("CREATE TABLE t (x int); INSERT INTO t VALUES (1)")
        .await
        .unwrap();
    wait_rows(&behind, &[1]).await;
    wait_rows(&ahead, &[1]).await;

    // dv-1 is down while row 2 is written: only dv-2 has it when the primary dies.
    behind.stop().await;
    p.batch_execute("INSERT INTO t VALUES (2)").await.unwrap();
    wait_rows(&ahead, &[1, 2]).await;
    drop(p);
    primary.kill_hard().await;

    behind.relaunch();
    let bc = behind.client();
    eventually(WAIT, "dv-1 to run again", || async {
        bc.status().await.ok().filter(|s| s.running).map(|_| ())
    })
    .await;
    let ac = ahead.client();
    let follow_behind = ReplicationRequest {
        primary: Some(behind.pg_address()),
        ..Default::default()
    };
    // A standby is no primary to follow.
    let refused = ac.set_replication(&follow_behind).await.unwrap_err();
    assert_eq!(refused.status(), Some(409), "{refused}");
    assert!(refused.to_string().contains("not a primary"), "{refused}");

    let promoted = bc.promote().await.unwrap();
    assert_eq!(promoted.timeline, 2);

    let refused = ac.set_replication(&follow_behind).await.unwrap_err();
    match &refused {
        toygres_common::sidecar_client::SidecarClientError::Api {
            status,
            code,
            message,
        } => {
            assert_eq!((*status, code.as_str()), (409, "diverged"), "{message}");
            assert!(message.contains("timeline 1"), "{message}");
        }
        other => panic!("expected a 409 diverged, got {other:?}"),
    }
    // Nothing changed: it still names its old primary.
    let st = ac.status().await.unwrap();
    assert_eq!(st.primary, Some(primary.pg_address()));

    let demoted = ac
        .demote(&DemoteRequest {
            primary: behind.pg_address(),
            reclone_if_needed: false,
        })
        .await
        .unwrap();
    assert_eq!(demoted.method, "rewind", "{demoted:?}");
    // Rewound as the superuser, as before the role existed, with a warning; the password's
    // pgpass file is gone again.
    let log = std::fs::read_to_string(&ahead.log_path).unwrap();
    assert!(
        log.contains("no certificate for the toygres_rewind role"),
        "{}",
        ahead.log_tail(40)
    );
    assert!(!pgpass_of(&ahead).exists(), "the pgpass file stayed");
    let st = ac.status().await.unwrap();
    assert_eq!(st.wal_receiver_status.as_deref(), Some("streaming"));
    assert_eq!(st.timeline, Some(2));
    // Row 2 was never on the new primary's timeline; the rewound standby follows it exactly.
    behind
        .connect()
        .await
        .batch_execute("INSERT INTO t VALUES (3)")
        .await
        .unwrap();
    wait_rows(&ahead, &[1, 3]).await;
}
