//! HTTPS for both HTTP APIs. A client ([`trust_only`]) trusts one CA and nothing else — the
//! instance's CA for a sidecar, the controller's CA for the controller — and checks the name it
//! dialled where [`super::checks_name`] says it can, so a bearer token goes only to a server
//! that proved who it is. A server ([`ServedCert`]) presents a certificate read from two files
//! and re-read when they change, so a renewed certificate is served without a restart.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::{ClientConfig, ServerConfig};

use super::verify::{certificates, private_key, provider, CaVerifiers, TlsSetupError};

/// The host of `url` (`https://[::1]:8008/x` gives `::1`), empty when it has none.
fn url_host(url: &str) -> String {
    reqwest::Url::parse(url)
        .ok()
        .and_then(|u| u.host_str().map(str::to_string))
        .unwrap_or_default()
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string()
}

/// The rustls client configuration of a connection to `host` that trusts only the CA in
/// `ca_pem`.
pub fn client_config(ca_pem: &[u8], host: &str) -> Result<ClientConfig, TlsSetupError> {
    let verifier = CaVerifiers::new(ca_pem)?.for_host(host);
    let mut config = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsSetupError::Rustls("TLS versions", e))?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// The client `builder` describes, trusting only the CA in `ca_pem` for requests to `url`'s
/// host (and refusing plain HTTP when `url` is `https://`).
pub fn client_trusting(
    builder: reqwest::ClientBuilder,
    ca_pem: &[u8],
    url: &str,
) -> Result<reqwest::Client, TlsSetupError> {
    let config = client_config(ca_pem, &url_host(url))?;
    builder
        .use_preconfigured_tls(config)
        .https_only(url.starts_with("https://"))
        .build()
        .map_err(|e| TlsSetupError::Client(e.to_string()))
}

/// When a file was last changed and how long it is: a change of either means read it again.
type Stamp = Option<(SystemTime, u64)>;

fn stamp(path: &Path) -> Stamp {
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.modified().ok()?, meta.len()))
}

/// What [`ServedCert`] serves now and the files' stamps it was read at.
#[derive(Debug)]
struct Loaded {
    key: Arc<CertifiedKey>,
    stamps: (Stamp, Stamp),
}

/// A server certificate and key read from two PEM files, read again at the next handshake after
/// either file changes (a pair that does not match, as while one file is being replaced, keeps
/// the previous pair served).
#[derive(Debug)]
pub struct ServedCert {
    cert: PathBuf,
    key: PathBuf,
    loaded: Mutex<Loaded>,
}

fn read_pair(cert: &Path, key: &Path) -> Result<CertifiedKey, String> {
    let read = |p: &Path| std::fs::read(p).map_err(|e| format!("read {}: {e}", p.display()));
    certified_key(&read(cert)?, &read(key)?)
        .map_err(|e| format!("use {} with {}: {e}", cert.display(), key.display()))
}

/// The pair a PEM certificate (chain) and its PEM key make; an error when either does not
/// parse or the key is not the certificate's.
fn certified_key(cert_pem: &[u8], key_pem: &[u8]) -> Result<CertifiedKey, String> {
    let chain = certificates(cert_pem, "certificate").map_err(|e| e.to_string())?;
    let der = private_key(key_pem, "key").map_err(|e| e.to_string())?;
    CertifiedKey::from_der(chain, der, &provider()).map_err(|e| e.to_string())
}

/// Whether `key_pem` is the private key of the certificate in `cert_pem` (a pair caught half
/// replaced does not match).
pub fn pair_matches(cert_pem: &[u8], key_pem: &[u8]) -> bool {
    certified_key(cert_pem, key_pem).is_ok()
}

impl ServedCert {
    /// Serves the certificate in `cert` with the key in `key` (both PEM).
    pub fn load(cert: impl Into<PathBuf>, key: impl Into<PathBuf>) -> Result<Arc<Self>, String> {
        let (cert, key) = (cert.into(), key.into());
        let stamps = (stamp(&cert), stamp(&key));
        let loaded = Loaded {
            key: Arc::new(read_pair(&cert, &key)?),
            stamps,
        };
        Ok(Arc::new(Self {
            cert,
            key,
            loaded: Mutex::new(loaded),
        }))
    }

    /// The pair to serve: re-read when the files changed since they were read.
    fn current(&self) -> Arc<CertifiedKey> {
        let mut loaded = self.loaded.lock().unwrap_or_else(|e| e.into_inner());
        let stamps = (stamp(&self.cert), stamp(&self.key));
        if stamps != loaded.stamps {
            // A pair that does not read (half replaced) keeps the old one served until the
            // next handshake looks again.
            if let Ok(key) = read_pair(&self.cert, &self.key) {
                *loaded = Loaded {
                    key: Arc::new(key),
                    stamps,
                };
                tracing_note(&self.cert);
            }
        }
        loaded.key.clone()
    }

    /// The rustls server configuration serving this certificate (HTTP/1.1).
    pub fn server_config(self: &Arc<Self>) -> Result<Arc<ServerConfig>, TlsSetupError> {
        let mut config = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsSetupError::Rustls("TLS versions", e))?
            .with_no_client_auth()
            .with_cert_resolver(self.clone());
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Arc::new(config))
    }
}

#[cfg(feature = "server")]
fn tracing_note(cert: &Path) {
    tracing::info!(file = %cert.display(), "serving a new certificate");
}

#[cfg(not(feature = "server"))]
fn tracing_note(_cert: &Path) {}

impl ResolvesServerCert for ServedCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn hosts_come_from_urls_without_brackets() {
        assert_eq!(url_host("https://127.0.0.1:8008/x"), "127.0.0.1");
        assert_eq!(url_host("https://[::1]:8008"), "::1");
        assert_eq!(
            url_host("https://db-0-0.db-members:8008"),
            "db-0-0.db-members"
        );
        assert_eq!(url_host("nonsense"), "");
    }
}
