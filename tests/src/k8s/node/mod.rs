//! Process nodes: a test-only node agent running as tokio tasks in the test process. It
//! registers three Nodes (`node-a`, `node-b`, `node-c`, zones `a`, `b`, `c`), keeps them Ready
//! (status heartbeats and node Leases), provisions volumes for the default StorageClass, and for
//! every pod the scheduler binds to one of them does what a kubelet with a process runtime
//! would (see [`pod`]): the pod's containers run as local processes in the pod's own network
//! namespace, with the image mapped to a local program ([`images`]).

pub mod container;
pub mod context;
pub mod env;
pub mod hosts;
pub mod images;
pub mod mount_points;
pub mod pod;
pub mod probes;
pub mod provisioner;
pub mod resync;
pub mod volumes;

use std::collections::{BTreeMap, HashMap};
use std::net::Ipv4Addr;
use std::path::Path;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use anyhow::Context;
use futures::StreamExt;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::api::core::v1::{
    Node, NodeAddress, NodeCondition, NodeStatus, NodeSystemInfo, Pod,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::api::{ObjectMeta, Patch, PatchParams, PostParams};
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Api, Client};
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub use self::context::{NodeContext, PodEntry, Tools};
use self::images::ImageMap;
use self::volumes::MountPoints;
use super::network::Bridge;

/// The nodes and their zones.
pub const NODES: [(&str, &str); 3] = [("node-a", "a"), ("node-b", "b"), ("node-c", "c")];

/// The running node agent. Dropping it stops its tasks (the pods' processes are killed by the
/// bridge's teardown).
#[derive(Debug)]
pub struct ProcessNodes {
    ctx: Arc<NodeContext>,
    tasks: Vec<JoinHandle<()>>,
}

impl ProcessNodes {
    /// Registers the nodes and starts serving pods.
    pub async fn start(
        client: Client,
        bridge: Arc<Bridge>,
        dir: &Path,
        images: ImageMap,
        apiserver: (Ipv4Addr, u16),
    ) -> anyhow::Result<Self> {
        let ctx = Arc::new(NodeContext {
            client: client.clone(),
            bridge,
            images: RwLock::new(images),
            dir: dir.to_path_buf(),
            mount_points: MountPoints::default(),
            apiserver_host: apiserver.0,
            apiserver_port: apiserver.1,
            tools: Tools::locate()?,
            pods: Mutex::new(HashMap::new()),
        });
        provisioner::ensure_storage_class(&client).await?;
        for (name, zone) in NODES {
            register_node(&client, name, zone, ctx.bridge.host_ip()).await?;
        }
        let volumes_dir = dir.join("volumes");
        std::fs::create_dir_all(&volumes_dir).context("create the volumes dir")?;
        let tasks = vec![
            tokio::spawn(heartbeats(client.clone(), ctx.bridge.host_ip())),
            tokio::spawn(provisioner::run_claims(client.clone(), volumes_dir)),
            tokio::spawn(provisioner::run_reclaim(client.clone())),
            tokio::spawn(dispatch_pods(ctx.clone())),
        ];
        Ok(Self { ctx, tasks })
    }

    /// Maps another image to a local program (or replaces a mapping).
    pub fn add_image(&self, repo: &str, spec: images::ImageSpec) {
        self.ctx.images.write().expect("images").insert(repo, spec);
    }

    /// The network of running pod `namespace/name`.
    pub fn pod(&self, namespace: &str, name: &str) -> Option<PodEntry> {
        self.ctx
            .pods
            .lock()
            .expect("pods")
            .get(&format!("{namespace}/{name}"))
            .cloned()
    }

    /// Stops every task (pods' processes stay until the bridge is torn down).
    pub fn stop(&mut self) {
        for task in self.tasks.drain(..) {
            task.abort();
        }
    }
}

impl Drop for ProcessNodes {
    fn drop(&mut self) {
        self.stop();
    }
}

fn node_status(host_ip: Ipv4Addr) -> NodeStatus {
    let now =
        k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(k8s_openapi::jiff::Timestamp::now());
    let condition = |type_: &str, status: &str, reason: &str| NodeCondition {
        type_: type_.into(),
        status: status.into(),
        reason: Some(reason.into()),
        last_heartbeat_time: Some(now.clone()),
        last_transition_time: Some(now.clone()),
        message: None,
    };
    let resources = BTreeMap::from([
        ("cpu".to_string(), Quantity("16".into())),
        ("memory".to_string(), Quantity("64Gi".into())),
        ("pods".to_string(), Quantity("110".into())),
        ("ephemeral-storage".to_string(), Quantity("100Gi".into())),
    ]);
    NodeStatus {
        capacity: Some(resources.clone()),
        allocatable: Some(resources),
        conditions: Some(vec![
            condition("Ready", "True", "KubeletReady"),
            condition("MemoryPressure", "False", "KubeletHasSufficientMemory"),
            condition("DiskPressure", "False", "KubeletHasNoDiskPressure"),
            condition("PIDPressure", "False", "KubeletHasSufficientPID"),
        ]),
        addresses: Some(vec![NodeAddress {
            type_: "InternalIP".into(),
            address: host_ip.to_string(),
        }]),
        node_info: Some(NodeSystemInfo {
            architecture: std::env::consts::ARCH.into(),
            operating_system: "linux".into(),
            container_runtime_version: "process://toygres-tests".into(),
            kubelet_version: "v1.36.0-process-node".into(),
            os_image: "process node".into(),
            ..NodeSystemInfo::default()
        }),
        ..NodeStatus::default()
    }
}

