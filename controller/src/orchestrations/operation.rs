//! The record of an operation, kept the same way by every runbook: started (with the
//! instance's new state), its progress as the orchestration's custom status, finished with its
//! duration (the activity behind it counts the metrics and logs the event). Also the one
//! minter of operation ids, and the steps every runbook records the same way: an event, a
//! member's state, the endpoints' routes.

use duroxide::OrchestrationContext;
use toygres_common::controller_api::Progress;
use toygres_common::domain::{HaEventKind, InstanceState, MemberState, OperationKind};

use super::durable::{call, now_ms};
use crate::activities::cancel::OperationRef;
use crate::activities::members::RouteInput;
use crate::activities::names as act;
use crate::activities::records::{
    EventRecord, MemberStateInput, OperationFinished, OperationStarted,
};
use crate::platform::EndpointRoutes;

/// An operation id from 16 or more hex digits (dashes are skipped): `op-` and the first 16.
pub fn operation_id_from(hex: &str) -> String {
    format!(
        "op-{}",
        hex.chars()
            .filter(|c| *c != '-')
            .take(16)
            .collect::<String>()
    )
}

/// A new operation id, from the replay-safe GUID.
pub(crate) async fn new_operation_id(ctx: &OrchestrationContext) -> Result<String, String> {
    Ok(operation_id_from(&ctx.new_guid().await?))
}

/// Publishes the operation's progress (its custom status).
pub(crate) fn report(
    ctx: &OrchestrationContext,
    step: u32,
    steps: u32,
    message: impl Into<String>,
) {
    let message = message.into();
    ctx.trace_info(format!("step {step}/{steps}: {message}"));
    publish(
        ctx,
        &Progress {
            step,
            steps,
            message,
            ..Progress::default()
        },
    );
}

/// Publishes the last progress of an operation that ended with `result`: all steps done and
/// what `done` says, or step 0 and the error.
fn report_outcome<T>(
    ctx: &OrchestrationContext,
    result: &Result<T, String>,
    steps: u32,
    done: impl FnOnce(&T) -> String,
) {
    match result {
        Ok(value) => report(ctx, steps, steps, done(value)),
        Err(e) => report(ctx, 0, steps, format!("failed: {e}")),
    }
}

/// Publishes a progress as the orchestration's custom status.
pub(crate) fn publish(ctx: &OrchestrationContext, progress: &Progress) {
    if let Ok(json) = serde_json::to_string(progress) {
        ctx.set_custom_status(json);
    }
}

/// One operation as its orchestration carries it out: what it is and when it began.
#[derive(Debug, Clone)]
pub(crate) struct OperationRun {
    pub operation_id: String,
    pub kind: OperationKind,
    pub instance: String,
    started_ms: u64,
}

impl OperationRun {
    /// The operation begins now (by the replay-safe clock).
    pub async fn begin(
        ctx: &OrchestrationContext,
        operation_id: &str,
        kind: OperationKind,
        instance: &str,
    ) -> Result<Self, String> {
        Ok(Self {
            operation_id: operation_id.to_string(),
            kind,
            instance: instance.to_string(),
            started_ms: now_ms(ctx).await?,
        })
    }

    /// Records it running (and the instance in `instance_state`, if given), with an event.
    pub async fn record_started(
        &self,
        ctx: &OrchestrationContext,
        instance_state: Option<InstanceState>,
    ) -> Result<(), String> {
        call::<_, ()>(
            ctx,
            act::RECORD_OPERATION_STARTED,
            &OperationStarted {
                operation_id: self.operation_id.clone(),
                kind: self.kind,
                instance: self.instance.clone(),
                instance_state,
            },
        )
        .await
    }

    /// How long it has run, in milliseconds (by the replay-safe clock).
    pub async fn elapsed_ms(&self, ctx: &OrchestrationContext) -> Result<u64, String> {
        Ok(now_ms(ctx).await?.saturating_sub(self.started_ms))
    }

    /// Records how it ended after `duration_ms` (`error`: none when it succeeded), and the
    /// instance's new state, if any; the activity counts it and logs the event.
    pub async fn record_finished(
        &self,
        ctx: &OrchestrationContext,
        error: Option<String>,
        instance_state: Option<InstanceState>,
        duration_ms: u64,
    ) -> Result<(), String> {
        call::<_, ()>(
            ctx,
            act::RECORD_OPERATION_FINISHED,
            &OperationFinished {
                operation_id: self.operation_id.clone(),
                kind: self.kind,
                instance: self.instance.clone(),
                error,
                instance_state,
                duration_ms,
            },
        )
        .await
    }

    /// Ends it with `result`: its duration, then its last progress (all `steps` done and what
    /// `done` says, or step 0 and the error), then the record.
    pub async fn finish_reporting<T>(
        &self,
        ctx: &OrchestrationContext,
        result: &Result<T, String>,
        instance_state: Option<InstanceState>,
        steps: u32,
        done: impl FnOnce(&T) -> String,
    ) -> Result<(), String> {
        self.finish(ctx, result.as_ref().err().cloned(), instance_state, || {
            report_outcome(ctx, result, steps, done)
        })
        .await
    }

    /// Ends it: reads its duration, publishes its last progress (`last`, so nobody reads a
    /// finished operation with an older progress), then records the end.
    pub async fn finish(
        &self,
        ctx: &OrchestrationContext,
        error: Option<String>,
        instance_state: Option<InstanceState>,
        last: impl FnOnce(),
    ) -> Result<(), String> {
        let duration_ms = self.elapsed_ms(ctx).await?;
        last();
        self.record_finished(ctx, error, instance_state, duration_ms)
            .await
    }
}

/// A safe point: whether an operator cancelled `operation_id` (queued) or asked it to stop
/// (running). A CMS that cannot answer counts as "not cancelled": the operation goes on.
pub(crate) async fn cancel_requested(ctx: &OrchestrationContext, operation_id: &str) -> bool {
    let asked = call::<_, bool>(
        ctx,
        act::OPERATION_CANCELLED,
        &OperationRef {
            operation_id: operation_id.to_string(),
        },
    )
    .await;
    match asked {
        Ok(cancelled) => cancelled,
        Err(e) => {
            ctx.trace_warn(format!("read whether {operation_id} is cancelled: {e}"));
            false
        }
    }
}

/// Logs an event about `member` (or the instance) in the instance's log.
pub(crate) async fn record_event(
    ctx: &OrchestrationContext,
    instance: &str,
    member: Option<&str>,
    kind: HaEventKind,
    message: String,
) -> Result<(), String> {
    call::<_, ()>(
        ctx,
        act::RECORD_EVENT,
        &EventRecord {
            instance: instance.to_string(),
            member: member.map(String::from),
            operation_id: None,
            kind,
            message,
        },
    )
    .await
}

/// Records `member`'s new state.
pub(crate) async fn set_member_state(
    ctx: &OrchestrationContext,
    instance: &str,
    member: &str,
    state: MemberState,
) -> Result<(), String> {
    call::<_, ()>(
        ctx,
        act::SET_MEMBER_STATE,
        &MemberStateInput {
            instance: instance.to_string(),
            member: member.to_string(),
            state,
        },
    )
    .await
}

/// Leads the instance's endpoints as `routes` says.
pub(crate) async fn route_endpoints(
    ctx: &OrchestrationContext,
    instance: &str,
    routes: EndpointRoutes,
) -> Result<(), String> {
    call::<_, ()>(
        ctx,
        act::ROUTE_ENDPOINTS,
        &RouteInput {
            instance: instance.to_string(),
            routes,
        },
    )
    .await
}
