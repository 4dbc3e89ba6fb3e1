//! The health round's decisions, pure (no duroxide, no I/O): what changed since the last round
//! and the instance's health ([`assess`]), what the primary reported ([`primary_seen`]), and
//! where the endpoints should lead ([`desired_routes`]).

use std::collections::BTreeMap;

use toygres_common::domain::{HaEventKind, InstanceHealth, Role, SyncState};

use super::ro_round::ro_state;
use super::state::{ActorState, MemberSeen};
use crate::activities::records::HealthEvent;
use crate::activities::sidecar::ProbeResult;
use crate::endpoints::ro_rule::LagRule;
use crate::orchestrations::ha::target::PrimarySeen;
use crate::platform::EndpointRoutes;

/// Below this share of free space on a member's data file system, the instance is degraded.
pub const DISK_LOW_PERCENT: u64 = 10;

/// Whether a probe shows the member's disk nearly full.
fn disk_low(probe: &ProbeResult) -> bool {
    match (probe.disk_available_bytes, probe.disk_total_bytes) {
        (Some(free), Some(total)) if total > 0 => {
            free.saturating_mul(100) < total * DISK_LOW_PERCENT
        }
        _ => false,
    }
}

/// What a round saw of `primary`, when it answered as a primary: its position and the standbys
/// it reported synchronous or in the quorum.
pub fn primary_seen(probes: &[ProbeResult], primary: &str) -> Option<PrimarySeen> {
    let p = probes
        .iter()
        .find(|p| p.member == primary && p.healthy && p.role == Some(Role::Primary))?;
    Some(PrimarySeen {
        member: Some(primary.to_string()),
        lsn: p
            .lsn
            .as_deref()
            .and_then(toygres_common::sidecar_api::parse_lsn),
        synchronous: p
            .standby_states()
            .filter(|(_, sync)| SyncState::text_confirms_commits(sync))
            .map(|(name, _)| name.to_string())
            .collect(),
        degraded: p.sync_degraded,
    })
}

pub fn describe_targets(members: &[String]) -> String {
    if members.is_empty() {
        "the primary".into()
    } else {
        members.join(", ")
    }
}

/// Where the endpoints should lead after a round: rw to the recorded primary when it is healthy
/// and serves as one, ro to the standbys that qualify ([`ro_state`]: healthy, within their lag
/// bounds; none: the platform sends ro to the primary, or refuses). `None` when the primary is not healthy: routes are then left alone (failover
/// decides them). Without a recorded primary, the one healthy primary is taken.
pub fn desired_routes(
    probes: &[ProbeResult],
    members: &BTreeMap<String, MemberSeen>,
    recorded_primary: Option<&str>,
) -> Option<EndpointRoutes> {
    let serving: Vec<&ProbeResult> = probes
        .iter()
        .filter(|p| p.healthy && p.role == Some(Role::Primary))
        .collect();
    let primary = match recorded_primary {
        Some(recorded) => serving.iter().find(|p| p.member == recorded)?,
        None if serving.len() == 1 => serving[0],
        None => return None,
    };
    let mut ro: Vec<String> = probes
        .iter()
        .filter(|p| ro_state(p, members) == toygres_common::ro_api::RoBackendState::In)
        .map(|p| p.member.clone())
        .collect();
    ro.sort();
    Some(EndpointRoutes {
        rw: Some(primary.member.clone()),
        ro,
        ..Default::default()
    })
}

/// The outcome of one health round, decided from the probes alone.
#[derive(Debug, Clone, PartialEq)]
pub struct Assessment {
    pub state: ActorState,
    /// `healthy`, `degraded` or `unavailable`.
    pub health: InstanceHealth,
    /// The probes, each standby's sync state filled in from its primary's report.
    pub probes: Vec<ProbeResult>,
    pub events: Vec<HealthEvent>,
}

