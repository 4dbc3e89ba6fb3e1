//! The Toygres controller and the operator's CLI, both in the `toygres` binary.
//!
//! `toygres controller` runs the controller: the CMS ([`cms`]), the platform pods and endpoints
//! live on ([`platform`], [`endpoints`]), the durable orchestrations that act on instances
//! ([`engine`], [`orchestrations`], [`activities`]) and its HTTP API ([`api`]). Every other
//! subcommand ([`cli`]) is a client of that API.

pub mod activities;
pub mod api;
pub mod api_tls;
pub mod backups;
pub mod cli;
pub mod cms;
pub mod config;
pub mod controller;
pub mod endpoints;
pub mod engine;
pub mod home;
pub mod metrics;
pub mod orchestrations;
pub mod parameters;
pub mod platform;
pub mod shutdown;
pub mod token;
pub mod wake;
