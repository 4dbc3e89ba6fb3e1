//! Backups as the controller decides them: when scheduled backups fire ([`schedule`]), which
//! backups a retention policy keeps ([`retention`]), which member a backup is taken on
//! ([`source`]), which base backup a restore starts from ([`restore`]) and what a cleanup
//! would delete ([`cleanup`]). All pure: no I/O, no duroxide.

pub mod cleanup;
pub mod defaults;
pub mod restore;
pub mod retention;
pub mod schedule;
pub mod source;
