//! What this member is doing: role, positions, lag, standbys, pending restarts. Read with one
//! reused connection and never behind an operation, so status stays answerable during a
//! promotion or a restart.

use std::time::Duration;

use toygres_common::sidecar_api::{ArchiveStatus, DiskStatus, Role, StandbyStatus, Status};

use super::member::{Member, OpError};
use super::sql::parse_lsn;
use super::sql::timeline_of_walfile;

/// Status queries give up after this long (a stuck server reads as not running).
const QUERY_TIMEOUT: Duration = Duration::from_secs(5);

/// How long the check of a new connection may take.
const FRESH_CONNECTION_TIMEOUT: Duration = Duration::from_secs(2);

/// Where a client on this host reaches a server listening on `listen` (`listen_addresses`):
/// its first address, loopback for the wildcards.
fn connect_host(listen: &str) -> String {
    match listen.split(',').map(str::trim).next().unwrap_or("") {
        "" | "*" | "0.0.0.0" => "127.0.0.1".into(),
        "::" => "::1".into(),
        first => first.into(),
    }
}

impl Member {
    /// The member's status; a server that does not answer reads as not running.
    pub async fn status(&self) -> Status {
        let ops_state = {
            // Readable without waiting: the state only changes under the ops lock, and a
            // slightly stale copy is fine for status.
            self.ops.try_lock().ok().map(|o| o.state.clone())
        };
        let mut status = Status {
            member: self.cfg.member_name.clone(),
            role: if !self.layout.is_initialized() {
                Role::Unknown
            } else if self.layout.is_standby() {
                Role::Standby
            } else {
                Role::Primary
            },
            running: false,
            fenced: self.layout.is_fenced(),
            pid: self.pid(),
            timeline: None,
            system_identifier: None,
            current_lsn: None,
            receive_lsn: None,
            replay_lsn: None,
            wal_receiver_status: None,
            primary: None,
            lag_bytes: None,
            lag_seconds: None,
            standbys: Vec::new(),
            synchronous_standby_names: None,
            synchronous_commit: None,
            pending_restart: Vec::new(),
            postgres_restarts: self.restarts(),
            server_version: None,
            primary_last_contact_seconds: None,
            sync_policy: None,
            sync_degraded: false,
            archive: self.archive_status(),
            disk: disk_status(&self.layout.data_dir),
        };
        match tokio::time::timeout(QUERY_TIMEOUT, self.fill_status(&mut status)).await {
            Ok(Ok(())) => status.running = true,
            Ok(Err(e)) => tracing::debug!("status query: {e}"),
            Err(_) => tracing::warn!("status query timed out after {QUERY_TIMEOUT:?}"),
        }
        if status.running {
            // The cached connection says nothing of new ones: a server whose new connections
            // fail (a bad `local_preload_libraries`, no slot left) serves no client.
            if let Err(e) = self.accepts_new_connections().await {
                tracing::warn!("postgres runs but refuses a new connection: {e}");
                status.running = false;
            }
        }
        // While an operation holds the lock, the state file says the same.
        let state = ops_state.or_else(|| super::files::read_state(&self.layout).ok());
        if let Some(state) = state {
            if status.role == Role::Standby {
                status.primary = state.primary;
            }
            status.sync_policy = state.sync_policy;
            status.sync_degraded = state.sync_degraded;
        }
        status
    }

    /// Opens a new connection the way a client does (TCP to the listen address, password
    /// authentication) and runs a query on it, within [`FRESH_CONNECTION_TIMEOUT`].
    async fn accepts_new_connections(&self) -> Result<(), String> {
        let address = toygres_common::names::PgAddress {
            host: connect_host(&self.cfg.pg_listen),
            port: self.cfg.pg_port,
        };
        let attempt = async {
            let client = super::sql::connect_remote(&self.cfg, &address)
                .await
                .map_err(|e| format!("connect to {address}: {e:#}"))?;
            client
                .simple_query("SELECT 1")
                .await
                .map_err(|e| format!("query on a new connection: {e}"))?;
            Ok::<_, String>(())
        };
        tokio::time::timeout(FRESH_CONNECTION_TIMEOUT, attempt)
            .await
            .map_err(|_| format!("no new connection within {FRESH_CONNECTION_TIMEOUT:?}"))?
    }

    /// WAL archiving counters, read from the files `wal-push` and `wal-fetch` keep.
    fn archive_status(&self) -> Option<ArchiveStatus> {
        let archive = self.cfg.archive.as_ref()?;
        let s = crate::archive::stats::read(&archive.settings.state_dir);
        let now = crate::archive::stats::now();
        Some(ArchiveStatus {
            store: archive.settings.url.to_string(),
            instance: archive.settings.instance.clone(),
            archived_total: s.archived_total,
            failures_total: s.archive_failures_total,
            conflicts_total: s.archive_conflicts_total,
            last_archived_wal: s.last_archived.clone(),
            last_archived_age_seconds: s.last_archived_time.map(|t| (now - t).max(0.0)),
            last_failure_age_seconds: s.last_failure_time.map(|t| (now - t).max(0.0)),
            ready_files: crate::archive::stats::ready_count(&self.layout.data_dir) as u64,
        })
    }

