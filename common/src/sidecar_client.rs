//! A typed client for the sidecar API, used by the controller and the tests.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde::{de::DeserializeOwned, Serialize};

use crate::error::ErrorBody;
use crate::sidecar_api::*;
use crate::tls::verify::TlsSetupError;

/// What went wrong calling a sidecar.
#[derive(Debug, thiserror::Error)]
pub enum SidecarClientError {
    #[error("sidecar at {url} unreachable: {source}")]
    Unreachable {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("sidecar answered {status}: {code}: {message}")]
    Api {
        status: u16,
        code: String,
        message: String,
    },
    #[error("sidecar answered {status} with an unreadable body: {body}")]
    BadResponse { status: u16, body: String },
}

impl SidecarClientError {
    /// The HTTP status the sidecar answered with, when it answered.
    pub fn status(&self) -> Option<u16> {
        match self {
            SidecarClientError::Api { status, .. }
            | SidecarClientError::BadResponse { status, .. } => Some(*status),
            SidecarClientError::Unreachable { .. } => None,
        }
    }
}

/// Talks to one sidecar at `base_url` (`https://127.0.0.1:8008`) with its bearer token, trusting
/// only its instance's CA: the token is sent only to a sidecar whose certificate comes from that
/// CA (and names the host dialled, where it can).
#[derive(Clone)]
pub struct SidecarClient {
    base_url: String,
    token: String,
    http: reqwest::Client,
}

impl std::fmt::Debug for SidecarClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SidecarClient")
            .field("base_url", &self.base_url)
            .field("token", &"<redacted>")
            .finish()
    }
}

