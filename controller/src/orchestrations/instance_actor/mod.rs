//! *InstanceActor*: the one orchestration that owns an instance while it lives. It runs the
//! health loop (timer → probe every member in parallel → record health, history and notable
//! changes) and takes operator commands from its durable queue, one at a time, so no two
//! mutating operations on one instance ever race. It continues as new every few rounds to bound
//! its history; its state travels in its input.
//!
//! - [`state`]: its input, commands and memory; [`health`]: the round's pure decisions;
//! - [`health_round`]: one round; [`supervision`]: HA after a round; [`commands`]: operations;
//! - [`ro_round`]: where the ro endpoint leads after a round.

pub mod commands;
pub mod health;
pub mod health_round;
pub mod ro_round;
pub mod state;
pub mod supervision;

use std::time::Duration;

use duroxide::{Either2, OrchestrationContext};

pub use health::{assess, desired_routes, Assessment, DISK_LOW_PERCENT};
pub use state::{
    actor_id, ActorCommand, ActorInput, ActorSettings, ActorState, FailoverCommand, MemberSeen,
    SwitchoverCommand, COMMANDS_QUEUE,
};
pub use supervision::NOT_FOLLOWING_ROUNDS;

use crate::activities::names as act;
use crate::activities::records::ActorRef;
use crate::orchestrations::durable::call;
use crate::orchestrations::operation::cancel_requested;
use commands::{run_command, start_operation};
use health_round::{health_round, Routing};
use state::wake_interval;
use supervision::{look_after_primary, recheck_primary};

/// Runs the actor: health rounds on a timer and commands from the queue, then continues as new.
pub async fn instance_actor(ctx: OrchestrationContext, input: ActorInput) -> Result<(), String> {
    let mut state = input.state.clone();
    if state.generation > 0 {
        // Old executions are history nobody reads: drop them.
        let prune = ActorRef {
            instance: input.instance.clone(),
            actor_id: ctx.instance_id(),
        };
        if let Err(e) = call::<_, ()>(&ctx, act::PRUNE_ACTOR_HISTORY, &prune).await {
            ctx.trace_warn(format!("prune the actor's history: {e}"));
        }
    }
    for _ in 0..input.settings.rounds_per_execution.max(1) {
        // A primary that stopped answering is checked again sooner.
        let interval = if state.primary_failures > 0 {
            Duration::from_millis(state.ha.check_interval_ms.max(50))
        } else {
            wake_interval(&input.settings, &state)
        };
        let command = ctx.dequeue_event(COMMANDS_QUEUE);
        let tick = ctx.schedule_timer(interval);
        let command = match ctx.select2(command, tick).await {
            Either2::First(message) => match serde_json::from_str::<ActorCommand>(&message) {
                Ok(command) => Some(command),
                Err(e) => {
                    ctx.trace_warn(format!("ignoring an unreadable command: {e}"));
                    continue;
                }
            },
            Either2::Second(()) => None,
        };
        match command {
            // A primary that missed a check: re-check it alone (no full round, nothing
            // recorded), and decide as soon as it has missed enough.
            None if state.primary_failures > 0 && state.view.is_some() => {
                state = recheck_primary(&ctx, &input, state).await;
            }
            None | Some(ActorCommand::CheckNow) => {
                match health_round(&ctx, &input, state, Routing::Allowed).await {
                    (next, Some(round)) => {
                        state = look_after_primary(&ctx, &input, next, round).await
                    }
                    (next, None) if next.generation == u64::MAX => return superseded(&ctx),
                    (next, None) => state = next,
                }
            }
            Some(command) => {
                // Cancelled while it waited in the queue: skipped (the CMS already says so).
                if let Some(id) = command.operation_id() {
                    if cancel_requested(&ctx, id).await {
                        ctx.trace_info(format!("operation {id} was cancelled; skipping it"));
                        continue;
                    }
                }
                // Restored in place, the primary's position starts again on a new timeline:
                // what was seen of the old one says nothing about it.
                let restored = matches!(command, ActorCommand::RestoreInPlace(_));
                if let Some((operation_id, child)) = start_operation(&ctx, &input, &state, command)
                {
                    state = run_command(&ctx, &input, state, &operation_id, child).await;
                    state.primary_failures = 0;
                    if restored {
                        state.last_seen = Default::default();
                    }
                }
            }
        }
    }
    state.generation += 1;
    let next = ActorInput {
        instance: input.instance.clone(),
        settings: input.settings,
        state,
    };
    ctx.continue_as_new_typed(&next).await.map(|_| ())
}

/// How an actor that is no longer its instance's ends.
fn superseded(ctx: &OrchestrationContext) -> Result<(), String> {
    ctx.trace_info("no longer the instance's actor; stopping");
    Ok(())
}
