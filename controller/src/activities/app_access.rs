//! *EnsureAppAccess*: the application database and its owner role on the primary. The owner
//! may log in and owns its database, and nothing more (no superuser, no role or database
//! creation, no replication); `PUBLIC` loses `CONNECT` on that database, so no other role of
//! the instance connects to it.
//!
//! The password goes to the server only as a SCRAM verifier computed here, so the cleartext
//! never reaches the server's statement log; it comes from the platform's secret store at the
//! point of use and never enters the activity's input or output.

use std::sync::Arc;
use std::time::Duration;

use duroxide::ActivityContext;
use serde::{Deserialize, Serialize};
use toygres_common::app_access::AppAccess;

use super::deps::{describe, ActivityDeps};
use crate::platform::{connect_member_superuser, SecretRefs};

/// How long the whole activity may take on the primary.
const TIMEOUT: Duration = Duration::from_secs(60);

/// The input of *EnsureAppAccess*.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppAccessInput {
    pub instance: String,
    /// The member that is the primary.
    pub primary: String,
    pub app: AppAccess,
}

/// Creates the owner role and the application database when missing and sets the owner's
/// password from the secret store (so a repeat, or a rotated secret, converges).
pub async fn ensure_app_access(
    deps: Arc<ActivityDeps>,
    _ctx: ActivityContext,
    input: AppAccessInput,
) -> Result<(), String> {
    if deps.platform.simulated() {
        // No Postgres to make it in.
        return Ok(());
    }
    match tokio::time::timeout(TIMEOUT, ensure(&deps, &input)).await {
        Ok(result) => result,
        Err(_) => Err(format!(
            "set up the application database {} on {}: no answer within {TIMEOUT:?}",
            input.app.database, input.primary
        )),
    }
}

async fn ensure(deps: &ActivityDeps, input: &AppAccessInput) -> Result<(), String> {
    let refs = SecretRefs::for_instance(&input.instance);
    let app_password = deps
        .platform
        .read_secret(&refs.app_password())
        .await
        .map_err(describe)?;
    let (client, connection) = connect_member_superuser(
        deps.platform.as_ref(),
        &input.instance,
        &input.primary,
        "toygres-controller",
    )
    .await
    .map_err(describe)?;
    let result = apply(&client, &input.app, app_password.expose()).await;
    drop(client);
    let _ = connection.await;
    result
}

/// Sets `role`'s password to `password`, sent as a SCRAM verifier (the server's statement log
/// and `pg_stat_activity` see only the verifier). The error names the role, never the value.
pub(crate) async fn set_role_password(
    client: &tokio_postgres::Client,
    role: &str,
    password: &str,
) -> Result<(), String> {
    let verifier = postgres_protocol::password::scram_sha_256(password.as_bytes());
    client
        .batch_execute(&format!(
            "ALTER ROLE {} PASSWORD {}",
            quote_ident(role),
            quote_literal(&verifier)
        ))
        .await
        .map_err(|e| format!("set the password of the role {role}: {e}"))
}

async fn apply(
    client: &tokio_postgres::Client,
    app: &AppAccess,
    password: &str,
) -> Result<(), String> {
    let owner = quote_ident(&app.owner);
    let database = quote_ident(&app.database);
    let verifier = postgres_protocol::password::scram_sha_256(password.as_bytes());
    let role_exists = client
        .query_opt("SELECT 1 FROM pg_roles WHERE rolname = $1", &[&app.owner])
        .await
        .map_err(|e| format!("look up the role {}: {e}", app.owner))?
        .is_some();
    let verb = if role_exists { "ALTER" } else { "CREATE" };
    client
        .batch_execute(&format!(
            "{verb} ROLE {owner} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION \
             NOBYPASSRLS PASSWORD {}",
            quote_literal(&verifier)
        ))
        .await
        // The statement holds only the verifier, but the error needs none of it.
        .map_err(|e| format!("{} the role {}: {e}", verb.to_lowercase(), app.owner))?;
    let database_exists = client
        .query_opt(
            "SELECT 1 FROM pg_database WHERE datname = $1",
            &[&app.database],
        )
        .await
        .map_err(|e| format!("look up the database {}: {e}", app.database))?
        .is_some();
    if !database_exists {
        client
            .batch_execute(&format!("CREATE DATABASE {database} OWNER {owner}"))
            .await
            .map_err(|e| format!("create the database {}: {e}", app.database))?;
    }
    client
        .batch_execute(&format!(
            "ALTER DATABASE {database} OWNER TO {owner}; \
             REVOKE ALL ON DATABASE {database} FROM PUBLIC"
        ))
        .await
        .map_err(|e| format!("set the owner of {}: {e}", app.database))?;
    Ok(())
}

/// `"name"`, with inner quotes doubled.
fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// `'text'`, with inner quotes doubled (standard_conforming_strings is on).
fn quote_literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers_and_literals_are_quoted() {
        assert_eq!(quote_ident("shop-1"), "\"shop-1\"");
        assert_eq!(quote_ident("a\"b"), "\"a\"\"b\"");
        assert_eq!(quote_literal("it's"), "'it''s'");
    }
}
