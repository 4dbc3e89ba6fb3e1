//! A sidecar sends credentials only to members of its own instance: `PUT /v1/replication` and
//! `POST /v1/demote` naming any other server are refused with a 4xx, and that server never sees
//! a connection (issue 14: a listener asking for a cleartext password got the superuser's).
//!
//! The sidecars here live in the local platform's layout (`<member>/data` beside
//! `<member>/member.json`), which is how a sidecar knows its instance's members there.

use std::net::TcpListener;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use toygres_common::ErrorBody;
use toygres_tests::{Sidecar, SidecarSpec, TestDir, API_TOKEN};

/// A listener that only counts the connections it is offered (it never answers them).
fn counting_listener() -> (u16, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let count = Arc::new(AtomicUsize::new(0));
    let seen = Arc::clone(&count);
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            seen.fetch_add(1, Ordering::SeqCst);
            drop(stream);
        }
    });
    (port, count)
}

/// The local platform's record of a member, as much of it as a sidecar reads.
fn write_record(dir: &TestDir, sidecar: &Sidecar, instance: &str) {
    let record = serde_json::json!({"instance": instance, "member": sidecar.member, "pg_port": sidecar.pg_port});
    std::fs::write(
        dir.path().join(&sidecar.member).join("member.json"),
        record.to_string(),
    )
    .unwrap();
}

async fn call(
    sidecar: &Sidecar,
    method: reqwest::Method,
    path: &str,
    body: serde_json::Value,
) -> (u16, String) {
    let response = reqwest::Client::new()
        .request(method, format!("{}{path}", sidecar.api_url()))
        .bearer_auth(API_TOKEN)
        .timeout(Duration::from_secs(60))
        .json(&body)
        .send()
        .await
        .unwrap();
    (response.status().as_u16(), response.text().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sidecar_refuses_to_follow_or_rewind_from_a_server_outside_its_instance() {
    let dir = TestDir::new();
    let primary = Sidecar::start(&dir, SidecarSpec::primary("peer-0")).await;
    let standby = Sidecar::start(&dir, SidecarSpec::standby("peer-1", &primary)).await;
    write_record(&dir, &primary, "peer");
    write_record(&dir, &standby, "peer");
    let (stranger_port, offered) = counting_listener();
    let stranger = serde_json::json!({"host": "127.0.0.1", "port": stranger_port});

    let (status, text) = call(
        &standby,
        reqwest::Method::PUT,
        "/v1/replication",
        serde_json::json!({"primary": stranger}),
    )
    .await;
    assert_eq!(status, 400, "{text}");
    let body: ErrorBody = serde_json::from_str(&text).unwrap();
    assert_eq!(body.error.code, "not_a_member", "{text}");

    let (status, text) = call(
        &primary,
        reqwest::Method::POST,
        "/v1/demote",
        serde_json::json!({"primary": stranger}),
    )
    .await;
    assert_eq!(status, 400, "{text}");
    let body: ErrorBody = serde_json::from_str(&text).unwrap();
    assert_eq!(body.error.code, "not_a_member", "{text}");
    assert_eq!(
        offered.load(Ordering::SeqCst),
        0,
        "the stranger was sent a connection"
    );

    // A member of the instance is followed as before.
    let (status, text) = call(
        &standby,
        reqwest::Method::PUT,
        "/v1/replication",
        serde_json::json!({"primary": {"host": "127.0.0.1", "port": primary.pg_port}}),
    )
    .await;
    assert_eq!(status, 200, "{text}");
}
