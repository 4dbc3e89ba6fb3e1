//! What both APIs' OpenAPI documents share (feature `openapi`): the bearer security scheme, and
//! the paths a router serves, read from its source, for the tests that check every route is
//! documented.

use std::collections::BTreeSet;

use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};

/// Adds the `bearer` security scheme the annotated routes name.
#[derive(Debug)]
pub struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// The paths of the `.route("…", …)` calls in a router's source text but the document's own
/// (`/v1/openapi.json`).
pub fn routed_paths(router_source: &str) -> BTreeSet<String> {
    router_source
        .split(".route(")
        .skip(1)
        .filter_map(|call| call.trim_start().strip_prefix('"')?.split('"').next())
        .filter(|path| *path != "/v1/openapi.json")
        .map(String::from)
        .collect()
}
