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

use std::collections::{BTreeMap, BTreeSet};

use duroxide::OrchestrationContext;
use serde::{Deserialize, Serialize};
use toygres_common::controller_api::{HaSettings, OldPrimaryAction, ValidatedSwitchover};
use toygres_common::domain::OperationKind;
use toygres_common::parameters_api::{ApplyMode, ParameterCategory, PrimaryUpdate};

use super::durable::{call, sub_orchestration};
use super::ha::switchover::SwitchoverInput;
use super::names;
use super::operation::{report, OperationRun};
use super::wait_time::{wait_for_time, Waited};
use crate::activities::ha::{CatchUpInput, CaughtUp};
use crate::activities::members::{InstanceRef, Topology};
use crate::activities::names as act;
use crate::activities::parameters::{
    ConfirmParametersInput, DesiredParametersInput, ReplayedInput, RestartMemberInput,
    WriteParametersInput,
};
use crate::activities::sidecar::{ExpectedRole, MemberReady, WaitReadyInput};
use crate::parameters::plan::{plan, Change, RestartStep};

/// How long a member may take to run a reloaded value, or to serve again after a restart.
const MEMBER_TIMEOUT_SECS: u64 = 180;
/// A restarted standby counts as caught up this close to its primary.
const CAUGHT_UP_BYTES: u64 = 1024 * 1024;
pub(super) const STEPS: u32 = 4;
/// How long a switchover's target may take to catch up before it takes over.
const SWITCHOVER_SYNC_SECS: u64 = 120;

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
    /// How the primary takes a restart-class change (older histories: a restart in place, what
    /// the controller did then).
    #[serde(default = "restart_in_place")]
    pub primary_update: PrimaryUpdate,
    /// The earliest time to start, in milliseconds since the epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub apply_at_ms: Option<u64>,
    /// What the instance's desired parameters held for each changed setting before the change
    /// (`None`: not set): what a change that does not start is rolled back to.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub previous: BTreeMap<String, Option<String>>,
    /// The instance's HA settings, which a switchover follows (the actor fills them in).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ha: Option<HaSettings>,
    /// Every restart carries the previous values, and a member that does not start with the
    /// change undoes it on the members restarted before (older histories: only the first
    /// restart proved the change).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub undo_every_restart: bool,
}

impl ParametersInput {
    /// Its operation, beginning now (by the replay-safe clock).
    pub(super) async fn begin(&self, ctx: &OrchestrationContext) -> Result<OperationRun, String> {
        OperationRun::begin(
            ctx,
            &self.operation_id,
            OperationKind::Parameters,
            &self.instance,
        )
        .await
    }
}

fn restart_in_place() -> PrimaryUpdate {
    PrimaryUpdate::Restart
}

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
    // The members restarted with the change so far (undone if a later one does not start).
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
            RestartStep::Switchover { .. } => switch_over(ctx, input).await?,
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
                    None if input.undo_every_restart => restarted.push(step.clone()),
                    None => {}
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

/// Writes `parameters` on each of `members`; returns the settings waiting for a restart.
pub(super) async fn write_everywhere(
    ctx: &OrchestrationContext,
    instance: &str,
    members: &[String],
    parameters: &BTreeMap<String, Option<String>>,
) -> Result<Vec<String>, String> {
    let mut pending = BTreeSet::new();
    for member in members {
        let waiting: Vec<String> = call(
            ctx,
            act::WRITE_PARAMETERS,
            &WriteParametersInput {
                instance: instance.to_string(),
                member: member.clone(),
                parameters: parameters.clone(),
            },
        )
        .await?;
        pending.extend(waiting);
    }
    Ok(pending.into_iter().collect())
}

/// A new instance's parameters on its primary (*CreateInstance*, before any standby copies
/// it, so the standbys start with the same values and no restart order matters): written once
/// the primary accepts writes, and the primary restarted if a value waits for it.
pub(crate) async fn apply_on_new_primary(
    ctx: &OrchestrationContext,
    instance: &str,
    primary: &str,
    parameters: &BTreeMap<String, String>,
    ready_secs: u64,
) -> Result<(), String> {
    let ready = WaitReadyInput {
        instance: instance.to_string(),
        member: primary.to_string(),
        role: ExpectedRole::Primary,
        timeout_secs: ready_secs,
    };
    let _: MemberReady = call(ctx, act::WAIT_MEMBER_READY, &ready).await?;
    let values = parameters
        .iter()
        .map(|(k, v)| (k.clone(), Some(v.clone())))
        .collect();
    let members = [primary.to_string()];
    let pending = write_everywhere(ctx, instance, &members, &values).await?;
    if !pending.is_empty() {
        let none = BTreeMap::new();
        restart_one(
            ctx,
            instance,
            primary,
            primary,
            ExpectedRole::Primary,
            &none,
            false,
        )
        .await?;
    }
    Ok(())
}

