//! Backups in the controller's operator API: an instance's backup configuration (part of
//! `POST /v1/instances`, validated once into [`BackupConfig`]), the request that takes a backup
//! (`POST /v1/instances/{name}/backups`) and the backups as the CMS records them.
//!
//! A configuration names its store and, when the store needs credentials, the *name* of the
//! secret holding them: never a key, a password or a token.

use serde::{Deserialize, Serialize};

use crate::request::{InvalidRequest, OperationAccepted};
use crate::sidecar_api::BackupKind;
use crate::store_url::StoreUrl;

/// The most characters of a backup label.
pub const MAX_LABEL_CHARS: usize = 100;

/// `"backup"` in `POST /v1/instances`: absent means on, with the platform's defaults.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackupConfigRequest {
    /// `false` turns backups (and WAL archiving) off; on when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    /// The object store (`file:///path`, `s3://bucket/prefix`, `az://…`, `gs://…`); the
    /// platform's default when absent (local: `file://$TOYGRES_HOME/backups`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub store_url: Option<String>,
    /// The name of the secret that holds the store's credentials (a reference, never the
    /// credentials themselves).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials_secret: Option<String>,
    /// The name of the store secret holding the key WAL and backups are encrypted with
    /// (`TOYGRES_BACKUP_ENCRYPTION_KEY`, 64 hex digits): a reference, never the key. Not
    /// encrypted when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encryption_secret: Option<String>,
    /// Cron expression of scheduled base backups (stored; the scheduler comes later).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_schedule: Option<String>,
    /// Cron expression of scheduled logical backups of every database.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logical_schedule: Option<String>,
    /// How many daily, weekly and monthly backups to keep (stored; applied later).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retention: Option<RetentionSettings>,
    /// How WAL and base backups are compressed: `zstd` (the default), `gzip`, `lz4` or `none`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compression: Option<String>,
}

/// The compressions `"backup": {"compression": …}` accepts.
pub const COMPRESSIONS: [&str; 4] = ["zstd", "gzip", "lz4", "none"];
/// The compression of a new instance that names none.
pub const DEFAULT_COMPRESSION: &str = "zstd";

/// A GFS retention policy: the newest backup of each of the last `daily` days, `weekly` weeks
/// and `monthly` months, and every backup of the last `window_days` days.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetentionSettings {
    #[serde(default = "default_daily")]
    pub daily: u32,
    #[serde(default = "default_weekly")]
    pub weekly: u32,
    #[serde(default = "default_monthly")]
    pub monthly: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window_days: Option<u32>,
}

fn default_daily() -> u32 {
    7
}
fn default_weekly() -> u32 {
    4
}
fn default_monthly() -> u32 {
    3
}

impl Default for RetentionSettings {
    fn default() -> Self {
        Self {
            daily: default_daily(),
            weekly: default_weekly(),
            monthly: default_monthly(),
            window_days: None,
        }
    }
}

/// The default base backup schedule: Sundays at 01:00 UTC.
pub const DEFAULT_BASE_SCHEDULE: &str = "0 1 * * 0";
/// The default logical backup schedule: every day at 02:00 UTC.
pub const DEFAULT_LOGICAL_SCHEDULE: &str = "0 2 * * *";

/// An instance's backup configuration, checked: what the CMS stores in `instances.backup`
/// (NULL when backups are off). Cron expressions are checked by the controller, which owns the
/// cron parser.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackupConfig {
    /// The store's canonical URL; `None` until the controller fills in its platform's default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub store_url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials_secret: Option<String>,
    /// The store secret holding the encryption key, when WAL and backups are encrypted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encryption_secret: Option<String>,
    /// The store secrets of the keys `encryption_secret` replaced (`toygres backup rotate-key`),
    /// oldest first: what they encrypted is still read with them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub previous_encryption_secrets: Vec<String>,
    pub base_schedule: String,
    pub logical_schedule: String,
    pub retention: RetentionSettings,
    /// Scheduled backups are suspended (`toygres backup schedule NAME --suspend`); WAL is still
    /// archived and backups can still be taken on demand.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub suspended: bool,
    /// One of [`COMPRESSIONS`]; absent in configurations recorded before it could be chosen
    /// (their members get the sidecar's default, zstd; objects already written stay readable).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compression: Option<String>,
}

/// `PUT /v1/instances/{name}/backups/schedule`: change the base backup schedule, suspend it or
/// resume it (absent fields are left as they are).
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackupScheduleRequest {
    /// A cron expression (five fields, or six with seconds first; `@daily`, `@weekly`, …).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_schedule: Option<String>,
    /// The cron expression of scheduled logical backups (of every database).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logical_schedule: Option<String>,
    /// Suspends (or resumes) both schedules.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub suspended: Option<bool>,
}

