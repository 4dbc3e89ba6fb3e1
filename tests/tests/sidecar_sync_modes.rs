//! Synchronous replication policies (`PUT /v1/replication {"sync": …}`) against real Postgres
//! servers: `strict` keeps commits waiting for a missing standby, `degrade` releases them after
//! its timeout and restores synchronous replication when the standby is back, `ANY n` quorum,
//! validation, and persistence across a sidecar restart.

use std::time::{Duration, Instant};

use tokio::task::JoinHandle;
use toygres_common::sidecar_api::{ReplicationRequest, SyncMethod, SyncMode, SyncPolicy};
use toygres_tests::{eventually, Sidecar, SidecarSpec, TestDir};

const WAIT: Duration = Duration::from_secs(60);

fn policy(mode: SyncMode, method: SyncMethod, num_sync: u32, standbys: &[&str]) -> SyncPolicy {
    SyncPolicy {
        mode,
        method,
        num_sync,
        standbys: standbys.iter().map(|s| s.to_string()).collect(),
        degrade_timeout_secs: 2,
    }
}

async fn set_policy(s: &Sidecar, p: &SyncPolicy) {
    s.client()
        .set_replication(&ReplicationRequest {
            sync: Some(p.clone()),
            ..Default::default()
        })
        .await
        .unwrap_or_else(|e| panic!("set the policy {p:?}: {e}"));
}

/// Waits until every named standby has `sync_state` `want` on `primary`.
async fn wait_sync_state(primary: &Sidecar, names: &[&str], want: &str) {
    let pc = primary.client();
    let what = format!("{names:?} to be {want} on {}", primary.member);
    eventually(WAIT, &what, || async {
        let st = pc.status().await.ok()?;
        names
            .iter()
            .all(|n| {
                st.standbys
                    .iter()
                    .any(|s| s.application_name == *n && s.sync_state == want)
            })
            .then_some(())
    })
    .await
}

/// Starts `INSERT INTO t VALUES (x)` on its own connection; the task ends when it commits.
async fn insert_in_background(primary: &Sidecar, x: i32) -> JoinHandle<()> {
    let c = primary.connect().await;
    tokio::spawn(async move {
        c.execute("INSERT INTO t VALUES ($1)", &[&x])
            .await
            .expect("insert");
    })
}

