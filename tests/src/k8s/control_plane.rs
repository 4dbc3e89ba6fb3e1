//! A real Kubernetes control plane on free ports in a temp dir: etcd, kube-apiserver (TLS from
//! [`Pki`], RBAC, service-account tokens, an admin identity in `system:masters` through a token
//! file), kube-controller-manager and kube-scheduler. The apiserver listens on (and advertises)
//! the harness bridge's host address, so pods in their network namespaces can reach it. Writes an
//! admin kubeconfig for helm and kubectl; hands out kube clients for the admin, for a restricted
//! user and for service accounts. Every process is stopped by pid when this is dropped.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use base64::Engine;
use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::ServiceAccount;
use kube::api::PostParams;
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Api, Client, Config};

use super::binaries::K8sBinaries;
use super::pki::Pki;
use super::process::ManagedProcess;
use crate::free_port;

/// The bearer token of the admin identity (`system:masters`).
const ADMIN_TOKEN: &str = "toygres-harness-admin-token";
/// A user with no group and no permission until a test binds it to a role.
pub const RESTRICTED_USER: &str = "toygres-tester";
const RESTRICTED_TOKEN: &str = "toygres-harness-tester-token";

/// The controllers kube-controller-manager runs (names from `cmd/kube-controller-manager/names`).
const CONTROLLERS: &[&str] = &[
    "statefulset-controller",
    "deployment-controller",
    "replicaset-controller",
    "endpointslice-controller",
    "endpoints-controller",
    "garbage-collector-controller",
    "persistentvolume-binder-controller",
    "persistentvolume-protection-controller",
    "persistentvolumeclaim-protection-controller",
    "serviceaccount-controller",
    "root-ca-certificate-publisher-controller",
    "namespace-controller",
    "disruption-controller",
    "clusterrole-aggregation-controller",
];

/// The running control plane. Fields drop in declaration order: components before etcd.
pub struct ControlPlane {
    scheduler: ManagedProcess,
    controller_manager: ManagedProcess,
    apiserver: ManagedProcess,
    etcd: ManagedProcess,
    dir: PathBuf,
    url: String,
    host: Ipv4Addr,
    port: u16,
    pki: Pki,
    admin_kubeconfig: PathBuf,
    admin: Client,
}

impl std::fmt::Debug for ControlPlane {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ControlPlane")
            .field("url", &self.url)
            .field("dir", &self.dir)
            .field("pids", &self.pids())
            .finish_non_exhaustive()
    }
}

impl ControlPlane {
    /// Starts everything under `dir`, the apiserver on `host` (the bridge's host address) with
    /// `service_cidr`; returns once the apiserver is ready.
    ///
    /// A free port can be taken by another process between choosing it and etcd or the
    /// apiserver binding it (two suites starting clusters at once did this). Such a start is
    /// stopped whole and tried again on new ports, in a fresh folder, up to three times.
    pub async fn start(
        bins: &K8sBinaries,
        dir: &Path,
        host: Ipv4Addr,
        service_cidr: &str,
        kubernetes_service_ip: Ipv4Addr,
    ) -> anyhow::Result<Self> {
        let mut attempt_dir = dir.to_path_buf();
        for attempt in 1.. {
            let started = Self::start_once(
                bins,
                &attempt_dir,
                host,
                service_cidr,
                kubernetes_service_ip,
            )
            .await;
            match started {
                Err(e) if attempt < 3 && format!("{e:#}").contains("address already in use") => {
                    eprintln!("control plane: a port was taken before it was bound ({e:#}); again on new ports");
                    attempt_dir = dir.join(format!("retry-{attempt}"));
                }
                other => return other,
            }
        }
        unreachable!("the loop returns by its third attempt")
    }

