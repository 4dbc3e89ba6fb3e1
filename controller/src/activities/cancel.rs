//! Whether an operator cancelled an operation: read by the actor before it starts a queued
//! operation, and by long operations at their safe points; and where another operation is
//! (the second part of a parameter change runs only after the first succeeded).

use std::sync::Arc;

use duroxide::ActivityContext;
use serde::{Deserialize, Serialize};

use super::deps::describe;
use super::ActivityDeps;

/// One operation, by id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OperationRef {
    pub operation_id: String,
}

/// True when the operation was cancelled while queued, or asked to stop while running.
pub async fn operation_cancelled(
    deps: Arc<ActivityDeps>,
    _ctx: ActivityContext,
    input: OperationRef,
) -> Result<bool, String> {
    deps.cms
        .operation_cancelled(&input.operation_id)
        .await
        .map_err(describe)
}

/// The operation's status (`pending`, `running`, `succeeded`, …); `None` when there is no such
/// operation.
pub async fn operation_status(
    deps: Arc<ActivityDeps>,
    _ctx: ActivityContext,
    input: OperationRef,
) -> Result<Option<String>, String> {
    Ok(deps
        .cms
        .get_operation(&input.operation_id)
        .await
        .map_err(describe)?
        .map(|operation| operation.status))
}
