//! *BackupSchedule*: eternal orchestrations per instance with backups on, one that takes its
//! scheduled base backups and one its scheduled logical backups (of every database). Each turn reads the instance's schedule from the CMS, asks
//! [`next_step`] whether a run is due, and either queues a base backup on the instance's actor
//! (so it never runs beside a switchover or another backup) or waits on a durable timer; then it
//! continues as new, carrying only the schedule it planned for and the time it planned from.
//!
//! Durable timers and that small state are what make a controller restart neither lose a run
//! nor take one twice: a run queued before a crash is in the history, and a run that fell due
//! while the controller was down fires once when it comes back. The queueing activity runs at
//! least once, so a run is made once *in effect* by its operation id: since version 1.0.1 it is
//! derived from the instance's incarnation, the kind and the cron tick ([`scheduled_ids`]), so
//! every attempt (and any loop that ever fires the same tick) names the same operation; the
//! activity records it once and queues it again only while it is still pending, and the actor
//! never runs one operation id twice (its child orchestration's id is the operation id, and
//! duroxide refuses a second child of a used id). Version 1.0.0 (ids from `ctx.new_guid()`)
//! stays registered for the histories that began with it; they move to 1.0.1 at their next
//! continue-as-new.
//!
//! Version 1.0.2 (issue 17: the loops were the largest fixed cost of a quiet fleet, about 5
//! turns per look at the schedule) looks [`RECHECKS_PER_EXECUTION`] times per execution, so
//! the continue-as-new and the prune of old executions come once per that many looks, and it
//! takes the time from the schedule read (an activity's result, so replay safe) instead of a
//! `utc_now` step: a look costs two turns (the read's result, the timer's).

use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use duroxide::OrchestrationContext;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
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

/// Version 1.0.2: looks at the schedule this many times before it continues as new.
pub const RECHECKS_PER_EXECUTION: u32 = 10;

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

/// The operation and backup ids of the scheduled run of `instance` (the incarnation created at
/// `created_at`) of `kind` due at `due`: the same for every attempt at that run, different for
/// any other tick, kind or incarnation. Shaped like every other id (`op-`/`bk-` and 16 hex
/// digits).
pub fn scheduled_ids(
    instance: &str,
    created_at: &str,
    kind: BackupKind,
    due: DateTime<Utc>,
) -> (String, String) {
    let kind = match kind {
        BackupKind::Base => "base",
        BackupKind::Logical => "logical",
    };
    let digest = Sha256::new()
        .chain_update(b"toygres scheduled backup v1\0")
        .chain_update(instance.as_bytes())
        .chain_update(b"\0")
        .chain_update(created_at.as_bytes())
        .chain_update(b"\0")
        .chain_update(kind.as_bytes())
        .chain_update(b"\0")
        .chain_update(rfc3339(due).as_bytes())
        .finalize();
    let hex = hex::encode(&digest[..8]);
    (format!("op-{hex}"), format!("bk-{hex}"))
}

/// Where a turn gets the ids of a run it queues.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RunIds {
    /// Version 1.0.0: from the replay-safe GUID (frozen: its histories replay `new_guid`).
    Guid,
    /// Version 1.0.1: from the run itself ([`scheduled_ids`]).
    FromTick,
}

/// Where a look at the schedule gets the time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Clock {
    /// Versions 1.0.0 and 1.0.1: a `utc_now` step (frozen: their histories replay it).
    Step,
    /// Version 1.0.2: the schedule read's own time (a `utc_now` step only if it has none).
    FromRead,
}

/// Version 1.0.0 of the loop, kept for the histories that began with it.
pub async fn backup_schedule(
    ctx: OrchestrationContext,
    input: BackupScheduleInput,
) -> Result<(), String> {
    prune_earlier(&ctx, &input).await;
    match look(&ctx, input, RunIds::Guid, Clock::Step).await? {
        Some(next) => ctx.continue_as_new_typed(&next).await.map(|_| ()),
        None => Ok(()),
    }
}

