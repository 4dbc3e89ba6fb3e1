//! `/v1/instances/{name}/switchover`, `/failover` and `/ha`: planned and unplanned changes of
//! primary (operations queued on the instance's actor, answered `202 Accepted`), and the
//! instance's automatic-failover and synchronous-replication settings.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use toygres_common::controller_api::{
    FailoverRequest, HaSettings, HaSettingsPatch, OperationAccepted, SwitchoverRequest,
};
use toygres_common::names::validate_instance_name;

use toygres_common::http_api::{BodyRejection, JsonObject};
use toygres_common::ErrorBody;

use super::{ApiError, ApiState};

/// `POST /v1/instances/{name}/switchover`.
#[utoipa::path(post, path = "/v1/instances/{name}/switchover", tag = "ha", params(("name" = String, Path, description = "Instance name")), request_body = SwitchoverRequest, responses((status = 202, description = "Queued on the instance's actor; its progress shows the switchover's state", body = OperationAccepted), (status = 400, description = "Invalid input", body = ErrorBody), (status = 401, description = "Missing or wrong token", body = ErrorBody), (status = 404, description = "No such instance or member", body = ErrorBody), (status = 409, description = "Not running, no standby, or the target is the primary", body = ErrorBody), (status = 429, description = "The instance's operation queue is full", body = ErrorBody)), security(("bearer" = [])))]
pub async fn switchover(
    State(state): State<ApiState>,
    Path(name): Path<String>,
    body: Result<JsonObject<SwitchoverRequest>, BodyRejection>,
) -> Result<(StatusCode, Json<OperationAccepted>), ApiError> {
    let JsonObject(request) = body?;
    validate_instance_name(&name).map_err(|e| ApiError::BadRequest(e.to_string()))?;
    let accepted = state.engine()?.switchover(&name, request).await?;
    Ok((StatusCode::ACCEPTED, Json(accepted)))
}

/// `POST /v1/instances/{name}/failover`.
#[utoipa::path(post, path = "/v1/instances/{name}/failover", tag = "ha", params(("name" = String, Path, description = "Instance name")), request_body = FailoverRequest, responses((status = 202, description = "Queued on the instance's actor", body = OperationAccepted), (status = 400, description = "Invalid input", body = ErrorBody), (status = 401, description = "Missing or wrong token", body = ErrorBody), (status = 404, description = "No such instance or member", body = ErrorBody), (status = 409, description = "The primary is healthy (use force), or the instance is not running", body = ErrorBody), (status = 429, description = "The instance's operation queue is full", body = ErrorBody)), security(("bearer" = [])))]
pub async fn failover(
    State(state): State<ApiState>,
    Path(name): Path<String>,
    body: Result<JsonObject<FailoverRequest>, BodyRejection>,
) -> Result<(StatusCode, Json<OperationAccepted>), ApiError> {
    let JsonObject(request) = body?;
    validate_instance_name(&name).map_err(|e| ApiError::BadRequest(e.to_string()))?;
    let accepted = state.engine()?.failover(&name, request).await?;
    Ok((StatusCode::ACCEPTED, Json(accepted)))
}

/// `GET /v1/instances/{name}/ha`.
#[utoipa::path(get, path = "/v1/instances/{name}/ha", tag = "ha", params(("name" = String, Path, description = "Instance name")), responses((status = 200, description = "The HA settings", body = HaSettings), (status = 400, description = "Invalid input", body = ErrorBody), (status = 401, description = "Missing or wrong token", body = ErrorBody), (status = 404, description = "No such instance", body = ErrorBody)), security(("bearer" = [])))]
pub async fn get_settings(
    State(state): State<ApiState>,
    Path(name): Path<String>,
) -> Result<Json<HaSettings>, ApiError> {
    validate_instance_name(&name).map_err(|e| ApiError::BadRequest(e.to_string()))?;
    Ok(Json(state.engine()?.ha_settings(&name).await?))
}

/// `PUT /v1/instances/{name}/ha`: the fields given change, the others stay.
#[utoipa::path(put, path = "/v1/instances/{name}/ha", tag = "ha", params(("name" = String, Path, description = "Instance name")), request_body = HaSettingsPatch, responses((status = 200, description = "The new HA settings", body = HaSettings), (status = 400, description = "Invalid input", body = ErrorBody), (status = 401, description = "Missing or wrong token", body = ErrorBody), (status = 404, description = "No such instance", body = ErrorBody)), security(("bearer" = [])))]
pub async fn set_settings(
    State(state): State<ApiState>,
    Path(name): Path<String>,
    body: Result<JsonObject<HaSettingsPatch>, BodyRejection>,
) -> Result<Json<HaSettings>, ApiError> {
    let JsonObject(patch) = body?;
    validate_instance_name(&name).map_err(|e| ApiError::BadRequest(e.to_string()))?;
    Ok(Json(state.engine()?.set_ha_settings(&name, &patch).await?))
}
