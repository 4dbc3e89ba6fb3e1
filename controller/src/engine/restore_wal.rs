//! Before a restore: the source's primary closes its WAL segment and waits for it to be
//! archived, so a target up to "now" is in the archive. When the primary cannot, another member
//! says how far the archive reaches, and a target past it is refused before anything is made.
//! Also named restore points, made on the primary and archived at once.

use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use toygres_common::backup_api::{
    validate_restore_point_name, RestorePointCreate, RestorePointView,
};
use toygres_common::domain::{InstanceState, MemberState, Role};
use toygres_common::sidecar_api::{ArchiveEnd, RestorePointRequest};

use super::{Engine, EngineError};
use crate::activities::sidecar::sidecar_on;
use crate::backups::restore::{Lsn, RestoreTarget};

/// How long the switch may take: the sidecar waits up to 30 s for the segment's upload (the
/// whole restore request must stay well inside the CLI's one-minute timeout).
const SWITCH_TIMEOUT: Duration = Duration::from_secs(40);

/// How long each member may take to say how far the archive reaches.
const ARCHIVE_END_TIMEOUT: Duration = Duration::from_secs(5);

/// Why a target past the end of an archive is refused, or `None` when the archive reaches it.
pub fn past_the_archive(target: &RestoreTarget, end: &ArchiveEnd) -> Option<String> {
    let archived_at = end
        .archived_unix
        .and_then(|s| DateTime::<Utc>::from_timestamp(s, 0));
    let reach = match (&end.segment, archived_at) {
        (Some(segment), Some(at)) => format!(
            "{segment}, stored at {}",
            at.to_rfc3339_opts(SecondsFormat::Secs, true)
        ),
        _ => "no WAL segment".to_string(),
    };
    let past = match target {
        // A transaction or a restore point: where it is cannot be told; the switch before the
        // restore put everything made so far in the archive.
        RestoreTarget::EndOfArchive | RestoreTarget::Xid(_) | RestoreTarget::Name(_) => false,
        RestoreTarget::Time(t) => archived_at.is_none_or(|at| *t > at),
        RestoreTarget::Lsn(l) => end
            .end_lsn
            .as_deref()
            .and_then(|e| e.parse::<Lsn>().ok())
            .is_none_or(|e| *l > e),
    };
    past.then(|| format!("the archive reaches only {reach}"))
}

impl Engine {
    /// Makes the restore point `request.name` on `name`'s primary and has the primary archive
    /// it, so that `restore --name` can stop there. Refused (400) for a bad name, 404 for an
    /// unknown instance, 409 with backups off or no primary answering.
    pub async fn create_restore_point(
        &self,
        name: &str,
        request: RestorePointCreate,
    ) -> Result<RestorePointView, EngineError> {
        validate_restore_point_name(&request.name)
            .map_err(|e| EngineError::Invalid(format!("name: {e}")))?;
        self.cms
            .get_instance(name)
            .await?
            .filter(|i| i.summary.parsed_state() != Some(InstanceState::Deleted))
            .ok_or_else(|| EngineError::NotFound(format!("instance {name} does not exist")))?;
        if self.cms.get_backup_config(name).await?.flatten().is_none() {
            return Err(EngineError::Conflict(format!(
                "instance {name} was created with backups off (--no-backup): a restore point \
                 would not be archived"
            )));
        }
        let (member, client) = self
            .primary_sidecar(name, SWITCH_TIMEOUT)
            .await
            .map_err(EngineError::Conflict)?;
        let made = client
            .restore_point(&RestorePointRequest {
                name: request.name.clone(),
            })
            .await
            .map_err(|e| match e.status() {
                Some(400) => EngineError::Invalid(format!("name: {e}")),
                _ => {
                    EngineError::Conflict(format!("{member} could not make the restore point: {e}"))
                }
            })?;
        tracing::info!(instance = name, %member, point = %made.name, lsn = %made.lsn, archived = made.switch.archived, "made a restore point");
        Ok(RestorePointView {
            instance: name.to_string(),
            name: made.name,
            lsn: made.lsn,
            member,
            archived: made.switch.archived,
        })
    }

    /// Has `source`'s primary archive its current WAL before a restore to `target`; when it
    /// cannot, refuses a target past what the archive holds (409).
    pub(super) async fn archive_for_restore(
        &self,
        source: &str,
        target: &RestoreTarget,
    ) -> Result<(), EngineError> {
        let switched = match self.primary_sidecar(source, SWITCH_TIMEOUT).await {
            Ok((primary, client)) => match client.switch_wal().await {
                Ok(s) if s.archived => {
                    tracing::info!(source, %primary, segment = %s.segment, "archived before a restore");
                    return Ok(());
                }
                Ok(s) => format!("{primary} did not archive {} within 30 s", s.segment),
                Err(e) => format!("{primary} could not switch WAL: {e}"),
            },
            Err(e) => e,
        };
        if matches!(target, RestoreTarget::EndOfArchive) {
            tracing::warn!(
                source,
                "restoring to the end of the archive as it is: {switched}"
            );
            return Ok(());
        }
        let end = self.archive_end(source).await.map_err(|e| {
            EngineError::Conflict(format!(
                "{switched}; and how far its archive reaches is unknown ({e}): restore to the \
                 end of the archive (no target), or try again once the source answers"
            ))
        })?;
        match past_the_archive(target, &end) {
            None => Ok(()),
            Some(why) => Err(EngineError::Conflict(format!(
                "{switched}, so the recovery target may not be archived: {why}; choose an \
                 earlier target, or none for the end of the archive"
            ))),
        }
    }

    /// How far `source`'s archive reaches, as the first of its running members that answers
    /// says.
    pub(super) async fn archive_end(&self, source: &str) -> Result<ArchiveEnd, String> {
        let members = self
            .cms
            .list_members(source)
            .await
            .map_err(|e| e.to_string())?;
        let mut last = format!("instance {source} has no running member");
        for m in members.iter().filter(|m| {
            m.parsed_state() == Some(MemberState::Running) && m.parsed_role() != Role::Unknown
        }) {
            let answer = match sidecar_on(
                self.platform.as_ref(),
                source,
                &m.name,
                ARCHIVE_END_TIMEOUT,
            )
            .await
            {
                Ok(client) => client.archive_end().await.map_err(|e| e.to_string()),
                Err(e) => Err(e),
            };
            match answer {
                Ok(end) => return Ok(end),
                Err(e) => last = format!("{}: {e}", m.name),
            }
        }
        Err(last)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn a_target_past_the_last_archived_segment_is_refused() {
        let end = ArchiveEnd {
            segment: Some("000000010000000000000005".into()),
            end_lsn: Some("0/6000000".into()),
            archived_unix: Some(1_796_400_000),
            ..ArchiveEnd::default()
        };
        let at = |s: i64| RestoreTarget::Time(DateTime::<Utc>::from_timestamp(s, 0).unwrap());
        assert_eq!(past_the_archive(&at(1_796_399_000), &end), None);
        let why = past_the_archive(&at(1_796_400_001), &end).unwrap();
        assert!(why.contains("000000010000000000000005"), "{why}");
        assert_eq!(
            past_the_archive(&RestoreTarget::Lsn("0/5FFFFFF".parse().unwrap()), &end),
            None
        );
        assert!(
            past_the_archive(&RestoreTarget::Lsn("0/6000001".parse().unwrap()), &end).is_some()
        );
        assert_eq!(past_the_archive(&RestoreTarget::EndOfArchive, &end), None);
        let empty = ArchiveEnd::default();
        assert!(past_the_archive(&at(1), &empty).is_some());
    }
}