/// Compares a round's probes with the last round: which members went down or came back, which
/// started or stopped lagging, and the instance's overall health (healthy: every member is;
/// degraded: the primary is but not every standby; unavailable: no healthy primary).
pub fn assess(
    previous: &ActorState,
    mut probes: Vec<ProbeResult>,
    lag_rule: &LagRule,
) -> Assessment {
    let sync_states: BTreeMap<String, String> = probes
        .iter()
        .filter(|p| p.healthy && p.role == Some(Role::Primary))
        .flat_map(|p| p.standby_states())
        .map(|(name, sync)| (name.to_string(), sync.to_string()))
        .collect();
    let mut events = Vec::new();
    let mut members = BTreeMap::new();
    for probe in &mut probes {
        probe.sync_state = sync_states.get(&probe.member).cloned();
        let bounds = lag_rule.for_member(&probe.member);
        let was_lagging = previous
            .members
            .get(&probe.member)
            .is_some_and(|m| m.lagging);
        let lagging = bounds.over(was_lagging, probe.lag_bytes, probe.lag_seconds);
        let seen = MemberSeen {
            healthy: probe.healthy,
            lagging,
            check_failed: probe.check.as_ref().is_some_and(|c| !c.ok),
            disk_low: disk_low(probe),
        };
        let before = previous
            .members
            .get(&probe.member)
            .copied()
            .unwrap_or(MemberSeen {
                healthy: true,
                lagging: false,
                check_failed: false,
                disk_low: false,
            });
        if !before.disk_low && seen.disk_low {
            events.push(HealthEvent {
                member: Some(probe.member.clone()),
                kind: HaEventKind::DiskLow,
                message: format!(
                    "member {} has {} MiB free of {} MiB (under {DISK_LOW_PERCENT} %)",
                    probe.member,
                    probe.disk_available_bytes.unwrap_or(0) >> 20,
                    probe.disk_total_bytes.unwrap_or(0) >> 20
                ),
            });
        } else if before.disk_low && !seen.disk_low && seen.healthy {
            events.push(HealthEvent {
                member: Some(probe.member.clone()),
                kind: HaEventKind::DiskOk,
                message: format!("member {} has enough free disk space again", probe.member),
            });
        }
        if !before.check_failed && seen.check_failed {
            events.push(HealthEvent {
                member: Some(probe.member.clone()),
                kind: HaEventKind::CheckFailed,
                message: format!(
                    "member {} fails the health query: {}",
                    probe.member,
                    probe.check.as_ref().map_or("", |c| c.message.as_str())
                ),
            });
        } else if before.check_failed && !seen.check_failed && seen.healthy {
            events.push(HealthEvent {
                member: Some(probe.member.clone()),
                kind: HaEventKind::CheckOk,
                message: format!("member {} passes the health query again", probe.member),
            });
        }
        let member = Some(probe.member.clone());
        if before.healthy && !seen.healthy {
            events.push(HealthEvent {
                member: member.clone(),
                kind: HaEventKind::MemberDown,
                message: format!(
                    "member {} is down: {}",
                    probe.member,
                    probe.error.as_deref().unwrap_or("unhealthy")
                ),
            });
        } else if !before.healthy && seen.healthy {
            events.push(HealthEvent {
                member: member.clone(),
                kind: HaEventKind::MemberUp,
                message: format!("member {} is up again", probe.member),
            });
        }
        if !before.lagging && seen.lagging {
            events.push(HealthEvent {
                member: member.clone(),
                kind: HaEventKind::LagHigh,
                message: format!(
                    "member {} lags {} bytes behind ({})",
                    probe.member,
                    probe.lag_bytes.unwrap_or(0),
                    bounds.describe()
                ),
            });
        } else if before.lagging && !seen.lagging && seen.healthy {
            events.push(HealthEvent {
                member,
                kind: HaEventKind::LagOk,
                message: format!("member {} caught up", probe.member),
            });
        }
        members.insert(probe.member.clone(), seen);
    }
    let primary_healthy = probes
        .iter()
        .any(|p| p.healthy && p.role == Some(Role::Primary));
    let all_healthy = probes
        .iter()
        .all(|p| p.healthy && p.check.as_ref().is_none_or(|c| c.ok) && !disk_low(p));
    let health = match (primary_healthy, all_healthy) {
        (false, _) => InstanceHealth::Unavailable,
        (true, true) => InstanceHealth::Healthy,
        (true, false) => InstanceHealth::Degraded,
    };
    if previous.health != Some(health) {
        events.push(HealthEvent {
            member: None,
            kind: HaEventKind::InstanceHealth,
            message: format!(
                "instance health is {health} (was {})",
                previous.health.unwrap_or(InstanceHealth::Unknown)
            ),
        });
    }
    Assessment {
        state: ActorState {
            members,
            health: Some(health),
            rounds: previous.rounds + 1,
            ..previous.clone()
        },
        health,
        probes,
        events,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn probe(member: &str, role: &str, healthy: bool, lag: Option<u64>) -> ProbeResult {
        ProbeResult {
            member: member.into(),
            healthy,
            role: healthy.then(|| role.parse().unwrap()),
            timeline: Some(1),
            lsn: None,
            lag_bytes: lag,
            lag_seconds: None,
            standbys: if role == "primary" {
                vec!["db-1=sync".into()]
            } else {
                Vec::new()
            },
            sync_state: None,
            sync_degraded: false,
            check: None,
            disk_available_bytes: None,
            disk_total_bytes: None,
            latency_ms: 1.0,
            error: (!healthy).then(|| "unreachable".to_string()),
        }
    }

    #[test]
    fn a_standby_going_down_degrades_the_instance_and_is_an_event_once() {
        let first = assess(
            &ActorState::default(),
            vec![
                probe("db-0", "primary", true, None),
                probe("db-1", "standby", true, Some(0)),
            ],
            &LagRule::bytes(1024),
        );
        assert_eq!(first.health, "healthy");
        assert_eq!(first.probes[1].sync_state.as_deref(), Some("sync"));
        assert_eq!(first.events.len(), 1, "{:?}", first.events);
        assert_eq!(first.events[0].kind, "instance-health");

        let down = assess(
            &first.state,
            vec![
                probe("db-0", "primary", true, None),
                probe("db-1", "standby", false, None),
            ],
            &LagRule::bytes(1024),
        );
        assert_eq!(down.health, "degraded");
        let kinds: Vec<&str> = down.events.iter().map(|e| e.kind.as_str()).collect();
        assert_eq!(kinds, ["member-down", "instance-health"]);
        assert_eq!(
            down.state.members["db-1"],
            MemberSeen {
                healthy: false,
                lagging: false,
                check_failed: false,
                disk_low: false,
            }
        );

        let still_down = assess(
            &down.state,
            vec![
                probe("db-0", "primary", true, None),
                probe("db-1", "standby", false, None),
            ],
            &LagRule::bytes(1024),
        );
        assert!(still_down.events.is_empty(), "{:?}", still_down.events);

        let back = assess(
            &still_down.state,
            vec![
                probe("db-0", "primary", true, None),
                probe("db-1", "standby", true, Some(4096)),
            ],
            &LagRule::bytes(1024),
        );
        let kinds: Vec<&str> = back.events.iter().map(|e| e.kind.as_str()).collect();
        assert_eq!(kinds, ["member-up", "lag-high", "instance-health"]);
        assert_eq!(back.state.rounds, 4);
    }

    #[test]
    fn ro_leads_to_the_healthy_standbys_that_keep_up_and_rw_to_the_primary() {
        let round = assess(
            &ActorState::default(),
            vec![
                probe("db-0", "primary", true, None),
                probe("db-1", "standby", false, None),
                probe("db-2", "standby", true, Some(0)),
                probe("db-3", "standby", true, Some(1 << 20)),
            ],
            &LagRule::bytes(1024),
        );
        let routes = desired_routes(&round.probes, &round.state.members, Some("db-0")).unwrap();
        assert_eq!(routes.rw.as_deref(), Some("db-0"));
        assert_eq!(routes.ro, ["db-2"]);
        // No healthy primary: the routes are left to failover.
        let round = assess(
            &ActorState::default(),
            vec![
                probe("db-0", "primary", false, None),
                probe("db-1", "standby", true, Some(0)),
            ],
            &LagRule::bytes(1024),
        );
        assert!(desired_routes(&round.probes, &round.state.members, Some("db-0")).is_none());
    }

    #[test]
    fn no_healthy_primary_makes_the_instance_unavailable() {
        let result = assess(
            &ActorState::default(),
            vec![
                probe("db-0", "primary", false, None),
                probe("db-1", "standby", true, Some(0)),
            ],
            &LagRule::bytes(1024),
        );
        assert_eq!(result.health, "unavailable");
    }

    #[test]
    fn a_failing_health_query_degrades_the_instance_once_and_recovers() {
        let mut failing = probe("db-1", "standby", true, Some(0));
        failing.check = Some(crate::activities::sidecar::CheckResult {
            ok: false,
            message: "returned f".into(),
        });
        let round = assess(
            &ActorState::default(),
            vec![probe("db-0", "primary", true, None), failing.clone()],
            &LagRule::bytes(1024),
        );
        assert_eq!(round.health, "degraded");
        assert!(round
            .events
            .iter()
            .any(|e| e.kind == "check-failed" && e.message.contains("returned f")));
        // Still failing: no new event.
        let again = assess(
            &round.state,
            vec![probe("db-0", "primary", true, None), failing],
            &LagRule::bytes(1024),
        );
        assert!(again.events.iter().all(|e| e.kind != "check-failed"));
        let back = assess(
            &again.state,
            vec![
                probe("db-0", "primary", true, None),
                probe("db-1", "standby", true, Some(0)),
            ],
            &LagRule::bytes(1024),
        );
        assert_eq!(back.health, "healthy");
        assert!(back.events.iter().any(|e| e.kind == "check-ok"));
    }

    #[test]
    fn a_nearly_full_disk_degrades_the_instance_and_is_an_event() {
        let mut full = probe("db-1", "standby", true, Some(0));
        full.disk_total_bytes = Some(100 << 20);
        full.disk_available_bytes = Some(5 << 20);
        let round = assess(
            &ActorState::default(),
            vec![probe("db-0", "primary", true, None), full],
            &LagRule::bytes(1024),
        );
        assert_eq!(round.health, "degraded");
        let event = round.events.iter().find(|e| e.kind == "disk-low").unwrap();
        assert!(
            event.message.contains("5 MiB free of 100 MiB"),
            "{}",
            event.message
        );
    }
}
