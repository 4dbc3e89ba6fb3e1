//! HA supervision after each health round: count the primary's failed checks and fail over
//! when allowed and possible (or raise an alert once), apply changed synchronous settings,
//! fence a second primary, and have lost standbys and former primaries rejoin.

use std::collections::BTreeMap;

use duroxide::OrchestrationContext;
use toygres_common::domain::{HaEventKind, MemberState, ReplicationMode, Role};

use super::commands::run_command;
use super::health_round::{health_round, Round, Routing};
use super::state::{ActorInput, ActorState};
use crate::activities::ha::{FenceInput, Fenced, MemberSurvey, SurveyInput, SyncPolicyInput};
use crate::activities::members::ActorView;
use crate::activities::names as act;
use crate::activities::sidecar::{ProbeInput, ProbeResult};
use crate::orchestrations::durable::{call, call_once, now_ms, sub_orchestration};
use crate::orchestrations::ha::evidence::weigh_standbys;
use crate::orchestrations::ha::failover::FailoverInput;
use crate::orchestrations::ha::rejoin::RejoinOperation;
use crate::orchestrations::ha::sync::{sync_policy, sync_settings_changed};
use crate::orchestrations::ha::target::{choose_target, NoCandidate, PrimarySeen};
use crate::orchestrations::names;
use crate::orchestrations::operation::{new_operation_id, record_event, set_member_state};

/// After a health round: counts the primary's failed checks and fails over when they reach the
/// threshold (if allowed and a standby may take over), fences a member that serves as a second
/// primary, and retries the rejoin of former primaries.
pub async fn look_after_primary(
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
    ctx.trace_info(format!(
        "the primary {primary} failed check {} of {} in the health round",
        state.primary_failures, view.ha.failure_threshold
    ));
    // Its sidecar answered (Postgres down, or refusing new connections): the controller is
    // not the one cut off.
    let answered = probe.is_some_and(|p| p.role.is_some());
    if state.primary_failures < view.ha.failure_threshold {
        // A probe that ran out its deadline already waited: confirm at once, back to back.
        let waited = probe.is_some_and(|p| p.latency_ms >= waited_enough_ms(&view, None));
        return confirm_down(ctx, input, state, &view, &primary, waited).await;
    }
    decide_failover(ctx, input, state, &view, &primary, answered, None).await
}

/// How long a re-check of a suspect primary may take: half its check timeout (it already
/// failed a whole one), never under 100 ms.
pub fn recheck_timeout_ms(check_timeout_ms: u64) -> u64 {
    (check_timeout_ms / 2).max(100).min(check_timeout_ms)
}

/// A failed probe that took this long ran out its deadline (or waited a check interval): the
/// next check follows at once instead of after the interval.
fn waited_enough_ms(view: &ActorView, timeout_ms: Option<u64>) -> f64 {
    let timeout = timeout_ms.unwrap_or(view.ha.check_timeout_ms);
    // Timers and scheduling make a probe end a little before its deadline.
    (view.ha.check_interval_ms.min(timeout) as f64) * 0.9
}

/// Probes the recorded primary alone; a healthy answer ends the suspicion (the next full round
/// records it), another miss counts, and enough misses lead to the failover decision. A probe
/// that failed by running out its deadline already waited a check interval: the next one
/// follows at once. Once the decision was held back (a fresh standby vetoed, the cooldown, no
/// candidate), every check is a full round, recorded, so the instance's `last check` keeps
/// moving and every member is seen while the primary is suspect.
pub async fn recheck_primary(
    ctx: &OrchestrationContext,
    input: &ActorInput,
    state: ActorState,
) -> ActorState {
    let Some(view) = state.view.clone() else {
        return state;
    };
    let Some(primary) = view.primary.clone() else {
        return state;
    };
    if state.primary_failures >= view.ha.failure_threshold {
        let generation = state.generation;
        return match health_round(ctx, input, state, Routing::Allowed).await {
            (next, Some(round)) => look_after_primary(ctx, input, next, round).await,
            // Superseded: the next regular round finds it again and stops the actor.
            (next, None) => ActorState {
                generation,
                primary_failures: 0,
                ..next
            },
        };
    }
    confirm_down(ctx, input, state, &view, &primary, true).await
}

