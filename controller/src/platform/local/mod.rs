//! The local platform: a member ("pod") is a `toygres-sidecar run` process, started detached in
//! a session of its own so it outlives the controller, with its data under
//! `$TOYGRES_HOME/instances/<name>/<member>` and loopback ports chosen at creation and kept for
//! good. An instance's endpoints ("Services") are TCP proxies inside the controller
//! ([`crate::endpoints::proxy`]) on ports chosen at creation and kept for good.
//!
//! What it must remember lives in JSON records beside the data ([`record`]); after a controller
//! restart, [`LocalPlatform::adopt`] re-adopts the sidecars that still run, restarts those that
//! died, and serves the endpoints again with their last routes. See [`layout`] for the files.

use std::collections::{BTreeMap, HashMap};
use std::ffi::OsString;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use toygres_common::names::{validate_instance_name, PgAddress};

use self::layout::LocalLayout;
use self::record::{AllRecords, EndpointsRecord, MemberRecord};
use crate::endpoints::{BreakerState, EndpointRole, EndpointStats, InstanceProxy, ProxyTargets};
use crate::platform::{
    validate_member_of, Bootstrap, EndpointRoutes, Endpoints, MemberAddress, MemberState,
    PlatformError, SecretRef,
};

pub mod layout;
mod platform_api;
pub mod process;
pub mod record;
pub mod secrets;
mod store_secrets;
pub mod tls;

/// The sidecar program's file name.
pub const SIDECAR_PROGRAM: &str = "toygres-sidecar";

/// The address endpoints listen on, and members unless given a network of their own.
const LOOPBACK: Ipv4Addr = Ipv4Addr::LOCALHOST;

/// How long an endpoint's port may stay busy (a previous proxy still closing) before binding it
/// fails.
const REBIND_TIMEOUT: Duration = Duration::from_secs(10);

/// Settings of the local platform.
#[derive(Debug, Clone)]
pub struct LocalPlatformConfig {
    /// `$TOYGRES_HOME`.
    pub home: PathBuf,
    /// The `toygres-sidecar` program; when `None`, the one beside the current executable, else
    /// the one in `$PATH`.
    pub sidecar_bin: Option<PathBuf>,
    /// Postgres's programs, passed to the sidecars (`--pg-bin-dir`); found by the sidecar when
    /// `None`.
    pub pg_bin_dir: Option<PathBuf>,
    /// The sidecars' `RUST_LOG`.
    pub sidecar_log_filter: String,
    /// How long Postgres's fast shutdown may take (the sidecars' `--stop-timeout-secs`); a
    /// deleted member's sidecar gets this plus a margin before it is killed.
    pub stop_timeout: Duration,
    /// More `--flag=value` arguments for every sidecar.
    pub extra_sidecar_args: Vec<String>,
    /// A JSON file naming, by member, the network a new member gets
    /// ([`record::MemberNetwork::read_map`]): used by tests that cut members' links. Members
    /// it does not name (all, when none) listen on loopback.
    pub member_networks: Option<PathBuf>,
}

impl LocalPlatformConfig {
    /// Defaults for a platform under `home`.
    pub fn new(home: PathBuf) -> Self {
        Self {
            home,
            sidecar_bin: None,
            pg_bin_dir: None,
            sidecar_log_filter: "info".into(),
            stop_timeout: Duration::from_secs(30),
            extra_sidecar_args: Vec::new(),
            member_networks: None,
        }
    }
}

/// What [`LocalPlatform::adopt`] did with one member.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Adoption {
    /// Its sidecar still ran: adopted as it is.
    Adopted { pid: i32 },
    /// Its sidecar was gone: started again.
    Restarted { pid: i32 },
    /// Stopped on purpose ([`Platform::kill_member`]): left down.
    LeftStopped,
    /// Could not be started; the error says why.
    Failed { error: String },
}

/// What [`LocalPlatform::adopt`] found and did.
#[derive(Debug, Clone, Default)]
pub struct AdoptReport {
    /// `(instance, member, what happened)`, sorted by instance and member.
    pub members: Vec<(String, String, Adoption)>,
    /// Instances whose endpoints are served again.
    pub endpoints: Vec<String>,
    /// Instances whose endpoints could not be served, with the reason.
    pub failed_endpoints: Vec<(String, String)>,
}