/// An instance's base backup schedule and when it next fires.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackupScheduleView {
    pub instance: String,
    pub base_schedule: String,
    pub suspended: bool,
    /// RFC 3339; none while suspended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_run: Option<String>,
    /// The logical backup schedule (every database).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logical_schedule: Option<String>,
    /// RFC 3339; none while suspended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_logical_run: Option<String>,
}

impl BackupConfig {
    /// The sidecar's `--wal-compression` value for this configuration's compression (gzip at
    /// level 1, what members used before the choice existed; zstd at its fast level 1).
    pub fn sidecar_compression(&self) -> Option<&'static str> {
        Some(match self.compression.as_deref()? {
            "gzip" => "gzip:1",
            "lz4" => "lz4",
            "none" => "none",
            _ => "zstd",
        })
    }

    /// Checks a create request's `"backup"`: `None` when backups are off.
    pub fn from_request(
        request: Option<BackupConfigRequest>,
    ) -> Result<Option<Self>, InvalidRequest> {
        let request = request.unwrap_or_default();
        if request.enabled == Some(false) {
            let set = request.store_url.is_some()
                || request.credentials_secret.is_some()
                || request.encryption_secret.is_some()
                || request.base_schedule.is_some()
                || request.logical_schedule.is_some()
                || request.retention.is_some()
                || request.compression.is_some();
            if set {
                return Err(InvalidRequest::new(
                    "backup",
                    "backups are off (\"enabled\": false): leave out the other backup settings",
                ));
            }
            return Ok(None);
        }
        let store_url = match &request.store_url {
            None => None,
            Some(url) => Some(
                url.parse::<StoreUrl>()
                    .map_err(|e| InvalidRequest::new("backup.store_url", e.to_string()))?
                    .to_string(),
            ),
        };
        if let Some(secret) = &request.credentials_secret {
            validate_secret_name(secret)?;
        }
        if let Some(secret) = &request.encryption_secret {
            validate_encryption_secret_name(secret)?;
        }
        let schedule = |given: &Option<String>, default: &str| {
            given
                .as_deref()
                .map(str::trim)
                .unwrap_or(default)
                .to_string()
        };
        let compression = match request.compression.as_deref().map(str::trim) {
            None => DEFAULT_COMPRESSION.to_string(),
            Some(c) if COMPRESSIONS.contains(&c) => c.to_string(),
            Some(c) => {
                return Err(InvalidRequest::new(
                    "backup.compression",
                    format!(
                        "{c:?} is not a compression: use one of {}",
                        COMPRESSIONS.join(", ")
                    ),
                ))
            }
        };
        let retention = request.retention.unwrap_or_default();
        if retention.daily + retention.weekly + retention.monthly == 0
            && retention.window_days.unwrap_or(0) == 0
        {
            return Err(InvalidRequest::new(
                "backup.retention",
                "would keep no backup: keep at least one daily, weekly or monthly backup, or a \
                 recovery window",
            ));
        }
        if [retention.daily, retention.weekly, retention.monthly]
            .iter()
            .chain(retention.window_days.as_ref())
            .any(|n| *n > 3660)
        {
            return Err(InvalidRequest::new(
                "backup.retention",
                "counts and windows are at most 3660",
            ));
        }
        Ok(Some(Self {
            store_url,
            credentials_secret: request.credentials_secret,
            encryption_secret: request.encryption_secret,
            previous_encryption_secrets: Vec::new(),
            base_schedule: schedule(&request.base_schedule, DEFAULT_BASE_SCHEDULE),
            logical_schedule: schedule(&request.logical_schedule, DEFAULT_LOGICAL_SCHEDULE),
            retention,
            suspended: false,
            compression: Some(compression),
        }))
    }
}

/// A secret's name: a DNS-1123 subdomain-like name (what Kubernetes accepts), so that nothing
/// that looks like a key or a password is taken for one.
pub fn validate_secret_name(name: &str) -> Result<(), InvalidRequest> {
    let ok = !name.is_empty()
        && name.len() <= 253
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.')
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name.ends_with(|c: char| c.is_ascii_alphanumeric());
    if ok {
        Ok(())
    } else {
        Err(InvalidRequest::new(
            "backup.credentials_secret",
            "must be the name of a secret (lowercase letters, digits, '-' and '.'), never the \
             credentials themselves",
        ))
    }
}

