//! The durable orchestrations: the runbooks that act across an instance's pods. Each one reads
//! like the steps a person would follow; all I/O happens in [`crate::activities`].
//!
//! Determinism rules (see `DUROXIDE.md`): no I/O, clocks, randomness, `tokio::select!` or sleeps
//! in here — only `ctx.schedule_*`, `ctx.utc_now()`, `ctx.join`/`select2`.

pub mod backup;
pub mod backup_cleanup;
pub mod backup_schedule;
pub mod backup_verify;
pub mod create_instance;
pub mod credentials;
pub mod delete_instance;
mod durable;
pub mod ha;
pub mod instance_actor;
pub mod members;
pub mod names;
pub mod operation;
pub mod parameters;
pub mod replicas;
pub mod restore_in_place;
pub mod scheduled_parameters;
mod wait_time;

use duroxide::OrchestrationRegistry;

/// Registers every orchestration.
pub fn registry() -> Result<OrchestrationRegistry, String> {
    OrchestrationRegistry::builder()
        .register_typed(names::CREATE_INSTANCE, create_instance::create_instance)
        .register_typed(names::DELETE_INSTANCE, delete_instance::delete_instance)
        .register_typed(names::INSTANCE_ACTOR, instance_actor::instance_actor)
        .register_typed(names::ADD_REPLICA, replicas::add_replica)
        .register_typed(names::REMOVE_REPLICA, replicas::remove_replica)
        .register_typed(names::SWITCHOVER, ha::switchover::switchover)
        .register_typed(names::FAILOVER, ha::failover::failover)
        .register_typed(names::REJOIN, ha::rejoin::rejoin_operation)
        .register_typed(names::BACKUP, backup::backup)
        .register_typed(names::BACKUP_SCHEDULE, backup_schedule::backup_schedule)
        .register_versioned_typed(
            names::BACKUP_SCHEDULE,
            "1.0.1",
            backup_schedule::backup_schedule_1_0_1,
        )
        .register_versioned_typed(
            names::BACKUP_SCHEDULE,
            "1.0.2",
            backup_schedule::backup_schedule_1_0_2,
        )
        .register_typed(names::APPLY_PARAMETERS, parameters::apply_parameters)
        .register_typed(
            names::SCHEDULED_PARAMETERS,
            scheduled_parameters::scheduled_parameters,
        )
        .register_typed(names::DELETE_BACKUPS, backup_cleanup::delete_backups)
        .register_typed(names::ROTATE_CREDENTIALS, credentials::rotate_credentials)
        .register_typed(names::VERIFY_BACKUP, backup_verify::verify_backup)
        .register_typed(names::RESTORE_IN_PLACE, restore_in_place::restore_in_place)
        .build_result()
}

/// The orchestration id of an operation: the operation id itself.
pub fn operation_instance_id(operation_id: &str) -> String {
    operation_id.to_string()
}

#[cfg(test)]
mod tests;