/// The local platform. Dropping it stops the endpoints' proxies but never the members.
#[derive(Debug)]
pub struct LocalPlatform {
    config: LocalPlatformConfig,
    layout: LocalLayout,
    sidecar_bin: PathBuf,
    /// One lock per instance: operations on one instance never interleave.
    locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// The running proxies, by instance.
    proxies: Mutex<HashMap<String, InstanceProxy>>,
    /// Held from choosing new ports until they are recorded, so two instances never get the
    /// same one.
    port_allocation: Mutex<()>,
}

impl LocalPlatform {
    /// Prepares the platform under `config.home`: finds the sidecar program and, when this
    /// process is root (Postgres then runs as the `postgres` OS user), checks that user can reach
    /// the home. Does not touch members or endpoints: call [`LocalPlatform::adopt`] for that.
    pub fn new(config: LocalPlatformConfig) -> anyhow::Result<Self> {
        let home = std::path::absolute(&config.home)
            .with_context(|| format!("resolve the path {}", config.home.display()))?;
        let sidecar_bin = locate_sidecar(config.sidecar_bin.as_deref())?;
        let root = nix::unistd::Uid::effective().is_root();
        let layout = LocalLayout::new(home, root);
        if root {
            let user = nix::unistd::User::from_name("postgres")
                .context("look up the postgres OS user")?
                .context("running as root, but there is no postgres OS user to run Postgres as")?;
            layout.check_reachable_by(&user.name, user.uid.as_raw(), user.gid.as_raw())?;
        }
        layout.create_dir(&layout.instances_dir())?;
        Ok(Self {
            config,
            layout,
            sidecar_bin,
            locks: Mutex::new(HashMap::new()),
            proxies: Mutex::new(HashMap::new()),
            port_allocation: Mutex::new(()),
        })
    }

    /// The paths this platform uses.
    pub fn layout(&self) -> &LocalLayout {
        &self.layout
    }

    /// The sidecar program the members run.
    pub fn sidecar_bin(&self) -> &Path {
        &self.sidecar_bin
    }

    /// Takes over what an earlier controller left: adopts every recorded member whose sidecar
    /// still runs, restarts those that died (except the ones stopped on purpose), and serves every
    /// recorded instance's endpoints with their last routes. Safe to call again at any time: it
    /// also serves as a periodic "restart what died" pass.
    pub async fn adopt(&self) -> anyhow::Result<AdoptReport> {
        let all = AllRecords::scan(&self.layout.instances_dir())?;
        let mut report = AdoptReport::default();
        for recorded in all.members {
            let lock = self.lock(&recorded.instance).await;
            // Re-read under the lock: an operation may have changed it since the scan.
            let path = self
                .layout
                .member_record(&recorded.instance, &recorded.member);
            let outcome = match record::read::<MemberRecord>(&path) {
                Ok(Some(current)) if current.stopped => Adoption::LeftStopped,
                Ok(Some(mut current)) => match self.ensure_running(&mut current).await {
                    Ok(outcome) => outcome,
                    Err(e) => {
                        tracing::error!(
                            member = current.member,
                            "restart the member's sidecar: {e:#}"
                        );
                        Adoption::Failed {
                            error: format!("{e:#}"),
                        }
                    }
                },
                Ok(None) => continue,
                Err(e) => Adoption::Failed {
                    error: format!("{e:#}"),
                },
            };
            drop(lock);
            report
                .members
                .push((recorded.instance, recorded.member, outcome));
        }
        for endpoints in all.endpoints {
            let _lock = self.lock(&endpoints.instance).await;
            if self.proxy_running(&endpoints.instance) {
                continue;
            }
            let path = self.layout.endpoints_record(&endpoints.instance);
            let served = match record::read::<EndpointsRecord>(&path) {
                Ok(Some(current)) => {
                    let targets = self.resolve_routes(&current.instance, &current.routes);
                    self.serve_endpoints(&current, targets, None).await
                }
                Ok(None) => continue,
                Err(e) => Err(e),
            };
            match served {
                Ok(()) => report.endpoints.push(endpoints.instance),
                Err(e) => {
                    tracing::error!(
                        instance = endpoints.instance,
                        "serve the instance's endpoints: {e:#}"
                    );
                    report
                        .failed_endpoints
                        .push((endpoints.instance, format!("{e:#}")));
                }
            }
        }
        for (instance, member, outcome) in &report.members {
            match outcome {
                Adoption::Restarted { pid } => {
                    tracing::warn!(
                        instance,
                        member,
                        pid,
                        "the member's sidecar was gone; started it again"
                    )
                }
                Adoption::Failed { .. } => {}
                Adoption::Adopted { .. } | Adoption::LeftStopped => {
                    tracing::debug!(instance, member, ?outcome, "adopted a member")
                }
            }
        }
        Ok(report)
    }

