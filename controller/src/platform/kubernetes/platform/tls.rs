//! The instance's CA and its members' TLS Secrets on the cluster (builders in
//! [`crate::platform::kubernetes::tls`]): each created once, read back ever after, and a
//! member's Secret re-issued when its certificates are due for renewal
//! ([`KubernetesPlatform::renew_certificates`]). The kubelet then refreshes the files mounted
//! from it, and the sidecar installs them and reloads Postgres, as on the local platform.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use anyhow::Context as _;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::api::{ListParams, PostParams};
use toygres_common::tls::pki::{member_server_names, renewal_due, InstanceCa};
use toygres_common::tls::{REPLICATOR_CERT, REWIND_CERT, SERVER_CERT, SUPERUSER_CERT};

use super::{classify, KubernetesPlatform, FIELD_MANAGER};
use crate::platform::kubernetes::credentials::InstanceSecret;
use crate::platform::kubernetes::labels::{
    Component, APP_COMPONENT_KEY, APP_MANAGED_BY_KEY, INSTANCE_KEY, MANAGED_BY, MEMBER_KEY,
};
use crate::platform::kubernetes::tls::{
    ca_secret, ca_secret_name, member_tls_data, member_tls_secret, member_tls_secret_name, text_of,
    CA_CERT_KEY, CA_KEY_KEY,
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

    /// Issues new certificates into the `<member>-tls` Secret of every member whose server or
    /// client certificates have a third of their lifetime or less left (or do not read),
    /// server-side applied under the controller's field manager with the CA unchanged; returns
    /// the members renewed.
    pub async fn renew_certificates(&self) -> anyhow::Result<Vec<String>> {
        let selector = format!(
            "{APP_COMPONENT_KEY}={},{APP_MANAGED_BY_KEY}={MANAGED_BY}",
            Component::Member.label_value()
        );
        let sets = self
            .api::<StatefulSet>()
            .list(&ListParams::default().labels(&selector))
            .await
            .with_context(|| format!("list member StatefulSets in {}", self.namespace))?;
        let mut renewed = Vec::new();
        for set in sets {
            let labels = set.metadata.labels.unwrap_or_default();
            let (Some(instance), Some(member)) = (labels.get(INSTANCE_KEY), labels.get(MEMBER_KEY))
            else {
                continue;
            };
            // One read per member: the Role grants no listing of Secrets. A member whose
            // Secret does not exist yet gets it when it is created.
            let name = member_tls_secret_name(member);
            let Some(current) = self
                .api::<Secret>()
                .get_opt(&name)
                .await
                .with_context(|| format!("read Secret {}/{name}", self.namespace))?
            else {
                continue;
            };
            if !certificates_due(&current) {
                continue;
            }
            let _lock = self.lock(instance).await;
            match self.renew_member(instance, member, current).await {
                Ok(()) => {
                    tracing::info!(instance, member, "renewed the member's certificates");
                    renewed.push(member.clone());
                }
                Err(e) => tracing::error!(instance, member, "renew the certificates: {e:#}"),
            }
        }
        Ok(renewed)
    }

    /// Re-issues `<member>-tls` (as `current` read it).
    async fn renew_member(
        &self,
        instance: &str,
        member: &str,
        current: Secret,
    ) -> anyhow::Result<()> {
        let stored = self
            .read_ca_secret(instance)
            .await?
            .with_context(|| format!("Secret {} is gone", ca_secret_name(instance)))?;
        let (Some(cert), Some(key)) = (text_of(&stored, CA_CERT_KEY), text_of(&stored, CA_KEY_KEY))
        else {
            anyhow::bail!(
                "Secret {} lacks the CA's certificate or key",
                ca_secret_name(instance)
            );
        };
        let ca = InstanceCa::from_pem(instance, cert, key).context("read the instance's CA")?;
        let names = member_server_names(instance, member, Some(&self.namespace));
        let tls = ca
            .member_tls(member, &names)
            .context("issue the member's certificates")?;
        // The Secret as it is (labels, owner, type), with the new files.
        let renewed = Secret {
            metadata: ObjectMeta {
                name: current.metadata.name,
                namespace: current.metadata.namespace,
                labels: current.metadata.labels,
                owner_references: current.metadata.owner_references,
                ..ObjectMeta::default()
            },
            type_: current.type_,
            data: Some(member_tls_data(&tls)),
            ..Secret::default()
        };
        self.apply(&renewed).await?;
        Ok(())
    }

    /// Runs [`KubernetesPlatform::renew_certificates`] every `interval` in the background; the
    /// task ends when the platform is dropped.
    pub fn spawn_certificate_renewer(
        self: &Arc<Self>,
        interval: Duration,
    ) -> tokio::task::JoinHandle<()> {
        let platform = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(interval);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticks.tick().await;
                let Some(platform) = platform.upgrade() else {
                    return;
                };
                if let Err(e) = platform.renew_certificates().await {
                    tracing::error!("renew the members' certificates: {e:#}");
                }
            }
        })
    }
}

/// Whether a member's TLS Secret has a server or client certificate with a third of its
/// lifetime or less left (or one that does not read, or is missing: a Secret made before
/// pg_rewind had its own role lacks `rewind.crt`, and gets every key anew).
fn certificates_due(secret: &Secret) -> bool {
    let now = SystemTime::now();
    [SERVER_CERT, REPLICATOR_CERT, SUPERUSER_CERT, REWIND_CERT]
        .iter()
        .any(|key| text_of(secret, key).is_none_or(|pem| renewal_due(&pem, now)))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use toygres_common::tls::pki::member_server_names;
    use toygres_common::tls::REWIND_KEY;

    use super::*;

    #[test]
    fn a_secret_made_before_the_rewind_certificate_is_due_for_renewal() {
        let ca = InstanceCa::generate("orders").unwrap();
        let names = member_server_names("orders", "orders-1", Some("db"));
        let tls = ca.member_tls("orders-1", &names).unwrap();
        let secret = |data| Secret {
            data: Some(data),
            ..Secret::default()
        };
        assert!(!certificates_due(&secret(member_tls_data(&tls))));
        let mut old = member_tls_data(&tls);
        old.remove(REWIND_CERT);
        old.remove(REWIND_KEY);
        assert!(certificates_due(&secret(old)));
    }
}
