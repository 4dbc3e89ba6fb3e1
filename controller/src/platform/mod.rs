//! Where pods and Services live: the one trait through which the controller creates, finds,
//! stops and removes an instance's members, keeps its credentials, and points its stable
//! endpoints at the right members.
//!
//! Two implementations follow the same contract: [`local::LocalPlatform`] (a member is a
//! `toygres-sidecar` process on loopback ports, an endpoint is a TCP proxy in the controller) and,
//! later, Kubernetes (a member is a one-replica StatefulSet `<instance>-<n>` with its PVC; the rw
//! and ro endpoints are Services selecting pods by a role label; credentials are Secrets).
//!
//! Every operation is idempotent — the durable orchestrations call them from activities, which
//! run at least once — and everything that crosses this trait is serializable and free of
//! passwords: credentials travel as [`SecretRef`]s that only the platform resolves.

use std::fmt;

use serde::{Deserialize, Serialize};
use toygres_common::names::{validate_instance_name, validate_member_name, InvalidName, PgAddress};

pub mod fleet_sim;
pub mod kubernetes;
pub mod local;

/// What went wrong on the platform.
#[derive(Debug, thiserror::Error)]
pub enum PlatformError {
    /// The member, endpoints or secret named does not exist.
    #[error("{kind} {name:?} does not exist")]
    NotFound { kind: &'static str, name: String },
    /// An instance or member name that cannot be used.
    #[error(transparent)]
    InvalidName(#[from] InvalidName),
    /// A request that contradicts the platform's state (for example, routing to a member of
    /// another instance).
    #[error("{0}")]
    Invalid(String),
    /// Anything else (I/O, processes, the Kubernetes API); the context says what failed.
    #[error(transparent)]
    Failed(#[from] anyhow::Error),
}

impl PlatformError {
    /// A [`PlatformError::NotFound`] for `kind` (`"member"`, `"endpoints"`, …) named `name`.
    pub fn not_found(kind: &'static str, name: impl Into<String>) -> Self {
        Self::NotFound {
            kind,
            name: name.into(),
        }
    }
}

/// Which credential of an instance a [`SecretRef`] names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SecretName {
    /// The password of the `postgres` superuser.
    SuperuserPassword,
    /// The password of the `replicator` role standbys stream with.
    ReplicationPassword,
    /// The bearer token of the instance's sidecars' API.
    SidecarToken,
    /// The password of the application database's owner role (see
    /// `toygres_common::app_access`).
    AppPassword,
}

impl SecretName {
    /// Every credential an instance has.
    pub const ALL: [SecretName; 4] = [
        SecretName::SuperuserPassword,
        SecretName::ReplicationPassword,
        SecretName::SidecarToken,
        SecretName::AppPassword,
    ];

    /// The name as a key: a file name in local mode, a key of the instance's Secret on
    /// Kubernetes.
    pub fn key(self) -> &'static str {
        match self {
            SecretName::SuperuserPassword => "superuser-password",
            SecretName::ReplicationPassword => "replication-password",
            SecretName::SidecarToken => "sidecar-token",
            SecretName::AppPassword => "app-password",
        }
    }
}

impl fmt::Display for SecretName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.key())
    }
}

/// A reference to one credential of one instance. Safe to log, store in the CMS and pass through
/// orchestration history: it holds no secret, only where the platform keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct SecretRef {
    pub instance: String,
    pub name: SecretName,
}

impl fmt::Display for SecretRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.instance, self.name)
    }
}

/// References to all credentials of an instance, as [`Platform::ensure_instance_secrets`]
/// returns them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecretRefs {
    pub superuser_password: SecretRef,
    pub replication_password: SecretRef,
    pub sidecar_token: SecretRef,
}

impl SecretRefs {
    /// The references of `instance`'s credentials (they need not exist yet).
    pub fn for_instance(instance: &str) -> Self {
        let reference = |name| SecretRef {
            instance: instance.to_string(),
            name,
        };
        Self {
            superuser_password: reference(SecretName::SuperuserPassword),
            replication_password: reference(SecretName::ReplicationPassword),
            sidecar_token: reference(SecretName::SidecarToken),
        }
    }

