//! `GET /healthz` and `GET /readyz`: the controller is up and its CMS answers a query. A
//! standby controller (waiting for the Lease on Kubernetes) answers `/healthz` but not
//! `/readyz`: see [`standby_app`].

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Value};

use super::{ApiError, ApiState};

pub async fn healthz(State(state): State<ApiState>) -> Result<Json<Value>, ApiError> {
    state.cms.ping().await?;
    Ok(Json(json!({ "status": "ok", "cms": "ok" })))
}

/// The router of a standby controller, which waits for the Lease naming the active one:
/// alive (`/healthz`), not ready (`/readyz`, so Services lead to the active one), and 503 for
/// everything else.
pub fn standby_app(lease: String) -> Router {
    let readyz_lease = lease.clone();
    Router::new()
        .route(
            "/healthz",
            get(|| async { Json(json!({ "status": "standby" })) }),
        )
        .route("/readyz", get(move || standby_answer(readyz_lease.clone())))
        .fallback(move || standby_answer(lease.clone()))
}

async fn standby_answer(lease: String) -> ApiError {
    ApiError::Unavailable(format!(
        "this controller is a standby: the one holding the Lease {lease} is active"
    ))
}
