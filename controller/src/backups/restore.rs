//! Where a restore into a new instance starts and stops: the recovery target a request names
//! (a time, a WAL position, a transaction, a restore point, or the end of the archive) and the
//! base backup recovery starts from — the newest succeeded base backup of the source that was
//! complete before the target (the oldest for a transaction or restore point, whose place the
//! CMS cannot tell), or the one the request names. Pure: the engine reads the source's backups from the CMS, this
//! decides, and a request it refuses changes nothing.
//!
//! The choice is made here rather than left to the sidecar's own search so that a bad target is
//! refused with a 4xx before any instance is recorded, and so the operation's history says
//! which backup the new instance was made from.

use chrono::{DateTime, SecondsFormat, Utc};
use toygres_common::backup_api::BackupView;
use toygres_common::sidecar_api::{format_lsn, parse_lsn, ArchiveEnd};

/// Where recovery stops.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RestoreTarget {
    /// Replay every WAL file the archive holds.
    EndOfArchive,
    /// Just after the last commit at or before this time.
    Time(DateTime<Utc>),
    /// Just after this WAL position.
    Lsn(Lsn),
    /// Just after this transaction commits.
    Xid(u64),
    /// At this restore point (`pg_create_restore_point`).
    Name(String),
}

/// A WAL position (`X/Y`, two hex numbers).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Lsn(pub u64);

impl std::str::FromStr for Lsn {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let bad = || format!("{text:?} is not a WAL position like 0/3000060");
        // Each half is at most 32 bits (common's parser would shift a longer one out).
        let (high, low) = text.trim().split_once('/').ok_or_else(bad)?;
        if high.len() > 8 || low.len() > 8 {
            return Err(bad());
        }
        parse_lsn(text.trim()).map(Lsn).ok_or_else(bad)
    }
}

impl std::fmt::Display for Lsn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&format_lsn(self.0))
    }
}

impl RestoreTarget {
    /// The target a request names: at most one of `time` (RFC 3339, with a zone), `lsn`, `xid`
    /// (positive) and `name` (a restore point). Errors name the field at fault.
    pub fn from_request(
        time: Option<&str>,
        lsn: Option<&str>,
        xid: Option<u64>,
        name: Option<&str>,
    ) -> Result<Self, (&'static str, String)> {
        let given = [time.is_some(), lsn.is_some(), xid.is_some(), name.is_some()];
        if given.iter().filter(|g| **g).count() > 1 {
            let field = ["time", "lsn", "xid", "restore_point"]
                [given.iter().position(|g| *g).unwrap_or_default()];
            return Err((
                field,
                "give at most one recovery target: a time, an LSN, a transaction id or a \
                 restore point"
                    .into(),
            ));
        }
        if let Some(t) = time {
            return DateTime::parse_from_rfc3339(t.trim())
                .map(|t| RestoreTarget::Time(t.with_timezone(&Utc)))
                .map_err(|e| {
                    (
                        "time",
                        format!("{t:?} is not an RFC 3339 time like 2026-12-04T15:30:00Z: {e}"),
                    )
                });
        }
        if let Some(l) = lsn {
            return l.parse().map(RestoreTarget::Lsn).map_err(|e| ("lsn", e));
        }
        if let Some(x) = xid {
            // 0 to 2 are Postgres's special ids (invalid, bootstrap, frozen), never a commit.
            if x < 3 {
                return Err(("xid", format!("{x} is not a transaction id (3 or more)")));
            }
            return Ok(RestoreTarget::Xid(x));
        }
        if let Some(n) = name {
            toygres_common::backup_api::validate_restore_point_name(n)
                .map_err(|e| ("restore_point", e))?;
            return Ok(RestoreTarget::Name(n.to_string()));
        }
        Ok(RestoreTarget::EndOfArchive)
    }

    /// The time target in the form the sidecar's `--recovery-target-time` reads (RFC 3339, UTC,
    /// microseconds).
    pub fn time_text(&self) -> Option<String> {
        match self {
            RestoreTarget::Time(t) => Some(t.to_rfc3339_opts(SecondsFormat::Micros, true)),
            _ => None,
        }
    }

    /// The LSN target as `--recovery-target-lsn` reads it.
    pub fn lsn_text(&self) -> Option<String> {
        match self {
            RestoreTarget::Lsn(l) => Some(l.to_string()),
            _ => None,
        }
    }

