//! A pod's volumes as host directories: `emptyDir` under the pod's dir (gone with the pod),
//! Secret, ConfigMap, projected (service-account token, `kube-root-ca.crt`, downward API) and
//! downwardAPI volumes as files written when the pod starts, `hostPath` as is, and a
//! PersistentVolumeClaim as its bound PersistentVolume's directory (which outlives the pod, so
//! a StatefulSet pod recreated on any node finds its data). Containers see them at their real
//! mount paths through bind mounts (see [`super::container`]); mount points missing on the host
//! are created and removed again by [`MountPoints`].

use std::collections::HashMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use anyhow::{bail, Context};
use k8s_openapi::api::authentication::v1::{BoundObjectReference, TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{
    DownwardAPIVolumeFile, KeyToPath, PersistentVolume, PersistentVolumeClaim, Pod, ServiceAccount,
};
use kube::api::PostParams;
use kube::{Api, Client};

use super::env::{field_value, ObjectCache};

/// Mount points this process created on the host, with how many pods use each.
static CREATED: Mutex<Vec<(PathBuf, usize)>> = Mutex::new(Vec::new());

/// The mount points one harness created or shares; removed (when empty and no other harness of
/// this process uses them) on drop.
#[derive(Debug, Default)]
pub struct MountPoints {
    held: Mutex<Vec<PathBuf>>,
}

impl MountPoints {
    /// Makes sure `target` exists (a file when `is_file`), remembering every component created.
    pub fn ensure(&self, target: &Path, is_file: bool) -> anyhow::Result<()> {
        let mut created = CREATED.lock().expect("mount point registry");
        let mut held = self.held.lock().expect("held mount points");
        let components: Vec<PathBuf> = target.ancestors().map(Path::to_path_buf).collect();
        for (i, path) in components.iter().rev().enumerate() {
            let last = i + 1 == components.len();
            if let Some(entry) = created.iter_mut().find(|(p, _)| p == path) {
                entry.1 += 1;
                held.push(path.clone());
            } else if !path.exists() {
                if last && is_file {
                    std::fs::write(path, b"")
                        .with_context(|| format!("create {}", path.display()))?;
                } else {
                    std::fs::create_dir(path)
                        .with_context(|| format!("create {}", path.display()))?;
                    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755))
                        .context("chmod a mount point")?;
                }
                created.push((path.clone(), 1));
                held.push(path.clone());
            }
        }
        Ok(())
    }
}

impl Drop for MountPoints {
    fn drop(&mut self) {
        let mut created = CREATED.lock().expect("mount point registry");
        let held = std::mem::take(&mut *self.held.lock().expect("held mount points"));
        for path in held.iter().rev() {
            if let Some(pos) = created.iter().position(|(p, _)| p == path) {
                created[pos].1 -= 1;
                if created[pos].1 == 0 {
                    created.remove(pos);
                    if path.is_dir() {
                        let _ = std::fs::remove_dir(path);
                    } else if std::fs::metadata(path)
                        .map(|m| m.len() == 0)
                        .unwrap_or(false)
                    {
                        let _ = std::fs::remove_file(path);
                    }
                }
            }
        }
    }
}

/// One prepared volume.
#[derive(Debug, Clone)]
pub struct PreparedVolume {
    pub host_path: PathBuf,
    pub read_only: bool,
    /// Persistent (PVC) or emptyDir: owned by the container's user when it is not root.
    pub writable_data: bool,
    /// Files the node wrote (Secret, ConfigMap, projected, downwardAPI): group-owned by the
    /// pod's `fsGroup` and group-readable when it has one, as a kubelet does.
    pub generated: bool,
}

/// Gives `fs_group` read access to every file under `dir` (a generated volume).
pub fn share_with_group(dir: &Path, fs_group: u32) -> anyhow::Result<()> {
    for entry in std::fs::read_dir(dir).context("list a volume")? {
        let path = entry.context("read a volume entry")?.path();
        nix::unistd::chown(&path, None, Some(fs_group.into())).context("chgrp a volume file")?;
        let meta = std::fs::metadata(&path).context("stat a volume file")?;
        let mode = meta.permissions().mode();
        let group_read = if meta.is_dir() { 0o050 } else { 0o040 };
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode | group_read))
            .context("chmod a volume file")?;
        if meta.is_dir() {
            share_with_group(&path, fs_group)?;
        }
    }
    Ok(())
}