/// Waits until every one of `members` runs `parameters`.
pub(crate) async fn confirm_everywhere(
    ctx: &OrchestrationContext,
    instance: &str,
    members: &[String],
    parameters: &BTreeMap<String, String>,
) -> Result<(), String> {
    for member in members {
        confirm(ctx, instance, member, parameters).await?;
    }
    Ok(())
}

/// Records `parameters` as the instance's desired values again (a change undone).
pub(super) async fn record_desired(
    ctx: &OrchestrationContext,
    instance: &str,
    parameters: &BTreeMap<String, Option<String>>,
) -> Result<(), String> {
    if parameters.is_empty() {
        return Ok(());
    }
    call(
        ctx,
        act::RECORD_DESIRED_PARAMETERS,
        &DesiredParametersInput {
            instance: instance.to_string(),
            parameters: parameters.clone(),
        },
    )
    .await
}

/// Waits until `member` runs `expected` (nothing to wait for when it is empty).
async fn confirm(
    ctx: &OrchestrationContext,
    instance: &str,
    member: &str,
    expected: &BTreeMap<String, String>,
) -> Result<(), String> {
    if expected.is_empty() {
        return Ok(());
    }
    call::<_, ()>(
        ctx,
        act::CONFIRM_PARAMETERS,
        &ConfirmParametersInput {
            instance: instance.to_string(),
            member: member.to_string(),
            expected: expected.clone(),
            timeout_secs: MEMBER_TIMEOUT_SECS,
        },
    )
    .await
}

/// Restarts a standby (once it replayed what a restarted primary wrote: a lowered hot-standby
/// setting must reach its control file first) or the primary in place; see [`restart_one`].
pub(super) async fn restart_step(
    ctx: &OrchestrationContext,
    instance: &str,
    primary: &str,
    step: &RestartStep,
    primary_restarted: &mut bool,
    fallback: &BTreeMap<String, Option<String>>,
    undo: bool,
) -> Result<Option<String>, String> {
    let (member, role) = match step {
        RestartStep::Standby(member) => {
            if *primary_restarted {
                call::<_, ()>(
                    ctx,
                    act::WAIT_REPLAYED,
                    &ReplayedInput {
                        instance: instance.to_string(),
                        primary: primary.to_string(),
                        standby: member.clone(),
                        timeout_secs: MEMBER_TIMEOUT_SECS,
                    },
                )
                .await?;
            }
            (member, ExpectedRole::Standby)
        }
        RestartStep::Primary(member) => {
            *primary_restarted = true;
            (member, ExpectedRole::Primary)
        }
        other => return Err(format!("{other:?} is not a restart")),
    };
    restart_one(ctx, instance, primary, member, role, fallback, undo).await
}

/// Restarts one member and waits until it serves again (a standby: caught up with `primary`).
/// Returns why it did not start with the change, if it fell back to `fallback` — or, with
/// `undo`, if it did not start at all.
async fn restart_one(
    ctx: &OrchestrationContext,
    instance: &str,
    primary: &str,
    member: &str,
    role: ExpectedRole,
    fallback: &BTreeMap<String, Option<String>>,
    undo: bool,
) -> Result<Option<String>, String> {
    let restarted: Result<Option<String>, String> = call(
        ctx,
        act::RESTART_MEMBER,
        &RestartMemberInput {
            instance: instance.to_string(),
            member: member.to_string(),
            fallback: fallback.clone(),
        },
    )
    .await;
    let fell_back = match restarted {
        Err(e) if undo => {
            return Ok(Some(format!(
                "did not start, not even with the previous values ({e})"
            )))
        }
        other => other?,
    };
    if fell_back.is_some() {
        return Ok(fell_back);
    }
    let _: MemberReady = call(
        ctx,
        act::WAIT_MEMBER_READY,
        &WaitReadyInput {
            instance: instance.to_string(),
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
                instance: instance.to_string(),
                primary: primary.to_string(),
                standby: member.to_string(),
                max_lag_bytes: CAUGHT_UP_BYTES,
                timeout_secs: MEMBER_TIMEOUT_SECS,
            },
        )
        .await?;
    }
    Ok(None)
}

