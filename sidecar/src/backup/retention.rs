//! The retention primitive: given the backups to keep, delete every other backup and every
//! archived WAL file no kept base backup needs. A base backup that started at LSN `L` on
//! timeline `T` needs every segment from `L`'s on, on `T` and on every timeline descending
//! from `T` (timeline history files tell which do). Everything else may go — but history files
//! always stay (they are tiny, and recovery reads them to choose its timeline), and a file
//! whose timeline's ancestry is unknown is kept.
//!
//! Deletion order makes a crash harmless: a backup's `manifest.json` goes first (the backup is
//! then no longer listed as complete), its data after; WAL last.

use std::collections::{BTreeMap, BTreeSet};

use anyhow::Context;
use toygres_common::sidecar_api::{BackupKind, BackupManifest, RetentionResponse};

use super::catalog_of;
use crate::archive::decompress;
use crate::archive::walname::{WalFileKind, WalFileName};
use crate::postgres::sql::{parse_history, parse_lsn};
use crate::postgres::{Member, OpError};

/// Where a kept base backup starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeptStart {
    pub timeline: u32,
    pub lsn: u64,
}

/// The timelines `history` (a `.history` file) names as ancestors.
pub fn ancestors_in(history: &str) -> Vec<u32> {
    parse_history(history)
        .into_iter()
        .map(|(tli, _)| tli)
        .collect()
}

/// The segment a WAL archive file belongs to (timeline, segment number), `None` for history
/// files and names that are not WAL.
fn segment_of(file: &str, segment_size: u64) -> Option<(u32, u64)> {
    let base = crate::archive::compression::strip_suffix(file);
    let name = WalFileName::parse(base).ok()?;
    let segment_part = match name.kind() {
        WalFileKind::History => return None,
        WalFileKind::Segment { .. } => base,
        WalFileKind::Partial | WalFileKind::Backup => base.get(..24)?,
    };
    let per_log = 0x1_0000_0000u64 / segment_size;
    let tli = u32::from_str_radix(&segment_part[..8], 16).ok()?;
    let log = u64::from_str_radix(&segment_part[8..16], 16).ok()?;
    let seg = u64::from_str_radix(&segment_part[16..24], 16).ok()?;
    Some((tli, log * per_log + seg))
}

/// The WAL files among `files` (names under `<instance>/wal/`) that no kept backup needs.
/// `ancestors` maps a timeline to the ancestors its history file lists; timeline 1 has none.
pub fn wal_not_needed(
    files: &[String],
    kept: &[KeptStart],
    ancestors: &BTreeMap<u32, Vec<u32>>,
    segment_size: u64,
) -> Vec<String> {
    let descends = |tli: u32, from: u32| -> Option<bool> {
        if tli == from {
            return Some(true);
        }
        if tli == 1 {
            return Some(false);
        }
        ancestors.get(&tli).map(|a| a.contains(&from))
    };
    files
        .iter()
        .filter(|f| {
            let Some((tli, segno)) = segment_of(f, segment_size) else {
                return false;
            };
            kept.iter().all(|k| {
                let needed =
                    segno >= k.lsn / segment_size && descends(tli, k.timeline).unwrap_or(true);
                !needed
            })
        })
        .cloned()
        .collect()
}