/// Writes `entries` (key, bytes) into `dir` as files: all keys, or just `items` (key → path).
fn write_entries(
    dir: &Path,
    entries: &[(String, Vec<u8>)],
    items: Option<&Vec<KeyToPath>>,
    default_mode: Option<i32>,
) -> anyhow::Result<()> {
    let mode = |m: Option<i32>| (m.or(default_mode).unwrap_or(0o644)) as u32;
    let files: Vec<(String, &[u8], u32)> = match items {
        Some(items) => items
            .iter()
            .filter_map(|i| {
                entries
                    .iter()
                    .find(|(k, _)| *k == i.key)
                    .map(|(_, v)| (i.path.clone(), v.as_slice(), mode(i.mode)))
            })
            .collect(),
        None => entries
            .iter()
            .map(|(k, v)| (k.clone(), v.as_slice(), mode(None)))
            .collect(),
    };
    for (path, bytes, mode) in files {
        let file = dir.join(&path);
        if let Some(parent) = file.parent() {
            std::fs::create_dir_all(parent).context("create a volume subdir")?;
        }
        std::fs::write(&file, bytes).with_context(|| format!("write {}", file.display()))?;
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(mode)).context("chmod")?;
    }
    Ok(())
}

fn write_downward(
    dir: &Path,
    pod: &Pod,
    items: &[DownwardAPIVolumeFile],
    pod_ip: &str,
    host_ip: &str,
) -> anyhow::Result<()> {
    let entries: Vec<(String, Vec<u8>)> = items
        .iter()
        .filter_map(|i| {
            let value = match &i.field_ref {
                Some(f) => field_value(pod, &f.field_path, pod_ip, host_ip)?,
                None => "1".to_string(),
            };
            Some((i.path.clone(), value.into_bytes()))
        })
        .collect();
    write_entries(dir, &entries, None, Some(0o644))
}

/// Creates every volume of `pod` under `pod_dir/volumes`; fails (and is retried by the caller)
/// while a referenced object is missing.
pub async fn prepare(
    client: &Client,
    pod: &Pod,
    pod_dir: &Path,
    pod_ip: &str,
    host_ip: &str,
    objects: &mut ObjectCache,
) -> anyhow::Result<HashMap<String, PreparedVolume>> {
    let spec = pod.spec.as_ref().context("pod has no spec")?;
    let namespace = pod.metadata.namespace.clone().unwrap_or_default();
    let mut out = HashMap::new();
    for volume in spec.volumes.iter().flatten() {
        let dir = pod_dir.join("volumes").join(&volume.name);
        let mut prepared = PreparedVolume {
            host_path: dir.clone(),
            read_only: true,
            writable_data: false,
            generated: true,
        };
        if let Some(claim) = &volume.persistent_volume_claim {
            let claims: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), &namespace);
            let pvc = claims
                .get(&claim.claim_name)
                .await
                .context("read the pvc")?;
            let pv_name = pvc
                .spec
                .and_then(|s| s.volume_name)
                .filter(|n| !n.is_empty())
                .with_context(|| format!("pvc {} is not bound", claim.claim_name))?;
            let pv = Api::<PersistentVolume>::all(client.clone())
                .get(&pv_name)
                .await
                .context("read the pv")?;
            let spec = pv.spec.context("pv has no spec")?;
            let path = spec
                .host_path
                .map(|h| h.path)
                .or(spec.local.map(|l| l.path))
                .with_context(|| format!("pv {pv_name} is neither hostPath nor local"))?;
            std::fs::create_dir_all(&path).context("create the pv dir")?;
            prepared = PreparedVolume {
                host_path: PathBuf::from(path),
                read_only: claim.read_only == Some(true),
                writable_data: true,
                generated: false,
            };
        } else if volume.empty_dir.is_some() {
            std::fs::create_dir_all(&dir).context("create an emptyDir")?;
            std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777))
                .context("chmod an emptyDir")?;
            prepared.read_only = false;
            prepared.writable_data = true;
            prepared.generated = false;
        } else if let Some(host) = &volume.host_path {
            if host.type_.as_deref() == Some("DirectoryOrCreate") {
                std::fs::create_dir_all(&host.path).context("create a hostPath dir")?;
            }
            prepared.host_path = PathBuf::from(&host.path);
            prepared.read_only = false;
            prepared.generated = false;
        } else if let Some(secret) = &volume.secret {
            std::fs::create_dir_all(&dir).context("create a secret volume")?;
            let name = secret.secret_name.clone().unwrap_or_default();
            match objects.secret_entries(&name).await? {
                Some(entries) => {
                    write_entries(&dir, &entries, secret.items.as_ref(), secret.default_mode)?
                }
                None if secret.optional == Some(true) => {}
                None => bail!("secret {name} not found"),
            }
        } else if let Some(cm) = &volume.config_map {
            std::fs::create_dir_all(&dir).context("create a configmap volume")?;
            match objects.config_map_entries(&cm.name).await? {
                Some(entries) => write_entries(&dir, &entries, cm.items.as_ref(), cm.default_mode)?,
                None if cm.optional == Some(true) => {}
                None => bail!("configmap {} not found", cm.name),
            }
        } else if let Some(d) = &volume.downward_api {
            std::fs::create_dir_all(&dir).context("create a downwardAPI volume")?;
            write_downward(
                &dir,
                pod,
                d.items.as_deref().unwrap_or_default(),
                pod_ip,
                host_ip,
            )?;
        } else if let Some(projected) = &volume.projected {
            std::fs::create_dir_all(&dir).context("create a projected volume")?;
            for source in projected.sources.iter().flatten() {
                if let Some(t) = &source.service_account_token {
                    let account = spec
                        .service_account_name
                        .clone()
                        .unwrap_or("default".into());
                    let token = pod_token(
                        client,
                        pod,
                        &namespace,
                        &account,
                        t.audience.clone(),
                        t.expiration_seconds.unwrap_or(3607),
                    )
                    .await?;
                    write_entries(
                        &dir,
                        &[(t.path.clone(), token.into_bytes())],
                        None,
                        projected.default_mode,
                    )?;
                }
                if let Some(cm) = &source.config_map {
                    match objects.config_map_entries(&cm.name).await? {
                        Some(e) => {
                            write_entries(&dir, &e, cm.items.as_ref(), projected.default_mode)?
                        }
                        None if cm.optional == Some(true) => {}
                        None => bail!("configmap {} not found", cm.name),
                    }
                }
                if let Some(s) = &source.secret {
                    match objects.secret_entries(&s.name).await? {
                        Some(e) => {
                            write_entries(&dir, &e, s.items.as_ref(), projected.default_mode)?
                        }
                        None if s.optional == Some(true) => {}
                        None => bail!("secret {} not found", s.name),
                    }
                }
                if let Some(d) = &source.downward_api {
                    write_downward(
                        &dir,
                        pod,
                        d.items.as_deref().unwrap_or_default(),
                        pod_ip,
                        host_ip,
                    )?;
                }
            }
        } else {
            bail!(
                "volume {} has a type process nodes do not support",
                volume.name
            );
        }
        out.insert(volume.name.clone(), prepared);
    }
    Ok(out)
}

