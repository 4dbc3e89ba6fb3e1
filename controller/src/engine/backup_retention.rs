//! Deleting backups (one an operator names, or those the retention policy does not keep) and
//! verifying one, as operations queued on the instance's actor, and the instance's recoverability window: from
//! the end of its oldest kept base backup to the last WAL its primary archived.

use std::time::Duration;

use chrono::{SecondsFormat, Utc};
use toygres_common::backup_api::RecoverabilityWindow;
use toygres_common::controller_api::OperationAccepted;
use toygres_common::domain::{BackupStatus, MemberState, OperationKind, Role};
use toygres_common::sidecar_api::RestoreProgress;
use toygres_common::SidecarClient;

use super::{new_operation_id, Engine, EngineError};
use crate::activities::sidecar::sidecar_on;
use crate::backups::restore::earliest_restorable;
use crate::orchestrations::backup_cleanup::DeleteBackupsInput;
use crate::orchestrations::backup_verify::VerifyBackupInput;
use crate::orchestrations::instance_actor::ActorCommand;

/// How long the API waits for a primary's sidecar to say how far it archived.
const ARCHIVE_STATUS_TIMEOUT: Duration = Duration::from_secs(3);

/// How long an operation's view waits for a restoring member to say how far it has come.
const RESTORE_PROGRESS_TIMEOUT: Duration = Duration::from_secs(2);

impl Engine {
    /// Queues the deletion of backup `id` on its instance's actor. Refused: an unknown backup
    /// (404), one still running, or the instance's only succeeded base backup (409).
    pub async fn delete_backup(&self, id: &str) -> Result<OperationAccepted, EngineError> {
        let backup = self.get_backup(id).await?;
        if backup.parsed_status() == Some(BackupStatus::Running) {
            return Err(EngineError::Conflict(format!(
                "backup {id} is still running: wait for it to end, then delete it"
            )));
        }
        let name = backup.instance.clone();
        let instance = self.running_instance(&name).await?;
        let store_id = backup
            .store_path
            .as_deref()
            .and_then(|p| p.rsplit('/').next());
        if let Some(store_id) = store_id {
            if self
                .cms
                .backups_in_restore(&name)
                .await?
                .iter()
                .any(|s| s == store_id)
            {
                return Err(EngineError::Conflict(format!(
                    "backup {id} is being restored into a new instance: delete it once the                      restore has ended"
                )));
            }
        }
        if backup.is_succeeded_base() {
            let others = self
                .backups_of(&name)
                .await?
                .iter()
                .filter(|b| b.id != id && b.is_succeeded_base() && !b.abandoned)
                .count();
            if others == 0 {
                return Err(EngineError::Conflict(format!(
                    "backup {id} is the only base backup of instance {name}: without it the \
                     archived WAL restores nothing; take another backup first"
                )));
            }
        }
        self.queue_deletion(&instance, Some(vec![id.to_string()]))
            .await
    }

    /// Queues the deletion of the backups the instance's retention policy does not keep now
    /// (`GET /v1/instances/{name}/backups/cleanup` shows which).
    pub async fn cleanup_backups(&self, name: &str) -> Result<OperationAccepted, EngineError> {
        self.backup_config(name).await?;
        let instance = self.running_instance(name).await?;
        self.queue_deletion(&instance, None).await
    }

    /// Queues the verification of base backup `id` on its instance's actor. Refused: an
    /// unknown backup (404), one that is not a succeeded base backup (409).
    pub async fn verify_backup(&self, id: &str) -> Result<OperationAccepted, EngineError> {
        let backup = self.get_backup(id).await?;
        if !backup.is_succeeded_base() {
            return Err(EngineError::Conflict(format!(
                "backup {id} is a {} {} backup: only a succeeded base backup can be verified",
                backup.status, backup.kind
            )));
        }
        let instance = self.running_instance(&backup.instance).await?;
        let input = VerifyBackupInput {
            operation_id: new_operation_id(),
            instance: backup.instance.clone(),
            backup_id: id.to_string(),
        };
        let operation_id = input.operation_id.clone();
        self.queue_operation(
            &instance,
            &operation_id,
            OperationKind::BackupVerify,
            &ActorCommand::VerifyBackup(input),
        )
        .await
    }

