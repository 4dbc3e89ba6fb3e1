//! Test harness: starts real `toygres-sidecar` processes (each running a real Postgres) on free
//! loopback ports in a temporary directory, waits for them, and stops every process it started,
//! by pid, when dropped, also when the test panics.

use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, killpg, Signal};
use nix::unistd::Pid;
use toygres_common::names::PgAddress;
use toygres_common::SidecarClient;

pub use toygres_common::sidecar_api;

pub mod k8s;
pub mod objstores;

/// Superuser password every harness cluster uses.
pub const SUPERUSER_PASSWORD: &str = "harness-superuser-pw";
/// Replication password every harness cluster uses.
pub const REPLICATION_PASSWORD: &str = "harness-replication-pw";
/// API token every harness sidecar uses.
pub const API_TOKEN: &str = "harness-api-token-0123456789";

/// Connects with TLS required and the server verified against the CA in `ca_file` (names too,
/// for loopback and DNS names).
pub async fn connect_tls(
    mut config: tokio_postgres::Config,
    ca_file: &Path,
) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
    let ca = std::fs::read(ca_file).expect("read the CA file");
    let tls = toygres_common::tls::pg::PgTls::new(&ca, None).expect("use the CA");
    let (client, conn) = toygres_common::tls::pg::PgTls::require(&mut config)
        .connect(tls)
        .await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(client)
}

/// The URL of the sidecar API listening on loopback `port`: HTTPS, as the sidecar serves.
/// Every harness URL of a sidecar is made here.
pub fn sidecar_url(port: u16) -> String {
    format!("https://127.0.0.1:{port}")
}

/// An HTTP client for `url` that trusts only the CA in `ca_file`.
pub fn https_client(ca_file: &Path, url: &str) -> reqwest::Client {
    let ca = std::fs::read(ca_file).expect("read the CA file");
    toygres_common::tls::https::client_trusting(reqwest::Client::builder(), &ca, url)
        .expect("use the CA")
}

/// A port nobody listens on right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("bind an ephemeral port")
}

/// Where the workspace's binaries are: `$TOYGRES_BIN_DIR`, else beside the test executable's
/// `deps/` directory (`target/<profile>/`).
pub fn bin_path(name: &str) -> PathBuf {
    let dir = match std::env::var_os("TOYGRES_BIN_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => {
            let exe = std::env::current_exe().expect("locate the test executable");
            exe.parent()
                .and_then(Path::parent)
                .expect("test executable is under target/<profile>/deps")
                .to_path_buf()
        }
    };
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} not found: build it first (cargo build --workspace --bins)",
        path.display()
    );
    path
}

/// Polls `check` until it returns `Some`, or panics with `what` after `timeout`.
pub async fn eventually<T, F, Fut>(timeout: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A temporary directory the Postgres OS user can traverse (tests run as root in CI), holding
/// the shared secret files and the CA of the sidecars started in it (as one instance's), at
/// `tls/ca.crt`; each member's TLS directory is `tls/<member>/`.
#[derive(Debug)]
pub struct TestDir {
    dir: tempfile::TempDir,
    ca: toygres_common::tls::pki::InstanceCa,
}

impl TestDir {
    pub fn new() -> Self {
        let dir = tempfile::Builder::new()
            .prefix("tg")
            .tempdir()
            .expect("create a temp dir");
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o711))
            .expect("chmod the temp dir");
        for (name, secret) in [
            ("token", API_TOKEN),
            ("superuser.pw", SUPERUSER_PASSWORD),
            ("replication.pw", REPLICATION_PASSWORD),
        ] {
            let path = dir.path().join(name);
            std::fs::write(&path, format!("{secret}\n")).expect("write a secret file");
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        }
        let ca = toygres_common::tls::pki::InstanceCa::generate("harness").expect("make a CA");
        std::fs::create_dir_all(dir.path().join("tls")).expect("create the tls dir");
        std::fs::write(dir.path().join("tls").join("ca.crt"), &ca.cert_pem).expect("write ca.crt");
        Self { dir, ca }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// The CA certificate's file.
    pub fn ca_file(&self) -> PathBuf {
        self.path().join("tls").join("ca.crt")
    }

    /// A new server certificate for `member` from this directory's CA (a renewal).
    pub fn issue_server_certificate(&self, member: &str) -> toygres_common::tls::pki::CertifiedKey {
        let names = toygres_common::tls::pki::member_server_names("harness", member, None);
        self.ca
            .issue_server(member, &names)
            .expect("issue a certificate")
    }

    /// The TLS directory of `member`, its certificates issued the first time.
    pub fn member_tls(&self, member: &str) -> PathBuf {
        let files = toygres_common::tls::MemberTlsFiles::new(self.path().join("tls").join(member));
        if files.missing().is_empty() {
            return files.dir;
        }
        let names = toygres_common::tls::pki::member_server_names("harness", member, None);
        let tls = self
            .ca
            .member_tls(member, &names)
            .expect("issue certificates");
        std::fs::create_dir_all(&files.dir).expect("create a member's tls dir");
        for (name, content) in tls.files() {
            let path = files.file(name);
            std::fs::write(&path, content).expect("write a tls file");
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        }
        files.dir
    }
}