/// A service-account token bound to the pod (what the kubelet projects).
async fn pod_token(
    client: &Client,
    pod: &Pod,
    namespace: &str,
    account: &str,
    audience: Option<String>,
    seconds: i64,
) -> anyhow::Result<String> {
    let accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), namespace);
    let request = TokenRequest {
        spec: Some(TokenRequestSpec {
            audiences: audience.map(|a| vec![a]),
            expiration_seconds: Some(seconds),
            bound_object_ref: Some(BoundObjectReference {
                api_version: Some("v1".into()),
                kind: Some("Pod".into()),
                name: pod.metadata.name.clone(),
                uid: pod.metadata.uid.clone(),
            }),
        }),
        ..TokenRequest::default()
    };
    let answer = accounts
        .create_token_request(account, &PostParams::default(), &request)
        .await
        .context("request the pod's service-account token")?;
    answer
        .status
        .and_then(|s| s.token)
        .context("the token request returned no token")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mount_points_created_for_a_pod_are_removed_with_the_last_user() {
        let dir = tempfile::tempdir().expect("tempdir");
        let target = dir.path().join("a/b/c");
        let file = dir.path().join("a/f.conf");
        let first = MountPoints::default();
        let second = MountPoints::default();
        first.ensure(&target, false).expect("ensure");
        first.ensure(&file, true).expect("ensure file");
        second.ensure(&target, false).expect("ensure again");
        assert!(target.is_dir() && file.is_file());
        drop(first);
        assert!(target.is_dir(), "still used by the second harness");
        assert!(!file.exists(), "only the first harness used the file");
        drop(second);
        assert!(!dir.path().join("a").exists());
        assert!(dir.path().exists(), "what existed before stays");
    }

    #[test]
    fn items_select_keys_and_set_paths_and_modes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let entries = vec![
            ("a".to_string(), b"1".to_vec()),
            ("b".to_string(), b"2".to_vec()),
        ];
        let items = vec![KeyToPath {
            key: "b".into(),
            path: "sub/bee".into(),
            mode: Some(0o600),
        }];
        write_entries(dir.path(), &entries, Some(&items), None).expect("write");
        assert_eq!(
            std::fs::read(dir.path().join("sub/bee")).expect("read"),
            b"2"
        );
        assert!(!dir.path().join("a").exists());
        let mode = std::fs::metadata(dir.path().join("sub/bee"))
            .expect("meta")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}
