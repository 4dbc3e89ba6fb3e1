//! The durable orchestrations: the runbooks that act across an instance's pods. Each one reads
//! like the steps a person would follow; all I/O happens in [`crate::activities`].
//!
//! Determinism rules (see `DUROXIDE.md`): no I/O, clocks, randomness, `tokio::select!` or sleeps
//! in here — only `ctx.schedule_*`, `ctx.utc_now()`, `ctx.join`/`select2`.

pub mod create_instance;
pub mod delete_instance;
pub mod ha;
pub mod instance_actor;
pub mod replicas;

use std::time::{Duration, UNIX_EPOCH};

use duroxide::{
    BackoffStrategy, DurableFuture, OrchestrationContext, OrchestrationRegistry, RetryPolicy,
};
use serde::de::DeserializeOwned;
use serde::Serialize;
use toygres_common::controller_api::Progress;

/// The registered names of the orchestrations.
pub mod names {
    pub const CREATE_INSTANCE: &str = "CreateInstance";
    pub const DELETE_INSTANCE: &str = "DeleteInstance";
    pub const INSTANCE_ACTOR: &str = "InstanceActor";
    pub const ADD_REPLICA: &str = "AddReplica";
    pub const REMOVE_REPLICA: &str = "RemoveReplica";
    pub const SWITCHOVER: &str = "Switchover";
    pub const FAILOVER: &str = "Failover";
    pub const REJOIN: &str = "Rejoin";
}

/// Registers every orchestration.
pub fn registry() -> Result<OrchestrationRegistry, String> {
    OrchestrationRegistry::builder()
        .register_typed(names::CREATE_INSTANCE, create_instance::create_instance)
        .register_typed(names::DELETE_INSTANCE, delete_instance::delete_instance)
        .register_typed(names::INSTANCE_ACTOR, instance_actor::instance_actor)
        .register_typed(names::ADD_REPLICA, replicas::add_replica)
        .register_typed(names::REMOVE_REPLICA, replicas::remove_replica)
        .register_typed(names::SWITCHOVER, ha::switchover)
        .register_typed(names::FAILOVER, ha::failover)
        .register_typed(names::REJOIN, ha::rejoin_operation)
        .build_result()
}

/// The orchestration id of an operation: the operation id itself.
pub fn operation_instance_id(operation_id: &str) -> String {
    operation_id.to_string()
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
    let progress = Progress {
        step,
        steps,
        message,
        ..Progress::default()
    };
    if let Ok(json) = serde_json::to_string(&progress) {
        ctx.set_custom_status(json);
    }
}

/// Runs an activity that can fail for passing reasons (a busy CMS, a sidecar restarting),
/// retrying a few times with backoff.
pub(crate) async fn call<In: Serialize, Out: DeserializeOwned>(
    ctx: &OrchestrationContext,
    name: &str,
    input: In,
) -> Result<Out, String> {
    let policy = RetryPolicy::new(4).with_backoff(BackoffStrategy::Exponential {
        base: Duration::from_millis(200),
        multiplier: 3.0,
        max: Duration::from_secs(5),
    });
    ctx.schedule_activity_with_retry_typed(name, &input, policy)
        .await
        .map_err(|e| format!("{name}: {e}"))
}

/// Runs an activity once (the waits, which carry their own deadline).
///
/// Not `schedule_activity_typed`: in duroxide 0.1.32 its `DurableFuture::map` `mem::forget`s
/// the future, leaking a handle on the orchestration context (and with it the whole history)
/// at every call — the actor's probes leaked megabytes a minute. The string variant and a
/// decode after the await are the same on the wire.
pub(crate) async fn call_once<In: Serialize, Out: DeserializeOwned + Send + 'static>(
    ctx: &OrchestrationContext,
    name: &str,
    input: In,
) -> Result<Out, String> {
    let payload = encode(&input).map_err(|e| format!("{name}: {e}"))?;
    let output = ctx
        .schedule_activity(name, payload)
        .await
        .map_err(|e| format!("{name}: {e}"))?;
    decode(&output).map_err(|e| format!("{name}: {e}"))
}

/// Starts a child orchestration with its own id (see [`call_once`] for why not the typed
/// variant); its output is the child's raw result.
pub(crate) fn sub_orchestration<In: Serialize>(
    ctx: &OrchestrationContext,
    name: &str,
    id: &str,
    input: &In,
) -> DurableFuture<Result<String, String>> {
    // A value that cannot be encoded reaches the child as JSON null, which it refuses.
    let payload = encode(input).unwrap_or_else(|_| "null".into());
    ctx.schedule_sub_orchestration_with_id(name, id, payload)
}

/// duroxide's JSON codec: a JSON string travels as its raw content.
fn encode<T: Serialize>(value: &T) -> Result<String, String> {
    match serde_json::to_value(value) {
        Ok(serde_json::Value::String(s)) => Ok(s),
        Ok(other) => serde_json::to_string(&other).map_err(|e| e.to_string()),
        Err(e) => Err(e.to_string()),
    }
}

/// The inverse of [`encode`]: JSON first, else the raw text as a JSON string.
fn decode<T: DeserializeOwned>(text: &str) -> Result<T, String> {
    serde_json::from_str(text).or_else(|_| {
        serde_json::from_value(serde_json::Value::String(text.to_string()))
            .map_err(|e| e.to_string())
    })
}

/// Milliseconds since the epoch, from the replay-safe clock.
pub(crate) async fn now_ms(ctx: &OrchestrationContext) -> Result<u64, String> {
    let now = ctx.utc_now().await?;
    Ok(now
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0))
}

/// The name of member `n` of `instance`.
pub fn member_name(instance: &str, n: u32) -> String {
    format!("{instance}-{n}")
}

#[cfg(test)]
mod tests;
