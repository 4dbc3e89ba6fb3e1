//! Undoing a restart-class change that a member did not start with, or whose switchover failed:
//! the previous values go back on every member and as the instance's desired parameters;
//! members already restarted with the change restart again.

use std::collections::{BTreeMap, BTreeSet};

use duroxide::OrchestrationContext;

use super::input::{ParametersInput, STEPS};
use super::steps::{record_desired, restart_step, write_everywhere};
use crate::activities::members::{InstanceRef, Topology};
use crate::activities::names as act;
use crate::orchestrations::durable::call;
use crate::orchestrations::operation::report;
use crate::parameters::plan::RestartStep;

/// `member`, the first to restart, did not start with the change and runs the previous values
/// again: puts them back on every member and as the instance's desired parameters, and fails
/// the operation saying so.
pub async fn roll_back(
    ctx: &OrchestrationContext,
    input: &ParametersInput,
    members: &[String],
    member: &str,
    why: &str,
) -> String {
    report(
        ctx,
        3,
        STEPS,
        format!("{member} did not start with the change: undoing it"),
    );
    let undone = match write_everywhere(ctx, &input.instance, members, &input.previous).await {
        Ok(_) => record_desired(ctx, &input.instance, &input.previous).await,
        Err(e) => Err(e),
    };
    let rest = match undone {
        Ok(()) => "the previous values are back on every member and in the instance's desired \
                   parameters; no other member restarted"
            .to_string(),
        Err(e) => format!("putting the previous values back on the other members failed: {e}"),
    };
    format!("the change was rolled back: {member} {why}; {rest}")
}

// Undoing a restart-class change that a member did not start with, once other
// members were restarted with it: the previous values go back into every member's configuration,
// the members already restarted with the change restart again (in the reverse order, which keeps
// PostgreSQL's hot-standby rule: what was raised on the standbys first is lowered there last),
// and the instance's desired parameters are the previous ones again. The member that failed runs
// the previous values if its sidecar could fall back; if it could not start at all, it gets them
// in its configuration for when it starts again.

/// The member that did not start with the change, and why.
pub struct Failed<'a> {
    pub member: &'a str,
    pub why: &'a str,
}

/// The instance as the change found it: its members (the primary first), its primary, and the
/// restarts done with the change, in order.
pub struct Undo<'a> {
    pub members: &'a [String],
    pub primary: &'a str,
    pub restarted: &'a [RestartStep],
}

/// Undoes the change on every member; returns the operation's error, which says so.
pub async fn undo_restarts(
    ctx: &OrchestrationContext,
    input: &ParametersInput,
    undo: &Undo<'_>,
    failed: Failed<'_>,
) -> String {
    report(
        ctx,
        3,
        STEPS,
        format!(
            "{} did not start with the change: undoing it",
            failed.member
        ),
    );
    let mut problems = Vec::new();
    // The member that failed may be down: its sidecar wrote the previous values when it fell
    // back.
    write_previous(ctx, input, undo.members, Some(failed.member), &mut problems).await;
    let steps: Vec<RestartStep> = undo.restarted.iter().rev().cloned().collect();
    let again = restart_again(ctx, input, undo.primary, &steps, &mut problems).await;
    if let Err(e) = record_desired(ctx, &input.instance, &input.previous).await {
        problems.push(e);
    }
    format!(
        "the change was rolled back: {} {}; {}",
        failed.member,
        failed.why,
        undone(&again, &problems)
    )
}

