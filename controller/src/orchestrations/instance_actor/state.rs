//! What the actor is given and remembers: its input (instance, settings, state carried across
//! continue-as-new), the commands its queue takes, and what it saw of each member.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use toygres_common::controller_api::{HaSettings, ValidatedSwitchover};
use toygres_common::domain::{HaEventKind, InstanceHealth};
use toygres_common::ro_api::{RoBalance, RoFallback};

use crate::activities::members::ActorView;
use crate::orchestrations::backup::BackupInput;
use crate::orchestrations::backup_cleanup::DeleteBackupsInput;
use crate::orchestrations::backup_verify::VerifyBackupInput;
use crate::orchestrations::credentials::RotateCredentialsInput;
use crate::orchestrations::ha::target::PrimarySeen;
use crate::orchestrations::parameters::ParametersInput;
use crate::orchestrations::replicas::{AddReplicaInput, RemoveReplicaInput};
use crate::orchestrations::restore_in_place::RestoreInPlaceInput;

pub use crate::orchestrations::names::COMMANDS_QUEUE;

/// A command for the actor, sent with `client.enqueue_event(actor_id, COMMANDS_QUEUE, json)`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "command", rename_all = "kebab-case")]
pub enum ActorCommand {
    /// Run a health round now instead of at the next tick.
    CheckNow,
    /// Add a standby (operation *AddReplica*).
    AddReplica(AddReplicaInput),
    /// Remove a standby (operation *RemoveReplica*).
    RemoveReplica(RemoveReplicaInput),
    /// Hand the primary role to a standby (operation *Switchover*).
    Switchover(SwitchoverCommand),
    /// Promote a standby because the primary is down (operation *Failover*).
    Failover(FailoverCommand),
    /// Take a base or logical backup (operation *Backup*).
    Backup(BackupInput),
    /// Apply a change of Postgres parameters (operation *Parameters*).
    Parameters(ParametersInput),
    /// Delete backups (operation *DeleteBackups*).
    DeleteBackups(DeleteBackupsInput),
    /// A new password for one of the instance's roles (operation *RotateCredentials*).
    RotateCredentials(RotateCredentialsInput),
    /// Verify a base backup (operation *VerifyBackup*).
    VerifyBackup(VerifyBackupInput),
    /// Replace the instance's data by a restore of its own backup (operation *RestoreInPlace*).
    RestoreInPlace(RestoreInPlaceInput),
}

impl ActorCommand {
    /// The operation the command carries out (`None` for the actor's own `CheckNow`). A
    /// queued operation an operator cancelled is skipped by this id.
    pub fn operation_id(&self) -> Option<&str> {
        match self {
            ActorCommand::CheckNow => None,
            ActorCommand::AddReplica(c) => Some(&c.operation_id),
            ActorCommand::RemoveReplica(c) => Some(&c.operation_id),
            ActorCommand::Switchover(c) => Some(&c.operation_id),
            ActorCommand::Failover(c) => Some(&c.operation_id),
            ActorCommand::Backup(c) => Some(&c.operation_id),
            ActorCommand::Parameters(c) => Some(&c.operation_id),
            ActorCommand::DeleteBackups(c) => Some(&c.operation_id),
            ActorCommand::RotateCredentials(c) => Some(&c.operation_id),
            ActorCommand::VerifyBackup(c) => Some(&c.operation_id),
            ActorCommand::RestoreInPlace(c) => Some(&c.operation_id),
        }
    }
}

/// An operator's switchover.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SwitchoverCommand {
    pub operation_id: String,
    pub request: ValidatedSwitchover,
}

/// An operator's failover.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FailoverCommand {
    pub operation_id: String,
    pub to: Option<String>,
    pub force: bool,
}

/// How the instance actor runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActorSettings {
    pub health_interval_ms: u64,
    /// Replication lag (bytes) beyond which a standby counts as lagging.
    pub max_lag_bytes: u64,
    /// Health rounds before the actor continues as new.
    pub rounds_per_execution: u32,
}

impl Default for ActorSettings {
    fn default() -> Self {
        Self {
            health_interval_ms: 5_000,
            max_lag_bytes: 16 * 1024 * 1024,
            rounds_per_execution: 50,
        }
    }
}

