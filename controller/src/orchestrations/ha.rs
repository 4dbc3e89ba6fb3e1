//! *Switchover*, *Failover* and *Rejoin*: moving the primary role, planned or not, and bringing
//! a former primary back as a standby. All three run as children of the instance's actor, one at
//! a time with its other commands, so automatic failover never races a switchover.
//!
//! The order is what keeps data safe: the rw endpoint stops leading to the old primary (new
//! connections are held) and the old primary is fenced *before* anything is promoted; a standby
//! is promoted only if it holds every acknowledged commit (sync mode) or is within the lag bound
//! (async mode); the new primary gets its synchronous standbys *before* rw leads to it.

use duroxide::OrchestrationContext;
use serde::{Deserialize, Serialize};
use toygres_common::controller_api::{
    HaSettings, Handover, OldPrimaryAction, Progress, SyncModeSetting, ValidatedSwitchover,
};
use toygres_common::domain::{
    HaEventKind, HandoverState, MemberState, OperationKind, ReplicationMode, Role, SyncState,
};
use toygres_common::sidecar_api::{format_lsn, SyncMethod, SyncMode, SyncPolicy};

use super::{call, call_once, now_ms};
use crate::activities::ha::{
    CatchUpInput, CaughtUp, FenceInput, Fenced, HandoverRecord, MemberStateInput, MemberSurvey,
    PromoteInput, Promoted, ReceivedInput, RejoinInput, RepointInput, Repointed, SurveyInput,
    SyncPolicyInput,
};
use crate::activities::members::{DeleteMemberInput, InstanceRef, RouteInput, Topology};
use crate::activities::names as act;
use crate::activities::records::{OperationFinished, OperationStarted, ReplicasChanged};
use crate::activities::sidecar::DropSlotInput;
use crate::platform::EndpointRoutes;

/// How long a former primary may take to rejoin inside a switchover or failover (a re-clone
/// included); past it the operation ends and the actor keeps trying.
pub const REJOIN_TIMEOUT_SECS: u64 = 300;

/// A switchover's target counts as caught up within this many bytes of the primary; the rest
/// is sent while the old primary shuts down.
pub const CAUGHT_UP_BYTES: u64 = 1024 * 1024;

/// The input of *Failover*.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FailoverInput {
    pub operation_id: String,
    pub instance: String,
    pub to: Option<String>,
    /// Fail over although the primary answers, and accept a target beyond the lag bound.
    pub force: bool,
    /// Decided by the actor (not asked by an operator).
    pub automatic: bool,
    pub ha: HaSettings,
    /// What the actor last saw of the primary while it was healthy.
    pub last_seen: PrimarySeen,
    /// The standbys as the actor surveyed them when it decided (an automatic failover does
    /// not ask them twice).
    #[serde(default)]
    pub surveyed: Option<Vec<MemberSurvey>>,
}

/// What the actor last saw of the primary while it answered.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PrimarySeen {
    /// Which member it was.
    #[serde(default)]
    pub member: Option<String>,
    /// Its WAL position.
    pub lsn: Option<u64>,
    /// The standbys it reported synchronous (`sync`) or in the quorum (`quorum`).
    pub synchronous: Vec<String>,
    /// Its synchronous replication had degraded to asynchronous.
    pub degraded: bool,
}

/// The input of *Switchover*.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SwitchoverInput {
    pub operation_id: String,
    pub instance: String,
    pub request: ValidatedSwitchover,
    pub ha: HaSettings,
}

/// The input of *Rejoin*.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RejoinOperation {
    pub operation_id: String,
    pub instance: String,
    pub member: String,
}

/// Why no standby may be promoted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NoCandidate(pub String);

/// The standby to promote, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Choice {
    pub member: String,
    /// Bytes it is behind the old primary's last known position (0 when unknown).
    pub lag_bytes: u64,
    pub reason: String,
}

