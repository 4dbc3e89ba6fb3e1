//! Requests and responses of the sidecar's HTTP API (`/v1/...`).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::names::PgAddress;

/// The file in a member's data directory that keeps it fenced: while it exists the sidecar
/// keeps Postgres stopped, also across restarts. The sidecar writes it on `POST /v1/fence`; a
/// platform that kills a member it cannot reach writes it too, so the member cannot come back
/// as a second primary.
pub const FENCE_MARKER_FILE: &str = "toygres.fenced";

/// What a Postgres server is doing in its replication topology.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Primary,
    Standby,
    /// Postgres is not running and the data directory does not say (no `standby.signal`).
    Unknown,
}

/// `GET /v1/status`.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Status {
    pub member: String,
    pub role: Role,
    /// Postgres is running and accepts connections.
    pub running: bool,
    /// Stopped on purpose by `POST /v1/fence`; the supervisor will not start it.
    pub fenced: bool,
    pub pid: Option<u32>,
    pub timeline: Option<u32>,
    pub system_identifier: Option<String>,
    /// Primary: `pg_current_wal_lsn()`. Standby: none.
    pub current_lsn: Option<String>,
    /// Standby: the last WAL position received and flushed.
    pub receive_lsn: Option<String>,
    /// Standby: the last WAL position replayed.
    pub replay_lsn: Option<String>,
    /// Standby: the state of its WAL receiver (`streaming`, …); none when not connected.
    pub wal_receiver_status: Option<String>,
    /// Standby: the primary it follows.
    pub primary: Option<PgAddress>,
    /// Standby: bytes received from the primary but not yet replayed, measured against the latest
    /// position the primary reported.
    pub lag_bytes: Option<u64>,
    /// Standby: seconds since the last replayed transaction when replay is behind, else 0.
    pub lag_seconds: Option<f64>,
    /// Primary: the standbys connected to it.
    pub standbys: Vec<StandbyStatus>,
    pub synchronous_standby_names: Option<String>,
    pub synchronous_commit: Option<String>,
    /// Settings whose new value waits for a restart.
    pub pending_restart: Vec<String>,
    /// How many times the supervisor restarted Postgres after it died.
    pub postgres_restarts: u64,
    pub server_version: Option<String>,
    /// Standby: seconds since its WAL receiver last heard from the primary; none when not
    /// connected. A standby that still hears from the primary says the primary is alive.
    #[serde(default)]
    pub primary_last_contact_seconds: Option<f64>,
    /// Primary: the synchronous replication policy it follows, if any.
    #[serde(default)]
    pub sync_policy: Option<SyncPolicy>,
    /// Primary in `degrade` mode: commits currently do not wait for standbys, because too few
    /// of the policy's standbys stream.
    #[serde(default)]
    pub sync_degraded: bool,
    /// WAL archiving, when an object store is configured.
    #[serde(default)]
    pub archive: Option<ArchiveStatus>,
    /// Space on the data directory's filesystem.
    #[serde(default)]
    pub disk: Option<DiskStatus>,
}

/// Space on the filesystem holding the data directory.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq)]
pub struct DiskStatus {
    pub total_bytes: u64,
    /// Available to Postgres (not counting blocks reserved for root).
    pub available_bytes: u64,
}

/// The state of WAL archiving on one member (the sidecar's own counters).
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ArchiveStatus {
    /// The store, as a URL without credentials.
    pub store: String,
    /// The instance name WAL is archived under.
    pub instance: String,
    pub archived_total: u64,
    pub failures_total: u64,
    /// Pushes refused because the store holds different content under the same name.
    pub conflicts_total: u64,
    pub last_archived_wal: Option<String>,
    pub last_archived_age_seconds: Option<f64>,
    pub last_failure_age_seconds: Option<f64>,
    /// WAL files waiting to be archived.
    pub ready_files: u64,
}

/// One connected standby, as its primary sees it (`pg_stat_replication`).
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct StandbyStatus {
    pub application_name: String,
    pub client_addr: Option<String>,
    pub state: String,
    /// `async`, `potential`, `sync` or `quorum`.
    pub sync_state: String,
    pub sent_lsn: Option<String>,
    pub flush_lsn: Option<String>,
    pub replay_lsn: Option<String>,
    /// Bytes between the primary's current position and what this standby has replayed.
    pub lag_bytes: Option<u64>,
    pub replay_lag_seconds: Option<f64>,
}

