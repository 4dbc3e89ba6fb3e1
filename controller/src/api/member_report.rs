//! `POST /v1/instances/{name}/members/{member}/report`: a sidecar pushes what just happened to
//! its member (Postgres died, the WAL receiver lost the primary, it fenced itself, the
//! controller went silent). The instance's actor is asked to check now instead of at its next
//! round — at most once per HA check interval (and half a second), so pushes never bring the
//! checks that count towards the failure threshold closer together than the actor's own
//! re-checks — and the answer tells a member that calls itself primary whether it was
//! superseded.
//!
//! Not under the operator's token: the sidecar authenticates with its member's report token
//! (`toygres_common::member_report::report_token`), derived from the instance's sidecar token.

use std::time::{Duration, Instant};

use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::Json;
use toygres_common::domain::HaEventKind;
use toygres_common::http_api::{BearerAuth, BodyRejection, JsonObject};
use toygres_common::member_report::{
    report_token, superseded, MemberReport, ReportAnswer, ReportKind, MAX_DETAIL,
};
use toygres_common::names::{validate_instance_name, validate_member_name};
use toygres_common::sidecar_api::Role;
use toygres_common::ErrorBody;

use super::{ApiError, ApiState};
use crate::platform::SecretRefs;

/// The least time between two checks asked for by reports (checks queue behind a running
/// operation: a burst of reports during a failover must not become a burst of rounds after it).
const MIN_SPACING: Duration = Duration::from_millis(500);

/// `POST /v1/instances/{name}/members/{member}/report`.
#[utoipa::path(post, path = "/v1/instances/{name}/members/{member}/report", tag = "ha", params(("name" = String, Path, description = "Instance name"), ("member" = String, Path, description = "The reporting member")), request_body = MemberReport, responses((status = 200, description = "Received; the answer says whether a check was queued and whether the member was superseded", body = ReportAnswer), (status = 400, description = "Invalid input", body = ErrorBody), (status = 401, description = "Unknown member or wrong report token (the member's, derived from the instance's sidecar token; not the operator's)", body = ErrorBody), (status = 503, description = "The platform is not running", body = ErrorBody)), security(("bearer" = [])))]
pub async fn report(
    State(state): State<ApiState>,
    Path((name, member)): Path<(String, String)>,
    headers: HeaderMap,
    body: Result<JsonObject<MemberReport>, BodyRejection>,
) -> Result<Json<ReportAnswer>, ApiError> {
    // Nothing about the instance is told before the caller is known: every failure to
    // authenticate reads the same.
    let refused = || ApiError::Unauthorized("unknown member or invalid report token");
    if validate_instance_name(&name).is_err() || validate_member_name(&member).is_err() {
        return Err(refused());
    }
    let platform = state
        .platform
        .as_ref()
        .ok_or_else(|| ApiError::Unavailable("the platform is not running".into()))?;
    let token = platform
        .read_secret(&SecretRefs::for_instance(&name).sidecar_token)
        .await
        .map_err(|_| refused())?;
    BearerAuth::new(report_token(token.expose(), &member))
        .check(&headers)
        .map_err(|_| refused())?;
    let JsonObject(report) = body?;
    let members = state.cms.list_members(&name).await?;
    if !members.iter().any(|m| m.name == member) {
        return Err(refused());
    }
    let primary = members.iter().find(|m| m.parsed_role() == Role::Primary);
    let timeline = |m: &toygres_common::controller_api::MemberView| {
        m.timeline.and_then(|t| u32::try_from(t).ok())
    };
    let answer_superseded = superseded(
        &member,
        report.role,
        report.timeline,
        primary.map(|p| p.name.as_str()),
        primary.and_then(timeline),
    );
    let spacing = state
        .cms
        .get_ha_settings(&name)
        .await?
        .map_or(MIN_SPACING, |ha| {
            Duration::from_millis(ha.check_interval_ms).max(MIN_SPACING)
        });
    // A primary asking whether it is still one (the controller was silent) is answered, not
    // checked: its lease, not a round, is what it waits on.
    let checking = report.kind != ReportKind::ControllerSilent
        && state.reports.admit(&name, Instant::now(), spacing);
    let detail: String = report.detail.chars().take(MAX_DETAIL).collect();
    if checking {
        state.engine()?.check_now(&name).await?;
        let role = match report.role {
            Some(Role::Primary) => " (primary)",
            Some(Role::Standby) => " (standby)",
            _ => "",
        };
        let message = format!(
            "{member}{role} reports {}: {detail}; checking now",
            report.kind.as_str()
        );
        tracing::info!(instance = name, "{message}");
        if let Err(e) = state
            .cms
            .record_event(
                &name,
                Some(&member),
                None,
                HaEventKind::MemberReport.into(),
                &message,
            )
            .await
        {
            tracing::warn!(instance = name, "record a member's report: {e}");
        }
    }
    if answer_superseded {
        tracing::warn!(
            instance = name,
            member,
            "a superseded primary reported; telling it to fence itself"
        );
    }
    Ok(Json(ReportAnswer {
        checking,
        primary: primary.map(|p| p.name.clone()),
        superseded: answer_superseded,
    }))
}
