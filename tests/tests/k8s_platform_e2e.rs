//! The Kubernetes platform end to end: the real `toygres controller --platform kubernetes`
//! (its CMS embedded on the host) against the harness's real control plane and process nodes.
//! `toygres create orders --replicas 2 --replication sync` makes StatefulSets, Services, a
//! Secret, PVCs and a PodDisruptionBudget, with the three pods in three zones; a write through
//! `orders-rw` (resolved through its EndpointSlice: ClusterIPs are not routable here) is read
//! through `orders-ro`; a switchover moves the role label and the rw Service with it; and
//! `toygres delete orders` leaves no object behind. A frozen primary under continuous writes is
//! fenced, the rw Service moves to a standby, no acknowledged commit is lost, and the old
//! primary comes back as a standby.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{
    ConfigMap, Namespace, Node, PersistentVolumeClaim, Pod, Secret, Service,
};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::api::{ListParams, PostParams};
use kube::{Api, Client};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use toygres_tests::k8s::Cluster;
use toygres_tests::{bin_path, eventually, free_port, processes_mentioning, TestDir};

const NS: &str = "db";
const WAIT: Duration = Duration::from_secs(120);
const INSTANCE_SELECTOR: &str = "toygres.io/instance=orders";

/// `toygres controller --platform kubernetes` on the host, with its home (and embedded CMS) in a
/// temp dir. Dropped (also in a panic): SIGTERM, then SIGKILL, then whatever of its CMS is left.
struct Controller {
    child: Child,
    home: TestDir,
    log: PathBuf,
}

impl Controller {
    async fn start(cluster: &Cluster) -> Self {
        let home = TestDir::new();
        let log = home.path().join("controller.log");
        let port = free_port();
        let file = std::fs::File::create(&log).unwrap();
        let child = Command::new(bin_path("toygres"))
            .current_dir(home.path())
            .env("TOYGRES_HOME", home.path())
            .env("RUST_LOG", "info")
            .env("TOYGRES_HEALTH_INTERVAL_MS", "500")
            .env_remove("DATABASE_URL")
            .env_remove("TOYGRES_URL")
            .env_remove("TOYGRES_TOKEN_FILE")
            .env_remove("TOYGRES_PLATFORM")
            .args(["controller", "--listen", &format!("127.0.0.1:{port}")])
            .args(["--platform", "kubernetes", "--namespace", NS])
            .arg("--kubeconfig")
            .arg(cluster.control_plane().admin_kubeconfig())
            .args(["--sidecar-image", "toygres/sidecar:dev"])
            .args(["--storage-size", "1Gi"])
            .stdin(Stdio::null())
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .spawn()
            .unwrap();
        let mut controller = Self { child, home, log };
        let url = format!("http://127.0.0.1:{port}/healthz");
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = controller.child.try_wait().unwrap() {
                panic!(
                    "the controller exited ({status}):\n{}",
                    controller.log_tail()
                );
            }
            let healthy = reqwest::get(&url).await.is_ok_and(|r| r.status() == 200);
            if healthy && controller.home.path().join("controller.addr").exists() {
                return controller;
            }
            assert!(Instant::now() < deadline, "no healthy controller");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// `toygres ARGS` against this controller.
    fn cli(&self, args: &[&str]) -> Output {
        Command::new(bin_path("toygres"))
            .env("TOYGRES_HOME", self.home.path())
            .env_remove("TOYGRES_URL")
            .env_remove("TOYGRES_TOKEN_FILE")
            .args(args)
            .output()
            .unwrap()
    }

    /// Runs `toygres ARGS`, panicking with its output and the controller's log when it fails.
    fn cli_ok(&self, args: &[&str]) -> String {
        let out = self.cli(args);
        assert!(
            out.status.success(),
            "toygres {args:?} failed:\n{}\n{}\n---- controller ----\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            self.log_tail()
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text
            .lines()
            .filter(|l| !l.contains("sqlx::postgres::notice"))
            .collect();
        lines[lines.len().saturating_sub(120)..].join("\n")
    }
}

impl Drop for Controller {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("---- controller log ----\n{}", self.log_tail());
        }
        let pid = Pid::from_raw(self.child.id() as i32);
        let _ = kill(pid, Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(20);
        while self.child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        for pid in processes_mentioning(&self.home.path().to_string_lossy()) {
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
    }
}

async fn create_namespace(client: &Client) {
    let ns: Namespace = serde_json::from_value(serde_json::json!({"metadata": {"name": NS}}))
        .expect("namespace object");
    Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &ns)
        .await
        .unwrap();
}

/// The ready addresses of Service `service`'s EndpointSlices.
async fn ready_endpoints(client: &Client, service: &str) -> BTreeSet<String> {
    let slices: Api<EndpointSlice> = Api::namespaced(client.clone(), NS);
    let Ok(list) = slices
        .list(&ListParams::default().labels(&format!("kubernetes.io/service-name={service}")))
        .await
    else {
        return BTreeSet::new();
    };
    list.items
        .iter()
        .flat_map(|s| s.endpoints.iter().flatten())
        .filter(|e| e.conditions.as_ref().and_then(|c| c.ready) == Some(true))
        .flat_map(|e| e.addresses.iter().cloned())
        .collect()
}

/// The instance's pods by name: (IP, role label, node).
async fn member_pods(client: &Client) -> BTreeMap<String, (String, Option<String>, String)> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), NS);
    pods.list(&ListParams::default().labels(INSTANCE_SELECTOR))
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .map(|p| {
            let role = p
                .metadata
                .labels
                .as_ref()
                .and_then(|l| l.get("toygres.io/role").cloned());
            let ip = p
                .status
                .as_ref()
                .and_then(|s| s.pod_ip.clone())
                .unwrap_or_default();
            let node = p
                .spec
                .as_ref()
                .and_then(|s| s.node_name.clone())
                .unwrap_or_default();
            (p.metadata.name.unwrap_or_default(), (ip, role, node))
        })
        .collect()
}

