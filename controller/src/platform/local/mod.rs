//! The local platform: a member ("pod") is a `toygres-sidecar run` process, started detached in
//! a session of its own so it outlives the controller, with its data under
//! `$TOYGRES_HOME/instances/<name>/<member>` and loopback ports chosen at creation and kept for
//! good. An instance's endpoints ("Services") are TCP proxies inside the controller
//! ([`crate::endpoints::proxy`]) on ports chosen at creation and kept for good.
//!
//! What it must remember lives in JSON records beside the data ([`record`]); after a controller
//! restart, [`LocalPlatform::adopt`] re-adopts the sidecars that still run, restarts those that
//! died, and serves the endpoints again with their last routes. See [`layout`] for the files.

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{bail, Context as _};
use toygres_common::names::{validate_instance_name, PgAddress};

use self::layout::LocalLayout;
use self::record::{EndpointsRecord, MemberRecord};
use crate::endpoints::InstanceProxy;
use crate::platform::{validate_member_of, MemberAddress, MemberState, PlatformError};

mod adoption;
mod launch;
pub mod layout;
mod platform_api;
pub mod process;
pub mod record;
pub mod secrets;
mod serving;
mod store_secrets;
mod supervise;
pub mod tls;

pub use self::adoption::{AdoptReport, Adoption};

/// The sidecar program's file name.
pub const SIDECAR_PROGRAM: &str = "toygres-sidecar";

/// The address endpoints listen on, and members unless given a network of their own.
const LOOPBACK: Ipv4Addr = Ipv4Addr::LOCALHOST;

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
    /// Where members report what happens to them: this controller's API. Sidecars this
    /// controller starts get it as flags; running ones it adopts (started by an earlier
    /// controller, maybe on another address or over plain HTTP) are pointed at it.
    pub notify: Option<NotifySetting>,
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
            notify: None,
            member_networks: None,
        }
    }
}

/// The controller API members report to: `--notify-url` and, for an `https://` URL, the CA
/// file its certificate comes from (`--notify-ca-file`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotifySetting {
    pub url: String,
    pub ca_file: Option<PathBuf>,
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
    /// The sidecars (by pid) known to report to this controller: started by it, or pointed at
    /// it after their adoption ([`LocalPlatform::adopt`]).
    reporting_here: Mutex<HashSet<i32>>,
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
            reporting_here: Mutex::new(HashSet::new()),
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

    fn write_member(&self, member: &MemberRecord) -> anyhow::Result<()> {
        record::write(
            &self
                .layout
                .member_record(&member.spec.instance, &member.spec.member),
            member,
        )
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
