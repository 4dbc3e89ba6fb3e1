//! Backups in the CMS: one row per backup taken through the controller, written `running` when
//! its operation starts (at most one per instance: a partial unique index) and finished
//! `succeeded`, with what the sidecar's manifest says, or `failed`, with the error. A backup
//! deleted from the store loses its row; the event that records the deletion keeps it.

use toygres_common::backup_api::{BackupConfig, BackupView};
use toygres_common::domain::{BackupStatus, EventKind, HaEventKind};
use toygres_common::sidecar_api::{BackupKind, BackupManifest};

use super::{get, rfc3339_micros, Cms, CmsError};

/// A backup that begins.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupStarted<'a> {
    pub id: &'a str,
    pub instance: &'a str,
    pub operation_id: &'a str,
    pub kind: BackupKind,
    pub label: Option<&'a str>,
    pub member: &'a str,
}

/// Whether [`Cms::insert_backup`] wrote the row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BackupInsert {
    /// Recorded (or recorded already by an earlier attempt).
    Recorded,
    /// Another backup of the instance is in progress: its id.
    Busy(String),
}

/// The kind's name in the CMS.
pub fn kind_name(kind: BackupKind) -> &'static str {
    match kind {
        BackupKind::Base => "base",
        BackupKind::Logical => "logical",
    }
}

const COLUMNS: &str = concat!(
    "id, instance, kind, label, status, operation_id, member, from_standby, store_path, ",
    "raw_bytes, stored_bytes, start_lsn::text, stop_lsn::text, timeline, ",
    rfc3339_micros!("started_at"),
    ", ",
    rfc3339_micros!("finished_at"),
    ", error, verification"
);

fn backup_view(row: &tokio_postgres::Row, what: &'static str) -> Result<BackupView, CmsError> {
    let bytes = |i| -> Result<Option<u64>, CmsError> {
        let value: Option<i64> = get(row, i, what)?;
        Ok(value.and_then(|v| u64::try_from(v).ok()))
    };
    let timeline: Option<i32> = get(row, 13, what)?;
    Ok(BackupView {
        id: get(row, 0, what)?,
        instance: get(row, 1, what)?,
        kind: get(row, 2, what)?,
        label: get(row, 3, what)?,
        status: get(row, 4, what)?,
        operation_id: get(row, 5, what)?,
        member: get(row, 6, what)?,
        from_standby: get(row, 7, what)?,
        store_path: get(row, 8, what)?,
        raw_bytes: bytes(9)?,
        stored_bytes: bytes(10)?,
        start_lsn: get(row, 11, what)?,
        stop_lsn: get(row, 12, what)?,
        timeline: timeline.and_then(|t| u32::try_from(t).ok()),
        started_at: get(row, 14, what)?,
        finished_at: get(row, 15, what)?,
        error: get(row, 16, what)?,
        verification: get(row, 17, what)?,
        abandoned: false,
    })
}

fn to_i64(value: u64) -> Option<i64> {
    i64::try_from(value).ok()
}

/// Where a backup's objects lie, relative to the store URL (the layout in DESIGN.md).
pub fn store_path(manifest: &BackupManifest) -> String {
    let folder = kind_name(manifest.kind);
    format!("{}/{folder}/{}", manifest.instance, manifest.id)
}

impl Cms {
    /// Records a backup `running`, unless another backup of the instance is in progress.
    /// Idempotent: the same id again is success.
    pub async fn insert_backup(&self, b: &BackupStarted<'_>) -> Result<BackupInsert, CmsError> {
        let what = "record a backup";
        let kind = kind_name(b.kind);
        let written = self
            .execute(
                what,
                "INSERT INTO toygres.backups (id, instance, operation_id, kind, label, member)
                 VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING",
                &[
                    &b.id,
                    &b.instance,
                    &b.operation_id,
                    &kind,
                    &b.label,
                    &b.member,
                ],
            )
            .await?;
        if written > 0 {
            return Ok(BackupInsert::Recorded);
        }
        let rows = self
            .query(
                what,
                "SELECT id FROM toygres.backups
                  WHERE id = $1 OR (instance = $2 AND status = 'running')",
                &[&b.id, &b.instance],
            )
            .await?;
        let ids: Vec<String> = rows
            .iter()
            .map(|r| get(r, 0, what))
            .collect::<Result<_, _>>()?;
        if ids.iter().any(|id| id == b.id) {
            return Ok(BackupInsert::Recorded);
        }
        Ok(BackupInsert::Busy(
            ids.into_iter().next().unwrap_or_default(),
        ))
    }

    /// Records a backup succeeded with what its manifest says it holds (once: a finished backup
    /// stays as it is).
    pub async fn finish_backup_succeeded(
        &self,
        id: &str,
        manifest: &BackupManifest,
    ) -> Result<(), CmsError> {
        let timeline = manifest.timeline.and_then(|t| i32::try_from(t).ok());
        let store_path = store_path(manifest);
        self.execute(
            "record a backup succeeded",
            "UPDATE toygres.backups
                SET status = 'succeeded', finished_at = now(), store_path = $2,
                    from_standby = $3, raw_bytes = $4, stored_bytes = $5,
                    start_lsn = $6::text::pg_lsn, stop_lsn = $7::text::pg_lsn, timeline = $8
              WHERE id = $1 AND status = 'running'",
            &[
                &id,
                &store_path,
                &manifest.from_standby,
                &to_i64(manifest.raw_bytes),
                &to_i64(manifest.stored_bytes),
                &manifest.start_lsn,
                &manifest.stop_lsn,
                &timeline,
            ],
        )
        .await?;
        Ok(())
    }

