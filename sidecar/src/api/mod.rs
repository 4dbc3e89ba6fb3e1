//! The sidecar's HTTP API. `server` builds the router; each concern has its own file. Every
//! route but `/healthz`, `/readyz` and `/metrics` requires the bearer token.

pub mod auth;
pub mod backups;
pub mod error;
pub mod health;
pub mod lifecycle;
pub mod server;
pub mod settings;

pub use server::{app, AppState};