/// Picks the standby to promote from a survey of the standbys, or says why none may be.
///
/// - A candidate answers, runs, and is a standby.
/// - Sync mode (unless forced, or degraded at the time): only standbys the primary last
///   reported synchronous. When it reported none, every standby of `sync_set` (those that
///   could have been synchronous) must answer. With a quorum (`ANY n` of m), enough of them
///   must answer that one of them surely has every acknowledged commit (m − n + 1). A standby
///   of `sync_set` that received at least as much of the same WAL as one of those is eligible
///   too: it holds every commit that one holds.
/// - Async mode (unless forced): within `max_lag_bytes` of the primary's last known position.
/// - The furthest WAL position wins; ties go by name. A requested target must be a candidate.
pub fn choose_target(
    standbys: &[MemberSurvey],
    sync: bool,
    ha: &HaSettings,
    seen: &PrimarySeen,
    sync_set: &[String],
    to: Option<&str>,
    force: bool,
) -> Result<Choice, NoCandidate> {
    let alive: Vec<&MemberSurvey> = standbys
        .iter()
        .filter(|s| s.reachable && s.running && s.role == Some(Role::Standby))
        .collect();
    if alive.is_empty() {
        return Err(NoCandidate("no standby answers and runs".into()));
    }
    let furthest = alive
        .iter()
        .filter_map(|s| s.wal_position())
        .max()
        .unwrap_or(0);
    let reference = seen.lsn.unwrap_or(0).max(furthest);
    let lag = |s: &MemberSurvey| reference.saturating_sub(s.wal_position().unwrap_or(0));
    let mut candidates: Vec<&MemberSurvey> = if force {
        alive.clone()
    } else if sync && !seen.degraded && seen.synchronous.is_empty() {
        // Which standby confirmed the last commits was never seen (the primary failed right
        // after it took over, say). Every acknowledged commit is on some standby that could be
        // synchronous; if all of them answer, the furthest one has them all.
        let missing: Vec<&str> = sync_set
            .iter()
            .filter(|m| !alive.iter().any(|s| &s.member == *m))
            .map(String::as_str)
            .collect();
        if sync_set.is_empty() || !missing.is_empty() {
            return Err(NoCandidate(format!(
                "the primary reported no synchronous standby before it failed, and not every \
                 standby that could have been one answers (missing: {})",
                if missing.is_empty() {
                    "all".to_string()
                } else {
                    missing.join(", ")
                }
            )));
        }
        alive
            .iter()
            .copied()
            .filter(|s| sync_set.contains(&s.member))
            .collect()
    } else if sync && !seen.degraded {
        let answering: Vec<&MemberSurvey> = alive
            .iter()
            .copied()
            .filter(|s| seen.synchronous.contains(&s.member))
            .collect();
        let needed = if ha.quorum {
            let set = u32::try_from(seen.synchronous.len()).unwrap_or(u32::MAX);
            usize::try_from(set.saturating_sub(ha.num_sync) + 1).unwrap_or(usize::MAX)
        } else {
            1
        };
        if answering.len() < needed {
            return Err(NoCandidate(format!(
                "only {} of the synchronous standbys ({}) answer; {needed} are needed to be \
                 sure of having every acknowledged commit",
                answering.len(),
                seen.synchronous.join(", ")
            )));
        }
        answering
    } else {
        let within: Vec<&MemberSurvey> = alive
            .iter()
            .copied()
            .filter(|s| lag(s) <= ha.max_lag_bytes)
            .collect();
        if within.is_empty() {
            return Err(NoCandidate(format!(
                "every standby lags more than {} bytes",
                ha.max_lag_bytes
            )));
        }
        within
    };
    // In sync mode, a standby that could be synchronous and received more of the same history
    // (same timeline, same upstream) than an eligible one holds everything that one holds, and
    // more: it is eligible too. Promoting it spares it a rewind (it could not follow a new
    // primary that has less).
    if sync && !force {
        let holds_all_of = |s: &MemberSurvey, c: &MemberSurvey| {
            s.timeline == c.timeline
                && s.upstream == c.upstream
                && s.wal_position() >= c.wal_position()
        };
        let further: Vec<&MemberSurvey> = alive
            .iter()
            .copied()
            .filter(|s| {
                sync_set.contains(&s.member)
                    && s.timeline.is_some()
                    && s.wal_position().is_some()
                    && !candidates.iter().any(|c| c.member == s.member)
                    && candidates.iter().any(|c| holds_all_of(s, c))
            })
            .collect();
        candidates.extend(further);
    }
    if let Some(to) = to {
        candidates.retain(|s| s.member == to);
        if candidates.is_empty() {
            return Err(NoCandidate(format!(
                "{to} is not an eligible standby (it must answer, stream{})",
                if sync {
                    " and be synchronous"
                } else {
                    " and be within the lag bound"
                }
            )));
        }
    }
    candidates.sort_by(|a, b| {
        b.wal_position()
            .cmp(&a.wal_position())
            .then_with(|| a.member.cmp(&b.member))
    });
    let best = candidates[0];
    let reason = format!(
        "{} has the furthest WAL ({}) of the eligible standbys ({}){}",
        best.member,
        best.wal_position().map_or("unknown".into(), format_lsn),
        candidates
            .iter()
            .map(|s| s.member.as_str())
            .collect::<Vec<_>>()
            .join(", "),
        if force { ", forced" } else { "" }
    );
    Ok(Choice {
        member: best.member.clone(),
        lag_bytes: lag(best),
        reason,
    })
}

/// The synchronous replication policy of a primary whose standbys are `standbys`; `None` in
/// async mode or without standbys.
pub fn sync_policy(sync: bool, ha: &HaSettings, standbys: &[String]) -> Option<SyncPolicy> {
    if !sync || standbys.is_empty() {
        return None;
    }
    let count = u32::try_from(standbys.len()).unwrap_or(u32::MAX);
    Some(SyncPolicy {
        mode: match ha.sync_mode {
            SyncModeSetting::Strict => SyncMode::Strict,
            SyncModeSetting::Degrade => SyncMode::Degrade,
        },
        method: if ha.quorum {
            SyncMethod::Any
        } else {
            SyncMethod::First
        },
        num_sync: ha.num_sync.clamp(1, count),
        standbys: standbys.to_vec(),
        degrade_timeout_secs: ha.degrade_timeout_secs,
    })
}

