//! The CMS's health tables for a fleet (issue 17), against a real controller's embedded CMS
//! (migrated by it): a batch records members' health (a probe never names a second primary),
//! the check history and instances' health; a touch moves only the check time; the sweep
//! keeps the history bounded by count per member and by age; migration 0008's indexes exist.

#![allow(clippy::unwrap_used)]

mod support;

use std::time::Duration;

use support::*;
use toygres_common::domain::{InstanceHealth, Role};
use toygres_controller::cms::health::{MemberCheck, HEALTH_HISTORY_PER_MEMBER};
use toygres_controller::cms::Cms;

fn check(member: &str, healthy: bool, role: Role) -> MemberCheck {
    MemberCheck {
        instance: "fh".into(),
        member: member.into(),
        healthy,
        role: Some(role),
        timeline: Some(1),
        lsn: Some("0/3000060".into()),
        lag_bytes: Some(0),
        sync_state: None,
        error: (!healthy).then(|| "no answer within 250 ms".into()),
        latency_ms: 1.5,
        details: serde_json::json!({"member": member}),
    }
}

/// The first column of a query's rows.
async fn column<T>(sql: &tokio_postgres::Client, query: &str) -> Vec<T>
where
    T: for<'a> tokio_postgres::types::FromSql<'a>,
{
    sql.query(query, &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_is_written_in_batches_and_its_history_stays_bounded() {
    let mut home = Home::new();
    let _api = home.start().await;
    let sql = home.cms_client().await;
    let port: u16 = std::fs::read_to_string(home.path().join("cms/port"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let mut config = tokio_postgres::Config::new();
    config
        .host_path(home.path().join("cms/run"))
        .port(port)
        .user("postgres")
        .dbname("toygres");
    let cms = Cms::new(config);
    // Not running: the controller's own health loop leaves it alone.
    sql.batch_execute(
        "INSERT INTO toygres.instances (name, state) VALUES ('fh', 'failed');
         INSERT INTO toygres.members (instance, name, role) VALUES
             ('fh', 'fh-0', 'primary'), ('fh', 'fh-1', 'standby');",
    )
    .await
    .unwrap();

    // One batch: fh-1 claims to be a primary (a fenced former primary would): it stays a
    // standby in the record.
    cms.record_health_batch(
        &[
            check("fh-0", true, Role::Primary),
            check("fh-1", false, Role::Primary),
        ],
        &[("fh".to_string(), InstanceHealth::Degraded)],
    )
    .await
    .unwrap();
    let rows = sql
        .query(
            "SELECT name, role, health, last_error, last_check_at IS NOT NULL
               FROM toygres.members WHERE instance = 'fh' ORDER BY name",
            &[],
        )
        .await
        .unwrap();
    let seen: Vec<(String, String, String, Option<String>, bool)> = rows
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4)))
        .collect();
    assert_eq!(
        seen,
        vec![
            (
                "fh-0".into(),
                "primary".into(),
                "healthy".into(),
                None,
                true
            ),
            (
                "fh-1".into(),
                "standby".into(),
                "unhealthy".into(),
                Some("no answer within 250 ms".into()),
                true
            ),
        ]
    );
    let health: String = sql
        .query_one(
            "SELECT health FROM toygres.instances WHERE name = 'fh'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(health, "degraded");
    // A member's history: how many checks, and the newest one's id.
    let checks = |member: &'static str| {
        let sql = &sql;
        async move {
            let row = sql
                .query_one(
                    "SELECT count(*), max(id) FROM toygres.health_checks
                      WHERE instance = 'fh' AND member = $1",
                    &[&member],
                )
                .await
                .unwrap();
            (row.get::<_, i64>(0), row.get::<_, Option<i64>>(1))
        }
    };
    let history = |member: &'static str| {
        let checks = &checks;
        async move { checks(member).await.0 }
    };
    assert_eq!((history("fh-0").await, history("fh-1").await), (1, 1));

    // A touch: only the check time moves.
    sql.batch_execute(
        "UPDATE toygres.members SET last_check_at = now() - interval '1 hour' WHERE instance = 'fh';
         UPDATE toygres.instances SET last_check_at = now() - interval '1 hour' WHERE name = 'fh';",
    )
    .await
    .unwrap();
    cms.touch_last_check(&["fh".to_string()]).await.unwrap();
    let ages: Vec<f64> = column(
        &sql,
        "SELECT extract(epoch FROM now() - last_check_at)::float8 FROM toygres.members
          WHERE instance = 'fh'
         UNION ALL
         SELECT extract(epoch FROM now() - last_check_at)::float8 FROM toygres.instances
          WHERE name = 'fh'",
    )
    .await;
    assert!(
        ages.len() == 3 && ages.iter().all(|a| *a < 60.0),
        "{ages:?}"
    );
    assert_eq!(history("fh-0").await, 1, "a touch writes no history");

    // Bounded: 150 more checks of fh-0 keep the newest HEALTH_HISTORY_PER_MEMBER; fh-1's
    // checks from two hours ago go.
    sql.batch_execute(
        "INSERT INTO toygres.health_checks (instance, member, ok, latency_ms)
             SELECT 'fh', 'fh-0', true, g FROM generate_series(1, 150) g;
         UPDATE toygres.health_checks SET at = now() - interval '2 hours' WHERE member = 'fh-1';",
    )
    .await
    .unwrap();
    let (_, newest) = checks("fh-0").await;
    // (The controller's own sweep, every minute, may have run first: the state is what counts.)
    cms.prune_health_history(Duration::from_secs(3600))
        .await
        .unwrap();
    assert_eq!(history("fh-0").await, HEALTH_HISTORY_PER_MEMBER);
    assert_eq!(history("fh-1").await, 0);
    assert_eq!(
        checks("fh-0").await.1,
        newest,
        "the newest checks are the ones kept"
    );

    let indexes: Vec<String> = column(
        &sql,
        "SELECT indexname::text FROM pg_indexes WHERE schemaname = 'toygres'
           AND tablename = 'health_checks' ORDER BY indexname",
    )
    .await;
    assert_eq!(
        indexes,
        vec![
            "health_checks_at",
            "health_checks_member_id",
            "health_checks_pkey"
        ]
    );
}