    /// The application owner's password (not a field: references recorded in older histories
    /// have no such field, and the value derives from the instance anyway).
    pub fn app_password(&self) -> SecretRef {
        SecretRef {
            instance: self.superuser_password.instance.clone(),
            name: SecretName::AppPassword,
        }
    }

    /// The three references every member needs.
    pub fn all(&self) -> [&SecretRef; 3] {
        [
            &self.superuser_password,
            &self.replication_password,
            &self.sidecar_token,
        ]
    }
}

/// A credential's value, read through [`Platform::read_secret`]. Its `Debug` is redacted and it
/// has no `Display`, so it cannot end up in a log line by accident.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretValue(String);

impl SecretValue {
    /// Wraps a value read from the platform's store.
    pub fn new(value: String) -> Self {
        Self(value)
    }

    /// The value itself, to hand to a client library.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for SecretValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretValue(<redacted>)")
    }
}

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
    /// name, never the source's.
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
    /// The name of the store secret holding the key WAL and backups are encrypted with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encryption_secret: Option<String>,
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

/// An instance's stable endpoints: what clients connect to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Endpoints {
    /// Read-write: the current primary.
    pub rw: PgAddress,
    /// Read-only: the healthy standbys, or the primary when there is none.
    pub ro: PgAddress,
}

/// Which members an instance's endpoints lead to.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EndpointRoutes {
    /// The primary; `None` refuses read-write connections (during a failover, for example).
    pub rw: Option<String>,
    /// The healthy standbys; when empty, read-only connections go to the primary.
    #[serde(default)]
    pub ro: Vec<String>,
    /// With `rw` empty: hold new read-write connections until a primary is routed, instead of
    /// refusing them (a switchover or failover in progress).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub hold_rw: bool,
    /// With `ro` empty: lead ro to the primary (the default) or refuse.
    #[serde(default, skip_serializing_if = "is_default")]
    pub ro_fallback: toygres_common::ro_api::RoFallback,
    /// How ro spreads connections over `ro` (the local proxies; a Service spreads by itself).
    #[serde(default, skip_serializing_if = "is_default")]
    pub ro_balance: toygres_common::ro_api::RoBalance,
}

fn is_default<T: Default + PartialEq>(value: &T) -> bool {
    *value == T::default()
}

/// The platform the controller runs instances on.
#[async_trait::async_trait]
pub trait Platform: Send + Sync + fmt::Debug {
    /// Members are simulated (the hidden `fleet-sim` platform, for benchmarks): their sidecar
    /// API answers, but no Postgres listens, so nothing connects to one.
    fn simulated(&self) -> bool {
        false
    }

    /// Generates the instance's superuser password, replication password and sidecar token the
    /// first time, keeps them in the platform's secret store, and returns references to them.
    /// Later calls return the same references and leave the values alone.
    async fn ensure_instance_secrets(&self, instance: &str) -> Result<SecretRefs, PlatformError>;

    /// Removes the instance's credentials. Succeeds when they are already gone.
    async fn delete_instance_secrets(&self, instance: &str) -> Result<(), PlatformError>;

    /// Reads one credential, for the controller's own use (the sidecar token for its API, the
    /// superuser password for health queries).
    async fn read_secret(&self, secret: &SecretRef) -> Result<SecretValue, PlatformError>;

    /// Replaces one credential with a new random value, where [`Self::read_secret`] reads it
    /// (and, in local mode, rewrites its password file). Each call makes a new value: the
    /// caller sets the same value where it is checked (the role's password on the primary).
    async fn rotate_secret(&self, secret: &SecretRef) -> Result<(), PlatformError>;

    /// Where an operator finds a credential (a file path in local mode, a Secret and key on
    /// Kubernetes), to print instead of the value. `None` when there is nothing to point at.
    fn secret_location(&self, _secret: &SecretRef) -> Option<String> {
        None
    }

