//! Logical backups: `pg_dump -Fc` of each database, streamed as is (the custom format is
//! already compressed) to `<instance>/logical/<id>-<db>.dump`, with one manifest for the lot;
//! and their restore into the running server with `pg_restore`, streamed from the store into
//! its stdin.

use std::ffi::OsStr;
use std::io::Read;
use std::process::Stdio;

use anyhow::Context;
use toygres_common::sidecar_api::{
    BackupKind, BackupManifest, BackupObject, LogicalRestoreRequest,
};

use super::stream::{command_to_store, store_to_writer};
use super::{catalog_of, check_database_name, check_id, clock, require_archive, require_running};
use crate::archive::Compression;
use crate::postgres::{Member, OpError};

/// A client-side program (pg_dump, pg_restore) pointed at the local server's socket.
fn local_tool(member: &Member, program: &str) -> std::process::Command {
    let mut cmd = member.bins.command(program);
    cmd.arg("--host")
        .arg(&member.cfg.run_dir)
        .arg("--port")
        .arg(member.cfg.pg_port.to_string())
        .arg("--username=postgres")
        .arg("--no-password");
    cmd
}

/// Quotes an identifier for SQL.
fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// Dumps `databases` (none given: every database that takes connections, templates aside)
/// into the store; returns the manifest once every dump is stored.
pub async fn take_logical_backup(
    member: &Member,
    databases: &[String],
) -> Result<BackupManifest, OpError> {
    require_archive(member)?;
    require_running(member)?;
    let every;
    let databases = if databases.is_empty() {
        every = member
            .query_client()
            .await?
            .query(
                "SELECT datname FROM pg_database WHERE datallowconn AND NOT datistemplate \
                 ORDER BY datname",
                &[],
            )
            .await
            .map_err(|e| OpError::Unavailable(format!("list databases: {e}")))?
            .iter()
            .map(|r| r.get::<_, String>(0))
            .collect::<Vec<_>>();
        every.as_slice()
    } else {
        databases
    };
    for db in databases {
        check_database_name(db).map_err(|e| OpError::invalid("invalid_request", e.to_string()))?;
    }
    let (version, system_identifier) = {
        let client = member.query_client().await?;
        let exists: Vec<String> = client
            .query(
                "SELECT datname FROM pg_database WHERE datname = ANY($1)",
                &[&databases],
            )
            .await
            .map_err(|e| OpError::Unavailable(format!("list databases: {e}")))?
            .iter()
            .map(|r| r.get(0))
            .collect();
        if let Some(missing) = databases.iter().find(|d| !exists.contains(d)) {
            return Err(OpError::invalid(
                "not_found",
                format!("there is no database {missing:?}"),
            ));
        }
        let row = client
            .query_one(
                "SELECT current_setting('server_version'), \
                        (SELECT system_identifier::text FROM pg_control_system())",
                &[],
            )
            .await
            .map_err(|e| OpError::Unavailable(format!("query the server: {e}")))?;
        (row.get::<_, String>(0), row.get::<_, String>(1))
    };
    let catalog = catalog_of(member)?;
    let start = clock::now_micros();
    let id = catalog
        .claim_id(BackupKind::Logical, start, &member.cfg.member_name)
        .await?;
    let mut objects = Vec::with_capacity(databases.len());
    let mut written = vec![catalog.claim_key(&id, BackupKind::Logical)];
    for db in databases {
        let key = catalog.dump_key(&id, db);
        written.push(key.clone());
        let mut cmd = local_tool(member, "pg_dump");
        cmd.args([
            OsStr::new("--format=custom"),
            OsStr::new("--dbname"),
            OsStr::new(db),
        ]);
        match command_to_store(&catalog.store, &key, cmd, Compression::None, ()).await {
            Ok((streamed, ())) => objects.push(BackupObject {
                key,
                database: Some(db.clone()),
                raw_bytes: streamed.raw_bytes,
                stored_bytes: streamed.stored_bytes,
                sha256: streamed.sha256,
            }),
            Err(e) => {
                catalog.discard(&id, &written).await;
                return Err(OpError::Failed(format!(
                    "logical backup {id} of {db}: {e:#}"
                )));
            }
        }
    }
    let manifest = BackupManifest {
        id: id.clone(),
        kind: BackupKind::Logical,
        instance: catalog.instance.clone(),
        member: member.cfg.member_name.clone(),
        from_standby: member.layout.is_standby(),
        start_lsn: None,
        stop_lsn: None,
        timeline: None,
        start_time: clock::rfc3339(start),
        stop_time: clock::rfc3339(clock::now_micros()),
        next_xid: None,
        raw_bytes: objects.iter().map(|o| o.raw_bytes).sum(),
        stored_bytes: objects.iter().map(|o| o.stored_bytes).sum(),
        compression: "pg_dump".into(),
        pg_version: version,
        system_identifier,
        sha256: objects[0].sha256.clone(),
        objects,
    };
    if let Err(e) = catalog.put_manifest(&manifest).await {
        catalog.discard(&id, &written).await;
        return Err(e.into());
    }
    tracing::info!(backup = %id, databases = ?databases, "logical backup complete");
    Ok(manifest)
}

