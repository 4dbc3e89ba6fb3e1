//! Object-store emulators for tests: moto's S3 server and Azurite's blob service, each started on
//! a free loopback port and stopped (by process group) when dropped, also on panic; plus a TCP
//! proxy that can refuse connections to simulate a store outage without losing the store's data.
//!
//! Both tools are installed by `scripts/install-object-stores.sh`; when one is missing the test
//! fails and says so (it does not skip).

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use base64::Engine;
use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use sha2::{Digest, Sha256};

use crate::free_port;

/// What to run when an emulator is missing.
pub const INSTALL_HINT: &str =
    "install the object-store emulators with scripts/install-object-stores.sh";

/// Azurite's well-known development account.
pub const AZURITE_ACCOUNT: &str = "devstoreaccount1";
/// Azurite's well-known development account key (public, documented by Microsoft).
pub const AZURITE_KEY: &str =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

/// Finds `program` on `$PATH`, or panics with the install hint.
fn find_program(program: &str) -> PathBuf {
    std::env::var_os("PATH")
        .and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|p| p.join(program))
                .find(|p| p.is_file())
        })
        .unwrap_or_else(|| panic!("{program} not found on PATH: {INSTALL_HINT}"))
}

/// One emulator process, in its own process group, logging to a file.
#[derive(Debug)]
struct EmulatorProcess {
    name: &'static str,
    child: Option<Child>,
    log: PathBuf,
}

impl EmulatorProcess {
    fn spawn(name: &'static str, mut cmd: Command, log: PathBuf) -> Self {
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .expect("open the emulator log");
        cmd.stdin(Stdio::null())
            .stdout(out.try_clone().expect("clone the log handle"))
            .stderr(out)
            .process_group(0);
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("start {name}: {e}; {INSTALL_HINT}"));
        Self {
            name,
            child: Some(child),
            log,
        }
    }

    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    /// Waits until `port` accepts connections; panics with the log when the process exits.
    fn wait_listening(&mut self, port: u16) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(child) = self.child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    self.child = None;
                    panic!(
                        "{} exited at start ({status}); {INSTALL_HINT}. Log:\n{}",
                        self.name,
                        self.log_tail()
                    );
                }
            }
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{} not listening on port {port} after 60 s; log:\n{}",
                self.name,
                self.log_tail()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Stops the process group: `signal` first, SIGKILL after a grace period.
    fn stop(&mut self, signal: Signal) {
        if let Some(mut child) = self.child.take() {
            let pgid = Pid::from_raw(child.id() as i32);
            let _ = killpg(pgid, signal);
            let deadline = Instant::now() + Duration::from_secs(15);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = killpg(pgid, Signal::SIGKILL);
            let _ = child.wait();
        }
    }
}

impl Drop for EmulatorProcess {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("---- log of {} ----\n{}", self.name, self.log_tail());
        }
        self.stop(Signal::SIGTERM);
    }
}

/// moto's S3 server. Its data lives in memory: it survives only as long as the process.
#[derive(Debug)]
pub struct Moto {
    pub port: u16,
    _process: EmulatorProcess,
}

impl Moto {
    /// Starts `moto_server` on a free loopback port, logging to `<dir>/moto.log`.
    pub fn start(dir: &Path) -> Moto {
        let program = find_program("moto_server");
        let port = free_port();
        let mut cmd = Command::new(program);
        cmd.arg("-H")
            .arg("127.0.0.1")
            .arg("-p")
            .arg(port.to_string());
        let mut process = EmulatorProcess::spawn("moto_server", cmd, dir.join("moto.log"));
        process.wait_listening(port);
        Moto {
            port,
            _process: process,
        }
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Creates a bucket (moto accepts unsigned requests).
    pub async fn create_bucket(&self, bucket: &str) {
        let resp = reqwest::Client::new()
            .put(format!("{}/{bucket}", self.endpoint()))
            .send()
            .await
            .expect("create the S3 bucket");
        assert!(
            resp.status().is_success(),
            "create bucket {bucket}: {}",
            resp.status()
        );
    }

    /// Every key under `prefix` in `bucket`, sorted.
    pub async fn list(&self, bucket: &str, prefix: &str) -> Vec<String> {
        let endpoint = self.endpoint();
        let mut keys = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let mut url = format!(
                "{endpoint}/{bucket}?list-type=2&prefix={}",
                urlencode(prefix)
            );
            if let Some(t) = &token {
                url.push_str(&format!("&continuation-token={}", urlencode(t)));
            }
            let body = reqwest::get(&url)
                .await
                .expect("list the S3 bucket")
                .text()
                .await
                .expect("read the S3 listing");
            keys.extend(xml_values(&body, "Key"));
            token = xml_values(&body, "NextContinuationToken")
                .into_iter()
                .next();
            if token.is_none() {
                break;
            }
        }
        keys.sort();
        keys
    }

