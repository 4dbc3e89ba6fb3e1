//! An instance's stable endpoints and which members they lead to.

use serde::{Deserialize, Serialize};
use toygres_common::names::PgAddress;

/// An instance's stable endpoints: what clients connect to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Endpoints {
    /// Read-write: the current primary.
    pub rw: PgAddress,
    /// Read-only: the healthy standbys, or the primary when there is none.
    pub ro: PgAddress,
}

/// Which members an instance's endpoints lead to.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EndpointRoutes {
    /// The primary; `None` refuses read-write connections (during a failover, for example).
    pub rw: Option<String>,
    /// The healthy standbys; when empty, read-only connections go to the primary.
    #[serde(default)]
    pub ro: Vec<String>,
    /// With `rw` empty: hold new read-write connections until a primary is routed, instead of
    /// refusing them (a switchover or failover in progress).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub hold_rw: bool,
    /// With `ro` empty: lead ro to the primary (the default) or refuse.
    #[serde(default, skip_serializing_if = "is_default")]
    pub ro_fallback: toygres_common::ro_api::RoFallback,
    /// How ro spreads connections over `ro` (the local proxies; a Service spreads by itself).
    #[serde(default, skip_serializing_if = "is_default")]
    pub ro_balance: toygres_common::ro_api::RoBalance,
}

fn is_default<T: Default + PartialEq>(value: &T) -> bool {
    *value == T::default()
}