/// The one pod the rw Service's EndpointSlice lists, once it lists exactly one and that pod
/// carries the primary label; returns its (name, IP).
async fn rw_primary(client: &Client, not: Option<&str>) -> (String, String) {
    eventually(WAIT, "the rw endpoint to lead to one primary", || async {
        let ready = ready_endpoints(client, "orders-rw").await;
        let [ip] = ready.iter().collect::<Vec<_>>()[..] else {
            return None;
        };
        let pods = member_pods(client).await;
        let (name, _) = pods
            .iter()
            .find(|(_, (pod_ip, role, _))| pod_ip == ip && role.as_deref() == Some("primary"))?;
        (Some(name.as_str()) != not).then(|| (name.clone(), ip.clone()))
    })
    .await
}

async fn superuser_password(client: &Client) -> String {
    let secret = Api::<Secret>::namespaced(client.clone(), NS)
        .get("orders-credentials")
        .await
        .unwrap();
    let bytes = secret.data.unwrap()["superuser-password"].0.clone();
    String::from_utf8(bytes).unwrap()
}

/// A superuser connection to a pod IP, over TLS verified against the instance's CA (its chain:
/// a pod IP is in no certificate).
async fn connect(client: &Client, ip: &str, password: &str) -> Option<tokio_postgres::Client> {
    let secrets = Api::<Secret>::namespaced(client.clone(), NS);
    let ca = secrets
        .get("orders-ca")
        .await
        .ok()?
        .data?
        .get("ca.crt")?
        .0
        .clone();
    let tls = toygres_common::tls::pg::PgTls::new(&ca, None).ok()?;
    let mut config = tokio_postgres::Config::new();
    let (client, connection) = toygres_common::tls::pg::PgTls::require(&mut config)
        .host(ip)
        .port(5432)
        .user("postgres")
        .password(password)
        .dbname("postgres")
        .connect_timeout(Duration::from_secs(3))
        .connect(tls)
        .await
        .ok()?;
    tokio::spawn(connection);
    Some(client)
}

/// Waits until the row `id` of `kept` is readable through a ready address of the ro Service.
async fn read_through_ro(client: &Client, password: &str, id: i32) {
    eventually(WAIT, "the write read back through orders-ro", || async {
        // The first ready address is enough: the read must succeed through it.
        if let Some(ip) = ready_endpoints(client, "orders-ro")
            .await
            .into_iter()
            .next()
        {
            let pg = connect(client, &ip, password).await?;
            let row = pg
                .query_opt("SELECT id FROM kept WHERE id = $1", &[&id])
                .await
                .ok()??;
            let in_recovery: bool = pg
                .query_one("SELECT pg_is_in_recovery()", &[])
                .await
                .ok()?
                .get(0);
            assert!(in_recovery, "orders-ro leads to a standby");
            return (row.get::<_, i32>(0) == id).then_some(());
        }
        None
    })
    .await;
}

