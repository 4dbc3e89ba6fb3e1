//! An instance's stable endpoints as the controller serves them in local mode: a read-write and
//! a read-only TCP proxy per instance ([`proxy`]), with a breaker per ro standby ([`breaker`])
//! and its balancing ([`balance`]). On Kubernetes, Services play this part. Which standbys ro
//! leads to is decided once for both platforms ([`ro_rule`]).

pub mod balance;
pub mod breaker;
pub mod proxy;
pub mod ro_rule;

pub use breaker::{BreakerSettings, BreakerState};
pub use proxy::{EndpointRole, EndpointStats, InstanceProxy, ProxyTargets};
