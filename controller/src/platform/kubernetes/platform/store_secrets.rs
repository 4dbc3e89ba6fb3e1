//! Store secrets on Kubernetes: each one a Secret of the instances' namespace, named as
//! registered, one key per setting (`AWS_SECRET_ACCESS_KEY`, …). A Secret a platform team made
//! with its own tools (kubectl, External Secrets, Vault) serves as well as one registered through
//! the controller: a member whose instance names it mounts it as files, read-only, at
//! [`STORE_CREDENTIALS_DIR`](crate::platform::kubernetes::member::STORE_CREDENTIALS_DIR).

use std::collections::BTreeMap;

use anyhow::Context as _;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::ByteString;
use kube::api::DeleteParams;

use super::KubernetesPlatform;
use crate::platform::kubernetes::labels::{APP_COMPONENT_KEY, APP_MANAGED_BY_KEY, MANAGED_BY};
use crate::platform::{PlatformError, SecretValue};

/// `app.kubernetes.io/component` of a store secret the controller wrote.
pub const STORE_SECRET_COMPONENT: &str = "store-secret";

/// The Secret holding `values` under `name`.
pub fn store_secret(name: &str, values: &BTreeMap<String, SecretValue>) -> Secret {
    Secret {
        metadata: ObjectMeta {
            name: Some(name.to_string()),
            labels: Some(BTreeMap::from([
                (
                    APP_COMPONENT_KEY.to_string(),
                    STORE_SECRET_COMPONENT.to_string(),
                ),
                (APP_MANAGED_BY_KEY.to_string(), MANAGED_BY.to_string()),
            ])),
            ..ObjectMeta::default()
        },
        type_: Some("Opaque".to_string()),
        data: Some(
            values
                .iter()
                .map(|(key, value)| (key.clone(), ByteString(value.expose().as_bytes().to_vec())))
                .collect(),
        ),
        ..Secret::default()
    }
}

impl KubernetesPlatform {
    /// Writes (or replaces, keys it no longer has included) the Secret `name`.
    pub(super) async fn put_store_secret_object(
        &self,
        name: &str,
        values: &BTreeMap<String, SecretValue>,
    ) -> Result<(), PlatformError> {
        // Applied whole: the keys the request leaves out go, since this manager owns them all.
        self.apply(&store_secret(name, values)).await?;
        tracing::info!(secret = name, keys = values.len(), "wrote the store secret");
        Ok(())
    }

    /// The keys of the Secret `name`, sorted; `None` when there is none.
    pub(super) async fn store_secret_object_keys(
        &self,
        name: &str,
    ) -> Result<Option<Vec<String>>, PlatformError> {
        let secret = self
            .api::<Secret>()
            .get_opt(name)
            .await
            .with_context(|| format!("read Secret {}/{name}", self.namespace))?;
        Ok(secret.map(|s| {
            let mut keys: Vec<String> = s.data.unwrap_or_default().into_keys().collect();
            keys.extend(s.string_data.unwrap_or_default().into_keys());
            keys.sort();
            keys.dedup();
            keys
        }))
    }

    /// Deletes the Secret `name`; succeeds when it is gone.
    pub(super) async fn delete_store_secret_object(&self, name: &str) -> Result<(), PlatformError> {
        self.delete_if_present::<Secret>(name, &DeleteParams::default())
            .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_store_secret_holds_each_setting_as_a_key_and_is_labelled_as_ours() {
        let values = BTreeMap::from([
            (
                "AWS_ACCESS_KEY_ID".to_string(),
                SecretValue::new("id".into()),
            ),
            (
                "AWS_SECRET_ACCESS_KEY".to_string(),
                SecretValue::new("key".into()),
            ),
        ]);
        let secret = store_secret("s3-creds", &values);
        assert_eq!(secret.metadata.name.as_deref(), Some("s3-creds"));
        let data = secret.data.unwrap();
        assert_eq!(data["AWS_SECRET_ACCESS_KEY"].0, b"key");
        assert_eq!(data.len(), 2);
        let labels = secret.metadata.labels.unwrap();
        assert_eq!(labels[APP_COMPONENT_KEY], STORE_SECRET_COMPONENT);
        assert_eq!(labels[APP_MANAGED_BY_KEY], MANAGED_BY);
    }
}
