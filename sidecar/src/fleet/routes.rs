//! The simulated fleet's HTTP API: every member's sidecar routes under `/m/{member}` (the ones
//! the controller calls when it creates, health-checks, fails over and rejoins), answered with the
//! real sidecar's shapes and status codes; and `/fleet/members` to add, list, kill and remove
//! members.

use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::routing::{delete, get, post, put};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};
use toygres_common::http_api::ApiError;
use toygres_common::sidecar_api::{
    ActionResponse, DemoteRequest, DemoteResponse, ParameterInfo, Parameters, PromoteRequest,
    PromoteResponse, ReplicationRequest, Role, SetParametersRequest, SetParametersResponse, Status,
};

use super::sim::{Listed, Refusal, Register, SharedFleet};

/// The whole API of the double.
pub fn app(fleet: SharedFleet) -> Router {
    Router::new()
        .route("/fleet/members", get(list).post(register))
        .route("/fleet/members/{member}", delete(remove))
        .route("/fleet/members/{member}/kill", post(kill))
        .route("/m/{member}/healthz", get(healthz))
        .route("/m/{member}/readyz", get(readyz))
        .route("/m/{member}/v1/status", get(status))
        .route("/m/{member}/v1/promote", post(promote))
        .route("/m/{member}/v1/demote", post(demote))
        .route("/m/{member}/v1/fence", post(fence))
        .route("/m/{member}/v1/unfence", post(unfence))
        .route("/m/{member}/v1/restart", post(restart))
        .route(
            "/m/{member}/v1/parameters",
            get(parameters).put(set_parameters),
        )
        .route("/m/{member}/v1/replication", put(replication))
        .route("/m/{member}/v1/replication/slots/{slot}", delete(drop_slot))
        .fallback(|| async { ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such route") })
        .with_state(fleet)
}

/// The token comparison, in constant time for equal lengths.
fn tokens_match(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

impl From<Refusal> for ApiError {
    fn from(refusal: Refusal) -> Self {
        match refusal {
            Refusal::Conflict(m) => ApiError::new(StatusCode::CONFLICT, "conflict", m),
            Refusal::Invalid(m) => ApiError::bad_request(m),
        }
    }
}

fn lock(fleet: &SharedFleet) -> std::sync::MutexGuard<'_, super::sim::Fleet> {
    match fleet.lock() {
        Ok(guard) => guard,
        Err(poisoned) => poisoned.into_inner(),
    }
}

/// Lets a request to `member` through: it exists, its sidecar runs, and the request carries
/// its instance's token.
fn admit(fleet: &SharedFleet, member: &str, headers: &HeaderMap) -> Result<(), ApiError> {
    let fleet = lock(fleet);
    let m = fleet.members.get(member).ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no member {member}"),
        )
    })?;
    if m.killed {
        return Err(killed());
    }
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    match given {
        Some(token) if tokens_match(token, &m.token) => Ok(()),
        _ => Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "missing or invalid bearer token",
        )),
    }
}

/// A killed member's answer: nothing serves it (a client treats this as unreachable).
fn killed() -> ApiError {
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "unavailable",
        "the member's sidecar is not running",
    )
}

async fn register(
    State(fleet): State<SharedFleet>,
    body: Result<Json<Register>, JsonRejection>,
) -> Result<Json<Value>, ApiError> {
    let Json(request) = body?;
    toygres_common::names::validate_member_name(&request.member)
        .map_err(|e| ApiError::bad_request(e.to_string()))?;
    // The token is read from the file the platform names, never sent.
    let token = std::fs::read_to_string(&request.token_file)
        .map_err(|e| ApiError::bad_request(format!("read the token file: {e}")))?
        .trim()
        .to_string();
    let member = request.member.clone();
    lock(&fleet).register(request, token)?;
    Ok(Json(
        json!({ "member": member, "path": format!("/m/{member}") }),
    ))
}

#[derive(Deserialize)]
struct ListQuery {
    instance: Option<String>,
}

async fn list(
    State(fleet): State<SharedFleet>,
    Query(query): Query<ListQuery>,
) -> Json<Vec<Listed>> {
    Json(lock(&fleet).list(query.instance.as_deref()))
}

async fn remove(State(fleet): State<SharedFleet>, Path(member): Path<String>) -> StatusCode {
    lock(&fleet).members.remove(&member);
    StatusCode::NO_CONTENT
}

async fn kill(
    State(fleet): State<SharedFleet>,
    Path(member): Path<String>,
) -> Result<StatusCode, ApiError> {
    let mut fleet = lock(&fleet);
    let m = fleet.members.get_mut(&member).ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no member {member}"),
        )
    })?;
    m.killed = true;
    Ok(StatusCode::NO_CONTENT)
}

async fn healthz(
    State(fleet): State<SharedFleet>,
    Path(member): Path<String>,
) -> Result<Json<Value>, ApiError> {
    match lock(&fleet).members.get(&member) {
        Some(m) if !m.killed => Ok(Json(json!({"status": "ok"}))),
        Some(_) => Err(killed()),
        None => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            "no such member",
        )),
    }
}

