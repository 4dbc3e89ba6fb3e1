//! The orchestrations' activities: every piece of I/O they do (the platform, the sidecars, the
//! CMS), one small idempotent function each, registered under the names in [`names`].
//!
//! Activities run at least once, so each one is safe to repeat: "already exists" is success,
//! "already gone" is success. Inputs and outputs are serializable and hold no secret: credentials
//! travel as [`SecretRef`](crate::platform::SecretRef)s and are read here, at the point of use.

pub mod app_access;
pub mod backup_cleanup;
pub mod backup_verify;
pub mod backups;
pub mod cancel;
pub mod credentials;
mod deps;
pub mod ha;
pub mod members;
pub mod parameters;
pub mod records;
pub mod sidecar;

use std::sync::Arc;

use duroxide::runtime::registry::ActivityRegistry;
use duroxide::ActivityContext;

pub use deps::ActivityDeps;

/// The registered names of the activities.
pub mod names {
    pub const RECORD_OPERATION_STARTED: &str = "RecordOperationStarted";
    pub const RECORD_OPERATION_FINISHED: &str = "RecordOperationFinished";
    pub const RECORD_INSTANCE_RUNNING: &str = "RecordInstanceRunning";
    pub const RECORD_ACTOR: &str = "RecordActor";
    pub const RECORD_HEALTH: &str = "RecordHealth";
    pub const RECORD_REPLICAS: &str = "RecordReplicas";
    pub const ENSURE_SECRETS: &str = "EnsureSecrets";
    pub const DELETE_SECRETS: &str = "DeleteSecrets";
    pub const ENSURE_ENDPOINTS: &str = "EnsureEndpoints";
    pub const ROUTE_ENDPOINTS: &str = "RouteEndpoints";
    pub const DELETE_ENDPOINTS: &str = "DeleteEndpoints";
    pub const CREATE_MEMBER: &str = "CreateMember";
    pub const DELETE_MEMBER: &str = "DeleteMember";
    pub const LIST_MEMBERS: &str = "ListMembers";
    pub const READ_TOPOLOGY: &str = "ReadTopology";
    pub const ACTOR_MEMBERS: &str = "ActorMembers";
    pub const STOP_ACTOR: &str = "StopActor";
    pub const PRUNE_ACTOR_HISTORY: &str = "PruneActorHistory";
    pub const WAIT_MEMBER_READY: &str = "WaitMemberReady";
    pub const WAIT_SYNC_STANDBY: &str = "WaitSyncStandby";
    pub const PROBE_MEMBER: &str = "ProbeMember";
    pub const DROP_SLOT: &str = "DropSlot";
    pub const SURVEY_MEMBERS: &str = "SurveyMembers";
    pub const FENCE_MEMBER: &str = "FenceMember";
    pub const PROMOTE_MEMBER: &str = "PromoteMember";
    pub const UNFENCE_MEMBER: &str = "UnfenceMember";
    pub const REPOINT_STANDBY: &str = "RepointStandby";
    pub const SET_SYNC_POLICY: &str = "SetSyncPolicy";
    pub const WAIT_CAUGHT_UP: &str = "WaitCaughtUp";
    pub const WAIT_RECEIVED: &str = "WaitReceived";
    pub const REJOIN_MEMBER: &str = "RejoinMember";
    pub const RECORD_HANDOVER: &str = "RecordHandover";
    pub const RECORD_EVENT: &str = "RecordEvent";
    pub const SET_MEMBER_STATE: &str = "SetMemberState";
    pub const RECORD_MEMBER_OPTIONS: &str = "RecordMemberOptions";
    pub const READ_ACTOR_VIEW: &str = "ReadActorView";
    pub const BACKUP_CANDIDATES: &str = "BackupCandidates";
    pub const RECORD_BACKUP_STARTED: &str = "RecordBackupStarted";
    pub const TAKE_BACKUP: &str = "TakeBackup";
    pub const RECORD_BACKUP_FINISHED: &str = "RecordBackupFinished";
    pub const READ_BACKUP_SCHEDULE: &str = "ReadBackupSchedule";
    pub const QUEUE_SCHEDULED_BACKUP: &str = "QueueScheduledBackup";
    pub const WRITE_PARAMETERS: &str = "WriteParameters";
    pub const CONFIRM_PARAMETERS: &str = "ConfirmParameters";
    pub const RESTART_MEMBER: &str = "RestartMember";
    pub const RECORD_DESIRED_PARAMETERS: &str = "RecordDesiredParameters";
    pub const WAIT_REPLAYED: &str = "WaitReplayed";
    pub const QUEUE_DUE_PARAMETERS: &str = "QueueDueParameters";
    pub const ENSURE_APP_ACCESS: &str = "EnsureAppAccess";
    pub const OPERATION_CANCELLED: &str = "OperationCancelled";
    pub const OPERATION_STATUS: &str = "OperationStatus";
    pub const PLAN_BACKUP_DELETION: &str = "PlanBackupDeletion";
    pub const DELETE_BACKUP_OBJECTS: &str = "DeleteBackupObjects";
    pub const FORGET_DELETED_BACKUPS: &str = "ForgetDeletedBackups";
    pub const ROTATE_PASSWORD: &str = "RotatePassword";
    pub const VERIFY_BACKUP: &str = "VerifyBackup";
}

