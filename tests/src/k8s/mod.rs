//! A real Kubernetes cluster for tests: the control plane ([`control_plane`]) on a private
//! bridge network ([`network`]) with three process nodes ([`node`]) that run pods as local
//! processes. [`Cluster::start`] brings it up in a temp dir in a few seconds; dropping the
//! cluster (also during a panic) kills every pod process and control-plane process by pid and
//! removes every network namespace, veth, route, hosts file and the bridge. A test process
//! killed outright takes its processes with it (parent-death signal) and the next cluster sweeps
//! its network.
//!
//! ```no_run
//! # async fn demo() {
//! let cluster = toygres_tests::k8s::Cluster::start().await;
//! let pods: kube::Api<k8s_openapi::api::core::v1::Pod> = kube::Api::default_namespaced(cluster.client());
//! # }
//! ```
//!
//! What a pod gets: its own IP on the bridge (reachable from the test process and other pods),
//! its image mapped to a local program ([`ImageMap`]), env (values, fieldRef, secretKeyRef,
//! configMapKeyRef, envFrom), volumes at their real paths (Secret, ConfigMap, projected
//! service-account token with `kube-root-ca.crt`, downwardAPI, emptyDir, hostPath, PVCs of the
//! default StorageClass `toygres-local`), `runAsUser`/`runAsGroup`/`fsGroup`, workingDir, probes
//! (httpGet, tcpSocket, exec), restarts with back-off, graceful deletion, in-cluster API access
//! (`KUBERNETES_SERVICE_HOST`/`PORT` point at the apiserver), and a hosts file resolving
//! StatefulSet pods' DNS names and their headless Services' names (to all their pods' IPs).
//!
//! What it does not get: Service ClusterIPs are unroutable (no kube-proxy: resolve a Service
//! through its EndpointSlices) and other Service names do not resolve (no cluster DNS); no cgroups or
//! resource limits; no image pulls; no UTS namespace (`HOSTNAME` is set, `hostname` is the
//! host's); `/tmp` and paths outside the volumes are the host's; `readOnlyRootFilesystem`,
//! capabilities and seccomp are ignored; Secret and ConfigMap files are refreshed every 5 s
//! (a kubelet takes about a minute) one file at a time, tokens (1 h) are not rotated; no `kubectl logs/exec/port-forward` (use
//! [`Cluster::container_log`], [`Cluster::exec_in_pod`], the pod IP); nodes never fail (no
//! node-lifecycle controller).

pub mod binaries;
pub mod control_plane;
pub mod in_cluster;
pub mod network;
pub mod node;
pub mod orders;
pub mod pki;
pub mod process;
pub mod toygres;

use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

pub use self::binaries::K8sBinaries;
pub use self::control_plane::{ControlPlane, RESTRICTED_USER};
pub use self::network::{Bridge, PodNet};
pub use self::node::images::{ImageMap, ImageSpec};
pub use self::node::provisioner::STORAGE_CLASS;
pub use self::node::{ProcessNodes, NODES};

/// The workspace's binaries (`toygres`, `toygres-sidecar`): `$TOYGRES_BIN_DIR`, else
/// `target/<profile>/` beside the test executable. Not checked here: only pods whose image maps
/// to them need them.
pub fn workspace_bin_dir() -> PathBuf {
    match std::env::var_os("TOYGRES_BIN_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => {
            let exe = std::env::current_exe().expect("locate the test executable");
            exe.parent()
                .and_then(|deps| deps.parent())
                .expect("test executable is under target/<profile>/deps")
                .to_path_buf()
        }
    }
}

/// Control plane + network + process nodes. Fields drop in order: nodes, network, control plane,
/// temp dir (the explicit [`Drop`] tears the network down first).
#[derive(Debug)]
pub struct Cluster {
    nodes: ProcessNodes,
    bridge: Arc<Bridge>,
    control_plane: ControlPlane,
    bins: K8sBinaries,
    started_in: Duration,
    dir: tempfile::TempDir,
}

impl Cluster {
    /// Starts a cluster with the workspace's images (see [`ImageMap::with_workspace_images`]).
    pub async fn start() -> Self {
        Self::start_with(ImageMap::with_workspace_images(&workspace_bin_dir())).await
    }

