//! The Helm chart against the real control plane: `helm install` creates every object it
//! renders (and the Deployment's pod is scheduled onto a process node), and every values
//! variant renders manifests the apiserver accepts under strict field validation
//! (`kubectl apply --dry-run=server --validate=strict`).

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

/// Every optional value set at once, so that each `with`/`if` block renders (as in
/// scripts/check-chart.sh).
const EVERYTHING: &str = r#"
nameOverride: pg
fullnameOverride: toygres-everything
controller:
  image: {tag: "1.2.3", pullPolicy: Always}
  extraEnv:
    - {name: EXTRA, value: "1"}
    - name: FROM_SECRET
      valueFrom: {secretKeyRef: {name: extra, key: extra}}
sidecar:
  image: {repository: example/sidecar, tag: "1.2.3"}
imagePullSecrets:
  - name: regcred
service: {type: NodePort, port: 8800}
podAnnotations: {example.com/a: "b"}
podLabels: {team: db}
nodeSelector: {kubernetes.io/os: linux}
tolerations:
  - {key: dedicated, operator: Equal, value: db, effect: NoSchedule}
affinity:
  nodeAffinity:
    requiredDuringSchedulingIgnoredDuringExecution:
      nodeSelectorTerms:
        - matchExpressions:
            - {key: topology.kubernetes.io/zone, operator: In, values: [a, b]}
serviceAccount:
  name: toygres-sa
  annotations: {example.com/role: controller}
serviceMonitor:
  enabled: true
  labels: {release: prometheus}
"#;

/// The Prometheus Operator's ServiceMonitor kind, schema-less: the harness has no operator, and
/// this lets the apiserver accept (and strictly check everything else in) a rendered chart.
const SERVICE_MONITOR_CRD: &str = r#"{
  "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
  "metadata": {"name": "servicemonitors.monitoring.coreos.com"},
  "spec": {"group": "monitoring.coreos.com", "scope": "Namespaced",
    "names": {"kind": "ServiceMonitor", "plural": "servicemonitors", "singular": "servicemonitor", "listKind": "ServiceMonitorList"},
    "versions": [{"name": "v1", "served": true, "storage": true,
      "schema": {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}}}]}
}"#;

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

fn install_service_monitor_crd(cluster: &Cluster, dir: &Path) {
    let crd = dir.join("servicemonitor-crd.json");
    std::fs::write(&crd, SERVICE_MONITOR_CRD).unwrap();
    let mut cmd = cluster.kubectl();
    cmd.args(["apply", "-f"]).arg(&crd);
    run(cmd, "kubectl apply the ServiceMonitor CRD");
    let mut cmd = cluster.kubectl();
    cmd.args([
        "wait",
        "--for=condition=Established",
        "--timeout=60s",
        "crd/servicemonitors.monitoring.coreos.com",
    ]);
    run(cmd, "wait for the ServiceMonitor CRD");
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
    install_service_monitor_crd(&cluster, &dir);
    let everything = dir.join("everything.yaml");
    std::fs::write(&everything, EVERYTHING).unwrap();
    let everything = everything.display().to_string();
    let variants: [(&str, Vec<&str>); 6] = [
        ("defaults", vec![]),
        (
            "serviceMonitor on",
            vec!["--set", "serviceMonitor.enabled=true"],
        ),
        (
            "rbac and serviceAccount off",
            vec![
                "--set",
                "rbac.create=false",
                "--set",
                "serviceAccount.create=false",
            ],
        ),
        (
            "no rbac, own serviceAccount name",
            vec![
                "--set",
                "rbac.create=false",
                "--set",
                "serviceAccount.name=existing-sa",
            ],
        ),
        (
            "no resources or security contexts",
            vec![
                "--set-json",
                "resources={}",
                "--set-json",
                "podSecurityContext={}",
                "--set-json",
                "securityContext={}",
            ],
        ),
        ("every optional value", vec!["-f", &everything]),
    ];
    let mut cmd = cluster.kubectl();
    cmd.args(["version", "-o", "json"]);
    let version: serde_json::Value =
        serde_json::from_slice(&run(cmd, "kubectl version").stdout).unwrap();
    let kube_version = version["serverVersion"]["gitVersion"]
        .as_str()
        .unwrap()
        .to_string();
    for (name, flags) in variants {
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
        .args(REQUIRED)
        .args(&flags);
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
