//! Activities of a backup: read who could take it, record it in the CMS, and have the chosen
//! member's sidecar take it into the instance's store.

use std::sync::Arc;
use std::time::Duration;

use duroxide::ActivityContext;
use serde::{Deserialize, Serialize};
use toygres_common::domain::MemberState;
use toygres_common::sidecar_api::{BackupKind, BackupManifest, BackupRequest};

use super::deps::{describe, ActivityDeps};
use super::members::InstanceRef;
use super::sidecar::sidecar;
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
    let client = sidecar(
        &deps,
        &input.instance,
        &input.member,
        Duration::from_secs(input.timeout_secs.max(60)),
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