/// `POST /v1/promote` body (optional: no body is `{"force": false}`).
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct PromoteRequest {
    /// Promote even while this standby still streams from a primary that answers (which makes
    /// two primaries until the old one is fenced). Without it such a promotion is refused (409).
    #[serde(default)]
    pub force: bool,
    /// The synchronous replication policy the new primary must hold before it accepts its
    /// first write (as `PUT /v1/replication {"sync": …}` sets it): set while it is still a
    /// standby, so no commit on it is acknowledged without a synchronous standby.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sync: Option<SyncPolicy>,
}

/// `POST /v1/promote` answer.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct PromoteResponse {
    pub timeline: u32,
    pub lsn: String,
    /// Time from the request to the server accepting writes.
    pub duration_ms: u64,
    /// The request's synchronous replication policy was in force before the promotion.
    #[serde(default)]
    pub sync_set: bool,
}

/// `POST /v1/demote`: become a standby of `primary`.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct DemoteRequest {
    pub primary: PgAddress,
    /// When the data directory cannot be rewound, take a fresh copy of the primary instead of
    /// failing. Off by default: a re-clone throws the old data away.
    #[serde(default)]
    pub reclone_if_needed: bool,
}

/// `POST /v1/demote` answer: what it took.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct DemoteResponse {
    /// `none` (already a compatible copy), `rewind` or `reclone`.
    pub method: String,
    pub duration_ms: u64,
}

/// `GET /v1/parameters`: every setting of the server.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Parameters {
    pub parameters: Vec<ParameterInfo>,
}

/// One setting, as `pg_settings` describes it.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ParameterInfo {
    pub name: String,
    pub setting: String,
    pub unit: Option<String>,
    /// `postmaster` (restart), `sighup` (reload), `user`, `superuser`, …
    pub context: String,
    pub source: String,
    pub pending_restart: bool,
    /// Managed by the sidecar; refused by `PUT /v1/parameters`.
    pub owned: bool,
}

/// `PUT /v1/parameters`: names to values; `null` resets a setting to its default.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SetParametersRequest {
    pub parameters: BTreeMap<String, Option<String>>,
}

/// `PUT /v1/parameters` answer.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SetParametersResponse {
    /// Settings written and reloaded.
    pub applied: Vec<String>,
    /// Of those, the ones that take effect only after `POST /v1/restart`.
    pub pending_restart: Vec<String>,
}

/// `PUT /v1/notify`: where the member reports from now on (the controller's API,
/// `http(s)://HOST:PORT`), and for an `https://` URL the CA (PEM, public) the controller's
/// certificate must come from. A controller that takes over members an earlier one started
/// (with another address, or plain HTTP) points their reports at itself with it.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct NotifyTarget {
    pub url: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_pem: Option<String>,
}

/// `PUT /v1/replication`: fields left out are left as they are.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ReplicationRequest {
    /// Primary only: the value of `synchronous_standby_names` (`""` for none).
    pub synchronous_standby_names: Option<String>,
    /// `on`, `remote_apply`, `remote_write`, `local` or `off`.
    pub synchronous_commit: Option<String>,
    /// Standby only: the primary to follow from now on.
    pub primary: Option<PgAddress>,
    /// Primary only: who must confirm commits, and what happens when they cannot. When set,
    /// the sidecar owns `synchronous_standby_names` (computed from the policy, and emptied and
    /// restored by itself in `degrade` mode); setting `synchronous_standby_names` directly
    /// clears the policy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sync: Option<SyncPolicy>,
}

