//! The controller's domain words as types: a member's role and state, an instance's state and
//! health, an operation's kind and status, an event's kind, the state of a handover (switchover
//! or failover) and a standby's synchronous state. Each serializes to the string the CMS stores
//! and the API shows (so neither changes), parses from it at the boundary, and is matched
//! exhaustively everywhere else.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

pub use crate::controller_api::ReplicationMode;
pub use crate::sidecar_api::Role;

/// A value that is not one of a domain word's names.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{value:?} is not a known {word}")]
pub struct UnknownWord {
    /// What was being parsed (`member state`, `event kind`, …).
    pub word: &'static str,
    pub value: String,
}

/// Gives a word its names: `as_str`, `Display`, `FromStr` and serde as those names.
macro_rules! words {
    ($(#[$meta:meta])* $name:ident, $word:literal { $($(#[$vmeta:meta])* $variant:ident => $text:literal,)+ }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum $name {
            $($(#[$vmeta])* $variant,)+
        }

        impl $name {
            /// Every value, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant,)+];

            /// The name the CMS stores and the API shows.
            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text,)+
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl FromStr for $name {
            type Err = UnknownWord;

            fn from_str(s: &str) -> Result<Self, Self::Err> {
                match s {
                    $($text => Ok($name::$variant),)+
                    other => Err(UnknownWord { word: $word, value: other.to_string() }),
                }
            }
        }

        /// Compares with the name, so a word reads like the string it stands for.
        impl PartialEq<str> for $name {
            fn eq(&self, other: &str) -> bool {
                self.as_str() == other
            }
        }

        impl PartialEq<&str> for $name {
            fn eq(&self, other: &&str) -> bool {
                self.as_str() == *other
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.serialize_str(self.as_str())
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                let text = String::deserialize(deserializer)?;
                text.parse().map_err(serde::de::Error::custom)
            }
        }
    };
}

words! {
    /// Where a member is in its life, as the CMS records it.
    MemberState, "member state" {
        /// Being created (copied, initialised or restored).
        Creating => "creating",
        /// Serves in its role.
        Running => "running",
        /// Stopped and kept stopped, its data kept.
        Fenced => "fenced",
        /// A former primary (or a diverged standby) on its way back as a standby.
        Rejoining => "rejoining",
        Stopped => "stopped",
        Deleting => "deleting",
        Deleted => "deleted",
        Failed => "failed",
    }
}

words! {
    /// Where an instance is in its life.
    InstanceState, "instance state" {
        Creating => "creating",
        Running => "running",
        /// Its data is being replaced by a restore of one of its backups (in place).
        Restoring => "restoring",
        Deleting => "deleting",
        Deleted => "deleted",
        Failed => "failed",
    }
}

impl InstanceState {
    /// Whether the instance is gone or going (no actor looks after it any more).
    pub fn is_ending(self) -> bool {
        match self {
            InstanceState::Deleting | InstanceState::Deleted => true,
            InstanceState::Creating
            | InstanceState::Running
            | InstanceState::Restoring
            | InstanceState::Failed => false,
        }
    }
}

words! {
    /// An instance's health, as its actor last assessed it.
    InstanceHealth, "instance health" {
        /// Not assessed yet.
        Unknown => "unknown",
        /// Every member is healthy.
        Healthy => "healthy",
        /// The primary is healthy, not every standby is.
        Degraded => "degraded",
        /// No healthy primary.
        Unavailable => "unavailable",
    }
}

words! {
    /// A member's health, as the last probe found it.
    MemberHealth, "member health" {
        /// Not probed yet.
        Unknown => "unknown",
        Healthy => "healthy",
        Unhealthy => "unhealthy",
    }
}

impl MemberHealth {
    /// `healthy` or `unhealthy`, as a probe found it.
    pub fn of_probe(healthy: bool) -> Self {
        if healthy {
            MemberHealth::Healthy
        } else {
            MemberHealth::Unhealthy
        }
    }
}

words! {
    /// What an operation does.
    OperationKind, "operation kind" {
        Create => "create",
        Delete => "delete",
        AddReplica => "add-replica",
        RemoveReplica => "remove-replica",
        Switchover => "switchover",
        /// A failover an operator asked for.
        Failover => "failover",
        /// A failover the instance's actor decided.
        AutoFailover => "auto-failover",
        /// The actor's retry of a former primary's rejoin.
        Rejoin => "rejoin",
        /// A base or logical backup.
        Backup => "backup",
        /// A change of Postgres parameters.
        Parameters => "parameters",
        /// The deletion of backups an operator named.
        BackupDelete => "backup-delete",
        /// The deletion of the backups the retention policy does not keep.
        BackupCleanup => "backup-cleanup",
        /// A new password for one of the instance's roles.
        CredentialsRotate => "credentials-rotate",
        /// The verification of a base backup (restored aside and queried).
        BackupVerify => "backup-verify",
        /// An instance's data replaced by a restore of its own backup.
        RestoreInPlace => "restore-in-place",
    }
}

words! {
    /// Where a backup is.
    BackupStatus, "backup status" {
        Running => "running",
        Succeeded => "succeeded",
        Failed => "failed",
    }
}

words! {
    /// Where an operation is.
    OperationStatus, "operation status" {
        /// Accepted, not started yet.
        Pending => "pending",
        Running => "running",
        Succeeded => "succeeded",
        Failed => "failed",
        Cancelled => "cancelled",
    }
}

impl OperationStatus {
    /// Whether the operation has ended.
    pub fn is_finished(self) -> bool {
        match self {
            OperationStatus::Succeeded | OperationStatus::Failed | OperationStatus::Cancelled => {
                true
            }
            OperationStatus::Pending | OperationStatus::Running => false,
        }
    }
}

words! {
    /// The state a switchover or failover is in (its progress shows it).
    HandoverState, "handover state" {
        WaitingForSync => "waiting_for_sync",
        FencingPrimary => "fencing_primary",
        PromotingReplica => "promoting_replica",
        UpdatingRouting => "updating_routing",
        CleaningUpOldPrimary => "cleaning_up_old_primary",
        Completed => "completed",
        Failed => "failed",
    }
}

impl HandoverState {
    /// How many steps a handover shows.
    pub const STEPS: u32 = 6;

    /// Its step out of [`HandoverState::STEPS`] (0 once failed).
    pub fn step(self) -> u32 {
        match self {
            HandoverState::WaitingForSync => 1,
            HandoverState::FencingPrimary => 2,
            HandoverState::PromotingReplica => 3,
            HandoverState::UpdatingRouting => 4,
            HandoverState::CleaningUpOldPrimary => 5,
            HandoverState::Completed => Self::STEPS,
            HandoverState::Failed => 0,
        }
    }
}

words! {
    /// How a primary reports a standby (`pg_stat_replication.sync_state`).
    SyncState, "sync state" {
        Async => "async",
        /// Would become synchronous if a synchronous one went away.
        Potential => "potential",
        Sync => "sync",
        /// One of a quorum (`ANY n`).
        Quorum => "quorum",
    }
}

impl SyncState {
    /// Whether a commit waits for this standby: it is synchronous or in the quorum.
    pub fn confirms_commits(self) -> bool {
        match self {
            SyncState::Sync | SyncState::Quorum => true,
            SyncState::Async | SyncState::Potential => false,
        }
    }

    /// Whether a reported sync state (text, as the sidecar forwards it) confirms commits.
    pub fn text_confirms_commits(text: &str) -> bool {
        text.parse::<SyncState>()
            .is_ok_and(SyncState::confirms_commits)
    }
}

/// The stage of an operation an event reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OperationStage {
    Started,
    Succeeded,
    Failed,
}

impl OperationStage {
    fn as_str(self) -> &'static str {
        match self {
            OperationStage::Started => "started",
            OperationStage::Succeeded => "succeeded",
            OperationStage::Failed => "failed",
        }
    }
}

