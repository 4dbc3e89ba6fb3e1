//! The [`Platform`] trait as the Kubernetes platform serves it, and the instance's credentials:
//! one Secret, created once with random values and read back ever after.

use anyhow::Context as _;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use k8s_openapi::ByteString;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams, PropagationPolicy};
use toygres_common::names::validate_instance_name;

use super::{classify, KubernetesPlatform, FIELD_MANAGER};
use crate::platform::kubernetes::credentials::{instance_secret, InstanceCredentials};
use crate::platform::kubernetes::tls::ca_secret_name;
use crate::platform::kubernetes::{
    backup_keyring_secret_name, credentials_secret_name, root_config_map_name,
};
use crate::platform::{
    EndpointRoutes, Endpoints, MemberAddress, MemberHandle, MemberInfo, MemberSpec, Platform,
    PlatformError, SecretRef, SecretRefs, SecretValue,
};

/// A new random credential: 24 bytes from the OS, in hex.
fn random_credential() -> SecretValue {
    SecretValue::random()
}

#[async_trait::async_trait]
impl Platform for KubernetesPlatform {
    async fn ensure_instance_secrets(&self, instance: &str) -> Result<SecretRefs, PlatformError> {
        validate_instance_name(instance)?;
        let settings = self.settings(instance, None);
        let owner = self.ensure_root(&settings).await?;
        let name = credentials_secret_name(instance);
        let secrets = self.api::<Secret>();
        let existing = secrets
            .get_opt(&name)
            .await
            .with_context(|| format!("read Secret {}/{name}", self.namespace))?;
        if existing.is_none() {
            let credentials = InstanceCredentials {
                superuser_password: random_credential(),
                replication_password: random_credential(),
                sidecar_token: random_credential(),
                app_password: random_credential(),
            };
            let secret = instance_secret(&settings, &credentials, &owner).into_secret();
            let params = PostParams {
                field_manager: Some(FIELD_MANAGER.to_string()),
                ..PostParams::default()
            };
            // Created, never applied: when another attempt created it first, its values stay.
            match secrets.create(&params, &secret).await {
                Ok(_) => tracing::info!(instance, secret = %name, "created the credentials"),
                Err(kube::Error::Api(status)) if status.is_already_exists() => {}
                Err(e) => {
                    return Err(anyhow::Error::new(e)
                        .context(format!("create Secret {}/{name}", self.namespace))
                        .into())
                }
            }
        }
        self.ensure_ca(&settings, &owner).await?;
        Ok(SecretRefs::for_instance(instance))
    }

    /// Removes the Secret, then the instance's root ConfigMap: the last step of deleting an
    /// instance, after which the garbage collector removes whatever still hangs off the root.
    async fn put_store_secret(
        &self,
        name: &str,
        values: &std::collections::BTreeMap<String, SecretValue>,
    ) -> Result<(), PlatformError> {
        self.put_store_secret_object(name, values).await
    }

    async fn store_secret_keys(&self, name: &str) -> Result<Option<Vec<String>>, PlatformError> {
        self.store_secret_object_keys(name).await
    }

    async fn delete_store_secret(&self, name: &str) -> Result<(), PlatformError> {
        self.delete_store_secret_object(name).await
    }

    /// The ring is the instance's key ring Secret, which its members mount: the kubelet
    /// refreshes it in the pods some seconds later, so its version is returned for the sidecars
    /// to wait for.
    async fn put_backup_keyring(
        &self,
        instance: &str,
        archive: &crate::platform::MemberArchive,
    ) -> Result<Option<String>, PlatformError> {
        validate_instance_name(instance)?;
        let settings = self.settings(instance, Some(archive));
        let owner = self.ensure_root(&settings).await?;
        self.put_keyring(&settings, archive, &owner).await
    }

    async fn delete_instance_secrets(&self, instance: &str) -> Result<(), PlatformError> {
        validate_instance_name(instance)?;
        for secret in [
            credentials_secret_name(instance),
            ca_secret_name(instance),
            backup_keyring_secret_name(instance),
        ] {
            self.delete_if_present::<Secret>(&secret, &DeleteParams::default())
                .await?;
        }
        self.delete_if_present::<ConfigMap>(
            &root_config_map_name(instance),
            &DeleteParams {
                propagation_policy: Some(PropagationPolicy::Background),
                ..DeleteParams::default()
            },
        )
        .await?;
        Ok(())
    }

