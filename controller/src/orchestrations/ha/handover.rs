//! What switchover, failover and rejoin share: their progress (a [`HandoverState`] and what
//! they measured), their record as an operation, the survey of the members, holding writes,
//! promoting the target and leading the endpoints and standbys to it, and rejoining a former
//! primary.

use duroxide::OrchestrationContext;
use toygres_common::controller_api::{HaSettings, Handover, Progress};
use toygres_common::domain::{HaEventKind, HandoverState, MemberState, OperationKind};

use super::sync::sync_policy;
use crate::activities::ha::{
    MemberSurvey, PromoteInput, Promoted, RejoinInput, RepointInput, Repointed, SurveyInput,
    SyncPolicyInput,
};
use crate::activities::members::{InstanceRef, Topology};
use crate::activities::names as act;
use crate::activities::records::HandoverRecord;
use crate::orchestrations::durable::{call, call_once};
use crate::orchestrations::operation::{
    publish, record_event, route_endpoints, set_member_state, OperationRun,
};
use crate::platform::EndpointRoutes;

/// How long a former primary may take to rejoin inside a switchover or failover (a re-clone
/// included); past it the operation ends and the actor keeps trying.
pub const REJOIN_TIMEOUT_SECS: u64 = 300;

/// Publishes the operation's state and what it knows so far.
pub(super) fn progress(
    ctx: &OrchestrationContext,
    state: HandoverState,
    message: impl Into<String>,
    h: &Handover,
) {
    let message = message.into();
    ctx.trace_info(format!("{state}: {message}"));
    publish(
        ctx,
        &Progress {
            step: state.step(),
            steps: HandoverState::STEPS,
            message,
            state: Some(state.to_string()),
            handover: Some(h.clone()),
            restore: None,
        },
    );
}

/// Begins the operation and records it running.
pub(super) async fn started(
    ctx: &OrchestrationContext,
    operation_id: &str,
    kind: OperationKind,
    instance: &str,
) -> Result<OperationRun, String> {
    let operation = OperationRun::begin(ctx, operation_id, kind, instance).await?;
    operation.record_started(ctx, None).await?;
    Ok(operation)
}

/// Records the operation's end (`result`) with what it measured and decided (`handover`), its
/// last state, and returns its result.
pub(super) async fn finish(
    ctx: &OrchestrationContext,
    operation: &OperationRun,
    result: Result<(), String>,
    handover: Handover,
) -> Result<String, String> {
    let error = result.err();
    let mut outcome = Err(String::new());
    // The last state is published before the operation is recorded as finished, so nobody
    // reads a finished operation with an older state.
    operation
        .finish(ctx, error.clone(), None, || {
            outcome = match &error {
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
            }
        })
        .await?;
    outcome
}

/// Asks `members` for their status at once.
pub(super) async fn survey(
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

/// The instance's members and roles as the CMS records them.
pub(super) async fn read_topology(
    ctx: &OrchestrationContext,
    instance: &str,
) -> Result<Topology, String> {
    call(
        ctx,
        act::READ_TOPOLOGY,
        &InstanceRef {
            instance: instance.to_string(),
        },
    )
    .await
}

/// Holds new rw connections (closing those to the old primary); ro keeps serving the standbys
/// that stay standbys.
pub(super) async fn hold_writes(
    ctx: &OrchestrationContext,
    instance: &str,
    standbys: &[String],
) -> Result<(), String> {
    route_endpoints(
        ctx,
        instance,
        EndpointRoutes {
            rw: None,
            ro: standbys.to_vec(),
            hold_rw: true,
            ..Default::default()
        },
    )
    .await
}

/// Who takes over, from whom, and with which standbys.
#[derive(Debug, Clone, Copy)]
pub(super) struct Promotion<'a> {
    pub operation_id: &'a str,
    pub instance: &'a str,
    /// The standby to promote.
    pub target: &'a str,
    /// The old primary, when it rejoins as a standby of the target.
    pub old: Option<&'a str>,
    /// The standbys that stay standbys (re-pointed at the target).
    pub others: &'a [String],
    /// The members that may be synchronous standbys.
    pub sync_candidates: &'a [String],
    pub sync: bool,
    pub ha: &'a HaSettings,
    /// Decided by the actor (the event says so).
    pub automatic: bool,
    /// The old primary was fenced (stopped or killed): the target is promoted without the
    /// sidecar's own check that its upstream is gone.
    pub old_fenced: bool,
}

