//! Rotating an instance's passwords (`POST /v1/instances/{name}/credentials/rotate`): which
//! role's password changes. The new value never crosses the API: the platform generates it and
//! keeps it where the old one was.

use serde::{Deserialize, Serialize};

/// The role whose password a rotation changes.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CredentialRole {
    /// The owner of the application database (`--owner` at create).
    #[default]
    Owner,
    /// The `postgres` superuser the platform itself connects as.
    Superuser,
}

impl CredentialRole {
    /// The name the API and the CLI use.
    pub fn as_str(self) -> &'static str {
        match self {
            CredentialRole::Owner => "owner",
            CredentialRole::Superuser => "superuser",
        }
    }
}

impl std::fmt::Display for CredentialRole {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `POST /v1/instances/{name}/credentials/rotate`: an empty object rotates the owner's password.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RotateCredentialsRequest {
    #[serde(default)]
    pub role: CredentialRole,
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn the_owner_is_the_default_and_unknown_roles_are_refused() {
        let empty: RotateCredentialsRequest = serde_json::from_str("{}").unwrap();
        assert_eq!(empty.role, CredentialRole::Owner);
        let su: RotateCredentialsRequest =
            serde_json::from_str(r#"{"role": "superuser"}"#).unwrap();
        assert_eq!(su.role, CredentialRole::Superuser);
        assert!(serde_json::from_str::<RotateCredentialsRequest>(r#"{"role": "admin"}"#).is_err());
        assert!(serde_json::from_str::<RotateCredentialsRequest>(r#"{"rol": "owner"}"#).is_err());
    }
}
