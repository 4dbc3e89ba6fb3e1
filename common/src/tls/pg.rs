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

use rustls::pki_types::ServerName;
use rustls::ClientConfig;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_postgres::tls::{ChannelBinding, MakeTlsConnect, TlsConnect, TlsStream};

pub use super::verify::TlsSetupError as PgTlsError;
use super::verify::{certificates, private_key, provider, CaVerifiers};

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

impl PgTls {
    /// Trusts the CA in `ca_pem`; presents `client` (certificate and key, PEM) when given.
    pub fn new(ca_pem: &[u8], client: Option<(&[u8], &[u8])>) -> Result<Self, PgTlsError> {
        let verifiers = CaVerifiers::new(ca_pem)?;
        let strict = Self::client_config(verifiers.strict, client)?;
        let chain_only = Self::client_config(verifiers.chain_only, client)?;
        Ok(Self {
            strict: Arc::new(strict),
            chain_only: Arc::new(chain_only),
        })
    }

    fn client_config(
        verifier: Arc<dyn rustls::client::danger::ServerCertVerifier>,
        client: Option<(&[u8], &[u8])>,
    ) -> Result<ClientConfig, PgTlsError> {
        let builder = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| PgTlsError::Rustls("TLS versions", e))?
            .dangerous()
            .with_custom_certificate_verifier(verifier);
        match client {
            None => Ok(builder.with_no_client_auth()),
            Some((cert_pem, key_pem)) => builder
                .with_client_auth_cert(
                    certificates(cert_pem, "client certificate")?,
                    private_key(key_pem, "client key")?,
                )
                .map_err(|e| PgTlsError::Rustls("client certificate", e)),
        }
    }

    /// `config` with TLS required: tokio-postgres never falls back to plain text with it.
    pub fn require(config: &mut tokio_postgres::Config) -> &mut tokio_postgres::Config {
        config.ssl_mode(tokio_postgres::config::SslMode::Require)
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
