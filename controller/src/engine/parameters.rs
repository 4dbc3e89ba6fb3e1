//! Taking a change of an instance's Postgres parameters (validated by the API against the
//! instance's catalog): recorded as the instance's desired parameters in the CMS, and queued as
//! a *Parameters* operation on its actor.

use std::collections::BTreeMap;

use anyhow::Context as _;
use toygres_common::controller_api::OperationAccepted;
use toygres_common::domain::{OperationKind, OperationStatus};
use toygres_common::parameters_api::{ApplyMode, PrimaryUpdate};

use super::{new_operation_id, Engine, EngineError};
use crate::orchestrations::instance_actor::ActorCommand;
use crate::orchestrations::names;
use crate::orchestrations::parameters::ParametersInput;
use crate::orchestrations::scheduled_parameters::scheduled_id;
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
    /// The operation this one runs only after, if it succeeded (the first of two rolls).
    pub after: Option<String>,
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
        let input = ParametersInput {
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
            undo_every_restart: true,
            after: change.after,
        };
        let scheduled = input.apply_at_ms.is_some();
        let command = ActorCommand::Parameters(input);
        if !scheduled {
            return self
                .queue_operation(
                    &instance,
                    &operation_id,
                    OperationKind::Parameters,
                    &command,
                )
                .await;
        }
        // Scheduled: it waits outside the actor's queue and enters it when due.
        self.record_queued_operation(name, &operation_id, OperationKind::Parameters, &command)
            .await?;
        let ActorCommand::Parameters(input) = &command else {
            return Err(EngineError::Invalid("not a parameters change".into()));
        };
        if let Err(e) = self.start_scheduled_wait(input).await {
            let why = format!("start the wait for its time: {e:#}");
            self.cms
                .finish_operation(&operation_id, OperationStatus::Failed, Some(&why))
                .await?;
            self.undo_queued_change(&operation_id).await?;
            return Err(EngineError::Failed(anyhow::anyhow!(why)));
        }
        Ok(OperationAccepted {
            operation_id,
            kind: OperationKind::Parameters.to_string(),
            instance: name.to_string(),
        })
    }

    /// Starts *ScheduledParameters* for a change with a time.
    async fn start_scheduled_wait(&self, input: &ParametersInput) -> anyhow::Result<()> {
        let encoded = serde_json::to_string(input).context("encode the scheduled change")?;
        self.client
            .start_orchestration(
                scheduled_id(&input.operation_id),
                names::SCHEDULED_PARAMETERS,
                encoded,
            )
            .await
            .context("start ScheduledParameters")
    }

    /// Starts the wait of a scheduled change the API recorded but whose wait never started
    /// (the controller stopped in between); a change without a time is on its actor's durable
    /// queue, and a wait that started is left alone.
    pub(super) async fn resume_scheduled_wait(
        &self,
        operation_id: &str,
        request: &serde_json::Value,
    ) -> anyhow::Result<()> {
        let Ok(ActorCommand::Parameters(input)) =
            serde_json::from_value::<ActorCommand>(request.clone())
        else {
            return Ok(());
        };
        if input.apply_at_ms.is_none() {
            return Ok(());
        }
        let status = self
            .client
            .get_orchestration_status(&scheduled_id(operation_id))
            .await
            .with_context(|| format!("read the wait of operation {operation_id}"))?;
        if !matches!(status, duroxide::OrchestrationStatus::NotFound) {
            return Ok(());
        }
        tracing::info!(
            operation = operation_id,
            instance = input.instance,
            "starting the wait of a scheduled change accepted before the controller stopped"
        );
        self.start_scheduled_wait(&input).await
    }

    /// Puts back the desired values an operation that never ran had recorded: each setting it
    /// changed that still holds its value (a later change of the same setting stays).
    pub(super) async fn undo_queued_change(&self, operation_id: &str) -> Result<(), EngineError> {
        let Some(request) = self.cms.operation_request(operation_id).await? else {
            return Ok(());
        };
        let Ok(ActorCommand::Parameters(input)) = serde_json::from_value::<ActorCommand>(request)
        else {
            return Ok(());
        };
        let desired = self.cms.desired_parameters(&input.instance).await?;
        let undo: BTreeMap<String, Option<String>> = input
            .previous
            .into_iter()
            .filter(|(name, _)| {
                input.parameters.get(name).map(Option::as_ref) == Some(desired.get(name))
            })
            .collect();
        if !undo.is_empty() {
            self.cms
                .set_desired_parameters(&input.instance, &undo)
                .await?;
        }
        Ok(())
    }
}
