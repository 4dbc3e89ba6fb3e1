//! The rw and ro TCP proxies of one instance: each accepts on its own stable port and copies
//! bytes both ways between the client and the member its endpoint leads to.
//!
//! - **rw** leads to the primary. Without one, new connections are closed at once.
//! - **ro** spreads connections over the standbys, round-robin or to the least loaded first
//!   ([`super::balance`]), trying the next one when a standby cannot be reached; with no
//!   standby it leads to the primary, or refuses when the instance says so.
//! - Each standby of ro has a circuit breaker ([`super::breaker`]): after repeated failed
//!   connects it is left out for a cool-off, then tried by one connection. When no standby
//!   can be reached (or all are left out), ro falls back to the primary.
//!
//! [`InstanceProxy::route`] swaps both endpoints' targets at once. A connection whose member is
//! no longer a target of its endpoint is closed, so that after a failover nothing still writes to
//! the old primary through the rw endpoint.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};

use toygres_common::ro_api::{RoBalance, RoFallback};

use super::balance::BackendLoad;
use super::breaker::{BreakerSettings, BreakerState, Breakers};

/// How long connecting to a member may take before the proxy gives up on it.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// How long a held rw connection waits for a primary before it is closed.
const HOLD_TIMEOUT: Duration = Duration::from_secs(30);

/// The two endpoints of an instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum EndpointRole {
    /// Read-write: the primary.
    Rw,
    /// Read-only: the standbys, or the primary when there is none.
    Ro,
}

impl std::fmt::Display for EndpointRole {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            EndpointRole::Rw => "rw",
            EndpointRole::Ro => "ro",
        })
    }
}

/// Where an instance's endpoints lead, as Postgres addresses.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProxyTargets {
    /// The primary.
    pub rw: Option<SocketAddr>,
    /// The standbys that take read-only connections.
    pub ro: Vec<SocketAddr>,
    /// With no `rw` target: hold new rw connections (up to [`HOLD_TIMEOUT`]) until there is
    /// one, instead of closing them. A switchover or failover holds writes this way, so
    /// clients see a pause rather than an error.
    pub hold_rw: bool,
    /// With no ro standby (or none reachable): lead ro to the primary or refuse.
    pub ro_fallback: RoFallback,
    /// How ro spreads connections over its standbys.
    pub ro_balance: RoBalance,
}

impl ProxyTargets {
    /// Whether a connection of `role` to `target` may stay open under these targets.
    pub fn allows(&self, role: EndpointRole, target: SocketAddr) -> bool {
        match role {
            EndpointRole::Rw => self.rw == Some(target),
            EndpointRole::Ro if self.ro.is_empty() => {
                self.ro_fallback == RoFallback::Primary && self.rw == Some(target)
            }
            EndpointRole::Ro => self.ro.contains(&target),
        }
    }

    /// The members a new connection of `role` tries, in order. For ro, `turn` picks which
    /// standby comes first.
    fn candidates(&self, role: EndpointRole, turn: usize) -> Vec<SocketAddr> {
        match role {
            EndpointRole::Ro if !self.ro.is_empty() => {
                let first = turn % self.ro.len();
                self.ro[first..]
                    .iter()
                    .chain(&self.ro[..first])
                    .copied()
                    .collect()
            }
            EndpointRole::Ro if self.ro_fallback == RoFallback::Refuse => Vec::new(),
            EndpointRole::Rw | EndpointRole::Ro => self.rw.into_iter().collect(),
        }
    }
}

/// Counters of one endpoint since its proxy started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct EndpointStats {
    /// Connections open now.
    pub active: u64,
    /// Connections accepted.
    pub total: u64,
    /// Connections closed at once because the endpoint led nowhere.
    pub refused: u64,
    /// Connections closed because their member stopped being a target.
    pub closed_by_reroute: u64,
    /// Attempts to reach a member that failed.
    pub upstream_failures: u64,
    /// ro: connections that went to the primary because no standby could take them.
    pub fallbacks_to_primary: u64,
}

#[derive(Debug, Default)]
struct Counters {
    active: AtomicU64,
    total: AtomicU64,
    refused: AtomicU64,
    closed_by_reroute: AtomicU64,
    upstream_failures: AtomicU64,
    fallbacks_to_primary: AtomicU64,
}

