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
use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, Node, PersistentVolumeClaim, Pod, Secret, Service};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::{Api, Client};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use toygres_tests::k8s::toygres::{
    self, create_namespace, kubernetes_args, ready_endpoints, Controller, NS,
};
use toygres_tests::k8s::{Cluster, KeptLogs};
use toygres_tests::objstores::{Moto, TcpProxy};
use toygres_tests::{bin_path, eventually, free_port, TestDir};

const WAIT: Duration = Duration::from_secs(120);
const INSTANCE_SELECTOR: &str = "toygres.io/instance=orders";

/// The instance's pods by name: (IP, role label, node).
async fn member_pods(client: &Client) -> BTreeMap<String, (String, Option<String>, String)> {
    toygres::member_pods(client, "orders").await
}

/// The pod `orders-rw` leads to, a primary other than `not`: (name, IP).
async fn rw_primary(client: &Client, not: Option<&str>) -> (String, String) {
    toygres::rw_primary(client, "orders", not).await
}

async fn superuser_password(client: &Client) -> String {
    toygres::superuser_password(client, "orders").await
}

/// Creates an instance through the CLI (`args`), failing with the sidecars' and the
/// controller's logs when it does not succeed.
fn create_ok(controller: &Controller, logs: &KeptLogs, args: &[&str]) {
    let created = controller.cli(args);
    assert!(
        created.status.success(),
        "create failed:\n{}\n{}---- controller ----\n{}",
        String::from_utf8_lossy(&created.stderr),
        logs.dump(),
        controller.log_tail()
    );
}

/// The server's clock now, as an RFC 3339 UTC time to the microsecond (a restore target).
async fn server_now(pg: &tokio_postgres::Client) -> String {
    pg.query_one(
        "SELECT to_char(clock_timestamp() AT TIME ZONE 'UTC', \
                        'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')",
        &[],
    )
    .await
    .unwrap()
    .get(0)
}

async fn connect(client: &Client, ip: &str, password: &str) -> Option<tokio_postgres::Client> {
    toygres::connect(client, "orders", ip, password).await
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
    toygres::names::<K>(client, Some(INSTANCE_SELECTOR)).await
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
    // The printed URIs name the Services, not the controller's host.
    let detail = controller.cli_ok(&["get", "orders", "-o", "json"]);
    assert!(
        detail.contains("@orders-rw.db.svc:5432/") && detail.contains("@orders-ro.db.svc:5432/"),
        "{detail}"
    );

    // The objects of the design.
    let mut sets = names::<StatefulSet>(&client).await;
    sets.sort();
    assert_eq!(sets, ["orders-0", "orders-1", "orders-2"]);
    let mut services = names::<Service>(&client).await;
    services.sort();
    assert_eq!(services, ["orders-members", "orders-ro", "orders-rw"]);
    let mut secrets = names::<Secret>(&client).await;
    secrets.sort();
    assert_eq!(
        secrets,
        [
            "orders-0-tls",
            "orders-1-tls",
            "orders-2-tls",
            "orders-ca",
            "orders-credentials"
        ]
    );
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
    all_of_orders_gone(&client).await;
    eprintln!("test done in {:?}", started.elapsed());
}

