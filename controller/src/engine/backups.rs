//! Backups as the engine reads them, the backup configuration a new instance gets (its
//! platform's store when the request names none), and restores into a new instance. (Taking a
//! backup is an actor operation: [`Engine::create_backup`].)

use anyhow::Context as _;
use duroxide::OrchestrationStatus;
use toygres_common::backup_api::{
    BackupConfig, BackupScheduleRequest, BackupScheduleView, BackupView, CleanupPlan,
    RestoreRequest,
};
use toygres_common::controller_api::{
    CreateInstanceRequest, OperationAccepted, ValidatedCreateInstance,
};
use toygres_common::domain::InstanceState;

use super::{Engine, EngineError};
use crate::backups::restore::{
    choose_base_backup, mark_abandoned, ChosenBackup, RestoreRefusal, RestoreTarget,
};
use crate::backups::schedule::Schedule;
use crate::orchestrations::backup_schedule::{
    logical_schedule_id, schedule_id, BackupScheduleInput,
};
use crate::orchestrations::names;
use crate::platform::RestoreSource;
use toygres_common::sidecar_api::BackupKind;

/// A backup's id, from its operation's: `bk-` and the operation's hex digits.
pub fn backup_id_of(operation_id: &str) -> String {
    format!(
        "bk-{}",
        operation_id.strip_prefix("op-").unwrap_or(operation_id)
    )
}

