//! What a restore aims at: the source, the optional recovery target (time, LSN, transaction id
//! or restore point), the action at the target, and the choice of base backup that can reach it.

use anyhow::{bail, Context};
use toygres_common::sidecar_api::BackupManifest;
use toygres_common::store_url::StoreUrl;

use crate::backup::clock;
use crate::postgres::files::conf_quote;
use crate::postgres::sql::parse_lsn;

/// What the server does once recovery reaches the target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum TargetAction {
    /// End recovery and become a primary.
    #[default]
    Promote,
    /// Stay in recovery, read-only, paused at the target until promoted.
    Pause,
}

impl TargetAction {
    pub fn as_str(self) -> &'static str {
        match self {
            TargetAction::Promote => "promote",
            TargetAction::Pause => "pause",
        }
    }
}

/// Where recovery stops.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecoveryTarget {
    /// Just after the last commit at or before this time.
    Time { text: String, micros: i64 },
    /// Just after this WAL position.
    Lsn { text: String, position: u64 },
    /// Just after this transaction commits.
    Xid(u64),
    /// At this restore point (`pg_create_restore_point`).
    Name(String),
}

impl RecoveryTarget {
    /// The target in words: `time 2026-…`, `LSN 0/5000060`, `transaction 812`, `restore point
    /// "x"`.
    pub fn describe(&self) -> String {
        match self {
            RecoveryTarget::Time { text, .. } => format!("time {text}"),
            RecoveryTarget::Lsn { text, .. } => format!("LSN {text}"),
            RecoveryTarget::Xid(x) => format!("transaction {x}"),
            RecoveryTarget::Name(n) => format!("restore point {n:?}"),
        }
    }

    /// Builds the target from the `--recovery-target-*` flags; at most one may be given.
    pub fn from_flags(
        time: Option<&str>,
        lsn: Option<&str>,
        xid: Option<&str>,
        name: Option<&str>,
    ) -> anyhow::Result<Option<Self>> {
        let given = [time, lsn, xid, name]
            .iter()
            .filter(|v| v.is_some())
            .count();
        if given > 1 {
            bail!("give at most one of --recovery-target-time, -lsn, -xid and -name");
        }
        if let Some(t) = time {
            let micros = clock::parse_timestamp(t).context("check --recovery-target-time")?;
            // Postgres reads the value back: give it the canonical UTC form.
            return Ok(Some(RecoveryTarget::Time {
                text: clock::rfc3339(micros).replace('T', " ").replace('Z', "+00"),
                micros,
            }));
        }
        if let Some(l) = lsn {
            let position = parse_lsn(l).with_context(|| {
                format!("--recovery-target-lsn {l:?} is not an LSN like 0/3000060")
            })?;
            return Ok(Some(RecoveryTarget::Lsn {
                text: l.to_string(),
                position,
            }));
        }
        if let Some(x) = xid {
            let xid: u64 = x
                .parse()
                .with_context(|| format!("--recovery-target-xid {x:?} is not a transaction id"))?;
            return Ok(Some(RecoveryTarget::Xid(xid)));
        }
        if let Some(n) = name {
            if n.is_empty() || n.len() > 63 || n.contains(['\0', '\n']) {
                bail!("--recovery-target-name {n:?} is not a restore point name");
            }
            return Ok(Some(RecoveryTarget::Name(n.to_string())));
        }
        Ok(None)
    }

    /// The `recovery_target_*` line.
    pub fn conf_lines(&self) -> Vec<String> {
        vec![match self {
            RecoveryTarget::Time { text, .. } => {
                format!("recovery_target_time = {}", conf_quote(text))
            }
            RecoveryTarget::Lsn { text, .. } => {
                format!("recovery_target_lsn = {}", conf_quote(text))
            }
            RecoveryTarget::Xid(x) => format!("recovery_target_xid = '{x}'"),
            RecoveryTarget::Name(n) => format!("recovery_target_name = {}", conf_quote(n)),
        }]
    }
}

