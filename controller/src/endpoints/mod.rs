//! An instance's stable endpoints as the controller serves them in local mode: a read-write and
//! a read-only TCP proxy per instance ([`proxy`]). On Kubernetes, Services play this part and
//! nothing here runs.

pub mod breaker;
pub mod proxy;

pub use breaker::{BreakerSettings, BreakerState};
pub use proxy::{EndpointRole, EndpointStats, InstanceProxy, ProxyTargets};