/// Promotes the target, gives it its synchronous standbys and its followers, records the new
/// roles, then leads rw to it.
pub(super) async fn promote_and_route(
    ctx: &OrchestrationContext,
    promotion: Promotion<'_>,
    handover: &mut Handover,
) -> Result<(), String> {
    let Promotion {
        operation_id,
        instance,
        target,
        old,
        others,
        sync_candidates,
        sync,
        ha,
        automatic,
        old_fenced,
    } = promotion;
    progress(
        ctx,
        HandoverState::PromotingReplica,
        format!("promoting {target}"),
        handover,
    );
    // Its synchronous standbys: the other standbys that may be, and the old primary, which
    // rejoins. The promotion sets them, before the new primary takes its first write.
    let mut followers: Vec<String> = others
        .iter()
        .filter(|s| sync_candidates.contains(s))
        .cloned()
        .collect();
    if let Some(old) = old {
        followers.push(old.to_string());
    }
    let policy = sync_policy(sync, ha, &followers);
    let promoted: Promoted = call(
        ctx,
        act::PROMOTE_MEMBER,
        &PromoteInput {
            instance: instance.to_string(),
            member: target.to_string(),
            force: old_fenced,
            sync: policy.clone(),
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
    // One attempt each: the sidecar answers within its own streaming bound, and a standby
    // that cannot follow is left to the rejoin below and the actor. They run beside the
    // policy, the record and rw below: a sync commit waits for a standby anyway, so rw need
    // not wait for them (ro already goes to them since writes were held).
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
    let serve = async {
        // The policy must hold before writes reach the new primary; the new roles are recorded
        // meanwhile.
        let set_policy = async {
            if promoted.sync_set {
                return Ok(());
            }
            call::<_, ()>(
                ctx,
                act::SET_SYNC_POLICY,
                SyncPolicyInput {
                    instance: instance.to_string(),
                    primary: target.to_string(),
                    policy,
                },
            )
            .await
        };
        let record = call::<_, ()>(
            ctx,
            act::RECORD_HANDOVER,
            HandoverRecord {
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
        );
        let (policy_set, recorded) = ctx.join2(set_policy, record).await;
        policy_set.map_err(|e| format!("set the synchronous standbys of {target}: {e}"))?;
        recorded?;
        route_endpoints(ctx, instance, rw_to(target, others)).await
    };
    let (served, repointed) = ctx.join2(serve, repoint).await;
    served?;
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
    if !diverged.is_empty() {
        // ro leaves the standbys that went past the fork until they rejoin.
        let following: Vec<String> = others
            .iter()
            .filter(|s| !diverged.contains(s))
            .cloned()
            .collect();
        route_endpoints(ctx, instance, rw_to(target, &following)).await?;
    }
    // A standby whose WAL went past the fork (it had received more than the new primary when
    // the old one failed) rejoins like an old primary: pg_rewind, then streaming. Until it
    // does, it is `rejoining`, which the actor retries.
    for standby in &diverged {
        set_member_state(ctx, instance, standby, MemberState::Rejoining).await?;
        rejoin(ctx, instance, standby, target).await;
    }
    Ok(())
}

/// rw to `primary`, ro to `standbys`.
fn rw_to(primary: &str, standbys: &[String]) -> EndpointRoutes {
    EndpointRoutes {
        rw: Some(primary.to_string()),
        ro: standbys.to_vec(),
        hold_rw: false,
        ..Default::default()
    }
}

/// Rejoins `member` as a standby of `primary`; records it running on success. A failure is
/// logged and left to the actor, which retries.
pub(super) async fn rejoin(
    ctx: &OrchestrationContext,
    instance: &str,
    member: &str,
    primary: &str,
) -> bool {
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
            let recorded = set_member_state(ctx, instance, member, MemberState::Running).await;
            let event = record_event(
                ctx,
                instance,
                Some(member),
                HaEventKind::Rejoined,
                format!("{member} rejoined as a standby of {primary} ({method})"),
            )
            .await;
            recorded.and(event).is_ok()
        }
        Err(e) => {
            ctx.trace_warn(format!("rejoin {member}: {e}"));
            let _ = record_event(
                ctx,
                instance,
                Some(member),
                HaEventKind::RejoinFailed,
                format!("{member} could not rejoin yet: {e}"),
            )
            .await;
            false
        }
    }
}