    /// The transaction target as `--recovery-target-xid` reads it.
    pub fn xid_text(&self) -> Option<String> {
        match self {
            RestoreTarget::Xid(x) => Some(x.to_string()),
            _ => None,
        }
    }

    /// The restore point target (`--recovery-target-name`).
    pub fn name_text(&self) -> Option<String> {
        match self {
            RestoreTarget::Name(n) => Some(n.clone()),
            _ => None,
        }
    }

    /// Whether the CMS cannot tell which backups end before the target (a transaction or a
    /// restore point): recovery then starts from the oldest.
    fn place_unknown(&self) -> bool {
        matches!(self, RestoreTarget::Xid(_) | RestoreTarget::Name(_))
    }
}

/// The base backup a restore starts from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChosenBackup {
    /// Its id in the CMS (`bk-…`).
    pub backup_id: String,
    /// Its id in the store (the last part of its store path), as the sidecar knows it.
    pub store_id: String,
}

/// Why a restore request was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RestoreRefusal {
    #[error("the recovery target {0} is in the future")]
    InTheFuture(String),
    #[error("instance {0} has no succeeded base backup to restore from")]
    NoBackup(String),
    #[error(
        "the recovery target {target} is before the first base backup of {instance} was \
         complete ({first}); nothing older can be restored"
    )]
    BeforeFirstBackup {
        instance: String,
        target: String,
        first: String,
    },
    #[error("backup {0} does not exist")]
    UnknownBackup(String),
    #[error("backup {id} cannot be restored: {why}")]
    UnusableBackup { id: String, why: String },
    #[error(
        "backup {id} was complete at {complete}, after the recovery target {target}: leave out \
         the backup to use the newest one before the target"
    )]
    BackupAfterTarget {
        id: String,
        complete: String,
        target: String,
    },
}

/// What the choice needs of one backup: the CMS's view, with its end parsed.
struct Usable<'a> {
    view: &'a BackupView,
    complete_at: DateTime<Utc>,
    stop_lsn: Lsn,
    store_id: String,
}

fn usable(view: &BackupView) -> Result<Usable<'_>, String> {
    if view.parsed_kind() != Some(toygres_common::sidecar_api::BackupKind::Base) {
        return Err(format!("it is a {} backup, not a base backup", view.kind));
    }
    if view.abandoned {
        return Err(format!(
            "an in-place restore went back before it: it lies on timeline {} past where the \
             instance's history left that timeline",
            view.timeline.map_or_else(|| "?".into(), |t| t.to_string())
        ));
    }
    if view.parsed_status() != Some(toygres_common::domain::BackupStatus::Succeeded) {
        return Err(format!("it is {}, not succeeded", view.status));
    }
    let complete_at = view
        .finished_at
        .as_deref()
        .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
        .map(|t| t.with_timezone(&Utc))
        .ok_or("its end time is not recorded")?;
    let stop_lsn = view
        .stop_lsn
        .as_deref()
        .and_then(|l| l.parse().ok())
        .ok_or("its end LSN is not recorded")?;
    let store_id = view
        .store_path
        .as_deref()
        .and_then(|p| p.rsplit('/').next())
        .filter(|id| !id.is_empty())
        .ok_or("its place in the store is not recorded")?
        .to_string();
    Ok(Usable {
        view,
        complete_at,
        stop_lsn,
        store_id,
    })
}

/// Marks the succeeded base backups whose WAL leaves the archive's newest timeline history
/// (`archive`, a member's `GET /v1/wal/archived`) `abandoned`: an in-place restore went back
/// to a point before they ended, so recovery from them cannot reach the instance's present.
pub fn mark_abandoned(backups: &mut [BackupView], archive: &ArchiveEnd) {
    for b in backups.iter_mut().filter(|b| b.is_succeeded_base()) {
        if let (Some(timeline), Some(stop)) =
            (b.timeline, b.stop_lsn.as_deref().and_then(parse_lsn))
        {
            b.abandoned = !archive.holds_history_of(timeline, stop);
        }
    }
}

/// The earliest point a restore of `backups`' instance can reach: the id of its oldest
/// restorable base backup and when that backup was complete. `None` without one.
pub fn earliest_restorable(backups: &[BackupView]) -> Option<(String, DateTime<Utc>)> {
    backups
        .iter()
        .filter_map(|b| usable(b).ok())
        .min_by_key(|b| (b.complete_at, b.stop_lsn))
        .map(|b| (b.view.id.clone(), b.complete_at))
}