    /// Stops every endpoint proxy and waits until their ports are free. The members keep
    /// running.
    pub async fn shutdown(&self) {
        let proxies: Vec<InstanceProxy> = match self.proxies.lock() {
            Ok(mut map) => map.drain().map(|(_, proxy)| proxy).collect(),
            Err(poisoned) => poisoned.into_inner().drain().map(|(_, p)| p).collect(),
        };
        for proxy in proxies {
            proxy.stop().await;
        }
    }

    /// The record of a member.
    pub async fn member_record(
        &self,
        instance: &str,
        member: &str,
    ) -> Result<MemberRecord, PlatformError> {
        validate_member_of(instance, member)?;
        let path = self.layout.member_record(instance, member);
        record::read::<MemberRecord>(&path)?
            .ok_or_else(|| PlatformError::not_found("member", member))
    }

    /// The record of an instance's endpoints.
    pub async fn endpoints_record(&self, instance: &str) -> Result<EndpointsRecord, PlatformError> {
        validate_instance_name(instance)?;
        record::read::<EndpointsRecord>(&self.layout.endpoints_record(instance))?
            .ok_or_else(|| PlatformError::not_found("endpoints", instance))
    }

    /// The counters of an instance's endpoint, when its proxy runs.
    pub fn endpoint_stats(&self, instance: &str, role: EndpointRole) -> Option<EndpointStats> {
        let proxies = self.proxies.lock().ok()?;
        proxies.get(instance).map(|proxy| proxy.stats(role))
    }

    /// The counters of every running endpoint, sorted by instance, for metrics.
    pub fn all_endpoint_stats(&self) -> Vec<(String, EndpointRole, EndpointStats)> {
        let Ok(proxies) = self.proxies.lock() else {
            return Vec::new();
        };
        let mut all: Vec<_> = proxies
            .iter()
            .flat_map(|(instance, proxy)| {
                [EndpointRole::Rw, EndpointRole::Ro]
                    .map(|role| (instance.clone(), role, proxy.stats(role)))
            })
            .collect();
        all.sort_by(|a, b| (&a.0, a.1).cmp(&(&b.0, b.1)));
        all
    }