/// Publishes the operation's state and what it knows so far.
fn progress(
    ctx: &OrchestrationContext,
    state: HandoverState,
    message: impl Into<String>,
    h: &Handover,
) {
    let message = message.into();
    ctx.trace_info(format!("{state}: {message}"));
    let progress = Progress {
        step: state.step(),
        steps: HandoverState::STEPS,
        message,
        state: Some(state.to_string()),
        handover: Some(h.clone()),
    };
    if let Ok(json) = serde_json::to_string(&progress) {
        ctx.set_custom_status(json);
    }
}

/// Records the operation's end, its last state, and returns its result.
async fn finish(
    ctx: &OrchestrationContext,
    operation_id: &str,
    kind: OperationKind,
    instance: &str,
    started_ms: u64,
    result: Result<Handover, (String, Handover)>,
) -> Result<String, String> {
    let duration_ms = now_ms(ctx).await?.saturating_sub(started_ms);
    let (error, handover) = match &result {
        Ok(h) => (None, h.clone()),
        Err((e, h)) => (Some(e.clone()), h.clone()),
    };
    // The last state is published before the operation is recorded as finished, so nobody
    // reads a finished operation with an older state.
    let outcome = match &error {
        None => {
            let message = format!(
                "{} is the primary (was {})",
                handover.new_primary.as_deref().unwrap_or("?"),
                handover.old_primary.as_deref().unwrap_or("none")
            );
            progress(ctx, HandoverState::Completed, message.clone(), &handover);
            Ok(message)
        }
        Some(e) => {
            progress(ctx, HandoverState::Failed, e.clone(), &handover);
            Err(e.clone())
        }
    };
    call::<_, ()>(
        ctx,
        act::RECORD_OPERATION_FINISHED,
        &OperationFinished {
            operation_id: operation_id.to_string(),
            kind,
            instance: instance.to_string(),
            error,
            instance_state: None,
            duration_ms,
        },
    )
    .await?;
    outcome
}

async fn started(
    ctx: &OrchestrationContext,
    operation_id: &str,
    kind: OperationKind,
    instance: &str,
) -> Result<u64, String> {
    let started = now_ms(ctx).await?;
    call::<_, ()>(
        ctx,
        act::RECORD_OPERATION_STARTED,
        &OperationStarted {
            operation_id: operation_id.to_string(),
            kind,
            instance: instance.to_string(),
            instance_state: None,
        },
    )
    .await?;
    Ok(started)
}

/// Runs a failover: promote the best standby of an instance whose primary is down (or, forced,
/// one that answers).
pub async fn failover(ctx: OrchestrationContext, input: FailoverInput) -> Result<String, String> {
    let kind = if input.automatic {
        OperationKind::AutoFailover
    } else {
        OperationKind::Failover
    };
    let started = started(&ctx, &input.operation_id, kind, &input.instance).await?;
    let mut handover = Handover::default();
    let result = run_failover(&ctx, &input, &mut handover)
        .await
        .map(|()| handover.clone())
        .map_err(|e| (e, handover.clone()));
    finish(
        &ctx,
        &input.operation_id,
        kind,
        &input.instance,
        started,
        result,
    )
    .await
}

async fn survey(
    ctx: &OrchestrationContext,
    instance: &str,
    members: &[String],
    timeout_ms: u64,
) -> Result<Vec<MemberSurvey>, String> {
    call_once(
        ctx,
        act::SURVEY_MEMBERS,
        &SurveyInput {
            instance: instance.to_string(),
            members: members.to_vec(),
            timeout_ms,
        },
    )
    .await
}

async fn read_topology(ctx: &OrchestrationContext, instance: &str) -> Result<Topology, String> {
    call(
        ctx,
        act::READ_TOPOLOGY,
        &InstanceRef {
            instance: instance.to_string(),
        },
    )
    .await
}

