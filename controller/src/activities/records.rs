//! Activities that keep the CMS true: operations, instance state, members (their states,
//! options and a change of primary), health, events; and the one that stops an instance's
//! actor.

use std::sync::Arc;

use duroxide::ActivityContext;
use serde::{Deserialize, Serialize};
use toygres_common::domain::{
    EventKind, HaEventKind, InstanceHealth, InstanceState, MemberState, OperationKind,
    OperationStage, OperationStatus, Role,
};

use super::deps::{describe, ActivityDeps};
use super::sidecar::ProbeResult;
use crate::cms::health::MemberCheck;

/// An operation begins.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OperationStarted {
    pub operation_id: String,
    pub kind: OperationKind,
    pub instance: String,
    /// The instance's new state, if the operation changes it (`deleting`).
    pub instance_state: Option<InstanceState>,
}

/// Marks the operation running, sets the instance's state, and logs an event.
pub async fn record_operation_started(
    deps: Arc<ActivityDeps>,
    _ctx: ActivityContext,
    input: OperationStarted,
) -> Result<(), String> {
    let cms = &deps.cms;
    cms.insert_operation(
        &input.operation_id,
        input.kind,
        &input.instance,
        &serde_json::Value::Object(Default::default()),
    )
    .await
    .map_err(describe)?;
    cms.start_operation(&input.operation_id)
        .await
        .map_err(describe)?;
    if let Some(state) = input.instance_state {
        cms.set_instance_state(&input.instance, state)
            .await
            .map_err(describe)?;
    }
    cms.record_event(
        &input.instance,
        None,
        Some(&input.operation_id),
        EventKind::Operation(input.kind, OperationStage::Started),
        &format!("operation {} ({}) started", input.operation_id, input.kind),
    )
    .await
    .map_err(describe)
}

/// An operation ends.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OperationFinished {
    pub operation_id: String,
    pub kind: OperationKind,
    pub instance: String,
    /// `None` when it succeeded.
    pub error: Option<String>,
    /// The instance's new state (`running`, `deleted`, `failed`), if any.
    pub instance_state: Option<InstanceState>,
    /// How long it took, for metrics.
    pub duration_ms: u64,
}

/// Marks the operation finished, sets the instance's state, and logs an event.
pub async fn record_operation_finished(
    deps: Arc<ActivityDeps>,
    _ctx: ActivityContext,
    input: OperationFinished,
) -> Result<(), String> {
    let cms = &deps.cms;
    let (status, stage) = match input.error {
        None => (OperationStatus::Succeeded, OperationStage::Succeeded),
        Some(_) => (OperationStatus::Failed, OperationStage::Failed),
    };
    if let Some(state) = input.instance_state {
        cms.set_instance_state(&input.instance, state)
            .await
            .map_err(describe)?;
    }
    cms.finish_operation(&input.operation_id, status, input.error.as_deref())
        .await
        .map_err(describe)?;
    let message = match &input.error {
        None => format!(
            "operation {} ({}) succeeded",
            input.operation_id, input.kind
        ),
        Some(e) => format!(
            "operation {} ({}) failed: {e}",
            input.operation_id, input.kind
        ),
    };
    cms.record_event(
        &input.instance,
        None,
        Some(&input.operation_id),
        EventKind::Operation(input.kind, stage),
        &message,
    )
    .await
    .map_err(describe)?;
    deps.metrics
        .record_operation(input.kind.as_str(), status.as_str(), input.duration_ms);
    Ok(())
}

/// A member's role once the instance runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberRole {
    pub member: String,
    /// `primary` or `standby`.
    pub role: Role,
}

/// The instance is up: its members and their roles.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstanceRunning {
    pub instance: String,
    pub members: Vec<MemberRole>,
}

