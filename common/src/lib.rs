//! Types and helpers shared by the Toygres agents: the sidecar's API types (what crosses the wire
//! between sidecar, controller and tests), name validation, the JSON error shape, a typed HTTP
//! client for the sidecar API, and object-store URL parsing.

pub mod controller_api;
pub mod domain;
pub mod error;
pub mod names;
pub mod pg_exec;
pub mod sidecar_api;
pub mod sidecar_client;
pub mod store_url;

pub use error::{ErrorBody, ErrorDetail};
pub use sidecar_client::{SidecarClient, SidecarClientError};
