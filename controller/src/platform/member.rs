//! A member as it crosses the [`super::Platform`] trait: how it is created (bootstrap, restore
//! source, placement, archive), how it is reached, and what the platform reports of it.

use serde::{Deserialize, Serialize};
use toygres_common::names::{validate_instance_name, validate_member_name, PgAddress};

use super::error::PlatformError;
use super::secrets::SecretRefs;

/// How a member's data directory is created the first time it starts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "mode", rename_all = "kebab-case")]
pub enum Bootstrap {
    /// initdb: a new primary.
    Init,
    /// pg_basebackup from `primary`, then stream from it: a new standby.
    Standby { primary: PgAddress },
    /// A base backup of another instance from its store, recovered to a target and promoted:
    /// the first member of an instance made by a restore. It archives under its own instance's
    /// name, never the source's (unless the restore is in place: then they are the same).
    Restore(RestoreSource),
}

/// Where a restored member's data comes from (see [`Bootstrap::Restore`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RestoreSource {
    /// The instance whose backup is restored.
    pub instance: String,
    /// The store holding its backups and WAL (a URL without credentials).
    pub store_url: String,
    /// The base backup, as the store names it.
    pub backup_id: String,
    /// Recover to just after the last commit at or before this time (RFC 3339, UTC).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_time: Option<String>,
    /// Recover to just after this WAL position.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_lsn: Option<String>,
    /// Recover to just after this transaction commits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_xid: Option<String>,
    /// Recover to this restore point.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_name: Option<String>,
    /// The restore replaces `instance`'s own data (an in-place restore): the member archives
    /// into `instance`'s WAL, on the new timeline its promotion starts.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub in_place: bool,
}

impl RestoreSource {
    /// The sidecar's `--restore-*` / `--recovery-target-*` settings, as (flag name, the
    /// environment variable of the same setting, value).
    pub fn sidecar_settings(&self) -> Vec<(&'static str, &'static str, String)> {
        let mut settings = vec![
            (
                "restore-from",
                "TOYGRES_RESTORE_FROM",
                self.store_url.clone(),
            ),
            (
                "restore-instance",
                "TOYGRES_RESTORE_INSTANCE",
                self.instance.clone(),
            ),
            (
                "restore-backup-id",
                "TOYGRES_RESTORE_BACKUP_ID",
                self.backup_id.clone(),
            ),
        ];
        if let Some(time) = &self.target_time {
            settings.push((
                "recovery-target-time",
                "TOYGRES_RECOVERY_TARGET_TIME",
                time.clone(),
            ));
        }
        if let Some(lsn) = &self.target_lsn {
            settings.push((
                "recovery-target-lsn",
                "TOYGRES_RECOVERY_TARGET_LSN",
                lsn.clone(),
            ));
        }
        if let Some(xid) = &self.target_xid {
            settings.push((
                "recovery-target-xid",
                "TOYGRES_RECOVERY_TARGET_XID",
                xid.clone(),
            ));
        }
        if let Some(name) = &self.target_name {
            settings.push((
                "recovery-target-name",
                "TOYGRES_RECOVERY_TARGET_NAME",
                name.clone(),
            ));
        }
        if self.in_place {
            settings.push((
                "restore-in-place",
                "TOYGRES_RESTORE_IN_PLACE",
                "true".to_string(),
            ));
        }
        settings
    }
}

/// Where a member would like to run. The local platform records the hints and ignores them; on
/// Kubernetes they become a node selector (zone) and resource requests (size).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Placement {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub zone: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<String>,
}

/// Everything needed to create one member (one pod: a sidecar and its Postgres).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberSpec {
    pub instance: String,
    /// `<instance>-<n>`.
    pub member: String,
    pub bootstrap: Bootstrap,
    pub secrets: SecretRefs,
    #[serde(default)]
    pub placement: Placement,
    /// Where its WAL is archived (by Postgres, only while it is the primary); none when the
    /// instance's backups are off.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub archive: Option<MemberArchive>,
}

