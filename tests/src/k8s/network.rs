//! Pod networking without a CNI: one Linux bridge per harness with a private /24, and per pod a
//! network namespace joined to the bridge by a veth pair. The test process (the host) reaches
//! pods directly; pods reach each other and the bridge's host address (where the apiserver
//! listens), and nothing else: they get no default route. The Service CIDR is never routed
//! anywhere: an `unreachable` route covers it while the harness lives (there is no kube-proxy).
//!
//! Concurrent harnesses (threads or processes) each claim a free slot `n` by creating the
//! bridge `tgbr<n>` (creation is atomic: the first creator wins), giving them pod subnet
//! `10.244.<n>.0/24` and Service CIDR `10.96.<n>.0/24`. Everything created is removed on drop,
//! also during a panic; the processes inside a pod's namespace are killed first. A test process
//! killed outright cannot clean up: the owner of each slot is recorded in
//! `/run/toygres-k8s/tgbr<n>`, and the next harness removes the slots of dead owners.

use std::collections::{BTreeSet, HashMap};
use std::net::Ipv4Addr;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

static SLOT_COUNTER: AtomicU32 = AtomicU32::new(0);

/// Runs `ip ARGS`, failing with its stderr.
pub fn ip(args: &[&str]) -> anyhow::Result<String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .context("run ip (install iproute2)")?;
    if !out.status.success() {
        bail!(
            "ip {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The pids of every process inside network namespace `ns` (`ip netns pids`).
pub fn netns_pids(ns: &str) -> Vec<Pid> {
    ip(&["netns", "pids", ns])
        .map(|out| {
            out.split_whitespace()
                .filter_map(|p| p.parse::<i32>().ok())
                .map(Pid::from_raw)
                .collect()
        })
        .unwrap_or_default()
}

/// Sends `signal` to every process in `ns`; returns how many there were.
pub fn signal_netns(ns: &str, signal: Signal) -> usize {
    let pids = netns_pids(ns);
    for pid in &pids {
        let _ = kill(*pid, signal);
    }
    pids.len()
}

/// SIGKILLs every process in `ns` until none is left (or `timeout` passes).
pub fn kill_netns(ns: &str, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        // A stopped process dies of SIGKILL too; SIGCONT is harmless either way.
        signal_netns(ns, Signal::SIGCONT);
        if signal_netns(ns, Signal::SIGKILL) == 0 {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// One pod's network: its namespace, the host end of its veth, its address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodNet {
    pub netns: String,
    pub host_veth: String,
    pub ip: Ipv4Addr,
}

#[derive(Debug, Default)]
struct Pool {
    free: BTreeSet<u8>,
    /// The last address handed out: the next one is the first free above it, so a recreated
    /// pod gets a new address (as with a CNI) and no stale neighbour entry points elsewhere.
    last: u8,
    next_id: u32,
    live: HashMap<String, PodNet>,
}

/// The harness's bridge, its subnet and the pod networks made on it.
#[derive(Debug)]
pub struct Bridge {
    slot: u8,
    name: String,
    service_cidr: String,
    pool: Mutex<Pool>,
    closed: std::sync::atomic::AtomicBool,
}

impl Bridge {
    /// Claims a free slot and creates the bridge, its host address and the Service CIDR's
    /// unreachable route.
    pub fn create() -> anyhow::Result<Arc<Self>> {
        sweep_dead_owners();
        let start =
            std::process::id() as usize * 7 + SLOT_COUNTER.fetch_add(1, Ordering::SeqCst) as usize;
        let routes = ip(&["-4", "route", "show", "table", "all"])?;
        for i in 0..250usize {
            let slot = ((start + i) % 250 + 1) as u8;
            if routes.contains(&format!("10.244.{slot}."))
                || routes.contains(&format!("10.96.{slot}."))
            {
                continue;
            }
            let name = format!("tgbr{slot}");
            if ip(&["link", "add", &name, "type", "bridge"]).is_err() {
                continue; // another harness owns this slot
            }
            let bridge = Self {
                slot,
                name,
                service_cidr: format!("10.96.{slot}.0/24"),
                pool: Mutex::new(Pool {
                    free: (2..=254).collect(),
                    ..Pool::default()
                }),
                closed: std::sync::atomic::AtomicBool::new(false),
            };
            // From here on, Drop removes whatever was made.
            let _ = std::fs::create_dir_all(OWNERS)
                .and_then(|()| std::fs::write(owner_file(slot), std::process::id().to_string()));
            let host = format!("{}/24", bridge.host_ip());
            ip(&["addr", "add", &host, "dev", &bridge.name])?;
            ip(&["link", "set", &bridge.name, "up"])?;
            ip(&["route", "replace", "unreachable", &bridge.service_cidr])?;
            return Ok(Arc::new(bridge));
        }
        bail!("no free bridge slot (tgbr1..tgbr250 all exist)")
    }

    /// The host's address on the bridge (where the apiserver listens).
    pub fn host_ip(&self) -> Ipv4Addr {
        Ipv4Addr::new(10, 244, self.slot, 1)
    }

    /// The Service CIDR, unreachable from everywhere.
    pub fn service_cidr(&self) -> &str {
        &self.service_cidr
    }

    /// The first address of the Service CIDR (the `kubernetes` Service's ClusterIP).
    pub fn kubernetes_service_ip(&self) -> Ipv4Addr {
        Ipv4Addr::new(10, 96, self.slot, 1)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Creates a network namespace with an address on the bridge.
    pub fn add_pod(&self) -> anyhow::Result<PodNet> {
        let net = {
            let mut pool = self.pool.lock().expect("pool lock");
            if self.closed.load(Ordering::SeqCst) {
                bail!("the harness network is torn down");
            }
            let last = pool.last;
            let octet = match pool.free.range(last.saturating_add(1)..).next() {
                Some(o) => *o,
                None => *pool.free.first().context("the pod subnet is full")?,
            };
            pool.free.remove(&octet);
            pool.last = octet;
            pool.next_id += 1;
            let (netns, host_veth) = pod_link_names(self.slot, pool.next_id);
            let net = PodNet {
                netns,
                host_veth,
                ip: Ipv4Addr::new(10, 244, self.slot, octet),
            };
            pool.live.insert(net.netns.clone(), net.clone());
            net
        };
        let made = (|| -> anyhow::Result<()> {
            ip(&["netns", "add", &net.netns])?;
            ip(&[
                "link",
                "add",
                &net.host_veth,
                "type",
                "veth",
                "peer",
                "name",
                "eth0",
                "netns",
                &net.netns,
            ])?;
            ip(&["link", "set", &net.host_veth, "master", &self.name, "up"])?;
            ip(&[
                "-n",
                &net.netns,
                "addr",
                "add",
                &format!("{}/24", net.ip),
                "dev",
                "eth0",
            ])?;
            ip(&["-n", &net.netns, "link", "set", "eth0", "up"])?;
            ip(&["-n", &net.netns, "link", "set", "lo", "up"])?;
            Ok(())
        })();
        if let Err(e) = made {
            self.remove_pod(&net);
            return Err(e.context(format!("create the network of pod namespace {}", net.netns)));
        }
        if self.closed.load(Ordering::SeqCst) {
            // Torn down while this was being made.
            self.remove_pod(&net);
            bail!("the harness network is torn down");
        }
        Ok(net)
    }

    /// Kills every process left in the pod's namespace, then removes the veth and namespace.
    pub fn remove_pod(&self, net: &PodNet) {
        kill_netns(&net.netns, Duration::from_secs(10));
        let _ = ip(&["link", "del", &net.host_veth]);
        let _ = ip(&["netns", "del", &net.netns]);
        let _ = ip(&["neigh", "flush", "to", &net.ip.to_string()]);
        // Files `ip netns exec` mounts into the pod (its hosts file).
        let _ = std::fs::remove_dir_all(Path::new("/etc/netns").join(&net.netns));
        let mut pool = self.pool.lock().expect("pool lock");
        if pool.live.remove(&net.netns).is_some() {
            pool.free.insert(net.ip.octets()[3]);
        }
    }

    /// Runs `f` with the namespaces of live pods, unless the network is torn down; teardown
    /// waits for it (so files `f` writes for a pod are removed with the pod).
    pub fn with_live_pods<T>(&self, f: impl FnOnce(&HashMap<String, PodNet>) -> T) -> Option<T> {
        let pool = self.pool.lock().expect("pool lock");
        if self.closed.load(Ordering::SeqCst) {
            return None;
        }
        Some(f(&pool.live))
    }

    /// The namespaces of pods not removed yet.
    pub fn live_pods(&self) -> Vec<PodNet> {
        self.pool
            .lock()
            .expect("pool lock")
            .live
            .values()
            .cloned()
            .collect()
    }
}

impl Bridge {
    /// Kills every pod's processes and removes every namespace, veth, the route and the bridge.
    /// Idempotent; no pod network can be added afterwards.
    pub fn teardown(&self) {
        {
            let _pool = self.pool.lock().expect("pool lock");
            if self.closed.swap(true, Ordering::SeqCst) {
                return;
            }
        }
        for net in self.live_pods() {
            self.remove_pod(&net);
        }
        let _ = ip(&["route", "del", "unreachable", &self.service_cidr]);
        let _ = ip(&["link", "del", &self.name]);
        let _ = std::fs::remove_file(owner_file(self.slot));
        // Only when empty: other harnesses may have pods.
        let _ = std::fs::remove_dir("/etc/netns");
    }
}

/// Where slot owners are recorded.
const OWNERS: &str = "/run/toygres-k8s";

fn owner_file(slot: u8) -> std::path::PathBuf {
    std::path::Path::new(OWNERS).join(format!("tgbr{slot}"))
}

/// Removes the slots whose recorded owner process is gone: its pods' processes and namespaces,
/// the Service route and the bridge.
fn sweep_dead_owners() {
    let Ok(entries) = std::fs::read_dir(OWNERS) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(slot) = name.strip_prefix("tgbr").and_then(|s| s.parse::<u8>().ok()) else {
            continue;
        };
        let owner = std::fs::read_to_string(entry.path()).unwrap_or_default();
        let Ok(pid) = owner.trim().parse::<i32>() else {
            continue;
        };
        if pid as u32 == std::process::id() || Path::new(&format!("/proc/{pid}")).exists() {
            continue;
        }
        let prefix = format!("tg{slot}p");
        let namespaces = ip(&["netns", "list"]).unwrap_or_default();
        for ns in namespaces
            .lines()
            .filter_map(|l| l.split_whitespace().next())
        {
            if ns
                .strip_prefix(&prefix)
                .is_some_and(|id| id.chars().all(|c| c.is_ascii_digit()))
            {
                kill_netns(ns, Duration::from_secs(5));
                let _ = ip(&["netns", "del", ns]);
                let _ = std::fs::remove_dir_all(Path::new("/etc/netns").join(ns));
            }
        }
        let _ = ip(&["route", "del", "unreachable", &format!("10.96.{slot}.0/24")]);
        let _ = ip(&["link", "del", &name]);
        let _ = std::fs::remove_file(entry.path());
    }
}

impl Drop for Bridge {
    fn drop(&mut self) {
        self.teardown();
    }
}

/// The namespace and host veth names of pod `id` on bridge `slot` (interface names are at most
/// 15 characters; ids wrap after a million pods per harness).
fn pod_link_names(slot: u8, id: u32) -> (String, String) {
    let id = id % 1_000_000;
    (format!("tg{slot}p{id}"), format!("tg{slot}v{id}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interface_names_fit_in_fifteen_characters() {
        for (slot, id) in [(1, 1), (250, 999_999), (250, 1_000_001), (255, u32::MAX)] {
            let (ns, veth) = pod_link_names(slot, id);
            assert!(veth.len() <= 15 && ns.len() <= 15, "{ns} {veth}");
        }
        assert_eq!(pod_link_names(7, 1_000_003).1, "tg7v3");
    }
}
