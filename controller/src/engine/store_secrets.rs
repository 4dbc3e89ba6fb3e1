//! Store secrets: registered once (`PUT /v1/secrets/{name}`), named by instances whose backups
//! need credentials (`backup.credentials_secret`), kept by the platform. The values pass
//! through here on their way to the platform and are never logged, recorded in the CMS or put
//! in an orchestration's history; reads show setting names only.

use std::collections::BTreeMap;

use toygres_common::store_secret_api::{StoreSecretRequest, StoreSecretView};

use super::{Engine, EngineError};
use crate::platform::{PlatformError, SecretValue};

fn platform_error(e: PlatformError) -> EngineError {
    match e {
        PlatformError::Invalid(message) => EngineError::Invalid(message),
        PlatformError::NotFound { .. } => EngineError::NotFound(e.to_string()),
        other => EngineError::Failed(anyhow::Error::new(other)),
    }
}

impl Engine {
    /// Registers or replaces the store secret `name`.
    pub async fn put_store_secret(
        &self,
        name: &str,
        request: StoreSecretRequest,
    ) -> Result<StoreSecretView, EngineError> {
        request
            .validate(name)
            .map_err(|e| EngineError::Invalid(e.to_string()))?;
        let values: BTreeMap<String, SecretValue> = request
            .values
            .into_iter()
            .map(|(k, v)| (k, SecretValue::new(v)))
            .collect();
        self.platform
            .put_store_secret(name, &values)
            .await
            .map_err(platform_error)?;
        tracing::info!(secret = name, keys = ?values.keys().collect::<Vec<_>>(), "stored the store secret");
        Ok(StoreSecretView {
            name: name.to_string(),
            keys: values.into_keys().collect(),
        })
    }

    /// The setting names of the store secret `name`.
    pub async fn store_secret(&self, name: &str) -> Result<StoreSecretView, EngineError> {
        let keys = self
            .platform
            .store_secret_keys(name)
            .await
            .map_err(platform_error)?
            .ok_or_else(|| EngineError::NotFound(format!("store secret {name} does not exist")))?;
        Ok(StoreSecretView {
            name: name.to_string(),
            keys,
        })
    }

    /// Removes the store secret `name`, unless an instance's backups still name it.
    pub async fn delete_store_secret(&self, name: &str) -> Result<StoreSecretView, EngineError> {
        let view = self.store_secret(name).await?;
        for instance in self.cms.live_instances().await? {
            let instance = instance.summary.name;
            let config = self.cms.get_backup_config(&instance).await?.flatten();
            let uses = config.is_some_and(|c| {
                c.credentials_secret.as_deref() == Some(name)
                    || c.encryption_secret.as_deref() == Some(name)
                    || c.previous_encryption_secrets.iter().any(|p| p == name)
            });
            if uses {
                return Err(EngineError::Conflict(format!(
                    "instance {instance}'s backups use the store secret {name}: delete the \
                     instance first"
                )));
            }
        }
        self.platform
            .delete_store_secret(name)
            .await
            .map_err(platform_error)?;
        tracing::info!(secret = name, "deleted the store secret");
        Ok(view)
    }

    /// Checks that the store secret a backup configuration names exists (at create).
    pub(super) async fn check_store_secret(&self, name: &str) -> Result<(), EngineError> {
        match self.store_secret(name).await {
            Ok(_) => Ok(()),
            Err(EngineError::NotFound(_)) => Err(EngineError::Invalid(format!(
                "backup.credentials_secret: there is no store secret {name}: register it first \
                 (toygres secret set {name} --from-env-file FILE)"
            ))),
            Err(e) => Err(e),
        }
    }

    /// Checks that the store secret `name` exists and holds an encryption key (at create and
    /// restore).
    pub(super) async fn check_encryption_secret(&self, name: &str) -> Result<(), EngineError> {
        let key = toygres_common::store_secret_api::ENCRYPTION_KEY_SETTING;
        match self.store_secret(name).await {
            Ok(view) if view.keys.iter().any(|k| k == key) => Ok(()),
            Ok(_) => Err(EngineError::Invalid(format!(
                "backup.encryption_secret: the store secret {name} holds no {key}"
            ))),
            Err(EngineError::NotFound(_)) => Err(EngineError::Invalid(format!(
                "backup.encryption_secret: there is no store secret {name}: register it first \
                 (toygres secret set {name} --from-env-file FILE, with {key}=<64 hex digits>)"
            ))),
            Err(e) => Err(e),
        }
    }
}
