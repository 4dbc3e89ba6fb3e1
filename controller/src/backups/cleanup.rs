//! What a cleanup of an instance's backups would delete: its retention settings
//! ([`RetentionSettings`]) and the backups the CMS records, put through [`retention::decide`].
//! Pure: the engine reads the facts and shows the plan (`toygres backup cleanup NAME
//! --dry-run`).

use chrono::{DateTime, Utc};
use toygres_common::backup_api::{BackupView, CleanupPlan, KeptBackup, RetentionSettings};

use super::retention::{self, BackupFacts, Outcome, RetentionPolicy, Series};

/// The policy the API's retention settings describe.
pub fn policy(settings: &RetentionSettings) -> RetentionPolicy {
    RetentionPolicy {
        daily: settings.daily,
        weekly: settings.weekly,
        monthly: settings.monthly,
        recovery_window_days: settings.window_days,
    }
}

/// A recorded backup as retention sees it; `None` for one whose record it cannot read (it is
/// then neither kept nor deleted).
fn facts(view: &BackupView) -> Option<BackupFacts> {
    let series = match view.kind.as_str() {
        "base" if view.abandoned => Series::Abandoned,
        "base" => Series::Base,
        "logical" => Series::Logical,
        _ => return None,
    };
    let outcome = match view.status.as_str() {
        "running" => Outcome::Running,
        "succeeded" => Outcome::Completed,
        "failed" => Outcome::Failed,
        _ => return None,
    };
    let at = view
        .finished_at
        .as_deref()
        .filter(|_| outcome != Outcome::Running)
        .unwrap_or(&view.started_at);
    let at = DateTime::parse_from_rfc3339(at).ok()?.with_timezone(&Utc);
    Some(BackupFacts {
        id: view.id.clone(),
        series,
        outcome,
        at,
    })
}

/// What applying `settings` to `backups` at `now` keeps (with why) and deletes.
pub fn plan(
    instance: &str,
    settings: &RetentionSettings,
    backups: &[BackupView],
    now: DateTime<Utc>,
) -> CleanupPlan {
    let facts: Vec<BackupFacts> = backups.iter().filter_map(facts).collect();
    let verdict = retention::decide(&policy(settings), &facts, now);
    CleanupPlan {
        instance: instance.to_string(),
        keep: verdict
            .keep
            .into_iter()
            .map(|(id, reasons)| KeptBackup {
                id,
                reasons: reasons
                    .iter()
                    .map(|r| {
                        serde_json::to_value(r)
                            .ok()
                            .and_then(|v| v.get("rule").and_then(|r| r.as_str()).map(String::from))
                            .unwrap_or_default()
                    })
                    .collect(),
            })
            .collect(),
        delete: verdict.delete,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn backup(id: &str, kind: &str, status: &str, at: &str) -> BackupView {
        serde_json::from_value(serde_json::json!({
            "id": id, "instance": "db", "kind": kind, "status": status,
            "started_at": at, "finished_at": at,
        }))
        .unwrap()
    }

    #[test]
    fn a_plan_keeps_the_policys_backups_and_deletes_the_rest() {
        let settings = RetentionSettings {
            daily: 2,
            weekly: 0,
            monthly: 0,
            window_days: None,
        };
        let backups = [
            backup("bk-1", "base", "succeeded", "2026-12-01T01:00:00Z"),
            backup("bk-2", "base", "succeeded", "2026-12-03T01:00:00Z"),
            backup("bk-3", "base", "failed", "2026-12-03T02:00:00Z"),
            backup("bk-4", "base", "succeeded", "2026-12-04T01:00:00Z"),
            backup("bk-5", "logical", "succeeded", "2026-11-01T01:00:00Z"),
        ];
        let now = DateTime::parse_from_rfc3339("2026-12-04T12:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let plan = plan("db", &settings, &backups, now);
        assert_eq!(plan.delete, ["bk-1", "bk-3"]);
        let kept: Vec<&str> = plan.keep.iter().map(|k| k.id.as_str()).collect();
        assert_eq!(kept, ["bk-2", "bk-4", "bk-5"]);
        assert_eq!(plan.keep[1].reasons, ["daily", "newest"]);
    }

    #[test]
    fn a_backup_an_in_place_restore_left_behind_never_stands_in_for_the_newest() {
        let settings = RetentionSettings {
            daily: 1,
            weekly: 0,
            monthly: 0,
            window_days: None,
        };
        // bk-2 is the newest base backup, but an in-place restore went back before it.
        let mut abandoned = backup("bk-2", "base", "succeeded", "2026-12-03T01:00:00Z");
        abandoned.abandoned = true;
        let backups = [
            backup("bk-1", "base", "succeeded", "2026-12-01T01:00:00Z"),
            abandoned,
        ];
        let at = |t: &str| DateTime::parse_from_rfc3339(t).unwrap().with_timezone(&Utc);
        let plan = plan("db", &settings, &backups, at("2026-12-03T12:00:00Z"));
        // The restorable bk-1 stays (the newest of its series); bk-2 is kept by today only.
        let kept: Vec<(&str, Vec<String>)> = plan
            .keep
            .iter()
            .map(|k| (k.id.as_str(), k.reasons.clone()))
            .collect();
        assert_eq!(
            kept,
            [
                ("bk-1", vec!["newest".to_string()]),
                ("bk-2", vec!["daily".to_string()])
            ]
        );
        // A day later it ages out; bk-1 does not.
        let plan = plan_at(&settings, &backups, at("2026-12-04T12:00:00Z"));
        assert_eq!(plan.delete, ["bk-2"]);
    }

    fn plan_at(
        settings: &RetentionSettings,
        backups: &[BackupView],
        now: DateTime<Utc>,
    ) -> CleanupPlan {
        plan("db", settings, backups, now)
    }
}
