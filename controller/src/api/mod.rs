//! The controller's HTTP API: the router, its shared state, and one file per route.
//!
//! `/healthz`, `/readyz` and `/metrics` answer without authentication; everything under `/v1` requires the
//! bearer token. Every non-2xx answer is an [`ErrorBody`](toygres_common::ErrorBody).

mod backups;
mod credentials;
pub mod error;
mod ha;
mod health;
mod instances;
mod member_report;
mod metrics;
pub mod openapi;
mod operations;
mod parameters;
mod replicas;
mod report_gate;
mod ro;
mod state;
mod stats;
mod store_secrets;
pub mod types;

use std::time::Instant;

use axum::extract::Request;
use axum::http::{Method, Uri};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse as _, Response};
use axum::routing::{get, post};
use axum::Router;

use toygres_common::http_api::{require_bearer, BearerAuth};

pub use error::ApiError;
pub use health::standby_app;
pub use state::ApiState;

/// The API's router.
pub fn app(state: ApiState) -> Router {
    let v1 = Router::new()
        .route(
            "/v1/instances",
            get(instances::list).post(instances::create),
        )
        .route(
            "/v1/instances/{name}",
            get(instances::get).delete(instances::delete),
        )
        .route("/v1/instances/{name}/events", get(instances::events))
        .route(
            "/v1/instances/{name}/replicas",
            get(replicas::status).post(replicas::add),
        )
        .route(
            "/v1/instances/{name}/replicas/{member}",
            axum::routing::delete(replicas::remove),
        )
        .route("/v1/instances/{name}/switchover", post(ha::switchover))
        .route("/v1/instances/{name}/failover", post(ha::failover))
        .route(
            "/v1/instances/{name}/credentials/rotate",
            post(credentials::rotate),
        )
        .route(
            "/v1/instances/{name}/ha",
            get(ha::get_settings).put(ha::set_settings),
        )
        .route(
            "/v1/instances/{name}/ro",
            get(ro::get_settings).put(ro::set_settings),
        )
        .route(
            "/v1/instances/{name}/backups",
            get(backups::list).post(backups::create),
        )
        .route(
            "/v1/instances/{name}/backups/schedule",
            get(backups::get_schedule).put(backups::set_schedule),
        )
        .route(
            "/v1/instances/{name}/backups/cleanup",
            get(backups::cleanup_plan).post(backups::cleanup),
        )
        .route("/v1/instances/{name}/restore", post(backups::restore))
        .route(
            "/v1/instances/{name}/backups/restore-points",
            post(backups::restore_point),
        )
        .route(
            "/v1/instances/{name}/backups/rotate-key",
            post(backups::rotate_key),
        )
        .route(
            "/v1/instances/{name}/parameters",
            get(parameters::get).put(parameters::set),
        )
        .route(
            "/v1/instances/{name}/parameters/catalog",
            get(parameters::catalog),
        )
        .route(
            "/v1/backups/{id}",
            get(backups::get).delete(backups::delete),
        )
        .route("/v1/instances/{name}/backups/window", get(backups::window))
        .route("/v1/backups/{id}/verify", post(backups::verify))
        .route(
            "/v1/secrets/{name}",
            get(store_secrets::get)
                .put(store_secrets::put)
                .delete(store_secrets::delete),
        )
        .route("/v1/stats", get(stats::stats))
        .route(
            "/v1/instances/{name}/parameters/profile",
            post(parameters::profile),
        )
        .route(
            "/v1/operations/{id}",
            get(operations::get).delete(operations::cancel),
        )
        .route("/v1/openapi.json", get(openapi::document))
        .route_layer(middleware::from_fn_with_state(
            BearerAuth::new(state.token.expose()),
            require_bearer,
        ));
    Router::new()
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::healthz))
        .route("/metrics", get(metrics::metrics))
        .merge(v1)
        // Authenticated by the member's own report token, not the operator's.
        .route(
            "/v1/instances/{name}/members/{member}/report",
            post(member_report::report),
        )
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn(log_request))
        .layer(middleware::from_fn(refuse_unknown_methods))
        .with_state(state)
}

async fn not_found(method: Method, uri: Uri) -> ApiError {
    ApiError::NotFound(format!("no route for {method} {}", uri.path()))
}

async fn method_not_allowed(method: Method, uri: Uri) -> ApiError {
    ApiError::MethodNotAllowed(format!("{method} is not allowed on {}", uri.path()))
}

