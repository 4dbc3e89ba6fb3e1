//! Operations in the CMS: one row per operator command, written when the API accepts it and
//! moved through `running` to `succeeded` or `failed` by its orchestration.

use toygres_common::controller_api::Operation;
use toygres_common::domain::{OperationKind, OperationStatus, UnknownWord};

use super::{get, rfc3339, Cms, CmsError};

/// An operation that has not finished, for the resume pass at start-up.
#[derive(Debug, Clone, PartialEq)]
pub struct UnfinishedOperation {
    pub id: String,
    pub kind: OperationKind,
    pub instance: String,
    pub request: serde_json::Value,
}

/// How many operations of a kind ended how, and how long they took in total.
#[derive(Debug, Clone, PartialEq)]
pub struct OperationStats {
    pub kind: String,
    pub status: String,
    pub count: i64,
    pub seconds: f64,
}

impl Cms {
    /// Records an operation the API accepted (`pending`); nothing when it exists.
    pub async fn insert_operation(
        &self,
        id: &str,
        kind: OperationKind,
        instance: &str,
        request: &serde_json::Value,
    ) -> Result<(), CmsError> {
        let kind = kind.as_str();
        self.execute(
            "record an operation",
            "INSERT INTO toygres.operations (id, kind, instance, status, request)
             VALUES ($1, $2, $3, 'pending', $4) ON CONFLICT (id) DO NOTHING",
            &[&id, &kind, &instance, request],
        )
        .await?;
        Ok(())
    }

    /// Marks an operation running (once).
    pub async fn start_operation(&self, id: &str) -> Result<(), CmsError> {
        self.execute(
            "mark an operation running",
            "UPDATE toygres.operations SET status = 'running', started_at = coalesce(started_at, now())
              WHERE id = $1 AND status = 'pending'",
            &[&id],
        )
        .await?;
        Ok(())
    }

    /// Marks an operation finished with `status` (`succeeded`, `failed`, `cancelled`).
    pub async fn finish_operation(
        &self,
        id: &str,
        status: OperationStatus,
        error: Option<&str>,
    ) -> Result<(), CmsError> {
        let status = status.as_str();
        let error = error.map(super::events::without_sql_detail);
        // A failure after an operator's cancel request is the cancel honoured.
        self.execute(
            "mark an operation finished",
            "UPDATE toygres.operations
                SET status = CASE WHEN $2 = 'failed' AND cancel_requested_at IS NOT NULL
                                  THEN 'cancelled' ELSE $2 END,
                    error = $3, started_at = coalesce(started_at, now()),
                    finished_at = coalesce(finished_at, now())
              WHERE id = $1 AND finished_at IS NULL",
            &[&id, &status, &error],
        )
        .await?;
        Ok(())
    }

    /// One operation (its progress is filled in by the caller from the orchestration).
    pub async fn get_operation(&self, id: &str) -> Result<Option<Operation>, CmsError> {
        let what = "read an operation";
        let sql = concat!(
            "SELECT id, kind, instance, status, error, ",
            rfc3339!("created_at"),
            ", ",
            rfc3339!("finished_at"),
            ", extract(epoch FROM coalesce(finished_at, now()) - created_at)::float8
               FROM toygres.operations WHERE id = $1"
        );
        let rows = self.query(what, sql, &[&id]).await?;
        rows.first()
            .map(|row| {
                Ok(Operation {
                    id: get(row, 0, what)?,
                    kind: get(row, 1, what)?,
                    instance: get(row, 2, what)?,
                    status: get(row, 3, what)?,
                    progress: None,
                    error: get(row, 4, what)?,
                    created_at: get(row, 5, what)?,
                    finished_at: get(row, 6, what)?,
                    elapsed_seconds: get(row, 7, what)?,
                })
            })
            .transpose()
    }

    /// The newest operation on an instance.
    pub async fn latest_operation(&self, instance: &str) -> Result<Option<String>, CmsError> {
        let rows = self
            .query(
                "find an instance's latest operation",
                "SELECT id FROM toygres.operations WHERE instance = $1
                  ORDER BY created_at DESC LIMIT 1",
                &[&instance],
            )
            .await?;
        rows.first()
            .map(|row| get(row, 0, "find an instance's latest operation"))
            .transpose()
    }

    /// The unfinished operation on an instance of a kind, if any.
    pub async fn unfinished_operation(
        &self,
        instance: &str,
    ) -> Result<Option<(String, String)>, CmsError> {
        let what = "find an instance's unfinished operation";
        let rows = self
            .query(
                what,
                "SELECT id, kind FROM toygres.operations
                  WHERE instance = $1 AND status IN ('pending', 'running')
                  ORDER BY created_at LIMIT 1",
                &[&instance],
            )
            .await?;
        rows.first()
            .map(|row| Ok((get(row, 0, what)?, get(row, 1, what)?)))
            .transpose()
    }

