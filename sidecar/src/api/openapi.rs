//! `GET /v1/openapi.json`: the sidecar API's OpenAPI document, generated from the handlers'
//! annotations and the request and response types (utoipa), as the controller's is, so
//! generated clients and fuzzers (`scripts/schemathesis.sh --sidecar`) see the real contract.

use axum::Json;
use toygres_common::openapi::BearerAuth;
use utoipa::OpenApi;

/// The document.
#[derive(OpenApi)]
#[openapi(
    info(title = "Toygres sidecar API", description = "One member: its Postgres's status, role changes, settings, replication and backups; health checks in Toygres's and Patroni's dialects."),
    paths(
        super::lifecycle::status,
        super::lifecycle::promote,
        super::lifecycle::demote,
        super::lifecycle::fence,
        super::lifecycle::unfence,
        super::lifecycle::restart,
        super::settings::get_parameters,
        super::settings::put_parameters,
        super::settings::get_catalog,
        super::settings::put_replication,
        super::settings::put_notify,
        super::settings::delete_slot,
        super::backups::list,
        super::backups::create,
        super::backups::retention,
        super::backups::verify,
        super::backups::restore_logical,
        super::backups::switch_wal,
        super::backups::archive_end,
        super::backups::restore_progress,
        super::backups::restore_point,
        super::backups::reload_encryption,
        super::health::healthz,
        super::health::readyz,
        super::metrics::handler,
        super::patroni::primary,
        super::patroni::read_write,
        super::patroni::replica,
        super::patroni::read_only,
        super::patroni::health,
        super::patroni::liveness,
        super::patroni::readiness,
    ),
    modifiers(&BearerAuth),
)]
#[derive(Debug)]
pub struct ApiDoc;

/// `GET /v1/openapi.json`.
pub async fn document() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    /// Every path the router in `server.rs` serves but this document's own, read from its
    /// `.route("…", …)` calls (the starting router's are a subset of them).
    fn routed_paths() -> BTreeSet<String> {
        let (serving, _starting) = include_str!("server.rs")
            .split_once("pub fn starting_app")
            .unwrap_or_default();
        toygres_common::openapi::routed_paths(serving)
    }

    #[test]
    fn the_document_lists_every_route_and_the_bearer_scheme() {
        let json = serde_json::to_value(ApiDoc::openapi()).unwrap_or_default();
        let paths = json["paths"].as_object().cloned().unwrap_or_default();
        let routed = routed_paths();
        assert!(routed.len() > 25, "{routed:?}");
        for path in &routed {
            assert!(paths.contains_key(path), "{path} missing");
        }
        for path in paths.keys() {
            assert!(routed.contains(path), "{path} is documented but not routed");
        }
        assert!(json["paths"]["/v1/demote"]["post"].is_object());
        assert!(json["paths"]["/v1/replication/slots/{member}"]["delete"].is_object());
        assert!(json["paths"]["/v1/parameters"]["put"].is_object());
        let demote = &json["components"]["schemas"]["DemoteRequest"]["properties"];
        assert!(demote["primary"].is_object(), "{demote}");
        assert_eq!(
            json["components"]["securitySchemes"]["bearer"]["scheme"],
            "bearer"
        );
        // The /v1 routes ask for the token; the probes and Patroni's checks do not.
        assert!(json["paths"]["/v1/status"]["get"]["security"].is_array());
        assert!(json["paths"]["/primary"]["get"]["security"].is_null());
        assert_eq!(
            json["paths"]["/v1/demote"]["post"]["responses"]["400"]["content"]["application/json"]
                ["schema"]["$ref"],
            "#/components/schemas/ErrorResponse"
        );
    }
}