/// The methods this API answers; any other is refused with 405 before it is routed, logged or
/// counted, so made-up methods leave no trace that could grow.
const METHODS: [Method; 5] = [
    Method::GET,
    Method::HEAD,
    Method::POST,
    Method::PUT,
    Method::DELETE,
];

async fn refuse_unknown_methods(request: Request, next: Next) -> Response {
    if !METHODS.contains(request.method()) {
        return ApiError::MethodNotAllowed("the method is not one this API answers".into())
            .into_response();
    }
    next.run(request).await
}

async fn log_request(request: Request, next: Next) -> Response {
    let method = request.method().clone();
    let path = request.uri().path().to_string();
    let started = Instant::now();
    let response = next.run(request).await;
    tracing::debug!(
        %method,
        path,
        status = response.status().as_u16(),
        elapsed_ms = started.elapsed().as_millis() as u64,
        "request"
    );
    response
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use axum::body::Body;
    use axum::http::{header, Request, StatusCode};
    use tower::ServiceExt as _;
    use toygres_common::ErrorBody;

    use std::sync::Arc;

    use super::*;
    use crate::cms::Cms;
    use crate::token::ApiToken;

    /// A router whose CMS cannot be reached: a socket directory with no Postgres in it.
    fn unreachable_cms_app() -> (Router, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let mut config = tokio_postgres::Config::new();
        config
            .host_path(dir.path())
            .port(1)
            .user("postgres")
            .dbname("toygres");
        let state = ApiState::new(
            Arc::new(Cms::new(config)),
            Arc::new(ApiToken::parse("the-token").unwrap()),
        );
        (app(state), dir)
    }

    async fn send(
        app: Router,
        method: &str,
        uri: &str,
        token: Option<&str>,
    ) -> (StatusCode, String) {
        let mut request = Request::builder().method(method).uri(uri);
        if let Some(token) = token {
            request = request.header(header::AUTHORIZATION, format!("Bearer {token}"));
        }
        let response = app
            .oneshot(request.body(Body::empty()).unwrap())
            .await
            .unwrap();
        let status = response.status();
        let body = axum::body::to_bytes(response.into_body(), 1 << 20)
            .await
            .unwrap();
        (status, String::from_utf8(body.to_vec()).unwrap())
    }

    async fn post_json(app: Router, uri: &str, body: &str) -> (StatusCode, String) {
        let request = Request::builder()
            .method("POST")
            .uri(uri)
            .header(header::AUTHORIZATION, "Bearer the-token")
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(body.to_string()))
            .unwrap();
        let response = app.oneshot(request).await.unwrap();
        let status = response.status();
        let body = axum::body::to_bytes(response.into_body(), 1 << 20)
            .await
            .unwrap();
        (status, String::from_utf8(body.to_vec()).unwrap())
    }

    #[tokio::test]
    async fn a_bad_create_request_is_a_400_naming_the_field() {
        let (app, _dir) = unreachable_cms_app();
        for (body, field) in [
            (r#"{"name": "Bad"}"#, "name"),
            (r#"{"name": "ok", "replicas": 9}"#, "replicas"),
            (
                r#"{"name": "ok", "replicas": 1, "replication": "semi"}"#,
                "replication",
            ),
            (r#"{"replicas": 1}"#, "name"),
            ("not json", "JSON"),
        ] {
            let (status, text) = post_json(app.clone(), "/v1/instances", body).await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{body}: {text}");
            assert_eq!(error_code(&text), "invalid_request");
            assert!(text.contains(field), "{body}: {text}");
        }
        // A valid request reaches the engine, which this router does not have.
        let (status, text) = post_json(app, "/v1/instances", r#"{"name": "ok"}"#).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{text}");
    }

    #[tokio::test]
    async fn bodies_that_are_not_the_documented_object_are_a_400() {
        let (app, _dir) = unreachable_cms_app();
        for (uri, body, says) in [
            ("/v1/instances/side/replicas", "[null,null]", "object"),
            ("/v1/instances/side/switchover", "[null,null]", "object"),
            ("/v1/instances/side/failover", "[null,true]", "object"),
            ("/v1/instances", r#"["side", 1]"#, "object"),
            (
                "/v1/instances",
                r#"{"name": "side", "replica": 2}"#,
                "replica",
            ),
            (
                "/v1/instances/side/replicas",
                r#"{"zone": "a", "sise": "m"}"#,
                "sise",
            ),
            (
                "/v1/instances/side/replicas",
                r#"{"max_lag_bytes": "1"}"#,
                "expected u64",
            ),
        ] {
            let (status, text) = post_json(app.clone(), uri, body).await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{uri} {body}: {text}");
            assert_eq!(error_code(&text), "invalid_request");
            assert!(text.contains(says), "{uri} {body}: {text}");
        }
    }

    #[tokio::test]
    async fn the_events_route_checks_its_paging_parameters() {
        let (app, _dir) = unreachable_cms_app();
        for query in ["limit=0", "limit=1001", "limit=x", "since=x", "color=red"] {
            let uri = format!("/v1/instances/side/events?{query}");
            let (status, text) = send(app.clone(), "GET", &uri, Some("the-token")).await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{query}: {text}");
        }
        // Valid ones reach the (unreachable) CMS.
        let uri = "/v1/instances/side/events?limit=5&since=3";
        let (status, text) = send(app, "GET", uri, Some("the-token")).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{text}");
    }

    #[tokio::test]
    async fn the_openapi_document_is_served_to_token_holders() {
        let (app, _dir) = unreachable_cms_app();
        let (status, _) = send(app.clone(), "GET", "/v1/openapi.json", None).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        let (status, body) = send(app, "GET", "/v1/openapi.json", Some("the-token")).await;
        assert_eq!(status, StatusCode::OK);
        assert!(body.contains("\"/v1/instances/{name}/replicas\""), "{body}");
    }

    fn error_code(body: &str) -> String {
        serde_json::from_str::<ErrorBody>(body).unwrap().error.code
    }

    #[tokio::test]
    async fn healthz_is_503_when_the_cms_is_unreachable() {
        let (app, _dir) = unreachable_cms_app();
        let (status, body) = send(app, "GET", "/healthz", None).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(error_code(&body), "cms_unavailable");
    }

    #[tokio::test]
    async fn v1_routes_require_the_bearer_token() {
        let (app, _dir) = unreachable_cms_app();
        let (status, body) = send(app.clone(), "GET", "/v1/instances", None).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        assert_eq!(error_code(&body), "unauthorized");

        let (status, body) = send(app.clone(), "GET", "/v1/instances", Some("wrong")).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        assert_eq!(error_code(&body), "unauthorized");

        // The right token gets past authentication, to the unreachable CMS.
        let (status, body) = send(app, "GET", "/v1/instances", Some("the-token")).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(error_code(&body), "cms_unavailable");
    }

    #[tokio::test]
    async fn unknown_routes_and_methods_answer_json_errors() {
        let (app, _dir) = unreachable_cms_app();
        let (status, body) = send(app.clone(), "GET", "/nope", None).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert_eq!(error_code(&body), "not_found");

        let (status, body) = send(app, "DELETE", "/healthz", None).await;
        assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(error_code(&body), "method_not_allowed");
    }

    #[tokio::test]
    async fn made_up_methods_get_405_and_leave_metrics_the_same_size() {
        let (app, _dir) = unreachable_cms_app();
        let scrape = |app: Router| async move {
            let (_, body) = send(app, "GET", "/metrics", None).await;
            // Values may change between scrapes; the series may not.
            body.lines()
                .map(|l| {
                    l.rsplit_once(' ')
                        .map_or(l, |(series, _)| series)
                        .to_string()
                })
                .collect::<Vec<_>>()
        };
        let before = scrape(app.clone()).await;
        let mut seed: u64 = 0x2545_f491_4f6c_dd1d;
        for i in 0..10_000 {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let name = format!("M{seed:X}");
            let path = if i % 2 == 0 { "/v1/instances" } else { "/nope" };
            let (status, body) = send(app.clone(), &name, path, None).await;
            assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED, "{name} {path}");
            assert_eq!(error_code(&body), "method_not_allowed");
        }
        assert_eq!(scrape(app).await, before);
    }

    #[tokio::test]
    async fn metrics_report_the_controller_up_and_the_cms_down() {
        let (app, _dir) = unreachable_cms_app();
        let (status, body) = send(app, "GET", "/metrics", None).await;
        assert_eq!(status, StatusCode::OK);
        assert!(body.contains("\ntoygres_controller_up 1\n"), "{body}");
        assert!(body.contains("\ntoygres_controller_cms_up 0\n"), "{body}");
    }
}
