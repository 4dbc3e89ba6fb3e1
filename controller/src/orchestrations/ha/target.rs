//! Which standby may take over from a primary, and why: a pure decision over a survey of the
//! standbys, with no duroxide and no I/O, tested over tables of cases.

use serde::{Deserialize, Serialize};
use toygres_common::controller_api::HaSettings;
use toygres_common::domain::Role;
use toygres_common::sidecar_api::format_lsn;

use crate::activities::ha::MemberSurvey;

/// What the actor last saw of the primary while it answered.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PrimarySeen {
    /// Which member it was.
    #[serde(default)]
    pub member: Option<String>,
    /// Its WAL position.
    pub lsn: Option<u64>,
    /// The standbys it reported synchronous (`sync`) or in the quorum (`quorum`).
    pub synchronous: Vec<String>,
    /// Its synchronous replication had degraded to asynchronous.
    pub degraded: bool,
}

/// Why no standby may be promoted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NoCandidate(pub String);

/// The standby to promote, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Choice {
    pub member: String,
    /// Bytes it is behind the old primary's last known position (0 when unknown).
    pub lag_bytes: u64,
    pub reason: String,
}

/// Picks the standby to promote from a survey of the standbys, or says why none may be.
///
/// - A candidate answers, runs, and is a standby.
/// - Sync mode (unless forced, or degraded at the time): only standbys the primary last
///   reported synchronous. When it reported none, every standby of `sync_set` (those that
///   could have been synchronous) must answer. With a quorum (`ANY n` of m), enough of them
///   must answer that one of them surely has every acknowledged commit (m − n + 1). A standby
///   of `sync_set` that received at least as much of the same WAL as one of those is eligible
///   too: it holds every commit that one holds.
/// - Async mode (unless forced): within `max_lag_bytes` of the primary's last known position.
/// - The furthest WAL position wins; ties go by name. A requested target must be a candidate.
pub fn choose_target(
    standbys: &[MemberSurvey],
    sync: bool,
    ha: &HaSettings,
    seen: &PrimarySeen,
    sync_set: &[String],
    to: Option<&str>,
    force: bool,
) -> Result<Choice, NoCandidate> {
    let alive: Vec<&MemberSurvey> = standbys
        .iter()
        .filter(|s| s.reachable && s.running && s.role == Some(Role::Standby))
        .collect();
    if alive.is_empty() {
        return Err(NoCandidate("no standby answers and runs".into()));
    }
    let furthest = alive
        .iter()
        .filter_map(|s| s.wal_position())
        .max()
        .unwrap_or(0);
    let reference = seen.lsn.unwrap_or(0).max(furthest);
    let lag = |s: &MemberSurvey| reference.saturating_sub(s.wal_position().unwrap_or(0));
    let mut candidates: Vec<&MemberSurvey> = if force {
        alive.clone()
    } else if sync && !seen.degraded && seen.synchronous.is_empty() {
        // Which standby confirmed the last commits was never seen (the primary failed right
        // after it took over, say). Every acknowledged commit is on some standby that could be
        // synchronous; if all of them answer, the furthest one has them all.
        let missing: Vec<&str> = sync_set
            .iter()
            .filter(|m| !alive.iter().any(|s| &s.member == *m))
            .map(String::as_str)
            .collect();
        if sync_set.is_empty() || !missing.is_empty() {
            return Err(NoCandidate(format!(
                "the primary reported no synchronous standby before it failed, and not every \
                 standby that could have been one answers (missing: {})",
                if missing.is_empty() {
                    "all".to_string()
                } else {
                    missing.join(", ")
                }
            )));
        }
        alive
            .iter()
            .copied()
            .filter(|s| sync_set.contains(&s.member))
            .collect()
    } else if sync && !seen.degraded {
        let answering: Vec<&MemberSurvey> = alive
            .iter()
            .copied()
            .filter(|s| seen.synchronous.contains(&s.member))
            .collect();
        let needed = if ha.quorum {
            let set = u32::try_from(seen.synchronous.len()).unwrap_or(u32::MAX);
            usize::try_from(set.saturating_sub(ha.num_sync) + 1).unwrap_or(usize::MAX)
        } else {
            1
        };
        if answering.len() < needed {
            return Err(NoCandidate(format!(
                "only {} of the synchronous standbys ({}) answer; {needed} are needed to be \
                 sure of having every acknowledged commit",
                answering.len(),
                seen.synchronous.join(", ")
            )));
        }
        answering
    } else {
        let within: Vec<&MemberSurvey> = alive
            .iter()
            .copied()
            .filter(|s| lag(s) <= ha.max_lag_bytes)
            .collect();
        if within.is_empty() {
            return Err(NoCandidate(format!(
                "every standby lags more than {} bytes",
                ha.max_lag_bytes
            )));
        }
        within
    };
    // In sync mode, a standby that could be synchronous and received more of the same history
    // (same timeline, same upstream) than an eligible one holds everything that one holds, and
    // more: it is eligible too. Promoting it spares it a rewind (it could not follow a new
    // primary that has less).
    if sync && !force {
        let holds_all_of = |s: &MemberSurvey, c: &MemberSurvey| {
            s.timeline == c.timeline
                && s.upstream == c.upstream
                && s.wal_position() >= c.wal_position()
        };
        let further: Vec<&MemberSurvey> = alive
            .iter()
            .copied()
            .filter(|s| {
                sync_set.contains(&s.member)
                    && s.timeline.is_some()
                    && s.wal_position().is_some()
                    && !candidates.iter().any(|c| c.member == s.member)
                    && candidates.iter().any(|c| holds_all_of(s, c))
            })
            .collect();
        candidates.extend(further);
    }
    if let Some(to) = to {
        candidates.retain(|s| s.member == to);
        if candidates.is_empty() {
            return Err(NoCandidate(format!(
                "{to} is not an eligible standby (it must answer, stream{})",
                if sync {
                    " and be synchronous"
                } else {
                    " and be within the lag bound"
                }
            )));
        }
    }
    candidates.sort_by(|a, b| {
        b.wal_position()
            .cmp(&a.wal_position())
            .then_with(|| a.member.cmp(&b.member))
    });
    let best = candidates[0];
    let reason = format!(
        "{} has the furthest WAL ({}) of the eligible standbys ({}){}",
        best.member,
        best.wal_position().map_or("unknown".into(), format_lsn),
        candidates
            .iter()
            .map(|s| s.member.as_str())
            .collect::<Vec<_>>()
            .join(", "),
        if force { ", forced" } else { "" }
    );
    Ok(Choice {
        member: best.member.clone(),
        lag_bytes: lag(best),
        reason,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use toygres_common::domain::Role;

    fn standby(member: &str, lsn: u64) -> MemberSurvey {
        MemberSurvey {
            member: member.into(),
            reachable: true,
            running: true,
            role: Some(Role::Standby),
            receive_lsn: Some(lsn),
            streaming: false,
            ..MemberSurvey::default()
        }
    }

    fn seen(lsn: u64, synchronous: &[&str]) -> PrimarySeen {
        PrimarySeen {
            member: Some("db-0".into()),
            lsn: Some(lsn),
            synchronous: synchronous.iter().map(|s| s.to_string()).collect(),
            degraded: false,
        }
    }

    #[test]
    fn sync_mode_promotes_only_the_synchronous_standby() {
        let ha = HaSettings::default();
        let standbys = [standby("db-1", 100), standby("db-2", 200)];
        // db-2 is further but was asynchronous: only db-1 surely has every commit.
        let choice = choose_target(
            &standbys,
            true,
            &ha,
            &seen(200, &["db-1"]),
            &[],
            None,
            false,
        );
        assert_eq!(choice.unwrap().member, "db-1");
        // ... unless db-2 could be synchronous and received more of the same timeline: then it
        // holds every commit db-1 holds.
        let on_tl = |mut s: MemberSurvey, tli| {
            s.timeline = Some(tli);
            s
        };
        let same = [
            on_tl(standby("db-1", 100), 3),
            on_tl(standby("db-2", 200), 3),
        ];
        let set = ["db-1".to_string(), "db-2".to_string()];
        let choice = choose_target(&same, true, &ha, &seen(200, &["db-1"]), &set, None, false);
        let choice = choice.unwrap();
        assert_eq!(choice.member, "db-2", "{}", choice.reason);
        // The actor names its choice as the failover's target: it must be accepted as such.
        let named = choose_target(
            &same,
            true,
            &ha,
            &seen(200, &["db-1"]),
            &set,
            Some("db-2"),
            false,
        );
        assert_eq!(named.unwrap().member, "db-2");
        // Not on another timeline (a standby left behind by an earlier failover).
        let other = [
            on_tl(standby("db-1", 100), 3),
            on_tl(standby("db-2", 200), 2),
        ];
        let choice = choose_target(&other, true, &ha, &seen(200, &["db-1"]), &set, None, false);
        assert_eq!(choice.unwrap().member, "db-1");
        // The synchronous standby is gone: nobody may be promoted.
        let err = choose_target(
            &standbys[1..],
            true,
            &ha,
            &seen(200, &["db-1"]),
            &[],
            None,
            false,
        );
        assert!(err.unwrap_err().0.contains("synchronous"));
        // Never saw a synchronous standby: all that could have been one must answer.
        let set = ["db-1".to_string(), "db-2".to_string()];
        let choice = choose_target(&standbys, true, &ha, &seen(200, &[]), &set, None, false);
        assert_eq!(choice.unwrap().member, "db-2");
        let err = choose_target(
            &standbys[1..],
            true,
            &ha,
            &seen(200, &[]),
            &set,
            None,
            false,
        );
        assert!(err.unwrap_err().0.contains("db-1"));
        // Forced: the furthest one.
        let forced = choose_target(
            &standbys[1..],
            true,
            &ha,
            &seen(200, &["db-1"]),
            &[],
            None,
            true,
        );
        assert_eq!(forced.unwrap().member, "db-2");
    }

    #[test]
    fn quorum_needs_enough_answers_and_takes_the_furthest() {
        let ha = HaSettings {
            quorum: true,
            num_sync: 1,
            ..HaSettings::default()
        };
        let all = ["db-1", "db-2", "db-3"];
        let standbys = [
            standby("db-1", 100),
            standby("db-2", 300),
            standby("db-3", 200),
        ];
        let choice =
            choose_target(&standbys, true, &ha, &seen(300, &all), &[], None, false).unwrap();
        assert_eq!(choice.member, "db-2");
        // ANY 1 of 3: all three must answer to be sure one has the last commit.
        let err = choose_target(
            &standbys[..2],
            true,
            &ha,
            &seen(300, &all),
            &[],
            None,
            false,
        );
        assert!(err.is_err());
        // ANY 2 of 3: two answers suffice.
        let two = HaSettings { num_sync: 2, ..ha };
        let choice = choose_target(
            &standbys[..2],
            true,
            &two,
            &seen(300, &all),
            &[],
            None,
            false,
        );
        assert_eq!(choice.unwrap().member, "db-2");
    }

    #[test]
    fn async_mode_respects_the_lag_bound_and_the_requested_target() {
        let ha = HaSettings {
            max_lag_bytes: 50,
            ..HaSettings::default()
        };
        let standbys = [standby("db-1", 960), standby("db-2", 990)];
        let choice =
            choose_target(&standbys, false, &ha, &seen(1000, &[]), &[], None, false).unwrap();
        assert_eq!((choice.member.as_str(), choice.lag_bytes), ("db-2", 10));
        let asked = choose_target(
            &standbys,
            false,
            &ha,
            &seen(1000, &[]),
            &[],
            Some("db-1"),
            false,
        );
        assert_eq!(asked.unwrap().member, "db-1");
        let err = choose_target(&standbys, false, &ha, &seen(2000, &[]), &[], None, false);
        assert!(err.unwrap_err().0.contains("lags more than 50"));
        let unknown = choose_target(
            &standbys,
            false,
            &ha,
            &seen(1000, &[]),
            &[],
            Some("db-9"),
            false,
        );
        assert!(unknown.is_err());
    }

    #[test]
    fn unreachable_or_stopped_standbys_are_never_chosen() {
        let ha = HaSettings::default();
        let mut down = standby("db-1", 500);
        down.reachable = false;
        let mut fenced = standby("db-2", 500);
        fenced.running = false;
        let err = choose_target(
            &[down, fenced],
            false,
            &ha,
            &seen(500, &[]),
            &[],
            None,
            true,
        );
        assert!(err.is_err());
    }
}