    /// How many operations on an instance's actor queue (pending or running; creating and
    /// deleting the instance are not queued on its actor).
    pub async fn queued_operations(&self, instance: &str) -> Result<i64, CmsError> {
        let what = "count an instance's queued operations";
        let rows = self
            .query(
                what,
                "SELECT count(*) FROM toygres.operations
                  WHERE instance = $1 AND status IN ('pending', 'running')
                    AND kind NOT IN ('create', 'delete')",
                &[&instance],
            )
            .await?;
        rows.first().map_or(Ok(0), |row| get(row, 0, what))
    }

    /// An operator's cancel: a pending operation ends `cancelled` at once (its actor skips
    /// it); a running one is asked to stop at its next safe point. The answer says which, or
    /// `None` when the operation does not exist or has already finished.
    pub async fn cancel_operation(&self, id: &str) -> Result<Option<OperationStatus>, CmsError> {
        let what = "cancel an operation";
        let rows = self
            .query(
                what,
                "UPDATE toygres.operations
                    SET status = CASE WHEN status = 'pending' THEN 'cancelled' ELSE status END,
                        error = CASE WHEN status = 'pending' THEN 'cancelled by the operator'
                                     ELSE error END,
                        started_at = CASE WHEN status = 'pending'
                                          THEN coalesce(started_at, now()) ELSE started_at END,
                        finished_at = CASE WHEN status = 'pending' THEN now() ELSE finished_at END,
                        cancel_requested_at = coalesce(cancel_requested_at, now())
                  WHERE id = $1 AND status IN ('pending', 'running')
                  RETURNING status",
                &[&id],
            )
            .await?;
        rows.first()
            .map(|row| {
                let status: String = get(row, 0, what)?;
                status.parse().map_err(|e: UnknownWord| CmsError::Invalid {
                    what,
                    message: e.to_string(),
                })
            })
            .transpose()
    }

    /// Ends every queued or running operation on an instance's actor as `cancelled` (the
    /// instance is being deleted: its actor and the operation's children stop with it).
    /// Returns their ids.
    pub async fn cancel_instance_operations(
        &self,
        instance: &str,
        reason: &str,
    ) -> Result<Vec<String>, CmsError> {
        let what = "cancel an instance's operations";
        let rows = self
            .query(
                what,
                "UPDATE toygres.operations
                    SET status = 'cancelled', error = $2,
                        started_at = coalesce(started_at, now()), finished_at = now(),
                        cancel_requested_at = coalesce(cancel_requested_at, now())
                  WHERE instance = $1 AND status IN ('pending', 'running')
                    AND kind NOT IN ('create', 'delete')
                  RETURNING id",
                &[&instance, &reason],
            )
            .await?;
        rows.iter().map(|row| get(row, 0, what)).collect()
    }

    /// Whether an operator cancelled the operation (queued) or asked it to stop (running) —
    /// or it has already ended: a second copy of a queued command (a scheduled change queued
    /// twice by a retried activity) is skipped the same way.
    pub async fn operation_cancelled(&self, id: &str) -> Result<bool, CmsError> {
        let what = "read whether an operation is cancelled";
        let rows = self
            .query(
                what,
                "SELECT status IN ('cancelled', 'succeeded', 'failed')
                        OR cancel_requested_at IS NOT NULL
                   FROM toygres.operations WHERE id = $1",
                &[&id],
            )
            .await?;
        rows.first().map_or(Ok(false), |row| get(row, 0, what))
    }

    /// The request an operation was recorded with.
    pub async fn operation_request(&self, id: &str) -> Result<Option<serde_json::Value>, CmsError> {
        let what = "read an operation's request";
        let rows = self
            .query(
                what,
                "SELECT request FROM toygres.operations WHERE id = $1",
                &[&id],
            )
            .await?;
        rows.first().map(|row| get(row, 0, what)).transpose()
    }

    /// Every operation still pending, oldest first.
    pub async fn pending_operations(&self) -> Result<Vec<UnfinishedOperation>, CmsError> {
        let what = "list pending operations";
        let rows = self
            .query(
                what,
                "SELECT id, kind, instance, request FROM toygres.operations
                  WHERE status = 'pending' ORDER BY created_at",
                &[],
            )
            .await?;
        rows.iter()
            .map(|row| {
                let kind: String = get(row, 1, what)?;
                Ok(UnfinishedOperation {
                    id: get(row, 0, what)?,
                    kind: kind.parse().map_err(|e: UnknownWord| CmsError::Invalid {
                        what,
                        message: e.to_string(),
                    })?,
                    instance: get(row, 2, what)?,
                    request: get(row, 3, what)?,
                })
            })
            .collect()
    }

    /// Finished operations by kind and status, with their summed durations (metrics).
    pub async fn operation_stats(&self) -> Result<Vec<OperationStats>, CmsError> {
        let what = "count operations";
        let rows = self
            .query(
                what,
                "SELECT kind, status, count(*),
                        coalesce(sum(extract(epoch FROM finished_at - created_at)), 0)::float8
                   FROM toygres.operations GROUP BY kind, status ORDER BY kind, status",
                &[],
            )
            .await?;
        rows.iter()
            .map(|row| {
                Ok(OperationStats {
                    kind: get(row, 0, what)?,
                    status: get(row, 1, what)?,
                    count: get(row, 2, what)?,
                    seconds: get(row, 3, what)?,
                })
            })
            .collect()
    }
}
