//! Activities of the *Parameters* operation: write a change on one member (its sidecar checks it
//! against the allow-list and the member's own catalog, and reloads), confirm from the member's
//! `pg_settings` that the reload-class values run, and restart one member.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use duroxide::ActivityContext;
use serde::{Deserialize, Serialize};
use toygres_common::parameters_api::same_value;
use toygres_common::sidecar_api::{parse_lsn, RestartRequest, SetParametersRequest};

use super::deps::{describe, ActivityDeps};
use super::sidecar::{poll_status, sidecar, sidecar_within, Polled};
use crate::orchestrations::names::COMMANDS_QUEUE;

/// How long a sidecar may take to restart its Postgres.
const RESTART_TIMEOUT: Duration = Duration::from_secs(180);

/// Write `parameters` on `member` (values, or `None` to reset).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WriteParametersInput {
    pub instance: String,
    pub member: String,
    pub parameters: BTreeMap<String, Option<String>>,
}

/// Writes and reloads; returns the settings that wait for a restart of the member.
pub async fn write_parameters(
    deps: Arc<ActivityDeps>,
    _ctx: ActivityContext,
    input: WriteParametersInput,
) -> Result<Vec<String>, String> {
    let client = sidecar_within(&deps, &input.instance, &input.member, 30).await?;
    let answer = client
        .set_parameters(&SetParametersRequest {
            parameters: input.parameters,
        })
        .await
        .map_err(|e| format!("set the parameters on {}: {e}", input.member))?;
    Ok(answer.pending_restart)
}

/// Wait until `member` runs every value of `expected`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfirmParametersInput {
    pub instance: String,
    pub member: String,
    pub expected: BTreeMap<String, String>,
    pub timeout_secs: u64,
}

/// Polls the member's catalog (its `pg_settings`) until it runs the expected values; fails at
/// the deadline naming the ones it does not.
pub async fn confirm_parameters(
    deps: Arc<ActivityDeps>,
    ctx: ActivityContext,
    input: ConfirmParametersInput,
) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(input.timeout_secs);
    let client = sidecar_within(&deps, &input.instance, &input.member, 10).await?;
    loop {
        let last = match client.parameter_catalog().await {
            Ok(catalog) => {
                let differing: Vec<String> = input
                    .expected
                    .iter()
                    .filter(|(name, wanted)| {
                        !catalog.get(name).is_some_and(|e| {
                            same_value(&e.vartype, e.unit.as_deref(), &e.current, wanted)
                        })
                    })
                    .map(|(name, wanted)| format!("{name} (want {wanted})"))
                    .collect();
                if differing.is_empty() {
                    return Ok(());
                }
                format!("{} does not run {}", input.member, differing.join(", "))
            }
            Err(e) => format!("read the catalog of {}: {e}", input.member),
        };
        if Instant::now() >= deadline || ctx.is_cancelled() {
            return Err(last);
        }
        tokio::time::sleep(deps.poll_interval).await;
    }
}

/// Restart one member's Postgres.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RestartMemberInput {
    pub instance: String,
    pub member: String,
    /// Values to put back if Postgres does not start with the new ones (`None` removes a
    /// setting): the proof that a restart-class change starts, on its first member.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub fallback: BTreeMap<String, Option<String>>,
}

/// Restarts the member's Postgres through its sidecar (returns once it runs again). With a
/// fallback, returns why the new configuration did not start when the sidecar had to fall back
/// (`None`: it started as configured).
pub async fn restart_member(
    deps: Arc<ActivityDeps>,
    _ctx: ActivityContext,
    input: RestartMemberInput,
) -> Result<Option<String>, String> {
    let client = sidecar(&deps, &input.instance, &input.member, RESTART_TIMEOUT).await?;
    let answer = if input.fallback.is_empty() {
        client.restart().await
    } else {
        client
            .restart_with_fallback(&RestartRequest {
                fallback: input.fallback,
            })
            .await
    }
    .map_err(|e| format!("restart {}: {e}", input.member))?;
    Ok((!answer.ok).then_some(answer.message))
}