    async fn read_secret(&self, secret: &SecretRef) -> Result<SecretValue, PlatformError> {
        validate_instance_name(&secret.instance)?;
        let name = credentials_secret_name(&secret.instance);
        let object = self.api::<Secret>().get(&name).await.map_err(|e| {
            classify(
                e,
                "secret",
                &secret.to_string(),
                format!("read Secret {}/{name}", self.namespace),
            )
        })?;
        let bytes = object
            .data
            .as_ref()
            .and_then(|data| data.get(secret.name.key()))
            .ok_or_else(|| PlatformError::not_found("secret", secret.to_string()))?;
        let value = String::from_utf8(bytes.0.clone()).map_err(|_| {
            PlatformError::Invalid(format!("Secret {name} key {} is not UTF-8", secret.name))
        })?;
        Ok(SecretValue::new(
            value.trim_end_matches(['\n', '\r']).to_string(),
        ))
    }

    /// Patches the one key of the instance's Secret. Pods that mount the Secret see the new
    /// file once the kubelet syncs it; nothing of the platform reads the application
    /// password from a pod.
    async fn replace_secret(
        &self,
        secret: &SecretRef,
        value: &SecretValue,
    ) -> Result<(), PlatformError> {
        validate_instance_name(&secret.instance)?;
        let name = credentials_secret_name(&secret.instance);
        let patch = serde_json::json!({
            "data": { secret.name.key(): ByteString(value.expose().as_bytes().to_vec()) }
        });
        let params = PatchParams {
            field_manager: Some(FIELD_MANAGER.to_string()),
            ..PatchParams::default()
        };
        self.api::<Secret>()
            .patch(&name, &params, &Patch::Merge(patch))
            .await
            .map_err(|e| {
                classify(
                    e,
                    "secret",
                    &secret.to_string(),
                    format!("rotate {} in Secret {}/{name}", secret.name, self.namespace),
                )
            })?;
        tracing::info!(secret = %secret, "rotated a credential");
        Ok(())
    }

    async fn instance_ca(&self, instance: &str) -> Result<String, PlatformError> {
        validate_instance_name(instance)?;
        self.ca_certificate(instance).await
    }

    fn secret_location(&self, secret: &SecretRef) -> Option<String> {
        validate_instance_name(&secret.instance).ok()?;
        Some(format!(
            "Secret {}/{}, key {}",
            self.namespace,
            credentials_secret_name(&secret.instance),
            secret.name.key()
        ))
    }

    async fn create_member(&self, spec: &MemberSpec) -> Result<MemberHandle, PlatformError> {
        self.create_member_objects(spec).await
    }

    async fn delete_member(
        &self,
        instance: &str,
        member: &str,
        keep_data: bool,
    ) -> Result<(), PlatformError> {
        self.delete_member_objects(instance, member, keep_data)
            .await
    }

    /// The old data stays in the member's PVC; a new PVC takes the restore (see `data_aside`).
    fn sets_data_aside(&self) -> bool {
        true
    }

    async fn set_data_aside(&self, instance: &str, member: &str) -> Result<(), PlatformError> {
        self.set_aside(instance, member).await
    }

    async fn end_data_aside(
        &self,
        instance: &str,
        member: &str,
        put_back: bool,
    ) -> Result<(), PlatformError> {
        self.end_aside(instance, member, put_back).await
    }

    async fn member_address(
        &self,
        instance: &str,
        member: &str,
    ) -> Result<MemberAddress, PlatformError> {
        self.address_of(instance, member).await
    }

    async fn kill_member(&self, instance: &str, member: &str) -> Result<(), PlatformError> {
        self.kill(instance, member).await
    }

    async fn list_members(&self, instance: &str) -> Result<Vec<MemberInfo>, PlatformError> {
        validate_instance_name(instance)?;
        self.members_of(instance).await
    }

    fn endpoint_hosts(&self, instance: &str) -> Option<(String, String)> {
        validate_instance_name(instance).ok()?;
        Some(self.endpoint_service_hosts(instance))
    }

    async fn ensure_endpoints(&self, instance: &str) -> Result<Endpoints, PlatformError> {
        validate_instance_name(instance)?;
        self.ensure_services(instance).await
    }

    async fn route_endpoint(
        &self,
        instance: &str,
        routes: &EndpointRoutes,
    ) -> Result<(), PlatformError> {
        validate_instance_name(instance)?;
        self.route(instance, routes).await
    }

    async fn delete_endpoints(&self, instance: &str) -> Result<(), PlatformError> {
        validate_instance_name(instance)?;
        self.delete_services(instance).await
    }
}