    /// The host names clients use for the instance's rw and ro endpoints when they are not
    /// the controller's own host (Kubernetes: the Services' DNS names). `None`: the endpoints
    /// listen on the controller's host (the local proxies).
    fn endpoint_hosts(&self, _instance: &str) -> Option<(String, String)> {
        None
    }

    /// A libpq password file (mode 0600) holding a password credential, for the `passfile`
    /// parameter of the connection URIs the platform prints, so they work as printed without
    /// the password in them. `None` when the platform keeps no such file (Kubernetes).
    fn passfile_location(&self, _secret: &SecretRef) -> Option<String> {
        None
    }

    /// The instance's CA certificate (PEM; public), which every member's server certificate
    /// chains to: the controller verifies members with it. The CA is made with the instance's
    /// credentials ([`Platform::ensure_instance_secrets`]); its key stays with the platform.
    async fn instance_ca(&self, instance: &str) -> Result<String, PlatformError>;

    /// A file holding the instance's CA certificate that clients on this machine can name in
    /// `sslrootcert` (local mode). `None` when there is no such file (Kubernetes).
    fn ca_file_location(&self, _instance: &str) -> Option<String> {
        None
    }

    /// The circuit breakers of the instance's ro standbys, by member, where the platform runs
    /// them (the local proxies). None on Kubernetes, whose `-ro` Service has no breakers.
    fn ro_breakers(
        &self,
        _instance: &str,
    ) -> std::collections::BTreeMap<String, crate::endpoints::BreakerState> {
        std::collections::BTreeMap::new()
    }

    /// Registers (or replaces) the store secret `name`: the settings an object store needs,
    /// named like the provider's variables (`AWS_SECRET_ACCESS_KEY`, …). Members of instances
    /// whose backups name it get it as files, never in argv or the environment.
    async fn put_store_secret(
        &self,
        name: &str,
        _values: &std::collections::BTreeMap<String, SecretValue>,
    ) -> Result<(), PlatformError> {
        Err(PlatformError::Invalid(format!(
            "this platform does not keep store secrets itself: create the secret {name} with              the platform's own tools"
        )))
    }

    /// The setting names of the store secret `name`; `None` when there is no such secret.
    async fn store_secret_keys(&self, name: &str) -> Result<Option<Vec<String>>, PlatformError> {
        Err(PlatformError::Invalid(format!(
            "this platform cannot look up the store secret {name} yet"
        )))
    }

    /// Removes the store secret `name`. Succeeds when it is already gone.
    async fn delete_store_secret(&self, name: &str) -> Result<(), PlatformError> {
        Err(PlatformError::Invalid(format!(
            "this platform does not keep store secrets itself: delete the secret {name} with              the platform's own tools"
        )))
    }

    /// The backup store an instance gets when its create request names none (local: a
    /// `file://` store under `$TOYGRES_HOME/backups`). `None`: the request must name one.
    fn default_backup_store(&self) -> Option<String> {
        None
    }

    /// Creates the member and starts it; when it already exists, makes sure it runs and returns
    /// it unchanged (the bootstrap only matters for an empty data directory). Returns once the
    /// pod is started, not once Postgres is ready: poll the sidecar's `/readyz` for that.
    async fn create_member(&self, spec: &MemberSpec) -> Result<MemberHandle, PlatformError>;

    /// Stops the member cleanly (escalating to a kill after a deadline) and removes it, with its
    /// data unless `keep_data`. Succeeds when the member does not exist.
    async fn delete_member(
        &self,
        instance: &str,
        member: &str,
        keep_data: bool,
    ) -> Result<(), PlatformError>;

    /// Where the member's Postgres and sidecar API are.
    async fn member_address(
        &self,
        instance: &str,
        member: &str,
    ) -> Result<MemberAddress, PlatformError>;

    /// Stops the member hard and at once, without asking its sidecar (fencing a primary whose
    /// sidecar does not answer). The member stays down, data kept, until
    /// [`Platform::create_member`] or [`Platform::delete_member`].
    async fn kill_member(&self, instance: &str, member: &str) -> Result<(), PlatformError>;

