//! *DeleteInstance*: stop the instance's actor, remove its members (keeping their data only when
//! asked), its endpoints and its credentials, and mark it deleted.

use duroxide::OrchestrationContext;
use serde::{Deserialize, Serialize};
use toygres_common::domain::{InstanceState, OperationKind};

use super::durable::{call, first_error};
use super::members::delete_members;
use super::operation::{report, OperationRun};
use crate::activities::members::InstanceRef;
use crate::activities::names as act;
use crate::activities::records::ActorRef;

/// The input of *DeleteInstance*.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeleteInstanceInput {
    pub operation_id: String,
    pub instance: String,
    /// The actor to stop, as the CMS recorded it.
    pub actor_id: Option<String>,
    pub keep_data: bool,
}

const STEPS: u32 = 4;

/// Runs the delete runbook; records the outcome on the operation and the instance.
pub async fn delete_instance(
    ctx: OrchestrationContext,
    input: DeleteInstanceInput,
) -> Result<(), String> {
    let operation = OperationRun::begin(
        &ctx,
        &input.operation_id,
        OperationKind::Delete,
        &input.instance,
    )
    .await?;
    let result = remove(&ctx, &input, &operation).await;
    let state = match &result {
        Ok(()) => InstanceState::Deleted,
        Err(_) => InstanceState::Failed,
    };
    operation
        .finish_reporting(&ctx, &result, Some(state), STEPS, |()| {
            "the instance is deleted".into()
        })
        .await?;
    result
}

async fn remove(
    ctx: &OrchestrationContext,
    input: &DeleteInstanceInput,
    operation: &OperationRun,
) -> Result<(), String> {
    let instance = InstanceRef {
        instance: input.instance.clone(),
    };
    report(ctx, 1, STEPS, "stopping the instance actor");
    operation
        .record_started(ctx, Some(InstanceState::Deleting))
        .await?;
    if let Some(actor_id) = &input.actor_id {
        call::<_, ()>(
            ctx,
            act::STOP_ACTOR,
            &ActorRef {
                instance: input.instance.clone(),
                actor_id: actor_id.clone(),
            },
        )
        .await?;
    }

    report(ctx, 2, STEPS, "removing the members");
    let members: Vec<String> = call(ctx, act::LIST_MEMBERS, &instance).await?;
    let deleted = delete_members(ctx, &input.instance, &members, input.keep_data).await;
    first_error(deleted)?;

    report(ctx, 3, STEPS, "removing the endpoints and credentials");
    call::<_, ()>(ctx, act::DELETE_ENDPOINTS, &instance).await?;
    call::<_, ()>(ctx, act::DELETE_SECRETS, &instance).await?;
    Ok(())
}