impl SidecarClient {
    /// A client trusting the instance's CA in `ca_pem`, whose requests time out after `timeout`
    /// (promotion and demotion can take a while: give those calls a generous one).
    pub fn new(
        base_url: impl Into<String>,
        token: impl Into<String>,
        ca_pem: &[u8],
        timeout: Duration,
    ) -> Result<Self, TlsSetupError> {
        let base_url = base_url.into().trim_end_matches('/').to_string();
        let builder = reqwest::Client::builder()
            .timeout(timeout)
            // Connecting includes the TLS handshake, which a busy sidecar answers a little later
            // than the kernel accepts a TCP connection.
            .connect_timeout(timeout.min(Duration::from_secs(5)));
        let http = crate::tls::https::client_trusting(builder, ca_pem, &base_url)?;
        Ok(Self {
            base_url,
            token: token.into(),
            http,
        })
    }

    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    async fn call<B: Serialize, T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&B>,
    ) -> Result<T, SidecarClientError> {
        let url = format!("{}{}", self.base_url, path);
        let mut req = self.http.request(method, &url).bearer_auth(&self.token);
        if let Some(body) = body {
            req = req.json(body);
        }
        let resp = req
            .send()
            .await
            .map_err(|source| SidecarClientError::Unreachable {
                url: url.clone(),
                source,
            })?;
        let status = resp.status();
        let bytes = resp
            .bytes()
            .await
            .map_err(|source| SidecarClientError::Unreachable { url, source })?;
        if status.is_success() {
            serde_json::from_slice(&bytes).map_err(|_| SidecarClientError::BadResponse {
                status: status.as_u16(),
                body: String::from_utf8_lossy(&bytes).into_owned(),
            })
        } else {
            Err(match serde_json::from_slice::<ErrorBody>(&bytes) {
                Ok(e) => SidecarClientError::Api {
                    status: status.as_u16(),
                    code: e.error.code,
                    message: e.error.message,
                },
                Err(_) => SidecarClientError::BadResponse {
                    status: status.as_u16(),
                    body: String::from_utf8_lossy(&bytes).into_owned(),
                },
            })
        }
    }

    pub async fn status(&self) -> Result<Status, SidecarClientError> {
        self.call::<(), _>(Method::GET, "/v1/status", None).await
    }

    pub async fn promote(&self) -> Result<PromoteResponse, SidecarClientError> {
        self.call::<(), _>(Method::POST, "/v1/promote", None).await
    }

    /// `POST /v1/promote` with options (`force`: promote even while the primary still serves).
    pub async fn promote_with(
        &self,
        req: &PromoteRequest,
    ) -> Result<PromoteResponse, SidecarClientError> {
        self.call(Method::POST, "/v1/promote", Some(req)).await
    }

    pub async fn demote(&self, req: &DemoteRequest) -> Result<DemoteResponse, SidecarClientError> {
        self.call(Method::POST, "/v1/demote", Some(req)).await
    }

    pub async fn fence(&self) -> Result<ActionResponse, SidecarClientError> {
        self.call::<(), _>(Method::POST, "/v1/fence", None).await
    }

    pub async fn unfence(&self) -> Result<ActionResponse, SidecarClientError> {
        self.call::<(), _>(Method::POST, "/v1/unfence", None).await
    }

    pub async fn restart(&self) -> Result<ActionResponse, SidecarClientError> {
        self.call::<(), _>(Method::POST, "/v1/restart", None).await
    }

    /// `POST /v1/restart` with values to fall back to if Postgres does not start.
    pub async fn restart_with_fallback(
        &self,
        request: &crate::sidecar_api::RestartRequest,
    ) -> Result<ActionResponse, SidecarClientError> {
        self.call(Method::POST, "/v1/restart", Some(request)).await
    }

    pub async fn parameters(&self) -> Result<Parameters, SidecarClientError> {
        self.call::<(), _>(Method::GET, "/v1/parameters", None)
            .await
    }

    /// `GET /v1/parameters/catalog`.
    pub async fn parameter_catalog(
        &self,
    ) -> Result<crate::parameters_api::ParameterCatalog, SidecarClientError> {
        self.call::<(), _>(Method::GET, "/v1/parameters/catalog", None)
            .await
    }

    pub async fn set_parameters(
        &self,
        req: &SetParametersRequest,
    ) -> Result<SetParametersResponse, SidecarClientError> {
        self.call(Method::PUT, "/v1/parameters", Some(req)).await
    }

    pub async fn set_replication(
        &self,
        req: &ReplicationRequest,
    ) -> Result<ActionResponse, SidecarClientError> {
        self.call(Method::PUT, "/v1/replication", Some(req)).await
    }

    /// `PUT /v1/notify`: the member reports to `target` from now on.
    pub async fn set_notify_target(
        &self,
        target: &NotifyTarget,
    ) -> Result<ActionResponse, SidecarClientError> {
        self.call(Method::PUT, "/v1/notify", Some(target)).await
    }

    /// `POST /v1/backups`: takes a backup; returns its manifest when it is complete.
    pub async fn backup(&self, req: &BackupRequest) -> Result<BackupManifest, SidecarClientError> {
        self.call(Method::POST, "/v1/backups", Some(req)).await
    }

    /// `GET /v1/backups`: complete backups in the store, oldest first.
    pub async fn backups(&self) -> Result<BackupList, SidecarClientError> {
        self.call::<(), _>(Method::GET, "/v1/backups", None).await
    }

    /// `POST /v1/backups/{id}/verify`.
    pub async fn verify_backup(&self, id: &str) -> Result<VerifyResponse, SidecarClientError> {
        self.call::<(), _>(Method::POST, &format!("/v1/backups/{id}/verify"), None)
            .await
    }

    /// `POST /v1/backups/retention`.
    pub async fn apply_retention(
        &self,
        req: &RetentionRequest,
    ) -> Result<RetentionResponse, SidecarClientError> {
        self.call(Method::POST, "/v1/backups/retention", Some(req))
            .await
    }

    /// `POST /v1/wal/switch`: closes the primary's WAL segment and waits for it to be archived.
    pub async fn switch_wal(&self) -> Result<WalSwitchResponse, SidecarClientError> {
        self.call::<(), _>(Method::POST, "/v1/wal/switch", None)
            .await
    }

    /// `POST /v1/encryption/reload`: the member reads its encryption key ring again (after a
    /// rotation) and says which keys it now holds.
    pub async fn reload_encryption_keys(&self) -> Result<EncryptionKeys, SidecarClientError> {
        self.call::<(), _>(Method::POST, "/v1/encryption/reload", None)
            .await
    }

    /// `POST /v1/encryption/reload?ring_version=V`: [`Self::reload_encryption_keys`] once the
    /// member's key ring reads version `V` (a hex digest; the sidecar waits up to
    /// [`KEYRING_SYNC_SECS`](crate::sidecar_api::KEYRING_SYNC_SECS) for it).
    pub async fn reload_encryption_keys_at(
        &self,
        ring_version: &str,
    ) -> Result<EncryptionKeys, SidecarClientError> {
        let version: String = ring_version
            .chars()
            .filter(char::is_ascii_hexdigit)
            .collect();
        let path = format!("/v1/encryption/reload?ring_version={version}");
        self.call::<(), _>(Method::POST, &path, None).await
    }

    /// `POST /v1/wal/restore-point`: makes a named restore point on the primary and archives it.
    pub async fn restore_point(
        &self,
        req: &RestorePointRequest,
    ) -> Result<RestorePointResponse, SidecarClientError> {
        self.call(Method::POST, "/v1/wal/restore-point", Some(req))
            .await
    }

    /// `GET /v1/restore/progress`: how far the restore the member bootstraps from has come
    /// (a 404 `not_restoring` when it restores nothing).
    pub async fn restore_progress(&self) -> Result<RestoreProgress, SidecarClientError> {
        self.call::<(), _>(Method::GET, "/v1/restore/progress", None)
            .await
    }

    /// `GET /v1/wal/archived`: how far the instance's archive reaches.
    pub async fn archive_end(&self) -> Result<ArchiveEnd, SidecarClientError> {
        self.call::<(), _>(Method::GET, "/v1/wal/archived", None)
            .await
    }

    /// `POST /v1/restores/logical`.
    pub async fn restore_logical(
        &self,
        req: &LogicalRestoreRequest,
    ) -> Result<ActionResponse, SidecarClientError> {
        self.call(Method::POST, "/v1/restores/logical", Some(req))
            .await
    }

    /// Drops the replication slot of `member` on this primary (a removed standby).
    pub async fn drop_slot(&self, member: &str) -> Result<ActionResponse, SidecarClientError> {
        self.call::<(), _>(
            Method::DELETE,
            &format!("/v1/replication/slots/{member}"),
            None,
        )
        .await
    }

    /// `GET /readyz`: whether the server is ready (no token needed).
    pub async fn ready(&self) -> Result<bool, SidecarClientError> {
        let url = format!("{}/readyz", self.base_url);
        let resp = self
            .http
            .get(&url)
            .send()
            .await
            .map_err(|source| SidecarClientError::Unreachable { url, source })?;
        Ok(resp.status() == StatusCode::OK)
    }
}
