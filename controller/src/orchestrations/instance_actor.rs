//! *InstanceActor*: the one orchestration that owns an instance while it lives. It runs the
//! health loop (timer → probe every member in parallel → record health, history and notable
//! changes) and takes operator commands from its durable queue, one at a time, so no two
//! mutating operations on one instance ever race. It continues as new every few rounds to bound
//! its history; its state travels in its input.

use std::collections::BTreeMap;
use std::time::Duration;

use duroxide::{DurableFuture, Either2, OrchestrationContext};
use serde::{Deserialize, Serialize};

use super::create_instance::ActorSettings;
use super::replicas::{AddReplicaInput, RemoveReplicaInput};
use super::{call, call_once, names};
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
    pub health: Option<String>,
    /// Health rounds since the actor started, across executions.
    pub rounds: u64,
    /// Executions so far (continue-as-new count).
    pub generation: u64,
    /// The members the ro endpoint was last pointed at by this actor.
    #[serde(default)]
    pub routed_ro: Option<Vec<String>>,
}

/// One member as the last round saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberSeen {
    pub healthy: bool,
    pub lagging: bool,
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
    let interval = health_interval(&input.settings);
    for _ in 0..input.settings.rounds_per_execution.max(1) {
        let command = ctx.dequeue_event(COMMANDS_QUEUE);
        let tick = ctx.schedule_timer(interval);
        match ctx.select2(command, tick).await {
            Either2::First(message) => match serde_json::from_str::<ActorCommand>(&message) {
                Ok(ActorCommand::CheckNow) => {
                    match health_round(&ctx, &input, state, Routing::Allowed).await {
                        Some(next) => state = next,
                        None => return superseded(&ctx),
                    }
                }
                Ok(ActorCommand::AddReplica(command)) => {
                    let child = ctx.schedule_sub_orchestration_with_id_typed::<_, String>(
                        names::ADD_REPLICA,
                        command.operation_id.clone(),
                        &command,
                    );
                    state = run_command(&ctx, &input, state, &command.operation_id, child).await;
                }
                Ok(ActorCommand::RemoveReplica(command)) => {
                    let child = ctx.schedule_sub_orchestration_with_id_typed::<_, String>(
                        names::REMOVE_REPLICA,
                        command.operation_id.clone(),
                        &command,
                    );
                    state = run_command(&ctx, &input, state, &command.operation_id, child).await;
                }
                Err(e) => ctx.trace_warn(format!("ignoring an unreadable command: {e}")),
            },
            Either2::Second(()) => {
                match health_round(&ctx, &input, state, Routing::Allowed).await {
                    Some(next) => state = next,
                    None => return superseded(&ctx),
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

/// Waits for a command's operation (a child orchestration) while the health loop goes on: the
/// next command waits, the health rounds do not. The operation records its own outcome.
async fn run_command(
    ctx: &OrchestrationContext,
    input: &ActorInput,
    mut state: ActorState,
    operation_id: &str,
    mut operation: DurableFuture<Result<String, String>>,
) -> ActorState {
    let interval = health_interval(&input.settings);
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
                if let Some(next) = health_round(ctx, input, state.clone(), Routing::Frozen).await {
                    state = next;
                }
            }
        }
    }
}

fn health_interval(settings: &ActorSettings) -> Duration {
    Duration::from_millis(settings.health_interval_ms.max(100))
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
/// what it saw, and returns the new state. A round that cannot finish (the CMS is down) is
/// logged and leaves the state as it was. `None` when this actor is no longer the instance's
/// (replaced, or the instance is being deleted): it must stop.
async fn health_round(
    ctx: &OrchestrationContext,
    input: &ActorInput,
    state: ActorState,
    routing: Routing,
) -> Option<ActorState> {
    match try_health_round(ctx, input, &state, routing).await {
        Ok(next) => next,
        Err(e) => {
            ctx.trace_warn(format!("health round of {} failed: {e}", input.instance));
            Some(state)
        }
    }
}

async fn try_health_round(
    ctx: &OrchestrationContext,
    input: &ActorInput,
    state: &ActorState,
    routing: Routing,
) -> Result<Option<ActorState>, String> {
    let owner = ActorRef {
        instance: input.instance.clone(),
        actor_id: ctx.instance_id(),
    };
    let Some(members) = call::<_, Option<Vec<String>>>(ctx, act::ACTOR_MEMBERS, &owner).await?
    else {
        return Ok(None);
    };
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
    let mut assessment = assess(state, probes, input.settings.max_lag_bytes);
    let desired = desired_routes(&assessment.probes, &assessment.state.members);
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
                            kind: "ro-routes".into(),
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
            health: assessment.health.clone(),
            probes: assessment.probes,
            events: assessment.events,
        },
    )
    .await?;
    Ok(Some(assessment.state))
}

