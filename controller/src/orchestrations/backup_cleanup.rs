//! *DeleteBackups*: deletes backups of an instance, as a child of its actor (so never beside a
//! backup, a switchover or another deletion): the ones an operator named (`backup delete ID`,
//! operation `backup-delete`) or the ones its retention policy does not keep now (`backup
//! cleanup NAME`, and after every successful backup: operation `backup-cleanup`). Chooses what
//! goes, has a member's sidecar delete it from the store with the archived WAL that no kept base
//! backup needs, and forgets it in the CMS (an event keeps its record).

use duroxide::OrchestrationContext;
use serde::{Deserialize, Serialize};
use toygres_common::domain::OperationKind;

use super::durable::call;
use super::operation::{report, OperationRun};
use crate::activities::backup_cleanup::{
    DeleteObjectsInput, DeletedObjects, DeletionPlan, ForgetBackupsInput, PlanDeletionInput,
};
use crate::activities::names as act;

/// The input of *DeleteBackups* (also the actor's `delete-backups` command).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeleteBackupsInput {
    pub operation_id: String,
    pub instance: String,
    /// The backups to delete (CMS ids); `None`: those the retention policy does not keep.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup_ids: Option<Vec<String>>,
}

impl DeleteBackupsInput {
    /// `backup-delete` for named backups, `backup-cleanup` for the policy's choice.
    pub fn kind(&self) -> OperationKind {
        match self.backup_ids {
            Some(_) => OperationKind::BackupDelete,
            None => OperationKind::BackupCleanup,
        }
    }
}

/// What a deletion removed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Deletion {
    /// CMS ids of the backups deleted.
    pub backups: Vec<String>,
    pub wal_files: u64,
}

impl Deletion {
    /// One line for the operation's last progress.
    pub fn summary(&self) -> String {
        if self.backups.is_empty() {
            return "done: nothing to delete".into();
        }
        format!(
            "done: deleted {} and {} archived WAL files only {} needed",
            self.backups.join(", "),
            self.wal_files,
            if self.backups.len() == 1 {
                "it"
            } else {
                "they"
            }
        )
    }
}

const STEPS: u32 = 3;

/// Deletes the backups; returns the summary of what went.
pub async fn delete_backups(
    ctx: OrchestrationContext,
    input: DeleteBackupsInput,
) -> Result<String, String> {
    let operation =
        OperationRun::begin(&ctx, &input.operation_id, input.kind(), &input.instance).await?;
    let result = delete(&ctx, &input, &operation).await;
    operation
        .finish_reporting(&ctx, &result, None, STEPS, Deletion::summary)
        .await?;
    result.map(|d| d.summary())
}

async fn delete(
    ctx: &OrchestrationContext,
    input: &DeleteBackupsInput,
    operation: &OperationRun,
) -> Result<Deletion, String> {
    report(ctx, 1, STEPS, "choosing the backups to delete");
    operation.record_started(ctx, None).await?;
    let plan: DeletionPlan = call(
        ctx,
        act::PLAN_BACKUP_DELETION,
        &PlanDeletionInput {
            instance: input.instance.clone(),
            backup_ids: input.backup_ids.clone(),
        },
    )
    .await?;
    let (Some(member), false) = (plan.member, plan.doomed.is_empty()) else {
        return Ok(Deletion::default());
    };
    let ids: Vec<String> = plan.doomed.iter().map(|d| d.id.clone()).collect();

    report(
        ctx,
        2,
        STEPS,
        format!(
            "deleting {} from the store through {member}",
            ids.join(", ")
        ),
    );
    let store_ids: Vec<String> = plan
        .doomed
        .iter()
        .filter_map(|d| d.store_id.clone())
        .collect();
    let removed = if store_ids.is_empty() {
        DeletedObjects::default()
    } else {
        call(
            ctx,
            act::DELETE_BACKUP_OBJECTS,
            &DeleteObjectsInput {
                instance: input.instance.clone(),
                member,
                store_ids,
            },
        )
        .await?
    };

    report(ctx, 3, STEPS, "recording the deletion");
    call::<_, ()>(
        ctx,
        act::FORGET_DELETED_BACKUPS,
        &ForgetBackupsInput {
            instance: input.instance.clone(),
            operation_id: input.operation_id.clone(),
            backup_ids: ids.clone(),
            wal_files: removed.wal_files,
        },
    )
    .await?;
    Ok(Deletion {
        backups: ids,
        wal_files: removed.wal_files,
    })
}