/// Re-checks a primary that missed a check, each probe with [`recheck_timeout_ms`], until it
/// answers (suspicion over) or it has missed the threshold (the decision): back to back after
/// a probe that ran out its deadline (`waited`), [`refused_pause_ms`] after one that failed
/// fast (refused: nothing listens). The standbys are surveyed during the last re-check, so the
/// decision does not wait for them.
async fn confirm_down(
    ctx: &OrchestrationContext,
    input: &ActorInput,
    mut state: ActorState,
    view: &ActorView,
    primary: &str,
    mut waited: bool,
) -> ActorState {
    let timeout_ms = recheck_timeout_ms(view.ha.check_timeout_ms);
    let pause = std::time::Duration::from_millis(refused_pause_ms(view.ha.check_interval_ms));
    loop {
        if !waited {
            ctx.schedule_timer(pause).await;
        }
        let last = state.primary_failures.saturating_add(1) >= view.ha.failure_threshold;
        let probe = probe_primary(ctx, input, view, primary);
        let (probe, surveys) = if last && view.ha.failover_enabled {
            let (probe, surveys) = ctx
                .join2(probe, survey_standbys(ctx, input, view, primary))
                .await;
            (probe, Some(surveys))
        } else {
            (probe.await, None)
        };
        let answered;
        (waited, answered) = match &probe {
            Ok(p) if p.healthy && p.role == Some(Role::Primary) => {
                ctx.trace_info(format!("the primary {primary} answers again"));
                state.primary_failures = 0;
                return state;
            }
            Ok(p) => (
                p.latency_ms >= waited_enough_ms(view, Some(timeout_ms)),
                p.role.is_some(),
            ),
            Err(_) => (false, false),
        };
        state.primary_failures = state.primary_failures.saturating_add(1);
        ctx.trace_info(format!(
            "the primary {primary} failed check {} of {}{}",
            state.primary_failures,
            view.ha.failure_threshold,
            match &probe {
                Ok(p) => format!(" ({:.0} ms)", p.latency_ms),
                Err(e) => format!(": {e}"),
            }
        ));
        if state.primary_failures >= view.ha.failure_threshold {
            return decide_failover(ctx, input, state, view, primary, answered, surveys).await;
        }
    }
}

/// The pause before re-checking a primary whose probe failed fast: a fifth of the check
/// interval, at least 20 ms (50 ms by default; it was half the interval). A refused connection
/// is no glitch of the network: nothing listens on the sidecar's port. The pause only keeps
/// the threshold's checks apart; whether the primary's Postgres still serves is what the
/// standbys are asked before any failover (a fresh one vetoes).
pub fn refused_pause_ms(check_interval_ms: u64) -> u64 {
    (check_interval_ms / 5).max(20)
}

/// One probe of the suspect primary, with [`recheck_timeout_ms`].
async fn probe_primary(
    ctx: &OrchestrationContext,
    input: &ActorInput,
    view: &ActorView,
    primary: &str,
) -> Result<ProbeResult, String> {
    call_once(
        ctx,
        act::PROBE_MEMBER,
        ProbeInput {
            instance: input.instance.clone(),
            member: primary.to_string(),
            health_query: None,
            timeout_ms: Some(recheck_timeout_ms(view.ha.check_timeout_ms)),
        },
    )
    .await
}

/// Asks every member but the primary what it last heard from it (and its position).
async fn survey_standbys(
    ctx: &OrchestrationContext,
    input: &ActorInput,
    view: &ActorView,
    primary: &str,
) -> Result<Vec<MemberSurvey>, String> {
    let standbys: Vec<String> = view
        .members
        .iter()
        .filter(|m| m.as_str() != primary)
        .cloned()
        .collect();
    call_once(
        ctx,
        act::SURVEY_MEMBERS,
        &SurveyInput {
            instance: input.instance.clone(),
            members: standbys,
            timeout_ms: view.ha.check_timeout_ms,
        },
    )
    .await
}

/// Past the window of a standby's last contact, before its word counts as stale: the ages
/// the survey reports and the window are measured on different clocks.
const STALE_MARGIN_MS: u64 = 50;

