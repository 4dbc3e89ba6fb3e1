//! Backups to object storage: base backups (`pg_basebackup` tar, streamed through compression
//! into a multipart upload, [`base`]), logical backups (`pg_dump -Fc`, [`logical`]), their
//! verification ([`verify`]), the retention primitive ([`retention`]) and the outcomes
//! `/metrics` reports ([`stats`]).
//!
//! Layout under the store URL (see DESIGN.md):
//!
//! ```text
//! <instance>/base/<id>/claim              reserves the id (create-if-absent, written first)
//! <instance>/base/<id>/base.tar.p00000.zst the tar pg_basebackup writes, in parts of 16 MiB,
//! <instance>/base/<id>/base.tar.p00001.zst each compressed on its own (older backups: one
//!                                         object, base.tar.gz)
//! <instance>/base/<id>/backup_manifest    Postgres's own manifest of the copy
//! <instance>/base/<id>/manifest.json      ours (written last: it marks the backup complete)
//! <instance>/logical/<id>.claim           reserves the id
//! <instance>/logical/<id>-<db>.dump       pg_dump custom format, one per database
//! <instance>/logical/<id>.manifest.json   ours
//! ```
//!
//! Backup ids are UTC timestamps (`20261123T061500Z`, with `-2`, `-3` … when one is taken twice
//! in a second), so sorting them sorts backups by time.

pub mod base;
pub mod clock;
pub mod logical;
pub mod parts;
pub mod retention;
pub mod stats;
pub mod stream;
pub mod syncer;
pub mod tar;
pub mod verify;

use anyhow::Context;
use futures::{StreamExt, TryStreamExt};
use toygres_common::sidecar_api::{BackupKind, BackupManifest};

use crate::archive::ArchiveSetup;
use crate::objstore::{PutOutcome, Store};
use crate::postgres::{Member, OpError};

/// Manifests [`Catalog::list`] reads at a time.
const MANIFEST_READS: usize = 16;

/// Keys of one instance's backups.
#[derive(Debug, Clone)]
pub struct Catalog {
    pub store: Store,
    pub instance: String,
}

impl Catalog {
    pub fn new(store: Store, instance: &str) -> Self {
        Self {
            store,
            instance: instance.to_string(),
        }
    }

    pub fn base_dir(&self, id: &str) -> String {
        format!("{}/base/{id}", self.instance)
    }

    pub fn base_manifest_key(&self, id: &str) -> String {
        format!("{}/manifest.json", self.base_dir(id))
    }

    pub fn pg_manifest_key(&self, id: &str) -> String {
        format!("{}/backup_manifest", self.base_dir(id))
    }

    pub fn dump_key(&self, id: &str, database: &str) -> String {
        format!("{}/logical/{id}-{database}.dump", self.instance)
    }

    pub fn logical_manifest_key(&self, id: &str) -> String {
        format!("{}/logical/{id}.manifest.json", self.instance)
    }

    /// The object that reserves backup id `id` of `kind` for one backup.
    pub fn claim_key(&self, id: &str, kind: BackupKind) -> String {
        match kind {
            BackupKind::Base => format!("{}/claim", self.base_dir(id)),
            BackupKind::Logical => format!("{}/logical/{id}.claim", self.instance),
        }
    }