/// Names of the objects of `orders` of kind `K` in the namespace.
async fn names<K>(client: &Client) -> Vec<String>
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
{
    Api::<K>::namespaced(client.clone(), NS)
        .list(&ListParams::default().labels(INSTANCE_SELECTOR))
        .await
        .unwrap()
        .items
        .into_iter()
        .filter_map(|o| o.meta().name.clone())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_write_read_switchover_and_delete_through_the_kubernetes_platform() {
    bin_path("toygres-sidecar");
    let cluster = Cluster::start().await;
    let client = cluster.client();
    create_namespace(&client).await;
    let controller = Controller::start(&cluster).await;
    let started = Instant::now();

    controller.cli_ok(&[
        "create",
        "orders",
        "--replicas",
        "2",
        "--replication",
        "sync",
        "--no-backup",
    ]);
    eprintln!("created orders in {:?}", started.elapsed());

    // The objects of the design.
    let mut sets = names::<StatefulSet>(&client).await;
    sets.sort();
    assert_eq!(sets, ["orders-0", "orders-1", "orders-2"]);
    let mut services = names::<Service>(&client).await;
    services.sort();
    assert_eq!(services, ["orders-members", "orders-ro", "orders-rw"]);
    assert_eq!(names::<Secret>(&client).await, ["orders-credentials"]);
    assert_eq!(names::<PodDisruptionBudget>(&client).await, ["orders"]);
    assert_eq!(names::<ConfigMap>(&client).await, ["orders-toygres"]);
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), NS);
    for claim in ["data-orders-0-0", "data-orders-1-0", "data-orders-2-0"] {
        let phase = claims
            .get(claim)
            .await
            .unwrap()
            .status
            .and_then(|s| s.phase);
        assert_eq!(phase.as_deref(), Some("Bound"), "{claim}");
    }
    // One pod per zone.
    let nodes: Api<Node> = Api::all(client.clone());
    let mut zones = BTreeSet::new();
    for (_, (_, _, node)) in member_pods(&client).await {
        let node = nodes.get(&node).await.unwrap();
        zones.insert(node.metadata.labels.unwrap()["topology.kubernetes.io/zone"].clone());
    }
    assert_eq!(zones.len(), 3, "the members' zones: {zones:?}");

    // A write through orders-rw, read through orders-ro.
    let password = superuser_password(&client).await;
    let (primary, primary_ip) = rw_primary(&client, None).await;
    let pg = connect(&client, &primary_ip, &password)
        .await
        .expect("connect to rw");
    pg.batch_execute("CREATE TABLE kept (id int PRIMARY KEY); INSERT INTO kept VALUES (1)")
        .await
        .unwrap();
    read_through_ro(&client, &password, 1).await;
    drop(pg);

    // Switchover: the role label, and the rw Service with it, move to another member; the old
    // primary follows as a standby.
    let switch_started = Instant::now();
    controller.cli_ok(&["replication", "switchover", "orders"]);
    let (new_primary, new_ip) = rw_primary(&client, Some(&primary)).await;
    eprintln!(
        "switchover {primary} -> {new_primary} in {:?}",
        switch_started.elapsed()
    );
    let pg = connect(&client, &new_ip, &password)
        .await
        .expect("connect to new rw");
    let kept: i64 = pg
        .query_one("SELECT count(*) FROM kept", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(kept, 1, "the write survived the switchover");
    pg.execute("INSERT INTO kept VALUES (2)", &[])
        .await
        .unwrap();
    read_through_ro(&client, &password, 2).await;
    drop(pg);

    controller.cli_ok(&["delete", "orders"]);
    eventually(WAIT, "every object of orders gone", || async {
        let left: Vec<String> = [
            names::<StatefulSet>(&client).await,
            names::<Pod>(&client).await,
            names::<Service>(&client).await,
            names::<Secret>(&client).await,
            names::<ConfigMap>(&client).await,
            names::<PodDisruptionBudget>(&client).await,
            names::<PersistentVolumeClaim>(&client).await,
        ]
        .concat();
        left.is_empty().then_some(())
    })
    .await;
    eprintln!("test done in {:?}", started.elapsed());
}

