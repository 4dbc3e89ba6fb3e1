//! Undoing a restart-class change that a member did not start with, once other members were
//! restarted with it: the previous values go back into every member's configuration, the
//! members already restarted with the change restart again (in the reverse order, which keeps
//! PostgreSQL's hot-standby rule: what was raised on the standbys first is lowered there last),
//! and the instance's desired parameters are the previous ones again. The member that failed
//! runs the previous values if its sidecar could fall back; if it could not start at all, it
//! gets them in its configuration for when it starts again.

use std::collections::BTreeMap;

use duroxide::OrchestrationContext;

use super::operation::report;
use super::parameters::{record_desired, restart_step, write_everywhere, ParametersInput, STEPS};
use crate::parameters::plan::RestartStep;

/// The member that did not start with the change, and why.
pub(super) struct Failed<'a> {
    pub member: &'a str,
    pub why: &'a str,
}

/// The instance as the change found it: its members (the primary first), its primary, and the
/// restarts done with the change, in order.
pub(super) struct Undo<'a> {
    pub members: &'a [String],
    pub primary: &'a str,
    pub restarted: &'a [RestartStep],
}

/// Undoes the change on every member; returns the operation's error, which says so.
pub(super) async fn undo_restarts(
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
