//! TLS to Postgres for tokio-postgres, over rustls: the server must present a certificate from
//! the instance's CA (and, where [`super::checks_name`] says so, for the host connected to),
//! and the client may present its own. Connections made with [`PgTls::config`] refuse a
//! server without TLS (`sslmode=require` semantics plus the CA check), so no password is ever
//! sent to a server that did not first prove it is a member.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_postgres::tls::{ChannelBinding, MakeTlsConnect, TlsConnect, TlsStream};

/// Why a TLS setup could not be built.
#[derive(Debug, thiserror::Error)]
pub enum PgTlsError {
    #[error("read the {0}: {1}")]
    Pem(&'static str, rustls::pki_types::pem::Error),
    #[error("the {0} holds no certificate")]
    Empty(&'static str),
    #[error("use the {0}: {1}")]
    Rustls(&'static str, rustls::Error),
    #[error("build the certificate verifier: {0}")]
    Verifier(#[from] rustls::client::VerifierBuilderError),
}

/// A tokio-postgres TLS connector trusting one instance's CA.
#[derive(Clone)]
pub struct PgTls {
    /// Checks the certificate's names too.
    strict: Arc<ClientConfig>,
    /// Checks the chain only (a non-loopback IP address).
    chain_only: Arc<ClientConfig>,
}

impl std::fmt::Debug for PgTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PgTls(<instance CA>)")
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

impl PgTls {
    /// Trusts the CA in `ca_pem`; presents `client` (certificate and key, PEM) when given.
    pub fn new(ca_pem: &[u8], client: Option<(&[u8], &[u8])>) -> Result<Self, PgTlsError> {
        let mut roots = RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(ca_pem) {
            let cert = cert.map_err(|e| PgTlsError::Pem("CA certificate", e))?;
            roots
                .add(cert)
                .map_err(|e| PgTlsError::Rustls("CA certificate", e))?;
        }
        if roots.is_empty() {
            return Err(PgTlsError::Empty("CA certificate"));
        }
        let webpki =
            WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider()).build()?;
        let strict = Self::client_config(webpki.clone(), client)?;
        let chain_only = Self::client_config(Arc::new(ChainOnly(webpki)), client)?;
        Ok(Self {
            strict: Arc::new(strict),
            chain_only: Arc::new(chain_only),
        })
    }

    fn client_config(
        verifier: Arc<dyn ServerCertVerifier>,
        client: Option<(&[u8], &[u8])>,
    ) -> Result<ClientConfig, PgTlsError> {
        let builder = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| PgTlsError::Rustls("TLS versions", e))?
            .dangerous()
            .with_custom_certificate_verifier(verifier);
        match client {
            None => Ok(builder.with_no_client_auth()),
            Some((cert_pem, key_pem)) => {
                let certs = CertificateDer::pem_slice_iter(cert_pem)
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|e| PgTlsError::Pem("client certificate", e))?;
                if certs.is_empty() {
                    return Err(PgTlsError::Empty("client certificate"));
                }
                let key = PrivateKeyDer::from_pem_slice(key_pem)
                    .map_err(|e| PgTlsError::Pem("client key", e))?;
                builder
                    .with_client_auth_cert(certs, key)
                    .map_err(|e| PgTlsError::Rustls("client certificate", e))
            }
        }
    }

    /// `config` with TLS required: tokio-postgres never falls back to plain text with it.
    pub fn require(config: &mut tokio_postgres::Config) -> &mut tokio_postgres::Config {
        config.ssl_mode(tokio_postgres::config::SslMode::Require)
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

impl<S> MakeTlsConnect<S> for PgTls
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    type Stream = PgTlsStream<S>;
    type TlsConnect = PgTlsConnect;
    type Error = rustls::pki_types::InvalidDnsNameError;

    fn make_tls_connect(&mut self, host: &str) -> Result<PgTlsConnect, Self::Error> {
        let config = if super::checks_name(host) {
            self.strict.clone()
        } else {
            self.chain_only.clone()
        };
        Ok(PgTlsConnect {
            config,
            name: ServerName::try_from(host.to_string())?,
        })
    }
}

/// One connection's TLS handshake.
#[derive(Debug)]
pub struct PgTlsConnect {
    config: Arc<ClientConfig>,
    name: ServerName<'static>,
}

type Handshake<S> = Pin<Box<dyn Future<Output = io::Result<PgTlsStream<S>>> + Send>>;

impl<S> TlsConnect<S> for PgTlsConnect
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    type Stream = PgTlsStream<S>;
    type Error = io::Error;
    type Future = Handshake<S>;

    fn connect(self, stream: S) -> Self::Future {
        Box::pin(async move {
            let stream = tokio_rustls::TlsConnector::from(self.config)
                .connect(self.name, stream)
                .await?;
            Ok(PgTlsStream(Box::new(stream)))
        })
    }
}

/// A TLS stream to Postgres.
#[derive(Debug)]
pub struct PgTlsStream<S>(Box<tokio_rustls::client::TlsStream<S>>);

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for PgTlsStream<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.0).poll_read(cx, buf)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for PgTlsStream<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut *self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.0).poll_shutdown(cx)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> TlsStream for PgTlsStream<S> {
    fn channel_binding(&self) -> ChannelBinding {
        // SCRAM without channel binding; the server's identity is the certificate check.
        ChannelBinding::none()
    }
}
