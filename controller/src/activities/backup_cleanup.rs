//! Activities of a backup deletion (an operator's `backup delete ID`, or the retention policy
//! applied by `backup cleanup NAME` and after each backup): choose what goes, have a member's
//! sidecar delete it from the store with the archived WAL only it needed, and forget it in the
//! CMS with an event that keeps its record.

use std::collections::BTreeSet;
use std::sync::Arc;

use duroxide::ActivityContext;
use serde::{Deserialize, Serialize};
use toygres_common::domain::{BackupStatus, MemberState, Role};
use toygres_common::sidecar_api::{BackupKind, RetentionRequest};

use super::deps::{describe, ActivityDeps};
use super::sidecar::sidecar_within;
use crate::backups::cleanup;
use crate::backups::restore::mark_abandoned;
use toygres_common::backup_api::BackupView;

/// What to delete of an instance's backups.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlanDeletionInput {
    pub instance: String,
    /// The backups an operator named; `None`: those the retention policy does not keep now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup_ids: Option<Vec<String>>,
}

/// One backup to delete.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DoomedBackup {
    /// Its id in the CMS (`bk-…`).
    pub id: String,
    /// Its id in the store; `None` when it left nothing there (it failed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub store_id: Option<String>,
}

/// The backups to delete, and the member whose sidecar reaches the store.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeletionPlan {
    pub doomed: Vec<DoomedBackup>,
    /// The primary (else any running member); `None` when nothing is to be deleted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub member: Option<String>,
}

/// Reads what goes: the named backups that are still recorded and not running, or those the
/// instance's retention policy does not keep now.
pub async fn plan_backup_deletion(
    deps: Arc<ActivityDeps>,
    _ctx: ActivityContext,
    input: PlanDeletionInput,
) -> Result<DeletionPlan, String> {
    let cms = &deps.cms;
    let mut backups = cms.list_backups(&input.instance).await.map_err(describe)?;
    let ids: Vec<String> = match &input.backup_ids {
        Some(named) => named.clone(),
        None => {
            let config = cms
                .get_backup_config(&input.instance)
                .await
                .map_err(describe)?
                .flatten()
                .ok_or_else(|| format!("instance {} has backups off", input.instance))?;
            mark_off_history(&deps, &input.instance, &mut backups).await;
            cleanup::plan(
                &input.instance,
                &config.retention,
                &backups,
                chrono::Utc::now(),
            )
            .delete
        }
    };
    let doomed: Vec<DoomedBackup> = backups
        .iter()
        .filter(|b| ids.contains(&b.id) && b.parsed_status() != Some(BackupStatus::Running))
        .map(|b| DoomedBackup {
            id: b.id.clone(),
            store_id: (b.parsed_status() == Some(BackupStatus::Succeeded))
                .then(|| {
                    b.store_path
                        .as_deref()?
                        .rsplit('/')
                        .next()
                        .map(String::from)
                })
                .flatten(),
        })
        .collect();
    // A restore into a new instance that is still running reads its base backup (and the WAL
    // after it, which a kept backup keeps): it stays until the restore ends.
    let in_restore = cms
        .backups_in_restore(&input.instance)
        .await
        .map_err(describe)?;
    let doomed: Vec<DoomedBackup> = doomed
        .into_iter()
        .filter(|d| {
            d.store_id
                .as_ref()
                .is_none_or(|store_id| !in_restore.contains(store_id))
        })
        .collect();
    if doomed.is_empty() {
        return Ok(DeletionPlan::default());
    }
    let members = cms.list_members(&input.instance).await.map_err(describe)?;
    let running = || {
        members
            .iter()
            .filter(|m| m.parsed_state() == Some(MemberState::Running))
    };
    let member = running()
        .find(|m| m.parsed_role() == Role::Primary)
        .or_else(|| running().next())
        .map(|m| m.name.clone())
        .ok_or_else(|| {
            format!(
                "instance {} has no running member to reach its store through",
                input.instance
            )
        })?;
    Ok(DeletionPlan {
        doomed,
        member: Some(member),
    })
}

