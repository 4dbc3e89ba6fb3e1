//! *ScheduledParameters*: holds a parameter change with an `apply_at` time until that time,
//! outside its instance's actor, so the actor's queue keeps serving switchovers, backups and
//! other changes meanwhile. It waits on durable timers (a controller restart loses nothing; a
//! time that passed while the controller was down fires once it is back), checks for the
//! operator's cancel, then queues the change on the actor like any other operation. The
//! operation stays `pending` until the actor runs it; its progress meanwhile is this
//! orchestration's (see [`scheduled_id`]).

use std::time::Duration;

use duroxide::OrchestrationContext;

use super::durable::{call, now_ms};
use super::instance_actor::ActorCommand;
use super::operation::{cancel_requested, report};
use super::parameters::{record_desired, ParametersInput};
use crate::activities::names as act;
use crate::activities::parameters::DueParametersInput;

/// How often a change waiting for its time checks whether the operator cancelled it: often
/// near its time, less often before (each check grows the orchestration's history).
const WAIT_CHECK_NEAR: Duration = Duration::from_secs(5);
const WAIT_CHECK_FAR: Duration = Duration::from_secs(30);
const NEAR: Duration = Duration::from_secs(600);
/// Checks per execution before the wait continues as new (bounds the history of a long wait).
const CHECKS_PER_EXECUTION: u32 = 200;
const STEPS: u32 = 2;

/// The orchestration id of the wait of operation `operation_id` (the operation's own id is
/// the *Parameters* run the actor starts when it is due).
pub fn scheduled_id(operation_id: &str) -> String {
    format!("{operation_id}-at")
}

/// How a wait for a time ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Waited {
    /// The time has come.
    Due,
    /// The operator cancelled the operation.
    Cancelled,
    /// `max_checks` checks done: the caller continues as new and waits again.
    Longer,
}

/// Waits on durable timers until `at_ms`, checking for a cancel of `operation_id` at each
/// wake-up and publishing how long is left (step 1 of `steps`).
pub(super) async fn wait_for_time(
    ctx: &OrchestrationContext,
    operation_id: &str,
    at_ms: u64,
    steps: u32,
    max_checks: u32,
) -> Result<Waited, String> {
    let mut checks = 0;
    loop {
        let now = now_ms(ctx).await?;
        if now >= at_ms {
            return Ok(Waited::Due);
        }
        report(
            ctx,
            1,
            steps,
            format!(
                "scheduled: waiting {} s to apply",
                (at_ms - now).div_ceil(1000)
            ),
        );
        if cancel_requested(ctx, operation_id).await {
            return Ok(Waited::Cancelled);
        }
        if checks >= max_checks {
            return Ok(Waited::Longer);
        }
        checks += 1;
        let left = Duration::from_millis(at_ms - now);
        let check = if left > NEAR {
            WAIT_CHECK_FAR
        } else {
            WAIT_CHECK_NEAR
        };
        ctx.schedule_timer(check.min(left)).await;
    }
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
