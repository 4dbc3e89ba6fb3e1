//! Which backups a retention policy keeps: a pure decision, with no I/O and no duroxide.
//!
//! The policy is grandfather-father-son over calendar periods in UTC, optionally joined with a
//! recovery window:
//!
//! - `daily = N` keeps the newest completed backup of each of the last N calendar days, today
//!   included; `weekly = N` the newest of each of the last N ISO weeks (Monday to Sunday), this
//!   week included; `monthly = N` the newest of each of the last N calendar months. A period
//!   without a backup keeps nothing and is not replaced by an older one.
//! - `recovery_window_days = D` keeps every backup that finished within the last D days, and the
//!   newest one that finished before the window opened: it is the base a restore to the
//!   window's first moment starts from.
//! - Whatever the settings, the newest completed backup of each kind is kept, so retention never
//!   leaves an instance with nothing to restore; a backup still running is never touched.
//! - A failed backup restores nothing: its leftovers are deleted.
//! - A base backup an in-place restore left off the timeline history ([`Series::Abandoned`])
//!   is kept only by the periods and the window, never as the newest.
//!
//! Base and logical backups are two separate series: each period keeps one of each kind. The WAL
//! is not decided here — the sidecar keeps every segment from the oldest kept base backup on, so
//! any moment between the oldest kept base backup and the last archived segment stays
//! restorable, not only the kept backups' own points.

use std::collections::BTreeMap;

use chrono::{DateTime, Datelike, Duration, NaiveDate, Utc};
use serde::{Deserialize, Serialize};

/// How many periods of each size to keep, and an optional continuous recovery window.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RetentionPolicy {
    /// Calendar days (UTC) whose newest backup is kept.
    pub daily: u32,
    /// ISO weeks whose newest backup is kept.
    pub weekly: u32,
    /// Calendar months whose newest backup is kept.
    pub monthly: u32,
    /// Days within which every backup is kept (plus the one the window starts from).
    pub recovery_window_days: Option<u32>,
}

impl Default for RetentionPolicy {
    /// Seven daily, four weekly and three monthly backups, no recovery window.
    fn default() -> Self {
        Self {
            daily: 7,
            weekly: 4,
            monthly: 3,
            recovery_window_days: None,
        }
    }
}

/// The series a backup belongs to; each series is retained on its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Series {
    /// Physical base backups (with the WAL they need).
    Base,
    /// Logical dumps.
    Logical,
    /// Base backups an in-place restore left off the instance's timeline history: they restore
    /// nothing the instance now has, but what it had before (by hand, to their own timeline).
    /// Kept by the policy's periods and window like the others, but never as the newest or as
    /// the window's base, so they age out and never stand in for a restorable backup.
    Abandoned,
}

/// Where a backup stands, as far as retention cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Still being taken: never deleted.
    Running,
    /// Completed: restorable.
    Completed,
    /// Failed: restores nothing.
    Failed,
}

/// What the policy needs to know about one backup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupFacts {
    /// The backup's id.
    pub id: String,
    /// Its series.
    pub series: Series,
    /// Running, completed or failed.
    pub outcome: Outcome,
    /// When it finished (for a base backup: the moment it is consistent from). For a running
    /// backup, when it started.
    pub at: DateTime<Utc>,
}

/// Why a backup is kept. A backup may be kept for several reasons at once.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(tag = "rule", rename_all = "snake_case")]
pub enum KeepReason {
    /// The newest of this calendar day.
    Daily {
        /// The day.
        day: NaiveDate,
    },
    /// The newest of this ISO week.
    Weekly {
        /// ISO week-numbering year.
        year: i32,
        /// ISO week number, 1 to 53.
        week: u32,
    },
    /// The newest of this calendar month.
    Monthly {
        /// Year.
        year: i32,
        /// Month, 1 to 12.
        month: u32,
    },
    /// Finished inside the recovery window.
    InWindow,
    /// The newest backup before the recovery window: a restore to the window's start needs it.
    WindowBase,
    /// The newest completed backup of its series.
    Newest,
    /// Still running.
    Running,
}

/// The decision: what to keep (with why) and what to delete.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Verdict {
    /// Kept backup ids, each with the reasons that keep it.
    pub keep: BTreeMap<String, Vec<KeepReason>>,
    /// Backup ids to delete, oldest first.
    pub delete: Vec<String>,
}

