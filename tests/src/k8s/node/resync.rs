//! Secret and ConfigMap volumes follow their objects while the pod runs, as a kubelet's
//! periodic sync does: every [`PERIOD`] the node reads each Secret and ConfigMap a running pod
//! mounts (directly or through a projected volume) and replaces the files whose content changed
//! ([`super::volumes`] writes each through a rename, keeping its owner, group and mode). So a
//! renewed certificate or a rotated password in a Secret reaches the pod's processes without a
//! restart.
//!
//! Differences from a kubelet: the period is 5 s instead of about a minute plus the cache's
//! lifetime (tests must not wait); files change one by one, not all at once through the `..data`
//! symlink swap, so a reader may briefly see a new file beside an old one (the sidecar installs
//! TLS files only when every key matches its certificate); subPath mounts are refreshed too
//! (a kubelet leaves them alone); service-account tokens and downward API files are not
//! refreshed.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::Client;
use tokio::task::JoinHandle;

use super::env::ObjectCache;
use super::volumes::write_entries;

/// How often mounted Secrets and ConfigMaps are compared with their objects.
pub const PERIOD: Duration = Duration::from_secs(5);

/// The resync of one pod's volumes; stops when dropped.
#[derive(Debug)]
pub struct Resync(JoinHandle<()>);

impl Drop for Resync {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Starts keeping `pod`'s Secret and ConfigMap volumes (under `pod_dir/volumes`, as
/// [`super::volumes::prepare`] made them) up to date.
pub fn spawn(client: Client, pod: Arc<Pod>, pod_dir: PathBuf) -> Resync {
    Resync(tokio::spawn(async move {
        let namespace = pod.metadata.namespace.clone().unwrap_or_default();
        loop {
            tokio::time::sleep(PERIOD).await;
            let mut objects = ObjectCache::new(client.clone(), &namespace);
            if let Err(e) = refresh(&pod, &pod_dir, &mut objects).await {
                // Missing objects and API errors: the files stay as they are, as on a kubelet.
                tracing::debug!("refresh the volumes of pod {:?}: {e:#}", pod.metadata.name);
            }
        }
    }))
}

/// One pass: every Secret and ConfigMap source of every volume, written where `prepare` put it.
async fn refresh(
    pod: &Pod,
    pod_dir: &std::path::Path,
    objects: &mut ObjectCache,
) -> anyhow::Result<()> {
    let Some(spec) = pod.spec.as_ref() else {
        return Ok(());
    };
    for volume in spec.volumes.iter().flatten() {
        let dir = pod_dir.join("volumes").join(&volume.name);
        if let Some(secret) = &volume.secret {
            let name = secret.secret_name.clone().unwrap_or_default();
            if let Some(entries) = objects.secret_entries(&name).await? {
                write_entries(&dir, &entries, secret.items.as_ref(), secret.default_mode)?;
            }
        } else if let Some(cm) = &volume.config_map {
            if let Some(entries) = objects.config_map_entries(&cm.name).await? {
                write_entries(&dir, &entries, cm.items.as_ref(), cm.default_mode)?;
            }
        } else if let Some(projected) = &volume.projected {
            for source in projected.sources.iter().flatten() {
                if let Some(s) = &source.secret {
                    if let Some(entries) = objects.secret_entries(&s.name).await? {
                        write_entries(&dir, &entries, s.items.as_ref(), projected.default_mode)?;
                    }
                }
                if let Some(cm) = &source.config_map {
                    if let Some(entries) = objects.config_map_entries(&cm.name).await? {
                        write_entries(&dir, &entries, cm.items.as_ref(), projected.default_mode)?;
                    }
                }
            }
        }
    }
    Ok(())
}
