//! The input of *Parameters* (also the actor's `parameters` command), kept apart so the runbook,
//! its undo and the orchestrations that queue a change share it without importing each other.

use std::collections::BTreeMap;

use duroxide::OrchestrationContext;
use serde::{Deserialize, Serialize};
use toygres_common::controller_api::HaSettings;
use toygres_common::domain::OperationKind;
use toygres_common::parameters_api::{ApplyMode, PrimaryUpdate};

use crate::orchestrations::operation::OperationRun;
use crate::parameters::plan::Change;

/// The steps of *Parameters*, as its progress counts them.
pub const STEPS: u32 = 4;

/// The input of *Parameters* (also the actor's `parameters` command).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ParametersInput {
    pub operation_id: String,
    pub instance: String,
    /// Names to values; `None` resets a setting.
    pub parameters: BTreeMap<String, Option<String>>,
    pub apply: ApplyMode,
    /// Each setting's category and numbers, read from the catalog when the request was taken.
    pub changes: Vec<Change>,
    /// The reload-class values every member must run when the operation ends.
    pub confirm: BTreeMap<String, String>,
    /// How the primary takes a restart-class change (older histories: a restart in place, what
    /// the controller did then).
    #[serde(default = "restart_in_place")]
    pub primary_update: PrimaryUpdate,
    /// The earliest time to start, in milliseconds since the epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub apply_at_ms: Option<u64>,
    /// What the instance's desired parameters held for each changed setting before the change
    /// (`None`: not set): what a change that does not start is rolled back to.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub previous: BTreeMap<String, Option<String>>,
    /// The instance's HA settings, which a switchover follows (the actor fills them in).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ha: Option<HaSettings>,
    /// Every restart carries the previous values, and a member that does not start with the
    /// change undoes it on the members restarted before (older histories: only the first
    /// restart proved the change).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub undo_every_restart: bool,
    /// The operation of the first part of a change split in two rolls: this part runs only if
    /// that one succeeded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after: Option<String>,
}

impl ParametersInput {
    /// Its operation, beginning now (by the replay-safe clock).
    pub(crate) async fn begin(&self, ctx: &OrchestrationContext) -> Result<OperationRun, String> {
        OperationRun::begin(
            ctx,
            &self.operation_id,
            OperationKind::Parameters,
            &self.instance,
        )
        .await
    }
}

fn restart_in_place() -> PrimaryUpdate {
    PrimaryUpdate::Restart
}
