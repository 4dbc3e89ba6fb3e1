//! This pod's Postgres: supervision and every operation the API offers on it, and the
//! primitives bootstrap composes (initdb, pg_basebackup).

pub mod archiving;
pub mod auto_conf;
pub mod create;
pub mod demote;
pub mod files;
pub mod isolation;
pub mod member;
pub mod membership;
pub mod parameters;
pub mod process;
pub mod promote;
pub mod replication;
pub mod report;
pub mod reporting;
pub mod settings;
pub mod sql;
pub mod status;
pub mod sync;
pub mod tls_renewal;
pub mod watchers;

pub use member::{Member, OpError};