impl Verdict {
    /// Whether `id` is kept.
    pub fn keeps(&self, id: &str) -> bool {
        self.keep.contains_key(id)
    }
}

/// Decides which of `backups` the policy keeps at `now`.
pub fn decide(policy: &RetentionPolicy, backups: &[BackupFacts], now: DateTime<Utc>) -> Verdict {
    let mut verdict = Verdict::default();
    let mut doomed: Vec<&BackupFacts> = Vec::new();
    for series in [Series::Base, Series::Logical, Series::Abandoned] {
        let restorable = series != Series::Abandoned;
        // Newest first; ties broken by id so the decision does not depend on input order.
        let mut completed: Vec<&BackupFacts> = backups
            .iter()
            .filter(|b| b.series == series && b.outcome == Outcome::Completed)
            .collect();
        completed.sort_by(|a, b| b.at.cmp(&a.at).then_with(|| b.id.cmp(&a.id)));

        let mut keep = |id: &str, reason: KeepReason| {
            verdict.keep.entry(id.to_owned()).or_default().push(reason);
        };
        if let Some(newest) = completed.first().filter(|_| restorable) {
            keep(&newest.id, KeepReason::Newest);
        }
        for (id, reason) in periodic(policy, &completed, now) {
            keep(id, reason);
        }
        if let Some(days) = policy.recovery_window_days {
            let opens = now - Duration::days(i64::from(days));
            for b in &completed {
                if b.at >= opens {
                    keep(&b.id, KeepReason::InWindow);
                }
            }
            if let Some(base) = completed
                .iter()
                .find(|b| b.at < opens)
                .filter(|_| restorable)
            {
                keep(&base.id, KeepReason::WindowBase);
            }
        }
        for b in backups.iter().filter(|b| b.series == series) {
            match b.outcome {
                Outcome::Running => keep(&b.id, KeepReason::Running),
                Outcome::Failed => doomed.push(b),
                Outcome::Completed => {}
            }
        }
        doomed.extend(completed.iter().copied());
    }
    doomed.retain(|b| !verdict.keep.contains_key(&b.id));
    doomed.sort_by(|a, b| a.at.cmp(&b.at).then_with(|| a.id.cmp(&b.id)));
    verdict.delete = doomed.into_iter().map(|b| b.id.clone()).collect();
    for reasons in verdict.keep.values_mut() {
        reasons.sort();
        reasons.dedup();
    }
    verdict
}

/// The calendar periods (day, ISO week, month) a backup falls in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Period {
    Day(NaiveDate),
    Week(i32, u32),
    Month(i32, u32),
}

impl Period {
    fn reason(self) -> KeepReason {
        match self {
            Period::Day(day) => KeepReason::Daily { day },
            Period::Week(year, week) => KeepReason::Weekly { year, week },
            Period::Month(year, month) => KeepReason::Monthly { year, month },
        }
    }
}

/// The newest backup of each of the policy's recent days, weeks and months. `completed` is
/// sorted newest first, so the first backup met in a period is that period's newest.
fn periodic<'a>(
    policy: &RetentionPolicy,
    completed: &[&'a BackupFacts],
    now: DateTime<Utc>,
) -> Vec<(&'a str, KeepReason)> {
    let wanted = recent_periods(policy, now.date_naive());
    let mut taken = std::collections::BTreeSet::new();
    let mut kept = Vec::new();
    for b in completed {
        let day = b.at.date_naive();
        let iso = day.iso_week();
        for period in [
            Period::Day(day),
            Period::Week(iso.year(), iso.week()),
            Period::Month(day.year(), day.month()),
        ] {
            if wanted.contains(&period) && taken.insert(period) {
                kept.push((b.id.as_str(), period.reason()));
            }
        }
    }
    kept
}

