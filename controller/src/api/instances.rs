//! `GET /v1/instances`: the instances the CMS knows, deleted ones left out.

use axum::extract::State;
use axum::Json;

use super::types::InstanceList;
use super::{ApiError, ApiState};

pub async fn list(State(state): State<ApiState>) -> Result<Json<InstanceList>, ApiError> {
    let instances = state.cms.list_instances().await?;
    Ok(Json(InstanceList { instances }))
}