words! {
    /// What the health loop and the HA runbooks log.
    HaEventKind, "event kind" {
        MemberDown => "member-down",
        MemberUp => "member-up",
        LagHigh => "lag-high",
        LagOk => "lag-ok",
        DiskLow => "disk-low",
        DiskOk => "disk-ok",
        /// Backups were deleted from the store (by an operator or the retention policy); the
        /// event's details hold their records.
        BackupsDeleted => "backups-deleted",
        CheckFailed => "check-failed",
        CheckOk => "check-ok",
        InstanceHealth => "instance-health",
        SyncDegraded => "sync-degraded",
        SyncRestored => "sync-restored",
        RoRoutes => "ro-routes",
        RoSettings => "ro-settings",
        FailoverDisabled => "failover-disabled",
        FailoverCooldown => "failover-cooldown",
        FailoverSkipped => "failover-skipped",
        FailoverAutomatic => "failover-automatic",
        PrimaryChanged => "primary-changed",
        HaAlert => "ha-alert",
        HaStrayPrimary => "ha-stray-primary",
        HaSettings => "ha-settings",
        StandbyNotFollowing => "standby-not-following",
        Rejoined => "rejoined",
        RejoinFailed => "rejoin-failed",
        MemberReport => "member-report",
    }
}

/// The kind of an entry of an instance's events log: an operation's start or end
/// (`<kind>-started`, `<kind>-succeeded`, `<kind>-failed`), or something the health loop or an
/// HA runbook saw or did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventKind {
    Operation(OperationKind, OperationStage),
    Ha(HaEventKind),
}

