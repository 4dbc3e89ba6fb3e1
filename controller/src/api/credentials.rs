//! `/v1/instances/{name}/credentials/rotate`: a new password for one of the instance's roles,
//! as an operation queued on its actor (answered `202 Accepted`). The answer holds no password:
//! the new one is where the old one was (`connection.app.password_location`).

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use toygres_common::controller_api::OperationAccepted;
use toygres_common::credentials_api::RotateCredentialsRequest;
use toygres_common::http_api::{BodyRejection, JsonObject};
use toygres_common::names::validate_instance_name;
use toygres_common::ErrorBody;

use super::{ApiError, ApiState};

/// `POST /v1/instances/{name}/credentials/rotate`.
#[utoipa::path(post, path = "/v1/instances/{name}/credentials/rotate", tag = "credentials", params(("name" = String, Path, description = "Instance name")), request_body = RotateCredentialsRequest, responses((status = 202, description = "Queued on the instance's actor", body = OperationAccepted), (status = 400, description = "Invalid input", body = ErrorBody), (status = 401, description = "Missing or wrong token", body = ErrorBody), (status = 404, description = "No such instance", body = ErrorBody), (status = 409, description = "Not running, or a role whose password cannot be rotated", body = ErrorBody), (status = 429, description = "The instance's operation queue is full", body = ErrorBody)), security(("bearer" = [])))]
pub async fn rotate(
    State(state): State<ApiState>,
    Path(name): Path<String>,
    body: Result<JsonObject<RotateCredentialsRequest>, BodyRejection>,
) -> Result<(StatusCode, Json<OperationAccepted>), ApiError> {
    let JsonObject(request) = body?;
    validate_instance_name(&name).map_err(|e| ApiError::BadRequest(e.to_string()))?;
    let accepted = state.engine()?.rotate_credentials(&name, request).await?;
    Ok((StatusCode::ACCEPTED, Json(accepted)))
}