async fn readyz(
    State(fleet): State<SharedFleet>,
    Path(member): Path<String>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let status = lock(&fleet)
        .status(&member)
        .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such member"))?;
    let (ready, reason) = if status.fenced {
        (false, "fenced")
    } else {
        (true, "ready")
    };
    let code = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    Ok((
        code,
        Json(json!({"ready": ready, "reason": reason, "role": status.role})),
    ))
}

async fn status(
    State(fleet): State<SharedFleet>,
    Path(member): Path<String>,
    headers: HeaderMap,
) -> Result<Json<Status>, ApiError> {
    admit(&fleet, &member, &headers)?;
    lock(&fleet)
        .status(&member)
        .map(Json)
        .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such member"))
}

async fn promote(
    State(fleet): State<SharedFleet>,
    Path(member): Path<String>,
    headers: HeaderMap,
    body: Option<Json<PromoteRequest>>,
) -> Result<Json<PromoteResponse>, ApiError> {
    admit(&fleet, &member, &headers)?;
    let request = body.map(|Json(r)| r).unwrap_or_default();
    Ok(Json(lock(&fleet).promote(
        &member,
        request.force,
        request.sync,
    )?))
}

async fn demote(
    State(fleet): State<SharedFleet>,
    Path(member): Path<String>,
    headers: HeaderMap,
    body: Result<Json<DemoteRequest>, JsonRejection>,
) -> Result<Json<DemoteResponse>, ApiError> {
    admit(&fleet, &member, &headers)?;
    let Json(request) = body?;
    let method = lock(&fleet).demote(&member, &request.primary)?;
    Ok(Json(DemoteResponse {
        method,
        duration_ms: 100,
    }))
}

fn action(message: String) -> Json<ActionResponse> {
    Json(ActionResponse { ok: true, message })
}

async fn fence(
    State(fleet): State<SharedFleet>,
    Path(member): Path<String>,
    headers: HeaderMap,
) -> Result<Json<ActionResponse>, ApiError> {
    admit(&fleet, &member, &headers)?;
    Ok(action(lock(&fleet).set_fenced(&member, true)?))
}

async fn unfence(
    State(fleet): State<SharedFleet>,
    Path(member): Path<String>,
    headers: HeaderMap,
) -> Result<Json<ActionResponse>, ApiError> {
    admit(&fleet, &member, &headers)?;
    Ok(action(lock(&fleet).set_fenced(&member, false)?))
}

async fn restart(
    State(fleet): State<SharedFleet>,
    Path(member): Path<String>,
    headers: HeaderMap,
) -> Result<Json<ActionResponse>, ApiError> {
    admit(&fleet, &member, &headers)?;
    Ok(action("postgres restarted".into()))
}

async fn parameters(
    State(fleet): State<SharedFleet>,
    Path(member): Path<String>,
    headers: HeaderMap,
) -> Result<Json<Parameters>, ApiError> {
    admit(&fleet, &member, &headers)?;
    let setting = |name: &str, value: &str, context: &str| ParameterInfo {
        name: name.into(),
        setting: value.into(),
        unit: None,
        context: context.into(),
        source: "default".into(),
        pending_restart: false,
        owned: false,
    };
    Ok(Json(Parameters {
        parameters: vec![
            setting("max_connections", "100", "postmaster"),
            setting("work_mem", "4096", "user"),
        ],
    }))
}

async fn set_parameters(
    State(fleet): State<SharedFleet>,
    Path(member): Path<String>,
    headers: HeaderMap,
    body: Result<Json<SetParametersRequest>, JsonRejection>,
) -> Result<Json<SetParametersResponse>, ApiError> {
    admit(&fleet, &member, &headers)?;
    let Json(request) = body?;
    Ok(Json(SetParametersResponse {
        applied: request.parameters.keys().cloned().collect(),
        pending_restart: Vec::new(),
    }))
}

async fn replication(
    State(fleet): State<SharedFleet>,
    Path(member): Path<String>,
    headers: HeaderMap,
    body: Result<Json<ReplicationRequest>, JsonRejection>,
) -> Result<Json<ActionResponse>, ApiError> {
    admit(&fleet, &member, &headers)?;
    let Json(request) = body?;
    Ok(action(lock(&fleet).set_replication(&member, &request)?))
}

async fn drop_slot(
    State(fleet): State<SharedFleet>,
    Path((member, slot)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Json<ActionResponse>, ApiError> {
    admit(&fleet, &member, &headers)?;
    toygres_common::names::validate_member_name(&slot)
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "invalid_member", e.to_string()))?;
    let fleet = lock(&fleet);
    if fleet.get(&member)?.role_is(Role::Standby) {
        return Ok(action("no such slot".into()));
    }
    Ok(action(if fleet.members.contains_key(&slot) {
        "slot dropped".into()
    } else {
        "no such slot".into()
    }))
}