    async fn start_once(
        bins: &K8sBinaries,
        dir: &Path,
        host: Ipv4Addr,
        service_cidr: &str,
        kubernetes_service_ip: Ipv4Addr,
    ) -> anyhow::Result<Self> {
        let logs = dir.join("logs");
        std::fs::create_dir_all(&logs).context("create the log dir")?;
        let pki = Pki::generate(
            &dir.join("pki"),
            &[
                host.into(),
                Ipv4Addr::LOCALHOST.into(),
                kubernetes_service_ip.into(),
            ],
        )?;

        let (etcd_port, peer_port) = (free_port(), free_port());
        let etcd_url = format!("http://127.0.0.1:{etcd_port}");
        let mut cmd = Command::new(bins.etcd());
        cmd.arg("--name=harness")
            .arg(format!("--data-dir={}", dir.join("etcd").display()))
            .arg(format!("--listen-client-urls={etcd_url}"))
            .arg(format!("--advertise-client-urls={etcd_url}"))
            .arg(format!("--listen-peer-urls=http://127.0.0.1:{peer_port}"))
            .arg(format!(
                "--initial-advertise-peer-urls=http://127.0.0.1:{peer_port}"
            ))
            .arg(format!(
                "--initial-cluster=harness=http://127.0.0.1:{peer_port}"
            ))
            .arg("--unsafe-no-fsync")
            .arg("--log-level=warn");
        let etcd = ManagedProcess::spawn("etcd", cmd, &logs)?;

        let tokens = dir.join("tokens.csv");
        std::fs::write(
            &tokens,
            format!(
                "{ADMIN_TOKEN},admin,admin-uid,\"system:masters\"\n\
                 {RESTRICTED_TOKEN},{RESTRICTED_USER},{RESTRICTED_USER}-uid\n"
            ),
        )
        .context("write the token file")?;
        let port = free_port();
        let url = format!("https://{host}:{port}");
        let mut cmd = Command::new(bins.kube());
        cmd.arg("kube-apiserver")
            .arg(format!("--etcd-servers={etcd_url}"))
            .arg(format!("--bind-address={host}"))
            .arg(format!("--advertise-address={host}"))
            .arg(format!("--secure-port={port}"))
            .arg(format!(
                "--cert-dir={}",
                dir.join("apiserver-certs").display()
            ))
            .arg(format!("--tls-cert-file={}", pki.serving_cert.display()))
            .arg(format!(
                "--tls-private-key-file={}",
                pki.serving_key.display()
            ))
            .arg(format!("--service-cluster-ip-range={service_cidr}"))
            .arg(format!("--service-account-issuer={url}"))
            .arg(format!(
                "--service-account-key-file={}",
                pki.service_account_pub.display()
            ))
            .arg(format!(
                "--service-account-signing-key-file={}",
                pki.service_account_key.display()
            ))
            .arg(format!("--token-auth-file={}", tokens.display()))
            .arg("--authorization-mode=RBAC")
            .arg("--allow-privileged=true")
            .arg("--profiling=false")
            .arg("--v=0");
        let apiserver = ManagedProcess::spawn("kube-apiserver", cmd, &logs)?;

        let admin_kubeconfig = dir.join("admin.kubeconfig");
        std::fs::write(
            &admin_kubeconfig,
            kubeconfig_json(&url, &pki.ca_pem, "admin", ADMIN_TOKEN, "default"),
        )
        .context("write the admin kubeconfig")?;
        let admin = client_from_kubeconfig_file(&admin_kubeconfig).await?;

        let mut cmd = Command::new(bins.kube());
        cmd.arg("kube-controller-manager")
            .arg(format!("--kubeconfig={}", admin_kubeconfig.display()))
            .arg("--leader-elect=false")
            .arg("--secure-port=0")
            .arg("--use-service-account-credentials=false")
            .arg(format!("--controllers={}", CONTROLLERS.join(",")))
            .arg(format!(
                "--service-account-private-key-file={}",
                pki.service_account_key.display()
            ))
            .arg(format!("--root-ca-file={}", pki.ca_cert.display()))
            .arg("--v=0");
        let controller_manager = ManagedProcess::spawn("kube-controller-manager", cmd, &logs)?;
        let mut cmd = Command::new(bins.kube());
        cmd.arg("kube-scheduler")
            .arg(format!("--kubeconfig={}", admin_kubeconfig.display()))
            .arg(format!(
                "--authentication-kubeconfig={}",
                admin_kubeconfig.display()
            ))
            .arg(format!(
                "--authorization-kubeconfig={}",
                admin_kubeconfig.display()
            ))
            .arg("--leader-elect=false")
            .arg("--secure-port=0")
            .arg("--v=0");
        let scheduler = ManagedProcess::spawn("kube-scheduler", cmd, &logs)?;

        let mut plane = Self {
            scheduler,
            controller_manager,
            apiserver,
            etcd,
            dir: dir.to_path_buf(),
            url,
            host,
            port,
            pki,
            admin_kubeconfig,
            admin,
        };
        plane.wait_ready(Duration::from_secs(60)).await?;
        Ok(plane)
    }

