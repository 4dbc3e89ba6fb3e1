//! The Kubernetes platform itself: the [`Platform`](crate::platform::Platform) contract served by
//! a kube client, with the objects the pure builders of [`super`] make.
//!
//! Everything is written with server-side apply under one field manager
//! ([`FIELD_MANAGER`]), so a retried activity re-applies the same objects and changes nothing.
//! Two things are written otherwise, each for a reason: the credentials Secret is *created*
//! (never applied), so a retry can never replace a password that members already use; and a
//! member's replica count is merge-patched to 0 by [`Platform::kill_member`], which keeps a
//! fenced member down until `create_member` applies it with one replica again.
//!
//! The controller reaches members by their pod IPs (the sidecar API on 8008, Postgres on
//! 5432), which is what a controller outside the cluster network can reach too when pod IPs are
//! routable (the test harness's process nodes); clients reach the instance through the `-rw` and
//! `-ro` Services, whose selection follows the `toygres.io/role` label that
//! [`Platform::route_endpoint`] moves.
//!
//! [`Platform::kill_member`]: crate::platform::Platform::kill_member
//! [`Platform::route_endpoint`]: crate::platform::Platform::route_endpoint

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use k8s_openapi::NamespaceResourceScope;
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Resource};
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::labels::MANAGED_BY;
use super::root::{instance_owner_reference, instance_root_config_map};
use super::{
    root_config_map_name, AntiAffinity, InstanceSettings, MemberResources, SidecarSettings,
    StorageRequest, VolumeRetention,
};
use crate::platform::{MemberArchive, PlatformError};

mod data_aside;
mod events;
mod keyring;
mod members;
mod platform_api;
mod routing;
mod store_secrets;
mod tls;

/// The field manager of every object the platform applies (also `app.kubernetes.io/managed-by`).
pub const FIELD_MANAGER: &str = MANAGED_BY;

/// How the platform reaches the cluster and what every instance it creates gets.
#[derive(Debug, Clone)]
pub struct KubernetesPlatformConfig {
    /// A kubeconfig file; `None`: the in-cluster service account (or `$KUBECONFIG`, or
    /// `~/.kube/config`, as kube's `Config::infer` finds them).
    pub kubeconfig: Option<PathBuf>,
    /// The namespace instances live in; `None`: the kubeconfig's (or the service account's).
    pub namespace: Option<String>,
    /// The sidecar image members run.
    pub sidecar_image: String,
    /// Each member's data volume.
    pub storage: StorageRequest,
    /// Each member's CPU and memory.
    pub resources: MemberResources,
    /// How strictly members avoid sharing a node.
    pub anti_affinity: AntiAffinity,
    /// The sidecars' isolation lease (`TOYGRES_ISOLATION_LEASE_SECS`), `None`: the sidecar's.
    pub isolation_lease_secs: Option<u64>,
    /// This controller's API as the members' sidecars reach it (`TOYGRES_NOTIFY_URL`), for
    /// their pushed reports; `None`: no reports, failures are seen at the next health round.
    pub notify_url: Option<String>,
    /// The ConfigMap (key `ca.crt`) holding the CA that issued this controller's certificate,
    /// which member pods verify an `https` notify URL with.
    pub notify_ca_config_map: Option<String>,
    /// How long `create_member` waits for the member's pod to get an IP.
    pub pod_start_timeout: Duration,
}

impl KubernetesPlatformConfig {
    /// The defaults for `image`: storage of the cluster's default class, 1Gi, 100m CPU and
    /// 256Mi memory, preferred anti-affinity.
    pub fn new(sidecar_image: impl Into<String>) -> Self {
        Self {
            kubeconfig: None,
            namespace: None,
            sidecar_image: sidecar_image.into(),
            storage: StorageRequest {
                class: None,
                size: "1Gi".into(),
            },
            resources: MemberResources {
                cpu: "100m".into(),
                memory: "256Mi".into(),
            },
            anti_affinity: AntiAffinity::Preferred,
            isolation_lease_secs: None,
            notify_url: None,
            notify_ca_config_map: None,
            pod_start_timeout: Duration::from_secs(180),
        }
    }
}

/// Instances as StatefulSets, Services and Secrets in one namespace of one cluster.
pub struct KubernetesPlatform {
    client: Client,
    namespace: String,
    config: KubernetesPlatformConfig,
    /// One lock per instance, held while its role labels change (see [`routing`]).
    locks: std::sync::Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

impl std::fmt::Debug for KubernetesPlatform {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubernetesPlatform")
            .field("namespace", &self.namespace)
            .field("sidecar_image", &self.config.sidecar_image)
            .finish_non_exhaustive()
    }
}

/// Makes `ring` rustls's process-wide provider: kube asks rustls for the process default, and
/// the workspace also enables `aws-lc-rs` (through the object-store client), so rustls would
/// pick neither and the first TLS connection would panic.
fn install_tls_provider() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        // Err: a default is installed already, which serves as well.
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

/// A client for the cluster `config` names (its kubeconfig, else the pod's service account),
/// and the namespace to work in.
pub async fn cluster_client(config: &KubernetesPlatformConfig) -> anyhow::Result<(Client, String)> {
    install_tls_provider();
    let kube_config = match &config.kubeconfig {
        Some(path) => {
            let kubeconfig = Kubeconfig::read_from(path)
                .with_context(|| format!("read the kubeconfig {}", path.display()))?;
            kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
                .await
                .with_context(|| format!("load the kubeconfig {}", path.display()))?
        }
        None => kube::Config::infer().await.context(
            "find the cluster: no --kubeconfig or KUBECONFIG given, and no service account \
                 (not running in a pod)",
        )?,
    };
    let namespace = config
        .namespace
        .clone()
        .filter(|ns| !ns.is_empty())
        .unwrap_or_else(|| kube_config.default_namespace.clone());
    let client = Client::try_from(kube_config).context("build the Kubernetes client")?;
    Ok((client, namespace))
}