    /// Reserves a fresh id for a backup of `kind` starting at `unix_micros`, taken by `member`:
    /// the timestamp, or the timestamp with `-2`, `-3` … when that is taken. The reservation is
    /// a create-if-absent write, so two backups (on two members of one instance, or two
    /// requests at once) never get the same id.
    pub async fn claim_id(
        &self,
        kind: BackupKind,
        unix_micros: i64,
        member: &str,
    ) -> anyhow::Result<String> {
        let stamp = clock::id_stamp(unix_micros);
        let mut taken = self.store.list(&format!("{}/base/", self.instance)).await?;
        taken.extend(
            self.store
                .list(&format!("{}/logical/", self.instance))
                .await?,
        );
        let used = |id: &str| {
            let base = format!("{}/base/{id}/", self.instance);
            let logical = format!("{}/logical/{id}", self.instance);
            taken.iter().any(|k| {
                k.starts_with(&base)
                    || k.strip_prefix(&logical)
                        .is_some_and(|rest| rest.starts_with('-') || rest.starts_with('.'))
            })
        };
        let candidates =
            std::iter::once(stamp.clone()).chain((2..1000).map(|n| format!("{stamp}-{n}")));
        for id in candidates {
            if used(&id) {
                continue;
            }
            let claim = self.claim_key(&id, kind);
            if self
                .store
                .put_new(&claim, member.as_bytes().to_vec(), &[])
                .await?
                == PutOutcome::Created
            {
                return Ok(id);
            }
        }
        anyhow::bail!("find an unused backup id for {stamp}")
    }

    /// Best effort: deletes every object of base backup `id` (a failed one).
    pub async fn discard_base(&self, id: &str) {
        let keys = match self.store.list(&format!("{}/", self.base_dir(id))).await {
            Ok(keys) => keys,
            Err(e) => {
                tracing::warn!(backup = %id, "list the objects of a failed backup: {e:#}");
                return;
            }
        };
        self.discard(id, &keys).await;
    }

    /// Best effort: deletes `keys`, the objects of a failed backup `id`, claim last.
    pub async fn discard(&self, id: &str, keys: &[String]) {
        let (claims, data): (Vec<&String>, Vec<&String>) =
            keys.iter().partition(|k| k.ends_with("claim"));
        for key in data.into_iter().chain(claims) {
            if let Err(e) = self.store.delete(key).await {
                tracing::warn!(backup = %id, "delete {key} of a failed backup: {e:#}");
            }
        }
    }

    /// Stores a manifest (create-if-absent: a complete backup is never rewritten).
    pub async fn put_manifest(&self, manifest: &BackupManifest) -> anyhow::Result<()> {
        let key = match manifest.kind {
            BackupKind::Base => self.base_manifest_key(&manifest.id),
            BackupKind::Logical => self.logical_manifest_key(&manifest.id),
        };
        let json = serde_json::to_vec_pretty(manifest).context("serialize the manifest")?;
        match self.store.put_new(&key, json, &[]).await? {
            PutOutcome::Created => Ok(()),
            PutOutcome::AlreadyExists => {
                anyhow::bail!("{} exists already", self.store.describe(&key))
            }
        }
    }

    /// Every complete backup of the instance (those with a manifest), oldest first.
    pub async fn list(&self) -> anyhow::Result<Vec<BackupManifest>> {
        let mut keys = self.store.list(&format!("{}/base/", self.instance)).await?;
        keys.retain(|k| k.ends_with("/manifest.json"));
        let mut logical = self
            .store
            .list(&format!("{}/logical/", self.instance))
            .await?;
        logical.retain(|k| k.ends_with(".manifest.json"));
        keys.extend(logical);
        // Read the manifests concurrently (a few at a time): against a remote store each read
        // is a round trip, and a long-lived instance has hundreds of backups.
        let reads = futures::stream::iter(keys)
            .map(|key| async move {
                let bytes = self.store.get(&key).await?;
                bytes
                    .map(|bytes| {
                        serde_json::from_slice::<BackupManifest>(&bytes)
                            .with_context(|| format!("parse {}", self.store.describe(&key)))
                    })
                    .transpose()
            })
            .buffer_unordered(MANIFEST_READS);
        let mut out: Vec<BackupManifest> = reads
            .try_filter_map(|m| async move { Ok(m) })
            .try_collect()
            .await?;
        out.sort_by(|a, b| {
            a.id.cmp(&b.id)
                .then(kind_rank(a.kind).cmp(&kind_rank(b.kind)))
        });
        Ok(out)
    }

