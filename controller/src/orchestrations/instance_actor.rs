//! *InstanceActor*: the one orchestration that owns an instance while it lives. It runs the
//! health loop (timer → probe every member in parallel → record health, history and notable
//! changes) and takes operator commands from its durable queue, one at a time, so no two
//! mutating operations on one instance ever race. It continues as new every few rounds to bound
//! its history; its state travels in its input.

use std::collections::BTreeMap;
use std::time::Duration;

use duroxide::{DurableFuture, Either2, OrchestrationContext};
use serde::{Deserialize, Serialize};

use toygres_common::controller_api::{HaSettings, ValidatedSwitchover};
use toygres_common::domain::{
    HaEventKind, InstanceHealth, MemberState, ReplicationMode, Role, SyncState,
};

use super::create_instance::ActorSettings;
use super::ha::{
    choose_target, sync_policy, FailoverInput, NoCandidate, PrimarySeen, RejoinOperation,
    SwitchoverInput,
};
use super::replicas::{AddReplicaInput, RemoveReplicaInput};
use super::{call, call_once, names, now_ms, sub_orchestration};
use crate::activities::ha::{
    ActorView, EventRecord, FenceInput, Fenced, MemberStateInput, MemberSurvey, SurveyInput,
    SyncPolicyInput,
};
use crate::activities::members::RouteInput;
use crate::activities::names as act;
use crate::activities::records::{ActorRef, HealthEvent, HealthReport};
use crate::activities::sidecar::{ProbeInput, ProbeResult};
use crate::platform::EndpointRoutes;

/// The durable queue the actor takes commands from.
pub const COMMANDS_QUEUE: &str = "commands";

/// A command for the actor, sent with `client.enqueue_event(actor_id, COMMANDS_QUEUE, json)`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "command", rename_all = "kebab-case")]
pub enum ActorCommand {
    /// Run a health round now instead of at the next tick.
    CheckNow,
    /// Add a standby (operation *AddReplica*).
    AddReplica(AddReplicaInput),
    /// Remove a standby (operation *RemoveReplica*).
    RemoveReplica(RemoveReplicaInput),
    /// Hand the primary role to a standby (operation *Switchover*).
    Switchover(SwitchoverCommand),
    /// Promote a standby because the primary is down (operation *Failover*).
    Failover(FailoverCommand),
}

/// An operator's switchover.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SwitchoverCommand {
    pub operation_id: String,
    pub request: ValidatedSwitchover,
}

/// An operator's failover.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FailoverCommand {
    pub operation_id: String,
    pub to: Option<String>,
    pub force: bool,
}

/// The actor's input: which instance, how, and what it remembers across executions.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ActorInput {
    pub instance: String,
    pub settings: ActorSettings,
    #[serde(default)]
    pub state: ActorState,
}

impl ActorInput {
    /// A new actor of `instance`, remembering nothing yet.
    pub fn new(instance: &str, settings: ActorSettings) -> Self {
        Self {
            instance: instance.to_string(),
            settings,
            state: ActorState::default(),
        }
    }
}

/// What the actor remembers of the last health round, to tell what changed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActorState {
    pub members: BTreeMap<String, MemberSeen>,
    /// `unknown` until the first round.
    pub health: Option<InstanceHealth>,
    /// Health rounds since the actor started, across executions.
    pub rounds: u64,
    /// Executions so far (continue-as-new count).
    pub generation: u64,
    /// The members the ro endpoint was last pointed at by this actor.
    #[serde(default)]
    pub routed_ro: Option<Vec<String>>,
    /// Checks in a row that found the primary down.
    #[serde(default)]
    pub primary_failures: u32,
    /// The primary as last seen healthy: its position and synchronous standbys.
    #[serde(default)]
    pub last_seen: PrimarySeen,
    /// When the last failover by this actor began (ms since the epoch).
    #[serde(default)]
    pub last_failover_ms: Option<u64>,
    /// The last HA alert or decision logged, so a lasting condition is logged once.
    #[serde(default)]
    pub alert: Option<HaEventKind>,
    /// When a rejoin was last tried (ms since the epoch).
    #[serde(default)]
    pub last_rejoin_ms: Option<u64>,
    /// The instance's HA settings as last read.
    #[serde(default)]
    pub ha: HaSettings,
    /// The controller's health interval as last read (it may have been restarted with another).
    #[serde(default)]
    pub health_interval_ms: Option<u64>,
    /// The instance as the last full round read it: what the quick re-checks of a failing
    /// primary decide with.
    #[serde(default)]
    pub view: Option<ActorView>,
    /// Running standbys the healthy primary does not list as streaming: rounds in a row.
    #[serde(default)]
    pub not_following: BTreeMap<String, u32>,
}

