//! Members in network namespaces, so a test can cut links: one namespace per member, each joined
//! by a veth pair to a bridge in the root namespace, where the controller (and the rw endpoint)
//! run and listen on the bridge's address. Members talk to each other across the bridge.
//!
//! A link is cut with blackhole routes (both ends drop what they would send to the other) or,
//! to cut a member from everything, by setting its veth's root end down. Everything made here
//! (namespaces, veths, the bridge, root routes) is deleted when the [`Network`] drops, even when
//! the test fails: drop it after the [`super::Home`] whose members run inside it.

use std::net::Ipv4Addr;
use std::path::Path;
use std::process::Command;
use std::sync::Mutex;

/// Chooses subnets and names one network at a time within this test process.
static CREATING: Mutex<()> = Mutex::new(());

/// One end of a link: the controller's root namespace, or a member's namespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Node<'a> {
    Controller,
    Member(&'a str),
}

/// One member's namespace.
#[derive(Debug)]
struct Namespace {
    member: String,
    name: String,
    /// The root end of its veth pair (the other end is `eth0` inside).
    veth: String,
    host: Ipv4Addr,
}

/// A bridge and the members' namespaces; see the module's documentation.
#[derive(Debug)]
pub struct Network {
    bridge: String,
    subnet: u8,
    namespaces: Vec<Namespace>,
    /// Blackhole routes added: (namespace, or none for root; destination).
    cuts: Mutex<Vec<(Option<String>, Ipv4Addr)>>,
}

