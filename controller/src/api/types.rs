//! The bodies of the operator API; they live in [`toygres_common::controller_api`], shared with
//! the CLI and the tests.

pub use toygres_common::controller_api::*;
