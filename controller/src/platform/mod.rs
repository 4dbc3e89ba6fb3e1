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

mod endpoints;
mod error;
pub mod fleet_sim;
pub mod kubernetes;
pub mod local;
mod member;
mod secrets;

pub use endpoints::{EndpointRoutes, Endpoints};
pub use error::PlatformError;
pub use member::{
    validate_member_of, Bootstrap, MemberAddress, MemberArchive, MemberHandle, MemberInfo,
    MemberSpec, MemberState, Placement, RestoreSource,
};
pub use secrets::{SecretName, SecretRef, SecretRefs, SecretValue};

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

    /// Replaces one credential with `value` where [`Self::read_secret`] reads it (and, in local
    /// mode, rewrites its password file), atomically: a reader sees the old value or the new
    /// one. A rotation sets the value where it is checked (the role on the primary) first.
    async fn replace_secret(
        &self,
        secret: &SecretRef,
        value: &SecretValue,
    ) -> Result<(), PlatformError>;

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

    /// Gives the instance's members the backup encryption keys `archive` names, as the files of
    /// a key ring: its current key encrypts from now on, its previous keys still decrypt (a
    /// rotation); members read it again when their sidecar is asked to. The keys are copied
    /// from their store secrets, never passed through here. Returns the ring's version when
    /// members see the new ring only some time later (a mounted Kubernetes Secret): their
    /// sidecars read it again once it reads that version; `None` when it is in place at once.
    async fn put_backup_keyring(
        &self,
        instance: &str,
        _archive: &MemberArchive,
    ) -> Result<Option<String>, PlatformError> {
        Err(PlatformError::Invalid(format!(
            "this platform cannot rotate the backup encryption key of {instance} yet"
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

    /// Whether [`Platform::set_data_aside`] and [`Platform::end_data_aside`] work here (an
    /// in-place restore is refused up front where they do not).
    fn sets_data_aside(&self) -> bool {
        false
    }

    /// Stops the member cleanly and moves its data directory aside (kept, not used), so that
    /// the next [`Platform::create_member`] bootstraps it afresh (an in-place restore).
    /// Idempotent. Platforms that cannot do it say so.
    async fn set_data_aside(&self, _instance: &str, member: &str) -> Result<(), PlatformError> {
        Err(PlatformError::Invalid(format!(
            "this platform cannot set {member}'s data aside (in-place restore)"
        )))
    }

    /// Ends [`Platform::set_data_aside`]: with `put_back`, stops the member and puts the data
    /// directory set aside back in place of the new one (start it again with
    /// [`Platform::create_member`]; fails rather than leave it without data when nothing was
    /// set aside); without, removes the data set aside. Idempotent.
    async fn end_data_aside(
        &self,
        _instance: &str,
        member: &str,
        _put_back: bool,
    ) -> Result<(), PlatformError> {
        Err(PlatformError::Invalid(format!(
            "this platform cannot set {member}'s data aside (in-place restore)"
        )))
    }

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
