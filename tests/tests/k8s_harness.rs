//! The Kubernetes test harness itself, on the real control plane with process nodes: the real
//! scheduler spreads a StatefulSet over the three zones, pods run as local processes with their
//! own addresses, the EndpointSlice controller lists exactly the ready pods, the StatefulSet
//! controller recreates a deleted pod that finds its volume again, readiness follows a failing
//! probe and a frozen pod, RBAC restricts a user, and stopping the cluster leaves nothing behind.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{
    Namespace, Node, PersistentVolume, PersistentVolumeClaim, Pod, Service,
};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use kube::api::{DeleteParams, ListParams, PostParams};
use kube::{Api, Client};
use toygres_tests::eventually;
use toygres_tests::k8s::{network, Cluster, ImageMap, ImageSpec, RESTRICTED_USER};

const WAIT: Duration = Duration::from_secs(90);
const NS: &str = "harness";

/// The machine's Python, for a tiny HTTP server in pods.
fn python() -> String {
    let out = std::process::Command::new("python3")
        .args(["-c", "import sys; print(sys.executable)"])
        .output()
        .expect("python3 is needed by the harness tests");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Workspace images plus `toygres/test-web`: a shell with `$PYTHON` set.
async fn start_cluster() -> Cluster {
    let mut images = ImageMap::with_workspace_images(&toygres_tests::k8s::workspace_bin_dir());
    images.insert(
        "toygres/test-web",
        ImageSpec {
            cmd: vec!["sh".into()],
            env: vec![
                (
                    "PATH".into(),
                    toygres_tests::k8s::node::images::DEFAULT_PATH.into(),
                ),
                ("PYTHON".into(), python()),
            ],
            ..ImageSpec::default()
        },
    );
    let cluster = Cluster::start_with(images).await;
    eprintln!("cluster started in {:?}", cluster.started_in());
    let namespaces: Api<Namespace> = Api::all(cluster.client());
    namespaces
        .create(
            &PostParams::default(),
            &serde_json::from_value(serde_json::json!({"metadata": {"name": NS}})).unwrap(),
        )
        .await
        .unwrap();
    cluster
}

/// A StatefulSet `web` of `replicas` HTTP servers, one per zone, each serving its volume
/// (`/data`): on start it appends its name to `/data/boots` and creates `/data/ready`, which its
/// readiness probe fetches; and a Service `web` over them.
async fn create_web(client: &Client, replicas: i32) {
    let sts: StatefulSet = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "web"},
        "spec": {
            "replicas": replicas,
            "serviceName": "web",
            "podManagementPolicy": "Parallel",
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {
                    "terminationGracePeriodSeconds": 5,
                    "affinity": {"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [{
                        "labelSelector": {"matchLabels": {"app": "web"}},
                        "topologyKey": "topology.kubernetes.io/zone"
                    }]}},
                    "containers": [{
                        "name": "web",
                        "image": "toygres/test-web:1",
                        "command": ["sh", "-c",
                            "echo $(POD_NAME) >> /data/boots && touch /data/ready && \
                             exec \"$PYTHON\" -m http.server 8080 --bind $(POD_IP) --directory /data"],
                        "env": [
                            {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                            {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}}
                        ],
                        "ports": [{"name": "http", "containerPort": 8080}],
                        "readinessProbe": {
                            "httpGet": {"path": "/ready", "port": "http"},
                            "periodSeconds": 1, "failureThreshold": 2, "timeoutSeconds": 1
                        },
                        "volumeMounts": [{"name": "data", "mountPath": "/data"}]
                    }]
                }
            },
            "volumeClaimTemplates": [{
                "metadata": {"name": "data"},
                "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}
            }]
        }
    }))
    .unwrap();
    let svc: Service = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "web"},
        "spec": {"selector": {"app": "web"}, "ports": [{"name": "http", "port": 80, "targetPort": 8080}]}
    }))
    .unwrap();
    Api::<Service>::namespaced(client.clone(), NS)
        .create(&PostParams::default(), &svc)
        .await
        .unwrap();
    Api::<StatefulSet>::namespaced(client.clone(), NS)
        .create(&PostParams::default(), &sts)
        .await
        .unwrap();
}

