//! Verification of a base backup, end to end: download it into a temporary directory (checking
//! the object's SHA-256), run `pg_verifybackup` against the stored `backup_manifest`, start it
//! as a private server (socket only, archiving off), run a sanity query in every database, stop
//! it and remove the directory. The answer is pass or fail with the reason; only a missing
//! store or backup is an error.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use toygres_common::poll::{poll, Attempt, PollError};
use toygres_common::sidecar_api::{BackupKind, VerifyResponse};

use super::catalog_of;
use crate::owned;
use crate::postgres::files::{self, Layout};
use crate::postgres::process::PgChild;
use crate::postgres::{Member, OpError};
use crate::restore;

/// One verification at a time: each holds a whole copy of the cluster on disk.
static VERIFYING: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Verifies base backup `id`.
pub async fn verify_base_backup(member: &Member, id: &str) -> Result<VerifyResponse, OpError> {
    super::check_id(id).map_err(|e| OpError::invalid("invalid_request", e.to_string()))?;
    let catalog = catalog_of(member)?;
    let manifest = catalog
        .get(id, BackupKind::Base)
        .await?
        .ok_or_else(|| OpError::invalid("not_found", format!("there is no base backup {id}")))?;
    let _one_at_a_time = VERIFYING.lock().await;
    let started = Instant::now();
    let dir = scratch_dir(&member.layout.data_dir, "verify");
    let run_dir = member.cfg.run_dir.join("v");
    let outcome = check(member, &catalog, &manifest, &dir, &run_dir).await;
    for d in [&dir, &run_dir] {
        if let Err(e) = std::fs::remove_dir_all(d) {
            if e.kind() != std::io::ErrorKind::NotFound {
                tracing::warn!(dir = %d.display(), "remove the verification directory: {e}");
            }
        }
    }
    let (ok, message) = match outcome {
        Ok(summary) => (true, summary),
        Err(e) => (false, format!("{e:#}")),
    };
    if ok {
        tracing::info!(backup = %id, "verification passed: {message}");
    } else {
        tracing::warn!(backup = %id, "verification failed: {message}");
    }
    Ok(VerifyResponse {
        backup_id: id.to_string(),
        ok,
        message,
        duration_ms: started.elapsed().as_millis() as u64,
    })
}

/// A sibling of the data directory for a temporary copy.
fn scratch_dir(data_dir: &Path, what: &str) -> PathBuf {
    let mut name = data_dir
        .file_name()
        .map(|n| n.to_os_string())
        .unwrap_or_default();
    name.push(format!(".{what}"));
    data_dir.with_file_name(name)
}

async fn check(
    member: &Member,
    catalog: &super::Catalog,
    manifest: &toygres_common::sidecar_api::BackupManifest,
    dir: &Path,
    run_dir: &Path,
) -> anyhow::Result<String> {
    let bins = &member.bins;
    for d in [dir, run_dir] {
        if d.exists() {
            std::fs::remove_dir_all(d).with_context(|| format!("remove {}", d.display()))?;
        }
        owned::ensure_private_dir(bins, d)?;
    }
    let in_tar = restore::download_base_backup(&catalog.store, manifest, dir, bins).await?;
    let stored = catalog
        .store
        .get(&catalog.pg_manifest_key(&manifest.id))
        .await?;
    let pg_manifest = match stored {
        Some(m) => m,
        None if !in_tar.is_empty() => in_tar,
        None => bail!("the backup has no backup_manifest"),
    };
    let manifest_path = run_dir.join("backup_manifest");
    owned::write_file(bins, &manifest_path, &pg_manifest, 0o600)?;
    restore::verify_directory(bins, dir, &manifest_path)
        .await
        .context("pg_verifybackup")?;

    // A private server: socket only, in its own directory, archiving nothing.
    for name in [
        "standby.signal",
        "recovery.signal",
        "toygres.recovery.conf",
        "toygres.fenced",
    ] {
        let _ = std::fs::remove_file(dir.join(name));
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .context("pick a port")?;
    let conf = format!(
        "# A verification copy: private, archiving nothing.\n\
         listen_addresses = ''\nport = {port}\nunix_socket_directories = {}\n\
         unix_socket_permissions = 0700\narchive_mode = off\nhot_standby = on\n\
         logging_collector = off\nmax_wal_senders = 0\nmax_replication_slots = 0\n\
         wal_level = replica\nsynchronous_standby_names = ''\n",
        files::conf_quote(&run_dir.display().to_string())
    );
    owned::write_file(bins, &dir.join("toygres.conf"), conf.as_bytes(), 0o600)?;
    let layout = Layout {
        data_dir: dir.to_path_buf(),
        run_dir: run_dir.to_path_buf(),
    };
    let child = PgChild::spawn(bins, &layout)?;
    let queried = sanity_query(run_dir, port, &child, member.cfg.start_timeout).await;
    let how = child.stop(member.cfg.stop_timeout).await;
    tracing::debug!("verification server stopped: {how}");
    let databases = queried?;
    Ok(format!(
        "pg_verifybackup passed; the copy started and answered in {databases} databases"
    ))
}

/// Waits until the copy accepts connections, then reads the catalog of every database.
async fn sanity_query(
    socket_dir: &Path,
    port: u16,
    child: &PgChild,
    timeout: Duration,
) -> anyhow::Result<usize> {
    let connect = |db: String| {
        let mut pg = tokio_postgres::Config::new();
        pg.host_path(socket_dir)
            .port(port)
            .user("postgres")
            .dbname(&db)
            .connect_timeout(Duration::from_secs(3));
        async move {
            let (client, conn) = pg.connect(tokio_postgres::NoTls).await?;
            tokio::spawn(async move {
                let _ = conn.await;
            });
            Ok::<_, tokio_postgres::Error>(client)
        }
    };
    let attempt = || {
        let exited = child.exited();
        let connecting = connect("postgres".into());
        async move {
            if let Some(exit) = exited {
                return Attempt::GiveUp(anyhow::anyhow!(
                    "the restored copy did not start ({exit}); see the log above"
                ));
            }
            match connecting.await {
                Ok(c) => Attempt::Done(c),
                Err(e) => Attempt::NotYet(e.to_string()),
            }
        }
    };
    let client = match poll(
        "the restored copy accepts connections",
        Duration::from_millis(100),
        timeout,
        attempt,
    )
    .await
    {
        Ok(client) => client,
        Err(PollError::GaveUp(e)) => return Err(e),
        Err(PollError::TimedOut(t)) => bail!(
            "the restored copy did not accept connections within {timeout:?}: {}",
            t.last.unwrap_or_default()
        ),
    };
    let databases: Vec<String> = client
        .query(
            "SELECT datname FROM pg_database WHERE datallowconn ORDER BY 1",
            &[],
        )
        .await
        .context("list the copy's databases")?
        .iter()
        .map(|r| r.get(0))
        .collect();
    for db in &databases {
        let c = connect(db.clone())
            .await
            .with_context(|| format!("connect to database {db} of the copy"))?;
        c.query_one("SELECT count(*) FROM pg_class", &[])
            .await
            .with_context(|| format!("read the catalog of database {db} of the copy"))?;
    }
    Ok(databases.len())
}
