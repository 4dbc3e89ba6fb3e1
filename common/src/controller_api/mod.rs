//! Requests and responses of the controller's operator API (`/v1/...`), shared by the controller,
//! its CLI and the tests. Requests are validated once, at the boundary, into `Validated…` types
//! the rest of the controller trusts.
//!
//! One module a concern: [`replication`] (modes and limits), [`instances`] (creating instances
//! and standbys), [`views`] (what the API answers) and [`ha`] (switchover, failover, HA
//! settings); everything is re-exported here, so `controller_api::X` names every type.

mod ha;
mod instances;
mod replication;
mod views;

pub use self::ha::*;
pub use self::instances::*;
pub use self::replication::*;
pub use self::views::*;
pub use crate::request::{InvalidRequest, OperationAccepted};