    /// Runs [`LocalPlatform::adopt`] every `interval` in the background, so a member whose
    /// sidecar dies is started again (as a kubelet restarts a container); the interval is also
    /// the delay between two starts of a sidecar that keeps dying. The task ends when the
    /// platform is dropped.
    pub fn spawn_supervisor(self: &Arc<Self>, interval: Duration) -> tokio::task::JoinHandle<()> {
        let platform = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(interval);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            ticks.tick().await;
            loop {
                ticks.tick().await;
                let Some(platform) = platform.upgrade() else {
                    return;
                };
                if let Err(e) = platform.adopt().await {
                    tracing::error!("supervise the local members: {e:#}");
                }
            }
        })
    }

    async fn lock(&self, instance: &str) -> tokio::sync::OwnedMutexGuard<()> {
        let lock = {
            let mut locks = match self.locks.lock() {
                Ok(locks) => locks,
                Err(poisoned) => poisoned.into_inner(),
            };
            locks.entry(instance.to_string()).or_default().clone()
        };
        lock.lock_owned().await
    }

    fn allocate_ports(&self) -> std::sync::MutexGuard<'_, ()> {
        match self.port_allocation.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    fn proxy_running(&self, instance: &str) -> bool {
        self.proxies
            .lock()
            .map(|proxies| proxies.contains_key(instance))
            .unwrap_or(false)
    }

    /// Makes sure the member's sidecar runs: adopts a live one (the recorded pid, or one found
    /// by its data directory), else starts it. Updates the record.
    async fn ensure_running(&self, record: &mut MemberRecord) -> anyhow::Result<Adoption> {
        if let Some(pid) = record
            .pid
            .filter(|pid| process::is_sidecar_of(*pid, &record.data_dir))
        {
            return Ok(Adoption::Adopted { pid });
        }
        if let Some(pid) = process::find_sidecar_of(&record.data_dir) {
            tracing::info!(
                member = record.member,
                pid,
                "found the member's sidecar running unrecorded; adopting it"
            );
            record.pid = Some(pid);
            self.write_member(record)?;
            return Ok(Adoption::Adopted { pid });
        }
        let pid = self.start_sidecar(record)?;
        Ok(Adoption::Restarted { pid })
    }

    /// Starts the member's sidecar and records its pid.
    fn start_sidecar(&self, record: &mut MemberRecord) -> anyhow::Result<i32> {
        let member_dir = self.layout.member_dir(&record.instance, &record.member);
        self.layout.create_dir(&member_dir)?;
        if let Some(parent) = record.run_dir.parent() {
            if parent != member_dir {
                self.layout.create_dir(parent)?;
            }
        }
        // A member recorded before instances had certificates gets them at its next start.
        tls::ensure_member(
            &self.layout,
            &record.instance,
            &record.member,
            member_host(record),
        )?;
        let command = self.sidecar_command(record);
        let pid = process::spawn_detached(&record.member, &command)?;
        record.pid = Some(pid);
        record.starts += 1;
        self.write_member(record)?;
        tracing::info!(
            instance = record.instance,
            member = record.member,
            pid,
            pg_port = record.pg_port,
            api_port = record.api_port,
            "started the member's sidecar"
        );
        Ok(pid)
    }

    fn sidecar_command(&self, record: &MemberRecord) -> process::SidecarCommand {
        let flag = |name: &str, value: &dyn AsRef<std::ffi::OsStr>| {
            let mut arg = OsString::from(format!("--{name}="));
            arg.push(value);
            arg
        };
        let secret =
            |reference: &SecretRef| self.layout.secret_file(&reference.instance, reference.name);
        let host = member_host(record);
        let mut args: Vec<OsString> = vec![
            "run".into(),
            process::data_dir_arg(&record.data_dir),
            format!("--pg-port={}", record.pg_port).into(),
            format!("--pg-listen={host}").into(),
            format!("--api-addr={}", SocketAddr::new(host, record.api_port)).into(),
            format!("--member-name={}", record.member).into(),
            flag("token-file", &secret(&record.secrets.sidecar_token)),
            flag(
                "superuser-password-file",
                &secret(&record.secrets.superuser_password),
            ),
            flag(
                "replication-password-file",
                &secret(&record.secrets.replication_password),
            ),
            flag(
                "tls-dir",
                &tls::member_dir(&self.layout, &record.instance, &record.member).dir,
            ),
            flag("run-dir", &record.run_dir),
            format!("--stop-timeout-secs={}", self.config.stop_timeout.as_secs()).into(),
        ];
        match &record.bootstrap {
            Bootstrap::Init => args.push("--bootstrap=init".into()),
            Bootstrap::Standby { primary } => {
                args.push("--bootstrap=standby".into());
                args.push(format!("--primary={primary}").into());
            }
            Bootstrap::Restore(source) => {
                args.push("--bootstrap=restore".into());
                for (name, _, value) in source.sidecar_settings() {
                    args.push(format!("--{name}={value}").into());
                }
            }
        }
        if let Some(archive) = &record.archive {
            // Every member archives under the instance's name; Postgres archives only while
            // the member is the primary (archive_mode=on does nothing during recovery).
            args.push(format!("--archive-url={}", archive.store_url).into());
            args.push(format!("--instance-name={}", record.instance).into());
            if let Some(name) = &archive.credentials_secret {
                // A path: the sidecar reads the settings from the files there.
                args.push(flag(
                    "store-credentials-dir",
                    &self.layout.store_secret_dir(name),
                ));
            }
            if let Some(name) = &archive.encryption_secret {
                // A path: the key never travels through argv or the environment.
                args.push(flag(
                    "backup-encryption-key-file",
                    &self
                        .layout
                        .store_secret_dir(name)
                        .join(toygres_common::store_secret_api::ENCRYPTION_KEY_SETTING),
                ));
            }
        }
        if let Some(dir) = &self.config.pg_bin_dir {
            args.push(flag("pg-bin-dir", dir));
        }
        args.extend(self.config.extra_sidecar_args.iter().map(OsString::from));
        let path = std::env::var_os("PATH")
            .unwrap_or_else(|| OsString::from("/usr/local/bin:/usr/bin:/bin"));
        let netns = record.network.as_ref().and_then(|n| n.netns.as_deref());
        let (program, args) = match netns {
            // `ip netns exec` enters the namespace and execs the sidecar: the pid stays the
            // sidecar's.
            Some(netns) => {
                let mut wrapped: Vec<OsString> = vec!["netns".into(), "exec".into(), netns.into()];
                wrapped.push(self.sidecar_bin.clone().into());
                wrapped.extend(args);
                (PathBuf::from("ip"), wrapped)
            }
            None => (self.sidecar_bin.clone(), args),
        };
        process::SidecarCommand {
            program,
            args,
            env: vec![
                ("PATH".into(), path),
                (
                    "RUST_LOG".into(),
                    self.config.sidecar_log_filter.clone().into(),
                ),
            ],
            log_file: record.log_file.clone(),
            working_dir: self.layout.member_dir(&record.instance, &record.member),
        }
    }

    fn write_member(&self, member: &MemberRecord) -> anyhow::Result<()> {
        record::write(
            &self.layout.member_record(&member.instance, &member.member),
            member,
        )
    }

    /// The Postgres addresses `routes`' members listen on; a member without a record is left
    /// out, with a warning.
    fn resolve_routes(&self, instance: &str, routes: &EndpointRoutes) -> ProxyTargets {
        ProxyTargets {
            rw: routes.rw.as_ref().and_then(|m| self.pg_socket(instance, m)),
            ro: routes
                .ro
                .iter()
                .filter_map(|m| self.pg_socket(instance, m))
                .collect(),
            hold_rw: routes.hold_rw,
            ro_fallback: routes.ro_fallback,
            ro_balance: routes.ro_balance,
        }
    }

    /// The breakers of the ro standbys the instance's proxy leads to, by member.
    fn ro_breaker_states(&self, instance: &str) -> BTreeMap<String, BreakerState> {
        let states = match self.proxies.lock() {
            Ok(map) => map.get(instance).map(InstanceProxy::breaker_states),
            Err(poisoned) => poisoned
                .into_inner()
                .get(instance)
                .map(InstanceProxy::breaker_states),
        };
        let Some(states) = states.filter(|s| !s.is_empty()) else {
            return BTreeMap::new();
        };
        let Ok(Some(endpoints)) =
            record::read::<EndpointsRecord>(&self.layout.endpoints_record(instance))
        else {
            return BTreeMap::new();
        };
        endpoints
            .routes
            .ro
            .iter()
            .filter_map(|member| {
                let socket = self.pg_socket(instance, member)?;
                let (_, state) = states.iter().find(|(addr, _)| *addr == socket)?;
                Some((member.clone(), *state))
            })
            .collect()
    }

    fn pg_socket(&self, instance: &str, member: &str) -> Option<SocketAddr> {
        match record::read::<MemberRecord>(&self.layout.member_record(instance, member)) {
            Ok(Some(record)) => Some(SocketAddr::new(member_host(&record), record.pg_port)),
            Ok(None) => {
                tracing::warn!(member, "routing: the member has no record; leaving it out");
                None
            }
            Err(e) => {
                tracing::warn!(member, "routing: {e:#}; leaving the member out");
                None
            }
        }
    }

    /// Serves an instance's endpoints, on `listeners` when given, else on the recorded ports.
    async fn serve_endpoints(
        &self,
        endpoints: &EndpointsRecord,
        targets: ProxyTargets,
        listeners: Option<(std::net::TcpListener, std::net::TcpListener)>,
    ) -> anyhow::Result<()> {
        let (rw, ro) = match listeners {
            Some((rw, ro)) => (into_tokio(rw)?, into_tokio(ro)?),
            None => (
                bind_again(endpoints.rw_port).await?,
                bind_again(endpoints.ro_port).await?,
            ),
        };
        let proxy = InstanceProxy::start(&endpoints.instance, rw, ro, targets)
            .context("start the endpoints' proxies")?;
        let previous = match self.proxies.lock() {
            Ok(mut map) => map.insert(endpoints.instance.clone(), proxy),
            Err(poisoned) => poisoned
                .into_inner()
                .insert(endpoints.instance.clone(), proxy),
        };
        drop(previous);
        Ok(())
    }

    fn endpoints_of(record: &EndpointsRecord) -> Endpoints {
        let address = |port| PgAddress {
            host: LOOPBACK.to_string(),
            port,
        };
        Endpoints {
            rw: address(record.rw_port),
            ro: address(record.ro_port),
        }
    }

    fn address_of(record: &MemberRecord) -> MemberAddress {
        let host = member_host(record);
        MemberAddress {
            pg: PgAddress {
                host: host.to_string(),
                port: record.pg_port,
            },
            api_url: format!("https://{}", SocketAddr::new(host, record.api_port)),
        }
    }

    /// The network a new member `member` gets: the one [`LocalPlatformConfig::member_networks`]
    /// names for it, else none (loopback).
    fn network_for(&self, member: &str) -> anyhow::Result<Option<record::MemberNetwork>> {
        let Some(path) = &self.config.member_networks else {
            return Ok(None);
        };
        Ok(record::MemberNetwork::read_map(path)?.remove(member))
    }

    fn state_of(record: &MemberRecord) -> MemberState {
        if record.stopped {
            MemberState::Stopped
        } else if record
            .pid
            .is_some_and(|pid| process::is_sidecar_of(pid, &record.data_dir))
        {
            MemberState::Running
        } else {
            MemberState::Down
        }
    }

    /// How long a deleted member's sidecar may take to stop before it is killed.
    fn delete_timeout(&self) -> Duration {
        self.config.stop_timeout + Duration::from_secs(15)
    }
}