/// Inserts consecutive ids through whatever pod the rw Service's EndpointSlice lists, until
/// told to stop; returns the ids whose commit was acknowledged. An insert that fails or takes
/// over 2 s has an unknown outcome: its id is skipped, not counted.
fn spawn_writer(
    client: Client,
    password: String,
    stop: Arc<AtomicBool>,
    acknowledged: Arc<Mutex<Vec<i32>>>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut next = 1;
        let mut conn: Option<(String, tokio_postgres::Client)> = None;
        while !stop.load(Ordering::SeqCst) {
            let ready = ready_endpoints(&client, "orders-rw").await;
            let [ip] = ready.iter().collect::<Vec<_>>()[..] else {
                conn = None;
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            };
            if conn.as_ref().map(|(at, _)| at) != Some(ip) {
                conn = connect(&client, ip, &password)
                    .await
                    .map(|pg| (ip.clone(), pg));
            }
            let Some((_, pg)) = &conn else {
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            };
            let params: [&(dyn tokio_postgres::types::ToSql + Sync); 1] = [&next];
            let insert = pg.execute("INSERT INTO kept VALUES ($1)", &params);
            match tokio::time::timeout(Duration::from_secs(2), insert).await {
                Ok(Ok(_)) => acknowledged.lock().unwrap().push(next),
                _ => conn = None,
            }
            next += 1;
        }
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_primary_is_fenced_and_the_rw_endpoint_moves_without_losing_a_commit() {
    bin_path("toygres-sidecar");
    let cluster = Cluster::start().await;
    let client = cluster.client();
    create_namespace(&client).await;
    let controller = Controller::start(&cluster).await;
    controller.cli_ok(&[
        "create",
        "orders",
        "--replicas",
        "2",
        "--replication",
        "sync",
        "--no-backup",
    ]);
    let password = superuser_password(&client).await;
    let (primary, primary_ip) = rw_primary(&client, None).await;
    connect(&client, &primary_ip, &password)
        .await
        .expect("connect to rw")
        .batch_execute("CREATE TABLE kept (id int PRIMARY KEY)")
        .await
        .unwrap();
    eventually(WAIT, "both standbys in orders-ro", || async {
        (ready_endpoints(&client, "orders-ro").await.len() == 2).then_some(())
    })
    .await;

    let stop = Arc::new(AtomicBool::new(false));
    let acknowledged = Arc::new(Mutex::new(Vec::new()));
    let writer = spawn_writer(
        client.clone(),
        password.clone(),
        stop.clone(),
        acknowledged.clone(),
    );
    let acked = || acknowledged.lock().unwrap().len();
    eventually(WAIT, "20 commits before the freeze", || async {
        (acked() >= 20).then_some(())
    })
    .await;

    let frozen_at = Instant::now();
    let before = acked();
    cluster.freeze_pod(NS, &primary);
    let (new_primary, new_ip) = rw_primary(&client, Some(&primary)).await;
    eventually(WAIT, "20 commits through the new primary", || async {
        (acked() >= before + 20).then_some(())
    })
    .await;
    eprintln!(
        "froze {primary}; {new_primary} took writes {:?} later",
        frozen_at.elapsed()
    );
    stop.store(true, Ordering::SeqCst);
    writer.await.unwrap();

    let pg = connect(&client, &new_ip, &password)
        .await
        .expect("connect to new rw");
    let rows: BTreeSet<i32> = pg
        .query("SELECT id FROM kept", &[])
        .await
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect();
    let lost: Vec<i32> = acknowledged
        .lock()
        .unwrap()
        .iter()
        .copied()
        .filter(|id| !rows.contains(id))
        .collect();
    assert!(lost.is_empty(), "acknowledged commits lost: {lost:?}");

    // The frozen pod was fenced (deleted; its member kept at 0 replicas until it rejoins), so
    // the rw Service never led to two pods; the old primary comes back as a standby.
    eventually(WAIT, "the old primary back as a ready standby", || async {
        let pods = member_pods(&client).await;
        let (ip, role, _) = pods.get(&primary)?;
        let ro = ready_endpoints(&client, "orders-ro").await;
        (role.as_deref() == Some("standby") && ro.contains(ip)).then_some(())
    })
    .await;
    assert_eq!(
        ready_endpoints(&client, "orders-rw").await,
        BTreeSet::from([new_ip])
    );
}
