//! *AddReplica* and *RemoveReplica*: a standby more or less. Both run as children of the
//! instance's actor (one command at a time), with the operation id as their orchestration id so
//! the operation's progress is theirs.

use duroxide::OrchestrationContext;
use serde::{Deserialize, Serialize};
use toygres_common::controller_api::MAX_REPLICAS;
use toygres_common::domain::{OperationKind, ReplicationMode, Role};

use super::durable::{call, call_once};
use super::ha::sync::sync_policy;
use super::members::{next_member_name, MEMBER_READY_TIMEOUT_SECS};
use super::operation::{cancel_requested, report, route_endpoints, OperationRun};
use crate::activities::ha::SyncPolicyInput;
use crate::activities::members::{CreateMemberInput, DeleteMemberInput, InstanceRef, Topology};
use crate::activities::names as act;
use crate::activities::records::MemberOptions;
use crate::activities::records::{InstanceRunning, MemberRole, ReplicasChanged};
use crate::activities::sidecar::{DropSlotInput, ExpectedRole, MemberReady, WaitReadyInput};
use crate::platform::{Bootstrap, EndpointRoutes, MemberHandle, Placement};

/// The input of *AddReplica*.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AddReplicaInput {
    pub operation_id: String,
    pub instance: String,
    /// The new member's name; the next free `<instance>-<n>` when `None`.
    pub member: Option<String>,
    #[serde(default)]
    pub placement: Placement,
    /// It may be a synchronous standby (sync instances).
    #[serde(default = "yes")]
    pub sync_candidate: bool,
    /// Its own lag bound for the ro endpoint.
    #[serde(default)]
    pub max_lag_bytes: Option<u64>,
}

fn yes() -> bool {
    true
}

/// The input of *RemoveReplica*.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RemoveReplicaInput {
    pub operation_id: String,
    pub instance: String,
    pub member: String,
    #[serde(default)]
    pub keep_data: bool,
}

const ADD_STEPS: u32 = 5;
const REMOVE_STEPS: u32 = 4;

/// The first step of a replica operation: recorded running, the instance's members read.
async fn start(
    ctx: &OrchestrationContext,
    operation: &OperationRun,
    steps: u32,
) -> Result<Topology, String> {
    let instance = InstanceRef {
        instance: operation.instance.clone(),
    };
    report(ctx, 1, steps, "reading the instance's members");
    operation.record_started(ctx, None).await?;
    call(ctx, act::READ_TOPOLOGY, &instance).await
}

/// Adds a standby: copy the primary, wait until it streams, include it in the synchronous set
/// (sync mode) and in the ro endpoint, and record it.
pub async fn add_replica(
    ctx: OrchestrationContext,
    input: AddReplicaInput,
) -> Result<String, String> {
    let operation = OperationRun::begin(
        &ctx,
        &input.operation_id,
        OperationKind::AddReplica,
        &input.instance,
    )
    .await?;
    let result = add(&ctx, &input, &operation).await;
    operation
        .finish_reporting(&ctx, &result, None, ADD_STEPS, |member| {
            format!("done: {member}")
        })
        .await?;
    result
}

async fn add(
    ctx: &OrchestrationContext,
    input: &AddReplicaInput,
    operation: &OperationRun,
) -> Result<String, String> {
    let topology = start(ctx, operation, ADD_STEPS).await?;
    let instance = InstanceRef {
        instance: input.instance.clone(),
    };
    let (Some(primary), Some(primary_address)) =
        (topology.primary.clone(), topology.primary_address.clone())
    else {
        return Err(format!("instance {} has no primary", input.instance));
    };
    let existing: Vec<String> = call(ctx, act::LIST_MEMBERS, &instance).await?;
    // The cap holds here, where adds run one at a time, not only when a request arrives (many
    // requests may be queued before the first one runs). Members the platform runs count too.
    check_room(&input.instance, topology.standbys.len(), existing.len())?;
    let member = match &input.member {
        Some(member) if existing.contains(member) => {
            return Err(format!("member {member} already exists"))
        }
        Some(member) => member.clone(),
        None => next_member_name(&input.instance, &existing),
    };
    if cancel_requested(ctx, &input.operation_id).await {
        return Err(CANCELLED.into());
    }

    report(ctx, 2, ADD_STEPS, format!("copying {primary} to {member}"));
    let created = call::<_, MemberHandle>(
        ctx,
        act::CREATE_MEMBER,
        &CreateMemberInput {
            instance: input.instance.clone(),
            member: member.clone(),
            bootstrap: Bootstrap::Standby {
                primary: primary_address,
            },
            placement: input.placement.clone(),
        },
    )
    .await;
    // From here on the member exists (or half exists): an add that does not finish removes it.
    let added = match created {
        Ok(_) => join(ctx, input, &topology, primary.clone(), &member).await,
        Err(e) => Err(e),
    };
    if let Err(e) = added {
        remove_orphan(ctx, input, &primary, &member).await;
        return Err(e);
    }
    Ok(member)
}

