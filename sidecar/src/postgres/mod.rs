//! This pod's Postgres: bootstrap, supervision and every operation the API offers on it.

pub mod bootstrap;
pub mod demote;
pub mod files;
pub mod isolation;
pub mod member;
pub mod parameters;
pub mod process;
pub mod promote;
pub mod replication;
pub mod sql;
pub mod status;
pub mod sync;

pub use member::{Member, OpError};
