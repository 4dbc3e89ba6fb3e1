//! *RestoreInPlace*: an instance's data replaced by a restore of one of its own backups, as a
//! child of its actor (so never beside a switchover or a backup). The runbook:
//!
//! 1. the standbys, then the primary, are stopped and their data directories set aside (kept);
//! 2. the primary bootstraps afresh from the backup, recovers to the target and promotes on a
//!    new timeline, archiving on under the instance's own prefix;
//! 3. once it accepts writes, the data set aside is removed and the standbys are cloned from it
//!    again; the endpoints follow.
//!
//! If the restored primary never accepts writes, every member's old data is put back and
//! started again: the instance is as it was (its standbys streaming from the same primary).
//! A member kept fenced by an earlier switchover is left alone.

use duroxide::OrchestrationContext;
use serde::{Deserialize, Serialize};
use toygres_common::domain::{InstanceState, OperationKind, Role};
use toygres_common::names::PgAddress;

use super::durable::{call, call_once};
use super::ha::sync::sync_policy;
use super::members::{MEMBER_READY_TIMEOUT_SECS, RESTORE_READY_TIMEOUT_SECS};
use super::operation::{report, route_endpoints, OperationRun};
use crate::activities::data_aside::DataAsideInput;
use crate::activities::ha::{RepointInput, Repointed, SyncPolicyInput};
use crate::activities::members::{CreateMemberInput, InstanceRef, Topology};
use crate::activities::names as act;
use crate::activities::records::{InstanceRunning, MemberRole};
use crate::activities::sidecar::{ExpectedRole, MemberReady, WaitReadyInput};
use crate::platform::{Bootstrap, EndpointRoutes, MemberHandle, Placement, RestoreSource};
use toygres_common::domain::ReplicationMode;

/// The input of *RestoreInPlace* (also the actor's `restore-in-place` command).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RestoreInPlaceInput {
    pub operation_id: String,
    pub instance: String,
    /// The instance's own backup and the recovery target (`in_place` set).
    pub restore: RestoreSource,
}

const STEPS: u32 = 5;

/// How a restore that did not finish left the instance.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Failure {
    /// Running: as it was (nothing changed, or the old data put back), or restored with a
    /// standby missing.
    Running(String),
    /// Neither restored nor put back: it needs an operator.
    Broken(String),
}

impl Failure {
    fn message(&self) -> &str {
        match self {
            Failure::Running(m) | Failure::Broken(m) => m,
        }
    }
}

/// Restores the instance in place; returns a summary. The instance is `restoring` meanwhile,
/// `running` after (restored, or put back as it was), `failed` only when neither worked.
pub async fn restore_in_place(
    ctx: OrchestrationContext,
    input: RestoreInPlaceInput,
) -> Result<String, String> {
    let operation = OperationRun::begin(
        &ctx,
        &input.operation_id,
        OperationKind::RestoreInPlace,
        &input.instance,
    )
    .await?;
    operation
        .record_started(&ctx, Some(InstanceState::Restoring))
        .await?;
    let outcome = restore(&ctx, &input).await;
    let state = match &outcome {
        Err(Failure::Broken(_)) => InstanceState::Failed,
        Ok(_) | Err(Failure::Running(_)) => InstanceState::Running,
    };
    let result = outcome.map_err(|f| f.message().to_string());
    operation
        .finish_reporting(&ctx, &result, Some(state), STEPS, |s: &String| s.clone())
        .await?;
    result
}

