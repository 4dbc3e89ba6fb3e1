//! Base backups: `pg_basebackup -D - -Ft -X fetch` over the local socket, cut into parts each
//! compressed on its own, several at once ([`super::parts`]), into
//! `<instance>/base/<id>/base.tar.pNNNNN[.zst]`. On the way, the tar stream
//! is read for `backup_label` (start LSN, timeline, primary or standby) and for the
//! `backup_manifest` pg_basebackup appends when it writes to stdout (end of the WAL range);
//! Postgres's manifest is stored beside the tar, then ours, last.

use std::ffi::OsStr;

use anyhow::Context;
use toygres_common::sidecar_api::{BackupKind, BackupManifest};

use super::parts::{self, command_to_parts};
use super::tar::{CaptureFiles, TarReader};
use super::{clock, require_archive, require_running, Catalog};
use crate::archive::ArchiveSetup;
use crate::objstore::{PutOutcome, Store};
use crate::postgres::{Member, OpError};

/// What `backup_label` says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupLabel {
    pub start_lsn: String,
    pub timeline: u32,
    pub from_standby: bool,
}

/// Reads `backup_label`.
pub fn parse_backup_label(text: &str) -> anyhow::Result<BackupLabel> {
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
            .map(str::trim)
            .with_context(|| format!("backup_label has no {name}"))
    };
    let start_lsn = field("START WAL LOCATION")?
        .split_whitespace()
        .next()
        .context("backup_label's START WAL LOCATION is empty")?
        .to_string();
    let timeline = field("START TIMELINE")?
        .parse()
        .context("read backup_label's START TIMELINE")?;
    let from_standby = field("BACKUP FROM")
        .map(|v| v == "standby")
        .unwrap_or(false);
    Ok(BackupLabel {
        start_lsn,
        timeline,
        from_standby,
    })
}

/// The end of the WAL a backup needs, from Postgres's `backup_manifest` (its last WAL range).
pub fn manifest_end_lsn(manifest: &[u8]) -> anyhow::Result<(String, u32)> {
    let json: serde_json::Value =
        serde_json::from_slice(manifest).context("parse backup_manifest")?;
    let last = json["WAL-Ranges"]
        .as_array()
        .and_then(|r| r.last())
        .context("backup_manifest has no WAL-Ranges")?;
    let end = last["End-LSN"]
        .as_str()
        .context("backup_manifest's WAL range has no End-LSN")?;
    let tli = last["Timeline"]
        .as_u64()
        .context("backup_manifest's WAL range has no Timeline")?;
    Ok((end.to_string(), tli as u32))
}

/// Facts about the server the backup is taken from.
struct ServerFacts {
    in_recovery: bool,
    version: String,
    system_identifier: String,
}

async fn server_facts(member: &Member) -> Result<ServerFacts, OpError> {
    let client = member.query_client().await?;
    let row = client
        .query_one(
            "SELECT pg_is_in_recovery(), current_setting('server_version'), \
                    (SELECT system_identifier::text FROM pg_control_system())",
            &[],
        )
        .await
        .map_err(|e| OpError::Unavailable(format!("query the server: {e}")))?;
    Ok(ServerFacts {
        in_recovery: row.get(0),
        version: row.get(1),
        system_identifier: row.get(2),
    })
}

/// The next transaction id, as a 64-bit number.
async fn next_xid(member: &Member) -> Option<u64> {
    let client = member.query_client().await.ok()?;
    let row = client
        .query_one(
            "SELECT txid_snapshot_xmax(txid_current_snapshot())::text",
            &[],
        )
        .await
        .ok()?;
    row.get::<_, String>(0).parse().ok()
}

/// Takes a base backup into the archive store; returns its manifest once it is complete.
pub async fn take_base_backup(member: &Member) -> Result<BackupManifest, OpError> {
    let archive = require_archive(member)?;
    require_running(member)?;
    let facts = server_facts(member).await?;
    let settings = &archive.settings;
    let store = Store::open(&settings.url)?;
    let catalog = Catalog::new(store.clone(), &settings.instance);
    let start = clock::now_micros();
    let id = catalog
        .claim_id(BackupKind::Base, start, &member.cfg.member_name)
        .await?;
    let prefix = format!("{}/base.tar", catalog.base_dir(&id));
    tracing::info!(backup = %id, prefix = %store.describe(&prefix), "base backup starting");
    let result = copy_to_store(member, archive, &catalog, &id, &prefix, start, facts).await;
    if result.is_err() {
        // Nothing of a failed backup stays behind (the claim included).
        catalog.discard_base(&id).await;
    }
    result
}

