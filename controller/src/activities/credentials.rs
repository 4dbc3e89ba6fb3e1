//! *RotatePassword*: a new password for the application database's owner or the superuser,
//! without a restart. The primary gets it first, as a SCRAM verifier with `ALTER ROLE`, so the
//! cleartext never reaches the server's statement log, and never the activity's input, output
//! or error; then the platform keeps it where creation did (local: the secret file and the
//! password file the printed URIs name; Kubernetes: the instance's Secret). The sidecars read
//! the superuser's file at each use, so they follow without a restart.
//!
//! Sessions already open stay open (Postgres checks a password only at login); new logins need
//! the new password.

use std::sync::Arc;
use std::time::Duration;

use duroxide::ActivityContext;
use serde::{Deserialize, Serialize};
use toygres_common::credentials_api::CredentialRole;
use toygres_common::domain::Role;

use super::app_access::set_role_password;
use super::deps::{describe, ActivityDeps};
use crate::platform::{connect_member_superuser, SecretRef, SecretRefs, SecretValue};

/// How long the whole activity may take.
const TIMEOUT: Duration = Duration::from_secs(60);

/// The input of *RotatePassword*.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RotatePasswordInput {
    pub instance: String,
    pub role: CredentialRole,
}

/// What a rotation changed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RotatedPassword {
    /// The Postgres role whose password changed.
    pub role_name: String,
    /// The member it was set on (the primary; standbys get it by replication).
    pub primary: String,
}

/// Rotates the password. Repeating it rotates again, which converges all the same: the store
/// and the role end with the same new value. One window remains: a controller that dies (or an
/// attempt that times out) between the `ALTER ROLE` and the store leaves the role ahead of the
/// store; for the owner the next rotation converges, for the superuser the primary's sidecar
/// sets the stored password again over its local socket when it next starts as the primary.
pub async fn rotate_password(
    deps: Arc<ActivityDeps>,
    _ctx: ActivityContext,
    input: RotatePasswordInput,
) -> Result<RotatedPassword, String> {
    match tokio::time::timeout(TIMEOUT, rotate(&deps, &input)).await {
        Ok(result) => result,
        Err(_) => Err(format!(
            "rotate the {} password of {}: no answer within {TIMEOUT:?}",
            input.role, input.instance
        )),
    }
}

async fn rotate(
    deps: &ActivityDeps,
    input: &RotatePasswordInput,
) -> Result<RotatedPassword, String> {
    let instance = &input.instance;
    let refs = SecretRefs::for_instance(instance);
    let (role_name, secret) = match input.role {
        CredentialRole::Owner => {
            let app = deps
                .cms
                .instance_app_access(instance)
                .await
                .map_err(describe)?
                .ok_or_else(|| format!("instance {instance} has no application owner"))?;
            (app.owner, refs.app_password())
        }
        // The sidecars read its file at each use (peers, pg_rewind, their role check).
        CredentialRole::Superuser => ("postgres".to_string(), refs.superuser_password.clone()),
    };
    let primary = deps
        .cms
        .list_members(instance)
        .await
        .map_err(describe)?
        .into_iter()
        .find(|m| m.parsed_role() == Role::Primary)
        .map(|m| m.name)
        .ok_or_else(|| format!("instance {instance} has no primary"))?;
    // Reach the primary first: when it cannot be reached, the old password stays everywhere.
    let (client, connection) = connect_member_superuser(
        deps.platform.as_ref(),
        instance,
        &primary,
        "toygres-controller",
    )
    .await
    .map_err(describe)?;
    let result = change_then_store(deps, &client, &role_name, &secret).await;
    drop(client);
    let _ = connection.await;
    result?;
    Ok(RotatedPassword { role_name, primary })
}

/// Sets a new password on the role first and stores it only once the role has it, so a role
/// that cannot be changed leaves the stored password as it was; when the store refuses the new
/// value, the role gets the stored one back. Either way the two stay the same.
async fn change_then_store(
    deps: &ActivityDeps,
    client: &tokio_postgres::Client,
    role_name: &str,
    secret: &SecretRef,
) -> Result<(), String> {
    let new = SecretValue::random();
    set_role_password(client, role_name, new.expose())
        .await
        .map_err(|e| format!("{e} (the previous password stays)"))?;
    let Err(stored) = deps.platform.replace_secret(secret, &new).await else {
        return Ok(());
    };
    let stored = describe(stored);
    let previous = deps.platform.read_secret(secret).await.map_err(describe);
    let undone = match previous {
        Ok(previous) => set_role_password(client, role_name, previous.expose()).await,
        Err(e) => Err(e),
    };
    Err(match undone {
        Ok(()) => {
            format!("store the new password of {role_name}: {stored} (the previous one stays)")
        }
        Err(e) => format!(
            "store the new password of {role_name}: {stored}; putting the previous one back \
             failed too: {e}"
        ),
    })
}
