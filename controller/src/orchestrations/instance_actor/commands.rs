//! Operator commands as operations: each starts a child orchestration, and the actor waits for
//! it while its health rounds go on (the operation owns the routes meanwhile).

use duroxide::{DurableFuture, Either2, OrchestrationContext};

use super::health_round::{health_round, Routing};
use super::state::{health_interval, ActorCommand, ActorInput, ActorState};
use crate::orchestrations::durable::sub_orchestration;
use crate::orchestrations::ha::failover::FailoverInput;
use crate::orchestrations::ha::switchover::SwitchoverInput;
use crate::orchestrations::names;
use crate::orchestrations::parameters::ParametersInput;

/// Starts the child orchestration that carries out an operator's command (`None` for
/// `CheckNow`, which the loop handles itself).
///
/// The child's id is the operation id, so a command delivered twice (a queueing activity that
/// ran twice) runs once: duroxide refuses a second child of an id already used, and the actor
/// only logs that copy as failed.
pub fn start_operation(
    ctx: &OrchestrationContext,
    input: &ActorInput,
    state: &ActorState,
    command: ActorCommand,
) -> Option<(String, DurableFuture<Result<String, String>>)> {
    Some(match command {
        ActorCommand::AddReplica(command) => (
            command.operation_id.clone(),
            sub_orchestration(ctx, names::ADD_REPLICA, &command.operation_id, &command),
        ),
        ActorCommand::RemoveReplica(command) => (
            command.operation_id.clone(),
            sub_orchestration(ctx, names::REMOVE_REPLICA, &command.operation_id, &command),
        ),
        ActorCommand::Switchover(command) => (
            command.operation_id.clone(),
            sub_orchestration(
                ctx,
                names::SWITCHOVER,
                &command.operation_id,
                &SwitchoverInput {
                    operation_id: command.operation_id.clone(),
                    instance: input.instance.clone(),
                    request: command.request,
                    ha: state.ha.clone(),
                },
            ),
        ),
        ActorCommand::Failover(command) => (
            command.operation_id.clone(),
            sub_orchestration(
                ctx,
                names::FAILOVER,
                &command.operation_id,
                &FailoverInput {
                    operation_id: command.operation_id.clone(),
                    instance: input.instance.clone(),
                    to: command.to,
                    force: command.force,
                    automatic: false,
                    ha: state.ha.clone(),
                    last_seen: state.last_seen.clone(),
                    surveyed: None,
                    evidence: None,
                },
            ),
        ),
        ActorCommand::Backup(command) => (
            command.operation_id.clone(),
            sub_orchestration(ctx, names::BACKUP, &command.operation_id, &command),
        ),
        ActorCommand::Parameters(command) => {
            let id = command.operation_id.clone();
            // A switchover of the primary follows the instance's HA settings.
            let command = ParametersInput {
                ha: Some(state.ha.clone()),
                ..command
            };
            let child = sub_orchestration(ctx, names::APPLY_PARAMETERS, &id, &command);
            (id, child)
        }
        ActorCommand::DeleteBackups(command) => (
            command.operation_id.clone(),
            sub_orchestration(ctx, names::DELETE_BACKUPS, &command.operation_id, &command),
        ),
        ActorCommand::RotateCredentials(command) => (
            command.operation_id.clone(),
            sub_orchestration(
                ctx,
                names::ROTATE_CREDENTIALS,
                &command.operation_id,
                &command,
            ),
        ),
        ActorCommand::VerifyBackup(command) => (
            command.operation_id.clone(),
            sub_orchestration(ctx, names::VERIFY_BACKUP, &command.operation_id, &command),
        ),
        ActorCommand::RestoreInPlace(command) => (
            command.operation_id.clone(),
            sub_orchestration(
                ctx,
                names::RESTORE_IN_PLACE,
                &command.operation_id,
                &command,
            ),
        ),
        ActorCommand::CheckNow => return None,
    })
}

/// Waits for a command's operation (a child orchestration) while the health loop goes on: the
/// next command waits, the health rounds do not. The operation records its own outcome.
pub async fn run_command(
    ctx: &OrchestrationContext,
    input: &ActorInput,
    mut state: ActorState,
    operation_id: &str,
    mut operation: DurableFuture<Result<String, String>>,
) -> ActorState {
    let interval = health_interval(&input.settings, &state);
    // The operation may have moved the endpoints: the next round sets them again.
    state.routed_ro = None;
    loop {
        let tick = ctx.schedule_timer(interval);
        // By reference: losing the race to the timer must not cancel the operation.
        match ctx.select2(&mut operation, tick).await {
            Either2::First(Ok(output)) => {
                ctx.trace_info(format!("operation {operation_id} done: {output}"));
                return state;
            }
            Either2::First(Err(e)) => {
                ctx.trace_warn(format!("operation {operation_id} failed: {e}"));
                return state;
            }
            // The operation owns the routes while it runs. (A superseded actor finishes the
            // operation it started before it stops.)
            Either2::Second(()) => {
                let (next, _) = health_round(ctx, input, state.clone(), Routing::Frozen).await;
                if next.generation != u64::MAX {
                    state = next;
                }
            }
        }
    }
}
