//! Health checks in Patroni's REST API dialect, so load balancers already set up for Patroni
//! (HAProxy `option httpchk GET /primary`, pgbouncer wrappers, Kubernetes probes) work against
//! a toygres member unchanged. Unauthenticated GETs, as Patroni's are: they reveal the role and
//! positions, never a secret, and change nothing.
//!
//! | route | 200 when |
//! |---|---|
//! | `/primary`, `/read-write` | Postgres runs as a writable primary |
//! | `/replica[?lag=N]` | Postgres runs as a standby whose WAL receiver streams (and its replay lag is at most N) |
//! | `/read-only[?lag=N]` | `/primary` or `/replica` would be 200 |
//! | `/health` | Postgres runs, whatever its role |
//! | `/liveness` | the agent answers (Patroni: its heartbeat loop runs) |
//! | `/readiness[?lag=N]` | a running primary, or a running standby within N |
//!
//! Otherwise 503, with the same JSON body (Patroni's fields: `state`, `role`, `server_version`,
//! `timeline`, `xlog`, `replication_state`, `database_system_identifier`, `replication`).
//! Unlike Patroni, `/replica` asks that the standby streams: a standby cut off from its primary
//! replays only what the archive has and cannot tell how far behind it is. Its lag is measured
//! against the last position its primary reported (Patroni uses the leader's last operation in
//! its DCS); an unparsable `lag` is a 400, not a silent 200.

use std::collections::HashMap;
use toygres_common::ErrorBody;

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::Json;
use serde_json::{json, Value};
use toygres_common::sidecar_api::{Role, Status};

use super::error::ApiError;
use super::state::AppState;

/// Which check a route makes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Check {
    Primary,
    Replica,
    ReadOnly,
    Health,
    Readiness,
}

/// `GET /primary`.
#[utoipa::path(get, path = "/primary", tag = "patroni", params(("lag" = Option<String>, Query, description = "The most replay lag allowed: bytes, or with kB, MB, GB")), responses((status = 200, description = "A writable primary", body = Object), (status = 400, description = "An unparsable lag", body = ErrorBody), (status = 503, description = "The check does not pass", body = Object)))]
pub async fn primary(state: State<AppState>, query: Query<HashMap<String, String>>) -> Answer {
    answer(state, query, Check::Primary).await
}

/// `GET /read-write`: the same check as `/primary`.
#[utoipa::path(get, path = "/read-write", tag = "patroni", params(("lag" = Option<String>, Query, description = "The most replay lag allowed: bytes, or with kB, MB, GB")), responses((status = 200, description = "A writable primary", body = Object), (status = 400, description = "An unparsable lag", body = ErrorBody), (status = 503, description = "The check does not pass", body = Object)))]
pub async fn read_write(state: State<AppState>, query: Query<HashMap<String, String>>) -> Answer {
    answer(state, query, Check::Primary).await
}

/// `GET /replica[?lag=N]`.
#[utoipa::path(get, path = "/replica", tag = "patroni", params(("lag" = Option<String>, Query, description = "The most replay lag allowed: bytes, or with kB, MB, GB")), responses((status = 200, description = "A streaming standby within the lag", body = Object), (status = 400, description = "An unparsable lag", body = ErrorBody), (status = 503, description = "The check does not pass", body = Object)))]
pub async fn replica(state: State<AppState>, query: Query<HashMap<String, String>>) -> Answer {
    answer(state, query, Check::Replica).await
}

/// `GET /read-only[?lag=N]`.
#[utoipa::path(get, path = "/read-only", tag = "patroni", params(("lag" = Option<String>, Query, description = "The most replay lag allowed: bytes, or with kB, MB, GB")), responses((status = 200, description = "A primary, or a streaming standby within the lag", body = Object), (status = 400, description = "An unparsable lag", body = ErrorBody), (status = 503, description = "The check does not pass", body = Object)))]
pub async fn read_only(state: State<AppState>, query: Query<HashMap<String, String>>) -> Answer {
    answer(state, query, Check::ReadOnly).await
}

/// `GET /health`.
#[utoipa::path(get, path = "/health", tag = "patroni", params(("lag" = Option<String>, Query, description = "The most replay lag allowed: bytes, or with kB, MB, GB")), responses((status = 200, description = "Postgres runs", body = Object), (status = 400, description = "An unparsable lag", body = ErrorBody), (status = 503, description = "The check does not pass", body = Object)))]
pub async fn health(state: State<AppState>, query: Query<HashMap<String, String>>) -> Answer {
    answer(state, query, Check::Health).await
}

