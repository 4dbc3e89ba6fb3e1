//! `helm install` of the chart with no values at all, on the real control plane: the controller
//! runs its CMS embedded, so it is a one-replica StatefulSet whose volume claim is bound (by the
//! harness's default StorageClass) and whose pod is scheduled onto a process node.

use std::process::{Command, Output};
use std::time::Duration;

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, PersistentVolumeClaim, Pod, Secret};
use kube::api::{ListParams, PostParams};
use kube::Api;
use toygres_tests::k8s::binaries::workspace_root;
use toygres_tests::k8s::in_cluster::claim_host_path;
use toygres_tests::k8s::Cluster;
use toygres_tests::objstores::TcpProxy;
use toygres_tests::{eventually, TestDir};

const NS: &str = "toygres";

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn helm_install_with_no_values_schedules_a_controller_stateful_set_with_its_cms_on_a_bound_volume(
) {
    let cluster = Cluster::start().await;
    let ns: Namespace =
        serde_json::from_value(serde_json::json!({"metadata": {"name": NS}})).unwrap();
    Api::<Namespace>::all(cluster.client())
        .create(&PostParams::default(), &ns)
        .await
        .unwrap();

    let chart = workspace_root().join("charts/toygres");
    let mut cmd = cluster.helm();
    cmd.args(["install", "toygres"])
        .arg(&chart)
        .args(["--namespace", NS]);
    run(cmd, "helm install with no values");

    let sets: Api<StatefulSet> = Api::namespaced(cluster.client(), NS);
    let set = sets.get("toygres").await.unwrap();
    let spec = set.spec.unwrap();
    assert_eq!(spec.replicas, Some(1));
    let claim = &spec.volume_claim_templates.unwrap()[0];
    assert_eq!(claim.metadata.name.as_deref(), Some("home"));
    let env = &spec.template.spec.unwrap().containers[0]
        .env
        .clone()
        .unwrap();
    assert!(
        env.iter().all(|e| e.name != "DATABASE_URL"),
        "no external CMS"
    );

    let claims: Api<PersistentVolumeClaim> = Api::namespaced(cluster.client(), NS);
    eventually(
        Duration::from_secs(60),
        "the controller's volume claim to be bound",
        || async {
            let claim = claims.get("home-toygres-0").await.ok()?;
            (claim.status?.phase.as_deref() == Some("Bound")).then_some(())
        },
    )
    .await;
    let pods: Api<Pod> = Api::namespaced(cluster.client(), NS);
    let node = eventually(
        Duration::from_secs(60),
        "the controller pod to be scheduled",
        || async { pods.get("toygres-0").await.ok()?.spec?.node_name },
    )
    .await;
    assert!(node.starts_with("node-"), "{node}");

    // The controller runs in its pod (the image's program as the image's user): it is ready
    // (`/readyz`) once its embedded CMS is up and it holds the Lease.
    let deadline = std::time::Instant::now() + Duration::from_secs(300);
    let ready = loop {
        let pod = pods.get("toygres-0").await.ok();
        let is_ready = pod
            .as_ref()
            .and_then(|p| p.status.as_ref()?.conditions.clone())
            .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
        if let (true, Some(pod)) = (is_ready, pod) {
            break pod;
        }
        if std::time::Instant::now() > deadline {
            panic!(
                "the controller pod is not ready after 300 s; its log:\n{}",
                cluster.container_log(NS, "toygres-0", "controller").await
            );
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let ip = ready.status.and_then(|s| s.pod_ip).unwrap();
    // Its API token lives in its home, on the claim's volume.
    let home = claim_host_path(&cluster, NS, "home-toygres-0").await;
    let token_file = home.join("controller.token");

    // The API serves HTTPS with the certificate the chart made for its Service and for
    // localhost; the CA is public, in a ConfigMap. As `kubectl port-forward` would, a local
    // port leads to the pod; the CLI verifies the controller by name with that CA.
    let ca: ConfigMap = Api::namespaced(cluster.client(), NS)
        .get("toygres-ca")
        .await
        .unwrap();
    let ca_pem = ca.data.unwrap()["ca.crt"].clone();
    assert!(ca_pem.contains("BEGIN CERTIFICATE"), "{ca_pem}");
    let scratch = TestDir::new();
    let ca_file = scratch.path().join("toygres-ca.crt");
    std::fs::write(&ca_file, &ca_pem).unwrap();
    let api_secret: Secret = Api::namespaced(cluster.client(), NS)
        .get("toygres-tls")
        .await
        .unwrap();
    assert_eq!(api_secret.type_.as_deref(), Some("kubernetes.io/tls"));
    let forward = TcpProxy::forward(
        std::net::Ipv4Addr::LOCALHOST.into(),
        (ip.parse::<std::net::IpAddr>().unwrap(), 7700).into(),
    )
    .await;
    let api_url = format!("https://localhost:{}", forward.port);
    // Plain HTTP gets no answer, and a client that does not trust the CA gets nothing either.
    let plain = reqwest::Client::new()
        .get(format!("http://localhost:{}/healthz", forward.port))
        .timeout(Duration::from_secs(10))
        .send()
        .await;
    assert!(
        plain.map_or(true, |r| !r.status().is_success()),
        "the API answered plain HTTP"
    );

    // Through its API, the controller creates an instance with its own identity (the
    // chart's ServiceAccount and Role) and the chart's sidecar image, and deletes it.
    let toygres = |args: &[&str]| {
        let mut cmd = Command::new(toygres_tests::bin_path("toygres"));
        cmd.env("TOYGRES_URL", &api_url)
            .env("TOYGRES_CA_FILE", &ca_file)
            .env("TOYGRES_TOKEN_FILE", &token_file)
            .env_remove("TOYGRES_HOME")
            .args(args);
        cmd
    };
    // The chart names no backup store by default, and Kubernetes has none of its own: a
    // create that names none either is refused, clearly, and records nothing.
    let refused = toygres(&["create", "demo", "--replicas", "1"])
        .output()
        .unwrap();
    let message = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success(), "{message}");
    assert!(
        message.contains("backup.store_url") && message.contains("backup.storeUrl"),
        "the error names the missing store and the chart value: {message}"
    );
    let untrusting = Command::new(toygres_tests::bin_path("toygres"))
        .env("TOYGRES_URL", &api_url)
        .env("TOYGRES_TOKEN_FILE", &token_file)
        .env_remove("TOYGRES_CA_FILE")
        .env_remove("TOYGRES_HOME")
        .args(["list"])
        .output()
        .unwrap();
    assert!(
        !untrusting.status.success(),
        "a CLI that does not trust the chart's CA reached the API"
    );
    let out = toygres(&["create", "demo", "--replicas", "1", "--no-backup"]).output();
    let out = out.unwrap();
    if !out.status.success() {
        panic!(
            "toygres create through the in-cluster controller failed:\n{}\n{}\n---- controller ----\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            cluster.container_log(NS, "toygres-0", "controller").await
        );
    }
    let detail: serde_json::Value =
        serde_json::from_slice(&run(toygres(&["get", "demo", "-o", "json"]), "toygres get").stdout)
            .unwrap();
    let members = detail["members"].as_array().unwrap();
    assert_eq!(members.len(), 2, "{detail}");
    assert!(
        members.iter().any(|m| m["role"] == "primary"),
        "a primary among {members:?}"
    );
    let member_pods = pods
        .list(&ListParams::default().labels("toygres.io/instance=demo"))
        .await
        .unwrap();
    assert_eq!(member_pods.items.len(), 2, "the members' pods");
    run(toygres(&["delete", "demo"]), "toygres delete");
    eventually(
        Duration::from_secs(120),
        "the instance's pods to be gone",
        || async {
            let left = pods
                .list(&ListParams::default().labels("toygres.io/instance=demo"))
                .await
                .ok()?;
            left.items.is_empty().then_some(())
        },
    )
    .await;
}
