//! How a runbook talks to duroxide: activities with and without retries, children with their
//! own ids, the replay-safe clock, and the JSON codec duroxide uses on the wire. Nothing here
//! knows what a runbook does.

use std::time::{Duration, UNIX_EPOCH};

use duroxide::{BackoffStrategy, DurableFuture, OrchestrationContext, RetryPolicy};
use serde::de::DeserializeOwned;
use serde::Serialize;

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

/// The first error of a fan-out, once every branch has ended.
pub(crate) fn first_error<T>(results: Vec<Result<T, String>>) -> Result<Vec<T>, String> {
    results.into_iter().collect()
}
