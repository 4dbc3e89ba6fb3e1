//! When a backup schedule fires: cron expressions evaluated in UTC by the `croner` crate.
//!
//! An expression has five fields (minute, hour, day of month, month, day of week; `0` and `7` are
//! Sunday) or six with seconds first, and accepts the usual nicknames (`@daily`, `@weekly`).
//! The instance actor asks for the next run after the last one it planned and sets a durable
//! timer for it, so a controller restart neither loses a run nor takes one twice.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use croner::Cron;

/// The default schedules (every Sunday at 01:00 UTC, every day at 02:00 UTC): defined beside the
/// API's backup configuration, which defaults to them.
pub use toygres_common::backup_api::{DEFAULT_BASE_SCHEDULE, DEFAULT_LOGICAL_SCHEDULE};

/// A parsed cron schedule.
#[derive(Clone)]
pub struct Schedule {
    expr: String,
    cron: Cron,
}

impl fmt::Debug for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Schedule").field(&self.expr).finish()
    }
}

/// A schedule that does not parse, with croner's reason.
#[derive(Debug, thiserror::Error)]
#[error("invalid cron expression {expr:?}: {reason}")]
pub struct ScheduleError {
    expr: String,
    reason: String,
}

impl FromStr for Schedule {
    type Err = ScheduleError;

    fn from_str(expr: &str) -> Result<Self, Self::Err> {
        let invalid = |reason: String| ScheduleError {
            expr: expr.to_owned(),
            reason,
        };
        if expr.len() > 200 {
            return Err(invalid("longer than 200 characters".into()));
        }
        let cron = Cron::from_str(expr).map_err(|e| invalid(e.to_string()))?;
        let schedule = Schedule {
            expr: expr.trim().to_owned(),
            cron,
        };
        // A pattern that never matches (February 30th) would leave the actor without a timer.
        let probe = DateTime::<Utc>::UNIX_EPOCH;
        if schedule.next_after(probe).is_none() {
            return Err(invalid("it never fires".into()));
        }
        Ok(schedule)
    }
}

impl Schedule {
    /// The expression as given (trimmed).
    pub fn expr(&self) -> &str {
        &self.expr
    }

    /// The first moment strictly after `after` at which the schedule fires, or `None` if it
    /// never fires again.
    pub fn next_after(&self, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.cron.find_next_occurrence(&after, false).ok()
    }

    /// A sentence for people (`"At 01:00 on Sunday."`-like).
    pub fn describe(&self) -> String {
        self.cron.describe()
    }
}

/// What a backup schedule's loop does next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScheduleStep {
    /// Nothing is due: wait this long, then look again (the schedule may have changed).
    Wait(std::time::Duration),
    /// The run due at this time is due now: take it.
    Fire(DateTime<Utc>),
}

