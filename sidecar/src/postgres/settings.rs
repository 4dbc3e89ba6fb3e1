//! What this member's Postgres is told by `config`: where its files are, how it listens and
//! replicates, its passwords and its WAL archiving. `config` builds it from the flags once; the
//! `postgres` modules, bootstrap, restore and backups read only this, never the whole command line.

use std::path::PathBuf;
use std::time::Duration;

use crate::archive::ArchiveSetup;

/// Replication timeouts every member runs with (in `toygres.conf`). A primary sends its
/// standbys a keepalive once half of `wal_sender_timeout` passed without a reply, so an idle
/// standby still hears from a live primary about every second: its `last_msg_receipt_time` is
/// fresh evidence that the primary lives, which the controller weighs before a failover (only
/// evidence younger than the instance's `standby_contact_window_ms`, 2 s by default, counts).
/// A standby ends a stream that stayed silent for `wal_receiver_timeout` (the default, 60 s,
/// kept a frozen primary's standbys "streaming" for a minute); CloudNativePG runs both at 5 s.
pub const REPLICATION_TIMEOUTS: &[&str] =
    &["wal_sender_timeout = '2s'", "wal_receiver_timeout = '5s'"];

/// The settings of the Postgres this sidecar owns.
#[derive(Debug, Clone)]
pub struct MemberSettings {
    pub data_dir: PathBuf,
    pub run_dir: PathBuf,
    pub pg_port: u16,
    pub pg_listen: String,
    pub member_name: String,
    pub pg_bin_dir: Option<PathBuf>,
    pub ready_max_lag_bytes: u64,
    pub max_slot_wal_keep_size: String,
    pub stop_timeout: Duration,
    pub start_timeout: Duration,
    pub isolation_lease: Option<Duration>,
    pub secrets: Passwords,
    /// WAL archiving, when `--archive-url` is set.
    pub archive: Option<ArchiveSetup>,
}

impl MemberSettings {
    /// The replication slot this member streams through.
    pub fn slot_name(&self) -> String {
        toygres_common::names::slot_name_for_member(&self.member_name)
    }
}

/// The database passwords, read from their files. `Debug` never shows them.
#[derive(Clone)]
pub struct Passwords {
    pub superuser_password: String,
    pub replication_password: String,
}

impl std::fmt::Debug for Passwords {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Passwords { <redacted> }")
    }
}
