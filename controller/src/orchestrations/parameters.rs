//! *Parameters*: applies a change of an instance's Postgres parameters, as a child of its actor
//! (so never beside a switchover or a backup). Writes the change on every member (each sidecar
//! checks it and reloads), confirms the reload-class values from every member's `pg_settings`,
//! then — for restart-class changes applied now — restarts the members one at a time in the
//! order [`crate::parameters::plan`] decides, each standby caught up before the next.

use std::collections::{BTreeMap, BTreeSet};

use duroxide::OrchestrationContext;
use serde::{Deserialize, Serialize};
use toygres_common::domain::OperationKind;
use toygres_common::parameters_api::ApplyMode;

use super::durable::call;
use super::operation::{report, OperationRun};
use crate::activities::ha::{CatchUpInput, CaughtUp};
use crate::activities::members::{InstanceRef, Topology};
use crate::activities::names as act;
use crate::activities::parameters::{
    ConfirmParametersInput, RestartMemberInput, WriteParametersInput,
};
use crate::activities::sidecar::{ExpectedRole, MemberReady, WaitReadyInput};
use crate::parameters::plan::{plan, Change, PrimaryUpdate, RestartStep};

/// How long a member may take to run a reloaded value, or to serve again after a restart.
const MEMBER_TIMEOUT_SECS: u64 = 180;
/// A restarted standby counts as caught up this close to its primary.
const CAUGHT_UP_BYTES: u64 = 1024 * 1024;
const STEPS: u32 = 4;

/// The input of *Parameters* (also the actor's `parameters` command).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ParametersInput {
    pub operation_id: String,
    pub instance: String,
    /// Names to values; `None` resets a setting.
    pub parameters: BTreeMap<String, Option<String>>,
    pub apply: ApplyMode,
    /// Each setting's category and numbers, read from the catalog when the request was taken.
    pub changes: Vec<Change>,
    /// The reload-class values every member must run when the operation ends.
    pub confirm: BTreeMap<String, String>,
}

/// Applies the change; returns what was done.
pub async fn apply_parameters(
    ctx: OrchestrationContext,
    input: ParametersInput,
) -> Result<String, String> {
    let operation = OperationRun::begin(
        &ctx,
        &input.operation_id,
        OperationKind::Parameters,
        &input.instance,
    )
    .await?;
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
    report(ctx, 1, STEPS, "writing the change on every member");
    operation.record_started(ctx, None).await?;
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
    let mut pending = BTreeSet::new();
    for member in &members {
        let waiting: Vec<String> = call(
            ctx,
            act::WRITE_PARAMETERS,
            &WriteParametersInput {
                instance: input.instance.clone(),
                member: member.clone(),
                parameters: input.parameters.clone(),
            },
        )
        .await?;
        pending.extend(waiting);
    }

    report(
        ctx,
        2,
        STEPS,
        "confirming the reloaded values on every member",
    );
    if !input.confirm.is_empty() {
        for member in &members {
            call::<_, ()>(
                ctx,
                act::CONFIRM_PARAMETERS,
                &ConfirmParametersInput {
                    instance: input.instance.clone(),
                    member: member.clone(),
                    expected: input.confirm.clone(),
                    timeout_secs: MEMBER_TIMEOUT_SECS,
                },
            )
            .await?;
        }
    }
    let pending: Vec<String> = pending.into_iter().collect();
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

    let rollout = plan(&input.changes, &primary, &standbys, PrimaryUpdate::Restart)?;
    let total = rollout.restarts.len();
    for (index, step) in rollout.restarts.iter().enumerate() {
        let (member, role) = match step {
            RestartStep::Standby(member) => (member, ExpectedRole::Standby),
            RestartStep::Primary(member) => (member, ExpectedRole::Primary),
            RestartStep::Switchover { from, .. } => {
                return Err(format!(
                    "a switchover away from {from} is not how this controller updates a primary"
                ))
            }
        };
        report(
            ctx,
            3,
            STEPS,
            format!("restarting {member} ({}/{total})", index + 1),
        );
        restart_one(ctx, input, &primary, member, role).await?;
    }
    Ok(format!(
        "{} rolled through {} members",
        pending.join(", "),
        members.len()
    ))
}

/// Restarts one member and waits until it serves again (a standby: caught up with `primary`).
async fn restart_one(
    ctx: &OrchestrationContext,
    input: &ParametersInput,
    primary: &str,
    member: &str,
    role: ExpectedRole,
) -> Result<(), String> {
    call::<_, ()>(
        ctx,
        act::RESTART_MEMBER,
        &RestartMemberInput {
            instance: input.instance.clone(),
            member: member.to_string(),
        },
    )
    .await?;
    let _: MemberReady = call(
        ctx,
        act::WAIT_MEMBER_READY,
        &WaitReadyInput {
            instance: input.instance.clone(),
            member: member.to_string(),
            role,
            timeout_secs: MEMBER_TIMEOUT_SECS,
        },
    )
    .await?;
    if role == ExpectedRole::Standby {
        let _: CaughtUp = call(
            ctx,
            act::WAIT_CAUGHT_UP,
            &CatchUpInput {
                instance: input.instance.clone(),
                primary: primary.to_string(),
                standby: member.to_string(),
                max_lag_bytes: CAUGHT_UP_BYTES,
                timeout_secs: MEMBER_TIMEOUT_SECS,
            },
        )
        .await?;
    }
    Ok(())
}
