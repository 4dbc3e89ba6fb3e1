//! The backup encryption key ring on Kubernetes: one Secret per encrypted instance,
//! `<instance>-backup-keyring`, which every member mounts read-only as the files of its ring
//! directory ([`BACKUP_KEYRING_DIR`](crate::platform::kubernetes::member::BACKUP_KEYRING_DIR)):
//! `current.key` encrypts, each `previous-<secret>.key` (a key a rotation replaced) still
//! decrypts, and `ring.version` (a digest of the key files, no key in it) tells a sidecar which
//! ring it sees. The kubelet updates a mounted Secret some seconds after it changed, so a
//! rotation asks each sidecar to reload once its ring reads the new version.
//!
//! The keys are copied from their store secrets (Secrets of the namespace) into the ring by
//! the controller; they pass through no log, error, CMS row or orchestration history.

use std::collections::BTreeMap;

use anyhow::Context as _;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use k8s_openapi::ByteString;
use kube::api::PostParams;
use sha2::{Digest as _, Sha256};
use toygres_common::sidecar_api::KEYRING_VERSION_FILE;
use toygres_common::store_secret_api::ENCRYPTION_KEY_SETTING;

use super::{KubernetesPlatform, FIELD_MANAGER};
use crate::platform::kubernetes::credentials::opaque_secret;
use crate::platform::kubernetes::{backup_keyring_secret_name, InstanceSettings};
use crate::platform::{MemberArchive, PlatformError};

/// The ring file of the key that encrypts.
pub const CURRENT_KEY_FILE: &str = "current.key";

/// The files of a ring whose current key is `current` and whose older keys are `previous`
/// (store secret name, key), with its version file; and the version.
pub fn keyring_files(
    current: &[u8],
    previous: &[(String, Vec<u8>)],
) -> (BTreeMap<String, Vec<u8>>, String) {
    let mut files: BTreeMap<String, Vec<u8>> = previous
        .iter()
        .map(|(name, key)| (format!("previous-{name}.key"), key.clone()))
        .collect();
    files.insert(CURRENT_KEY_FILE.to_string(), current.to_vec());
    // A one-way digest of the key files (names and contents): it changes with any of them,
    // and tells nothing of the keys.
    let mut digest = Sha256::new();
    digest.update(b"toygres key ring v1\0");
    for (name, key) in &files {
        digest.update(name.as_bytes());
        digest.update([0]);
        digest.update(key);
        digest.update([0]);
    }
    let version = hex::encode(&digest.finalize()[..16]);
    files.insert(
        KEYRING_VERSION_FILE.to_string(),
        version.as_bytes().to_vec(),
    );
    (files, version)
}

impl KubernetesPlatform {
    /// The encryption key held by the store secret `name`.
    async fn store_key(&self, name: &str) -> Result<Vec<u8>, PlatformError> {
        let secret = self
            .api::<Secret>()
            .get_opt(name)
            .await
            .with_context(|| format!("read Secret {}/{name}", self.namespace))?;
        secret
            .and_then(|s| s.data)
            .and_then(|mut data| data.remove(ENCRYPTION_KEY_SETTING))
            .map(|key| key.0)
            .ok_or_else(|| PlatformError::not_found("secret", name.to_string()))
    }

    /// The ring Secret of `archive`'s keys and its version; `None` when it encrypts nothing.
    async fn keyring_secret(
        &self,
        settings: &InstanceSettings,
        archive: &MemberArchive,
        owner: &OwnerReference,
    ) -> Result<Option<(Secret, String)>, PlatformError> {
        let Some(current) = &archive.encryption_secret else {
            return Ok(None);
        };
        let current_key = self.store_key(current).await?;
        let mut previous = Vec::new();
        for name in archive
            .previous_encryption_secrets
            .iter()
            .filter(|name| *name != current)
        {
            previous.push((name.clone(), self.store_key(name).await?));
        }
        let (files, version) = keyring_files(&current_key, &previous);
        let data = files
            .into_iter()
            .map(|(name, bytes)| (name, ByteString(bytes)))
            .collect();
        let name = backup_keyring_secret_name(&settings.instance);
        let secret = opaque_secret(settings, name, data, owner).into_secret();
        Ok(Some((secret, version)))
    }

    /// Writes the instance's ring from `archive` (a rotation); returns the version members
    /// must see before they read it again.
    pub(super) async fn put_keyring(
        &self,
        settings: &InstanceSettings,
        archive: &MemberArchive,
        owner: &OwnerReference,
    ) -> Result<Option<String>, PlatformError> {
        let Some((secret, version)) = self.keyring_secret(settings, archive, owner).await? else {
            return Ok(None);
        };
        self.apply(&secret).await?;
        tracing::info!(
            instance = %settings.instance,
            previous_keys = archive.previous_encryption_secrets.len(),
            %version,
            "wrote the backup key ring"
        );
        Ok(Some(version))
    }

    /// Makes the instance's ring when it has none yet (a member of an encrypted instance
    /// mounts it). An existing ring stays as it is: a rotation, not a member's create, changes it.
    pub(super) async fn ensure_keyring(
        &self,
        settings: &InstanceSettings,
        archive: Option<&MemberArchive>,
        owner: &OwnerReference,
    ) -> Result<(), PlatformError> {
        let Some(archive) = archive.filter(|a| a.encryption_secret.is_some()) else {
            return Ok(());
        };
        let name = backup_keyring_secret_name(&settings.instance);
        let secrets = self.api::<Secret>();
        let present = secrets
            .get_opt(&name)
            .await
            .with_context(|| format!("read Secret {}/{name}", self.namespace))?;
        if present.is_some() {
            return Ok(());
        }
        let Some((secret, _)) = self.keyring_secret(settings, archive, owner).await? else {
            return Ok(());
        };
        let params = PostParams {
            field_manager: Some(FIELD_MANAGER.to_string()),
            ..PostParams::default()
        };
        match secrets.create(&params, &secret).await {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(status)) if status.is_already_exists() => Ok(()),
            Err(e) => Err(anyhow::Error::new(e)
                .context(format!("create Secret {}/{name}", self.namespace))
                .into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ring_holds_the_current_key_the_previous_ones_by_secret_and_a_version_of_them_all() {
        let (files, version) = keyring_files(b"k2", &[("key-1".to_string(), b"k1".to_vec())]);
        assert_eq!(
            files.keys().collect::<Vec<_>>(),
            [CURRENT_KEY_FILE, "previous-key-1.key", KEYRING_VERSION_FILE]
        );
        assert_eq!(files[CURRENT_KEY_FILE], b"k2");
        assert_eq!(files[KEYRING_VERSION_FILE], version.as_bytes());
        assert_eq!(version.len(), 32);
        // Another current key, or another previous one: another version; the same keys: the same.
        assert_ne!(keyring_files(b"k1", &[]).1, keyring_files(b"k2", &[]).1);
        assert_ne!(
            version,
            keyring_files(b"k2", &[("key-1".to_string(), b"k3".to_vec())]).1
        );
        assert_eq!(
            version,
            keyring_files(b"k2", &[("key-1".to_string(), b"k1".to_vec())]).1
        );
        // The version holds no key.
        assert!(!version.contains(&hex::encode(b"k2")));
    }
}
