//! A pod's volumes as host directories: `emptyDir` under the pod's dir (gone with the pod),
//! Secret, ConfigMap, projected (service-account token, `kube-root-ca.crt`, downward API) and
//! downwardAPI volumes as files written when the pod starts (Secrets and ConfigMaps kept up to
//! date while it runs, [`super::resync`]), `hostPath` as is, and a
//! PersistentVolumeClaim as its bound PersistentVolume's directory (which outlives the pod, so
//! a StatefulSet pod recreated on any node finds its data). Containers see them at their real
//! mount paths through bind mounts (see [`super::container`]); mount points missing on the host
//! are created and removed again by [`MountPoints`] ([`super::mount_points`]).

use std::collections::HashMap;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use k8s_openapi::api::authentication::v1::{BoundObjectReference, TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{
    DownwardAPIVolumeFile, KeyToPath, PersistentVolume, PersistentVolumeClaim, Pod, ServiceAccount,
};
use kube::api::PostParams;
use kube::{Api, Client};

use super::env::{field_value, ObjectCache};
pub use super::mount_points::MountPoints;

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

/// Gives `fs_group` read access to every file under `dir` (a generated volume), and `dir`
/// itself to the group, as a kubelet does: a key the resync adds to the volume later takes
/// its group from `dir` (see [`write_entries`]) and stays readable.
pub fn share_with_group(dir: &Path, fs_group: u32) -> anyhow::Result<()> {
    nix::unistd::chown(dir, None, Some(fs_group.into())).context("chgrp a volume")?;
    let mode = std::fs::metadata(dir)
        .context("stat a volume")?
        .permissions()
        .mode();
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode | 0o050))
        .context("chmod a volume")?;
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
/// A file whose content changed is replaced through a rename, keeping the owner, group and mode
/// the node gave it (its `fsGroup`), so a process reading it sees the old file or the new one,
/// never half of one; unchanged files are left alone (see [`super::resync`]).
pub(super) fn write_entries(
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
        if std::fs::read(&file).is_ok_and(|old| old == bytes) {
            continue;
        }
        let parent = file.parent().unwrap_or(dir);
        std::fs::create_dir_all(parent).context("create a volume subdir")?;
        let (mode, owner) = match std::fs::metadata(&file) {
            Ok(old) => (old.permissions().mode() & 0o7777, old),
            Err(_) => (
                mode,
                std::fs::metadata(parent).context("stat a volume dir")?,
            ),
        };
        let name = file.file_name().unwrap_or_default().to_string_lossy();
        let tmp = parent.join(format!("..{name}.tmp"));
        std::fs::write(&tmp, bytes).with_context(|| format!("write {}", tmp.display()))?;
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(mode)).context("chmod")?;
        nix::unistd::chown(&tmp, Some(owner.uid().into()), Some(owner.gid().into()))
            .context("chown a volume file")?;
        std::fs::rename(&tmp, &file).with_context(|| format!("replace {}", file.display()))?;
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