fn is_ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .into_iter()
        .flatten()
        .any(|c| c.type_ == "Ready" && c.status == "True")
}

fn pod_ip(pod: &Pod) -> Option<String> {
    pod.status.as_ref().and_then(|s| s.pod_ip.clone())
}

/// Waits until `n` web pods are Ready; returns them by name.
async fn ready_pods(client: &Client, n: usize) -> BTreeMap<String, Pod> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), NS);
    eventually(WAIT, &format!("{n} ready web pods"), || async {
        let list = pods
            .list(&ListParams::default().labels("app=web"))
            .await
            .ok()?;
        let ready: BTreeMap<String, Pod> = list
            .items
            .into_iter()
            .filter(|p| is_ready(p) && p.metadata.deletion_timestamp.is_none())
            .map(|p| (p.metadata.name.clone().unwrap_or_default(), p))
            .collect();
        (ready.len() == n).then_some(ready)
    })
    .await
}

/// The addresses the `web` Service's EndpointSlices list as ready.
async fn ready_endpoints(client: &Client) -> BTreeSet<String> {
    let slices: Api<EndpointSlice> = Api::namespaced(client.clone(), NS);
    let list = slices
        .list(&ListParams::default().labels("kubernetes.io/service-name=web"))
        .await
        .unwrap();
    list.items
        .iter()
        .flat_map(|s| s.endpoints.iter().flatten())
        .filter(|e| e.conditions.as_ref().and_then(|c| c.ready) == Some(true))
        .flat_map(|e| e.addresses.iter().cloned())
        .collect()
}

async fn wait_endpoints(client: &Client, want: &BTreeSet<String>, what: &str) {
    eventually(WAIT, what, || async {
        let have = ready_endpoints(client).await;
        (have == *want).then_some(())
    })
    .await;
}

async fn http_get(ip: &str, path: &str) -> Option<(u16, String)> {
    let resp = reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .build()
        .ok()?
        .get(format!("http://{ip}:8080{path}"))
        .send()
        .await
        .ok()?;
    let status = resp.status().as_u16();
    Some((status, resp.text().await.ok()?))
}