async fn run_failover(
    ctx: &OrchestrationContext,
    input: &FailoverInput,
    handover: &mut Handover,
) -> Result<(), String> {
    let instance = &input.instance;
    let topology = read_topology(ctx, instance).await?;
    let sync = topology.replication_mode == ReplicationMode::Sync;
    let old = topology.primary.clone();
    handover.old_primary = old.clone();
    let surveys = match &input.surveyed {
        Some(surveyed) => surveyed.clone(),
        None => {
            let mut members = topology.standbys.clone();
            members.extend(old.iter().cloned());
            survey(ctx, instance, &members, input.ha.check_timeout_ms).await?
        }
    };
    if let Some(old) = &old {
        let primary = surveys.iter().find(|s| &s.member == old);
        if primary.is_some_and(|p| p.running && p.role == Some(Role::Primary)) && !input.force {
            return Err(format!(
                "the primary {old} is healthy: use a switchover, or force the failover"
            ));
        }
    }
    let standbys: Vec<MemberSurvey> = surveys
        .iter()
        .filter(|s| Some(&s.member) != old.as_ref())
        .cloned()
        .collect();
    // The standbys that could have confirmed commits: sync candidates that follow (not those
    // still rejoining).
    let sync_set: Vec<String> = topology
        .sync_candidates
        .iter()
        .filter(|m| Some(*m) != old.as_ref() && !topology.rejoining.contains(m))
        .cloned()
        .collect();
    // What was seen of an earlier primary says nothing about this one.
    let seen = if input.last_seen.member.is_some() && input.last_seen.member == old {
        input.last_seen.clone()
    } else {
        PrimarySeen::default()
    };
    let choice = choose_target(
        &standbys,
        sync,
        &input.ha,
        &seen,
        &sync_set,
        input.to.as_deref(),
        input.force,
    )
    .map_err(|NoCandidate(why)| {
        handover.reason = Some(why.clone());
        format!("no standby may be promoted: {why}")
    })?;
    let target = choice.member.clone();
    handover.new_primary = Some(target.clone());
    handover.lag_bytes_at_start = Some(choice.lag_bytes);
    handover.data_loss_bytes = Some(if sync && !seen.degraded && !input.force {
        0
    } else {
        choice.lag_bytes
    });
    handover.reason = Some(choice.reason.clone());

    // Nothing reaches the old primary through rw from here on: held until the new one serves.
    progress(
        ctx,
        HandoverState::FencingPrimary,
        format!(
            "fencing {}; promoting {target}: {}",
            old.as_deref().unwrap_or("nothing"),
            choice.reason
        ),
        handover,
    );
    let others = topology.staying_standbys(&target);
    hold_writes(ctx, instance, &others).await?;
    if let Some(old) = &old {
        let fenced: Fenced = call_once(
            ctx,
            act::FENCE_MEMBER,
            &FenceInput {
                instance: instance.clone(),
                member: old.clone(),
                timeout_ms: input.ha.check_timeout_ms,
            },
        )
        .await?;
        ctx.trace_info(format!("fenced {old} through the {}", fenced.method));
    }
    promote_and_route(
        ctx,
        input.operation_id.as_str(),
        instance,
        &target,
        old.as_deref(),
        &others,
        &topology.sync_candidates,
        sync,
        &input.ha,
        handover,
        input.automatic,
    )
    .await?;

    if let Some(old) = &old {
        progress(
            ctx,
            HandoverState::CleaningUpOldPrimary,
            format!("rejoining {old} as a standby of {target}"),
            handover,
        );
        rejoin(ctx, instance, old, &target).await;
    }
    Ok(())
}

/// Holds new rw connections (closing those to the old primary); ro keeps serving the standbys
/// that stay standbys.
async fn hold_writes(
    ctx: &OrchestrationContext,
    instance: &str,
    standbys: &[String],
) -> Result<(), String> {
    call::<_, ()>(
        ctx,
        act::ROUTE_ENDPOINTS,
        &RouteInput {
            instance: instance.to_string(),
            routes: EndpointRoutes {
                rw: None,
                ro: standbys.to_vec(),
                hold_rw: true,
            },
        },
    )
    .await
}

/// Promotes `target`, gives it its synchronous standbys and its followers, records the new
/// roles, then leads rw to it.
#[allow(clippy::too_many_arguments)]
async fn promote_and_route(
    ctx: &OrchestrationContext,
    operation_id: &str,
    instance: &str,
    target: &str,
    old: Option<&str>,
    others: &[String],
    sync_candidates: &[String],
    sync: bool,
    ha: &HaSettings,
    handover: &mut Handover,
    automatic: bool,
) -> Result<(), String> {
    progress(
        ctx,
        HandoverState::PromotingReplica,
        format!("promoting {target}"),
        handover,
    );
    let promoted: Promoted = call(
        ctx,
        act::PROMOTE_MEMBER,
        &PromoteInput {
            instance: instance.to_string(),
            member: target.to_string(),
        },
    )
    .await?;

    progress(
        ctx,
        HandoverState::UpdatingRouting,
        format!(
            "{target} is the primary on timeline {}; pointing the endpoints and standbys at it",
            promoted.timeline
        ),
        handover,
    );
    // Its synchronous standbys: the other standbys, and the old primary, which rejoins.
    // Its synchronous standbys: the other standbys that may be, and the old primary, which
    // rejoins.
    let mut followers: Vec<String> = others
        .iter()
        .filter(|s| sync_candidates.contains(s))
        .cloned()
        .collect();
    if let Some(old) = old {
        followers.push(old.to_string());
    }
    let policy = sync_policy(sync, ha, &followers);
    let set_policy = call::<_, ()>(
        ctx,
        act::SET_SYNC_POLICY,
        SyncPolicyInput {
            instance: instance.to_string(),
            primary: target.to_string(),
            policy,
        },
    );
    // One attempt each: the sidecar answers within its own streaming bound, and a standby
    // that cannot follow is left to the rejoin below and the actor.
    let repoint = ctx.join(
        others
            .iter()
            .map(|standby| {
                call_once::<_, Repointed>(
                    ctx,
                    act::REPOINT_STANDBY,
                    RepointInput {
                        instance: instance.to_string(),
                        member: standby.clone(),
                        primary: target.to_string(),
                    },
                )
            })
            .collect(),
    );
    let (policy_set, repointed) = ctx.join2(set_policy, repoint).await;
    // The policy must hold before writes reach the new primary; a standby that cannot be
    // re-pointed now is left to the actor (it shows as not streaming).
    if let Err(e) = policy_set {
        return Err(format!("set the synchronous standbys of {target}: {e}"));
    }
    let mut diverged = Vec::new();
    for (standby, result) in others.iter().zip(repointed) {
        match result {
            Ok(Repointed {
                diverged: Some(why),
            }) => {
                ctx.trace_warn(format!(
                    "{standby} must be rewound to follow {target}: {why}"
                ));
                diverged.push(standby.clone());
            }
            Ok(_) => {}
            Err(e) => ctx.trace_warn(format!("re-point {standby} at {target}: {e}")),
        }
    }
    let message = format!(
        "{}{target} promoted (was {}): {}",
        if automatic {
            "automatic failover: "
        } else {
            ""
        },
        old.unwrap_or("no primary"),
        handover.reason.as_deref().unwrap_or("")
    );
    call::<_, ()>(
        ctx,
        act::RECORD_HANDOVER,
        &HandoverRecord {
            instance: instance.to_string(),
            operation_id: operation_id.to_string(),
            new_primary: target.to_string(),
            old_primary: old.map(String::from),
            old_state: MemberState::Rejoining,
            event_kind: if automatic {
                HaEventKind::FailoverAutomatic
            } else {
                HaEventKind::PrimaryChanged
            },
            message,
        },
    )
    .await?;
    call::<_, ()>(
        ctx,
        act::ROUTE_ENDPOINTS,
        &RouteInput {
            instance: instance.to_string(),
            routes: EndpointRoutes {
                rw: Some(target.to_string()),
                ro: others
                    .iter()
                    .filter(|s| !diverged.contains(s))
                    .cloned()
                    .collect(),
                hold_rw: false,
            },
        },
    )
    .await?;
    // A standby whose WAL went past the fork (it had received more than the new primary when
    // the old one failed) rejoins like an old primary: pg_rewind, then streaming. Until it
    // does, it is `rejoining`, which the actor retries.
    for standby in &diverged {
        call::<_, ()>(
            ctx,
            act::SET_MEMBER_STATE,
            &MemberStateInput {
                instance: instance.to_string(),
                member: standby.clone(),
                state: MemberState::Rejoining,
            },
        )
        .await?;
        rejoin(ctx, instance, standby, target).await;
    }
    Ok(())
}