/// [`validate_secret_name`] for `backup.encryption_secret`.
pub fn validate_encryption_secret_name(name: &str) -> Result<(), InvalidRequest> {
    // 64 hex digits is a key given where its secret's name belongs: refused like any other
    // non-name (and never echoed).
    let looks_like_key = name.len() == 64 && name.chars().all(|c| c.is_ascii_hexdigit());
    let checked = if looks_like_key {
        validate_secret_name("")
    } else {
        validate_secret_name(name)
    };
    checked.map_err(|_| {
        InvalidRequest::new(
            "backup.encryption_secret",
            "must be the name of a store secret (lowercase letters, digits, '-' and '.') holding \
             TOYGRES_BACKUP_ENCRYPTION_KEY, never the key itself",
        )
    })
}

/// A restore point name (`pg_create_restore_point`, `recovery_target_name`): 1 to 63 bytes
/// (Postgres cuts longer ones short), no control characters.
pub fn validate_restore_point_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > 63 || name.chars().any(char::is_control) {
        return Err(format!(
            "{name:?} is not a restore point name (1 to 63 bytes, no control characters)"
        ));
    }
    Ok(())
}

/// `POST /v1/instances/{name}/backups/restore-points`: makes a named restore point on the
/// instance's primary, which `restore … --name` can recover to.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RestorePointCreate {
    /// The restore point's name (1 to 63 bytes, no control characters).
    pub name: String,
}

/// The restore point made: its WAL position, and whether the WAL holding it was archived
/// before the answer.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RestorePointView {
    pub instance: String,
    pub name: String,
    pub lsn: String,
    pub member: String,
    pub archived: bool,
}

/// `POST /v1/instances/{name}/backups/rotate-key`: encrypt the instance's WAL and backups with
/// the key in another store secret from now on; what the old key encrypted stays readable.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RotateKeyRequest {
    /// The store secret holding the new key (`TOYGRES_BACKUP_ENCRYPTION_KEY`): a reference,
    /// never the key.
    pub new_secret: String,
}

/// The instance's keys after a rotation, by store secret and by public key id (a one-way
/// digest of the key, safe to show).
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RotateKeyView {
    pub instance: String,
    /// The secret whose key encrypts from now on.
    pub encryption_secret: String,
    /// The secrets of the keys it replaced, oldest first (still used to decrypt).
    pub previous_encryption_secrets: Vec<String>,
    /// The id of the key that encrypts from now on, as the members report it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_id: Option<String>,
    /// The members that took the new key.
    pub members: Vec<String>,
    /// Members that could not be asked (down or unreachable): they take the key ring when
    /// their sidecar starts; until then a running one still encrypts with the old key (which
    /// stays readable).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pending: Vec<String>,
}

/// `POST /v1/instances/{name}/backups`.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateBackupRequest {
    /// `base` (the default) or `logical`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// A free text to find the backup by (at most 100 characters).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    /// Logical backups: the databases to dump (default: `postgres`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub databases: Vec<String>,
}

/// A [`CreateBackupRequest`] whose values were checked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ValidatedCreateBackup {
    pub kind: BackupKind,
    pub label: Option<String>,
    pub databases: Vec<String>,
}

impl TryFrom<CreateBackupRequest> for ValidatedCreateBackup {
    type Error = InvalidRequest;

    fn try_from(request: CreateBackupRequest) -> Result<Self, Self::Error> {
        let kind = match request.kind.as_deref() {
            None | Some("base") => BackupKind::Base,
            Some("logical") => BackupKind::Logical,
            Some(other) => {
                return Err(InvalidRequest::new(
                    "kind",
                    format!("must be \"base\" or \"logical\", not {other:?}"),
                ))
            }
        };
        if let Some(label) = &request.label {
            if label.chars().count() > MAX_LABEL_CHARS || label.chars().any(char::is_control) {
                return Err(InvalidRequest::new(
                    "label",
                    format!("at most {MAX_LABEL_CHARS} characters, no control characters"),
                ));
            }
        }
        let databases = match kind {
            BackupKind::Base if !request.databases.is_empty() => {
                return Err(InvalidRequest::new(
                    "databases",
                    "a base backup copies every database: leave out \"databases\"",
                ))
            }
            BackupKind::Base => Vec::new(),
            BackupKind::Logical if request.databases.is_empty() => vec!["postgres".to_string()],
            BackupKind::Logical => request.databases,
        };
        if let Some(bad) = databases
            .iter()
            .find(|d| d.is_empty() || d.len() > 63 || d.chars().any(char::is_control))
        {
            return Err(InvalidRequest::new(
                "databases",
                format!("{bad:?} is not a database name"),
            ));
        }
        Ok(Self {
            kind,
            label: request.label,
            databases,
        })
    }
}

