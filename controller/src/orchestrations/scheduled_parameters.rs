//! *ScheduledParameters*: holds a parameter change with an `apply_at` time until that time,
//! outside its instance's actor, so the actor's queue keeps serving switchovers, backups and
//! other changes meanwhile. It waits on durable timers (a controller restart loses nothing; a
//! time that passed while the controller was down fires once it is back), checks for the
//! operator's cancel, then queues the change on the actor like any other operation. The
//! operation stays `pending` until the actor runs it; its progress meanwhile is this
//! orchestration's (see [`scheduled_id`]).

use duroxide::OrchestrationContext;

use super::durable::call;
use super::instance_actor::ActorCommand;
use super::operation::report;
use super::parameters::{record_desired, ParametersInput};
use super::wait_time::{wait_for_time, Waited};
use crate::activities::names as act;
use crate::activities::parameters::DueParametersInput;

/// Checks per execution before the wait continues as new (bounds the history of a long wait).
const CHECKS_PER_EXECUTION: u32 = 200;
const STEPS: u32 = 2;

/// The orchestration id of the wait of operation `operation_id` (the operation's own id is
/// the *Parameters* run the actor starts when it is due).
pub fn scheduled_id(operation_id: &str) -> String {
    format!("{operation_id}-at")
}

/// Waits for the change's time, then queues it on its instance's actor.
pub async fn scheduled_parameters(
    ctx: OrchestrationContext,
    input: ParametersInput,
) -> Result<String, String> {
    let at_ms = input
        .apply_at_ms
        .ok_or_else(|| format!("operation {} has no time", input.operation_id))?;
    match wait_for_time(
        &ctx,
        &input.operation_id,
        at_ms,
        STEPS,
        CHECKS_PER_EXECUTION,
    )
    .await?
    {
        Waited::Longer => {
            return ctx
                .continue_as_new_typed(&input)
                .await
                .map(|_| String::new())
        }
        // The cancel ended the operation and put the desired values back already.
        Waited::Cancelled => {
            report(&ctx, 0, STEPS, "cancelled by the operator before its time");
            return Ok("cancelled".into());
        }
        Waited::Due => {}
    }
    report(
        &ctx,
        2,
        STEPS,
        "due: queued on the instance's actor, which starts it after the operations before it",
    );
    let command = serde_json::to_value(ActorCommand::Parameters(input.clone()))
        .map_err(|e| format!("encode the change: {e}"));
    let queued = match command {
        Ok(command) => {
            call::<_, bool>(
                &ctx,
                act::QUEUE_DUE_PARAMETERS,
                &DueParametersInput {
                    instance: input.instance.clone(),
                    operation_id: input.operation_id.clone(),
                    command,
                },
            )
            .await
        }
        Err(e) => Err(e),
    };
    match queued {
        Ok(true) => Ok("queued".into()),
        Ok(false) => Ok("no longer pending: not queued".into()),
        Err(e) => {
            // The change never ran: the desired values go back, and the operation fails.
            record_desired(&ctx, &input.instance, &input.previous).await?;
            let operation = input.begin(&ctx).await?;
            let failed: Result<String, String> = Err(format!("queue the due change: {e}"));
            operation
                .finish_reporting(&ctx, &failed, None, STEPS, |done: &String| done.clone())
                .await?;
            failed
        }
    }
}