    /// The instance's members, sorted by name.
    async fn list_members(&self, instance: &str) -> Result<Vec<MemberInfo>, PlatformError>;

    /// Creates the instance's rw and ro endpoints when missing (their addresses never change
    /// afterwards) and returns them. New endpoints lead nowhere until
    /// [`Platform::route_endpoint`].
    async fn ensure_endpoints(&self, instance: &str) -> Result<Endpoints, PlatformError>;

    /// Points the endpoints at `routes`' members. Connections open to a member that is no longer
    /// a target of their endpoint are closed.
    async fn route_endpoint(
        &self,
        instance: &str,
        routes: &EndpointRoutes,
    ) -> Result<(), PlatformError>;

    /// Removes the instance's endpoints. Succeeds when they are already gone.
    async fn delete_endpoints(&self, instance: &str) -> Result<(), PlatformError>;
}

/// A client of `member`'s sidecar with the instance's sidecar token, trusting only the
/// instance's CA: the token goes only to a sidecar that proves it is a member of the instance.
pub async fn sidecar_client(
    platform: &dyn Platform,
    instance: &str,
    member: &str,
    timeout: std::time::Duration,
) -> Result<toygres_common::SidecarClient, PlatformError> {
    let address = platform.member_address(instance, member).await?;
    let token = platform
        .read_secret(&SecretRefs::for_instance(instance).sidecar_token)
        .await?;
    let ca = platform.instance_ca(instance).await?;
    toygres_common::SidecarClient::new(address.api_url, token.expose(), ca.as_bytes(), timeout)
        .map_err(|e| {
            PlatformError::from(anyhow::Error::from(e).context(format!("use the CA of {instance}")))
        })
}

/// The task driving a connection to Postgres.
pub type PgConnectionTask = tokio::task::JoinHandle<Result<(), tokio_postgres::Error>>;

/// A superuser connection to `member` of `instance`, for the controller's own queries. TLS is
/// required and the member's certificate must come from the instance's CA, so the superuser's
/// password goes only to a member of the instance.
pub async fn connect_member_superuser(
    platform: &dyn Platform,
    instance: &str,
    member: &str,
    application_name: &str,
) -> Result<(tokio_postgres::Client, PgConnectionTask), PlatformError> {
    use toygres_common::tls::pg::PgTls;
    let address = platform.member_address(instance, member).await?;
    let password = platform
        .read_secret(&SecretRefs::for_instance(instance).superuser_password)
        .await?;
    let ca = platform.instance_ca(instance).await?;
    let tls = PgTls::new(ca.as_bytes(), None)
        .map_err(|e| anyhow::Error::from(e).context(format!("use the CA of {instance}")))?;
    let mut config = tokio_postgres::Config::new();
    let (client, connection) = PgTls::require(&mut config)
        .host(&address.pg.host)
        .port(address.pg.port)
        .user("postgres")
        .dbname("postgres")
        .password(password.expose())
        .application_name(application_name)
        .connect(tls)
        .await
        .map_err(|e| {
            anyhow::Error::from(e).context(format!("connect to {member} as the superuser"))
        })?;
    Ok((client, tokio::spawn(connection)))
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
    fn secret_references_serialize_without_values_and_values_are_redacted() {
        let refs = SecretRefs::for_instance("db");
        let json = serde_json::to_string(&refs).unwrap();
        assert_eq!(
            json,
            "{\"superuser_password\":{\"instance\":\"db\",\"name\":\"superuser-password\"},\
             \"replication_password\":{\"instance\":\"db\",\"name\":\"replication-password\"},\
             \"sidecar_token\":{\"instance\":\"db\",\"name\":\"sidecar-token\"}}"
        );
        let value = SecretValue::new("hunter2".into());
        assert_eq!(format!("{value:?}"), "SecretValue(<redacted>)");
        assert_eq!(value.expose(), "hunter2");
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