    async fn fill_status(&self, s: &mut Status) -> Result<(), OpError> {
        let client = self.query_client().await?;
        let fail = |e: tokio_postgres::Error| OpError::Failed(e.to_string());
        let row = client
            .query_one(
                "SELECT pg_is_in_recovery(), \
                        (SELECT system_identifier::text FROM pg_control_system()), \
                        current_setting('server_version'), \
                        current_setting('synchronous_standby_names'), \
                        current_setting('synchronous_commit'), \
                        CASE WHEN pg_is_in_recovery() THEN NULL \
                             ELSE pg_current_wal_lsn()::text END, \
                        CASE WHEN pg_is_in_recovery() THEN NULL \
                             ELSE pg_walfile_name(pg_current_wal_lsn()) END, \
                        pg_last_wal_receive_lsn()::text, \
                        pg_last_wal_replay_lsn()::text, \
                        (SELECT timeline_id FROM pg_control_checkpoint()), \
                        CASE WHEN pg_last_wal_receive_lsn() IS NULL \
                               OR pg_last_wal_receive_lsn() <= pg_last_wal_replay_lsn() THEN 0 \
                             ELSE extract(epoch FROM now() - pg_last_xact_replay_timestamp())::float8 END, \
                        ARRAY(SELECT name FROM pg_settings WHERE pending_restart ORDER BY name), \
                        CASE WHEN pg_is_in_recovery() THEN \
                             (SELECT max(name) FROM pg_ls_waldir() \
                              WHERE name ~ '^[0-9A-F]{24}$') END",
                &[],
            )
            .await
            .map_err(fail)?;
        let in_recovery: bool = row.get(0);
        s.role = if in_recovery {
            Role::Standby
        } else {
            Role::Primary
        };
        s.system_identifier = row.get(1);
        s.server_version = row.get(2);
        s.synchronous_standby_names = row.get(3);
        s.synchronous_commit = row.get(4);
        s.pending_restart = row.get(11);
        if in_recovery {
            s.receive_lsn = row.get(7);
            s.replay_lsn = row.get(8);
            let checkpoint_tli: i32 = row.get(9);
            // The checkpoint's timeline lags behind a timeline switch until the next
            // restartpoint, and the WAL receiver (which says which timeline it receives) is gone
            // once the primary died: the newest WAL segment received tells the timeline of the
            // WAL this standby holds, which a failover compares between standbys.
            let newest_segment: Option<String> = row.get(12);
            let received_tli = newest_segment.as_deref().and_then(timeline_of_walfile);
            s.timeline = Some((checkpoint_tli as u32).max(received_tli.unwrap_or(0)));
            s.lag_seconds = row.get::<_, Option<f64>>(10).map(|v| v.max(0.0));
            let receiver = client
                .query_opt(
                    "SELECT status, latest_end_lsn::text, received_tli, \
                            extract(epoch FROM now() - last_msg_receipt_time)::float8 \
                     FROM pg_stat_wal_receiver",
                    &[],
                )
                .await
                .map_err(fail)?;
            let replay = s.replay_lsn.as_deref().and_then(parse_lsn);
            let mut upstream = s.receive_lsn.as_deref().and_then(parse_lsn);
            if let Some(r) = receiver {
                s.wal_receiver_status = r.get(0);
                let latest: Option<String> = r.get(1);
                if let Some(latest) = latest.as_deref().and_then(parse_lsn) {
                    upstream = upstream.max(Some(latest));
                }
                s.primary_last_contact_seconds = r.get::<_, Option<f64>>(3).map(|v| v.max(0.0));
                let tli: Option<i32> = r.get(2);
                if let Some(tli) = tli {
                    s.timeline = Some(s.timeline.unwrap_or(0).max(tli as u32));
                }
            }
            if let (Some(up), Some(replay)) = (upstream, replay) {
                s.lag_bytes = Some(up.saturating_sub(replay));
            }
        } else {
            s.current_lsn = row.get(5);
            let walfile: Option<String> = row.get(6);
            s.timeline = walfile.as_deref().and_then(timeline_of_walfile);
            let rows = client
                .query(
                    "SELECT application_name, host(client_addr), state, sync_state, \
                            sent_lsn::text, flush_lsn::text, replay_lsn::text, \
                            pg_wal_lsn_diff(pg_current_wal_lsn(), replay_lsn)::float8, \
                            extract(epoch FROM replay_lag)::float8 \
                     FROM pg_stat_replication ORDER BY application_name",
                    &[],
                )
                .await
                .map_err(fail)?;
            s.standbys = rows
                .iter()
                .map(|r| StandbyStatus {
                    application_name: r.get(0),
                    client_addr: r.get(1),
                    state: r.get::<_, Option<String>>(2).unwrap_or_default(),
                    sync_state: r.get::<_, Option<String>>(3).unwrap_or_default(),
                    sent_lsn: r.get(4),
                    flush_lsn: r.get(5),
                    replay_lsn: r.get(6),
                    lag_bytes: r.get::<_, Option<f64>>(7).map(|v| v.max(0.0) as u64),
                    replay_lag_seconds: r.get(8),
                })
                .collect();
        }
        Ok(())
    }
}

/// Free and total space of the filesystem holding `dir` (its parent when it does not exist yet).
fn disk_status(dir: &std::path::Path) -> Option<DiskStatus> {
    let probe = if dir.exists() { dir } else { dir.parent()? };
    let st = nix::sys::statvfs::statvfs(probe).ok()?;
    let fragment = st.fragment_size() as u64;
    Some(DiskStatus {
        total_bytes: st.blocks() as u64 * fragment,
        available_bytes: st.blocks_available() as u64 * fragment,
    })
}

#[cfg(test)]
mod tests {
    use super::connect_host;

    #[test]
    fn a_wildcard_listen_address_is_reached_through_loopback() {
        assert_eq!(connect_host("*"), "127.0.0.1");
        assert_eq!(connect_host("0.0.0.0"), "127.0.0.1");
        assert_eq!(connect_host("::"), "::1");
        assert_eq!(connect_host("10.0.0.7, 127.0.0.1"), "10.0.0.7");
        assert_eq!(connect_host("127.0.0.1"), "127.0.0.1");
    }
}