/// Everything `--bootstrap restore` needs, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RestoreSpec {
    /// The store holding the source's backups and WAL.
    pub url: StoreUrl,
    /// The instance whose backup is restored.
    pub instance: String,
    /// A specific base backup; by default the one the target needs.
    pub backup_id: Option<String>,
    pub target: Option<RecoveryTarget>,
    pub action: TargetAction,
}

/// Whether `backup` is complete (consistent) no later than `target`, so that recovery from it
/// can stop there; `None` when that cannot be told from the manifest (a restore point name).
fn ends_before(backup: &BackupManifest, target: &RecoveryTarget) -> Option<bool> {
    match target {
        RecoveryTarget::Time { micros, .. } => {
            let stop = clock::parse_timestamp(&backup.stop_time).ok()?;
            Some(stop <= *micros)
        }
        RecoveryTarget::Lsn { position, .. } => {
            let stop = parse_lsn(backup.stop_lsn.as_deref()?)?;
            Some(stop <= *position)
        }
        RecoveryTarget::Xid(xid) => {
            let next = backup.next_xid?;
            // A 32-bit id is taken to be in the epoch of the backup's next id.
            let full = if *xid >> 32 == 0 {
                (next & !0xffff_ffff) | xid
            } else {
                *xid
            };
            Some(next <= full)
        }
        RecoveryTarget::Name(_) => None,
    }
}

/// The base backups to try, in order, for a restore from `backups` (base backups of one
/// instance, oldest first).
///
/// For a restore point without a named backup, the manifests cannot tell where the point is:
/// every backup is a candidate, newest first. A point made after the newest backup (the usual
/// case: "before the migration") is then reached with the least WAL to replay; a point that
/// predates it makes recovery from the newest fail (Postgres stops with "recovery ended before
/// configured recovery target was reached"), and the restore falls back to the next older
/// backup. The oldest backup alone would always reach the point, but would replay every
/// segment archived since it. In every other case there is one candidate, [`choose_backup`]'s.
pub fn candidate_backups<'a>(
    backups: &'a [BackupManifest],
    target: Option<&RecoveryTarget>,
    id: Option<&str>,
) -> anyhow::Result<Vec<&'a BackupManifest>> {
    match (target, id) {
        (Some(RecoveryTarget::Name(_)), None) => {
            if backups.is_empty() {
                bail!("there are no base backups");
            }
            Ok(backups.iter().rev().collect())
        }
        _ => Ok(vec![choose_backup(backups, target, id)?]),
    }
}

