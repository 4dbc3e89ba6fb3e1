//! High availability when the primary hangs instead of dying, end to end on the local platform:
//! a frozen primary (SIGSTOP of its sidecar and of every Postgres process) under writes is
//! failed over in seconds with no acknowledged commit lost, is killed whole (no stopped process
//! left) and rejoins; the actor's health rounds keep their pace while a member is frozen; and a
//! primary that refuses new connections (its cached ones still working) is failed over too.

#![allow(clippy::unwrap_used)]

mod support;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use support::*;

/// How long a failover, with the old primary's rejoin, may take.
const DEADLINE: Duration = Duration::from_secs(120);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_primary_is_failed_over_killed_whole_and_rejoins_while_rounds_go_on() {
    let (home, api) = start_ha(
        &[NO_RESTARTS],
        "fz",
        serde_json::json!({"cooldown_secs": 0}),
    )
    .await;
    let (rw, password) = connection(&api, "fz").await;
    let writers = Writers::start(3, &rw, &password);
    writers
        .acked_after(Instant::now(), None, "a first write")
        .await;

    // Frozen with failover disabled: the actor holds back, and its rounds keep their pace
    // (health every 500 ms here) instead of waiting on the frozen member.
    let (status, body) = api
        .send(
            reqwest::Method::PUT,
            "/v1/instances/fz/ha",
            Some(serde_json::json!({"failover_enabled": false})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let primary = primary_of(&api, "fz").await.unwrap();
    let port = pg_port(&api, "fz", &primary).await;
    let frozen = Frozen::member(&home, "fz", &primary);
    eventually(DEADLINE, "a failover-disabled event", || async {
        events(&api, "fz")
            .await
            .events
            .iter()
            .any(|e| e.kind == "failover-disabled")
            .then_some(())
    })
    .await;
    let mut ages = Vec::new();
    for _ in 0..12 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        ages.push(last_check_age(&api, "fz", &primary).await);
    }
    assert!(
        ages.iter().all(|age| *age < 3.0),
        "the last check fell behind while {primary} was frozen: {ages:?}"
    );
    let view = members(&api, "fz").await;
    let frozen_view = view.members.iter().find(|m| m.name == primary).unwrap();
    assert_eq!(frozen_view.health, "unhealthy", "{frozen_view:?}");
    assert_eq!(
        primary_of(&api, "fz").await.as_deref(),
        Some(primary.as_str())
    );
    // Killed now (not thawed): the actor fails it over once allowed.
    drop(frozen);
    let (status, body) = api
        .send(
            reqwest::Method::PUT,
            "/v1/instances/fz/ha",
            Some(serde_json::json!({"failover_enabled": true})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let second = eventually(DEADLINE, "a new primary", || async {
        primary_of(&api, "fz").await.filter(|p| *p != primary)
    })
    .await;
    writers
        .acked_after(Instant::now(), Some(port), "a write on the new primary")
        .await;
    wait_all_healthy(&api, &home, "fz", 3).await;

    // Frozen with failover on: failed over in seconds, killed whole, rejoined.
    let port = pg_port(&api, "fz", &second).await;
    let frozen = Frozen::member(&home, "fz", &second);
    let froze = Instant::now();
    let first = writers
        .acked_after(froze, Some(port), "a write elsewhere after the freeze")
        .await;
    eprintln!(
        "freeze of {second}: first commit elsewhere after {:?}",
        first - froze
    );
    let third = primary_of(&api, "fz").await.unwrap();
    assert_ne!(third, second);
    eventually(DEADLINE, "the frozen member killed whole", || async {
        frozen.alive().is_empty().then_some(())
    })
    .await;
    wait_all_healthy(&api, &home, "fz", 3).await;
    let event = events(&api, "fz")
        .await
        .events
        .into_iter()
        .rev()
        .find(|e| e.kind == "failover-automatic")
        .unwrap();
    assert!(
        event.message.contains("no standby heard from"),
        "{}",
        event.message
    );
    drop(frozen);
    let acks = writers.stop().await;
    // Two changes of primary: never back to a superseded one.
    assert_no_commit_lost(&rw, &password, &acks, 2).await;
    assert!(
        !acks.iter().any(|a| a.port == port && a.at > first),
        "the frozen primary acknowledged a write after the failover"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_primary_that_refuses_new_connections_is_failed_over() {
    let (home, api) = start_ha(
        &[NO_RESTARTS],
        "nc",
        serde_json::json!({"cooldown_secs": 0}),
    )
    .await;
    let primary = primary_of(&api, "nc").await.unwrap();
    let port = pg_port(&api, "nc", &primary).await;
    let (rw, password) = connection(&api, "nc").await;
    // Every new connection to the primary fails from now on (the library does not exist);
    // connections already open go on.
    let (through_rw, tls) = pg_config(&rw);
    let mut direct = tokio_postgres::Config::new();
    toygres_common::tls::pg::PgTls::require(&mut direct)
        .host("127.0.0.1")
        .port(u16::try_from(port).unwrap())
        .user(through_rw.get_user().unwrap())
        .dbname("postgres")
        .password(&password)
        .connect_timeout(Duration::from_secs(5));
    let (client, conn) = direct.connect(tls.clone()).await.unwrap();
    tokio::spawn(conn);
    client
        .batch_execute("ALTER SYSTEM SET local_preload_libraries = 'toygres_missing'")
        .await
        .unwrap();
    client
        .batch_execute("SELECT pg_reload_conf()")
        .await
        .unwrap();
    assert!(
        direct.connect(tls.clone()).await.is_err(),
        "a new connection to {primary} still works"
    );
    let next = eventually(DEADLINE, "a failover", || async {
        primary_of(&api, "nc").await.filter(|p| *p != primary)
    })
    .await;
    // rw leads to a server that takes new connections and writes.
    eventually(DEADLINE, "a write through rw", || async {
        let (mut config, tls) = pg_config(&rw);
        config
            .password(&password)
            .connect_timeout(Duration::from_secs(5));
        let (client, connection) = config.connect(tls).await.ok()?;
        tokio::spawn(connection);
        client
            .batch_execute("INSERT INTO acked VALUES (1) ON CONFLICT DO NOTHING")
            .await
            .ok()?;
        let row = client
            .query_one("SELECT inet_server_port()", &[])
            .await
            .ok()?;
        (row.get::<_, i32>(0) != port).then_some(())
    })
    .await;
    let down = events(&api, "nc")
        .await
        .events
        .into_iter()
        .find(|e| e.kind == "member-down" && e.member.as_deref() == Some(primary.as_str()));
    assert!(down.is_some(), "no member-down event for {primary}");
    eprintln!("{primary} refused new connections; {next} took over");
    drop(client);
    drop(home);
}

/// The freeze benchmark (`scripts/bench/freeze.sh`): with the controller's default health and
/// HA settings (cooldown 0), `TRIALS` freezes of the primary of a three-member sync instance
/// under three writers through rw; prints the time from each freeze to the first commit
/// acknowledged by another server. Ignored in the test suite.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a benchmark: run scripts/bench/freeze.sh"]
async fn bench_freeze_failover() {
    let trials: usize = std::env::var("TRIALS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(8);
    let (home, api) = start_ha(
        &[("TOYGRES_HEALTH_INTERVAL_MS", "1000"), NO_RESTARTS],
        "bench",
        serde_json::json!({"cooldown_secs": 0}),
    )
    .await;
    let (rw, password) = connection(&api, "bench").await;
    let writers = Writers::start(3, &rw, &password);
    writers
        .acked_after(Instant::now(), None, "a first write")
        .await;
    let mut times = Vec::new();
    for trial in 0..trials {
        wait_all_healthy(&api, &home, "bench", 3).await;
        let primary = primary_of(&api, "bench").await.unwrap();
        let port = pg_port(&api, "bench", &primary).await;
        // A hang does not wait for the health loop: spread the freezes over its interval.
        let phase = u64::try_from(trial * 379 % 1000).unwrap();
        tokio::time::sleep(Duration::from_millis(phase)).await;
        let frozen = Frozen::member(&home, "bench", &primary);
        let froze = Instant::now();
        let first = writers
            .acked_after(froze, Some(port), "a commit elsewhere after the freeze")
            .await;
        times.push(first - froze);
        println!(
            "BENCH trial {trial}: {primary} frozen, first commit elsewhere after {:?}",
            first - froze
        );
        // Fails the benchmark if any process of the frozen member is left.
        eventually(DEADLINE, "the frozen member killed whole", || async {
            frozen.alive().is_empty().then_some(())
        })
        .await;
    }
    wait_all_healthy(&api, &home, "bench", 3).await;
    let acks = writers.stop().await;
    let present: BTreeSet<i64> = connect(&rw, &password)
        .await
        .query("SELECT id FROM acked", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    let lost = acks.iter().filter(|a| !present.contains(&a.id)).count();
    times.sort();
    let ms = |d: &Duration| d.as_secs_f64() * 1000.0;
    println!(
        "BENCH freeze-to-first-commit-elsewhere: n={} median={:.0}ms min={:.0}ms max={:.0}ms all=[{}]",
        times.len(),
        ms(&times[times.len() / 2]),
        ms(&times[0]),
        ms(times.last().unwrap()),
        times.iter().map(|t| format!("{:.0}", ms(t))).collect::<Vec<_>>().join(",")
    );
    println!(
        "BENCH acknowledged writes={} lost={lost}; every frozen member was killed whole",
        acks.len()
    );
}