fn describe_targets(members: &[String]) -> String {
    if members.is_empty() {
        "the primary".into()
    } else {
        members.join(", ")
    }
}

/// Where the endpoints should lead after a round: rw to the one healthy primary, ro to the
/// healthy standbys that do not lag (none: the platform sends ro to the primary). `None` when
/// there is no single healthy primary: routes are then left alone (failover decides them).
pub fn desired_routes(
    probes: &[ProbeResult],
    members: &BTreeMap<String, MemberSeen>,
) -> Option<EndpointRoutes> {
    let mut primaries = probes
        .iter()
        .filter(|p| p.healthy && p.role.as_deref() == Some("primary"));
    let primary = primaries.next()?;
    if primaries.next().is_some() {
        return None;
    }
    let mut ro: Vec<String> = probes
        .iter()
        .filter(|p| p.healthy && p.role.as_deref() == Some("standby"))
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
        latency_ms: 0.0,
        error: Some(error),
    }
}

/// The outcome of one health round, decided from the probes alone.
#[derive(Debug, Clone, PartialEq)]
pub struct Assessment {
    pub state: ActorState,
    /// `healthy`, `degraded` or `unavailable`.
    pub health: String,
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
) -> Assessment {
    let sync_states: BTreeMap<String, String> = probes
        .iter()
        .filter(|p| p.healthy && p.role.as_deref() == Some("primary"))
        .flat_map(|p| p.standbys.iter())
        .filter_map(|entry| entry.split_once('='))
        .map(|(name, sync)| (name.to_string(), sync.to_string()))
        .collect();
    let mut events = Vec::new();
    let mut members = BTreeMap::new();
    for probe in &mut probes {
        probe.sync_state = sync_states.get(&probe.member).cloned();
        let lagging = probe.lag_bytes.is_some_and(|lag| lag > max_lag_bytes);
        let seen = MemberSeen {
            healthy: probe.healthy,
            lagging,
        };
        let before = previous
            .members
            .get(&probe.member)
            .copied()
            .unwrap_or(MemberSeen {
                healthy: true,
                lagging: false,
            });
        let member = Some(probe.member.clone());
        if before.healthy && !seen.healthy {
            events.push(HealthEvent {
                member: member.clone(),
                kind: "member-down".into(),
                message: format!(
                    "member {} is down: {}",
                    probe.member,
                    probe.error.as_deref().unwrap_or("unhealthy")
                ),
            });
        } else if !before.healthy && seen.healthy {
            events.push(HealthEvent {
                member: member.clone(),
                kind: "member-up".into(),
                message: format!("member {} is up again", probe.member),
            });
        }
        if !before.lagging && seen.lagging {
            events.push(HealthEvent {
                member: member.clone(),
                kind: "lag-high".into(),
                message: format!(
                    "member {} lags {} bytes behind (bound {max_lag_bytes})",
                    probe.member,
                    probe.lag_bytes.unwrap_or(0)
                ),
            });
        } else if before.lagging && !seen.lagging && seen.healthy {
            events.push(HealthEvent {
                member,
                kind: "lag-ok".into(),
                message: format!("member {} caught up", probe.member),
            });
        }
        members.insert(probe.member.clone(), seen);
    }
    let primary_healthy = probes
        .iter()
        .any(|p| p.healthy && p.role.as_deref() == Some("primary"));
    let all_healthy = probes.iter().all(|p| p.healthy);
    let health = match (primary_healthy, all_healthy) {
        (false, _) => "unavailable",
        (true, true) => "healthy",
        (true, false) => "degraded",
    }
    .to_string();
    if previous.health.as_deref() != Some(health.as_str()) {
        events.push(HealthEvent {
            member: None,
            kind: "instance-health".into(),
            message: format!(
                "instance health is {health} (was {})",
                previous.health.as_deref().unwrap_or("unknown")
            ),
        });
    }
    Assessment {
        state: ActorState {
            members,
            health: Some(health.clone()),
            rounds: previous.rounds + 1,
            generation: previous.generation,
            routed_ro: previous.routed_ro.clone(),
        },
        health,
        probes,
        events,
    }
}
