//! The controller API's own TLS. With `--tls-cert`/`--tls-key` (or `--tls-dir`, holding
//! `tls.crt`/`tls.key` and optionally `ca.crt`, as a Kubernetes TLS Secret mounts) the API
//! serves that certificate. On the local platform without those flags the controller keeps its
//! own CA under `$TOYGRES_HOME/tls` and issues itself a loopback certificate at every start, so
//! `toygres` works over HTTPS with no flags: the CLI trusts `$TOYGRES_HOME/tls/ca.crt`. On
//! Kubernetes without a certificate the API stays plain HTTP (the chart can mount one).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context as _;
use toygres_common::tls::https::ServedCert;
use toygres_common::tls::pki::InstanceCa;

use crate::home::{write_file_atomically, ControllerHome};

/// How the API is served.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApiTls {
    /// Plain HTTP.
    Plain,
    /// The certificate and key in these files; `ca`: the CA that issued it, when known (the
    /// local platform's sidecars need it to report to the controller).
    Files {
        cert: PathBuf,
        key: PathBuf,
        ca: Option<PathBuf>,
    },
    /// A certificate the controller issues itself from its CA under `$TOYGRES_HOME/tls`.
    Generated,
}

/// The API's TLS, ready to serve: its server configuration and the CA file clients trust.
#[derive(Debug, Clone)]
pub struct ServingTls {
    pub config: Arc<rustls::ServerConfig>,
    pub ca_file: Option<PathBuf>,
}

/// Prepares what `tls` says to serve (issuing the generated certificate for `listen`).
pub fn prepare(
    tls: &ApiTls,
    home: &ControllerHome,
    listen: SocketAddr,
) -> anyhow::Result<Option<ServingTls>> {
    let (cert, key, ca_file) = match tls {
        ApiTls::Plain => return Ok(None),
        ApiTls::Files { cert, key, ca } => (cert.clone(), key.clone(), ca.clone()),
        ApiTls::Generated => {
            let (cert, key) = issue_own_certificate(home, listen)?;
            (cert, key, Some(home.ca_file()))
        }
    };
    let served = ServedCert::load(&cert, &key)
        .map_err(anyhow::Error::msg)
        .context("read the API's certificate")?;
    let config = served.server_config().context("serve the API over TLS")?;
    Ok(Some(ServingTls { config, ca_file }))
}

/// The API server's future: serves `app` on `listener` (over TLS when `tls` is given) until
/// `stop` resolves.
pub type Serving = std::pin::Pin<Box<dyn std::future::Future<Output = std::io::Result<()>> + Send>>;

/// Serves `app` on `listener`, over TLS when `tls` is given, until `stop` resolves.
pub fn serve(
    listener: tokio::net::TcpListener,
    tls: Option<&ServingTls>,
    app: axum::Router,
    stop: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<Serving> {
    use std::future::IntoFuture as _;
    Ok(match tls {
        None => Box::pin(
            axum::serve(listener, app)
                .with_graceful_shutdown(stop)
                .into_future(),
        ),
        Some(tls) => Box::pin(
            axum::serve(
                toygres_common::tls::listen::TlsListener::new(listener, tls.config.clone())?,
                app,
            )
            .with_graceful_shutdown(stop)
            .into_future(),
        ),
    })
}

/// Ends the renewal task when dropped.
#[derive(Debug)]
pub struct Renewal(tokio::task::JoinHandle<()>);

impl Drop for Renewal {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// For a generated certificate ([`ApiTls::Generated`]): looks every `interval` and issues a new
/// one when a third of its lifetime or less is left. The server serves it at the next
/// handshake ([`ServedCert`] re-reads changed files). `None` for the other kinds.
pub fn spawn_renewal(
    tls: &ApiTls,
    home: &ControllerHome,
    listen: SocketAddr,
    interval: std::time::Duration,
) -> Option<Renewal> {
    if *tls != ApiTls::Generated {
        return None;
    }
    let home = home.clone();
    Some(Renewal(tokio::spawn(async move {
        let mut ticks = tokio::time::interval(interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            let cert = std::fs::read_to_string(home.tls_dir().join("server.crt"));
            let now = std::time::SystemTime::now();
            if cert.is_ok_and(|pem| !toygres_common::tls::pki::renewal_due(&pem, now)) {
                continue;
            }
            match issue_own_certificate(&home, listen) {
                Ok(_) => tracing::info!("renewed the API's certificate"),
                Err(e) => tracing::error!("renew the API's certificate: {e:#}"),
            }
        }
    })))
}

/// The names the generated certificate carries: loopback, and the listen address when it is a
/// specific one.
fn own_names(listen: SocketAddr) -> Vec<String> {
    let mut names = vec!["localhost".to_string(), "127.0.0.1".into(), "::1".into()];
    let ip = listen.ip();
    if !ip.is_unspecified() && !ip.is_loopback() {
        names.push(ip.to_string());
    }
    names
}

/// Keeps the controller's CA (made once) and issues a fresh server certificate from it; returns
/// the certificate's and key's files.
fn issue_own_certificate(
    home: &ControllerHome,
    listen: SocketAddr,
) -> anyhow::Result<(PathBuf, PathBuf)> {
    let dir = home.tls_dir();
    std::fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
    let (ca_cert, ca_key) = (home.ca_file(), dir.join("ca.key"));
    let ca = if ca_cert.is_file() && ca_key.is_file() {
        let read = |p: &PathBuf| {
            std::fs::read_to_string(p).with_context(|| format!("read {}", p.display()))
        };
        InstanceCa::from_pem("controller", read(&ca_cert)?, read(&ca_key)?)
            .context("read the controller's CA")?
    } else {
        let ca = InstanceCa::generate("controller").context("make the controller's CA")?;
        write_file_atomically(&ca_key, &ca.key_pem, 0o600)?;
        write_file_atomically(&ca_cert, &ca.cert_pem, 0o644)?;
        ca
    };
    let issued = ca
        .issue_server("toygres controller", &own_names(listen))
        .context("issue the controller's certificate")?;
    let (cert, key) = (dir.join("server.crt"), dir.join("server.key"));
    write_file_atomically(&key, &issued.key_pem, 0o600)?;
    write_file_atomically(&cert, &issued.cert_pem, 0o644)?;
    Ok((cert, key))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn the_generated_certificate_keeps_its_ca_across_starts() {
        let dir = tempfile::tempdir().unwrap();
        let home = ControllerHome::new(dir.path().to_path_buf());
        let listen: SocketAddr = "127.0.0.1:7700".parse().unwrap();
        let first = prepare(&ApiTls::Generated, &home, listen).unwrap().unwrap();
        let ca = std::fs::read(home.ca_file()).unwrap();
        let cert = std::fs::read(home.tls_dir().join("server.crt")).unwrap();
        prepare(&ApiTls::Generated, &home, listen).unwrap().unwrap();
        assert_eq!(std::fs::read(home.ca_file()).unwrap(), ca);
        assert_ne!(
            std::fs::read(home.tls_dir().join("server.crt")).unwrap(),
            cert
        );
        assert_eq!(first.ca_file, Some(home.ca_file()));
        assert!(prepare(&ApiTls::Plain, &home, listen).unwrap().is_none());
        assert_eq!(
            own_names("10.1.2.3:1".parse().unwrap()).last().unwrap(),
            "10.1.2.3"
        );
    }
}