/// Waits until some backend waits for a synchronous standby's confirmation.
async fn wait_commit_blocked(primary: &Sidecar) {
    let c = primary.connect().await;
    eventually(
        WAIT,
        "a commit waiting for a synchronous standby",
        || async {
            let n: i64 = c
                .query_one(
                    "SELECT count(*) FROM pg_stat_activity WHERE wait_event = 'SyncRep'",
                    &[],
                )
                .await
                .ok()?
                .get(0);
            (n > 0).then_some(())
        },
    )
    .await
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

async fn metrics(s: &Sidecar) -> String {
    s.http()
        .get(format!("{}/metrics", s.api_url()))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
}

async fn create_table(primary: &Sidecar) {
    primary
        .connect()
        .await
        .batch_execute("CREATE TABLE t (x int)")
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strict_mode_blocks_a_commit_until_the_sync_standby_returns() {
    let dir = TestDir::new();
    let primary = Sidecar::start(&dir, SidecarSpec::primary("st-0")).await;
    let mut standby = Sidecar::start(&dir, SidecarSpec::standby("st-1", &primary)).await;
    create_table(&primary).await;
    let p = policy(SyncMode::Strict, SyncMethod::First, 1, &["st-1"]);
    set_policy(&primary, &p).await;
    wait_sync_state(&primary, &["st-1"], "sync").await;
    let st = primary.client().status().await.unwrap();
    assert_eq!(st.sync_policy, Some(p));
    assert!(!st.sync_degraded);
    assert_eq!(
        st.synchronous_standby_names.as_deref(),
        Some("FIRST 1 (\"st-1\")")
    );

    assert_eq!(standby.stop().await, Some(0));
    let mut commit = insert_in_background(&primary, 1).await;
    wait_commit_blocked(&primary).await;
    // Strict never gives up on its own: still waiting well past any degrade timeout.
    assert!(
        tokio::time::timeout(Duration::from_secs(4), &mut commit)
            .await
            .is_err(),
        "the commit returned without its synchronous standby"
    );
    let st = primary.client().status().await.unwrap();
    assert!(!st.sync_degraded);

    standby.restart_process().await;
    tokio::time::timeout(WAIT, commit)
        .await
        .expect("the commit to complete once the standby is back")
        .unwrap();
    wait_rows(&standby, &[1]).await;
    assert_eq!(
        metric(&metrics(&primary).await, "toygres_sync_degrade_total"),
        Some(0.0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn degrade_mode_releases_blocked_commits_and_restores_sync_when_the_standby_returns() {
    let dir = TestDir::new();
    let primary = Sidecar::start(&dir, SidecarSpec::primary("dg-0")).await;
    let mut standby = Sidecar::start(&dir, SidecarSpec::standby("dg-1", &primary)).await;
    create_table(&primary).await;
    let p = policy(SyncMode::Degrade, SyncMethod::First, 1, &["dg-1"]);
    set_policy(&primary, &p).await;
    wait_sync_state(&primary, &["dg-1"], "sync").await;
    let m = metrics(&primary).await;
    assert_eq!(metric(&m, "toygres_sync_degraded"), Some(0.0), "{m}");

    // The standby dies with a commit waiting for it: the degrade releases it.
    let lost = Instant::now();
    assert_eq!(standby.stop().await, Some(0));
    let commit = insert_in_background(&primary, 1).await;
    wait_commit_blocked(&primary).await;
    tokio::time::timeout(Duration::from_secs(p.degrade_timeout_secs + 10), commit)
        .await
        .expect("the degrade to release the waiting commit")
        .unwrap();
    let took = lost.elapsed();
    // The watcher looks every 250 ms, so the shortage may have begun that much before `lost`.
    assert!(
        took >= Duration::from_secs(p.degrade_timeout_secs) - Duration::from_millis(500),
        "released after {took:?}, before the {} s timeout",
        p.degrade_timeout_secs
    );
    let st = primary.client().status().await.unwrap();
    assert!(st.sync_degraded, "{st:?}");
    assert_eq!(st.sync_policy, Some(p.clone()));
    assert_eq!(st.synchronous_standby_names.as_deref(), Some(""));
    let m = metrics(&primary).await;
    assert_eq!(metric(&m, "toygres_sync_degraded"), Some(1.0), "{m}");
    assert_eq!(metric(&m, "toygres_sync_degrade_total"), Some(1.0), "{m}");
    // Degraded: commits do not wait at all.
    tokio::time::timeout(
        Duration::from_secs(5),
        primary
            .connect()
            .await
            .batch_execute("INSERT INTO t VALUES (2)"),
    )
    .await
    .expect("a commit while degraded to return at once")
    .unwrap();

    // The standby comes back and catches up: synchronous again.
    standby.restart_process().await;
    wait_sync_state(&primary, &["dg-1"], "sync").await;
    let st = primary.client().status().await.unwrap();
    assert!(!st.sync_degraded, "{st:?}");
    assert_eq!(
        st.synchronous_standby_names.as_deref(),
        Some("FIRST 1 (\"dg-1\")")
    );
    let m = metrics(&primary).await;
    assert_eq!(metric(&m, "toygres_sync_degraded"), Some(0.0), "{m}");
    assert_eq!(metric(&m, "toygres_sync_restore_total"), Some(1.0), "{m}");
    wait_rows(&standby, &[1, 2]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn any_1_quorum_keeps_committing_with_one_of_two_standbys_stopped() {
    let dir = TestDir::new();
    let primary = Sidecar::start(&dir, SidecarSpec::primary("qa-0")).await;
    let mut a = Sidecar::start(&dir, SidecarSpec::standby("qa-1", &primary)).await;
    let mut b = Sidecar::start(&dir, SidecarSpec::standby("qa-2", &primary)).await;
    create_table(&primary).await;
    let p = policy(SyncMode::Strict, SyncMethod::Any, 1, &["qa-1", "qa-2"]);
    set_policy(&primary, &p).await;
    wait_sync_state(&primary, &["qa-1", "qa-2"], "quorum").await;
    assert_eq!(
        primary
            .client()
            .status()
            .await
            .unwrap()
            .synchronous_standby_names
            .as_deref(),
        Some("ANY 1 (\"qa-1\", \"qa-2\")")
    );

    // One of the two is enough.
    assert_eq!(a.stop().await, Some(0));
    tokio::time::timeout(
        Duration::from_secs(10),
        primary
            .connect()
            .await
            .batch_execute("INSERT INTO t VALUES (1)"),
    )
    .await
    .expect("a commit with one quorum standby left")
    .unwrap();
    wait_rows(&b, &[1]).await;

    // None left: strict quorum waits, and the first standby back releases the commit.
    assert_eq!(b.stop().await, Some(0));
    let commit = insert_in_background(&primary, 2).await;
    wait_commit_blocked(&primary).await;
    assert!(!commit.is_finished());
    a.restart_process().await;
    tokio::time::timeout(WAIT, commit)
        .await
        .expect("the commit to complete once a quorum standby is back")
        .unwrap();
    wait_rows(&a, &[1, 2]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_policies_are_refused_and_a_hand_set_value_clears_the_policy() {
    let dir = TestDir::new();
    let primary = Sidecar::start(&dir, SidecarSpec::primary("bp-0")).await;
    let standby = Sidecar::start(&dir, SidecarSpec::standby("bp-1", &primary)).await;
    let pc = primary.client();
    let good = policy(SyncMode::Degrade, SyncMethod::First, 1, &["bp-1"]);
    let bad = [
        (
            SyncPolicy {
                num_sync: 0,
                ..good.clone()
            },
            "num_sync",
        ),
        (
            SyncPolicy {
                num_sync: 2,
                ..good.clone()
            },
            "num_sync",
        ),
        (
            SyncPolicy {
                standbys: vec!["BP_1".into()],
                ..good.clone()
            },
            "standbys",
        ),
        (
            SyncPolicy {
                standbys: vec!["bp-1\", \"x".into()],
                ..good.clone()
            },
            "standbys",
        ),
        (
            SyncPolicy {
                standbys: vec!["bp-0".into()],
                ..good.clone()
            },
            "itself",
        ),
        (
            SyncPolicy {
                degrade_timeout_secs: 0,
                ..good.clone()
            },
            "degrade_timeout_secs",
        ),
    ];
    for (p, why) in bad {
        let err = pc
            .set_replication(&ReplicationRequest {
                sync: Some(p.clone()),
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(err.status(), Some(400), "{p:?}: {err}");
        assert!(err.to_string().contains(why), "{p:?}: {err}");
    }
    // Both a policy and a hand-set value, and an unknown mode.
    let err = pc
        .set_replication(&ReplicationRequest {
            sync: Some(good.clone()),
            synchronous_standby_names: Some("bp-1".into()),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.status(), Some(400), "{err}");
    let resp = primary
        .http()
        .put(format!("{}/v1/replication", primary.api_url()))
        .bearer_auth(toygres_tests::API_TOKEN)
        .json(&serde_json::json!({"sync": {"mode": "sometimes", "standbys": ["bp-1"]}}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 400);
    let body: serde_json::Value = resp.json().await.unwrap();
    assert!(body["error"]["message"].is_string(), "{body}");
    let st = pc.status().await.unwrap();
    assert_eq!(st.sync_policy, None, "a refused policy was kept");
    assert_eq!(st.synchronous_standby_names.as_deref(), Some(""));

    // A policy belongs on the primary.
    let err = standby
        .client()
        .set_replication(&ReplicationRequest {
            sync: Some(policy(SyncMode::Strict, SyncMethod::First, 1, &["bp-0"])),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.status(), Some(409), "{err}");

    // Setting synchronous_standby_names by hand replaces the policy.
    set_policy(&primary, &good).await;
    assert_eq!(pc.status().await.unwrap().sync_policy, Some(good));
    pc.set_replication(&ReplicationRequest {
        synchronous_standby_names: Some("\"bp-1\"".into()),
        ..Default::default()
    })
    .await
    .unwrap();
    assert_eq!(pc.status().await.unwrap().sync_policy, None);
    // A reload takes effect when Postgres's processes handle it: poll until the value shows.
    eventually(
        std::time::Duration::from_secs(10),
        "the hand-set synchronous_standby_names to take effect",
        || async {
            let st = pc.status().await.ok()?;
            (st.synchronous_standby_names.as_deref() == Some("\"bp-1\"")).then_some(())
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_policy_survives_a_sidecar_restart() {
    let dir = TestDir::new();
    let mut primary = Sidecar::start(&dir, SidecarSpec::primary("rs-0")).await;
    let _standby = Sidecar::start(&dir, SidecarSpec::standby("rs-1", &primary)).await;
    let p = policy(SyncMode::Degrade, SyncMethod::Any, 1, &["rs-1"]);
    set_policy(&primary, &p).await;
    wait_sync_state(&primary, &["rs-1"], "quorum").await;

    assert_eq!(primary.stop().await, Some(0));
    primary.restart_process().await;
    let st = primary.client().status().await.unwrap();
    assert_eq!(st.sync_policy, Some(p));
    assert!(!st.sync_degraded);
    assert_eq!(
        st.synchronous_standby_names.as_deref(),
        Some("ANY 1 (\"rs-1\")")
    );
    wait_sync_state(&primary, &["rs-1"], "quorum").await;
}
