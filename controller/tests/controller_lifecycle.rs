//! The `toygres` binary end to end on this machine: the controller starts its embedded CMS,
//! serves the API, answers the CLI, stops cleanly on SIGTERM, and comes back on the same home,
//! including after being killed; it starts its CMS again when that dies under it.
//!
//! Every process a test starts is killed when the test ends, even when it fails: see
//! [`ControllerHome`]'s `Drop`.

#![allow(clippy::unwrap_used)]

use std::fs;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde_json::Value;
use toygres_controller::cms::{self, migrate};

const BIN: &str = env!("CARGO_BIN_EXE_toygres");

/// How long the controller may take to become healthy (initdb included) or to stop.
const DEADLINE: Duration = Duration::from_secs(60);

/// A temporary `$TOYGRES_HOME` and the controllers started on it.
struct ControllerHome {
    dir: tempfile::TempDir,
    controllers: Vec<Child>,
    runs: usize,
}

/// One running controller.
struct Running {
    index: usize,
    url: String,
}

impl ControllerHome {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        // The postgres OS user (we run as root) must be able to traverse it.
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

    fn token(&self) -> String {
        fs::read_to_string(self.path().join("controller.token"))
            .unwrap()
            .trim()
            .to_string()
    }

    fn cms_port(&self) -> u16 {
        fs::read_to_string(self.path().join("cms/port"))
            .unwrap()
            .trim()
            .parse()
            .unwrap()
    }

    fn postmaster_pid(&self) -> Option<Pid> {
        let text = fs::read_to_string(self.path().join("cms/data/postmaster.pid")).ok()?;
        Some(Pid::from_raw(text.lines().next()?.trim().parse().ok()?))
    }

    /// A `toygres` command run with this home, from inside it (so no stray `.env` is read).
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

    /// Starts `toygres controller` on a free port and waits until `/healthz` answers 200.
    async fn start(&mut self) -> Running {
        self.start_with_env(&[]).await
    }

