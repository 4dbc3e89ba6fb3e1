//! Chaos cases beyond the primary's own failure, end to end on the local platform, each under
//! writes from several clients through rw (every write records the server that took it):
//!
//! - a synchronous standby killed (SIGKILL of its sidecar and postmaster), then the other one
//!   frozen (SIGSTOP of its sidecar and Postgres): commits go on through the standby that
//!   remains (`FIRST 1` of the two), the primary never changes, and both come back;
//! - the controller SIGKILLed in the middle of an automatic failover: after its restart the
//!   failover completes, one primary takes the writes.
//!
//! After each: no acknowledged commit lost, in commit order the server changed at most once per
//! failover (never two servers acknowledging), and recovery within its budget. Each prints a
//! `chaos |` row for `scripts/chaos/run.sh`.

#![allow(clippy::unwrap_used)]

mod support;

use std::time::{Duration, Instant};

use support::*;

/// How long commits may stall when a standby fails: a killed one is replaced at once, a frozen
/// one once the primary's `wal_sender_timeout` (2 s) ends its stream.
const STANDBY_BUDGET: Duration = Duration::from_secs(5);

/// How long a failover interrupted by a controller restart may take to a first commit
/// elsewhere (the controller's own start-up included).
const RESTART_BUDGET: Duration = Duration::from_secs(60);

/// The standby whose flush confirms the primary's commits now (`sync_state = 'sync'`).
async fn sync_standby(api: &Api, primary: &str) -> String {
    let client = connect_member(api, "sb", primary).await;
    eventually(Duration::from_secs(30), "a synchronous standby", || async {
        client
            .query_opt(
                "SELECT application_name FROM pg_stat_replication WHERE sync_state = 'sync'",
                &[],
            )
            .await
            .ok()
            .flatten()
            .map(|row| row.get::<_, String>(0))
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commits_go_on_when_a_sync_standby_is_killed_or_frozen() {
    let (home, api) = start_ha(&[], "sb", serde_json::json!({})).await;
    let (rw, password) = connection(&api, "sb").await;
    let writers = Writers::start(3, &rw, &password);
    writers.acked_after(Instant::now(), None, "a write").await;
    let primary = primary_of(&api, "sb").await.unwrap();
    let port = pg_port(&api, "sb", &primary).await;
    let mut took = Vec::new();

    for fault in ["kill -9", "SIGSTOP"] {
        // Writes are flowing; the fault hits the standby that confirms the commits now.
        writers.acked_after(Instant::now(), None, "a write").await;
        let standby = sync_standby(&api, &primary).await;
        let frozen = if fault == "kill -9" {
            kill_member(&home, "sb", &standby);
            None
        } else {
            Some(Frozen::member(&home, "sb", &standby))
        };
        let fault_at = Instant::now();
        // A commit that began after the fault (later than the slowest in-flight one could
        // return), then a second to see the pace again.
        let resumed = writers
            .acked_after(
                fault_at + Duration::from_millis(200),
                None,
                &format!("a commit after the {fault} of {standby}"),
            )
            .await;
        let until = resumed + Duration::from_secs(1);
        tokio::time::sleep_until(until.into()).await;
        let stall = longest_pause(&writers.acks(), fault_at, until);
        eprintln!("{fault} of the sync standby {standby}: the longest pause in commits {stall:?}");
        assert!(
            stall <= STANDBY_BUDGET,
            "commits stalled {stall:?} after the {fault} of {standby}\n{}",
            home.logs()
        );
        assert_eq!(
            primary_of(&api, "sb").await.as_deref(),
            Some(primary.as_str())
        );
        if let Some(frozen) = frozen {
            frozen.thaw();
        }
        // Both standbys stream again (the killed one restarted by the platform's supervision).
        wait_all_healthy(&api, &home, "sb", 3).await;
        took.push((fault, standby, stall));
    }
    let acks = writers.stop().await;
    assert_no_commit_lost(&rw, &password, &acks, 0).await;
    assert!(
        acks.iter().all(|a| a.port == port),
        "a write left {primary}"
    );
    for (fault, standby, stall) in took {
        chaos_row(
            &format!("{fault} of the sync standby ({standby})"),
            "commits go on, same primary",
            stall,
            acks.len(),
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failover_interrupted_by_a_controller_kill_completes_after_the_restart() {
    let (mut home, api) = start_ha(
        &[NO_RESTARTS],
        "ck",
        serde_json::json!({"cooldown_secs": 0}),
    )
    .await;
    let (rw, password) = connection(&api, "ck").await;
    let writers = Writers::start(3, &rw, &password);
    writers.acked_after(Instant::now(), None, "a write").await;
    let primary = primary_of(&api, "ck").await.unwrap();
    let port = pg_port(&api, "ck", &primary).await;
    let cms = home.cms_client().await;

    kill_member(&home, "ck", &primary);
    let fault_at = Instant::now();
    // The controller dies as soon as the automatic failover is recorded running.
    eventually(Duration::from_secs(60), "an automatic failover", || async {
        let running: i64 = cms
            .query_one(
                "SELECT count(*) FROM toygres.operations \
                 WHERE instance = 'ck' AND kind = 'auto-failover'",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        (running > 0).then_some(())
    })
    .await;
    home.kill_controller();
    let killed_after = fault_at.elapsed();
    let api = home.start_with_env(&[NO_RESTARTS]).await;

    let first = writers
        .acked_after(fault_at, Some(port), "a write on another server")
        .await;
    let took = first - fault_at;
    eprintln!(
        "controller killed {killed_after:?} into the failover; first commit elsewhere after \
         {took:?}"
    );
    assert!(
        took <= RESTART_BUDGET,
        "first commit elsewhere after {took:?}"
    );
    wait_all_healthy(&api, &home, "ck", 3).await;
    let new_primary = primary_of(&api, "ck").await.unwrap();
    assert_ne!(new_primary, primary);
    let acks = writers.stop().await;
    assert_no_commit_lost(&rw, &password, &acks, 1).await;
    let servers: std::collections::BTreeSet<i32> = acks.iter().map(|a| a.port).collect();
    assert!(servers.len() <= 2, "writes taken by {servers:?}");
    // The CMS may have restarted with the controller: ask it anew.
    let cms = home.cms_client().await;
    let outcomes = eventually(Duration::from_secs(60), "the failover to end", || async {
        let rows = cms
            .query(
                "SELECT status FROM toygres.operations \
                 WHERE instance = 'ck' AND kind = 'auto-failover'",
                &[],
            )
            .await
            .unwrap();
        let statuses: Vec<String> = rows.iter().map(|r| r.get(0)).collect();
        statuses
            .iter()
            .all(|s| s != "running" && s != "pending")
            .then_some(statuses)
    })
    .await;
    assert!(
        outcomes.iter().any(|s| s == "succeeded") && !outcomes.iter().any(|s| s == "failed"),
        "automatic failovers: {outcomes:?}"
    );
    chaos_row(
        "controller SIGKILL mid-failover (primary kill -9)",
        "failover completes after the restart",
        took,
        acks.len(),
    );
}
