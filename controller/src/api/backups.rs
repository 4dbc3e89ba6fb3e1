//! `/v1/instances/{name}/backups` and `/v1/backups/{id}`: taking a backup (an operation queued
//! on the instance's actor, answered `202 Accepted` with the backup's id) and reading the
//! backups the CMS records; deleting them (`DELETE /v1/backups/{id}`, `POST
//! /v1/instances/{name}/backups/cleanup`: operations on the actor too); the recoverability
//! window; restoring them into a new instance (`POST /v1/instances/{name}/restore`, answered
//! with the new instance's create operation); named restore points to restore to (`POST
//! /v1/instances/{name}/backups/restore-points`); rotating the backup encryption key (`POST
//! /v1/instances/{name}/backups/rotate-key`).

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use toygres_common::backup_api::{
    BackupAccepted, BackupList, BackupScheduleRequest, BackupScheduleView, BackupView, CleanupPlan,
    CreateBackupRequest, RecoverabilityWindow, RestorePointCreate, RestorePointView,
    RestoreRequest, RotateKeyRequest, RotateKeyView,
};
use toygres_common::controller_api::OperationAccepted;
use toygres_common::names::validate_instance_name;

use super::{ApiError, ApiState};
use toygres_common::http_api::{BodyRejection, JsonObject};
use toygres_common::ErrorBody;

/// `POST /v1/instances/{name}/backups`.
#[utoipa::path(post, path = "/v1/instances/{name}/backups", tag = "backups", params(("name" = String, Path, description = "Instance name")), request_body = CreateBackupRequest, responses((status = 202, description = "Queued on the instance's actor", body = BackupAccepted), (status = 400, description = "Invalid input", body = ErrorBody), (status = 401, description = "Missing or wrong token", body = ErrorBody), (status = 404, description = "No such instance", body = ErrorBody), (status = 409, description = "Backups off, not running, or a backup in progress", body = ErrorBody), (status = 429, description = "The instance's operation queue is full", body = ErrorBody)), security(("bearer" = [])))]
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
#[utoipa::path(get, path = "/v1/backups/{id}", tag = "backups", params(("id" = String, Path, description = "Backup id")), responses((status = 200, description = "The backup", body = BackupView), (status = 400, description = "Invalid input", body = ErrorBody), (status = 401, description = "Missing or wrong token", body = ErrorBody), (status = 404, description = "No such backup", body = ErrorBody)), security(("bearer" = [])))]
pub async fn get(
    State(state): State<ApiState>,
    Path(id): Path<String>,
) -> Result<Json<BackupView>, ApiError> {
    Ok(Json(state.engine()?.get_backup(&id).await?))
}

/// `POST /v1/instances/{name}/restore`.
#[utoipa::path(post, path = "/v1/instances/{name}/restore", tag = "backups", params(("name" = String, Path, description = "The source instance")), request_body = RestoreRequest, responses((status = 202, description = "The new instance's create operation started (in place: the restore operation, queued on the instance)", body = OperationAccepted), (status = 400, description = "Invalid input, a target the source's backups cannot reach (before the first backup, in the future), or an in-place restore without \"confirm\" naming the instance", body = ErrorBody), (status = 401, description = "Missing or wrong token", body = ErrorBody), (status = 404, description = "No such instance or backup", body = ErrorBody), (status = 409, description = "The new name is taken, the source has no backups, or (in place) the instance is not running", body = ErrorBody), (status = 429, description = "The instance's operation queue is full", body = ErrorBody)), security(("bearer" = [])))]
pub async fn restore(
    State(state): State<ApiState>,
    Path(name): Path<String>,
    body: Result<JsonObject<RestoreRequest>, BodyRejection>,
) -> Result<(StatusCode, Json<OperationAccepted>), ApiError> {
    let JsonObject(request) = body?;
    validate_instance_name(&name).map_err(|e| ApiError::BadRequest(e.to_string()))?;
    let accepted = state.engine()?.restore_instance(&name, request).await?;
    Ok((StatusCode::ACCEPTED, Json(accepted)))
}

