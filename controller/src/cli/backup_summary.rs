//! The backup section of `toygres get NAME`: the last backup (its status, when it ended, its
//! size), the next scheduled one, the recoverability window (from the end of the oldest kept
//! base backup to the last archived WAL), or that backups are off. Read from the backup routes, so an
//! older controller without them just leaves the section out.

use toygres_common::backup_api::{BackupList, BackupScheduleView, RecoverabilityWindow};

use super::client::ControllerClient;

/// The section's lines, or `None` when the controller could not say.
pub async fn backup_section(client: &ControllerClient, name: &str) -> Option<String> {
    let schedule: Result<BackupScheduleView, _> = client
        .get(&format!("/v1/instances/{name}/backups/schedule"))
        .await;
    let Ok(schedule) = schedule else {
        // 409: backups off; anything else: leave the section out.
        let off = client
            .get::<BackupList>(&format!("/v1/instances/{name}/backups"))
            .await
            .is_ok_and(|l| l.backups.is_empty());
        return off.then(|| "Backups:  off or none taken\n".to_string());
    };
    let list: BackupList = client
        .get(&format!("/v1/instances/{name}/backups"))
        .await
        .ok()?;
    let window: Option<RecoverabilityWindow> = client
        .get(&format!("/v1/instances/{name}/backups/window"))
        .await
        .ok();
    Some(render(&schedule, &list, window.as_ref()))
}

/// The backup part of `toygres get NAME -o json`: `"backup_schedule"` and
/// `"recoverability_window"` added to the instance's JSON object, each when the controller
/// answers it (backups off: neither).
pub async fn add_backup_json(
    client: &ControllerClient,
    name: &str,
    detail: &mut serde_json::Value,
) {
    let Some(object) = detail.as_object_mut() else {
        return;
    };
    let schedule: Result<BackupScheduleView, _> = client
        .get(&format!("/v1/instances/{name}/backups/schedule"))
        .await;
    if let Ok(value) = schedule.map(serde_json::to_value) {
        object.insert("backup_schedule".into(), value.unwrap_or_default());
    }
    let window: Result<RecoverabilityWindow, _> = client
        .get(&format!("/v1/instances/{name}/backups/window"))
        .await;
    if let Ok(value) = window.map(serde_json::to_value) {
        object.insert("recoverability_window".into(), value.unwrap_or_default());
    }
}

fn render(
    schedule: &BackupScheduleView,
    list: &BackupList,
    window: Option<&RecoverabilityWindow>,
) -> String {
    let last = list
        .backups
        .iter()
        .find(|b| b.parsed_status() != Some(toygres_common::domain::BackupStatus::Running));
    let last = match last {
        None => "none yet".to_string(),
        Some(b) => format!(
            "{} {} ({}, {}, {} bytes stored)",
            b.id,
            b.status,
            b.kind,
            b.finished_at.as_deref().unwrap_or(&b.started_at),
            b.stored_bytes.unwrap_or(0)
        ),
    };
    let next = match (&schedule.next_run, schedule.suspended) {
        (_, true) => format!("suspended ({})", schedule.base_schedule),
        (Some(at), false) => format!("{at} ({})", schedule.base_schedule),
        (None, false) => format!("never ({})", schedule.base_schedule),
    };
    let mut out = format!("Backups:\n  last backup     {last}\n  next scheduled  {next}\n");
    if let Some(window) = window {
        out.push_str(&render_window(window));
    }
    out
}

/// The recoverability window's two lines.
fn render_window(window: &RecoverabilityWindow) -> String {
    let from = match (&window.earliest_restorable, &window.earliest_backup_id) {
        (Some(at), Some(id)) => format!("{at} (end of {id})"),
        _ => "nothing yet: no base backup".to_string(),
    };
    let to = match (
        &window.archived_wal,
        &window.archived_at,
        &window.archive_unknown,
    ) {
        (Some(wal), Some(at), _) => format!("{at} ({wal})"),
        (Some(wal), None, _) => wal.clone(),
        (None, _, Some(why)) => format!("unknown: {why}"),
        (None, _, None) => "unknown".to_string(),
    };
    format!("  restorable from {from}\n  archived up to  {to}\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_section_names_the_last_backup_and_the_next_run() {
        let schedule = BackupScheduleView {
            instance: "db".into(),
            base_schedule: "@daily".into(),
            suspended: false,
            next_run: Some("2026-12-05T00:00:00Z".into()),
            logical_schedule: None,
            next_logical_run: None,
        };
        let list: BackupList = serde_json::from_value(serde_json::json!({"backups": [
            {"id": "bk-2", "instance": "db", "kind": "base", "status": "running",
             "started_at": "2026-12-04T12:00:00Z"},
            {"id": "bk-1", "instance": "db", "kind": "base", "status": "succeeded",
             "started_at": "2026-12-04T11:00:00Z", "finished_at": "2026-12-04T11:00:05Z",
             "stored_bytes": 4096}
        ]}))
        .expect("a list");
        let window = RecoverabilityWindow {
            instance: "db".into(),
            earliest_restorable: Some("2026-12-04T11:00:05Z".into()),
            earliest_backup_id: Some("bk-1".into()),
            archived_wal: Some("000000010000000000000007".into()),
            archived_at: Some("2026-12-04T12:30:00Z".into()),
            archive_unknown: None,
        };
        let text = render(&schedule, &list, Some(&window));
        assert!(
            text.contains("bk-1 succeeded (base, 2026-12-04T11:00:05Z, 4096 bytes stored)"),
            "{text}"
        );
        assert!(
            text.contains("next scheduled  2026-12-05T00:00:00Z (@daily)"),
            "{text}"
        );
        assert!(
            text.contains("restorable from 2026-12-04T11:00:05Z (end of bk-1)"),
            "{text}"
        );
        assert!(
            text.contains("archived up to  2026-12-04T12:30:00Z (000000010000000000000007)"),
            "{text}"
        );
        let unknown = RecoverabilityWindow {
            archived_wal: None,
            archive_unknown: Some("its primary did not answer".into()),
            ..window
        };
        assert!(render_window(&unknown).contains("unknown: its primary did not answer"));
        let suspended = BackupScheduleView {
            suspended: true,
            next_run: None,
            ..schedule
        };
        assert!(render(&suspended, &BackupList { backups: vec![] }, None).contains("none yet"));
        assert!(render(&suspended, &BackupList { backups: vec![] }, None)
            .contains("suspended (@daily)"));
    }
}
