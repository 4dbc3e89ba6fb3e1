//! Rejoin after a failover: the old primary was killed with -9 (sidecar and Postgres), fenced by
//! a marker in its data directory, and a standby was promoted. Started again, the old member stays
//! stopped; demoted to the new primary it is rewound, streams, and its fence is lifted.

use std::time::{Duration, Instant};

use toygres_common::sidecar_api::{
    DemoteRequest, ReplicationRequest, Role, SyncMethod, SyncMode, SyncPolicy,
};
use toygres_tests::{eventually, Sidecar, SidecarSpec, TestDir};

const WAIT: Duration = Duration::from_secs(60);

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

    let promoted = new.client().promote().await.unwrap();
    assert_eq!(promoted.timeline, 2);
    let st = new.client().status().await.unwrap();
    assert_eq!(st.sync_policy, None, "the new primary inherited a policy");
    wait_rows(&new, &[1, 2, 3]).await;
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
}

/// A standby that received more WAL than the one promoted cannot follow it. Re-pointing it is
/// refused at once as `diverged` (rather than left waiting for streaming that never starts), and
/// a demotion rewinds it onto the new primary's timeline.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_standby_ahead_of_the_promoted_one_is_refused_as_diverged_then_rewound() {
    let dir = TestDir::new();
    let mut primary = Sidecar::start(&dir, SidecarSpec::primary("dv-0")).await;
    let mut behind = Sidecar::start(&dir, SidecarSpec::standby("dv-1", &primary)).await;
    let ahead = Sidecar::start(&dir, SidecarSpec::standby("dv-2", &primary)).await;
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
