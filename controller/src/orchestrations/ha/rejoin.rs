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
    let mut handover = Handover::default();
    let result = match read_topology(&ctx, &input.instance).await {
        Ok(Topology {
            primary: Some(primary),
            ..
        }) if primary != input.member => {
            handover.old_primary = Some(input.member.clone());
            handover.new_primary = Some(primary.clone());
            if rejoin(&ctx, &input.instance, &input.member, &primary).await {
                Ok(())
            } else {
                Err(format!("{} could not rejoin yet", input.member))
            }
        }
        Ok(_) => Err(format!(
            "instance {} has no other primary to follow",
            input.instance
        )),
        Err(e) => Err(e),
    };
    finish(&ctx, &operation, result, handover).await
}