/// Rejoins `member` as a standby of `primary`; records it running on success. A failure is
/// logged and left to the actor, which retries.
async fn rejoin(ctx: &OrchestrationContext, instance: &str, member: &str, primary: &str) -> bool {
    let rejoined = call_once::<_, String>(
        ctx,
        act::REJOIN_MEMBER,
        &RejoinInput {
            instance: instance.to_string(),
            member: member.to_string(),
            primary: primary.to_string(),
            timeout_secs: REJOIN_TIMEOUT_SECS,
        },
    )
    .await;
    match rejoined {
        Ok(method) => {
            let recorded = call::<_, ()>(
                ctx,
                act::SET_MEMBER_STATE,
                &MemberStateInput {
                    instance: instance.to_string(),
                    member: member.to_string(),
                    state: MemberState::Running,
                },
            )
            .await;
            let event = call::<_, ()>(
                ctx,
                act::RECORD_EVENT,
                &crate::activities::ha::EventRecord {
                    instance: instance.to_string(),
                    member: Some(member.to_string()),
                    operation_id: None,
                    kind: HaEventKind::Rejoined,
                    message: format!("{member} rejoined as a standby of {primary} ({method})"),
                },
            )
            .await;
            recorded.and(event).is_ok()
        }
        Err(e) => {
            ctx.trace_warn(format!("rejoin {member}: {e}"));
            let _ = call::<_, ()>(
                ctx,
                act::RECORD_EVENT,
                &crate::activities::ha::EventRecord {
                    instance: instance.to_string(),
                    member: Some(member.to_string()),
                    operation_id: None,
                    kind: HaEventKind::RejoinFailed,
                    message: format!("{member} could not rejoin yet: {e}"),
                },
            )
            .await;
            false
        }
    }
}

/// Runs a switchover: the primary is healthy and hands over to a caught-up standby.
pub async fn switchover(
    ctx: OrchestrationContext,
    input: SwitchoverInput,
) -> Result<String, String> {
    let started = started(
        &ctx,
        &input.operation_id,
        OperationKind::Switchover,
        &input.instance,
    )
    .await?;
    let mut handover = Handover {
        data_loss_bytes: Some(0),
        ..Handover::default()
    };
    let result = run_switchover(&ctx, &input, &mut handover)
        .await
        .map(|()| handover.clone())
        .map_err(|e| (e, handover.clone()));
    finish(
        &ctx,
        &input.operation_id,
        OperationKind::Switchover,
        &input.instance,
        started,
        result,
    )
    .await
}

