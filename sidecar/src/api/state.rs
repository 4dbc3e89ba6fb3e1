//! What every handler can reach: the member, the API token and the request counters.

use std::sync::Arc;

use super::requests::ApiMetrics;
use crate::postgres::Member;

/// What every handler can reach.
#[derive(Clone, Debug)]
pub struct AppState {
    pub member: Arc<Member>,
    /// The instance the member's reports name (see `PUT /v1/notify`).
    pub report_instance: Arc<str>,
    pub token: Arc<str>,
    pub api_metrics: Arc<ApiMetrics>,
}
