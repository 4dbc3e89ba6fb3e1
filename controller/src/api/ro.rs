//! `/v1/instances/{name}/ro`: the instance's read-only endpoint rule (lag bounds and their
//! re-entry mark, fallback, balancing). Where ro leads now is part of `GET /v1/instances/{name}`.

use axum::extract::{Path, State};
use axum::Json;
use toygres_common::http_api::{BodyRejection, JsonObject};
use toygres_common::names::validate_instance_name;
use toygres_common::ro_api::{RoEndpointView, RoSettings, RoSettingsPatch};
use toygres_common::ErrorBody;

use super::{ApiError, ApiState};
use crate::endpoints::ro_rule::with_breakers;

/// `GET /v1/instances/{name}/ro`.
#[utoipa::path(get, path = "/v1/instances/{name}/ro", tag = "ro", params(("name" = String, Path, description = "Instance name")), responses((status = 200, description = "The ro endpoint's rule", body = RoSettings), (status = 400, description = "Invalid input", body = ErrorBody), (status = 401, description = "Missing or wrong token", body = ErrorBody), (status = 404, description = "No such instance", body = ErrorBody)), security(("bearer" = [])))]
pub async fn get_settings(
    State(state): State<ApiState>,
    Path(name): Path<String>,
) -> Result<Json<RoSettings>, ApiError> {
    validate_instance_name(&name).map_err(|e| ApiError::BadRequest(e.to_string()))?;
    Ok(Json(state.engine()?.ro_settings(&name).await?))
}

/// `PUT /v1/instances/{name}/ro`: the fields given change, the others stay.
#[utoipa::path(put, path = "/v1/instances/{name}/ro", tag = "ro", params(("name" = String, Path, description = "Instance name")), request_body = RoSettingsPatch, responses((status = 200, description = "The new rule", body = RoSettings), (status = 400, description = "Invalid input", body = ErrorBody), (status = 401, description = "Missing or wrong token", body = ErrorBody), (status = 404, description = "No such instance", body = ErrorBody)), security(("bearer" = [])))]
pub async fn set_settings(
    State(state): State<ApiState>,
    Path(name): Path<String>,
    body: Result<JsonObject<RoSettingsPatch>, BodyRejection>,
) -> Result<Json<RoSettings>, ApiError> {
    let JsonObject(patch) = body?;
    validate_instance_name(&name).map_err(|e| ApiError::BadRequest(e.to_string()))?;
    Ok(Json(state.engine()?.set_ro_settings(&name, &patch).await?))
}

/// Where the instance's ro endpoint leads now: the last health round's decision with the
/// platform's breakers and the rule in force. `None` before any round decided it.
pub async fn endpoint_view(
    state: &ApiState,
    name: &str,
) -> Result<Option<RoEndpointView>, ApiError> {
    let Some((_, view)) = state.cms.ro_views(Some(name)).await?.into_iter().next() else {
        return Ok(None);
    };
    let settings = state.cms.get_ro_settings(name).await?.unwrap_or_default();
    let breakers = state
        .platform
        .as_ref()
        .map(|platform| platform.ro_breakers(name))
        .unwrap_or_default();
    Ok(Some(with_breakers(view, &breakers, &settings)))
}
