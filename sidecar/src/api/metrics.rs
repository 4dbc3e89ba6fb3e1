//! `/metrics` in Prometheus's text format: Postgres up, role, timeline, lag, standbys,
//! connections by state, database sizes, commits and rollbacks, restarts, pending restart,
//! WAL archiving, backups, and the API's own requests. Read fresh at each scrape: the handler
//! gathers a [`Scrape`], and [`render`] writes it through `toygres_common::exposition` (the
//! `prometheus` crate).

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use toygres_common::exposition::{self, Exposition};
use toygres_common::sidecar_api::{Role, Status};

use super::requests::ApiMetrics;
use super::state::AppState;
use crate::archive::{stats, ArchiveSetup};
use crate::backup::stats::{BackupStats, LastBackup};
use crate::postgres::watchers::SyncCounters;
use crate::postgres::Member;

/// Everything one scrape reports, gathered before anything is written.
pub struct Scrape<'a> {
    pub status: &'a Status,
    pub archive: Option<(&'a ArchiveSetup, &'a std::path::Path)>,
    pub backups: BackupStats,
    /// Connections by state and per-database figures; none while Postgres is down.
    pub databases: Option<DatabaseStats>,
    pub self_fences: u64,
    pub sync: &'a SyncCounters,
    pub api: &'a ApiMetrics,
}

/// What `pg_stat_activity` and `pg_stat_database` say.
#[derive(Debug, Default)]
pub struct DatabaseStats {
    /// Client connections by state.
    pub connections: Option<Vec<(String, i64)>>,
    /// Each database: name, size, commits, rollbacks.
    pub databases: Option<Vec<(String, f64, f64, f64)>>,
}

#[utoipa::path(get, path = "/metrics", tag = "health", responses((status = 200, description = "Prometheus text exposition", body = String, content_type = "text/plain")))]
pub async fn handler(State(state): State<AppState>) -> impl IntoResponse {
    let status = state.member.status().await;
    let databases = if status.running {
        Some(database_stats(&state.member).await)
    } else {
        None
    };
    let scrape = Scrape {
        status: &status,
        archive: state
            .member
            .cfg
            .archive
            .as_ref()
            .map(|a| (a, state.member.layout.data_dir.as_path())),
        backups: crate::backup::stats::snapshot(),
        databases,
        self_fences: state.member.self_fences(),
        sync: state.member.sync_counters(),
        api: &state.api_metrics,
    };
    (
        [(header::CONTENT_TYPE, exposition::CONTENT_TYPE)],
        render(&scrape),
    )
}

/// The exposition of one scrape.
pub fn render(scrape: &Scrape<'_>) -> String {
    let x = Exposition::default();
    write_status(&x, scrape.status);
    if let Some((archive, data_dir)) = scrape.archive {
        write_archive(&x, archive, data_dir);
    }
    write_backups(&x, &scrape.backups);
    if let Some(db) = &scrape.databases {
        write_database_stats(&x, db);
    }
    x.counter(
        "toygres_self_fences_total",
        "Times this primary fenced itself after losing the controller and its standbys.",
        scrape.self_fences as f64,
    );
    write_sync(&x, scrape.status, scrape.sync);
    scrape.api.write(&x);
    x.text()
}

