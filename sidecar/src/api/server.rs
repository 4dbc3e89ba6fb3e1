//! Builds the router: open probes and metrics, token-protected `/v1` routes, request counting.

use std::sync::Arc;

use axum::http::StatusCode;
use axum::middleware;
use axum::routing::{get, post, put};
use axum::Router;

use toygres_common::exposition::{self, Exposition};
use toygres_common::http_api::{require_bearer, BearerAuth};

use super::error::ApiError;
use super::state::AppState;
use super::{auth, backups, health, lifecycle, metrics, openapi, patroni, requests, settings};

/// The whole API.
pub fn app(state: AppState) -> Router {
    let protected = Router::new()
        .route("/v1/status", get(lifecycle::status))
        .route("/v1/promote", post(lifecycle::promote))
        .route("/v1/demote", post(lifecycle::demote))
        .route("/v1/fence", post(lifecycle::fence))
        .route("/v1/unfence", post(lifecycle::unfence))
        .route("/v1/restart", post(lifecycle::restart))
        .route(
            "/v1/parameters",
            get(settings::get_parameters).put(settings::put_parameters),
        )
        .route("/v1/parameters/catalog", get(settings::get_catalog))
        .route("/v1/replication", put(settings::put_replication))
        .route("/v1/notify", put(settings::put_notify))
        .route(
            "/v1/replication/slots/{member}",
            axum::routing::delete(settings::delete_slot),
        )
        .route("/v1/backups", get(backups::list).post(backups::create))
        .route("/v1/backups/retention", post(backups::retention))
        .route("/v1/backups/{id}/verify", post(backups::verify))
        .route("/v1/restores/logical", post(backups::restore_logical))
        .route("/v1/wal/switch", post(backups::switch_wal))
        .route("/v1/wal/archived", get(backups::archive_end))
        .route("/v1/restore/progress", get(backups::restore_progress))
        .route("/v1/wal/restore-point", post(backups::restore_point))
        .route("/v1/encryption/reload", post(backups::reload_encryption))
        .route("/v1/openapi.json", get(openapi::document))
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            auth::note_controller_contact,
        ))
        .route_layer(middleware::from_fn_with_state(
            BearerAuth::new(state.token.clone()),
            require_bearer,
        ));
    Router::new()
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route("/metrics", get(metrics::handler))
        // Patroni's health checks, unauthenticated as Patroni's are.
        .route("/primary", get(patroni::primary))
        .route("/read-write", get(patroni::read_write))
        .route("/replica", get(patroni::replica))
        .route("/read-only", get(patroni::read_only))
        .route("/health", get(patroni::health))
        .route("/liveness", get(patroni::liveness))
        .route("/readiness", get(patroni::readiness))
        .merge(protected)
        .fallback(not_found)
        .layer(middleware::from_fn_with_state(
            state.api_metrics.clone(),
            requests::count_requests,
        ))
        .with_state(state)
}

/// What answers while the member bootstraps and Postgres first starts: `/healthz` succeeds,
/// `/metrics` says Postgres is down, everything else is 503.
///
/// Once a restore has failed (`failure` set), `/v1/status` answers 500 `bootstrap_failed` with
/// the reason to whoever holds the API token, so that the controller stops waiting at once.
pub fn starting_app(failure: BootstrapFailure, token: Arc<str>) -> Router {
    let failed = Router::new()
        .route(
            "/v1/status",
            get(move || {
                let failure = failure.clone();
                async move {
                    match failure.get() {
                        Some(reason) => ApiError::new(
                            StatusCode::INTERNAL_SERVER_ERROR,
                            "bootstrap_failed",
                            reason.clone(),
                        ),
                        None => starting(),
                    }
                }
            }),
        )
        .route("/v1/restore/progress", get(backups::restore_progress))
        .route_layer(middleware::from_fn_with_state(
            BearerAuth::new(token),
            require_bearer,
        ));
    Router::new()
        .route(
            "/healthz",
            get(|| async { axum::Json(serde_json::json!({"status": "ok", "phase": "starting"})) }),
        )
        // Patroni's liveness: the agent answers, Postgres or not.
        .route("/liveness", get(patroni::liveness))
        .route(
            "/metrics",
            get(|| async {
                let x = Exposition::default();
                x.gauge(
                    "toygres_pg_up",
                    "Whether Postgres accepts connections.",
                    0.0,
                );
                (
                    [(axum::http::header::CONTENT_TYPE, exposition::CONTENT_TYPE)],
                    x.text(),
                )
            }),
        )
        .merge(failed)
        .fallback(|| async { starting() })
}

/// Why bootstrapping failed, once it has (set at most once).
pub type BootstrapFailure = Arc<std::sync::OnceLock<String>>;

fn starting() -> ApiError {
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "starting",
        "the sidecar is still bootstrapping or starting Postgres",
    )
}

async fn not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such route")
}
