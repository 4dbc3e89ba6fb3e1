//! Types and helpers shared by the Toygres agents: the sidecar's API types (what crosses the wire
//! between sidecar, controller and tests), name validation, the JSON error shape, and a typed HTTP
//! client for the sidecar API.

pub mod error;
pub mod names;
pub mod pg_exec;
pub mod sidecar_api;
pub mod sidecar_client;

pub use error::{ErrorBody, ErrorDetail};
pub use sidecar_client::{SidecarClient, SidecarClientError};
