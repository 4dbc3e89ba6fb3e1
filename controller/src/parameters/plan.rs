//! In which order a parameter change reaches the members. Reload-class changes go to every
//! member at once. Restart-class changes roll one member at a time: the standbys first, then the
//! primary (by a switchover to an updated standby, or by a restart in place) — except when a
//! hot-standby-sensitive setting is lowered: a standby refuses to start with less than its
//! primary has, so then the primary goes first, restarted in place.

use serde::{Deserialize, Serialize};
use toygres_common::parameters_api::ParameterCategory;

/// Settings a standby must have at least as high as its primary (PostgreSQL's hot standby rule).
pub const HOT_STANDBY_SENSITIVE: [&str; 5] = [
    "max_connections",
    "max_locks_per_transaction",
    "max_prepared_transactions",
    "max_wal_senders",
    "max_worker_processes",
];

/// One setting's change, with whole numbers in the setting's base unit where it has them (the
/// hot-standby settings are integers; `to` is `None` for a reset or a non-number).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Change {
    pub name: String,
    pub category: ParameterCategory,
    pub from: Option<i64>,
    pub to: Option<i64>,
}

pub use toygres_common::parameters_api::PrimaryUpdate;

/// One step of a rolling restart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RestartStep {
    /// Restart this standby and wait until it has caught up.
    Standby(String),
    /// Restart the primary in place.
    Primary(String),
    /// Hand the primary role to `to`, an updated standby; the old primary restarts as a standby.
    Switchover { from: String, to: String },
    /// Leave the primary to the operator (`supervised`): it runs the change after a switchover.
    HoldPrimary(String),
}

/// What a change needs, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rollout {
    /// Reload every member (every change is written to every member first).
    pub reload: bool,
    pub restarts: Vec<RestartStep>,
}

/// Plans how `changes` reach the primary and `standbys` (in the order to restart them).
pub fn plan(
    changes: &[Change],
    primary: &str,
    standbys: &[String],
    update: PrimaryUpdate,
) -> Result<Rollout, String> {
    let restart: Vec<&Change> = changes
        .iter()
        .filter(|c| c.category == ParameterCategory::Restart)
        .collect();
    let reload = changes.iter().any(|c| {
        matches!(
            c.category,
            ParameterCategory::Dynamic | ParameterCategory::Reload
        )
    });
    if restart.is_empty() {
        return Ok(Rollout {
            reload,
            restarts: vec![],
        });
    }
    let (lowered, raised) = hot_standby_moves(&restart);
    if !lowered.is_empty() && !raised.is_empty() {
        return Err(format!(
            "{} would be lowered and {} raised: standbys need the raise first and the primary \
             the lowering first; change them in two requests",
            lowered.join(", "),
            raised.join(", ")
        ));
    }
    let standby_steps = standbys.iter().cloned().map(RestartStep::Standby);
    let restarts = if !lowered.is_empty() {
        // Lower on the primary first, in place: a switchover would make an old, higher
        // standby the primary of a lowered one.
        std::iter::once(RestartStep::Primary(primary.to_string()))
            .chain(standby_steps)
            .collect()
    } else {
        let last = match (update, standbys.first()) {
            (PrimaryUpdate::Switchover, Some(to)) => RestartStep::Switchover {
                from: primary.to_string(),
                to: to.clone(),
            },
            (PrimaryUpdate::Supervised, Some(_)) => RestartStep::HoldPrimary(primary.to_string()),
            _ => RestartStep::Primary(primary.to_string()),
        };
        standby_steps.chain(std::iter::once(last)).collect()
    };
    Ok(Rollout { reload, restarts })
}

/// The hot-standby-sensitive settings `restart` lowers (or resets) and raises.
fn hot_standby_moves<'a>(restart: &[&'a Change]) -> (Vec<&'a str>, Vec<&'a str>) {
    let sensitive = || {
        restart
            .iter()
            .filter(|c| c.category == ParameterCategory::Restart)
            .filter(|c| HOT_STANDBY_SENSITIVE.contains(&c.name.as_str()))
    };
    let lowered = sensitive()
        .filter(|c| matches!((c.from, c.to), (Some(f), Some(t)) if t < f) || c.to.is_none())
        .map(|c| c.name.as_str())
        .collect();
    let raised = sensitive()
        .filter(|c| matches!((c.from, c.to), (Some(f), Some(t)) if t > f))
        .map(|c| c.name.as_str())
        .collect();
    (lowered, raised)
}

