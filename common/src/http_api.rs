//! What both HTTP APIs (the sidecar's and the controller's) answer the same way: the error
//! response — a status and `{"error": {"code", "message"}}` ([`ErrorBody`]) — and the bearer-token
//! check of their protected routes. Each API maps its own failures onto [`ApiError`].

use std::sync::Arc;

use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Json;
use subtle::ConstantTimeEq;

use crate::ErrorBody;

/// An error answer: its status and the code and message of its JSON body. A 500 is logged here,
/// once (with its [`ApiError::detail`] when the message sent is kept general); a 401 names the
/// `Bearer` scheme in `WWW-Authenticate`.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    /// What is logged instead of the message: internal detail the client is not shown.
    pub detail: Option<String>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            detail: None,
        }
    }

    /// Logs `detail` (never sent) instead of the message when this is a 500.
    pub fn with_logged_detail(mut self, detail: impl Into<String>) -> Self {
        self.detail = Some(detail.into());
        self
    }

    /// A 400 `invalid_request`.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_request", message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if self.status == StatusCode::INTERNAL_SERVER_ERROR {
            let logged = self.detail.as_deref().unwrap_or(&self.message);
            tracing::error!(code = self.code, "answering 500: {logged}");
        }
        let mut response =
            (self.status, Json(ErrorBody::new(self.code, self.message))).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}

impl From<JsonRejection> for ApiError {
    fn from(e: JsonRejection) -> Self {
        Self::bad_request(e.body_text())
    }
}

impl From<QueryRejection> for ApiError {
    fn from(e: QueryRejection) -> Self {
        Self::bad_request(e.body_text())
    }
}

/// A JSON request body that must be an object of `T`'s documented shape. Unlike
/// `axum::Json`, an array is refused (serde would read `[null, null]` as a struct's fields in
/// order), and the refusal says what was wrong, naming an unknown field when there is one.
#[derive(Debug, Clone, Copy, Default)]
pub struct JsonObject<T>(pub T);

/// Why a [`JsonObject`] body was refused: answered `400 invalid_request`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BodyRejection(pub String);

impl std::fmt::Display for BodyRejection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<BodyRejection> for ApiError {
    fn from(e: BodyRejection) -> Self {
        Self::bad_request(e.0)
    }
}

impl IntoResponse for BodyRejection {
    fn into_response(self) -> Response {
        ApiError::from(self).into_response()
    }
}

impl<T: serde::de::DeserializeOwned> JsonObject<T> {
    /// Reads `value` as `T` when it is a JSON object.
    pub fn from_value(value: serde_json::Value) -> Result<Self, BodyRejection> {
        if !value.is_object() {
            return Err(BodyRejection(
                "the request body must be a JSON object".into(),
            ));
        }
        serde_json::from_value(value)
            .map(JsonObject)
            .map_err(|e| BodyRejection(format!("invalid request body: {e}")))
    }
}

impl<S: Send + Sync, T: serde::de::DeserializeOwned> axum::extract::FromRequest<S>
    for JsonObject<T>
{
    type Rejection = BodyRejection;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        let Json(value) = Json::<serde_json::Value>::from_request(request, state)
            .await
            .map_err(|e| BodyRejection(e.body_text()))?;
        Self::from_value(value)
    }
}

/// The token a protected route requires. `Debug` never shows it.
#[derive(Clone)]
pub struct BearerAuth {
    token: Arc<str>,
}

impl std::fmt::Debug for BearerAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("BearerAuth(<redacted>)")
    }
}

impl BearerAuth {
    pub fn new(token: impl Into<Arc<str>>) -> Self {
        Self {
            token: token.into(),
        }
    }

    /// Whether `headers` carry `Authorization: Bearer <the token>`; the refusal otherwise.
    pub fn check(&self, headers: &HeaderMap) -> Result<(), ApiError> {
        let presented = headers
            .get(header::AUTHORIZATION)
            .and_then(|value| value.to_str().ok())
            .and_then(bearer_token)
            .ok_or_else(|| {
                ApiError::new(
                    StatusCode::UNAUTHORIZED,
                    "unauthorized",
                    "missing bearer token (Authorization: Bearer <token>)",
                )
            })?;
        if !token_matches(&self.token, presented) {
            return Err(ApiError::new(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "invalid bearer token",
            ));
        }
        Ok(())
    }
}

/// The middleware of the protected routes:
/// `route_layer(middleware::from_fn_with_state(auth, require_bearer))`.
pub async fn require_bearer(
    State(auth): State<BearerAuth>,
    request: Request,
    next: Next,
) -> Response {
    match auth.check(request.headers()) {
        Ok(()) => next.run(request).await,
        Err(refusal) => refusal.into_response(),
    }
}

/// The token of an `Authorization` header value with the `Bearer` scheme. The scheme is matched
/// in any case (RFC 9110: auth schemes are case-insensitive).
pub fn bearer_token(value: &str) -> Option<&str> {
    let (scheme, token) = value.trim().split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

/// Whether `presented` is `expected`, in time that does not depend on where they differ.
pub fn token_matches(expected: &str, presented: &str) -> bool {
    expected.as_bytes().ct_eq(presented.as_bytes()).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Shape {
        #[serde(default)]
        to: Option<String>,
        #[serde(default)]
        force: bool,
    }

    #[test]
    fn a_body_must_be_an_object_of_known_fields() {
        assert!(JsonObject::<Shape>::from_value(serde_json::json!({"force": true})).is_ok());
        // serde alone reads an array as the struct's fields in order.
        assert!(serde_json::from_value::<Shape>(serde_json::json!([null, false])).is_ok());
        let refused = JsonObject::<Shape>::from_value(serde_json::json!([null, null]));
        assert!(refused.is_err_and(|e| e.0.contains("object")));
        let refused = JsonObject::<Shape>::from_value(serde_json::json!({"forse": true}));
        assert!(refused.is_err_and(|e| e.0.contains("forse")));
        let refused = JsonObject::<Shape>::from_value(serde_json::json!({"force": "yes"}));
        assert!(refused.is_err());
    }

    #[test]
    fn bearer_scheme_is_case_insensitive_and_required() {
        assert_eq!(bearer_token("Bearer abc"), Some("abc"));
        assert_eq!(bearer_token("bearer  abc "), Some("abc"));
        assert_eq!(bearer_token("Basic abc"), None);
        assert_eq!(bearer_token("Bearer "), None);
        assert_eq!(bearer_token("abc"), None);
    }

    #[test]
    fn tokens_match_only_when_identical() {
        assert!(token_matches("abc", "abc"));
        assert!(!token_matches("abc", "abd"));
        assert!(!token_matches("abc", "abcd"));
        assert!(!token_matches("abc", ""));
    }

    #[test]
    fn a_refusal_is_401_with_the_error_shape_and_the_scheme() {
        let auth = BearerAuth::new("s3cret-token-0123");
        let mut headers = HeaderMap::new();
        assert!(auth.check(&headers).is_err());
        headers.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("bearer s3cret-token-0123"),
        );
        assert!(auth.check(&headers).is_ok());
        headers.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Bearer nope"),
        );
        let response = auth.check(&headers).unwrap_err().into_response();
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(response.headers()[header::WWW_AUTHENTICATE], "Bearer");
        assert!(!format!("{auth:?}").contains("s3cret"));
    }
}