/// `POST /v1/instances/{name}/backups` accepted: the operation that takes the backup, and the
/// backup's id (`GET /v1/backups/{id}`).
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackupAccepted {
    pub operation_id: String,
    /// `backup`.
    pub kind: String,
    pub instance: String,
    pub backup_id: String,
}

impl BackupAccepted {
    /// The accepted operation with the id of the backup it takes.
    pub fn new(operation: OperationAccepted, backup_id: String) -> Self {
        Self {
            operation_id: operation.operation_id,
            kind: operation.kind,
            instance: operation.instance,
            backup_id,
        }
    }
}

/// `POST /v1/instances/{name}/restore`: a new instance `to` made from `{name}`'s backups,
/// recovered to `time` or `lsn` (at most one; the end of the archive when neither), from the
/// newest base backup complete before that target or from `backup_id`. Answered with the new
/// instance's create operation. With `in_place` (and `confirm` naming `{name}`), `{name}`'s own
/// data is replaced instead, by an operation queued on the instance.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RestoreRequest {
    /// The new instance's name (leave it out with `in_place`).
    #[serde(default)]
    pub to: String,
    /// Recover to just after the last commit at or before this time (RFC 3339 with a zone).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time: Option<String>,
    /// Recover to just after this WAL position (`0/3000060`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lsn: Option<String>,
    /// Recover to just after this transaction commits (a positive transaction id, as
    /// `txid_current()` gives it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub xid: Option<u64>,
    /// Recover to this restore point (`restore-point`, or `pg_create_restore_point`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restore_point: Option<String>,
    /// The base backup to start from (`bk-…`, of the source instance).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup_id: Option<String>,
    /// Standbys of the new instance, cloned from its restored primary (default 0).
    #[serde(default)]
    pub replicas: i64,
    /// `sync` or `async` (the default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replication: Option<String>,
    /// The store secret holding the key the source's backups were encrypted with (default: the
    /// source's own); the new instance encrypts its own backups with it too.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encryption_secret: Option<String>,
    /// Restore the instance itself instead of making a new one: its data is replaced (kept
    /// aside until the restored primary accepts writes) and its standbys are cloned again.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub in_place: bool,
    /// With `in_place`: the instance's name again, or the request is refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub confirm: Option<String>,
}

/// `GET /v1/instances/{name}/backups/cleanup`: what applying the instance's retention policy now
/// would keep (with the rules that keep each backup) and delete.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CleanupPlan {
    pub instance: String,
    pub keep: Vec<KeptBackup>,
    /// Backup ids, oldest first.
    pub delete: Vec<String>,
}

/// A backup a cleanup keeps, and why (`daily`, `weekly`, `monthly`, `in_window`,
/// `window_base`, `newest`, `running`).
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeptBackup {
    pub id: String,
    pub reasons: Vec<String>,
}

/// One backup as the CMS records it (`GET /v1/backups/{id}`).
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackupView {
    pub id: String,
    pub instance: String,
    /// `base` or `logical`.
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    /// `running`, `succeeded` or `failed`.
    pub status: String,
    /// The operation that took it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub operation_id: Option<String>,
    /// The member it was taken on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub member: Option<String>,
    #[serde(default)]
    pub from_standby: bool,
    /// Where it lies in the store (relative to the store URL).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub store_path: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub raw_bytes: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stored_bytes: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_lsn: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_lsn: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeline: Option<u32>,
    /// RFC 3339.
    pub started_at: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The last verification's result (verification comes later).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verification: Option<serde_json::Value>,
    /// A base backup off the archive's newest timeline history: an in-place restore went back
    /// to a point before it, so a restore of the instance as it is now cannot start from it.
    /// Kept by the retention policy as a series of its own; never chosen for a restore.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub abandoned: bool,
}

/// `GET /v1/instances/{name}/backups/window`: the points a restore of the instance can reach,
/// from the end of its oldest kept base backup to the last WAL its primary archived.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecoverabilityWindow {
    pub instance: String,
    /// The earliest time a restore can reach (RFC 3339): when the oldest kept base backup was
    /// complete. None without a base backup.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub earliest_restorable: Option<String>,
    /// That backup.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub earliest_backup_id: Option<String>,
    /// The newest WAL file the primary archived.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub archived_wal: Option<String>,
    /// When it was archived (RFC 3339): the latest time a restore can surely reach.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub archived_at: Option<String>,
    /// Why the archive's end is not known (the primary did not answer, nothing archived yet).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub archive_unknown: Option<String>,
}

/// `GET /v1/instances/{name}/backups`: newest first.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackupList {
    pub backups: Vec<BackupView>,
}

#[cfg(test)]
mod tests;