/// Keeps `keep`, deletes the rest (see the module documentation).
pub async fn apply(member: &Member, keep: &[String]) -> Result<RetentionResponse, OpError> {
    let catalog = catalog_of(member)?;
    let store = &catalog.store;
    let all = catalog.list().await?;
    let ids: BTreeSet<&str> = all.iter().map(|b| b.id.as_str()).collect();
    if let Some(unknown) = keep.iter().find(|k| !ids.contains(k.as_str())) {
        return Err(OpError::invalid(
            "not_found",
            format!("there is no backup {unknown:?}: nothing was deleted"),
        ));
    }
    let kept_base: Vec<&BackupManifest> = all
        .iter()
        .filter(|b| b.kind == BackupKind::Base && keep.contains(&b.id))
        .collect();
    if kept_base.is_empty() {
        return Err(OpError::invalid(
            "invalid_request",
            "keep at least one base backup: without one no archived WAL is of any use, and \
             deleting all of it is not what retention is for",
        ));
    }
    let mut starts = Vec::with_capacity(kept_base.len());
    for b in &kept_base {
        let lsn = b
            .start_lsn
            .as_deref()
            .and_then(parse_lsn)
            .with_context(|| format!("backup {} has no start LSN", b.id))?;
        let timeline = b
            .timeline
            .with_context(|| format!("backup {} has no timeline", b.id))?;
        starts.push(KeptStart { timeline, lsn });
    }

    let mut deleted_backups = Vec::new();
    for b in all.iter().filter(|b| !keep.contains(&b.id)) {
        match b.kind {
            BackupKind::Base => {
                store.delete(&catalog.base_manifest_key(&b.id)).await?;
                for key in store.list(&format!("{}/", catalog.base_dir(&b.id))).await? {
                    store.delete(&key).await?;
                }
            }
            BackupKind::Logical => {
                store.delete(&catalog.logical_manifest_key(&b.id)).await?;
                for o in &b.objects {
                    store.delete(&o.key).await?;
                }
                store
                    .delete(&catalog.claim_key(&b.id, BackupKind::Logical))
                    .await?;
            }
        }
        deleted_backups.push(b.id.clone());
    }

    let wal_prefix = format!("{}/wal/", catalog.instance);
    let keys = store.list(&wal_prefix).await?;
    let mut ancestors = BTreeMap::new();
    let mut files = Vec::with_capacity(keys.len());
    for key in &keys {
        let file = key.strip_prefix(&wal_prefix).unwrap_or(key).to_string();
        let plain = crate::archive::compression::strip_suffix(&file);
        if let Some(tli) = plain.strip_suffix(".history") {
            let Ok(tli) = u32::from_str_radix(tli, 16) else {
                continue;
            };
            if let Some(stored) = store.get(key).await? {
                let text = decompress(key, stored)?;
                ancestors.insert(tli, ancestors_in(&String::from_utf8_lossy(&text)));
            }
        }
        files.push(file);
    }
    let segment_size = member
        .cfg
        .archive
        .as_ref()
        .map(|a| a.settings.wal_segment_size)
        .unwrap_or(crate::archive::walname::DEFAULT_SEGMENT_SIZE);
    let deleted_wal: Vec<String> = wal_not_needed(&files, &starts, &ancestors, segment_size)
        .into_iter()
        .map(|file| format!("{wal_prefix}{file}"))
        .collect();
    store.delete_many(&deleted_wal).await?;
    tracing::info!(
        kept = ?keep,
        deleted_backups = deleted_backups.len(),
        deleted_wal = deleted_wal.len(),
        "retention applied"
    );
    Ok(RetentionResponse {
        kept_backups: keep.to_vec(),
        deleted_backups,
        deleted_wal,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEG: u64 = 16 * 1024 * 1024;

    fn names(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn only_wal_before_every_kept_start_or_off_its_timelines_goes() {
        // Timeline 1 segments 1-6; timeline 2 branched from 1 in segment 4 (its history names
        // 1); timeline 3 branched from 1 as well (a sibling of 2).
        let files = names(&[
            "000000010000000000000001.gz",
            "000000010000000000000002.gz",
            "000000010000000000000003.gz",
            "000000010000000000000003.00000028.backup.gz",
            "000000010000000000000004.partial.gz",
            "000000010000000000000005",
            "00000002.history.gz",
            "000000020000000000000004.gz",
            "000000020000000000000005.gz",
            "00000003.history",
            "000000030000000000000004.gz",
            "000000040000000000000009.gz",
        ]);
        let mut ancestors = BTreeMap::new();
        ancestors.insert(2, vec![1]);
        ancestors.insert(3, vec![1]);
        // Kept: a backup on timeline 2 that started in segment 5.
        let kept = [KeptStart {
            timeline: 2,
            lsn: 5 * SEG + 0x28,
        }];
        assert_eq!(
            wal_not_needed(&files, &kept, &ancestors, SEG),
            names(&[
                "000000010000000000000001.gz",
                "000000010000000000000002.gz",
                "000000010000000000000003.gz",
                "000000010000000000000003.00000028.backup.gz",
                "000000010000000000000004.partial.gz",
                "000000010000000000000005",
                "000000020000000000000004.gz",
                "000000030000000000000004.gz",
            ])
        );
        // Kept as well: a backup on timeline 1 in segment 3: timeline 1 from 3 on, and its
        // descendants 2 and 3 from 3 on, are needed; timeline 4's ancestry is unknown: kept.
        let kept = [
            kept[0],
            KeptStart {
                timeline: 1,
                lsn: 3 * SEG,
            },
        ];
        assert_eq!(
            wal_not_needed(&files, &kept, &ancestors, SEG),
            names(&["000000010000000000000001.gz", "000000010000000000000002.gz"])
        );
    }

    #[test]
    fn history_files_list_their_ancestors() {
        assert_eq!(
            ancestors_in("1\t0/5000000\tno recovery target specified\n\n2\t0/7000000\tx\n"),
            vec![1, 2]
        );
        assert_eq!(segment_of("00000002.history", SEG), None);
        assert_eq!(
            segment_of("0000000200000001000000FF.zst", SEG),
            Some((2, 256 + 255))
        );
    }
}
