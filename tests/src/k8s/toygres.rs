//! The real `toygres controller --platform kubernetes` on the host against the harness's
//! cluster, and what tests of instances on it share: the namespace, the Services' ready
//! addresses, an instance's superuser password and a TLS connection to a member.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Namespace, Pod, Secret};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{ListParams, PostParams};
use kube::{Api, Client};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use super::Cluster;
use crate::{bin_path, eventually, free_port, processes_mentioning, TestDir};

/// The namespace the controller puts instances in.
pub const NS: &str = "db";

/// `toygres controller --platform kubernetes` on the host, with its home (and embedded CMS) in a
/// temp dir. Dropped (also in a panic): SIGTERM, then SIGKILL, then whatever of its CMS is left.
pub struct Controller {
    pub child: Child,
    pub home: TestDir,
    pub log: PathBuf,
    pub host: Ipv4Addr,
    pub port: u16,
    /// What it was launched with, for [`Controller::kill_and_restart`].
    args: Vec<String>,
    env: Vec<(String, String)>,
    active: bool,
}

/// The flags that run a controller on the harness's cluster with `kubeconfig`'s identity.
pub fn kubernetes_args(kubeconfig: &std::path::Path) -> Vec<String> {
    [
        "--platform",
        "kubernetes",
        "--namespace",
        NS,
        "--sidecar-image",
        "toygres/sidecar:dev",
        "--storage-size",
        "1Gi",
        "--kubeconfig",
    ]
    .iter()
    .map(|s| s.to_string())
    .chain([kubeconfig.display().to_string()])
    .collect()
}

impl Controller {
    /// The controller as the harness's admin (`system:masters`).
    pub async fn start(cluster: &Cluster) -> Self {
        Self::start_as(cluster, cluster.control_plane().admin_kubeconfig()).await
    }

    /// The controller with the identity of `kubeconfig`, listening on the host's bridge
    /// address, where the members' sidecars push their reports (as the chart's Service
    /// lets them in a cluster).
    pub async fn start_as(cluster: &Cluster, kubeconfig: &std::path::Path) -> Self {
        Self::start_as_with_env(cluster, kubeconfig, &[]).await
    }

    /// [`Controller::start`] with extra environment variables.
    pub async fn start_with_env(cluster: &Cluster, env: &[(&str, &str)]) -> Self {
        let kubeconfig = cluster.control_plane().admin_kubeconfig();
        Self::start_as_with_env(cluster, kubeconfig, env).await
    }

    pub async fn start_as_with_env(
        cluster: &Cluster,
        kubeconfig: &std::path::Path,
        env: &[(&str, &str)],
    ) -> Self {
        let mut args = kubernetes_args(kubeconfig);
        args.extend(["--member-notify-url".into(), "http://{listen}".into()]);
        Self::launch(cluster.bridge().host_ip(), &args, env, true).await
    }

    /// `toygres controller ARGS` with `env` in a new home, listening on `host` (`{listen}`
    /// in ARGS stands for its `host:port`); waits until `/healthz` answers and, when
    /// `active`, until the API's address is written (a standby never writes it).
    pub async fn launch(
        host: Ipv4Addr,
        args: &[String],
        env: &[(&str, &str)],
        active: bool,
    ) -> Self {
        let env = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Self::launch_in(
            TestDir::new(),
            host,
            free_port(),
            args.to_vec(),
            env,
            active,
        )
        .await
    }

    /// SIGKILLs the controller (no clean stop: what it was doing is left half done) and starts
    /// a new one on the same home, address, flags and environment, which finds the old one's
    /// CMS and orchestrations there.
    pub async fn kill_and_restart(self) -> Self {
        self.kill_and_restart_with(&[], &[]).await
    }