    /// Records a backup failed with `error` (once).
    pub async fn finish_backup_failed(&self, id: &str, error: &str) -> Result<(), CmsError> {
        self.execute(
            "record a backup failed",
            "UPDATE toygres.backups SET status = 'failed', finished_at = now(), error = $2
              WHERE id = $1 AND status = 'running'",
            &[&id, &error],
        )
        .await?;
        Ok(())
    }

    /// Records the result of the backup's latest verification.
    pub async fn set_backup_verification(
        &self,
        id: &str,
        verification: &serde_json::Value,
    ) -> Result<(), CmsError> {
        self.execute(
            "record a backup's verification",
            "UPDATE toygres.backups SET verification = $2 WHERE id = $1",
            &[&id, verification],
        )
        .await?;
        Ok(())
    }

    /// One backup.
    pub async fn get_backup(&self, id: &str) -> Result<Option<BackupView>, CmsError> {
        let what = "read a backup";
        let sql = format!("SELECT {COLUMNS} FROM toygres.backups WHERE id = $1");
        let rows = self.query(what, &sql, &[&id]).await?;
        rows.first().map(|r| backup_view(r, what)).transpose()
    }

    /// The instance's backups, newest first.
    pub async fn list_backups(&self, instance: &str) -> Result<Vec<BackupView>, CmsError> {
        let what = "list an instance's backups";
        let sql = format!(
            "SELECT {COLUMNS} FROM toygres.backups WHERE instance = $1
              ORDER BY started_at DESC, id"
        );
        let rows = self.query(what, &sql, &[&instance]).await?;
        rows.iter().map(|r| backup_view(r, what)).collect()
    }

    /// Stores the instance's backup configuration (its schedule changed); refused for an
    /// instance whose backups are off.
    pub async fn set_backup_config(
        &self,
        name: &str,
        config: &BackupConfig,
    ) -> Result<(), CmsError> {
        let what = "store an instance's backup configuration";
        let value = serde_json::to_value(config).map_err(|e| CmsError::Invalid {
            what,
            message: e.to_string(),
        })?;
        self.execute(
            what,
            "UPDATE toygres.instances SET backup = $2
              WHERE name = $1 AND backup IS NOT NULL",
            &[&name, &value],
        )
        .await?;
        Ok(())
    }

    /// The instance's backup in progress, if any.
    pub async fn running_backup(&self, instance: &str) -> Result<Option<String>, CmsError> {
        let what = "find a running backup";
        let rows = self
            .query(
                what,
                "SELECT id FROM toygres.backups WHERE instance = $1 AND status = $2",
                &[&instance, &BackupStatus::Running.as_str()],
            )
            .await?;
        rows.first().map(|r| get(r, 0, what)).transpose()
    }

    /// The store ids of `instance`'s base backups that a restore still running starts from
    /// (into a new instance: its create operation; in place: its restore operation; pending or
    /// running): a deletion keeps them.
    pub async fn backups_in_restore(&self, instance: &str) -> Result<Vec<String>, CmsError> {
        let what = "find the backups running restores use";
        let rows = self
            .query(
                what,
                "SELECT DISTINCT request->'restore'->>'backup_id' FROM toygres.operations
                  WHERE kind IN ('create', 'restore-in-place')
                    AND status IN ('pending', 'running')
                    AND request->'restore'->>'instance' = $1
                    AND request->'restore'->>'backup_id' IS NOT NULL",
                &[&instance],
            )
            .await?;
        rows.iter().map(|r| get(r, 0, what)).collect()
    }

    /// Whether operation `id` restores from a backup (a create from one, or an in-place
    /// restore): its request names a restore source.
    pub async fn operation_restores(&self, id: &str) -> Result<bool, CmsError> {
        let rows = self
            .query(
                "find whether an operation restores",
                "SELECT 1 FROM toygres.operations
                  WHERE id = $1 AND jsonb_typeof(request->'restore') = 'object'",
                &[&id],
            )
            .await?;
        Ok(!rows.is_empty())
    }

    /// Forgets the backups `ids` of `instance` (deleted from the store by operation
    /// `operation_id`, with `wal_files` archived WAL files only they needed), and records one
    /// `backups-deleted` event whose details keep their rows. A running backup is never
    /// forgotten. Idempotent: a second call finds nothing left and records nothing.
    pub async fn forget_deleted_backups(
        &self,
        instance: &str,
        ids: &[String],
        operation_id: &str,
        wal_files: i64,
    ) -> Result<u64, CmsError> {
        let kind = EventKind::from(HaEventKind::BackupsDeleted).name();
        self.execute(
            "forget deleted backups",
            "WITH gone AS (
                DELETE FROM toygres.backups b
                 WHERE b.instance = $1 AND b.id = ANY($2) AND b.status <> 'running'
                RETURNING b.id, b.started_at, to_jsonb(b.*) AS record)
             INSERT INTO toygres.events (instance, operation_id, kind, message, details)
             SELECT $1, $3::text, $4::text,
                    'deleted backup' || CASE WHEN count(*) > 1 THEN 's ' ELSE ' ' END
                      || string_agg(id, ', ' ORDER BY started_at) || ' and '
                      || $5::bigint || ' archived WAL files only they needed',
                    jsonb_build_object('backups', jsonb_agg(record ORDER BY started_at),
                                       'wal_files', $5::bigint)
               FROM gone HAVING count(*) > 0",
            &[&instance, &ids, &operation_id, &kind, &wal_files],
        )
        .await
    }
}