    /// The manifest of backup `id` of `kind`, if it is complete.
    pub async fn get(&self, id: &str, kind: BackupKind) -> anyhow::Result<Option<BackupManifest>> {
        check_id(id)?;
        let key = match kind {
            BackupKind::Base => self.base_manifest_key(id),
            BackupKind::Logical => self.logical_manifest_key(id),
        };
        match self.store.get(&key).await? {
            None => Ok(None),
            Some(bytes) => {
                Ok(Some(serde_json::from_slice(&bytes).with_context(|| {
                    format!("parse {}", self.store.describe(&key))
                })?))
            }
        }
    }
}

/// The catalog of this member's instance in its archive store; 409 without one.
pub fn catalog_of(member: &Member) -> Result<Catalog, OpError> {
    let archive = require_archive(member)?;
    let store = Store::open(&archive.settings.url)?;
    Ok(Catalog::new(store, &archive.settings.instance))
}

/// Refuses a backup when there is nowhere to put it or nothing to copy.
pub fn require_archive(member: &Member) -> Result<&ArchiveSetup, OpError> {
    member.cfg.archive.as_ref().ok_or_else(|| {
        OpError::Conflict(
            "no object store is configured (--archive-url): nowhere to back up to".into(),
        )
    })
}

/// Refuses when Postgres is not running.
pub fn require_running(member: &Member) -> Result<(), OpError> {
    if member.pid().is_none() {
        return Err(OpError::Conflict("postgres is not running".into()));
    }
    Ok(())
}

fn kind_rank(kind: BackupKind) -> u8 {
    match kind {
        BackupKind::Base => 0,
        BackupKind::Logical => 1,
    }
}

/// Backup ids come from us, but reach us again through URLs and flags: only the characters an
/// id can have are let into a key.
pub fn check_id(id: &str) -> anyhow::Result<()> {
    if id.is_empty() || id.len() > 64 || !id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
    {
        anyhow::bail!("{id:?} is not a backup id");
    }
    Ok(())
}

/// Database names allowed in a logical backup's keys: Postgres allows almost anything, the
/// store's keys should not.
pub fn check_database_name(name: &str) -> anyhow::Result<()> {
    if name.is_empty()
        || name.len() > 63
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    {
        anyhow::bail!(
            "database name {name:?} is not supported for logical backups (letters, digits, '_' \
             and '-', at most 63)"
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn ids_are_timestamps_made_unique_with_a_suffix() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("file://{}/s", dir.path().display())
            .parse()
            .unwrap();
        let cat = Catalog::new(Store::open(&url).unwrap(), "db");
        let t = 1_795_414_500_000_000; // 2026-11-23T06:15:00Z
        let claim = |kind| cat.claim_id(kind, t, "db-0");
        assert_eq!(claim(BackupKind::Base).await.unwrap(), "20261123T061500Z");
        assert_eq!(claim(BackupKind::Base).await.unwrap(), "20261123T061500Z-2");
        assert_eq!(
            claim(BackupKind::Logical).await.unwrap(),
            "20261123T061500Z-3"
        );
        assert!(cat
            .store
            .exists("db/logical/20261123T061500Z-3.claim")
            .await
            .unwrap());
        // Two claims at once never get the same id.
        let (a, b) = tokio::join!(claim(BackupKind::Base), claim(BackupKind::Base));
        let (a, b) = (a.unwrap(), b.unwrap());
        assert_ne!(a, b);
        // A failed backup leaves nothing behind, its claim included.
        cat.store
            .put_new(&format!("db/base/{a}/base.tar.gz"), vec![1], &[])
            .await
            .unwrap();
        cat.discard_base(&a).await;
        assert!(cat
            .store
            .list(&format!("db/base/{a}/"))
            .await
            .unwrap()
            .is_empty());
        assert!(cat
            .store
            .exists(&format!("db/base/{b}/claim"))
            .await
            .unwrap());
        assert!(check_id("20261123T061500Z-2").is_ok());
        assert!(check_id("../x").is_err());
        assert!(check_database_name("app_1").is_ok());
        assert!(check_database_name("a/b").is_err());
    }
}