/// Whether recovery from `backup` can stop at `target`: the backup was complete before it.
fn reaches(backup: &Usable<'_>, target: &RestoreTarget) -> bool {
    match target {
        RestoreTarget::EndOfArchive => true,
        RestoreTarget::Time(t) => backup.complete_at <= *t,
        RestoreTarget::Lsn(l) => backup.stop_lsn <= *l,
        // Unknown: recovery fails naming the target when the backup started past it.
        RestoreTarget::Xid(_) | RestoreTarget::Name(_) => true,
    }
}

fn describe(target: &RestoreTarget) -> String {
    match target {
        RestoreTarget::EndOfArchive => "the end of the archive".into(),
        RestoreTarget::Time(_) => target.time_text().unwrap_or_default(),
        RestoreTarget::Lsn(l) => l.to_string(),
        RestoreTarget::Xid(x) => format!("transaction {x}"),
        RestoreTarget::Name(n) => format!("restore point {n:?}"),
    }
}

/// Chooses the base backup of `instance` (its `backups`, any order) that a restore to `target`
/// starts from: `named` when given (it must be a succeeded base backup of `instance` complete
/// before the target), else the newest succeeded base backup complete before the target.
/// A time target after `now` is refused.
pub fn choose_base_backup(
    instance: &str,
    backups: &[BackupView],
    target: &RestoreTarget,
    named: Option<&str>,
    now: DateTime<Utc>,
) -> Result<ChosenBackup, RestoreRefusal> {
    if let RestoreTarget::Time(t) = target {
        if *t > now {
            return Err(RestoreRefusal::InTheFuture(describe(target)));
        }
    }
    let chosen = |u: Usable<'_>| ChosenBackup {
        backup_id: u.view.id.clone(),
        store_id: u.store_id,
    };
    if let Some(id) = named {
        let view = backups
            .iter()
            .find(|b| b.id == id)
            .ok_or_else(|| RestoreRefusal::UnknownBackup(id.to_string()))?;
        let backup = usable(view).map_err(|why| RestoreRefusal::UnusableBackup {
            id: id.to_string(),
            why,
        })?;
        if !reaches(&backup, target) {
            return Err(RestoreRefusal::BackupAfterTarget {
                id: id.to_string(),
                complete: backup
                    .complete_at
                    .to_rfc3339_opts(SecondsFormat::Secs, true),
                target: describe(target),
            });
        }
        return Ok(chosen(backup));
    }
    let all: Vec<Usable<'_>> = backups.iter().filter_map(|b| usable(b).ok()).collect();
    let first = all
        .iter()
        .min_by_key(|b| b.complete_at)
        .map(|b| b.complete_at.to_rfc3339_opts(SecondsFormat::Secs, true))
        .ok_or_else(|| RestoreRefusal::NoBackup(instance.to_string()))?;
    let reaching = all.into_iter().filter(|b| reaches(b, target));
    if target.place_unknown() {
        // The oldest reaches any point its archive holds, at the cost of the longest replay.
        return reaching
            .min_by_key(|b| (b.complete_at, b.stop_lsn))
            .map(chosen)
            .ok_or_else(|| RestoreRefusal::NoBackup(instance.to_string()));
    }
    reaching
        .max_by_key(|b| (b.complete_at, b.stop_lsn))
        .map(chosen)
        .ok_or_else(|| RestoreRefusal::BeforeFirstBackup {
            instance: instance.to_string(),
            target: describe(target),
            first,
        })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn at(t: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(t).unwrap().with_timezone(&Utc)
    }

    fn backup(id: &str, kind: &str, status: &str, end: &str, lsn: &str) -> BackupView {
        BackupView {
            id: id.into(),
            instance: "src".into(),
            kind: kind.into(),
            label: None,
            status: status.into(),
            operation_id: None,
            member: None,
            from_standby: false,
            store_path: Some(format!("src/{kind}/2026-{id}")),
            raw_bytes: None,
            stored_bytes: None,
            start_lsn: None,
            stop_lsn: Some(lsn.into()),
            timeline: Some(1),
            started_at: end.into(),
            finished_at: Some(end.into()),
            error: None,
            verification: None,
            abandoned: false,
        }
    }

    fn history() -> Vec<BackupView> {
        vec![
            backup(
                "b1",
                "base",
                "succeeded",
                "2026-12-01T10:00:00Z",
                "0/3000000",
            ),
            backup(
                "l1",
                "logical",
                "succeeded",
                "2026-12-01T11:00:00Z",
                "0/3800000",
            ),
            backup(
                "b2",
                "base",
                "succeeded",
                "2026-12-02T10:00:00Z",
                "0/5000000",
            ),
            backup("b3", "base", "failed", "2026-12-02T12:00:00Z", "0/6000000"),
            backup("b4", "base", "succeeded", "2026-12-03T10:00:00Z", "1/0"),
        ]
    }

    const NOW: &str = "2026-12-04T00:00:00Z";

    /// An archive whose newest timeline is 2, forked from timeline 1 at 0/4000000 (an in-place
    /// restore to a point between b1 and b2).
    fn forked_archive() -> ArchiveEnd {
        ArchiveEnd {
            timeline: Some(2),
            history: vec![toygres_common::sidecar_api::TimelineFork {
                timeline: 1,
                end_lsn: "0/4000000".into(),
            }],
            ..ArchiveEnd::default()
        }
    }

    #[test]
    fn base_backups_past_a_fork_of_the_archives_history_are_abandoned_and_never_chosen() {
        let mut backups = history();
        let mut b5 = backup(
            "b5",
            "base",
            "succeeded",
            "2026-12-03T12:00:00Z",
            "0/4800000",
        );
        b5.timeline = Some(2);
        backups.push(b5);
        mark_abandoned(&mut backups, &forked_archive());
        let abandoned: Vec<&str> = backups
            .iter()
            .filter(|b| b.abandoned)
            .map(|b| b.id.as_str())
            .collect();
        // b1 ended before the fork; b2 and b4 after it on timeline 1; b5 is on timeline 2; l1
        // (logical) and b3 (failed) are not base backups a restore could start from anyway.
        assert_eq!(abandoned, ["b2", "b4"]);
        let pick = |target: RestoreTarget| {
            choose_base_backup("src", &backups, &target, None, at(NOW)).map(|c| c.backup_id)
        };
        assert_eq!(pick(RestoreTarget::EndOfArchive).unwrap(), "b5");
        assert_eq!(
            pick(RestoreTarget::Time(at("2026-12-03T11:00:00Z"))).unwrap(),
            "b1",
            "b4 and b2 end before the time but lie past the fork"
        );
        assert!(matches!(
            choose_base_backup("src", &backups, &RestoreTarget::EndOfArchive, Some("b4"), at(NOW)),
            Err(RestoreRefusal::UnusableBackup { why, .. }) if why.contains("in-place restore")
        ));
        // An archive that does not say its timelines marks nothing.
        let mut unmarked = history();
        mark_abandoned(&mut unmarked, &ArchiveEnd::default());
        assert!(unmarked.iter().all(|b| !b.abandoned));
    }

    fn choose(target: RestoreTarget, named: Option<&str>) -> Result<String, RestoreRefusal> {
        choose_base_backup("src", &history(), &target, named, at(NOW)).map(|c| c.backup_id)
    }

    #[test]
    fn the_earliest_restorable_point_is_the_end_of_the_oldest_succeeded_base_backup() {
        let (id, at_) = earliest_restorable(&history()).unwrap();
        assert_eq!((id.as_str(), at_), ("b1", at("2026-12-01T10:00:00Z")));
        let logical_only: Vec<BackupView> =
            history().into_iter().filter(|b| b.kind != "base").collect();
        assert_eq!(earliest_restorable(&logical_only), None);
    }

    #[test]
    fn the_newest_base_backup_complete_before_the_target_is_chosen() {
        let cases = [
            (RestoreTarget::EndOfArchive, "b4"),
            (RestoreTarget::Time(at("2026-12-01T10:00:00Z")), "b1"),
            (RestoreTarget::Time(at("2026-12-02T11:59:00Z")), "b2"),
            (RestoreTarget::Time(at("2026-12-03T23:00:00Z")), "b4"),
            (RestoreTarget::Lsn(Lsn(0x500_0000)), "b2"),
            (RestoreTarget::Lsn(Lsn(0xff_ffff_ffff)), "b4"),
        ];
        for (target, want) in cases {
            assert_eq!(choose(target.clone(), None).unwrap(), want, "{target:?}");
        }
        let chosen = choose_base_backup(
            "src",
            &history(),
            &RestoreTarget::EndOfArchive,
            None,
            at(NOW),
        )
        .unwrap();
        assert_eq!(chosen.store_id, "2026-b4");
    }

    #[test]
    fn bad_targets_are_refused_with_their_reason() {
        let early = RestoreTarget::Time(at("2026-11-30T00:00:00Z"));
        assert!(matches!(
            choose(early, None),
            Err(RestoreRefusal::BeforeFirstBackup { first, .. }) if first == "2026-12-01T10:00:00Z"
        ));
        assert!(matches!(
            choose(RestoreTarget::Lsn(Lsn(0x100)), None),
            Err(RestoreRefusal::BeforeFirstBackup { .. })
        ));
        let future = RestoreTarget::Time(at("2026-12-05T00:00:00Z"));
        assert!(matches!(
            choose(future, None),
            Err(RestoreRefusal::InTheFuture(_))
        ));
        assert!(matches!(
            choose_base_backup("src", &[], &RestoreTarget::EndOfArchive, None, at(NOW)),
            Err(RestoreRefusal::NoBackup(_))
        ));
    }

    #[test]
    fn a_named_backup_must_be_a_succeeded_base_backup_before_the_target() {
        assert_eq!(
            choose(RestoreTarget::EndOfArchive, Some("b2")).unwrap(),
            "b2"
        );
        assert!(matches!(
            choose(RestoreTarget::EndOfArchive, Some("bk-none")),
            Err(RestoreRefusal::UnknownBackup(_))
        ));
        for unusable in ["l1", "b3"] {
            assert!(matches!(
                choose(RestoreTarget::EndOfArchive, Some(unusable)),
                Err(RestoreRefusal::UnusableBackup { .. })
            ));
        }
        let target = RestoreTarget::Time(at("2026-12-01T12:00:00Z"));
        assert!(matches!(
            choose(target, Some("b2")),
            Err(RestoreRefusal::BackupAfterTarget { .. })
        ));
    }

    #[test]
    fn targets_are_parsed_from_the_request() {
        assert_eq!(
            RestoreTarget::from_request(None, None, None, None).unwrap(),
            RestoreTarget::EndOfArchive
        );
        let t = RestoreTarget::from_request(Some("2026-12-04T16:30:00.25+01:00"), None, None, None)
            .unwrap();
        assert_eq!(t.time_text().unwrap(), "2026-12-04T15:30:00.250000Z");
        let l = RestoreTarget::from_request(None, Some("1/A0"), None, None).unwrap();
        assert_eq!(l, RestoreTarget::Lsn(Lsn(0x1_0000_00a0)));
        assert_eq!(l.lsn_text().unwrap(), "1/A0");
        for (time, lsn, field) in [
            (Some("yesterday"), None, "time"),
            (Some("2026-12-04T15:30:00"), None, "time"),
            (None, Some("3000060"), "lsn"),
            (None, Some("0/123456789"), "lsn"),
            (Some("2026-12-04T15:30:00Z"), Some("0/1"), "time"),
        ] {
            assert_eq!(
                RestoreTarget::from_request(time, lsn, None, None)
                    .unwrap_err()
                    .0,
                field,
                "{time:?} {lsn:?}"
            );
        }
        assert_eq!(
            RestoreTarget::from_request(None, None, Some(731), None).unwrap(),
            RestoreTarget::Xid(731)
        );
        assert_eq!(
            RestoreTarget::from_request(None, None, None, Some("before-migration")).unwrap(),
            RestoreTarget::Name("before-migration".into())
        );
        let long = "x".repeat(64);
        for (xid, name, field) in [
            (Some(0), None, "xid"),
            (Some(2), None, "xid"),
            (None, Some(""), "restore_point"),
            (None, Some(long.as_str()), "restore_point"),
            (None, Some("a\nb"), "restore_point"),
            (Some(800), Some("p"), "xid"),
        ] {
            assert_eq!(
                RestoreTarget::from_request(None, None, xid, name)
                    .unwrap_err()
                    .0,
                field,
                "{xid:?} {name:?}"
            );
        }
        assert_eq!(
            RestoreTarget::from_request(None, Some("0/1"), Some(9), None)
                .unwrap_err()
                .0,
            "lsn"
        );
    }

    #[test]
    fn a_transaction_or_restore_point_starts_from_the_oldest_backup() {
        for target in [RestoreTarget::Xid(900), RestoreTarget::Name("p".into())] {
            assert_eq!(choose(target.clone(), None).unwrap(), "b1", "{target:?}");
            assert_eq!(choose(target, Some("b2")).unwrap(), "b2");
        }
    }
}
