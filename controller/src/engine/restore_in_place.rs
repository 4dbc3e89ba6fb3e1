//! Restoring an instance in place: its data replaced by a restore of one of its own backups,
//! as an operation of its actor ([`crate::orchestrations::restore_in_place`]). Refused, with
//! nothing recorded, unless the request confirms the instance's name.

use toygres_common::backup_api::RestoreRequest;
use toygres_common::controller_api::OperationAccepted;
use toygres_common::domain::OperationKind;

use super::backups::target_of;
use super::{new_operation_id, Engine, EngineError};
use crate::orchestrations::instance_actor::ActorCommand;
use crate::orchestrations::restore_in_place::RestoreInPlaceInput;
use crate::platform::RestoreSource;

impl Engine {
    /// Queues a *RestoreInPlace* operation on `name`'s actor: its primary restores the base
    /// backup the target needs (the newest before it, or `request.backup_id`) and recovers to
    /// the target on a new timeline; its standbys are cloned again. `request.confirm` must be
    /// `name`.
    pub(super) async fn restore_in_place(
        &self,
        name: &str,
        request: RestoreRequest,
    ) -> Result<OperationAccepted, EngineError> {
        if request.confirm.as_deref() != Some(name) {
            return Err(EngineError::Invalid(format!(
                "confirm: an in-place restore replaces the data of {name}: confirm it by giving \
                 its name (\"confirm\": \"{name}\")"
            )));
        }
        if !request.to.is_empty() {
            return Err(EngineError::Invalid(
                "to: an in-place restore makes no new instance: leave out \"to\"".into(),
            ));
        }
        if request.encryption_secret.is_some() {
            return Err(EngineError::Invalid(
                "encryption_secret: an in-place restore reads the instance's own key".into(),
            ));
        }
        if request.replicas != 0 || request.replication.is_some() {
            return Err(EngineError::Invalid(
                "replicas: an in-place restore keeps the instance's standbys and replication \
                 mode: leave out \"replicas\" and \"replication\""
                    .into(),
            ));
        }
        let target = target_of(&request)?;
        let instance = self.running_instance(name).await?;
        if !self.platform.sets_data_aside() {
            return Err(EngineError::Invalid(
                "in_place: this platform cannot restore an instance in place yet; restore to a \
                 new instance (\"to\") instead"
                    .into(),
            ));
        }
        let (_, store_url, chosen) = self
            .restore_plan(name, &target, request.backup_id.as_deref())
            .await?;
        tracing::info!(instance = name, backup = %chosen.backup_id, ?target, "restoring in place");
        self.archive_for_restore(name, &target).await?;
        let operation_id = new_operation_id();
        let command = ActorCommand::RestoreInPlace(RestoreInPlaceInput {
            operation_id: operation_id.clone(),
            instance: name.to_string(),
            restore: RestoreSource {
                instance: name.to_string(),
                store_url,
                backup_id: chosen.store_id,
                target_time: target.time_text(),
                target_lsn: target.lsn_text(),
                target_xid: target.xid_text(),
                target_name: target.name_text(),
                in_place: true,
            },
        });
        self.queue_operation(
            &instance,
            &operation_id,
            OperationKind::RestoreInPlace,
            &command,
        )
        .await
    }
}
