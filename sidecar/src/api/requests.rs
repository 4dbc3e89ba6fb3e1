//! Counting the API's requests by method, route and status, for `/metrics`. Every label comes
//! from a known set — the route's pattern (or `unmatched`), a standard method (or `other`) and
//! the status — so no request can add series of its own (issue 14: made-up methods grew
//! `/metrics` without bound). A request with a method outside that set is answered 405 before
//! anything is counted or routed.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use axum::extract::{MatchedPath, Request, State};
use axum::http::{Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

/// Request counts by (method, route, status).
#[derive(Debug, Default)]
pub struct ApiMetrics {
    requests: Mutex<BTreeMap<(String, String, u16), u64>>,
}

impl ApiMetrics {
    /// Every (method, route, status) counted, with its count.
    pub fn counts(&self) -> Vec<((String, String, u16), u64)> {
        let map = self.requests.lock().unwrap_or_else(|p| p.into_inner());
        map.iter().map(|(k, v)| (k.clone(), *v)).collect()
    }

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
    let method = method_label(req.method());
    if method == "other" {
        return super::error::ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            "the method is not one this API answers",
        )
        .into_response();
    }
    let response = next.run(req).await.into_response();
    metrics.record(method, &route, response.status().as_u16());
    response
}

/// The method as a label: one of the standard ones, or `other`.
fn method_label(method: &Method) -> &'static str {
    const KNOWN: [Method; 9] = [
        Method::GET,
        Method::HEAD,
        Method::POST,
        Method::PUT,
        Method::DELETE,
        Method::PATCH,
        Method::OPTIONS,
        Method::CONNECT,
        Method::TRACE,
    ];
    KNOWN
        .iter()
        .find(|known| *known == method)
        .map_or("other", Method::as_str)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_made_up_method_is_counted_as_other() {
        assert_eq!(method_label(&Method::GET), "GET");
        assert_eq!(method_label(&Method::PATCH), "PATCH");
        let made_up = Method::from_bytes(b"FROBNICATE").unwrap();
        assert_eq!(method_label(&made_up), "other");
    }

    #[tokio::test]
    async fn ten_thousand_made_up_methods_are_refused_and_leave_the_counts_as_they_were() {
        use axum::body::Body;
        use tower::ServiceExt as _;

        let metrics = Arc::new(ApiMetrics::default());
        let app = axum::Router::new()
            .route("/v1/status", axum::routing::get(|| async { "ok" }))
            .layer(axum::middleware::from_fn_with_state(
                Arc::clone(&metrics),
                count_requests,
            ));
        let request = |method: &str| {
            axum::http::Request::builder()
                .method(method)
                .uri("/v1/status")
                .body(Body::empty())
                .unwrap()
        };
        let answer = app.clone().oneshot(request("GET")).await.unwrap();
        assert_eq!(answer.status(), StatusCode::OK);
        let before = metrics.counts().len();
        let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
        for _ in 0..10_000 {
            // A made-up method of 1 to 12 capital letters (xorshift, no crate needed).
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let len = 1 + (seed % 12) as usize;
            let name: String = (0..len)
                .map(|i| char::from(b'A' + ((seed >> (i * 5)) % 26) as u8))
                .collect();
            let known = method_label(&Method::from_bytes(name.as_bytes()).unwrap()) != "other";
            let answer = app.clone().oneshot(request(&name)).await.unwrap();
            if !known {
                assert_eq!(answer.status(), StatusCode::METHOD_NOT_ALLOWED, "{name}");
            }
        }
        assert_eq!(metrics.counts().len(), before, "{:?}", metrics.counts());
    }
}
