//! *Backup*: a base or logical backup of an instance, as a child of its actor (so never beside
//! a switchover or another backup). Chooses the member (a healthy streaming standby for a base
//! backup when there is one, else the primary: [`choose_backup_member`]), records the backup in
//! the CMS, has that member's sidecar take it into the instance's store, and records the result.
//! After a backup that succeeded, the instance's retention policy is applied (a *DeleteBackups*
//! child with an operation of its own, `backup-cleanup`).

use duroxide::OrchestrationContext;
use serde::{Deserialize, Serialize};
use toygres_common::domain::OperationKind;
use toygres_common::sidecar_api::{BackupKind, BackupManifest};

use super::backup_cleanup::DeleteBackupsInput;
use super::durable::{call, call_once, sub_orchestration};
use super::names;
use super::operation::{new_operation_id, report, OperationRun};
use crate::activities::backups::{BackupEndInput, BackupStartInput, TakeBackupInput};
use crate::activities::members::InstanceRef;
use crate::activities::names as act;
use crate::backups::source::{choose_backup_member, BackupCandidate};

/// The longest one backup may take before its operation gives up on it.
pub const BACKUP_TIMEOUT_SECS: u64 = 6 * 3600;

/// The input of *Backup* (also the actor's `backup` command).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackupInput {
    pub operation_id: String,
    pub instance: String,
    /// The backup's id in the CMS (the API returned it).
    pub backup_id: String,
    pub kind: BackupKind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    /// Logical backups: the databases to dump.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub databases: Vec<String>,
}

const STEPS: u32 = 4;

/// Takes the backup and records it; returns the backup id.
pub async fn backup(ctx: OrchestrationContext, input: BackupInput) -> Result<String, String> {
    let operation = OperationRun::begin(
        &ctx,
        &input.operation_id,
        OperationKind::Backup,
        &input.instance,
    )
    .await?;
    let result = take(&ctx, &input, &operation).await;
    operation
        .finish_reporting(&ctx, &result, None, STEPS, |taken: &BackupManifest| {
            format!(
                "done: backup {} ({} bytes stored)",
                input.backup_id, taken.stored_bytes
            )
        })
        .await?;
    if result.is_ok() {
        apply_retention(&ctx, &input.instance).await;
    }
    result.map(|_| input.backup_id.clone())
}

/// Deletes the backups the instance's retention policy no longer keeps, as an operation of its
/// own; a failure is logged there and leaves the backup that was just taken as it is.
async fn apply_retention(ctx: &OrchestrationContext, instance: &str) {
    let cleanup = async {
        let operation_id = new_operation_id(ctx).await?;
        let input = DeleteBackupsInput {
            operation_id: operation_id.clone(),
            instance: instance.to_string(),
            backup_ids: None,
        };
        sub_orchestration(ctx, names::DELETE_BACKUPS, &operation_id, &input).await
    };
    match cleanup.await {
        Ok(summary) => ctx.trace_info(format!("retention applied: {summary}")),
        Err(e) => ctx.trace_warn(format!("retention not applied: {e}")),
    }
}

/// The member a backup of `kind` (or a verification: `Base`) runs on: a healthy streaming
/// standby when there is one, else the primary ([`choose_backup_member`]).
pub(super) async fn choose_member(
    ctx: &OrchestrationContext,
    instance: &str,
    kind: BackupKind,
) -> Result<String, String> {
    let candidates: Vec<BackupCandidate> = call(
        ctx,
        act::BACKUP_CANDIDATES,
        &InstanceRef {
            instance: instance.to_string(),
        },
    )
    .await?;
    choose_backup_member(kind, &candidates)
        .ok_or_else(|| format!("instance {instance} has no member to back up or verify on"))
}

async fn take(
    ctx: &OrchestrationContext,
    input: &BackupInput,
    operation: &OperationRun,
) -> Result<BackupManifest, String> {
    report(ctx, 1, STEPS, "choosing the member to back up");
    operation.record_started(ctx, None).await?;
    let member = choose_member(ctx, &input.instance, input.kind).await?;

    report(ctx, 2, STEPS, format!("recording the backup on {member}"));
    call::<_, ()>(
        ctx,
        act::RECORD_BACKUP_STARTED,
        &BackupStartInput {
            backup_id: input.backup_id.clone(),
            instance: input.instance.clone(),
            operation_id: input.operation_id.clone(),
            kind: input.kind,
            label: input.label.clone(),
            member: member.clone(),
        },
    )
    .await?;

    report(ctx, 3, STEPS, format!("taking the backup on {member}"));
    // Once: a second attempt would take a second backup.
    let taken: Result<BackupManifest, String> = call_once(
        ctx,
        act::TAKE_BACKUP,
        &TakeBackupInput {
            instance: input.instance.clone(),
            member: member.clone(),
            kind: input.kind,
            databases: input.databases.clone(),
            timeout_secs: BACKUP_TIMEOUT_SECS,
        },
    )
    .await;

    report(ctx, 4, STEPS, "recording the result");
    call::<_, ()>(
        ctx,
        act::RECORD_BACKUP_FINISHED,
        &BackupEndInput {
            backup_id: input.backup_id.clone(),
            manifest: taken.as_ref().ok().cloned(),
            error: taken.as_ref().err().cloned(),
        },
    )
    .await?;
    taken
}