/// Runs `ip ARGS`, panicking with its output when it fails.
fn ip(args: &[&str]) {
    let output = Command::new("ip").args(args).output().unwrap();
    assert!(
        output.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// `ip ARGS`, whatever comes of it (cleanup).
fn ip_quietly(args: &[&str]) -> bool {
    Command::new("ip")
        .args(args)
        .output()
        .is_ok_and(|o| o.status.success())
}

impl Network {
    /// Whether this machine lets the tests make namespaces (root, `ip` present).
    pub fn available() -> bool {
        nix::unistd::Uid::effective().is_root() && ip_quietly(&["netns", "list"])
    }

    /// A bridge and one namespace for each of `members`, all up.
    pub fn create(members: &[String]) -> Self {
        let _one_at_a_time = CREATING.lock().unwrap_or_else(|e| e.into_inner());
        let used = String::from_utf8(
            Command::new("ip")
                .args(["-4", "-o", "addr"])
                .output()
                .unwrap()
                .stdout,
        )
        .unwrap();
        // 10.231.<subnet>.0/24: a subnet no interface of this machine has yet.
        let start = (std::process::id() % 200) as u8;
        let subnet = (0..250u16)
            .map(|i| ((u16::from(start) + i) % 250 + 1) as u8)
            .find(|s| !used.contains(&format!("10.231.{s}.")))
            .expect("a free 10.231.x.0/24 subnet");
        // Interface names are at most 15 bytes: `tg<pid, 5 hex><subnet, 2 hex>…`.
        let id = format!("tg{:05x}{subnet:02x}", std::process::id() & 0xf_ffff);
        let mut network = Self {
            bridge: format!("{id}b"),
            subnet,
            namespaces: Vec::new(),
            cuts: Mutex::new(Vec::new()),
        };
        // From here on, whatever was made is deleted when `network` drops, also on a panic.
        ip(&["link", "add", &network.bridge, "type", "bridge"]);
        let controller = format!("{}/24", network.controller_host());
        ip(&["addr", "add", &controller, "dev", &network.bridge]);
        ip(&["link", "set", &network.bridge, "up"]);
        for (i, member) in members.iter().enumerate() {
            let namespace = Namespace {
                member: member.clone(),
                name: format!("{id}-{i}"),
                veth: format!("{id}h{i}"),
                host: Ipv4Addr::new(10, 231, subnet, 10 + i as u8),
            };
            ip(&["netns", "add", &namespace.name]);
            network.namespaces.push(namespace);
            let namespace = network.namespaces.last().unwrap();
            let ns = namespace.name.as_str();
            ip(&[
                "link",
                "add",
                &namespace.veth,
                "type",
                "veth",
                "peer",
                "name",
                "eth0",
                "netns",
                ns,
            ]);
            ip(&["link", "set", &namespace.veth, "master", &network.bridge]);
            ip(&["link", "set", &namespace.veth, "up"]);
            let address = format!("{}/24", namespace.host);
            ip(&["-n", ns, "addr", "add", &address, "dev", "eth0"]);
            ip(&["-n", ns, "link", "set", "eth0", "up"]);
            ip(&["-n", ns, "link", "set", "lo", "up"]);
        }
        network
    }

    /// The controller's address on the bridge.
    pub fn controller_host(&self) -> Ipv4Addr {
        Ipv4Addr::new(10, 231, self.subnet, 1)
    }

    fn namespace(&self, member: &str) -> &Namespace {
        self.namespaces
            .iter()
            .find(|n| n.member == member)
            .unwrap_or_else(|| panic!("{member} has no namespace"))
    }

    /// The address of `member`.
    pub fn host_of(&self, member: &str) -> Ipv4Addr {
        self.namespace(member).host
    }

    /// The network namespace of `member`.
    pub fn netns_of(&self, member: &str) -> &str {
        &self.namespace(member).name
    }

    /// Writes the file the controller's `TOYGRES_LOCAL_MEMBER_NETWORKS` names.
    pub fn write_map(&self, path: &Path) {
        let map: serde_json::Map<String, serde_json::Value> = self
            .namespaces
            .iter()
            .map(|n| {
                (
                    n.member.clone(),
                    serde_json::json!({"host": n.host.to_string(), "netns": n.name}),
                )
            })
            .collect();
        std::fs::write(path, serde_json::Value::Object(map).to_string()).unwrap();
    }

    fn end(&self, node: Node<'_>) -> (Option<String>, Ipv4Addr) {
        match node {
            Node::Controller => (None, self.controller_host()),
            Node::Member(member) => {
                let namespace = self.namespace(member);
                (Some(namespace.name.clone()), namespace.host)
            }
        }
    }

    fn route(namespace: Option<&str>, verb: &str, to: Ipv4Addr) -> Vec<String> {
        let mut args: Vec<String> = Vec::new();
        if let Some(ns) = namespace {
            args.extend(["-n".into(), ns.to_string()]);
        }
        args.extend([
            "route".into(),
            verb.into(),
            "blackhole".into(),
            format!("{to}/32"),
        ]);
        args
    }

    /// Cuts the link between `a` and `b`: each drops what it would send to the other.
    pub fn cut(&self, a: Node<'_>, b: Node<'_>) {
        let (a_ns, a_host) = self.end(a);
        let (b_ns, b_host) = self.end(b);
        let mut cuts = self.cuts.lock().unwrap();
        for (ns, to) in [(a_ns, b_host), (b_ns, a_host)] {
            let args = Self::route(ns.as_deref(), "add", to);
            ip(&args.iter().map(String::as_str).collect::<Vec<_>>());
            cuts.push((ns, to));
        }
    }

    /// Restores every link [`Network::cut`] cut.
    pub fn heal(&self) {
        let mut cuts = self.cuts.lock().unwrap();
        for (ns, to) in cuts.drain(..) {
            let args = Self::route(ns.as_deref(), "del", to);
            ip(&args.iter().map(String::as_str).collect::<Vec<_>>());
        }
    }

    /// Cuts `member` from everything: the root end of its veth goes down.
    pub fn isolate(&self, member: &str) {
        ip(&["link", "set", &self.namespace(member).veth, "down"]);
    }

    /// Undoes [`Network::isolate`].
    pub fn reconnect(&self, member: &str) {
        ip(&["link", "set", &self.namespace(member).veth, "up"]);
    }

    /// Runs `f` on a thread of its own inside `member`'s namespace (sockets it opens belong
    /// there), and returns its handle.
    pub fn spawn_inside<T: Send + 'static>(
        &self,
        member: &str,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> std::thread::JoinHandle<T> {
        let path = format!("/run/netns/{}", self.netns_of(member));
        std::thread::spawn(move || {
            let file = std::fs::File::open(&path).unwrap();
            nix::sched::setns(file, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
            f()
        })
    }
}

impl Drop for Network {
    fn drop(&mut self) {
        let cuts = std::mem::take(&mut *self.cuts.lock().unwrap_or_else(|e| e.into_inner()));
        for (ns, to) in cuts {
            // Namespace routes go with their namespace; the root ones must be deleted.
            if ns.is_none() {
                let args = Self::route(None, "del", to);
                ip_quietly(&args.iter().map(String::as_str).collect::<Vec<_>>());
            }
        }
        for namespace in &self.namespaces {
            // Deleting one end of a veth pair deletes both.
            ip_quietly(&["link", "del", &namespace.veth]);
            ip_quietly(&["netns", "del", &namespace.name]);
        }
        ip_quietly(&["link", "del", &self.bridge]);
        let left: Vec<&str> = self
            .namespaces
            .iter()
            .map(|n| n.name.as_str())
            .filter(|name| Path::new("/run/netns").join(name).exists())
            .collect();
        if !left.is_empty() && !std::thread::panicking() {
            panic!("network namespaces left behind: {left:?}");
        }
    }
}
