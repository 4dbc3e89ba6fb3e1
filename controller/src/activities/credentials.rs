//! *RotatePassword*: a new password for the application database's owner, without a restart.
//! The platform generates the value and keeps it where creation did (local: the secret file and
//! the password file the printed URIs name; Kubernetes: the instance's Secret); the primary gets
//! it as a SCRAM verifier with `ALTER ROLE`, so the cleartext never reaches the server's
//! statement log, and never the activity's input, output or error.
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
use crate::platform::{connect_member_superuser, SecretRefs};

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
/// and the role end with the same new value.
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
    if input.role != CredentialRole::Owner {
        return Err(format!(
            "only the owner's password can be rotated, not the {}'s",
            input.role
        ));
    }
    let app = deps
        .cms
        .instance_app_access(instance)
        .await
        .map_err(describe)?
        .ok_or_else(|| format!("instance {instance} has no application owner"))?;
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
    let secret = SecretRefs::for_instance(instance).app_password();
    let result = async {
        deps.platform
            .rotate_secret(&secret)
            .await
            .map_err(describe)?;
        let password = deps.platform.read_secret(&secret).await.map_err(describe)?;
        set_role_password(&client, &app.owner, password.expose())
            .await
            .map_err(|e| format!("{e} (the stored password is already the new one: rotate again)"))
    }
    .await;
    drop(client);
    let _ = connection.await;
    result?;
    Ok(RotatedPassword {
        role_name: app.owner,
        primary,
    })
}
