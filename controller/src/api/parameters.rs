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
use axum::response::{IntoResponse, Response};
use axum::Json;
use toygres_common::controller_api::{MemberView, OperationAccepted};
use toygres_common::domain::InstanceState;
use toygres_common::names::validate_instance_name;
use toygres_common::parameters_api::{
    check_request, display_value, parse_number, same_value, AppliedState, ApplyMode, ApplyProfile,
    DesiredParameter, InstanceParameters, MemberParameter, ParameterCatalog, ParameterCategory,
    ProfileChange, ProfilePlan, SetInstanceParameters,
};
use toygres_common::{ErrorBody, SidecarClient};

use super::{ApiError, ApiState};
use crate::engine::parameters::ParameterChange;
use crate::parameters::diff::diff;
use crate::parameters::plan::{plan, second_roll, Change, PrimaryUpdate};
use crate::parameters::profiles::{self, Profile};

/// How long a sidecar may take to read its catalog.
const CATALOG_TIMEOUT: Duration = Duration::from_secs(10);

/// `GET /v1/instances/{name}/parameters/catalog`.
#[utoipa::path(get, path = "/v1/instances/{name}/parameters/catalog", tag = "parameters", params(("name" = String, Path, description = "Instance name")), responses((status = 200, description = "Every setting of the instance's Postgres: category, type, unit, range, allowed values, default, current value, and whether users may set it (and why not)", body = ParameterCatalog), (status = 400, description = "Invalid input", body = ErrorBody), (status = 401, description = "Missing or wrong token", body = ErrorBody), (status = 404, description = "No such instance", body = ErrorBody), (status = 503, description = "No member answered", body = ErrorBody)), security(("bearer" = [])))]
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
#[utoipa::path(get, path = "/v1/instances/{name}/parameters", tag = "parameters", params(("name" = String, Path, description = "Instance name")), responses((status = 200, description = "Each setting set on the instance and, per member, whether it runs it", body = InstanceParameters), (status = 400, description = "Invalid input", body = ErrorBody), (status = 401, description = "Missing or wrong token", body = ErrorBody), (status = 404, description = "No such instance", body = ErrorBody)), security(("bearer" = [])))]
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
                        current: entry.map(|e| display_value(&e.current, e.unit.as_deref())),
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
#[utoipa::path(put, path = "/v1/instances/{name}/parameters", tag = "parameters", params(("name" = String, Path, description = "Instance name")), request_body = SetInstanceParameters, responses((status = 202, description = "Recorded and queued on the instance's actor as a parameters operation", body = OperationAccepted), (status = 400, description = "A bad name or value (each one named), an owned setting, or a bad apply_at; nothing changed", body = ErrorBody), (status = 401, description = "Missing or wrong token", body = ErrorBody), (status = 404, description = "No such instance", body = ErrorBody), (status = 409, description = "The instance is not running, or its queue is full", body = ErrorBody), (status = 429, description = "The instance's operation queue is full", body = ErrorBody)), security(("bearer" = [])))]
pub async fn set(
    State(state): State<ApiState>,
    Path(name): Path<String>,
    body: Result<Json<SetInstanceParameters>, JsonRejection>,
) -> Result<(StatusCode, Json<OperationAccepted>), ApiError> {
    let Json(request) = body?;
    let accepted = apply_change(&state, &name, request, Split::Refuse).await?;
    Ok((StatusCode::ACCEPTED, Json(accepted)))
}

/// Checks a change against the instance's catalog (a 400 names each bad setting), records it
/// and queues its operation.
async fn apply_change(
    state: &ApiState,
    name: &str,
    request: SetInstanceParameters,
    split: Split,
) -> Result<OperationAccepted, ApiError> {
    let name = name.to_string();
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
    let apply_at_ms = request
        .apply_at
        .as_deref()
        .map(|at| apply_time(at, request.apply))
        .transpose()?;
    let change = ParameterChange {
        parameters: request.parameters,
        apply: request.apply,
        changes,
        confirm,
        primary_update: request.primary_update,
        apply_at_ms,
        after: None,
    };
    if let (Split::TwoRolls, Some(second)) = (split, second_roll(&change.changes)) {
        // Raised hot-standby settings first (standbys first), then the lowered ones (the
        // primary first), as two operations queued in that order; the second runs only if the
        // first succeeded.
        let first = engine
            .change_parameters(&name, part(&change, |n| !second.iter().any(|s| s == n)))
            .await?;
        let second = ParameterChange {
            after: Some(first.operation_id),
            ..part(&change, |n| second.iter().any(|s| s == n))
        };
        let accepted = engine.change_parameters(&name, second).await?;
        return Ok(accepted);
    }
    // Refuses what no order can apply safely (a hot-standby setting raised and another lowered).
    plan(
        &change.changes,
        "primary",
        &["standby".to_string()],
        PrimaryUpdate::Restart,
    )
    .map_err(ApiError::BadRequest)?;
    Ok(engine.change_parameters(&name, change).await?)
}

/// Whether a change that raises some hot-standby settings and lowers others is refused (a
/// request says what it wants in one roll) or split in two rolls (a profile's values).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Split {
    Refuse,
    TwoRolls,
}