impl Default for TestDir {
    fn default() -> Self {
        Self::new()
    }
}

/// How to start one sidecar.
#[derive(Debug, Clone)]
pub struct SidecarSpec {
    pub member: String,
    /// `None`: a new primary (initdb); `Some`: a standby of that primary.
    pub primary: Option<PgAddress>,
    /// Extra `--flag=value` arguments.
    pub extra_args: Vec<String>,
    /// Extra environment variables (object-store credentials and endpoints).
    pub env: Vec<(String, String)>,
}

impl SidecarSpec {
    pub fn primary(member: &str) -> Self {
        Self {
            member: member.into(),
            primary: None,
            extra_args: Vec::new(),
            env: Vec::new(),
        }
    }
    pub fn standby(member: &str, primary: &Sidecar) -> Self {
        Self {
            member: member.into(),
            primary: Some(primary.pg_address()),
            extra_args: Vec::new(),
            env: Vec::new(),
        }
    }
}

/// A running `toygres-sidecar` (and the Postgres it owns). Dropping it stops both.
#[derive(Debug)]
pub struct Sidecar {
    pub member: String,
    pub pg_port: u16,
    pub api_port: u16,
    pub data_dir: PathBuf,
    pub log_path: PathBuf,
    pub spec: SidecarSpec,
    root: PathBuf,
    child: Option<Child>,
}

impl Sidecar {
    /// Starts a sidecar under `dir` and waits until its Postgres is ready (`/readyz`).
    pub async fn start(dir: &TestDir, spec: SidecarSpec) -> Sidecar {
        let mut sidecar = Self::spawn(dir, spec, free_port(), free_port());
        sidecar.wait_ready(Duration::from_secs(120)).await;
        sidecar
    }

    /// Starts a sidecar without waiting for it.
    pub fn spawn(dir: &TestDir, spec: SidecarSpec, pg_port: u16, api_port: u16) -> Sidecar {
        dir.member_tls(&spec.member);
        let root = dir.path().to_path_buf();
        let data_dir = root.join(&spec.member).join("data");
        let mut sidecar = Sidecar {
            member: spec.member.clone(),
            pg_port,
            api_port,
            log_path: root.join(format!("{}.log", spec.member)),
            data_dir,
            spec,
            root,
            child: None,
        };
        sidecar.launch();
        sidecar
    }

    /// The command line this sidecar runs with.
    pub fn command(&self) -> Command {
        let mut cmd = Command::new(bin_path("toygres-sidecar"));
        cmd.arg("run")
            .arg(format!("--data-dir={}", self.data_dir.display()))
            .arg(format!("--pg-port={}", self.pg_port))
            .arg(format!("--api-addr=127.0.0.1:{}", self.api_port))
            .arg(format!("--member-name={}", self.member))
            // Secret files through the environment (flags given later override them).
            .env("TOYGRES_TOKEN_FILE", self.root.join("token"))
            .env(
                "TOYGRES_SUPERUSER_PASSWORD_FILE",
                self.root.join("superuser.pw"),
            )
            .env("TOYGRES_TLS_DIR", self.root.join("tls").join(&self.member))
            .arg("--stop-timeout-secs=10")
            .env("RUST_LOG", "info");
        if let Some(primary) = &self.spec.primary {
            cmd.arg("--bootstrap=standby")
                .arg(format!("--primary={primary}"));
        }
        cmd.args(&self.spec.extra_args);
        cmd.envs(self.spec.env.iter().map(|(k, v)| (k, v)));
        cmd
    }

