//! Instances and their members in the CMS: what the API reads and what the orchestrations'
//! activities record. Every write is idempotent (activities run at least once).

use toygres_common::backup_api::BackupConfig;
use toygres_common::controller_api::{
    HaSettings, InstanceSummary, MemberView, ValidatedCreateInstance,
};
use toygres_common::domain::{InstanceState, MemberState, Role};

use super::{get, rfc3339, Cms, CmsError};

/// An instance's row.
#[derive(Debug, Clone, PartialEq)]
pub struct InstanceRecord {
    pub summary: InstanceSummary,
    pub replicas: u32,
    pub actor_id: Option<String>,
}

/// What the API's create found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CreateOutcome {
    /// The instance row and the operation row were written.
    Created,
    /// A live instance of that name exists.
    Exists { state: String },
}

/// A member as an activity records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberRow<'a> {
    pub instance: &'a str,
    pub name: &'a str,
    pub role: Role,
    pub state: MemberState,
    pub host: &'a str,
    pub pg_port: u16,
    pub api_port: Option<u16>,
}

const SUMMARY_COLUMNS: &str = concat!(
    "name, state, health, replication_mode, rw_port, ro_port, ",
    rfc3339!("created_at"),
    ", ",
    rfc3339!("updated_at"),
    ", replicas, actor_id"
);

fn port(value: Option<i32>, what: &'static str) -> Result<Option<u16>, CmsError> {
    value
        .map(|p| {
            u16::try_from(p).map_err(|_| CmsError::Invalid {
                what,
                message: format!("port {p} is out of range"),
            })
        })
        .transpose()
}

fn instance_record(
    row: &tokio_postgres::Row,
    what: &'static str,
) -> Result<InstanceRecord, CmsError> {
    let replicas: i32 = get(row, 8, what)?;
    Ok(InstanceRecord {
        summary: InstanceSummary {
            name: get(row, 0, what)?,
            state: get(row, 1, what)?,
            health: get(row, 2, what)?,
            replication_mode: get(row, 3, what)?,
            rw_port: port(get(row, 4, what)?, what)?,
            ro_port: port(get(row, 5, what)?, what)?,
            created_at: get(row, 6, what)?,
            updated_at: get(row, 7, what)?,
        },
        replicas: u32::try_from(replicas).unwrap_or(0),
        actor_id: get(row, 9, what)?,
    })
}

