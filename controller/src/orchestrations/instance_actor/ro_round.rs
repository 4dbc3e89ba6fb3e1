//! The ro endpoint's part of a health round, pure: where each standby stands
//! ([`ro_state`], from the round's probes and the lag decisions of [`super::health::assess`]),
//! the view recorded for `toygres get` and metrics ([`ro_view`]), and the instance's fallback
//! and balancing carried into the routes ([`with_policy`]). The rule itself lives in
//! [`crate::endpoints::ro_rule`].

use std::collections::BTreeMap;

use toygres_common::domain::Role;
use toygres_common::ro_api::{RoBackend, RoBackendState, RoEndpointView, RoSettings};

use super::state::MemberSeen;
use crate::activities::sidecar::ProbeResult;
use crate::endpoints::ro_rule::{backend_state, endpoint_view};
use crate::platform::EndpointRoutes;

/// Where the member `probe` saw stands with ro (a primary is [`RoBackendState::Unhealthy`]:
/// not a standby that could serve).
pub fn ro_state(probe: &ProbeResult, members: &BTreeMap<String, MemberSeen>) -> RoBackendState {
    let serving_standby = probe.healthy && probe.role == Some(Role::Standby);
    let lagging = members.get(&probe.member).is_some_and(|m| m.lagging);
    backend_state(serving_standby, lagging)
}

/// Each member but `primary` as a backend of ro, and what ro does without any.
pub fn ro_view(
    probes: &[ProbeResult],
    members: &BTreeMap<String, MemberSeen>,
    primary: Option<&str>,
    settings: &RoSettings,
) -> RoEndpointView {
    let backends = probes
        .iter()
        .filter(|p| Some(p.member.as_str()) != primary)
        .map(|p| RoBackend {
            member: p.member.clone(),
            state: ro_state(p, members),
            lag_bytes: p.lag_bytes,
            lag_seconds: p.lag_seconds,
        })
        .collect();
    endpoint_view(backends, settings)
}

/// `routes` with the instance's fallback and balancing.
pub fn with_policy(routes: EndpointRoutes, settings: &RoSettings) -> EndpointRoutes {
    EndpointRoutes {
        ro_fallback: settings.fallback,
        ro_balance: settings.balance,
        ..routes
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use toygres_common::ro_api::{RoBalance, RoFallback};

    use super::*;
    use crate::endpoints::ro_rule::{qualified, LagRule};
    use crate::orchestrations::instance_actor::state::ActorState;
    use crate::orchestrations::instance_actor::{assess, desired_routes};

    fn probe(member: &str, role: Role, lag: Option<u64>) -> ProbeResult {
        let mut p = ProbeResult::unreachable(member, String::new(), 1.0);
        p.healthy = true;
        p.error = None;
        p.role = Some(role);
        p.lag_bytes = lag;
        p
    }

    /// Rounds of a standby whose lag rises over the bound and falls back under it: it leaves,
    /// stays out above the re-entry mark, and comes back under it; the routes, the recorded
    /// view and the fallback agree at every round.
    #[test]
    fn a_lagging_standby_leaves_ro_and_comes_back_under_the_reentry_mark() {
        let mut rule = LagRule::bytes(16 << 20);
        rule.settings.max_lag_bytes = Some(1000);
        let mut state = ActorState::default();
        // (lag of db-1, ro expected)
        let rounds: [(u64, &[&str]); 5] = [
            (0, &["db-1", "db-2"]),
            (1500, &["db-2"]),
            (800, &["db-2"]),
            (500, &["db-1", "db-2"]),
            (900, &["db-1", "db-2"]),
        ];
        for (lag, want) in rounds {
            let round = assess(
                &state,
                vec![
                    probe("db-0", Role::Primary, None),
                    probe("db-1", Role::Standby, Some(lag)),
                    probe("db-2", Role::Standby, Some(0)),
                ],
                &rule,
            );
            let routes = desired_routes(&round.probes, &round.state.members, Some("db-0")).unwrap();
            assert_eq!(routes.ro, want, "lag {lag}");
            let view = ro_view(
                &round.probes,
                &round.state.members,
                Some("db-0"),
                &rule.settings,
            );
            assert_eq!(qualified(&view), want, "lag {lag}");
            assert!(!view.fallback_to_primary);
            state = round.state;
        }

        // Both out: ro falls back to the primary, or refuses when the instance says so.
        let round = assess(
            &state,
            vec![
                probe("db-0", Role::Primary, None),
                probe("db-1", Role::Standby, Some(5000)),
                probe("db-2", Role::Standby, Some(5000)),
            ],
            &rule,
        );
        let view = ro_view(
            &round.probes,
            &round.state.members,
            Some("db-0"),
            &rule.settings,
        );
        assert!(view.fallback_to_primary);
        assert!(view
            .backends
            .iter()
            .all(|b| b.state == RoBackendState::LagOverBound));
        let settings = RoSettings {
            fallback: RoFallback::Refuse,
            balance: RoBalance::LeastConnections,
            ..rule.settings.clone()
        };
        let view = ro_view(&round.probes, &round.state.members, Some("db-0"), &settings);
        assert!(view.refusing && !view.fallback_to_primary);
        let routes = with_policy(
            desired_routes(&round.probes, &round.state.members, Some("db-0")).unwrap(),
            &settings,
        );
        assert!(routes.ro.is_empty());
        assert_eq!(routes.ro_fallback, RoFallback::Refuse);
        assert_eq!(routes.ro_balance, RoBalance::LeastConnections);
    }
}