/// The next step of a schedule's loop at `now`: the first run strictly after `anchor` (the last
/// run, or when the schedule started, changed or was resumed) fires when it is due, else the
/// loop waits for it — at most `recheck`, so a changed or suspended schedule is seen within
/// that time. No schedule (off, suspended) waits `recheck`. A run missed while the controller
/// was down fires once when it comes back, not once per missed run.
pub fn next_step(
    schedule: Option<&Schedule>,
    anchor: DateTime<Utc>,
    now: DateTime<Utc>,
    recheck: std::time::Duration,
) -> ScheduleStep {
    match schedule.and_then(|s| s.next_after(anchor)) {
        None => ScheduleStep::Wait(recheck),
        Some(due) if due <= now => ScheduleStep::Fire(due),
        Some(due) => ScheduleStep::Wait(
            (due - now)
                .to_std()
                .map_or(recheck, |until| until.min(recheck)),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn the_loop_waits_for_the_next_run_and_fires_it_when_due() {
        use std::time::Duration;
        let recheck = Duration::from_secs(30);
        let every_ten: Schedule = "*/10 * * * * *".parse().expect("valid");
        let hourly: Schedule = "0 * * * *".parse().expect("valid");
        let anchor = at(2027, 1, 1, 0, 0, 3);
        let cases = [
            (
                Some(&every_ten),
                at(2027, 1, 1, 0, 0, 4),
                ScheduleStep::Wait(Duration::from_secs(6)),
            ),
            (
                Some(&every_ten),
                at(2027, 1, 1, 0, 0, 10),
                ScheduleStep::Fire(at(2027, 1, 1, 0, 0, 10)),
            ),
            // Down for a minute: the first missed run fires, once.
            (
                Some(&every_ten),
                at(2027, 1, 1, 0, 1, 5),
                ScheduleStep::Fire(at(2027, 1, 1, 0, 0, 10)),
            ),
            (
                Some(&hourly),
                at(2027, 1, 1, 0, 0, 4),
                ScheduleStep::Wait(recheck),
            ),
            (None, at(2027, 1, 1, 0, 0, 4), ScheduleStep::Wait(recheck)),
        ];
        for (schedule, now, want) in cases {
            assert_eq!(
                next_step(schedule, anchor, now, recheck),
                want,
                "{schedule:?} at {now}"
            );
        }
    }

    fn at(y: i32, m: u32, d: u32, h: u32, min: u32, s: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(y, m, d, h, min, s)
            .single()
            .expect("valid time")
    }

    #[test]
    fn the_defaults_fire_weekly_on_sunday_and_daily() {
        let base: Schedule = DEFAULT_BASE_SCHEDULE.parse().expect("valid");
        // Wednesday 2027-03-03 -> Sunday 2027-03-07 01:00, then a week later.
        let first = base.next_after(at(2027, 3, 3, 12, 0, 0)).expect("fires");
        assert_eq!(first, at(2027, 3, 7, 1, 0, 0));
        assert_eq!(base.next_after(first), Some(at(2027, 3, 14, 1, 0, 0)));

        let logical: Schedule = DEFAULT_LOGICAL_SCHEDULE.parse().expect("valid");
        assert_eq!(
            logical.next_after(at(2027, 3, 3, 1, 59, 59)),
            Some(at(2027, 3, 3, 2, 0, 0))
        );
        assert_eq!(
            logical.next_after(at(2027, 3, 3, 2, 0, 0)),
            Some(at(2027, 3, 4, 2, 0, 0))
        );
    }

    #[test]
    fn six_fields_take_seconds_first_for_short_test_schedules() {
        let every_ten: Schedule = "*/10 * * * * *".parse().expect("valid");
        assert_eq!(
            every_ten.next_after(at(2027, 1, 1, 0, 0, 3)),
            Some(at(2027, 1, 1, 0, 0, 10))
        );
        assert_eq!(
            every_ten.next_after(at(2027, 1, 1, 0, 0, 59)),
            Some(at(2027, 1, 1, 0, 1, 0))
        );
    }

    #[test]
    fn nicknames_and_month_ends_work() {
        let weekly: Schedule = "@weekly".parse().expect("valid");
        assert_eq!(
            weekly.next_after(at(2027, 3, 3, 0, 0, 0)),
            Some(at(2027, 3, 7, 0, 0, 0))
        );
        let last_day: Schedule = "30 3 L * *".parse().expect("valid");
        assert_eq!(
            last_day.next_after(at(2028, 2, 1, 0, 0, 0)),
            Some(at(2028, 2, 29, 3, 30, 0))
        );
    }

    #[test]
    fn bad_expressions_are_refused_with_the_expression_in_the_message() {
        for bad in [
            "",
            "* * *",
            "61 * * * *",
            "0 25 * * *",
            "0 1 * * 8",
            "not a cron",
            "0 0 30 2 *",
        ] {
            let err = bad.parse::<Schedule>().expect_err(bad).to_string();
            assert!(err.starts_with("invalid cron expression"), "{bad}: {err}");
            assert!(err.contains(&format!("{bad:?}")), "{bad}: {err}");
        }
    }
}
