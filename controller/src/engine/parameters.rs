//! Taking a change of an instance's Postgres parameters (validated by the API against the
//! instance's catalog): recorded as the instance's desired parameters in the CMS, and queued as
//! a *Parameters* operation on its actor.

use std::collections::BTreeMap;

use toygres_common::controller_api::OperationAccepted;
use toygres_common::domain::OperationKind;
use toygres_common::parameters_api::{ApplyMode, PrimaryUpdate};

use super::{new_operation_id, Engine, EngineError};
use crate::orchestrations::instance_actor::ActorCommand;
use crate::orchestrations::parameters::ParametersInput;
use crate::parameters::plan::Change;

/// A validated change, as the API hands it over.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParameterChange {
    pub parameters: BTreeMap<String, Option<String>>,
    pub apply: ApplyMode,
    pub changes: Vec<Change>,
    pub confirm: BTreeMap<String, String>,
    pub primary_update: PrimaryUpdate,
    /// The earliest start, in milliseconds since the epoch.
    pub apply_at_ms: Option<u64>,
}

impl Engine {
    /// Records the change as desired and queues its operation on the instance's actor.
    pub async fn change_parameters(
        &self,
        name: &str,
        change: ParameterChange,
    ) -> Result<OperationAccepted, EngineError> {
        let instance = self.running_instance(name).await?;
        let before = self.cms.desired_parameters(name).await?;
        let previous = change
            .parameters
            .keys()
            .map(|k| (k.clone(), before.get(k).cloned()))
            .collect();
        self.cms
            .set_desired_parameters(name, &change.parameters)
            .await?;
        let operation_id = new_operation_id();
        let command = ActorCommand::Parameters(ParametersInput {
            operation_id: operation_id.clone(),
            instance: name.to_string(),
            parameters: change.parameters,
            apply: change.apply,
            changes: change.changes,
            confirm: change.confirm,
            primary_update: change.primary_update,
            apply_at_ms: change.apply_at_ms,
            previous,
            ha: None,
        });
        self.queue_operation(
            &instance,
            &operation_id,
            OperationKind::Parameters,
            &command,
        )
        .await
    }
}
