//! `GET /v1/stats`: the fleet summary (`toygres stats`).

use axum::extract::State;
use axum::Json;
use toygres_common::stats_api::FleetStats;
use toygres_common::ErrorBody;

use super::{ApiError, ApiState};

/// `GET /v1/stats`.
#[utoipa::path(get, path = "/v1/stats", tag = "instances", responses((status = 200, description = "Instances by health, changes of primary and backups in the last 24 hours, the largest lags", body = FleetStats), (status = 401, description = "Missing or wrong token", body = ErrorBody)), security(("bearer" = [])))]
pub async fn stats(State(state): State<ApiState>) -> Result<Json<FleetStats>, ApiError> {
    Ok(Json(state.cms.fleet_stats().await?))
}