    /// [`Controller::kill_and_restart`], the new controller's environment changed: the
    /// variables of `set` set (e.g. a fault-injection hook), those named in `removed` gone.
    pub async fn kill_and_restart_with(mut self, set: &[(&str, &str)], removed: &[&str]) -> Self {
        self.env.retain(|(key, _)| {
            !removed.contains(&key.as_str()) && !set.iter().any(|(k, _)| k == key)
        });
        self.env
            .extend(set.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        let pid = Pid::from_raw(self.child.id() as i32);
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = kill(pid, Signal::SIGKILL);
        }
        self.child.wait().unwrap();
        // The old log stays beside the new one.
        let _ = std::fs::rename(&self.log, self.log.with_extension("log.killed"));
        let _ = std::fs::remove_file(self.home.path().join("controller.addr"));
        let home = std::mem::take(&mut self.home);
        let (host, port, active) = (self.host, self.port, self.active);
        let (args, env) = (
            std::mem::take(&mut self.args),
            std::mem::take(&mut self.env),
        );
        drop(self);
        Self::launch_in(home, host, port, args, env, active).await
    }

    async fn launch_in(
        home: TestDir,
        host: Ipv4Addr,
        port: u16,
        args: Vec<String>,
        env: Vec<(String, String)>,
        active: bool,
    ) -> Self {
        let log = home.path().join("controller.log");
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
            .env_remove("POD_NAME")
            .envs(env.iter().map(|(k, v)| (k, v)))
            .args(["controller", "--listen", &format!("{host}:{port}")])
            .args(
                args.iter()
                    .map(|arg| arg.replace("{listen}", &format!("{host}:{port}"))),
            )
            .stdin(Stdio::null())
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .spawn()
            .unwrap();
        let mut controller = Self {
            child,
            home,
            log,
            host,
            port,
            args,
            env,
            active,
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = controller.child.try_wait().unwrap() {
                panic!(
                    "the controller exited ({status}):\n{}",
                    controller.log_tail()
                );
            }
            let healthy = controller.status("/healthz").await == Some(200);
            if healthy && (!active || controller.is_active()) {
                return controller;
            }
            assert!(Instant::now() < deadline, "no healthy controller");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits until the controller exits by itself (e.g. aborted by a fault-injection hook),
    /// and returns how it ended; panics with its log when it still runs after `timeout`.
    pub async fn wait_exit(&mut self, timeout: Duration) -> std::process::ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "the controller still runs after {timeout:?}:\n{}",
                self.log_tail()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The status `GET PATH` answers with, if any.
    pub async fn status(&self, path: &str) -> Option<u16> {
        // A local-platform controller serves HTTPS from its own CA (in its home); a Kubernetes
        // one without a certificate serves HTTP (its home may hold a CA all the same).
        let ca = self.home.path().join("tls").join("ca.crt");
        if ca.exists() {
            let url = format!("https://{}:{}{path}", self.host, self.port);
            let answer = crate::https_client(&ca, &url).get(&url).send().await;
            if let Ok(answer) = answer {
                return Some(answer.status().as_u16());
            }
        }
        let url = format!("http://{}:{}{path}", self.host, self.port);
        reqwest::get(&url).await.ok().map(|r| r.status().as_u16())
    }

    /// Whether this controller serves its API (it writes the address once it does).
    pub fn is_active(&self) -> bool {
        self.home.path().join("controller.addr").exists()
    }

    /// `toygres` against this controller, to be given its arguments and run.
    pub fn command(&self) -> Command {
        let mut command = Command::new(bin_path("toygres"));
        command
            .env("TOYGRES_HOME", self.home.path())
            .env_remove("TOYGRES_URL")
            .env_remove("TOYGRES_TOKEN_FILE");
        command
    }

    /// `toygres ARGS` against this controller.
    pub fn cli(&self, args: &[&str]) -> Output {
        self.command().args(args).output().unwrap()
    }

    /// Runs `toygres ARGS`, panicking with its output and the controller's log when it fails.
    pub fn cli_ok(&self, args: &[&str]) -> String {
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

    pub fn log_tail(&self) -> String {
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
        // Not a process the test already reaped (its pid may be someone else's by now).
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = kill(pid, Signal::SIGTERM);
        }
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

impl Controller {
    /// A new database `name` in this controller's embedded CMS Postgres (on loopback), for
    /// other controllers to use as their CMS: returns the server's port and superuser password.
    pub async fn cms_database(&self, name: &str) -> (u16, String) {
        let read = |file: &str| {
            std::fs::read_to_string(self.home.path().join("cms").join(file))
                .unwrap()
                .trim()
                .to_string()
        };
        let (port, password) = (read("port").parse().unwrap(), read("superuser.password"));
        let (pg, connection) = tokio_postgres::Config::new()
            .host("127.0.0.1")
            .port(port)
            .user("postgres")
            .password(&password)
            .dbname("postgres")
            .connect(tokio_postgres::NoTls)
            .await
            .unwrap();
        tokio::spawn(connection);
        pg.batch_execute(&format!("CREATE DATABASE {name}"))
            .await
            .unwrap();
        (port, password)
    }
}

pub async fn create_namespace(client: &Client) {
    let ns: Namespace = serde_json::from_value(serde_json::json!({"metadata": {"name": NS}}))
        .expect("namespace object");
    Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &ns)
        .await
        .unwrap();
}

/// The sorted names of the namespace's objects of kind `K`, of those `selector` selects when
/// given.
pub async fn names<K>(client: &Client, selector: Option<&str>) -> Vec<String>
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
{
    let mut params = ListParams::default();
    if let Some(selector) = selector {
        params = params.labels(selector);
    }
    let mut names: Vec<String> = Api::<K>::namespaced(client.clone(), NS)
        .list(&params)
        .await
        .unwrap()
        .items
        .into_iter()
        .filter_map(|o| o.meta().name.clone())
        .collect();
    names.sort();
    names
}

/// The ready addresses of Service `service`'s EndpointSlices.
pub async fn ready_endpoints(client: &Client, service: &str) -> BTreeSet<String> {
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

/// The instance's superuser password, from its Secret.
pub async fn superuser_password(client: &Client, instance: &str) -> String {
    let secret = Api::<Secret>::namespaced(client.clone(), NS)
        .get(&format!("{instance}-credentials"))
        .await
        .unwrap();
    let bytes = secret.data.unwrap()["superuser-password"].0.clone();
    String::from_utf8(bytes).unwrap()
}

/// A superuser connection to a pod IP, over TLS verified against the instance's CA (its chain:
/// a pod IP is in no certificate), giving up after 3 s in all. tokio-postgres's
/// `connect_timeout` bounds only the TCP connect: a frozen server's kernel still completes
/// that, and the startup then waits until the address is gone (a writer stuck there for 38 s
/// once made a failover look 40 s long).
pub async fn connect(
    client: &Client,
    instance: &str,
    ip: &str,
    password: &str,
) -> Option<tokio_postgres::Client> {
    let secrets = Api::<Secret>::namespaced(client.clone(), NS);
    let ca = secrets
        .get(&format!("{instance}-ca"))
        .await
        .ok()?
        .data?
        .get("ca.crt")?
        .0
        .clone();
    let tls = toygres_common::tls::pg::PgTls::new(&ca, None).ok()?;
    let mut config = tokio_postgres::Config::new();
    toygres_common::tls::pg::PgTls::require(&mut config)
        .host(ip)
        .port(5432)
        .user("postgres")
        .password(password)
        .dbname("postgres")
        .connect_timeout(Duration::from_secs(3));
    let (client, connection) = tokio::time::timeout(Duration::from_secs(3), config.connect(tls))
        .await
        .ok()?
        .ok()?;
    tokio::spawn(connection);
    Some(client)
}

/// How long the instance helpers below wait for the cluster to settle.
const SETTLE: Duration = Duration::from_secs(120);

/// The pods of `instance` not being deleted, by name: (IP, role label, node).
pub async fn member_pods(
    client: &Client,
    instance: &str,
) -> BTreeMap<String, (String, Option<String>, String)> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), NS);
    pods.list(&ListParams::default().labels(&format!("toygres.io/instance={instance}")))
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

/// How often the containers of the instance's pods have restarted, in all.
pub async fn pod_restarts(client: &Client, instance: &str) -> i32 {
    let pods: Api<Pod> = Api::namespaced(client.clone(), NS);
    pods.list(&ListParams::default().labels(&format!("toygres.io/instance={instance}")))
        .await
        .unwrap()
        .items
        .iter()
        .flat_map(|p| {
            p.status
                .iter()
                .flat_map(|s| s.container_statuses.iter().flatten())
        })
        .map(|c| c.restart_count)
        .sum()
}

/// The one pod `INSTANCE-rw`'s EndpointSlice lists, once it lists exactly one, that pod
/// carries the primary label and is not `not`; returns its (name, IP).
pub async fn rw_primary(client: &Client, instance: &str, not: Option<&str>) -> (String, String) {
    eventually(SETTLE, "the rw endpoint to lead to one primary", || async {
        let ready = ready_endpoints(client, &format!("{instance}-rw")).await;
        let [ip] = ready.iter().collect::<Vec<_>>()[..] else {
            return None;
        };
        let pods = member_pods(client, instance).await;
        let (name, _) = pods
            .iter()
            .find(|(_, (pod_ip, role, _))| pod_ip == ip && role.as_deref() == Some("primary"))?;
        (Some(name.as_str()) != not).then(|| (name.clone(), ip.clone()))
    })
    .await
}

/// A commit the writer saw acknowledged: its id, when, by the Postgres at which IP, and when
/// the writer sent it (the connection it went through ready).
#[derive(Debug, Clone)]
pub struct Ack {
    pub id: i32,
    pub at: Instant,
    pub by: String,
    pub sent: Instant,
}

/// Inserts consecutive ids into table `kept` through whatever pod `INSTANCE-rw`'s
/// EndpointSlice lists, until told to stop; pushes each commit acknowledged. An insert that fails or takes over 2 s has an unknown
/// outcome: its id is skipped, not counted.
pub fn spawn_writer(
    client: Client,
    instance: &str,
    password: String,
    stop: Arc<AtomicBool>,
    acknowledged: Arc<Mutex<Vec<Ack>>>,
) -> tokio::task::JoinHandle<()> {
    let instance = instance.to_string();
    tokio::spawn(async move {
        let mut next = 1;
        let mut conn: Option<(String, tokio_postgres::Client)> = None;
        while !stop.load(Ordering::SeqCst) {
            let ready = ready_endpoints(&client, &format!("{instance}-rw")).await;
            let [ip] = ready.iter().collect::<Vec<_>>()[..] else {
                conn = None;
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            };
            if conn.as_ref().map(|(at, _)| at) != Some(ip) {
                conn = connect(&client, &instance, ip, &password)
                    .await
                    .map(|pg| (ip.clone(), pg));
            }
            let Some((by, pg)) = &conn else {
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            };
            let params: [&(dyn tokio_postgres::types::ToSql + Sync); 1] = [&next];
            let sent = Instant::now();
            let insert = pg.execute("INSERT INTO kept VALUES ($1)", &params);
            match tokio::time::timeout(Duration::from_secs(2), insert).await {
                Ok(Ok(_)) => acknowledged.lock().unwrap().push(Ack {
                    id: next,
                    at: Instant::now(),
                    by: by.clone(),
                    sent,
                }),
                _ => conn = None,
            }
            next += 1;
        }
    })
}

/// The acknowledged ids that table `kept` on the pod at `ip` lacks.
pub async fn lost_commits(
    client: &Client,
    instance: &str,
    ip: &str,
    password: &str,
    acknowledged: &[Ack],
) -> Vec<i32> {
    let pg = connect(client, instance, ip, password)
        .await
        .expect("connect to the primary");
    let rows: BTreeSet<i32> = pg
        .query("SELECT id FROM kept", &[])
        .await
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect();
    acknowledged
        .iter()
        .map(|ack| ack.id)
        .filter(|id| !rows.contains(id))
        .collect()
}
