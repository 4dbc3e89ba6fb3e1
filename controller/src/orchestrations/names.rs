//! The registered names of the orchestrations.

pub const CREATE_INSTANCE: &str = "CreateInstance";
pub const DELETE_INSTANCE: &str = "DeleteInstance";
pub const INSTANCE_ACTOR: &str = "InstanceActor";
pub const ADD_REPLICA: &str = "AddReplica";
pub const REMOVE_REPLICA: &str = "RemoveReplica";
pub const SWITCHOVER: &str = "Switchover";
pub const FAILOVER: &str = "Failover";
pub const REJOIN: &str = "Rejoin";
pub const BACKUP: &str = "Backup";
pub const BACKUP_SCHEDULE: &str = "BackupSchedule";
pub const APPLY_PARAMETERS: &str = "ApplyParameters";
pub const SCHEDULED_PARAMETERS: &str = "ScheduledParameters";
pub const DELETE_BACKUPS: &str = "DeleteBackups";
pub const ROTATE_CREDENTIALS: &str = "RotateCredentials";
pub const VERIFY_BACKUP: &str = "VerifyBackup";
pub const RESTORE_IN_PLACE: &str = "RestoreInPlace";

/// The durable queue the instance actor takes commands from (here, beside the names, so an
/// activity that queues a command needs nothing else of the actor's).
pub const COMMANDS_QUEUE: &str = "commands";
