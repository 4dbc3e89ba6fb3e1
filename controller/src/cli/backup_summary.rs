//! The backup section of `toygres get NAME`: the last backup (its status, when it ended, its
//! size), the next scheduled one, or that backups are off. Read from the backup routes, so an
//! older controller without them just leaves the section out.

use toygres_common::backup_api::{BackupList, BackupScheduleView};

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
    Some(render(&schedule, &list))
}

fn render(schedule: &BackupScheduleView, list: &BackupList) -> String {
    let last = list.backups.iter().find(|b| b.status != "running");
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
    format!("Backups:\n  last backup     {last}\n  next scheduled  {next}\n")
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
        };
        let list: BackupList = serde_json::from_value(serde_json::json!({"backups": [
            {"id": "bk-2", "instance": "db", "kind": "base", "status": "running",
             "started_at": "2026-12-04T12:00:00Z"},
            {"id": "bk-1", "instance": "db", "kind": "base", "status": "succeeded",
             "started_at": "2026-12-04T11:00:00Z", "finished_at": "2026-12-04T11:00:05Z",
             "stored_bytes": 4096}
        ]}))
        .expect("a list");
        let text = render(&schedule, &list);
        assert!(
            text.contains("bk-1 succeeded (base, 2026-12-04T11:00:05Z, 4096 bytes stored)"),
            "{text}"
        );
        assert!(
            text.contains("next scheduled  2026-12-05T00:00:00Z (@daily)"),
            "{text}"
        );
        let suspended = BackupScheduleView {
            suspended: true,
            next_run: None,
            ..schedule
        };
        assert!(render(&suspended, &BackupList { backups: vec![] }).contains("none yet"));
        assert!(render(&suspended, &BackupList { backups: vec![] }).contains("suspended (@daily)"));
    }
}