/// How a primary replicates synchronously.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct SyncPolicy {
    /// `strict`: commits wait rather than run without enough synchronous standbys. `degrade`:
    /// after `degrade_timeout_secs` without enough streaming standbys, commits stop waiting
    /// (`synchronous_standby_names` is emptied) until enough stream again.
    pub mode: SyncMode,
    /// `first`: the first `num_sync` streaming standbys of the list, in order (`FIRST n (…)`);
    /// `any`: any `num_sync` of them (quorum, `ANY n (…)`).
    #[serde(default)]
    pub method: SyncMethod,
    /// How many standbys must confirm each commit (at least 1).
    #[serde(default = "one")]
    pub num_sync: u32,
    /// The candidate standbys (their `application_name`s, that is member names). Empty: no
    /// synchronous replication.
    pub standbys: Vec<String>,
    /// `degrade` mode: how long commits may wait for missing standbys before the primary goes
    /// asynchronous.
    #[serde(default = "default_degrade_timeout_secs")]
    pub degrade_timeout_secs: u64,
}

fn one() -> u32 {
    1
}

fn default_degrade_timeout_secs() -> u64 {
    10
}

/// See [`SyncPolicy::mode`].
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum SyncMode {
    #[default]
    Strict,
    Degrade,
}

/// See [`SyncPolicy::method`].
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum SyncMethod {
    #[default]
    First,
    Any,
}

/// `POST /v1/restart`'s optional body.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RestartRequest {
    /// Values to put back in `postgresql.auto.conf` if Postgres does not start with its
    /// configuration (`null` removes a setting); it is then started again, and the answer has
    /// `ok: false` and says why the first start failed.
    #[serde(default)]
    pub fallback: BTreeMap<String, Option<String>>,
}

/// `POST /v1/fence`, `POST /v1/unfence`, `POST /v1/restart`, `PUT /v1/replication` answer.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ActionResponse {
    pub ok: bool,
    pub message: String,
}

/// What a backup holds.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum BackupKind {
    /// A physical copy of the whole cluster (pg_basebackup), restorable to any later point in
    /// time with the archived WAL.
    #[default]
    Base,
    /// `pg_dump -Fc` of some databases.
    Logical,
}

/// `POST /v1/backups`.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct BackupRequest {
    pub kind: BackupKind,
    /// Logical backups: the databases to dump (at least one).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub databases: Vec<String>,
}

/// One object a backup stored.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct BackupObject {
    /// The key under the store URL's prefix.
    pub key: String,
    /// The database it holds (logical backups).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub database: Option<String>,
    /// Bytes before compression.
    pub raw_bytes: u64,
    /// Bytes in the store.
    pub stored_bytes: u64,
    /// SHA-256 of the stored bytes, hex.
    pub sha256: String,
}

/// A backup's `manifest.json`, written last: a backup without one is incomplete.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct BackupManifest {
    pub id: String,
    pub kind: BackupKind,
    pub instance: String,
    /// The member the backup was taken on.
    pub member: String,
    /// Whether that member was a standby at the time.
    #[serde(default)]
    pub from_standby: bool,
    /// Base backups: where replay must start (from `backup_label`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_lsn: Option<String>,
    /// Base backups: the first position at which the copy is consistent (from Postgres's
    /// `backup_manifest`); a recovery target must not be before it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_lsn: Option<String>,
    /// Base backups: the timeline the backup started on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeline: Option<u32>,
    /// RFC 3339, UTC.
    pub start_time: String,
    /// RFC 3339, UTC: after the copy was complete.
    pub stop_time: String,
    /// The next transaction id once the copy was complete (a recovery target xid at or after
    /// it is reachable from this backup).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_xid: Option<u64>,
    /// Bytes before compression, all objects.
    pub raw_bytes: u64,
    /// Bytes in the store, all objects.
    pub stored_bytes: u64,
    /// `none`, a gzip level, or `pg_dump` (custom format, compressed by pg_dump).
    pub compression: String,
    /// `server_version` of the Postgres backed up.
    pub pg_version: String,
    pub system_identifier: String,
    /// SHA-256 of the main stored object (the base tar), hex; for a base tar stored in parts,
    /// of the parts' SHA-256s (hex, one per line, in order).
    pub sha256: String,
    pub objects: Vec<BackupObject>,
}

/// `GET /v1/backups`: complete backups, oldest first.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct BackupList {
    pub backups: Vec<BackupManifest>,
}