    async fn queue_deletion(
        &self,
        instance: &crate::cms::instances::InstanceRecord,
        backup_ids: Option<Vec<String>>,
    ) -> Result<OperationAccepted, EngineError> {
        let input = DeleteBackupsInput {
            operation_id: new_operation_id(),
            instance: instance.summary.name.clone(),
            backup_ids,
        };
        let kind: OperationKind = input.kind();
        let operation_id = input.operation_id.clone();
        self.queue_operation(
            instance,
            &operation_id,
            kind,
            &ActorCommand::DeleteBackups(input),
        )
        .await
    }

    /// The points a restore of the instance can reach: from the end of its oldest kept base
    /// backup (the CMS) to the last WAL file its primary archived (its sidecar, asked now).
    pub async fn recoverability_window(
        &self,
        name: &str,
    ) -> Result<RecoverabilityWindow, EngineError> {
        self.backup_config(name).await?;
        let backups = self.backups_of(name).await?;
        let earliest = earliest_restorable(&backups);
        let mut window = RecoverabilityWindow {
            instance: name.to_string(),
            earliest_restorable: earliest
                .as_ref()
                .map(|(_, at)| at.to_rfc3339_opts(SecondsFormat::Micros, true)),
            earliest_backup_id: earliest.map(|(id, _)| id),
            ..RecoverabilityWindow::default()
        };
        let archive = match self.primary_sidecar(name, ARCHIVE_STATUS_TIMEOUT).await {
            Ok((_, client)) => client
                .status()
                .await
                .map_err(|e| format!("its primary did not answer: {e}"))
                .and_then(|s| {
                    s.archive
                        .ok_or_else(|| "its primary archives nothing".into())
                }),
            Err(e) => Err(e),
        };
        match archive {
            Ok(archive) if archive.last_archived_wal.is_some() => {
                window.archived_wal = archive.last_archived_wal;
                window.archived_at = archive
                    .last_archived_age_seconds
                    .and_then(|age| chrono::Duration::try_milliseconds((age * 1000.0) as i64))
                    .map(|age| (Utc::now() - age).to_rfc3339_opts(SecondsFormat::Secs, true));
            }
            Ok(_) => window.archive_unknown = Some("its primary has archived nothing yet".into()),
            Err(e) => window.archive_unknown = Some(e),
        }
        Ok(window)
    }

    /// How far the restore one of the instance's members bootstraps from has come, as the
    /// first member that restores says now; `None` when none does (or none answers at once).
    pub async fn restore_progress(&self, name: &str) -> Option<RestoreProgress> {
        let members = self.cms.list_members(name).await.ok()?;
        for m in &members {
            let Ok(client) = sidecar_on(
                self.platform.as_ref(),
                name,
                &m.name,
                RESTORE_PROGRESS_TIMEOUT,
            )
            .await
            else {
                continue;
            };
            if let Ok(progress) = client.restore_progress().await {
                if progress.phase != "done" {
                    return Some(progress);
                }
            }
        }
        None
    }

    /// The instance's primary (as the CMS records it, running) and a client of its sidecar.
    pub(super) async fn primary_sidecar(
        &self,
        name: &str,
        timeout: Duration,
    ) -> Result<(String, SidecarClient), String> {
        let members = self
            .cms
            .list_members(name)
            .await
            .map_err(|e| e.to_string())?;
        let primary = members
            .iter()
            .find(|m| {
                m.parsed_role() == Role::Primary && m.parsed_state() == Some(MemberState::Running)
            })
            .ok_or_else(|| format!("instance {name} has no running primary"))?;
        let client = sidecar_on(self.platform.as_ref(), name, &primary.name, timeout).await?;
        Ok((primary.name.clone(), client))
    }
}