/// The host directory behind PVC `claim`.
async fn volume_dir(client: &Client, claim: &str) -> std::path::PathBuf {
    let pvc = Api::<PersistentVolumeClaim>::namespaced(client.clone(), NS)
        .get(claim)
        .await
        .unwrap();
    let pv_name = pvc.spec.and_then(|s| s.volume_name).expect("bound claim");
    let pv = Api::<PersistentVolume>::all(client.clone())
        .get(&pv_name)
        .await
        .unwrap();
    pv.spec
        .and_then(|s| s.host_path)
        .map(|h| h.path)
        .expect("hostPath volume")
        .into()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_statefulset_spreads_over_zones_and_its_slice_lists_exactly_the_ready_pods() {
    let cluster = start_cluster().await;
    let client = cluster.client();
    let started = Instant::now();
    create_web(&client, 3).await;
    let pods = ready_pods(&client, 3).await;
    eprintln!("three pods ready in {:?}", started.elapsed());

    // One per zone, placed by the real scheduler.
    let nodes: Api<Node> = Api::all(client.clone());
    let mut zones = BTreeSet::new();
    for pod in pods.values() {
        let node = nodes
            .get(pod.spec.as_ref().unwrap().node_name.as_ref().unwrap())
            .await
            .unwrap();
        zones.insert(node.metadata.labels.unwrap()["topology.kubernetes.io/zone"].clone());
    }
    assert_eq!(
        zones,
        BTreeSet::from(["a".to_string(), "b".into(), "c".into()])
    );

    // Each has its own address, reachable from the host, serving its own volume.
    let ips: BTreeSet<String> = pods.values().map(|p| pod_ip(p).unwrap()).collect();
    assert_eq!(ips.len(), 3);
    for (name, pod) in &pods {
        let ip = pod_ip(pod).unwrap();
        assert!(ip.starts_with("10.244."), "{ip}");
        let (status, body) = http_get(&ip, "/boots").await.expect("the pod answers");
        assert_eq!((status, body.trim()), (200, name.as_str()));
    }
    wait_endpoints(&client, &ips, "the slice to list the three pods").await;

    // Pods find each other by the names cluster DNS would give them (their hosts files).
    for (name, want) in [
        ("web-1.web", pod_ip(&pods["web-1"]).unwrap()),
        (
            "web-2.web.harness.svc.cluster.local",
            pod_ip(&pods["web-2"]).unwrap(),
        ),
    ] {
        let out = cluster.exec_in_pod(NS, "web-0", &["getent", "hosts", name]);
        let text = String::from_utf8_lossy(&out.stdout);
        assert_eq!(
            text.split_whitespace().next(),
            Some(want.as_str()),
            "{name}: {text}"
        );
    }

    // A failing readiness probe takes the pod out of the slice; passing again brings it back.
    let web1 = pod_ip(&pods["web-1"]).unwrap();
    let ready_file = volume_dir(&client, "data-web-1").await.join("ready");
    std::fs::remove_file(&ready_file).unwrap();
    let without: BTreeSet<String> = ips.iter().filter(|ip| **ip != web1).cloned().collect();
    let pods_api: Api<Pod> = Api::namespaced(client.clone(), NS);
    eventually(WAIT, "web-1 not ready", || async {
        (!is_ready(&pods_api.get("web-1").await.ok()?)).then_some(())
    })
    .await;
    wait_endpoints(&client, &without, "the slice to drop web-1").await;
    std::fs::write(&ready_file, b"").unwrap();
    wait_endpoints(&client, &ips, "the slice to list web-1 again").await;
    eprintln!("test done in {:?}", started.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_pod_comes_back_through_the_statefulset_controller_with_its_volume() {
    let cluster = start_cluster().await;
    let client = cluster.client();
    let started = Instant::now();
    create_web(&client, 3).await;
    let pods = ready_pods(&client, 3).await;
    let old_uid = pods["web-2"].metadata.uid.clone().unwrap();
    let old_ip = pod_ip(&pods["web-2"]).unwrap();
    let old_pid_count = network::netns_pids(&cluster.pod_net(NS, "web-2").netns).len();
    assert!(old_pid_count > 0);

    let pods_api: Api<Pod> = Api::namespaced(client.clone(), NS);
    pods_api
        .delete("web-2", &DeleteParams::default())
        .await
        .unwrap();
    let back = eventually(WAIT, "web-2 recreated and ready", || async {
        let pod = pods_api.get("web-2").await.ok()?;
        (pod.metadata.uid.as_deref() != Some(old_uid.as_str()) && is_ready(&pod)).then_some(pod)
    })
    .await;
    eprintln!("web-2 back in {:?}", started.elapsed());
    let ip = pod_ip(&back).unwrap();
    // The recreated pod booted on the same volume: two boots recorded.
    let (_, boots) = http_get(&ip, "/boots").await.expect("web-2 answers");
    assert_eq!(boots.lines().collect::<Vec<_>>(), ["web-2", "web-2"]);
    let mut ips: BTreeSet<String> = pods.values().map(|p| pod_ip(p).unwrap()).collect();
    ips.remove(&old_ip);
    ips.insert(ip);
    wait_endpoints(&client, &ips, "the slice to list the new web-2").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_pod_is_reported_not_ready_and_recovers_when_thawed() {
    let cluster = start_cluster().await;
    let client = cluster.client();
    create_web(&client, 3).await;
    let pods = ready_pods(&client, 3).await;
    let ips: BTreeSet<String> = pods.values().map(|p| pod_ip(p).unwrap()).collect();
    wait_endpoints(&client, &ips, "the slice to list the three pods").await;

    let frozen_at = Instant::now();
    cluster.freeze_pod(NS, "web-0");
    let pods_api: Api<Pod> = Api::namespaced(client.clone(), NS);
    eventually(WAIT, "frozen web-0 not ready", || async {
        (!is_ready(&pods_api.get("web-0").await.ok()?)).then_some(())
    })
    .await;
    eprintln!(
        "frozen pod reported not ready after {:?}",
        frozen_at.elapsed()
    );
    let web0 = pod_ip(&pods["web-0"]).unwrap();
    let without: BTreeSet<String> = ips.iter().filter(|ip| **ip != web0).cloned().collect();
    wait_endpoints(&client, &without, "the slice to drop frozen web-0").await;

    cluster.thaw_pod(NS, "web-0");
    wait_endpoints(&client, &ips, "the slice to list thawed web-0").await;
    // Restarts: none, the process was only stopped.
    let pod = pods_api.get("web-0").await.unwrap();
    assert_eq!(
        pod.status.unwrap().container_statuses.unwrap()[0].restart_count,
        0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopping_the_cluster_leaves_no_process_and_no_network_namespace() {
    let cluster = start_cluster().await;
    let client = cluster.client();
    create_web(&client, 3).await;
    ready_pods(&client, 3).await;
    let pids = cluster.pids();
    let namespaces: Vec<String> = cluster
        .bridge()
        .live_pods()
        .into_iter()
        .map(|n| n.netns)
        .collect();
    let bridge = cluster.bridge().name().to_string();
    assert!(pids.len() >= 7, "control plane and pods: {pids:?}");
    assert_eq!(namespaces.len(), 3);

    let stopping = Instant::now();
    cluster.stop();
    eprintln!("cluster stopped in {:?}", stopping.elapsed());
    assert_nothing_left(&pids, &namespaces, &bridge);
}

/// What a cluster leaves behind must be nothing: no live process of those it ran, none of its
/// network namespaces, not its bridge.
fn assert_nothing_left(pids: &[u32], namespaces: &[String], bridge: &str) {
    let alive: Vec<u32> = pids
        .iter()
        .copied()
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .map(|stat| {
                    !stat
                        .rsplit(')')
                        .next()
                        .unwrap_or("")
                        .trim_start()
                        .starts_with('Z')
                })
                .unwrap_or(false)
        })
        .collect();
    assert!(alive.is_empty(), "still running: {alive:?}");
    let netns = network::ip(&["netns", "list"]).unwrap();
    for ns in namespaces {
        assert!(
            !netns
                .lines()
                .any(|l| l.split_whitespace().next() == Some(ns.as_str())),
            "{ns} left"
        );
        assert!(
            !std::path::Path::new("/etc/netns").join(ns).exists(),
            "/etc/netns/{ns} left"
        );
    }
    let links = network::ip(&["-o", "link", "show"]).unwrap();
    assert!(
        !links.contains(&format!(" {bridge}:")),
        "bridge {bridge} left"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_test_that_panics_leaves_no_process_and_no_network_namespace() {
    let seen = Arc::new(Mutex::new((Vec::new(), Vec::new(), String::new())));
    let record = seen.clone();
    let outcome = tokio::spawn(async move {
        let cluster = start_cluster().await;
        create_web(&cluster.client(), 2).await;
        ready_pods(&cluster.client(), 2).await;
        *record.lock().unwrap() = (
            cluster.pids(),
            cluster
                .bridge()
                .live_pods()
                .into_iter()
                .map(|n| n.netns)
                .collect(),
            cluster.bridge().name().to_string(),
        );
        panic!("a failing test");
    })
    .await;
    assert!(outcome.expect_err("the task panicked").is_panic());
    let (pids, namespaces, bridge) = seen.lock().unwrap().clone();
    assert_eq!(namespaces.len(), 2);
    assert_nothing_left(&pids, &namespaces, &bridge);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restricted_user_may_do_only_what_its_role_allows() {
    let cluster = start_cluster().await;
    let user = cluster
        .control_plane()
        .restricted_user_client()
        .await
        .unwrap();
    let pods: Api<Pod> = Api::namespaced(user.clone(), NS);
    match pods.list(&ListParams::default()).await {
        Err(kube::Error::Api(e)) => assert_eq!(e.code, 403),
        other => panic!("expected 403, got {other:?}"),
    }
    let role: Role = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "pod-reader"},
        "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch"]}]
    }))
    .unwrap();
    let binding: RoleBinding = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "pod-reader"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "pod-reader"},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": RESTRICTED_USER}]
    }))
    .unwrap();
    Api::<Role>::namespaced(cluster.client(), NS)
        .create(&PostParams::default(), &role)
        .await
        .unwrap();
    Api::<RoleBinding>::namespaced(cluster.client(), NS)
        .create(&PostParams::default(), &binding)
        .await
        .unwrap();
    eventually(WAIT, "the binding to take effect", || async {
        pods.list(&ListParams::default()).await.ok()
    })
    .await;
    let services: Api<Service> = Api::namespaced(user, NS);
    match services.list(&ListParams::default()).await {
        Err(kube::Error::Api(e)) => assert_eq!(e.code, 403),
        other => panic!("expected 403 for services, got {other:?}"),
    }

    // A service account's token (TokenRequest) works the same way.
    let (_, sa) = cluster
        .control_plane()
        .service_account_client(NS, "robot")
        .await
        .unwrap();
    match Api::<Pod>::namespaced(sa, NS)
        .list(&ListParams::default())
        .await
    {
        Err(kube::Error::Api(e)) => assert_eq!(e.code, 403),
        other => panic!("expected 403 for the service account, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_container_gets_its_env_files_user_workdir_and_an_in_cluster_identity() {
    let cluster = start_cluster().await;
    let client = cluster.client();
    let secret: k8s_openapi::api::core::v1::Secret = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "creds"}, "stringData": {"password": "s3cret"}
    }))
    .unwrap();
    let config: k8s_openapi::api::core::v1::ConfigMap = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "cfg"}, "data": {"mode": "fast", "file.conf": "x=1"}
    }))
    .unwrap();
    Api::namespaced(client.clone(), NS)
        .create(&PostParams::default(), &secret)
        .await
        .unwrap();
    Api::namespaced(client.clone(), NS)
        .create(&PostParams::default(), &config)
        .await
        .unwrap();
    let script = r#"
