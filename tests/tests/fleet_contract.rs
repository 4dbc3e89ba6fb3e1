//! The simulated fleet (`toygres-sidecar fleet`, issue 17) keeps to the real sidecar's contract:
//! the same requests, sent to a real primary and standby and to a simulated pair, get the same
//! status codes, error codes and response shapes on the routes the controller uses (status,
//! readiness, promote, fence, demote, replication settings, slots, parameters), and both change
//! the same way (a promoted standby is a primary on timeline 2, a demoted primary follows it).

use std::collections::BTreeMap;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::{json, Value};
use toygres_tests::{bin_path, eventually, Sidecar, SidecarSpec, TestDir, API_TOKEN};

const WAIT: Duration = Duration::from_secs(60);

/// A running `toygres-sidecar fleet`, stopped (by its pid) when dropped.
struct FleetDouble {
    child: Child,
    url: String,
}

impl FleetDouble {
    async fn start(dir: &TestDir) -> Self {
        let url_file = dir.path().join("fleet.url");
        let child = Command::new(bin_path("toygres-sidecar"))
            .args(["fleet", "--listen", "127.0.0.1:0", "--url-file"])
            .arg(&url_file)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start toygres-sidecar fleet");
        let mut double = FleetDouble {
            child,
            url: String::new(),
        };
        double.url = eventually(WAIT, "the fleet double's URL", || async {
            let text = std::fs::read_to_string(&url_file).ok()?;
            let url = text.trim().to_string();
            (!url.is_empty()).then_some(url)
        })
        .await;
        double
    }
}

impl Drop for FleetDouble {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One side of the comparison: a member's API base URL.
#[derive(Clone)]
struct Side {
    primary: String,
    standby: String,
}

/// A JSON value's shape: keys and value kinds, values left out (arrays by their first item).
fn shape(value: &Value) -> Value {
    match value {
        Value::Null => json!("null"),
        Value::Bool(_) => json!("bool"),
        Value::Number(_) => json!("number"),
        Value::String(_) => json!("string"),
        Value::Array(items) => json!([items.first().map(shape)]),
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| (k.clone(), shape(v)))
                .collect::<serde_json::Map<_, _>>(),
        ),
    }
}

