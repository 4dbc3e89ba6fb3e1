//! Counting the API's requests by method, route and status, for `/metrics`.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

/// Request counts by (method, route, status).
#[derive(Debug, Default)]
pub struct ApiMetrics {
    pub(super) requests: Mutex<BTreeMap<(String, String, u16), u64>>,
}

impl ApiMetrics {
    pub fn record(&self, method: &str, route: &str, status: u16) {
        let mut map = self.requests.lock().unwrap_or_else(|p| p.into_inner());
        *map.entry((method.to_string(), route.to_string(), status))
            .or_default() += 1;
    }
}

/// Counts requests by route and status for `/metrics`.
pub async fn count_requests(
    State(metrics): State<Arc<ApiMetrics>>,
    req: Request,
    next: Next,
) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "unmatched".into());
    let method = req.method().as_str().to_string();
    let response = next.run(req).await.into_response();
    metrics.record(&method, &route, response.status().as_u16());
    response
}
