//! What the controller's end-to-end tests share: a temporary `$TOYGRES_HOME` with the
//! controllers started on it (everything they started is killed when it drops, even when the test
//! fails), the API, and small process and polling helpers.

#![allow(clippy::unwrap_used, dead_code)]

use std::collections::BTreeSet;
use std::fs;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use toygres_common::controller_api::{EventList, InstanceDetail, ReplicationStatus};
pub use toygres_common::controller_api::{Operation, OperationAccepted};

pub mod archive;
pub mod netns;

pub const BIN: &str = env!("CARGO_BIN_EXE_toygres");

/// The controller binary the tests run: [`BIN`] (this build's), or the one in
/// `$TOYGRES_TEST_BIN_DIR` (benchmarks run release binaries from a debug test this way).
pub fn controller_bin() -> PathBuf {
    match std::env::var_os("TOYGRES_TEST_BIN_DIR") {
        Some(dir) => Path::new(&dir).join("toygres"),
        None => PathBuf::from(BIN),
    }
}

/// How long the controller may take to become healthy (initdb of the CMS included).
pub const START_DEADLINE: Duration = Duration::from_secs(60);

/// How long an operation may take.
pub const OPERATION_DEADLINE: Duration = Duration::from_secs(180);

/// A temporary `$TOYGRES_HOME` (mode 0711: Postgres runs as the `postgres` OS user when the tests
/// run as root) and the controllers started on it.
pub struct Home {
    pub dir: tempfile::TempDir,
    pub controllers: Vec<Child>,
    pub runs: usize,
}

