//! Undoing a restart-class change that a member did not start with: the previous values go
//! back on every member and as the instance's desired parameters; members already restarted
//! with the change restart again.

use std::collections::BTreeMap;

use duroxide::OrchestrationContext;

use super::input::{ParametersInput, STEPS};
use super::steps::{record_desired, restart_step, write_everywhere};
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
    for member in undo.members {
        let one = std::slice::from_ref(member);
        let written = write_everywhere(ctx, &input.instance, one, &input.previous).await;
        match written {
            Ok(_) => {}
            // Down: its sidecar wrote the previous values when it fell back.
            Err(_) if member == failed.member => {}
            Err(e) => problems.push(e),
        }
    }
    let mut again = Vec::new();
    let mut primary_restarted = false;
    let none = BTreeMap::new();
    for step in undo.restarted.iter().rev() {
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
            undo.primary,
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
    if let Err(e) = record_desired(ctx, &input.instance, &input.previous).await {
        problems.push(e);
    }
    let restarted = if again.is_empty() {
        "no other member had restarted with it".to_string()
    } else {
        format!("{} restarted again with them", again.join(", "))
    };
    let rest = if problems.is_empty() {
        format!(
            "the previous values are back in every member's configuration and in the \
             instance's desired parameters; {restarted}"
        )
    } else {
        format!(
            "{restarted}; putting the previous values back failed: {}",
            problems.join("; ")
        )
    };
    format!(
        "the change was rolled back: {} {}; {rest}",
        failed.member, failed.why
    )
}