/// `POST /v1/instances/{name}/backups/restore-points`: `pg_create_restore_point` on the primary,
/// then a WAL switch that archives it.
#[utoipa::path(post, path = "/v1/instances/{name}/backups/restore-points", tag = "backups", params(("name" = String, Path, description = "Instance name")), request_body = RestorePointCreate, responses((status = 201, description = "The restore point, made and archived", body = RestorePointView), (status = 400, description = "Invalid name", body = ErrorBody), (status = 401, description = "Missing or wrong token", body = ErrorBody), (status = 404, description = "No such instance", body = ErrorBody), (status = 409, description = "Backups off, or no primary answers", body = ErrorBody)), security(("bearer" = [])))]
pub async fn restore_point(
    State(state): State<ApiState>,
    Path(name): Path<String>,
    body: Result<JsonObject<RestorePointCreate>, BodyRejection>,
) -> Result<(StatusCode, Json<RestorePointView>), ApiError> {
    let JsonObject(request) = body?;
    validate_instance_name(&name).map_err(|e| ApiError::BadRequest(e.to_string()))?;
    let made = state.engine()?.create_restore_point(&name, request).await?;
    Ok((StatusCode::CREATED, Json(made)))
}

/// `POST /v1/instances/{name}/backups/rotate-key`: new WAL and backups are encrypted with the
/// key in the named store secret; what the old key encrypted stays readable.
#[utoipa::path(post, path = "/v1/instances/{name}/backups/rotate-key", tag = "backups", params(("name" = String, Path, description = "Instance name")), request_body = RotateKeyRequest, responses((status = 200, description = "The key that encrypts from now on, and the members that took it", body = RotateKeyView), (status = 400, description = "Invalid input, or no such store secret with a key", body = ErrorBody), (status = 401, description = "Missing or wrong token", body = ErrorBody), (status = 404, description = "No such instance", body = ErrorBody), (status = 409, description = "Backups off or not encrypted, or the primary did not take the key", body = ErrorBody)), security(("bearer" = [])))]
pub async fn rotate_key(
    State(state): State<ApiState>,
    Path(name): Path<String>,
    body: Result<JsonObject<RotateKeyRequest>, BodyRejection>,
) -> Result<Json<RotateKeyView>, ApiError> {
    let JsonObject(request) = body?;
    validate_instance_name(&name).map_err(|e| ApiError::BadRequest(e.to_string()))?;
    let rotated = state.engine()?.rotate_backup_key(&name, request).await?;
    Ok(Json(rotated))
}

/// `GET /v1/instances/{name}/backups/schedule`.
#[utoipa::path(get, path = "/v1/instances/{name}/backups/schedule", tag = "backups", params(("name" = String, Path, description = "Instance name")), responses((status = 200, description = "The base backup schedule and its next run", body = BackupScheduleView), (status = 400, description = "Invalid input", body = ErrorBody), (status = 401, description = "Missing or wrong token", body = ErrorBody), (status = 404, description = "No such instance", body = ErrorBody), (status = 409, description = "Backups off", body = ErrorBody)), security(("bearer" = [])))]
pub async fn get_schedule(
    State(state): State<ApiState>,
    Path(name): Path<String>,
) -> Result<Json<BackupScheduleView>, ApiError> {
    validate_instance_name(&name).map_err(|e| ApiError::BadRequest(e.to_string()))?;
    Ok(Json(state.engine()?.backup_schedule(&name).await?))
}

/// `PUT /v1/instances/{name}/backups/schedule`.
#[utoipa::path(put, path = "/v1/instances/{name}/backups/schedule", tag = "backups", params(("name" = String, Path, description = "Instance name")), request_body = BackupScheduleRequest, responses((status = 200, description = "The schedule as changed", body = BackupScheduleView), (status = 400, description = "Invalid cron expression", body = ErrorBody), (status = 401, description = "Missing or wrong token", body = ErrorBody), (status = 404, description = "No such instance", body = ErrorBody), (status = 409, description = "Backups off", body = ErrorBody)), security(("bearer" = [])))]
pub async fn set_schedule(
    State(state): State<ApiState>,
    Path(name): Path<String>,
    body: Result<JsonObject<BackupScheduleRequest>, BodyRejection>,
) -> Result<Json<BackupScheduleView>, ApiError> {
    let JsonObject(request) = body?;
    validate_instance_name(&name).map_err(|e| ApiError::BadRequest(e.to_string()))?;
    Ok(Json(
        state.engine()?.set_backup_schedule(&name, request).await?,
    ))
}

/// `GET /v1/instances/{name}/backups/cleanup`: a dry run of the retention policy.
#[utoipa::path(get, path = "/v1/instances/{name}/backups/cleanup", tag = "backups", params(("name" = String, Path, description = "Instance name")), responses((status = 200, description = "What a cleanup now would keep and delete", body = CleanupPlan), (status = 400, description = "Invalid input", body = ErrorBody), (status = 401, description = "Missing or wrong token", body = ErrorBody), (status = 404, description = "No such instance", body = ErrorBody), (status = 409, description = "Backups off", body = ErrorBody)), security(("bearer" = [])))]
pub async fn cleanup_plan(
    State(state): State<ApiState>,
    Path(name): Path<String>,
) -> Result<Json<CleanupPlan>, ApiError> {
    validate_instance_name(&name).map_err(|e| ApiError::BadRequest(e.to_string()))?;
    Ok(Json(state.engine()?.cleanup_plan(&name).await?))
}

