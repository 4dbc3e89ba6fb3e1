//! Activities of the *Parameters* operation: write a change on one member (its sidecar checks it
//! against the allow-list and the member's own catalog, and reloads), confirm from the member's
//! `pg_settings` that the reload-class values run, and restart one member.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use duroxide::ActivityContext;
use serde::{Deserialize, Serialize};
use toygres_common::parameters_api::same_value;
use toygres_common::sidecar_api::SetParametersRequest;

use super::deps::ActivityDeps;
use super::sidecar::sidecar;

/// How long a sidecar may take to restart its Postgres.
const RESTART_TIMEOUT: Duration = Duration::from_secs(180);

/// Write `parameters` on `member` (values, or `None` to reset).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WriteParametersInput {
    pub instance: String,
    pub member: String,
    pub parameters: BTreeMap<String, Option<String>>,
}

/// Writes and reloads; returns the settings that wait for a restart of the member.
pub async fn write_parameters(
    deps: Arc<ActivityDeps>,
    _ctx: ActivityContext,
    input: WriteParametersInput,
) -> Result<Vec<String>, String> {
    let client = sidecar(
        &deps,
        &input.instance,
        &input.member,
        Duration::from_secs(30),
    )
    .await?;
    let answer = client
        .set_parameters(&SetParametersRequest {
            parameters: input.parameters,
        })
        .await
        .map_err(|e| format!("set the parameters on {}: {e}", input.member))?;
    Ok(answer.pending_restart)
}

/// Wait until `member` runs every value of `expected`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfirmParametersInput {
    pub instance: String,
    pub member: String,
    pub expected: BTreeMap<String, String>,
    pub timeout_secs: u64,
}

/// Polls the member's catalog (its `pg_settings`) until it runs the expected values; fails at
/// the deadline naming the ones it does not.
pub async fn confirm_parameters(
    deps: Arc<ActivityDeps>,
    ctx: ActivityContext,
    input: ConfirmParametersInput,
) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(input.timeout_secs);
    let client = sidecar(
        &deps,
        &input.instance,
        &input.member,
        Duration::from_secs(10),
    )
    .await?;
    loop {
        let last = match client.parameter_catalog().await {
            Ok(catalog) => {
                let differing: Vec<String> = input
                    .expected
                    .iter()
                    .filter(|(name, wanted)| {
                        !catalog.get(name).is_some_and(|e| {
                            same_value(&e.vartype, e.unit.as_deref(), &e.current, wanted)
                        })
                    })
                    .map(|(name, wanted)| format!("{name} (want {wanted})"))
                    .collect();
                if differing.is_empty() {
                    return Ok(());
                }
                format!("{} does not run {}", input.member, differing.join(", "))
            }
            Err(e) => format!("read the catalog of {}: {e}", input.member),
        };
        if Instant::now() >= deadline || ctx.is_cancelled() {
            return Err(last);
        }
        tokio::time::sleep(deps.poll_interval).await;
    }
}

/// Restart one member's Postgres.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RestartMemberInput {
    pub instance: String,
    pub member: String,
}

/// Restarts the member's Postgres through its sidecar (returns once it runs again).
pub async fn restart_member(
    deps: Arc<ActivityDeps>,
    _ctx: ActivityContext,
    input: RestartMemberInput,
) -> Result<(), String> {
    let client = sidecar(&deps, &input.instance, &input.member, RESTART_TIMEOUT).await?;
    client
        .restart()
        .await
        .map_err(|e| format!("restart {}: {e}", input.member))?;
    Ok(())
}