async fn restore(
    ctx: &OrchestrationContext,
    input: &RestoreInPlaceInput,
) -> Result<String, Failure> {
    let name = &input.instance;
    let topology: Topology = call(
        ctx,
        act::READ_TOPOLOGY,
        &InstanceRef {
            instance: name.clone(),
        },
    )
    .await
    .map_err(Failure::Running)?;
    let (Some(primary), Some(_)) = (topology.primary.clone(), topology.primary_address.as_ref())
    else {
        return Err(Failure::Running(format!(
            "instance {name} has no primary to restore"
        )));
    };
    let standbys: Vec<String> = topology
        .standbys
        .iter()
        .filter(|s| !topology.fenced.contains(s))
        .cloned()
        .collect();
    let aside = |member: &str, put_back| DataAsideInput {
        instance: name.clone(),
        member: member.to_string(),
        put_back,
    };

    // 1. Everything stopped, old data kept.
    report(
        ctx,
        1,
        STEPS,
        "stopping the standbys and setting their data aside",
    );
    let mut set_aside: Vec<String> = Vec::new();
    for standby in &standbys {
        set_aside.push(standby.clone());
        if let Err(e) = call::<_, ()>(ctx, act::SET_DATA_ASIDE, &aside(standby, false)).await {
            return Err(put_back(ctx, name, &topology, &set_aside, None, e).await);
        }
    }
    report(
        ctx,
        2,
        STEPS,
        format!("stopping {primary} and setting its data aside"),
    );
    if let Err(e) = call::<_, ()>(ctx, act::SET_DATA_ASIDE, &aside(&primary, false)).await {
        return Err(put_back(ctx, name, &topology, &set_aside, Some(&primary), e).await);
    }

    // 2. The primary from the backup, on a new timeline.
    report(
        ctx,
        3,
        STEPS,
        format!(
            "restoring {primary} from backup {} (download, unpack, replay to the target)",
            input.restore.backup_id
        ),
    );
    let restored = start_primary(
        ctx,
        name,
        &primary,
        Bootstrap::Restore(input.restore.clone()),
        RESTORE_READY_TIMEOUT_SECS,
    )
    .await;
    let (ready, restored_address) = match restored {
        Ok(started) => started,
        Err(e) => {
            let e = format!("the restore of {primary} failed: {e}");
            return Err(put_back(ctx, name, &topology, &set_aside, Some(&primary), e).await);
        }
    };

    // 3. It accepts writes: the old data goes, the standbys are cloned from it.
    report(
        ctx,
        4,
        STEPS,
        format!(
            "{primary} accepts writes (timeline {}): removing the old data, cloning the standbys",
            ready
                .timeline
                .map_or_else(|| "?".to_string(), |t| t.to_string())
        ),
    );
    for member in std::iter::once(&primary).chain(&standbys) {
        if let Err(e) = call::<_, ()>(ctx, act::END_DATA_ASIDE, &aside(member, false)).await {
            // The restore stands; only disk space is lost until someone removes it.
            ctx.trace_warn(format!("remove {member}'s old data set aside: {e}"));
        }
    }
    report(
        ctx,
        5,
        STEPS,
        "cloning the standbys and routing the endpoints",
    );
    // The standbys are cloned afresh from where the restored primary is now.
    bring_back(
        ctx,
        name,
        &topology,
        &primary,
        &restored_address,
        &standbys,
        false,
    )
    .await
    .map_err(|e| Failure::Running(format!("{name} was restored, but {e}")))?;
    Ok(format!(
        "done: {name} restored in place from backup {} (timeline {})",
        input.restore.backup_id,
        ready
            .timeline
            .map_or_else(|| "?".to_string(), |t| t.to_string())
    ))
}

/// After a failed restore (`error`): puts back the old data of the members set aside (the
/// primary's when `primary` is named) and starts them again; the instance is as it was.
async fn put_back(
    ctx: &OrchestrationContext,
    name: &str,
    topology: &Topology,
    standbys: &[String],
    primary: Option<&String>,
    error: String,
) -> Failure {
    ctx.trace_warn(format!("{error}; putting the old data back"));
    report(
        ctx,
        4,
        STEPS,
        format!("failed ({error}): putting the old data back"),
    );
    let (Some(current), Some(mut address)) =
        (topology.primary.clone(), topology.primary_address.clone())
    else {
        return Failure::Broken(error);
    };
    let recorded = address.clone();
    if let Some(primary) = primary {
        let back = DataAsideInput {
            instance: name.to_string(),
            member: primary.clone(),
            put_back: true,
        };
        if let Err(e) = call::<_, ()>(ctx, act::END_DATA_ASIDE, &back).await {
            return Failure::Broken(format!(
                "{error}; and {primary}'s old data could not be put back: {e}"
            ));
        }
        // The old data directory is in place again: the bootstrap is not used.
        match start_primary(
            ctx,
            name,
            primary,
            Bootstrap::Init,
            MEMBER_READY_TIMEOUT_SECS,
        )
        .await
        {
            Ok((_, now)) => address = now,
            Err(e) => {
                return Failure::Broken(format!(
                    "{error}; and {primary} did not start again on its old data: {e}"
                ))
            }
        }
    }
    for standby in standbys {
        let back = DataAsideInput {
            instance: name.to_string(),
            member: standby.clone(),
            put_back: true,
        };
        if let Err(e) = call::<_, ()>(ctx, act::END_DATA_ASIDE, &back).await {
            // Started without it, it is cloned again: the instance loses nothing.
            ctx.trace_warn(format!("put {standby}'s old data back: {e}"));
        }
    }
    // The standbys' old data follows the primary where it was; when it started again
    // elsewhere (a new pod IP), they are pointed at it. Where it has not moved (the local
    // platform), nothing more is scheduled than before.
    let moved = address != recorded;
    match bring_back(ctx, name, topology, &current, &address, standbys, moved).await {
        Ok(()) => Failure::Running(format!("{error}; {name} was put back as it was")),
        Err(e) => Failure::Running(format!(
            "{error}; {name}'s primary was put back as it was, but {e}"
        )),
    }
}

