//! Activities of a backup: read who could take it, record it in the CMS, and have the chosen
//! member's sidecar take it into the instance's store; and of a backup schedule: read it, and
//! queue a scheduled backup on the instance's actor.

use std::sync::Arc;

use duroxide::ActivityContext;
use serde::{Deserialize, Serialize};
use toygres_common::domain::{InstanceState, MemberState, OperationKind};
use toygres_common::sidecar_api::{BackupKind, BackupManifest, BackupRequest};

use super::deps::{describe, ActivityDeps};
use super::members::InstanceRef;
use super::sidecar::sidecar_within;
use crate::backups::source::BackupCandidate;
use crate::cms::backups::{BackupInsert, BackupStarted};

/// The instance's members as a backup's choice of member needs them.
pub async fn backup_candidates(
    deps: Arc<ActivityDeps>,
    _ctx: ActivityContext,
    input: InstanceRef,
) -> Result<Vec<BackupCandidate>, String> {
    let members = deps
        .cms
        .list_members(&input.instance)
        .await
        .map_err(describe)?;
    Ok(members
        .iter()
        .filter_map(|m| {
            Some(BackupCandidate {
                member: m.name.clone(),
                role: m.parsed_role(),
                state: m.parsed_state().unwrap_or(MemberState::Failed),
                health: m.parsed_health(),
                lag_bytes: m.lag_bytes.and_then(|l| u64::try_from(l).ok()),
            })
            .filter(|c| c.state != MemberState::Deleted)
        })
        .collect())
}

/// A backup that begins, as its operation records it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackupStartInput {
    pub backup_id: String,
    pub instance: String,
    pub operation_id: String,
    pub kind: BackupKind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    pub member: String,
}

/// Records the backup `running`; fails when another backup of the instance is in progress.
pub async fn record_backup_started(
    deps: Arc<ActivityDeps>,
    _ctx: ActivityContext,
    input: BackupStartInput,
) -> Result<(), String> {
    let outcome = deps
        .cms
        .insert_backup(&BackupStarted {
            id: &input.backup_id,
            instance: &input.instance,
            operation_id: &input.operation_id,
            kind: input.kind,
            label: input.label.as_deref(),
            member: &input.member,
        })
        .await
        .map_err(describe)?;
    match outcome {
        BackupInsert::Recorded => Ok(()),
        BackupInsert::Busy(other) => Err(format!(
            "backup {other} of instance {} is still in progress",
            input.instance
        )),
    }
}

/// Take a backup on one member.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TakeBackupInput {
    pub instance: String,
    pub member: String,
    pub kind: BackupKind,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub databases: Vec<String>,
    /// The longest the backup may take.
    pub timeout_secs: u64,
}

/// Has the member's sidecar take the backup. One synchronous request, bounded by
/// `timeout_secs` (the sidecar finishes a backup whose caller hung up; polling a sidecar job
/// is left for later).
pub async fn take_backup(
    deps: Arc<ActivityDeps>,
    _ctx: ActivityContext,
    input: TakeBackupInput,
) -> Result<BackupManifest, String> {
    let client = sidecar_within(
        &deps,
        &input.instance,
        &input.member,
        input.timeout_secs.max(60),
    )
    .await?;
    client
        .backup(&BackupRequest {
            kind: input.kind,
            databases: input.databases.clone(),
        })
        .await
        .map_err(describe)
}

/// How a backup ended.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BackupEndInput {
    pub backup_id: String,
    /// The sidecar's manifest of what it stored; `None` when it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub manifest: Option<BackupManifest>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Records the backup succeeded or failed (once).
pub async fn record_backup_finished(
    deps: Arc<ActivityDeps>,
    _ctx: ActivityContext,
    input: BackupEndInput,
) -> Result<(), String> {
    match &input.manifest {
        Some(manifest) => deps
            .cms
            .finish_backup_succeeded(&input.backup_id, manifest)
            .await
            .map_err(describe),
        None => deps
            .cms
            .finish_backup_failed(
                &input.backup_id,
                input.error.as_deref().unwrap_or("the backup failed"),
            )
            .await
            .map_err(describe),
    }
}

/// What a backup schedule's loop reads of its instance at each turn.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScheduleFacts {
    /// The instance's `created_at`; `None` once it is deleted or being deleted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_at: Option<String>,
    /// It is running (a backup can be queued on its actor).
    pub running: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub actor_id: Option<String>,
    /// The base backup schedule; `None` when backups are off.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_schedule: Option<String>,
    #[serde(default)]
    pub suspended: bool,
    /// The logical backup schedule; `None` when backups are off.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logical_schedule: Option<String>,
    /// How long the loop may sleep before it looks again (longer in a large fleet; `None`, as
    /// in histories written before it: the loop's own default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recheck_ms: Option<u64>,
    /// RFC 3339: when this was read (the loop's clock since version 1.0.2; `None` in histories
    /// written before it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub now: Option<String>,
}