/// [`decide_once`]; when a standby's fresh word held the failover back, the standbys are asked
/// once more as soon as that word goes stale (instead of at the next round), so a primary cut
/// off from everything fails over one contact window after it was last heard from. A primary
/// that came back meanwhile is heard from again (a veto), and fenced before any promotion in
/// any case. A second veto leaves it to the rounds.
async fn decide_failover(
    ctx: &OrchestrationContext,
    input: &ActorInput,
    state: ActorState,
    view: &ActorView,
    primary: &str,
    sidecar_answered: bool,
    surveyed: Option<Result<Vec<MemberSurvey>, String>>,
) -> ActorState {
    let mut stale_in = None;
    let state = decide_once(
        ctx,
        input,
        state,
        view,
        primary,
        sidecar_answered,
        surveyed,
        &mut stale_in,
    )
    .await;
    let Some(wait_ms) = stale_in else {
        return state;
    };
    ctx.schedule_timer(std::time::Duration::from_millis(wait_ms))
        .await;
    let surveys = survey_standbys(ctx, input, view, primary).await;
    decide_once(
        ctx,
        input,
        state,
        view,
        primary,
        sidecar_answered,
        Some(surveys),
        &mut None,
    )
    .await
}

/// The primary missed enough checks: fail over unless disabled, in the cooldown, vetoed by a
/// standby that heard from it just now, or impossible (no standby may take over: an alert).
/// When the primary's sidecar itself answered (`sidecar_answered`: its Postgres is down or
/// refuses new connections), no standby's word can say it serves: there is no veto.
#[allow(clippy::too_many_arguments)]
async fn decide_once(
    ctx: &OrchestrationContext,
    input: &ActorInput,
    mut state: ActorState,
    view: &ActorView,
    primary: &str,
    sidecar_answered: bool,
    surveyed: Option<Result<Vec<MemberSurvey>, String>>,
    stale_in: &mut Option<u64>,
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
    // Before acting, ask the standbys: one that heard from the primary just now says it lives
    // (the controller, not the primary, may be the one cut off). Only fresh evidence counts: a
    // frozen primary's standbys keep "streaming" until their receive timeout.
    // Surveyed during the last re-check, or now.
    let surveyed = match surveyed {
        Some(surveyed) => surveyed,
        None => survey_standbys(ctx, input, view, &primary).await,
    };
    let surveys = match surveyed {
        Ok(surveys) => surveys,
        Err(e) => {
            ctx.trace_warn(format!("survey the standbys: {e}"));
            return state;
        }
    };
    let window_ms = view.ha.standby_contact_window_ms;
    let mut evidence = weigh_standbys(&surveys, view.primary_address.as_ref(), window_ms);
    let decided_by = if sidecar_answered {
        evidence.witness = None;
        format!("the sidecar of {primary} answers but its Postgres serves no new connection")
    } else {
        format!("no standby heard from {primary} within {window_ms} ms")
    };
    if let Some((witness, age_ms)) = &evidence.witness {
        // A little after the window from its last contact, that word is stale.
        *stale_in = Some(window_ms.saturating_sub(*age_ms) + STALE_MARGIN_MS);
        return alert_once(
            ctx,
            input,
            state,
            HaEventKind::FailoverSkipped,
            format!(
                "{down_for}, but {witness} heard from it {age_ms} ms ago (within \
                 {window_ms} ms): not failing over ({})",
                evidence.summary
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
            let Ok(operation_id) = new_operation_id(ctx).await else {
                return state;
            };
            let message = format!(
                "{down_for} and {decided_by} ({}): failing over to {}",
                evidence.summary, choice.reason
            );
            ctx.trace_warn(message);
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
                    evidence: Some(format!("{decided_by}: {}", evidence.summary)),
                },
            );
            let mut next = run_command(ctx, input, state, &operation_id, child).await;
            next.primary_failures = 0;
            next.alert = None;
            next
        }
    }
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
    let logged = record_event(ctx, &input.instance, None, kind, message).await;
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
                platform_first: false,
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
            let _ =
                set_member_state(ctx, &input.instance, &stray.member, MemberState::Rejoining).await;
        }
        let _ = record_event(
            ctx,
            &input.instance,
            Some(&stray.member),
            HaEventKind::HaStrayPrimary,
            message,
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
        let marked = set_member_state(ctx, &input.instance, &member, MemberState::Rejoining).await;
        if marked.is_ok() {
            let _ = record_event(
                ctx,
                &input.instance,
                Some(&member),
                HaEventKind::StandbyNotFollowing,
                message,
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
    let Ok(operation_id) = new_operation_id(ctx).await else {
        return state;
    };
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