/// The switchover that was to hand the primary role to an updated standby failed (`error`).
/// If the primary stayed where it was, the change is undone as for a member that did not start
/// with it: the previous values go back on every member, the standbys restarted with the change
/// restart again (after the primary, if the switchover's failure left it running the change:
/// its clean stop and restart read the new values) and the desired parameters are the previous
/// ones again. If the primary moved, the new primary runs the change, which stays.
pub async fn undo_switchover(
    ctx: &OrchestrationContext,
    input: &ParametersInput,
    undo: &Undo<'_>,
    error: &str,
) -> String {
    let topology: Result<Topology, String> = call(
        ctx,
        act::READ_TOPOLOGY,
        &InstanceRef {
            instance: input.instance.clone(),
        },
    )
    .await;
    match topology.map(|t| t.primary) {
        Ok(Some(primary)) if primary == undo.primary => {}
        Ok(Some(primary)) => {
            return format!(
                "{error}; {primary} is the primary now and runs the change, which stays: \
                 {} takes it when it rejoins",
                undo.primary
            )
        }
        Ok(None) => return format!("{error}; the instance has no primary: the change stays"),
        Err(e) => return format!("{error}; the change stays (reading the instance failed: {e})"),
    }
    report(
        ctx,
        3,
        STEPS,
        "the switchover failed and the primary stayed: undoing the change",
    );
    let mut problems = Vec::new();
    let pending = write_previous(ctx, input, undo.members, None, &mut problems).await;
    // Lowered (back) on the primary first, as hot standbys need.
    let steps: Vec<RestartStep> = pending
        .contains(undo.primary)
        .then(|| RestartStep::Primary(undo.primary.to_string()))
        .into_iter()
        .chain(undo.restarted.iter().rev().cloned())
        .collect();
    let again = restart_again(ctx, input, undo.primary, &steps, &mut problems).await;
    if let Err(e) = record_desired(ctx, &input.instance, &input.previous).await {
        problems.push(e);
    }
    format!(
        "the change was rolled back: {error}; {}",
        undone(&again, &problems)
    )
}

/// Writes the previous values into each member's configuration; returns the members whose
/// Postgres still runs the change (a value waits for their restart). A write to `down` may
/// fail; any other failure goes to `problems`.
async fn write_previous(
    ctx: &OrchestrationContext,
    input: &ParametersInput,
    members: &[String],
    down: Option<&str>,
    problems: &mut Vec<String>,
) -> BTreeSet<String> {
    let mut pending = BTreeSet::new();
    for member in members {
        let one = std::slice::from_ref(member);
        match write_everywhere(ctx, &input.instance, one, &input.previous).await {
            Ok(waiting) if waiting.is_empty() => {}
            Ok(_) => {
                pending.insert(member.clone());
            }
            Err(_) if Some(member.as_str()) == down => {}
            Err(e) => problems.push(e),
        }
    }
    pending
}

/// Restarts the members of `steps` (standbys and primaries) in order with the previous values;
/// returns those that restarted.
async fn restart_again<'a>(
    ctx: &OrchestrationContext,
    input: &ParametersInput,
    primary: &str,
    steps: &'a [RestartStep],
    problems: &mut Vec<String>,
) -> Vec<&'a str> {
    let mut again = Vec::new();
    let mut primary_restarted = false;
    let none = BTreeMap::new();
    for step in steps {
        let (RestartStep::Standby(member) | RestartStep::Primary(member)) = step else {
            continue;
        };
        report(
            ctx,
            3,
            STEPS,
            format!("restarting {member} with the previous values"),
        );
        let restarted = restart_step(
            ctx,
            &input.instance,
            primary,
            step,
            &mut primary_restarted,
            &none,
            false,
        )
        .await;
        match restarted {
            Ok(_) => again.push(member.as_str()),
            Err(e) => problems.push(e),
        }
    }
    again
}

/// What an undo did: the members `again` restarted, and the `problems` it met.
fn undone(again: &[&str], problems: &[String]) -> String {
    let restarted = if again.is_empty() {
        "no other member had restarted with it".to_string()
    } else {
        format!("{} restarted again with them", again.join(", "))
    };
    if problems.is_empty() {
        format!(
            "the previous values are back in every member's configuration and in the \
             instance's desired parameters; {restarted}"
        )
    } else {
        format!(
            "{restarted}; putting the previous values back failed: {}",
            problems.join("; ")
        )
    }
}