/// Version 1.0.1 of the loop: a run's operation id is derived from the run
/// ([`scheduled_ids`]), so a run queued twice is one operation.
pub async fn backup_schedule_1_0_1(
    ctx: OrchestrationContext,
    input: BackupScheduleInput,
) -> Result<(), String> {
    prune_earlier(&ctx, &input).await;
    match look(&ctx, input, RunIds::FromTick, Clock::Step).await? {
        Some(next) => ctx.continue_as_new_typed(&next).await.map(|_| ()),
        None => Ok(()),
    }
}

/// Version 1.0.2 of the loop: [`RECHECKS_PER_EXECUTION`] looks per execution, the time from
/// the schedule read.
pub async fn backup_schedule_1_0_2(
    ctx: OrchestrationContext,
    input: BackupScheduleInput,
) -> Result<(), String> {
    prune_earlier(&ctx, &input).await;
    let mut input = input;
    for _ in 0..RECHECKS_PER_EXECUTION {
        match look(&ctx, input, RunIds::FromTick, Clock::FromRead).await? {
            Some(next) => input = next,
            None => return Ok(()),
        }
    }
    ctx.continue_as_new_typed(&input).await.map(|_| ())
}

/// Drops the loop's finished executions (every execution but the first continued as new).
async fn prune_earlier(ctx: &OrchestrationContext, input: &BackupScheduleInput) {
    if input.anchor.is_some() {
        // Each turn continues as new: drop the finished executions.
        let prune = ActorRef {
            instance: input.instance.clone(),
            actor_id: ctx.instance_id(),
        };
        if let Err(e) = call::<_, ()>(ctx, act::PRUNE_ACTOR_HISTORY, &prune).await {
            ctx.trace_warn(format!("prune the backup schedule's history: {e}"));
        }
    }
}

/// One look at the schedule: queues the run that is due or waits until the next look.
/// Returns the state to go on with, `None` once the instance is gone.
async fn look(
    ctx: &OrchestrationContext,
    input: BackupScheduleInput,
    ids: RunIds,
    clock: Clock,
) -> Result<Option<BackupScheduleInput>, String> {
    let read: Result<ScheduleFacts, String> = call(
        ctx,
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
            return Ok(Some(input));
        }
    };
    if facts.created_at.as_deref() != Some(input.created_at.as_str()) {
        ctx.trace_info(format!(
            "backup schedule of {} ends: the instance is gone",
            input.instance
        ));
        return Ok(None);
    }
    let read_at = facts
        .now
        .as_deref()
        .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
        .map(|t| t.with_timezone(&Utc));
    let now = match (clock, read_at) {
        (Clock::FromRead, Some(now)) => now,
        _ => DateTime::<Utc>::from(ctx.utc_now().await?),
    };
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
            let (operation_id, backup_id) = match ids {
                RunIds::Guid => {
                    let guid = ctx.new_guid().await?;
                    let hex: String = guid
                        .chars()
                        .filter(char::is_ascii_hexdigit)
                        .take(16)
                        .collect();
                    (format!("op-{hex}"), format!("bk-{hex}"))
                }
                RunIds::FromTick => {
                    scheduled_ids(&input.instance, &input.created_at, input.kind, due)
                }
            };
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
                        ctx,
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
    Ok(Some(next))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text)
            .unwrap()
            .with_timezone(&Utc)
    }

    #[test]
    fn a_run_has_the_same_ids_at_every_attempt_and_no_other_run_shares_them() {
        let due = at("2026-12-06T01:00:00Z");
        let created = "2026-12-01 10:00:00.123+00";
        let (op, bk) = scheduled_ids("db", created, BackupKind::Base, due);
        assert_eq!(
            (op.clone(), bk.clone()),
            scheduled_ids("db", created, BackupKind::Base, due)
        );
        assert!(op.starts_with("op-") && bk.starts_with("bk-"), "{op} {bk}");
        assert_eq!(op.len(), 19);
        assert_eq!(op[3..], bk[3..]);
        assert!(op[3..].chars().all(|c| c.is_ascii_hexdigit()));
        let others = [
            scheduled_ids("db", created, BackupKind::Logical, due),
            scheduled_ids("db", created, BackupKind::Base, at("2026-12-13T01:00:00Z")),
            scheduled_ids("db", "2026-12-02 10:00:00+00", BackupKind::Base, due),
            scheduled_ids("db2", created, BackupKind::Base, due),
        ];
        for (other, _) in &others {
            assert_ne!(&op, other);
        }
    }
}