async fn run_switchover(
    ctx: &OrchestrationContext,
    input: &SwitchoverInput,
    handover: &mut Handover,
) -> Result<(), String> {
    let instance = &input.instance;
    let request = &input.request;
    let topology = read_topology(ctx, instance).await?;
    let sync = topology.replication_mode == ReplicationMode::Sync;
    let old = topology
        .primary
        .clone()
        .ok_or_else(|| format!("instance {instance} has no primary: use a failover"))?;
    handover.old_primary = Some(old.clone());
    let mut members = vec![old.clone()];
    members.extend(topology.standbys.iter().cloned());
    let surveys = survey(ctx, instance, &members, input.ha.check_timeout_ms).await?;
    let primary = surveys
        .iter()
        .find(|s| s.member == old)
        .filter(|p| p.running && p.role == Some(Role::Primary))
        .ok_or_else(|| format!("the primary {old} is not healthy: use a failover"))?;
    let seen = PrimarySeen {
        member: Some(old.clone()),
        lsn: primary.current_lsn,
        synchronous: primary
            .standbys
            .iter()
            .filter(|(_, state, _)| SyncState::text_confirms_commits(state))
            .map(|(name, _, _)| name.clone())
            .collect(),
        degraded: primary.sync_degraded,
    };
    // A switchover may pick any streaming standby (it waits for it to catch up); sync mode
    // prefers a synchronous one.
    let standbys: Vec<MemberSurvey> = surveys
        .iter()
        .filter(|s| s.member != old && s.streaming)
        .cloned()
        .collect();
    let relaxed = HaSettings {
        max_lag_bytes: u64::MAX,
        ..input.ha.clone()
    };
    let choice = match choose_target(
        &standbys,
        sync,
        &relaxed,
        &seen,
        &topology.sync_candidates,
        request.to.as_deref(),
        false,
    ) {
        Ok(choice) => choice,
        Err(_) => choose_target(
            &standbys,
            false,
            &relaxed,
            &seen,
            &[],
            request.to.as_deref(),
            false,
        )
        .map_err(|NoCandidate(why)| format!("no standby can take over: {why}"))?,
    };
    let target = choice.member.clone();
    handover.new_primary = Some(target.clone());
    handover.lag_bytes_at_start = Some(choice.lag_bytes);
    handover.reason = Some(choice.reason.clone());

    if request.wait_for_sync {
        progress(
            ctx,
            HandoverState::WaitingForSync,
            format!("waiting for {target} to catch up with {old}"),
            handover,
        );
        let caught: CaughtUp = call_once(
            ctx,
            act::WAIT_CAUGHT_UP,
            &CatchUpInput {
                instance: instance.clone(),
                primary: old.clone(),
                standby: target.clone(),
                max_lag_bytes: CAUGHT_UP_BYTES,
                timeout_secs: request.sync_timeout_secs,
            },
        )
        .await?;
        handover.lag_bytes_at_start = Some(caught.lag_bytes_at_start);
    }

    progress(
        ctx,
        HandoverState::FencingPrimary,
        format!("holding writes and stopping {old} cleanly"),
        handover,
    );
    let others = topology.staying_standbys(&target);
    let keeps_a_sync_standby = matches!(
        request.old_primary_action,
        OldPrimaryAction::ConvertToReplica
    ) || others.iter().any(|s| topology.sync_candidates.contains(s));
    if sync && !keeps_a_sync_standby {
        return Err(format!(
            "{target} would be left without a synchronous standby once {old} is gone; add a \
             replica first, or convert {old} to a replica"
        ));
    }
    hold_writes(ctx, instance, &others).await?;
    // A clean stop sends the old primary's last WAL to the connected standbys.
    let fenced: Fenced = call_once(
        ctx,
        act::FENCE_MEMBER,
        &FenceInput {
            instance: instance.clone(),
            member: old.clone(),
            timeout_ms: input.ha.check_timeout_ms.max(5_000),
        },
    )
    .await?;
    if fenced.method != "sidecar" {
        handover.reason = Some(format!(
            "{}; {old} had to be killed: {}",
            choice.reason,
            fenced.sidecar_error.as_deref().unwrap_or("")
        ));
    }
    // The data-loss bytes: how much of the old primary's WAL the target lacks once the clean
    // stop's last WAL has had time to land.
    let loss = match fenced.last_lsn {
        Some(last) => {
            let got: Option<u64> = call_once(
                ctx,
                act::WAIT_RECEIVED,
                &ReceivedInput {
                    instance: instance.clone(),
                    member: target.clone(),
                    lsn: last,
                    timeout_ms: 5_000,
                },
            )
            .await?;
            got.map_or(0, |got| last.saturating_sub(got))
        }
        None => 0,
    };
    handover.data_loss_bytes = Some(loss);

    let (rejoining, cleanup) = match request.old_primary_action {
        OldPrimaryAction::ConvertToReplica => (Some(old.as_str()), MemberState::Rejoining),
        OldPrimaryAction::StopAndRetain => (None, MemberState::Fenced),
        OldPrimaryAction::Terminate => (None, MemberState::Deleting),
    };
    let promoted = promote_and_route(
        ctx,
        &input.operation_id,
        instance,
        &target,
        rejoining,
        &others,
        &topology.sync_candidates,
        sync,
        &input.ha,
        handover,
        false,
    )
    .await;
    if let Err(e) = promoted {
        // Give the old primary its role back rather than leave the instance without one.
        ctx.trace_error(format!(
            "switchover to {target} failed: {e}; restoring {old}"
        ));
        let _ = call::<_, ()>(
            ctx,
            act::UNFENCE_MEMBER,
            &PromoteInput {
                instance: instance.clone(),
                member: old.clone(),
            },
        )
        .await;
        let _ = call::<_, ()>(
            ctx,
            act::ROUTE_ENDPOINTS,
            &RouteInput {
                instance: instance.clone(),
                routes: EndpointRoutes {
                    rw: Some(old.clone()),
                    ro: topology.standbys.clone(),
                    hold_rw: false,
                },
            },
        )
        .await;
        return Err(e);
    }
    if rejoining.is_none() {
        call::<_, ()>(
            ctx,
            act::SET_MEMBER_STATE,
            &MemberStateInput {
                instance: instance.clone(),
                member: old.clone(),
                state: cleanup,
            },
        )
        .await?;
    }

    progress(
        ctx,
        HandoverState::CleaningUpOldPrimary,
        match request.old_primary_action {
            OldPrimaryAction::ConvertToReplica => format!("rejoining {old} as a standby"),
            OldPrimaryAction::StopAndRetain => format!("{old} stays stopped, its data kept"),
            OldPrimaryAction::Terminate => format!("deleting {old}"),
        },
        handover,
    );
    match request.old_primary_action {
        OldPrimaryAction::ConvertToReplica => {
            if !rejoin(ctx, instance, &old, &target).await {
                return Err(format!(
                    "{target} is the primary, but {old} could not rejoin as a standby yet (the \
                     instance's actor keeps trying)"
                ));
            }
        }
        OldPrimaryAction::StopAndRetain => {}
        OldPrimaryAction::Terminate => {
            call::<_, ()>(
                ctx,
                act::DELETE_MEMBER,
                &DeleteMemberInput {
                    instance: instance.clone(),
                    member: old.clone(),
                    keep_data: false,
                },
            )
            .await?;
            if let Err(e) = call::<_, ()>(
                ctx,
                act::DROP_SLOT,
                &DropSlotInput {
                    instance: instance.clone(),
                    primary: target.clone(),
                    member: old.clone(),
                    timeout_secs: 30,
                },
            )
            .await
            {
                ctx.trace_warn(format!("drop {old}'s slot on {target}: {e}"));
            }
            call::<_, ()>(
                ctx,
                act::RECORD_REPLICAS,
                &ReplicasChanged {
                    instance: instance.clone(),
                    replicas: u32::try_from(topology.standbys.len().saturating_sub(1)).unwrap_or(0),
                },
            )
            .await?;
        }
    }
    Ok(())
}

