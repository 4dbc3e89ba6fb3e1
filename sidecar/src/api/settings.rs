//! Routes that read and change settings: `GET/PUT /v1/parameters`, `GET /v1/parameters/catalog`
//! and `PUT /v1/replication`.

use axum::extract::rejection::JsonRejection;
use axum::extract::State;
use axum::Json;
use toygres_common::sidecar_api::{
    ActionResponse, Parameters, ReplicationRequest, SetParametersRequest, SetParametersResponse,
};
use toygres_common::ErrorBody;

use toygres_common::parameters_api::ParameterCatalog;

use super::error::ApiError;
use super::lifecycle::detached;
use super::state::AppState;

#[utoipa::path(get, path = "/v1/parameters", tag = "settings", responses((status = 200, description = "Every setting of the server", body = Parameters), (status = 401, description = "Missing or wrong token", body = ErrorBody), (status = 503, description = "Postgres is not available", body = ErrorBody)), security(("bearer" = [])))]
pub async fn get_parameters(State(state): State<AppState>) -> Result<Json<Parameters>, ApiError> {
    Ok(Json(state.member.parameters().await?))
}

/// Every setting with its category, type, range, default and whether users may set it.
#[utoipa::path(get, path = "/v1/parameters/catalog", tag = "settings", responses((status = 200, description = "The settings catalog", body = ParameterCatalog), (status = 401, description = "Missing or wrong token", body = ErrorBody), (status = 503, description = "Postgres is not available", body = ErrorBody)), security(("bearer" = [])))]
pub async fn get_catalog(
    State(state): State<AppState>,
) -> Result<Json<ParameterCatalog>, ApiError> {
    Ok(Json(state.member.catalog().await?))
}

#[utoipa::path(put, path = "/v1/parameters", tag = "settings", request_body = SetParametersRequest, responses((status = 200, description = "Written and reloaded", body = SetParametersResponse), (status = 400, description = "Invalid input", body = ErrorBody), (status = 401, description = "Missing or wrong token", body = ErrorBody), (status = 409, description = "Not possible in the member's current state", body = ErrorBody), (status = 503, description = "Postgres is not available", body = ErrorBody)), security(("bearer" = [])))]
pub async fn put_parameters(
    State(state): State<AppState>,
    body: Result<Json<SetParametersRequest>, JsonRejection>,
) -> Result<Json<SetParametersResponse>, ApiError> {
    let Json(req) = body?;
    let member = state.member.clone();
    Ok(Json(
        detached(async move { member.set_parameters(&req).await }).await?,
    ))
}

#[utoipa::path(put, path = "/v1/replication", tag = "settings", request_body = ReplicationRequest, responses((status = 200, description = "Applied", body = ActionResponse), (status = 400, description = "Invalid input", body = ErrorBody), (status = 401, description = "Missing or wrong token", body = ErrorBody), (status = 409, description = "Not possible in the member's current state", body = ErrorBody), (status = 503, description = "Postgres is not available", body = ErrorBody)), security(("bearer" = [])))]
pub async fn put_replication(
    State(state): State<AppState>,
    body: Result<Json<ReplicationRequest>, JsonRejection>,
) -> Result<Json<ActionResponse>, ApiError> {
    let Json(req) = body?;
    let member = state.member.clone();
    let message = detached(async move { member.set_replication(&req).await }).await?;
    Ok(Json(ActionResponse { ok: true, message }))
}

#[utoipa::path(delete, path = "/v1/replication/slots/{member}", tag = "settings", params(("member" = String, Path, description = "The standby whose slot is dropped")), responses((status = 200, description = "Dropped, or there was none", body = ActionResponse), (status = 400, description = "Invalid input", body = ErrorBody), (status = 401, description = "Missing or wrong token", body = ErrorBody), (status = 409, description = "Not possible in the member's current state", body = ErrorBody), (status = 503, description = "Postgres is not available", body = ErrorBody)), security(("bearer" = [])))]
pub async fn delete_slot(
    State(state): State<AppState>,
    axum::extract::Path(member): axum::extract::Path<String>,
) -> Result<Json<ActionResponse>, ApiError> {
    let m = state.member.clone();
    let dropped = detached(async move { m.drop_slot(&member).await }).await?;
    Ok(Json(ActionResponse {
        ok: true,
        message: if dropped {
            "slot dropped".into()
        } else {
            "no such slot".into()
        },
    }))
}
