//! The instance's Secret `<instance>-credentials`: the superuser password, the replication
//! password and the sidecar token, under the keys [`SecretName::key`] names. Every member mounts
//! it as files (see [`super::member`]).
//!
//! The builder never invents a value. The Kubernetes platform's `ensure_instance_secrets`
//! generates them once (random, as the local platform does) when the Secret does not exist yet,
//! and otherwise reads them back from the Secret, so re-applying never changes a password.
//! Neither the values nor the built Secret are printed by `Debug`.

use std::collections::BTreeMap;
use std::fmt;

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use k8s_openapi::ByteString;

use super::labels::{instance_labels, Component};
use super::{credentials_secret_name, InstanceSettings};
use crate::platform::{SecretName, SecretValue};

/// The values of an instance's credentials, to be written to its Secret. `Debug` is redacted
/// (each [`SecretValue`] is).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstanceCredentials {
    pub superuser_password: SecretValue,
    pub replication_password: SecretValue,
    pub sidecar_token: SecretValue,
    pub app_password: SecretValue,
}

impl InstanceCredentials {
    /// The value of `name`.
    pub fn value(&self, name: SecretName) -> &SecretValue {
        match name {
            SecretName::SuperuserPassword => &self.superuser_password,
            SecretName::ReplicationPassword => &self.replication_password,
            SecretName::SidecarToken => &self.sidecar_token,
            SecretName::AppPassword => &self.app_password,
        }
    }
}

/// A built credentials Secret. Its `Debug` shows the name and keys only; [`Self::into_secret`]
/// hands the object to the client that applies it.
#[derive(Clone, PartialEq)]
pub struct InstanceSecret(Secret);

impl InstanceSecret {
    /// The Secret itself, values included.
    pub fn into_secret(self) -> Secret {
        self.0
    }

    /// The Secret's metadata.
    pub fn metadata(&self) -> &ObjectMeta {
        &self.0.metadata
    }

    /// The keys the Secret holds.
    pub fn keys(&self) -> Vec<&str> {
        self.0
            .data
            .iter()
            .flat_map(|data| data.keys().map(String::as_str))
            .collect()
    }
}

impl fmt::Debug for InstanceSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("InstanceSecret")
            .field("name", &self.0.metadata.name)
            .field("namespace", &self.0.metadata.namespace)
            .field("keys", &self.keys())
            .finish_non_exhaustive()
    }
}

/// The instance's credentials Secret (type `Opaque`), owned by `owner` (the instance's root).
pub fn instance_secret(
    settings: &InstanceSettings,
    credentials: &InstanceCredentials,
    owner: &OwnerReference,
) -> InstanceSecret {
    let data: BTreeMap<String, ByteString> = SecretName::ALL
        .iter()
        .map(|&name| {
            (
                name.key().to_string(),
                ByteString(credentials.value(name).expose().as_bytes().to_vec()),
            )
        })
        .collect();
    opaque_secret(
        settings,
        credentials_secret_name(&settings.instance),
        data,
        owner,
    )
}

/// An `Opaque` Secret of the instance named `name`, owned by `owner`, holding `data`.
pub(crate) fn opaque_secret(
    settings: &InstanceSettings,
    name: String,
    data: BTreeMap<String, ByteString>,
    owner: &OwnerReference,
) -> InstanceSecret {
    InstanceSecret(Secret {
        metadata: ObjectMeta {
            name: Some(name),
            namespace: Some(settings.namespace.clone()),
            labels: Some(instance_labels(
                &settings.instance,
                Component::Credentials,
                &settings.extra_labels,
            )),
            owner_references: Some(vec![owner.clone()]),
            ..ObjectMeta::default()
        },
        type_: Some("Opaque".to_string()),
        data: Some(data),
        ..Secret::default()
    })
}

#[cfg(test)]
pub(crate) mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::platform::kubernetes::fixtures;

    /// Credentials with recognisable values.
    pub(crate) fn credentials() -> InstanceCredentials {
        InstanceCredentials {
            superuser_password: SecretValue::new("su-hunter2".into()),
            replication_password: SecretValue::new("repl-hunter2".into()),
            sidecar_token: SecretValue::new("token-hunter2-0123456789".into()),
            app_password: SecretValue::new("app-hunter2".into()),
        }
    }

    #[test]
    fn the_secret_holds_each_credential_under_its_key() {
        let secret = instance_secret(&fixtures::orders(), &credentials(), &fixtures::owner());
        assert_eq!(
            secret.metadata().name.as_deref(),
            Some("orders-credentials")
        );
        assert_eq!(
            secret.metadata().owner_references.as_ref().unwrap()[0].name,
            "orders-toygres"
        );
        assert_eq!(
            secret.metadata().labels.as_ref().unwrap()["app.kubernetes.io/component"],
            "credentials"
        );
        let secret = secret.into_secret();
        assert_eq!(secret.type_.as_deref(), Some("Opaque"));
        let data = secret.data.unwrap();
        assert_eq!(data["superuser-password"].0, b"su-hunter2");
        assert_eq!(data["replication-password"].0, b"repl-hunter2");
        assert_eq!(data["sidecar-token"].0, b"token-hunter2-0123456789");
        assert_eq!(data["app-password"].0, b"app-hunter2");
        assert_eq!(data.len(), 4);
    }

    #[test]
    fn debug_never_prints_a_credential() {
        let secret = instance_secret(&fixtures::orders(), &credentials(), &fixtures::owner());
        for printed in [format!("{secret:?}"), format!("{:?}", credentials())] {
            assert!(!printed.contains("hunter2"), "{printed}");
        }
        let printed = format!("{secret:?}");
        assert!(printed.contains("orders-credentials") && printed.contains("sidecar-token"));
    }
}