/// Runs a rejoin of a former primary (the actor's retry after a failover could not finish it).
pub async fn rejoin_operation(
    ctx: OrchestrationContext,
    input: RejoinOperation,
) -> Result<String, String> {
    let started = started(
        &ctx,
        &input.operation_id,
        OperationKind::Rejoin,
        &input.instance,
    )
    .await?;
    let topology = read_topology(&ctx, &input.instance).await;
    let result = match topology {
        Ok(Topology {
            primary: Some(primary),
            ..
        }) if primary != input.member => {
            let handover = Handover {
                old_primary: Some(input.member.clone()),
                new_primary: Some(primary.clone()),
                ..Handover::default()
            };
            if rejoin(&ctx, &input.instance, &input.member, &primary).await {
                Ok(handover)
            } else {
                Err((format!("{} could not rejoin yet", input.member), handover))
            }
        }
        Ok(_) => Err((
            format!("instance {} has no other primary to follow", input.instance),
            Handover::default(),
        )),
        Err(e) => Err((e, Handover::default())),
    };
    finish(
        &ctx,
        &input.operation_id,
        OperationKind::Rejoin,
        &input.instance,
        started,
        result,
    )
    .await
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn standby(member: &str, lsn: u64) -> MemberSurvey {
        MemberSurvey {
            member: member.into(),
            reachable: true,
            running: true,
            role: Some(Role::Standby),
            receive_lsn: Some(lsn),
            streaming: false,
            ..MemberSurvey::default()
        }
    }

    fn seen(lsn: u64, synchronous: &[&str]) -> PrimarySeen {
        PrimarySeen {
            member: Some("db-0".into()),
            lsn: Some(lsn),
            synchronous: synchronous.iter().map(|s| s.to_string()).collect(),
            degraded: false,
        }
    }

    #[test]
    fn sync_mode_promotes_only_the_synchronous_standby() {
        let ha = HaSettings::default();
        let standbys = [standby("db-1", 100), standby("db-2", 200)];
        // db-2 is further but was asynchronous: only db-1 surely has every commit.
        let choice = choose_target(
            &standbys,
            true,
            &ha,
            &seen(200, &["db-1"]),
            &[],
            None,
            false,
        );
        assert_eq!(choice.unwrap().member, "db-1");
        // ... unless db-2 could be synchronous and received more of the same timeline: then it
        // holds every commit db-1 holds.
        let on_tl = |mut s: MemberSurvey, tli| {
            s.timeline = Some(tli);
            s
        };
        let same = [
            on_tl(standby("db-1", 100), 3),
            on_tl(standby("db-2", 200), 3),
        ];
        let set = ["db-1".to_string(), "db-2".to_string()];
        let choice = choose_target(&same, true, &ha, &seen(200, &["db-1"]), &set, None, false);
        let choice = choice.unwrap();
        assert_eq!(choice.member, "db-2", "{}", choice.reason);
        // The actor names its choice as the failover's target: it must be accepted as such.
        let named = choose_target(
            &same,
            true,
            &ha,
            &seen(200, &["db-1"]),
            &set,
            Some("db-2"),
            false,
        );
        assert_eq!(named.unwrap().member, "db-2");
        // Not on another timeline (a standby left behind by an earlier failover).
        let other = [
            on_tl(standby("db-1", 100), 3),
            on_tl(standby("db-2", 200), 2),
        ];
        let choice = choose_target(&other, true, &ha, &seen(200, &["db-1"]), &set, None, false);
        assert_eq!(choice.unwrap().member, "db-1");
        // The synchronous standby is gone: nobody may be promoted.
        let err = choose_target(
            &standbys[1..],
            true,
            &ha,
            &seen(200, &["db-1"]),
            &[],
            None,
            false,
        );
        assert!(err.unwrap_err().0.contains("synchronous"));
        // Never saw a synchronous standby: all that could have been one must answer.
        let set = ["db-1".to_string(), "db-2".to_string()];
        let choice = choose_target(&standbys, true, &ha, &seen(200, &[]), &set, None, false);
        assert_eq!(choice.unwrap().member, "db-2");
        let err = choose_target(
            &standbys[1..],
            true,
            &ha,
            &seen(200, &[]),
            &set,
            None,
            false,
        );
        assert!(err.unwrap_err().0.contains("db-1"));
        // Forced: the furthest one.
        let forced = choose_target(
            &standbys[1..],
            true,
            &ha,
            &seen(200, &["db-1"]),
            &[],
            None,
            true,
        );
        assert_eq!(forced.unwrap().member, "db-2");
    }

    #[test]
    fn quorum_needs_enough_answers_and_takes_the_furthest() {
        let ha = HaSettings {
            quorum: true,
            num_sync: 1,
            ..HaSettings::default()
        };
        let all = ["db-1", "db-2", "db-3"];
        let standbys = [
            standby("db-1", 100),
            standby("db-2", 300),
            standby("db-3", 200),
        ];
        let choice =
            choose_target(&standbys, true, &ha, &seen(300, &all), &[], None, false).unwrap();
        assert_eq!(choice.member, "db-2");
        // ANY 1 of 3: all three must answer to be sure one has the last commit.
        let err = choose_target(
            &standbys[..2],
            true,
            &ha,
            &seen(300, &all),
            &[],
            None,
            false,
        );
        assert!(err.is_err());
        // ANY 2 of 3: two answers suffice.
        let two = HaSettings { num_sync: 2, ..ha };
        let choice = choose_target(
            &standbys[..2],
            true,
            &two,
            &seen(300, &all),
            &[],
            None,
            false,
        );
        assert_eq!(choice.unwrap().member, "db-2");
    }

    #[test]
    fn async_mode_respects_the_lag_bound_and_the_requested_target() {
        let ha = HaSettings {
            max_lag_bytes: 50,
            ..HaSettings::default()
        };
        let standbys = [standby("db-1", 960), standby("db-2", 990)];
        let choice =
            choose_target(&standbys, false, &ha, &seen(1000, &[]), &[], None, false).unwrap();
        assert_eq!((choice.member.as_str(), choice.lag_bytes), ("db-2", 10));
        let asked = choose_target(
            &standbys,
            false,
            &ha,
            &seen(1000, &[]),
            &[],
            Some("db-1"),
            false,
        );
        assert_eq!(asked.unwrap().member, "db-1");
        let err = choose_target(&standbys, false, &ha, &seen(2000, &[]), &[], None, false);
        assert!(err.unwrap_err().0.contains("lags more than 50"));
        let unknown = choose_target(
            &standbys,
            false,
            &ha,
            &seen(1000, &[]),
            &[],
            Some("db-9"),
            false,
        );
        assert!(unknown.is_err());
    }

    #[test]
    fn unreachable_or_stopped_standbys_are_never_chosen() {
        let ha = HaSettings::default();
        let mut down = standby("db-1", 500);
        down.reachable = false;
        let mut fenced = standby("db-2", 500);
        fenced.running = false;
        let err = choose_target(
            &[down, fenced],
            false,
            &ha,
            &seen(500, &[]),
            &[],
            None,
            true,
        );
        assert!(err.is_err());
    }

    #[test]
    fn the_policy_follows_the_settings() {
        let standbys = vec!["db-1".to_string(), "db-2".to_string()];
        let ha = HaSettings {
            quorum: true,
            num_sync: 5,
            sync_mode: SyncModeSetting::Degrade,
            ..HaSettings::default()
        };
        let policy = sync_policy(true, &ha, &standbys).unwrap();
        assert_eq!(policy.method, SyncMethod::Any);
        assert_eq!(policy.num_sync, 2);
        assert_eq!(policy.mode, SyncMode::Degrade);
        assert!(sync_policy(false, &ha, &standbys).is_none());
        assert!(sync_policy(true, &ha, &[]).is_none());
        assert_eq!(format_lsn(0x16_B374_D848), "16/B374D848");
    }
}