/// Marks the members running in their roles and the instance running.
pub async fn record_instance_running(
    deps: Arc<ActivityDeps>,
    _ctx: ActivityContext,
    input: InstanceRunning,
) -> Result<(), String> {
    for member in &input.members {
        deps.cms
            .set_member_state(&input.instance, &member.member, MemberState::Running)
            .await
            .map_err(describe)?;
    }
    deps.cms
        .set_instance_state(&input.instance, InstanceState::Running)
        .await
        .map_err(describe)
}

/// The actor of an instance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActorRef {
    pub instance: String,
    pub actor_id: String,
}

/// Records which orchestration is the instance's actor.
pub async fn record_actor(
    deps: Arc<ActivityDeps>,
    _ctx: ActivityContext,
    input: ActorRef,
) -> Result<(), String> {
    deps.cms
        .set_instance_actor(&input.instance, &input.actor_id)
        .await
        .map_err(describe)
}

/// Stops the instance's actor (cancels its orchestration). Succeeds when it has already ended.
pub async fn stop_actor(
    _deps: Arc<ActivityDeps>,
    ctx: ActivityContext,
    input: ActorRef,
) -> Result<(), String> {
    let client = ctx.get_client();
    match client.get_orchestration_status(&input.actor_id).await {
        Ok(duroxide::OrchestrationStatus::Running { .. }) => client
            .cancel_instance(&input.actor_id, "the instance is being deleted")
            .await
            .map_err(|e| format!("cancel the actor {}: {e}", input.actor_id)),
        Ok(_) => Ok(()),
        Err(e) => Err(format!("read the actor {}'s status: {e}", input.actor_id)),
    }
}

/// Drops the actor's finished executions (continue-as-new leaves one per generation).
pub async fn prune_actor_history(
    _deps: Arc<ActivityDeps>,
    ctx: ActivityContext,
    input: ActorRef,
) -> Result<(), String> {
    ctx.get_client()
        .prune_executions(&input.actor_id, duroxide::PruneOptions::default())
        .await
        .map(|_| ())
        .map_err(|e| format!("prune the executions of {}: {e}", input.actor_id))
}

/// The standbys asked for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplicasChanged {
    pub instance: String,
    pub replicas: u32,
}

/// Records how many standbys the instance should have.
pub async fn record_replicas(
    deps: Arc<ActivityDeps>,
    _ctx: ActivityContext,
    input: ReplicasChanged,
) -> Result<(), String> {
    deps.cms
        .set_instance_replicas(&input.instance, input.replicas)
        .await
        .map_err(describe)
}

/// Something the health loop noticed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthEvent {
    pub member: Option<String>,
    /// `member-down`, `member-up`, `lag-high`, `lag-ok`, `instance-health`, …
    pub kind: HaEventKind,
    pub message: String,
}

/// One round of the health loop.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HealthReport {
    pub instance: String,
    /// `healthy`, `degraded` or `unavailable`.
    pub health: InstanceHealth,
    pub probes: Vec<ProbeResult>,
    pub events: Vec<HealthEvent>,
    /// Where the ro endpoint leads after the round (`None` when the round did not decide it:
    /// no healthy primary).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ro: Option<toygres_common::ro_api::RoEndpointView>,
}

/// Records each member's health, the bounded check history, the instance's health, the
/// notable changes as events, and where the ro endpoint leads.
pub async fn record_health(
    deps: Arc<ActivityDeps>,
    _ctx: ActivityContext,
    input: HealthReport,
) -> Result<(), String> {
    let written = write_health(&deps, &input).await;
    deps.round_ends(&input.instance);
    written
}

/// Writes a health report to the CMS (the activity's body): members, history and the
/// instance's health in three statements, then where ro leads and the events.
pub async fn write_health(deps: &ActivityDeps, input: &HealthReport) -> Result<(), String> {
    let cms = &deps.cms;
    let checks: Vec<MemberCheck> = member_checks(input).collect();
    cms.record_health_batch(&checks, &[(input.instance.clone(), input.health)])
        .await
        .map_err(describe)?;
    if let Some(ro) = &input.ro {
        cms.record_ro_view(&input.instance, ro)
            .await
            .map_err(describe)?;
    }
    for event in &input.events {
        deps.metrics.record_ha_event(event.kind.as_str());
        cms.record_event(
            &input.instance,
            event.member.as_deref(),
            None,
            event.kind.into(),
            &event.message,
        )
        .await
        .map_err(describe)?;
    }
    Ok(())
}

