//! The sidecar's HTTP API: authentication, parameters (reload- and restart-class, refused
//! owned/unknown/invalid values with nothing changed), JSON errors, and metrics that pass
//! `promtool check metrics`.

use std::collections::BTreeMap;
use std::time::Duration;

use toygres_common::sidecar_api::SetParametersRequest;
use toygres_common::ErrorBody;
use toygres_tests::{eventually, Sidecar, SidecarSpec, TestDir};

const WAIT: Duration = Duration::from_secs(60);

fn params(pairs: &[(&str, Option<&str>)]) -> SetParametersRequest {
    SetParametersRequest {
        parameters: pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.map(str::to_string)))
            .collect::<BTreeMap<_, _>>(),
    }
}

async fn show(s: &Sidecar, name: &str) -> String {
    s.connect()
        .await
        .query_one(&format!("SHOW {name}"), &[])
        .await
        .unwrap()
        .get(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutating_routes_need_the_bearer_token_and_probes_do_not() {
    let dir = TestDir::new();
    let s = Sidecar::start(&dir, SidecarSpec::primary("auth-0")).await;
    let http = s.http();
    let base = s.api_url();
    let routes = [
        ("POST", "/v1/promote"),
        ("POST", "/v1/demote"),
        ("POST", "/v1/fence"),
        ("POST", "/v1/unfence"),
        ("POST", "/v1/restart"),
        ("PUT", "/v1/parameters"),
        ("PUT", "/v1/replication"),
        ("PUT", "/v1/notify"),
        ("GET", "/v1/parameters"),
        ("GET", "/v1/status"),
        ("GET", "/v1/openapi.json"),
    ];
    for (method, path) in routes {
        let method: reqwest::Method = method.parse().unwrap();
        for token in [None, Some("wrong-token-0123456789")] {
            let mut req = http.request(method.clone(), format!("{base}{path}"));
            if let Some(t) = token {
                req = req.bearer_auth(t);
            }
            let resp = req.send().await.unwrap();
            assert_eq!(resp.status(), 401, "{method} {path} with {token:?}");
            let body: ErrorBody = resp.json().await.unwrap();
            assert_eq!(body.error.code, "unauthorized");
        }
    }
    // Nothing happened: the server is still a running primary.
    let st = s.client().status().await.unwrap();
    assert!(st.running && !st.fenced);
    for path in ["/healthz", "/readyz", "/metrics"] {
        let resp = http.get(format!("{base}{path}")).send().await.unwrap();
        assert_eq!(resp.status(), 200, "{path}");
    }
    // Unknown routes and malformed bodies get JSON errors too.
    let resp = http
        .get(format!("{base}/v1/nope"))
        .bearer_auth(toygres_tests::API_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 404);
    assert_eq!(
        resp.json::<ErrorBody>().await.unwrap().error.code,
        "not_found"
    );
    // Bodies must be exactly the documented object: unknown fields are refused (issue 14).
    for body in [
        "{not json",
        r#"{"primary": "nohostport"}"#,
        r#"{"parameters": 5}"#,
        r#"{"primary": {"host": "127.0.0.1", "port": 5432}, "force": true}"#,
        r#"{"primary": {"host": "127.0.0.1", "port": 5432, "user": "x"}}"#,
        r#"{"parameters": {}, "restart": true}"#,
        r#"[null, null]"#,
    ] {
        let path = if body.contains("primary") || body.starts_with('[') {
            "/v1/demote"
        } else {
            "/v1/parameters"
        };
        let method = if path == "/v1/demote" {
            reqwest::Method::POST
        } else {
            reqwest::Method::PUT
        };
        let resp = http
            .request(method, format!("{base}{path}"))
            .bearer_auth(toygres_tests::API_TOKEN)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 400, "{body}");
        let err: ErrorBody = resp.json().await.unwrap();
        assert_eq!(err.error.code, "invalid_request", "{body}");
        assert!(!err.error.message.is_empty());
    }
    // The restart's optional body too (schemathesis found a 422 here), and nothing restarts.
    let before = s.client().status().await.unwrap();
    let resp = http
        .post(format!("{base}/v1/restart"))
        .bearer_auth(toygres_tests::API_TOKEN)
        .header("content-type", "application/json")
        .body(r#"{"fallback": {}, "unknown": 42}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    let err: ErrorBody = resp.json().await.unwrap();
    assert_eq!(err.error.code, "invalid_request", "{err:?}");
    assert_eq!(s.client().status().await.unwrap().pid, before.pid);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_and_restart_class_parameters_are_applied_and_reported() {
    let dir = TestDir::new();
    let s = Sidecar::start(&dir, SidecarSpec::primary("param-0")).await;
    let client = s.client();

    // Reload class: applied at once, nothing waits for a restart.
    let out = client
        .set_parameters(&params(&[
            ("work_mem", Some("48MB")),
            ("log_min_duration_statement", Some("250ms")),
        ]))
        .await
        .unwrap();
    assert_eq!(out.applied, vec!["log_min_duration_statement", "work_mem"]);
    assert!(out.pending_restart.is_empty(), "{out:?}");
    eventually(WAIT, "work_mem to be reloaded", || async {
        (show(&s, "work_mem").await == "48MB").then_some(())
    })
    .await;
    assert_eq!(show(&s, "log_min_duration_statement").await, "250ms");

    // Restart class: written, reported as waiting, applied by a restart.
    let out = client
        .set_parameters(&params(&[("shared_buffers", Some("64MB"))]))
        .await
        .unwrap();
    assert_eq!(out.pending_restart, vec!["shared_buffers"]);
    assert_eq!(show(&s, "shared_buffers").await, "128MB");
    eventually(WAIT, "status to report the pending restart", || async {
        let st = client.status().await.ok()?;
        (st.pending_restart == vec!["shared_buffers".to_string()]).then_some(())
    })
    .await;
    let listed = client.parameters().await.unwrap();
    let sb = listed
        .parameters
        .iter()
        .find(|p| p.name == "shared_buffers")
        .unwrap();
    assert!(sb.pending_restart && sb.context == "postmaster" && !sb.owned);
    assert!(
        listed
            .parameters
            .iter()
            .find(|p| p.name == "port")
            .unwrap()
            .owned
    );

    client.restart().await.unwrap();
    assert_eq!(show(&s, "shared_buffers").await, "64MB");
    assert!(client.status().await.unwrap().pending_restart.is_empty());
    // Setting a restart-class value to what runs needs no restart; a reset is reported.
    let out = client
        .set_parameters(&params(&[("shared_buffers", Some("64MB"))]))
        .await
        .unwrap();
    assert!(out.pending_restart.is_empty(), "{out:?}");
    let out = client
        .set_parameters(&params(&[("work_mem", None)]))
        .await
        .unwrap();
    assert_eq!(out.applied, vec!["work_mem"]);
    eventually(WAIT, "work_mem to be reset", || async {
        (show(&s, "work_mem").await == "4MB").then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn owned_unknown_and_invalid_parameters_are_refused_and_nothing_changes() {
    let dir = TestDir::new();
    let s = Sidecar::start(&dir, SidecarSpec::primary("badparam-0")).await;
    let client = s.client();
    let auto_conf = || std::fs::read_to_string(s.data_dir.join("postgresql.auto.conf")).unwrap();
    let before = auto_conf();

    // (the request, the error code, a word the message must mention)
    type Case<'a> = (&'a [(&'a str, Option<&'a str>)], &'a str, &'a str);
    let cases: &[Case] = &[
        (&[("port", Some("6000"))], "owned_parameter", "port"),
        (
            &[("listen_addresses", Some("*"))],
            "owned_parameter",
            "listen_addresses",
        ),
        (
            &[("wal_level", Some("minimal"))],
            "owned_parameter",
            "wal_level",
        ),
        (
            &[("archive_command", Some("true"))],
            "owned_parameter",
            "archive_command",
        ),
        (
            &[("primary_conninfo", Some("host=x"))],
            "owned_parameter",
            "primary_conninfo",
        ),
        (
            &[("synchronous_standby_names", Some("*"))],
            "owned_parameter",
            "synchronous_standby_names",
        ),
        (
            &[("no_such_setting", Some("1"))],
            "unknown_parameter",
            "no_such_setting",
        ),
        (
            &[("block_size", Some("16384"))],
            "read_only_parameter",
            "block_size",
        ),
        (&[("work_mem", Some("lots"))], "invalid_value", "work_mem"),
        (
            &[("max_connections", Some("-5"))],
            "invalid_value",
            "max_connections",
        ),
        (
            &[("work_mem", Some("1MB\nport = 1"))],
            "invalid_value",
            "single line",
        ),
        // The first (valid) change is rolled back when the second fails.
        (
            &[
                ("maintenance_work_mem", Some("256MB")),
                ("work_mem", Some("bogus")),
            ],
            "invalid_value",
            "work_mem",
        ),
    ];
    for (pairs, code, mention) in cases {
        let err = client.set_parameters(&params(pairs)).await.unwrap_err();
        assert_eq!(err.status(), Some(400), "{pairs:?}: {err}");
        match &err {
            toygres_common::SidecarClientError::Api {
                code: got, message, ..
            } => {
                assert_eq!(got, code, "{pairs:?}");
                assert!(message.contains(mention), "{pairs:?}: {message}");
            }
            other => panic!("{pairs:?}: {other}"),
        }
    }
    assert_eq!(auto_conf(), before, "postgresql.auto.conf changed");
    assert_eq!(show(&s, "maintenance_work_mem").await, "64MB");
    let empty = client.set_parameters(&params(&[])).await.unwrap_err();
    assert_eq!(empty.status(), Some(400));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_pass_promtool_and_cover_primary_and_standby() {
    let dir = TestDir::new();
    let primary = Sidecar::start(&dir, SidecarSpec::primary("met-0")).await;
    let standby = Sidecar::start(&dir, SidecarSpec::standby("met-1", &primary)).await;
    let pc = primary.client();
    eventually(WAIT, "the standby to stream", || async {
        let st = pc.status().await.ok()?;
        (!st.standbys.is_empty()).then_some(())
    })
    .await;
    // Make a request the API counts as an error, to see it in the metrics.
    let _ = primary
        .http()
        .get(format!("{}/v1/status", primary.api_url()))
        .send()
        .await
        .unwrap();
    // Made-up methods are refused with 405 before anything is counted: they never become
    // label values (issue 14).
    let http = primary.http();
    for n in 0..20 {
        let method = reqwest::Method::from_bytes(format!("MADEUP{n}").as_bytes()).unwrap();
        let response = http
            .request(method, format!("{}/healthz", primary.api_url()))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), reqwest::StatusCode::METHOD_NOT_ALLOWED);
    }

    for (s, role) in [(&primary, "primary"), (&standby, "standby")] {
        let text = s
            .http()
            .get(format!("{}/metrics", s.api_url()))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        for needle in [
            "toygres_pg_up 1".to_string(),
            "toygres_data_disk_available_bytes ".to_string(),
            format!("toygres_pg_role{{role=\"{role}\"}} 1"),
            "toygres_pg_timeline 1".to_string(),
            "toygres_pg_restarts_total 0".to_string(),
            "toygres_pg_pending_restart 0".to_string(),
            "toygres_pg_connections{state=\"active\"}".to_string(),
            "toygres_pg_database_size_bytes{datname=\"postgres\"}".to_string(),
            "toygres_pg_commits_total{datname=\"postgres\"}".to_string(),
            "toygres_pg_rollbacks_total{datname=\"postgres\"}".to_string(),
        ] {
            assert!(text.contains(&needle), "{role}: missing {needle}\n{text}");
        }
        if role == "primary" {
            assert!(
                text.contains(
                    "toygres_standby_lag_bytes{application_name=\"met-1\",sync_state=\"async\"}"
                ),
                "{text}"
            );
            assert!(text.contains("toygres_standbys_connected 1"), "{text}");
            assert!(
                text.contains("toygres_sidecar_api_requests_total{method=\"GET\",route=\"/v1/status\",status=\"401\"} 1"),
                "{text}"
            );
            assert!(!text.contains("MADEUP"), "{text}");
            assert!(!text.contains("method=\"other\""), "{text}");
        } else {
            assert!(text.contains("toygres_replication_lag_bytes "), "{text}");
            assert!(text.contains("toygres_replication_lag_seconds "), "{text}");
        }
        promtool_check(&text);
    }
}

/// Runs `promtool check metrics` (Debian package `prometheus`) on an exposition.
fn promtool_check(text: &str) {
    use std::io::Write;
    let mut child = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("promtool not found: install Debian's prometheus package (scripts/install-test-deps.sh)");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics failed:\n{}{}\n{text}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parameters_can_be_changed_on_a_standby_too() {
    let dir = TestDir::new();
    let primary = Sidecar::start(&dir, SidecarSpec::primary("sbparam-0")).await;
    let standby = Sidecar::start(&dir, SidecarSpec::standby("sbparam-1", &primary)).await;
    let out = standby
        .client()
        .set_parameters(&params(&[
            ("work_mem", Some("24MB")),
            ("max_connections", Some("120")),
        ]))
        .await
        .unwrap();
    assert_eq!(out.pending_restart, vec!["max_connections"]);
    eventually(WAIT, "the standby to reload work_mem", || async {
        (show(&standby, "work_mem").await == "24MB").then_some(())
    })
    .await;
    // A standby's max_connections may not be below its primary's; raising it is fine.
    standby.client().restart().await.unwrap();
    assert_eq!(show(&standby, "max_connections").await, "120");
    assert_eq!(
        show(&primary, "work_mem").await,
        "4MB",
        "a standby's change stays its own"
    );
}