/// One member as the last round saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberSeen {
    pub healthy: bool,
    pub lagging: bool,
    /// Its custom health query failed.
    #[serde(default)]
    pub check_failed: bool,
    /// Less than [`DISK_LOW_PERCENT`] of its data file system is free.
    #[serde(default)]
    pub disk_low: bool,
}

/// Below this share of free space on a member's data file system, the instance is degraded.
pub const DISK_LOW_PERCENT: u64 = 10;

/// Whether a probe shows the member's disk nearly full.
fn disk_low(probe: &ProbeResult) -> bool {
    match (probe.disk_available_bytes, probe.disk_total_bytes) {
        (Some(free), Some(total)) if total > 0 => {
            free.saturating_mul(100) < total * DISK_LOW_PERCENT
        }
        _ => false,
    }
}

/// Runs the actor: health rounds on a timer and commands from the queue, then continues as new.
pub async fn instance_actor(ctx: OrchestrationContext, input: ActorInput) -> Result<(), String> {
    let mut state = input.state.clone();
    if state.generation > 0 {
        // Old executions are history nobody reads: drop them.
        let prune = ActorRef {
            instance: input.instance.clone(),
            actor_id: ctx.instance_id(),
        };
        if let Err(e) = call::<_, ()>(&ctx, act::PRUNE_ACTOR_HISTORY, &prune).await {
            ctx.trace_warn(format!("prune the actor's history: {e}"));
        }
    }
    for _ in 0..input.settings.rounds_per_execution.max(1) {
        // A primary that stopped answering is checked again sooner.
        let interval = if state.primary_failures > 0 {
            Duration::from_millis(state.ha.check_interval_ms.max(50))
        } else {
            health_interval(&input.settings, &state)
        };
        let command = ctx.dequeue_event(COMMANDS_QUEUE);
        let tick = ctx.schedule_timer(interval);
        let command = match ctx.select2(command, tick).await {
            Either2::First(message) => match serde_json::from_str::<ActorCommand>(&message) {
                Ok(command) => Some(command),
                Err(e) => {
                    ctx.trace_warn(format!("ignoring an unreadable command: {e}"));
                    continue;
                }
            },
            Either2::Second(()) => None,
        };
        match command {
            // A primary that missed a check: re-check it alone (no full round, nothing
            // recorded), and decide as soon as it has missed enough.
            None if state.primary_failures > 0 && state.view.is_some() => {
                state = recheck_primary(&ctx, &input, state).await;
            }
            None | Some(ActorCommand::CheckNow) => {
                match health_round(&ctx, &input, state, Routing::Allowed).await {
                    (next, Some(round)) => {
                        state = look_after_primary(&ctx, &input, next, round).await
                    }
                    (next, None) if next.generation == u64::MAX => return superseded(&ctx),
                    (next, None) => state = next,
                }
            }
            Some(command) => {
                if let Some((operation_id, child)) = start_operation(&ctx, &input, &state, command)
                {
                    state = run_command(&ctx, &input, state, &operation_id, child).await;
                    state.primary_failures = 0;
                }
            }
        }
    }
    state.generation += 1;
    let next = ActorInput {
        instance: input.instance.clone(),
        settings: input.settings,
        state,
    };
    ctx.continue_as_new_typed(&next).await.map(|_| ())
}

/// Starts the child orchestration that carries out an operator's command (`None` for
/// `CheckNow`, which the loop handles itself).
fn start_operation(
    ctx: &OrchestrationContext,
    input: &ActorInput,
    state: &ActorState,
    command: ActorCommand,
) -> Option<(String, DurableFuture<Result<String, String>>)> {
    Some(match command {
        ActorCommand::AddReplica(command) => (
            command.operation_id.clone(),
            sub_orchestration(ctx, names::ADD_REPLICA, &command.operation_id, &command),
        ),
        ActorCommand::RemoveReplica(command) => (
            command.operation_id.clone(),
            sub_orchestration(ctx, names::REMOVE_REPLICA, &command.operation_id, &command),
        ),
        ActorCommand::Switchover(command) => (
            command.operation_id.clone(),
            sub_orchestration(
                ctx,
                names::SWITCHOVER,
                &command.operation_id,
                &SwitchoverInput {
                    operation_id: command.operation_id.clone(),
                    instance: input.instance.clone(),
                    request: command.request,
                    ha: state.ha.clone(),
                },
            ),
        ),
        ActorCommand::Failover(command) => (
            command.operation_id.clone(),
            sub_orchestration(
                ctx,
                names::FAILOVER,
                &command.operation_id,
                &FailoverInput {
                    operation_id: command.operation_id.clone(),
                    instance: input.instance.clone(),
                    to: command.to,
                    force: command.force,
                    automatic: false,
                    ha: state.ha.clone(),
                    last_seen: state.last_seen.clone(),
                    surveyed: None,
                },
            ),
        ),
        ActorCommand::CheckNow => return None,
    })
}

