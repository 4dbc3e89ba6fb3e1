//! The local platform's ro endpoint.
//!
//! - A standby whose port refuses connections: its breaker opens (new connections stop trying
//!   it), ro falls back to the primary while no standby can take a connection, the breaker
//!   half-opens after the cool-off (one trial), and closes again once the port answers. Real
//!   TCP servers stand in for the members: the breaker acts on connects, before any Postgres
//!   byte.
//! - A real standby whose replay is paused leaves ro once over the instance's lag bound (ro
//!   falls back to the primary, or refuses when told to; `toygres get` and the metrics say so)
//!   and comes back after catching up.

#![allow(clippy::unwrap_used)]

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use toygres_common::ro_api::{RoBackendState, RoEndpointView, RoSettings};
use toygres_controller::endpoints::{
    BreakerSettings, BreakerState, EndpointRole, InstanceProxy, ProxyTargets,
};

/// A server on `listener` that greets every connection with `name`.
fn serve(listener: TcpListener, name: &'static str) -> JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            let Ok((mut socket, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let _ = socket.write_all(name.as_bytes()).await;
                let mut buf = [0u8; 16];
                let _ = socket.read(&mut buf).await;
            });
        }
    })
}

/// Which member a new ro connection reaches.
async fn greeting(endpoint: SocketAddr) -> Option<String> {
    let mut stream = TcpStream::connect(endpoint).await.unwrap();
    let mut buf = [0u8; 2];
    let read = tokio::time::timeout(Duration::from_secs(10), stream.read_exact(&mut buf)).await;
    match read {
        Ok(Ok(_)) => Some(String::from_utf8_lossy(&buf).into_owned()),
        _ => None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refusing_standby_opens_its_breaker_ro_falls_back_and_the_breaker_half_opens() {
    let primary = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let primary_addr = primary.local_addr().unwrap();
    let _primary = serve(primary, "p0");
    // The standby's port: bound to learn a free port, then closed so it refuses.
    let standby_addr = {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        listener.local_addr().unwrap()
    };
    let cool_off = Duration::from_secs(2);
    let proxy = InstanceProxy::start_with_breakers(
        "db",
        TcpListener::bind("127.0.0.1:0").await.unwrap(),
        TcpListener::bind("127.0.0.1:0").await.unwrap(),
        ProxyTargets {
            rw: Some(primary_addr),
            ro: vec![standby_addr],
            ..Default::default()
        },
        BreakerSettings {
            failures_to_open: 2,
            cool_off,
        },
    )
    .unwrap();
    let ro = proxy.addr(EndpointRole::Ro);

    // Two refused connects open the breaker; every client still gets the primary.
    for _ in 0..2 {
        assert_eq!(greeting(ro).await.as_deref(), Some("p0"));
    }
    assert_eq!(proxy.breaker_states(), [(standby_addr, BreakerState::Open)]);
    let stats = proxy.stats(EndpointRole::Ro);
    assert_eq!(stats.upstream_failures, 2);
    assert_eq!(stats.fallbacks_to_primary, 2);
    // While open, new connections do not try the standby at all.
    for _ in 0..5 {
        assert_eq!(greeting(ro).await.as_deref(), Some("p0"));
    }
    let stats = proxy.stats(EndpointRole::Ro);
    assert_eq!(stats.upstream_failures, 2, "an open breaker was tried");
    assert_eq!(stats.fallbacks_to_primary, 7);

    // After the cool-off it is half-open: one trial, which fails (still refusing) and
    // re-opens it.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while proxy.breaker_states() != [(standby_addr, BreakerState::HalfOpen)] {
        assert!(tokio::time::Instant::now() < deadline, "never half-open");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(greeting(ro).await.as_deref(), Some("p0"));
    assert_eq!(proxy.stats(EndpointRole::Ro).upstream_failures, 3);
    assert_eq!(proxy.breaker_states(), [(standby_addr, BreakerState::Open)]);

    // The standby answers again: the next trial closes the breaker and ro leads to it.
    let standby = TcpListener::bind(standby_addr).await.unwrap();
    let _standby = serve(standby, "s1");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        if greeting(ro).await.as_deref() == Some("s1") {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "ro never came back to the standby"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        proxy.breaker_states(),
        [(standby_addr, BreakerState::Closed)]
    );
    for _ in 0..3 {
        assert_eq!(greeting(ro).await.as_deref(), Some("s1"));
    }
    proxy.stop().await;
}

/// Whether a new superuser connection through `uri` lands on a standby.
async fn lands_on_standby(uri: &str, password: &str) -> Option<bool> {
    let (mut config, tls) = support::pg_config(uri);
    config
        .password(password)
        .connect_timeout(Duration::from_secs(5));
    let (client, connection) = config.connect(tls).await.ok()?;
    tokio::spawn(connection);
    let row = client
        .query_one("SELECT pg_is_in_recovery()", &[])
        .await
        .ok()?;
    Some(row.get(0))
}

/// The instance's ro view as `GET /v1/instances/{name}` shows it.
async fn ro_view(api: &support::Api, name: &str) -> Option<RoEndpointView> {
    let detail: toygres_common::controller_api::InstanceDetail =
        api.get(&format!("/v1/instances/{name}")).await;
    detail.ro
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_standby_with_replay_paused_leaves_ro_and_comes_back_after_catching_up() {
    use support::*;
    use toygres_common::controller_api::{InstanceDetail, OperationAccepted};

    let mut home = Home::new();
    let api = home.start().await;
    let accepted: OperationAccepted = api.create("lagdb", 1, "async").await;
    let created = api.wait_operation(&home, &accepted.operation_id).await;
    assert_eq!(created.status, "succeeded", "{created:?}");
    // Bad values are refused and change nothing.
    let (status, text) = api
        .send(
            reqwest::Method::PUT,
            "/v1/instances/lagdb/ro",
            Some(serde_json::json!({"reenter_percent": 150})),
        )
        .await;
    assert_eq!(status, 400, "{text}");
    // The rule through the CLI: a bound of 64 KiB, back in under 32 KiB.
    let set = home.cli(&[
        "ro",
        "set",
        "lagdb",
        "--max-lag-bytes",
        "65536",
        "-o",
        "json",
    ]);
    assert!(set.status.success(), "{set:?}");
    let settings: RoSettings = serde_json::from_slice(&set.stdout).unwrap();
    assert_eq!(settings.max_lag_bytes, Some(65536));
    assert_eq!(settings.reenter_percent, 50);
    let shown: RoSettings = api.get("/v1/instances/lagdb/ro").await;
    assert_eq!(shown, settings);

    let detail: InstanceDetail = api.get("/v1/instances/lagdb").await;
    let connection = detail.connection.unwrap();
    let password = std::fs::read_to_string(connection.password_location.unwrap())
        .unwrap()
        .trim()
        .to_string();
    let standby_address = detail
        .members
        .iter()
        .find(|m| m.name == "lagdb-1")
        .and_then(|m| m.address.clone())
        .unwrap();
    // The same TLS settings as the printed URIs (the instance's CA file).
    let tls_params = connection.rw.split_once('?').map_or("", |(_, q)| q);
    let standby_uri = format!("postgresql://postgres@{standby_address}/postgres?{tls_params}");
    let ro = connection.ro.clone();
    let wait = Duration::from_secs(60);
    eventually(wait, "ro to lead to the standby", || async {
        lands_on_standby(&ro, &password).await.filter(|s| *s)
    })
    .await;

    // Replay paused while the primary writes a few MB: the standby leaves ro, which falls back
    // to the primary.
    let standby = connect(&standby_uri, &password).await;
    standby
        .batch_execute("SELECT pg_wal_replay_pause()")
        .await
        .unwrap();
    let primary = connect(&connection.rw, &password).await;
    primary
        .batch_execute(
            "CREATE TABLE filler AS SELECT g, repeat('x', 200) AS pad FROM generate_series(1, 20000) g",
        )
        .await
        .unwrap();
    let left = std::time::Instant::now();
    eventually(wait, "ro to leave the lagging standby", || async {
        lands_on_standby(&ro, &password).await.filter(|s| !*s)
    })
    .await;
    eprintln!(
        "ro left the paused standby {:?} after the write",
        left.elapsed()
    );
    let view = eventually(wait, "get to show the standby out", || async {
        ro_view(&api, "lagdb").await.filter(|v| {
            v.backends
                .iter()
                .any(|b| b.member == "lagdb-1" && b.state == RoBackendState::LagOverBound)
        })
    })
    .await;
    assert!(view.fallback_to_primary, "{view:?}");
    let shown = home.cli(&["get", "lagdb"]);
    let table = String::from_utf8_lossy(&shown.stdout);
    assert!(
        table.contains("falls back to the primary") && table.contains("out: lag over bound"),
        "{table}"
    );
    // The fleet summary lists the paused standby's lag, and the healthy instance.
    let stats = home.cli(&["stats", "-o", "json"]);
    assert!(stats.status.success(), "{stats:?}");
    let stats: toygres_common::stats_api::FleetStats =
        serde_json::from_slice(&stats.stdout).unwrap();
    assert!(
        stats
            .largest_lags
            .first()
            .is_some_and(|l| l.member == "lagdb-1" && l.lag_bytes > 65536),
        "{stats:?}"
    );
    assert_eq!(stats.failovers_24h, 0, "{stats:?}");
    assert!(
        stats
            .instances_by_health
            .iter()
            .map(|(_, n)| n)
            .sum::<i64>()
            == 1,
        "{stats:?}"
    );
    let table = home.cli(&["stats"]);
    assert!(
        String::from_utf8_lossy(&table.stdout).contains("lagdb-1"),
        "{table:?}"
    );
    let metrics = api
        .http
        .get(format!("{}/metrics", api.url))
        .send()
        .await
        .unwrap();
    let metrics = metrics.text().await.unwrap();
    assert!(
        metrics.contains("toygres_controller_ro_endpoints{leads_to=\"primary\"} 1"),
        "{metrics}"
    );

    // Fallback refuse: with the standby still out, ro refuses instead of leading to the primary.
    let (status, text) = api
        .send(
            reqwest::Method::PUT,
            "/v1/instances/lagdb/ro",
            Some(serde_json::json!({"fallback": "refuse"})),
        )
        .await;
    assert_eq!(status, 200, "{text}");
    eventually(wait, "ro to refuse", || async {
        lands_on_standby(&ro, &password)
            .await
            .is_none()
            .then_some(())
    })
    .await;
    let (status, text) = api
        .send(
            reqwest::Method::PUT,
            "/v1/instances/lagdb/ro",
            Some(serde_json::json!({"fallback": "primary"})),
        )
        .await;
    assert_eq!(status, 200, "{text}");

    // Replay resumed: it catches up and comes back into ro.
    standby
        .batch_execute("SELECT pg_wal_replay_resume()")
        .await
        .unwrap();
    let resumed = std::time::Instant::now();
    eventually(wait, "ro to lead to the standby again", || async {
        lands_on_standby(&ro, &password).await.filter(|s| *s)
    })
    .await;
    eprintln!(
        "ro came back to the standby {:?} after resuming",
        resumed.elapsed()
    );
    let view = ro_view(&api, "lagdb").await.unwrap();
    assert!(!view.fallback_to_primary, "{view:?}");
    let events: toygres_common::controller_api::EventList =
        api.get("/v1/instances/lagdb/events").await;
    assert!(
        events.events.iter().any(|e| e.kind == "lag-high"),
        "{events:?}"
    );
    assert!(
        events.events.iter().any(|e| e.kind == "lag-ok"),
        "{events:?}"
    );
}
