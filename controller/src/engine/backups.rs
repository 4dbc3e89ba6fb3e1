//! Backups as the engine reads them, and the backup configuration a new instance gets: its
//! platform's store when the request names none. (Taking a backup is an actor operation:
//! [`Engine::create_backup`].)

use toygres_common::backup_api::{BackupConfig, BackupView};
use toygres_common::domain::InstanceState;

use super::{Engine, EngineError};
use crate::backups::schedule::Schedule;

/// A backup's id, from its operation's: `bk-` and the operation's hex digits.
pub fn backup_id_of(operation_id: &str) -> String {
    format!(
        "bk-{}",
        operation_id.strip_prefix("op-").unwrap_or(operation_id)
    )
}

impl Engine {
    /// Fills in the platform's store when the configuration names none, and checks the cron
    /// expressions (the controller owns the cron parser).
    pub(super) fn complete_backup_config(
        &self,
        config: &mut BackupConfig,
    ) -> Result<(), EngineError> {
        for (field, expr) in [
            ("backup.base_schedule", &config.base_schedule),
            ("backup.logical_schedule", &config.logical_schedule),
        ] {
            expr.parse::<Schedule>()
                .map_err(|e| EngineError::Invalid(format!("{field}: {e}")))?;
        }
        if config.store_url.is_none() {
            config.store_url = Some(self.default_backup_store.clone().ok_or_else(|| {
                EngineError::Invalid(
                    "backup.store_url: this platform has no default backup store; name one, or \
                     turn backups off"
                        .into(),
                )
            })?);
        }
        Ok(())
    }

    /// The instance's backups, newest first.
    pub async fn list_backups(&self, name: &str) -> Result<Vec<BackupView>, EngineError> {
        self.cms
            .get_instance(name)
            .await?
            .filter(|i| i.summary.parsed_state() != Some(InstanceState::Deleted))
            .ok_or_else(|| EngineError::NotFound(format!("instance {name} does not exist")))?;
        Ok(self.cms.list_backups(name).await?)
    }

    /// One backup.
    pub async fn get_backup(&self, id: &str) -> Result<BackupView, EngineError> {
        self.cms
            .get_backup(id)
            .await?
            .ok_or_else(|| EngineError::NotFound(format!("backup {id} does not exist")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_backup_is_named_after_its_operation() {
        assert_eq!(backup_id_of("op-0123456789abcdef"), "bk-0123456789abcdef");
    }
}