fn write_status(x: &Exposition, s: &Status) {
    let b = |v: bool| if v { 1.0 } else { 0.0 };
    x.gauge(
        "toygres_pg_up",
        "Whether Postgres accepts connections.",
        b(s.running),
    );
    if let Some(disk) = s.disk {
        x.gauge(
            "toygres_data_disk_available_bytes",
            "Space available on the data directory's filesystem.",
            disk.available_bytes as f64,
        );
        x.gauge(
            "toygres_data_disk_size_bytes",
            "Size of the data directory's filesystem.",
            disk.total_bytes as f64,
        );
    }
    x.gauge(
        "toygres_pg_fenced",
        "Whether the member is fenced (kept stopped).",
        b(s.fenced),
    );
    let roles = x.gauges(
        "toygres_pg_role",
        "The member's role: 1 for the current one.",
        &["role"],
    );
    for (role, name) in [
        (Role::Primary, "primary"),
        (Role::Standby, "standby"),
        (Role::Unknown, "unknown"),
    ] {
        roles.set(&[name], b(s.role == role));
    }
    if let Some(tli) = s.timeline {
        x.gauge(
            "toygres_pg_timeline",
            "The server's current timeline.",
            tli as f64,
        );
    }
    if let Some(lag) = s.lag_bytes {
        x.gauge(
            "toygres_replication_lag_bytes",
            "Standby: WAL received or announced but not replayed.",
            lag as f64,
        );
    }
    if let Some(lag) = s.lag_seconds {
        x.gauge(
            "toygres_replication_lag_seconds",
            "Standby: age of the last replayed transaction while replay is behind.",
            lag,
        );
    }
    if s.role == Role::Primary && s.running {
        x.gauge(
            "toygres_standbys_connected",
            "Primary: standbys connected.",
            s.standbys.len() as f64,
        );
        let standby_labels = ["application_name", "sync_state"];
        let lag_bytes = x.gauges(
            "toygres_standby_lag_bytes",
            "Primary: WAL each standby has not replayed yet.",
            &standby_labels,
        );
        let replay_lag = x.gauges(
            "toygres_standby_replay_lag_seconds",
            "Primary: each standby's replay lag.",
            &standby_labels,
        );
        for st in &s.standbys {
            let labels = [st.application_name.as_str(), st.sync_state.as_str()];
            lag_bytes.set(&labels, st.lag_bytes.unwrap_or(0) as f64);
            replay_lag.set(&labels, st.replay_lag_seconds.unwrap_or(0.0));
        }
    }
    x.counter(
        "toygres_pg_restarts_total",
        "Times the sidecar restarted Postgres after it died.",
        s.postgres_restarts as f64,
    );
    x.gauge(
        "toygres_pg_pending_restart",
        "Whether some setting waits for a restart.",
        b(!s.pending_restart.is_empty()),
    );
}

async fn database_stats(member: &Member) -> DatabaseStats {
    let Ok(client) = member.query_client().await else {
        return DatabaseStats::default();
    };
    let connections = client
        .query(
            "SELECT s.state, count(a.pid) FROM \
               (VALUES ('active'), ('idle'), ('idle in transaction'), \
                       ('idle in transaction (aborted)'), ('fastpath function call'), ('disabled')) AS s(state) \
             LEFT JOIN pg_stat_activity a ON a.state = s.state AND a.backend_type = 'client backend' \
             GROUP BY s.state ORDER BY s.state",
            &[],
        )
        .await
        .ok()
        .map(|rows| rows.iter().map(|r| (r.get(0), r.get(1))).collect());
    let databases = client
        .query(
            "SELECT d.datname, pg_database_size(d.oid)::float8, s.xact_commit::float8, s.xact_rollback::float8 \
             FROM pg_database d JOIN pg_stat_database s ON s.datid = d.oid \
             WHERE d.datallowconn ORDER BY d.datname",
            &[],
        )
        .await
        .ok()
        .map(|rows| rows.iter().map(|r| (r.get(0), r.get(1), r.get(2), r.get(3))).collect());
    DatabaseStats {
        connections,
        databases,
    }
}

fn write_database_stats(x: &Exposition, db: &DatabaseStats) {
    if let Some(rows) = &db.connections {
        let connections = x.gauges(
            "toygres_pg_connections",
            "Client connections by state.",
            &["state"],
        );
        for (state, count) in rows {
            connections.set(&[state], *count as f64);
        }
    }
    if let Some(rows) = &db.databases {
        let size = x.gauges(
            "toygres_pg_database_size_bytes",
            "Size of each database.",
            &["datname"],
        );
        let commits = x.counters(
            "toygres_pg_commits_total",
            "Transactions committed in each database.",
            &["datname"],
        );
        let rollbacks = x.counters(
            "toygres_pg_rollbacks_total",
            "Transactions rolled back in each database.",
            &["datname"],
        );
        for (db, bytes, committed, rolled_back) in rows {
            size.set(&[db], *bytes);
            commits.set(&[db], *committed);
            rollbacks.set(&[db], *rolled_back);
        }
    }
}