/// What a health round saw, for the HA checks that follow it.
#[derive(Debug, Clone)]
pub struct Round {
    pub view: ActorView,
    pub probes: Vec<ProbeResult>,
}

/// After a health round: counts the primary's failed checks and fails over when they reach the
/// threshold (if allowed and a standby may take over), fences a member that serves as a second
/// primary, and retries the rejoin of former primaries.
async fn look_after_primary(
    ctx: &OrchestrationContext,
    input: &ActorInput,
    mut state: ActorState,
    round: Round,
) -> ActorState {
    let Round { view, probes } = round;
    state.view = Some(view.clone());
    let Some(primary) = view.primary.clone() else {
        state.ha = view.ha.clone();
        return state;
    };
    let probe = probes.iter().find(|p| p.member == primary);
    let primary_up = probe.is_some_and(|p| p.healthy && p.role == Some(Role::Primary));
    if primary_up
        && view.replication_mode == ReplicationMode::Sync
        && sync_settings_changed(&state.ha, &view.ha)
    {
        // Changed through the API: the primary gets its new policy now.
        let standbys = view.sync_candidates(&primary);
        let applied = call::<_, ()>(
            ctx,
            act::SET_SYNC_POLICY,
            &SyncPolicyInput {
                instance: input.instance.clone(),
                primary: primary.clone(),
                policy: sync_policy(true, &view.ha, &standbys),
            },
        )
        .await;
        if let Err(e) = applied {
            // Tried again next round: the settings are not taken as applied.
            ctx.trace_warn(format!("apply the synchronous replication settings: {e}"));
            return state;
        }
    }
    state.ha = view.ha.clone();
    if primary_up {
        if state.primary_failures > 0 {
            ctx.trace_info(format!("the primary {primary} answers again"));
        }
        state.primary_failures = 0;
        state.alert = None;
        state = fence_stray_primaries(ctx, input, state, &primary, &probes).await;
        state = rejoin_lost_standbys(ctx, input, state, &primary, &probes, &view).await;
        return rejoin_former_primaries(ctx, input, state, &view).await;
    }
    state.primary_failures = state.primary_failures.saturating_add(1);
    if state.primary_failures < view.ha.failure_threshold {
        return state;
    }
    decide_failover(ctx, input, state, &view, &primary).await
}

/// Probes the recorded primary alone; a healthy answer ends the suspicion (the next full round
/// records it), another miss counts, and enough misses lead to the failover decision.
async fn recheck_primary(
    ctx: &OrchestrationContext,
    input: &ActorInput,
    mut state: ActorState,
) -> ActorState {
    let Some(view) = state.view.clone() else {
        return state;
    };
    let Some(primary) = view.primary.clone() else {
        return state;
    };
    let probe = call_once::<_, ProbeResult>(
        ctx,
        act::PROBE_MEMBER,
        ProbeInput {
            instance: input.instance.clone(),
            member: primary.clone(),
            health_query: None,
        },
    )
    .await;
    if probe.is_ok_and(|p| p.healthy && p.role == Some(Role::Primary)) {
        ctx.trace_info(format!("the primary {primary} answers again"));
        state.primary_failures = 0;
        return state;
    }
    state.primary_failures = state.primary_failures.saturating_add(1);
    if state.primary_failures < view.ha.failure_threshold {
        return state;
    }
    decide_failover(ctx, input, state, &view, &primary).await
}

