//! Backups as the controller decides them: when scheduled backups fire ([`schedule`]), which
//! backups a retention policy keeps ([`retention`]) and which member a backup is taken on
//! ([`source`]). All pure: no I/O, no duroxide.

pub mod retention;
pub mod schedule;
pub mod source;
