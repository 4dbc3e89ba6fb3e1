//! *VerifyBackup*: checks that a base backup restores, as a child of its instance's actor (so
//! never beside a backup, a deletion or a switchover). A member's sidecar — a healthy streaming
//! standby when there is one, else the primary — downloads the backup, checks its SHA-256 and
//! `pg_verifybackup`, starts it aside and queries every database. The result is recorded on the
//! backup's row; a backup that fails verification fails the operation.

use duroxide::OrchestrationContext;
use serde::{Deserialize, Serialize};
use toygres_common::domain::OperationKind;
use toygres_common::sidecar_api::{BackupKind, VerifyResponse};

use super::backup::choose_member;
use super::durable::call_once;
use super::operation::{report, OperationRun};
use crate::activities::backup_verify::VerifyInput;
use crate::activities::names as act;

/// The input of *VerifyBackup* (also the actor's `verify-backup` command).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VerifyBackupInput {
    pub operation_id: String,
    pub instance: String,
    /// The backup's id in the CMS.
    pub backup_id: String,
}

const STEPS: u32 = 2;

/// Verifies the backup; returns the verification's summary.
pub async fn verify_backup(
    ctx: OrchestrationContext,
    input: VerifyBackupInput,
) -> Result<String, String> {
    let operation = OperationRun::begin(
        &ctx,
        &input.operation_id,
        OperationKind::BackupVerify,
        &input.instance,
    )
    .await?;
    let result = verify(&ctx, &input, &operation).await;
    operation
        .finish_reporting(&ctx, &result, None, STEPS, |v: &VerifyResponse| {
            format!("done: backup {} verified: {}", input.backup_id, v.message)
        })
        .await?;
    result.map(|v| v.message)
}

async fn verify(
    ctx: &OrchestrationContext,
    input: &VerifyBackupInput,
    operation: &OperationRun,
) -> Result<VerifyResponse, String> {
    report(ctx, 1, STEPS, "choosing the member to verify on");
    operation.record_started(ctx, None).await?;
    let member = choose_member(ctx, &input.instance, BackupKind::Base).await?;

    report(
        ctx,
        2,
        STEPS,
        format!("restoring backup {} aside on {member}", input.backup_id),
    );
    // Once: each attempt restores a whole copy of the cluster.
    let verified: VerifyResponse = call_once(
        ctx,
        act::VERIFY_BACKUP,
        &VerifyInput {
            instance: input.instance.clone(),
            member,
            backup_id: input.backup_id.clone(),
        },
    )
    .await?;
    if verified.ok {
        Ok(verified)
    } else {
        Err(format!(
            "backup {} failed verification: {}",
            input.backup_id, verified.message
        ))
    }
}
