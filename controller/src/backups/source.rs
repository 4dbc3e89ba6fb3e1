//! Which member a backup is taken on: a base backup from a healthy streaming standby when there
//! is one (it spares the primary the read), else the primary; a logical backup from the primary
//! (a dump on a standby can be cancelled by recovery conflicts). Pure: the orchestration reads
//! the members, this decides.

use serde::{Deserialize, Serialize};
use toygres_common::domain::{MemberHealth, MemberState, Role};
use toygres_common::sidecar_api::BackupKind;

/// What the choice needs to know about one member.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackupCandidate {
    pub member: String,
    pub role: Role,
    pub state: MemberState,
    pub health: MemberHealth,
    /// Bytes of WAL it is behind the primary (standbys), as last observed.
    #[serde(default)]
    pub lag_bytes: Option<u64>,
}

impl BackupCandidate {
    fn serves(&self) -> bool {
        self.state == MemberState::Running && self.health == MemberHealth::Healthy
    }
}

/// The member to take a `kind` backup on, or `None` when neither a healthy standby (base
/// backups) nor a running primary is there. Among healthy standbys the least behind wins,
/// then the first by name (so the choice is stable).
pub fn choose_backup_member(kind: BackupKind, members: &[BackupCandidate]) -> Option<String> {
    let standby = match kind {
        BackupKind::Base => members
            .iter()
            .filter(|m| m.role == Role::Standby && m.serves())
            .min_by(|a, b| {
                (a.lag_bytes.unwrap_or(u64::MAX), &a.member)
                    .cmp(&(b.lag_bytes.unwrap_or(u64::MAX), &b.member))
            }),
        BackupKind::Logical => None,
    };
    standby
        .or_else(|| {
            members
                .iter()
                .find(|m| m.role == Role::Primary && m.state == MemberState::Running)
        })
        .map(|m| m.member.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(name: &str, role: Role, health: MemberHealth, lag: Option<u64>) -> BackupCandidate {
        BackupCandidate {
            member: name.into(),
            role,
            state: MemberState::Running,
            health,
            lag_bytes: lag,
        }
    }

    #[test]
    fn a_base_backup_is_taken_from_the_healthiest_standby_else_the_primary() {
        use MemberHealth::{Healthy, Unhealthy, Unknown};
        let p = |h| member("db-0", Role::Primary, h, None);
        let s = |n: &str, h, lag| member(n, Role::Standby, h, lag);
        let cases: Vec<(Vec<BackupCandidate>, Option<&str>)> = vec![
            (vec![p(Healthy)], Some("db-0")),
            (vec![p(Healthy), s("db-1", Healthy, Some(0))], Some("db-1")),
            (
                vec![p(Healthy), s("db-1", Unhealthy, Some(0))],
                Some("db-0"),
            ),
            (vec![p(Healthy), s("db-1", Unknown, None)], Some("db-0")),
            (
                vec![
                    p(Healthy),
                    s("db-1", Healthy, Some(900)),
                    s("db-2", Healthy, Some(10)),
                ],
                Some("db-2"),
            ),
            (
                vec![
                    p(Healthy),
                    s("db-2", Healthy, Some(0)),
                    s("db-1", Healthy, Some(0)),
                ],
                Some("db-1"),
            ),
            // An unhealthy primary still serves a base backup when no standby can.
            (vec![p(Unhealthy)], Some("db-0")),
            (vec![s("db-1", Unhealthy, None)], None),
            (vec![], None),
        ];
        for (members, expected) in cases {
            assert_eq!(
                choose_backup_member(BackupKind::Base, &members).as_deref(),
                expected,
                "{members:?}"
            );
        }
    }

    #[test]
    fn a_standby_that_is_not_running_is_not_chosen() {
        let mut standby = member("db-1", Role::Standby, MemberHealth::Healthy, Some(0));
        standby.state = MemberState::Rejoining;
        let members = [
            member("db-0", Role::Primary, MemberHealth::Healthy, None),
            standby,
        ];
        assert_eq!(
            choose_backup_member(BackupKind::Base, &members).as_deref(),
            Some("db-0")
        );
    }

    #[test]
    fn a_logical_backup_is_taken_from_the_primary() {
        let members = [
            member("db-0", Role::Primary, MemberHealth::Healthy, None),
            member("db-1", Role::Standby, MemberHealth::Healthy, Some(0)),
        ];
        assert_eq!(
            choose_backup_member(BackupKind::Logical, &members).as_deref(),
            Some("db-0")
        );
    }
}