/// A schedule loop looks at its schedule at least this often (in a small fleet).
pub const SCHEDULE_RECHECK_MS: u64 = 20_000;
/// The turns of a whole fleet's schedule loops, per second on average: a larger fleet spreads
/// them wider (100 s at 500 instances), so a changed schedule is followed later.
pub const SCHEDULE_TURNS_PER_SEC: u64 = 5;

impl ScheduleFacts {
    /// [`ScheduleFacts::active_schedule`] for logical backups.
    pub fn active_logical_schedule(&self) -> Option<String> {
        self.logical_schedule
            .clone()
            .filter(|_| self.running && !self.suspended && self.actor_id.is_some())
    }

    /// The schedule the loop follows now: none while the instance is not running, its
    /// backups are off or its schedule is suspended.
    pub fn active_schedule(&self) -> Option<String> {
        self.base_schedule
            .clone()
            .filter(|_| self.running && !self.suspended && self.actor_id.is_some())
    }
}

/// Reads the instance's state and backup schedule.
pub async fn read_backup_schedule(
    deps: Arc<ActivityDeps>,
    _ctx: ActivityContext,
    input: InstanceRef,
) -> Result<ScheduleFacts, String> {
    let instance = deps
        .cms
        .get_instance(&input.instance)
        .await
        .map_err(describe)?
        .filter(|i| {
            !i.summary
                .parsed_state()
                .is_some_and(InstanceState::is_ending)
        });
    let Some(instance) = instance else {
        return Ok(ScheduleFacts {
            created_at: None,
            running: false,
            actor_id: None,
            base_schedule: None,
            suspended: false,
            logical_schedule: None,
            recheck_ms: None,
            now: Some(now_rfc3339()),
        });
    };
    let config = deps
        .cms
        .get_backup_config(&input.instance)
        .await
        .map_err(describe)?
        .flatten();
    Ok(ScheduleFacts {
        running: instance.summary.parsed_state() == Some(InstanceState::Running),
        created_at: Some(instance.summary.created_at),
        actor_id: instance.actor_id,
        base_schedule: config.as_ref().map(|c| c.base_schedule.clone()),
        logical_schedule: config.as_ref().map(|c| c.logical_schedule.clone()),
        suspended: config.is_some_and(|c| c.suspended),
        recheck_ms: Some(super::deps::jittered_ms(super::deps::spread_ms(
            deps.fleet_size(),
            SCHEDULE_RECHECK_MS,
            SCHEDULE_TURNS_PER_SEC,
        ))),
        now: Some(now_rfc3339()),
    })
}

fn now_rfc3339() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

/// A scheduled backup to queue on the instance's actor.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScheduledBackupInput {
    pub instance: String,
    pub actor_id: String,
    /// The actor's command queue.
    pub queue: String,
    /// Chosen by the schedule's orchestration (derived from the run, or from its replay-safe
    /// guid in version 1.0.0), so a second attempt finds the first.
    pub operation_id: String,
    pub backup_id: String,
    /// The actor's `backup` command, as JSON (the orchestration layer owns its type).
    pub command: serde_json::Value,
}

/// What became of a scheduled backup.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "outcome")]
pub enum QueuedBackup {
    Queued { backup_id: String },
    Skipped { reason: String },
}

/// Records the scheduled backup's operation and queues its command on the actor; skipped while
/// another backup of the instance is in progress.
///
/// It runs at least once, and a run is once in effect: the operation id names the run (see
/// `orchestrations::backup_schedule::scheduled_ids`), so an operation already recorded under
/// it comes from an earlier attempt. That attempt may have stopped between recording and
/// queueing, so a command still `pending` is queued again; a second copy in the queue is
/// harmless, as the actor never runs one operation id twice. An operation the actor already
/// took (running, finished or cancelled) is not queued again.
pub async fn queue_scheduled_backup(
    deps: Arc<ActivityDeps>,
    ctx: ActivityContext,
    input: ScheduledBackupInput,
) -> Result<QueuedBackup, String> {
    let queued = QueuedBackup::Queued {
        backup_id: input.backup_id.clone(),
    };
    let recorded = deps
        .cms
        .get_operation(&input.operation_id)
        .await
        .map_err(describe)?;
    match recorded {
        Some(operation) if operation.status != "pending" => return Ok(queued),
        Some(_) => {}
        None => {
            if let Some(running) = deps
                .cms
                .running_backup(&input.instance)
                .await
                .map_err(describe)?
            {
                return Ok(QueuedBackup::Skipped {
                    reason: format!("backup {running} is still in progress"),
                });
            }
            deps.cms
                .insert_operation(
                    &input.operation_id,
                    OperationKind::Backup,
                    &input.instance,
                    &input.command,
                )
                .await
                .map_err(describe)?;
        }
    }
    ctx.get_client()
        .enqueue_event(&input.actor_id, &input.queue, input.command.to_string())
        .await
        .map_err(|e| format!("queue the backup on {}'s actor: {e}", input.instance))?;
    Ok(queued)
}
