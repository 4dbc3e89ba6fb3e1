//! Backup routes: `POST /v1/backups` (base or logical), `GET /v1/backups`,
//! `POST /v1/backups/{id}/verify`, `POST /v1/backups/retention`,
//! `POST /v1/restores/logical`, `POST /v1/wal/switch`, `POST /v1/wal/restore-point`,
//! `GET /v1/wal/archived` and `POST /v1/encryption/reload`. Each runs in its own task: a client
//! that hangs up does not cut a backup short.

use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, Query, State};
use axum::Json;
use toygres_common::sidecar_api::{
    ActionResponse, ArchiveEnd, BackupKind, BackupList, BackupManifest, BackupRequest,
    EncryptionKeys, LogicalRestoreRequest, RestorePointRequest, RestorePointResponse,
    RestoreProgress, RetentionRequest, RetentionResponse, VerifyResponse, WalSwitchResponse,
};
use toygres_common::ErrorBody;

use super::error::ApiError;
use super::lifecycle::detached;
use super::state::AppState;
use crate::backup::{self, base, logical, retention, stats, verify};
use crate::postgres::OpError;

#[utoipa::path(post, path = "/v1/backups", tag = "backups", request_body = BackupRequest, responses((status = 200, description = "The backup's manifest", body = BackupManifest), (status = 400, description = "Invalid input", body = ErrorBody), (status = 401, description = "Missing or wrong token", body = ErrorBody), (status = 409, description = "Not possible in the member's current state", body = ErrorBody), (status = 503, description = "Postgres is not available", body = ErrorBody)), security(("bearer" = [])))]
pub async fn create(
    State(state): State<AppState>,
    body: Result<Json<BackupRequest>, JsonRejection>,
) -> Result<Json<BackupManifest>, ApiError> {
    let Json(req) = body?;
    let member = state.member.clone();
    Ok(Json(
        detached(async move {
            let started = std::time::Instant::now();
            let taken = match req.kind {
                BackupKind::Base => {
                    if !req.databases.is_empty() {
                        return Err(OpError::invalid(
                            "invalid_request",
                            "a base backup copies every database: leave out \"databases\"",
                        ));
                    }
                    base::take_base_backup(&member).await
                }
                BackupKind::Logical => logical::take_logical_backup(&member, &req.databases).await,
            };
            // A request refused as invalid is not a backup that failed; anything else is.
            if !matches!(taken, Err(OpError::Invalid { .. })) {
                stats::record(req.kind, started.elapsed(), taken.as_ref().ok());
            }
            taken
        })
        .await?,
    ))
}

#[utoipa::path(get, path = "/v1/backups", tag = "backups", responses((status = 200, description = "Complete backups, oldest first", body = BackupList), (status = 400, description = "Invalid input", body = ErrorBody), (status = 401, description = "Missing or wrong token", body = ErrorBody), (status = 409, description = "Not possible in the member's current state", body = ErrorBody), (status = 503, description = "Postgres is not available", body = ErrorBody)), security(("bearer" = [])))]
pub async fn list(State(state): State<AppState>) -> Result<Json<BackupList>, ApiError> {
    let member = state.member.clone();
    let backups = detached(async move {
        let catalog = backup::catalog_of(&member)?;
        Ok(catalog.list().await?)
    })
    .await?;
    Ok(Json(BackupList { backups }))
}

