//! *Rejoin*: the actor's retry of a former primary's return as a standby of the current
//! primary, recorded as an operation of its own.

use duroxide::OrchestrationContext;
use serde::{Deserialize, Serialize};
use toygres_common::controller_api::Handover;
use toygres_common::domain::OperationKind;

use super::handover::{finish, read_topology, rejoin, started};
use crate::activities::members::Topology;

/// The input of *Rejoin*.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RejoinOperation {
    pub operation_id: String,
    pub instance: String,
    pub member: String,
}

/// Runs a rejoin of a former primary (the actor's retry after a failover could not finish it).
pub async fn rejoin_operation(
    ctx: OrchestrationContext,
    input: RejoinOperation,
) -> Result<String, String> {
    let operation = started(
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
    finish(&ctx, &operation, result).await
}