    /// Starts a cluster whose nodes map images with `images`; panics with the reason (and the
    /// failing component's log) when it cannot.
    pub async fn start_with(images: ImageMap) -> Self {
        let started = Instant::now();
        let bins = K8sBinaries::locate();
        let dir = tempfile::Builder::new()
            .prefix("tgk8s")
            .tempdir()
            .expect("create the cluster's temp dir");
        std::fs::set_permissions(
            dir.path(),
            std::os::unix::fs::PermissionsExt::from_mode(0o755),
        )
        .expect("chmod the cluster dir");
        let bridge = Bridge::create().expect("create the harness bridge");
        let control_plane = ControlPlane::start(
            &bins,
            dir.path(),
            bridge.host_ip(),
            bridge.service_cidr(),
            bridge.kubernetes_service_ip(),
        )
        .await
        .expect("start the control plane");
        let nodes = ProcessNodes::start(
            control_plane.admin(),
            bridge.clone(),
            dir.path(),
            images,
            (control_plane.host(), control_plane.port()),
        )
        .await
        .expect("start the process nodes");
        Self {
            nodes,
            bridge,
            control_plane,
            bins,
            started_in: started.elapsed(),
            dir,
        }
    }

    /// How long [`Cluster::start`] took.
    pub fn started_in(&self) -> Duration {
        self.started_in
    }

    /// An admin client.
    pub fn client(&self) -> kube::Client {
        self.control_plane.admin()
    }

    pub fn control_plane(&self) -> &ControlPlane {
        &self.control_plane
    }

    pub fn nodes(&self) -> &ProcessNodes {
        &self.nodes
    }

    pub fn bridge(&self) -> &Bridge {
        &self.bridge
    }

    /// The cluster's temp dir (logs in `logs/`, pods in `pods/<uid>/`, volumes in `volumes/`).
    pub fn dir(&self) -> &std::path::Path {
        self.dir.path()
    }

    /// `kube kubectl` with the admin kubeconfig.
    pub fn kubectl(&self) -> Command {
        let mut cmd = Command::new(self.bins.kube());
        cmd.arg("kubectl")
            .env("KUBECONFIG", self.control_plane.admin_kubeconfig());
        cmd
    }

    /// `helm` with the admin kubeconfig and its caches in the temp dir.
    pub fn helm(&self) -> Command {
        let mut cmd = Command::new(self.bins.helm());
        let home = self.dir.path().join("helm");
        cmd.env("KUBECONFIG", self.control_plane.admin_kubeconfig())
            .env("HELM_CACHE_HOME", home.join("cache"))
            .env("HELM_CONFIG_HOME", home.join("config"))
            .env("HELM_DATA_HOME", home.join("data"));
        cmd
    }

    /// The network of running pod `namespace/name`; panics when it is not running here.
    pub fn pod_net(&self, namespace: &str, name: &str) -> PodNet {
        self.nodes
            .pod(namespace, name)
            .unwrap_or_else(|| panic!("pod {namespace}/{name} is not running on a process node"))
            .net
    }

    /// Runs `argv` inside the pod (its network and mount namespaces, as root), like
    /// `kubectl exec`; the pod must have a running process.
    pub fn exec_in_pod(&self, namespace: &str, name: &str, argv: &[&str]) -> std::process::Output {
        let netns = self.pod_net(namespace, name).netns;
        let pid = network::netns_pids(&netns)
            .into_iter()
            .min()
            .unwrap_or_else(|| panic!("pod {namespace}/{name} has no running process"));
        Command::new("nsenter")
            .args(["-t", &pid.to_string(), "-m", "-n", "--"])
            .args(argv)
            .output()
            .unwrap_or_else(|e| panic!("nsenter into {namespace}/{name}: {e}"))
    }

    /// SIGSTOPs every process of the pod.
    pub fn freeze_pod(&self, namespace: &str, name: &str) {
        network::signal_netns(&self.pod_net(namespace, name).netns, Signal::SIGSTOP);
    }

    /// SIGCONTs every process of the pod.
    pub fn thaw_pod(&self, namespace: &str, name: &str) {
        network::signal_netns(&self.pod_net(namespace, name).netns, Signal::SIGCONT);
    }

