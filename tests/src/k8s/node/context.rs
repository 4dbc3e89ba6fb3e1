//! What a process node's tasks share: the host tools it runs, the running pods, and the context
//! every pod worker gets. Kept below `node` and `node::pod` so both can use it.

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};

use anyhow::Context;
use kube::Client;

use super::hosts;
use super::images::ImageMap;
use super::volumes::MountPoints;
use crate::k8s::network::{Bridge, PodNet};

/// Absolute paths of the host tools the node uses.
#[derive(Debug, Clone)]
pub struct Tools {
    pub ip: String,
    pub setpriv: String,
    pub mount: String,
    pub nsenter: String,
}

impl Tools {
    pub(super) fn locate() -> anyhow::Result<Self> {
        let find = |name: &str| -> anyhow::Result<String> {
            ["/usr/sbin", "/usr/bin", "/sbin", "/bin"]
                .iter()
                .map(|d| Path::new(d).join(name))
                .find(|p| p.is_file())
                .map(|p| p.display().to_string())
                .with_context(|| format!("{name} not found (install iproute2 and util-linux)"))
        };
        Ok(Self {
            ip: find("ip")?,
            setpriv: find("setpriv")?,
            mount: find("mount")?,
            nsenter: find("nsenter")?,
        })
    }
}

/// A pod running on a process node.
#[derive(Debug, Clone)]
pub struct PodEntry {
    pub uid: String,
    pub net: PodNet,
    /// Its names, for the pods' hosts files.
    pub name: hosts::PodName,
}

/// What the node tasks share.
pub struct NodeContext {
    pub client: Client,
    pub bridge: Arc<Bridge>,
    pub images: RwLock<ImageMap>,
    pub dir: PathBuf,
    pub mount_points: MountPoints,
    pub apiserver_host: Ipv4Addr,
    pub apiserver_port: u16,
    pub tools: Tools,
    /// `namespace/name` → the running pod.
    pub pods: Mutex<HashMap<String, PodEntry>>,
}

impl NodeContext {
    /// Rewrites every running pod's hosts file (after a pod started or stopped).
    /// Holds the pod table while writing, so a pod removed from it afterwards never gets its
    /// file written again, and writes nothing once the network is torn down.
    pub fn refresh_hosts(&self) {
        let table = self.pods.lock().expect("pods");
        self.bridge.with_live_pods(|live| {
            let pods: Vec<(String, hosts::PodName)> = table
                .values()
                .filter(|e| live.contains_key(&e.net.netns))
                .map(|e| (e.net.netns.clone(), e.name.clone()))
                .collect();
            hosts::write_all(&pods);
        });
    }
}

impl std::fmt::Debug for NodeContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeContext")
            .field("dir", &self.dir)
            .field("pods", &self.pods)
            .finish_non_exhaustive()
    }
}