#[utoipa::path(post, path = "/v1/backups/{id}/verify", tag = "backups", params(("id" = String, Path, description = "Backup id")), responses((status = 200, description = "What the check found", body = VerifyResponse), (status = 400, description = "Invalid input", body = ErrorBody), (status = 401, description = "Missing or wrong token", body = ErrorBody), (status = 404, description = "No such backup", body = ErrorBody), (status = 409, description = "Not possible in the member's current state", body = ErrorBody), (status = 503, description = "Postgres is not available", body = ErrorBody)), security(("bearer" = [])))]
pub async fn verify(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<VerifyResponse>, ApiError> {
    let member = state.member.clone();
    Ok(Json(
        detached(async move { verify::verify_base_backup(&member, &id).await }).await?,
    ))
}

#[utoipa::path(post, path = "/v1/backups/retention", tag = "backups", request_body = RetentionRequest, responses((status = 200, description = "What was kept and deleted", body = RetentionResponse), (status = 400, description = "Invalid input", body = ErrorBody), (status = 401, description = "Missing or wrong token", body = ErrorBody), (status = 409, description = "Not possible in the member's current state", body = ErrorBody), (status = 503, description = "Postgres is not available", body = ErrorBody)), security(("bearer" = [])))]
pub async fn retention(
    State(state): State<AppState>,
    body: Result<Json<RetentionRequest>, JsonRejection>,
) -> Result<Json<RetentionResponse>, ApiError> {
    let Json(req) = body?;
    let member = state.member.clone();
    Ok(Json(
        detached(async move { retention::apply(&member, &req.keep).await }).await?,
    ))
}

#[utoipa::path(post, path = "/v1/restores/logical", tag = "backups", request_body = LogicalRestoreRequest, responses((status = 200, description = "Restored", body = ActionResponse), (status = 400, description = "Invalid input", body = ErrorBody), (status = 401, description = "Missing or wrong token", body = ErrorBody), (status = 404, description = "No such backup or database", body = ErrorBody), (status = 409, description = "Not possible in the member's current state", body = ErrorBody), (status = 503, description = "Postgres is not available", body = ErrorBody)), security(("bearer" = [])))]
pub async fn restore_logical(
    State(state): State<AppState>,
    body: Result<Json<LogicalRestoreRequest>, JsonRejection>,
) -> Result<Json<ActionResponse>, ApiError> {
    let Json(req) = body?;
    let member = state.member.clone();
    let message = detached(async move { logical::restore(&member, &req).await }).await?;
    Ok(Json(ActionResponse { ok: true, message }))
}

#[utoipa::path(post, path = "/v1/wal/switch", tag = "backups", responses((status = 200, description = "The segment closed", body = WalSwitchResponse), (status = 400, description = "Invalid input", body = ErrorBody), (status = 401, description = "Missing or wrong token", body = ErrorBody), (status = 409, description = "Not possible in the member's current state", body = ErrorBody), (status = 503, description = "Postgres is not available", body = ErrorBody)), security(("bearer" = [])))]
pub async fn switch_wal(
    State(state): State<AppState>,
) -> Result<Json<WalSwitchResponse>, ApiError> {
    let member = state.member.clone();
    Ok(Json(
        detached(async move {
            crate::archive::switch::switch_and_wait(&member, crate::archive::switch::ARCHIVE_WAIT)
                .await
        })
        .await?,
    ))
}

#[utoipa::path(post, path = "/v1/wal/restore-point", tag = "backups", request_body = RestorePointRequest, responses((status = 200, description = "The restore point, made and archived", body = RestorePointResponse), (status = 400, description = "Invalid input", body = ErrorBody), (status = 401, description = "Missing or wrong token", body = ErrorBody), (status = 409, description = "Not possible in the member's current state", body = ErrorBody), (status = 503, description = "Postgres is not available", body = ErrorBody)), security(("bearer" = [])))]
pub async fn restore_point(
    State(state): State<AppState>,
    body: Result<Json<RestorePointRequest>, JsonRejection>,
) -> Result<Json<RestorePointResponse>, ApiError> {
    let Json(req) = body?;
    let member = state.member.clone();
    Ok(Json(
        detached(async move {
            crate::archive::switch::restore_point(
                &member,
                &req.name,
                crate::archive::switch::ARCHIVE_WAIT,
            )
            .await
        })
        .await?,
    ))
}

#[utoipa::path(get, path = "/v1/restore/progress", tag = "backups", responses((status = 200, description = "How far the restore this member bootstraps from has come", body = RestoreProgress), (status = 401, description = "Missing or wrong token", body = ErrorBody), (status = 404, description = "This member restores nothing (`not_restoring`)", body = ErrorBody)), security(("bearer" = [])))]
pub async fn restore_progress() -> Result<Json<RestoreProgress>, ApiError> {
    crate::restore::progress::snapshot()
        .map(Json)
        .ok_or_else(|| {
            ApiError::new(
                axum::http::StatusCode::NOT_FOUND,
                "not_restoring",
                "this member was not made from a backup since its sidecar started",
            )
        })
}

#[utoipa::path(get, path = "/v1/wal/archived", tag = "backups", responses((status = 200, description = "The newest archived segment", body = ArchiveEnd), (status = 400, description = "Invalid input", body = ErrorBody), (status = 401, description = "Missing or wrong token", body = ErrorBody), (status = 409, description = "Not possible in the member's current state", body = ErrorBody), (status = 503, description = "Postgres is not available", body = ErrorBody)), security(("bearer" = [])))]
pub async fn archive_end(State(state): State<AppState>) -> Result<Json<ArchiveEnd>, ApiError> {
    let member = state.member.clone();
    Ok(Json(
        detached(async move { crate::archive::switch::archive_end(&member).await }).await?,
    ))
}

/// `POST /v1/encryption/reload`'s query.
#[derive(Debug, Default, serde::Deserialize, utoipa::IntoParams)]
pub struct ReloadQuery {
    /// Read the key ring again only once its `ring.version` file reads this (a ring its
    /// platform updates late, like a mounted Kubernetes Secret); waits up to 60 s for it.
    pub ring_version: Option<String>,
}

#[utoipa::path(post, path = "/v1/encryption/reload", tag = "backups", params(ReloadQuery), responses((status = 200, description = "The keys the member holds now, by id", body = EncryptionKeys), (status = 401, description = "Missing or wrong token", body = ErrorBody), (status = 500, description = "The key ring could not be read; the keys stay as they were", body = ErrorBody)), security(("bearer" = [])))]
pub async fn reload_encryption(
    State(state): State<AppState>,
    Query(query): Query<ReloadQuery>,
) -> Result<Json<EncryptionKeys>, ApiError> {
    let member = state.member.clone();
    Ok(Json(
        detached(async move {
            // The key ring is read again (once it is the version asked for); `wal-push` and
            // `wal-fetch` get its copy at once.
            let fail = |e: anyhow::Error| OpError::Failed(format!("{e:#}"));
            if let Some(version) = &query.ring_version {
                let sync =
                    std::time::Duration::from_secs(toygres_common::sidecar_api::KEYRING_SYNC_SECS);
                crate::objstore::crypt::wait_for_ring_version(version, sync)
                    .await
                    .map_err(fail)?;
            }
            let keys = crate::objstore::crypt::reload().map_err(fail)?;
            if let Some(archive) = &member.cfg.archive {
                archive.settings.copy_keys(&member.bins).map_err(fail)?;
            }
            Ok(
                keys.map_or_else(EncryptionKeys::default, |k| EncryptionKeys {
                    current_key_id: Some(k.key_id()),
                    key_ids: k.key_ids(),
                }),
            )
        })
        .await?,
    ))
}
