//! *RotateCredentials*: a new password for one of an instance's roles, as a child of its actor
//! (so never beside a switchover, whose new primary would not have it yet). The runbook: record
//! the operation, have the platform make and keep the new password and set it on the primary
//! (one activity: the value never leaves it), record the end. The operation's events
//! (`credentials-rotate-started`, `-succeeded`) are the instance's record of the rotation.

use duroxide::OrchestrationContext;
use serde::{Deserialize, Serialize};
use toygres_common::credentials_api::CredentialRole;
use toygres_common::domain::OperationKind;

use super::durable::call;
use super::operation::{report, OperationRun};
use crate::activities::credentials::{RotatePasswordInput, RotatedPassword};
use crate::activities::names as act;

/// The input of *RotateCredentials* (also the actor's `rotate-credentials` command).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RotateCredentialsInput {
    pub operation_id: String,
    pub instance: String,
    #[serde(default)]
    pub role: CredentialRole,
}

const STEPS: u32 = 2;

/// Rotates the password; returns one line saying whose changed where.
pub async fn rotate_credentials(
    ctx: OrchestrationContext,
    input: RotateCredentialsInput,
) -> Result<String, String> {
    let operation = OperationRun::begin(
        &ctx,
        &input.operation_id,
        OperationKind::CredentialsRotate,
        &input.instance,
    )
    .await?;
    let result = rotate(&ctx, &input, &operation).await;
    operation
        .finish_reporting(&ctx, &result, None, STEPS, summary)
        .await?;
    result.map(|rotated| summary(&rotated))
}

fn summary(rotated: &RotatedPassword) -> String {
    format!(
        "done: the role {} has a new password (set on {}); open sessions stay open",
        rotated.role_name, rotated.primary
    )
}

async fn rotate(
    ctx: &OrchestrationContext,
    input: &RotateCredentialsInput,
    operation: &OperationRun,
) -> Result<RotatedPassword, String> {
    report(
        ctx,
        1,
        STEPS,
        format!("rotating the {} password", input.role),
    );
    operation.record_started(ctx, None).await?;
    call(
        ctx,
        act::ROTATE_PASSWORD,
        &RotatePasswordInput {
            instance: input.instance.clone(),
            role: input.role,
        },
    )
    .await
}