    /// The environment a sidecar needs to reach this store at `endpoint` (this server, or a
    /// proxy in front of it).
    pub fn env_for(endpoint: &str) -> Vec<(String, String)> {
        [
            ("AWS_ACCESS_KEY_ID", "testing"),
            ("AWS_SECRET_ACCESS_KEY", "testing"),
            ("AWS_REGION", "us-east-1"),
            ("AWS_ENDPOINT_URL", endpoint),
            ("AWS_ALLOW_HTTP", "true"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
    }
}

/// Azurite's blob service, persisting to a directory so it can be stopped and started again
/// without losing data.
#[derive(Debug)]
pub struct Azurite {
    pub port: u16,
    location: PathBuf,
    log: PathBuf,
    process: Option<EmulatorProcess>,
}

impl Azurite {
    /// Starts `azurite-blob` on a free loopback port with its data in `<dir>/azurite`.
    pub fn start(dir: &Path) -> Azurite {
        let location = dir.join("azurite");
        std::fs::create_dir_all(&location).expect("create the Azurite directory");
        let mut azurite = Azurite {
            port: free_port(),
            location,
            log: dir.join("azurite.log"),
            process: None,
        };
        azurite.launch();
        azurite
    }

    fn launch(&mut self) {
        let program = find_program("azurite-blob");
        let mut cmd = Command::new(program);
        cmd.arg("--blobHost")
            .arg("127.0.0.1")
            .arg("--blobPort")
            .arg(self.port.to_string())
            .arg("--location")
            .arg(&self.location)
            .arg("--skipApiVersionCheck")
            .arg("--disableTelemetry")
            .arg("--loose");
        let mut process = EmulatorProcess::spawn("azurite-blob", cmd, self.log.clone());
        process.wait_listening(self.port);
        self.process = Some(process);
    }

    /// Stops the server cleanly (it saves its metadata): an outage.
    pub fn stop(&mut self) {
        if let Some(mut p) = self.process.take() {
            p.stop(Signal::SIGINT);
        }
    }

    /// Starts the server again on the same port with the same data.
    pub fn restart(&mut self) {
        assert!(self.process.is_none(), "Azurite is running");
        self.launch();
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Creates a container, signing the request with the development account's key.
    pub async fn create_container(&self, container: &str) {
        let resp = self
            .signed("PUT", &format!("/{container}"), &[("restype", "container")])
            .await;
        assert!(
            resp.status().is_success(),
            "create container {container}: {} {}",
            resp.status(),
            resp.text().await.unwrap_or_default()
        );
    }

    /// Every blob name under `prefix` in `container`, sorted.
    pub async fn list(&self, container: &str, prefix: &str) -> Vec<String> {
        let mut names = Vec::new();
        let mut marker: Option<String> = None;
        loop {
            let mut query = vec![
                ("comp", "list".to_string()),
                ("prefix", prefix.to_string()),
                ("restype", "container".to_string()),
            ];
            if let Some(m) = &marker {
                query.push(("marker", m.clone()));
            }
            let q: Vec<(&str, &str)> = query.iter().map(|(k, v)| (*k, v.as_str())).collect();
            let resp = self.signed("GET", &format!("/{container}"), &q).await;
            assert!(
                resp.status().is_success(),
                "list {container}: {}",
                resp.status()
            );
            let body = resp.text().await.expect("read the blob listing");
            names.extend(xml_values(&body, "Name"));
            marker = xml_values(&body, "NextMarker")
                .into_iter()
                .find(|m| !m.is_empty());
            if marker.is_none() {
                break;
            }
        }
        names.sort();
        names
    }

    /// A request authorised with Shared Key (the development account's well-known key).
    async fn signed(&self, verb: &str, path: &str, query: &[(&str, &str)]) -> reqwest::Response {
        let date = httpdate::fmt_http_date(SystemTime::now());
        let version = "2021-08-06";
        let mut sorted = query.to_vec();
        sorted.sort();
        let mut resource = format!("/{AZURITE_ACCOUNT}/{AZURITE_ACCOUNT}{path}");
        for (k, v) in &sorted {
            resource.push_str(&format!("\n{k}:{v}"));
        }
        // Content-Length is signed as an empty string when it is zero (API 2015-02-21 on).
        let string_to_sign = format!(
            "{verb}\n\n\n\n\n\n\n\n\n\n\n\nx-ms-date:{date}\nx-ms-version:{version}\n{resource}"
        );
        let key = base64::engine::general_purpose::STANDARD
            .decode(AZURITE_KEY)
            .expect("decode the Azurite key");
        let signature = base64::engine::general_purpose::STANDARD
            .encode(hmac_sha256(&key, string_to_sign.as_bytes()));
        let qs: Vec<String> = sorted
            .iter()
            .map(|(k, v)| format!("{k}={}", urlencode(v)))
            .collect();
        let url = format!(
            "{}/{AZURITE_ACCOUNT}{path}?{}",
            self.endpoint(),
            qs.join("&")
        );
        let method = reqwest::Method::from_bytes(verb.as_bytes()).expect("an HTTP method");
        let mut req = reqwest::Client::new()
            .request(method, url)
            .header("x-ms-date", date)
            .header("x-ms-version", version)
            .header(
                "Authorization",
                format!("SharedKey {AZURITE_ACCOUNT}:{signature}"),
            );
        if verb == "PUT" {
            req = req.header("Content-Length", "0");
        }
        req.send().await.expect("send a request to Azurite")
    }

    /// The environment a sidecar needs to reach this Azurite.
    pub fn env(&self) -> Vec<(String, String)> {
        vec![
            ("AZURE_STORAGE_USE_EMULATOR".into(), "true".into()),
            ("AZURITE_BLOB_STORAGE_URL".into(), self.endpoint()),
        ]
    }
}

impl Drop for Azurite {
    fn drop(&mut self) {
        if let Some(mut p) = self.process.take() {
            p.stop(Signal::SIGTERM);
        }
    }
}

fn hmac_sha256(key: &[u8], message: &[u8]) -> Vec<u8> {
    let mut block = [0u8; 64];
    if key.len() > 64 {
        block[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        block[..key.len()].copy_from_slice(key);
    }
    let ipad: Vec<u8> = block.iter().map(|b| b ^ 0x36).collect();
    let opad: Vec<u8> = block.iter().map(|b| b ^ 0x5c).collect();
    let inner = Sha256::new()
        .chain_update(&ipad)
        .chain_update(message)
        .finalize();
    Sha256::new()
        .chain_update(&opad)
        .chain_update(inner)
        .finalize()
        .to_vec()
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' | b'/' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The text of every `<tag>…</tag>` in `xml` (enough for S3 and Azure listings).
fn xml_values(xml: &str, tag: &str) -> Vec<String> {
    let open = format!("<{tag}>");
    let close = format!("</{tag}>");
    let mut out = Vec::new();
    let mut rest = xml;
    while let Some(start) = rest.find(&open) {
        rest = &rest[start + open.len()..];
        let Some(end) = rest.find(&close) else { break };
        out.push(rest[..end].replace("&amp;", "&"));
        rest = &rest[end + close.len()..];
    }
    out
}

/// A TCP proxy on a loopback port in front of `target`. [`TcpProxy::set_up`]`(false)` refuses
/// new connections and cuts open ones: an outage of the store behind it, whose data survives.
#[derive(Debug)]
pub struct TcpProxy {
    pub port: u16,
    host: std::net::IpAddr,
    up: Arc<std::sync::atomic::AtomicBool>,
    generation: Arc<std::sync::atomic::AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl TcpProxy {
    /// Starts forwarding a free loopback port to `127.0.0.1:<target_port>`.
    pub async fn start(target_port: u16) -> TcpProxy {
        Self::start_on(std::net::Ipv4Addr::LOCALHOST.into(), target_port).await
    }

    /// Starts forwarding a free port of `host` (say, where a cluster's pods reach the host) to
    /// `127.0.0.1:<target_port>`.
    pub async fn start_on(host: std::net::IpAddr, target_port: u16) -> TcpProxy {
        Self::forward(host, (std::net::Ipv4Addr::LOCALHOST, target_port).into()).await
    }

    /// Starts forwarding a free port of `host` to `target` (say, a pod's address, as
    /// `kubectl port-forward` would).
    pub async fn forward(host: std::net::IpAddr, target: std::net::SocketAddr) -> TcpProxy {
        use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
        let listener = tokio::net::TcpListener::bind((host, 0))
            .await
            .expect("bind the proxy");
        let port = listener.local_addr().expect("proxy address").port();
        let up = Arc::new(AtomicBool::new(true));
        let generation = Arc::new(AtomicU64::new(0));
        let (up2, gen2) = (up.clone(), generation.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((mut inbound, _)) = listener.accept().await else {
                    continue;
                };
                if !up2.load(Ordering::SeqCst) {
                    // Down: close at once, like a store that is not there.
                    drop(inbound);
                    continue;
                }
                let my_gen = gen2.load(Ordering::SeqCst);
                let gen3 = gen2.clone();
                tokio::spawn(async move {
                    let Ok(mut outbound) = tokio::net::TcpStream::connect(target).await else {
                        return;
                    };
                    let copy = tokio::io::copy_bidirectional(&mut inbound, &mut outbound);
                    let cut = async {
                        while gen3.load(Ordering::SeqCst) == my_gen {
                            tokio::time::sleep(Duration::from_millis(50)).await;
                        }
                    };
                    tokio::select! {
                        _ = copy => {},
                        _ = cut => {},
                    }
                });
            }
        });
        TcpProxy {
            port,
            host,
            up,
            generation,
            task,
        }
    }

    pub fn endpoint(&self) -> String {
        format!("http://{}:{}", self.host, self.port)
    }

    /// Brings the store behind the proxy down (cutting open connections) or back up.
    pub fn set_up(&self, up: bool) {
        use std::sync::atomic::Ordering;
        self.up.store(up, Ordering::SeqCst);
        if !up {
            self.generation.fetch_add(1, Ordering::SeqCst);
        }
    }
}

impl Drop for TcpProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}
