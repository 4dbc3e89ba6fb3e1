//! The synchronous replication a primary should have: a pure decision from the HA settings and
//! the standbys that may be synchronous.

use toygres_common::controller_api::{HaSettings, SyncModeSetting};
use toygres_common::sidecar_api::{SyncMethod, SyncMode, SyncPolicy};

/// The synchronous replication policy of a primary whose standbys are `standbys`; `None` in
/// async mode or without standbys.
pub fn sync_policy(sync: bool, ha: &HaSettings, standbys: &[String]) -> Option<SyncPolicy> {
    if !sync || standbys.is_empty() {
        return None;
    }
    let count = u32::try_from(standbys.len()).unwrap_or(u32::MAX);
    Some(SyncPolicy {
        mode: match ha.sync_mode {
            SyncModeSetting::Strict => SyncMode::Strict,
            SyncModeSetting::Degrade => SyncMode::Degrade,
        },
        method: if ha.quorum {
            SyncMethod::Any
        } else {
            SyncMethod::First
        },
        num_sync: ha.num_sync.clamp(1, count),
        standbys: standbys.to_vec(),
        degrade_timeout_secs: ha.degrade_timeout_secs,
    })
}

/// Whether the settings that shape the primary's synchronous replication differ.
pub fn sync_settings_changed(before: &HaSettings, now: &HaSettings) -> bool {
    (
        before.sync_mode,
        before.num_sync,
        before.quorum,
        before.degrade_timeout_secs,
    ) != (
        now.sync_mode,
        now.num_sync,
        now.quorum,
        now.degrade_timeout_secs,
    )
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use toygres_common::sidecar_api::format_lsn;

    #[test]
    fn the_policy_follows_the_settings() {
        let standbys = vec!["db-1".to_string(), "db-2".to_string()];
        let ha = HaSettings {
            quorum: true,
            num_sync: 5,
            sync_mode: SyncModeSetting::Degrade,
            ..HaSettings::default()
        };
        let policy = sync_policy(true, &ha, &standbys).unwrap();
        assert_eq!(policy.method, SyncMethod::Any);
        assert_eq!(policy.num_sync, 2);
        assert_eq!(policy.mode, SyncMode::Degrade);
        assert!(sync_policy(false, &ha, &standbys).is_none());
        assert!(sync_policy(true, &ha, &[]).is_none());
        assert_eq!(format_lsn(0x16_B374_D848), "16/B374D848");
    }
}
