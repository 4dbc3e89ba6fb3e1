//! Serving an instance's endpoints: the proxies inside the controller, their routes resolved
//! to the members' Postgres addresses, and their counters.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use toygres_common::names::PgAddress;

use super::record::{self, EndpointsRecord, MemberRecord};
use super::{member_host, LocalPlatform, LOOPBACK};
use crate::endpoints::{BreakerState, EndpointRole, EndpointStats, InstanceProxy, ProxyTargets};
use crate::platform::{EndpointRoutes, Endpoints};

/// How long an endpoint's port may stay busy (a previous proxy still closing) before binding it
/// fails.
const REBIND_TIMEOUT: Duration = Duration::from_secs(10);

impl LocalPlatform {
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

    pub(super) fn proxy_running(&self, instance: &str) -> bool {
        self.proxies
            .lock()
            .map(|proxies| proxies.contains_key(instance))
            .unwrap_or(false)
    }

    /// The Postgres addresses `routes`' members listen on; a member without a record is left
    /// out, with a warning.
    pub(super) fn resolve_routes(&self, instance: &str, routes: &EndpointRoutes) -> ProxyTargets {
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
    pub(super) fn ro_breaker_states(&self, instance: &str) -> BTreeMap<String, BreakerState> {
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

    pub(super) fn pg_socket(&self, instance: &str, member: &str) -> Option<SocketAddr> {
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
    pub(super) async fn serve_endpoints(
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

    pub(super) fn endpoints_of(record: &EndpointsRecord) -> Endpoints {
        let address = |port| PgAddress {
            host: LOOPBACK.to_string(),
            port,
        };
        Endpoints {
            rw: address(record.rw_port),
            ro: address(record.ro_port),
        }
    }
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