impl Counters {
    fn snapshot(&self) -> EndpointStats {
        EndpointStats {
            active: self.active.load(Ordering::Relaxed),
            total: self.total.load(Ordering::Relaxed),
            refused: self.refused.load(Ordering::Relaxed),
            closed_by_reroute: self.closed_by_reroute.load(Ordering::Relaxed),
            upstream_failures: self.upstream_failures.load(Ordering::Relaxed),
            fallbacks_to_primary: self.fallbacks_to_primary.load(Ordering::Relaxed),
        }
    }
}

/// Counts a connection as active for as long as it lives, also when its task is aborted.
struct ActiveConnection(Arc<Counters>);

impl ActiveConnection {
    fn new(counters: Arc<Counters>) -> Self {
        counters.active.fetch_add(1, Ordering::Relaxed);
        Self(counters)
    }
}

impl Drop for ActiveConnection {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Ordering::Relaxed);
    }
}

/// One listening endpoint: its address, counters and accept task.
#[derive(Debug)]
struct Endpoint {
    addr: SocketAddr,
    counters: Arc<Counters>,
    task: Option<JoinHandle<()>>,
}

/// The running rw and ro proxies of one instance. Dropping it stops both and closes every
/// connection through them; [`InstanceProxy::stop`] does the same and waits until the ports are
/// free again.
#[derive(Debug)]
pub struct InstanceProxy {
    instance: String,
    targets: watch::Sender<Arc<ProxyTargets>>,
    rw: Endpoint,
    ro: Endpoint,
    /// The ro endpoint's standbys' breakers.
    breakers: Arc<Breakers>,
    /// The ro endpoint's open connections per standby.
    load: Arc<BackendLoad>,
}

impl InstanceProxy {
    /// Starts serving `instance`'s endpoints on two bound listeners, leading to `targets`. Must
    /// be called inside a Tokio runtime: the proxies are tasks on it.
    pub fn start(
        instance: &str,
        rw: TcpListener,
        ro: TcpListener,
        targets: ProxyTargets,
    ) -> std::io::Result<Self> {
        Self::start_with_breakers(instance, rw, ro, targets, BreakerSettings::default())
    }

    /// [`InstanceProxy::start`] with the ro standbys' breakers set as given.
    pub fn start_with_breakers(
        instance: &str,
        rw: TcpListener,
        ro: TcpListener,
        targets: ProxyTargets,
        breaker_settings: BreakerSettings,
    ) -> std::io::Result<Self> {
        let (tx, _) = watch::channel(Arc::new(targets));
        let breakers = Arc::new(Breakers::new(breaker_settings));
        let load = Arc::new(BackendLoad::default());
        let endpoint = |role, listener: TcpListener| -> std::io::Result<Endpoint> {
            let addr = listener.local_addr()?;
            let counters = Arc::new(Counters::default());
            let task = tokio::spawn(accept_loop(
                instance.to_string(),
                role,
                listener,
                tx.subscribe(),
                counters.clone(),
                Arc::new(Backends {
                    breakers: breakers.clone(),
                    load: load.clone(),
                }),
            ));
            Ok(Endpoint {
                addr,
                counters,
                task: Some(task),
            })
        };
        let rw = endpoint(EndpointRole::Rw, rw)?;
        let ro = endpoint(EndpointRole::Ro, ro)?;
        tracing::info!(
            instance,
            rw = %rw.addr,
            ro = %ro.addr,
            "serving the instance's endpoints"
        );
        Ok(Self {
            instance: instance.to_string(),
            targets: tx,
            rw,
            ro,
            breakers,
            load,
        })
    }

    /// Open ro connections to `standby`.
    pub fn ro_connections(&self, standby: SocketAddr) -> u64 {
        self.load.active(standby)
    }

    /// Each ro standby's breaker.
    pub fn breaker_states(&self) -> Vec<(SocketAddr, BreakerState)> {
        let now = std::time::Instant::now();
        self.targets()
            .ro
            .iter()
            .map(|standby| (*standby, self.breakers.state(*standby, now)))
            .collect()
    }

    /// The instance whose endpoints these are.
    pub fn instance(&self) -> &str {
        &self.instance
    }

    /// Where `role`'s endpoint listens.
    pub fn addr(&self, role: EndpointRole) -> SocketAddr {
        self.endpoint(role).addr
    }