/// A member's WAL archive: the instance's store, and the prefix every member of the instance
/// shares (the instance's name), so archiving carries on across failover and switchover.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberArchive {
    /// The store's URL (it holds no credentials).
    pub store_url: String,
    /// The name of the secret holding the store's credentials, if it needs any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials_secret: Option<String>,
    /// The sidecar's `--wal-compression` value; its default when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compression: Option<String>,
    /// The name of the store secret holding the key WAL and backups are encrypted with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encryption_secret: Option<String>,
    /// The store secrets of the keys it replaced (`toygres backup rotate-key`): what they
    /// encrypted is still decrypted with them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub previous_encryption_secrets: Vec<String>,
}

impl MemberSpec {
    /// Checks the names: the instance's is a valid instance name, the member's a valid member
    /// name starting with `<instance>-`.
    pub fn validate(&self) -> Result<(), PlatformError> {
        validate_member_of(&self.instance, &self.member)?;
        for secret in self.secrets.all() {
            if secret.instance != self.instance {
                return Err(PlatformError::Invalid(format!(
                    "member {} of instance {} refers to secret {secret} of another instance",
                    self.member, self.instance
                )));
            }
        }
        Ok(())
    }
}

/// Checks that `member` is a valid name for a member of the valid instance `instance`.
pub fn validate_member_of(instance: &str, member: &str) -> Result<(), PlatformError> {
    validate_instance_name(instance)?;
    validate_member_name(member)?;
    let belongs = member
        .strip_prefix(instance)
        .and_then(|rest| rest.strip_prefix('-'))
        .is_some_and(|suffix| !suffix.is_empty());
    if !belongs {
        return Err(PlatformError::Invalid(format!(
            "member name {member:?} does not start with \"{instance}-\""
        )));
    }
    Ok(())
}

/// How to reach a member.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberAddress {
    /// Postgres (for clients, replication and the endpoints).
    pub pg: PgAddress,
    /// The sidecar's HTTP API, for example `https://127.0.0.1:8008`.
    pub api_url: String,
}

/// A member as [`Platform::create_member`] returns it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberHandle {
    pub instance: String,
    pub member: String,
    pub address: MemberAddress,
}

/// Whether a member's pod is running, as far as the platform can tell (not whether Postgres is
/// healthy: that is the sidecar's `/readyz`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum MemberState {
    /// The pod runs.
    Running,
    /// The pod was stopped on purpose ([`Platform::kill_member`]) and stays down until
    /// [`Platform::create_member`] starts it again.
    Stopped,
    /// The pod should run but does not (it died; the platform restarts it).
    Down,
}

/// A member as [`Platform::list_members`] reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberInfo {
    pub member: String,
    pub address: MemberAddress,
    pub state: MemberState,
    pub placement: Placement,
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn members_must_belong_to_their_instance() {
        validate_member_of("db", "db-0").unwrap();
        validate_member_of("db", "db-12").unwrap();
        assert!(validate_member_of("db", "dbx-0").is_err());
        assert!(validate_member_of("db", "db-").is_err());
        assert!(validate_member_of("db", "db").is_err());
        assert!(validate_member_of("db", "other-0").is_err());
        assert!(validate_member_of("Db", "Db-0").is_err());
        assert!(validate_member_of("db", "db-../x").is_err());
    }

    #[test]
    fn a_spec_may_not_use_another_instances_secrets() {
        let spec = MemberSpec {
            instance: "db".into(),
            member: "db-0".into(),
            bootstrap: Bootstrap::Init,
            secrets: SecretRefs::for_instance("other"),
            placement: Placement::default(),
            archive: None,
        };
        assert!(matches!(spec.validate(), Err(PlatformError::Invalid(_))));
        let spec = MemberSpec {
            secrets: SecretRefs::for_instance("db"),
            ..spec
        };
        spec.validate().unwrap();
    }

    #[test]
    fn bootstrap_is_tagged_by_mode() {
        let standby = Bootstrap::Standby {
            primary: PgAddress {
                host: "127.0.0.1".into(),
                port: 5432,
            },
        };
        assert_eq!(
            serde_json::to_string(&standby).unwrap(),
            "{\"mode\":\"standby\",\"primary\":{\"host\":\"127.0.0.1\",\"port\":5432}}"
        );
        assert_eq!(
            serde_json::to_string(&Bootstrap::Init).unwrap(),
            "{\"mode\":\"init\"}"
        );
    }
}