/// The settings of `change` that `keep` keeps.
fn part(change: &ParameterChange, keep: impl Fn(&str) -> bool) -> ParameterChange {
    ParameterChange {
        parameters: kept(&change.parameters, &keep),
        changes: change
            .changes
            .iter()
            .filter(|c| keep(&c.name))
            .cloned()
            .collect(),
        confirm: kept(&change.confirm, &keep),
        ..change.clone()
    }
}

/// The entries of `map` whose name `keep` keeps.
fn kept<V: Clone>(map: &BTreeMap<String, V>, keep: &impl Fn(&str) -> bool) -> BTreeMap<String, V> {
    map.iter()
        .filter(|(n, _)| keep(n))
        .map(|(n, v)| (n.clone(), v.clone()))
        .collect()
}

/// `POST /v1/instances/{name}/parameters/profile`: a profile's values for the instance's
/// declared size (or the request's), with the request's own values over them; a dry run answers
/// what would change, otherwise the values are applied like `PUT …/parameters`.
#[utoipa::path(post, path = "/v1/instances/{name}/parameters/profile", tag = "parameters", params(("name" = String, Path, description = "Instance name")), request_body = ApplyProfile, responses((status = 200, description = "Dry run: each setting that would change", body = ProfilePlan), (status = 202, description = "Recorded and queued as a parameters operation", body = OperationAccepted), (status = 400, description = "Unknown profile, no size, or a bad value; nothing changed", body = ErrorBody), (status = 401, description = "Missing or wrong token", body = ErrorBody), (status = 404, description = "No such instance", body = ErrorBody), (status = 429, description = "The instance's operation queue is full", body = ErrorBody)), security(("bearer" = [])))]
pub async fn profile(
    State(state): State<ApiState>,
    Path(name): Path<String>,
    body: Result<Json<ApplyProfile>, JsonRejection>,
) -> Result<Response, ApiError> {
    let Json(request) = body?;
    existing_members(&state, &name).await?;
    let profile: Profile = request.profile.parse().map_err(ApiError::BadRequest)?;
    let size = match request.size {
        Some(size) => {
            size.validate()?;
            size
        }
        None => state.cms.instance_size(&name).await?.ok_or_else(|| {
            ApiError::BadRequest(format!(
                "instance {name} declared no size at create: give \"size\" to size the profile"
            ))
        })?,
    };
    let mut proposed: BTreeMap<String, String> = profiles::settings(profile, (&size).into())
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
    proposed.extend(request.parameters);
    if !request.dry_run {
        let change = SetInstanceParameters {
            parameters: proposed.into_iter().map(|(k, v)| (k, Some(v))).collect(),
            apply: ApplyMode::Immediate,
            apply_at: None,
            primary_update: request.primary_update,
        };
        let accepted = apply_change(&state, &name, change, Split::TwoRolls).await?;
        return Ok((StatusCode::ACCEPTED, Json(accepted)).into_response());
    }
    let Json(catalog) = catalog(State(state.clone()), Path(name.clone())).await?;
    let as_request: BTreeMap<String, Option<String>> = proposed
        .iter()
        .map(|(k, v)| (k.clone(), Some(v.clone())))
        .collect();
    let problems = check_request(&catalog, &as_request);
    if !problems.is_empty() {
        let messages: Vec<&str> = problems.iter().map(|p| p.message.as_str()).collect();
        return Err(ApiError::BadRequest(messages.join("; ")));
    }
    let changes = diff(&catalog, &proposed)
        .into_iter()
        .map(|c| ProfileChange {
            name: c.name,
            current: c.current,
            proposed: c.proposed,
        })
        .collect();
    Ok(Json(ProfilePlan {
        instance: name,
        profile: profile.to_string(),
        changes,
    })
    .into_response())
}

/// How far ahead a change may be scheduled.
const MAX_SCHEDULE_AHEAD: chrono::TimeDelta = chrono::TimeDelta::days(1);

/// `apply_at` as milliseconds since the epoch: an RFC 3339 time, not in the past, at most a
/// day ahead, for an immediate change.
fn apply_time(at: &str, apply: ApplyMode) -> Result<u64, ApiError> {
    if apply != ApplyMode::Immediate {
        return Err(ApiError::BadRequest(
            "apply_at schedules an immediate change; on-next-restart has no time".into(),
        ));
    }
    let time = chrono::DateTime::parse_from_rfc3339(at)
        .map_err(|e| ApiError::BadRequest(format!("apply_at {at:?} is not an RFC 3339 time: {e}")))?
        .with_timezone(&chrono::Utc);
    let now = chrono::Utc::now();
    if time < now - chrono::TimeDelta::seconds(5) {
        return Err(ApiError::BadRequest(format!(
            "apply_at {at} is in the past"
        )));
    }
    if time > now + MAX_SCHEDULE_AHEAD {
        return Err(ApiError::BadRequest(format!(
            "apply_at {at} is more than a day ahead"
        )));
    }
    u64::try_from(time.timestamp_millis())
        .map_err(|_| ApiError::BadRequest(format!("apply_at {at} is out of range")))
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
    let mut clients = Vec::new();
    for member in members {
        match crate::platform::sidecar_client(
            platform.as_ref(),
            name,
            &member.name,
            CATALOG_TIMEOUT,
        )
        .await
        {
            Ok(client) => clients.push((member.name.clone(), client)),
            Err(e) => tracing::warn!("reach the sidecar of {}: {e}", member.name),
        }
    }
    Ok(clients)
}