/// What an add that an operator cancelled at a safe point ends with.
const CANCELLED: &str = "cancelled by the operator";

/// Refuses an add that would take the instance past [`MAX_REPLICAS`] standbys.
fn check_room(instance: &str, standbys: usize, members: usize) -> Result<(), String> {
    let cap = usize::try_from(MAX_REPLICAS).unwrap_or(usize::MAX);
    if standbys >= cap || members > cap {
        return Err(format!(
            "instance {instance} already has {MAX_REPLICAS} replicas, the most it may have"
        ));
    }
    Ok(())
}

/// The new member streams, is recorded and is routed; a cancel is honoured before each step.
async fn join(
    ctx: &OrchestrationContext,
    input: &AddReplicaInput,
    topology: &Topology,
    primary: String,
    member: &str,
) -> Result<(), String> {
    let instance = &input.instance;
    if cancel_requested(ctx, &input.operation_id).await {
        return Err(CANCELLED.into());
    }
    report(ctx, 3, ADD_STEPS, format!("waiting for {member} to stream"));
    let _: MemberReady = call_once(
        ctx,
        act::WAIT_MEMBER_READY,
        &WaitReadyInput {
            instance: instance.clone(),
            member: member.to_string(),
            role: ExpectedRole::Standby,
            timeout_secs: MEMBER_READY_TIMEOUT_SECS,
        },
    )
    .await?;
    if cancel_requested(ctx, &input.operation_id).await {
        return Err(CANCELLED.into());
    }

    let mut standbys = topology.standbys.clone();
    standbys.push(member.to_string());
    call::<_, ()>(
        ctx,
        act::RECORD_MEMBER_OPTIONS,
        &MemberOptions {
            instance: instance.clone(),
            member: member.to_string(),
            sync_candidate: input.sync_candidate,
            max_lag_bytes: input.max_lag_bytes,
        },
    )
    .await?;
    let mut candidates = topology.sync_candidates.clone();
    if input.sync_candidate {
        candidates.push(member.to_string());
    }
    report(ctx, 4, ADD_STEPS, "routing read-only connections to it");
    if topology.replication_mode == ReplicationMode::Sync {
        call::<_, ()>(
            ctx,
            act::SET_SYNC_POLICY,
            &SyncPolicyInput {
                instance: instance.clone(),
                primary: primary.clone(),
                policy: sync_policy(true, &topology.ha, &candidates),
            },
        )
        .await?;
    }
    route_endpoints(
        ctx,
        instance,
        EndpointRoutes {
            rw: Some(primary),
            ro: standbys.clone(),
            ..Default::default()
        },
    )
    .await?;
    call::<_, ()>(
        ctx,
        act::RECORD_INSTANCE_RUNNING,
        &InstanceRunning {
            instance: instance.clone(),
            members: vec![MemberRole {
                member: member.to_string(),
                role: Role::Standby,
            }],
        },
    )
    .await?;
    call::<_, ()>(
        ctx,
        act::RECORD_REPLICAS,
        &ReplicasChanged {
            instance: instance.clone(),
            replicas: u32::try_from(standbys.len()).unwrap_or(u32::MAX),
        },
    )
    .await
}

/// Removes the member an add created and could not finish: its process, data and slot (the
/// actor's next round routes the endpoints again). Failures are logged: the add has failed.
async fn remove_orphan(
    ctx: &OrchestrationContext,
    input: &AddReplicaInput,
    primary: &str,
    member: &str,
) {
    ctx.trace_warn(format!("the add did not finish: removing {member}"));
    let deleted = call::<_, ()>(
        ctx,
        act::DELETE_MEMBER,
        &DeleteMemberInput {
            instance: input.instance.clone(),
            member: member.to_string(),
            keep_data: false,
        },
    )
    .await;
    if let Err(e) = deleted {
        ctx.trace_warn(format!("remove the unfinished member {member}: {e}"));
    }
    let dropped = call::<_, ()>(
        ctx,
        act::DROP_SLOT,
        &DropSlotInput {
            instance: input.instance.clone(),
            primary: primary.to_string(),
            member: member.to_string(),
            timeout_secs: 30,
        },
    )
    .await;
    if let Err(e) = dropped {
        ctx.trace_warn(format!(
            "drop {member}'s replication slot on {primary}: {e}"
        ));
    }
}