/// `DELETE /v1/backups/{id}`: deletes the backup from the store, with the archived WAL only it
/// needed.
#[utoipa::path(delete, path = "/v1/backups/{id}", tag = "backups", params(("id" = String, Path, description = "Backup id")), responses((status = 202, description = "The deletion, queued on the instance's actor", body = OperationAccepted), (status = 400, description = "Invalid input", body = ErrorBody), (status = 401, description = "Missing or wrong token", body = ErrorBody), (status = 404, description = "No such backup", body = ErrorBody), (status = 409, description = "The backup is running, or the instance's only base backup, or the instance is not running", body = ErrorBody), (status = 429, description = "The instance's operation queue is full", body = ErrorBody)), security(("bearer" = [])))]
pub async fn delete(
    State(state): State<ApiState>,
    Path(id): Path<String>,
) -> Result<(StatusCode, Json<OperationAccepted>), ApiError> {
    let accepted = state.engine()?.delete_backup(&id).await?;
    Ok((StatusCode::ACCEPTED, Json(accepted)))
}

/// `POST /v1/backups/{id}/verify`: restores the base backup aside and queries it.
#[utoipa::path(post, path = "/v1/backups/{id}/verify", tag = "backups", params(("id" = String, Path, description = "Backup id")), responses((status = 202, description = "The verification, queued on the instance's actor", body = OperationAccepted), (status = 400, description = "Invalid input", body = ErrorBody), (status = 401, description = "Missing or wrong token", body = ErrorBody), (status = 404, description = "No such backup", body = ErrorBody), (status = 409, description = "Not a succeeded base backup, or the instance is not running", body = ErrorBody), (status = 429, description = "The instance's operation queue is full", body = ErrorBody)), security(("bearer" = [])))]
pub async fn verify(
    State(state): State<ApiState>,
    Path(id): Path<String>,
) -> Result<(StatusCode, Json<OperationAccepted>), ApiError> {
    let accepted = state.engine()?.verify_backup(&id).await?;
    Ok((StatusCode::ACCEPTED, Json(accepted)))
}

/// `POST /v1/instances/{name}/backups/cleanup`: applies the retention policy now.
#[utoipa::path(post, path = "/v1/instances/{name}/backups/cleanup", tag = "backups", params(("name" = String, Path, description = "Instance name")), responses((status = 202, description = "The cleanup, queued on the instance's actor", body = OperationAccepted), (status = 400, description = "Invalid input", body = ErrorBody), (status = 401, description = "Missing or wrong token", body = ErrorBody), (status = 404, description = "No such instance", body = ErrorBody), (status = 409, description = "Backups off, or the instance is not running", body = ErrorBody), (status = 429, description = "The instance's operation queue is full", body = ErrorBody)), security(("bearer" = [])))]
pub async fn cleanup(
    State(state): State<ApiState>,
    Path(name): Path<String>,
) -> Result<(StatusCode, Json<OperationAccepted>), ApiError> {
    validate_instance_name(&name).map_err(|e| ApiError::BadRequest(e.to_string()))?;
    let accepted = state.engine()?.cleanup_backups(&name).await?;
    Ok((StatusCode::ACCEPTED, Json(accepted)))
}

/// `GET /v1/instances/{name}/backups/window`: the recoverability window.
#[utoipa::path(get, path = "/v1/instances/{name}/backups/window", tag = "backups", params(("name" = String, Path, description = "Instance name")), responses((status = 200, description = "From the end of the oldest kept base backup to the last archived WAL", body = RecoverabilityWindow), (status = 400, description = "Invalid input", body = ErrorBody), (status = 401, description = "Missing or wrong token", body = ErrorBody), (status = 404, description = "No such instance", body = ErrorBody), (status = 409, description = "Backups off", body = ErrorBody)), security(("bearer" = [])))]
pub async fn window(
    State(state): State<ApiState>,
    Path(name): Path<String>,
) -> Result<Json<RecoverabilityWindow>, ApiError> {
    validate_instance_name(&name).map_err(|e| ApiError::BadRequest(e.to_string()))?;
    Ok(Json(state.engine()?.recoverability_window(&name).await?))
}
