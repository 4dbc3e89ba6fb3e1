//! `POST /v1/wal/switch`: closes the primary's current WAL segment (`pg_switch_wal`) and waits
//! until that segment is in the store, so that a restore to "now" finds every commit made so
//! far in the archive. Answers with the segment and whether it was archived in time.
//! `GET /v1/wal/archived`: how far the instance's archive reaches (any member can answer, so a
//! restore can be checked while the primary is down).
//! `POST /v1/wal/restore-point`: a named restore point on the primary, then the same switch.

use std::time::{Duration, Instant};

use anyhow::Context;
use toygres_common::sidecar_api::{
    ArchiveEnd, RestorePointResponse, TimelineFork, WalSwitchResponse,
};

use super::walname::{WalFileKind, WalFileName};

use crate::backup::{catalog_of, require_running};
use crate::postgres::{sql, Member, OpError};

/// How long the switch waits for its segment to reach the store.
pub const ARCHIVE_WAIT: Duration = Duration::from_secs(30);

/// How often the store is looked at meanwhile.
const POLL: Duration = Duration::from_millis(200);

/// Switches WAL on this primary and waits (up to `wait`) for the closed segment to be archived.
pub async fn switch_and_wait(
    member: &Member,
    wait: Duration,
) -> Result<WalSwitchResponse, OpError> {
    let catalog = catalog_of(member)?;
    require_running(member)?;
    let client = sql::connect_local(&member.cfg)
        .await
        .context("connect to postgres")?;
    let row = client
        .query_one(
            "SELECT pg_is_in_recovery(), \
                    CASE WHEN pg_is_in_recovery() THEN NULL \
                         ELSE pg_walfile_name(pg_switch_wal() - 1) END, \
                    CASE WHEN pg_is_in_recovery() THEN NULL \
                         ELSE pg_current_wal_lsn()::text END",
            &[],
        )
        .await
        .context("switch WAL")?;
    if row.get::<_, bool>(0) {
        return Err(OpError::Conflict(
            "this member is a standby: only the primary can switch WAL".into(),
        ));
    }
    let segment: String = row.get(1);
    let lsn: String = row.get(2);
    let prefix = format!("{}/wal/", catalog.instance);
    let deadline = Instant::now() + wait;
    loop {
        let keys = catalog.store.list(&prefix).await?;
        let archived = keys.iter().any(|k| {
            k.strip_prefix(&prefix)
                .is_some_and(|file| file.starts_with(&segment))
        });
        if archived || Instant::now() >= deadline {
            tracing::info!(%segment, archived, "switched WAL");
            return Ok(WalSwitchResponse {
                segment,
                lsn,
                archived,
            });
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Makes the restore point `name` on this primary (`pg_create_restore_point`), then switches WAL
/// and waits (up to `wait`) so that the point is in the archive when this answers.
pub async fn restore_point(
    member: &Member,
    name: &str,
    wait: Duration,
) -> Result<RestorePointResponse, OpError> {
    toygres_common::backup_api::validate_restore_point_name(name).map_err(|message| {
        OpError::Invalid {
            code: "invalid_restore_point",
            message,
        }
    })?;
    require_running(member)?;
    let client = sql::connect_local(&member.cfg)
        .await
        .context("connect to postgres")?;
    let row = client
        .query_one(
            "SELECT pg_is_in_recovery(), \
                    CASE WHEN pg_is_in_recovery() THEN NULL \
                         ELSE pg_create_restore_point($1)::text END",
            &[&name],
        )
        .await
        .context("create the restore point")?;
    if row.get::<_, bool>(0) {
        return Err(OpError::Conflict(
            "this member is a standby: only the primary can make a restore point".into(),
        ));
    }
    let lsn: String = row.get(1);
    tracing::info!(name, %lsn, "made a restore point");
    let switch = switch_and_wait(member, wait).await?;
    Ok(RestorePointResponse {
        name: name.to_string(),
        lsn,
        switch,
    })
}

/// The newest complete segment in the instance's archive, where it ends, and when the newest
/// segment object was written.
pub async fn archive_end(member: &Member) -> Result<ArchiveEnd, OpError> {
    let catalog = catalog_of(member)?;
    let prefix = format!("{}/wal/", catalog.instance);
    let segment_size = member
        .cfg
        .archive
        .as_ref()
        .map_or(super::walname::DEFAULT_SEGMENT_SIZE, |a| {
            a.settings.wal_segment_size
        });
    let objects = catalog.store.list_times(&prefix).await?;
    let mut end = end_of(&prefix, &objects, segment_size);
    if let (Some(timeline), Some(archive)) = (end.timeline, &member.cfg.archive) {
        if timeline > 1 {
            // The newest timeline's history names every ancestor and where it ended.
            let fetcher = super::fetch::WalFetcher {
                store: catalog.store.clone(),
                settings: archive.settings.clone(),
            };
            let file = format!("{timeline:08X}.history");
            let text = fetcher
                .download(&file)
                .await
                .with_context(|| format!("read {file} from the archive"))?
                .ok_or_else(|| {
                    OpError::Failed(format!(
                        "the archive holds WAL of timeline {timeline} but not its history file \
                         {file}"
                    ))
                })?;
            end.history = sql::parse_history(&String::from_utf8_lossy(&text))
                .into_iter()
                .map(|(timeline, lsn)| TimelineFork {
                    timeline,
                    end_lsn: toygres_common::sidecar_api::format_lsn(lsn),
                })
                .collect();
        }
    }
    Ok(end)
}

/// [`archive_end`] of the objects (key, modified) listed under `prefix`: history, partial and
/// backup history files do not count.
fn end_of(prefix: &str, objects: &[(String, i64)], segment_size: u64) -> ArchiveEnd {
    let mut end = ArchiveEnd::default();
    let mut newest: Option<(u32, u64)> = None;
    for (key, modified) in objects {
        let file = key.strip_prefix(prefix).unwrap_or(key);
        let plain = super::compression::strip_suffix(file);
        let Ok(name) = WalFileName::parse(plain) else {
            continue;
        };
        let WalFileKind::Segment { timeline, log, seg } = name.kind() else {
            if name.kind() == WalFileKind::History {
                let timeline = sql::timeline_of_walfile(plain);
                end.timeline = end.timeline.max(timeline);
            }
            continue;
        };
        end.timeline = end.timeline.max(Some(timeline));
        let segno = u64::from(log) * (0x1_0000_0000 / segment_size) + u64::from(seg);
        end.archived_unix = end.archived_unix.max(Some(*modified));
        if newest.is_none_or(|n| (timeline, segno) > n) {
            newest = Some((timeline, segno));
            let lsn = (segno + 1) * segment_size;
            end.segment = Some(plain.to_string());
            end.end_lsn = Some(format!("{:X}/{:X}", lsn >> 32, lsn & 0xffff_ffff));
        }
    }
    end
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_archive_ends_with_its_newest_segment_on_the_newest_timeline() {
        let objects: Vec<(String, i64)> = [
            ("db/wal/000000010000000000000003.gz", 100),
            ("db/wal/000000010000000000000004.partial.gz", 300),
            ("db/wal/00000002.history.gz", 250),
            ("db/wal/0000000200000000000000FF.gz", 200),
            ("db/wal/000000020000000000000004.00000028.backup.gz", 400),
            ("db/wal/000000020000000100000000", 210),
        ]
        .iter()
        .map(|(k, t)| (k.to_string(), *t))
        .collect();
        let end = end_of("db/wal/", &objects, 16 * 1024 * 1024);
        assert_eq!(end.segment.as_deref(), Some("000000020000000100000000"));
        assert_eq!(end.end_lsn.as_deref(), Some("1/1000000"));
        assert_eq!(end.archived_unix, Some(210));
        assert_eq!(end.timeline, Some(2));
        let history_only: Vec<(String, i64)> = vec![
            ("db/wal/000000010000000000000003".into(), 100),
            ("db/wal/00000003.history.zst".into(), 110),
        ];
        assert_eq!(
            end_of("db/wal/", &history_only, 16 * 1024 * 1024).timeline,
            Some(3),
            "a promotion's history file names the newest timeline before its first segment"
        );
        assert_eq!(
            end_of("db/wal/", &[], 16 * 1024 * 1024),
            ArchiveEnd::default()
        );
    }
}
