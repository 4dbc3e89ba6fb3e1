//! The operations an instance's actor carries out (replicas, switchover, failover, backups, HA
//! settings): checked here against the CMS, then recorded and queued on the actor.

use anyhow::Context as _;
use toygres_common::backup_api::{BackupAccepted, CreateBackupRequest, ValidatedCreateBackup};
use toygres_common::controller_api::{
    AddReplicaRequest, FailoverRequest, HaSettings, HaSettingsPatch, MemberView, OperationAccepted,
    SwitchoverRequest, ValidatedSwitchover, MAX_QUEUED_OPERATIONS, MAX_REPLICAS,
};
use toygres_common::domain::{
    HaEventKind, InstanceState, MemberHealth, OperationKind, OperationStatus, ReplicationMode, Role,
};

use super::backups::backup_id_of;
use super::{new_operation_id, Engine, EngineError};
use crate::cms::instances::InstanceRecord;
use crate::orchestrations::backup::BackupInput;
use crate::orchestrations::instance_actor::{
    ActorCommand, FailoverCommand, SwitchoverCommand, COMMANDS_QUEUE,
};
use crate::orchestrations::replicas::{AddReplicaInput, RemoveReplicaInput};
use crate::platform::{validate_member_of, Placement};

/// Held while an operation is counted against its instance's queue bound and recorded.
static QUEUE_LOCK: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

impl Engine {
    /// Cancels an operation: a queued one at once, a running one at its next safe point.
    /// Creating and deleting an instance cannot be cancelled.
    pub async fn cancel_operation(&self, id: &str) -> Result<OperationStatus, EngineError> {
        let operation = self
            .cms
            .get_operation(id)
            .await?
            .ok_or_else(|| EngineError::NotFound(format!("operation {id} does not exist")))?;
        let kind: OperationKind = operation
            .kind
            .parse()
            .map_err(|e| EngineError::Failed(anyhow::anyhow!("{e}")))?;
        if matches!(kind, OperationKind::Create | OperationKind::Delete) {
            return Err(EngineError::Conflict(format!(
                "a {kind} operation cannot be cancelled"
            )));
        }
        match self.cms.cancel_operation(id).await? {
            Some(OperationStatus::Cancelled) if kind == OperationKind::Parameters => {
                // It never ran: the instance's desired values go back.
                if let Err(e) = self.undo_queued_change(id).await {
                    tracing::warn!(operation = id, "put the desired parameters back: {e}");
                }
                Ok(OperationStatus::Cancelled)
            }
            Some(status) => Ok(status),
            None => Err(EngineError::Conflict(format!(
                "operation {id} has already finished ({})",
                operation.status
            ))),
        }
    }

    /// Queues an *AddReplica* operation on the instance's actor.
    pub async fn add_replica(
        &self,
        name: &str,
        request: AddReplicaRequest,
    ) -> Result<OperationAccepted, EngineError> {
        let instance = self.running_instance(name).await?;
        if instance.replicas >= MAX_REPLICAS {
            return Err(EngineError::Conflict(format!(
                "instance {name} already has {MAX_REPLICAS} replicas, the most it may have"
            )));
        }
        if let Some(member) = &request.name {
            validate_member_of(name, member).map_err(|e| EngineError::Invalid(e.to_string()))?;
            let members = self.cms.list_members(name).await?;
            if members.iter().any(|m| &m.name == member) {
                return Err(EngineError::Conflict(format!(
                    "member {member} already exists"
                )));
            }
        }
        let mode = match request.mode.as_deref() {
            None => None,
            Some(text) => Some(text.parse::<ReplicationMode>().map_err(|_| {
                EngineError::Invalid(format!("mode must be \"sync\" or \"async\", not {text:?}"))
            })?),
        };
        let sync_candidate = match mode {
            None | Some(ReplicationMode::Sync) => true,
            Some(ReplicationMode::Async) => false,
        };
        if mode == Some(ReplicationMode::Sync)
            && instance.summary.parsed_replication_mode() != ReplicationMode::Sync
        {
            return Err(EngineError::Conflict(format!(
                "instance {name} replicates asynchronously: a standby cannot be synchronous"
            )));
        }
        let operation_id = new_operation_id();
        let command = ActorCommand::AddReplica(AddReplicaInput {
            sync_candidate,
            max_lag_bytes: request.max_lag_bytes,
            operation_id: operation_id.clone(),
            instance: name.to_string(),
            member: request.name,
            placement: Placement {
                zone: request.zone,
                size: request.size,
            },
        });
        self.queue_operation(
            &instance,
            &operation_id,
            OperationKind::AddReplica,
            &command,
        )
        .await
    }

