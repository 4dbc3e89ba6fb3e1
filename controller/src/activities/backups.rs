//! Activities of a backup: read who could take it, record it in the CMS, and have the chosen
//! member's sidecar take it into the instance's store.

use std::sync::Arc;
use std::time::Duration;

use duroxide::ActivityContext;
use serde::{Deserialize, Serialize};
use toygres_common::domain::MemberState;
use toygres_common::sidecar_api::{BackupKind, BackupRequest};

use super::deps::{describe, ActivityDeps};
use super::members::InstanceRef;
use super::sidecar::sidecar;
use crate::backups::source::BackupCandidate;
use crate::cms::backups::{BackupFinished, BackupInsert, BackupStarted};

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

/// What a backup stored, from the sidecar's manifest.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackupTaken {
    /// The sidecar's id of the backup (its name in the store).
    pub sidecar_id: String,
    /// Where its objects lie, relative to the store URL.
    pub store_path: String,
    pub from_standby: bool,
    pub raw_bytes: u64,
    pub stored_bytes: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_lsn: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_lsn: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeline: Option<u32>,
}

/// Has the member's sidecar take the backup. One synchronous request, bounded by
/// `timeout_secs` (the sidecar finishes a backup whose caller hung up; polling a sidecar job
/// is left for later).
pub async fn take_backup(
    deps: Arc<ActivityDeps>,
    _ctx: ActivityContext,
    input: TakeBackupInput,
) -> Result<BackupTaken, String> {
    let client = sidecar(
        &deps,
        &input.instance,
        &input.member,
        Duration::from_secs(input.timeout_secs.max(60)),
    )
    .await?;
    let manifest = client
        .backup(&BackupRequest {
            kind: input.kind,
            databases: input.databases.clone(),
        })
        .await
        .map_err(describe)?;
    let folder = match manifest.kind {
        BackupKind::Base => format!("{}/base/{}", manifest.instance, manifest.id),
        BackupKind::Logical => format!("{}/logical/{}", manifest.instance, manifest.id),
    };
    Ok(BackupTaken {
        store_path: folder,
        sidecar_id: manifest.id,
        from_standby: manifest.from_standby,
        raw_bytes: manifest.raw_bytes,
        stored_bytes: manifest.stored_bytes,
        start_lsn: manifest.start_lsn,
        stop_lsn: manifest.stop_lsn,
        timeline: manifest.timeline,
    })
}

/// How a backup ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackupEndInput {
    pub backup_id: String,
    /// What it stored; `None` when it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub taken: Option<BackupTaken>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Records the backup succeeded or failed (once).
pub async fn record_backup_finished(
    deps: Arc<ActivityDeps>,
    _ctx: ActivityContext,
    input: BackupEndInput,
) -> Result<(), String> {
    match &input.taken {
        Some(t) => deps
            .cms
            .finish_backup_succeeded(
                &input.backup_id,
                &BackupFinished {
                    store_path: Some(&t.store_path),
                    from_standby: t.from_standby,
                    raw_bytes: Some(t.raw_bytes),
                    stored_bytes: Some(t.stored_bytes),
                    start_lsn: t.start_lsn.as_deref(),
                    stop_lsn: t.stop_lsn.as_deref(),
                    timeline: t.timeline,
                },
            )
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
