//! An instance's credentials as they cross the [`super::Platform`] trait: references that hold
//! no secret, and values whose `Debug` is redacted.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Which credential of an instance a [`SecretRef`] names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SecretName {
    /// The password of the `postgres` superuser.
    SuperuserPassword,
    /// The password of the `replicator` role standbys stream with.
    ReplicationPassword,
    /// The bearer token of the instance's sidecars' API.
    SidecarToken,
    /// The password of the application database's owner role (see
    /// `toygres_common::app_access`).
    AppPassword,
}

impl SecretName {
    /// Every credential an instance has.
    pub const ALL: [SecretName; 4] = [
        SecretName::SuperuserPassword,
        SecretName::ReplicationPassword,
        SecretName::SidecarToken,
        SecretName::AppPassword,
    ];

    /// The name as a key: a file name in local mode, a key of the instance's Secret on
    /// Kubernetes.
    pub fn key(self) -> &'static str {
        match self {
            SecretName::SuperuserPassword => "superuser-password",
            SecretName::ReplicationPassword => "replication-password",
            SecretName::SidecarToken => "sidecar-token",
            SecretName::AppPassword => "app-password",
        }
    }
}

impl fmt::Display for SecretName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.key())
    }
}

/// A reference to one credential of one instance. Safe to log, store in the CMS and pass through
/// orchestration history: it holds no secret, only where the platform keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct SecretRef {
    pub instance: String,
    pub name: SecretName,
}

impl fmt::Display for SecretRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.instance, self.name)
    }
}

/// References to all credentials of an instance, as [`Platform::ensure_instance_secrets`]
/// returns them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecretRefs {
    pub superuser_password: SecretRef,
    pub replication_password: SecretRef,
    pub sidecar_token: SecretRef,
}

impl SecretRefs {
    /// The references of `instance`'s credentials (they need not exist yet).
    pub fn for_instance(instance: &str) -> Self {
        let reference = |name| SecretRef {
            instance: instance.to_string(),
            name,
        };
        Self {
            superuser_password: reference(SecretName::SuperuserPassword),
            replication_password: reference(SecretName::ReplicationPassword),
            sidecar_token: reference(SecretName::SidecarToken),
        }
    }

    /// The application owner's password (not a field: references recorded in older histories
    /// have no such field, and the value derives from the instance anyway).
    pub fn app_password(&self) -> SecretRef {
        SecretRef {
            instance: self.superuser_password.instance.clone(),
            name: SecretName::AppPassword,
        }
    }

    /// The three references every member needs.
    pub fn all(&self) -> [&SecretRef; 3] {
        [
            &self.superuser_password,
            &self.replication_password,
            &self.sidecar_token,
        ]
    }
}

/// A credential's value, read through [`Platform::read_secret`]. Its `Debug` is redacted and it
/// has no `Display`, so it cannot end up in a log line by accident.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretValue(String);

impl SecretValue {
    /// Wraps a value read from the platform's store.
    pub fn new(value: String) -> Self {
        Self(value)
    }

    /// A new random credential: 24 bytes from the OS, in hex.
    pub fn random() -> Self {
        use rand::RngCore as _;
        let mut bytes = [0u8; 24];
        rand::rngs::OsRng.fill_bytes(&mut bytes);
        Self(crate::token::hex(&bytes))
    }

    /// The value itself, to hand to a client library.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for SecretValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretValue(<redacted>)")
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn secret_references_serialize_without_values_and_values_are_redacted() {
        let refs = SecretRefs::for_instance("db");
        let json = serde_json::to_string(&refs).unwrap();
        assert_eq!(
            json,
            "{\"superuser_password\":{\"instance\":\"db\",\"name\":\"superuser-password\"},\
             \"replication_password\":{\"instance\":\"db\",\"name\":\"replication-password\"},\
             \"sidecar_token\":{\"instance\":\"db\",\"name\":\"sidecar-token\"}}"
        );
        let value = SecretValue::new("hunter2".into());
        assert_eq!(format!("{value:?}"), "SecretValue(<redacted>)");
        assert_eq!(value.expose(), "hunter2");
    }
}
