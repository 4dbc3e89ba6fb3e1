//! The sidecar's HTTP API. `server` builds the router; each concern has its own file, `/metrics`
//! included. Every route but `/healthz`, `/readyz` and `/metrics` requires the bearer token.

pub mod auth;
pub mod backups;
pub mod error;
pub mod health;
pub mod lifecycle;
pub mod metrics;
pub mod openapi;
pub mod patroni;
pub mod requests;
pub mod server;
pub mod settings;
pub mod state;

pub use server::app;
pub use state::AppState;
