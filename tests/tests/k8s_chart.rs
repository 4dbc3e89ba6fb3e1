//! The Helm chart against the real control plane: `helm install` creates every object it
//! renders (and the Deployment's pod is scheduled onto a process node), and every values
//! variant (the defaults and the chart's `ci/*-values.yaml`) renders manifests the apiserver
//! accepts under strict field validation (`kubectl apply --dry-run=server --validate=strict`).

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use k8s_openapi::api::core::v1::{Namespace, Pod, Secret};
use kube::api::{ListParams, PostParams};
use kube::Api;
use toygres_tests::eventually;
use toygres_tests::k8s::binaries::workspace_root;
use toygres_tests::k8s::Cluster;

const NS: &str = "toygres";
/// The chart requires the name of the Secret holding the CMS URL.
const REQUIRED: [&str; 2] = ["--set", "databaseUrl.existingSecret=toygres-cms"];

/// A schema-less CustomResourceDefinition of the Prometheus Operator's `kind` (ServiceMonitor,
/// PodMonitor): the harness has no operator, and this lets the apiserver accept (and strictly
/// check everything else in) a rendered chart.
fn monitor_crd(kind: &str) -> serde_json::Value {
    let singular = kind.to_lowercase();
    serde_json::json!({
        "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": format!("{singular}s.monitoring.coreos.com")},
        "spec": {"group": "monitoring.coreos.com", "scope": "Namespaced",
            "names": {"kind": kind, "plural": format!("{singular}s"), "singular": singular,
                "listKind": format!("{kind}List")},
            "versions": [{"name": "v1", "served": true, "storage": true,
                "schema": {"openAPIV3Schema": {"type": "object",
                    "x-kubernetes-preserve-unknown-fields": true}}}]}
    })
}

/// The chart's values variants: its `ci/*-values.yaml` files (as scripts/check-chart.sh renders
/// them), sorted, after the defaults (`None`).
fn values_variants() -> Vec<Option<std::path::PathBuf>> {
    let dir = Path::new(&chart()).join("ci");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("read {}: {e}", dir.display()))
        .map(|entry| entry.unwrap().path())
        .filter(|p| p.to_string_lossy().ends_with("-values.yaml"))
        .collect();
    files.sort();
    assert!(files.len() >= 5, "the chart's ci/ values files: {files:?}");
    std::iter::once(None)
        .chain(files.into_iter().map(Some))
        .collect()
}

fn run(mut cmd: Command, what: &str) -> Output {
    let out = cmd.output().unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(
        out.status.success(),
        "{what} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn chart() -> String {
    workspace_root()
        .join("charts/toygres")
        .display()
        .to_string()
}

async fn create_namespace(cluster: &Cluster) {
    let ns: Namespace =
        serde_json::from_value(serde_json::json!({"metadata": {"name": NS}})).unwrap();
    Api::<Namespace>::all(cluster.client())
        .create(&PostParams::default(), &ns)
        .await
        .unwrap();
}

fn install_monitor_crds(cluster: &Cluster, dir: &Path) {
    for kind in ["ServiceMonitor", "PodMonitor"] {
        let crd = dir.join(format!("{kind}-crd.json"));
        std::fs::write(&crd, monitor_crd(kind).to_string()).unwrap();
        let mut cmd = cluster.kubectl();
        cmd.args(["apply", "-f"]).arg(&crd);
        run(cmd, &format!("kubectl apply the {kind} CRD"));
        let mut cmd = cluster.kubectl();
        cmd.args(["wait", "--for=condition=Established", "--timeout=60s"])
            .arg(format!(
                "crd/{}s.monitoring.coreos.com",
                kind.to_lowercase()
            ));
        run(cmd, &format!("wait for the {kind} CRD"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn helm_install_creates_every_object_of_the_chart() {
    let cluster = Cluster::start().await;
    create_namespace(&cluster).await;
    let secret: Secret = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "toygres-cms"},
        "stringData": {"database-url": "postgres://toygres@127.0.0.1:1/toygres"}
    }))
    .unwrap();
    Api::<Secret>::namespaced(cluster.client(), NS)
        .create(&PostParams::default(), &secret)
        .await
        .unwrap();

    let mut cmd = cluster.helm();
    cmd.args(["install", "toygres", &chart(), "--namespace", NS])
        .args(REQUIRED);
    run(cmd, "helm install");

    let manifest = cluster.dir().join("installed.yaml");
    let mut cmd = cluster.helm();
    cmd.args(["get", "manifest", "toygres", "--namespace", NS]);
    std::fs::write(&manifest, run(cmd, "helm get manifest").stdout).unwrap();
    let rendered = std::fs::read_to_string(&manifest).unwrap();
    let kinds = rendered.lines().filter(|l| l.starts_with("kind:")).count();
    let mut cmd = cluster.kubectl();
    cmd.args(["get", "-n", NS, "-o", "name", "-f"])
        .arg(&manifest);
    let names = String::from_utf8(run(cmd, "kubectl get the installed objects").stdout).unwrap();
    assert_eq!(
        names.lines().count(),
        kinds,
        "every rendered object exists:\n{names}"
    );
    assert!(names.contains("deployment.apps/"), "{names}");

    // The Deployment and ReplicaSet controllers make its pod and the scheduler binds it.
    let pods: Api<Pod> = Api::namespaced(cluster.client(), NS);
    let node = eventually(
        Duration::from_secs(60),
        "the controller pod to be scheduled",
        || async {
            let list = pods.list(&ListParams::default()).await.ok()?;
            list.items
                .into_iter()
                .find_map(|p| p.spec.and_then(|s| s.node_name))
        },
    )
    .await;
    assert!(node.starts_with("node-"), "{node}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_values_variant_passes_strict_server_side_validation() {
    let cluster = Cluster::start().await;
    create_namespace(&cluster).await;
    let dir = cluster.dir().to_path_buf();
    install_monitor_crds(&cluster, &dir);
    let mut cmd = cluster.kubectl();
    cmd.args(["version", "-o", "json"]);
    let version: serde_json::Value =
        serde_json::from_slice(&run(cmd, "kubectl version").stdout).unwrap();
    let kube_version = version["serverVersion"]["gitVersion"]
        .as_str()
        .unwrap()
        .to_string();
    for file in values_variants() {
        let name = file
            .as_deref()
            .map_or("defaults".to_string(), |f| f.display().to_string());
        let mut cmd = cluster.helm();
        cmd.args([
            "template",
            "toygres",
            &chart(),
            "--namespace",
            NS,
            "--kube-version",
            &kube_version,
        ])
        .args(
            file.iter()
                .flat_map(|f| [std::ffi::OsStr::new("-f"), f.as_os_str()]),
        );
        let rendered = dir.join("rendered.yaml");
        std::fs::write(
            &rendered,
            run(cmd, &format!("helm template ({name})")).stdout,
        )
        .unwrap();
        let mut cmd = cluster.kubectl();
        cmd.args([
            "apply",
            "--dry-run=server",
            "--validate=strict",
            "-n",
            NS,
            "-f",
        ])
        .arg(&rendered);
        let out = run(
            cmd,
            &format!("server-side strict validation of variant {name}"),
        );
        let applied = String::from_utf8_lossy(&out.stdout);
        let kinds = std::fs::read_to_string(&rendered)
            .unwrap()
            .lines()
            .filter(|l| l.starts_with("kind:"))
            .count();
        assert_eq!(
            applied.lines().count(),
            kinds,
            "variant {name}: every object validated:\n{applied}"
        );
        eprintln!("variant {name}: {kinds} objects accepted (strict, server-side, {kube_version})");
    }
}
