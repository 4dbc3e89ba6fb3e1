//! `/v1/instances/{name}/backups` and `/v1/backups/{id}`: taking a backup (an operation queued
//! on the instance's actor, answered `202 Accepted` with the backup's id) and reading the
//! backups the CMS records.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use toygres_common::backup_api::{BackupAccepted, BackupList, BackupView, CreateBackupRequest};
use toygres_common::names::validate_instance_name;

use super::{ApiError, ApiState};
use toygres_common::http_api::{BodyRejection, JsonObject};
use toygres_common::ErrorBody;

/// `POST /v1/instances/{name}/backups`.
#[utoipa::path(post, path = "/v1/instances/{name}/backups", tag = "backups", params(("name" = String, Path, description = "Instance name")), request_body = CreateBackupRequest, responses((status = 202, description = "Queued on the instance's actor", body = BackupAccepted), (status = 400, description = "Invalid input", body = ErrorBody), (status = 401, description = "Missing or wrong token", body = ErrorBody), (status = 404, description = "No such instance", body = ErrorBody), (status = 409, description = "Backups off, not running, or a backup in progress", body = ErrorBody)), security(("bearer" = [])))]
pub async fn create(
    State(state): State<ApiState>,
    Path(name): Path<String>,
    body: Result<JsonObject<CreateBackupRequest>, BodyRejection>,
) -> Result<(StatusCode, Json<BackupAccepted>), ApiError> {
    let JsonObject(request) = body?;
    validate_instance_name(&name).map_err(|e| ApiError::BadRequest(e.to_string()))?;
    let accepted = state.engine()?.create_backup(&name, request).await?;
    Ok((StatusCode::ACCEPTED, Json(accepted)))
}

/// `GET /v1/instances/{name}/backups`.
#[utoipa::path(get, path = "/v1/instances/{name}/backups", tag = "backups", params(("name" = String, Path, description = "Instance name")), responses((status = 200, description = "The instance's backups, newest first", body = BackupList), (status = 400, description = "Invalid input", body = ErrorBody), (status = 401, description = "Missing or wrong token", body = ErrorBody), (status = 404, description = "No such instance", body = ErrorBody)), security(("bearer" = [])))]
pub async fn list(
    State(state): State<ApiState>,
    Path(name): Path<String>,
) -> Result<Json<BackupList>, ApiError> {
    validate_instance_name(&name).map_err(|e| ApiError::BadRequest(e.to_string()))?;
    let backups = state.engine()?.list_backups(&name).await?;
    Ok(Json(BackupList { backups }))
}

/// `GET /v1/backups/{id}`.
#[utoipa::path(get, path = "/v1/backups/{id}", tag = "backups", params(("id" = String, Path, description = "Backup id")), responses((status = 200, description = "The backup", body = BackupView), (status = 401, description = "Missing or wrong token", body = ErrorBody), (status = 404, description = "No such backup", body = ErrorBody)), security(("bearer" = [])))]
pub async fn get(
    State(state): State<ApiState>,
    Path(id): Path<String>,
) -> Result<Json<BackupView>, ApiError> {
    Ok(Json(state.engine()?.get_backup(&id).await?))
}