    fn launch(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log_path)
            .expect("open the sidecar log");
        let mut cmd = self.command();
        cmd.stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone log handle"))
            .stderr(log)
            .process_group(0);
        self.child = Some(cmd.spawn().expect("start toygres-sidecar"));
    }

    /// Starts the sidecar again after [`Sidecar::stop`] or a kill, and waits until ready.
    pub async fn restart_process(&mut self) {
        self.relaunch();
        self.wait_ready(Duration::from_secs(120)).await;
    }

    /// Starts the sidecar again after [`Sidecar::stop`] or a kill, without waiting.
    pub fn relaunch(&mut self) {
        assert!(self.child.is_none(), "sidecar still running");
        self.launch();
    }

    /// Waits until `/readyz` answers 200; panics with the log tail if the sidecar exits.
    pub async fn wait_ready(&mut self, timeout: Duration) {
        let client = self.client();
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(child) = self.child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    self.child = None;
                    panic!(
                        "sidecar {} exited early ({status}); log:\n{}",
                        self.member,
                        self.log_tail(40)
                    );
                }
            }
            if client.ready().await.unwrap_or(false) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "sidecar {} not ready after {timeout:?}; log:\n{}",
                self.member,
                self.log_tail(40)
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The sidecar process id.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// The postmaster's pid, from `postmaster.pid`, when that process is alive.
    pub fn postmaster_pid(&self) -> Option<i32> {
        toygres_common::pg_exec::live_postmaster(&self.data_dir)
    }

    /// An API client with the right token, trusting the harness CA.
    pub fn client(&self) -> SidecarClient {
        let ca = std::fs::read(self.ca_file()).expect("read the harness CA");
        SidecarClient::new(self.api_url(), API_TOKEN, &ca, Duration::from_secs(120))
            .expect("use the harness CA")
    }

    pub fn api_url(&self) -> String {
        sidecar_url(self.api_port)
    }

    /// A plain HTTP client for this sidecar's API (raw requests): it trusts the harness CA.
    pub fn http(&self) -> reqwest::Client {
        https_client(&self.ca_file(), &self.api_url())
    }

    /// The CA that issued this sidecar's certificates.
    pub fn ca_file(&self) -> PathBuf {
        self.root.join("tls").join("ca.crt")
    }

    pub fn pg_address(&self) -> PgAddress {
        PgAddress {
            host: "127.0.0.1".into(),
            port: self.pg_port,
        }
    }

    /// A superuser connection over TCP (scram-sha-256).
    pub async fn connect(&self) -> tokio_postgres::Client {
        self.try_connect()
            .await
            .unwrap_or_else(|e| panic!("connect to {}: {e}", self.member))
    }

    pub async fn try_connect(&self) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
        self.try_connect_db("postgres").await
    }

    /// A superuser connection to database `db`, over TLS verified against the harness CA.
    pub async fn try_connect_db(
        &self,
        db: &str,
    ) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
        let mut config = tokio_postgres::Config::new();
        config
            .host("127.0.0.1")
            .port(self.pg_port)
            .user("postgres")
            .password(SUPERUSER_PASSWORD)
            .dbname(db)
            .connect_timeout(Duration::from_secs(5));
        connect_tls(config, &self.root.join("tls").join("ca.crt")).await
    }

    /// Sends `signal` to the sidecar process.
    pub fn signal(&self, signal: Signal) {
        if let Some(pid) = self.pid() {
            let _ = kill(Pid::from_raw(pid as i32), signal);
        }
    }

    /// Waits for the sidecar process to exit and returns its exit code.
    pub async fn wait_exit(&mut self, timeout: Duration) -> Option<i32> {
        let deadline = Instant::now() + timeout;
        let child = self.child.as_mut()?;
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                self.child = None;
                return status.code();
            }
            assert!(
                Instant::now() < deadline,
                "sidecar {} did not exit within {timeout:?}",
                self.member
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// SIGTERM, then waits; returns the exit code.
    pub async fn stop(&mut self) -> Option<i32> {
        self.signal(Signal::SIGTERM);
        self.wait_exit(Duration::from_secs(60)).await
    }

    /// Kills the sidecar and its Postgres with SIGKILL, as a crashed node would: the sidecar's
    /// process group (sidecar, postmaster, backends), then the postmaster by pid in case it
    /// escaped the group. Returns once both are gone; [`Sidecar::relaunch`] starts it again.
    pub async fn kill_hard(&mut self) {
        let postmaster = self.postmaster_pid();
        if let Some(mut child) = self.child.take() {
            let _ = killpg(Pid::from_raw(child.id() as i32), Signal::SIGKILL);
            let _ = child.wait();
        }
        if let Some(pid) = postmaster {
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
            let deadline = Instant::now() + Duration::from_secs(10);
            while process_alive(pid) {
                assert!(
                    Instant::now() < deadline,
                    "postmaster {pid} survived SIGKILL"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }

    /// The last `n` lines of the sidecar's log.
    pub fn log_tail(&self, n: usize) -> String {
        let text = std::fs::read_to_string(&self.log_path).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    /// Stops everything this sidecar started: the sidecar's process group, then any postmaster
    /// still running in its data directory.
    fn kill_all(&mut self) {
        if let Some(mut child) = self.child.take() {
            let pgid = Pid::from_raw(child.id() as i32);
            let _ = killpg(pgid, Signal::SIGTERM);
            let deadline = Instant::now() + Duration::from_secs(20);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = killpg(pgid, Signal::SIGKILL);
            let _ = child.wait();
        }
        if let Some(pid) = self.postmaster_pid() {
            let _ = kill(Pid::from_raw(pid), Signal::SIGQUIT);
            let deadline = Instant::now() + Duration::from_secs(10);
            while process_alive(pid) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
    }
}

impl Drop for Sidecar {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "---- log of sidecar {} ----\n{}",
                self.member,
                self.log_tail(60)
            );
        }
        self.kill_all();
    }
}

pub use toygres_common::pg_exec::process_alive;

/// Pids of all processes whose parent is `pid`.
pub fn children_of(pid: i32) -> Vec<i32> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(child) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        if let Ok(stat) = std::fs::read_to_string(format!("/proc/{child}/stat")) {
            let ppid = stat
                .rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().nth(1))
                .and_then(|p| p.parse::<i32>().ok());
            if ppid == Some(pid) {
                out.push(child);
            }
        }
    }
    out
}

/// Processes whose command line mentions `needle` (to find leftovers after a test).
pub fn processes_mentioning(needle: &str) -> Vec<i32> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        if let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) {
            let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            if cmdline.contains(needle) && process_alive(pid) {
                out.push(pid);
            }
        }
    }
    out
}
