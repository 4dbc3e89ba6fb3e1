//! One health round: gather (the actor's view from the CMS, a probe of every member in
//! parallel), decide ([`assess`], [`desired_routes`]), act (point the ro endpoint) and record
//! (health, history, the notable changes as events, and where ro leads).

use duroxide::OrchestrationContext;
use toygres_common::domain::HaEventKind;

use super::health::{assess, describe_targets, desired_routes, primary_seen};
use super::ro_round::{ro_view, with_policy};
use super::state::{health_interval, ActorInput, ActorState};
use crate::activities::members::ActorView;
use crate::activities::names as act;
use crate::activities::records::{ActorRef, HealthEvent, HealthReport};
use crate::activities::sidecar::{ProbeInput, ProbeResult};
use crate::endpoints::ro_rule::LagRule;
use crate::orchestrations::durable::{call, call_once};
use crate::orchestrations::operation::route_endpoints;

/// What a health round saw, for the HA checks that follow it.
#[derive(Debug, Clone)]
pub struct Round {
    pub view: ActorView,
    pub probes: Vec<ProbeResult>,
}

/// How long a round's probe of one member may take: the HA check timeout, and never more than
/// half the health interval, so a member that does not answer (frozen, cut off) is "unreachable"
/// in time and the rounds keep their pace.
pub fn round_deadline_ms(check_timeout_ms: u64, interval: std::time::Duration) -> u64 {
    let half = u64::try_from(interval.as_millis() / 2).unwrap_or(u64::MAX);
    check_timeout_ms.min(half).max(50)
}

/// Whether a health round may move the ro endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Routing {
    Allowed,
    /// An operation runs and routes itself.
    Frozen,
}

/// Probes every member in parallel, points the ro endpoint at the healthy standbys, records
/// what it saw, and returns the new state with what the round saw. A round that cannot finish
/// (the CMS is down) is logged and leaves the state as it was, with no round. When this actor is
/// no longer the instance's (replaced, or the instance is being deleted) the state's generation
/// is `u64::MAX`: it must stop.
pub async fn health_round(
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
    let deadline_ms = round_deadline_ms(
        view.ha.check_timeout_ms,
        health_interval(&input.settings, state),
    );
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
                            timeout_ms: Some(deadline_ms),
                        },
                    )
                })
                .collect(),
        )
        .await;
    let probes: Vec<ProbeResult> = members
        .iter()
        .zip(results)
        .map(|(member, result)| result.unwrap_or_else(|e| ProbeResult::unreachable(member, e, 0.0)))
        .collect();
    let lag_rule = LagRule {
        settings: view.ro.clone(),
        default_bytes: input.settings.max_lag_bytes,
        member_bytes: view.lag_bounds.clone(),
    };
    let mut assessment = assess(state, probes, &lag_rule);
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
    assessment.state.quiet_interval_ms = view.quiet_interval_ms;
    let desired = desired_routes(
        &assessment.probes,
        &assessment.state.members,
        view.primary.as_deref(),
    )
    .map(|routes| with_policy(routes, &view.ro));
    let ro = desired.as_ref().map(|routes| {
        ro_view(
            &assessment.probes,
            &assessment.state.members,
            routes.rw.as_deref(),
            &view.ro,
        )
    });
    if let (Routing::Allowed, Some(routes)) = (routing, desired) {
        let policy = Some((routes.ro_fallback, routes.ro_balance));
        if state.routed_ro.as_ref() != Some(&routes.ro) || state.routed_ro_policy != policy {
            match route_endpoints(ctx, &input.instance, routes.clone()).await {
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
                    assessment.state.routed_ro_policy = policy;
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
            ro,
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

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::round_deadline_ms;

    #[test]
    fn a_probe_never_outlasts_half_the_health_interval() {
        assert_eq!(round_deadline_ms(500, Duration::from_secs(5)), 500);
        assert_eq!(round_deadline_ms(3_000, Duration::from_secs(1)), 500);
        assert_eq!(round_deadline_ms(1_000, Duration::from_millis(20)), 50);
    }
}