    /// [`ControllerHome::start`] with more environment variables.
    async fn start_with_env(&mut self, env: &[(&str, &str)]) -> Running {
        // Not the CMS port recorded by an earlier run: Postgres, started again, wants it back
        // (the controller would choose the CMS another port, and the test asserts it keeps it).
        let recorded = fs::read_to_string(self.path().join("cms/port")).ok();
        let port = std::iter::repeat_with(free_port)
            .find(|p| recorded.as_deref().map(str::trim) != Some(&p.to_string()))
            .unwrap();
        self.runs += 1;
        let log = fs::File::create(self.log_path(self.runs)).unwrap();
        let child = self
            .command()
            .envs(env.iter().copied())
            .args(["controller", "--listen", &format!("127.0.0.1:{port}")])
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        self.controllers.push(child);
        let running = Running {
            index: self.controllers.len() - 1,
            url: format!("https://127.0.0.1:{port}"),
        };
        let deadline = Instant::now() + DEADLINE;
        loop {
            if let Some(status) = self.controllers[running.index].try_wait().unwrap() {
                panic!(
                    "the controller exited while starting ({status}):\n{}",
                    self.log(self.runs)
                );
            }
            if let Some(http) = self.http(&running.url) {
                let healthy = http
                    .get(format!("{}/healthz", running.url))
                    .send()
                    .await
                    .is_ok_and(|r| r.status() == 200);
                if healthy {
                    return running;
                }
            }
            assert!(
                Instant::now() < deadline,
                "the controller was not healthy within {DEADLINE:?}:\n{}",
                self.log(self.runs)
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// A client of the controller at `url` trusting the CA it issued its own certificate from,
    /// once that exists.
    fn http(&self, url: &str) -> Option<reqwest::Client> {
        let ca = fs::read(self.path().join("tls").join("ca.crt")).ok()?;
        toygres_common::tls::https::client_trusting(reqwest::Client::builder(), &ca, url).ok()
    }

    fn signal(&self, running: &Running, signal: Signal) {
        let pid = Pid::from_raw(self.controllers[running.index].id().try_into().unwrap());
        kill(pid, signal).unwrap();
    }

    /// Waits for the controller to exit.
    async fn wait(&mut self, running: &Running) -> ExitStatus {
        let deadline = Instant::now() + DEADLINE;
        loop {
            if let Some(status) = self.controllers[running.index].try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "the controller did not exit within {DEADLINE:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Runs `toygres ARGS` (a CLI client) to completion.
    fn cli(&self, args: &[&str]) -> Output {
        self.command().args(args).output().unwrap()
    }

    /// A connection to the embedded CMS (as its superuser, over its Unix socket).
    async fn cms_client(&self, dbname: &str) -> tokio_postgres::Client {
        let mut config = tokio_postgres::Config::new();
        config
            .host_path(self.path().join("cms/run"))
            .port(self.cms_port())
            .user("postgres")
            .dbname(dbname);
        cms::connect(&config).await.unwrap()
    }

    fn log_path(&self, run: usize) -> PathBuf {
        self.path().join(format!("controller-{run}.log"))
    }

    fn log(&self, run: usize) -> String {
        fs::read_to_string(self.log_path(run)).unwrap_or_default()
    }
}

impl Drop for ControllerHome {
    fn drop(&mut self) {
        for child in &mut self.controllers {
            if child.try_wait().ok().flatten().is_none() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
        // A postmaster outlives a killed controller: kill it too, if it is ours.
        if let Some(pid) = self.postmaster_pid() {
            let cmdline = fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            let ours = String::from_utf8_lossy(&cmdline).contains(&*self.path().to_string_lossy());
            if ours {
                let _ = kill(pid, Signal::SIGKILL);
            }
        }
        // So do the pods of instances a test created: their sidecars and postmasters.
        let instances = self.path().join("instances");
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let left = processes_mentioning(&instances.to_string_lossy());
            if left.is_empty() {
                break;
            }
            let signal = if Instant::now() < deadline {
                Signal::SIGTERM
            } else {
                Signal::SIGKILL
            };
            for pid in left {
                let _ = kill(pid, signal);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        if std::thread::panicking() {
            for run in 1..=self.runs {
                eprintln!("--- controller run {run} log ---\n{}", self.log(run));
            }
        }
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Whether `pid` is a live process (a zombie waiting to be reaped counts as gone).
fn is_running(pid: Pid) -> bool {
    if kill(pid, None).is_err() {
        return false;
    }
    fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| {
            let (_, rest) = stat.rsplit_once(')')?;
            Some(rest.split_whitespace().next()? != "Z")
        })
        .unwrap_or(false)
}

/// Live processes (other than this one) whose command line contains `needle`.
fn processes_mentioning(needle: &str) -> Vec<Pid> {
    let mut pids = Vec::new();
    for entry in fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(raw) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let pid = Pid::from_raw(raw);
        if raw == i32::try_from(std::process::id()).unwrap() {
            continue;
        }
        let cmdline = fs::read(format!("/proc/{raw}/cmdline")).unwrap_or_default();
        if String::from_utf8_lossy(&cmdline).contains(needle) && is_running(pid) {
            pids.push(pid);
        }
    }
    pids
}

/// The sidecar built beside `toygres` (the controller runs it for an instance's members).
fn sidecar_bin() -> PathBuf {
    let path = Path::new(BIN).with_file_name("toygres-sidecar");
    assert!(
        path.is_file(),
        "{} not found: cargo build -p toygres-sidecar --bin toygres-sidecar",
        path.display()
    );
    path
}

/// Polls `check` every 20 ms until it returns `Some`, failing after `timeout`.
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
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn wait_until_gone(pid: Pid) -> bool {
    let deadline = Instant::now() + DEADLINE;
    while Instant::now() < deadline {
        if !is_running(pid) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

async fn applied_migrations(home: &ControllerHome) -> Vec<(i32, String)> {
    home.cms_client(cms::DATABASE)
        .await
        .query(
            "SELECT version, applied_at::text FROM toygres.schema_migrations ORDER BY version",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|row| (row.get(0), row.get(1)))
        .collect()
}

#[tokio::test]
async fn controller_stops_cleanly_on_sigterm_and_restarts_on_the_same_home() {
    let mut home = ControllerHome::new();
    let first = home.start().await;
    let http = home.http(&first.url).unwrap();

    let health: Value = http
        .get(format!("{}/healthz", first.url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(health, serde_json::json!({"status": "ok", "cms": "ok"}));

    // The API wants the token from the home's token file.
    let unauthorized = http
        .get(format!("{}/v1/instances", first.url))
        .send()
        .await
        .unwrap();
    assert_eq!(unauthorized.status(), 401);
    let body: Value = unauthorized.json().await.unwrap();
    assert_eq!(body["error"]["code"], "unauthorized");

    let token = home.token();
    let mode = fs::metadata(home.path().join("controller.token"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    let listed = http
        .get(format!("{}/v1/instances", first.url))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(listed.status(), 200);
    let body: Value = listed.json().await.unwrap();
    assert_eq!(body, serde_json::json!({"instances": []}));

    // What the CMS holds is what the API and the CLI list.
    home.cms_client(cms::DATABASE)
        .await
        .batch_execute(
            "INSERT INTO toygres.instances (name, state, rw_port) VALUES ('orders', 'running', 6543)",
        )
        .await
        .unwrap();
    let out = home.cli(&["list", "-o", "json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let listed: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(listed["instances"][0]["name"], "orders");
    assert_eq!(listed["instances"][0]["state"], "running");
    assert_eq!(listed["instances"][0]["rw_port"], 6543);
    let out = home.cli(&["list"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("orders"));

    // The API serves HTTPS only, and the CLI (above, with no flags) trusts only the
    // controller's own CA: another CA, or plain HTTP, gets nothing.
    let addr = fs::read_to_string(home.path().join("controller.addr")).unwrap();
    assert!(addr.starts_with("https://127.0.0.1:"), "{addr}");
    let other_ca = home.path().join("other-ca.crt");
    let ca = toygres_common::tls::pki::InstanceCa::generate("other").unwrap();
    fs::write(&other_ca, ca.cert_pem).unwrap();
    let out = home.cli(&["list", "--ca-file", &other_ca.to_string_lossy()]);
    assert!(
        !out.status.success(),
        "a CLI trusting another CA was answered"
    );
    let plain = first.url.replacen("https://", "http://", 1);
    let out = home.cli(&["list", "--url", &plain]);
    assert!(!out.status.success(), "plain HTTP was answered");

    let migrations = applied_migrations(&home).await;
    assert_eq!(migrations.len(), migrate::MIGRATIONS.len());
    let cms_port = home.cms_port();
    let postmaster = home.postmaster_pid().unwrap();
    assert!(is_running(postmaster));

    // SIGTERM: exit 0, the CMS Postgres stopped, the address file gone.
    home.signal(&first, Signal::SIGTERM);
    let status = home.wait(&first).await;
    assert!(status.success(), "exit status {status}:\n{}", home.log(1));
    assert!(!is_running(postmaster), "the CMS Postgres is still running");
    assert!(!home.path().join("cms/data/postmaster.pid").exists());
    assert!(!home.path().join("controller.addr").exists());

    let out = home.cli(&["list"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("not running"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Again on the same home: same cluster, same port, data kept, nothing re-applied.
    let second = home.start().await;
    assert_eq!(home.cms_port(), cms_port);
    assert_eq!(applied_migrations(&home).await, migrations);
    let out = home.cli(&["list", "-o", "json"]);
    let listed: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(listed["instances"][0]["name"], "orders");
    assert_eq!(home.token(), token);

    home.signal(&second, Signal::SIGTERM);
    let status = home.wait(&second).await;
    assert!(status.success(), "exit status {status}:\n{}", home.log(2));
}

#[tokio::test]
async fn restart_after_a_killed_controller_stops_the_orphaned_cms_first() {
    let mut home = ControllerHome::new();
    let first = home.start().await;
    let orphan = home.postmaster_pid().unwrap();

    home.signal(&first, Signal::SIGKILL);
    home.wait(&first).await;
    assert!(
        is_running(orphan),
        "the CMS Postgres should outlive a SIGKILLed controller"
    );

    let second = home.start().await;
    assert!(
        wait_until_gone(orphan).await,
        "the orphaned CMS Postgres was not stopped"
    );
    let postmaster = home.postmaster_pid().unwrap();
    assert_ne!(postmaster, orphan);
    assert!(is_running(postmaster));

    home.signal(&second, Signal::SIGINT);
    let status = home.wait(&second).await;
    assert!(status.success(), "exit status {status}:\n{}", home.log(2));
    assert!(!is_running(postmaster));
}

#[tokio::test]
async fn concurrent_migrations_apply_each_version_once() {
    let mut home = ControllerHome::new();
    let running = home.start().await;

    home.cms_client("postgres")
        .await
        .batch_execute("CREATE DATABASE migrate_race")
        .await
        .unwrap();
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let mut client = home.cms_client("migrate_race").await;
        tasks.push(tokio::spawn(
            async move { migrate::apply(&mut client).await },
        ));
    }
    let mut applied = Vec::new();
    for task in tasks {
        applied.extend(task.await.unwrap().unwrap());
    }
    applied.sort_unstable();
    let all: Vec<i32> = migrate::MIGRATIONS.iter().map(|m| m.version).collect();
    assert_eq!(applied, all, "each migration applied exactly once");

    let count: i64 = home
        .cms_client("migrate_race")
        .await
        .query_one("SELECT count(*) FROM toygres.schema_migrations", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(count, i64::try_from(all.len()).unwrap());

    home.signal(&running, Signal::SIGTERM);
    assert!(home.wait(&running).await.success());
}

#[tokio::test]
async fn controller_uses_the_cms_database_url_names_instead_of_an_embedded_one() {
    // Another controller's embedded CMS serves as "the operator's" Postgres, over TCP with the
    // superuser's password.
    let mut server_home = ControllerHome::new();
    let server = server_home.start().await;
    let password = fs::read_to_string(server_home.path().join("cms/superuser.password")).unwrap();
    let port = server_home.cms_port();
    let url = format!(
        "postgres://postgres:{}@127.0.0.1:{port}/toygres",
        password.trim()
    );

    let mut home = ControllerHome::new();
    let running = home.start_with_env(&[("DATABASE_URL", &url)]).await;
    assert!(
        !home.path().join("cms").exists(),
        "no embedded CMS expected"
    );
    let listed = home
        .http(&running.url)
        .unwrap()
        .get(format!("{}/v1/instances", running.url))
        .bearer_auth(home.token())
        .send()
        .await
        .unwrap();
    assert_eq!(listed.status(), 200);

    home.signal(&running, Signal::SIGTERM);
    assert!(home.wait(&running).await.success());
    let log = home.log(1);
    assert!(
        log.contains(&format!("using the CMS at 127.0.0.1:{port}/toygres")),
        "{log}"
    );
    assert!(!log.contains(password.trim()), "the log shows the password");

    server_home.signal(&server, Signal::SIGTERM);
    assert!(server_home.wait(&server).await.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_cms_postgres_is_started_again_and_the_controller_recovers() {
    let mut home = ControllerHome::new();
    let sidecar = sidecar_bin();
    let running = home
        .start_with_env(&[
            ("TOYGRES_SIDECAR_BIN", &*sidecar.to_string_lossy()),
            ("TOYGRES_HEALTH_INTERVAL_MS", "500"),
        ])
        .await;
    let http = home.http(&running.url).unwrap();
    let healthz = format!("{}/healthz", running.url);

    // Twice: the supervisor must keep watching the postmaster it started itself.
    for round in 1..=2 {
        let dead = home.postmaster_pid().unwrap();
        kill(dead, Signal::SIGKILL).unwrap();

        let body: Value = eventually(DEADLINE, "/healthz to report the CMS down", || async {
            let response = http.get(&healthz).send().await.ok()?;
            if response.status() != 503 {
                return None;
            }
            response.json().await.ok()
        })
        .await;
        assert_eq!(body["error"]["code"], "cms_unavailable", "{body}");

        eventually(DEADLINE, "/healthz to report the CMS back", || async {
            let response = http.get(&healthz).send().await.ok()?;
            (response.status() == 200).then_some(())
        })
        .await;
        // The supervisor may see the new postmaster ready a moment after the API does.
        eventually(DEADLINE, "the controller to log the CMS back", || async {
            let restarts = home
                .log(1)
                .matches("the embedded CMS Postgres is running again")
                .count();
            (restarts == round).then_some(())
        })
        .await;
        let postmaster = home.postmaster_pid().unwrap();
        assert_ne!(postmaster, dead, "round {round}");
        assert!(is_running(postmaster), "round {round}");
        assert!(
            home.controllers[running.index]
                .try_wait()
                .unwrap()
                .is_none(),
            "the controller exited:\n{}",
            home.log(1)
        );
    }
    let log = home.log(1);
    assert_eq!(
        log.matches("the embedded CMS Postgres exited unexpectedly")
            .count(),
        2,
        "{log}"
    );

    // The API reads the CMS again, and the durable engine runs operations against it.
    let listed = http
        .get(format!("{}/v1/instances", running.url))
        .bearer_auth(home.token())
        .send()
        .await
        .unwrap();
    assert_eq!(listed.status(), 200);
    let out = home.cli(&["create", "after-restart"]);
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stderr),
        home.log(1)
    );
    let out = home.cli(&["list", "-o", "json"]);
    let listed: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(listed["instances"][0]["name"], "after-restart");
    assert_eq!(listed["instances"][0]["state"], "running");
    let out = home.cli(&["delete", "after-restart"]);
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stderr),
        home.log(1)
    );
    assert!(processes_mentioning(&home.path().join("instances").to_string_lossy()).is_empty());

    // It still stops cleanly, and stops the CMS it started last.
    let postmaster = home.postmaster_pid().unwrap();
    home.signal(&running, Signal::SIGTERM);
    let status = home.wait(&running).await;
    assert!(status.success(), "exit status {status}:\n{}", home.log(1));
    assert!(!is_running(postmaster), "the CMS Postgres is still running");
}

#[test]
fn bad_settings_exit_non_zero_with_a_clear_message() {
    let home = ControllerHome::new();

    let out = home.cli(&["controller", "--listen", "not-an-address"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--listen"));

    let out = home
        .command()
        .env("DATABASE_URL", "postgres://cms:s3cret@db:notaport/toygres")
        .arg("controller")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("DATABASE_URL is not a valid"), "{stderr}");
    assert!(!stderr.contains("s3cret"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");

    let out = home.cli(&["controller", "--pg-bin-dir", "/nonexistent/bin"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("no PostgreSQL programs found"), "{stderr}");

    fs::write(home.path().join(".env"), "this line is not a pair\n").unwrap();
    let out = home.cli(&["list"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(".env") && stderr.contains("line 1"),
        "{stderr}"
    );
}
