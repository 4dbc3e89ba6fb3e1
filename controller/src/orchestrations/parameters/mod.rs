//! *Parameters*: applies a change of an instance's Postgres parameters, as a child of its actor
//! (so never beside a switchover or a backup). Writes the change on every member (each sidecar
//! checks it and reloads), confirms the reload-class values from every member's `pg_settings`,
//! then — for restart-class changes applied now — restarts the members one at a time in the
//! order [`crate::parameters::plan`] decides, each standby caught up before the next. The primary
//! takes the change as its request says: by a switchover to an updated standby (a *Switchover*
//! child; the old primary rejoins as a standby and so restarts with the change), by a restart in
//! place, or not at all (`supervised`: it waits for the operator's switchover). A change with an
//! `apply_at` time first waits on a durable timer, checking for a cancel. The first member to
//! restart proves the change starts: if Postgres does not start with it, its sidecar puts the
//! previous values back and starts it again, and the change is undone on every member.

mod input;
mod steps;
mod undo;

use std::collections::BTreeMap;

use duroxide::OrchestrationContext;
use toygres_common::controller_api::{OldPrimaryAction, ValidatedSwitchover};
use toygres_common::domain::OperationStatus;
use toygres_common::parameters_api::{ApplyMode, ParameterCategory};

pub use self::input::{ParametersInput, STEPS};
pub use self::steps::{apply_on_new_primary, confirm_everywhere, record_desired};
use self::steps::{confirm, restart_step, write_everywhere};
use self::undo::{roll_back, undo_restarts, undo_switchover, Failed, Undo};
use super::durable::{call, sub_orchestration};
use super::ha::switchover::SwitchoverInput;
use super::names;
use super::operation::{report, OperationRun};
use super::wait_time::{wait_for_time, Waited};
use crate::activities::cancel::OperationRef;
use crate::activities::members::{InstanceRef, Topology};
use crate::activities::names as act;
use crate::parameters::plan::{plan, RestartStep};

/// How long a switchover's target may take to catch up before it takes over.
const SWITCHOVER_SYNC_SECS: u64 = 120;

/// Applies the change; returns what was done.
pub async fn apply_parameters(
    ctx: OrchestrationContext,
    input: ParametersInput,
) -> Result<String, String> {
    let operation = input.begin(&ctx).await?;
    let result = apply(&ctx, &input, &operation).await;
    operation
        .finish_reporting(&ctx, &result, None, STEPS, |done: &String| done.clone())
        .await?;
    result
}

async fn apply(
    ctx: &OrchestrationContext,
    input: &ParametersInput,
    operation: &OperationRun,
) -> Result<String, String> {
    operation.record_started(ctx, None).await?;
    if let Some(first) = &input.after {
        first_part_succeeded(ctx, input, first).await?;
    }
    if let Some(at) = input.apply_at_ms {
        wait_until(ctx, input, at).await?;
    }
    report(ctx, 1, STEPS, "writing the change on every member");
    let topology: Topology = call(
        ctx,
        act::READ_TOPOLOGY,
        &InstanceRef {
            instance: input.instance.clone(),
        },
    )
    .await?;
    let primary = topology
        .primary
        .clone()
        .ok_or_else(|| format!("instance {} has no primary", input.instance))?;
    let standbys: Vec<String> = topology
        .standbys
        .iter()
        .filter(|s| !topology.fenced.contains(s))
        .cloned()
        .collect();
    let members: Vec<String> = std::iter::once(primary.clone())
        .chain(standbys.iter().cloned())
        .collect();
    let pending = write_everywhere(ctx, &input.instance, &members, &input.parameters).await?;

    report(
        ctx,
        2,
        STEPS,
        "confirming the reloaded values on every member",
    );
    for member in &members {
        confirm(ctx, &input.instance, member, &input.confirm).await?;
    }
    if pending.is_empty() {
        return Ok(format!(
            "applied on {} members without a restart",
            members.len()
        ));
    }
    if input.apply == ApplyMode::OnNextRestart {
        return Ok(format!(
            "written on {} members; {} wait for their next restart",
            members.len(),
            pending.join(", ")
        ));
    }

    let rollout = plan(&input.changes, &primary, &standbys, input.primary_update)?;
    let total = rollout.restarts.len();
    let mut held = None;
    let mut primary_restarted = false;
    // The members restarted with the change so far (undone if a later one does not start, or
    // if the switchover that was to hand the primary role to one of them fails).
    let mut restarted: Vec<RestartStep> = Vec::new();
    for (index, step) in rollout.restarts.iter().enumerate() {
        let doing = match step {
            RestartStep::Standby(member) | RestartStep::Primary(member) => {
                format!("restarting {member}")
            }
            RestartStep::Switchover { from, .. } => {
                format!("switching over from {from} to an updated standby")
            }
            RestartStep::HoldPrimary(member) => format!("leaving {member} to the operator"),
        };
        report(ctx, 3, STEPS, format!("{doing} ({}/{total})", index + 1));
        // The first restart proves the change starts (and, for a change taken by this
        // version, every restart): a member that does not start with it falls back to the
        // previous values and the change is undone everywhere.
        let fallback = if index == 0 || input.undo_every_restart {
            input.previous.clone()
        } else {
            BTreeMap::new()
        };
        match step {
            RestartStep::Switchover { .. } => {
                if let Err(e) = switch_over(ctx, input).await {
                    let undo = Undo {
                        members: &members,
                        primary: &primary,
                        restarted: &restarted,
                    };
                    return Err(undo_switchover(ctx, input, &undo, &e).await);
                }
            }
            RestartStep::HoldPrimary(member) => held = Some(member.clone()),
            RestartStep::Standby(member) | RestartStep::Primary(member) => {
                let fell_back = restart_step(
                    ctx,
                    &input.instance,
                    &primary,
                    step,
                    &mut primary_restarted,
                    &fallback,
                    input.undo_every_restart,
                )
                .await?;
                match fell_back {
                    None => restarted.push(step.clone()),
                    Some(why) if !input.undo_every_restart => {
                        return Err(roll_back(ctx, input, &members, member, &why).await)
                    }
                    Some(why) => {
                        let failed = Failed { member, why: &why };
                        let undo = Undo {
                            members: &members,
                            primary: &primary,
                            restarted: &restarted,
                        };
                        return Err(undo_restarts(ctx, input, &undo, failed).await);
                    }
                }
            }
        }
    }
    // Every member runs the restart-class values now (the roll may have moved the primary).
    let restarted: BTreeMap<String, String> = input
        .changes
        .iter()
        .filter(|c| c.category == ParameterCategory::Restart)
        .filter_map(|c| Some((c.name.clone(), input.parameters.get(&c.name)?.clone()?)))
        .collect();
    report(
        ctx,
        4,
        STEPS,
        "confirming the restarted values on every member",
    );
    for member in members.iter().filter(|m| held.as_ref() != Some(*m)) {
        confirm(ctx, &input.instance, member, &restarted).await?;
    }
    if let Some(primary) = held {
        return Ok(format!(
            "{} rolled through the standbys; the primary {primary} applies it at its next \
             restart or switchover (POST /v1/instances/{}/switchover)",
            pending.join(", "),
            input.instance
        ));
    }
    Ok(format!(
        "{} rolled through {} members",
        pending.join(", "),
        members.len()
    ))
}