/// `member`, the first to restart, did not start with the change and runs the previous values
/// again: puts them back on every member and as the instance's desired parameters, and fails
/// the operation saying so.
async fn roll_back(
    ctx: &OrchestrationContext,
    input: &ParametersInput,
    members: &[String],
    member: &str,
    why: &str,
) -> String {
    report(
        ctx,
        3,
        STEPS,
        format!("{member} did not start with the change: undoing it"),
    );
    let undone = match write_everywhere(ctx, &input.instance, members, &input.previous).await {
        Ok(_) => record_desired(ctx, &input.instance, &input.previous).await,
        Err(e) => Err(e),
    };
    let rest = match undone {
        Ok(()) => "the previous values are back on every member and in the instance's desired \
                   parameters; no other member restarted"
            .to_string(),
        Err(e) => format!("putting the previous values back on the other members failed: {e}"),
    };
    format!("the change was rolled back: {member} {why}; {rest}")
}

// Undoing a restart-class change that a member did not start with, once other
// members were restarted with it: the previous values go back into every member's configuration,
// the members already restarted with the change restart again (in the reverse order, which keeps
// PostgreSQL's hot-standby rule: what was raised on the standbys first is lowered there last),
// and the instance's desired parameters are the previous ones again. The member that failed runs
// the previous values if its sidecar could fall back; if it could not start at all, it gets them
// in its configuration for when it starts again.

/// The member that did not start with the change, and why.
pub(super) struct Failed<'a> {
    pub member: &'a str,
    pub why: &'a str,
}

/// The instance as the change found it: its members (the primary first), its primary, and the
/// restarts done with the change, in order.
pub(super) struct Undo<'a> {
    pub members: &'a [String],
    pub primary: &'a str,
    pub restarted: &'a [RestartStep],
}

/// Undoes the change on every member; returns the operation's error, which says so.
pub(super) async fn undo_restarts(
    ctx: &OrchestrationContext,
    input: &ParametersInput,
    undo: &Undo<'_>,
    failed: Failed<'_>,
) -> String {
    report(
        ctx,
        3,
        STEPS,
        format!(
            "{} did not start with the change: undoing it",
            failed.member
        ),
    );
    let mut problems = Vec::new();
    for member in undo.members {
        let one = std::slice::from_ref(member);
        let written = write_everywhere(ctx, &input.instance, one, &input.previous).await;
        match written {
            Ok(_) => {}
            // Down: its sidecar wrote the previous values when it fell back.
            Err(_) if member == failed.member => {}
            Err(e) => problems.push(e),
        }
    }
    let mut again = Vec::new();
    let mut primary_restarted = false;
    let none = BTreeMap::new();
    for step in undo.restarted.iter().rev() {
        let (RestartStep::Standby(member) | RestartStep::Primary(member)) = step else {
            continue;
        };
        report(
            ctx,
            3,
            STEPS,
            format!("restarting {member} with the previous values"),
        );
        let restarted = restart_step(
            ctx,
            &input.instance,
            undo.primary,
            step,
            &mut primary_restarted,
            &none,
            false,
        )
        .await;
        match restarted {
            Ok(_) => again.push(member.as_str()),
            Err(e) => problems.push(e),
        }
    }
    if let Err(e) = record_desired(ctx, &input.instance, &input.previous).await {
        problems.push(e);
    }
    let restarted = if again.is_empty() {
        "no other member had restarted with it".to_string()
    } else {
        format!("{} restarted again with them", again.join(", "))
    };
    let rest = if problems.is_empty() {
        format!(
            "the previous values are back in every member's configuration and in the \
             instance's desired parameters; {restarted}"
        )
    } else {
        format!(
            "{restarted}; putting the previous values back failed: {}",
            problems.join("; ")
        )
    };
    format!(
        "the change was rolled back: {} {}; {rest}",
        failed.member, failed.why
    )
}