/// Waits until no object labelled as part of `orders` is left.
async fn all_of_orders_gone(client: &Client) {
    eventually(WAIT, "every object of orders gone", || async {
        let left: Vec<String> = [
            names::<StatefulSet>(client).await,
            names::<Pod>(client).await,
            names::<Service>(client).await,
            names::<Secret>(client).await,
            names::<ConfigMap>(client).await,
            names::<PodDisruptionBudget>(client).await,
            names::<PersistentVolumeClaim>(client).await,
        ]
        .concat();
        left.is_empty().then_some(())
    })
    .await;
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
    let writer = toygres::spawn_writer(
        client.clone(),
        "orders",
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

    let acked_ids = acknowledged.lock().unwrap().clone();
    let lost = toygres::lost_commits(&client, "orders", &new_ip, &password, &acked_ids).await;
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
    // Its pod started again with the fence token the kill left on its StatefulSet, so its
    // Postgres stayed stopped until the controller made it a standby.
    let log = cluster.container_log(NS, &primary, "sidecar").await;
    assert!(
        log.contains("a new fence token"),
        "the restarted old primary was not fenced:\n{log}"
    );
    // The standbys told the controller at once that they lost the primary.
    let events: serde_json::Value = serde_json::from_str(
        &controller.cli_ok(&["events", "orders", "--limit", "1000", "-o", "json"]),
    )
    .unwrap();
    let reports: Vec<&serde_json::Value> = events["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == "member-report")
        .collect();
    assert!(!reports.is_empty(), "no member pushed a report: {events}");
}

/// The chart's Role is all the platform needs: the controller runs as the chart's
/// ServiceAccount (bound to its Role by its RoleBinding, as `helm template` renders them) and
/// creates an instance, switches over, rides out a kill -9 of the primary's pod, adds and
/// removes a standby and deletes the instance, with no request refused.
/// Applies the chart's ServiceAccount, Role and RoleBinding (rendered by `helm template`) in
/// the namespace and returns a kubeconfig of that ServiceAccount.
async fn chart_role_kubeconfig(cluster: &Cluster) -> std::path::PathBuf {
    let rbac = cluster.dir().join("rbac.yaml");
    let mut helm = cluster.helm();
    helm.args(["template", "toygres"])
        .arg(toygres_tests::k8s::binaries::workspace_root().join("charts/toygres"))
        .args(["--namespace", NS])
        .args(["--set", "databaseUrl.existingSecret=toygres-cms"])
        .args(["--show-only", "templates/serviceaccount.yaml"])
        .args(["--show-only", "templates/role.yaml"])
        .args(["--show-only", "templates/rolebinding.yaml"]);
    let rendered = helm.output().unwrap();
    assert!(
        rendered.status.success(),
        "helm template: {}",
        String::from_utf8_lossy(&rendered.stderr)
    );
    std::fs::write(&rbac, &rendered.stdout).unwrap();
    let applied = cluster
        .kubectl()
        .args(["apply", "--namespace", NS, "-f"])
        .arg(&rbac)
        .output()
        .unwrap();
    assert!(
        applied.status.success(),
        "kubectl apply: {}",
        String::from_utf8_lossy(&applied.stderr)
    );
    let (kubeconfig, _) = cluster
        .control_plane()
        .service_account_client(NS, "toygres")
        .await
        .unwrap();
    kubeconfig
}

/// The lines of the controller's log where the API server refused a request.
fn refused_requests(controller: &Controller) -> Vec<String> {
    let log = std::fs::read_to_string(&controller.log).unwrap();
    log.lines()
        .filter(|l| l.contains("forbidden") || l.contains("Forbidden"))
        .map(str::to_string)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_charts_role_is_all_the_kubernetes_platform_needs() {
    bin_path("toygres-sidecar");
    let cluster = Cluster::start().await;
    let client = cluster.client();
    create_namespace(&client).await;

    let kubeconfig = chart_role_kubeconfig(&cluster).await;
    let controller = Controller::start_as(&cluster, &kubeconfig).await;

    controller.cli_ok(&["create", "orders", "--replicas", "1", "--no-backup"]);
    let password = superuser_password(&client).await;
    let (primary, ip) = rw_primary(&client, None).await;
    connect(&client, &ip, &password)
        .await
        .expect("connect to rw")
        .batch_execute("CREATE TABLE kept (id int PRIMARY KEY); INSERT INTO kept VALUES (1)")
        .await
        .unwrap();

    controller.cli_ok(&["replication", "switchover", "orders"]);
    let (after_switchover, _) = rw_primary(&client, Some(&primary)).await;

    // kill -9 of everything in the primary's pod: the platform restarts it or the controller
    // fails over; either way rw leads to a writable primary again.
    cluster.kill_pod(NS, &after_switchover);
    eventually(WAIT, "a write through rw after the kill", || async {
        let ready = ready_endpoints(&client, "orders-rw").await;
        let [ip] = ready.iter().collect::<Vec<_>>()[..] else {
            return None;
        };
        let pg = connect(&client, ip, &password).await?;
        pg.execute("INSERT INTO kept VALUES (2) ON CONFLICT DO NOTHING", &[])
            .await
            .ok()
            .map(|_| ())
    })
    .await;

    controller.cli_ok(&["replication", "add", "orders"]);
    eventually(WAIT, "three member pods", || async {
        (member_pods(&client).await.len() == 3).then_some(())
    })
    .await;
    controller.cli_ok(&["replication", "remove", "orders", "orders-2"]);
    controller.cli_ok(&["delete", "orders"]);
    all_of_orders_gone(&client).await;
    let refused = refused_requests(&controller);
    assert!(
        refused.is_empty(),
        "requests the chart's Role refused:\n{}",
        refused.join("\n")
    );
}

/// The holder named in Lease `toygres-controller`, if any.
async fn lease_holder(client: &Client) -> Option<String> {
    Api::<Lease>::namespaced(client.clone(), NS)
        .get_opt("toygres-controller")
        .await
        .unwrap()?
        .spec?
        .holder_identity
}

/// Two controllers on one CMS: the first takes the Lease and acts, the second waits as a
/// standby (alive, not ready, 503 on the API). kill -9 of the active one: the standby takes
/// the Lease once it has gone unrenewed for its duration, serves the API and carries the
/// instance on (a switchover and the delete go through it). A clean stop releases the Lease.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn of_two_controllers_one_acts_and_the_standby_takes_over_when_it_dies() {
    bin_path("toygres-sidecar");
    let cluster = Cluster::start().await;
    let client = cluster.client();
    create_namespace(&client).await;

    // The CMS: another controller's embedded Postgres (a local-platform controller running
    // nothing), in a database of its own.
    let cms = Controller::launch(Ipv4Addr::LOCALHOST, &[], &[], true).await;
    let (cms_port, cms_password) = cms.cms_database("leaders").await;
    let url = format!("postgres://postgres:{cms_password}@127.0.0.1:{cms_port}/leaders");

    let args = kubernetes_args(cluster.control_plane().admin_kubeconfig());
    let a = Controller::launch(
        Ipv4Addr::LOCALHOST,
        &args,
        &[("DATABASE_URL", &url), ("POD_NAME", "controller-a")],
        true,
    )
    .await;
    let mut b = Controller::launch(
        Ipv4Addr::LOCALHOST,
        &args,
        &[("DATABASE_URL", &url), ("POD_NAME", "controller-b")],
        false,
    )
    .await;
    assert_eq!(lease_holder(&client).await.as_deref(), Some("controller-a"));
    assert_eq!(b.status("/readyz").await, Some(503));
    assert_eq!(b.status("/v1/instances").await, Some(503));
    assert!(!b.is_active());

    a.cli_ok(&["create", "orders", "--replicas", "1", "--no-backup"]);
    let (primary, _) = rw_primary(&client, None).await;

    let mut a = a;
    let killed_at = Instant::now();
    kill(Pid::from_raw(a.child.id() as i32), Signal::SIGKILL).unwrap();
    a.child.wait().unwrap();
    eventually(WAIT, "the standby active", || async {
        (b.is_active() && b.status("/readyz").await == Some(200)).then_some(())
    })
    .await;
    eprintln!(
        "the standby took over {:?} after the kill",
        killed_at.elapsed()
    );
    assert_eq!(lease_holder(&client).await.as_deref(), Some("controller-b"));

    b.cli_ok(&["replication", "switchover", "orders"]);
    rw_primary(&client, Some(&primary)).await;
    b.cli_ok(&["delete", "orders"]);
    eventually(WAIT, "every StatefulSet of orders gone", || async {
        names::<StatefulSet>(&client).await.is_empty().then_some(())
    })
    .await;

    // A clean stop hands the Lease back.
    kill(Pid::from_raw(b.child.id() as i32), Signal::SIGTERM).unwrap();
    let status = b.child.wait().unwrap();
    assert!(status.success(), "{status}:\n{}", b.log_tail());
    assert_eq!(lease_holder(&client).await, None);
}

/// Backups on Kubernetes: a store secret registered through the controller is a Secret the
/// members mount as files; the primary archives WAL into S3 (moto, which the pods reach at the
/// host's bridge address) and a base backup lands there, with the key in no pod's spec. The
/// store and secret are the controller's defaults (the chart's `backup.storeUrl` and
/// `backup.credentialsSecret`), so `toygres create` names neither.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_secret_is_mounted_and_the_primary_archives_and_backs_up_into_s3() {
    let (cluster, _emulators, moto, _proxy, controller, key) = s3_backed_controller().await;
    let client = cluster.client();
    let secret = Api::<Secret>::namespaced(client.clone(), NS)
        .get("s3-creds")
        .await
        .unwrap();
    let data = secret.data.unwrap_or_default();
    assert_eq!(data["AWS_SECRET_ACCESS_KEY"].0, key.as_bytes());

    let logs = cluster.keep_logs(NS, &["orders-0", "orders-1"], "sidecar");
    create_ok(&controller, &logs, &["create", "orders", "--replicas", "1"]);
    let sets: Api<StatefulSet> = Api::namespaced(client.clone(), NS);
    for member in ["orders-0", "orders-1"] {
        let set = serde_json::to_string(&sets.get(member).await.unwrap()).unwrap();
        assert!(set.contains("s3-creds"), "{member} mounts the store secret");
        assert!(
            set.contains("s3://k8s-backups/pfx"),
            "{member} archives into the default store"
        );
        assert!(!set.contains(&key), "{member}'s spec holds the key");
    }
    let backup: serde_json::Value =
        serde_json::from_str(&controller.cli_ok(&["backup", "create", "orders", "-o", "json"]))
            .unwrap();
    assert_eq!(backup["status"], "succeeded", "{backup}");
    let base = moto.list("k8s-backups", "pfx/orders/base/").await;
    assert!(!base.is_empty(), "the base backup is in the bucket");
    eventually(WAIT, "WAL archived into the bucket", || async {
        let wal = moto.list("k8s-backups", "pfx/orders/wal").await;
        (!wal.is_empty()).then_some(())
    })
    .await;

    controller.cli_ok(&["delete", "orders"]);
    all_of_orders_gone(&client).await;
}

/// A cluster with the namespace, moto (bucket `k8s-backups`) behind a proxy the pods reach at
/// the bridge's host address, and a controller whose default backup store is that bucket with
/// the store secret `s3-creds`, registered (from an env file, removed after). Also the secret
/// access key the secret holds.
async fn s3_backed_controller() -> (Cluster, TestDir, Moto, TcpProxy, Controller, String) {
    s3_backed_controller_as(false).await
}

/// [`s3_backed_controller`], its controller running as the chart's Role when `chart_role`.
async fn s3_backed_controller_as(
    chart_role: bool,
) -> (Cluster, TestDir, Moto, TcpProxy, Controller, String) {
    bin_path("toygres-sidecar");
    let cluster = Cluster::start().await;
    create_namespace(&cluster.client()).await;
    let emulators = TestDir::new();
    let moto = Moto::start(emulators.path());
    moto.create_bucket("k8s-backups").await;
    let proxy = TcpProxy::start_on(cluster.bridge().host_ip().into(), moto.port).await;
    let env = [
        ("TOYGRES_DEFAULT_BACKUP_STORE", "s3://k8s-backups/pfx"),
        ("TOYGRES_DEFAULT_BACKUP_CREDENTIALS", "s3-creds"),
    ];
    let controller = if chart_role {
        let kubeconfig = chart_role_kubeconfig(&cluster).await;
        Controller::start_as_with_env(&cluster, &kubeconfig, &env).await
    } else {
        Controller::start_with_env(&cluster, &env).await
    };
    let key = format!("tgkey{}", free_port());
    let env_file = emulators.path().join("s3.env");
    std::fs::write(
        &env_file,
        format!(
            "AWS_ACCESS_KEY_ID=toygres\nAWS_SECRET_ACCESS_KEY={key}\nAWS_REGION=us-east-1\n\
             AWS_ENDPOINT_URL={}\nAWS_ALLOW_HTTP=true\n",
            proxy.endpoint()
        ),
    )
    .unwrap();
    controller.cli_ok(&[
        "secret",
        "set",
        "s3-creds",
        "--from-env-file",
        &env_file.to_string_lossy(),
    ]);
    std::fs::remove_file(&env_file).unwrap();
    (cluster, emulators, moto, proxy, controller, key)
}

/// Registers the store secret `name` holding the backup encryption key `key` (from an env
/// file, removed after).
fn set_key_secret(controller: &Controller, dir: &TestDir, name: &str, key: &str) {
    let env_file = dir.path().join(format!("{name}.env"));
    std::fs::write(&env_file, format!("TOYGRES_BACKUP_ENCRYPTION_KEY={key}\n")).unwrap();
    controller.cli_ok(&[
        "secret",
        "set",
        name,
        "--from-env-file",
        &env_file.to_string_lossy(),
    ]);
    std::fs::remove_file(&env_file).unwrap();
}

/// A new random key: 32 bytes in hex.
fn random_key() -> String {
    rand::random::<[u8; 32]>()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Backup key rotation on Kubernetes: an instance encrypted with the key of store secret
/// `key-1` takes a backup; `toygres backup rotate-key` to `key-2` rewrites the instance's key
/// ring Secret (the new key current, the old one kept to decrypt), and each member's sidecar
/// reads the ring again once the kubelet has refreshed it: both members then encrypt with
/// another key id than before. Writes and a second backup follow, and no StatefulSet holds a
/// key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_backup_key_reaches_every_member_through_its_ring_secret() {
    let (cluster, emulators, _moto, _proxy, controller, _) = s3_backed_controller().await;
    let client = cluster.client();
    let (old_key, new_key) = (random_key(), random_key());
    set_key_secret(&controller, &emulators, "key-1", &old_key);
    set_key_secret(&controller, &emulators, "key-2", &new_key);

    let logs = cluster.keep_logs(
        NS,
        &["orders-0", "orders-1", "before-0", "after-0"],
        "sidecar",
    );
    create_ok(
        &controller,
        &logs,
        &[
            "create",
            "orders",
            "--replicas",
            "1",
            "--backup-encryption-key",
            "key-1",
            // Both backups of the day are kept (the default keeps the day's newest).
            "--recovery-window-days",
            "1",
        ],
    );
    let password = superuser_password(&client).await;
    let (_, ip) = rw_primary(&client, None).await;
    let pg = connect(&client, &ip, &password)
        .await
        .expect("connect to rw");
    pg.batch_execute(
        "CREATE TABLE t (v integer PRIMARY KEY); INSERT INTO t SELECT generate_series(1, 100)",
    )
    .await
    .unwrap();
    let backup = |what: &str| {
        let out = controller.cli_ok(&["backup", "create", "orders", "-o", "json"]);
        let backup: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(backup["status"], "succeeded", "{what}: {backup}");
        backup["id"].as_str().unwrap().to_string()
    };
    let first = backup("the first backup");
    // A time after the first 100 rows and before the next ones: what "before" restores to.
    let before_rotation = server_now(&pg).await;
    // The key every member holds now: a rotation to the current key applies the ring again.
    let out = controller.cli_ok(&[
        "backup",
        "rotate-key",
        "orders",
        "--new-key",
        "key-1",
        "-o",
        "json",
    ]);
    let unrotated: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        unrotated["members"].as_array().unwrap().len(),
        2,
        "{unrotated}"
    );
    let old_id = unrotated["key_id"].as_str().unwrap().to_string();

    // The rotation: both members take the new key, the old one stays in their ring.
    let out = controller.cli_ok(&[
        "backup",
        "rotate-key",
        "orders",
        "--new-key",
        "key-2",
        "-o",
        "json",
    ]);
    let rotated: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(rotated["encryption_secret"], "key-2", "{rotated}");
    assert_eq!(
        rotated["previous_encryption_secrets"],
        serde_json::json!(["key-1"])
    );
    assert_eq!(rotated["members"].as_array().unwrap().len(), 2, "{rotated}");
    assert_ne!(rotated["key_id"].as_str().unwrap(), old_id, "{rotated}");
    assert!(
        rotated["pending"].as_array().is_none_or(Vec::is_empty),
        "{rotated}"
    );
    pg.batch_execute("INSERT INTO t SELECT generate_series(101, 200)")
        .await
        .unwrap();
    backup("the backup after the rotation");

    // The keys are in the ring Secret only, never in a pod's spec.
    let ring = Api::<Secret>::namespaced(client.clone(), NS)
        .get("orders-backup-keyring")
        .await
        .unwrap();
    let ring_files: Vec<String> = ring.data.unwrap_or_default().into_keys().collect();
    assert_eq!(
        ring_files,
        ["current.key", "previous-key-1.key", "ring.version"],
        "the ring: the new key current, the old one kept"
    );
    let sets: Api<StatefulSet> = Api::namespaced(client.clone(), NS);
    for member in ["orders-0", "orders-1"] {
        let set = serde_json::to_string(&sets.get(member).await.unwrap()).unwrap();
        assert!(
            set.contains("TOYGRES_BACKUP_ENCRYPTION_KEYRING"),
            "{member}"
        );
        assert!(
            !set.contains(&old_key) && !set.contains(&new_key),
            "{member}'s spec holds a key"
        );
    }
    // The rows written under each key are on the primary.
    assert_eq!(
        pg.query_one("SELECT count(*), max(v) FROM t", &[])
            .await
            .unwrap()
            .get::<_, i64>(0),
        200
    );

    // Each backup restores into an instance of its own (a second live instance beside orders:
    // endpoint ports are the platform's, all Services on 5432): the one before the rotation,
    // sealed with key-1, and the archive's end, past the rotation, sealed with key-2.
    let first_to_time = [
        "--backup",
        first.as_str(),
        "--time",
        before_rotation.as_str(),
    ];
    for (copy, target, rows) in [("before", &first_to_time[..], 100), ("after", &[][..], 200)] {
        let mut args = vec!["restore", "orders", "--to", copy];
        args.extend(target);
        let restored = controller.cli(&args);
        assert!(
            restored.status.success(),
            "restore to {copy} failed:\n{}\n{}---- controller ----\n{}",
            String::from_utf8_lossy(&restored.stderr),
            logs.dump(),
            controller.log_tail()
        );
        let password = toygres::superuser_password(&client, copy).await;
        let (_, ip) = toygres::rw_primary(&client, copy, None).await;
        let db = toygres::connect(&client, copy, &ip, &password)
            .await
            .unwrap_or_else(|| panic!("connect to {copy}'s rw"));
        let row = db
            .query_one("SELECT count(*), max(v) FROM t", &[])
            .await
            .unwrap();
        assert_eq!(
            (row.get::<_, i64>(0), row.get::<_, Option<i32>>(1)),
            (rows, Some(i32::try_from(rows).unwrap())),
            "{copy}"
        );
        drop(db);
        controller.cli_ok(&["delete", copy]);
    }

    drop(pg);
    controller.cli_ok(&["delete", "orders"]);
    all_of_orders_gone(&client).await;
}

