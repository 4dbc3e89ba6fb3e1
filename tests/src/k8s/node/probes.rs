//! Running one probe once: `httpGet` against the pod's IP (a status in 200..400 passes),
//! `tcpSocket` (a connection passes) and `exec` (exit 0 passes; run with `nsenter` in the
//! container's network and mount namespaces, so it sees what the container sees), each within
//! `timeoutSeconds`. The probe loops (thresholds, periods, what a failure does) are in
//! [`super::pod`].

use std::net::Ipv4Addr;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Container, Probe};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::images::ImageSpec;

/// Where a probe runs.
#[derive(Debug, Clone)]
pub struct ProbeTarget {
    pub ip: Ipv4Addr,
    /// The container's main process (for exec probes).
    pub pid: u32,
    pub env: Vec<(String, String)>,
}

/// Resolves a probe port (a number or a container port's name).
pub fn resolve_port(port: &IntOrString, container: &Container) -> Option<u16> {
    match port {
        IntOrString::Int(n) => u16::try_from(*n).ok(),
        IntOrString::String(name) => container
            .ports
            .iter()
            .flatten()
            .find(|p| p.name.as_deref() == Some(name.as_str()))
            .and_then(|p| u16::try_from(p.container_port).ok())
            .or_else(|| name.parse().ok()),
    }
}

/// Runs `probe` once; true when it passes.
pub async fn run_once(
    probe: &Probe,
    container: &Container,
    image: &ImageSpec,
    target: &ProbeTarget,
    nsenter: &str,
) -> bool {
    let timeout = Duration::from_secs(probe.timeout_seconds.unwrap_or(1).max(1) as u64);
    let attempt = async {
        if let Some(http) = &probe.http_get {
            let Some(port) = resolve_port(&http.port, container) else {
                return false;
            };
            let path = http.path.clone().unwrap_or_else(|| "/".into());
            let path = if path.starts_with('/') {
                path
            } else {
                format!("/{path}")
            };
            // As the kubelet does: scheme HTTPS without verifying the certificate.
            let scheme = match http.scheme.as_deref() {
                Some("HTTPS") => "https",
                _ => "http",
            };
            let url = format!("{scheme}://{}:{port}{path}", target.ip);
            let client = match reqwest::Client::builder()
                .timeout(timeout)
                .danger_accept_invalid_certs(true)
                .build()
            {
                Ok(c) => c,
                Err(_) => return false,
            };
            let mut req = client.get(url);
            for h in http.http_headers.iter().flatten() {
                req = req.header(&h.name, &h.value);
            }
            match req.send().await {
                Ok(resp) => (200..400).contains(&resp.status().as_u16()),
                Err(_) => false,
            }
        } else if let Some(tcp) = &probe.tcp_socket {
            let Some(port) = resolve_port(&tcp.port, container) else {
                return false;
            };
            tokio::net::TcpStream::connect((target.ip, port))
                .await
                .is_ok()
        } else if let Some(exec) = &probe.exec {
            let mut argv = exec.command.clone().unwrap_or_default();
            if argv.is_empty() {
                return false;
            }
            argv[0] = image.translate_program(&argv[0]);
            let mut cmd = tokio::process::Command::new(nsenter);
            cmd.arg("-t")
                .arg(target.pid.to_string())
                .args(["-m", "-n", "--"])
                .args(&argv)
                .env_clear()
                .envs(target.env.iter().cloned())
                .stdin(std::process::Stdio::null())
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .kill_on_drop(true);
            matches!(cmd.status().await, Ok(s) if s.success())
        } else {
            // A probe with no handler (grpc is not supported) passes, as an absent probe would.
            true
        }
    };
    tokio::time::timeout(timeout, attempt)
        .await
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::ContainerPort;

    #[test]
    fn named_ports_resolve_through_the_container() {
        let container = Container {
            ports: Some(vec![ContainerPort {
                name: Some("http".into()),
                container_port: 8008,
                ..ContainerPort::default()
            }]),
            ..Container::default()
        };
        assert_eq!(
            resolve_port(&IntOrString::String("http".into()), &container),
            Some(8008)
        );
        assert_eq!(
            resolve_port(&IntOrString::Int(5432), &container),
            Some(5432)
        );
        assert_eq!(
            resolve_port(&IntOrString::String("nope".into()), &container),
            None
        );
    }
}