/// The last `daily` days, `weekly` ISO weeks and `monthly` months up to and including `today`.
fn recent_periods(
    policy: &RetentionPolicy,
    today: NaiveDate,
) -> std::collections::BTreeSet<Period> {
    let mut periods = std::collections::BTreeSet::new();
    let mut day = today;
    for _ in 0..policy.daily {
        periods.insert(Period::Day(day));
        day = day.pred_opt().unwrap_or(day);
    }
    let mut monday = today - Duration::days(i64::from(today.weekday().num_days_from_monday()));
    for _ in 0..policy.weekly {
        let iso = monday.iso_week();
        periods.insert(Period::Week(iso.year(), iso.week()));
        monday -= Duration::weeks(1);
    }
    let (mut year, mut month) = (today.year(), today.month());
    for _ in 0..policy.monthly {
        periods.insert(Period::Month(year, month));
        (year, month) = if month == 1 {
            (year - 1, 12)
        } else {
            (year, month - 1)
        };
    }
    periods
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn at(y: i32, m: u32, d: u32, h: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(y, m, d, h, 0, 0)
            .single()
            .expect("valid time")
    }

    fn backup(series: Series, outcome: Outcome, when: DateTime<Utc>) -> BackupFacts {
        let tag = match series {
            Series::Base => "b",
            Series::Logical => "l",
            Series::Abandoned => "a",
        };
        BackupFacts {
            id: format!("{tag}-{}", when.format("%Y%m%dT%H")),
            series,
            outcome,
            at: when,
        }
    }

    fn kept_ids(verdict: &Verdict) -> Vec<String> {
        verdict.keep.keys().cloned().collect()
    }

    /// The plan's schedule, simulated: a logical dump every day at 02:00 and a base backup every
    /// Sunday at 01:00, retention applied after each one as the controller does, for three years.
    /// Returns what is left, newest last.
    fn simulate(policy: &RetentionPolicy, from: NaiveDate, days: i64) -> Vec<BackupFacts> {
        let mut store: Vec<BackupFacts> = Vec::new();
        for n in 0..days {
            let day = from + Duration::days(n);
            let mut taken = Vec::new();
            if day.weekday() == chrono::Weekday::Sun {
                taken.push(backup(
                    Series::Base,
                    Outcome::Completed,
                    day.and_hms_opt(1, 0, 0).expect("time").and_utc(),
                ));
            }
            taken.push(backup(
                Series::Logical,
                Outcome::Completed,
                day.and_hms_opt(2, 0, 0).expect("time").and_utc(),
            ));
            for b in taken {
                let now = b.at + Duration::minutes(30);
                store.push(b);
                let verdict = decide(policy, &store, now);
                assert_invariants(policy, &store, &verdict, now);
                store.retain(|b| verdict.keeps(&b.id));
            }
        }
        store
    }

    /// What must hold after every decision, whatever the calendar.
    fn assert_invariants(
        policy: &RetentionPolicy,
        store: &[BackupFacts],
        verdict: &Verdict,
        now: DateTime<Utc>,
    ) {
        for series in [Series::Base, Series::Logical] {
            let of_series: Vec<&BackupFacts> =
                store.iter().filter(|b| b.series == series).collect();
            if let Some(newest) = of_series.iter().max_by_key(|b| b.at) {
                assert!(
                    verdict.keeps(&newest.id),
                    "the newest {series:?} backup is always kept"
                );
            }
            // Every day of the daily range that had a backup still has its newest one.
            for back in 0..i64::from(policy.daily) {
                let day = now.date_naive() - Duration::days(back);
                if let Some(newest) = of_series
                    .iter()
                    .filter(|b| b.at.date_naive() == day)
                    .max_by_key(|b| b.at)
                {
                    assert!(
                        verdict.keeps(&newest.id),
                        "{day} keeps its newest {series:?} backup"
                    );
                }
            }
        }
        for id in &verdict.delete {
            assert!(!verdict.keeps(id), "{id} is both kept and deleted");
        }
        assert_eq!(
            verdict.keep.len() + verdict.delete.len(),
            store.len(),
            "every backup is decided once"
        );
        // Each period keeps at most one backup per series, plus the newest of each series; a
        // window keeps at most a day's backups per day in it, plus its base.
        let window = policy.recovery_window_days.unwrap_or(0) as usize;
        let bound =
            2 * (policy.daily + policy.weekly + policy.monthly + 1) as usize + 2 * (window + 2);
        assert!(
            verdict.keep.len() <= bound,
            "{} kept, more than {bound}",
            verdict.keep.len()
        );
    }

    #[test]
    fn three_years_of_the_default_schedule_keep_exactly_the_gfs_set() {
        let policy = RetentionPolicy::default();
        // 2027-01-01 is a Friday; the run's last day is Monday 2029-12-31.
        let left = simulate(
            &policy,
            NaiveDate::from_ymd_opt(2027, 1, 1).expect("date"),
            1096,
        );
        let last = left.iter().map(|b| b.at).max().expect("something is left");
        assert_eq!(last, at(2029, 12, 31, 2));

        // Daily: Dec 25..31. Weekly, ISO weeks from Monday Dec 31 back: W1 of 2030 (Dec 31),
        // W52 (its Sunday, Dec 30, already daily), W51 (Sun Dec 23), W50 (Sun Dec 16).
        // Monthly: Dec 31, Nov 30, Oct 31.
        let mut logical: Vec<String> = left
            .iter()
            .filter(|b| b.series == Series::Logical)
            .map(|b| b.id.clone())
            .collect();
        logical.sort();
        let mut expected: Vec<String> = [
            "l-20291031T02",
            "l-20291130T02",
            "l-20291216T02",
            "l-20291223T02",
        ]
        .map(String::from)
        .to_vec();
        expected.extend((25..=31).map(|d| format!("l-202912{d:02}T02")));
        assert_eq!(logical, expected);

        // Base backups on Sundays only: the daily range holds Sunday Dec 30; ISO weeks W52
        // (Dec 30), W51 (Dec 23), W50 (Dec 16) and W1 of 2030 (no Sunday yet); the months keep
        // their last Sunday: Dec 30, Nov 25, Oct 28.
        let mut base: Vec<String> = left
            .iter()
            .filter(|b| b.series == Series::Base)
            .map(|b| b.id.clone())
            .collect();
        base.sort();
        assert_eq!(
            base,
            [
                "b-20291028T01",
                "b-20291125T01",
                "b-20291216T01",
                "b-20291223T01",
                "b-20291230T01"
            ]
            .map(String::from)
        );
    }

    #[test]
    fn deciding_after_every_backup_leaves_what_one_decision_at_the_end_keeps() {
        // Deleting as we go must never throw away a backup the policy would want later.
        for policy in [
            RetentionPolicy::default(),
            RetentionPolicy {
                daily: 3,
                weekly: 2,
                monthly: 12,
                recovery_window_days: None,
            },
            RetentionPolicy {
                daily: 0,
                weekly: 0,
                monthly: 0,
                recovery_window_days: Some(10),
            },
            RetentionPolicy {
                daily: 14,
                weekly: 8,
                monthly: 6,
                recovery_window_days: Some(3),
            },
        ] {
            let from = NaiveDate::from_ymd_opt(2028, 2, 10).expect("date");
            let left = simulate(&policy, from, 800);
            let mut everything = Vec::new();
            for n in 0..800 {
                let day = from + Duration::days(n);
                if day.weekday() == chrono::Weekday::Sun {
                    everything.push(backup(
                        Series::Base,
                        Outcome::Completed,
                        day.and_hms_opt(1, 0, 0).expect("time").and_utc(),
                    ));
                }
                everything.push(backup(
                    Series::Logical,
                    Outcome::Completed,
                    day.and_hms_opt(2, 0, 0).expect("time").and_utc(),
                ));
            }
            let now = everything.last().expect("backups").at + Duration::minutes(30);
            let once = decide(&policy, &everything, now);
            let mut left_ids: Vec<String> = left.iter().map(|b| b.id.clone()).collect();
            left_ids.sort();
            assert_eq!(left_ids, kept_ids(&once), "policy {policy:?}");
        }
    }

    #[test]
    fn a_recovery_window_keeps_everything_inside_it_and_the_base_it_starts_from() {
        let policy = RetentionPolicy {
            daily: 0,
            weekly: 0,
            monthly: 0,
            recovery_window_days: Some(7),
        };
        let backups: Vec<BackupFacts> = [1, 3, 5, 9, 12, 14]
            .iter()
            .map(|d| backup(Series::Base, Outcome::Completed, at(2027, 5, *d, 4)))
            .collect();
        let verdict = decide(&policy, &backups, at(2027, 5, 14, 12));
        // The window opens on May 7 at 12:00: May 9, 12, 14 are inside; May 5 is the base a
        // restore to May 7 needs; May 1 and 3 go.
        assert_eq!(
            kept_ids(&verdict),
            [
                "b-20270505T04",
                "b-20270509T04",
                "b-20270512T04",
                "b-20270514T04"
            ]
        );
        assert_eq!(verdict.delete, ["b-20270501T04", "b-20270503T04"]);
        assert_eq!(verdict.keep["b-20270505T04"], [KeepReason::WindowBase]);
    }

    #[test]
    fn the_newest_backup_survives_a_policy_that_keeps_nothing_and_a_long_gap() {
        let policy = RetentionPolicy {
            daily: 1,
            weekly: 0,
            monthly: 0,
            recovery_window_days: None,
        };
        let backups = vec![
            backup(Series::Base, Outcome::Completed, at(2027, 1, 3, 1)),
            backup(Series::Base, Outcome::Completed, at(2027, 1, 10, 1)),
            backup(Series::Logical, Outcome::Completed, at(2027, 1, 9, 2)),
        ];
        // Nothing in today's period: backups stopped a year ago. The newest of each series stays.
        let verdict = decide(&policy, &backups, at(2028, 1, 10, 1));
        assert_eq!(kept_ids(&verdict), ["b-20270110T01", "l-20270109T02"]);
        assert_eq!(verdict.keep["b-20270110T01"], [KeepReason::Newest]);
        assert_eq!(verdict.delete, ["b-20270103T01"]);
    }

    #[test]
    fn running_backups_are_kept_and_failed_ones_deleted() {
        let policy = RetentionPolicy::default();
        let backups = vec![
            backup(Series::Base, Outcome::Completed, at(2027, 3, 1, 1)),
            backup(Series::Base, Outcome::Failed, at(2027, 3, 2, 1)),
            backup(Series::Base, Outcome::Running, at(2027, 3, 3, 1)),
        ];
        let verdict = decide(&policy, &backups, at(2027, 3, 3, 2));
        assert_eq!(verdict.keep["b-20270303T01"], [KeepReason::Running]);
        assert!(verdict.keeps("b-20270301T01"));
        assert_eq!(verdict.delete, ["b-20270302T01"]);
    }

    #[test]
    fn a_day_with_several_backups_keeps_its_newest_and_input_order_does_not_matter() {
        let policy = RetentionPolicy {
            daily: 2,
            weekly: 0,
            monthly: 0,
            recovery_window_days: None,
        };
        let mut backups: Vec<BackupFacts> = [0, 6, 12, 18]
            .iter()
            .map(|h| backup(Series::Logical, Outcome::Completed, at(2027, 6, 1, *h)))
            .chain([backup(
                Series::Logical,
                Outcome::Completed,
                at(2027, 6, 2, 3),
            )])
            .collect();
        let now = at(2027, 6, 2, 4);
        let forward = decide(&policy, &backups, now);
        backups.reverse();
        assert_eq!(decide(&policy, &backups, now), forward);
        assert_eq!(kept_ids(&forward), ["l-20270601T18", "l-20270602T03"]);
        assert_eq!(
            forward.delete,
            ["l-20270601T00", "l-20270601T06", "l-20270601T12"]
        );
    }

    #[test]
    fn iso_weeks_across_a_new_year_are_one_period() {
        // Mon 2029-12-31 and Sun 2030-01-06 are in ISO week 1 of 2030: one weekly keeper.
        let policy = RetentionPolicy {
            daily: 0,
            weekly: 1,
            monthly: 0,
            recovery_window_days: None,
        };
        let backups = vec![
            backup(Series::Base, Outcome::Completed, at(2029, 12, 31, 1)),
            backup(Series::Base, Outcome::Completed, at(2030, 1, 5, 1)),
        ];
        let verdict = decide(&policy, &backups, at(2030, 1, 6, 1));
        assert_eq!(
            verdict.keep["b-20300105T01"],
            [
                KeepReason::Weekly {
                    year: 2030,
                    week: 1
                },
                KeepReason::Newest
            ]
        );
        assert_eq!(verdict.delete, ["b-20291231T01"]);
    }
}