/// Registers every activity, each with its own handle on `deps`.
pub fn registry(deps: Arc<ActivityDeps>) -> Result<ActivityRegistry, String> {
    macro_rules! register {
        ($builder:expr, $name:expr, $f:path) => {{
            let deps = Arc::clone(&deps);
            $builder.register_typed($name, move |ctx: ActivityContext, input| {
                let deps = Arc::clone(&deps);
                async move { $f(deps, ctx, input).await }
            })
        }};
    }
    let b = ActivityRegistry::builder();
    let b = register!(
        b,
        names::RECORD_OPERATION_STARTED,
        records::record_operation_started
    );
    let b = register!(
        b,
        names::RECORD_OPERATION_FINISHED,
        records::record_operation_finished
    );
    let b = register!(
        b,
        names::RECORD_INSTANCE_RUNNING,
        records::record_instance_running
    );
    let b = register!(b, names::RECORD_ACTOR, records::record_actor);
    let b = register!(b, names::RECORD_HEALTH, records::record_health);
    let b = register!(b, names::RECORD_REPLICAS, records::record_replicas);
    let b = register!(b, names::ENSURE_SECRETS, members::ensure_secrets);
    let b = register!(b, names::ENSURE_APP_ACCESS, app_access::ensure_app_access);
    let b = register!(b, names::DELETE_SECRETS, members::delete_secrets);
    let b = register!(b, names::ENSURE_ENDPOINTS, members::ensure_endpoints);
    let b = register!(b, names::ROUTE_ENDPOINTS, members::route_endpoints);
    let b = register!(b, names::DELETE_ENDPOINTS, members::delete_endpoints);
    let b = register!(b, names::CREATE_MEMBER, members::create_member);
    let b = register!(b, names::DELETE_MEMBER, members::delete_member);
    let b = register!(b, names::LIST_MEMBERS, members::list_members);
    let b = register!(b, names::READ_TOPOLOGY, members::read_topology);
    let b = register!(b, names::ACTOR_MEMBERS, members::actor_members);
    let b = register!(b, names::STOP_ACTOR, records::stop_actor);
    let b = register!(b, names::PRUNE_ACTOR_HISTORY, records::prune_actor_history);
    let b = register!(b, names::WAIT_MEMBER_READY, sidecar::wait_member_ready);
    let b = register!(b, names::WAIT_SYNC_STANDBY, sidecar::wait_sync_standby);
    let b = register!(b, names::PROBE_MEMBER, sidecar::probe_member);
    let b = register!(b, names::DROP_SLOT, sidecar::drop_slot);
    let b = register!(b, names::SURVEY_MEMBERS, ha::survey_members);
    let b = register!(b, names::FENCE_MEMBER, ha::fence_member);
    let b = register!(b, names::PROMOTE_MEMBER, ha::promote_member);
    let b = register!(b, names::UNFENCE_MEMBER, ha::unfence_member);
    let b = register!(b, names::REPOINT_STANDBY, ha::repoint_standby);
    let b = register!(b, names::SET_SYNC_POLICY, ha::set_sync_policy);
    let b = register!(b, names::WAIT_CAUGHT_UP, ha::wait_caught_up);
    let b = register!(b, names::WAIT_RECEIVED, ha::wait_received);
    let b = register!(b, names::REJOIN_MEMBER, ha::rejoin_member);
    let b = register!(b, names::RECORD_HANDOVER, records::record_handover);
    let b = register!(b, names::RECORD_EVENT, records::record_event);
    let b = register!(b, names::SET_MEMBER_STATE, records::set_member_state);
    let b = register!(
        b,
        names::RECORD_MEMBER_OPTIONS,
        records::record_member_options
    );
    let b = register!(b, names::READ_ACTOR_VIEW, members::read_actor_view);
    let b = register!(b, names::BACKUP_CANDIDATES, backups::backup_candidates);
    let b = register!(
        b,
        names::RECORD_BACKUP_STARTED,
        backups::record_backup_started
    );
    let b = register!(b, names::TAKE_BACKUP, backups::take_backup);
    let b = register!(
        b,
        names::RECORD_BACKUP_FINISHED,
        backups::record_backup_finished
    );
    let b = register!(
        b,
        names::READ_BACKUP_SCHEDULE,
        backups::read_backup_schedule
    );
    let b = register!(
        b,
        names::QUEUE_SCHEDULED_BACKUP,
        backups::queue_scheduled_backup
    );
    let b = register!(b, names::WRITE_PARAMETERS, parameters::write_parameters);
    let b = register!(b, names::CONFIRM_PARAMETERS, parameters::confirm_parameters);
    let b = register!(b, names::RESTART_MEMBER, parameters::restart_member);
    let b = register!(
        b,
        names::RECORD_DESIRED_PARAMETERS,
        parameters::record_desired_parameters
    );
    let b = register!(b, names::WAIT_REPLAYED, parameters::wait_replayed);
    let b = register!(
        b,
        names::QUEUE_DUE_PARAMETERS,
        parameters::queue_due_parameters
    );
    let b = register!(b, names::OPERATION_CANCELLED, cancel::operation_cancelled);
    let b = register!(b, names::OPERATION_STATUS, cancel::operation_status);
    let b = register!(
        b,
        names::PLAN_BACKUP_DELETION,
        backup_cleanup::plan_backup_deletion
    );
    let b = register!(
        b,
        names::DELETE_BACKUP_OBJECTS,
        backup_cleanup::delete_backup_objects
    );
    let b = register!(
        b,
        names::FORGET_DELETED_BACKUPS,
        backup_cleanup::forget_deleted_backups
    );
    let b = register!(b, names::ROTATE_PASSWORD, credentials::rotate_password);
    let b = register!(b, names::VERIFY_BACKUP, backup_verify::verify_backup);
    b.build_result()
}