/// The primary missed enough checks: fail over unless disabled, in the cooldown, vetoed by a
/// standby that still streams from it, or impossible (no standby may take over: an alert).
async fn decide_failover(
    ctx: &OrchestrationContext,
    input: &ActorInput,
    mut state: ActorState,
    view: &ActorView,
    primary: &str,
) -> ActorState {
    let primary = primary.to_string();
    let down_for = format!(
        "the primary {primary} failed {} checks in a row",
        state.primary_failures
    );
    if !view.ha.failover_enabled {
        return alert_once(
            ctx,
            input,
            state,
            HaEventKind::FailoverDisabled,
            format!("{down_for}; automatic failover is disabled"),
        )
        .await;
    }
    let Ok(now) = now_ms(ctx).await else {
        return state;
    };
    if let Some(last) = state.last_failover_ms {
        let cooldown = view.ha.cooldown_secs.saturating_mul(1000);
        if now.saturating_sub(last) < cooldown {
            return alert_once(
                ctx,
                input,
                state,
                HaEventKind::FailoverCooldown,
                format!(
                    "{down_for}; no automatic failover within {} s of the last one",
                    view.ha.cooldown_secs
                ),
            )
            .await;
        }
    }
    // Before acting, ask the standbys: one that still streams from the primary says it lives
    // (the controller, not the primary, may be the one cut off).
    let standbys: Vec<String> = view
        .members
        .iter()
        .filter(|m| **m != primary)
        .cloned()
        .collect();
    let surveys: Vec<MemberSurvey> = match call_once(
        ctx,
        act::SURVEY_MEMBERS,
        &SurveyInput {
            instance: input.instance.clone(),
            members: standbys,
            timeout_ms: view.ha.check_timeout_ms,
        },
    )
    .await
    {
        Ok(surveys) => surveys,
        Err(e) => {
            ctx.trace_warn(format!("survey the standbys: {e}"));
            return state;
        }
    };
    if let Some(witness) = surveys
        .iter()
        .find(|s| s.streaming && s.upstream.is_some() && s.upstream == view.primary_address)
    {
        return alert_once(
            ctx,
            input,
            state,
            HaEventKind::FailoverSkipped,
            format!(
                "{down_for}, but {} still streams from it: not failing over",
                witness.member
            ),
        )
        .await;
    }
    let sync = view.replication_mode == ReplicationMode::Sync;
    // What was seen of an earlier primary says nothing about this one.
    let seen = if state.last_seen.member.as_deref() == Some(primary.as_str()) {
        state.last_seen.clone()
    } else {
        PrimarySeen::default()
    };
    let sync_set = view.sync_candidates(&primary);
    match choose_target(&surveys, sync, &view.ha, &seen, &sync_set, None, false) {
        Err(NoCandidate(why)) => {
            alert_once(
                ctx,
                input,
                state,
                HaEventKind::HaAlert,
                format!("{down_for} and no standby may take over: {why}"),
            )
            .await
        }
        Ok(choice) => {
            let Ok(guid) = ctx.new_guid().await else {
                return state;
            };
            let operation_id = format!(
                "op-{}",
                guid.replace('-', "").chars().take(16).collect::<String>()
            );
            ctx.trace_warn(format!(
                "{down_for} and no standby streams from it: failing over to {}",
                choice.reason
            ));
            state.last_failover_ms = Some(now);
            let child = sub_orchestration(
                ctx,
                names::FAILOVER,
                &operation_id,
                &FailoverInput {
                    operation_id: operation_id.clone(),
                    instance: input.instance.clone(),
                    to: Some(choice.member),
                    force: false,
                    automatic: true,
                    ha: view.ha.clone(),
                    last_seen: seen,
                    surveyed: Some(surveys),
                },
            );
            let mut next = run_command(ctx, input, state, &operation_id, child).await;
            next.primary_failures = 0;
            next.alert = None;
            next
        }
    }
}

/// What a round saw of `primary`, when it answered as a primary: its position and the standbys
/// it reported synchronous or in the quorum.
fn primary_seen(probes: &[ProbeResult], primary: &str) -> Option<PrimarySeen> {
    let p = probes
        .iter()
        .find(|p| p.member == primary && p.healthy && p.role == Some(Role::Primary))?;
    Some(PrimarySeen {
        member: Some(primary.to_string()),
        lsn: p
            .lsn
            .as_deref()
            .and_then(toygres_common::sidecar_api::parse_lsn),
        synchronous: p
            .standby_states()
            .filter(|(_, sync)| SyncState::text_confirms_commits(sync))
            .map(|(name, _)| name.to_string())
            .collect(),
        degraded: p.sync_degraded,
    })
}

/// Whether the settings that shape the primary's synchronous replication differ.
fn sync_settings_changed(before: &HaSettings, now: &HaSettings) -> bool {
    (
        before.sync_mode,
        before.num_sync,
        before.quorum,
        before.degrade_timeout_secs,
    ) != (
        now.sync_mode,
        now.num_sync,
        now.quorum,
        now.degrade_timeout_secs,
    )
}

/// Logs an HA event unless the same kind was the last one logged.
async fn alert_once(
    ctx: &OrchestrationContext,
    input: &ActorInput,
    mut state: ActorState,
    kind: HaEventKind,
    message: String,
) -> ActorState {
    if state.alert == Some(kind) {
        return state;
    }
    ctx.trace_warn(message.clone());
    let logged = call::<_, ()>(
        ctx,
        act::RECORD_EVENT,
        &EventRecord {
            instance: input.instance.clone(),
            member: None,
            operation_id: None,
            kind,
            message,
        },
    )
    .await;
    if logged.is_ok() {
        state.alert = Some(kind);
    }
    state
}

