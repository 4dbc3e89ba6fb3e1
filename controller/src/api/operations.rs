//! `GET /v1/operations/{id}`: an operation's status from the CMS and its progress from its
//! orchestration; `DELETE /v1/operations/{id}`: cancel it (a queued one at once, a running one
//! at its next safe point, where it cleans up what it made).

use axum::extract::{Path, State};
use axum::Json;
use toygres_common::controller_api::Operation;
use toygres_common::domain::OperationKind;

use toygres_common::ErrorBody;

use super::{ApiError, ApiState};

#[utoipa::path(get, path = "/v1/operations/{id}", tag = "operations", params(("id" = String, Path, description = "Operation id")), responses((status = 200, description = "The operation and its progress", body = Operation), (status = 400, description = "Invalid input", body = ErrorBody), (status = 401, description = "Missing or wrong token", body = ErrorBody), (status = 404, description = "No such operation", body = ErrorBody)), security(("bearer" = [])))]
pub async fn get(
    State(state): State<ApiState>,
    Path(id): Path<String>,
) -> Result<Json<Operation>, ApiError> {
    validate_id(&id)?;
    let mut operation = state
        .cms
        .get_operation(&id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("operation {id} does not exist")))?;
    if let Some(engine) = &state.engine {
        operation.progress = engine.progress(&id).await;
        // Only an operation that restores asks the members (a plain create's view stays one
        // CMS read, however often a CLI polls it).
        let restoring = matches!(
            operation.kind.parse::<OperationKind>(),
            Ok(OperationKind::Create | OperationKind::RestoreInPlace)
        ) && !operation.is_finished()
            && state.cms.operation_restores(&id).await.unwrap_or(false);
        if let (true, Some(progress)) = (restoring, operation.progress.as_mut()) {
            progress.restore = engine.restore_progress(&operation.instance).await;
        }
    }
    Ok(Json(operation))
}

/// `DELETE /v1/operations/{id}`: answers the operation as it is after the cancel (`cancelled`,
/// or still `running` until its next safe point).
#[utoipa::path(delete, path = "/v1/operations/{id}", tag = "operations", params(("id" = String, Path, description = "Operation id")), responses((status = 200, description = "Cancelled, or asked to stop at its next safe point", body = Operation), (status = 400, description = "Invalid input", body = ErrorBody), (status = 401, description = "Missing or wrong token", body = ErrorBody), (status = 404, description = "No such operation", body = ErrorBody), (status = 409, description = "Already finished, or not cancellable", body = ErrorBody)), security(("bearer" = [])))]
pub async fn cancel(
    State(state): State<ApiState>,
    Path(id): Path<String>,
) -> Result<Json<Operation>, ApiError> {
    validate_id(&id)?;
    state.engine()?.cancel_operation(&id).await?;
    get(State(state), Path(id)).await
}

fn validate_id(id: &str) -> Result<(), ApiError> {
    if id.is_empty() || id.len() > 64 || !id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
    {
        return Err(ApiError::BadRequest(format!("invalid operation id {id:?}")));
    }
    Ok(())
}