    /// Queues a *RemoveReplica* operation on the instance's actor.
    pub async fn remove_replica(
        &self,
        name: &str,
        member: &str,
        keep_data: bool,
    ) -> Result<OperationAccepted, EngineError> {
        let instance = self.running_instance(name).await?;
        validate_member_of(name, member).map_err(|e| EngineError::Invalid(e.to_string()))?;
        let members = self.cms.list_members(name).await?;
        let found = members
            .iter()
            .find(|m| m.name == member)
            .ok_or_else(|| EngineError::NotFound(format!("member {member} does not exist")))?;
        if found.parsed_role() == Role::Primary {
            return Err(EngineError::Conflict(format!(
                "{member} is the primary; only a standby can be removed"
            )));
        }
        let standbys = members
            .iter()
            .filter(|m| m.parsed_role() == Role::Standby)
            .count();
        if instance.summary.parsed_replication_mode() == ReplicationMode::Sync && standbys <= 1 {
            return Err(EngineError::Conflict(format!(
                "{member} is the last standby and instance {name} replicates synchronously"
            )));
        }
        let operation_id = new_operation_id();
        let command = ActorCommand::RemoveReplica(RemoveReplicaInput {
            operation_id: operation_id.clone(),
            instance: name.to_string(),
            member: member.to_string(),
            keep_data,
        });
        self.queue_operation(
            &instance,
            &operation_id,
            OperationKind::RemoveReplica,
            &command,
        )
        .await
    }

    /// Queues a *Switchover* on the instance's actor. The primary must be recorded and the
    /// target, when named, one of its standbys.
    pub async fn switchover(
        &self,
        name: &str,
        request: SwitchoverRequest,
    ) -> Result<OperationAccepted, EngineError> {
        let instance = self.running_instance(name).await?;
        let request = ValidatedSwitchover::try_from(request)
            .map_err(|e| EngineError::Invalid(e.to_string()))?;
        let members = self.cms.list_members(name).await?;
        if !members.iter().any(|m| m.parsed_role() == Role::Standby) {
            return Err(EngineError::Conflict(format!(
                "instance {name} has no standby to hand over to"
            )));
        }
        if let Some(to) = &request.to {
            self.check_target(name, &members, to)?;
        }
        let operation_id = new_operation_id();
        let command = ActorCommand::Switchover(SwitchoverCommand {
            operation_id: operation_id.clone(),
            request,
        });
        self.queue_operation(
            &instance,
            &operation_id,
            OperationKind::Switchover,
            &command,
        )
        .await
    }

    /// Queues a manual *Failover* on the instance's actor (refused by the orchestration while
    /// the primary is healthy, unless forced).
    pub async fn failover(
        &self,
        name: &str,
        request: FailoverRequest,
    ) -> Result<OperationAccepted, EngineError> {
        let instance = self.running_instance(name).await?;
        request
            .validate()
            .map_err(|e| EngineError::Invalid(e.to_string()))?;
        let members = self.cms.list_members(name).await?;
        if let Some(to) = &request.to {
            self.check_target(name, &members, to)?;
        }
        if !request.force {
            // Refused up front when the primary answers: the operator wants a switchover.
            let primary = members.iter().find(|m| m.parsed_role() == Role::Primary);
            if let Some(primary) = primary.filter(|p| p.parsed_health() == MemberHealth::Healthy) {
                return Err(EngineError::Conflict(format!(
                    "the primary {} is healthy: use a switchover, or force the failover",
                    primary.name
                )));
            }
        }
        let operation_id = new_operation_id();
        let command = ActorCommand::Failover(FailoverCommand {
            operation_id: operation_id.clone(),
            to: request.to,
            force: request.force,
        });
        self.queue_operation(&instance, &operation_id, OperationKind::Failover, &command)
            .await
    }

    /// Queues a *Backup* on the instance's actor; refused when the instance's backups are off
    /// or a backup of it is in progress. The new backup's id is in the answer.
    pub async fn create_backup(
        &self,
        name: &str,
        request: CreateBackupRequest,
    ) -> Result<BackupAccepted, EngineError> {
        let request = ValidatedCreateBackup::try_from(request)
            .map_err(|e| EngineError::Invalid(e.to_string()))?;
        let instance = self.running_instance(name).await?;
        if self.cms.get_backup_config(name).await?.flatten().is_none() {
            return Err(EngineError::Conflict(format!(
                "instance {name} was created with backups off (--no-backup): it has no store to                  back up to"
            )));
        }
        if let Some(running) = self.cms.running_backup(name).await? {
            return Err(EngineError::Conflict(format!(
                "backup {running} of instance {name} is still in progress"
            )));
        }
        let operation_id = new_operation_id();
        let backup_id = backup_id_of(&operation_id);
        let command = ActorCommand::Backup(BackupInput {
            operation_id: operation_id.clone(),
            instance: name.to_string(),
            backup_id: backup_id.clone(),
            kind: request.kind,
            label: request.label,
            databases: request.databases,
        });
        let accepted = self
            .queue_operation(&instance, &operation_id, OperationKind::Backup, &command)
            .await?;
        Ok(BackupAccepted::new(accepted, backup_id))
    }