/// Restores one database of a logical backup into the running server (a primary), creating
/// the target database when missing and replacing the objects the dump holds.
pub async fn restore(member: &Member, req: &LogicalRestoreRequest) -> Result<String, OpError> {
    require_running(member)?;
    let bad = |e: anyhow::Error| OpError::invalid("invalid_request", format!("{e:#}"));
    check_id(&req.backup_id).map_err(bad)?;
    check_database_name(&req.database).map_err(bad)?;
    let target = req.target_database.clone().unwrap_or(req.database.clone());
    check_database_name(&target).map_err(bad)?;
    let catalog = catalog_of(member)?;
    let manifest = catalog
        .get(&req.backup_id, BackupKind::Logical)
        .await?
        .ok_or_else(|| {
            OpError::invalid(
                "not_found",
                format!("there is no logical backup {}", req.backup_id),
            )
        })?;
    let object = manifest
        .objects
        .iter()
        .find(|o| o.database.as_deref() == Some(req.database.as_str()))
        .ok_or_else(|| {
            OpError::invalid(
                "not_found",
                format!(
                    "logical backup {} holds no database {:?}",
                    req.backup_id, req.database
                ),
            )
        })?
        .clone();
    {
        let client = member.query_client().await?;
        let row = client
            .query_one(
                "SELECT pg_is_in_recovery(), \
                        EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)",
                &[&target],
            )
            .await
            .map_err(|e| OpError::Unavailable(format!("query the server: {e}")))?;
        if row.get::<_, bool>(0) {
            return Err(OpError::Conflict(
                "this member is a standby: restore into the primary".into(),
            ));
        }
        if !row.get::<_, bool>(1) {
            client
                .batch_execute(&format!("CREATE DATABASE {}", quote_ident(&target)))
                .await
                .map_err(|e| OpError::Failed(format!("create database {target:?}: {e}")))?;
        }
    }
    let mut cmd = local_tool(member, "pg_restore");
    cmd.args([
        OsStr::new("--dbname"),
        OsStr::new(&target),
        OsStr::new("--clean"),
        OsStr::new("--if-exists"),
        OsStr::new("--exit-on-error"),
        OsStr::new("--single-transaction"),
    ]);
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let fail = |e: anyhow::Error| OpError::Failed(format!("restore {}: {e:#}", req.backup_id));
    let mut child = cmd.spawn().context("start pg_restore").map_err(fail)?;
    let stdin = child
        .stdin
        .take()
        .context("take pg_restore's stdin")
        .map_err(fail)?;
    let mut stderr = child
        .stderr
        .take()
        .context("take pg_restore's stderr")
        .map_err(fail)?;
    let errors = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text);
        text
    });
    let fed = store_to_writer(&catalog.store, &object.key, &object.sha256, stdin).await;
    let feed_error = match fed {
        // Dropping stdin ends pg_restore's input.
        Ok(stdin) => {
            drop(stdin);
            None
        }
        Err(e) => {
            let _ = child.kill();
            Some(e)
        }
    };
    let status = tokio::task::spawn_blocking(move || child.wait())
        .await
        .context("join pg_restore")
        .map_err(fail)?
        .context("wait for pg_restore")
        .map_err(fail)?;
    if let Some(e) = feed_error {
        return Err(fail(e));
    }
    let stderr = errors.join().unwrap_or_default();
    for line in stderr.lines() {
        tracing::info!(target: "postgres", tool = "pg_restore", "{line}");
    }
    if !status.success() {
        let tail: Vec<&str> = stderr.lines().rev().take(5).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        return Err(fail(anyhow::anyhow!(
            "pg_restore failed ({status}): {}",
            tail.join(" / ")
        )));
    }
    Ok(format!(
        "restored {} of backup {} into {target}",
        req.database, req.backup_id
    ))
}
