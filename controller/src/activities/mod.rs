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
pub mod data_aside;
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

/// The registered names of the activities, one a line and sorted (a branch that adds one adds
/// one line), and [`names::ALL`] derived from them.
pub mod names {
    macro_rules! activity_names {
        ($($konst:ident = $name:literal;)*) => {
            $(pub const $konst: &str = $name;)*
            /// Every activity's name: the orchestration tests register a fake for each.
            pub const ALL: &[&str] = &[$($konst),*];
        };
    }

    activity_names! {
        ACTOR_MEMBERS = "ActorMembers";
        BACKUP_CANDIDATES = "BackupCandidates";
        CONFIRM_PARAMETERS = "ConfirmParameters";
        CREATE_MEMBER = "CreateMember";
        DELETE_BACKUP_OBJECTS = "DeleteBackupObjects";
        DELETE_ENDPOINTS = "DeleteEndpoints";
        DELETE_MEMBER = "DeleteMember";
        DELETE_SECRETS = "DeleteSecrets";
        DROP_SLOT = "DropSlot";
        END_DATA_ASIDE = "EndDataAside";
        ENSURE_APP_ACCESS = "EnsureAppAccess";
        ENSURE_ENDPOINTS = "EnsureEndpoints";
        ENSURE_SECRETS = "EnsureSecrets";
        FENCE_MEMBER = "FenceMember";
        FORGET_DELETED_BACKUPS = "ForgetDeletedBackups";
        LIST_MEMBERS = "ListMembers";
        OPERATION_CANCELLED = "OperationCancelled";
        OPERATION_STATUS = "OperationStatus";
        PLAN_BACKUP_DELETION = "PlanBackupDeletion";
        PROBE_MEMBER = "ProbeMember";
        PROMOTE_MEMBER = "PromoteMember";
        PRUNE_ACTOR_HISTORY = "PruneActorHistory";
        QUEUE_DUE_PARAMETERS = "QueueDueParameters";
        QUEUE_SCHEDULED_BACKUP = "QueueScheduledBackup";
        READ_ACTOR_VIEW = "ReadActorView";
        READ_BACKUP_SCHEDULE = "ReadBackupSchedule";
        READ_TOPOLOGY = "ReadTopology";
        RECORD_ACTOR = "RecordActor";
        RECORD_BACKUP_FINISHED = "RecordBackupFinished";
        RECORD_BACKUP_STARTED = "RecordBackupStarted";
        RECORD_DESIRED_PARAMETERS = "RecordDesiredParameters";
        RECORD_EVENT = "RecordEvent";
        RECORD_HANDOVER = "RecordHandover";
        RECORD_HEALTH = "RecordHealth";
        RECORD_INSTANCE_RUNNING = "RecordInstanceRunning";
        RECORD_MEMBER_OPTIONS = "RecordMemberOptions";
        RECORD_OPERATION_FINISHED = "RecordOperationFinished";
        RECORD_OPERATION_STARTED = "RecordOperationStarted";
        RECORD_REPLICAS = "RecordReplicas";
        REJOIN_MEMBER = "RejoinMember";
        REPOINT_STANDBY = "RepointStandby";
        RESTART_MEMBER = "RestartMember";
        ROTATE_PASSWORD = "RotatePassword";
        ROUTE_ENDPOINTS = "RouteEndpoints";
        SET_DATA_ASIDE = "SetDataAside";
        SET_MEMBER_STATE = "SetMemberState";
        SET_SYNC_POLICY = "SetSyncPolicy";
        STOP_ACTOR = "StopActor";
        SURVEY_MEMBERS = "SurveyMembers";
        TAKE_BACKUP = "TakeBackup";
        UNFENCE_MEMBER = "UnfenceMember";
        VERIFY_BACKUP = "VerifyBackup";
        WAIT_CAUGHT_UP = "WaitCaughtUp";
        WAIT_MEMBER_READY = "WaitMemberReady";
        WAIT_RECEIVED = "WaitReceived";
        WAIT_REPLAYED = "WaitReplayed";
        WAIT_SYNC_STANDBY = "WaitSyncStandby";
        WRITE_PARAMETERS = "WriteParameters";
    }
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
    let b = register!(b, names::SET_DATA_ASIDE, data_aside::set_data_aside);
    let b = register!(b, names::END_DATA_ASIDE, data_aside::end_data_aside);
    b.build_result()
}

#[cfg(test)]
mod tests {
    /// Every declared name is registered: a name whose `register!` line a merge dropped makes
    /// each orchestration that calls it wait forever on "activity not registered", and only
    /// the end-to-end test that reaches it would notice (the orchestration tests register a
    /// fake for every declared name).
    #[test]
    fn every_declared_activity_is_registered() {
        let source = include_str!("mod.rs");
        let (declared, registered) = source
            .split_once("/// Registers every activity")
            .expect("the registry function");
        let consts: Vec<&str> = declared
            .lines()
            .filter_map(|l| l.trim().split_once(" = \""))
            .map(|(name, _)| name)
            .filter(|name| name.chars().all(|c| c.is_ascii_uppercase() || c == '_'))
            .collect();
        assert_eq!(consts.len(), super::names::ALL.len(), "{consts:?}");
        let registered: String = registered.split_whitespace().collect();
        for name in consts {
            assert!(
                registered.contains(&format!("register!(b,names::{name},")),
                "activity {name} is declared but not registered"
            );
        }
    }
}