/// Marks the base backups an in-place restore left off the archive's timeline history, as the
/// first running member that answers says (`GET /v1/wal/archived`), so that retention keeps
/// them as a series of their own; none is marked when no member answers.
async fn mark_off_history(deps: &ActivityDeps, instance: &str, backups: &mut [BackupView]) {
    let members = match deps.cms.list_members(instance).await {
        Ok(members) => members,
        Err(e) => {
            tracing::warn!(
                instance,
                "cannot tell which backups an in-place restore left behind: {}",
                describe(e)
            );
            return;
        }
    };
    for m in members
        .iter()
        .filter(|m| m.parsed_state() == Some(MemberState::Running))
    {
        let answer = match sidecar_within(deps, instance, &m.name, 5).await {
            Ok(client) => client.archive_end().await.map_err(describe),
            Err(e) => Err(e),
        };
        match answer {
            Ok(archive) => return mark_abandoned(backups, &archive),
            Err(e) => {
                tracing::warn!(instance, member = %m.name, "how the archive's timelines run: {e}")
            }
        }
    }
}

/// Delete backups from the store through one member's sidecar.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeleteObjectsInput {
    pub instance: String,
    pub member: String,
    /// Store ids of the backups to delete.
    pub store_ids: Vec<String>,
}

/// What left the store.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeletedObjects {
    /// Store ids of the backups deleted now (not those gone already).
    pub backups: Vec<String>,
    /// Archived WAL files deleted (no kept base backup needed them).
    pub wal_files: u64,
}

/// Has the member's sidecar keep every backup in the store but `store_ids` and delete the WAL no
/// kept base backup needs. What the store holds is read first, so a backup the CMS does not
/// know is kept, and a repeat finds the backups gone and deletes nothing more.
pub async fn delete_backup_objects(
    deps: Arc<ActivityDeps>,
    _ctx: ActivityContext,
    input: DeleteObjectsInput,
) -> Result<DeletedObjects, String> {
    let client = sidecar_within(&deps, &input.instance, &input.member, 600).await?;
    let stored = client.backups().await.map_err(describe)?.backups;
    let doomed: BTreeSet<&str> = input.store_ids.iter().map(String::as_str).collect();
    if !stored.iter().any(|b| doomed.contains(b.id.as_str())) {
        return Ok(DeletedObjects::default());
    }
    let keep: Vec<String> = stored
        .iter()
        .filter(|b| !doomed.contains(b.id.as_str()))
        .map(|b| b.id.clone())
        .collect();
    if !stored
        .iter()
        .any(|b| b.kind == BackupKind::Base && keep.contains(&b.id))
    {
        return Err(format!(
            "deleting {} would leave instance {} without a base backup: its archived WAL would \
             restore nothing",
            input.store_ids.join(", "),
            input.instance
        ));
    }
    let applied = client
        .apply_retention(&RetentionRequest { keep })
        .await
        .map_err(describe)?;
    Ok(DeletedObjects {
        backups: applied.deleted_backups,
        wal_files: u64::try_from(applied.deleted_wal.len()).unwrap_or(u64::MAX),
    })
}

/// Backups deleted from the store, to forget in the CMS.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ForgetBackupsInput {
    pub instance: String,
    pub operation_id: String,
    pub backup_ids: Vec<String>,
    pub wal_files: u64,
}

/// Forgets the deleted backups, keeping their rows in a `backups-deleted` event (once).
pub async fn forget_deleted_backups(
    deps: Arc<ActivityDeps>,
    _ctx: ActivityContext,
    input: ForgetBackupsInput,
) -> Result<(), String> {
    deps.cms
        .forget_deleted_backups(
            &input.instance,
            &input.backup_ids,
            &input.operation_id,
            i64::try_from(input.wal_files).unwrap_or(i64::MAX),
        )
        .await
        .map_err(describe)?;
    Ok(())
}
