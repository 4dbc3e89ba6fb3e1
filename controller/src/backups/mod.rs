//! Backups as the controller decides them: when scheduled backups fire ([`schedule`]) and which
//! backups a retention policy keeps ([`retention`]). Both are pure: no I/O, no duroxide.

pub mod retention;
pub mod schedule;