impl KubernetesPlatform {
    /// Connects to the cluster and checks that the namespace can be read.
    pub async fn connect(config: KubernetesPlatformConfig) -> anyhow::Result<Self> {
        let (client, namespace) = cluster_client(&config).await?;
        let platform = Self {
            client,
            namespace,
            config,
            locks: Default::default(),
        };
        // Settings that could never build a valid object fail here, not at the first create.
        platform.settings("probe", None).validate()?;
        platform
            .api::<ConfigMap>()
            .list(&kube::api::ListParams::default().limit(1))
            .await
            .with_context(|| {
                format!(
                    "list ConfigMaps in namespace {} (is the cluster reachable, and may the \
                     controller read it?)",
                    platform.namespace
                )
            })?;
        Ok(platform)
    }

    /// The namespace instances live in.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// Waits for, and holds, `instance`'s lock.
    async fn lock(&self, instance: &str) -> tokio::sync::OwnedMutexGuard<()> {
        let lock = {
            let mut locks = match self.locks.lock() {
                Ok(locks) => locks,
                Err(poisoned) => poisoned.into_inner(),
            };
            Arc::clone(locks.entry(instance.to_string()).or_default())
        };
        lock.lock_owned().await
    }

    /// The settings every object of `instance` is built from.
    fn settings(&self, instance: &str, archive: Option<&MemberArchive>) -> InstanceSettings {
        InstanceSettings {
            instance: instance.to_string(),
            namespace: self.namespace.clone(),
            sidecar_image: self.config.sidecar_image.clone(),
            storage: self.config.storage.clone(),
            resources: self.config.resources.clone(),
            anti_affinity: self.config.anti_affinity,
            // A member's PVC goes only when delete_member is asked to remove its data.
            volume_retention: VolumeRetention::Retain,
            sidecar: SidecarSettings {
                isolation_lease_secs: self.config.isolation_lease_secs,
                notify_url: self.config.notify_url.clone(),
                notify_ca_config_map: self.config.notify_ca_config_map.clone(),
                archive_url: archive.map(|a| a.store_url.clone()),
                wal_compression: archive.and_then(|a| a.compression.clone()),
                store_credentials_secret: archive.and_then(|a| a.credentials_secret.clone()),
                backup_encryption_secret: archive.and_then(|a| a.encryption_secret.clone()),
                ..SidecarSettings::default()
            },
            extra_labels: Default::default(),
        }
    }

    fn api<K>(&self) -> Api<K>
    where
        K: Resource<Scope = NamespaceResourceScope>,
        <K as Resource>::DynamicType: Default,
    {
        Api::namespaced(self.client.clone(), &self.namespace)
    }

    /// Server-side applies `object` (forcing ownership of its fields: the controller is the one
    /// writer of the objects it builds).
    async fn apply<K>(&self, object: &K) -> anyhow::Result<K>
    where
        K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>
            + Clone
            + DeserializeOwned
            + Serialize
            + std::fmt::Debug,
    {
        let name = object.meta().name.clone().unwrap_or_default();
        self.api::<K>()
            .patch(
                &name,
                &PatchParams::apply(FIELD_MANAGER).force(),
                &Patch::Apply(object),
            )
            .await
            .with_context(|| format!("apply {} {}/{name}", K::kind(&()), self.namespace))
    }

    /// Deletes `name`; succeeds when it does not exist.
    async fn delete_if_present<K>(&self, name: &str, params: &DeleteParams) -> anyhow::Result<()>
    where
        K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>
            + Clone
            + DeserializeOwned
            + std::fmt::Debug,
    {
        match self.api::<K>().delete(name, params).await {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(status)) if status.is_not_found() => Ok(()),
            Err(e) => Err(anyhow::Error::new(e).context(format!(
                "delete {} {}/{name}",
                K::kind(&()),
                self.namespace
            ))),
        }
    }

    /// Creates the instance's root ConfigMap when missing (its settings are those of the first
    /// call: the root is never rewritten) and returns the owner reference every other object
    /// gets.
    async fn ensure_root(&self, settings: &InstanceSettings) -> anyhow::Result<OwnerReference> {
        let name = root_config_map_name(&settings.instance);
        let existing = self
            .api::<ConfigMap>()
            .get_opt(&name)
            .await
            .with_context(|| format!("read ConfigMap {}/{name}", self.namespace))?;
        let root = match existing {
            Some(root) if root.metadata.deletion_timestamp.is_none() => root,
            Some(_) => {
                return Err(anyhow::anyhow!(
                    "instance {}'s objects are still being deleted; try again",
                    settings.instance
                ))
            }
            None => self.apply(&instance_root_config_map(settings)).await?,
        };
        let uid = root
            .metadata
            .uid
            .ok_or_else(|| anyhow::anyhow!("ConfigMap {name} has no uid"))?;
        Ok(instance_owner_reference(&settings.instance, &uid))
    }
}

/// A kube error as a platform error: 404 as [`PlatformError::NotFound`] of `kind`/`name`.
fn classify(e: kube::Error, kind: &'static str, name: &str, doing: String) -> PlatformError {
    match e {
        kube::Error::Api(status) if status.is_not_found() => PlatformError::not_found(kind, name),
        e => PlatformError::Failed(anyhow::Error::new(e).context(doing)),
    }
}
