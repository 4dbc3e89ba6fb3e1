//! The API's errors: each case maps to an HTTP status and a machine-readable code, answered in
//! the one error shape both Toygres APIs use (`toygres_common::http_api::ApiError`); internal
//! detail is logged, once, and not sent to the client.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use toygres_common::http_api;

use crate::cms::CmsError;

/// An error answered to an API client.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    Unauthorized(&'static str),
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    Unavailable(String),
    #[error("{0}")]
    MethodNotAllowed(String),
    #[error("{0}")]
    TooManyRequests(String),
    #[error("the CMS is unavailable: {0}")]
    CmsUnavailable(#[source] CmsError),
    #[error("internal error: {0:#}")]
    Internal(anyhow::Error),
}

impl From<CmsError> for ApiError {
    fn from(e: CmsError) -> Self {
        if e.is_unavailable() {
            ApiError::CmsUnavailable(e)
        } else {
            ApiError::Internal(e.into())
        }
    }
}

impl From<crate::engine::EngineError> for ApiError {
    fn from(e: crate::engine::EngineError) -> Self {
        use crate::engine::EngineError;
        match e {
            EngineError::Invalid(message) => ApiError::BadRequest(message),
            EngineError::Conflict(message) => ApiError::Conflict(message),
            EngineError::NotFound(message) => ApiError::NotFound(message),
            EngineError::Busy(message) => ApiError::TooManyRequests(message),
            EngineError::Cms(e) => e.into(),
            EngineError::Failed(e) => ApiError::Internal(e),
        }
    }
}

impl From<toygres_common::controller_api::InvalidRequest> for ApiError {
    fn from(e: toygres_common::controller_api::InvalidRequest) -> Self {
        ApiError::BadRequest(e.to_string())
    }
}

impl From<axum::extract::rejection::JsonRejection> for ApiError {
    fn from(e: axum::extract::rejection::JsonRejection) -> Self {
        ApiError::BadRequest(e.body_text())
    }
}

impl From<http_api::BodyRejection> for ApiError {
    fn from(e: http_api::BodyRejection) -> Self {
        ApiError::BadRequest(e.0)
    }
}

impl From<axum::extract::rejection::QueryRejection> for ApiError {
    fn from(e: axum::extract::rejection::QueryRejection) -> Self {
        ApiError::BadRequest(e.body_text())
    }
}

impl ApiError {
    /// The HTTP status and the code of the JSON body.
    pub fn status_and_code(&self) -> (StatusCode, &'static str) {
        match self {
            ApiError::Unauthorized(_) => (StatusCode::UNAUTHORIZED, "unauthorized"),
            ApiError::BadRequest(_) => (StatusCode::BAD_REQUEST, "invalid_request"),
            ApiError::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
            ApiError::Conflict(_) => (StatusCode::CONFLICT, "conflict"),
            ApiError::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
            ApiError::MethodNotAllowed(_) => (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed"),
            ApiError::TooManyRequests(_) => (StatusCode::TOO_MANY_REQUESTS, "too_many_operations"),
            ApiError::CmsUnavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "cms_unavailable"),
            ApiError::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code) = self.status_and_code();
        let answer = match &self {
            ApiError::CmsUnavailable(e) => {
                tracing::warn!("answering 503: the CMS is unavailable: {e}");
                http_api::ApiError::new(status, code, "the CMS database is unavailable")
            }
            ApiError::Internal(e) => {
                http_api::ApiError::new(status, code, "internal error; see the controller's log")
                    .with_logged_detail(format!("{e:#}"))
            }
            other => http_api::ApiError::new(status, code, other.to_string()),
        };
        answer.into_response()
    }
}