/// The address a member listens on and is reached at.
fn member_host(record: &MemberRecord) -> IpAddr {
    record
        .network
        .as_ref()
        .map_or(IpAddr::V4(LOOPBACK), |n| n.host)
}

fn into_tokio(listener: std::net::TcpListener) -> anyhow::Result<tokio::net::TcpListener> {
    listener
        .set_nonblocking(true)
        .context("make an endpoint listener non-blocking")?;
    tokio::net::TcpListener::from_std(listener).context("register an endpoint listener")
}

/// Binds a recorded endpoint port again, waiting a little while a previous proxy releases it.
async fn bind_again(port: u16) -> anyhow::Result<tokio::net::TcpListener> {
    let deadline = Instant::now() + REBIND_TIMEOUT;
    loop {
        match tokio::net::TcpListener::bind((LOOPBACK, port)).await {
            Ok(listener) => return Ok(listener),
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => {
                return Err(e).with_context(|| {
                    format!("listen on the endpoint's recorded port {LOOPBACK}:{port}")
                })
            }
        }
    }
}

/// The sidecar program: `configured`, else beside the current executable, else in `$PATH`.
fn locate_sidecar(configured: Option<&Path>) -> anyhow::Result<PathBuf> {
    if let Some(path) = configured {
        if !path.is_file() {
            bail!("the sidecar program {} does not exist", path.display());
        }
        return std::path::absolute(path)
            .with_context(|| format!("resolve the path {}", path.display()));
    }
    if let Some(beside) = std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|dir| dir.join(SIDECAR_PROGRAM)))
        .filter(|path| path.is_file())
    {
        return Ok(beside);
    }
    std::env::var_os("PATH")
        .and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|dir| dir.join(SIDECAR_PROGRAM))
                .find(|path| path.is_file())
        })
        .with_context(|| {
            format!(
                "cannot find {SIDECAR_PROGRAM} beside this program or in $PATH; configure its path"
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::platform::Platform;

    #[test]
    fn the_local_platform_can_be_shared_as_a_platform() {
        fn shared(platform: LocalPlatform) -> Arc<dyn Platform> {
            Arc::new(platform)
        }
        let _ = shared;
    }
}
