//! Routes that change what the server is doing: status, promote, demote, fence, unfence,
//! restart. Operations run in their own task, so a client that hangs up does not cut one short.

use std::future::Future;
use toygres_common::ErrorBody;

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use toygres_common::sidecar_api::{
    ActionResponse, DemoteRequest, DemoteResponse, PromoteRequest, PromoteResponse, RestartRequest,
    Status,
};

use super::error::ApiError;
use super::state::AppState;
use crate::postgres::OpError;

/// Runs an operation to completion even if the request is dropped.
pub async fn detached<T: Send + 'static>(
    op: impl Future<Output = Result<T, OpError>> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::spawn(op)
        .await
        .map_err(|e| {
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "failed",
                format!("operation task: {e}"),
            )
        })?
        .map_err(ApiError::from)
}

fn done(message: &str) -> Json<ActionResponse> {
    Json(ActionResponse {
        ok: true,
        message: message.into(),
    })
}

#[utoipa::path(get, path = "/v1/status", tag = "lifecycle", responses((status = 200, description = "The member's status", body = Status), (status = 401, description = "Missing or wrong token", body = ErrorBody)), security(("bearer" = [])))]
pub async fn status(State(state): State<AppState>) -> Json<Status> {
    Json(state.member.status().await)
}

/// `POST /v1/promote`, with an optional body `{"force": true, "sync": {…}}`.
#[utoipa::path(post, path = "/v1/promote", tag = "lifecycle", request_body = Option<PromoteRequest>, responses((status = 200, description = "Promoted (or already the primary)", body = PromoteResponse), (status = 400, description = "Invalid input", body = ErrorBody), (status = 401, description = "Missing or wrong token", body = ErrorBody), (status = 409, description = "Not possible in the member's current state", body = ErrorBody), (status = 503, description = "Postgres is not available", body = ErrorBody)), security(("bearer" = [])))]
pub async fn promote(
    State(state): State<AppState>,
    body: Result<Option<Json<PromoteRequest>>, axum::extract::rejection::JsonRejection>,
) -> Result<Json<PromoteResponse>, ApiError> {
    let req = body?.map(|Json(req)| req).unwrap_or_default();
    if let Some(policy) = &req.sync {
        crate::postgres::sync::validate_policy(policy, &state.member.cfg.member_name)?;
    }
    let member = state.member.clone();
    Ok(Json(
        detached(async move { member.promote(req.force, req.sync).await }).await?,
    ))
}

#[utoipa::path(post, path = "/v1/demote", tag = "lifecycle", request_body = DemoteRequest, responses((status = 200, description = "Now a standby of the primary", body = DemoteResponse), (status = 400, description = "Invalid input", body = ErrorBody), (status = 401, description = "Missing or wrong token", body = ErrorBody), (status = 409, description = "Not possible in the member's current state", body = ErrorBody), (status = 503, description = "Postgres is not available", body = ErrorBody)), security(("bearer" = [])))]
pub async fn demote(
    State(state): State<AppState>,
    body: Result<
        toygres_common::http_api::JsonObject<DemoteRequest>,
        toygres_common::http_api::BodyRejection,
    >,
) -> Result<Json<DemoteResponse>, ApiError> {
    let toygres_common::http_api::JsonObject(req) = body?;
    // Only a member of this instance is sent credentials (a rewind uses the superuser's).
    crate::postgres::membership::check_member_address(&state.member.cfg, &req.primary).await?;
    let member = state.member.clone();
    Ok(Json(
        detached(async move { member.demote(&req).await }).await?,
    ))
}

#[utoipa::path(post, path = "/v1/fence", tag = "lifecycle", responses((status = 200, description = "Postgres stopped and kept stopped", body = ActionResponse), (status = 401, description = "Missing or wrong token", body = ErrorBody), (status = 409, description = "Not possible in the member's current state", body = ErrorBody), (status = 503, description = "Postgres is not available", body = ErrorBody)), security(("bearer" = [])))]
pub async fn fence(State(state): State<AppState>) -> Result<Json<ActionResponse>, ApiError> {
    let member = state.member.clone();
    detached(async move { member.fence().await }).await?;
    Ok(done("fenced: postgres stopped"))
}

#[utoipa::path(post, path = "/v1/unfence", tag = "lifecycle", responses((status = 200, description = "Postgres running again", body = ActionResponse), (status = 401, description = "Missing or wrong token", body = ErrorBody), (status = 409, description = "Not possible in the member's current state", body = ErrorBody), (status = 503, description = "Postgres is not available", body = ErrorBody)), security(("bearer" = [])))]
pub async fn unfence(State(state): State<AppState>) -> Result<Json<ActionResponse>, ApiError> {
    let member = state.member.clone();
    detached(async move { member.unfence().await }).await?;
    Ok(done("unfenced: postgres running"))
}

/// `POST /v1/restart`, with an optional [`RestartRequest`]: values to fall back to when
/// Postgres does not start with its configuration (the answer then says `ok: false`, and why).
#[utoipa::path(post, path = "/v1/restart", tag = "lifecycle", request_body = Option<RestartRequest>, responses((status = 200, description = "Restarted, or running again with the fallback values", body = ActionResponse), (status = 400, description = "Invalid input", body = ErrorBody), (status = 401, description = "Missing or wrong token", body = ErrorBody), (status = 409, description = "Not possible in the member's current state", body = ErrorBody), (status = 503, description = "Postgres is not available", body = ErrorBody)), security(("bearer" = [])))]
pub async fn restart(
    State(state): State<AppState>,
    body: Result<Option<Json<RestartRequest>>, axum::extract::rejection::JsonRejection>,
) -> Result<Json<ActionResponse>, ApiError> {
    // A body that is not the documented object is a 400 (not axum's 422), as for promote.
    let fallback = body?.map(|Json(r)| r.fallback).unwrap_or_default();
    let member = state.member.clone();
    let fell_back = detached(async move { member.restart_with_fallback(&fallback).await }).await?;
    Ok(match fell_back {
        None => done("postgres restarted"),
        Some(why) => Json(ActionResponse {
            ok: false,
            message: format!(
                "did not start with its new configuration ({why}) and runs again with the \
                 previous values"
            ),
        }),
    })
}
