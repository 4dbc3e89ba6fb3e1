//! *Switchover*: the primary is healthy and hands over to a caught-up standby — gather
//! (topology, survey), decide (the target), wait for it to catch up, act (hold writes, stop the
//! old primary cleanly, promote and route; on failure give the old primary its role back),
//! record, and deal with the old primary as asked.

use duroxide::OrchestrationContext;
use serde::{Deserialize, Serialize};
use toygres_common::controller_api::{HaSettings, Handover, OldPrimaryAction, ValidatedSwitchover};
use toygres_common::domain::{
    HandoverState, MemberState, OperationKind, ReplicationMode, Role, SyncState,
};

use super::handover::{
    finish, hold_writes, progress, promote_and_route, read_topology, rejoin, started, survey,
    Promotion,
};
use super::target::{choose_target, NoCandidate, PrimarySeen};
use crate::activities::ha::{
    CatchUpInput, CaughtUp, FenceInput, Fenced, MemberSurvey, PromoteInput, ReceivedInput,
};
use crate::activities::members::DeleteMemberInput;
use crate::activities::names as act;
use crate::activities::records::ReplicasChanged;
use crate::activities::sidecar::DropSlotInput;
use crate::orchestrations::durable::{call, call_once};
use crate::orchestrations::operation::{route_endpoints, set_member_state};
use crate::platform::EndpointRoutes;

/// A switchover's target counts as caught up within this many bytes of the primary; the rest
/// is sent while the old primary shuts down.
pub const CAUGHT_UP_BYTES: u64 = 1024 * 1024;

/// The input of *Switchover*.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SwitchoverInput {
    pub operation_id: String,
    pub instance: String,
    pub request: ValidatedSwitchover,
    pub ha: HaSettings,
}

/// Runs a switchover: the primary is healthy and hands over to a caught-up standby.
pub async fn switchover(
    ctx: OrchestrationContext,
    input: SwitchoverInput,
) -> Result<String, String> {
    let operation = started(
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
    let result = run_switchover(&ctx, &input, &mut handover).await;
    finish(&ctx, &operation, result, handover).await
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
            platform_first: false,
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
    let promotion = Promotion {
        operation_id: &input.operation_id,
        instance,
        target: &target,
        old: rejoining,
        others: &others,
        sync_candidates: &topology.sync_candidates,
        sync,
        ha: &input.ha,
        automatic: false,
        // Stopped cleanly just now: the sidecar's own check costs nothing.
        old_fenced: false,
    };
    let promoted = promote_and_route(ctx, promotion, handover).await;
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
                force: false,
                sync: None,
            },
        )
        .await;
        let _ = route_endpoints(
            ctx,
            instance,
            EndpointRoutes {
                rw: Some(old.clone()),
                ro: topology.standbys.clone(),
                hold_rw: false,
                ..Default::default()
            },
        )
        .await;
        return Err(e);
    }
    if rejoining.is_none() {
        set_member_state(ctx, instance, &old, cleanup).await?;
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