    /// Where the endpoints lead now.
    pub fn targets(&self) -> Arc<ProxyTargets> {
        self.targets.borrow().clone()
    }

    /// Leads both endpoints to `targets` from now on, and closes the connections whose member is
    /// no longer a target of their endpoint.
    pub fn route(&self, targets: ProxyTargets) {
        tracing::info!(
            instance = self.instance,
            rw = ?targets.rw,
            ro = ?targets.ro,
            "routing the instance's endpoints"
        );
        self.breakers.retain(&targets.ro);
        self.targets.send_replace(Arc::new(targets));
    }

    /// The counters of `role`'s endpoint.
    pub fn stats(&self, role: EndpointRole) -> EndpointStats {
        self.endpoint(role).counters.snapshot()
    }

    /// Stops both endpoints, closes their connections, and returns once the listeners are
    /// closed (so their ports can be bound again).
    pub async fn stop(mut self) {
        for endpoint in [&mut self.rw, &mut self.ro] {
            if let Some(task) = endpoint.task.take() {
                task.abort();
                // The task's result is only its cancellation.
                let _ = task.await;
            }
        }
        tracing::info!(instance = self.instance, "stopped the instance's endpoints");
    }

    fn endpoint(&self, role: EndpointRole) -> &Endpoint {
        match role {
            EndpointRole::Rw => &self.rw,
            EndpointRole::Ro => &self.ro,
        }
    }
}

impl Drop for InstanceProxy {
    fn drop(&mut self) {
        for endpoint in [&mut self.rw, &mut self.ro] {
            if let Some(task) = endpoint.task.take() {
                task.abort();
            }
        }
    }
}

