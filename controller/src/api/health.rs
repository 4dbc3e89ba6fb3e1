//! `GET /healthz`: the controller is up and its CMS answers a query.

use axum::extract::State;
use axum::Json;
use serde_json::{json, Value};

use super::{ApiError, ApiState};

pub async fn healthz(State(state): State<ApiState>) -> Result<Json<Value>, ApiError> {
    state.cms.ping().await?;
    Ok(Json(json!({ "status": "ok", "cms": "ok" })))
}
