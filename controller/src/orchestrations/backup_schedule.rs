//! *BackupSchedule*: eternal orchestrations per instance with backups on, one that takes its
//! scheduled base backups and one its scheduled logical backups (of every database). Each turn reads the instance's schedule from the CMS, asks
//! [`next_step`] whether a run is due, and either queues a base backup on the instance's actor
//! (so it never runs beside a switchover or another backup) or waits on a durable timer; then it
//! continues as new, carrying only the schedule it planned for and the time it planned from.
//!
//! Durable timers and that small state are what make a controller restart neither lose a run
//! nor take one twice: a run queued before a crash is in the history (its operation id comes
//! from `ctx.new_guid()`, and queueing it again is a no-op), and a run that fell due while the
//! controller was down fires once when it comes back.

use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use duroxide::OrchestrationContext;
use serde::{Deserialize, Serialize};
use toygres_common::sidecar_api::BackupKind;

use super::backup::BackupInput;
use super::durable::call;
use super::instance_actor::{ActorCommand, COMMANDS_QUEUE};
use crate::activities::backups::{QueuedBackup, ScheduleFacts, ScheduledBackupInput};
use crate::activities::members::InstanceRef;
use crate::activities::names as act;
use crate::activities::records::ActorRef;
use crate::backups::schedule::{next_step, Schedule, ScheduleStep};

/// The longest the loop sleeps before it looks at the schedule again: how long a changed,
/// suspended or resumed schedule may take to be followed (in a large fleet the schedule read
/// says longer: `ScheduleFacts::recheck_ms`).
pub const RECHECK: Duration =
    Duration::from_millis(crate::activities::backups::SCHEDULE_RECHECK_MS);

/// The orchestration id of an instance's schedule: one per incarnation of the name (an
/// instance deleted and created again gets a new one; a finished id cannot start again).
pub fn schedule_id(instance: &str, created_at: &str) -> String {
    let stamp: String = created_at.chars().filter(char::is_ascii_digit).collect();
    format!("backup-schedule-{instance}-{stamp}")
}

/// The orchestration id of an instance's logical backup schedule.
pub fn logical_schedule_id(instance: &str, created_at: &str) -> String {
    format!("logical-{}", schedule_id(instance, created_at))
}

/// The loop's state, carried from one execution to the next.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackupScheduleInput {
    pub instance: String,
    /// The instance's `created_at` when this loop started: a loop whose instance was deleted
    /// and created again under the same name ends.
    pub created_at: String,
    /// The schedule the anchor belongs to (`None`: off or suspended). A different schedule
    /// starts from now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub planned: Option<String>,
    /// RFC 3339: the next run is the first after this (the last run, or when the schedule
    /// started, changed or was resumed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub anchor: Option<String>,
    /// Which backups this loop takes (base when absent: the loops started before logical
    /// schedules existed).
    #[serde(default, skip_serializing_if = "is_base")]
    pub kind: BackupKind,
}

fn is_base(kind: &BackupKind) -> bool {
    *kind == BackupKind::Base
}

fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Micros, true)
}

/// One turn of the loop, then continue-as-new (or the end, once the instance is gone).
pub async fn backup_schedule(
    ctx: OrchestrationContext,
    input: BackupScheduleInput,
) -> Result<(), String> {
    if input.anchor.is_some() {
        // Each turn continues as new: drop the finished executions.
        let prune = ActorRef {
            instance: input.instance.clone(),
            actor_id: ctx.instance_id(),
        };
        if let Err(e) = call::<_, ()>(&ctx, act::PRUNE_ACTOR_HISTORY, &prune).await {
            ctx.trace_warn(format!("prune the backup schedule's history: {e}"));
        }
    }
    let read: Result<ScheduleFacts, String> = call(
        &ctx,
        act::READ_BACKUP_SCHEDULE,
        &InstanceRef {
            instance: input.instance.clone(),
        },
    )
    .await;
    let facts = match read {
        Ok(facts) => facts,
        Err(e) => {
            // A passing CMS failure must not end the loop: look again later.
            ctx.trace_warn(format!("read {}'s backup schedule: {e}", input.instance));
            ctx.schedule_timer(RECHECK).await;
            return ctx.continue_as_new_typed(&input).await.map(|_| ());
        }
    };
    if facts.created_at.as_deref() != Some(input.created_at.as_str()) {
        ctx.trace_info(format!(
            "backup schedule of {} ends: the instance is gone",
            input.instance
        ));
        return Ok(());
    }
    let now = DateTime::<Utc>::from(ctx.utc_now().await?);
    let active = match input.kind {
        BackupKind::Base => facts.active_schedule(),
        BackupKind::Logical => facts.active_logical_schedule(),
    };
    let mut next = input.clone();
    let anchor = match (&input.anchor, active == input.planned) {
        (Some(anchor), true) => DateTime::parse_from_rfc3339(anchor)
            .map(|a| a.with_timezone(&Utc))
            .unwrap_or(now),
        _ => {
            next.planned = active.clone();
            now
        }
    };
    next.anchor = Some(rfc3339(anchor));
    let schedule = active.as_deref().and_then(|e| e.parse::<Schedule>().ok());
    // Timers replay by position, not duration: a recheck that changed is replay safe.
    let recheck = facts.recheck_ms.map_or(RECHECK, Duration::from_millis);
    match next_step(schedule.as_ref(), anchor, now, recheck) {
        ScheduleStep::Wait(wait) => {
            ctx.schedule_timer(wait.max(Duration::from_millis(100)))
                .await;
        }
        ScheduleStep::Fire(due) => {
            let guid = ctx.new_guid().await?;
            let hex: String = guid
                .chars()
                .filter(char::is_ascii_hexdigit)
                .take(16)
                .collect();
            let operation_id = format!("op-{hex}");
            let backup_id = format!("bk-{hex}");
            let command = ActorCommand::Backup(BackupInput {
                operation_id: operation_id.clone(),
                instance: input.instance.clone(),
                backup_id: backup_id.clone(),
                kind: input.kind,
                label: Some(format!("scheduled {}", rfc3339(due))),
                databases: Vec::new(),
            });
            let queued: Result<QueuedBackup, String> = match serde_json::to_value(&command) {
                Err(e) => Err(format!("encode the backup command: {e}")),
                Ok(command) => {
                    call(
                        &ctx,
                        act::QUEUE_SCHEDULED_BACKUP,
                        &ScheduledBackupInput {
                            instance: input.instance.clone(),
                            actor_id: facts.actor_id.clone().unwrap_or_default(),
                            queue: COMMANDS_QUEUE.to_string(),
                            operation_id,
                            backup_id,
                            command,
                        },
                    )
                    .await
                }
            };
            match queued {
                Ok(QueuedBackup::Queued { backup_id }) => ctx.trace_info(format!(
                    "scheduled backup {backup_id} of {} queued (due {due})",
                    input.instance
                )),
                Ok(QueuedBackup::Skipped { reason }) => ctx.trace_info(format!(
                    "scheduled backup of {} due {due} skipped: {reason}",
                    input.instance
                )),
                Err(e) => ctx.trace_warn(format!(
                    "scheduled backup of {} due {due} not queued: {e}",
                    input.instance
                )),
            }
            // Missed runs are not caught up one by one: the next is the first after now.
            next.anchor = Some(rfc3339(now));
        }
    }
    ctx.continue_as_new_typed(&next).await.map(|_| ())
}