/// `POST /v1/restores/logical`: restore one database of a logical backup into the running
/// server.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct LogicalRestoreRequest {
    pub backup_id: String,
    /// The database as it was dumped.
    pub database: String,
    /// The database to restore into; created when missing (default: `database`).
    #[serde(default)]
    pub target_database: Option<String>,
}

/// `POST /v1/backups/{id}/verify` answer.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct VerifyResponse {
    pub backup_id: String,
    pub ok: bool,
    /// Why it failed, or what was checked.
    pub message: String,
    pub duration_ms: u64,
}

/// `POST /v1/backups/retention`: the backups to keep; every other one, and every WAL file no
/// kept backup needs, is deleted.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RetentionRequest {
    pub keep: Vec<String>,
}

/// `POST /v1/backups/retention` answer.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RetentionResponse {
    pub kept_backups: Vec<String>,
    pub deleted_backups: Vec<String>,
    /// WAL objects deleted (keys).
    pub deleted_wal: Vec<String>,
}

/// `POST /v1/wal/switch` answer: the segment the switch closed, the primary's position after
/// it, and whether the segment reached the store before the sidecar stopped waiting.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct WalSwitchResponse {
    pub segment: String,
    pub lsn: String,
    pub archived: bool,
}

/// `POST /v1/encryption/reload` answer: the member's encryption keys after it read its key ring
/// again, by public id (a one-way digest of each key, safe to show); both `None`/empty when the
/// member has no key.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct EncryptionKeys {
    /// The key that encrypts what the member writes from now on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_key_id: Option<String>,
    /// Every key the member decrypts with, the current one first.
    #[serde(default)]
    pub key_ids: Vec<String>,
}

/// The file of a key ring directory that names the ring's version (a digest of its key files),
/// written by a platform whose ring reaches a member late (a mounted Kubernetes Secret, which
/// the kubelet refreshes some seconds after it changed): `POST
/// /v1/encryption/reload?ring_version=V` reads the ring again once this file reads `V`.
pub const KEYRING_VERSION_FILE: &str = "ring.version";

/// How long `POST /v1/encryption/reload?ring_version=V` waits for the ring to reach `V`.
pub const KEYRING_SYNC_SECS: u64 = 60;

/// `POST /v1/wal/restore-point` request: the name of the restore point to make on the primary
/// (`pg_create_restore_point`).
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct RestorePointRequest {
    pub name: String,
}

/// `POST /v1/wal/restore-point` answer: where the point is, and the WAL switch after it that
/// puts it in the archive.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct RestorePointResponse {
    pub name: String,
    pub lsn: String,
    pub switch: WalSwitchResponse,
}

/// `GET /v1/wal/archived` answer: the newest complete segment in the instance's archive, the
/// position it ends at, and when the newest segment was stored (seconds since the Unix epoch).
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct ArchiveEnd {
    #[serde(default)]
    pub segment: Option<String>,
    #[serde(default)]
    pub end_lsn: Option<String>,
    #[serde(default)]
    pub archived_unix: Option<i64>,
    /// The newest timeline the archive holds a history file or a segment of: the one a restore
    /// to the end of the archive (`recovery_target_timeline = 'latest'`) ends on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeline: Option<u32>,
    /// That timeline's ancestors and where each one ended (its history file), oldest first;
    /// empty for timeline 1.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub history: Vec<TimelineFork>,
}

/// `GET /v1/restore/progress`: how far the restore this member bootstraps from has come.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct RestoreProgress {
    /// `download` (the base backup downloaded and unpacked at once), `replay` (recovery
    /// replays archived WAL towards the target) or `done`.
    pub phase: String,
    /// The base backup being restored.
    pub backup: String,
    /// Bytes of the base backup unpacked so far.
    pub bytes_done: u64,
    /// Its size unpacked, as its manifest says.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes_total: Option<u64>,
    /// Where the base backup ends: replay starts about there.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_lsn: Option<String>,
    /// The position replay has reached.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replay_lsn: Option<String>,
    /// Where replay stops: the recovery target, or `the end of the archive`.
    pub target: String,
    /// Whole seconds since the restore started.
    pub seconds: u64,
}

