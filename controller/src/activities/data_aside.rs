//! Activities of an in-place restore: a member's data directory set aside while it bootstraps
//! afresh from a backup, then dropped (the restore worked) or put back (it did not).

use std::sync::Arc;

use duroxide::ActivityContext;
use serde::{Deserialize, Serialize};

use super::deps::{describe, ActivityDeps};

/// A member whose data is set aside, and how the setting aside ends.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DataAsideInput {
    pub instance: String,
    pub member: String,
    /// For [`end_data_aside`]: put the old data back (else remove it).
    #[serde(default)]
    pub put_back: bool,
}

/// Stops the member and moves its data directory aside.
pub async fn set_data_aside(
    deps: Arc<ActivityDeps>,
    _ctx: ActivityContext,
    input: DataAsideInput,
) -> Result<(), String> {
    deps.platform
        .set_data_aside(&input.instance, &input.member)
        .await
        .map_err(describe)
}

/// Removes the data set aside, or (`put_back`) stops the member and puts it back.
pub async fn end_data_aside(
    deps: Arc<ActivityDeps>,
    _ctx: ActivityContext,
    input: DataAsideInput,
) -> Result<(), String> {
    deps.platform
        .end_data_aside(&input.instance, &input.member, input.put_back)
        .await
        .map_err(describe)
}
