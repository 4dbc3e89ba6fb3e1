//! Waiting on durable timers for a wall-clock time, checking for the operator's cancel at each
//! wake-up: what a scheduled change does before it is queued (*ScheduledParameters*) and what a
//! change queued by an older controller still does inside *ApplyParameters*.

use std::time::Duration;

use duroxide::OrchestrationContext;

use super::durable::now_ms;
use super::operation::{cancel_requested, report};

/// How often a change waiting for its time checks whether the operator cancelled it: often
/// near its time, less often before (each check grows the orchestration's history).
const WAIT_CHECK_NEAR: Duration = Duration::from_secs(5);
const WAIT_CHECK_FAR: Duration = Duration::from_secs(30);
const NEAR: Duration = Duration::from_secs(600);

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