/// Accepts connections until aborted; its connections live in a [`JoinSet`], so aborting it
/// closes them too.
async fn accept_loop(
    instance: String,
    role: EndpointRole,
    listener: TcpListener,
    targets: watch::Receiver<Arc<ProxyTargets>>,
    counters: Arc<Counters>,
    backends: Arc<Backends>,
) {
    let mut connections = JoinSet::new();
    let turn = AtomicUsize::new(0);
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((client, peer)) => {
                    counters.total.fetch_add(1, Ordering::Relaxed);
                    let current = targets.borrow().clone();
                    let mut candidates = current.candidates(role, turn.fetch_add(1, Ordering::Relaxed));
                    let held = role == EndpointRole::Rw && current.hold_rw;
                    if candidates.is_empty() && !held {
                        counters.refused.fetch_add(1, Ordering::Relaxed);
                        tracing::debug!(instance, %role, %peer, "no target: closing the connection");
                        drop(client);
                        continue;
                    }
                    // ro over standbys: each behind its breaker, the primary the last resort.
                    let over_standbys = role == EndpointRole::Ro && !current.ro.is_empty();
                    if over_standbys && current.ro_balance == RoBalance::LeastConnections {
                        backends.load.least_loaded_first(&mut candidates);
                    }
                    let fallback = match current.ro_fallback {
                        RoFallback::Primary if over_standbys => current.rw,
                        RoFallback::Primary | RoFallback::Refuse => None,
                    };
                    connections.spawn(forward(
                        Route {
                            instance: instance.clone(),
                            role,
                            candidates,
                            guarded: over_standbys,
                            fallback,
                        },
                        client,
                        targets.clone(),
                        counters.clone(),
                        backends.clone(),
                    ));
                }
                Err(e) => {
                    // Out of file descriptors, mostly: wait instead of spinning.
                    tracing::warn!(instance, %role, "accept a connection: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}

/// The ro endpoint's standbys: their breakers and open connections.
#[derive(Debug)]
struct Backends {
    breakers: Arc<Breakers>,
    load: Arc<BackendLoad>,
}

/// Where one new connection may go.
struct Route {
    instance: String,
    role: EndpointRole,
    /// The members to try, in order.
    candidates: Vec<SocketAddr>,
    /// The candidates are ro standbys, each behind its breaker.
    guarded: bool,
    /// ro: the primary, tried when no standby takes the connection.
    fallback: Option<SocketAddr>,
}

/// Connects to the first reachable candidate whose breaker admits it (else to the fallback)
/// and copies bytes both ways until either side closes or the member stops being a target of
/// `role`'s endpoint.
async fn forward(
    route: Route,
    mut client: TcpStream,
    mut targets: watch::Receiver<Arc<ProxyTargets>>,
    counters: Arc<Counters>,
    backends: Arc<Backends>,
) {
    let breakers = &backends.breakers;
    let Route {
        instance,
        role,
        candidates,
        guarded,
        fallback,
    } = route;
    let _active = ActiveConnection::new(counters.clone());
    let candidates = if candidates.is_empty() {
        match held_until_routed(role, &mut targets).await {
            Some(candidates) => candidates,
            None => {
                counters.refused.fetch_add(1, Ordering::Relaxed);
                return;
            }
        }
    } else {
        candidates
    };
    let mut upstream = None;
    for candidate in candidates {
        if guarded && !breakers.admit(candidate, std::time::Instant::now()) {
            continue;
        }
        match connect(&instance, role, candidate, &counters).await {
            Some(stream) => {
                if guarded {
                    breakers.succeeded(candidate);
                }
                upstream = Some((stream, candidate));
                break;
            }
            None if guarded && breakers.failed(candidate, std::time::Instant::now()) => {
                tracing::warn!(
                    instance, %role, %candidate,
                    "breaker open: leaving the standby out of ro for a cool-off"
                );
            }
            None => {}
        }
    }
    let mut fell_back = false;
    if let (None, Some(primary)) = (&upstream, fallback) {
        if let Some(stream) = connect(&instance, role, primary, &counters).await {
            counters
                .fallbacks_to_primary
                .fetch_add(1, Ordering::Relaxed);
            fell_back = true;
            upstream = Some((stream, primary));
        }
    }
    let Some((mut server, target)) = upstream else {
        return;
    };
    let _load = (guarded && !fell_back).then(|| backends.load.hold(target));
    // A connection that fell back to the primary may stay while the primary is the primary.
    let allowed = |targets: &ProxyTargets| {
        targets.allows(role, target) || (fell_back && targets.rw == Some(target))
    };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    // The targets may have changed while connecting.
    if !allowed(&targets.borrow_and_update()) {
        counters.closed_by_reroute.fetch_add(1, Ordering::Relaxed);
        return;
    }
    // One copy future for the connection's whole life: dropping it mid-way would lose buffered
    // bytes, so it is polled until the end or until the connection is cut.
    let copy = tokio::io::copy_bidirectional(&mut client, &mut server);
    tokio::pin!(copy);
    loop {
        tokio::select! {
            _ = &mut copy => return,
            changed = targets.changed() => {
                if changed.is_err() {
                    return;
                }
                if !allowed(&targets.borrow_and_update()) {
                    counters.closed_by_reroute.fetch_add(1, Ordering::Relaxed);
                    tracing::info!(
                        instance, %role, %target,
                        "closing a connection: its member is no longer a target"
                    );
                    return;
                }
            }
        }
    }
}

/// Connects to one member within [`CONNECT_TIMEOUT`], counting a failure.
async fn connect(
    instance: &str,
    role: EndpointRole,
    member: SocketAddr,
    counters: &Counters,
) -> Option<TcpStream> {
    match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(member)).await {
        Ok(Ok(stream)) => Some(stream),
        Ok(Err(e)) => {
            counters.upstream_failures.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(instance, %role, %member, "connect to the member: {e}");
            None
        }
        Err(_) => {
            counters.upstream_failures.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(
                instance, %role, %member,
                "connect to the member: no answer within {CONNECT_TIMEOUT:?}"
            );
            None
        }
    }
}

/// Waits while the endpoint holds connections and leads nowhere; the candidates once it leads
/// somewhere, `None` when the hold ends without a target or times out.
async fn held_until_routed(
    role: EndpointRole,
    targets: &mut watch::Receiver<Arc<ProxyTargets>>,
) -> Option<Vec<SocketAddr>> {
    let deadline = tokio::time::Instant::now() + HOLD_TIMEOUT;
    loop {
        {
            let current = targets.borrow_and_update();
            let candidates = current.candidates(role, 0);
            if !candidates.is_empty() {
                return Some(candidates);
            }
            if !current.hold_rw {
                return None;
            }
        }
        match tokio::time::timeout_at(deadline, targets.changed()).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) | Err(_) => return None,
        }
    }
}

#[cfg(test)]
mod tests;
