//! *Failover*: the primary is down (or, forced, not), and the best standby takes over —
//! gather (topology, survey), decide (which standby, [`choose_target`]), act (hold writes,
//! fence the old primary, promote and route), record (the new roles, the operation), then
//! rejoin the old primary as a standby.

use duroxide::OrchestrationContext;
use serde::{Deserialize, Serialize};
use toygres_common::controller_api::{HaSettings, Handover};
use toygres_common::domain::{HandoverState, OperationKind, ReplicationMode, Role};

use super::handover::{
    finish, hold_writes, progress, promote_and_route, read_topology, rejoin, started, survey,
    Promotion,
};
use super::target::{choose_target, NoCandidate, PrimarySeen};
use crate::activities::ha::{FenceInput, Fenced, MemberSurvey};
use crate::activities::members::Topology;
use crate::activities::names as act;
use crate::orchestrations::durable::call_once;

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
    /// Automatic: what the standbys said of the old primary, which let the actor fail over
    /// (it goes into the failover's reason, and so into its event).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub evidence: Option<String>,
}

/// Runs a failover: promote the best standby of an instance whose primary is down (or, forced,
/// one that answers).
pub async fn failover(ctx: OrchestrationContext, input: FailoverInput) -> Result<String, String> {
    let kind = if input.automatic {
        OperationKind::AutoFailover
    } else {
        OperationKind::Failover
    };
    // Recorded running while the topology is read: one step less before the fence.
    let (operation, topology) = ctx
        .join2(
            started(&ctx, &input.operation_id, kind, &input.instance),
            read_topology(&ctx, &input.instance),
        )
        .await;
    let operation = operation?;
    let mut handover = Handover::default();
    let result = match topology {
        Ok(topology) => run_failover(&ctx, &input, topology, &mut handover).await,
        Err(e) => Err(e),
    };
    finish(&ctx, &operation, result, handover).await
}

async fn run_failover(
    ctx: &OrchestrationContext,
    input: &FailoverInput,
    topology: Topology,
    handover: &mut Handover,
) -> Result<(), String> {
    let instance = &input.instance;
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
    handover.reason = Some(match &input.evidence {
        Some(evidence) => format!("{} ({evidence})", choice.reason),
        None => choice.reason.clone(),
    });

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
    // Writes held and the old primary fenced at once: both must be done before the promotion.
    // An automatic failover of a synchronous primary kills it through the platform without
    // asking its sidecar first (which a hung or cut-off member does not answer).
    let fence = async {
        let Some(old) = &old else {
            return Ok(None);
        };
        call_once::<_, Fenced>(
            ctx,
            act::FENCE_MEMBER,
            &FenceInput {
                instance: instance.clone(),
                member: old.clone(),
                timeout_ms: input.ha.check_timeout_ms,
                platform_first: input.automatic && sync && !seen.degraded,
            },
        )
        .await
        .map(Some)
    };
    let (held, fenced) = ctx.join2(hold_writes(ctx, instance, &others), fence).await;
    held?;
    if let (Some(old), Some(fenced)) = (&old, fenced?) {
        ctx.trace_info(format!("fenced {old} through the {}", fenced.method));
    }
    let promotion = Promotion {
        operation_id: &input.operation_id,
        instance,
        target: &target,
        old: old.as_deref(),
        others: &others,
        sync_candidates: &topology.sync_candidates,
        sync,
        ha: &input.ha,
        automatic: input.automatic,
        old_fenced: old.is_some(),
    };
    promote_and_route(ctx, promotion, handover).await?;

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