impl EventKind {
    /// The name the CMS stores and the API shows.
    pub fn name(self) -> String {
        match self {
            EventKind::Operation(kind, stage) => format!("{kind}-{}", stage.as_str()),
            EventKind::Ha(kind) => kind.as_str().to_string(),
        }
    }
}

impl From<HaEventKind> for EventKind {
    fn from(kind: HaEventKind) -> Self {
        EventKind::Ha(kind)
    }
}

impl fmt::Display for EventKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name())
    }
}

/// A name that is both an HA word and an operation's stage (`rejoin-failed`) reads as the HA
/// word: both are written the same.
impl FromStr for EventKind {
    type Err = UnknownWord;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if let Ok(kind) = s.parse::<HaEventKind>() {
            return Ok(EventKind::Ha(kind));
        }
        for stage in [
            OperationStage::Started,
            OperationStage::Succeeded,
            OperationStage::Failed,
        ] {
            let operation = s
                .strip_suffix(stage.as_str())
                .and_then(|rest| rest.strip_suffix('-'))
                .and_then(|kind| kind.parse::<OperationKind>().ok());
            if let Some(kind) = operation {
                return Ok(EventKind::Operation(kind, stage));
            }
        }
        Err(UnknownWord {
            word: "event kind",
            value: s.to_string(),
        })
    }
}

impl Serialize for EventKind {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.name())
    }
}

impl<'de> Deserialize<'de> for EventKind {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

impl Role {
    /// `primary`, `standby` or `unknown`: what the CMS stores and the API shows.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Primary => "primary",
            Role::Standby => "standby",
            Role::Unknown => "unknown",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = UnknownWord;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "primary" => Ok(Role::Primary),
            "standby" => Ok(Role::Standby),
            "unknown" => Ok(Role::Unknown),
            other => Err(UnknownWord {
                word: "role",
                value: other.to_string(),
            }),
        }
    }
}

/// The API's views keep the words as text (their JSON is the contract); these read them back.
impl crate::controller_api::MemberView {
    /// Its role (`unknown` when the text is not a role).
    pub fn parsed_role(&self) -> Role {
        self.role.parse().unwrap_or(Role::Unknown)
    }

    /// Its state, if the text is one.
    pub fn parsed_state(&self) -> Option<MemberState> {
        self.state.parse().ok()
    }