/// A member other than the recorded primary that serves as a primary (a former primary that
/// came back before it could be fenced) is fenced at once and left to rejoin.
async fn fence_stray_primaries(
    ctx: &OrchestrationContext,
    input: &ActorInput,
    state: ActorState,
    primary: &str,
    probes: &[ProbeResult],
) -> ActorState {
    for stray in probes
        .iter()
        .filter(|p| p.member != primary && p.healthy && p.role == Some(Role::Primary))
    {
        let fenced = call_once::<_, Fenced>(
            ctx,
            act::FENCE_MEMBER,
            &FenceInput {
                instance: input.instance.clone(),
                member: stray.member.clone(),
                timeout_ms: state.ha.check_timeout_ms.max(5_000),
            },
        )
        .await;
        let message = match &fenced {
            Ok(f) => format!(
                "{} serves as a second primary beside {primary}: fenced it ({})",
                stray.member, f.method
            ),
            Err(e) => format!(
                "{} serves as a second primary beside {primary}; fencing it failed: {e}",
                stray.member
            ),
        };
        ctx.trace_error(message.clone());
        if fenced.is_ok() {
            let _ = call::<_, ()>(
                ctx,
                act::SET_MEMBER_STATE,
                &MemberStateInput {
                    instance: input.instance.clone(),
                    member: stray.member.clone(),
                    state: MemberState::Rejoining,
                },
            )
            .await;
        }
        let _ = call::<_, ()>(
            ctx,
            act::RECORD_EVENT,
            &EventRecord {
                instance: input.instance.clone(),
                member: Some(stray.member.clone()),
                operation_id: None,
                kind: HaEventKind::HaStrayPrimary,
                message,
            },
        )
        .await;
    }
    state
}

/// Rounds in a row a running standby may be missing from its primary's replication before the
/// actor has it rejoin (a re-point that failed, a WAL receiver stuck on a dead upstream).
pub const NOT_FOLLOWING_ROUNDS: u32 = 10;

/// Counts the rounds each running standby is absent from the healthy primary's replication;
/// at [`NOT_FOLLOWING_ROUNDS`] the standby is marked `rejoining`, which the rejoin retry
/// repairs (re-point, rewind or re-clone).
async fn rejoin_lost_standbys(
    ctx: &OrchestrationContext,
    input: &ActorInput,
    mut state: ActorState,
    primary: &str,
    probes: &[ProbeResult],
    view: &ActorView,
) -> ActorState {
    let Some(primary_probe) = probes.iter().find(|p| p.member == primary) else {
        return state;
    };
    let streaming: Vec<&str> = primary_probe
        .standby_states()
        .map(|(name, _)| name)
        .collect();
    let mut counts = BTreeMap::new();
    for probe in probes {
        let lost = probe.member != primary
            && probe.healthy
            && probe.role == Some(Role::Standby)
            && view.running_standbys.contains(&probe.member)
            && !streaming.contains(&probe.member.as_str());
        if lost {
            let rounds = state.not_following.get(&probe.member).copied().unwrap_or(0) + 1;
            counts.insert(probe.member.clone(), rounds);
        }
    }
    state.not_following = counts;
    let due: Vec<String> = state
        .not_following
        .iter()
        .filter(|(_, rounds)| **rounds == NOT_FOLLOWING_ROUNDS)
        .map(|(member, _)| member.clone())
        .collect();
    for member in due {
        let message = format!(
            "{member} runs as a standby but has not streamed from {primary} for \
             {NOT_FOLLOWING_ROUNDS} health rounds: rejoining it"
        );
        ctx.trace_warn(message.clone());
        let marked = call::<_, ()>(
            ctx,
            act::SET_MEMBER_STATE,
            &MemberStateInput {
                instance: input.instance.clone(),
                member: member.clone(),
                state: MemberState::Rejoining,
            },
        )
        .await;
        if marked.is_ok() {
            let _ = call::<_, ()>(
                ctx,
                act::RECORD_EVENT,
                &EventRecord {
                    instance: input.instance.clone(),
                    member: Some(member.clone()),
                    operation_id: None,
                    kind: HaEventKind::StandbyNotFollowing,
                    message,
                },
            )
            .await;
        }
    }
    state
}

/// How often the actor tries again to rejoin a former primary.
const REJOIN_RETRY_MS: u64 = 15_000;

