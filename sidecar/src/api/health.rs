//! Probes: `/healthz` (the agent is alive) and `/readyz` (Postgres accepts connections and, on a
//! standby, replay lag is within the readiness bound).

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde_json::{json, Value};
use toygres_common::sidecar_api::Role;

use super::state::AppState;

#[utoipa::path(get, path = "/healthz", tag = "health", responses((status = 200, description = "The agent answers", body = Object)))]
pub async fn healthz() -> Json<Value> {
    Json(json!({"status": "ok"}))
}

#[utoipa::path(get, path = "/readyz", tag = "health", responses((status = 200, description = "Ready to serve in its role", body = Object), (status = 503, description = "Not ready, and why", body = Object)))]
pub async fn readyz(State(state): State<AppState>) -> (StatusCode, Json<Value>) {
    let status = state.member.status().await;
    let bound = state.member.cfg.ready_max_lag_bytes;
    let (ready, reason) = if status.fenced {
        (false, "fenced".to_string())
    } else if !status.running {
        (false, "postgres is not accepting connections".to_string())
    } else if status.role == Role::Standby && status.lag_bytes.is_none_or(|lag| lag > bound) {
        (
            false,
            format!("replay lag {:?} bytes exceeds {bound}", status.lag_bytes),
        )
    } else {
        (true, "ready".to_string())
    };
    let code = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        code,
        Json(json!({"ready": ready, "reason": reason, "role": status.role})),
    )
}
