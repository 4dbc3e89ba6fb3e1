//! *RestoreInPlace*: an instance's data replaced by a restore of one of its own backups, as a
//! child of its actor (so never beside a switchover or a backup). The standbys are removed, the
//! primary's data directory is set aside and the primary bootstraps afresh from the backup
//! (recovering to the target and promoting on a new timeline, archiving under the instance's
//! own prefix). Once it accepts writes the old data is removed and the standbys are cloned
//! from it again; if it never does, the old data is put back and the instance is as it was.

use duroxide::OrchestrationContext;
use serde::{Deserialize, Serialize};
use toygres_common::domain::{InstanceState, OperationKind};

use super::create_instance::RESTORE_READY_TIMEOUT_SECS;
use super::durable::{call, call_once, first_error};
use super::members::MEMBER_READY_TIMEOUT_SECS;
use super::operation::{report, route_endpoints, OperationRun};
use crate::activities::data_aside::DataAsideInput;
use crate::activities::members::{CreateMemberInput, DeleteMemberInput, InstanceRef, Topology};
use crate::activities::names as act;
use crate::activities::sidecar::{ExpectedRole, MemberReady, WaitReadyInput};
use crate::platform::{Bootstrap, EndpointRoutes, MemberHandle, Placement, RestoreSource};

/// The input of *RestoreInPlace* (also the actor's `restore-in-place` command).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RestoreInPlaceInput {
    pub operation_id: String,
    pub instance: String,
    /// The instance's own backup and the recovery target.
    pub restore: RestoreSource,
}

const STEPS: u32 = 5;

/// Restores the instance in place; returns a summary.
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
    let result = restore(&ctx, &input).await;
    // Restored or put back, the instance runs again.
    operation
        .finish_reporting(
            &ctx,
            &result,
            Some(InstanceState::Running),
            STEPS,
            |s: &String| s.clone(),
        )
        .await?;
    result
}

async fn restore(ctx: &OrchestrationContext, input: &RestoreInPlaceInput) -> Result<String, String> {
    let name = &input.instance;
    let topology: Topology = call(
        ctx,
        act::READ_TOPOLOGY,
        &InstanceRef {
            instance: name.clone(),
        },
    )
    .await?;
    let primary = topology
        .primary
        .clone()
        .ok_or_else(|| format!("instance {name} has no primary to restore"))?;
    let standbys = topology.standbys.clone();

    report(ctx, 1, STEPS, "removing the standbys (they are cloned again)");
    for standby in &standbys {
        call::<_, ()>(
            ctx,
            act::DELETE_MEMBER,
            &DeleteMemberInput {
                instance: name.clone(),
                member: standby.clone(),
                keep_data: false,
            },
        )
        .await?;
    }

    report(ctx, 2, STEPS, format!("setting {primary}'s data aside"));
    let aside = |put_back| DataAsideInput {
        instance: name.clone(),
        member: primary.clone(),
        put_back,
    };
    call::<_, ()>(ctx, act::SET_DATA_ASIDE, &aside(false)).await?;

    report(
        ctx,
        3,
        STEPS,
        format!(
            "restoring {primary} from backup {} (download, unpack, replay)",
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
    let (handle, outcome) = match restored {
        Ok(handle) => {
            call::<_, ()>(ctx, act::END_DATA_ASIDE, &aside(false)).await?;
            (handle, Ok(()))
        }
        Err(e) => {
            ctx.trace_warn(format!(
                "the restore of {primary} failed: {e}; putting its data back"
            ));
            call::<_, ()>(ctx, act::END_DATA_ASIDE, &aside(true)).await?;
            // The old data directory is there again: the bootstrap does not matter.
            let handle = start_primary(ctx, name, &primary, Bootstrap::Init, MEMBER_READY_TIMEOUT_SECS)
                .await
                .map_err(|again| format!("{e}; and the old data did not start again: {again}"))?;
            (handle, Err(e))
        }
    };

    // Either way the standbys are cloned from the data the primary now has.
    report(ctx, 4, STEPS, "cloning the standbys from the primary");
    let created = ctx
        .join(
            standbys
                .iter()
                .map(|standby| {
                    call::<_, MemberHandle>(
                        ctx,
                        act::CREATE_MEMBER,
                        CreateMemberInput {
                            instance: name.clone(),
                            member: standby.clone(),
                            bootstrap: Bootstrap::Standby {
                                primary: handle.address.pg.clone(),
                            },
                            placement: Placement::default(),
                        },
                    )
                })
                .collect(),
        )
        .await;
    first_error(created)?;
    let streaming = ctx
        .join(
            standbys
                .iter()
                .map(|standby| {
                    call_once::<_, MemberReady>(
                        ctx,
                        act::WAIT_MEMBER_READY,
                        WaitReadyInput {
                            instance: name.clone(),
                            member: standby.clone(),
                            role: ExpectedRole::Standby,
                            timeout_secs: MEMBER_READY_TIMEOUT_SECS,
                        },
                    )
                })
                .collect(),
        )
        .await;
    first_error(streaming)?;

    report(ctx, 5, STEPS, "routing the endpoints");
    route_endpoints(
        ctx,
        name,
        EndpointRoutes {
            rw: Some(primary.clone()),
            ro: standbys.clone(),
            ..Default::default()
        },
    )
    .await?;
    outcome.map(|_| {
        format!(
            "done: {name} restored in place from backup {}",
            input.restore.backup_id
        )
    })
}

/// Starts the primary with `bootstrap` and waits until it accepts writes.
async fn start_primary(
    ctx: &OrchestrationContext,
    name: &str,
    primary: &str,
    bootstrap: Bootstrap,
    timeout_secs: u64,
) -> Result<MemberHandle, String> {
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
    let _: MemberReady = call_once(
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
    Ok(handle)
}