/// Retries, one member at a time, the rejoin of former primaries a failover left behind.
async fn rejoin_former_primaries(
    ctx: &OrchestrationContext,
    input: &ActorInput,
    mut state: ActorState,
    view: &ActorView,
) -> ActorState {
    let Some(member) = view.rejoining.first() else {
        return state;
    };
    let Ok(now) = now_ms(ctx).await else {
        return state;
    };
    if state
        .last_rejoin_ms
        .is_some_and(|last| now.saturating_sub(last) < REJOIN_RETRY_MS)
    {
        return state;
    }
    state.last_rejoin_ms = Some(now);
    let Ok(guid) = ctx.new_guid().await else {
        return state;
    };
    let operation_id = format!(
        "op-{}",
        guid.replace('-', "").chars().take(16).collect::<String>()
    );
    let child = sub_orchestration(
        ctx,
        names::REJOIN,
        &operation_id,
        &RejoinOperation {
            operation_id: operation_id.clone(),
            instance: input.instance.clone(),
            member: member.clone(),
        },
    );
    run_command(ctx, input, state, &operation_id, child).await
}

/// Waits for a command's operation (a child orchestration) while the health loop goes on: the
/// next command waits, the health rounds do not. The operation records its own outcome.
async fn run_command(
    ctx: &OrchestrationContext,
    input: &ActorInput,
    mut state: ActorState,
    operation_id: &str,
    mut operation: DurableFuture<Result<String, String>>,
) -> ActorState {
    let interval = health_interval(&input.settings, &state);
    // The operation may have moved the endpoints: the next round sets them again.
    state.routed_ro = None;
    loop {
        let tick = ctx.schedule_timer(interval);
        // By reference: losing the race to the timer must not cancel the operation.
        match ctx.select2(&mut operation, tick).await {
            Either2::First(Ok(output)) => {
                ctx.trace_info(format!("operation {operation_id} done: {output}"));
                return state;
            }
            Either2::First(Err(e)) => {
                ctx.trace_warn(format!("operation {operation_id} failed: {e}"));
                return state;
            }
            // The operation owns the routes while it runs. (A superseded actor finishes the
            // operation it started before it stops.)
            Either2::Second(()) => {
                let (next, _) = health_round(ctx, input, state.clone(), Routing::Frozen).await;
                if next.generation != u64::MAX {
                    state = next;
                }
            }
        }
    }
}

fn health_interval(settings: &ActorSettings, state: &ActorState) -> Duration {
    let ms = state
        .health_interval_ms
        .unwrap_or(settings.health_interval_ms);
    Duration::from_millis(ms.max(100))
}

/// How an actor that is no longer its instance's ends.
fn superseded(ctx: &OrchestrationContext) -> Result<(), String> {
    ctx.trace_info("no longer the instance's actor; stopping");
    Ok(())
}

/// Whether a health round may move the ro endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Routing {
    Allowed,
    /// An operation runs and routes itself.
    Frozen,
}

/// Probes every member in parallel, points the ro endpoint at the healthy standbys, records
/// what it saw, and returns the new state with what the round saw. A round that cannot finish
/// (the CMS is down) is logged and leaves the state as it was, with no round. When this actor is
/// no longer the instance's (replaced, or the instance is being deleted) the state's generation
/// is `u64::MAX`: it must stop.
async fn health_round(
    ctx: &OrchestrationContext,
    input: &ActorInput,
    state: ActorState,
    routing: Routing,
) -> (ActorState, Option<Round>) {
    match try_health_round(ctx, input, &state, routing).await {
        Ok(Some((next, round))) => (next, Some(round)),
        Ok(None) => (
            ActorState {
                generation: u64::MAX,
                ..state
            },
            None,
        ),
        Err(e) => {
            ctx.trace_warn(format!("health round of {} failed: {e}", input.instance));
            (state, None)
        }
    }
}