/// A report's probes as the CMS keeps them.
pub fn member_checks(report: &HealthReport) -> impl Iterator<Item = MemberCheck> + '_ {
    report.probes.iter().map(|probe| MemberCheck {
        instance: report.instance.clone(),
        member: probe.member.clone(),
        healthy: probe.healthy,
        role: probe.role,
        timeline: probe.timeline.map(i64::from),
        lsn: probe.lsn.clone(),
        lag_bytes: probe.lag_bytes.and_then(|l| i64::try_from(l).ok()),
        sync_state: probe.sync_state.clone(),
        error: probe.error.clone().or_else(|| {
            probe
                .check
                .as_ref()
                .filter(|c| !c.ok)
                .map(|c| c.message.clone())
        }),
        latency_ms: probe.latency_ms,
        details: serde_json::to_value(probe).unwrap_or_default(),
    })
}

/// Record a change of primary.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HandoverRecord {
    pub instance: String,
    pub operation_id: String,
    pub new_primary: String,
    pub old_primary: Option<String>,
    /// The old primary's member state: `rejoining`, `fenced` or `running`.
    pub old_state: MemberState,
    pub event_kind: HaEventKind,
    pub message: String,
}

/// Records the new roles and an event, in the CMS.
pub async fn record_handover(
    deps: Arc<ActivityDeps>,
    _ctx: ActivityContext,
    input: HandoverRecord,
) -> Result<(), String> {
    deps.cms
        .record_new_primary(
            &input.instance,
            &input.new_primary,
            input.old_primary.as_deref(),
            input.old_state,
        )
        .await
        .map_err(describe)?;
    deps.cms
        .record_event(
            &input.instance,
            Some(&input.new_primary),
            Some(&input.operation_id),
            input.event_kind.into(),
            &input.message,
        )
        .await
        .map_err(describe)
}

/// One event for the instance's log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventRecord {
    pub instance: String,
    pub member: Option<String>,
    pub operation_id: Option<String>,
    pub kind: HaEventKind,
    pub message: String,
}

/// Appends an event to the instance's log (and counts HA alerts).
pub async fn record_event(
    deps: Arc<ActivityDeps>,
    _ctx: ActivityContext,
    input: EventRecord,
) -> Result<(), String> {
    deps.metrics.record_ha_event(input.kind.as_str());
    deps.cms
        .record_event(
            &input.instance,
            input.member.as_deref(),
            input.operation_id.as_deref(),
            input.kind.into(),
            &input.message,
        )
        .await
        .map_err(describe)
}

/// A standby's options.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberOptions {
    pub instance: String,
    pub member: String,
    pub sync_candidate: bool,
    pub max_lag_bytes: Option<u64>,
}

/// Records a standby's options in the CMS.
pub async fn record_member_options(
    deps: Arc<ActivityDeps>,
    _ctx: ActivityContext,
    input: MemberOptions,
) -> Result<(), String> {
    deps.cms
        .set_member_options(
            &input.instance,
            &input.member,
            input.sync_candidate,
            input.max_lag_bytes,
        )
        .await
        .map_err(describe)
}

/// Set a member's state in the CMS.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberStateInput {
    pub instance: String,
    pub member: String,
    pub state: MemberState,
}

/// Records the member's state.
pub async fn set_member_state(
    deps: Arc<ActivityDeps>,
    _ctx: ActivityContext,
    input: MemberStateInput,
) -> Result<(), String> {
    deps.cms
        .set_member_state(&input.instance, &input.member, input.state)
        .await
        .map_err(describe)
}