/// `GET /readiness[?lag=N]`.
#[utoipa::path(get, path = "/readiness", tag = "patroni", params(("lag" = Option<String>, Query, description = "The most replay lag allowed: bytes, or with kB, MB, GB")), responses((status = 200, description = "A running primary, or a running standby within the lag", body = Object), (status = 400, description = "An unparsable lag", body = ErrorBody), (status = 503, description = "The check does not pass", body = Object)))]
pub async fn readiness(state: State<AppState>, query: Query<HashMap<String, String>>) -> Answer {
    answer(state, query, Check::Readiness).await
}

/// `GET /liveness`: the agent answers, with Postgres up or not.
#[utoipa::path(get, path = "/liveness", tag = "patroni", responses((status = 200, description = "The agent answers", body = Object)))]
pub async fn liveness() -> Json<Value> {
    Json(json!({}))
}

type Answer = Result<(StatusCode, Json<Value>), ApiError>;

async fn answer(
    State(state): State<AppState>,
    Query(query): Query<HashMap<String, String>>,
    check: Check,
) -> Answer {
    let max_lag = match query.get("lag") {
        None => None,
        Some(text) => Some(parse_bytes(text).ok_or_else(|| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_lag",
                format!("lag={text:?}: expected bytes, as 1048576 or 1024kB, 16MB, 1GB"),
            )
        })?),
    };
    let status = state.member.status().await;
    let code = if passes(check, &status, max_lag) {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    Ok((code, Json(body(&status))))
}

/// Whether `status` passes `check`, pure so it can be tested over a table.
pub fn passes(check: Check, status: &Status, max_lag: Option<u64>) -> bool {
    let running = status.running && !status.fenced;
    let primary = running && status.role == Role::Primary;
    let standby = running && status.role == Role::Standby;
    let within_lag = match max_lag {
        None => true,
        Some(bound) => status.lag_bytes.is_some_and(|lag| lag <= bound),
    };
    let streaming = status.wal_receiver_status.as_deref() == Some("streaming");
    match check {
        Check::Primary => primary,
        Check::Replica => standby && streaming && within_lag,
        Check::ReadOnly => primary || (standby && streaming && within_lag),
        Check::Health => running,
        Check::Readiness => primary || (standby && within_lag),
    }
}

/// Patroni's status document, from the member's status.
pub fn body(status: &Status) -> Value {
    let state = if status.running && !status.fenced {
        "running"
    } else {
        "stopped"
    };
    let mut fields = serde_json::Map::new();
    fields.insert("state".into(), json!(state));
    let role = match status.role {
        Role::Primary => "primary",
        Role::Standby => "replica",
        Role::Unknown => "uninitialized",
    };
    fields.insert("role".into(), json!(role));
    fields.insert(
        "patroni".into(),
        json!({
            "name": status.member,
            "version": concat!("toygres-sidecar ", env!("CARGO_PKG_VERSION")),
        }),
    );
    if let Some(version) = status
        .server_version
        .as_deref()
        .and_then(server_version_num)
    {
        fields.insert("server_version".into(), json!(version));
    }
    if let Some(timeline) = status.timeline {
        fields.insert("timeline".into(), json!(timeline));
    }
    if let Some(id) = &status.system_identifier {
        fields.insert("database_system_identifier".into(), json!(id));
    }
    match status.role {
        Role::Primary => {
            if let Some(location) = status.current_lsn.as_deref().and_then(lsn_bytes) {
                fields.insert("xlog".into(), json!({ "location": location }));
            }
            let replication: Vec<Value> = status
                .standbys
                .iter()
                .map(|s| {
                    json!({
                        "application_name": s.application_name,
                        "client_addr": s.client_addr,
                        "state": s.state,
                        "sync_state": s.sync_state,
                    })
                })
                .collect();
            fields.insert("replication".into(), json!(replication));
        }
        Role::Standby => {
            fields.insert(
                "xlog".into(),
                json!({
                    "received_location": status.receive_lsn.as_deref().and_then(lsn_bytes),
                    "replayed_location": status.replay_lsn.as_deref().and_then(lsn_bytes),
                }),
            );
            if let Some(receiver) = &status.wal_receiver_status {
                fields.insert("replication_state".into(), json!(receiver));
            }
            if let Some(lag) = status.lag_bytes {
                fields.insert("lag".into(), json!(lag));
            }
        }
        Role::Unknown => {}
    }
    Value::Object(fields)
}

