//! Reading and changing Postgres settings. Changes go through `ALTER SYSTEM` (so they persist
//! and reach standbys' copies on the next clone or rewind), are applied with a reload, and the
//! answer says which of them wait for a restart. Settings the sidecar owns, unknown names and
//! invalid values are refused, and a request that fails part-way is rolled back.

use std::collections::BTreeMap;

use tokio_postgres::Client;
use toygres_common::sidecar_api::{
    ParameterInfo, Parameters, SetParametersRequest, SetParametersResponse,
};

use super::files::is_owned;
use super::member::{Member, OpError};
use super::sql;

impl Member {
    /// Every setting, as `pg_settings` describes it.
    pub async fn parameters(&self) -> Result<Parameters, OpError> {
        let client = self.query_client().await?;
        let rows = client
            .query(
                "SELECT name, setting, unit, context, source, pending_restart \
                 FROM pg_settings ORDER BY name",
                &[],
            )
            .await
            .map_err(|e| OpError::Failed(format!("read pg_settings: {e}")))?;
        Ok(Parameters {
            parameters: rows
                .iter()
                .map(|r| {
                    let name: String = r.get(0);
                    ParameterInfo {
                        owned: is_owned(&name),
                        name,
                        setting: r.get(1),
                        unit: r.get(2),
                        context: r.get(3),
                        source: r.get(4),
                        pending_restart: r.get(5),
                    }
                })
                .collect(),
        })
    }

    /// Applies `req`: validates every name first, writes them with `ALTER SYSTEM`, reloads.
    pub async fn set_parameters(
        &self,
        req: &SetParametersRequest,
    ) -> Result<SetParametersResponse, OpError> {
        if req.parameters.is_empty() {
            return Err(OpError::invalid("invalid_request", "no parameters given"));
        }
        let _ops = self.ops.lock().await;
        let client = sql::connect_local(&self.cfg)
            .await
            .map_err(|e| OpError::Unavailable(format!("connect to postgres: {e}")))?;
        let contexts = validate_names(&client, req).await?;
        let previous = auto_conf_values(&client).await?;
        let mut applied = Vec::new();
        for (name, value) in &req.parameters {
            if let Err(e) = alter_system(&client, name, value.as_deref()).await {
                restore(&client, &applied, &previous).await;
                let message = e
                    .as_db_error()
                    .map(|d| d.message().to_string())
                    .unwrap_or_else(|| e.to_string());
                return Err(OpError::invalid("invalid_value", message));
            }
            applied.push(name.clone());
        }
        client
            .execute("SELECT pg_reload_conf()", &[])
            .await
            .map_err(|e| OpError::Failed(format!("reload: {e}")))?;
        let pending_restart = waiting_for_restart(&client, &contexts, req).await?;
        tracing::info!(?applied, ?pending_restart, "parameters changed");
        Ok(SetParametersResponse {
            applied,
            pending_restart,
        })
    }
}

/// Checks every name exists and may be changed; returns each one's context.
async fn validate_names(
    client: &Client,
    req: &SetParametersRequest,
) -> Result<BTreeMap<String, String>, OpError> {
    let mut contexts = BTreeMap::new();
    for (name, value) in &req.parameters {
        if is_owned(name) {
            return Err(OpError::invalid(
                "owned_parameter",
                format!("{name} is managed by the sidecar and cannot be set here"),
            ));
        }
        if let Some(v) = value {
            if v.contains(['\0', '\n', '\r']) {
                return Err(OpError::invalid(
                    "invalid_value",
                    format!("the value of {name} must be a single line"),
                ));
            }
        }
        let row = client
            .query_opt("SELECT context FROM pg_settings WHERE name = $1", &[name])
            .await
            .map_err(|e| OpError::Failed(format!("look up {name}: {e}")))?;
        let Some(row) = row else {
            return Err(OpError::invalid(
                "unknown_parameter",
                format!("unknown parameter {name:?}"),
            ));
        };
        let context: String = row.get(0);
        if context == "internal" {
            return Err(OpError::invalid(
                "read_only_parameter",
                format!("{name} is fixed when the cluster is created and cannot be changed"),
            ));
        }
        contexts.insert(name.clone(), context);
    }
    Ok(contexts)
}

/// The values `postgresql.auto.conf` holds now.
async fn auto_conf_values(client: &Client) -> Result<BTreeMap<String, String>, OpError> {
    let rows = client
        .query(
            "SELECT name, setting FROM pg_file_settings \
             WHERE sourcefile LIKE '%/postgresql.auto.conf' ORDER BY seqno",
            &[],
        )
        .await
        .map_err(|e| OpError::Failed(format!("read pg_file_settings: {e}")))?;
    Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
}

async fn alter_system(
    client: &Client,
    name: &str,
    value: Option<&str>,
) -> Result<(), tokio_postgres::Error> {
    // `name` was found in pg_settings, so it is a plain identifier; the value is a literal.
    let statement = match value {
        Some(v) => format!("ALTER SYSTEM SET \"{name}\" = '{}'", v.replace('\'', "''")),
        None => format!("ALTER SYSTEM RESET \"{name}\""),
    };
    client.batch_execute(&statement).await
}

/// Puts back the values the settings in `applied` had before this request.
async fn restore(client: &Client, applied: &[String], previous: &BTreeMap<String, String>) {
    for name in applied {
        let result = alter_system(client, name, previous.get(name).map(String::as_str)).await;
        if let Err(e) = result {
            tracing::error!("roll back {name}: {e}");
        }
    }
}

/// The settings of the request whose new value the running server cannot take without a restart.
async fn waiting_for_restart(
    client: &Client,
    contexts: &BTreeMap<String, String>,
    req: &SetParametersRequest,
) -> Result<Vec<String>, OpError> {
    // pg_file_settings re-reads the files now: a postmaster-context entry that differs from the
    // running value is reported as "setting could not be applied".
    let rows = client
        .query(
            "SELECT name FROM pg_file_settings \
             WHERE sourcefile LIKE '%/postgresql.auto.conf' AND NOT applied \
             AND error = 'setting could not be applied'",
            &[],
        )
        .await
        .map_err(|e| OpError::Failed(format!("read pg_file_settings: {e}")))?;
    let not_applied: Vec<String> = rows.iter().map(|r| r.get(0)).collect();
    Ok(req
        .parameters
        .iter()
        .filter(|(name, value)| {
            contexts.get(*name).map(String::as_str) == Some("postmaster")
                && (value.is_none() || not_applied.contains(name))
        })
        .map(|(name, _)| name.clone())
        .collect())
}
