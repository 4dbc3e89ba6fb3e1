//! Instances end to end: the real `toygres` controller (embedded CMS, duroxide on it, the local
//! platform with real sidecars and Postgres) driven through its CLI and API.
//!
//! Every process a test starts is killed when the test ends, even when it fails: the
//! controllers by pid, then every process whose command line names the test's home (sidecars by
//! their `--data-dir`, postmasters by their `-D`). See [`Home`]'s `Drop`.

#![allow(clippy::unwrap_used)]

use std::fs;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use toygres_common::controller_api::{
    EventList, InstanceDetail, Operation, OperationAccepted, ReplicationStatus,
};

const BIN: &str = env!("CARGO_BIN_EXE_toygres");

/// How long the controller may take to become healthy (initdb of the CMS included).
const START_DEADLINE: Duration = Duration::from_secs(60);

/// How long an operation may take.
const OPERATION_DEADLINE: Duration = Duration::from_secs(180);

/// A temporary `$TOYGRES_HOME` (mode 0711: Postgres runs as the `postgres` OS user when the tests
/// run as root) and the controllers started on it.
struct Home {
    dir: tempfile::TempDir,
    controllers: Vec<Child>,
    runs: usize,
}

impl Home {
    fn new() -> Self {
        // Short: Postgres's socket path must fit.
        let dir = tempfile::Builder::new().prefix("tgi").tempdir().unwrap();
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o711)).unwrap();
        Self {
            dir,
            controllers: Vec::new(),
            runs: 0,
        }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn command(&self) -> Command {
        let mut cmd = Command::new(BIN);
        cmd.current_dir(self.path())
            .env("TOYGRES_HOME", self.path())
            .env("RUST_LOG", "info")
            .env_remove("DATABASE_URL")
            .env_remove("TOYGRES_URL")
            .env_remove("TOYGRES_TOKEN_FILE")
            .env_remove("TOYGRES_LISTEN");
        cmd
    }

    /// Starts a controller on a free port (health rounds every 500 ms) and waits until it is
    /// healthy.
    async fn start(&mut self) -> Api {
        self.start_with_env(&[]).await
    }

    /// [`Home::start`] with more environment variables.
    async fn start_with_env(&mut self, env: &[(&str, &str)]) -> Api {
        let port = free_port();
        self.runs += 1;
        let log = fs::File::create(self.log_path(self.runs)).unwrap();
        let child = self
            .command()
            .envs(env.iter().copied())
            .args([
                "controller",
                "--listen",
                &format!("127.0.0.1:{port}"),
                "--health-interval-ms",
                "500",
                // Slow enough that a killed sidecar stays down for a few health rounds.
                "--supervise-interval-ms",
                "4000",
                "--sidecar-bin",
                &sidecar_bin().to_string_lossy(),
            ])
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        self.controllers.push(child);
        let api = Api {
            url: format!("http://127.0.0.1:{port}"),
            token: String::new(),
            http: reqwest::Client::new(),
        };
        let deadline = Instant::now() + START_DEADLINE;
        loop {
            if let Some(status) = self.controllers.last_mut().unwrap().try_wait().unwrap() {
                panic!("the controller exited ({status}):\n{}", self.logs());
            }
            let healthy = api
                .http
                .get(format!("{}/healthz", api.url))
                .send()
                .await
                .is_ok_and(|r| r.status() == 200);
            if healthy && self.path().join("controller.addr").exists() {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "no healthy controller:\n{}",
                self.logs()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let token = fs::read_to_string(self.path().join("controller.token")).unwrap();
        Api {
            token: token.trim().to_string(),
            ..api
        }
    }

    /// SIGKILLs the newest controller.
    fn kill_controller(&mut self) {
        let child = self.controllers.last_mut().unwrap();
        child.kill().unwrap();
        child.wait().unwrap();
    }

    /// Runs `toygres ARGS` (a CLI client) to completion.
    fn cli(&self, args: &[&str]) -> Output {
        self.command().args(args).output().unwrap()
    }

    fn log_path(&self, run: usize) -> PathBuf {
        self.path().join(format!("controller-{run}.log"))
    }

    fn logs(&self) -> String {
        let mut out = String::new();
        for run in 1..=self.runs {
            let text = fs::read_to_string(self.log_path(run)).unwrap_or_default();
            let lines: Vec<&str> = text
                .lines()
                .filter(|l| !l.contains("sqlx::postgres::notice") && !l.contains("migrations"))
                .collect();
            out.push_str(&format!("---- controller run {run} ----\n"));
            out.push_str(&lines[lines.len().saturating_sub(60)..].join("\n"));
            out.push('\n');
        }
        for log in find_files(&self.path().join("instances"), "sidecar.log") {
            let text = fs::read_to_string(&log).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            out.push_str(&format!("---- {} ----\n", log.display()));
            out.push_str(&lines[lines.len().saturating_sub(20)..].join("\n"));
            out.push('\n');
        }
        out
    }

    /// A superuser connection to the embedded CMS over its Unix socket.
    async fn cms_client(&self) -> tokio_postgres::Client {
        let port: u16 = fs::read_to_string(self.path().join("cms/port"))
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        let (client, connection) = tokio_postgres::Config::new()
            .host_path(self.path().join("cms/run"))
            .port(port)
            .user("postgres")
            .dbname("toygres")
            .connect(tokio_postgres::NoTls)
            .await
            .unwrap();
        tokio::spawn(async move {
            let _ = connection.await;
        });
        client
    }

    /// Live processes whose command line names this home, the controllers' CMS included.
    fn processes(&self) -> Vec<i32> {
        processes_mentioning(&self.path().to_string_lossy())
    }

    /// Live processes of the instance `name` (sidecars and postmasters of its members).
    fn instance_processes(&self, name: &str) -> Vec<i32> {
        processes_mentioning(&self.path().join("instances").join(name).to_string_lossy())
    }
}

impl Drop for Home {
    fn drop(&mut self) {
        if std::thread::panicking() || std::env::var_os("TOYGRES_TEST_LOGS").is_some() {
            eprintln!("{}", self.logs());
        }
        for child in &mut self.controllers {
            if child.try_wait().ok().flatten().is_none() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
        // Sidecars stop their Postgres on SIGTERM; postmasters shut down at once on SIGQUIT.
        for pid in self.processes() {
            let signal = if is_postmaster(pid) {
                Signal::SIGQUIT
            } else {
                Signal::SIGTERM
            };
            let _ = kill(Pid::from_raw(pid), signal);
        }
        let deadline = Instant::now() + Duration::from_secs(20);
        while !self.processes().is_empty() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(100));
        }
        for pid in self.processes() {
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
    }
}

/// The controller's API.
struct Api {
    url: String,
    token: String,
    http: reqwest::Client,
}

impl Api {
    async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> (u16, String) {
        let mut request = self
            .http
            .request(method, format!("{}{path}", self.url))
            .bearer_auth(&self.token);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        (status, response.text().await.unwrap())
    }

    async fn get<T: serde::de::DeserializeOwned>(&self, path: &str) -> T {
        let (status, body) = self.send(reqwest::Method::GET, path, None).await;
        assert_eq!(status, 200, "GET {path}: {body}");
        serde_json::from_str(&body).unwrap()
    }

    async fn create(&self, name: &str, replicas: i64, replication: &str) -> OperationAccepted {
        let body =
            serde_json::json!({"name": name, "replicas": replicas, "replication": replication});
        let (status, text) = self
            .send(reqwest::Method::POST, "/v1/instances", Some(body))
            .await;
        assert_eq!(status, 202, "create {name}: {text}");
        serde_json::from_str(&text).unwrap()
    }

    async fn wait_operation(&self, home: &Home, id: &str) -> Operation {
        let deadline = Instant::now() + OPERATION_DEADLINE;
        loop {
            let (status, body) = self
                .send(reqwest::Method::GET, &format!("/v1/operations/{id}"), None)
                .await;
            if status == 200 {
                let operation: Operation = serde_json::from_str(&body).unwrap();
                if operation.is_finished() {
                    return operation;
                }
            }
            assert!(
                Instant::now() < deadline,
                "operation {id} did not finish: {body}\n{}",
                home.logs()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

fn sidecar_bin() -> PathBuf {
    let path = Path::new(BIN).with_file_name("toygres-sidecar");
    assert!(
        path.is_file(),
        "{} not found: cargo build -p toygres-sidecar --bin toygres-sidecar",
        path.display()
    );
    path
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn port_listening(address: &str) -> bool {
    std::net::TcpStream::connect(address).is_ok()
}

fn is_postmaster(pid: i32) -> bool {
    fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim() == "postgres")
}

fn alive(pid: i32) -> bool {
    if kill(Pid::from_raw(pid), None).is_err() {
        return false;
    }
    fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        !stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z'))
    })
}

fn processes_mentioning(needle: &str) -> Vec<i32> {
    let mut pids = Vec::new();
    for entry in fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        if pid == std::process::id() as i32 {
            continue;
        }
        if let Ok(cmdline) = fs::read(format!("/proc/{pid}/cmdline")) {
            if String::from_utf8_lossy(&cmdline).contains(needle) && alive(pid) {
                pids.push(pid);
            }
        }
    }
    pids
}

fn find_files(dir: &Path, name: &str) -> Vec<PathBuf> {
    let mut found = Vec::new();
    for entry in fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() && !path.ends_with("data") {
            found.extend(find_files(&path, name));
        } else if path.file_name().is_some_and(|n| n == name) {
            found.push(path);
        }
    }
    found
}

/// A superuser connection to `url` (`postgresql://user@host:port/db`) with `password`.
async fn connect(url: &str, password: &str) -> tokio_postgres::Client {
    let mut config: tokio_postgres::Config = url.parse().unwrap();
    config
        .password(password)
        .connect_timeout(Duration::from_secs(5));
    let (client, connection) = config.connect(tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(async move {
        let _ = connection.await;
    });
    client
}

async fn eventually<T, F, Fut>(timeout: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn stdout(output: &Output) -> String {
    assert!(
        output.status.success(),
        "the CLI failed: {}\n{}",
        String::from_utf8_lossy(&output.stderr),
        String::from_utf8_lossy(&output.stdout)
    );
    String::from_utf8(output.stdout.clone()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sync_instance_serves_writes_on_rw_reads_on_ro_notices_a_dead_standby_and_deletes_cleanly(
) {
    let mut home = Home::new();
    let api = home.start().await;

    // Create through the CLI: it waits, then prints the endpoints and where the password is.
    let started = Instant::now();
    let out = stdout(&home.cli(&[
        "create",
        "orders",
        "--replicas",
        "1",
        "--replication",
        "sync",
    ]));
    let create_seconds = started.elapsed().as_secs_f64();
    eprintln!("create with one sync standby took {create_seconds:.1} s");
    assert!(
        out.contains("Read-write:  postgresql://postgres@127.0.0.1:"),
        "{out}"
    );
    assert!(out.contains("target_session_attrs=read-write"), "{out}");
    let detail: InstanceDetail = api.get("/v1/instances/orders").await;
    let connection = detail.connection.clone().unwrap();
    let password_file = connection.password_location.clone().unwrap();
    let password = fs::read_to_string(&password_file)
        .unwrap()
        .trim()
        .to_string();
    assert!(!out.contains(&password), "the CLI printed the password");
    assert_eq!(detail.summary.state, "running");
    assert_eq!(detail.summary.replication_mode, "sync");
    let roles: Vec<(&str, &str)> = detail
        .members
        .iter()
        .map(|m| (m.name.as_str(), m.role.as_str()))
        .collect();
    assert_eq!(roles, [("orders-0", "primary"), ("orders-1", "standby")]);
    // The password is nowhere in the CMS: not in the orchestration history, not in the records.
    let cms = home.cms_client().await;
    for table in [
        "toygres_duroxide.history",
        "toygres_duroxide.executions",
        "toygres.operations",
        "toygres.events",
        "toygres.instances",
    ] {
        let found: i64 = cms
            .query_one(
                &format!("SELECT count(*) FROM {table} t WHERE t::text LIKE '%' || $1 || '%'"),
                &[&password],
            )
            .await
            .unwrap()
            .get(0);
        assert_eq!(found, 0, "the password is in {table}");
    }

    // A write through rw is read back through ro (from the standby).
    let rw = connect(&connection.rw, &password).await;
    rw.batch_execute("CREATE TABLE t (v text); INSERT INTO t VALUES ('through rw')")
        .await
        .unwrap();
    let ro = connect(&connection.ro, &password).await;
    let in_recovery: bool = ro
        .query_one("SELECT pg_is_in_recovery()", &[])
        .await
        .unwrap()
        .get(0);
    assert!(in_recovery, "ro should lead to the standby");
    let value: String = eventually(Duration::from_secs(30), "the row on ro", || {
        let ro = &ro;
        async move { Some(ro.query_opt("SELECT v FROM t", &[]).await.ok()??.get(0)) }
    })
    .await;
    assert_eq!(value, "through rw");
    // Sync mode: the standby is confirmed synchronous, and the health loop (whose first round
    // may come after create returns) reports the instance healthy.
    let synced = eventually(
        Duration::from_secs(30),
        "orders-1 reported sync and the instance healthy",
        || async {
            let detail: InstanceDetail = api.get("/v1/instances/orders").await;
            let sync = detail
                .members
                .iter()
                .any(|m| m.name == "orders-1" && m.sync_state.as_deref() == Some("sync"));
            (sync && detail.summary.health == "healthy").then_some(detail)
        },
    )
    .await;
    assert_eq!(synced.summary.health, "healthy");
    let get = stdout(&home.cli(&["get", "orders"]));
    assert!(
        get.contains("seconds ago") || get.contains("second ago"),
        "{get}"
    );
    drop((rw, ro));

    // The actor notices a standby whose sidecar dies. (The platform restarts it within the
    // supervise interval; should that beat the health round, kill it again.)
    let member_json = home.path().join("instances/orders/orders-1/member.json");
    eventually(Duration::from_secs(60), "a member-down event", || async {
        let record: serde_json::Value =
            serde_json::from_str(&fs::read_to_string(&member_json).unwrap()).unwrap();
        if let Some(pid) = record["pid"].as_i64() {
            let _ = kill(Pid::from_raw(i32::try_from(pid).unwrap()), Signal::SIGKILL);
        }
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let events: EventList = api.get("/v1/instances/orders/events").await;
        events
            .events
            .iter()
            .any(|e| e.kind == "member-down" && e.member.as_deref() == Some("orders-1"))
            .then_some(())
    })
    .await;
    // The same round took the dead standby out of the ro endpoint (to the primary).
    let events: EventList = api.get("/v1/instances/orders/events").await;
    assert!(
        events
            .events
            .iter()
            .any(|e| e.kind == "ro-routes" && e.message.contains("leads to the primary")),
        "{events:?}"
    );
    // … and records it comes back once the platform restarts it.
    eventually(Duration::from_secs(60), "a member-up event", || async {
        let events: EventList = api.get("/v1/instances/orders/events").await;
        events
            .events
            .iter()
            .any(|e| e.kind == "member-up" && e.member.as_deref() == Some("orders-1"))
            .then_some(())
    })
    .await;

    // Delete: no process, no port, no data directory is left.
    let addresses: Vec<String> = detail
        .members
        .iter()
        .filter_map(|m| m.address.clone())
        .chain([
            connection
                .rw
                .split('@')
                .nth(1)
                .unwrap()
                .split('/')
                .next()
                .unwrap()
                .to_string(),
            connection
                .ro
                .split('@')
                .nth(1)
                .unwrap()
                .split('/')
                .next()
                .unwrap()
                .to_string(),
        ])
        .collect();
    let out = stdout(&home.cli(&["delete", "orders"]));
    assert!(out.contains("deleted"), "{out}");
    assert!(
        home.instance_processes("orders").is_empty(),
        "processes left: {:?}",
        home.instance_processes("orders")
    );
    for address in &addresses {
        assert!(!port_listening(address), "{address} still listens");
    }
    assert!(!home.path().join("instances/orders").exists());
    let detail: InstanceDetail = api.get("/v1/instances/orders").await;
    assert_eq!(detail.summary.state, "deleted");
    let list = stdout(&home.cli(&["list", "-o", "json"]));
    assert!(!list.contains("orders"), "{list}");
    let metrics = api
        .http
        .get(format!("{}/metrics", api.url))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for line in [
        "toygres_controller_operations_total{kind=\"create\",result=\"succeeded\"} 1\n",
        "toygres_controller_operations_total{kind=\"delete\",result=\"succeeded\"} 1\n",
        "toygres_controller_instances{state=\"deleted\"} 1\n",
    ] {
        assert!(metrics.contains(line), "{line} missing from:\n{metrics}");
    }
    assert!(
        !metrics.contains("toygres_controller_health_checks_total{result=\"ok\"} 0\n"),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn creates_and_replica_adds_interrupted_by_a_controller_kill_complete_after_restart() {
    let mut home = Home::new();
    let api = home.start().await;
    let accepted = api.create("crashy", 1, "async").await;
    // Kill the controller while the primary is being created.
    eventually(Duration::from_secs(60), "the primary's record", || async {
        home.path()
            .join("instances/crashy/crashy-0/member.json")
            .exists()
            .then_some(())
    })
    .await;
    home.kill_controller();

    let api = home.start().await;
    let operation = api.wait_operation(&home, &accepted.operation_id).await;
    assert_eq!(operation.status, "succeeded", "{operation:?}");
    let detail: InstanceDetail = api.get("/v1/instances/crashy").await;
    assert_eq!(detail.summary.state, "running");
    let names: Vec<&str> = detail.members.iter().map(|m| m.name.as_str()).collect();
    assert_eq!(names, ["crashy-0", "crashy-1"]);
    // The instance serves through its endpoint after the controller's restart.
    let connection = detail.connection.clone().unwrap();
    let password = fs::read_to_string(connection.password_location.as_deref().unwrap())
        .unwrap()
        .trim()
        .to_string();
    let rw = connect(&connection.rw, &password).await;
    rw.batch_execute("CREATE TABLE survived (v int)")
        .await
        .unwrap();
    drop(rw);
    // Exactly one sidecar per member: none started twice, none orphaned.
    let sidecars: Vec<i32> = home
        .instance_processes("crashy")
        .into_iter()
        .filter(|pid| !is_postmaster(*pid))
        .collect();
    assert_eq!(sidecars.len(), 2, "sidecars: {sidecars:?}");

    // Add a replica through the actor's queue, and kill the controller while it is copied.
    let (status, text) = api
        .send(
            reqwest::Method::POST,
            "/v1/instances/crashy/replicas",
            Some(serde_json::json!({"zone": "z1"})),
        )
        .await;
    assert_eq!(status, 202, "{text}");
    let accepted: OperationAccepted = serde_json::from_str(&text).unwrap();
    eventually(Duration::from_secs(60), "crashy-2's record", || async {
        home.path()
            .join("instances/crashy/crashy-2/member.json")
            .exists()
            .then_some(())
    })
    .await;
    home.kill_controller();
    let api = home.start().await;
    let operation = api.wait_operation(&home, &accepted.operation_id).await;
    assert_eq!(operation.status, "succeeded", "{operation:?}");
    let status: ReplicationStatus = api.get("/v1/instances/crashy/replicas").await;
    let names: Vec<&str> = status.members.iter().map(|m| m.name.as_str()).collect();
    assert_eq!(names, ["crashy-0", "crashy-1", "crashy-2"]);
    assert_eq!(status.replicas, 2);

    // Remove a replica: its process and data go.
    let out = stdout(&home.cli(&["replication", "remove", "crashy", "crashy-1"]));
    assert!(out.contains("succeeded"), "{out}");
    assert!(!home.path().join("instances/crashy/crashy-1").exists());
    let status: ReplicationStatus = api.get("/v1/instances/crashy/replicas").await;
    let names: Vec<&str> = status.members.iter().map(|m| m.name.as_str()).collect();
    assert_eq!(names, ["crashy-0", "crashy-2"]);
    // Its slot went with it: the primary keeps no WAL for a standby that is gone.
    let rw = connect(&connection.rw, &password).await;
    let slots: Vec<String> = rw
        .query(
            "SELECT slot_name::text FROM pg_replication_slots ORDER BY 1",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(slots, ["crashy_2"]);
    drop(rw);
    // The primary cannot be removed.
    let (status, text) = api
        .send(
            reqwest::Method::DELETE,
            "/v1/instances/crashy/replicas/crashy-0",
            None,
        )
        .await;
    assert_eq!(status, 409, "{text}");

    let (status, text) = api
        .send(reqwest::Method::DELETE, "/v1/instances/crashy", None)
        .await;
    assert_eq!(status, 202, "{text}");
    let accepted: OperationAccepted = serde_json::from_str(&text).unwrap();
    let operation = api.wait_operation(&home, &accepted.operation_id).await;
    assert_eq!(operation.status, "succeeded", "{operation:?}");
    assert!(home.instance_processes("crashy").is_empty());
    assert!(!home.path().join("instances/crashy").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_refuses_bad_input_with_4xx_and_no_token_with_401() {
    let mut home = Home::new();
    let api = home.start().await;
    let cases = [
        (serde_json::json!({"name": "Bad_Name"}), "name"),
        (serde_json::json!({"name": "a".repeat(41)}), "name"),
        (serde_json::json!({"name": "ok", "replicas": 6}), "replicas"),
        (
            serde_json::json!({"name": "ok", "replicas": -1}),
            "replicas",
        ),
        (
            serde_json::json!({"name": "ok", "replicas": 1, "replication": "semi"}),
            "replication",
        ),
        (serde_json::json!({"replicas": 1}), "name"),
    ];
    for (body, field) in cases {
        let (status, text) = api
            .send(reqwest::Method::POST, "/v1/instances", Some(body.clone()))
            .await;
        assert_eq!(status, 400, "{body}: {text}");
        assert!(text.contains(field), "{body}: {text}");
    }
    let (status, _) = api
        .send(reqwest::Method::GET, "/v1/instances/nope", None)
        .await;
    assert_eq!(status, 404);
    let (status, _) = api
        .send(reqwest::Method::GET, "/v1/operations/op-0000", None)
        .await;
    assert_eq!(status, 404);
    let (status, _) = api
        .send(reqwest::Method::DELETE, "/v1/instances/nope", None)
        .await;
    assert_eq!(status, 404);
    let response = api
        .http
        .post(format!("{}/v1/instances", api.url))
        .json(&serde_json::json!({"name": "ok"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 401);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_controller_on_an_external_cms_runs_instances_and_never_logs_the_cms_password() {
    // Another controller's embedded Postgres plays the operator's database server.
    let mut server = Home::new();
    let _server_api = server.start().await;
    server
        .cms_client()
        .await
        .batch_execute("CREATE DATABASE external_cms")
        .await
        .unwrap();
    let read = |name: &str| {
        fs::read_to_string(server.path().join("cms").join(name))
            .unwrap()
            .trim()
            .to_string()
    };
    let (password, port) = (read("superuser.password"), read("port"));
    let url = format!("postgres://postgres:{password}@127.0.0.1:{port}/external_cms");

    let mut home = Home::new();
    let api = home.start_with_env(&[("DATABASE_URL", &url)]).await;
    assert!(
        !home.path().join("cms").exists(),
        "no embedded CMS expected"
    );
    let accepted = api.create("ext", 0, "async").await;
    let operation = api.wait_operation(&home, &accepted.operation_id).await;
    assert_eq!(operation.status, "succeeded", "{operation:?}");
    let (status, text) = api
        .send(reqwest::Method::DELETE, "/v1/instances/ext", None)
        .await;
    assert_eq!(status, 202, "{text}");
    let accepted: OperationAccepted = serde_json::from_str(&text).unwrap();
    let operation = api.wait_operation(&home, &accepted.operation_id).await;
    assert_eq!(operation.status, "succeeded", "{operation:?}");

    let log = fs::read_to_string(home.log_path(1)).unwrap();
    assert!(log.contains("using the CMS at 127.0.0.1"), "{log}");
    assert!(!log.contains(&password), "the CMS password is in the log");
}
