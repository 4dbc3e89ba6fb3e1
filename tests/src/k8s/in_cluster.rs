//! The controller as the chart installs it: `helm install` into the instances' namespace
//! ([`super::toygres::NS`]), its pod running on a process node, and the CLI reaching it as a
//! user would, through a local forward (what `kubectl port-forward` gives) with the chart's CA
//! and the token in the controller's home.

use std::path::PathBuf;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{ConfigMap, PersistentVolume, PersistentVolumeClaim, Pod};
use kube::Api;

use super::binaries::workspace_root;
use super::toygres::NS;
use super::Cluster;
use crate::objstores::TcpProxy;
use crate::{bin_path, TestDir};

/// The chart's controller pod (release `toygres`, embedded CMS: StatefulSet `toygres`).
pub const POD: &str = "toygres-0";

/// An installed chart's controller and a way to reach its API.
pub struct InCluster {
    /// The controller's pod.
    pub pod: String,
    /// Its controller container's log, shown when a test panics.
    log: PathBuf,
    forward: TcpProxy,
    ca_file: PathBuf,
    token_file: PathBuf,
    _scratch: TestDir,
}

/// Whether the pod is Ready.
pub fn is_ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// How often the pod's containers have restarted, in all.
pub fn restarts(pod: &Pod) -> i32 {
    pod.status
        .iter()
        .flat_map(|s| s.container_statuses.iter().flatten())
        .map(|c| c.restart_count)
        .sum()
}

/// The host directory behind claim `claim` of `namespace` (the harness's volumes are host
/// paths).
pub async fn claim_host_path(cluster: &Cluster, namespace: &str, claim: &str) -> PathBuf {
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(cluster.client(), namespace);
    let volume = claims
        .get(claim)
        .await
        .unwrap()
        .spec
        .and_then(|s| s.volume_name)
        .unwrap();
    let path = Api::<PersistentVolume>::all(cluster.client())
        .get(&volume)
        .await
        .unwrap()
        .spec
        .and_then(|s| s.host_path)
        .unwrap()
        .path;
    PathBuf::from(path)
}

/// `helm install toygres charts/toygres` into the namespace (which must exist) with `values`
/// (`--set` pairs).
pub fn helm_install(cluster: &Cluster, values: &[&str]) {
    let mut cmd = cluster.helm();
    cmd.args(["install", "toygres"])
        .arg(workspace_root().join("charts/toygres"))
        .args(["--namespace", NS]);
    for value in values {
        cmd.args(["--set", value]);
    }
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "helm install failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

impl InCluster {
    /// The chart installed with no values (the embedded CMS: StatefulSet `toygres`), once its
    /// pod is ready.
    pub async fn install(cluster: &Cluster) -> Self {
        helm_install(cluster, &[]);
        let pod = Self::wait_ready(cluster, Duration::from_secs(300)).await;
        // Its API token lives in its home, on the claim's volume.
        let home = claim_host_path(cluster, NS, "home-toygres-0").await;
        let token = home.join("controller.token");
        Self::reach(cluster, &pod, token).await
    }

    /// The controller in `pod`, whose API token is in `token_file`, through a local forward to
    /// the pod's address, trusting the chart's CA.
    pub async fn reach(cluster: &Cluster, pod: &Pod, token_file: PathBuf) -> Self {
        let ip = pod.status.as_ref().and_then(|s| s.pod_ip.clone()).unwrap();
        let ca: ConfigMap = Api::namespaced(cluster.client(), NS)
            .get("toygres-ca")
            .await
            .unwrap();
        let scratch = TestDir::new();
        let ca_file = scratch.path().join("toygres-ca.crt");
        std::fs::write(&ca_file, &ca.data.unwrap()["ca.crt"]).unwrap();
        let forward = TcpProxy::forward(
            std::net::Ipv4Addr::LOCALHOST.into(),
            (ip.parse::<std::net::IpAddr>().unwrap(), 7700).into(),
        )
        .await;
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        Self {
            pod: pod.metadata.name.clone().unwrap_or_default(),
            log: cluster
                .dir()
                .join("pods")
                .join(uid)
                .join("logs/controller.log"),
            forward,
            ca_file,
            token_file,
            _scratch: scratch,
        }
    }

    /// Waits until the controller pod is ready; panics with its log after `within`.
    pub async fn wait_ready(cluster: &Cluster, within: Duration) -> Pod {
        let pods: Api<Pod> = Api::namespaced(cluster.client(), NS);
        let deadline = Instant::now() + within;
        loop {
            if let Some(pod) = pods.get_opt(POD).await.ok().flatten().filter(is_ready) {
                return pod;
            }
            if Instant::now() > deadline {
                panic!(
                    "the controller pod is not ready after {within:?}; its log:\n{}",
                    cluster.container_log(NS, POD, "controller").await
                );
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    /// `toygres ARGS` against the in-cluster controller.
    pub fn cli(&self, args: &[&str]) -> Output {
        Command::new(bin_path("toygres"))
            .env(
                "TOYGRES_URL",
                format!("https://localhost:{}", self.forward.port),
            )
            .env("TOYGRES_CA_FILE", &self.ca_file)
            .env("TOYGRES_TOKEN_FILE", &self.token_file)
            .env_remove("TOYGRES_HOME")
            .args(args)
            .output()
            .unwrap()
    }

    /// Runs `toygres ARGS`, panicking with its output and the controller's log when it fails.
    pub async fn cli_ok(&self, cluster: &Cluster, args: &[&str]) -> String {
        let out = self.cli(args);
        if !out.status.success() {
            panic!(
                "toygres {args:?} failed:\n{}\n{}\n---- controller ----\n{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr),
                cluster.container_log(NS, &self.pod, "controller").await
            );
        }
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for InCluster {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let text = std::fs::read_to_string(&self.log).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            eprintln!(
                "---- controller {} ----\n{}",
                self.pod,
                lines[lines.len().saturating_sub(150)..].join("\n")
            );
        }
    }
}
