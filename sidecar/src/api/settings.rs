//! Routes that read and change settings: `GET/PUT /v1/parameters`, `GET /v1/parameters/catalog`,
//! `PUT /v1/replication` and `PUT /v1/notify`.

use axum::extract::rejection::JsonRejection;
use axum::extract::State;
use axum::Json;
use toygres_common::sidecar_api::{
    ActionResponse, NotifyTarget, Parameters, ReplicationRequest, SetParametersRequest,
    SetParametersResponse,
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

/// Points the member's reports at another controller API: a controller that takes over members
/// an earlier one started (on another address, or over plain HTTP) makes them report to itself.
#[utoipa::path(put, path = "/v1/notify", tag = "settings", request_body = NotifyTarget, responses((status = 200, description = "Reports go there from now on", body = ActionResponse), (status = 400, description = "Invalid input", body = ErrorBody), (status = 401, description = "Missing or wrong token", body = ErrorBody)), security(("bearer" = [])))]
pub async fn put_notify(
    State(state): State<AppState>,
    body: Result<
        toygres_common::http_api::JsonObject<NotifyTarget>,
        toygres_common::http_api::BodyRejection,
    >,
) -> Result<Json<ActionResponse>, ApiError> {
    let toygres_common::http_api::JsonObject(target) = body?;
    let member = &state.member.cfg.member_name;
    let notifier = crate::notify::Notifier::new(
        &target.url,
        &state.report_instance,
        member,
        &state.token,
        target.ca_pem.as_deref().map(str::as_bytes),
    )
    .map_err(|e| {
        ApiError::new(
            axum::http::StatusCode::BAD_REQUEST,
            "invalid_notify_target",
            format!("{e:#}"),
        )
    })?;
    let url = notifier.base_url().to_string();
    state.member.set_notifier(notifier);
    tracing::info!(url, "reports go to this controller from now on");
    Ok(Json(ActionResponse {
        ok: true,
        message: format!("reports go to {url}"),
    }))
}