async fn register_node(
    client: &Client,
    name: &str,
    zone: &str,
    host_ip: Ipv4Addr,
) -> anyhow::Result<()> {
    let nodes: Api<Node> = Api::all(client.clone());
    let node = Node {
        metadata: ObjectMeta {
            name: Some(name.into()),
            labels: Some(BTreeMap::from([
                ("kubernetes.io/hostname".to_string(), name.to_string()),
                ("kubernetes.io/os".to_string(), "linux".to_string()),
                ("topology.kubernetes.io/zone".to_string(), zone.to_string()),
            ])),
            ..ObjectMeta::default()
        },
        ..Node::default()
    };
    nodes
        .create(&PostParams::default(), &node)
        .await
        .with_context(|| format!("register node {name}"))?;
    // The TaintNodesByCondition admission plugin taints a new node not-ready; the node-lifecycle
    // controller (not run here) would lift it once the node reports Ready.
    nodes
        .patch(
            name,
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({"spec": {"taints": null}})),
        )
        .await
        .context("clear the node's taints")?;
    nodes
        .patch_status(
            name,
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({ "status": node_status(host_ip) })),
        )
        .await
        .context("report node status")?;
    let leases: Api<Lease> = Api::namespaced(client.clone(), "kube-node-lease");
    let lease = Lease {
        metadata: ObjectMeta {
            name: Some(name.into()),
            ..ObjectMeta::default()
        },
        spec: Some(LeaseSpec {
            holder_identity: Some(name.into()),
            lease_duration_seconds: Some(40),
            renew_time: Some(MicroTime(k8s_openapi::jiff::Timestamp::now())),
            ..LeaseSpec::default()
        }),
    };
    match leases.create(&PostParams::default(), &lease).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 409 => Ok(()),
        Err(e) => Err(e).context("create the node lease"),
    }
}

/// Renews the node leases and Ready conditions every 10 s.
async fn heartbeats(client: Client, host_ip: Ipv4Addr) {
    let nodes: Api<Node> = Api::all(client.clone());
    let leases: Api<Lease> = Api::namespaced(client, "kube-node-lease");
    loop {
        tokio::time::sleep(Duration::from_secs(10)).await;
        for (name, _) in NODES {
            let renew = serde_json::json!({"spec": {"renewTime": MicroTime(k8s_openapi::jiff::Timestamp::now())}});
            if let Err(e) = leases
                .patch(name, &PatchParams::default(), &Patch::Merge(renew))
                .await
            {
                tracing::warn!("renew lease of {name}: {e}");
            }
            let status = serde_json::json!({ "status": node_status(host_ip) });
            if let Err(e) = nodes
                .patch_status(name, &PatchParams::default(), &Patch::Merge(status))
                .await
            {
                tracing::warn!("heartbeat of {name}: {e}");
            }
        }
    }
}

/// Watches all pods and hands those bound to our nodes to a worker each (by uid).
async fn dispatch_pods(ctx: Arc<NodeContext>) {
    let pods: Api<Pod> = Api::all(ctx.client.clone());
    let mut workers: HashMap<String, watch::Sender<Option<Pod>>> = HashMap::new();
    let mut events = watcher(pods, watcher::Config::default())
        .default_backoff()
        .boxed();
    while let Some(event) = events.next().await {
        let (pod, deleted) = match event {
            Ok(watcher::Event::Apply(p) | watcher::Event::InitApply(p)) => (p, false),
            Ok(watcher::Event::Delete(p)) => (p, true),
            Ok(_) => continue,
            Err(e) => {
                tracing::warn!("pod watch: {e}");
                continue;
            }
        };
        let ours = pod
            .spec
            .as_ref()
            .and_then(|s| s.node_name.as_deref())
            .is_some_and(|n| NODES.iter().any(|(node, _)| *node == n));
        let Some(uid) = pod.metadata.uid.clone() else {
            continue;
        };
        if !ours {
            continue;
        }
        workers.retain(|_, tx| !tx.is_closed());
        if deleted {
            if let Some(tx) = workers.remove(&uid) {
                let _ = tx.send(None);
            }
            continue;
        }
        match workers.get(&uid) {
            Some(tx) => {
                let _ = tx.send(Some(pod));
            }
            None => {
                let terminal = pod
                    .status
                    .as_ref()
                    .and_then(|s| s.phase.as_deref())
                    .is_some_and(|p| p == "Succeeded" || p == "Failed");
                if terminal && pod.metadata.deletion_timestamp.is_none() {
                    continue;
                }
                let (tx, rx) = watch::channel(Some(pod));
                workers.insert(uid, tx);
                tokio::spawn(pod::run(ctx.clone(), rx));
            }
        }
    }
}