/// Starts the standbys (their data put back, or cloned from `primary` when they have none),
/// with `repoint` points them at `primary_address` (their data names where the primary was),
/// waits until they stream, applies the synchronous policy, routes the endpoints and records
/// the members running.
async fn bring_back(
    ctx: &OrchestrationContext,
    name: &str,
    topology: &Topology,
    primary: &str,
    primary_address: &PgAddress,
    standbys: &[String],
    repoint: bool,
) -> Result<(), String> {
    super::members::create_standbys(ctx, name, primary_address, standbys).await?;
    if repoint {
        let repointed = ctx
            .join(
                standbys
                    .iter()
                    .map(|standby| {
                        call::<_, Repointed>(
                            ctx,
                            act::REPOINT_STANDBY,
                            RepointInput {
                                instance: name.to_string(),
                                member: standby.clone(),
                                primary: primary.to_string(),
                            },
                        )
                    })
                    .collect(),
            )
            .await;
        for (standby, result) in standbys.iter().zip(repointed) {
            match result {
                Ok(Repointed { diverged: None }) => {}
                Ok(Repointed {
                    diverged: Some(why),
                }) => ctx.trace_warn(format!("{standby} cannot follow {primary}: {why}")),
                Err(e) => ctx.trace_warn(format!("point {standby} at {primary}: {e}")),
            }
        }
    }
    super::members::wait_standbys_streaming(ctx, name, standbys).await?;
    if topology.replication_mode == ReplicationMode::Sync {
        let candidates: Vec<String> = topology
            .sync_candidates
            .iter()
            .filter(|c| standbys.contains(c))
            .cloned()
            .collect();
        call::<_, ()>(
            ctx,
            act::SET_SYNC_POLICY,
            &SyncPolicyInput {
                instance: name.to_string(),
                primary: primary.to_string(),
                policy: sync_policy(true, &topology.ha, &candidates),
            },
        )
        .await?;
    }
    route_endpoints(
        ctx,
        name,
        EndpointRoutes {
            rw: Some(primary.to_string()),
            ro: standbys.to_vec(),
            ..Default::default()
        },
    )
    .await?;
    let members = std::iter::once(MemberRole {
        member: primary.to_string(),
        role: Role::Primary,
    })
    .chain(standbys.iter().map(|s| MemberRole {
        member: s.clone(),
        role: Role::Standby,
    }))
    .collect();
    call::<_, ()>(
        ctx,
        act::RECORD_INSTANCE_RUNNING,
        &InstanceRunning {
            instance: name.to_string(),
            members,
        },
    )
    .await
}

/// Starts the primary with `bootstrap` and waits until it accepts writes; returns where its
/// Postgres is now (a Kubernetes pod started again has another IP than the recorded one).
async fn start_primary(
    ctx: &OrchestrationContext,
    name: &str,
    primary: &str,
    bootstrap: Bootstrap,
    timeout_secs: u64,
) -> Result<(MemberReady, PgAddress), String> {
    let handle: MemberHandle = call(
        ctx,
        act::CREATE_MEMBER,
        CreateMemberInput {
            instance: name.to_string(),
            member: primary.to_string(),
            bootstrap,
            placement: Placement::default(),
        },
    )
    .await?;
    let ready = call_once(
        ctx,
        act::WAIT_MEMBER_READY,
        WaitReadyInput {
            instance: name.to_string(),
            member: primary.to_string(),
            role: ExpectedRole::Primary,
            timeout_secs,
        },
    )
    .await?;
    Ok((ready, handle.address.pg))
}