/// Backups this sidecar took, by kind; the last-success gauges only once there is one.
fn write_backups(x: &Exposition, s: &BackupStats) {
    let kinds = [("base", &s.base), ("logical", &s.logical)];
    let succeeded = x.counters(
        "toygres_backups_total",
        "Backups this sidecar completed, by kind.",
        &["kind"],
    );
    let failed = x.counters(
        "toygres_backup_failures_total",
        "Backups this sidecar started or was asked for and did not complete, by kind.",
        &["kind"],
    );
    for (kind, k) in kinds {
        succeeded.set(&[kind], k.succeeded_total as f64);
        failed.set(&[kind], k.failed_total as f64);
    }
    type Read = fn(&LastBackup) -> f64;
    let gauges: [(&str, &str, Read); 4] = [
        (
            "toygres_last_backup_success_timestamp_seconds",
            "When the last successful backup completed (Unix time), by kind.",
            |l| l.finished_unix_seconds,
        ),
        (
            "toygres_last_backup_stored_bytes",
            "Size in the object store of the last successful backup, by kind.",
            |l| l.stored_bytes as f64,
        ),
        (
            "toygres_last_backup_raw_bytes",
            "Size before compression of the last successful backup, by kind.",
            |l| l.raw_bytes as f64,
        ),
        (
            "toygres_last_backup_duration_seconds",
            "How long the last successful backup took, by kind.",
            |l| l.duration_seconds,
        ),
    ];
    for (name, help, value) in gauges {
        let family = x.gauges(name, help, &["kind"]);
        for (kind, k) in kinds {
            if let Some(last) = &k.last_success {
                family.set(&[kind], value(last));
            }
        }
    }
}

/// WAL archiving: counters the `wal-push`/`wal-fetch` processes keep in the archive state
/// directory, plus the `.ready` files Postgres has not had archived yet.
fn write_archive(x: &Exposition, archive: &ArchiveSetup, data_dir: &std::path::Path) {
    let s = stats::read(&archive.settings.state_dir);
    let counters: [(&str, &str, u64); 9] = [
        (
            "toygres_wal_archive_success_total",
            "WAL files archived (or found already archived with identical content).",
            s.archived_total,
        ),
        (
            "toygres_wal_archive_ahead_total",
            "Of the WAL files archived, those the sidecar uploaded ahead of Postgres's request.",
            s.archived_ahead_total,
        ),
        (
            "toygres_wal_archive_failures_total",
            "Failed WAL archive attempts (Postgres keeps the file and retries).",
            s.archive_failures_total,
        ),
        (
            "toygres_wal_archive_conflicts_total",
            "Archive attempts refused because a different file of the same name is stored.",
            s.archive_conflicts_total,
        ),
        (
            "toygres_wal_archive_bytes_total",
            "Bytes of WAL archived, before compression.",
            s.archived_bytes_total,
        ),
        (
            "toygres_wal_archive_stored_bytes_total",
            "Bytes written to the object store by WAL archiving, after compression.",
            s.archived_stored_bytes_total,
        ),
        (
            "toygres_wal_fetch_total",
            "WAL files restored from the object store.",
            s.fetched_total,
        ),
        (
            "toygres_wal_fetch_prefetch_hits_total",
            "Restored WAL files that were already prefetched.",
            s.prefetch_hits_total,
        ),
        (
            "toygres_wal_fetch_failures_total",
            "WAL restores that failed for another reason than a missing file.",
            s.fetch_failures_total,
        ),
    ];
    for (name, help, value) in counters {
        x.counter(name, help, value as f64);
    }
    x.gauge(
        "toygres_wal_archive_ready_files",
        "WAL files waiting to be archived (.ready in pg_wal/archive_status).",
        stats::ready_count(data_dir) as f64,
    );
    if let (Some(name), Some(at)) = (&s.last_archived, s.last_archived_time) {
        x.gauges(
            "toygres_wal_archive_last_archived_info",
            "The newest WAL file archived.",
            &["file"],
        )
        .set(&[name], 1.0);
        x.gauge(
            "toygres_wal_archive_last_success_timestamp_seconds",
            "When WAL was last archived (Unix time).",
            at,
        );
        x.gauge(
            "toygres_wal_archive_last_success_age_seconds",
            "Seconds since WAL was last archived.",
            (stats::now() - at).max(0.0),
        );
    }
    if let Some(at) = s.last_failure_time {
        x.gauge(
            "toygres_wal_archive_last_failure_timestamp_seconds",
            "When WAL archiving last failed (Unix time).",
            at,
        );
    }
}