impl Cms {
    /// Records a new instance (state `creating`) and its create operation (`pending`) in one
    /// transaction. A deleted instance of the same name is forgotten first (its events stay).
    pub async fn create_instance(
        &self,
        spec: &ValidatedCreateInstance,
        operation_id: &str,
        request: &serde_json::Value,
    ) -> Result<CreateOutcome, CmsError> {
        let what = "record a new instance";
        let mut client = self.dedicated(what).await?;
        let fail = |source| CmsError::Query { what, source };
        let tx = client.transaction().await.map_err(fail)?;
        let existing = tx
            .query_opt(
                "SELECT state FROM toygres.instances WHERE name = $1 FOR UPDATE",
                &[&spec.name],
            )
            .await
            .map_err(fail)?;
        if let Some(row) = existing {
            let state: String = get(&row, 0, what)?;
            if state.parse() != Ok(InstanceState::Deleted) {
                return Ok(CreateOutcome::Exists { state });
            }
            tx.execute(
                "DELETE FROM toygres.instances WHERE name = $1",
                &[&spec.name],
            )
            .await
            .map_err(fail)?;
        }
        let replicas = i32::try_from(spec.replicas).unwrap_or(0);
        let spec_json = serde_json::to_value(spec).unwrap_or_default();
        let ha_json = serde_json::to_value(&spec.ha).unwrap_or_default();
        let backup_json = spec
            .backup
            .as_ref()
            .map(|b| serde_json::to_value(b).unwrap_or_default());
        tx.execute(
            "INSERT INTO toygres.instances (name, state, replication_mode, replicas, spec, ha,
                                            backup)
             VALUES ($1, 'creating', $2, $3, $4, $5, $6)",
            &[
                &spec.name,
                &spec.replication.as_str(),
                &replicas,
                &spec_json,
                &ha_json,
                &backup_json,
            ],
        )
        .await
        .map_err(fail)?;
        tx.execute(
            "INSERT INTO toygres.operations (id, kind, instance, status, request)
             VALUES ($1, 'create', $2, 'pending', $3)",
            &[&operation_id, &spec.name, request],
        )
        .await
        .map_err(fail)?;
        tx.commit().await.map_err(fail)?;
        Ok(CreateOutcome::Created)
    }

    /// One instance, deleted ones included.
    pub async fn get_instance(&self, name: &str) -> Result<Option<InstanceRecord>, CmsError> {
        let what = "read an instance";
        let sql = format!("SELECT {SUMMARY_COLUMNS} FROM toygres.instances WHERE name = $1");
        let rows = self.query(what, &sql, &[&name]).await?;
        rows.first()
            .map(|row| instance_record(row, what))
            .transpose()
    }

    /// The application database and owner the instance was created with (its spec's `app`);
    /// `None` for an instance created before instances had one.
    pub async fn instance_app_access(
        &self,
        name: &str,
    ) -> Result<Option<toygres_common::app_access::AppAccess>, CmsError> {
        let what = "read an instance's application access";
        let rows = self
            .query(
                what,
                "SELECT spec->'app' FROM toygres.instances WHERE name = $1",
                &[&name],
            )
            .await?;
        let Some(row) = rows.first() else {
            return Ok(None);
        };
        let value: Option<serde_json::Value> = get(row, 0, what)?;
        Ok(value.and_then(|v| serde_json::from_value(v).ok()))
    }

    /// Every instance that is not deleted, by name.
    pub async fn live_instances(&self) -> Result<Vec<InstanceRecord>, CmsError> {
        let what = "list live instances";
        let sql = format!(
            "SELECT {SUMMARY_COLUMNS} FROM toygres.instances WHERE state <> 'deleted' ORDER BY name"
        );
        let rows = self.query(what, &sql, &[]).await?;
        rows.iter().map(|row| instance_record(row, what)).collect()
    }

    /// Sets an instance's state.
    pub async fn set_instance_state(
        &self,
        name: &str,
        state: InstanceState,
    ) -> Result<(), CmsError> {
        let state = state.as_str();
        self.execute(
            "set an instance's state",
            "UPDATE toygres.instances SET state = $2 WHERE name = $1 AND state IS DISTINCT FROM $2",
            &[&name, &state],
        )
        .await?;
        Ok(())
    }

    /// Records an instance's endpoint ports.
    pub async fn set_instance_endpoints(
        &self,
        name: &str,
        rw_port: u16,
        ro_port: u16,
    ) -> Result<(), CmsError> {
        self.execute(
            "record an instance's endpoints",
            "UPDATE toygres.instances SET rw_port = $2, ro_port = $3 WHERE name = $1",
            &[&name, &i32::from(rw_port), &i32::from(ro_port)],
        )
        .await?;
        Ok(())
    }

    /// Records the orchestration id of the instance's actor.
    pub async fn set_instance_actor(&self, name: &str, actor_id: &str) -> Result<(), CmsError> {
        self.execute(
            "record an instance's actor",
            "UPDATE toygres.instances SET actor_id = $2 WHERE name = $1",
            &[&name, &actor_id],
        )
        .await?;
        Ok(())
    }

    /// The instance's HA settings (defaults for whatever was never set); `None` when the
    /// instance does not exist.
    pub async fn get_ha_settings(&self, name: &str) -> Result<Option<HaSettings>, CmsError> {
        let what = "read an instance's HA settings";
        let rows = self
            .query(
                what,
                "SELECT ha FROM toygres.instances WHERE name = $1",
                &[&name],
            )
            .await?;
        let Some(row) = rows.first() else {
            return Ok(None);
        };
        let value: serde_json::Value = get(row, 0, what)?;
        serde_json::from_value(value)
            .map(Some)
            .map_err(|e| CmsError::Invalid {
                what,
                message: e.to_string(),
            })
    }

    /// The instance's backup configuration: `None` when the instance does not exist,
    /// `Some(None)` when its backups are off.
    pub async fn get_backup_config(
        &self,
        name: &str,
    ) -> Result<Option<Option<BackupConfig>>, CmsError> {
        let what = "read an instance's backup configuration";
        let rows = self
            .query(
                what,
                "SELECT backup FROM toygres.instances WHERE name = $1",
                &[&name],
            )
            .await?;
        let Some(row) = rows.first() else {
            return Ok(None);
        };
        let value: Option<serde_json::Value> = get(row, 0, what)?;
        value
            .map(serde_json::from_value)
            .transpose()
            .map(Some)
            .map_err(|e| CmsError::Invalid {
                what,
                message: e.to_string(),
            })
    }

    /// Stores the instance's HA settings.
    pub async fn set_ha_settings(&self, name: &str, ha: &HaSettings) -> Result<(), CmsError> {
        let value = serde_json::to_value(ha).map_err(|e| CmsError::Invalid {
            what: "store HA settings",
            message: e.to_string(),
        })?;
        self.execute(
            "store an instance's HA settings",
            "UPDATE toygres.instances SET ha = $2 WHERE name = $1",
            &[&name, &value],
        )
        .await?;
        Ok(())
    }

    /// Records a change of primary in one transaction: `new_primary` becomes the primary, the
    /// old one (if any) a standby in `old_state` (`rejoining`, `fenced`), the others standbys.
    pub async fn record_new_primary(
        &self,
        instance: &str,
        new_primary: &str,
        old_primary: Option<&str>,
        old_state: MemberState,
    ) -> Result<(), CmsError> {
        let old_state = old_state.as_str();
        let what = "record a new primary";
        let mut client = self.dedicated(what).await?;
        let fail = |source| CmsError::Query { what, source };
        let tx = client.transaction().await.map_err(fail)?;
        // Two steps: the one-primary index is checked row by row.
        tx.execute(
            "UPDATE toygres.members SET role = 'standby'
              WHERE instance = $1 AND name <> $2 AND role = 'primary'",
            &[&instance, &new_primary],
        )
        .await
        .map_err(fail)?;
        tx.execute(
            "UPDATE toygres.members
                SET role = CASE WHEN name = $2 THEN 'primary' ELSE 'standby' END,
                    state = CASE WHEN name = $3 THEN $4
                                 WHEN name = $2 THEN 'running' ELSE state END
              WHERE instance = $1 AND state NOT IN ('deleting', 'deleted')",
            &[&instance, &new_primary, &old_primary, &old_state],
        )
        .await
        .map_err(fail)?;
        tx.commit().await.map_err(fail)?;
        Ok(())
    }

    /// Records the standbys asked for.
    pub async fn set_instance_replicas(&self, name: &str, replicas: u32) -> Result<(), CmsError> {
        let replicas = i32::try_from(replicas).unwrap_or(0);
        self.execute(
            "record an instance's replicas",
            "UPDATE toygres.instances SET replicas = $2 WHERE name = $1",
            &[&name, &replicas],
        )
        .await?;
        Ok(())
    }

    /// Creates or updates a member's row.
    pub async fn upsert_member(&self, member: &MemberRow<'_>) -> Result<(), CmsError> {
        self.execute(
            "record a member",
            "INSERT INTO toygres.members (instance, name, role, state, host, pg_port, api_port)
             VALUES ($1, $2, $3, $4, $5, $6, $7)
             ON CONFLICT (instance, name) DO UPDATE
                SET role = EXCLUDED.role, state = EXCLUDED.state, host = EXCLUDED.host,
                    pg_port = EXCLUDED.pg_port, api_port = EXCLUDED.api_port",
            &[
                &member.instance,
                &member.name,
                &member.role.as_str(),
                &member.state.as_str(),
                &member.host,
                &i32::from(member.pg_port),
                &member.api_port.map(i32::from),
            ],
        )
        .await?;
        Ok(())
    }

    /// Sets the state of every member named (a missing row is skipped).
    pub async fn set_member_state(
        &self,
        instance: &str,
        member: &str,
        state: MemberState,
    ) -> Result<(), CmsError> {
        let state = state.as_str();
        self.execute(
            "set a member's state",
            "UPDATE toygres.members SET state = $3 WHERE instance = $1 AND name = $2",
            &[&instance, &member, &state],
        )
        .await?;
        Ok(())
    }

    /// Records a standby's options: may it be synchronous, and its own lag bound.
    pub async fn set_member_options(
        &self,
        instance: &str,
        member: &str,
        sync_candidate: bool,
        max_lag_bytes: Option<u64>,
    ) -> Result<(), CmsError> {
        let max_lag = max_lag_bytes.map(|b| i64::try_from(b).unwrap_or(i64::MAX));
        self.execute(
            "record a member's options",
            "UPDATE toygres.members SET sync_candidate = $3, max_lag_bytes = $4
              WHERE instance = $1 AND name = $2",
            &[&instance, &member, &sync_candidate, &max_lag],
        )
        .await?;
        Ok(())
    }

    /// Forgets a member.
    pub async fn delete_member(&self, instance: &str, member: &str) -> Result<(), CmsError> {
        self.execute(
            "forget a member",
            "DELETE FROM toygres.members WHERE instance = $1 AND name = $2",
            &[&instance, &member],
        )
        .await?;
        Ok(())
    }

    /// An instance's members, by name.
    pub async fn list_members(&self, instance: &str) -> Result<Vec<MemberView>, CmsError> {
        let what = "list an instance's members";
        let sql = concat!(
            "SELECT name, role, state, health, host, pg_port, timeline, lag_bytes, sync_state,
                    last_error, sync_candidate, max_lag_bytes, ",
            rfc3339!("last_check_at"),
            ", extract(epoch FROM now() - last_check_at)::float8
               FROM toygres.members WHERE instance = $1 ORDER BY name"
        );
        let rows = self.query(what, sql, &[&instance]).await?;
        rows.iter()
            .map(|row| {
                let host: Option<String> = get(row, 4, what)?;
                let pg_port: Option<i32> = get(row, 5, what)?;
                Ok(MemberView {
                    name: get(row, 0, what)?,
                    role: get(row, 1, what)?,
                    state: get(row, 2, what)?,
                    health: get(row, 3, what)?,
                    address: host.zip(pg_port).map(|(h, p)| format!("{h}:{p}")),
                    timeline: get(row, 6, what)?,
                    lag_bytes: get(row, 7, what)?,
                    sync_state: get(row, 8, what)?,
                    last_error: get(row, 9, what)?,
                    sync_candidate: get(row, 10, what)?,
                    max_lag_bytes: get(row, 11, what)?,
                    last_check_at: get(row, 12, what)?,
                    last_check_age_seconds: get(row, 13, what)?,
                })
            })
            .collect()
    }
}