    async fn wait_ready(&mut self, timeout: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            self.etcd.check_running()?;
            self.apiserver.check_running()?;
            self.controller_manager.check_running()?;
            self.scheduler.check_running()?;
            let req = http::Request::get("/readyz")
                .body(Vec::new())
                .context("build /readyz")?;
            match self.admin.request_text(req).await {
                Ok(body) if body.trim() == "ok" => return Ok(()),
                Ok(_) | Err(_) if Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                other => bail!(
                    "the apiserver is not ready after {timeout:?} ({other:?}); its log:\n{}",
                    self.apiserver.log_tail(40)
                ),
            }
        }
    }

    /// A client with the admin identity (`system:masters`).
    pub fn admin(&self) -> Client {
        self.admin.clone()
    }

    /// The admin kubeconfig file (for helm and kubectl).
    pub fn admin_kubeconfig(&self) -> &Path {
        &self.admin_kubeconfig
    }

    /// `https://<bridge host address>:<port>`.
    pub fn url(&self) -> &str {
        &self.url
    }

    pub fn host(&self) -> Ipv4Addr {
        self.host
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The PEM CA certificate that verifies the apiserver (a pod's `ca.crt`).
    pub fn ca_pem(&self) -> &str {
        &self.pki.ca_pem
    }

    /// The temp dir everything lives in (logs under `logs/`).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// A client authenticated as [`RESTRICTED_USER`], who may do nothing until the test binds
    /// it to a Role or ClusterRole (a RoleBinding with subject kind `User`).
    pub async fn restricted_user_client(&self) -> anyhow::Result<Client> {
        let path = self.dir.join("restricted-user.kubeconfig");
        std::fs::write(
            &path,
            kubeconfig_json(
                &self.url,
                self.ca_pem(),
                RESTRICTED_USER,
                RESTRICTED_TOKEN,
                "default",
            ),
        )
        .context("write the restricted kubeconfig")?;
        client_from_kubeconfig_file(&path).await
    }

    /// A kubeconfig file and a client for service account `namespace/name` (created if missing),
    /// with a token from the TokenRequest API: what a pod running as that account gets.
    pub async fn service_account_client(
        &self,
        namespace: &str,
        name: &str,
    ) -> anyhow::Result<(PathBuf, Client)> {
        let accounts: Api<ServiceAccount> = Api::namespaced(self.admin(), namespace);
        let account = ServiceAccount {
            metadata: kube::api::ObjectMeta {
                name: Some(name.to_string()),
                ..Default::default()
            },
            ..Default::default()
        };
        match accounts.create(&PostParams::default(), &account).await {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 409 => {}
            Err(e) => return Err(e).context("create the service account"),
        }
        let token = self.service_account_token(namespace, name, 3600).await?;
        let path = self.dir.join(format!("sa-{namespace}-{name}.kubeconfig"));
        std::fs::write(
            &path,
            kubeconfig_json(&self.url, self.ca_pem(), name, &token, namespace),
        )
        .context("write the service-account kubeconfig")?;
        let client = client_from_kubeconfig_file(&path).await?;
        Ok((path, client))
    }

    /// A token for service account `namespace/name` from the TokenRequest API.
    pub async fn service_account_token(
        &self,
        namespace: &str,
        name: &str,
        seconds: i64,
    ) -> anyhow::Result<String> {
        let accounts: Api<ServiceAccount> = Api::namespaced(self.admin(), namespace);
        let request = TokenRequest {
            spec: Some(TokenRequestSpec {
                expiration_seconds: Some(seconds),
                ..Default::default()
            }),
            ..Default::default()
        };
        let answer = accounts
            .create_token_request(name, &PostParams::default(), &request)
            .await
            .context("request a service-account token")?;
        answer
            .status
            .and_then(|s| s.token)
            .context("the token request returned no token")
    }

    /// The pids of the control-plane processes (etcd, apiserver, controller-manager, scheduler).
    pub fn pids(&self) -> Vec<u32> {
        vec![
            self.etcd.pid(),
            self.apiserver.pid(),
            self.controller_manager.pid(),
            self.scheduler.pid(),
        ]
    }
}

/// A kubeconfig (JSON, which every YAML reader accepts) for one token identity.
pub fn kubeconfig_json(
    url: &str,
    ca_pem: &str,
    user: &str,
    token: &str,
    namespace: &str,
) -> String {
    let ca = base64::engine::general_purpose::STANDARD.encode(ca_pem);
    serde_json::json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "harness", "cluster": {"server": url, "certificate-authority-data": ca}}],
        "users": [{"name": user, "user": {"token": token}}],
        "contexts": [{"name": "harness", "context": {"cluster": "harness", "user": user, "namespace": namespace}}],
        "current-context": "harness",
    })
    .to_string()
}

/// Makes `ring` the process's TLS provider. kube asks rustls for the process default, and a
/// workspace-wide build enables both of rustls's providers (`ring` through kube, `aws-lc-rs`
/// through object_store), so none is picked on its own and the first TLS connection panics.
fn install_tls_provider() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        // Err means another default is installed already, which serves as well.
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

/// A kube client from a kubeconfig file.
pub async fn client_from_kubeconfig_file(path: &Path) -> anyhow::Result<Client> {
    install_tls_provider();
    let kubeconfig = Kubeconfig::read_from(path).context("read the kubeconfig")?;
    let config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .context("load the kubeconfig")?;
    Client::try_from(config).context("build a kube client")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_written_kubeconfig_loads_with_its_server_namespace_and_token() {
        let dir = tempfile::tempdir().expect("tempdir");
        let pki = Pki::generate(dir.path(), &[Ipv4Addr::new(10, 244, 3, 1).into()]).expect("pki");
        let path = dir.path().join("k");
        std::fs::write(
            &path,
            kubeconfig_json("https://10.244.3.1:6443", &pki.ca_pem, "u", "t0k", "ns1"),
        )
        .expect("write");
        let kubeconfig = Kubeconfig::read_from(&path).expect("read");
        let config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
            .await
            .expect("config");
        assert_eq!(config.cluster_url.to_string(), "https://10.244.3.1:6443/");
        assert_eq!(config.default_namespace, "ns1");
        assert_eq!(config.root_cert.map(|c| c.len()), Some(1));
    }
}