/// Synchronous replication in `degrade` mode: whether commits currently skip the standbys, and
/// how often the watcher degraded and restored.
fn write_sync(x: &Exposition, s: &Status, counters: &SyncCounters) {
    x.gauge(
        "toygres_sync_degraded",
        "Whether commits stopped waiting for standbys because too few of the policy's stream.",
        if s.sync_degraded { 1.0 } else { 0.0 },
    );
    x.counter(
        "toygres_sync_degrade_total",
        "Times synchronous replication was degraded (synchronous_standby_names emptied).",
        counters.degrades() as f64,
    );
    x.counter(
        "toygres_sync_restore_total",
        "Times synchronous replication was restored after a degrade.",
        counters.restores() as f64,
    );
}

impl ApiMetrics {
    /// `toygres_sidecar_api_requests_total` by method, route and status.
    fn write(&self, x: &Exposition) {
        let family = x.counters(
            "toygres_sidecar_api_requests_total",
            "API requests by method, route and status.",
            &["method", "route", "status"],
        );
        for ((method, route, status), count) in self.counts() {
            family.set(&[&method, &route, &status.to_string()], count as f64);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn archive_metrics_come_from_the_counters_file_and_pg_wal() {
        let dir = tempfile::tempdir().unwrap();
        let state_dir = dir.path().join("archive");
        std::fs::create_dir_all(&state_dir).unwrap();
        stats::update(&state_dir, |s| {
            s.archived_total = 5;
            s.archive_failures_total = 2;
            s.last_archived = Some("000000010000000000000009".into());
            s.last_archived_time = Some(stats::now() - 10.0);
        })
        .unwrap();
        let data_dir = dir.path().join("data");
        let status = data_dir.join("pg_wal/archive_status");
        std::fs::create_dir_all(&status).unwrap();
        for f in [
            "00000001000000000000000A.ready",
            "00000001000000000000000B.ready",
        ] {
            std::fs::write(status.join(f), b"").unwrap();
        }
        let setup = archive_setup(state_dir);
        let x = Exposition::default();
        write_archive(&x, &setup, &data_dir);
        let text = x.text();
        for line in [
            "toygres_wal_archive_success_total 5\n",
            "toygres_wal_archive_failures_total 2\n",
            "toygres_wal_archive_conflicts_total 0\n",
            "toygres_wal_archive_ready_files 2\n",
            "toygres_wal_archive_last_archived_info{file=\"000000010000000000000009\"} 1\n",
        ] {
            assert!(text.contains(line), "{line} missing from:\n{text}");
        }
        let age: f64 = text
            .lines()
            .find_map(|l| l.strip_prefix("toygres_wal_archive_last_success_age_seconds "))
            .unwrap()
            .parse()
            .unwrap();
        assert!((9.0..60.0).contains(&age), "{age}");
    }

    /// Archiving to a local store, with its counters in `state_dir`.
    fn archive_setup(state_dir: std::path::PathBuf) -> ArchiveSetup {
        ArchiveSetup {
            settings: crate::archive::ArchiveSettings {
                url: "file:///tmp/x".parse().unwrap(),
                instance: "db".into(),
                compression: crate::archive::Compression::Gzip(1),
                concurrency: 4,
                state_dir,
                wal_segment_size: crate::archive::walname::DEFAULT_SEGMENT_SIZE,
                credentials_dir: None,
            },
            exe: "/bin/toygres-sidecar".into(),
        }
    }

    #[test]
    fn labels_are_escaped() {
        let x = Exposition::default();
        x.gauges("m", "h", &["a"]).set(&["x\"y\\z"], 1.0);
        assert!(
            x.text().contains("m{a=\"x\\\"y\\\\z\"} 1\n"),
            "{}",
            x.text()
        );
    }

    /// A scrape with every family present: a running primary with a standby, archiving, both
    /// kinds of backup, database figures and counted requests.
    fn full_scrape_text() -> String {
        let dir = tempfile::tempdir().unwrap();
        let state_dir = dir.path().join("archive");
        std::fs::create_dir_all(&state_dir).unwrap();
        stats::update(&state_dir, |s| {
            s.archived_total = 5;
            s.last_archived = Some("000000010000000000000009".into());
            s.last_archived_time = Some(stats::now() - 10.0);
            s.last_failure_time = Some(stats::now() - 20.0);
        })
        .unwrap();
        let setup = archive_setup(state_dir);
        let status: Status = serde_json::from_value(serde_json::json!({
            "member": "db-0", "role": "primary", "running": true, "fenced": false,
            "timeline": 2, "lag_bytes": 0, "lag_seconds": 0.0,
            "disk": {"total_bytes": 100, "available_bytes": 50},
            "standbys": [{"application_name": "db-1", "state": "streaming",
                          "sync_state": "sync", "lag_bytes": 8, "replay_lag_seconds": 0.5}],
            "pending_restart": ["shared_buffers"], "postgres_restarts": 1,
            "sync_degraded": false,
        }))
        .unwrap();
        let last = LastBackup {
            finished_unix_seconds: 1.0,
            stored_bytes: 2,
            raw_bytes: 3,
            duration_seconds: 4.0,
        };
        let mut backups = BackupStats::default();
        backups.base.succeeded_total = 1;
        backups.base.last_success = Some(last.clone());
        backups.logical.last_success = Some(last);
        let api = ApiMetrics::default();
        api.record("GET", "/v1/status", 200);
        api.record("POST", "unmatched", 404);
        let sync = SyncCounters::default();
        render(&Scrape {
            status: &status,
            archive: Some((&setup, dir.path())),
            backups,
            databases: Some(DatabaseStats {
                connections: Some(vec![("active".into(), 1), ("idle".into(), 2)]),
                databases: Some(vec![("postgres".into(), 1e6, 10.0, 1.0)]),
            }),
            self_fences: 0,
            sync: &sync,
            api: &api,
        })
    }

    #[test]
    fn families_types_help_and_label_sets_stay_as_they_were() {
        let listed = exposition::family_lines(&full_scrape_text());
        let expected: Vec<String> = EXPECTED_FAMILIES.lines().map(str::to_string).collect();
        assert_eq!(listed, expected, "\n{}", listed.join("\n"));
    }

    /// The families of the hand-written exposition this module had before it used the
    /// `prometheus` crate (families without series are not written any more; none is here): `name type [label names per series] help`.
    const EXPECTED_FAMILIES: &str = r#"toygres_backup_failures_total counter {["kind"]} Backups this sidecar started or was asked for and did not complete, by kind.
toygres_backups_total counter {["kind"]} Backups this sidecar completed, by kind.
toygres_data_disk_available_bytes gauge {[]} Space available on the data directory's filesystem.
toygres_data_disk_size_bytes gauge {[]} Size of the data directory's filesystem.
toygres_last_backup_duration_seconds gauge {["kind"]} How long the last successful backup took, by kind.
toygres_last_backup_raw_bytes gauge {["kind"]} Size before compression of the last successful backup, by kind.
toygres_last_backup_stored_bytes gauge {["kind"]} Size in the object store of the last successful backup, by kind.
toygres_last_backup_success_timestamp_seconds gauge {["kind"]} When the last successful backup completed (Unix time), by kind.
toygres_pg_commits_total counter {["datname"]} Transactions committed in each database.
toygres_pg_connections gauge {["state"]} Client connections by state.
toygres_pg_database_size_bytes gauge {["datname"]} Size of each database.
toygres_pg_fenced gauge {[]} Whether the member is fenced (kept stopped).
toygres_pg_pending_restart gauge {[]} Whether some setting waits for a restart.
toygres_pg_restarts_total counter {[]} Times the sidecar restarted Postgres after it died.
toygres_pg_role gauge {["role"]} The member's role: 1 for the current one.
toygres_pg_rollbacks_total counter {["datname"]} Transactions rolled back in each database.
toygres_pg_timeline gauge {[]} The server's current timeline.
toygres_pg_up gauge {[]} Whether Postgres accepts connections.
toygres_replication_lag_bytes gauge {[]} Standby: WAL received or announced but not replayed.
toygres_replication_lag_seconds gauge {[]} Standby: age of the last replayed transaction while replay is behind.
toygres_self_fences_total counter {[]} Times this primary fenced itself after losing the controller and its standbys.
toygres_sidecar_api_requests_total counter {["method", "route", "status"]} API requests by method, route and status.
toygres_standby_lag_bytes gauge {["application_name", "sync_state"]} Primary: WAL each standby has not replayed yet.
toygres_standby_replay_lag_seconds gauge {["application_name", "sync_state"]} Primary: each standby's replay lag.
toygres_standbys_connected gauge {[]} Primary: standbys connected.
toygres_sync_degrade_total counter {[]} Times synchronous replication was degraded (synchronous_standby_names emptied).
toygres_sync_degraded gauge {[]} Whether commits stopped waiting for standbys because too few of the policy's stream.
toygres_sync_restore_total counter {[]} Times synchronous replication was restored after a degrade.
toygres_wal_archive_ahead_total counter {[]} Of the WAL files archived, those the sidecar uploaded ahead of Postgres's request.
toygres_wal_archive_bytes_total counter {[]} Bytes of WAL archived, before compression.
toygres_wal_archive_conflicts_total counter {[]} Archive attempts refused because a different file of the same name is stored.
toygres_wal_archive_failures_total counter {[]} Failed WAL archive attempts (Postgres keeps the file and retries).
toygres_wal_archive_last_archived_info gauge {["file"]} The newest WAL file archived.
toygres_wal_archive_last_failure_timestamp_seconds gauge {[]} When WAL archiving last failed (Unix time).
toygres_wal_archive_last_success_age_seconds gauge {[]} Seconds since WAL was last archived.
toygres_wal_archive_last_success_timestamp_seconds gauge {[]} When WAL was last archived (Unix time).
toygres_wal_archive_ready_files gauge {[]} WAL files waiting to be archived (.ready in pg_wal/archive_status).
toygres_wal_archive_stored_bytes_total counter {[]} Bytes written to the object store by WAL archiving, after compression.
toygres_wal_archive_success_total counter {[]} WAL files archived (or found already archived with identical content).
toygres_wal_fetch_failures_total counter {[]} WAL restores that failed for another reason than a missing file.
toygres_wal_fetch_prefetch_hits_total counter {[]} Restored WAL files that were already prefetched.
toygres_wal_fetch_total counter {[]} WAL files restored from the object store."#;
}
