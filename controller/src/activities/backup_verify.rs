//! The activity of a backup's verification: have a member's sidecar verify the base backup
//! (restore it aside and query it) and record the result on the backup's row.

use std::sync::Arc;
use std::time::Duration;

use duroxide::ActivityContext;
use serde::{Deserialize, Serialize};
use toygres_common::sidecar_api::VerifyResponse;

use super::deps::{describe, ActivityDeps};
use super::sidecar::sidecar;

/// The longest a verification may take (it downloads and starts a whole copy).
const VERIFY_TIMEOUT: Duration = Duration::from_secs(6 * 3600);

/// Which backup to verify, on which member.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VerifyInput {
    pub instance: String,
    pub member: String,
    /// The backup's id in the CMS.
    pub backup_id: String,
}

/// Verifies the backup and records the result (`ok`, `message`, `duration_ms`, `member`,
/// `verified_at`) on its row. An answer that the backup is bad is a result, not an error; a
/// member that cannot be asked is an error and records nothing.
pub async fn verify_backup(
    deps: Arc<ActivityDeps>,
    _ctx: ActivityContext,
    input: VerifyInput,
) -> Result<VerifyResponse, String> {
    let backup = deps
        .cms
        .get_backup(&input.backup_id)
        .await
        .map_err(describe)?
        .ok_or_else(|| format!("backup {} does not exist", input.backup_id))?;
    let store_id = backup
        .store_path
        .as_deref()
        .and_then(|p| p.rsplit('/').next())
        .filter(|_| backup.is_succeeded_base())
        .ok_or_else(|| format!("backup {} is not a succeeded base backup", input.backup_id))?
        .to_string();
    let client = sidecar(&deps, &input.instance, &input.member, VERIFY_TIMEOUT).await?;
    let verified = client.verify_backup(&store_id).await.map_err(describe)?;
    let record = serde_json::json!({
        "ok": verified.ok,
        "message": verified.message,
        "duration_ms": verified.duration_ms,
        "member": input.member,
        "verified_at": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
    });
    deps.cms
        .set_backup_verification(&input.backup_id, &record)
        .await
        .map_err(describe)?;
    Ok(verified)
}