    fn check_target(
        &self,
        name: &str,
        members: &[MemberView],
        to: &str,
    ) -> Result<(), EngineError> {
        validate_member_of(name, to).map_err(|e| EngineError::Invalid(e.to_string()))?;
        match members.iter().find(|m| m.name == to) {
            None => Err(EngineError::NotFound(format!("member {to} does not exist"))),
            Some(m) if m.parsed_role() == Role::Primary => Err(EngineError::Conflict(format!(
                "{to} is already the primary"
            ))),
            Some(_) => Ok(()),
        }
    }

    /// The instance's HA settings.
    pub async fn ha_settings(&self, name: &str) -> Result<HaSettings, EngineError> {
        self.cms
            .get_instance(name)
            .await?
            .filter(|i| i.summary.parsed_state() != Some(InstanceState::Deleted))
            .ok_or_else(|| EngineError::NotFound(format!("instance {name} does not exist")))?;
        Ok(self.cms.get_ha_settings(name).await?.unwrap_or_default())
    }

    /// Changes the instance's HA settings; its actor applies them from its next round on.
    pub async fn set_ha_settings(
        &self,
        name: &str,
        patch: &HaSettingsPatch,
    ) -> Result<HaSettings, EngineError> {
        let current = self.ha_settings(name).await?;
        let next = current
            .patched(patch)
            .map_err(|e| EngineError::Invalid(e.to_string()))?;
        self.cms.set_ha_settings(name, &next).await?;
        self.settings_changed(name, HaEventKind::HaSettings, "HA settings", patch)
            .await?;
        Ok(next)
    }

    /// An instance that is running and has an actor.
    pub(super) async fn running_instance(&self, name: &str) -> Result<InstanceRecord, EngineError> {
        let instance = self
            .cms
            .get_instance(name)
            .await?
            .filter(|i| i.summary.parsed_state() != Some(InstanceState::Deleted))
            .ok_or_else(|| EngineError::NotFound(format!("instance {name} does not exist")))?;
        if instance.summary.parsed_state() != Some(InstanceState::Running) {
            return Err(EngineError::Conflict(format!(
                "instance {name} is {}, not running",
                instance.summary.state
            )));
        }
        if instance.actor_id.is_none() {
            return Err(EngineError::Conflict(format!(
                "instance {name} has no actor yet; try again in a moment"
            )));
        }
        Ok(instance)
    }

    /// Records an operation and hands it to the instance's actor, which runs it after the
    /// commands queued before it.
    pub(super) async fn queue_operation(
        &self,
        instance: &InstanceRecord,
        operation_id: &str,
        kind: OperationKind,
        command: &ActorCommand,
    ) -> Result<OperationAccepted, EngineError> {
        let name = &instance.summary.name;
        let actor_id = instance
            .actor_id
            .as_deref()
            .ok_or_else(|| EngineError::Conflict(format!("instance {name} has no actor")))?;
        let request = self
            .record_queued_operation(name, operation_id, kind, command)
            .await?;
        self.client
            .enqueue_event(actor_id, COMMANDS_QUEUE, request.to_string())
            .await
            .with_context(|| format!("send the command to {name}'s actor"))?;
        Ok(OperationAccepted {
            operation_id: operation_id.to_string(),
            kind: kind.to_string(),
            instance: name.clone(),
        })
    }

    /// Records an operation of `name` as pending, if its queue has room (counted and recorded
    /// under one lock, so concurrent requests cannot all see room); returns its request.
    pub(super) async fn record_queued_operation(
        &self,
        name: &str,
        operation_id: &str,
        kind: OperationKind,
        command: &ActorCommand,
    ) -> Result<serde_json::Value, EngineError> {
        let request = serde_json::to_value(command).context("encode the command")?;
        let _queue = QUEUE_LOCK.lock().await;
        let queued = self.cms.queued_operations(name).await?;
        if queued >= MAX_QUEUED_OPERATIONS {
            return Err(EngineError::Busy(format!(
                "instance {name} already has {queued} operations queued or running, the most \
                 it may have; wait for them or cancel one (toygres operation cancel ID)"
            )));
        }
        self.cms
            .insert_operation(operation_id, kind, name, &request)
            .await?;
        Ok(request)
    }

    /// Asks an instance's actor to run a health round now.
    pub async fn check_now(&self, name: &str) -> Result<(), EngineError> {
        let actor_id = self
            .cms
            .get_instance(name)
            .await?
            .and_then(|i| i.actor_id)
            .ok_or_else(|| EngineError::NotFound(format!("instance {name} has no actor")))?;
        let command = serde_json::to_string(&ActorCommand::CheckNow).context("encode a command")?;
        self.client
            .enqueue_event(&actor_id, COMMANDS_QUEUE, command)
            .await
            .context("send the actor a command")?;
        Ok(())
    }
}
