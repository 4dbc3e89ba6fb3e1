//! The instance's CA and its members' TLS Secrets on the cluster (builders in
//! [`crate::platform::kubernetes::tls`]): each created once, read back ever after.

use anyhow::Context as _;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::PostParams;
use toygres_common::tls::pki::{member_server_names, InstanceCa};

use super::{classify, KubernetesPlatform, FIELD_MANAGER};
use crate::platform::kubernetes::credentials::InstanceSecret;
use crate::platform::kubernetes::tls::{
    ca_secret, ca_secret_name, member_tls_secret, member_tls_secret_name, text_of, CA_CERT_KEY,
    CA_KEY_KEY,
};
use crate::platform::kubernetes::InstanceSettings;
use crate::platform::PlatformError;

impl KubernetesPlatform {
    /// Creates `secret` unless a Secret of its name exists (another attempt's values stay).
    async fn create_once(&self, secret: InstanceSecret) -> Result<(), PlatformError> {
        let secret = secret.into_secret();
        let name = secret.metadata.name.clone().unwrap_or_default();
        let params = PostParams {
            field_manager: Some(FIELD_MANAGER.to_string()),
            ..PostParams::default()
        };
        match self.api::<Secret>().create(&params, &secret).await {
            Ok(_) => {
                tracing::info!(secret = %name, "created a TLS Secret");
                Ok(())
            }
            Err(kube::Error::Api(status)) if status.is_already_exists() => Ok(()),
            Err(e) => Err(anyhow::Error::new(e)
                .context(format!("create Secret {}/{name}", self.namespace))
                .into()),
        }
    }

    /// The instance's CA Secret, read; `None` when it does not exist.
    async fn read_ca_secret(&self, instance: &str) -> Result<Option<Secret>, PlatformError> {
        let name = ca_secret_name(instance);
        Ok(self
            .api::<Secret>()
            .get_opt(&name)
            .await
            .with_context(|| format!("read Secret {}/{name}", self.namespace))?)
    }

    /// The instance's CA: made and stored the first time, read back afterwards.
    pub(super) async fn ensure_ca(
        &self,
        settings: &InstanceSettings,
        owner: &OwnerReference,
    ) -> Result<InstanceCa, PlatformError> {
        let instance = &settings.instance;
        if self.read_ca_secret(instance).await?.is_none() {
            let ca = InstanceCa::generate(instance).context("make the instance's CA")?;
            self.create_once(ca_secret(settings, &ca, owner)).await?;
        }
        let stored = self
            .read_ca_secret(instance)
            .await?
            .ok_or_else(|| PlatformError::not_found("instance CA", instance.clone()))?;
        let (Some(cert), Some(key)) = (text_of(&stored, CA_CERT_KEY), text_of(&stored, CA_KEY_KEY))
        else {
            return Err(PlatformError::Invalid(format!(
                "Secret {} lacks the CA's certificate or key",
                ca_secret_name(instance)
            )));
        };
        Ok(InstanceCa::from_pem(instance, cert, key).context("read the instance's CA")?)
    }

    /// Issues the member's certificates into `<member>-tls` unless that Secret exists.
    pub(super) async fn ensure_member_tls(
        &self,
        settings: &InstanceSettings,
        owner: &OwnerReference,
        member: &str,
    ) -> Result<(), PlatformError> {
        let name = member_tls_secret_name(member);
        let present = self
            .api::<Secret>()
            .get_opt(&name)
            .await
            .with_context(|| format!("read Secret {}/{name}", self.namespace))?;
        if present.is_some() {
            return Ok(());
        }
        let ca = self.ensure_ca(settings, owner).await?;
        let names = member_server_names(&settings.instance, member, Some(&settings.namespace));
        let tls = ca
            .member_tls(member, &names)
            .context("issue the member's certificates")?;
        self.create_once(member_tls_secret(settings, member, &tls, owner))
            .await
    }

    /// The instance's CA certificate.
    pub(super) async fn ca_certificate(&self, instance: &str) -> Result<String, PlatformError> {
        let name = ca_secret_name(instance);
        let secret = self.api::<Secret>().get(&name).await.map_err(|e| {
            classify(
                e,
                "instance CA",
                instance,
                format!("read Secret {}/{name}", self.namespace),
            )
        })?;
        text_of(&secret, CA_CERT_KEY)
            .ok_or_else(|| PlatformError::not_found("instance CA", instance.to_string()))
    }
}