/// The recovery target a restore request names (400 naming the field at fault).
pub(super) fn target_of(request: &RestoreRequest) -> Result<RestoreTarget, EngineError> {
    RestoreTarget::from_request(
        request.time.as_deref(),
        request.lsn.as_deref(),
        request.xid,
        request.restore_point.as_deref(),
    )
    .map_err(|(field, message)| EngineError::Invalid(format!("{field}: {message}")))
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
            self.default_backup_store
                .complete(config)
                .map_err(EngineError::Invalid)?;
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
        self.backups_of(name).await
    }

    /// The instance's backups as the CMS records them, with those an in-place restore left off
    /// the archive's timeline history marked `abandoned` (a member says how the archive's
    /// timelines run; when none answers, nothing is marked and the warning says so).
    pub(super) async fn backups_of(&self, name: &str) -> Result<Vec<BackupView>, EngineError> {
        let mut backups = self.cms.list_backups(name).await?;
        if backups.iter().any(BackupView::is_succeeded_base) {
            match self.archive_end(name).await {
                Ok(archive) => mark_abandoned(&mut backups, &archive),
                Err(e) => tracing::warn!(
                    instance = name,
                    "cannot tell which backups an in-place restore left behind: {e}"
                ),
            }
        }
        Ok(backups)
    }

    /// Creates instance `request.to` from `source`'s backups: its primary restores the base
    /// backup the target needs from the source's store and recovers to the target, then its
    /// standbys are cloned from it. The new instance keeps the source's backup settings and
    /// store but archives under its own name. The source's primary archives its current WAL
    /// first. A target the source's backups or archive cannot reach, an unknown backup or a
    /// taken name is refused before anything is recorded.
    pub async fn restore_instance(
        &self,
        source: &str,
        request: RestoreRequest,
    ) -> Result<OperationAccepted, EngineError> {
        if request.in_place {
            return self.restore_in_place(source, request).await;
        }
        if request.confirm.is_some() {
            return Err(EngineError::Invalid(
                "confirm: only an in-place restore (\"in_place\": true) is confirmed".into(),
            ));
        }
        let target = target_of(&request)?;
        // The restored data holds the source's application database and owner: the new
        // instance keeps them (rather than making empty ones named after itself).
        let app = self.cms.instance_app_access(source).await?;
        let mut spec = ValidatedCreateInstance::try_from(CreateInstanceRequest {
            name: request.to.clone(),
            replicas: request.replicas,
            replication: request.replication.clone(),
            ha: None,
            backup: None,
            database: app.as_ref().map(|a| a.database.clone()),
            owner: app.map(|a| a.owner),
            ro: None,
            // The restored data directory brings the source's parameters.
            parameters: Default::default(),
            profile: None,
            size: None,
        })
        .map_err(|e| {
            let field = if e.field == "name" { "to" } else { e.field };
            EngineError::Invalid(format!("{field}: {}", e.message))
        })?;
        if spec.name == source {
            return Err(EngineError::Invalid(
                "to: a restore makes a new instance: name one other than the source".into(),
            ));
        }
        self.cms
            .get_instance(source)
            .await?
            .filter(|i| i.summary.parsed_state() != Some(InstanceState::Deleted))
            .ok_or_else(|| EngineError::NotFound(format!("instance {source} does not exist")))?;
        let (config, store_url, chosen) = self
            .restore_plan(source, &target, request.backup_id.as_deref())
            .await?;
        tracing::info!(
            source,
            to = %spec.name,
            backup = %chosen.backup_id,
            ?target,
            "restoring into a new instance"
        );
        self.archive_for_restore(source, &target).await?;
        let mut config = config;
        if let Some(secret) = &request.encryption_secret {
            // The key the source's backups were encrypted with, when its secret is not the one
            // the source names (renamed, or given again): the new instance encrypts with it too.
            toygres_common::backup_api::validate_encryption_secret_name(secret)
                .map_err(|e| EngineError::Invalid(format!("encryption_secret: {}", e.message)))?;
            // Only that key: the source's previous keys are not this one's.
            if config.encryption_secret.as_ref() != Some(secret) {
                config.encryption_secret = Some(secret.clone());
                config.previous_encryption_secrets.clear();
            }
        }
        spec.backup = Some(config);
        let restore = RestoreSource {
            instance: source.to_string(),
            store_url,
            backup_id: chosen.store_id,
            target_time: target.time_text(),
            target_lsn: target.lsn_text(),
            target_xid: target.xid_text(),
            target_name: target.name_text(),
            in_place: false,
        };
        self.create_instance_from(spec, Some(restore)).await
    }

    /// What a restore of `source` to `target` uses: its backup configuration, its store, and
    /// the base backup it starts from (`backup_id`, or the newest before the target). Refused
    /// (4xx) when backups are off or no backup reaches the target.
    pub(super) async fn restore_plan(
        &self,
        source: &str,
        target: &RestoreTarget,
        backup_id: Option<&str>,
    ) -> Result<(BackupConfig, String, ChosenBackup), EngineError> {
        let config = self
            .cms
            .get_backup_config(source)
            .await?
            .flatten()
            .ok_or_else(|| {
                EngineError::Conflict(format!(
                    "instance {source} was created with backups off (--no-backup): there is \
                     nothing to restore"
                ))
            })?;
        let store_url = config.store_url.clone().ok_or_else(|| {
            EngineError::Conflict(format!("instance {source} has no backup store recorded"))
        })?;
        let backups = self.backups_of(source).await?;
        let chosen = choose_base_backup(source, &backups, target, backup_id, chrono::Utc::now())
            .map_err(|refusal| match refusal {
                RestoreRefusal::UnknownBackup(_) => EngineError::NotFound(refusal.to_string()),
                RestoreRefusal::NoBackup(_) => EngineError::Conflict(refusal.to_string()),
                _ => EngineError::Invalid(refusal.to_string()),
            })?;
        Ok((config, store_url, chosen))
    }

    /// Starts the instance's *BackupSchedule* loops (base and logical) unless they run already
    /// (none for an instance whose backups are off). Idempotent.
    pub async fn ensure_backup_schedule(&self, name: &str) -> Result<(), EngineError> {
        let Some(instance) = self.cms.get_instance(name).await? else {
            return Ok(());
        };
        if instance
            .summary
            .parsed_state()
            .is_some_and(InstanceState::is_ending)
            || self.cms.get_backup_config(name).await?.flatten().is_none()
        {
            return Ok(());
        }
        let created_at = &instance.summary.created_at;
        for (kind, id) in [
            (BackupKind::Base, schedule_id(name, created_at)),
            (BackupKind::Logical, logical_schedule_id(name, created_at)),
        ] {
            let status = self
                .client
                .get_orchestration_status(&id)
                .await
                .with_context(|| format!("read the status of {name}'s backup schedule"))?;
            if !matches!(status, OrchestrationStatus::NotFound) {
                continue;
            }
            let input = serde_json::to_string(&BackupScheduleInput {
                instance: name.to_string(),
                created_at: created_at.clone(),
                planned: None,
                anchor: None,
                kind,
            })
            .context("encode the backup schedule's input")?;
            self.client
                .start_orchestration(&id, names::BACKUP_SCHEDULE, input)
                .await
                .with_context(|| format!("start {name}'s backup schedule"))?;
            tracing::info!(instance = name, %id, ?kind, "started the instance's backup schedule");
        }
        Ok(())
    }

    /// [`Engine::ensure_backup_schedule`] for every live instance (at start-up and then
    /// periodically, beside the actors).
    pub async fn ensure_backup_schedules(&self) -> Result<(), EngineError> {
        for instance in self.cms.live_instances().await? {
            self.ensure_backup_schedule(&instance.summary.name).await?;
        }
        Ok(())
    }

    /// The instance's base backup schedule and its next run.
    pub async fn backup_schedule(&self, name: &str) -> Result<BackupScheduleView, EngineError> {
        let config = self.backup_config(name).await?;
        Ok(schedule_view(name, &config))
    }

    /// Changes, suspends or resumes the instance's scheduled base backups. Its schedule loop
    /// follows within [`RECHECK`](crate::orchestrations::backup_schedule::RECHECK).
    pub async fn set_backup_schedule(
        &self,
        name: &str,
        request: BackupScheduleRequest,
    ) -> Result<BackupScheduleView, EngineError> {
        let mut config = self.backup_config(name).await?;
        if let Some(expr) = &request.base_schedule {
            let schedule = expr
                .trim()
                .parse::<Schedule>()
                .map_err(|e| EngineError::Invalid(format!("base_schedule: {e}")))?;
            config.base_schedule = schedule.expr().to_string();
        }
        if let Some(expr) = &request.logical_schedule {
            let schedule = expr
                .trim()
                .parse::<Schedule>()
                .map_err(|e| EngineError::Invalid(format!("logical_schedule: {e}")))?;
            config.logical_schedule = schedule.expr().to_string();
        }
        if let Some(suspended) = request.suspended {
            config.suspended = suspended;
        }
        self.cms.set_backup_config(name, &config).await?;
        self.ensure_backup_schedule(name).await?;
        Ok(schedule_view(name, &config))
    }

    /// What applying the instance's retention policy now would keep and delete.
    pub async fn cleanup_plan(&self, name: &str) -> Result<CleanupPlan, EngineError> {
        let config = self.backup_config(name).await?;
        let backups = self.backups_of(name).await?;
        Ok(crate::backups::cleanup::plan(
            name,
            &config.retention,
            &backups,
            chrono::Utc::now(),
        ))
    }

    pub(super) async fn backup_config(&self, name: &str) -> Result<BackupConfig, EngineError> {
        self.cms
            .get_instance(name)
            .await?
            .filter(|i| i.summary.parsed_state() != Some(InstanceState::Deleted))
            .ok_or_else(|| EngineError::NotFound(format!("instance {name} does not exist")))?;
        self.cms
            .get_backup_config(name)
            .await?
            .flatten()
            .ok_or_else(|| {
                EngineError::Conflict(format!(
                    "instance {name} was created with backups off (--no-backup): it has no backup \
                 schedule"
                ))
            })
    }

    /// One backup; a base backup is marked `abandoned` as in [`Engine::list_backups`] (which
    /// needs the archive's timeline history from a member of its instance).
    pub async fn get_backup(&self, id: &str) -> Result<BackupView, EngineError> {
        let backup = self
            .cms
            .get_backup(id)
            .await?
            .ok_or_else(|| EngineError::NotFound(format!("backup {id} does not exist")))?;
        if !backup.is_succeeded_base() {
            return Ok(backup);
        }
        let marked = self
            .backups_of(&backup.instance)
            .await?
            .into_iter()
            .find(|b| b.id == backup.id);
        Ok(marked.unwrap_or(backup))
    }
}

/// The schedule as the API shows it, with its next run from now.
fn schedule_view(name: &str, config: &BackupConfig) -> BackupScheduleView {
    let next_run = |expr: &str| {
        (!config.suspended)
            .then(|| expr.parse::<Schedule>().ok())
            .flatten()
            .and_then(|s| s.next_after(chrono::Utc::now()))
            .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
    };
    BackupScheduleView {
        instance: name.to_string(),
        base_schedule: config.base_schedule.clone(),
        suspended: config.suspended,
        next_run: next_run(&config.base_schedule),
        logical_schedule: Some(config.logical_schedule.clone()),
        next_logical_run: next_run(&config.logical_schedule),
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