/// Waits on durable timers until `at_ms` (a change queued by an older controller, which
/// waited inside the actor's queue; a change scheduled now waits in *ScheduledParameters* and
/// arrives due), ending early (as cancelled) if the operator cancels.
async fn wait_until(
    ctx: &OrchestrationContext,
    input: &ParametersInput,
    at_ms: u64,
) -> Result<(), String> {
    match wait_for_time(ctx, &input.operation_id, at_ms, STEPS, u32::MAX).await? {
        Waited::Cancelled => {
            // Nothing was written: the desired values go back to what they were.
            record_desired(ctx, &input.instance, &input.previous).await?;
            Err("cancelled by the operator".into())
        }
        Waited::Due | Waited::Longer => Ok(()),
    }
}

/// The second roll of a change split in two (a profile that raises some hot-standby settings
/// and lowers others) runs only once the first succeeded: otherwise its desired values go back
/// and it fails before touching a member.
async fn first_part_succeeded(
    ctx: &OrchestrationContext,
    input: &ParametersInput,
    first: &str,
) -> Result<(), String> {
    let status: Option<String> = call(
        ctx,
        act::OPERATION_STATUS,
        &OperationRef {
            operation_id: first.to_string(),
        },
    )
    .await?;
    let status = status.and_then(|s| s.parse::<OperationStatus>().ok());
    if status == Some(OperationStatus::Succeeded) {
        return Ok(());
    }
    record_desired(ctx, &input.instance, &input.previous).await?;
    let ended = status.map_or_else(|| "is unknown".to_string(), |s| format!("is {s}"));
    Err(format!(
        "not run: the first part of this change ({first}) {ended}; its values stay as they were"
    ))
}

/// Hands the primary role to an updated standby (every standby runs the change by now) with a
/// *Switchover* child; the old primary rejoins as a standby, restarting with the change.
async fn switch_over(ctx: &OrchestrationContext, input: &ParametersInput) -> Result<(), String> {
    let id = format!("{}-switchover", input.operation_id);
    let child = SwitchoverInput {
        operation_id: id.clone(),
        instance: input.instance.clone(),
        request: ValidatedSwitchover {
            to: None,
            wait_for_sync: true,
            sync_timeout_secs: SWITCHOVER_SYNC_SECS,
            old_primary_action: OldPrimaryAction::ConvertToReplica,
        },
        ha: input.ha.clone().unwrap_or_default(),
    };
    sub_orchestration(ctx, names::SWITCHOVER, &id, &child)
        .await
        .map(|_| ())
        .map_err(|e| format!("switchover ({id}): {e}"))
}