    /// SIGKILLs every process of the pod (its containers then restart per `restartPolicy`).
    pub fn kill_pod(&self, namespace: &str, name: &str) {
        let netns = self.pod_net(namespace, name).netns;
        network::signal_netns(&netns, Signal::SIGCONT);
        network::signal_netns(&netns, Signal::SIGKILL);
    }

    /// Takes the pod's link down: nothing reaches it and it reaches nothing.
    pub fn cut_pod_network(&self, namespace: &str, name: &str) {
        let veth = self.pod_net(namespace, name).host_veth;
        network::ip(&["link", "set", &veth, "down"]).expect("take the pod's veth down");
    }

    /// Brings the pod's link back up.
    pub fn restore_pod_network(&self, namespace: &str, name: &str) {
        let veth = self.pod_net(namespace, name).host_veth;
        network::ip(&["link", "set", &veth, "up"]).expect("bring the pod's veth up");
    }

    /// What container `container` of pod `namespace/name` wrote to stdout and stderr (all its
    /// runs); empty once the pod is gone.
    pub async fn container_log(&self, namespace: &str, name: &str, container: &str) -> String {
        let pods: kube::Api<k8s_openapi::api::core::v1::Pod> =
            kube::Api::namespaced(self.client(), namespace);
        let Ok(pod) = pods.get(name).await else {
            return String::new();
        };
        let uid = pod.metadata.uid.unwrap_or_default();
        let path = self
            .dir
            .path()
            .join("pods")
            .join(uid)
            .join("logs")
            .join(format!("{container}.log"));
        std::fs::read_to_string(path).unwrap_or_default()
    }

    /// Keeps copies of what container `container` of pods `names` writes, refreshed every
    /// second in the background, so a test can show a member's log after the pod is gone (a
    /// failed create removes its members).
    pub fn keep_logs(&self, namespace: &str, names: &[&str], container: &str) -> KeptLogs {
        let kept = std::sync::Arc::new(std::sync::Mutex::new(std::collections::BTreeMap::<
            String,
            String,
        >::new()));
        let (client, dir) = (self.client(), self.dir.path().to_path_buf());
        let (namespace, container) = (namespace.to_string(), container.to_string());
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let copies = std::sync::Arc::clone(&kept);
        let task = tokio::spawn(async move {
            let pods: kube::Api<k8s_openapi::api::core::v1::Pod> =
                kube::Api::namespaced(client, &namespace);
            loop {
                for name in &names {
                    let Ok(pod) = pods.get(name).await else {
                        continue;
                    };
                    let uid = pod.metadata.uid.unwrap_or_default();
                    let path = dir.join("pods").join(uid).join("logs");
                    if let Ok(text) = std::fs::read_to_string(path.join(format!("{container}.log")))
                    {
                        copies.lock().unwrap().insert(name.clone(), text);
                    }
                }
                tokio::time::sleep(std::time::Duration::from_secs(1)).await;
            }
        });
        KeptLogs { kept, task }
    }

    /// Every pid this cluster started directly (control plane) or runs in a pod.
    pub fn pids(&self) -> Vec<u32> {
        let mut pids = self.control_plane.pids();
        for net in self.bridge.live_pods() {
            pids.extend(
                network::netns_pids(&net.netns)
                    .iter()
                    .map(|p| p.as_raw() as u32),
            );
        }
        pids
    }

    /// Stops the nodes, kills the pods and removes the network, then the control plane.
    pub fn stop(self) {
        drop(self);
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.nodes.stop();
        self.bridge.teardown();
    }
}

/// Logs kept by [`Cluster::keep_logs`]; stops copying when dropped.
pub struct KeptLogs {
    kept: std::sync::Arc<std::sync::Mutex<std::collections::BTreeMap<String, String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl KeptLogs {
    /// The last copy of every pod's log, each under a header.
    pub fn dump(&self) -> String {
        self.kept
            .lock()
            .unwrap()
            .iter()
            .map(|(name, text)| format!("---- {name} ----\n{text}\n"))
            .collect()
    }
}

impl Drop for KeptLogs {
    fn drop(&mut self) {
        self.task.abort();
    }
}