/// The claims of `orders`' members: name → (uid, phase), those being deleted left out.
async fn data_claims(client: &Client) -> BTreeMap<String, (String, String)> {
    Api::<PersistentVolumeClaim>::namespaced(client.clone(), NS)
        .list(&kube::api::ListParams::default().labels(INSTANCE_SELECTOR))
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|c| c.metadata.deletion_timestamp.is_none())
        .map(|c| {
            let phase = c.status.and_then(|s| s.phase).unwrap_or_default();
            (
                c.metadata.name.unwrap_or_default(),
                (c.metadata.uid.unwrap_or_default(), phase),
            )
        })
        .collect()
}

/// The names of the PersistentVolumes there are.
async fn volumes(client: &Client) -> BTreeSet<String> {
    Api::<k8s_openapi::api::core::v1::PersistentVolume>::all(client.clone())
        .list(&kube::api::ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter_map(|v| v.metadata.name)
        .collect()
}

/// Rows in `t`, and its largest value.
async fn rows_of(pg: &tokio_postgres::Client) -> (i64, Option<i32>) {
    let row = pg
        .query_one("SELECT count(*), max(v) FROM t", &[])
        .await
        .unwrap();
    (row.get(0), row.get(1))
}

/// The timeline `pg` writes (or, on a standby, replays) on.
async fn timeline_of(pg: &tokio_postgres::Client) -> i32 {
    pg.query_one("SELECT timeline_id FROM pg_control_checkpoint()", &[])
        .await
        .unwrap()
        .get(0)
}

/// Waits until the standby `orders-1` streams from the primary on `timeline` and holds
/// `expected`.
async fn standby_streams(
    client: &Client,
    password: &str,
    timeline: i32,
    expected: (i64, Option<i32>),
) {
    eventually(
        WAIT,
        &format!("orders-1 streaming on timeline {timeline} with {expected:?}"),
        || async {
            let pods = member_pods(client).await;
            let (ip, role, _) = pods.get("orders-1-0")?;
            if role.as_deref() != Some("standby") {
                return None;
            }
            let pg = connect(client, ip, password).await?;
            let streaming = pg
                .query_opt(
                    "SELECT received_tli FROM pg_stat_wal_receiver WHERE status = 'streaming'",
                    &[],
                )
                .await
                .ok()??;
            let in_recovery: bool = pg
                .query_one("SELECT pg_is_in_recovery()", &[])
                .await
                .ok()?
                .get(0);
            let rows = pg
                .query_one("SELECT count(*), max(v) FROM t", &[])
                .await
                .ok()?;
            (in_recovery
                && streaming.get::<_, i32>(0) == timeline
                && (rows.get::<_, i64>(0), rows.get::<_, Option<i32>>(1)) == expected)
                .then_some(())
        },
    )
    .await;
}

/// The S3-backed controller as the chart's Role, with the sidecar logs of `orders`' two
/// members kept.
async fn s3_backed_with_orders_logs() -> (Cluster, TestDir, Moto, TcpProxy, Controller, KeptLogs) {
    let (cluster, emulators, moto, proxy, controller, _) = s3_backed_controller_as(true).await;
    let logs = cluster.keep_logs(NS, &["orders-0-0", "orders-1-0"], "sidecar");
    (cluster, emulators, moto, proxy, controller, logs)
}

/// What an in-place restore test starts from ([`orders_with_a_backup_and_a_time`]).
struct Orders {
    password: String,
    /// A time between rows 200 and 201.
    time: String,
    /// The members' PVCs before any restore.
    claims_before: BTreeMap<String, (String, String)>,
}

/// Switches WAL on `pg`'s server and waits until that segment is in the S3 archive.
async fn switch_and_archived(pg: &tokio_postgres::Client, moto: &Moto) {
    let segment: String = pg
        .query_one("SELECT pg_walfile_name(pg_switch_wal())", &[])
        .await
        .unwrap()
        .get(0);
    eventually(WAIT, &format!("{segment} archived"), || async {
        let wal = moto.list("k8s-backups", "pfx/orders/wal").await;
        wal.iter().any(|k| k.contains(&segment)).then_some(())
    })
    .await;
}

/// `orders` (a primary and a standby, backups into S3) with rows 1..=100, a base backup, rows
/// 101..=200, a time, rows 201..=300, all archived and on the standby; its members on their
/// first PVCs.
async fn orders_with_a_backup_and_a_time(
    client: &Client,
    controller: &Controller,
    logs: &KeptLogs,
    moto: &Moto,
) -> Orders {
    create_ok(controller, logs, &["create", "orders", "--replicas", "1"]);
    let password = superuser_password(client).await;
    let (primary, ip) = rw_primary(client, None).await;
    assert_eq!(primary, "orders-0-0");
    let pg = connect(client, &ip, &password)
        .await
        .expect("connect to rw");
    pg.batch_execute(
        "CREATE TABLE t (v integer PRIMARY KEY); INSERT INTO t SELECT generate_series(1, 100)",
    )
    .await
    .unwrap();
    let backup: serde_json::Value =
        serde_json::from_str(&controller.cli_ok(&["backup", "create", "orders", "-o", "json"]))
            .unwrap();
    assert_eq!(backup["status"], "succeeded", "{backup}");
    pg.batch_execute("INSERT INTO t SELECT generate_series(101, 200)")
        .await
        .unwrap();
    let time = server_now(&pg).await;
    pg.batch_execute("INSERT INTO t SELECT generate_series(201, 300)")
        .await
        .unwrap();
    switch_and_archived(&pg, moto).await;
    drop(pg);
    standby_streams(client, &password, 1, (300, Some(300))).await;
    let claims_before = data_claims(client).await;
    assert_eq!(
        claims_before.keys().collect::<Vec<_>>(),
        ["data-orders-0-0", "data-orders-1-0"],
        "{claims_before:?}"
    );
    Orders {
        password,
        time,
        claims_before,
    }
}

/// In-place restore on Kubernetes, run by a controller with only the chart's Role: `orders`
/// (a primary and a standby, backups into S3) gets rows 1..=100, a base backup, rows
/// 101..=200, a time, rows 201..=300, all archived. A restore to a transaction that never
/// happened cannot finish: the instance is put back as it was (the same PVCs, timeline 1, every
/// row, the standby streaming, no PVC of the restore left). Unconfirmed, a restore is refused
/// and changes nothing. Confirmed, to the time: `restoring` meanwhile; then exactly rows
/// 1..=200 through `orders-rw`, on a new timeline, the standby cloned again and streaming on
/// it, both members on new PVCs and the old PVCs (and their volumes) gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_in_place_restore_puts_the_old_data_back_when_it_cannot_finish_and_replaces_it_when_confirmed(
) {
    let (cluster, _emulators, moto, _proxy, controller, logs) = s3_backed_with_orders_logs().await;
    let client = cluster.client();
    let Orders {
        password,
        time,
        claims_before,
    } = orders_with_a_backup_and_a_time(&client, &controller, &logs, &moto).await;

    // A transaction that never happened: recovery replays the whole archive without reaching
    // it, and gives up; the old data is put back.
    let failed = controller.cli(&[
        "restore",
        "orders",
        "--in-place",
        "--confirm",
        "orders",
        "--xid",
        "2000000000",
    ]);
    let stderr = String::from_utf8_lossy(&failed.stderr);
    assert!(
        !failed.status.success() && stderr.contains("put back as it was"),
        "the impossible restore: {failed:?}\n{}---- controller ----\n{}",
        logs.dump(),
        controller.log_tail()
    );
    let (primary, ip) = rw_primary(&client, None).await;
    assert_eq!(primary, "orders-0-0", "the primary is the same member");
    let pg = connect(&client, &ip, &password)
        .await
        .expect("connect to rw");
    assert_eq!(rows_of(&pg).await, (300, Some(300)));
    assert_eq!(timeline_of(&pg).await, 1, "the old data was promoted again");
    pg.batch_execute("INSERT INTO t VALUES (301)")
        .await
        .unwrap();
    standby_streams(&client, &password, 1, (301, Some(301))).await;
    drop(pg);
    assert_eq!(
        data_claims(&client).await,
        claims_before,
        "the members are back on their own PVCs, and the restore's are gone"
    );
    let detail: serde_json::Value =
        serde_json::from_str(&controller.cli_ok(&["get", "orders", "-o", "json"])).unwrap();
    assert_eq!(detail["state"], "running", "{detail}");

    // Unconfirmed: refused, and nothing changes.
    let refused = controller.cli(&["restore", "orders", "--in-place", "--time", &time]);
    assert!(!refused.status.success(), "{refused:?}");
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("--confirm orders"),
        "{refused:?}"
    );

    // Confirmed: `restoring` while it runs, then exactly the rows before the time.
    let mut cli = controller.command();
    cli.args([
        "restore",
        "orders",
        "--in-place",
        "--confirm",
        "orders",
        "--time",
        &time,
    ]);
    let running = tokio::task::spawn_blocking(move || cli.output().unwrap());
    let mut states = Vec::new();
    while !running.is_finished() {
        let out = controller.cli(&["get", "orders", "-o", "json"]);
        if let Ok(detail) = serde_json::from_slice::<serde_json::Value>(&out.stdout) {
            let state = detail["state"].as_str().unwrap_or("").to_string();
            if states.last() != Some(&state) {
                states.push(state);
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let restored = running.await.unwrap();
    assert!(
        restored.status.success(),
        "the restore failed:\n{}\n{}---- controller ----\n{}",
        String::from_utf8_lossy(&restored.stderr),
        logs.dump(),
        controller.log_tail()
    );
    assert!(
        states.iter().any(|s| s == "restoring"),
        "never seen restoring: {states:?}"
    );
    let (primary, ip) = rw_primary(&client, None).await;
    assert_eq!(primary, "orders-0-0");
    let pg = connect(&client, &ip, &password)
        .await
        .expect("connect to rw");
    assert_eq!(rows_of(&pg).await, (200, Some(200)));
    let timeline = timeline_of(&pg).await;
    assert!(timeline > 1, "still timeline {timeline}");
    pg.batch_execute("INSERT INTO t VALUES (1000)")
        .await
        .unwrap();
    standby_streams(&client, &password, timeline, (201, Some(1000))).await;
    drop(pg);

    // Both members on new PVCs; the old ones, and their volumes, gone.
    eventually(WAIT, "the old data gone", || async {
        let claims = data_claims(&client).await;
        let names: Vec<&str> = claims.keys().map(String::as_str).collect();
        let volumes = volumes(&client).await;
        let old_volumes: Vec<String> = claims_before
            .values()
            .map(|(uid, _)| format!("pvc-{uid}"))
            .filter(|v| volumes.contains(v))
            .collect();
        (names == ["data-1-orders-0-0", "data-1-orders-1-0"]
            && claims.values().all(|(_, phase)| phase == "Bound")
            && old_volumes.is_empty())
        .then_some(())
    })
    .await;
    let sets: Api<StatefulSet> = Api::namespaced(client.clone(), NS);
    for member in ["orders-0", "orders-1"] {
        let set = sets.get(member).await.unwrap();
        let annotations = set.metadata.annotations.unwrap_or_default();
        assert!(
            !annotations.contains_key("toygres.io/data-set-aside"),
            "{member}: {annotations:?}"
        );
    }
    let refused = refused_requests(&controller);
    assert!(
        refused.is_empty(),
        "requests the chart's Role refused:\n{}",
        refused.join("\n")
    );

    controller.cli_ok(&["delete", "orders"]);
    all_of_orders_gone(&client).await;
}

/// The test-only hook that makes the controller abort at a named point of an in-place
/// restore's set-aside or put-back (see the controller's `data_aside` module).
const ABORT_AT: &str = "TOYGRES_TEST_ABORT_AT";

/// Restarts the controller (SIGKILL; it was idle) with the hook set to abort at `point`,
/// first checking that the chart's Role refused it nothing.
async fn armed_at(controller: Controller, point: &str) -> Controller {
    let refused = refused_requests(&controller);
    assert!(refused.is_empty(), "refused:\n{}", refused.join("\n"));
    controller
        .kill_and_restart_with(&[(ABORT_AT, point)], &[])
        .await
}

/// Starts `toygres restore ARGS` without waiting, waits until the controller, armed with the
/// hook, aborts at its point, checks the crash left `member`'s StatefulSet as `left` says, and
/// starts the controller again without the hook. Returns it and the operation's id.
async fn crash_in_restore(
    mut controller: Controller,
    client: &Client,
    args: &[&str],
    member: &str,
    left: impl Fn(Option<&StatefulSet>) -> bool,
) -> (Controller, String) {
    let mut command = vec!["restore", "orders", "--in-place", "--confirm", "orders"];
    command.extend(args);
    command.extend(["--no-wait", "-o", "json"]);
    let accepted: serde_json::Value = serde_json::from_str(&controller.cli_ok(&command)).unwrap();
    let operation = accepted["operation_id"].as_str().unwrap().to_string();
    let status = controller.wait_exit(Duration::from_secs(600)).await;
    use std::os::unix::process::ExitStatusExt as _;
    assert_eq!(
        status.signal(),
        Some(Signal::SIGABRT as i32),
        "the controller ended otherwise than by the hook's abort ({status}):\n{}",
        controller.log_tail()
    );
    let log = std::fs::read_to_string(&controller.log).unwrap();
    assert!(
        log.contains(ABORT_AT),
        "no abort logged:\n{}",
        controller.log_tail()
    );
    let refused = refused_requests(&controller);
    assert!(refused.is_empty(), "refused:\n{}", refused.join("\n"));
    let set = Api::<StatefulSet>::namespaced(client.clone(), NS)
        .get_opt(member)
        .await
        .unwrap();
    assert!(left(set.as_ref()), "{member} after the crash: {set:?}");
    let controller = controller.kill_and_restart_with(&[], &[ABORT_AT]).await;
    (controller, operation)
}

/// The operation `id` once it has ended (polled with `operation get`: bounded, where
/// `operation wait` would wait for ever).
async fn operation_ended(controller: &Controller, id: &str) -> serde_json::Value {
    eventually(
        Duration::from_secs(900),
        &format!("operation {id} ended"),
        || async {
            let out = controller.cli(&["operation", "get", id, "-o", "json"]);
            let operation: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
            matches!(
                operation["status"].as_str(),
                Some("succeeded" | "failed" | "cancelled")
            )
            .then_some(operation)
        },
    )
    .await
}

/// The annotations of `set`.
fn annotations_of(set: Option<&StatefulSet>) -> BTreeMap<String, String> {
    set.and_then(|s| s.metadata.annotations.clone())
        .unwrap_or_default()
}

/// The claim template `set` keeps its data on.
fn claim_template_of(set: Option<&StatefulSet>) -> Option<String> {
    set?.spec
        .as_ref()?
        .volume_claim_templates
        .as_ref()?
        .first()?
        .metadata
        .name
        .clone()
}

/// Waits until `orders`' claims are exactly `names`, all bound, and none of the volumes of
/// `gone` (claims by name → (uid, phase)) is left.
async fn claims_become(client: &Client, names: &[&str], gone: &BTreeMap<String, (String, String)>) {
    eventually(
        WAIT,
        &format!("the claims {names:?}, the old ones gone"),
        || async {
            let claims = data_claims(client).await;
            let now: Vec<&str> = claims.keys().map(String::as_str).collect();
            let volumes = volumes(client).await;
            let left = gone
                .values()
                .any(|(uid, _)| volumes.contains(&format!("pvc-{uid}")));
            (now == names && claims.values().all(|(_, phase)| phase == "Bound") && !left)
                .then_some(())
        },
    )
    .await;
}

/// No member's StatefulSet still names data set aside, and the root records no unfinished
/// remake.
async fn nothing_left_aside(client: &Client) {
    let sets: Api<StatefulSet> = Api::namespaced(client.clone(), NS);
    for member in ["orders-0", "orders-1"] {
        let set = sets.get(member).await.unwrap();
        let annotations = annotations_of(Some(&set));
        assert!(
            !annotations.contains_key("toygres.io/data-set-aside"),
            "{member}: {annotations:?}"
        );
    }
    let root = Api::<ConfigMap>::namespaced(client.clone(), NS)
        .get("orders-toygres")
        .await
        .unwrap();
    let annotations = root.metadata.annotations.unwrap_or_default();
    assert!(
        !annotations
            .keys()
            .any(|k| k.starts_with("toygres.io/remake.")),
        "{annotations:?}"
    );
}

/// A restore of `orders` to a transaction that never happened, with the controller crashed at
/// `point` while the primary's data is put back (`crashed` tells the primary's StatefulSet
/// then) and restarted: the restore fails with "put back as it was", and the old data is back:
/// the same primary with `rows` on `timeline`, a write of `next` streamed to the standby, the
/// members on `claims`, nothing left aside, the instance running.
async fn put_back_after_a_crash(
    controller: Controller,
    (client, logs, password): (&Client, &KeptLogs, &str),
    point: &str,
    crashed: impl Fn(Option<&StatefulSet>) -> bool,
    rows: (i64, Option<i32>),
    next: i32,
    (timeline, claims): (i32, &BTreeMap<String, (String, String)>),
) -> Controller {
    let controller = armed_at(controller, point).await;
    let (controller, operation) = crash_in_restore(
        controller,
        client,
        &["--xid", "2000000000"],
        "orders-0",
        crashed,
    )
    .await;
    let done = operation_ended(&controller, &operation).await;
    assert_eq!(done["status"], "failed", "{point}: {done}");
    assert!(
        done["error"]
            .as_str()
            .is_some_and(|e| e.contains("put back as it was")),
        "{point}: {done}\n{}---- controller ----\n{}",
        logs.dump(),
        controller.log_tail()
    );
    let (primary, ip) = rw_primary(client, None).await;
    assert_eq!(
        primary, "orders-0-0",
        "{point}: the primary is the same member"
    );
    let pg = connect(client, &ip, password).await.expect("connect to rw");
    assert_eq!(rows_of(&pg).await, rows, "{point}");
    assert_eq!(
        timeline_of(&pg).await,
        timeline,
        "{point}: the old data was promoted again"
    );
    pg.batch_execute(&format!("INSERT INTO t VALUES ({next})"))
        .await
        .unwrap();
    let after = (rows.0 + 1, Some(next));
    standby_streams(client, password, timeline, after).await;
    drop(pg);
    assert_eq!(
        &data_claims(client).await,
        claims,
        "{point}: the members are back on their own PVCs, and the restore's are gone"
    );
    nothing_left_aside(client).await;
    let detail: serde_json::Value =
        serde_json::from_str(&controller.cli_ok(&["get", "orders", "-o", "json"])).unwrap();
    assert_eq!(detail["state"], "running", "{point}: {detail}");
    controller
}

/// An in-place restore on Kubernetes survives a controller crash at every step of making a
/// member's StatefulSet again (run as the chart's Role; the controller aborts at a test-only
/// hook and is started again without it; the activity runs again). `orders` (a primary and a
/// standby, backups into S3) gets rows 1..=100, a base backup, rows 101..=200, a time, rows
/// 201..=300. A restore to that time, crashed after the standby's StatefulSet was deleted
/// (none left): it completes, with exactly rows 1..=200 on a new timeline, the standby
/// streaming, both members on new PVCs and the old PVCs and volumes gone. Then a second
/// backup, a time and a restore to it, crashed after the standby's StatefulSet was applied on
/// its new claim template but before it was annotated with the PVC it keeps: it completes
/// alike (rows to the second time, the next timeline, the PVCs of the first restore gone).
/// Last, a restore to a transaction that never happened, crashed while the primary's data is
/// put back, after its StatefulSet was deleted: the restore fails, and the old data is back
/// (the same PVCs, every row, the same timeline, the standby streaming); and again, crashed
/// after the primary's StatefulSet was applied on its old claim template.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_in_place_restore_completes_or_puts_the_data_back_after_a_controller_crash_at_any_step()
{
    let (cluster, _emulators, moto, _proxy, controller, logs) = s3_backed_with_orders_logs().await;
    let client = cluster.client();
    let Orders {
        password,
        time,
        claims_before,
    } = orders_with_a_backup_and_a_time(&client, &controller, &logs, &moto).await;

    // 1. Crashed after the standby's StatefulSet was deleted: it is gone, its PVC kept.
    let controller = armed_at(controller, "aside-after-delete").await;
    let (controller, operation) =
        crash_in_restore(controller, &client, &["--time", &time], "orders-1", |set| {
            set.is_none()
        })
        .await;
    let done = operation_ended(&controller, &operation).await;
    assert_eq!(
        done["status"],
        "succeeded",
        "{done}\n{}---- controller ----\n{}",
        logs.dump(),
        controller.log_tail()
    );
    let (primary, ip) = rw_primary(&client, None).await;
    assert_eq!(primary, "orders-0-0");
    let pg = connect(&client, &ip, &password)
        .await
        .expect("connect to rw");
    assert_eq!(rows_of(&pg).await, (200, Some(200)));
    let first_timeline = timeline_of(&pg).await;
    assert!(first_timeline > 1, "still timeline {first_timeline}");
    pg.batch_execute("INSERT INTO t VALUES (1000)")
        .await
        .unwrap();
    standby_streams(&client, &password, first_timeline, (201, Some(1000))).await;
    claims_become(
        &client,
        &["data-1-orders-0-0", "data-1-orders-1-0"],
        &claims_before,
    )
    .await;
    nothing_left_aside(&client).await;

    // 2. Crashed after the standby's StatefulSet was applied on its new claim template, before
    // it was annotated with the PVC it keeps.
    let claims_first = data_claims(&client).await;
    let backup: serde_json::Value =
        serde_json::from_str(&controller.cli_ok(&["backup", "create", "orders", "-o", "json"]))
            .unwrap();
    assert_eq!(backup["status"], "succeeded", "{backup}");
    pg.batch_execute("INSERT INTO t VALUES (2000)")
        .await
        .unwrap();
    let second_time = server_now(&pg).await;
    pg.batch_execute("INSERT INTO t VALUES (3000)")
        .await
        .unwrap();
    switch_and_archived(&pg, &moto).await;
    drop(pg);
    standby_streams(&client, &password, first_timeline, (203, Some(3000))).await;
    let controller = armed_at(controller, "aside-after-apply").await;
    let (controller, operation) = crash_in_restore(
        controller,
        &client,
        &["--time", &second_time],
        "orders-1",
        |set| {
            claim_template_of(set).as_deref() == Some("data-2")
                && !annotations_of(set).contains_key("toygres.io/data-set-aside")
        },
    )
    .await;
    let done = operation_ended(&controller, &operation).await;
    assert_eq!(
        done["status"],
        "succeeded",
        "{done}\n{}---- controller ----\n{}",
        logs.dump(),
        controller.log_tail()
    );
    let (primary, ip) = rw_primary(&client, None).await;
    assert_eq!(primary, "orders-0-0");
    let pg = connect(&client, &ip, &password)
        .await
        .expect("connect to rw");
    assert_eq!(rows_of(&pg).await, (202, Some(2000)));
    let second_timeline = timeline_of(&pg).await;
    assert!(
        second_timeline > first_timeline,
        "timeline {second_timeline} after {first_timeline}"
    );
    pg.batch_execute("INSERT INTO t VALUES (4000)")
        .await
        .unwrap();
    standby_streams(&client, &password, second_timeline, (203, Some(4000))).await;
    drop(pg);
    claims_become(
        &client,
        &["data-2-orders-0-0", "data-2-orders-1-0"],
        &claims_first,
    )
    .await;
    nothing_left_aside(&client).await;

    // 3. A restore that cannot finish, crashed while the primary's data is put back, after its
    // StatefulSet (on the restore's claim template) was deleted.
    let claims_second = data_claims(&client).await;
    let controller = put_back_after_a_crash(
        controller,
        (&client, &logs, &password),
        "put-back-after-delete",
        |set| set.is_none(),
        (203, Some(4000)),
        5000,
        (second_timeline, &claims_second),
    )
    .await;

    // 4. The same, crashed after the primary's StatefulSet was applied on its old claim
    // template again, before its annotations were cleared and the record removed.
    let controller = put_back_after_a_crash(
        controller,
        (&client, &logs, &password),
        "put-back-after-apply",
        |set| claim_template_of(set).as_deref() == Some("data-2"),
        (204, Some(5000)),
        6000,
        (second_timeline, &claims_second),
    )
    .await;
    let refused = refused_requests(&controller);
    assert!(refused.is_empty(), "refused:\n{}", refused.join("\n"));

    controller.cli_ok(&["delete", "orders"]);
    all_of_orders_gone(&client).await;
}