/// Bytes from Patroni's `lag` notation: an integer, or an integer with Postgres's memory units
/// (`B`, `kB`, `MB`, `GB`, `TB`, powers of 1024).
pub fn parse_bytes(text: &str) -> Option<u64> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: u64 = number.parse().ok()?;
    let factor: u64 = match unit.trim() {
        "" | "B" => 1,
        "kB" => 1 << 10,
        "MB" => 1 << 20,
        "GB" => 1 << 30,
        "TB" => 1 << 40,
        _ => return None,
    };
    number.checked_mul(factor)
}

/// `0/3000060` as a byte position.
pub fn lsn_bytes(lsn: &str) -> Option<u64> {
    let (high, low) = lsn.split_once('/')?;
    let high = u64::from_str_radix(high, 16).ok()?;
    let low = u64::from_str_radix(low, 16).ok()?;
    Some((high << 32) | low)
}

/// `15.4 (Debian 15.4-1)` as Postgres's `server_version_num`, 150004.
fn server_version_num(version: &str) -> Option<u64> {
    let number = version.split_whitespace().next()?;
    let mut parts = number.split('.');
    let major: u64 = parts.next()?.parse().ok()?;
    let minor: u64 = parts
        .next()
        .map(|m| m.trim_end_matches(|c: char| !c.is_ascii_digit()))
        .and_then(|m| m.parse().ok())
        .unwrap_or(0);
    Some(major * 10_000 + minor)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn lag_bounds_read_as_patroni_reads_them() {
        assert_eq!(parse_bytes("1048576"), Some(1_048_576));
        assert_eq!(parse_bytes("1024kB"), Some(1_048_576));
        assert_eq!(parse_bytes("16MB"), Some(16 << 20));
        assert_eq!(parse_bytes("1GB"), Some(1 << 30));
        assert_eq!(parse_bytes("0"), Some(0));
        for bad in ["", "MB", "16mb", "-1", "1.5MB", "16 XB"] {
            assert_eq!(parse_bytes(bad), None, "{bad}");
        }
        assert_eq!(lsn_bytes("1/10"), Some((1 << 32) + 16));
        assert_eq!(
            server_version_num("15.4 (Debian 15.4-1.pgdg120+1)"),
            Some(150_004)
        );
        assert_eq!(server_version_num("16devel"), None);
    }

    fn status(role: &str, running: bool, receiver: Option<&str>, lag: Option<u64>) -> Status {
        serde_json::from_value(json!({
            "member": "db-1", "role": role, "running": running, "fenced": false,
            "standbys": [], "pending_restart": [], "postgres_restarts": 0,
            "wal_receiver_status": receiver, "lag_bytes": lag,
        }))
        .unwrap()
    }

    #[test]
    fn each_route_passes_for_the_members_patroni_would_pass() {
        use Check::*;
        let primary = status("primary", true, None, None);
        let streaming = status("standby", true, Some("streaming"), Some(100));
        let cut_off = status("standby", true, None, Some(0));
        let down = status("standby", false, None, None);
        let mut fenced = status("primary", true, None, None);
        fenced.fenced = true;
        let cases = [
            // (member, check, lag bound, passes)
            (&primary, Primary, None, true),
            (&primary, Replica, None, false),
            (&primary, ReadOnly, Some(0), true),
            (&primary, Health, None, true),
            (&primary, Readiness, None, true),
            (&streaming, Primary, None, false),
            (&streaming, Replica, None, true),
            (&streaming, Replica, Some(100), true),
            (&streaming, Replica, Some(99), false),
            (&streaming, ReadOnly, Some(99), false),
            (&streaming, Readiness, Some(99), false),
            (&streaming, Health, Some(99), true),
            (&cut_off, Replica, None, false),
            (&cut_off, Readiness, None, true),
            (&down, Health, None, false),
            (&down, Replica, None, false),
            (&fenced, Primary, None, false),
            (&fenced, Health, None, false),
        ];
        for (member, check, bound, expected) in cases {
            assert_eq!(
                passes(check, member, bound),
                expected,
                "{check:?} lag={bound:?} on {member:?}"
            );
        }
        assert_eq!(body(&primary)["role"], "primary");
        assert_eq!(body(&streaming)["role"], "replica");
        assert_eq!(body(&streaming)["replication_state"], "streaming");
        assert_eq!(body(&down)["state"], "stopped");
    }
}
