//! What every handler can reach: the CMS, the token, the engine and platform, the counters.

use std::sync::Arc;

use super::ApiError;
use crate::cms::Cms;
use crate::engine::Engine;
use crate::metrics::ControllerMetrics;
use crate::platform::Platform;
use crate::token::ApiToken;

/// What every handler can reach.
#[derive(Debug, Clone)]
pub struct ApiState {
    pub cms: Arc<Cms>,
    pub token: Arc<ApiToken>,
    /// The durable engine; `None` answers the routes that start operations with 503.
    pub engine: Option<Arc<Engine>>,
    /// The platform, to point at credentials.
    pub platform: Option<Arc<dyn Platform>>,
    pub metrics: Arc<ControllerMetrics>,
    /// The host clients reach the endpoints on.
    pub endpoint_host: String,
    /// When each instance's actor was last asked to check because a member reported.
    pub reports: Arc<super::report_gate::ReportGate>,
}

impl ApiState {
    /// State without an engine or platform (tests, and the CMS-only routes).
    pub fn new(cms: Arc<Cms>, token: Arc<ApiToken>) -> Self {
        Self {
            cms,
            token,
            engine: None,
            platform: None,
            metrics: Arc::new(ControllerMetrics::default()),
            endpoint_host: "127.0.0.1".into(),
            reports: Default::default(),
        }
    }

    pub(super) fn engine(&self) -> Result<&Arc<Engine>, ApiError> {
        self.engine
            .as_ref()
            .ok_or_else(|| ApiError::Unavailable("the orchestration engine is not running".into()))
    }
}