impl RestoreProgress {
    /// One line: `download 120 MiB of 300 MiB (40 %)`, `replay at 0/5000060 (from 0/3000100)
    /// towards the end of the archive`.
    pub fn line(&self) -> String {
        const MIB: f64 = 1024.0 * 1024.0;
        match self.phase.as_str() {
            "download" => match self.bytes_total.filter(|t| *t > 0) {
                Some(total) => format!(
                    "download and unpack of {}: {:.0} MiB of {:.0} MiB ({:.0} %)",
                    self.backup,
                    self.bytes_done as f64 / MIB,
                    total as f64 / MIB,
                    100.0 * self.bytes_done as f64 / total as f64
                ),
                None => format!(
                    "download and unpack of {}: {:.0} MiB",
                    self.backup,
                    self.bytes_done as f64 / MIB
                ),
            },
            "replay" => format!(
                "WAL replay at {} (from {}) towards {}",
                self.replay_lsn.as_deref().unwrap_or("?"),
                self.start_lsn.as_deref().unwrap_or("?"),
                self.target
            ),
            other => format!("{other} ({} s)", self.seconds),
        }
    }
}

/// One ancestor in a timeline's history: the timeline, and the WAL position where the next one
/// forked from it.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct TimelineFork {
    pub timeline: u32,
    pub end_lsn: String,
}

impl ArchiveEnd {
    /// Whether WAL up to `lsn` on `timeline` lies on the archive's newest timeline history, so
    /// that a recovery that reached it can go on to the end of the archive: `timeline` is the
    /// newest one, or an ancestor that `lsn` does not pass the end of. `true` when the archive
    /// does not say its timeline.
    pub fn holds_history_of(&self, timeline: u32, lsn: u64) -> bool {
        let Some(newest) = self.timeline else {
            return true;
        };
        if timeline == newest {
            return true;
        }
        self.history
            .iter()
            .find(|f| f.timeline == timeline)
            .and_then(|f| parse_lsn(&f.end_lsn))
            .is_some_and(|end| lsn <= end)
    }
}

/// The entries of a timeline history file (`parent TLI<tab>switch LSN<tab>reason` lines): each
/// ancestor timeline and the position where it ended, oldest first.
pub fn parse_timeline_history(history: &str) -> Vec<(u32, u64)> {
    history
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            Some((fields.next()?.parse().ok()?, parse_lsn(fields.next()?)?))
        })
        .collect()
}

/// Parses an LSN (`16/B374D848`) into a byte position.
pub fn parse_lsn(lsn: &str) -> Option<u64> {
    let (hi, lo) = lsn.split_once('/')?;
    Some((u64::from_str_radix(hi, 16).ok()? << 32) | u64::from_str_radix(lo, 16).ok()?)
}

/// A byte position as Postgres prints an LSN (`16/B374D848`).
pub fn format_lsn(lsn: u64) -> String {
    format!("{:X}/{:X}", lsn >> 32, lsn & 0xFFFF_FFFF)
}

#[cfg(test)]
mod history_tests {
    use super::*;

    #[test]
    fn a_position_is_on_the_history_up_to_where_its_timeline_ended() {
        let text = "1\t0/3000000\tno recovery target specified\n\n\
                    2\t0/5000A0\tbefore 2026-12-05 10:00:00+00\n";
        assert_eq!(
            parse_timeline_history(text),
            [(1, 0x300_0000), (2, 0x50_00A0)]
        );
        let archive = ArchiveEnd {
            timeline: Some(3),
            history: parse_timeline_history(text)
                .into_iter()
                .map(|(timeline, lsn)| TimelineFork {
                    timeline,
                    end_lsn: format_lsn(lsn),
                })
                .collect(),
            ..ArchiveEnd::default()
        };
        assert!(archive.holds_history_of(1, 0x300_0000));
        assert!(!archive.holds_history_of(1, 0x300_0001));
        assert!(archive.holds_history_of(2, 0x50_0000));
        assert!(!archive.holds_history_of(2, 0x60_0000));
        assert!(archive.holds_history_of(3, u64::MAX));
        assert!(
            !archive.holds_history_of(4, 0),
            "a later timeline is not an ancestor"
        );
        assert!(
            ArchiveEnd::default().holds_history_of(7, 1),
            "unknown: not refused"
        );
    }
}