echo "env: $PASSWORD $MODE $POD_NAME $NS $NODE ip=$POD_IP"
echo "files: $(cat /etc/creds/password) $(cat /etc/cfg/file.conf)"
"$PYTHON" - <<'PY'
import os, ssl, urllib.request, urllib.error
d = '/var/run/secrets/kubernetes.io/serviceaccount/'
ctx = ssl.create_default_context(cafile=d + 'ca.crt')
url = 'https://%s:%s/api/v1/namespaces/%s/pods' % (
    os.environ['KUBERNETES_SERVICE_HOST'], os.environ['KUBERNETES_SERVICE_PORT'], open(d + 'namespace').read())
req = urllib.request.Request(url, headers={'Authorization': 'Bearer ' + open(d + 'token').read()})
try:
    urllib.request.urlopen(req, context=ctx, timeout=10)
    print('api: 200')
except urllib.error.HTTPError as e:
    print('api: %d %s' % (e.code, e.read().decode()))
PY
"#;
    let pod: Pod = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "inspect"},
        "spec": {
            "restartPolicy": "Never",
            "containers": [{
                "name": "user",
                "image": "busybox",
                "command": ["sh", "-c", "echo \"who: $(id -u):$(id -g) $(pwd)\""],
                "securityContext": {"runAsUser": 1000, "runAsGroup": 1001},
                "workingDir": "/toygres-harness-workdir"
            }, {
                "name": "main",
                "image": "toygres/test-web",
                "command": ["sh", "-c", script],
                "env": [
                    {"name": "PASSWORD", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "password"}}},
                    {"name": "MODE", "valueFrom": {"configMapKeyRef": {"name": "cfg", "key": "mode"}}},
                    {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                    {"name": "NS", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
                    {"name": "NODE", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
                    {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}}
                ],
                "volumeMounts": [
                    {"name": "creds", "mountPath": "/etc/creds"},
                    {"name": "cfg", "mountPath": "/etc/cfg"}
                ]
            }],
            "volumes": [
                {"name": "creds", "secret": {"secretName": "creds"}},
                {"name": "cfg", "configMap": {"name": "cfg"}}
            ]
        }
    }))
    .unwrap();
    let pods: Api<Pod> = Api::namespaced(client.clone(), NS);
    pods.create(&PostParams::default(), &pod).await.unwrap();
    let done = eventually(WAIT, "the pod to succeed", || async {
        let pod = pods.get("inspect").await.ok()?;
        let phase = pod.status.as_ref()?.phase.clone()?;
        assert_ne!(
            phase,
            "Failed",
            "{}",
            cluster.container_log(NS, "inspect", "main").await
        );
        (phase == "Succeeded").then_some(pod)
    })
    .await;
    let log = cluster.container_log(NS, "inspect", "main").await;
    let ip = pod_ip(&done).unwrap();
    let node = done.spec.unwrap().node_name.unwrap();
    assert!(
        log.contains(&format!("env: s3cret fast inspect {NS} {node} ip={ip}")),
        "{log}"
    );
    assert!(log.contains("files: s3cret x=1"), "{log}");
    let user_log = cluster.container_log(NS, "inspect", "user").await;
    assert_eq!(user_log.trim(), "who: 1000:1001 /toygres-harness-workdir");
    // Authenticated as the pod's service account (403, not 401): the token, CA and address work.
    assert!(log.contains("api: 403"), "{log}");
    assert!(
        log.contains(&format!("system:serviceaccount:{NS}:default")),
        "{log}"
    );
    for status in done.status.unwrap().container_statuses.unwrap() {
        let terminated = status.state.unwrap().terminated.unwrap();
        assert_eq!(terminated.exit_code, 0, "{}", status.name);
    }
    // The mount points made for the pod are not left on the host once the cluster is gone.
    drop(cluster);
    assert!(!std::path::Path::new("/toygres-harness-workdir").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn liveness_failures_and_killed_processes_restart_the_container_and_a_cut_pod_is_not_ready() {
    let cluster = start_cluster().await;
    let client = cluster.client();
    // Fails its exec liveness probe on the first boot only (the probe runs in the pod's mount
    // namespace: /state is an emptyDir mounted there).
    let pod: Pod = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "lively", "labels": {"app": "lively"}},
        "spec": {
            "terminationGracePeriodSeconds": 2,
            "containers": [{
                "name": "main",
                "image": "toygres/test-web",
                "command": ["sh", "-c",
                    "if [ -f /state/booted ]; then touch /state/alive; else touch /state/booted; fi; \
                     exec \"$PYTHON\" -m http.server 8080 --bind $(POD_IP) --directory /state"],
                "env": [{"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}}],
                "livenessProbe": {"exec": {"command": ["cat", "/state/alive"]}, "periodSeconds": 1, "failureThreshold": 2},
                "readinessProbe": {"tcpSocket": {"port": 8080}, "periodSeconds": 1, "failureThreshold": 1, "timeoutSeconds": 1},
                "volumeMounts": [{"name": "state", "mountPath": "/state"}]
            }],
            "volumes": [{"name": "state", "emptyDir": {}}]
        }
    }))
    .unwrap();
    let pods: Api<Pod> = Api::namespaced(client.clone(), NS);
    pods.create(&PostParams::default(), &pod).await.unwrap();
    let restarts = |pod: &Pod| {
        pod.status
            .as_ref()
            .and_then(|s| s.container_statuses.as_ref())
            .map(|c| c[0].restart_count)
            .unwrap_or(0)
    };
    eventually(WAIT, "a liveness restart, then ready", || async {
        let pod = pods.get("lively").await.ok()?;
        (restarts(&pod) == 1 && is_ready(&pod)).then_some(())
    })
    .await;

    cluster.kill_pod(NS, "lively");
    eventually(WAIT, "a restart after kill -9, then ready", || async {
        let pod = pods.get("lively").await.ok()?;
        (restarts(&pod) == 2 && is_ready(&pod)).then_some(())
    })
    .await;

    cluster.cut_pod_network(NS, "lively");
    eventually(WAIT, "a cut pod not ready", || async {
        (!is_ready(&pods.get("lively").await.ok()?)).then_some(())
    })
    .await;
    cluster.restore_pod_network(NS, "lively");
    eventually(WAIT, "a restored pod ready", || async {
        is_ready(&pods.get("lively").await.ok()?).then_some(())
    })
    .await;
    assert_eq!(restarts(&pods.get("lively").await.unwrap()), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sidecar_image_runs_postgres_in_a_pod_and_keeps_its_data_when_rescheduled() {
    toygres_tests::bin_path("toygres-sidecar");
    let cluster = start_cluster().await;
    let client = cluster.client();
    // The member's TLS files, from a CA of its own, as `tls/<file>` beside the credentials.
    let ca = toygres_common::tls::pki::InstanceCa::generate("pg").unwrap();
    let tls = ca
        .member_tls(
            "pg-0",
            &toygres_common::tls::pki::member_server_names("pg", "pg-0", Some(NS)),
        )
        .unwrap();
    let mut string_data = serde_json::json!({"token": "pod-token-0123456789", "superuser": "pod-superuser-pw", "replication": "pod-repl-pw"});
    let mut items = vec![
        serde_json::json!({"key": "token", "path": "token"}),
        serde_json::json!({"key": "superuser", "path": "superuser"}),
        serde_json::json!({"key": "replication", "path": "replication"}),
    ];
    for (name, content) in tls.files() {
        string_data[format!("tls-{name}")] = content.into();
        items
            .push(serde_json::json!({"key": format!("tls-{name}"), "path": format!("tls/{name}")}));
    }
    let secret: k8s_openapi::api::core::v1::Secret = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "pg-secrets"},
        "stringData": string_data
    }))
    .unwrap();
    Api::namespaced(client.clone(), NS)
        .create(&PostParams::default(), &secret)
        .await
        .unwrap();
    // What the Kubernetes platform will create, in miniature: the image's own entrypoint, user
    // and data dir; credentials as Secret files; the data dir on a PVC.
    let sts: StatefulSet = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "pg"},
        "spec": {
            "replicas": 1,
            "serviceName": "pg",
            "selector": {"matchLabels": {"app": "pg"}},
            "template": {
                "metadata": {"labels": {"app": "pg"}},
                "spec": {
                    "securityContext": {"runAsUser": 999, "runAsGroup": 999, "fsGroup": 999},
                    "terminationGracePeriodSeconds": 30,
                    "containers": [{
                        "name": "sidecar",
                        "image": "toygres/sidecar:dev",
                        "env": [
                            {"name": "TOYGRES_MEMBER_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                            {"name": "TOYGRES_PG_LISTEN", "value": "0.0.0.0"},
                            {"name": "TOYGRES_API_ADDR", "value": "0.0.0.0:8008"},
                            {"name": "TOYGRES_TOKEN_FILE", "value": "/etc/toygres/token"},
                            {"name": "TOYGRES_SUPERUSER_PASSWORD_FILE", "value": "/etc/toygres/superuser"},
                            {"name": "TOYGRES_REPLICATION_PASSWORD_FILE", "value": "/etc/toygres/replication"}
                        ],
                        "ports": [{"name": "pg", "containerPort": 5432}, {"name": "api", "containerPort": 8008}],
                        "startupProbe": {"httpGet": {"path": "/healthz", "port": "api", "scheme": "HTTPS"}, "periodSeconds": 1, "failureThreshold": 120},
                        "readinessProbe": {"httpGet": {"path": "/readyz", "port": "api", "scheme": "HTTPS"}, "periodSeconds": 1},
                        "livenessProbe": {"httpGet": {"path": "/healthz", "port": "api", "scheme": "HTTPS"}, "periodSeconds": 5},
                        "volumeMounts": [
                            {"name": "data", "mountPath": "/var/lib/postgresql/data"},
                            {"name": "secrets", "mountPath": "/etc/toygres", "readOnly": true}
                        ]
                    }],
                    "volumes": [{"name": "secrets", "secret": {"secretName": "pg-secrets", "defaultMode": 0o400, "items": items}}]
                }
            },
            "volumeClaimTemplates": [{
                "metadata": {"name": "data"},
                "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}
            }]
        }
    }))
    .unwrap();
    Api::<StatefulSet>::namespaced(client.clone(), NS)
        .create(&PostParams::default(), &sts)
        .await
        .unwrap();
    let pods: Api<Pod> = Api::namespaced(client.clone(), NS);
    let started = Instant::now();
    let ready = |old_uid: Option<String>| {
        let pods = pods.clone();
        let cluster = &cluster;
        async move {
            eventually(Duration::from_secs(120), "the pg-0 pod ready", || async {
                let pod = pods.get("pg-0").await.ok()?;
                if let Some(s) = pod
                    .status
                    .as_ref()
                    .and_then(|s| s.container_statuses.as_ref())
                {
                    assert!(
                        s[0].restart_count == 0,
                        "{}",
                        cluster.container_log(NS, "pg-0", "sidecar").await
                    );
                }
                (is_ready(&pod) && pod.metadata.uid != old_uid).then_some(pod)
            })
            .await
        }
    };
    let pod = ready(None).await;
    eprintln!("sidecar pod ready in {:?}", started.elapsed());
    let pg_tls = toygres_common::tls::pg::PgTls::new(ca.cert_pem.as_bytes(), None).unwrap();
    let connect = |ip: String| {
        let pg_tls = pg_tls.clone();
        async move {
            let mut config = tokio_postgres::Config::new();
            let (pg, conn) = toygres_common::tls::pg::PgTls::require(&mut config)
                .host(&ip)
                .port(5432)
                .user("postgres")
                .password("pod-superuser-pw")
                .dbname("postgres")
                .connect_timeout(Duration::from_secs(5))
                .connect(pg_tls)
                .await
                .unwrap();
            tokio::spawn(conn);
            pg
        }
    };
    let pg = connect(pod_ip(&pod).unwrap()).await;
    pg.batch_execute("CREATE TABLE kept (x int); INSERT INTO kept VALUES (42)")
        .await
        .unwrap();
    drop(pg);

    pods.delete("pg-0", &DeleteParams::default()).await.unwrap();
    let again = ready(pod.metadata.uid.clone()).await;
    let pg = connect(pod_ip(&again).unwrap()).await;
    let x: i32 = pg
        .query_one("SELECT x FROM kept", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(x, 42);
    eprintln!("sidecar pod test done in {:?}", started.elapsed());
}