/// Removes a standby: take it out of the ro endpoint and the synchronous set first, then stop
/// and delete it.
pub async fn remove_replica(
    ctx: OrchestrationContext,
    input: RemoveReplicaInput,
) -> Result<String, String> {
    let operation = OperationRun::begin(
        &ctx,
        &input.operation_id,
        OperationKind::RemoveReplica,
        &input.instance,
    )
    .await?;
    let result = remove(&ctx, &input, &operation).await;
    operation
        .finish_reporting(&ctx, &result, None, REMOVE_STEPS, |member| {
            format!("done: {member}")
        })
        .await?;
    result
}

async fn remove(
    ctx: &OrchestrationContext,
    input: &RemoveReplicaInput,
    operation: &OperationRun,
) -> Result<String, String> {
    let topology = start(ctx, operation, REMOVE_STEPS).await?;
    if topology.primary.as_deref() == Some(input.member.as_str()) {
        return Err(format!(
            "{} is the primary; only a standby can be removed",
            input.member
        ));
    }
    let standbys: Vec<String> = topology
        .standbys
        .iter()
        .filter(|s| **s != input.member)
        .cloned()
        .collect();
    let candidates: Vec<String> = topology
        .sync_candidates
        .iter()
        .filter(|s| **s != input.member)
        .cloned()
        .collect();
    if topology.replication_mode == ReplicationMode::Sync && candidates.is_empty() {
        return Err(
            "sync replication needs at least one synchronous standby; this is the last".into(),
        );
    }

    report(
        ctx,
        2,
        REMOVE_STEPS,
        format!("taking {} out of service", input.member),
    );
    route_endpoints(
        ctx,
        &input.instance,
        EndpointRoutes {
            rw: topology.primary.clone(),
            ro: standbys.clone(),
            ..Default::default()
        },
    )
    .await?;
    if let (Some(primary), ReplicationMode::Sync) = (&topology.primary, topology.replication_mode) {
        call::<_, ()>(
            ctx,
            act::SET_SYNC_POLICY,
            &SyncPolicyInput {
                instance: input.instance.clone(),
                primary: primary.clone(),
                policy: sync_policy(true, &topology.ha, &candidates),
            },
        )
        .await?;
    }

    report(ctx, 3, REMOVE_STEPS, format!("deleting {}", input.member));
    call::<_, ()>(
        ctx,
        act::DELETE_MEMBER,
        &DeleteMemberInput {
            instance: input.instance.clone(),
            member: input.member.clone(),
            keep_data: input.keep_data,
        },
    )
    .await?;
    // Its slot would keep WAL on the primary for a standby that no longer exists. The member is
    // already gone, so a failure here is reported, not fatal (max_slot_wal_keep_size bounds it).
    if let Some(primary) = &topology.primary {
        let dropped = call::<_, ()>(
            ctx,
            act::DROP_SLOT,
            &DropSlotInput {
                instance: input.instance.clone(),
                primary: primary.clone(),
                member: input.member.clone(),
                timeout_secs: 30,
            },
        )
        .await;
        if let Err(e) = dropped {
            ctx.trace_warn(format!(
                "could not drop {}'s replication slot on {primary}: {e}",
                input.member
            ));
        }
    }
    call::<_, ()>(
        ctx,
        act::RECORD_REPLICAS,
        &ReplicasChanged {
            instance: input.instance.clone(),
            replicas: u32::try_from(standbys.len()).unwrap_or(u32::MAX),
        },
    )
    .await?;
    Ok(input.member.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_add_past_the_cap_is_refused_counting_standbys_and_running_members() {
        let cap = MAX_REPLICAS as usize;
        assert!(check_room("a", 0, 1).is_ok());
        assert!(check_room("a", cap - 1, cap).is_ok());
        assert!(check_room("a", cap, cap + 1).is_err());
        // An orphan the CMS does not list still takes room.
        assert!(check_room("a", cap - 1, cap + 1).is_err());
    }
}
