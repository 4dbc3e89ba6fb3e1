//! Rotating an instance's backup encryption key (`toygres backup rotate-key`): the new key's
//! store secret becomes the one that encrypts, the old one joins the secrets that still
//! decrypt, the platform gives the members the resulting key ring as files, and every member's
//! sidecar reads it again. New WAL and backups carry the new key's id; objects of the old key
//! stay readable, so restores of old backups and point-in-time recovery across the rotation
//! work. Only secret names pass through here, never a key.
//!
//! Repeating a rotation to the key already current applies the ring again (a rotation cut
//! short by a crash or an unreachable primary is finished that way).

use std::time::Duration;

use toygres_common::backup_api::{
    validate_encryption_secret_name, RotateKeyRequest, RotateKeyView,
};
use toygres_common::domain::{MemberState, Role};
use toygres_common::sidecar_api::KEYRING_SYNC_SECS;

use super::{Engine, EngineError};
use crate::activities::sidecar::sidecar_on;
use crate::platform::MemberArchive;

/// How long one member may take to read its key ring again.
const RELOAD_TIMEOUT: Duration = Duration::from_secs(15);

/// The configuration's key secrets after rotating from `current` to `new`: `new` current,
/// `current` the newest of the previous ones, no secret twice.
pub fn rotated(current: &str, previous: &[String], new: &str) -> Vec<String> {
    if current == new {
        return previous.to_vec();
    }
    let mut out: Vec<String> = previous
        .iter()
        .filter(|p| p.as_str() != new && p.as_str() != current)
        .cloned()
        .collect();
    out.push(current.to_string());
    out
}

impl Engine {
    /// Rotates `name`'s backup encryption key to the one in the store secret
    /// `request.new_secret`. 400 for a bad or missing secret, 404 for an unknown instance, 409
    /// when its backups are off or not encrypted, or when its primary did not take the key.
    pub async fn rotate_backup_key(
        &self,
        name: &str,
        request: RotateKeyRequest,
    ) -> Result<RotateKeyView, EngineError> {
        let new = request.new_secret;
        validate_encryption_secret_name(&new)
            .map_err(|e| EngineError::Invalid(format!("new_secret: {}", e.message)))?;
        let mut config = self.backup_config(name).await?;
        let Some(current) = config.encryption_secret.clone() else {
            return Err(EngineError::Conflict(format!(
                "instance {name}'s backups are not encrypted: there is no key to rotate \
                 (create it with --backup-encryption-key SECRET)"
            )));
        };
        self.check_encryption_secret(&new).await?;
        config.previous_encryption_secrets =
            rotated(&current, &config.previous_encryption_secrets, &new);
        config.encryption_secret = Some(new.clone());
        // The ring first (a platform that cannot rotate refuses before anything changed), then
        // the record new members get their ring from, then the members read it again.
        let archive = MemberArchive {
            store_url: config.store_url.clone().unwrap_or_default(),
            credentials_secret: config.credentials_secret.clone(),
            compression: config.sidecar_compression().map(str::to_string),
            encryption_secret: Some(new.clone()),
            previous_encryption_secrets: config.previous_encryption_secrets.clone(),
        };
        let ring_version = self
            .platform
            .put_backup_keyring(name, &archive)
            .await
            .map_err(|e| {
                EngineError::Conflict(format!("give {name}'s members the key ring: {e}"))
            })?;
        if new != current {
            self.cms.set_backup_config(name, &config).await?;
            tracing::info!(
                instance = name,
                from = %current,
                to = %new,
                "rotated the backup encryption key"
            );
        }

        // Every member reads the ring again (once it sees the new one, when the platform gives
        // it to them late); the primary must (it archives the WAL).
        let timeout = match ring_version {
            Some(_) => RELOAD_TIMEOUT + Duration::from_secs(KEYRING_SYNC_SECS),
            None => RELOAD_TIMEOUT,
        };
        let mut view = RotateKeyView {
            instance: name.to_string(),
            encryption_secret: new,
            previous_encryption_secrets: config.previous_encryption_secrets.clone(),
            key_id: None,
            members: Vec::new(),
            pending: Vec::new(),
        };
        for member in self.cms.list_members(name).await? {
            if matches!(
                member.parsed_state(),
                Some(MemberState::Deleted) | Some(MemberState::Deleting)
            ) {
                continue;
            }
            let reloaded =
                match sidecar_on(self.platform.as_ref(), name, &member.name, timeout).await {
                    Ok(client) => match &ring_version {
                        Some(version) => client.reload_encryption_keys_at(version).await,
                        None => client.reload_encryption_keys().await,
                    }
                    .map_err(|e| e.to_string()),
                    Err(e) => Err(e),
                };
            // A sidecar started before key rings reads its one key file again: it cannot take
            // the new key until it starts again (on the ring its command now names).
            let reloaded = reloaded.and_then(|keys| {
                if !view.previous_encryption_secrets.is_empty() && keys.key_ids.len() < 2 {
                    Err(format!(
                        "it holds one key (id {}), not the instance's key ring: it was started \
                         before key rings; restart it",
                        keys.current_key_id.as_deref().unwrap_or("none")
                    ))
                } else {
                    Ok(keys)
                }
            });
            match reloaded {
                Ok(keys) => {
                    let id = keys.current_key_id;
                    if view.key_id.is_some() && id != view.key_id {
                        return Err(EngineError::Conflict(format!(
                            "member {} encrypts with key id {} where the others use {}: it \
                             was started without the instance's key ring; restart it and \
                             rotate again",
                            member.name,
                            id.as_deref().unwrap_or("none"),
                            view.key_id.as_deref().unwrap_or("none")
                        )));
                    }
                    view.key_id = id;
                    view.members.push(member.name.clone());
                }
                Err(e) if member.parsed_role() == Role::Primary => {
                    return Err(EngineError::Conflict(format!(
                        "the primary {} did not take the new key ({e}); the key ring is \
                         written: rotate again to finish",
                        member.name
                    )));
                }
                Err(e) => {
                    tracing::warn!(instance = name, member = %member.name, "a member did not take the new key yet: {e}");
                    view.pending.push(member.name.clone());
                }
            }
        }
        Ok(view)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rotation_keeps_every_older_secret_once_and_the_replaced_one_newest() {
        let v = |s: &[&str]| s.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(rotated("k1", &[], "k2"), v(&["k1"]));
        assert_eq!(rotated("k2", &v(&["k1"]), "k3"), v(&["k1", "k2"]));
        // Back to an older key: it leaves the previous ones, the current joins them.
        assert_eq!(rotated("k3", &v(&["k1", "k2"]), "k1"), v(&["k2", "k3"]));
        // To the current key: nothing changes.
        assert_eq!(rotated("k2", &v(&["k1"]), "k2"), v(&["k1"]));
    }
}