/// The orchestration id of an instance's actor started by operation `operation_id`.
pub fn actor_id(instance: &str, operation_id: &str) -> String {
    format!("actor-{instance}-{operation_id}")
}

/// The actor's input: which instance, how, and what it remembers across executions.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ActorInput {
    pub instance: String,
    pub settings: ActorSettings,
    #[serde(default)]
    pub state: ActorState,
}

impl ActorInput {
    /// A new actor of `instance`, remembering nothing yet.
    pub fn new(instance: &str, settings: ActorSettings) -> Self {
        Self {
            instance: instance.to_string(),
            settings,
            state: ActorState::default(),
        }
    }
}

/// What the actor remembers of the last health round, to tell what changed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActorState {
    pub members: BTreeMap<String, MemberSeen>,
    /// `unknown` until the first round.
    pub health: Option<InstanceHealth>,
    /// Health rounds since the actor started, across executions.
    pub rounds: u64,
    /// Executions so far (continue-as-new count).
    pub generation: u64,
    /// The members the ro endpoint was last pointed at by this actor.
    #[serde(default)]
    pub routed_ro: Option<Vec<String>>,
    /// The fallback and balancing the ro endpoint was last routed with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub routed_ro_policy: Option<(RoFallback, RoBalance)>,
    /// Checks in a row that found the primary down.
    #[serde(default)]
    pub primary_failures: u32,
    /// The primary as last seen healthy: its position and synchronous standbys.
    #[serde(default)]
    pub last_seen: PrimarySeen,
    /// When the last failover by this actor began (ms since the epoch).
    #[serde(default)]
    pub last_failover_ms: Option<u64>,
    /// The last HA alert or decision logged, so a lasting condition is logged once.
    #[serde(default)]
    pub alert: Option<HaEventKind>,
    /// When a rejoin was last tried (ms since the epoch).
    #[serde(default)]
    pub last_rejoin_ms: Option<u64>,
    /// The instance's HA settings as last read.
    #[serde(default)]
    pub ha: HaSettings,
    /// The controller's health interval as last read (it may have been restarted with another).
    #[serde(default)]
    pub health_interval_ms: Option<u64>,
    /// The instance as the last full round read it: what the quick re-checks of a failing
    /// primary decide with.
    #[serde(default)]
    pub view: Option<ActorView>,
    /// Running standbys the healthy primary does not list as streaming: rounds in a row.
    #[serde(default)]
    pub not_following: BTreeMap<String, u32>,
    /// With the fast path (from the view): how long to sleep while the instance is quiet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quiet_interval_ms: Option<u64>,
}

impl ActorState {
    /// Nothing to watch closely: healthy, every member up and within its bounds, no rejoin, no
    /// suspect primary, no alert standing. Only then may the actor sleep its quiet interval.
    pub fn is_quiet(&self) -> bool {
        self.health == Some(InstanceHealth::Healthy)
            && self
                .members
                .values()
                .all(|m| m.healthy && !m.lagging && !m.check_failed && !m.disk_low)
            && self.not_following.is_empty()
            && self.alert.is_none()
            && self.primary_failures == 0
            && self.view.as_ref().is_some_and(|v| v.rejoining.is_empty())
    }
}

/// One member as the last round saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberSeen {
    pub healthy: bool,
    pub lagging: bool,
    /// Its custom health query failed.
    #[serde(default)]
    pub check_failed: bool,
    /// Less than [`DISK_LOW_PERCENT`](super::health::DISK_LOW_PERCENT) of its data file system is free.
    #[serde(default)]
    pub disk_low: bool,
}

/// How long the actor sleeps before its next round: with the fast path and a quiet instance, its
/// quiet interval (the prober wakes it when something changes); else the health interval.
pub fn wake_interval(settings: &ActorSettings, state: &ActorState) -> Duration {
    match state.quiet_interval_ms {
        Some(ms) if state.is_quiet() => Duration::from_millis(ms.max(100)),
        _ => health_interval(settings, state),
    }
}

/// How long the actor waits between health rounds: the interval the CMS last gave it, else its
/// settings' (never under 100 ms).
pub fn health_interval(settings: &ActorSettings, state: &ActorState) -> Duration {
    let ms = state
        .health_interval_ms
        .unwrap_or(settings.health_interval_ms);
    Duration::from_millis(ms.max(100))
}