async fn try_health_round(
    ctx: &OrchestrationContext,
    input: &ActorInput,
    state: &ActorState,
    routing: Routing,
) -> Result<Option<(ActorState, Round)>, String> {
    let owner = ActorRef {
        instance: input.instance.clone(),
        actor_id: ctx.instance_id(),
    };
    let Some(view) = call::<_, Option<ActorView>>(ctx, act::READ_ACTOR_VIEW, &owner).await? else {
        return Ok(None);
    };
    let members = view.members.clone();
    let results = ctx
        .join(
            members
                .iter()
                .map(|member| {
                    call_once::<_, ProbeResult>(
                        ctx,
                        act::PROBE_MEMBER,
                        ProbeInput {
                            instance: input.instance.clone(),
                            member: member.clone(),
                            health_query: view.ha.health_query.clone(),
                        },
                    )
                })
                .collect(),
        )
        .await;
    let probes: Vec<ProbeResult> = members
        .iter()
        .zip(results)
        .map(|(member, result)| result.unwrap_or_else(|e| unreachable_probe(member, e)))
        .collect();
    let mut assessment = assess(
        state,
        probes,
        input.settings.max_lag_bytes,
        &view.lag_bounds,
    );
    if let Some(seen) = view
        .primary
        .as_deref()
        .and_then(|primary| primary_seen(&assessment.probes, primary))
    {
        let before = &state.last_seen;
        if before.member == seen.member && before.degraded != seen.degraded {
            let primary = seen.member.clone().unwrap_or_default();
            assessment.events.push(if seen.degraded {
                HealthEvent {
                    member: Some(primary.clone()),
                    kind: HaEventKind::SyncDegraded,
                    message: format!(
                        "{primary} no longer waits for synchronous standbys: too few stream \
                         (degrade mode); commits are not protected until one is back"
                    ),
                }
            } else {
                HealthEvent {
                    member: Some(primary.clone()),
                    kind: HaEventKind::SyncRestored,
                    message: format!(
                        "{primary} waits for its synchronous standbys again ({})",
                        seen.synchronous.join(", ")
                    ),
                }
            });
        }
        assessment.state.last_seen = seen;
    }
    if view.health_interval_ms.is_some() {
        assessment.state.health_interval_ms = view.health_interval_ms;
    }
    let desired = desired_routes(
        &assessment.probes,
        &assessment.state.members,
        view.primary.as_deref(),
    );
    if let (Routing::Allowed, Some(routes)) = (routing, desired) {
        if state.routed_ro.as_ref() != Some(&routes.ro) {
            let route = RouteInput {
                instance: input.instance.clone(),
                routes: routes.clone(),
            };
            match call::<_, ()>(ctx, act::ROUTE_ENDPOINTS, &route).await {
                Ok(()) => {
                    if let Some(before) = &state.routed_ro {
                        assessment.events.push(HealthEvent {
                            member: None,
                            kind: HaEventKind::RoRoutes,
                            message: format!(
                                "the ro endpoint leads to {} (was {})",
                                describe_targets(&routes.ro),
                                describe_targets(before)
                            ),
                        });
                    }
                    assessment.state.routed_ro = Some(routes.ro);
                }
                Err(e) => ctx.trace_warn(format!("route the ro endpoint: {e}")),
            }
        }
    }
    call::<_, ()>(
        ctx,
        act::RECORD_HEALTH,
        &HealthReport {
            instance: input.instance.clone(),
            health: assessment.health,
            probes: assessment.probes.clone(),
            events: assessment.events,
        },
    )
    .await?;
    Ok(Some((
        assessment.state,
        Round {
            view,
            probes: assessment.probes,
        },
    )))
}

fn describe_targets(members: &[String]) -> String {
    if members.is_empty() {
        "the primary".into()
    } else {
        members.join(", ")
    }
}

/// Where the endpoints should lead after a round: rw to the recorded primary when it is healthy
/// and serves as one, ro to the healthy standbys that do not lag (none: the platform sends ro to
/// the primary). `None` when the primary is not healthy: routes are then left alone (failover
/// decides them). Without a recorded primary, the one healthy primary is taken.
pub fn desired_routes(
    probes: &[ProbeResult],
    members: &BTreeMap<String, MemberSeen>,
    recorded_primary: Option<&str>,
) -> Option<EndpointRoutes> {
    let serving: Vec<&ProbeResult> = probes
        .iter()
        .filter(|p| p.healthy && p.role == Some(Role::Primary))
        .collect();
    let primary = match recorded_primary {
        Some(recorded) => serving.iter().find(|p| p.member == recorded)?,
        None if serving.len() == 1 => serving[0],
        None => return None,
    };
    let mut ro: Vec<String> = probes
        .iter()
        .filter(|p| p.healthy && p.role == Some(Role::Standby))
        .filter(|p| !members.get(&p.member).is_some_and(|m| m.lagging))
        .map(|p| p.member.clone())
        .collect();
    ro.sort();
    Some(EndpointRoutes {
        rw: Some(primary.member.clone()),
        ro,
        ..Default::default()
    })
}

fn unreachable_probe(member: &str, error: String) -> ProbeResult {
    ProbeResult {
        member: member.to_string(),
        healthy: false,
        role: None,
        timeline: None,
        lsn: None,
        lag_bytes: None,
        standbys: Vec::new(),
        sync_state: None,
        sync_degraded: false,
        check: None,
        disk_available_bytes: None,
        disk_total_bytes: None,
        latency_ms: 0.0,
        error: Some(error),
    }
}

/// The outcome of one health round, decided from the probes alone.
#[derive(Debug, Clone, PartialEq)]
pub struct Assessment {
    pub state: ActorState,
    /// `healthy`, `degraded` or `unavailable`.
    pub health: InstanceHealth,
    /// The probes, each standby's sync state filled in from its primary's report.
    pub probes: Vec<ProbeResult>,
    pub events: Vec<HealthEvent>,
}