/// Sends one request; returns its status and JSON body (`null` when there is none).
async fn send(
    http: &reqwest::Client,
    method: &str,
    url: &str,
    token: bool,
    body: Option<&Value>,
) -> (u16, Value) {
    let mut request = http.request(method.parse().unwrap(), url);
    if token {
        request = request.bearer_auth(API_TOKEN);
    }
    if let Some(body) = body {
        request = request.json(body);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

/// Sends the same request to the real member and the simulated one and checks the answers
/// agree: status code, error code, and shape (unless `values_differ` names fields whose
/// presence legitimately differs, such as a real server's archive or pid). Returns both bodies.
async fn same(
    http: &reqwest::Client,
    method: &str,
    urls: (&str, &str),
    token: bool,
    body: Option<&Value>,
    what: &str,
) -> (Value, Value) {
    let (real_code, real) = send(http, method, urls.0, token, body).await;
    let (sim_code, sim) = send(http, method, urls.1, token, body).await;
    assert_eq!(
        real_code, sim_code,
        "{what}: status codes differ (real {real}, simulated {sim})"
    );
    assert_eq!(
        real["error"]["code"], sim["error"]["code"],
        "{what}: error codes differ"
    );
    assert_eq!(
        shape(&real),
        shape(&sim),
        "{what}: shapes differ\nreal: {real}\nsimulated: {sim}"
    );
    (real, sim)
}

/// A status with the values that differ between a real server and a simulated one by nature
/// (positions, times, identifiers, the real server's archive and pid) blanked out, the rest kept.
fn comparable_status(status: &Value) -> Value {
    let mut status = status.clone();
    for key in [
        "pid",
        "system_identifier",
        "current_lsn",
        "receive_lsn",
        "replay_lsn",
        "lag_bytes",
        "lag_seconds",
        "primary",
        "server_version",
        "disk",
        "archive",
        "primary_last_contact_seconds",
        "synchronous_commit",
        "postgres_restarts",
        "member",
    ] {
        if let Some(v) = status.get_mut(key) {
            *v = shape(v);
        }
    }
    if let Some(standbys) = status.get_mut("standbys").and_then(Value::as_array_mut) {
        for standby in standbys {
            *standby = json!({
                "state": standby["state"],
                "sync_state": standby["sync_state"],
            });
        }
    }
    status
}

/// A status's shape, each standby entry by its keys alone (a real primary reports a standby's
/// positions as null until it has heard from it).
fn status_shape(status: &Value) -> Value {
    let mut shaped = shape(status);
    if let Some(entry) = status["standbys"].get(0).and_then(Value::as_object) {
        shaped["standbys"] = json!([entry.keys().collect::<Vec<_>>()]);
    }
    shaped
}

async fn status(http: &reqwest::Client, base: &str) -> Value {
    send(http, "GET", &format!("{base}/v1/status"), true, None)
        .await
        .1
}

/// Both sides' status, equal once `ready` holds on each.
async fn both_status(
    http: &reqwest::Client,
    bases: (&str, &str),
    what: &str,
    ready: impl Fn(&Value) -> bool,
) -> (Value, Value) {
    let mut pair = Vec::new();
    for base in [bases.0, bases.1] {
        let got = eventually(WAIT, what, || async {
            let s = status(http, base).await;
            ready(&s).then_some(s)
        })
        .await;
        pair.push(got);
    }
    let sim = pair.pop().unwrap();
    let real = pair.pop().unwrap();
    assert_eq!(
        status_shape(&real),
        status_shape(&sim),
        "{what}: status shapes differ"
    );
    assert_eq!(
        comparable_status(&real),
        comparable_status(&sim),
        "{what}: statuses differ"
    );
    (real, sim)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_simulated_fleet_answers_as_real_sidecars_do() {
    let dir = TestDir::new();
    let token_file = dir.path().join("fleet-token");
    std::fs::write(&token_file, API_TOKEN).unwrap();
    let primary = Sidecar::start(&dir, SidecarSpec::primary("ct-0")).await;
    let standby = Sidecar::start(&dir, SidecarSpec::standby("ct-1", &primary)).await;
    let double = FleetDouble::start(&dir).await;
    // One client for both: HTTPS to the real members (trusting their instance's CA), plain
    // HTTP to the double.
    let http = toygres_common::tls::https::client_trusting(
        reqwest::Client::builder(),
        &std::fs::read(primary.ca_file()).unwrap(),
        "http://127.0.0.1",
    )
    .unwrap();

    // The simulated pair claims the real pair's names, with made-up Postgres ports.
    let sim_pg = |port: u16| json!({"host": "127.0.0.1", "port": port});
    for (member, bootstrap) in [
        ("ct-0", json!({"mode": "init"})),
        ("ct-1", json!({"mode": "standby", "primary": sim_pg(1)})),
    ] {
        let port = if member == "ct-0" { 1 } else { 2 };
        let (code, body) = send(
            &http,
            "POST",
            &format!("{}/fleet/members", double.url),
            false,
            Some(&json!({
                "instance": "ct", "member": member, "pg": sim_pg(port),
                "bootstrap": bootstrap, "token_file": token_file,
            })),
        )
        .await;
        assert_eq!(code, 200, "register {member}: {body}");
    }
    let real = Side {
        primary: primary.api_url(),
        standby: standby.api_url(),
    };
    let sim = Side {
        primary: format!("{}/m/ct-0", double.url),
        standby: format!("{}/m/ct-1", double.url),
    };
    let at = |side: &Side, standby: bool, path: &str| {
        let base = if standby {
            &side.standby
        } else {
            &side.primary
        };
        format!("{base}{path}")
    };
    let on = |standby: bool, path: &str| (at(&real, standby, path), at(&sim, standby, path));

    // Streaming pair: the same statuses on both sides.
    let streaming = |s: &Value| {
        s["role"] == "standby" && s["wal_receiver_status"] == "streaming"
            || s["role"] == "primary" && s["standbys"].as_array().is_some_and(|a| a.len() == 1)
    };
    both_status(
        &http,
        (&real.primary, &sim.primary),
        "the primaries",
        streaming,
    )
    .await;
    both_status(
        &http,
        (&real.standby, &sim.standby),
        "the standbys",
        streaming,
    )
    .await;

    // The token is required; readiness is open.
    for (method, path) in [
        ("GET", "/v1/status"),
        ("POST", "/v1/promote"),
        ("POST", "/v1/fence"),
        ("PUT", "/v1/replication"),
    ] {
        let (r, s) = on(false, path);
        same(
            &http,
            method,
            (&r, &s),
            false,
            None,
            &format!("{method} {path} without token"),
        )
        .await;
    }
    let (r, s) = on(false, "/readyz");
    same(&http, "GET", (&r, &s), false, None, "GET /readyz").await;
    let (r, s) = on(false, "/v1/parameters");
    same(&http, "GET", (&r, &s), true, None, "GET /v1/parameters").await;

    // Refused promotions: a primary, and a standby whose primary still serves.
    let (r, s) = on(false, "/v1/promote");
    same(&http, "POST", (&r, &s), true, None, "promote a primary").await;
    let (r, s) = on(true, "/v1/promote");
    same(
        &http,
        "POST",
        (&r, &s),
        true,
        None,
        "promote a streaming standby",
    )
    .await;

    // Bad bodies are 400s.
    let (r, s) = on(false, "/v1/replication");
    same(
        &http,
        "PUT",
        (&r, &s),
        true,
        Some(&json!({"sync": 5})),
        "bad replication body",
    )
    .await;

    // A synchronous policy: the standby turns sync on both.
    let policy = json!({"synchronous_commit": "on", "sync": {
        "mode": "strict", "method": "first", "num_sync": 1, "standbys": ["ct-1"]}});
    same(
        &http,
        "PUT",
        (&r, &s),
        true,
        Some(&policy),
        "set a sync policy",
    )
    .await;
    // Settled: the standby is sync and the status reads the new setting (a real sidecar's
    // kept connection can answer with the setting from before the reload for a moment after
    // the walsender already reports sync).
    let synced = |s: &Value| {
        s["standbys"][0]["sync_state"] == "sync"
            && s["synchronous_standby_names"]
                .as_str()
                .is_some_and(|v| !v.is_empty())
    };
    both_status(&http, (&real.primary, &sim.primary), "sync standby", synced).await;

    // A slot that does not exist.
    let (r, s) = on(false, "/v1/replication/slots/ct-9");
    same(&http, "DELETE", (&r, &s), true, None, "drop an absent slot").await;

    // Failover by hand: fence the primary, promote the standby (timeline 2), demote the old
    // primary under the new one.
    let (r, s) = on(false, "/v1/fence");
    same(&http, "POST", (&r, &s), true, None, "fence the primary").await;
    let fenced = |s: &Value| s["fenced"] == true && s["running"] == false;
    both_status(
        &http,
        (&real.primary, &sim.primary),
        "fenced primary",
        fenced,
    )
    .await;
    let (r, s) = on(true, "/v1/promote");
    let (real_promoted, sim_promoted) =
        same(&http, "POST", (&r, &s), true, None, "promote the standby").await;
    assert_eq!(real_promoted["timeline"], 2, "{real_promoted}");
    assert_eq!(sim_promoted["timeline"], 2, "{sim_promoted}");
    let promoted = |s: &Value| s["role"] == "primary" && s["running"] == true;
    both_status(
        &http,
        (&real.standby, &sim.standby),
        "promoted standby",
        promoted,
    )
    .await;
    let (r, s) = on(false, "/v1/demote");
    let (real_demoted, _) = send(
        &http,
        "POST",
        &r,
        true,
        Some(&json!({"primary": standby.pg_address()})),
    )
    .await;
    let (sim_demoted, _) = send(
        &http,
        "POST",
        &s,
        true,
        Some(&json!({"primary": sim_pg(2)})),
    )
    .await;
    assert_eq!(real_demoted, sim_demoted, "demote the old primary");
    let following = |s: &Value| {
        s["role"] == "standby" && s["wal_receiver_status"] == "streaming" && s["timeline"] == 2
    };
    both_status(
        &http,
        (&real.primary, &sim.primary),
        "rejoined old primary",
        following,
    )
    .await;

    // A member whose sidecar is gone answers nothing the controller takes as healthy.
    let (code, _) = send(
        &http,
        "POST",
        &format!("{}/fleet/members/ct-0/kill", double.url),
        false,
        None,
    )
    .await;
    assert_eq!(code, 204);
    let (code, _) = send(&http, "GET", &at(&sim, false, "/v1/status"), true, None).await;
    assert_eq!(code, 503);
    let listed: Vec<BTreeMap<String, Value>> = http
        .get(format!("{}/fleet/members?instance=ct", double.url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(listed.len(), 2);
    assert_eq!(listed[0]["state"], "killed");
}
