//! The sidecar's Patroni-compatible health checks, against a real primary, a streaming standby
//! and a standby whose replay is paused: status codes and body fields as Patroni answers them,
//! without a token.

use std::time::Duration;

use serde_json::Value;
use toygres_tests::{eventually, Sidecar, SidecarSpec, TestDir};

const WAIT: Duration = Duration::from_secs(60);

/// `GET path` without a token: the status code and the JSON body.
async fn probe(sidecar: &Sidecar, path: &str) -> (u16, Value) {
    let response = sidecar
        .http()
        .get(format!("{}{path}", sidecar.api_url()))
        .send()
        .await
        .unwrap();
    let code = response.status().as_u16();
    let body = response.json().await.unwrap_or(Value::Null);
    (code, body)
}

async fn codes(sidecar: &Sidecar, paths: &[&str]) -> Vec<u16> {
    let mut out = Vec::new();
    for path in paths {
        out.push(probe(sidecar, path).await.0);
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn patroni_routes_answer_as_patroni_for_a_primary_a_standby_and_a_lagging_standby() {
    let dir = TestDir::new();
    let primary = Sidecar::start(&dir, SidecarSpec::primary("pat-0")).await;
    let standby = Sidecar::start(&dir, SidecarSpec::standby("pat-1", &primary)).await;
    let routes = [
        "/primary",
        "/read-write",
        "/replica",
        "/read-only",
        "/health",
        "/liveness",
        "/readiness",
    ];

    // The primary: writable, so everything but /replica.
    assert_eq!(
        codes(&primary, &routes).await,
        [200, 200, 503, 200, 200, 200, 200]
    );
    let (_, body) = probe(&primary, "/primary").await;
    assert_eq!(body["state"], "running");
    assert_eq!(body["role"], "primary");
    assert_eq!(body["timeline"], 1);
    assert!(body["xlog"]["location"].as_u64().unwrap() > 0, "{body}");
    assert!(
        body["server_version"].as_u64().unwrap() >= 150_000,
        "{body}"
    );
    assert!(body["database_system_identifier"].is_string(), "{body}");

    // The standby, once it streams: everything but /primary.
    eventually(WAIT, "the standby to pass /replica", || async {
        (probe(&standby, "/replica").await.0 == 200).then_some(())
    })
    .await;
    assert_eq!(
        codes(&standby, &routes).await,
        [503, 503, 200, 200, 200, 200, 200]
    );
    let (_, body) = probe(&standby, "/replica?lag=16MB").await;
    assert_eq!(body["role"], "replica");
    assert_eq!(body["replication_state"], "streaming");
    assert!(
        body["xlog"]["replayed_location"].as_u64().is_some(),
        "{body}"
    );
    let (_, body) = probe(&primary, "/health").await;
    let names: Vec<&str> = body["replication"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["application_name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["pat-1"]);

    // A lag bound that cannot be read is refused, not ignored.
    let (code, body) = probe(&standby, "/replica?lag=lots").await;
    assert_eq!(code, 400, "{body}");

    // Replay paused while the primary writes: over a 1 kB bound, /replica and /read-only turn
    // 503 (with the bound only), /health stays 200.
    standby
        .connect()
        .await
        .batch_execute("SELECT pg_wal_replay_pause()")
        .await
        .unwrap();
    primary
        .connect()
        .await
        .batch_execute("CREATE TABLE filler AS SELECT g, repeat('x', 100) AS pad FROM generate_series(1, 20000) g")
        .await
        .unwrap();
    eventually(
        WAIT,
        "the paused standby to fail /replica?lag=1kB",
        || async { (probe(&standby, "/replica?lag=1kB").await.0 == 503).then_some(()) },
    )
    .await;
    assert_eq!(
        codes(
            &standby,
            &[
                "/replica?lag=1kB",
                "/read-only?lag=1024",
                "/readiness?lag=1kB",
                "/replica",
                "/replica?lag=1GB",
                "/health",
                "/primary",
            ]
        )
        .await,
        [503, 503, 503, 200, 200, 200, 503]
    );
    let (_, body) = probe(&standby, "/replica?lag=1kB").await;
    assert!(body["lag"].as_u64().unwrap() > 1024, "{body}");

    // Replay resumed: it catches up and passes the bound again.
    standby
        .connect()
        .await
        .batch_execute("SELECT pg_wal_replay_resume()")
        .await
        .unwrap();
    eventually(
        WAIT,
        "the standby to pass /replica?lag=1kB again",
        || async { (probe(&standby, "/replica?lag=1kB").await.0 == 200).then_some(()) },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn patroni_routes_say_503_while_postgres_is_fenced() {
    let dir = TestDir::new();
    let primary = Sidecar::start(&dir, SidecarSpec::primary("patf-0")).await;
    primary.client().fence().await.unwrap();
    eventually(WAIT, "the fenced primary to fail /health", || async {
        (probe(&primary, "/health").await.0 == 503).then_some(())
    })
    .await;
    assert_eq!(
        codes(
            &primary,
            &["/primary", "/read-only", "/readiness", "/liveness"]
        )
        .await,
        [503, 503, 503, 200]
    );
    let (_, body) = probe(&primary, "/primary").await;
    assert_eq!(body["state"], "stopped");
}