/// The base backup to restore from `backups` (base backups of one instance, oldest first):
/// the one named, or else the latest that is complete before the target (for a restore point,
/// whose position the manifests cannot tell, the newest: see [`candidate_backups`] for the
/// fall-back to older ones).
pub fn choose_backup<'a>(
    backups: &'a [BackupManifest],
    target: Option<&RecoveryTarget>,
    id: Option<&str>,
) -> anyhow::Result<&'a BackupManifest> {
    if backups.is_empty() {
        bail!("there are no base backups");
    }
    if let Some(id) = id {
        let backup = backups
            .iter()
            .find(|b| b.id == id)
            .with_context(|| format!("there is no base backup {id}"))?;
        if let Some(t) = target {
            if ends_before(backup, t) == Some(false) {
                bail!("base backup {id} ends after the recovery target {t:?}: choose an older one");
            }
        }
        return Ok(backup);
    }
    match target {
        None => Ok(backups.last().expect("checked non-empty")),
        Some(RecoveryTarget::Name(_)) => Ok(backups.last().expect("checked non-empty")),
        Some(t) => backups
            .iter()
            .rev()
            .find(|b| ends_before(b, t).unwrap_or(false))
            .with_context(|| {
                format!("no base backup is complete before the recovery target {t:?}")
            }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use toygres_common::sidecar_api::BackupKind;

    fn backup(id: &str, stop_time: &str, stop_lsn: &str, next_xid: u64) -> BackupManifest {
        BackupManifest {
            id: id.into(),
            kind: BackupKind::Base,
            instance: "db".into(),
            member: "db-0".into(),
            from_standby: false,
            start_lsn: Some("0/1000000".into()),
            stop_lsn: Some(stop_lsn.into()),
            timeline: Some(1),
            start_time: stop_time.into(),
            stop_time: stop_time.into(),
            next_xid: Some(next_xid),
            raw_bytes: 0,
            stored_bytes: 0,
            compression: "1".into(),
            pg_version: "15".into(),
            system_identifier: "1".into(),
            sha256: String::new(),
            objects: Vec::new(),
        }
    }

    #[test]
    fn the_latest_backup_complete_before_the_target_is_chosen() {
        let all = vec![
            backup("a", "2026-11-23T06:00:00Z", "0/3000000", 700),
            backup("b", "2026-11-23T07:00:00Z", "0/5000000", 800),
        ];
        let pick =
            |t: Option<RecoveryTarget>| choose_backup(&all, t.as_ref(), None).map(|b| b.id.clone());
        let time = |s| RecoveryTarget::from_flags(Some(s), None, None, None).unwrap();
        let lsn = |s| RecoveryTarget::from_flags(None, Some(s), None, None).unwrap();
        let xid = |s| RecoveryTarget::from_flags(None, None, Some(s), None).unwrap();
        assert_eq!(pick(None).unwrap(), "b");
        assert_eq!(pick(time("2026-11-23 06:30:00+00")).unwrap(), "a");
        assert_eq!(pick(time("2026-11-23 07:00:00Z")).unwrap(), "b");
        assert!(pick(time("2026-11-23 05:00:00Z")).is_err());
        assert_eq!(pick(lsn("0/4000000")).unwrap(), "a");
        assert_eq!(pick(lsn("1/0")).unwrap(), "b");
        assert_eq!(pick(xid("750")).unwrap(), "a");
        assert_eq!(pick(xid("800")).unwrap(), "b");
        assert!(pick(xid("5")).is_err());
        let name = RecoveryTarget::from_flags(None, None, None, Some("before-migration")).unwrap();
        assert_eq!(pick(name.clone()).unwrap(), "b");
        // A restore point: newest first, then older ones; a named backup alone.
        let order = |id| {
            candidate_backups(&all, name.as_ref(), id)
                .unwrap()
                .iter()
                .map(|b| b.id.as_str())
                .collect::<Vec<_>>()
        };
        assert_eq!(order(None), ["b", "a"]);
        assert_eq!(order(Some("a")), ["a"]);
        assert!(candidate_backups(&[], name.as_ref(), None).is_err());
        assert_eq!(
            candidate_backups(&all, time("2026-11-23 06:30:00Z").as_ref(), None)
                .unwrap()
                .len(),
            1
        );
        assert!(choose_backup(&all, time("2026-11-23 06:30:00Z").as_ref(), Some("b")).is_err());
        assert_eq!(choose_backup(&all, None, Some("a")).unwrap().id, "a");
        assert!(choose_backup(&all, None, Some("zz")).is_err());
        assert!(choose_backup(&[], None, None).is_err());
    }

    #[test]
    fn one_target_at_most_rendered_for_postgres() {
        assert!(RecoveryTarget::from_flags(Some("x"), Some("0/1"), None, None).is_err());
        assert!(RecoveryTarget::from_flags(Some("2026-11-23 06:00:00"), None, None, None).is_err());
        assert_eq!(
            RecoveryTarget::from_flags(Some("2026-11-23T08:00:00.25+02:00"), None, None, None)
                .unwrap()
                .unwrap()
                .conf_lines(),
            vec!["recovery_target_time = '2026-11-23 06:00:00.250000+00'".to_string()]
        );
        assert_eq!(
            RecoveryTarget::from_flags(None, None, None, Some("it's"))
                .unwrap()
                .unwrap()
                .conf_lines(),
            vec!["recovery_target_name = 'it''s'".to_string()]
        );
        assert!(RecoveryTarget::from_flags(None, Some("nope"), None, None).is_err());
    }
}
