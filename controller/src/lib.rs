//! The Toygres controller and the operator's CLI, both in the `toygres` binary.
//!
//! `toygres controller` runs the controller: the CMS ([`cms`]), its HTTP API ([`api`]), and (in
//! a later version) the durable orchestrations that act on instances. Every other subcommand
//! ([`cli`]) is a client of that API.

pub mod api;
pub mod cli;
pub mod cms;
pub mod config;
pub mod controller;
pub mod endpoints;
pub mod home;
pub mod platform;
pub mod shutdown;
pub mod token;
