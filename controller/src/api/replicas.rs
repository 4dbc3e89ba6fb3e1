//! `/v1/instances/{name}/replicas[/{member}]`: the replication status, and adding or removing a
//! standby (operations queued on the instance's actor, answered `202 Accepted`).

use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::Json;
use toygres_common::controller_api::{
    AddReplicaRequest, DeleteInstanceQuery, OperationAccepted, ReplicationStatus,
};
use toygres_common::names::validate_instance_name;

use toygres_common::http_api::{BodyRejection, JsonObject};
use toygres_common::ErrorBody;

use super::{ApiError, ApiState};

/// `GET /v1/instances/{name}/replicas`.
#[utoipa::path(get, path = "/v1/instances/{name}/replicas", tag = "replicas", params(("name" = String, Path, description = "Instance name")), responses((status = 200, description = "Members and replication", body = ReplicationStatus), (status = 400, description = "Invalid input", body = ErrorBody), (status = 401, description = "Missing or wrong token", body = ErrorBody), (status = 404, description = "No such instance", body = ErrorBody)), security(("bearer" = [])))]
pub async fn status(
    State(state): State<ApiState>,
    Path(name): Path<String>,
) -> Result<Json<ReplicationStatus>, ApiError> {
    validate_instance_name(&name).map_err(|e| ApiError::BadRequest(e.to_string()))?;
    let instance = state
        .cms
        .get_instance(&name)
        .await?
        .filter(|i| {
            i.summary.parsed_state() != Some(toygres_common::domain::InstanceState::Deleted)
        })
        .ok_or_else(|| ApiError::NotFound(format!("instance {name} does not exist")))?;
    let members = state.cms.list_members(&name).await?;
    Ok(Json(ReplicationStatus {
        instance: name,
        replication_mode: instance.summary.replication_mode,
        replicas: instance.replicas,
        members,
    }))
}

/// `POST /v1/instances/{name}/replicas`.
#[utoipa::path(post, path = "/v1/instances/{name}/replicas", tag = "replicas", params(("name" = String, Path, description = "Instance name")), request_body = AddReplicaRequest, responses((status = 202, description = "Queued on the instance's actor", body = OperationAccepted), (status = 400, description = "Invalid input", body = ErrorBody), (status = 401, description = "Missing or wrong token", body = ErrorBody), (status = 404, description = "No such instance", body = ErrorBody), (status = 409, description = "Not running, or at the replica limit", body = ErrorBody), (status = 429, description = "The instance's operation queue is full", body = ErrorBody)), security(("bearer" = [])))]
pub async fn add(
    State(state): State<ApiState>,
    Path(name): Path<String>,
    body: Result<JsonObject<AddReplicaRequest>, BodyRejection>,
) -> Result<(StatusCode, Json<OperationAccepted>), ApiError> {
    let JsonObject(request) = body?;
    validate_instance_name(&name).map_err(|e| ApiError::BadRequest(e.to_string()))?;
    let accepted = state.engine()?.add_replica(&name, request).await?;
    Ok((StatusCode::ACCEPTED, Json(accepted)))
}

/// `DELETE /v1/instances/{name}/replicas/{member}[?keep_data=true]`.
#[utoipa::path(delete, path = "/v1/instances/{name}/replicas/{member}", tag = "replicas", params(("name" = String, Path, description = "Instance name"), ("member" = String, Path, description = "The standby"), ("keep_data" = Option<bool>, Query, description = "Keep its data")), responses((status = 202, description = "Queued on the instance's actor", body = OperationAccepted), (status = 400, description = "Invalid input", body = ErrorBody), (status = 401, description = "Missing or wrong token", body = ErrorBody), (status = 404, description = "No such member", body = ErrorBody), (status = 409, description = "The primary, or the last sync standby", body = ErrorBody), (status = 429, description = "The instance's operation queue is full", body = ErrorBody)), security(("bearer" = [])))]
pub async fn remove(
    State(state): State<ApiState>,
    Path((name, member)): Path<(String, String)>,
    query: Result<Query<DeleteInstanceQuery>, QueryRejection>,
) -> Result<(StatusCode, Json<OperationAccepted>), ApiError> {
    let Query(query) = query?;
    validate_instance_name(&name).map_err(|e| ApiError::BadRequest(e.to_string()))?;
    let accepted = state
        .engine()?
        .remove_replica(&name, &member, query.keep_data)
        .await?;
    Ok((StatusCode::ACCEPTED, Json(accepted)))
}
