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

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

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
