//! Scheduled logical backups: every instance with backups on has a daily logical backup of every
//! database by default; `toygres backup schedule NAME --logical CRON` changes it; the runs fire
//! on durable timers, carry on after a controller SIGKILL, and none is taken twice.
//!
//! Every process a test starts is killed when the test ends (see [`Home`]'s `Drop`).

#![allow(clippy::unwrap_used)]

mod support;

use std::time::Duration;

use support::archive::*;
use support::*;
use toygres_common::backup_api::{BackupScheduleView, DEFAULT_LOGICAL_SCHEDULE};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scheduled_logical_backups_fire_on_durable_timers_and_are_not_doubled_by_a_kill() {
    let mut home = Home::new();
    home.start().await;
    stdout(&home.cli(&["create", "lg"]));
    let out = stdout(&home.cli(&["backup", "schedule", "lg", "-o", "json"]));
    let view: BackupScheduleView = serde_json::from_str(&out).unwrap();
    assert_eq!(
        view.logical_schedule.as_deref(),
        Some(DEFAULT_LOGICAL_SCHEDULE)
    );
    assert!(view.next_logical_run.is_some(), "{view:?}");

    let out = stdout(&home.cli(&[
        "backup",
        "schedule",
        "lg",
        "--logical",
        "*/4 * * * * *",
        "-o",
        "json",
    ]));
    let view: BackupScheduleView = serde_json::from_str(&out).unwrap();
    assert_eq!(view.logical_schedule.as_deref(), Some("*/4 * * * * *"));
    let before = eventually(
        Duration::from_secs(120),
        "a scheduled logical backup",
        || async {
            let (succeeded, _) = scheduled_backups(&home, "lg", "logical").await;
            (succeeded >= 1).then_some(succeeded)
        },
    )
    .await;
    // Of every database that takes connections: the application's and postgres.
    let logs: String = find_files(&home.path().join("instances").join("lg"), "sidecar.log")
        .iter()
        .map(|p| std::fs::read_to_string(p).unwrap_or_default())
        .collect();
    let done = logs
        .lines()
        .find(|l| l.contains("logical backup complete"))
        .unwrap_or_default();
    assert!(
        done.contains("\"postgres\"") && done.contains(", "),
        "not every database dumped: {done}"
    );

    // SIGKILL the controller: the runs carry on after the restart, none twice.
    home.kill_controller();
    let api = home.start().await;
    eventually(
        Duration::from_secs(120),
        "a scheduled logical backup after the restart",
        || async {
            let (succeeded, _) = scheduled_backups(&home, "lg", "logical").await;
            (succeeded > before).then_some(())
        },
    )
    .await;
    let (_, mut labels) = scheduled_backups(&home, "lg", "logical").await;
    let all = labels.len();
    labels.sort();
    labels.dedup();
    assert_eq!(labels.len(), all, "a run was taken twice: {labels:?}");

    // A bad expression is refused and changes nothing; then back to daily.
    let (status, body) = api
        .send(
            reqwest::Method::PUT,
            "/v1/instances/lg/backups/schedule",
            Some(serde_json::json!({"logical_schedule": "61 * * * *"})),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("logical_schedule"), "{body}");
    let view: BackupScheduleView = api.get("/v1/instances/lg/backups/schedule").await;
    assert_eq!(view.logical_schedule.as_deref(), Some("*/4 * * * * *"));
    let out = home.cli(&["backup", "schedule", "lg", "--logical", "not cron"]);
    assert!(!out.status.success(), "{out:?}");
    let out = stdout(&home.cli(&["backup", "schedule", "lg", "--logical", "@daily"]));
    assert!(out.contains("logical schedule  @daily (active)"), "{out}");
}
