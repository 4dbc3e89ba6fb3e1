//! `/v1/secrets/{name}`: registering the credentials of an object store under a name that
//! instances' backups then refer to (`backup.credentials_secret`). Reads answer the setting
//! names only; the values are never sent back.

use axum::extract::{Path, State};
use axum::Json;
use toygres_common::http_api::{BodyRejection, JsonObject};
use toygres_common::store_secret_api::{StoreSecretRequest, StoreSecretView};
use toygres_common::ErrorBody;

use super::{ApiError, ApiState};

/// `PUT /v1/secrets/{name}`.
#[utoipa::path(put, path = "/v1/secrets/{name}", tag = "backups", params(("name" = String, Path, description = "Secret name")), request_body = StoreSecretRequest, responses((status = 200, description = "Stored; its setting names", body = StoreSecretView), (status = 400, description = "Invalid input", body = ErrorBody), (status = 401, description = "Missing or wrong token", body = ErrorBody)), security(("bearer" = [])))]
pub async fn put(
    State(state): State<ApiState>,
    Path(name): Path<String>,
    body: Result<JsonObject<StoreSecretRequest>, BodyRejection>,
) -> Result<Json<StoreSecretView>, ApiError> {
    let JsonObject(request) = body?;
    Ok(Json(
        state.engine()?.put_store_secret(&name, request).await?,
    ))
}

/// `GET /v1/secrets/{name}`.
#[utoipa::path(get, path = "/v1/secrets/{name}", tag = "backups", params(("name" = String, Path, description = "Secret name")), responses((status = 200, description = "Its setting names (never values)", body = StoreSecretView), (status = 400, description = "Invalid input", body = ErrorBody), (status = 401, description = "Missing or wrong token", body = ErrorBody), (status = 404, description = "No such secret", body = ErrorBody)), security(("bearer" = [])))]
pub async fn get(
    State(state): State<ApiState>,
    Path(name): Path<String>,
) -> Result<Json<StoreSecretView>, ApiError> {
    Ok(Json(state.engine()?.store_secret(&name).await?))
}

/// `DELETE /v1/secrets/{name}`.
#[utoipa::path(delete, path = "/v1/secrets/{name}", tag = "backups", params(("name" = String, Path, description = "Secret name")), responses((status = 200, description = "Deleted; the setting names it had", body = StoreSecretView), (status = 400, description = "Invalid input", body = ErrorBody), (status = 401, description = "Missing or wrong token", body = ErrorBody), (status = 404, description = "No such secret", body = ErrorBody), (status = 409, description = "An instance's backups use it", body = ErrorBody)), security(("bearer" = [])))]
pub async fn delete(
    State(state): State<ApiState>,
    Path(name): Path<String>,
) -> Result<Json<StoreSecretView>, ApiError> {
    Ok(Json(state.engine()?.delete_store_secret(&name).await?))
}
