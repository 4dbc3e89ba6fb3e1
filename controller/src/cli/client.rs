//! The HTTP client of the controller's API that the CLI subcommands share: it finds the
//! controller (flags, or the address and token files under `$TOYGRES_HOME`) and turns the API's
//! JSON errors into messages for a person.

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use serde::de::DeserializeOwned;
use serde::Serialize;
use toygres_common::ErrorBody;

use super::args::ClientArgs;
use crate::config::resolve_home;
use crate::home::ControllerHome;
use crate::token::ApiToken;

/// Why a call to the controller failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error(
        "cannot reach the controller at {url}; is it running? (start it with `toygres controller`)"
    )]
    Unreachable {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("the controller answered {status}: {message} ({code})")]
    Api {
        status: u16,
        code: String,
        message: String,
    },
    #[error("read the controller's answer to {url}: {source}")]
    Decode {
        url: String,
        #[source]
        source: reqwest::Error,
    },
}

/// A client of one controller's API.
#[derive(Debug)]
pub struct ControllerClient {
    base_url: String,
    token: ApiToken,
    http: reqwest::Client,
}

impl ControllerClient {
    /// Finds the controller from the flags, falling back to the files in `$TOYGRES_HOME`
    /// (`home_env` is `$HOME`, used when `--home` is not given).
    pub fn from_args(args: &ClientArgs, home_env: Option<OsString>) -> anyhow::Result<Self> {
        let home = || -> anyhow::Result<ControllerHome> {
            Ok(ControllerHome::new(resolve_home(
                args.home.clone(),
                home_env.clone(),
            )?))
        };
        let base_url = match &args.url {
            Some(url) => url.trim().trim_end_matches('/').to_string(),
            None => {
                let addr_file = home()?.addr_file();
                match std::fs::read_to_string(&addr_file) {
                    Ok(url) => url.trim().trim_end_matches('/').to_string(),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => anyhow::bail!(
                        "the controller is not running (there is no {}); start it with \
                         `toygres controller`, or pass --url",
                        addr_file.display()
                    ),
                    Err(e) => {
                        return Err(e).with_context(|| format!("read {}", addr_file.display()))
                    }
                }
            }
        };
        if !(base_url.starts_with("http://") || base_url.starts_with("https://")) {
            anyhow::bail!(
                "the controller URL {base_url:?} does not start with http:// or https://"
            );
        }
        let token_file: PathBuf = match &args.token_file {
            Some(path) => path.clone(),
            None => home()?.token_file(),
        };
        let token = ApiToken::read(&token_file).context("read the controller's API token")?;
        let builder = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(60));
        let http = if base_url.starts_with("https://") {
            // Only the controller's own CA is trusted: the token goes to nobody else.
            let ca_file = match &args.ca_file {
                Some(path) => path.clone(),
                None => home()?.ca_file(),
            };
            let ca = std::fs::read(&ca_file).with_context(|| {
                format!(
                    "read {} (the CA of the controller's certificate; pass --ca-file)",
                    ca_file.display()
                )
            })?;
            toygres_common::tls::https::client_trusting(builder, &ca, &base_url)
                .context("set up the HTTPS client")?
        } else {
            builder.build().context("set up the HTTP client")?
        };
        Ok(Self {
            base_url,
            token,
            http,
        })
    }

    /// `GET path`, decoding a JSON body.
    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        self.call::<(), T>(reqwest::Method::GET, path, None).await
    }

    /// `POST path` with a JSON body, decoding a JSON answer.
    pub async fn post<B: Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<T, ClientError> {
        self.call(reqwest::Method::POST, path, Some(body)).await
    }

    /// `PUT path` with a JSON body, decoding a JSON answer.
    pub async fn put<B: Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<T, ClientError> {
        self.call(reqwest::Method::PUT, path, Some(body)).await
    }

    /// `DELETE path`, decoding a JSON answer.
    pub async fn delete<T: DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        self.call::<(), T>(reqwest::Method::DELETE, path, None)
            .await
    }

    async fn call<B: Serialize, T: DeserializeOwned>(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&B>,
    ) -> Result<T, ClientError> {
        let url = format!("{}{path}", self.base_url);
        let mut request = self
            .http
            .request(method, &url)
            .bearer_auth(self.token.expose());
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request
            .send()
            .await
            .map_err(|source| ClientError::Unreachable {
                url: self.base_url.clone(),
                source,
            })?;
        let status = response.status();
        if !status.is_success() {
            let body = response.text().await.unwrap_or_default();
            let (code, message) = match serde_json::from_str::<ErrorBody>(&body) {
                Ok(error) => (error.error.code, error.error.message),
                Err(_) => ("unknown".to_string(), body.trim().to_string()),
            };
            return Err(ClientError::Api {
                status: status.as_u16(),
                code,
                message,
            });
        }
        response
            .json()
            .await
            .map_err(|source| ClientError::Decode { url, source })
    }
}
