//! Decisions about an instance's Postgres parameters, with no I/O: the settings a profile gives
//! an instance of a declared size ([`profiles`]), and the order in which a change reaches the
//! members ([`plan`]). The orchestration that applies them gathers the facts and calls these.

pub mod builtin;
pub mod diff;
pub mod plan;
pub mod profiles;

#[cfg(test)]
mod profile_sweep;