/// An instance's desired parameters, recorded again (a value sets, `None` resets).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DesiredParametersInput {
    pub instance: String,
    pub parameters: BTreeMap<String, Option<String>>,
}

/// Records them in the CMS (a change rolled back puts the previous values back).
pub async fn record_desired_parameters(
    deps: Arc<ActivityDeps>,
    _ctx: ActivityContext,
    input: DesiredParametersInput,
) -> Result<(), String> {
    deps.cms
        .set_desired_parameters(&input.instance, &input.parameters)
        .await
        .map_err(describe)
}

/// Wait until `standby` has replayed everything `primary` had written when the wait began.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplayedInput {
    pub instance: String,
    pub primary: String,
    pub standby: String,
    pub timeout_secs: u64,
}

/// Polls the primary's view of its standbys until `standby`'s replay position passes the
/// primary's position at the first look. After the primary restarted with a lowered
/// hot-standby setting, a standby must have replayed that change (which updates its control
/// file) before it restarts with the lower value, or its recovery stops at startup.
pub async fn wait_replayed(
    deps: Arc<ActivityDeps>,
    ctx: ActivityContext,
    input: ReplayedInput,
) -> Result<(), String> {
    let mut target = None;
    poll_status(
        &deps,
        &ctx,
        &input.instance,
        &input.primary,
        Duration::from_secs(input.timeout_secs),
        |answer| {
            let status = match answer {
                Ok(status) => status,
                Err(e) => return Polled::Waiting(e.to_string()),
            };
            let Some(current) = status.current_lsn.as_deref().and_then(parse_lsn) else {
                return Polled::Waiting(format!("{} reports no position", input.primary));
            };
            let target = *target.get_or_insert(current);
            let replayed = status
                .standbys
                .iter()
                .find(|s| s.application_name == input.standby)
                .and_then(|s| s.replay_lsn.as_deref().and_then(parse_lsn));
            match replayed {
                Some(at) if at >= target => Polled::Done(()),
                Some(at) => Polled::Waiting(format!("{} bytes to replay", target - at)),
                None => Polled::Waiting(format!(
                    "{} is not streaming from {}",
                    input.standby, input.primary
                )),
            }
        },
    )
    .await
    .map_err(|last| {
        format!(
            "{} did not replay {}'s latest WAL within {} s: {last}",
            input.standby, input.primary, input.timeout_secs
        )
    })
}

/// A scheduled change that fell due: the actor command to queue on its instance's actor.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DueParametersInput {
    pub instance: String,
    pub operation_id: String,
    /// The actor command, as JSON.
    pub command: serde_json::Value,
}

/// Queues a due change on its instance's actor (read now: the actor may have been replaced
/// while the change waited). An operation no longer pending (cancelled, or already run by an
/// earlier attempt of this activity) is not queued; the actor also skips a finished one, so a
/// second copy never runs.
pub async fn queue_due_parameters(
    deps: Arc<ActivityDeps>,
    ctx: ActivityContext,
    input: DueParametersInput,
) -> Result<bool, String> {
    let pending = deps
        .cms
        .get_operation(&input.operation_id)
        .await
        .map_err(describe)?
        .is_some_and(|op| {
            op.status.parse() == Ok(toygres_common::domain::OperationStatus::Pending)
        });
    if !pending {
        return Ok(false);
    }
    let actor_id = deps
        .cms
        .get_instance(&input.instance)
        .await
        .map_err(describe)?
        .and_then(|i| i.actor_id)
        .ok_or_else(|| format!("instance {} has no actor", input.instance))?;
    ctx.get_client()
        .enqueue_event(&actor_id, COMMANDS_QUEUE, input.command.to_string())
        .await
        .map_err(|e| format!("queue the change on {}'s actor: {e}", input.instance))?;
    Ok(true)
}
