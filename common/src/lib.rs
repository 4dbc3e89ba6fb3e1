//! Types and helpers shared by the Toygres agents: the sidecar's API types (what crosses the wire
//! between sidecar, controller and tests), name validation, the JSON error shape, a typed HTTP
//! client for the sidecar API, object-store URL parsing, a poll-until-deadline helper, and (feature
//! `server`) what both HTTP APIs answer alike: error responses, the bearer-token check and the
//! `/metrics` exposition.

pub mod app_access;
pub mod backup_api;
pub mod controller_api;
pub mod credentials_api;
pub mod domain;
pub mod error;
#[cfg(feature = "server")]
pub mod exposition;
#[cfg(feature = "server")]
pub mod http_api;
pub mod member_report;
pub mod names;
#[cfg(feature = "openapi")]
pub mod openapi;
pub mod parameters_api;
pub mod pg_exec;
pub mod poll;
pub mod request;
pub mod ro_api;
pub mod sidecar_api;
pub mod sidecar_client;
pub mod stats_api;
pub mod store_secret_api;
pub mod store_url;
pub mod tls;

pub use error::{ErrorBody, ErrorDetail};
pub use sidecar_client::{SidecarClient, SidecarClientError};