impl Home {
    pub fn new() -> Self {
        // Short: Postgres's socket path must fit.
        let dir = tempfile::Builder::new().prefix("tgi").tempdir().unwrap();
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o711)).unwrap();
        Self {
            dir,
            controllers: Vec::new(),
            runs: 0,
        }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn command(&self) -> Command {
        let mut cmd = Command::new(controller_bin());
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
    pub async fn start(&mut self) -> Api {
        self.start_with_env(&[]).await
    }

    /// [`Home::start`] with more environment variables.
    pub async fn start_with_env(&mut self, env: &[(&str, &str)]) -> Api {
        self.start_on("127.0.0.1", env).await
    }

    /// [`Home::start_with_env`], the API listening on `host` (an address of this machine).
    pub async fn start_on(&mut self, host: &str, env: &[(&str, &str)]) -> Api {
        self.start_at(host, free_port(), env).await
    }

    /// [`Home::start_on`], the API listening on `port`.
    pub async fn start_at(&mut self, host: &str, port: u16, env: &[(&str, &str)]) -> Api {
        self.runs += 1;
        let log = fs::File::create(self.log_path(self.runs)).unwrap();
        let child = self
            .command()
            .env("TOYGRES_HEALTH_INTERVAL_MS", "500")
            // Slow enough that a killed sidecar stays down for a few health rounds.
            .env("TOYGRES_SUPERVISE_INTERVAL_MS", "4000")
            .envs(env.iter().copied())
            .args([
                "controller",
                "--listen",
                &format!("{host}:{port}"),
                "--sidecar-bin",
                &sidecar_bin().to_string_lossy(),
            ])
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        self.controllers.push(child);
        let url = format!("https://{host}:{port}");
        let deadline = Instant::now() + START_DEADLINE;
        let http = loop {
            if let Some(status) = self.controllers.last_mut().unwrap().try_wait().unwrap() {
                panic!("the controller exited ({status}):\n{}", self.logs());
            }
            // The address file is written once the API (and its certificate) is in place.
            if self.path().join("controller.addr").exists() {
                let http = controller_http(self.path(), &url);
                let healthy = http
                    .get(format!("{url}/healthz"))
                    .send()
                    .await
                    .is_ok_and(|r| r.status() == 200);
                if healthy {
                    break http;
                }
            }
            assert!(
                Instant::now() < deadline,
                "no healthy controller:\n{}",
                self.logs()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        let api = Api {
            url,
            token: String::new(),
            http,
        };
        let token = fs::read_to_string(self.path().join("controller.token")).unwrap();
        Api {
            token: token.trim().to_string(),
            ..api
        }
    }

    /// SIGKILLs the newest controller.
    pub fn kill_controller(&mut self) {
        let child = self.controllers.last_mut().unwrap();
        child.kill().unwrap();
        child.wait().unwrap();
    }

    /// Runs `toygres ARGS` (a CLI client) to completion.
    pub fn cli(&self, args: &[&str]) -> Output {
        self.command().args(args).output().unwrap()
    }

    pub fn log_path(&self, run: usize) -> PathBuf {
        self.path().join(format!("controller-{run}.log"))
    }

    pub fn logs(&self) -> String {
        let mut out = String::new();
        for run in 1..=self.runs {
            let text = fs::read_to_string(self.log_path(run)).unwrap_or_default();
            let lines: Vec<&str> = text
                .lines()
                .filter(|l| {
                    !l.contains("sqlx::postgres::notice")
                        && !l.contains("migrations")
                        && !l.contains("connect to the member")
                        && !l.contains("database is locked")
                })
                .collect();
            out.push_str(&format!("---- controller run {run} ----\n"));
            out.push_str(&lines[lines.len().saturating_sub(150)..].join("\n"));
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

    /// Copies the controller's logs and every sidecar's log, whole, into `dir` (benchmarks
    /// keep them for a per-step timeline).
    pub fn save_logs(&self, dir: &Path) {
        fs::create_dir_all(dir).unwrap();
        for run in 1..=self.runs {
            let _ = fs::copy(
                self.log_path(run),
                dir.join(format!("controller-{run}.log")),
            );
        }
        for log in find_files(&self.path().join("instances"), "sidecar.log") {
            let member = log
                .parent()
                .and_then(|p| p.file_name())
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            let _ = fs::copy(&log, dir.join(format!("{member}.log")));
        }
    }

    /// A superuser connection to the embedded CMS over its Unix socket.
    pub async fn cms_client(&self) -> tokio_postgres::Client {
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
    pub fn processes(&self) -> Vec<i32> {
        processes_mentioning(&self.path().to_string_lossy())
    }

    /// Live processes of the instance `name` (sidecars and postmasters of its members).
    pub fn instance_processes(&self, name: &str) -> Vec<i32> {
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

/// An HTTP client of the controller at `url` whose home is `home`: it trusts the CA the
/// controller issued its own certificate from (`$TOYGRES_HOME/tls/ca.crt`).
pub fn controller_http(home: &Path, url: &str) -> reqwest::Client {
    let ca = fs::read(home.join("tls").join("ca.crt")).unwrap();
    toygres_common::tls::https::client_trusting(reqwest::Client::builder(), &ca, url).unwrap()
}

/// The controller's API.
pub struct Api {
    pub url: String,
    pub token: String,
    pub http: reqwest::Client,
}

impl Api {
    pub async fn send(
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

    pub async fn get<T: serde::de::DeserializeOwned>(&self, path: &str) -> T {
        let (status, body) = self.send(reqwest::Method::GET, path, None).await;
        assert_eq!(status, 200, "GET {path}: {body}");
        serde_json::from_str(&body).unwrap()
    }

    pub async fn create(&self, name: &str, replicas: i64, replication: &str) -> OperationAccepted {
        let body =
            serde_json::json!({"name": name, "replicas": replicas, "replication": replication});
        let (status, text) = self
            .send(reqwest::Method::POST, "/v1/instances", Some(body))
            .await;
        assert_eq!(status, 202, "create {name}: {text}");
        serde_json::from_str(&text).unwrap()
    }

    /// Sends a request that queues an operation (202) and waits until it finishes.
    pub async fn run_operation(
        &self,
        home: &Home,
        path: &str,
        body: serde_json::Value,
    ) -> Operation {
        let (status, text) = self.send(reqwest::Method::POST, path, Some(body)).await;
        assert_eq!(status, 202, "POST {path}: {text}");
        let accepted: OperationAccepted = serde_json::from_str(&text).unwrap();
        self.wait_operation(home, &accepted.operation_id).await
    }

    pub async fn wait_operation(&self, home: &Home, id: &str) -> Operation {
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

pub fn sidecar_bin() -> PathBuf {
    let path = controller_bin().with_file_name("toygres-sidecar");
    assert!(
        path.is_file(),
        "{} not found: cargo build -p toygres-sidecar --bin toygres-sidecar",
        path.display()
    );
    path
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub fn port_listening(address: &str) -> bool {
    std::net::TcpStream::connect(address).is_ok()
}

pub fn is_postmaster(pid: i32) -> bool {
    fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim() == "postgres")
}

pub fn alive(pid: i32) -> bool {
    if kill(Pid::from_raw(pid), None).is_err() {
        return false;
    }
    fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        !stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z'))
    })
}

pub fn processes_mentioning(needle: &str) -> Vec<i32> {
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

pub fn find_files(dir: &Path, name: &str) -> Vec<PathBuf> {
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

/// A printed URI as tokio-postgres takes it, and TLS trusting the CA file the URI names.
/// tokio-postgres parses neither `sslmode=verify-full` nor `sslrootcert`: they are taken out
/// and stand for what they mean (TLS required, the server verified against that CA).
pub fn pg_config(url: &str) -> (tokio_postgres::Config, toygres_common::tls::pg::PgTls) {
    let (base, query) = url.split_once('?').unwrap_or((url, ""));
    let mut kept = Vec::new();
    let mut ca_file = None;
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        match pair.split_once('=') {
            Some(("sslrootcert", value)) => ca_file = Some(percent_decode(value)),
            Some(("sslmode", "verify-full")) | Some(("passfile", _)) => {}
            _ => kept.push(pair),
        }
    }
    let url = if kept.is_empty() {
        base.to_string()
    } else {
        format!("{base}?{}", kept.join("&"))
    };
    let mut config: tokio_postgres::Config = url.parse().unwrap();
    toygres_common::tls::pg::PgTls::require(&mut config);
    let ca_file = ca_file.unwrap_or_else(|| panic!("{url} names no CA file"));
    let ca = fs::read(&ca_file).unwrap_or_else(|e| panic!("read {ca_file}: {e}"));
    (
        config,
        toygres_common::tls::pg::PgTls::new(&ca, None).unwrap(),
    )
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match (bytes[i], text.get(i + 1..i + 3)) {
            (b'%', Some(hex)) if u8::from_str_radix(hex, 16).is_ok() => {
                out.push(u8::from_str_radix(hex, 16).unwrap());
                i += 3;
            }
            (byte, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8(out).unwrap()
}

/// A superuser connection to `url` (a printed URI) with `password`.
pub async fn connect(url: &str, password: &str) -> tokio_postgres::Client {
    let (mut config, tls) = pg_config(url);
    config
        .password(password)
        .connect_timeout(Duration::from_secs(5));
    let (client, connection) = config.connect(tls).await.unwrap();
    tokio::spawn(async move {
        let _ = connection.await;
    });
    client
}

pub async fn eventually<T, F, Fut>(timeout: Duration, what: &str, mut check: F) -> T
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

pub fn stdout(output: &Output) -> String {
    assert!(
        output.status.success(),
        "the CLI failed: {}\n{}",
        String::from_utf8_lossy(&output.stderr),
        String::from_utf8_lossy(&output.stdout)
    );
    String::from_utf8(output.stdout.clone()).unwrap()
}

// What the high-availability tests (ha.rs, ha_freeze.rs) share.

/// How long a failover, with the old primary's rejoin, may take.
pub const HA_DEADLINE: Duration = Duration::from_secs(120);

/// Members killed by a test stay down until the controller rejoins them (no supervisor restart
/// racing the failover).
pub const NO_RESTARTS: (&str, &str) = ("TOYGRES_SUPERVISE_INTERVAL_MS", "3600000");

/// One acknowledged commit: its id, the Postgres port that took it, when it was sent and when
/// it returned.
#[derive(Debug, Clone, Copy)]
pub struct Ack {
    pub id: i64,
    pub port: i32,
    pub sent: Instant,
    pub at: Instant,
}

pub async fn members(api: &Api, instance: &str) -> ReplicationStatus {
    api.get(&format!("/v1/instances/{instance}/replicas")).await
}

pub async fn primary_of(api: &Api, instance: &str) -> Option<String> {
    members(api, instance)
        .await
        .members
        .into_iter()
        .find(|m| m.role == "primary")
        .map(|m| m.name)
}

/// The Postgres port of a member, as the CMS records its address.
pub async fn pg_port(api: &Api, instance: &str, member: &str) -> i32 {
    let status = members(api, instance).await;
    let address = status
        .members
        .iter()
        .find(|m| m.name == member)
        .and_then(|m| m.address.clone())
        .unwrap();
    address.rsplit_once(':').unwrap().1.parse().unwrap()
}

/// A superuser connection straight to `member`'s Postgres (not through the endpoints).
pub async fn connect_member(api: &Api, instance: &str, member: &str) -> tokio_postgres::Client {
    let (rw, password) = connection(api, instance).await;
    let (head, tail) = rw.rsplit_once(':').unwrap();
    let path = tail.split_once('/').map_or("", |(_, db)| db);
    let port = pg_port(api, instance, member).await;
    connect(&format!("{head}:{port}/{path}"), &password).await
}

pub async fn events(api: &Api, instance: &str) -> EventList {
    api.get(&format!("/v1/instances/{instance}/events")).await
}

/// Polls until every member is a running, healthy primary or streaming standby, with exactly
/// one primary (and, in sync mode, a synchronous standby, as the primary reports it).
pub async fn wait_all_healthy(api: &Api, home: &Home, instance: &str, count: usize) {
    let deadline = Instant::now() + HA_DEADLINE;
    loop {
        let status = members(api, instance).await;
        let healthy = status
            .members
            .iter()
            .filter(|m| m.health == "healthy" && m.state == "running")
            .count();
        let primaries = status
            .members
            .iter()
            .filter(|m| m.role == "primary")
            .count();
        let synchronous = status.replication_mode != "sync"
            || status
                .members
                .iter()
                .any(|m| matches!(m.sync_state.as_deref(), Some("sync" | "quorum")));
        if healthy == count && primaries == 1 && synchronous {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{instance} is not healthy: {:?}\n{}",
            status
                .members
                .iter()
                .map(|m| (&m.name, &m.role, &m.state, &m.health, &m.sync_state))
                .collect::<Vec<_>>(),
            home.logs()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

pub async fn connection(api: &Api, instance: &str) -> (String, String) {
    let detail: InstanceDetail = api.get(&format!("/v1/instances/{instance}")).await;
    let connection = detail.connection.unwrap();
    let password = fs::read_to_string(connection.password_location.unwrap())
        .unwrap()
        .trim()
        .to_string();
    (connection.rw, password)
}

/// Clients inserting rows through the rw endpoint as fast as they can, reconnecting whenever
/// their connection breaks, remembering every commit Postgres acknowledged.
pub struct Writers {
    stop: Arc<AtomicBool>,
    acks: Arc<Mutex<Vec<Ack>>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Writers {
    pub fn start(count: i64, url: &str, password: &str) -> Self {
        Self::start_from(count, 1, url, password)
    }

    /// [`Writers::start`], the ids starting at `first` (writers that run side by side take
    /// ranges apart).
    pub fn start_from(count: i64, first: i64, url: &str, password: &str) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let acks: Arc<Mutex<Vec<Ack>>> = Arc::default();
        let tasks = (0..count)
            .map(|writer| {
                let (stop, acks) = (stop.clone(), acks.clone());
                let (url, password) = (url.to_string(), password.to_string());
                tokio::spawn(async move {
                    // Ids of writer w are w, w + count, w + 2 count, …: never shared.
                    let mut next = writer + first;
                    while !stop.load(Ordering::Relaxed) {
                        let (mut config, tls) = pg_config(&url);
                        config
                            .password(&password)
                            .connect_timeout(Duration::from_secs(5));
                        let Ok(Ok((client, connection))) =
                            tokio::time::timeout(Duration::from_secs(10), config.connect(tls))
                                .await
                        else {
                            tokio::time::sleep(Duration::from_millis(20)).await;
                            continue;
                        };
                        tokio::spawn(connection);
                        while !stop.load(Ordering::Relaxed) {
                            let id = next;
                            next += count;
                            let params: [&(dyn tokio_postgres::types::ToSql + Sync); 1] = [&id];
                            let sent = Instant::now();
                            let insert = client.query_one(
                                "INSERT INTO acked (id) VALUES ($1) RETURNING inet_server_port()",
                                &params,
                            );
                            match tokio::time::timeout(Duration::from_secs(30), insert).await {
                                Ok(Ok(row)) => acks.lock().unwrap().push(Ack {
                                    id,
                                    port: row.get(0),
                                    sent,
                                    at: Instant::now(),
                                }),
                                // Not acknowledged: it may or may not be there; never counted.
                                _ => break,
                            }
                        }
                    }
                })
            })
            .collect();
        Self { stop, acks, tasks }
    }

    pub fn acks(&self) -> Vec<Ack> {
        self.acks.lock().unwrap().clone()
    }

    /// Polls until a commit is acknowledged after `since` by a server other than `not_by`.
    pub async fn acked_after(&self, since: Instant, not_by: Option<i32>, what: &str) -> Instant {
        eventually(HA_DEADLINE, what, || async {
            self.acks()
                .iter()
                .find(|a| a.at > since && Some(a.port) != not_by)
                .map(|a| a.at)
        })
        .await
    }

    pub async fn stop(self) -> Vec<Ack> {
        self.stop.store(true, Ordering::Relaxed);
        for task in self.tasks {
            let _ = tokio::time::timeout(Duration::from_secs(40), task).await;
        }
        let mut acks = self.acks.lock().unwrap().clone();
        acks.sort_by_key(|a| a.at);
        acks
    }
}

/// Starts a controller with `env`, creates a three-member instance `name` with `ha` settings,
/// and the `acked` table.
pub async fn start_ha(env: &[(&str, &str)], name: &str, ha: serde_json::Value) -> (Home, Api) {
    let mut home = Home::new();
    let api = home.start_with_env(env).await;
    create_ha(&home, &api, name, ha).await;
    (home, api)
}

/// Creates a three-member sync instance `name` with `ha` settings, and the `acked` table.
pub async fn create_ha(home: &Home, api: &Api, name: &str, ha: serde_json::Value) {
    let request = serde_json::json!({"name": name, "replicas": 2, "replication": "sync", "ha": ha});
    let created = api.run_operation(home, "/v1/instances", request).await;
    assert_eq!(created.status, "succeeded", "{created:?}\n{}", home.logs());
    let (rw, password) = connection(api, name).await;
    connect(&rw, &password)
        .await
        .batch_execute("CREATE TABLE acked (id bigint PRIMARY KEY)")
        .await
        .unwrap();
    wait_all_healthy(api, home, name, 3).await;
}

/// The acknowledged commits missing from the table `acked`, read through rw.
pub async fn lost_commits(rw: &str, password: &str, acks: &[Ack]) -> Vec<i64> {
    let present: BTreeSet<i64> = connect(rw, password)
        .await
        .query("SELECT id FROM acked", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    acks.iter()
        .map(|a| a.id)
        .filter(|id| !present.contains(id))
        .collect()
}

/// The longest time without an acknowledged commit between `from` and `to`.
pub fn longest_pause(acks: &[Ack], from: Instant, to: Instant) -> Duration {
    let mut times: Vec<Instant> = acks
        .iter()
        .map(|a| a.at)
        .filter(|at| *at > from && *at <= to)
        .collect();
    times.sort();
    let mut last = from;
    let mut longest = Duration::ZERO;
    for at in times.into_iter().chain([to]) {
        longest = longest.max(at - last);
        last = at;
    }
    longest
}

/// One row of the chaos suite's table (`scripts/chaos/run.sh` collects them), printed once the
/// test's checks passed.
pub fn chaos_row(fault: &str, outcome: &str, took: Duration, acked: usize) {
    eprintln!(
        "chaos | {fault} | {outcome} | {:.2} s | {acked} | 0 | 1",
        took.as_secs_f64()
    );
}

/// Every acknowledged commit is there, and in commit order the server that took the writes
/// changed at most `changes` times (one writer at a time: never back to a superseded primary).
pub async fn assert_no_commit_lost(rw: &str, password: &str, acks: &[Ack], changes: usize) {
    let lost = lost_commits(rw, password, acks).await;
    assert!(lost.is_empty(), "acknowledged commits lost: {lost:?}");
    assert!(acks.len() > 50, "only {} writes acknowledged", acks.len());
    let moved = acks.windows(2).filter(|w| w[0].port != w[1].port).count();
    assert!(
        moved <= changes,
        "writes moved between servers {moved} times"
    );
}

/// The age of the newest health check of the members other than `frozen`, in seconds.
pub async fn last_check_age(api: &Api, instance: &str, frozen: &str) -> f64 {
    members(api, instance)
        .await
        .members
        .iter()
        .filter(|m| m.name != frozen)
        .filter_map(|m| m.last_check_age_seconds)
        .fold(f64::INFINITY, f64::min)
}

/// SIGKILLs a member's sidecar and its postmaster.
pub fn kill_member(home: &Home, instance: &str, member: &str) {
    let dir = home.path().join("instances").join(instance).join(member);
    let record: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(dir.join("member.json")).unwrap()).unwrap();
    let postmaster = fs::read_to_string(dir.join("data/postmaster.pid"))
        .ok()
        .and_then(|pid| pid.lines().next()?.trim().parse::<i32>().ok());
    if let Some(pid) = record["pid"].as_i64() {
        let _ = kill(Pid::from_raw(i32::try_from(pid).unwrap()), Signal::SIGKILL);
    }
    if let Some(pid) = postmaster {
        let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
    }
}

/// The processes of a frozen member; they are thawed and killed when this drops, so no test
/// leaves a stopped process behind even when it fails.
pub struct Frozen {
    pids: Vec<i32>,
}

impl Frozen {
    /// SIGSTOPs the member's sidecar, its postmaster and every child of the postmaster.
    pub fn member(home: &Home, instance: &str, member: &str) -> Self {
        let dir = home.path().join("instances").join(instance).join(member);
        let record: serde_json::Value =
            serde_json::from_str(&fs::read_to_string(dir.join("member.json")).unwrap()).unwrap();
        let sidecar = i32::try_from(record["pid"].as_i64().unwrap()).unwrap();
        let postmaster = postmaster_of(home, instance, member);
        // The sidecar first, so it cannot restart what is stopped after it.
        let mut pids = vec![sidecar, postmaster];
        let _ = kill(Pid::from_raw(sidecar), Signal::SIGSTOP);
        let _ = kill(Pid::from_raw(postmaster), Signal::SIGSTOP);
        pids.extend(children_of(postmaster));
        for pid in &pids[2..] {
            let _ = kill(Pid::from_raw(*pid), Signal::SIGSTOP);
        }
        assert!(pids.len() > 4, "too few processes to freeze: {pids:?}");
        Self { pids }
    }

    /// Lets every frozen process go on (nothing is killed on drop then).
    pub fn thaw(mut self) {
        for pid in self.pids.drain(..) {
            let _ = kill(Pid::from_raw(pid), Signal::SIGCONT);
        }
    }

    /// The frozen processes still alive.
    pub fn alive(&self) -> Vec<i32> {
        self.pids.iter().copied().filter(|p| alive(*p)).collect()
    }
}

impl Drop for Frozen {
    fn drop(&mut self) {
        for pid in self.alive() {
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
            let _ = kill(Pid::from_raw(pid), Signal::SIGCONT);
        }
    }
}

/// The pids whose parent is `parent`.
pub fn children_of(parent: i32) -> Vec<i32> {
    let mut children = Vec::new();
    for entry in fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let ppid = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1)?.parse::<i32>().ok());
        if ppid == Some(parent) {
            children.push(pid);
        }
    }
    children
}

/// The postmaster's pid of `member`, from its `postmaster.pid`.
pub fn postmaster_of(home: &Home, instance: &str, member: &str) -> i32 {
    let pid_file = home
        .path()
        .join("instances")
        .join(instance)
        .join(member)
        .join("data/postmaster.pid");
    fs::read_to_string(pid_file)
        .unwrap()
        .lines()
        .next()
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

/// `secret` is in none of the CMS tables that could hold one: the orchestration history, the
/// operations, the events, the instances.
pub async fn assert_nowhere_in_cms(home: &Home, secret: &str) {
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
                &[&secret],
            )
            .await
            .unwrap()
            .get(0);
        assert_eq!(found, 0, "a password is in {table}");
    }
}