    /// Its health (`unknown` when the text is not a health).
    pub fn parsed_health(&self) -> MemberHealth {
        self.health.parse().unwrap_or(MemberHealth::Unknown)
    }
}

impl crate::backup_api::BackupView {
    /// Its status, if the text is one.
    pub fn parsed_status(&self) -> Option<BackupStatus> {
        self.status.parse().ok()
    }

    /// What it holds, if the text says.
    pub fn parsed_kind(&self) -> Option<crate::sidecar_api::BackupKind> {
        use crate::sidecar_api::BackupKind;
        match self.kind.as_str() {
            "base" => Some(BackupKind::Base),
            "logical" => Some(BackupKind::Logical),
            _ => None,
        }
    }

    /// A base backup that succeeded: one a restore can start from.
    pub fn is_succeeded_base(&self) -> bool {
        self.parsed_kind() == Some(crate::sidecar_api::BackupKind::Base)
            && self.parsed_status() == Some(BackupStatus::Succeeded)
    }
}

impl crate::controller_api::InstanceSummary {
    /// Its state, if the text is one.
    pub fn parsed_state(&self) -> Option<InstanceState> {
        self.state.parse().ok()
    }

    /// How it replicates (async unless the text says `sync`).
    pub fn parsed_replication_mode(&self) -> ReplicationMode {
        self.replication_mode.parse().unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn round_trips<T>(all: &[T])
    where
        T: Copy + fmt::Debug + PartialEq + fmt::Display + FromStr + Serialize,
        T: for<'de> Deserialize<'de>,
        <T as FromStr>::Err: fmt::Debug,
    {
        for value in all {
            let text = value.to_string();
            assert_eq!(text.parse::<T>().unwrap(), *value);
            let json = serde_json::to_string(value).unwrap();
            assert_eq!(json, format!("\"{text}\""));
            assert_eq!(serde_json::from_str::<T>(&json).unwrap(), *value);
        }
    }

    #[test]
    fn every_word_serializes_as_the_string_the_cms_stores() {
        round_trips(MemberState::ALL);
        round_trips(InstanceState::ALL);
        round_trips(InstanceHealth::ALL);
        round_trips(MemberHealth::ALL);
        round_trips(OperationKind::ALL);
        round_trips(BackupStatus::ALL);
        round_trips(OperationStatus::ALL);
        round_trips(HandoverState::ALL);
        round_trips(SyncState::ALL);
        round_trips(HaEventKind::ALL);
        round_trips(&[Role::Primary, Role::Standby, Role::Unknown]);
        assert_eq!(
            serde_json::to_string(&OperationKind::AddReplica).unwrap(),
            "\"add-replica\""
        );
        assert!("leader".parse::<Role>().is_err());
    }

    #[test]
    fn operation_events_are_named_after_their_kind_and_stage() {
        let kinds: Vec<EventKind> = OperationKind::ALL
            .iter()
            .flat_map(|k| {
                [
                    OperationStage::Started,
                    OperationStage::Succeeded,
                    OperationStage::Failed,
                ]
                .map(|s| EventKind::Operation(*k, s))
            })
            .chain(HaEventKind::ALL.iter().map(|k| EventKind::Ha(*k)))
            // A failed rejoin operation and a failed rejoin attempt share a name; it reads back
            // as the latter.
            .filter(|k| *k != EventKind::Operation(OperationKind::Rejoin, OperationStage::Failed))
            .collect();
        round_trips(&kinds);
        assert_eq!(
            EventKind::Operation(OperationKind::AutoFailover, OperationStage::Failed).name(),
            "auto-failover-failed"
        );
        assert_eq!(
            "remove-replica-started".parse::<EventKind>().unwrap(),
            EventKind::Operation(OperationKind::RemoveReplica, OperationStage::Started)
        );
        assert_eq!(HandoverState::Completed.step(), HandoverState::STEPS);
        assert!(SyncState::text_confirms_commits("quorum"));
        assert!(!SyncState::text_confirms_commits("potential"));
    }
}