/// Streams the copy into parts under `prefix`, then stores Postgres's manifest and ours.
async fn copy_to_store(
    member: &Member,
    archive: &ArchiveSetup,
    catalog: &Catalog,
    id: &str,
    prefix: &str,
    start: i64,
    facts: ServerFacts,
) -> Result<BackupManifest, OpError> {
    let settings = &archive.settings;
    let store = &catalog.store;

    let run_dir = member.cfg.run_dir.as_os_str().to_owned();
    let port = member.cfg.pg_port.to_string();
    let label = format!("toygres {id}");
    let mut cmd = member.bins.command("pg_basebackup");
    cmd.args([
        OsStr::new("--host"),
        &run_dir,
        OsStr::new("--port"),
        OsStr::new(&port),
        OsStr::new("--username=postgres"),
        OsStr::new("--no-password"),
        OsStr::new("--pgdata=-"),
        OsStr::new("--format=tar"),
        OsStr::new("--wal-method=fetch"),
        OsStr::new("--checkpoint=fast"),
        OsStr::new("--manifest-checksums=SHA256"),
        OsStr::new("--label"),
        OsStr::new(&label),
    ]);
    let tar = TarReader::new(CaptureFiles::new(&["backup_label", "backup_manifest"]));
    let failed = |e: anyhow::Error| OpError::Failed(format!("base backup {id}: {e:#}"));
    let (objects, streamed, tar) = command_to_parts(
        store,
        prefix,
        cmd,
        settings.compression,
        tar,
        parts::PART_BYTES,
        parts::jobs(),
    )
    .await
    .map_err(failed)?;
    let next_xid = next_xid(member).await;
    let stop = clock::now_micros();
    let captured = tar
        .finish()
        .context("read the backup's tar stream")
        .map_err(failed)?;
    let label = captured
        .get("backup_label")
        .context("the backup holds no backup_label")
        .and_then(|b| parse_backup_label(&String::from_utf8_lossy(b)))
        .map_err(failed)?;
    let pg_manifest = captured
        .get("backup_manifest")
        .context("pg_basebackup wrote no backup_manifest into the tar")
        .map_err(failed)?
        .to_vec();
    let (stop_lsn, _) = manifest_end_lsn(&pg_manifest).map_err(failed)?;
    let pg_manifest_key = catalog.pg_manifest_key(id);
    let pg_manifest_len = pg_manifest.len() as u64;
    if store
        .put_new(&pg_manifest_key, pg_manifest, &[])
        .await
        .map_err(failed)?
        == PutOutcome::AlreadyExists
    {
        return Err(failed(anyhow::anyhow!(
            "{} exists already",
            store.describe(&pg_manifest_key)
        )));
    }
    let manifest = BackupManifest {
        id: id.to_string(),
        kind: BackupKind::Base,
        instance: settings.instance.clone(),
        member: member.cfg.member_name.clone(),
        from_standby: label.from_standby || facts.in_recovery,
        start_lsn: Some(label.start_lsn),
        stop_lsn: Some(stop_lsn),
        timeline: Some(label.timeline),
        start_time: clock::rfc3339(start),
        stop_time: clock::rfc3339(stop),
        next_xid,
        raw_bytes: streamed.raw_bytes,
        stored_bytes: streamed.stored_bytes + pg_manifest_len,
        compression: settings.compression.to_string(),
        pg_version: facts.version,
        system_identifier: facts.system_identifier,
        sha256: streamed.sha256,
        objects,
    };
    catalog.put_manifest(&manifest).await.map_err(failed)?;
    tracing::info!(
        backup = %id,
        raw_bytes = manifest.raw_bytes,
        stored_bytes = manifest.stored_bytes,
        parts = manifest.objects.len(),
        seconds = (stop - start) as f64 / 1e6,
        "base backup complete"
    );
    Ok(manifest)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_and_manifest_give_the_wal_range() {
        let label = "START WAL LOCATION: 0/2000028 (file 000000010000000000000002)\n\
                     CHECKPOINT LOCATION: 0/2000060\nBACKUP METHOD: streamed\n\
                     BACKUP FROM: standby\nSTART TIME: 2026-11-23 06:00:16 UTC\n\
                     LABEL: x\nSTART TIMELINE: 3\n";
        assert_eq!(
            parse_backup_label(label).unwrap(),
            BackupLabel {
                start_lsn: "0/2000028".into(),
                timeline: 3,
                from_standby: true
            }
        );
        assert!(parse_backup_label("LABEL: x").is_err());
        let manifest = br#"{"PostgreSQL-Backup-Manifest-Version": 1, "Files": [],
            "WAL-Ranges": [{ "Timeline": 3, "Start-LSN": "0/2000028", "End-LSN": "0/2000100" }]}"#;
        assert_eq!(
            manifest_end_lsn(manifest).unwrap(),
            ("0/2000100".to_string(), 3)
        );
    }
}