/// Compares a round's probes with the last round: which members went down or came back, which
/// started or stopped lagging, and the instance's overall health (healthy: every member is;
/// degraded: the primary is but not every standby; unavailable: no healthy primary).
pub fn assess(
    previous: &ActorState,
    mut probes: Vec<ProbeResult>,
    max_lag_bytes: u64,
    lag_bounds: &BTreeMap<String, u64>,
) -> Assessment {
    let sync_states: BTreeMap<String, String> = probes
        .iter()
        .filter(|p| p.healthy && p.role == Some(Role::Primary))
        .flat_map(|p| p.standby_states())
        .map(|(name, sync)| (name.to_string(), sync.to_string()))
        .collect();
    let mut events = Vec::new();
    let mut members = BTreeMap::new();
    for probe in &mut probes {
        probe.sync_state = sync_states.get(&probe.member).cloned();
        let bound = lag_bounds
            .get(&probe.member)
            .copied()
            .unwrap_or(max_lag_bytes);
        let lagging = probe.lag_bytes.is_some_and(|lag| lag > bound);
        let seen = MemberSeen {
            healthy: probe.healthy,
            lagging,
            check_failed: probe.check.as_ref().is_some_and(|c| !c.ok),
            disk_low: disk_low(probe),
        };
        let before = previous
            .members
            .get(&probe.member)
            .copied()
            .unwrap_or(MemberSeen {
                healthy: true,
                lagging: false,
                check_failed: false,
                disk_low: false,
            });
        if !before.disk_low && seen.disk_low {
            events.push(HealthEvent {
                member: Some(probe.member.clone()),
                kind: HaEventKind::DiskLow,
                message: format!(
                    "member {} has {} MiB free of {} MiB (under {DISK_LOW_PERCENT} %)",
                    probe.member,
                    probe.disk_available_bytes.unwrap_or(0) >> 20,
                    probe.disk_total_bytes.unwrap_or(0) >> 20
                ),
            });
        } else if before.disk_low && !seen.disk_low && seen.healthy {
            events.push(HealthEvent {
                member: Some(probe.member.clone()),
                kind: HaEventKind::DiskOk,
                message: format!("member {} has enough free disk space again", probe.member),
            });
        }
        if !before.check_failed && seen.check_failed {
            events.push(HealthEvent {
                member: Some(probe.member.clone()),
                kind: HaEventKind::CheckFailed,
                message: format!(
                    "member {} fails the health query: {}",
                    probe.member,
                    probe.check.as_ref().map_or("", |c| c.message.as_str())
                ),
            });
        } else if before.check_failed && !seen.check_failed && seen.healthy {
            events.push(HealthEvent {
                member: Some(probe.member.clone()),
                kind: HaEventKind::CheckOk,
                message: format!("member {} passes the health query again", probe.member),
            });
        }
        let member = Some(probe.member.clone());
        if before.healthy && !seen.healthy {
            events.push(HealthEvent {
                member: member.clone(),
                kind: HaEventKind::MemberDown,
                message: format!(
                    "member {} is down: {}",
                    probe.member,
                    probe.error.as_deref().unwrap_or("unhealthy")
                ),
            });
        } else if !before.healthy && seen.healthy {
            events.push(HealthEvent {
                member: member.clone(),
                kind: HaEventKind::MemberUp,
                message: format!("member {} is up again", probe.member),
            });
        }
        if !before.lagging && seen.lagging {
            events.push(HealthEvent {
                member: member.clone(),
                kind: HaEventKind::LagHigh,
                message: format!(
                    "member {} lags {} bytes behind (bound {bound})",
                    probe.member,
                    probe.lag_bytes.unwrap_or(0)
                ),
            });
        } else if before.lagging && !seen.lagging && seen.healthy {
            events.push(HealthEvent {
                member,
                kind: HaEventKind::LagOk,
                message: format!("member {} caught up", probe.member),
            });
        }
        members.insert(probe.member.clone(), seen);
    }
    let primary_healthy = probes
        .iter()
        .any(|p| p.healthy && p.role == Some(Role::Primary));
    let all_healthy = probes
        .iter()
        .all(|p| p.healthy && p.check.as_ref().is_none_or(|c| c.ok) && !disk_low(p));
    let health = match (primary_healthy, all_healthy) {
        (false, _) => InstanceHealth::Unavailable,
        (true, true) => InstanceHealth::Healthy,
        (true, false) => InstanceHealth::Degraded,
    };
    if previous.health != Some(health) {
        events.push(HealthEvent {
            member: None,
            kind: HaEventKind::InstanceHealth,
            message: format!(
                "instance health is {health} (was {})",
                previous.health.unwrap_or(InstanceHealth::Unknown)
            ),
        });
    }
    Assessment {
        state: ActorState {
            members,
            health: Some(health),
            rounds: previous.rounds + 1,
            ..previous.clone()
        },
        health,
        probes,
        events,
    }
}
