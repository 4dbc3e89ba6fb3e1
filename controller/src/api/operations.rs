//! `GET /v1/operations/{id}`: an operation's status from the CMS and its progress from its
//! orchestration.

use axum::extract::{Path, State};
use axum::Json;
use toygres_common::controller_api::Operation;

use toygres_common::ErrorBody;

use super::{ApiError, ApiState};

#[utoipa::path(get, path = "/v1/operations/{id}", tag = "operations", params(("id" = String, Path, description = "Operation id")), responses((status = 200, description = "The operation and its progress", body = Operation), (status = 400, description = "Invalid input", body = ErrorBody), (status = 401, description = "Missing or wrong token", body = ErrorBody), (status = 404, description = "No such operation", body = ErrorBody)), security(("bearer" = [])))]
pub async fn get(
    State(state): State<ApiState>,
    Path(id): Path<String>,
) -> Result<Json<Operation>, ApiError> {
    if id.is_empty() || id.len() > 64 || !id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
    {
        return Err(ApiError::BadRequest(format!("invalid operation id {id:?}")));
    }
    let mut operation = state
        .cms
        .get_operation(&id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("operation {id} does not exist")))?;
    if let Some(engine) = &state.engine {
        operation.progress = engine.progress(&id).await;
    }
    Ok(Json(operation))
}
