//! Verifying a server against one instance's CA, for every TLS client of a member (Postgres over
//! tokio-postgres, the sidecar API over HTTPS): the chain must end at the CA and, where
//! [`super::checks_name`] says so, the certificate must name the host dialled.

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, RootCertStore, SignatureScheme};

/// Why a TLS setup could not be built.
#[derive(Debug, thiserror::Error)]
pub enum TlsSetupError {
    #[error("read the {0}: {1}")]
    Pem(&'static str, rustls::pki_types::pem::Error),
    #[error("the {0} holds no certificate")]
    Empty(&'static str),
    #[error("use the {0}: {1}")]
    Rustls(&'static str, rustls::Error),
    #[error("build the HTTPS client: {0}")]
    Client(String),
    #[error("build the certificate verifier: {0}")]
    Verifier(#[from] rustls::client::VerifierBuilderError),
}

/// The crypto every Toygres TLS endpoint uses (ring), passed explicitly so no process-wide
/// default is needed.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The certificates of a PEM file; an empty one is an error naming `what`.
pub fn certificates(
    pem: &[u8],
    what: &'static str,
) -> Result<Vec<CertificateDer<'static>>, TlsSetupError> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsSetupError::Pem(what, e))?;
    if certs.is_empty() {
        return Err(TlsSetupError::Empty(what));
    }
    Ok(certs)
}

/// The private key of a PEM file.
pub fn private_key(
    pem: &[u8],
    what: &'static str,
) -> Result<PrivateKeyDer<'static>, TlsSetupError> {
    PrivateKeyDer::from_pem_slice(pem).map_err(|e| TlsSetupError::Pem(what, e))
}

/// The verifiers trusting the CA in `ca_pem`: one checking names as well as the chain, one
/// checking the chain only (for a non-loopback IP address, see [`super::checks_name`]).
#[derive(Debug, Clone)]
pub struct CaVerifiers {
    pub strict: Arc<dyn ServerCertVerifier>,
    pub chain_only: Arc<dyn ServerCertVerifier>,
}

impl CaVerifiers {
    pub fn new(ca_pem: &[u8]) -> Result<Self, TlsSetupError> {
        let mut roots = RootCertStore::empty();
        for cert in certificates(ca_pem, "CA certificate")? {
            roots
                .add(cert)
                .map_err(|e| TlsSetupError::Rustls("CA certificate", e))?;
        }
        let webpki =
            WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider()).build()?;
        Ok(Self {
            strict: webpki.clone(),
            chain_only: Arc::new(ChainOnly(webpki)),
        })
    }

    /// The verifier for a connection to `host`.
    pub fn for_host(&self, host: &str) -> Arc<dyn ServerCertVerifier> {
        if super::checks_name(host) {
            self.strict.clone()
        } else {
            self.chain_only.clone()
        }
    }
}

/// Accepts a certificate whose chain the inner verifier accepted even though it does not name
/// the host (see [`super::checks_name`]).
#[derive(Debug)]
struct ChainOnly(Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for ChainOnly {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        // webpki checks the chain first and the name last: a name error means the chain held.
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
        {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}