/// When `changes` raise some hot-standby settings and lower others (which no single roll can
/// apply: standbys take a raise first, the primary a lowering first), the settings to apply in
/// a second roll, after everything else: the lowered ones. `None` when one roll will do.
pub fn second_roll(changes: &[Change]) -> Option<Vec<String>> {
    let all: Vec<&Change> = changes.iter().collect();
    let (lowered, raised) = hot_standby_moves(&all);
    (!lowered.is_empty() && !raised.is_empty())
        .then(|| lowered.into_iter().map(String::from).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn change(name: &str, category: ParameterCategory, from: i64, to: i64) -> Change {
        Change {
            name: name.into(),
            category,
            from: Some(from),
            to: Some(to),
        }
    }

    fn names(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn rollouts_follow_the_category_and_the_hot_standby_rule() {
        use ParameterCategory::*;
        use RestartStep::*;
        let sb = names(&["db-1", "db-2"]);
        let switch = Switchover {
            from: "db-0".into(),
            to: "db-1".into(),
        };
        // (changes, primary update, standbys, restarts)
        type Case = (Vec<Change>, PrimaryUpdate, Vec<String>, Vec<RestartStep>);
        let cases: Vec<Case> = vec![
            (
                vec![change("work_mem", Dynamic, 4096, 8192)],
                PrimaryUpdate::Switchover,
                sb.clone(),
                vec![],
            ),
            (
                vec![change("shared_buffers", Restart, 16384, 32768)],
                PrimaryUpdate::Switchover,
                sb.clone(),
                vec![
                    Standby("db-1".into()),
                    Standby("db-2".into()),
                    switch.clone(),
                ],
            ),
            (
                vec![change("shared_buffers", Restart, 16384, 32768)],
                PrimaryUpdate::Restart,
                sb.clone(),
                vec![
                    Standby("db-1".into()),
                    Standby("db-2".into()),
                    Primary("db-0".into()),
                ],
            ),
            (
                vec![change("max_connections", Restart, 100, 200)],
                PrimaryUpdate::Switchover,
                sb.clone(),
                vec![Standby("db-1".into()), Standby("db-2".into()), switch],
            ),
            (
                vec![change("max_connections", Restart, 200, 100)],
                PrimaryUpdate::Switchover,
                sb.clone(),
                vec![
                    Primary("db-0".into()),
                    Standby("db-1".into()),
                    Standby("db-2".into()),
                ],
            ),
            (
                vec![change("shared_buffers", Restart, 16384, 32768)],
                PrimaryUpdate::Switchover,
                vec![],
                vec![Primary("db-0".into())],
            ),
            (
                vec![change("shared_buffers", Restart, 16384, 32768)],
                PrimaryUpdate::Supervised,
                sb.clone(),
                vec![
                    Standby("db-1".into()),
                    Standby("db-2".into()),
                    HoldPrimary("db-0".into()),
                ],
            ),
            // Without a standby there is nothing to hand over to or to wait for.
            (
                vec![change("shared_buffers", Restart, 16384, 32768)],
                PrimaryUpdate::Supervised,
                vec![],
                vec![Primary("db-0".into())],
            ),
        ];
        for (changes, update, standbys, want) in cases {
            let got = plan(&changes, "db-0", &standbys, update).unwrap();
            assert_eq!(got.restarts, want, "{changes:?} {update:?}");
        }
    }

    #[test]
    fn raising_and_lowering_hot_standby_settings_together_is_refused() {
        let changes = [
            change("max_connections", ParameterCategory::Restart, 100, 200),
            change("max_wal_senders", ParameterCategory::Restart, 20, 10),
        ];
        let err = plan(
            &changes,
            "db-0",
            &names(&["db-1"]),
            PrimaryUpdate::Switchover,
        )
        .unwrap_err();
        assert!(err.contains("two requests"), "{err}");
        let reload = plan(
            &[change("work_mem", ParameterCategory::Dynamic, 1, 2)],
            "db-0",
            &[],
            PrimaryUpdate::Restart,
        )
        .unwrap();
        assert!(reload.reload && reload.restarts.is_empty());
    }
}
