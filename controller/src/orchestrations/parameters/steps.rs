//! The steps a parameter change is made of, each one or a few activities: write the values on
//! members, wait until members run them, record the desired values, restart one member and
//! wait until it serves (and, a standby, has caught up). *Parameters* composes them, and so
//! does *CreateInstance* for a new instance's values.

use std::collections::{BTreeMap, BTreeSet};

use duroxide::OrchestrationContext;

use crate::activities::ha::{CatchUpInput, CaughtUp};
use crate::activities::names as act;
use crate::activities::parameters::{
    ConfirmParametersInput, DesiredParametersInput, ReplayedInput, RestartMemberInput,
    WriteParametersInput,
};
use crate::activities::sidecar::{ExpectedRole, MemberReady, WaitReadyInput};
use crate::orchestrations::durable::call;
use crate::parameters::plan::RestartStep;

/// How long a member may take to run a reloaded value, or to serve again after a restart.
const MEMBER_TIMEOUT_SECS: u64 = 180;
/// A restarted standby counts as caught up this close to its primary.
const CAUGHT_UP_BYTES: u64 = 1024 * 1024;

/// Writes `parameters` on each of `members`; returns the settings waiting for a restart.
pub async fn write_everywhere(
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
pub async fn apply_on_new_primary(
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
pub async fn confirm_everywhere(
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
pub async fn record_desired(
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
pub async fn confirm(
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
pub async fn restart_step(
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
