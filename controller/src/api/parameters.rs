//! `/v1/instances/{name}/parameters[/catalog]`: the instance's parameter catalog (read from its
//! own members' `pg_settings` through their sidecars, so it matches the Postgres it runs), its
//! desired parameters with their state on each member, and changes to them — validated against
//! the catalog, all or nothing, before anything is recorded, then applied by a *Parameters*
//! operation on the instance's actor.

use std::collections::BTreeMap;
use std::time::Duration;

use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use toygres_common::controller_api::{MemberView, OperationAccepted};
use toygres_common::domain::InstanceState;
use toygres_common::names::validate_instance_name;
use toygres_common::parameters_api::{
    check_request, parse_number, same_value, AppliedState, DesiredParameter, InstanceParameters,
    MemberParameter, ParameterCatalog, ParameterCategory, SetInstanceParameters,
};
use toygres_common::SidecarClient;

use super::{ApiError, ApiState};
use crate::engine::parameters::ParameterChange;
use crate::parameters::plan::{plan, Change, PrimaryUpdate};
use crate::platform::SecretRefs;

/// How long a sidecar may take to read its catalog.
const CATALOG_TIMEOUT: Duration = Duration::from_secs(10);

/// `GET /v1/instances/{name}/parameters/catalog`.
pub async fn catalog(
    State(state): State<ApiState>,
    Path(name): Path<String>,
) -> Result<Json<ParameterCatalog>, ApiError> {
    let members = existing_members(&state, &name).await?;
    let mut last = format!("instance {name} has no members");
    for (member, client) in sidecars(&state, &name, &members).await? {
        match client.parameter_catalog().await {
            Ok(catalog) => return Ok(Json(catalog)),
            Err(e) => last = format!("read the catalog of {member}: {e}"),
        }
    }
    Err(ApiError::Unavailable(last))
}

/// `GET /v1/instances/{name}/parameters`: each desired setting and whether each member runs it.
pub async fn get(
    State(state): State<ApiState>,
    Path(name): Path<String>,
) -> Result<Json<InstanceParameters>, ApiError> {
    let members = existing_members(&state, &name).await?;
    let desired = state.cms.desired_parameters(&name).await?;
    let mut catalogs = Vec::new();
    for (member, client) in sidecars(&state, &name, &members).await? {
        catalogs.push((member, client.parameter_catalog().await.ok()));
    }
    let parameters = desired
        .into_iter()
        .map(|(pname, value)| DesiredParameter {
            members: catalogs
                .iter()
                .map(|(member, catalog)| {
                    let entry = catalog.as_ref().and_then(|c| c.get(&pname));
                    let state = match (catalog, entry) {
                        (None, _) => AppliedState::Unknown,
                        (Some(_), Some(e))
                            if same_value(&e.vartype, e.unit.as_deref(), &e.current, &value) =>
                        {
                            AppliedState::Applied
                        }
                        (Some(_), Some(e)) if e.pending_restart => AppliedState::PendingRestart,
                        (Some(_), _) => AppliedState::NotApplied,
                    };
                    MemberParameter {
                        member: member.clone(),
                        current: entry
                            .map(|e| format!("{}{}", e.current, e.unit.as_deref().unwrap_or(""))),
                        state,
                    }
                })
                .collect(),
            name: pname,
            value,
        })
        .collect();
    Ok(Json(InstanceParameters {
        instance: name,
        parameters,
    }))
}

/// `PUT /v1/instances/{name}/parameters`: checks every setting against the instance's catalog
/// (a 400 names each bad one, and nothing changes), records them and queues the operation.
pub async fn set(
    State(state): State<ApiState>,
    Path(name): Path<String>,
    body: Result<Json<SetInstanceParameters>, JsonRejection>,
) -> Result<(StatusCode, Json<OperationAccepted>), ApiError> {
    let Json(request) = body?;
    validate_instance_name(&name).map_err(|e| ApiError::BadRequest(e.to_string()))?;
    if request.parameters.is_empty() {
        return Err(ApiError::BadRequest("no parameters given".into()));
    }
    let engine = state.engine()?;
    let Json(catalog) = catalog(State(state.clone()), Path(name.clone())).await?;
    let problems = check_request(&catalog, &request.parameters);
    if !problems.is_empty() {
        let messages: Vec<&str> = problems.iter().map(|p| p.message.as_str()).collect();
        return Err(ApiError::BadRequest(messages.join("; ")));
    }
    let whole = |value: &str, unit: Option<&str>| {
        parse_number(value, unit)
            .ok()
            .filter(|n| n.abs() < 9.0e15)
            .map(|n| n.round() as i64)
    };
    let mut changes = Vec::new();
    let mut confirm = BTreeMap::new();
    for (pname, value) in &request.parameters {
        let Some(entry) = catalog.get(pname) else {
            continue;
        };
        let unit = entry.unit.as_deref();
        changes.push(Change {
            name: pname.clone(),
            category: entry.category,
            from: whole(&entry.current, unit),
            // A reset goes back to Postgres's default.
            to: value
                .as_deref()
                .or(entry.default.as_deref())
                .and_then(|v| whole(v, unit)),
        });
        if let (Some(v), ParameterCategory::Dynamic | ParameterCategory::Reload) =
            (value, entry.category)
        {
            confirm.insert(pname.clone(), v.clone());
        }
    }
    // Refuses what no order can apply safely (a hot-standby setting raised and another lowered).
    plan(
        &changes,
        "primary",
        &["standby".to_string()],
        PrimaryUpdate::Restart,
    )
    .map_err(ApiError::BadRequest)?;
    let accepted = engine
        .change_parameters(
            &name,
            ParameterChange {
                parameters: request.parameters,
                apply: request.apply,
                changes,
                confirm,
            },
        )
        .await?;
    Ok((StatusCode::ACCEPTED, Json(accepted)))
}

/// The members of an instance that exists (404 otherwise), the primary first.
async fn existing_members(state: &ApiState, name: &str) -> Result<Vec<MemberView>, ApiError> {
    validate_instance_name(name).map_err(|e| ApiError::BadRequest(e.to_string()))?;
    state
        .cms
        .get_instance(name)
        .await?
        .filter(|i| i.summary.parsed_state() != Some(InstanceState::Deleted))
        .ok_or_else(|| ApiError::NotFound(format!("instance {name} does not exist")))?;
    let mut members = state.cms.list_members(name).await?;
    members.sort_by_key(|m| m.role != "primary");
    Ok(members)
}

/// A sidecar client for each member the platform can place.
async fn sidecars(
    state: &ApiState,
    name: &str,
    members: &[MemberView],
) -> Result<Vec<(String, SidecarClient)>, ApiError> {
    let platform = state
        .platform
        .as_ref()
        .ok_or_else(|| ApiError::Unavailable("the platform is not running".into()))?;
    let token = platform
        .read_secret(&SecretRefs::for_instance(name).sidecar_token)
        .await
        .map_err(|e| ApiError::Unavailable(format!("read the sidecar token of {name}: {e}")))?;
    let mut clients = Vec::new();
    for member in members {
        match platform.member_address(name, &member.name).await {
            Ok(address) => clients.push((
                member.name.clone(),
                SidecarClient::new(address.api_url, token.expose(), CATALOG_TIMEOUT),
            )),
            Err(e) => tracing::warn!("find member {}: {e}", member.name),
        }
    }
    Ok(clients)
}
