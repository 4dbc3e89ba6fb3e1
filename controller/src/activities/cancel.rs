//! Whether an operator cancelled an operation: read by the actor before it starts a queued
//! operation, and by long operations at their safe points.

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
