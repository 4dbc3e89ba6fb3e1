//! Reading and changing Postgres settings. Changes go through `ALTER SYSTEM` (so they persist
//! and reach standbys' copies on the next clone or rewind), are applied with a reload, and the
//! answer says which of them wait for a restart. Only settings on Toygres's allow-list may change
//! (see [`toygres_common::parameters_api`]): libraries, commands, file locations, authentication,
//! what the sidecar owns and values that would stop Postgres from starting are refused before
//! anything is written, every bad setting named in one answer; a request that still fails
//! part-way (a check only Postgres makes) is rolled back.

use std::collections::BTreeMap;

use tokio_postgres::Client;
use toygres_common::sidecar_api::{
    ParameterInfo, Parameters, SetParametersRequest, SetParametersResponse,
};

use toygres_common::parameters_api::{
    check_request, refusal, CatalogEntry, ParameterCatalog, ParameterCategory,
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

    /// The catalog: every setting with its category, type, range and whether users may set it.
    pub async fn catalog(&self) -> Result<ParameterCatalog, OpError> {
        let client = self.query_client().await?;
        read_catalog(&client).await
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
        let contexts = validate(&client, req).await?;
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

/// Reads the catalog from `pg_settings`.
async fn read_catalog(client: &Client) -> Result<ParameterCatalog, OpError> {
    let rows = client
        .query(
            "SELECT name, setting, unit, context, vartype, min_val, max_val, enumvals, \
             boot_val, short_desc, pending_restart, current_setting('server_version') \
             FROM pg_settings ORDER BY name",
            &[],
        )
        .await
        .map_err(|e| OpError::Failed(format!("read pg_settings: {e}")))?;
    let mut postgres_version = String::new();
    let parameters = rows
        .iter()
        .map(|r| {
            let name: String = r.get(0);
            let context: String = r.get(3);
            postgres_version = r.get(11);
            let refused = refusal(&name, is_owned(&name), &context);
            let category = match refused {
                Some(ref r) if r.code != "not_modifiable" => ParameterCategory::Immutable,
                _ => ParameterCategory::from_context(&context),
            };
            CatalogEntry {
                category,
                vartype: r.get(4),
                unit: r.get(2),
                min: r.get(5),
                max: r.get(6),
                enum_values: r.get::<_, Option<Vec<String>>>(7).unwrap_or_default(),
                default: r.get(8),
                current: r.get(1),
                pending_restart: r.get(10),
                description: r.get(9),
                modifiable: refused.is_none(),
                reason: refused.map(|r| r.reason),
                name,
                context,
            }
        })
        .collect();
    Ok(ParameterCatalog {
        postgres_version,
        parameters,
    })
}

/// Checks the whole request against the catalog; returns each setting's context, or one error
/// naming every refused setting.
async fn validate(
    client: &Client,
    req: &SetParametersRequest,
) -> Result<BTreeMap<String, String>, OpError> {
    let catalog = read_catalog(client).await?;
    let problems = check_request(&catalog, &req.parameters);
    if let Some(first) = problems.first() {
        let code = if problems.iter().all(|p| p.code == first.code) {
            first.code.clone()
        } else {
            "invalid_parameters".to_string()
        };
        let message = problems
            .iter()
            .map(|p| p.message.as_str())
            .collect::<Vec<_>>()
            .join("; ");
        return Err(OpError::invalid(leak_code(&code), message));
    }
    Ok(req
        .parameters
        .keys()
        .filter_map(|name| Some((name.clone(), catalog.get(name)?.context.clone())))
        .collect())
}

/// The `'static` error code of a problem's code.
fn leak_code(code: &str) -> &'static str {
    [
        "unknown_parameter",
        "owned_parameter",
        "read_only_parameter",
        "not_modifiable",
        "invalid_value",
    ]
    .into_iter()
    .find(|c| *c == code)
    .unwrap_or("invalid_parameters")
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
